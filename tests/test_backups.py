"""Scheduled backups to a restic repository served over the network (rclone's REST server on the
lab's bridge), and the restore drill: a brand-new host, the repository URL and its password, one
command. Ends with the shared host back on the defaults (no backups), as the other modules expect."""

import datetime
import json
import re
import secrets as random_values
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from kono.backup import MAX_AGE
from tests import lab as lab_tools
from tests.lab import BACKUP_SCRIPT, ResticServer, container, host_secret, last_backup_record, mysql

pytestmark = pytest.mark.e2e

SEEN: list[tuple[str, str]] = []  # (what ran, what it showed): the leak check reads them
BACKUPS_TABLE = "CREATE TABLE IF NOT EXISTS backups_kept (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64));"


def set_last_success(host, record: str) -> None:
    host.ssh(f"docker exec {container('backup')} sh -c 'echo \"{record}\" > /state/last-success'", user="kono")


def wait_for_backup(host, other_than: str = "", seconds: float = 180) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        last = last_backup_record(host)
        if last and last != other_than:
            return last
        time.sleep(2)
    logs = host.ssh(f"docker logs --tail 30 {container('backup')}", user="kono", check=False)
    raise AssertionError(f"no new successful backup after {seconds} s: {logs.stdout}{logs.stderr}")


def host_key(host) -> str:
    """The maintainer container's SSH host key, as a client sees it."""
    return subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(lab_tools.DEFAULTS["maintainer_ssh_port"]),
                           host.address], capture_output=True, text=True, timeout=30).stdout.split(" ", 1)[1]


@pytest.fixture(scope="module")
def backed_up(provisioned):
    provisioned.wait_healthy()
    folder = provisioned.lab.workdir / "secrets" / "backup"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "repository_password").write_text(random_values.token_urlsafe(24) + "\n")
    # The rest: backend needs no credentials; one is given anyway, so the leak check covers the kind.
    (folder / "storage_credentials").write_text(f"KONO_UNUSED_TOKEN={random_values.token_hex(20)}\n")
    with ResticServer(provisioned.lab) as server:
        inventory = lab_tools.write_inventory(
            provisioned.lab, [provisioned.host], provisioned.lab.workdir / "backup-inventory.py",
            api_repo=provisioned.git.repo("api"), app_repo=provisioned.git.repo("app"), backup_repository=server.url)
        yield provisioned, server, inventory
    provisioned.reset()  # back to the defaults: no backup service


def test_without_the_repository_password_the_deploy_stops_before_changing_anything(backed_up):
    provisioned, server, inventory = backed_up
    password = provisioned.lab.workdir / "secrets" / "backup" / "repository_password"
    kept = password.read_text()
    password.unlink()
    try:
        before = provisioned.snapshot()
        failed = lab_tools.deploy(inventory, check=False)
        SEEN.append(("deploy without the repository password", failed.output))
        assert failed.returncode != 0
        assert "backup/repository_password: expected it in $KONO_SECRET_BACKUP_REPOSITORY_PASSWORD" in failed.output
        assert "never generated on the host" in failed.output
        assert provisioned.snapshot() == before
    finally:
        password.write_text(kept)


def test_a_deploy_with_a_repository_backs_up_at_once_and_status_says_so(backed_up):
    provisioned, server, inventory = backed_up
    # A table of its own (the sample API's /api/greeting reads the newest greeting, which other modules
    # set; test_safety has a `kept`): the host is shared, so it may be there from an earlier run.
    made = mysql(provisioned.host, "api", host_secret(provisioned.host, "production", "db_api_password"),
                 f"{BACKUPS_TABLE} INSERT INTO backups_kept (note) VALUES ('row to keep');")
    assert made.returncode == 0, made.stderr
    provisioned.maintainer("echo 'asset to keep' > /srv/static/kept.txt")
    SEEN.append(("deploy -vvv", lab_tools.deploy(inventory, "-vvv").output))
    first = wait_for_backup(provisioned.host)
    assert len(first.split()) == 6  # time, bytes read, bytes added, three snapshots (db_production, db_dev, files)
    shown = lab_tools.status(inventory, timeout=120)
    SEEN.append(("status", shown.stdout + shown.stderr))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    line = next(line for line in shown.stdout.splitlines() if " last backup " in line)
    assert "snapshots " + " ".join(first.split()[3:]) in line and line.endswith(" ok")
    assert lab_tools.deploy(inventory, "--json").changes == 0


