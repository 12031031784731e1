"""The shell and JavaScript the stack ships into containers at least parse."""

import subprocess

import pytest

from tests.lab import REPO

SCRIPTS = [("sh", "files/maintainer/entrypoint.sh"), ("bash", "files/maintainer/kono-deploy"),
           ("sh", "files/db/production/10-users.sh"), ("bash", "tests/images/mysql/docker-entrypoint.sh"),
           ("bash", ".ci/run"), ("bash", ".ci/setup"), ("sh", "files/acme/kono-acme.sh"),
           ("sh", "files/nginx-entrypoint/kono-nginx.sh"), ("sh", "files/backup/kono-backup.sh")]


@pytest.mark.parametrize("shell, path", SCRIPTS, ids=[p for _, p in SCRIPTS])
def test_shell_scripts_parse(shell, path):
    proc = subprocess.run([shell, "-n", REPO / path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", ["files/api/start.js", "files/api/worker.js"])
def test_the_api_supervisor_and_worker_parse(path):
    proc = subprocess.run(["node", "--check", REPO / path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
