"""No plaintext secret in git: fails when a file git tracks (as it stands in the working tree, so
before a commit too) holds a value from any secret source of this machine, or something shaped like
a secret (a private key, a cloud or chat token). CI runs it (``.ci/run``); run it before committing.

    python -m kono.cli.leaks [--data-file group_data/all.py]

The values: every ``$KONO_SECRET_*`` and ``$KONO_MAINTAINER_PASSWORD_*``, every file under
``local_secrets_dir``, and every value of ``secrets_sops_file`` when this machine can decrypt it
(kono/operator_input.py). The encrypted file itself is tracked on purpose: its values are
ciphertext. Prints where (file, line, what kind), never the value; exit 1 when anything is found.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

from kono.operator_input import PASSWORD_ENV, SECRET_ENV, decrypted
from kono.settings import SettingsError

# Shapes of secrets that are never meant to be in a repository.
PATTERNS = {
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*\n[A-Za-z0-9+/=]{40,}"),
    "an age identity": re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{58}"),
    "an AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "a Slack token": re.compile(r"\bxox[abpr]-[0-9A-Za-z-]{10,}"),
    "a Slack webhook URL": re.compile(r"hooks\.slack\.com/services/T[0-9A-Z]+/B[0-9A-Z]+/[0-9A-Za-z]{16,}"),
}
SHORTEST = 8  # a value shorter than this is too likely to be an ordinary word to look for


def secret_values(local_secrets_dir: Path, sops_file: Path | None, environ: dict[str, str]) -> dict[str, str]:
    """{value: where it comes from} for every secret this machine holds."""
    prefixes = (SECRET_ENV.split("{")[0], PASSWORD_ENV.split("{")[0])
    values = {value: f"${name}" for name, value in environ.items() if name.startswith(prefixes)}
    found = []  # (where, text)
    if local_secrets_dir.is_dir():
        found += [(str(path), path.read_text(errors="replace"))
                  for path in sorted(p for p in local_secrets_dir.rglob("*") if p.is_file())]
    if sops_file is not None:
        found += [(f"{sops_file}'s {key}", value) for key, value in decrypted(sops_file).items()]
    for where, text in found:  # the whole value, and each of its lines (a PEM's, KEY=value lines)
        values.update({part.strip(): where for part in (text, *text.splitlines())})
    return {value: where for value, where in values.items() if len(value) >= SHORTEST and not value.startswith("-----")}


def findings(tracked: dict[str, str], values: dict[str, str]) -> list[str]:
    """"<file>:<line>: <what>" for each tracked file's line that holds a secret value or shape."""
    found = []
    for name, text in tracked.items():
        for kind, pattern in PATTERNS.items():
            for match in pattern.finditer(text):
                found.append(f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {kind}")
        for number, line in enumerate(text.splitlines(), 1):
            found.extend(f"{name}:{number}: the value of {where}" for value, where in values.items() if value in line)
    return found


def tracked_files(top: Path) -> dict[str, str]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=top, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    texts = {}
    for name in filter(None, names):
        path = top / name
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if b"\0" not in data[:8192]:  # text files: a binary one holds no typed-in secret
                texts[name] = data.decode(errors="replace")
    return texts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m kono.cli.leaks")
    parser.add_argument("--data-file", default="group_data/all.py", type=Path,
                        help="where local_secrets_dir and secrets_sops_file are set")
    args = parser.parse_args(argv)
    top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                              check=True).stdout.strip())
    knobs = runpy.run_path(str(top / args.data_file))
    sops_file = knobs.get("secrets_sops_file")
    try:
        values = secret_values(top / knobs.get("local_secrets_dir", "secrets"),
                               top / sops_file if sops_file else None, dict(os.environ))
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    found = findings(tracked_files(top), values)
    for line in found:
        print(line)
    print(f"{len(found)} secrets in tracked files (looked for {len(values)} values and {len(PATTERNS)} shapes)",
          file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
