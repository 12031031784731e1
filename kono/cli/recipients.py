"""Who can read the team's encrypted secrets file: one age recipient per person and one per CI.

    python -m kono.cli.recipients list
    python -m kono.cli.recipients add NAME AGE_RECIPIENT     onboarding: NAME can decrypt from now on
    python -m kono.cli.recipients remove NAME                offboarding: NAME cannot decrypt the file
                                                              as it is from now on; says what to rotate

Options: ``--file secrets.sops.yaml`` (the encrypted file, ``secrets_sops_file``) and ``--config
.sops.yaml`` (SOPS's creation rules, beside it, which this keeps: one rule for the file, its
recipients each on a line with its name). The file is re-encrypted by sops (``updatekeys``; on
removal ``rotate`` too: a new data key, so a copy of the old one opens nothing written from now
on), with the identity of the operator who runs it, who must be a recipient. What the removed
person could read stays readable to them in the repository's history and any copy: each value is
named with how to rotate it. Both files are then committed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from kono.operator_input import decrypted, run_sops, sops_said
from kono.services import SECRETS
from kono.settings import SettingsError

AGE_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")  # bech32, as age-keygen -y prints it
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
LINE = re.compile(r"^\s+- (?P<recipient>age1\S+)\s+# (?P<name>\S+)$")


def read_recipients(config_text: str) -> dict[str, str]:
    """{name: age recipient} from a .sops.yaml this tool wrote."""
    return {m["name"]: m["recipient"] for m in map(LINE.match, config_text.splitlines()) if m}


def sops_config(file_name: str, recipients: dict[str, str]) -> str:
    """SOPS's creation rules: the secrets file encrypted for each recipient (one key group: any one
    of them decrypts), the names kept as comments."""
    lines = "".join(f"          - {recipient}  # {name}\n" for name, recipient in sorted(recipients.items()))
    return ("# Who can read the team's secrets: python -m kono.cli.recipients add|remove (README.md, \"Team secrets\").\n"
            "creation_rules:\n"
            f"  - path_regex: (^|/){re.escape(file_name)}$\n"
            "    key_groups:\n"
            "      - age:\n" + lines)


def rotation_advice(key: str) -> str:
    """How to replace a value a removed recipient could read."""
    stack = {entry.key for entry in SECRETS if entry.origin == "stack"}
    if key in stack:
        return (f"put a new value in the file (sops edit) or delete it there, then "
                f"pyinfra inventory.py rotate.py --data rotate={key}")
    if key.startswith("maintainer_password_"):
        return "put a new password in the file, then deploy"
    if key.startswith("tls/"):
        return "a new key and certificate from your CA into the file, then deploy"
    if key == "backup/repository_password":
        return ("not rotatable by kono-infra: the repository is initialised with it (README.md, Backups); "
                "whoever kept it can read the backups")
    return "revoke it where it was issued (the webhook, mail or storage provider), put the new one in the file, then deploy"


def _reencrypt(config: Path, file: Path, rotate: bool) -> None:
    done = run_sops("--config", str(config), "updatekeys", "--yes", str(file))
    if done.returncode == 0 and rotate:
        done = run_sops("--config", str(config), "rotate", "--in-place", str(file))
    if done.returncode != 0:
        raise SettingsError(f"{file}: sops could not re-encrypt it ({sops_said(done)}); are you one of its recipients?")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kono.cli.recipients")
    parser.add_argument("--file", default="secrets.sops.yaml", type=Path)
    parser.add_argument("--config", default=".sops.yaml", type=Path)
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    add = actions.add_parser("add")
    add.add_argument("name")
    add.add_argument("recipient")
    remove = actions.add_parser("remove")
    remove.add_argument("name")
    args = parser.parse_args(argv)
    recipients = read_recipients(args.config.read_text()) if args.config.exists() else {}
    try:
        if args.action == "list":
            for name, recipient in sorted(recipients.items()):
                print(f"{name}  {recipient}")
            return 0
        if args.action == "add":
            if not NAME.match(args.name) or not AGE_RECIPIENT.match(args.recipient):
                raise SettingsError(f"add: expected a name (letters, digits, . _ @ -) and an age recipient "
                                    f"(age1..., as age-keygen -y prints it), got {args.name!r} {args.recipient[:12]!r}")
            if args.name in recipients:
                raise SettingsError(f"add: {args.name} is a recipient already (remove them first to change their key)")
            recipients[args.name] = args.recipient
        else:
            if args.name not in recipients:
                raise SettingsError(f"remove: expected one of {', '.join(sorted(recipients)) or 'no one'}, "
                                    f"got {args.name!r}")
            if len(recipients) == 1:
                raise SettingsError("remove: the last recipient: no one could decrypt the file")
            del recipients[args.name]
        args.config.write_text(sops_config(args.file.name, recipients))
        if args.file.exists():
            _reencrypt(args.config, args.file, rotate=args.action == "remove")
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{args.config} and {args.file}: {', '.join(sorted(recipients))} can decrypt it now; commit both files.")
    if args.action == "remove" and args.file.exists():
        print(f"{args.name} could read these values before (the repository's history keeps them); rotate each:")
        for key in sorted(decrypted(args.file)):
            print(f"  {key}: {rotation_advice(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
