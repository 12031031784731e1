"""Point-in-time recovery without a host: which snapshots a restore to a time uses, the time it accepts,
how far behind shipping may be, the knobs, and the shipper's test of "this binary log holds a
transaction" run by the real shell on both servers' SHOW BINLOG EVENTS."""

import datetime
import subprocess
import sys

import pytest

from kono import backup
from kono.settings import SettingsError
from tests.lab import REPO, settings_of

UTC = datetime.timezone.utc


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def snap(short_id: str, time: str, *tags: str, path: str = "/x") -> dict:
    return {"short_id": short_id, "id": short_id * 8, "time": time.replace(" ", "T") + ".123456789Z",
            "tags": ["kono", *tags], "paths": [path]}


# Two bases a week apart on timeline A; daily db_dev and files; hourly binary log folders (two
# snapshots of 10:00's folder: only the newer is needed); a new host's timeline B after a restore.
REPOSITORY = [
    snap("base0001", "2026-11-20 03:00:00", "db_production", "timeline-aaaa"),
    snap("dev00001", "2026-11-20 03:00:05", "db_dev"),
    snap("file0001", "2026-11-20 03:00:09", "files"),
    snap("log00001", "2026-11-20 03:30:00", "binlog", "timeline-aaaa", path="/state/outbox/aaaa/2026112003"),
    snap("base0002", "2026-11-27 03:00:00", "db_production", "timeline-aaaa"),
    snap("dev00002", "2026-11-27 03:00:05", "db_dev"),
    snap("file0002", "2026-11-27 03:00:09", "files"),
    snap("dev00003", "2026-11-28 03:00:05", "db_dev"),
    snap("file0003", "2026-11-28 03:00:09", "files"),
    snap("log00002", "2026-11-27 03:20:00", "binlog", "timeline-aaaa", path="/state/outbox/aaaa/2026112703"),
    snap("log00003", "2026-11-28 10:10:00", "binlog", "timeline-aaaa", path="/state/outbox/aaaa/2026112810"),
    snap("log00004", "2026-11-28 10:50:00", "binlog", "timeline-aaaa", path="/state/outbox/aaaa/2026112810"),
    snap("log00005", "2026-11-28 11:05:00", "binlog", "timeline-aaaa", path="/state/outbox/aaaa/2026112811"),
    snap("log00006", "2026-11-28 11:30:00", "binlog", "timeline-bbbb", path="/state/outbox/bbbb/2026112811"),
]


def test_a_point_in_time_uses_the_newest_base_before_it_and_its_timelines_logs_after_it():
    ids, logs, shipped = backup.point_in_time_set(REPOSITORY, at("2026-11-28 10:30:00"))
    assert ids == ("base0002", "dev00003", "file0003")
    assert logs == ("log00002", "log00004", "log00005")  # 10:00's folder once, as its newest snapshot holds it
    assert shipped == at("2026-11-28 11:05:00.123456")
    ids, logs, _ = backup.point_in_time_set(REPOSITORY, at("2026-11-27 02:00:00"))
    assert ids == ("base0001", "dev00001", "file0001")
    assert logs[0] == "log00001" and "log00006" not in logs  # another timeline never replays onto this base


def test_the_latest_replays_everything_shipped_onto_the_newest_base():
    ids, logs, _ = backup.point_in_time_set(REPOSITORY, None)
    assert ids == ("base0002", "dev00003", "file0003") and logs == ("log00002", "log00004", "log00005")
    assert backup.has_binary_logs(REPOSITORY)
    without = [s for s in REPOSITORY if "binlog" not in s["tags"]]
    assert not backup.has_binary_logs(without)
    # pitr turned off later: the newest dump is no base, so the latest is restored as before
    plain = REPOSITORY + [snap("plain001", "2026-11-29 03:00:00", "db_production")]
    assert not backup.has_binary_logs(plain)


@pytest.mark.parametrize("snapshots, until, said", [
    ([s for s in REPOSITORY if "binlog" not in s["tags"]], None, "the repository holds no binary logs"),
    (REPOSITORY, at("2026-11-19 00:00:00"),
     "no base at or before 2026-11-19 00:00:00 UTC: no db_production backup taken with pitr on (the oldest is 2026-11-20"),
    ([s for s in REPOSITORY if s["short_id"] not in ("log00002", "log00003", "log00004", "log00005")],
     at("2026-11-28 10:30:00"), "no binary logs after the base base0002"),
    ([s for s in REPOSITORY if s["short_id"] != "dev00001"], at("2026-11-21 00:00:00"),
     "no db_dev snapshot at or before 2026-11-21"),
])
def test_what_cannot_be_restored_to_a_point_says_why(snapshots, until, said):
    with pytest.raises(ValueError, match=said.replace("(", r"\(").replace(")", r"\)")):
        backup.point_in_time_set(snapshots, until)


NOW = at("2026-12-02 12:00:00")


