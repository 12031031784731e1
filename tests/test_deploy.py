"""Deploy: secrets, the compose project, bring-up only when needed, a healthy stack, no sudo."""

import re
import socket
import subprocess
import sys
import urllib.request

import pytest

from kono.services import environments, stack_secrets
from tests.lab import DEFAULT_SERVICES, REPO, sdk_container, settings_of

pytestmark = pytest.mark.e2e


def test_fresh_host_gets_all_five_services_running_and_healthy(provisioned):
    state = provisioned.wait_healthy(timeout=10)
    assert sorted(state) == sorted(s.name for s in DEFAULT_SERVICES)


def test_nginx_answers_on_port_80_from_the_machine(provisioned):
    with urllib.request.urlopen(f"http://{provisioned.host.address}/healthz", timeout=10) as response:
        assert response.status == 200
        assert response.read() == b"ok\n"
    with urllib.request.urlopen(f"http://{provisioned.host.address}/api/health", timeout=10) as response:
        assert response.status == 200


def test_secrets_are_private_files_on_the_host(provisioned):
    host = provisioned.testinfra("kono")
    for folder in ["config", *(f"config/{env}" for env in environments(stack_secrets(settings_of())))]:
        assert host.file(f"/srv/kono/{folder}").mode == 0o700, folder
    for entry in stack_secrets(settings_of()):
        secret = host.file(f"/srv/kono/{entry.path}")
        assert (secret.user, secret.mode, secret.size) == ("kono", 0o600, 32), entry.key


def test_databases_are_not_reachable_from_outside_the_host(provisioned):
    address = provisioned.host.address
    for port in (3306, 3307):  # production is never published; dev only on the host's 127.0.0.1
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=3).close()
    host = provisioned.testinfra("kono")
    assert host.socket("tcp://127.0.0.1:3307").is_listening
    assert not host.socket("tcp://0.0.0.0:3306").is_listening


def test_deploy_used_no_sudo_at_all(provisioned):
    first = provisioned.first_deploy
    assert "Success" in first.output
    commands = [line for line in first.output.splitlines() if re.search(r"\bsudo\b", line)]
    assert commands == []
    # Every sudo right was gone during that deploy; sudo's own log on the host is the witness.
    since, until = provisioned.deploy_window
    journal = provisioned.host.ssh(
        f"sudo -n journalctl --no-pager -q _COMM=sudo --since @{since} --until @{until}").stdout
    assert journal == ""


def test_second_deploy_reports_zero_changes(provisioned):
    provisioned.wait_healthy()
    run = provisioned.deploy("--json")
    totals = run.json["results"]["totals"]
    assert totals["error"] == 0
    assert totals["success"] == 0, run.stdout


def test_a_container_stopped_by_hand_is_started_by_the_next_deploy(provisioned):
    provisioned.wait_healthy()
    client = provisioned.docker()
    try:
        api = sdk_container(client, "api")
        api.stop(timeout=5)
        api.reload()
        assert api.status == "exited"
    finally:
        client.close()
    run = provisioned.deploy("--json")
    assert run.changes == 1  # the bring-up, and nothing else
    provisioned.wait_healthy(timeout=60)


def test_status_command_shows_every_service_healthy(provisioned):
    proc = subprocess.run([sys.executable, "-m", "kono.cli.status", str(provisioned.inventory)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for service in DEFAULT_SERVICES:
        assert re.search(rf"{re.escape(provisioned.host.address)}\s+{service.name}\s+running\s+healthy\s+ok",
                         proc.stdout), proc.stdout
