"""Bootstrap: Docker Engine + compose v2, daemon settings, a deploy user without sudo, the project dir."""

import json

import pytest

from tests import lab as lab_tools

pytestmark = pytest.mark.e2e


def test_docker_engine_and_compose_v2_run_with_log_rotation_and_live_restore(provisioned):
    host = provisioned.testinfra("admin")
    assert host.service("docker").is_running
    assert host.service("docker").is_enabled
    assert host.package("docker.io").is_installed
    assert host.run("docker compose version --short").stdout.startswith("2.")
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert daemon["log-driver"] == "json-file"
    assert daemon["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert daemon["live-restore"] is True


def test_deploy_user_is_in_the_docker_group_without_sudo(provisioned):
    host = provisioned.testinfra("kono")
    kono = host.user("kono")
    assert "docker" in kono.groups
    assert "sudo" not in kono.groups
    assert host.run("sudo -n true").rc != 0
    assert host.run("docker info --format '{{.ServerVersion}}'").rc == 0
    project = host.file("/srv/kono")
    assert (project.user, project.group, project.mode) == ("kono", "kono", 0o750)


def test_bootstrap_again_changes_nothing(provisioned):
    run = lab_tools.bootstrap(provisioned.inventory, "--json")
    assert run.json["results"]["totals"]["error"] == 0
    assert run.changes == 0, run.stdout


def test_docker_source_plan_adds_the_signed_repository_and_the_five_packages(provisioned):
    run = lab_tools.bootstrap(provisioned.inventory, "--dry", "--diff", "--data", "docker_source=docker")
    out = run.output
    assert "Will create /etc/apt/sources.list.d/docker.sources" in out
    assert "+ URIs: https://download.docker.com/linux/debian" in out
    assert "+ Suites: trixie" in out
    assert "+ Signed-By: /etc/apt/keyrings/docker.asc" in out
    install = next(line for line in out.splitlines() if "| Install docker-ce" in line)
    for package in ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
                    "docker-compose-plugin"):
        assert package in install
    assert f"1 ({provisioned.lab.subnet}." in install  # planned as a change on the host
    # A plan changes nothing: the host still has no Docker repository.
    assert not provisioned.testinfra("admin").file("/etc/apt/sources.list.d/docker.sources").exists
