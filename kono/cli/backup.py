"""Back up every host of an inventory to this machine, or restore a backup onto its host(s).

    python -m kono.cli.backup restore-repository inventory.py [--snapshot ID | --until "UTC TIME"] [--force]
    python -m kono.cli.backup create inventory.py [--dev] [--with-secrets] [--to backups]
    python -m kono.cli.backup restore inventory.py backups/<host>/<time> [--force]

On a cluster (engine = "swarm") each acts on the db node alone, where the data is.
restore-repository: from the host's restic repository (backup_repository), the latest snapshot by
default; with pitr, db_production as of --until (or as far as its binary logs were shipped). create / restore: a copy on this machine. What is in each, and how a restore refuses to
overwrite data: kono/backup.py.
"""

from __future__ import annotations

from kono.remote import inventory_hosts  # first: gevent patches before ssl loads

import argparse
import sys
from pathlib import Path

from kono import backup
from kono.cluster import holds_stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kono.cli.backup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("create", help="back up every host of the inventory")
    make.add_argument("inventory")
    make.add_argument("--to", type=Path, default=Path("backups"))
    make.add_argument("--dev", action="store_true", help="also dump db_dev")
    make.add_argument("--with-secrets", action="store_true",
                      help="also copy the host's stack secrets, as plain 0600 files (their folder is printed)")
    back = commands.add_parser("restore", help="restore a backup onto the inventory's host(s)")
    back.add_argument("inventory")
    back.add_argument("backup", type=Path)
    back.add_argument("--force", action="store_true", help="load even over existing tables")
    again = commands.add_parser("restore-repository", help="restore from each host's restic repository")
    again.add_argument("inventory")
    again.add_argument("--snapshot", default="latest", help="a snapshot id (default: the latest)")
    again.add_argument("--until", help="with pitr: db_production as of this UTC time, e.g. \"2026-12-02 14:05:00\"")
    again.add_argument("--force", action="store_true", help="load even over existing tables")
    args = parser.parse_args(argv)
    until = None
    if args.command == "restore-repository" and args.until is not None:
        if args.snapshot != "latest":
            parser.error("--until and --snapshot: give one or the other")
        try:
            until = backup.parse_until(args.until)
        except ValueError as error:
            parser.error(str(error))
    for target in inventory_hosts(args.inventory):
        if not holds_stack(target.settings):  # a cluster's data is on its db node alone
            continue
        if args.command == "create":
            folder = backup.create(target, args.to, args.dev, args.with_secrets)
            print(f"{target.name}: backed up to {folder}")
            if args.with_secrets:
                print(f"{target.name}: its secrets are plain files in {folder / 'secrets'}: keep them as you would "
                      f"the host itself, and delete them when done")
        elif args.command == "restore-repository":
            try:
                said = backup.restore_repository(target, args.snapshot, args.force, until)
            except RuntimeError as error:
                print(f"{target.name}: restore failed: {error}", file=sys.stderr)
                return 1
            print(said.strip())
            print(f"{target.name}: restored from its repository ({args.until or args.snapshot})")
        else:
            backup.restore(target, args.backup, args.force)
            print(f"{target.name}: restored from {args.backup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
