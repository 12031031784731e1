"""When the backup service's loop runs a backup or a check: kono-backup.sh's own `scheduled_at` and
`due`, run by sh (dash) and bash (the official mysql image's sh) at fixed times, their /state in a
temporary folder. A schedule's minute missed while the service was down still runs, once."""

import datetime
import re
import subprocess

import pytest

from tests.lab import REPO

SCRIPT = (REPO / "files" / "backup" / "kono-backup.sh").read_text()
FUNCTIONS = "\n".join(re.search(rf"^{name}\(\) {{.*?^}}$", SCRIPT, re.M | re.S).group(0)
                      for name in ("scheduled_at", "due"))


def at(text: str) -> int:
    return int(datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp())


@pytest.fixture(params=["sh", "bash"])
def shell(request, tmp_path):
    def run(call: str) -> subprocess.CompletedProcess:
        return subprocess.run([request.param, "-c", FUNCTIONS.replace("/state/", f"{tmp_path}/") + "\n" + call],
                              capture_output=True, text=True)
    run.state = tmp_path
    return run


@pytest.mark.parametrize("schedule, now, latest", [
    ("03:00", "2026-12-03 10:00:00", "2026-12-03 03:00:00"),
    ("03:00", "2026-12-03 03:00:00", "2026-12-03 03:00:00"),
    ("03:00", "2026-12-03 02:59:59", "2026-12-02 03:00:00"),
    ("00:00", "2026-01-01 00:00:30", "2026-01-01 00:00:00"),
    ("sun 04:30", "2026-12-03 10:00:00", "2026-11-29 04:30:00"),  # a Thursday
    ("sun 04:30", "2026-12-06 04:29:59", "2026-11-29 04:30:00"),
    ("sun 04:30", "2026-12-06 04:30:00", "2026-12-06 04:30:00"),
    ("sat 23:59", "2026-12-06 00:00:00", "2026-12-05 23:59:00"),
])
def test_scheduled_at_is_the_latest_time_the_schedule_named(shell, schedule, now, latest):
    done = shell(f"scheduled_at '{schedule}' {at(now)}")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == at(latest)


@pytest.mark.parametrize("schedule, ran, now, is_due", [
    ("03:00", "2026-12-02 03:00:04", "2026-12-03 02:59:00", False),   # not yet today's
    ("03:00", "2026-12-02 03:00:04", "2026-12-03 03:00:10", True),    # today's minute
    ("03:00", "2026-12-03 03:00:04", "2026-12-03 20:00:00", False),   # ran today already
    ("03:00", "2026-11-30 03:00:04", "2026-12-03 10:00:00", True),    # missed while down: runs when back
    ("03:00", "2026-12-03 02:00:00", "2026-12-03 02:30:00", False),   # a first start before the minute
    ("sun 04:30", "2026-11-29 04:30:20", "2026-12-05 23:00:00", False),
    ("sun 04:30", "2026-11-29 04:30:20", "2026-12-07 09:00:00", True),  # the Sunday missed
])
def test_due_when_the_schedules_time_came_since_the_last_run(shell, schedule, ran, now, is_due):
    (shell.state / "ran.backup").write_text(f"{at(ran)}\n")
    assert shell(f"due '{schedule}' backup {at(now)}").returncode == (0 if is_due else 1)


def test_without_a_record_of_a_run_nothing_is_due():  # the loop's first start writes one
    for schedule in ("03:00", "sun 04:30"):
        assert subprocess.run(["sh", "-c", FUNCTIONS.replace("/state/", "/nonexistent/") +
                               f"\ndue '{schedule}' check {at('2026-12-06 10:00:00')}"]).returncode == 1
    assert 'for name in backup check; do [ -e "/state/ran.$name" ] || date -u +%s > "/state/ran.$name"; done' in SCRIPT


@pytest.mark.parametrize("now, is_due", [("2026-12-03 20:00:00", False), ("2026-12-04 03:00:00", True)])
def test_an_older_scripts_marker_the_day_it_ran_still_counts(shell, now, is_due):
    (shell.state / "ran.backup").write_text("2026-12-03\n")
    assert shell(f"due '03:00' backup {at(now)}").returncode == (0 if is_due else 1)