def test_an_unreachable_repository_fails_the_backup_loudly_and_the_next_run_succeeds(backed_up):
    provisioned, server, inventory = backed_up
    before = last_backup_record(provisioned.host)
    server.stop()
    try:
        failed = provisioned.host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono", check=False)
    finally:
        server.start()
    SEEN.append(("failed backup", failed.stdout + failed.stderr))
    assert failed.returncode != 0
    assert "backup FAILED" in failed.stderr and "did not answer" in failed.stderr
    audit = provisioned.host.ssh("tail -n 3 /srv/kono/.kono/audit.log", user="kono").stdout
    assert '"backup": "backup failed"' in audit
    logs = provisioned.host.ssh(f"docker logs --tail 20 {container('backup')} 2>&1", user="kono")
    assert "backup FAILED" in logs.stdout
    assert last_backup_record(provisioned.host) == before  # nothing recorded as a success, nothing lost
    provisioned.host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
    assert wait_for_backup(provisioned.host, other_than=before) != before
    checked = provisioned.host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} check", user="kono")
    assert checked.returncode == 0, logs.stdout


def test_two_backups_at_once_both_succeed_and_one_of_them_is_the_record(backed_up):
    """An operator's backup by hand while the scheduled one runs (seen in CI: the loop's first backup
    and one run by hand shared a summary file, and the backup failed on the other's numbers)."""
    provisioned, server, inventory = backed_up
    lab_tools.deploy(inventory)  # with the repository (no change after the tests before it; alone, its first)
    provisioned.host.ssh(lab_tools.API_SQL, user="kono", input=BACKUPS_TABLE)  # not an empty database
    run = f"docker exec {container('backup')} {BACKUP_SCRIPT} backup"
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: provisioned.host.ssh(run, user="kono", check=False), range(2)))
    assert [r.returncode for r in runs] == [0, 0], [r.stdout + r.stderr for r in runs]
    record = last_backup_record(provisioned.host).split()
    done = [line for r in runs for line in (r.stdout + r.stderr).splitlines() if "backup done:" in line]
    assert len(done) == 2 and len(record) == 6
    assert any(line.endswith("snapshots " + " ".join(record[3:])) for line in done), (record, done)


