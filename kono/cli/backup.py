"""Back up every host of an inventory to this machine, or restore a backup onto its host(s).

    python -m kono.cli.backup create inventory.py [--dev] [--to backups]
    python -m kono.cli.backup restore inventory.py backups/<host>/<time> [--force]

What is in a backup, and how a restore refuses to overwrite data: kono/backup.py.
"""

from __future__ import annotations

from kono.remote import inventory_hosts  # first: gevent patches before ssl loads

import argparse
import sys
from pathlib import Path

from kono import backup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kono.cli.backup", description=__doc__.splitlines()[0])
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
    for target in inventory_hosts(args.inventory):
        if args.command == "create":
            print(f"{target.name}: backed up to {backup.create(target, args.to, args.dev)}")
        else:
            backup.restore(target, args.backup, args.force)
            print(f"{target.name}: restored from {args.backup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
