"""Back up a host's data and secrets to the operator's machine, and restore them onto a host.

    python -m kono.backup create inventory.py [--dev] [--to backups]
    python -m kono.backup restore inventory.py backups/<host>/<time> [--force]

``create`` takes, without stopping anything, a consistent dump of db_production (``mysqldump
--single-transaction``; db_dev too with ``--dev``), the uploaded assets (``app_static``) and the
host's stack secrets, into ``<to>/<host>/<UTC time>/`` (files 0600, directories 0700). Its
``secrets/`` directory has the layout of ``local_secrets_dir``, so a new host deployed with
``--data local_secrets_dir=<backup>/secrets`` gets the same credentials.

``restore`` loads the dumps and the assets into a deployed host, and refuses when its production
database already holds tables, unless ``--force``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from pathlib import Path

from kono.remote import inventory_hosts, ssh_client  # first: gevent patches before ssl loads

from kono.secrets import SECRETS, secret_path

# Run on the host, in the project directory. Root passwords are read inside the containers.
DUMP = ("docker compose exec -T {service} sh -c 'MYSQL_PWD=$(cat /run/db-secrets/{env}_db_root_password) "
        "exec mysqldump -uroot --single-transaction --routines --triggers --databases {database}'")
LOAD = ("docker compose exec -T {service} sh -c 'MYSQL_PWD=$(cat /run/db-secrets/{env}_db_root_password) "
        "exec mysql -uroot'")
TABLES = ("printf \"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{database}';\\n\" | "
          "docker compose exec -T db_production sh -c "
          "'MYSQL_PWD=$(cat /run/db-secrets/production_db_root_password) exec mysql -uroot -N'")
ASSETS_OUT = "docker compose exec -T maintainer tar -C /srv/static -cf - ."
ASSETS_IN = "docker compose exec -T maintainer sh -c 'tar -C /srv/static -xf - && chgrp -R sudo /srv/static'"


def _run(client, command: str, directory: str, stdout=None, stdin: Path | None = None) -> bytes:
    """Run a command on the host; stream its output to a file object (or return it), and a file to its input."""
    channel = client.get_transport().open_session()
    channel.exec_command(f"cd {shlex.quote(directory)} && {command}")
    if stdin is not None:
        with open(stdin, "rb") as source:
            while chunk := source.read(65536):
                channel.sendall(chunk)
        channel.shutdown_write()
    collected = bytearray()
    while True:
        chunk = channel.recv(65536)
        if not chunk:
            break
        if stdout is None:
            collected.extend(chunk)
        else:
            stdout.write(chunk)
    error = channel.makefile_stderr("rb").read().decode(errors="replace")
    if channel.recv_exit_status() != 0:
        raise RuntimeError(f"{command.split(' ', 5)[:5]} failed on the host: {error.strip()[-500:]}")
    return bytes(collected)


def _private_file(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def create(inventory: str, to: Path, dev: bool) -> list[Path]:
    os.umask(0o077)  # everything this backup writes is the operator's alone
    made = []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for name, data, settings in inventory_hosts(inventory):
        target = to / name / stamp
        target.mkdir(parents=True)
        with ssh_client(name, data, settings) as client:
            directory = settings.project_dir
            databases = [("db_production", "production", settings.db_production_name)]
            if dev:
                databases.append(("db_dev", "dev", settings.db_dev_name))
            for service, env, database in databases:
                with _private_file(target / f"{service}.sql") as out:
                    _run(client, DUMP.format(service=service, env=env, database=database), directory, out)
            with _private_file(target / "app_static.tar") as out:
                _run(client, ASSETS_OUT, directory, out)
            for env, names in SECRETS.items():
                for secret in names:
                    with _private_file(target / "secrets" / env / secret) as out:
                        _run(client, f"cat {shlex.quote(secret_path(env, secret))}", directory, out)
        print(f"{name}: backed up to {target}")
        made.append(target)
    return made


def restore(inventory: str, source: Path, force: bool) -> None:
    hosts = inventory_hosts(inventory)
    for name, data, settings in hosts:
        with ssh_client(name, data, settings) as client:
            directory = settings.project_dir
            tables = int(_run(client, TABLES.format(database=settings.db_production_name), directory) or 0)
            if tables and not force:
                raise SystemExit(f"{name}: refusing to restore: db_production already holds {tables} tables "
                                 f"in {settings.db_production_name} (use --force to load over them)")
            for service, env in (("db_production", "production"), ("db_dev", "dev")):
                dump = source / f"{service}.sql"
                if dump.exists():
                    _run(client, LOAD.format(service=service, env=env), directory, stdin=dump)
            _run(client, ASSETS_IN, directory, stdin=source / "app_static.tar")
        print(f"{name}: restored from {source}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kono.backup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("create", help="back up every host of the inventory")
    make.add_argument("inventory")
    make.add_argument("--to", type=Path, default=Path("backups"))
    make.add_argument("--dev", action="store_true", help="also dump db_dev")
    back = commands.add_parser("restore", help="restore a backup onto the inventory's host(s)")
    back.add_argument("inventory")
    back.add_argument("backup", type=Path)
    back.add_argument("--force", action="store_true", help="load even over existing tables")
    args = parser.parse_args(argv)
    if args.command == "create":
        create(args.inventory, args.to, args.dev)
    else:
        restore(args.inventory, args.backup, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