def test_the_lock_of_a_killed_run_is_taken_away_by_the_services_next_container(backed_up):
    """A backup container killed mid-run (a stop that outran its grace period, a power cut) leaves its
    restic lock in the repository, and every backup's last step (forget --prune) needs the repository
    to itself: restic deems the lock stale only 30 minutes on (seen in CI: a cluster's backups failed
    that long after a deploy stopped the old container mid-forget). The service's next container
    takes its own dead run's lock away: the next backup succeeds, and no lock is left."""
    provisioned, server, inventory = backed_up
    host = provisioned.host
    lab_tools.deploy(inventory)
    host.ssh(lab_tools.API_SQL, user="kono", input=BACKUPS_TABLE)  # not an empty database
    host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")  # the repository, made
    locks = server.root / "locks"
    # A run that holds its lock until it is killed: restic reading a dump that never ends.
    host.ssh(f"docker exec -d {container('backup')} restic --no-cache backup --host held --stdin-filename held "
             "--stdin-from-command -- sleep 900", user="kono")
    deadline = time.monotonic() + 60
    while not list(locks.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    held = sorted(p.name for p in locks.glob("*"))
    assert held, "the held run never took its lock"
    host.ssh(f"docker rm -f {container('backup')}", user="kono")  # killed: no cleanup
    assert sorted(p.name for p in locks.glob("*")) == held  # the dead run's lock is still there
    lab_tools.deploy(inventory)  # the service is missing: a new container
    ran = host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono", check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert not [name for name in held if (locks / name).exists()]


def test_a_scheduled_backup_missed_while_the_service_was_down_runs_once_when_it_is_back(backed_up):
    """backup_schedule names a minute of the day (UTC). The service is stopped over that minute (a
    deploy, a reboot, a maintenance): when it is back, the day's backup runs at once, and once."""
    provisioned, server, _ = backed_up
    host = provisioned.host
    minute = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0) + datetime.timedelta(minutes=3)
    inventory = lab_tools.write_inventory(
        provisioned.lab, [host], provisioned.lab.workdir / "schedule-inventory.py", api_repo=provisioned.git.repo("api"),
        app_repo=provisioned.git.repo("app"), backup_repository=server.url, backup_schedule=f"{minute:%H:%M}")
    lab_tools.deploy(inventory)
    host.ssh(lab_tools.API_SQL, user="kono", input=BACKUPS_TABLE)  # not an empty database
    host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
    before = last_backup_record(host)
    left = (minute - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert left > 15, f"the deploy took until {left:.0f} s before the scheduled minute: too late to stop the service"
    host.ssh(f"docker stop {container('backup')}", user="kono")
    time.sleep(left + 60)  # the whole minute passes while it is down
    host.ssh("docker start $(docker ps -aq --filter label=com.docker.compose.service=backup)", user="kono")
    after = wait_for_backup(host, other_than=before, seconds=150)
    time.sleep(70)  # two more rounds of the loop: nothing runs again
    assert last_backup_record(host) == after
    runs = host.ssh(f"docker logs --since {minute:%Y-%m-%dT%H:%M:%S}Z {container('backup')} 2>&1 | grep -c 'backup done'",
                    user="kono", check=False)
    assert runs.stdout.strip() == "1", runs.stdout + runs.stderr


def backup_metrics(host, condition, seconds: float = 90) -> dict[str, float]:
    """The kono_backup_* samples the host's metrics endpoint serves (read on the host: loopback), once
    ``condition`` holds for them."""
    deadline, found = time.monotonic() + seconds, {}
    while time.monotonic() < deadline:
        text = host.ssh(f"curl -s -m 5 http://127.0.0.1:{lab_tools.DEFAULTS['metrics_port']}/metrics", user="kono",
                        check=False).stdout
        found = {name: value for name, value in lab_tools.metric_samples(text).items() if name.startswith("kono_backup_")}
        if condition(found):
            return found
        time.sleep(2)
    raise AssertionError(f"the backup's metrics did not come to that within {seconds} s: {found}")


def status_until(inventory, condition, seconds: float = 180):
    """The first status within ``seconds`` whose output meets ``condition``; fails with the last one."""
    deadline = time.monotonic() + seconds
    while True:
        shown = lab_tools.status(inventory, timeout=120)
        if condition(shown.stdout):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"status did not come to that within {seconds} s: {shown.stdout}{shown.stderr}")
        time.sleep(5)


def test_with_monitoring_the_last_success_its_size_and_a_failure_are_metrics(backed_up):
    """monitoring = True beside backups: the metrics serve the last success as its record says it, its
    size, and whether the last run failed (1 from the failed run on, 0 again after the next success),
    with the age the alert calls overdue; Prometheus fires BackupFailed, status says it, and it ends
    with the next success."""
    provisioned, server, _ = backed_up
    host = provisioned.host
    lab_tools.load_images(host, monitoring=True)
    inventory = lab_tools.write_inventory(
        provisioned.lab, [host], provisioned.lab.workdir / "backup-monitoring-inventory.py",
        api_repo=provisioned.git.repo("api"), app_repo=provisioned.git.repo("app"), backup_repository=server.url,
        monitoring=True)
    lab_tools.deploy(inventory)
    host.ssh(lab_tools.API_SQL, user="kono", input=BACKUPS_TABLE)  # not an empty database
    host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
    started, read = last_backup_record(host).split()[:2]
    at = datetime.datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()
    found = backup_metrics(host, lambda m: m.get("kono_backup_last_success_timestamp_seconds") == at)
    assert found == {"kono_backup_last_success_timestamp_seconds": at, "kono_backup_last_size_bytes": float(read),
                     "kono_backup_failing": 0.0, "kono_backup_max_age_seconds": MAX_AGE.total_seconds()}
    server.stop()
    try:
        failed = host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono", check=False)
    finally:
        server.start()
    assert failed.returncode != 0
    backup_metrics(host, lambda m: m.get("kono_backup_failing") == 1.0
                   and m.get("kono_backup_last_success_timestamp_seconds") == at)
    # Prometheus on the host evaluates files/monitoring/alerts.yml: status names the alert it fires.
    shown = status_until(inventory, lambda out: "alert          BackupFailed: The last backup" in out)
    assert shown.returncode == 1 and re.search(r"  alert          BackupFailed: .* NOT OK$", shown.stdout, re.M)
    host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
    backup_metrics(host, lambda m: m.get("kono_backup_failing") == 0.0
                   and m.get("kono_backup_last_success_timestamp_seconds", 0) > at)
    status_until(inventory, lambda out: "BackupFailed" not in out and re.search(r"  (alert|alerts) ", out))
    lab_tools.deploy(inventory)
    assert lab_tools.deploy(inventory, "--json").changes == 0


