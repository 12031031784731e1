"""Point-in-time recovery benchmark: what a day of 1% changed rows adds to the repository with binary
logs shipped (against a full dump), the time to restore a database of about --size-mb (1 GB by
default) to a chosen second onto a fresh host (RTO), and the committed data lost when a host is
killed hard (RPO), each over several trials.

    sudo .venv/bin/python -m bench.pitr [--size-mb 1024] [--trials 3]

One lab, a repository served over the network (rclone's REST server on the lab bridge). Growth and
RTO: host A with the table, a base, then per trial 1% of the rows changed (every 100th, a day's
worth), shipped, and the repository's growth measured; then host B, brand new, restored to the second
after each trial's change (the first restore onto B fresh, the later ones with --force over it).
RPO: per trial a new pair of hosts: a writer commits a row every 100 ms on one, which is killed at a
random moment (every process at once) 75 to 95 s into the writes; the other restores from the
repository alone, and the acknowledged rows it lacks are counted in seconds of commits. Writes
bench/pitr-latest.json; ``--table FILE`` prints a stored run's table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.backup import PAYLOAD, ROW_BYTES, du_bytes, fill, machine, sql
from tests import lab as lab_tools
from tests.lab import BACKUP_SCRIPT, ResticServer, Writer, container, last_backup_record, root_sql, wait_shipped_past
from tests.testhost import Lab

LIMIT = lab_tools.DEFAULTS["pitr_max_lag_seconds"]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def provision(lab: Lab, git, server: ResticServer, name: str):
    host = lab.boot()
    inventory = lab_tools.write_inventory(lab, [host], lab.workdir / f"{name}.py", backup_repository=server.url,
                                          pitr=True, api_repo=git.repo("api"), app_repo=git.repo("app"))
    lab_tools.bootstrap(inventory)
    lab_tools.load_images(host)
    lab_tools.deploy(inventory)
    return host, inventory


def base(host) -> None:
    """A base now: the backup service may have taken one as the table began (a new host backs up as
    soon as a table exists), which the backup would otherwise keep for `pitr_full_backup_days`."""
    host.ssh(f"docker exec {container('backup')} sh -c 'rm -f /state/last-base && {BACKUP_SCRIPT} backup'",
             user="kono", timeout=3600)


def restore(host, inventory: Path, *args: str) -> float:
    """Seconds of the restore; then waits out the backup of the restored state it starts (up to 20
    minutes), so that the next trial does not share the host with it."""
    before = last_backup_record(host)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kono.cli.backup", "restore-repository", str(inventory), *args],
                          cwd=lab_tools.REPO, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    seconds = time.monotonic() - started
    deadline = time.monotonic() + 1200
    while last_backup_record(host) == before and time.monotonic() < deadline:
        time.sleep(5)
    return seconds


def growth_and_rto(lab: Lab, git, size_mb: int, trials: int) -> dict:
    result: dict = {"trials": []}
    with ResticServer(lab, "pitr-bench-growth") as server:
        a, _ = provision(lab, git, server, "growth-a")
        started = time.monotonic()
        result["rows"] = fill(a, size_mb)
        result["fill_s"] = time.monotonic() - started
        # The fill's own binary logs go to the repository too: let them arrive before measuring.
        wait_shipped_past(a, now(), 20 * LIMIT)
        before = du_bytes(server.root)
        base(a)
        result["base_added_bytes"] = du_bytes(server.root) - before
        points = []
        for trial in range(trials):
            before = du_bytes(server.root)
            sql(a, f"UPDATE bulk SET payload = {PAYLOAD} WHERE id % 100 = {trial};")
            changed = now().replace(microsecond=0) + datetime.timedelta(seconds=1)
            took = wait_shipped_past(a, changed, 10 * LIMIT)
            points.append(changed)
            result["trials"].append({"binlog_added_bytes": du_bytes(server.root) - before, "shipped_within_s": took})
            print(json.dumps(result["trials"][-1]), flush=True)
        b, b_inventory = provision(lab, git, server, "growth-b")
        for trial, point in enumerate(points):
            seconds = restore(b, b_inventory, "--until", f"{point:%Y-%m-%d %H:%M:%S}", *(["--force"] if trial else []))
            result["trials"][trial]["restore_to_second_s"] = seconds
            print(json.dumps(result["trials"][trial]), flush=True)
        a.stop()
        b.stop()
    return result


def rpo_trial(lab: Lab, git, number: int) -> dict:
    with ResticServer(lab, f"pitr-bench-rpo-{number}") as server:
        a, _ = provision(lab, git, server, f"rpo-a{number}")
        root_sql(a, "CREATE TABLE orders (id INT PRIMARY KEY, at DATETIME(6) NOT NULL, client_at DOUBLE NOT NULL);")
        base(a)
        writer = Writer(a)
        started = time.time()
        time.sleep(LIMIT + 15 + random.uniform(0, 20))
        killed_at = time.time()
        a.kill()
        acked = writer.stop(host_alive=False)
        b, b_inventory = provision(lab, git, server, f"rpo-b{number}")
        restore(b, b_inventory)
        rows = set(map(int, root_sql(b, "SELECT id FROM orders;").split()))
        lost = [at for n, at in acked if n not in rows]
        b.stop()
    return {"killed_after_s": killed_at - started, "acknowledged": len(acked), "lost_rows": len(lost),
            "lost_s": killed_at - min(lost) if lost else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/pitr-latest.json"))
    parser.add_argument("--table", type=Path, help="print the table of a stored run (its JSON) and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "size_mb": args.size_mb,
                    "limit_s": LIMIT}
    with Lab() as lab, lab_tools.GitServer(lab) as git:
        lab_tools.write_maintainer_passwords(lab, {login: f"{login}-bench-Pa55" for login in lab_tools.MAINTAINERS})
        (lab.workdir / "secrets" / "backup").mkdir(parents=True, exist_ok=True)
        (lab.workdir / "secrets" / "backup" / "repository_password").write_text("bench-repository-password-0123\n")
        result.update(growth_and_rto(lab, git, args.size_mb, args.trials))
        result["rpo"] = []
        for number in range(args.trials):
            result["rpo"].append(rpo_trial(lab, git, number))
            print(json.dumps(result["rpo"][-1]), flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


def table(r: dict) -> str:
    """The run's table: each figure's median and spread over the trials, and each RPO trial's loss."""
    def figure(values: list[float], unit: str, digits: int = 1) -> str:
        return (f"{statistics.median(values):.{digits}f} {unit} (spread {min(values):.{digits}f} to "
                f"{max(values):.{digits}f}, {len(values)} trials)")

    mb = 1e6
    trials = r["trials"]
    lines = [f"kono-infra point-in-time recovery benchmark, {r['date']}, {r['machine']}: db_production of "
             f"{r['rows']} rows of 1 KiB ({r['rows'] * ROW_BYTES / 2**30:.2f} GiB of row data), filled in "
             f"{r['fill_s']:.0f} s; shipping limit {r['limit_s']} s", "", "| figure | value |", "|---|---|",
             f"| the base: the full dump, into an empty repository | {r['base_added_bytes'] / mb:.0f} MB |",
             f"| a day of 1% of the rows changed (every 100th row): binary logs added to the repository | "
             f"{figure([t['binlog_added_bytes'] / mb for t in trials], 'MB')} |",
             f"| &nbsp; shipped within (the last change in the repository after) | "
             f"{figure([t['shipped_within_s'] for t in trials], 's')} |",
             f"| restore to a chosen second (base + binary logs) onto a fresh host, then over it (RTO) | "
             f"{figure([t['restore_to_second_s'] for t in trials], 's')} |",
             f"| host killed hard at a random moment: committed data lost (RPO) | "
             f"{figure([t['lost_s'] for t in r['rpo']], 's')}; each: "
             f"{', '.join(format(t['lost_s'], '.1f') + ' s' for t in r['rpo'])} |"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
