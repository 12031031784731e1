"""The throwaway host itself: a fresh cloud-like server, reached with strict host keys, cleaned up."""

import subprocess

import pytest

from tests.testhost import Lab

pytestmark = pytest.mark.e2e


def test_fresh_host_is_a_cloud_like_server_and_leaves_nothing_behind():
    with Lab() as lab:
        host = lab.boot()
        facts = host.ssh("sudo -n id -un; systemctl is-active ssh; . /etc/os-release; echo $ID $VERSION_CODENAME").stdout
        assert facts.split() == ["root", "active", "debian", "trixie"]
        assert host.ssh("command -v docker", check=False).returncode != 0, "fresh means no Docker yet"
        pid, root = host._proc.pid, host.root

        # A host key that is not the pinned one is refused, never trusted on first use.
        lab.known_hosts.write_text(lab.known_hosts.read_text().replace(host.address, f"{lab.subnet}.254"))
        refused = host.ssh("true", check=False)
        assert refused.returncode == 255
    assert not root.exists()
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
