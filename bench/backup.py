"""Backup benchmark: a production database of about --size-mb (1 GB by default) backed up by the
backup service to a restic repository over the network (rclone's REST server on the lab bridge),
then 1% of its rows changed and backed up again, then restored (with --force, over itself).

    sudo .venv/bin/python -m bench.backup [--size-mb 1024] [--runs 3]

Reports, per run (interleaved: backup, change 1%, backup again, restore), and the median and spread:
the backup's time, the backup container's peak memory (its processes' RSS, sampled), what each
backup added to the repository, and the restore's time. Writes bench/backup-latest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

from tests import lab as lab_tools
from tests.lab import BACKUP_SCRIPT, ResticServer, container, host_secret, mysql
from tests.testhost import Lab

ROW_BYTES = 1024  # one row: a 1024-character payload (eight SHA-512 hex digests of random numbers)
PAYLOAD = "CONCAT(" + ", ".join(["SHA2(RAND(), 512)"] * 8) + ")"


def machine() -> str:
    """What a stored run was measured on."""
    return f"{platform.machine()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores"


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def sql(host, statement: str) -> str:
    out = mysql(host, "api", host_secret(host, "production", "db_api_password"), statement)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout


def fill(host, size_mb: int) -> int:
    """A table of ~size_mb of rows that do not compress to nothing (hex of random digests: about 2:1)."""
    sql(host, "CREATE TABLE IF NOT EXISTS bulk (id INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(1024)); "
              f"INSERT INTO bulk (payload) SELECT {PAYLOAD} FROM (SELECT 1) AS one "
              "WHERE NOT EXISTS (SELECT 1 FROM bulk);")
    target = size_mb * 1024 * 1024 // ROW_BYTES
    while int(sql(host, "SELECT COUNT(*) FROM bulk;").strip()) < target:
        sql(host, f"INSERT INTO bulk (payload) SELECT {PAYLOAD} FROM bulk LIMIT {target};")
    return int(sql(host, "SELECT COUNT(*) FROM bulk;").strip())


def step(host, command: str) -> tuple[float, int]:
    """(seconds, the backup container's peak memory in bytes) of a command run in it. The test host
    has no cgroup memory controller (tests/README: controllers are absent in nspawn), so the peak is
    the largest sum of its processes' RSS, sampled every 0.2 s (`docker top`)."""
    cid = host.ssh(f"docker inspect -f '{{{{.Id}}}}' {container('backup')}", user="kono").stdout.strip()
    stop = f"/tmp/kono-bench-stop-{time.monotonic_ns()}"
    sampler = subprocess.Popen(
        [*host.ssh_args("kono"), f"for i in $(seq 18000); do [ -e {stop} ] && break; "
                                 f"docker top {cid} -o pid,rss | awk 'NR > 1 {{s += $2}} END {{print s + 0}}'; sleep 0.2; done"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started = time.monotonic()
    try:
        host.ssh(f"docker exec {cid} {command}", user="kono", timeout=3600)
        seconds = time.monotonic() - started
    finally:
        host.ssh(f"touch {stop}", user="kono")
        samples = sampler.communicate(timeout=60)[0].split()
        host.ssh(f"rm -f {stop}", user="kono")
    return seconds, max(int(kb) for kb in samples) * 1024


def added(host) -> int:
    """What the last backup added to the repository (compressed), from the service's own record:
    the repository's size alone would hide it, as retention prunes the day's earlier snapshot."""
    return int(host.ssh(f"docker exec {container('backup')} cat /state/last-success", user="kono").stdout.split()[2])


def read(host) -> int:
    """What the last backup read (the dumps and the files), from the service's own record."""
    return int(host.ssh(f"docker exec {container('backup')} cat /state/last-success", user="kono").stdout.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/backup-latest.json"))
    parser.add_argument("--table", type=Path, help="print the table of a stored run (its JSON) and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "size_mb": args.size_mb, "runs": []}
    with Lab() as lab, lab_tools.GitServer(lab) as git, ResticServer(lab) as server:
        host = lab.boot()
        lab_tools.write_maintainer_passwords(lab, {login: f"{login}-bench-Pa55" for login in lab_tools.MAINTAINERS})
        (lab.workdir / "secrets" / "backup").mkdir(parents=True, exist_ok=True)
        (lab.workdir / "secrets" / "backup" / "repository_password").write_text("bench-repository-password-0123\n")
        inventory = lab_tools.write_inventory(lab, [host], lab.workdir / "one.py", backup_repository=server.url,
                                              api_repo=git.repo("api"), app_repo=git.repo("app"))
        lab_tools.bootstrap(inventory)
        lab_tools.load_images(host)
        lab_tools.deploy(inventory)
        started = time.monotonic()
        result["rows"] = fill(host, args.size_mb)
        result["fill_s"] = time.monotonic() - started
        result["database_bytes"] = int(sql(host, "SELECT SUM(data_length + index_length) FROM "
                                                 "information_schema.tables WHERE table_name = 'bulk';").strip())
        for _ in range(args.runs):
            run: dict = {}
            run["backup_s"], run["backup_peak_bytes"] = step(host, f"{BACKUP_SCRIPT} backup")
            run["added_bytes"] = added(host)
            run["read_bytes"] = read(host)
            sql(host, f"UPDATE bulk SET payload = {PAYLOAD} WHERE id % 100 = {len(result['runs'])};")
            run["backup_1pct_s"], run["backup_1pct_peak_bytes"] = step(host, f"{BACKUP_SCRIPT} backup")
            run["added_1pct_bytes"] = added(host)
            # The same share, but the newest 1% of the rows (one stretch of the dump, as an app that
            # updates recent records): restic's chunks around it change, the rest deduplicates.
            sql(host, f"UPDATE bulk SET payload = {PAYLOAD} WHERE id > {result['rows'] * 99 // 100};")
            run["backup_recent_1pct_s"], run["backup_recent_1pct_peak_bytes"] = step(host, f"{BACKUP_SCRIPT} backup")
            run["added_recent_1pct_bytes"] = added(host)
            run["restore_s"], run["restore_peak_bytes"] = step(host, f"env KONO_RESTORE_FORCE=yes {BACKUP_SCRIPT} restore")
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
        result["repository_bytes"] = du_bytes(server.root)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


def table(r: dict) -> str:
    """The run's table: the first backup (everything new to the repository) on its own, then each
    later kind of run (median and spread over the runs after the first), every peak shown."""
    later = r["runs"][1:] or r["runs"]

    def figure(key: str, scale: float, unit: str, runs: list[dict]) -> str:
        values = [run[key] / scale for run in runs if key in run]
        if not values:
            return "not recorded in this run"
        return (f"{statistics.median(values):.1f} {unit} (spread {min(values):.1f} to {max(values):.1f}, "
                f"{len(values)} runs)")

    mb = 1e6
    first = r["runs"][0]
    lines = [f"kono-infra backup benchmark, {r['date']}, {r['machine']}: db_production of {r['rows']} rows of "
             f"1 KiB ({r['rows'] * ROW_BYTES / 2**30:.2f} GiB of row data; InnoDB reports "
             f"{r['database_bytes'] / mb:.0f} MB), filled in {r['fill_s']:.0f} s; the dump read per backup: "
             f"{first['read_bytes'] / mb:.0f} MB", "", "| figure | value |", "|---|---|",
             f"| first backup, into an empty repository (both databases, assets, keys; forget --prune) | "
             f"{first['backup_s']:.1f} s |",
             f"| &nbsp; peak memory of the backup container | {first['backup_peak_bytes'] / mb:.1f} MB |",
             f"| &nbsp; added to the repository (compressed) | {first['added_bytes'] / mb:.1f} MB |",
             f"| backup of data already in the repository (after a restore of the same data) | "
             f"{figure('backup_s', 1, 's', later)} |",
             f"| &nbsp; peak memory | {figure('backup_peak_bytes', mb, 'MB', later)} |",
             f"| &nbsp; added to the repository | {figure('added_bytes', mb, 'MB', later)} |",
             f"| backup after changing 1% of the rows, every 100th (each ~1 MiB chunk of the dump changes) | "
             f"{figure('backup_1pct_s', 1, 's', r['runs'])} |",
             f"| &nbsp; peak memory | {figure('backup_1pct_peak_bytes', mb, 'MB', r['runs'])} |",
             f"| &nbsp; added to the repository | {figure('added_1pct_bytes', mb, 'MB', r['runs'])} |",
             f"| backup after changing the newest 1% of the rows | {figure('backup_recent_1pct_s', 1, 's', r['runs'])} |",
             f"| &nbsp; peak memory | {figure('backup_recent_1pct_peak_bytes', mb, 'MB', r['runs'])} |",
             f"| &nbsp; added to the repository | {figure('added_recent_1pct_bytes', mb, 'MB', r['runs'])} |",
             f"| restore (both databases, assets, keys) | {figure('restore_s', 1, 's', r['runs'])} |",
             f"| &nbsp; peak memory | {figure('restore_peak_bytes', mb, 'MB', r['runs'])} |",
             f"| repository at the end | {r['repository_bytes'] / mb:.0f} MB |"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
