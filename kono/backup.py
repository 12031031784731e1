"""Backups: the scheduled ones (the backup service, files/backup/kono-backup.sh, to a restic
repository) and, with pitr, db_production's binary logs (the binlog service, same script) as
status and drift see them, and a restore from that repository; and the operator's own copy on
their machine.

**From the repository**: ``restore_repository`` loads both databases and puts back the assets and
the maintainer's host keys from a snapshot (the latest by default) onto a deployed host, refusing
when its production database already holds tables, unless ``force``; with binary logs, it replays
them onto the base up to a point in time (``point_in_time_set`` picks the snapshots).

**To the operator's machine**:

``create`` takes, without stopping anything, a consistent dump of db_production (``mysqldump
--single-transaction``; db_dev too with ``dev``), the uploaded assets (``app_static``) and the
host's stack secrets only when asked (``with_secrets``: they are then plain files, so it says
where), into ``<to>/<host>/<UTC time>/`` (files 0600, directories 0700). Its ``secrets/`` directory
has the layout of ``local_secrets_dir``, so a new host deployed with
``--data local_secrets_dir=<backup>/secrets`` gets the same credentials.

``restore`` loads the dumps and the assets into a deployed host, and refuses when its production
database already holds tables, unless ``force``. The CLI is kono/cli/backup.py.

Example::

    for target in inventory_hosts("inventory.py"):
        create(target, Path("backups"), dev=False)
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra.api import FactBase, deploy

from kono import commands
from kono.operator_input import from_operator, secret_sources, supplied_value
from kono.plan import drift
from kono.host_state import Read, read
from kono.secrets import has_file, same_value, supplied_files, supplied_paths
from kono.services import SECRETS, TIMELINE_TAG, databases, script, enabled, root_password_file, stack_secrets
from kono.settings import BACKUP_MAX_AGE, Settings, SettingsError

if TYPE_CHECKING:
    from kono.remote import Target

CREDENTIAL_LINE = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")  # storage credentials: KEY=value, one per line
NEEDS_CREDENTIALS = ("s3:", "b2:", "azure:", "gs:", "swift:")  # restic backends that cannot go without
MAX_AGE = BACKUP_MAX_AGE  # older than this, status and drift say so


def parse_last_backup(text: str) -> dict | None:
    """{time, bytes (read), added (to the repository, compressed), snapshots} from the backup
    service's record of its last success, or None."""
    fields = text.split()
    if len(fields) < 4:
        return None
    when = datetime.datetime.strptime(fields[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return {"time": when, "bytes": int(fields[1]), "added": int(fields[2]), "snapshots": fields[3:]}


def backup_age(last: dict, now: datetime.datetime | None = None) -> datetime.timedelta:
    return (now or datetime.datetime.now(datetime.timezone.utc)) - last["time"]


class LastBackup(FactBase):
    """The backup service's last success, or None."""

    @staticmethod
    def default():
        return None

    def command(self, project: str) -> str:
        return commands.last_backup(project, script("backup"))

    def process(self, output: list[str]):
        return parse_last_backup(" ".join(output))


def parse_shipped(text: str) -> dict | None:
    """{time: everything committed before it is in the repository, failing_since: the shipper's first
    failure of the current run of them or None} from the binlog service, or None before its first round."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "none":
        return None
    when = [None if field == "-" else datetime.datetime.strptime(field, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc) for field in fields]
    return {"time": when[0], "failing_since": when[1]}


def shipping_ok(shipped: dict | None, settings: Settings, now: datetime.datetime | None = None) -> bool:
    """Binary logs are no further behind than twice their limit."""
    return shipped is not None and backup_age(shipped, now).total_seconds() <= 2 * settings.pitr_max_lag_seconds


def shipping_summary(shipped: dict | None) -> str:
    if shipped is None:
        return "no report from the binlog service (down, or nothing shipped yet)"
    said = f"shipped up to {shipped['time']:%Y-%m-%d %H:%M:%S} UTC ({backup_age(shipped).total_seconds():.0f} s ago)"
    if shipped["failing_since"]:
        said += f", failing since {shipped['failing_since']:%Y-%m-%d %H:%M:%S} UTC (its log says why)"
    return said


class ShippedBinlogs(FactBase):
    """How far db_production's binary logs are in the repository (``parse_shipped``)."""

    @staticmethod
    def default():
        return None

    def command(self, project: str) -> str:
        return commands.shipped_binlogs(project, script("binlog"))

    def process(self, output: list[str]):
        return parse_shipped(" ".join(output))


def backup_reads(settings: Settings) -> list[Read]:
    """What ``backups`` reads from the host (kono/host_state.py reads it with the others)."""
    reads: list[Read] = [(LastBackup, {"project": settings.compose_project})] if settings.backups_on else []
    return reads + ([(ShippedBinlogs, {"project": settings.compose_project})] if settings.pitr_on else [])


@deploy("Backups")
def backups(settings: Settings) -> None:
    """Say in the plan (and so in drift) when the last successful backup is missing or older than
    MAX_AGE; the backup service itself runs them. Changes nothing."""
    if not settings.backups_on:
        return
    last = read(LastBackup, project=settings.compose_project)
    if last is None:
        drift("no successful backup yet")
    elif backup_age(last) > MAX_AGE:
        drift(f"the last successful backup is {backup_age(last).total_seconds() / 3600:.0f} hours old "
              f"({last['time']:%Y-%m-%d %H:%M} UTC)")
    if settings.pitr_on:
        shipped = read(ShippedBinlogs, project=settings.compose_project)
        if not shipping_ok(shipped, settings):
            drift(f"binary logs: {shipping_summary(shipped)}; the limit is {settings.pitr_max_lag_seconds} s")


def backup_entries(settings: Settings) -> dict:
    """{name: Secret} of the backup secrets these settings need (none without a repository)."""
    return {e.name: e for e in enabled(SECRETS, settings) if e.origin == "operator"}


def backup_secrets(settings: Settings) -> dict[str, str]:
    """With a backup repository: the backup secrets the operator gives, {path: content} (never
    generated: a repository password that only the host knows dies with it). Raises SettingsError for
    malformed storage credentials; ``backup_secret_problems`` compares with the host once the deploy
    holds the lock."""
    entries = backup_entries(settings)
    if not entries:
        return {}
    password, credentials = entries["repository_password"], entries["storage_credentials"]
    files: dict[str, str] = {}
    found = supplied_value(settings, password)
    if found:
        files[password.path] = found[0]
    given = from_operator(secret_sources(settings, credentials))
    if given:
        lines = [line.strip() for line in given[0].splitlines() if line.strip()]
        bad = [line.split("=", 1)[0] for line in lines if not CREDENTIAL_LINE.match(line)]
        if bad:
            raise SettingsError(f"{credentials.key}: expected KEY=value lines (e.g. AWS_ACCESS_KEY_ID=...) in "
                                f"{given[1]}, got a line starting {bad[0][:12]!r}")
        files[credentials.path] = "".join(line + "\n" for line in lines) or NO_CREDENTIALS
    return files


def backup_secret_problems(settings: Settings, given: dict[str, str], tree: dict,
                           digests: dict[str, str | None]) -> list[str]:
    """What is wrong with the backup secrets, given what the operator gives and the host's ConfigTree
    and digests: a password other than the one the repository was initialised with, or a secret
    neither given nor on the host."""
    entries = backup_entries(settings)
    if not entries:
        return []
    password, credentials = entries["repository_password"], entries["storage_credentials"]
    on_host = {e.name: has_file(tree, e.path) for e in entries.values()}
    on_host["storage_credentials"] &= not same_value(NO_CREDENTIALS, digests.get(credentials.path))
    problems = []
    if password.path in given:
        if on_host["repository_password"] and not same_value(given[password.path], digests.get(password.path)):
            source = supplied_value(settings, password)[1]
            problems.append(f"{password.key}: expected the value the host has, since the repository was "
                            f"initialised with it; {source} holds a different one")
    elif not on_host["repository_password"]:
        problems.append(f"{password.key}: expected it in {secret_sources(settings, password)} (backup_repository is "
                        f"set; it is never generated on the host, which it must outlive), and the host has none")
    if credentials.path not in given and not on_host["storage_credentials"] and \
            settings.backup_repository.startswith(NEEDS_CREDENTIALS):
        problems.append(f"{credentials.key}: expected KEY=value lines in {secret_sources(settings, credentials)} "
                        f"({settings.backup_repository.split(':')[0]}: needs credentials), and the host has none")
    return problems


# What a backend that needs no credentials (rest:, sftp: with keys, rclone:) gets: a comment the
# backup script skips. Not an empty file: a swarm refuses a secret without content.
NO_CREDENTIALS = "# none: this repository's backend needs no credentials\n"


@deploy("Backup secrets")
def place_backup_secrets(settings: Settings, files: dict[str, str]) -> None:
    entries = backup_entries(settings)
    if not entries:
        return
    credentials = entries["storage_credentials"]
    supplied_files(name="Backup repository password and storage credentials", directory=settings.project_dir,
                   files=files, compared=supplied_paths(settings), defaults={credentials.path: NO_CREDENTIALS})


# What one backup run stores, one snapshot each, by the tag it carries (files/backup/kono-backup.sh).
SNAPSHOT_PARTS = ("db_production", "db_dev", "files")
# A run's three snapshots are taken within minutes of each other; runs are a day apart.
SAME_RUN = datetime.timedelta(hours=1)


def _snapshot_time(snapshot: dict) -> datetime.datetime:
    return datetime.datetime.fromisoformat(snapshot["time"].replace("Z", "+00:00"))


def snapshot_set(snapshots: list[dict], wanted: str) -> tuple[str, str, str]:
    """The ids of one backup run's snapshots (db_production, db_dev, files), from restic's JSON list
    of the host's snapshots: the newest of each for "latest", else those of the run that snapshot
    ``wanted`` (an id or its start) belongs to. Raises ValueError saying what is missing."""
    by_part = {part: [s for s in snapshots if part in (s.get("tags") or [])] for part in SNAPSHOT_PARTS}
    if wanted == "latest":
        missing = [part for part, found in by_part.items() if not found]
        if missing:
            raise ValueError(f"the repository holds no {', '.join(missing)} snapshot")
        return tuple(max(by_part[part], key=_snapshot_time)["short_id"] for part in SNAPSHOT_PARTS)
    # A snapshot whose tags changed (pinned with "keep") has a new id; restic lists the old as "original".
    chosen = [s for s in snapshots if any(s.get(field, "").startswith(wanted) for field in ("id", "short_id", "original"))]
    if len(chosen) != 1:
        raise ValueError(f"{'no' if not chosen else 'more than one'} snapshot {wanted!r} in the repository")
    when = _snapshot_time(chosen[0])
    ids = []
    for part in SNAPSHOT_PARTS:
        nearest = min(by_part[part], key=lambda s: abs(_snapshot_time(s) - when), default=None)
        if nearest is None or abs(_snapshot_time(nearest) - when) > SAME_RUN:
            raise ValueError(f"the backup that snapshot {wanted} belongs to has no {part} snapshot")
        ids.append(nearest["short_id"])
    return tuple(ids)


def displaced_by_restore(snapshots: list[dict], restored: tuple[str, ...]) -> tuple[str, ...]:
    """The snapshots a restore of ``restored`` (one id per part) must pin: of each part, the newest, when it
    is newer than the one restored and not pinned yet. The restored state is backed up at once, and
    ``forget --keep-daily`` keeps only a day's newest backup: unpinned, the state the host held before the
    restore would be forgotten, and a restore made by mistake could not be undone."""
    pinned = []
    for part, chosen in zip(SNAPSHOT_PARTS, restored):  # ids as snapshot_set and point_in_time_set give them
        of_part = [s for s in snapshots if part in (s.get("tags") or [])]
        restored_at = next(_snapshot_time(s) for s in of_part if s["short_id"] == chosen)
        newest = max(of_part, key=_snapshot_time)
        if _snapshot_time(newest) > restored_at and "keep" not in newest["tags"]:
            pinned.append(newest["short_id"])
    return tuple(pinned)


def parse_until(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """``--until``: a UTC time ("2026-12-02 14:05:00", ISO 8601 with T, Z or an offset, or "... UTC"),
    in whole seconds (binary logs record whole seconds) and not in the future. Raises ValueError."""
    cleaned = text.strip().removesuffix(" UTC").removesuffix("Z")
    expected = f"--until: expected a UTC time like \"2026-12-02 14:05:00\", got {text!r}"
    try:
        when = datetime.datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(expected) from None
    if ":" not in cleaned:
        raise ValueError(expected + " (a date alone)")
    if when.microsecond:
        raise ValueError(f"--until: expected whole seconds (binary logs record no finer), got {text!r}")
    when = (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    if when > (now or datetime.datetime.now(datetime.timezone.utc)):
        raise ValueError(f"--until: expected a time in the past, got {when:%Y-%m-%d %H:%M:%S} UTC")
    return when


def _tagged(snapshots: list[dict], tag: str) -> list[dict]:
    return [s for s in snapshots if tag in (s.get("tags") or [])]


def _timeline(snapshot: dict) -> str | None:
    return next((t for t in snapshot.get("tags") or [] if t.startswith(TIMELINE_TAG)), None)


def has_binary_logs(snapshots: list[dict]) -> bool:
    """The newest db_production backup is a base that binary logs of its timeline carry forward."""
    production = _tagged(snapshots, "db_production")
    if not production:
        return False
    line = _timeline(max(production, key=_snapshot_time))
    return line is not None and any(line in s["tags"] for s in _tagged(snapshots, "binlog"))


def point_in_time_set(snapshots: list[dict], until: datetime.datetime | None
                      ) -> tuple[tuple[str, str, str], tuple[str, ...], datetime.datetime]:
    """What restores db_production as of ``until`` (None: as far as shipped): the newest base at or
    before it (a db_production dump with a binary log position), db_dev's and the files' newest
    snapshots at or before it, and the base's timeline's binary log snapshots after it (the newest of
    each hour's folder, which holds the whole hour); with the time of the newest of those. Raises
    ValueError saying what is missing."""
    def at_or_before(found: list[dict]) -> list[dict]:
        return [s for s in found if until is None or _snapshot_time(s) <= until]

    when = "" if until is None else f" at or before {until:%Y-%m-%d %H:%M:%S} UTC"
    logs = _tagged(snapshots, "binlog")
    if not logs:
        raise ValueError("the repository holds no binary logs (pitr was never on for this host): "
                         "restore a backup with --snapshot, or the latest")
    bases = [s for s in _tagged(snapshots, "db_production") if _timeline(s)]
    candidates = at_or_before(bases)
    if not candidates:
        oldest = f" (the oldest is {min(map(_snapshot_time, bases)):%Y-%m-%d %H:%M:%S} UTC)" if bases else ""
        raise ValueError(f"the repository holds no base{when}: no db_production backup taken with pitr on{oldest}")
    base = max(candidates, key=_snapshot_time)
    line, since = _timeline(base), _snapshot_time(base) - SAME_RUN
    newest_of_folder: dict[tuple, dict] = {}
    for log in sorted((s for s in logs if line in s["tags"] and _snapshot_time(s) >= since), key=_snapshot_time):
        newest_of_folder[tuple(log.get("paths") or ())] = log
    chosen = sorted(newest_of_folder.values(), key=_snapshot_time)
    if not chosen:
        raise ValueError(f"the repository holds no binary logs after the base {base['short_id']} "
                         f"({_snapshot_time(base):%Y-%m-%d %H:%M:%S} UTC)")
    others = []
    for part in SNAPSHOT_PARTS[1:]:
        found = at_or_before(_tagged(snapshots, part))
        if not found:
            raise ValueError(f"the repository holds no {part} snapshot{when}")
        others.append(max(found, key=_snapshot_time)["short_id"])
    return ((base["short_id"], *others), tuple(s["short_id"] for s in chosen),
            max(_snapshot_time(s) for s in chosen))


def restore_repository(target: Target, snapshot: str, force: bool, until: datetime.datetime | None = None) -> str:
    """Restore one backup from the host's repository onto it (``snapshot``: "latest", or any snapshot of
    that backup), carried forward by its binary logs to ``until`` (or as far as shipped, for the latest
    of a repository that has them); returns what the backup service said."""
    from kono.remote import connect, run  # operator tools only: the deploy imports this module too
    if not target.settings.backups_on:
        raise SystemExit(f"{target.name}: no backup_repository is set for this host")
    project = target.settings.compose_project
    with connect(target) as client:
        listed = json.loads(run(client, commands.repository_snapshots(project, script("backup"))) or b"[]")
        try:
            if until is not None or (snapshot == "latest" and has_binary_logs(listed)):
                ids, logs, shipped = point_in_time_set(listed, until)
            else:
                ids, logs = snapshot_set(listed, snapshot), ()
        except ValueError as error:
            raise SystemExit(f"{target.name}: {error}") from None
        replay = ("" if until is None else f"{until:%Y-%m-%d %H:%M:%S}", logs) if logs else None
        kept = displaced_by_restore(listed, ids)
        said = run(client, commands.restore_from_repository(project, ids, force, script("backup"), replay,
                                                            kept)).decode()
    said += f"restored snapshots {' '.join(ids)} ({', '.join(SNAPSHOT_PARTS)})\n"
    if kept:
        said += (f"pinned the newer snapshots {' '.join(kept)} (tagged keep, so that retention keeps the state "
                 "before this restore; restic gives each a new id)\n")
    if logs:
        said += (f"replayed the binary logs of {len(logs)} snapshots, shipped up to {shipped:%Y-%m-%d %H:%M:%S} UTC"
                 + (f"; db_production is as of {until:%Y-%m-%d %H:%M:%S} UTC\n" if until and until <= shipped else
                    "; db_production is as of the newest shipped\n"))
    return said


ASSETS = ("maintainer", "/srv/static")  # (service, folder) holding the app_static volume
ASSETS_GROUP = "sudo"  # the maintainers' group, which owns the shared volumes in the container


def _private_file(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def create(target: Target, to: Path, dev: bool, with_secrets: bool) -> Path:
    """Back one host up into ``<to>/<host>/<UTC time>/``; returns that folder."""
    from kono.remote import connect, run
    os.umask(0o077)  # everything this backup writes is the operator's alone
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = to / target.name / stamp
    folder.mkdir(parents=True)
    settings = target.settings
    project = settings.compose_project
    with connect(target) as client:
        directory = settings.project_dir
        for service in databases():
            env, name_knob = service.database
            if env == "dev" and not dev:
                continue
            dump = commands.mysqldump(project, service.name, root_password_file(service.name), getattr(settings, name_knob))
            with _private_file(folder / f"{service.name}.sql") as out:
                run(client, dump, directory, out)
        with _private_file(folder / "app_static.tar") as out:
            run(client, commands.tar_out(project, *ASSETS), directory, out)
        for secret in (stack_secrets(settings) if with_secrets else ()):
            with _private_file(folder / "secrets" / secret.env / secret.name) as out:
                run(client, commands.read_file(secret.path), directory, out)
    return folder


def restore(target: Target, source: Path, force: bool) -> None:
    """Load a backup's dumps and assets into a deployed host."""
    from kono.remote import connect, run
    settings = target.settings
    project = settings.compose_project
    with connect(target) as client:
        directory = settings.project_dir
        production = next(s for s in databases() if s.database[0] == "production")
        database = getattr(settings, production.database[1])
        tables = int(run(client, commands.table_count(project, production.name, root_password_file(production.name),
                                                      database), directory) or 0)
        if tables and not force:
            raise SystemExit(f"{target.name}: refusing to restore: {production.name} already holds {tables} "
                             f"tables in {database} (use --force to load over them)")
        for service in databases():
            dump = source / f"{service.name}.sql"
            if dump.exists():
                run(client, commands.mysql_root(project, service.name, root_password_file(service.name)), directory,
                    stdin=dump)
        run(client, commands.tar_in(project, *ASSETS, ASSETS_GROUP), directory, stdin=source / "app_static.tar")
