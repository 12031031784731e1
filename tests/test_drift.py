"""Drift check: exit 0 when the host matches the declared state, 1 with a readable list when it does
not, and it changes nothing on the host."""

import subprocess

import pytest

from tests import lab as lab_tools
from tests.lab import container

pytestmark = pytest.mark.e2e


def drift(provisioned) -> subprocess.CompletedProcess:
    before = provisioned.snapshot()
    proc = lab_tools.drift(provisioned.inventory)
    assert provisioned.snapshot() == before, "the drift check changed the host"
    return proc


@pytest.mark.parametrize("break_it, finding", [
    (f"docker stop --time 1 {container('nginx')}", "service nginx is not running and healthy (exited"),
    ("echo '# edited by hand' >> /srv/kono/nginx/default.conf", "nginx/default.conf differs from what is declared"),
    ("chmod 0644 /srv/kono/config/production/api_key", "config/production/api_key has mode 644, expected 600"),
], ids=["stopped container", "edited file", "secret mode"])
def test_drift_is_reported_and_nothing_is_changed(provisioned, break_it, finding):
    provisioned.wait_healthy()
    clean = drift(provisioned)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no drift" in clean.stdout

    provisioned.host.ssh(break_it, user="kono")
    drifted = drift(provisioned)
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    assert finding in drifted.stdout
    assert provisioned.host.address in drifted.stdout

    assert provisioned.deploy("--json").changes > 0  # the next deploy puts it right
    provisioned.wait_healthy()
    assert drift(provisioned).returncode == 0
