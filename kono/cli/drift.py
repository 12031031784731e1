"""Drift check: does each host still match the declared state? Read-only, for a scheduled job.

    python -m kono.cli.drift inventory.py

It runs the deploy as a plan only (``pyinfra --dry``: facts are read, nothing is executed), and the
deploy's operations say, while planning, what differs (kono/plan.py): a changed or missing project
file, a secret missing or with the wrong mode, a service not running and healthy, a cluster node
down; a host that does not answer SSH is a finding too. Exit 0 when nothing differs, 1 with the
list when something does, 2 when the check itself could not run.
Non-interactive: no standard input, strict host keys (group_data/all.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from kono.plan import MARK

REPO = Path(__file__).resolve().parent.parent.parent


ANSI = re.compile(r"\x1b\[[0-9;]*m")
# pyinfra's line for a host it could not connect to (pyinfra/api/host.py, connectors/ssh_util.py).
UNREACHABLE = re.compile(r"^\[(?P<host>[^\]]+)\] (?P<why>Could not connect .*)$")


def findings(output: str) -> list[str]:
    """The drift lines of a plan's output, each once, without the mark."""
    return sorted({re.sub(r"\s+", " ", line.strip()).replace(MARK, "") for line in output.splitlines()
                   if MARK in line})


def unreachable(output: str) -> list[str]:
    """The hosts the plan could not connect to, as findings."""
    lines = (UNREACHABLE.match(ANSI.sub("", line).strip()) for line in output.splitlines())
    return sorted({f"[{m['host']}] unreachable: {m['why']}" for m in lines if m})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kono.cli.drift INVENTORY", file=sys.stderr)
        return 2
    pyinfra = str(Path(sys.executable).parent / "pyinfra")
    # --json: without it (and without -y, which would skip planning) pyinfra asks whether to go on
    # when a host does not answer, and with no one to answer it stops planning the others too.
    proc = subprocess.run([pyinfra, "--dry", "--json", argv[0], "deploy.py"], cwd=REPO, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    lost = unreachable(output)
    if proc.returncode != 0 and not lost:  # a host that does not answer fails the plan: a finding
        print(output[-3000:], file=sys.stderr)
        print("drift check failed to run", file=sys.stderr)
        return 2
    found = findings(output) + lost
    for finding in found:
        print(finding)
    if not found:
        print("no drift: every host matches the declared state")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