def test_drift_exits_non_zero_when_the_last_success_is_older_than_twice_the_schedule(backed_up):
    provisioned, server, inventory = backed_up
    lab_tools.deploy(inventory)  # with the repository (no change after the tests before it; alone, its first)
    if not last_backup_record(provisioned.host):  # alone: no backup yet (and an empty database is not backed up)
        provisioned.host.ssh(lab_tools.API_SQL, user="kono", input=BACKUPS_TABLE)
        provisioned.host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
    last = last_backup_record(provisioned.host)
    set_last_success(provisioned.host, "2026-01-01T03:00:00Z " + last.split(" ", 1)[1])  # long ago
    try:
        drift = lab_tools.drift(inventory)
        assert drift.returncode == 1 and "the last successful backup is" in drift.stdout, drift.stdout + drift.stderr
        assert "NOT OK" in lab_tools.status(inventory, timeout=120).stdout
    finally:
        set_last_success(provisioned.host, last)


def test_a_brand_new_host_gets_any_backup_back_from_the_repository_with_one_command(backed_up, lab, tmp_path):
    provisioned, server, inventory = backed_up
    a = provisioned.host
    lab_tools.deploy(inventory)  # with the repository (no change after the tests before it)
    api_password = host_secret(a, "production", "db_api_password")
    dev_password = host_secret(a, "dev", "db_dev_password")
    # Data of its own in both databases and the assets, then two backups with different data.
    assert mysql(a, "api", api_password, "CREATE TABLE IF NOT EXISTS drill (id INT AUTO_INCREMENT PRIMARY KEY, "
                 "note VARCHAR(64)); INSERT INTO drill (note) VALUES ('first'), ('second');").returncode == 0
    assert mysql(a, "dev", dev_password, "CREATE TABLE IF NOT EXISTS drill (n INT PRIMARY KEY); "
                 "INSERT INTO drill VALUES (1), (2);", server="db_dev", database="dev").returncode == 0
    provisioned.maintainer("echo 'first asset' > /srv/static/drill.txt")
    # Not the first backup of the day (as when the tests before ran): restic keeps a group's oldest
    # snapshot beyond the policy, which would shelter the newer backup below from retention.
    a.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
    a.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
    older = last_backup_record(a).split()[3:]  # db_production, db_dev, files
    # Retention keeps the newest backup of a day: the operator pins this one to restore it later.
    a.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} keep {' '.join(older)}", user="kono")
    listed = json.loads(a.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} snapshots", user="kono").stdout)
    pinned = [next(s["short_id"] for s in listed if "keep" in s["tags"] and part in s["tags"])
              for part in ("db_production", "db_dev", "files")]  # retagged: new ids
    at_older = lab_tools.data_fingerprint(a)
    assert mysql(a, "api", api_password, "INSERT INTO drill (note) VALUES ('third'); "
                 "DELETE FROM drill WHERE note = 'first';").returncode == 0
    assert mysql(a, "dev", dev_password, "INSERT INTO drill VALUES (3);", server="db_dev",
                 database="dev").returncode == 0
    provisioned.maintainer("echo 'second asset' > /srv/static/drill.txt && echo new > /srv/static/drill-2.txt")
    a.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
    newer = last_backup_record(a).split()[3:]
    at_newer = lab_tools.data_fingerprint(a)
    assert at_newer != at_older and all("drill" in at_older[part] for part in at_older)
    key_a = host_key(a)

    b = lab.boot()
    try:
        # Only the repository URL and its password (the lab's local secrets) come from the old host.
        new = provisioned.provision_new(b, tmp_path / "new-host.py", backup_repository=server.url)
        restored = lab_tools.backup_tool("restore-repository", str(new), "--snapshot", older[1])
        SEEN.append(("restore-repository --snapshot", restored.stdout + restored.stderr))
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert f"restored snapshots {' '.join(pinned)}" in restored.stdout  # the whole older backup
        assert lab_tools.data_fingerprint(b) == at_older  # every row, every asset, as of that backup

        assert f"pinned the newer snapshots {' '.join(newer)} " in restored.stdout  # the state B went back from
        # The restored state is backed up at once; retention (the newest of a day) keeps the pinned newer run.
        wait_for_backup(b)
        latest = lab_tools.backup_tool("restore-repository", str(new), "--snapshot", newer[0], "--force")
        SEEN.append(("restore-repository --snapshot newer --force", latest.stdout + latest.stderr))
        assert latest.returncode == 0, latest.stdout + latest.stderr
        assert lab_tools.data_fingerprint(b) == at_newer
        assert host_key(b) == key_a
        # The comparison sees one missing row.
        mysql(b, "dev", host_secret(b, "dev", "db_dev_password"), "DELETE FROM drill WHERE n = 3;",
              server="db_dev", database="dev")
        assert lab_tools.data_fingerprint(b)["db_dev"] != at_newer["db_dev"]

        lab_tools.pin_maintainer_host_key(b)
        lab_tools.maintainer(b, "kono-deploy app")
        with urllib.request.urlopen(f"http://{b.address}/static/drill.txt", timeout=10) as response:
            assert response.read() == b"second asset\n"
        with urllib.request.urlopen(f"http://{b.address}/", timeout=10) as response:
            assert response.status == 200

        again = lab_tools.backup_tool("restore-repository", str(new))
        assert again.returncode != 0 and "refusing to restore" in again.stderr
        # pitr was never on: no point in time to restore to, said before anything changes
        before = lab_tools.data_fingerprint(b)
        point = lab_tools.backup_tool("restore-repository", str(new), "--until", time.strftime("%Y-%m-%d %H:%M:%S",
                                                                                              time.gmtime()), "--force")
        assert point.returncode != 0 and "the repository holds no binary logs" in point.stderr, point.stderr
        assert lab_tools.data_fingerprint(b) == before
        unknown = lab_tools.backup_tool("restore-repository", str(new), "--snapshot", "ffffffff")
        assert unknown.returncode != 0 and "no snapshot 'ffffffff' in the repository" in unknown.stderr
    finally:
        b.stop()


