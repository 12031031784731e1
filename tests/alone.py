"""Every end-to-end test must pass when selected alone. This runs, in one pytest session, the last
test of each end-to-end module (the one most likely to lean on those before it), so that each runs
without the tests before it in its module; a test that needs an earlier one's state fails here.

    .venv/bin/python -m tests.alone [PYTEST ARGS]     (CI runs it after the whole suite, on three workers)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def last_of_each_module(collected: list[str]) -> list[str]:
    """From pytest's collected test ids, in their order, the last of each module."""
    last: dict[str, str] = {}
    for test_id in collected:
        if "::" in test_id:
            last[test_id.split("::", 1)[0]] = test_id
    return list(last.values())


def main(pytest_args: list[str]) -> int:
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "e2e", "tests"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    sample = last_of_each_module([line.strip() for line in listed])
    print(f"each test alone in its module: {len(sample)} tests", flush=True)
    return subprocess.run([sys.executable, "-m", "pytest", "-v", "-rA", *pytest_args, *sample], cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
