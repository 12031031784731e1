"""Every script the stack ships into containers, and the CI's own, at least parses: each file under
files/ is a script checked here (by its interpreter) or named as not one."""

import subprocess

import pytest

from tests.lab import REPO

NOT_SCRIPTS = {"files/backup/Dockerfile", "files/maintainer/Dockerfile", "files/maintainer/sshd_config",
               # promtool checks these (tests/unit/test_alerts.py)
               "files/monitoring/alerts.yml", "files/monitoring/alerts-test.yml",
               "files/grafana/kono-host.json"}  # tests/unit/test_dashboard.py
# Sourced by the mysql image's entrypoint (bash), no shebang of its own.
SOURCED = {"files/db/production/10-users.sh": "bash"}
OTHERS = [("bash", "tests/images/mysql/docker-entrypoint.sh"), ("bash", ".ci/run"), ("bash", ".ci/setup"),
          # its sh is bash on the official mysql image (Oracle Linux), dash on the double
          ("bash", "files/backup/kono-backup.sh")]


def interpreter(path: str) -> str:
    """node for JavaScript, else the shell its shebang names (sh or bash)."""
    if path.endswith(".js"):
        return "node"
    if path in SOURCED:
        return SOURCED[path]
    first = (REPO / path).read_text().splitlines()[0]
    assert first.startswith("#!"), f"{path}: no shebang, and not listed as sourced or as not a script"
    return "bash" if first.endswith("bash") else "sh"


SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "files").rglob("*") if p.is_file())
SCRIPTS = [(interpreter(path), path) for path in SHIPPED if path not in NOT_SCRIPTS] + OTHERS


def test_every_shipped_file_is_checked_or_named_as_not_a_script():
    assert {path for _, path in SCRIPTS} | NOT_SCRIPTS >= set(SHIPPED)
    assert "files/api/kono-api.sh" in {path for _, path in SCRIPTS}


@pytest.mark.parametrize("interpreter, path", SCRIPTS, ids=[p for _, p in SCRIPTS])
def test_scripts_parse(interpreter, path):
    check = ["node", "--check"] if interpreter == "node" else [interpreter, "-n"]
    proc = subprocess.run([*check, REPO / path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