def test_the_repository_password_and_storage_credentials_appear_in_no_output_log_container_or_git(backed_up):
    provisioned, server, inventory = backed_up
    folder = provisioned.lab.workdir / "secrets" / "backup"
    values = [(folder / "repository_password").read_text().strip(),
              (folder / "storage_credentials").read_text().strip().split("=", 1)[1]]
    # Runs of its own too (so that it checks something when selected alone): the host deployed with the
    # repository at -vvv and --debug --diff, its status, and a backup run by hand.
    SEEN.append(("deploy -vvv", lab_tools.deploy(inventory, "-vvv").output))
    SEEN.append(("deploy --debug --diff", lab_tools.deploy(inventory, "--debug", "--diff").output))
    shown = lab_tools.status(inventory, timeout=120)
    SEEN.append(("status", shown.stdout + shown.stderr))
    ran = provisioned.host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono", check=False)
    SEEN.append(("backup by hand", ran.stdout + ran.stderr))
    on_host = provisioned.host.ssh("cat /srv/kono/config/backup/storage_credentials", user="kono").stdout
    assert values[1] in on_host  # placed on the host, where the backup service reads it
    logs = provisioned.host.ssh(f"docker logs {container('backup')} 2>&1; cat /srv/kono/.kono/audit.log", user="kono")
    seen = SEEN + [("backup service log and audit log", logs.stdout)] + lab_tools.containers_and_git(provisioned.host)
    assert len(SEEN) >= 4
    assert values[0] and values[1]
    assert [where for where, text in seen for value in values if value in text] == []
