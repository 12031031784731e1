"""Back up a host's data and secrets to the operator's machine, and restore them onto a host.

``create`` takes, without stopping anything, a consistent dump of db_production (``mysqldump
--single-transaction``; db_dev too with ``dev``), the uploaded assets (``app_static``) and the
host's stack secrets, into ``<to>/<host>/<UTC time>/`` (files 0600, directories 0700). Its
``secrets/`` directory has the layout of ``local_secrets_dir``, so a new host deployed with
``--data local_secrets_dir=<backup>/secrets`` gets the same credentials.

``restore`` loads the dumps and the assets into a deployed host, and refuses when its production
database already holds tables, unless ``force``. The CLI is kono/cli/backup.py.

Example::

    for target in inventory_hosts("inventory.py"):
        create(target, Path("backups"), dev=False)
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from kono import commands
from kono.remote import Target, connect, run
from kono.services import databases, root_password_file, stack_secrets

ASSETS = ("maintainer", "/srv/static")  # (service, folder) holding the app_static volume
ASSETS_GROUP = "sudo"  # the maintainers' group, which owns the shared volumes in the container


def _private_file(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def create(target: Target, to: Path, dev: bool) -> Path:
    """Back one host up into ``<to>/<host>/<UTC time>/``; returns that folder."""
    os.umask(0o077)  # everything this backup writes is the operator's alone
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = to / target.name / stamp
    folder.mkdir(parents=True)
    settings = target.settings
    with connect(target) as client:
        directory = settings.project_dir
        for service in databases():
            env, name_knob = service.database
            if env == "dev" and not dev:
                continue
            dump = commands.mysqldump(service.name, root_password_file(service.name), getattr(settings, name_knob))
            with _private_file(folder / f"{service.name}.sql") as out:
                run(client, dump, directory, out)
        with _private_file(folder / "app_static.tar") as out:
            run(client, commands.tar_out(*ASSETS), directory, out)
        for secret in stack_secrets():
            with _private_file(folder / "secrets" / secret.env / secret.name) as out:
                run(client, commands.read_file(secret.path), directory, out)
    return folder


def restore(target: Target, source: Path, force: bool) -> None:
    """Load a backup's dumps and assets into a deployed host."""
    settings = target.settings
    with connect(target) as client:
        directory = settings.project_dir
        production = next(s for s in databases() if s.database[0] == "production")
        database = getattr(settings, production.database[1])
        tables = int(run(client, commands.table_count(production.name, root_password_file(production.name), database),
                         directory) or 0)
        if tables and not force:
            raise SystemExit(f"{target.name}: refusing to restore: {production.name} already holds {tables} "
                             f"tables in {database} (use --force to load over them)")
        for service in databases():
            dump = source / f"{service.name}.sql"
            if dump.exists():
                run(client, commands.mysql_root(service.name, root_password_file(service.name)), directory, stdin=dump)
        run(client, commands.tar_in(*ASSETS, ASSETS_GROUP), directory, stdin=source / "app_static.tar")