@pytest.mark.parametrize("given, expected", [
    ("2026-12-02 11:05:00", at("2026-12-02 11:05:00")),
    ("2026-12-02T11:05:00Z", at("2026-12-02 11:05:00")),
    ("2026-12-02 11:05:00 UTC", at("2026-12-02 11:05:00")),
    ("2026-12-02T12:05:00+01:00", at("2026-12-02 11:05:00")),
    (" 2026-12-02 11:05 ", at("2026-12-02 11:05:00")),
])
def test_until_is_a_utc_time_in_whole_seconds(given, expected):
    assert backup.parse_until(given, NOW) == expected


@pytest.mark.parametrize("given, said", [
    ("yesterday", "expected a UTC time like"), ("2026-12-02", "a date alone"), ("", "expected a UTC time"),
    ("2026-12-02 11:05:00.250", "whole seconds"), ("2026-12-02 12:00:01", "a time in the past"),
    ("2026-13-02 11:05:00", "expected a UTC time"),
])
def test_a_bad_until_is_refused(given, said):
    with pytest.raises(ValueError, match=said):
        backup.parse_until(given, NOW)


def test_a_bad_until_stops_the_cli_before_it_reads_the_inventory():
    for args, said in [(["--until", "soon"], "--until: expected a UTC time"),
                       (["--until", "2026-12-01 10:00:00", "--snapshot", "abcd1234"], "one or the other")]:
        stopped = subprocess.run([sys.executable, "-m", "kono.cli.backup", "restore-repository",
                                  "/nonexistent/inventory.py", *args], cwd=REPO, capture_output=True, text=True,
                                 timeout=60, stdin=subprocess.DEVNULL)
        assert stopped.returncode == 2 and said in stopped.stderr, stopped.stderr


def test_shipping_is_reported_behind_past_twice_its_limit():
    settings = settings_of(backup_repository="rest:http://10.0.0.1:8000/", pitr=True)
    shipped = backup.parse_shipped("2026-12-02T11:58:00Z -")
    assert shipped == {"time": at("2026-12-02 11:58:00"), "failing_since": None}
    assert backup.shipping_ok(shipped, settings, at("2026-12-02 11:59:59"))
    assert not backup.shipping_ok(shipped, settings, at("2026-12-02 12:00:01"))
    failing = backup.parse_shipped("2026-12-02T11:58:00Z 2026-12-02T11:58:30Z")
    assert failing["failing_since"] == at("2026-12-02 11:58:30")
    assert "failing since 2026-12-02 11:58:30 UTC" in backup.shipping_summary(failing)
    for nothing in ("", "none -"):
        assert backup.parse_shipped(nothing) is None
        assert not backup.shipping_ok(None, settings)


def test_pitr_needs_a_repository_and_sane_knobs():
    with pytest.raises(SettingsError, match="pitr: expected backup_repository to be set"):
        settings_of(pitr=True)
    for knob, bad in [("pitr_max_lag_seconds", 5), ("pitr_full_backup_days", 0), ("pitr_days", 0)]:
        with pytest.raises(SettingsError, match=f"^{knob}: expected"):
            settings_of(backup_repository="rest:http://10.0.0.1:8000/", pitr=True, **{knob: bad})
    assert not settings_of().pitr_on


# SHOW BINLOG EVENTS IN '<newest>' as `mysql -N` prints it (Log_name, Pos, Event_type, Server_id,
# End_log_pos, Info), just after a rotation and after one transaction, for each server.
EVENTS = {
    "mysql empty": ["binlog.000007\t4\tFormat_desc\t1\t127\tServer ver: 8.4.3, Binlog ver: 4",
                    "binlog.000007\t127\tPrevious_gtids\t1\t158\t"],
    "mariadb empty": ["binlog.000007\t4\tFormat_desc\t1\t256\tServer ver: 11.8.3-MariaDB, Binlog ver: 4",
                      "binlog.000007\t256\tGtid_list\t1\t299\t[0-1-42]",
                      "binlog.000007\t299\tBinlog_checkpoint\t1\t343\tbinlog.000006"],
    "mysql one": ["binlog.000007\t4\tFormat_desc\t1\t127\t", "binlog.000007\t127\tPrevious_gtids\t1\t158\t",
                  "binlog.000007\t158\tAnonymous_Gtid\t1\t237\tSET @@SESSION.GTID_NEXT= 'ANONYMOUS'",
                  "binlog.000007\t237\tQuery\t1\t312\tBEGIN"],
    "mariadb one": ["binlog.000007\t4\tFormat_desc\t1\t256\t", "binlog.000007\t256\tGtid_list\t1\t299\t[0-1-42]",
                    "binlog.000007\t299\tBinlog_checkpoint\t1\t343\tbinlog.000006",
                    "binlog.000007\t343\tGtid\t1\t385\tBEGIN GTID 0-1-43"],
}


@pytest.mark.parametrize("case", EVENTS)
def test_the_shipper_rotates_a_binary_log_only_when_it_holds_a_transaction(case):
    script = REPO / "files/backup/kono-backup.sh"
    # The script's own function, cut out and run by sh (its top level needs the service's environment).
    text = script.read_text()
    function = text[text.index("HEADER_EVENTS="):text.index("ship() {")]
    done = subprocess.run(["sh", "-c", function + "\nholds_transactions"], input="\n".join(EVENTS[case]) + "\n",
                          text=True, capture_output=True, timeout=10)
    assert done.returncode == (0 if case.endswith("one") else 1), done.stderr
