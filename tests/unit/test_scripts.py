"""The shell and JavaScript the stack ships into containers at least parse."""

import subprocess

import pytest

from tests.lab import REPO

SCRIPTS = [("sh", "files/maintainer/entrypoint.sh"), ("bash", "files/maintainer/kono-deploy"),
           ("sh", "files/db/production/10-users.sh"), ("bash", "tests/images/mysql/docker-entrypoint.sh"),
           ("bash", ".ci/run"), ("bash", ".ci/setup")]


@pytest.mark.parametrize("shell, path", SCRIPTS, ids=[p for _, p in SCRIPTS])
def test_shell_scripts_parse(shell, path):
    proc = subprocess.run([shell, "-n", REPO / path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_api_launcher_parses():
    proc = subprocess.run(["node", "--check", REPO / "files/api/start.js"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
