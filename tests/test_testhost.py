"""The throwaway host itself: a fresh cloud-like server, reached with strict host keys, cleaned up."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.testhost import BRIDGE, Lab, _guest_inits, _start_time, nat_rule

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


def test_a_lab_that_ends_leaves_the_bridge_to_a_lab_still_using_it():
    """Labs share one bridge (the session's, a test's own, another run's): the last one removes it."""
    with Lab() as first:
        with Lab() as second:
            assert second.subnet == first.subnet
        assert Path(f"/sys/class/net/{BRIDGE}").exists(), "the bridge went while a lab still used it"
        assert subprocess.run(["iptables", "-t", "nat", "-C", *nat_rule(first.subnet)],
                              capture_output=True).returncode == 0


def test_a_host_whose_nspawn_was_killed_is_stopped_with_everything_it_ran():
    """A SIGKILLed nspawn (the stop's last resort, or the OOM killer) leaves its guest running:
    it would keep the address the next host gets and write into the root filesystem being deleted."""
    with Lab() as lab:
        host = lab.boot()
        guest = _guest_inits(host._proc.pid)
        assert len(guest) == 1, guest
        host._stopping.set()
        os.kill(host._proc.pid, signal.SIGKILL)
        host.stop()
        pid, started = guest[0]
        assert _start_time(pid) != started, "the guest's init outlived its nspawn"
        assert not host.root.exists()
        again = lab.boot(address=host.address)  # (another run on this machine may take the lowest free one)
        assert again.ssh("hostname").stdout.strip() == again.name
