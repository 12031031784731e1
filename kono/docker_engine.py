"""Docker Engine and compose v2 on the host (bootstrap, with sudo).

``docker_source = "docker"`` installs Docker's own packages from its apt repository, signed by its
keyring; ``"distro"`` installs the distribution's docker.io and compose v2 packages.

Example::

    docker_engine(settings, _sudo=True)
"""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, server, systemd

from kono import commands
from kono.root_files import root_files
from kono.services import SERVICES
from kono.settings import Settings

# A deploy reads the containers' state from the Engine API's socket with curl (commands.services_state).
API_CLIENT_PACKAGE = "curl"
DOCKER_PACKAGES = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
                   "docker-compose-plugin"]
DISTRO_COMPOSE_PACKAGE = {"debian": "docker-compose", "ubuntu": "docker-compose-v2"}
KEYRING = "/etc/apt/keyrings/docker.asc"
# Fresh cloud hosts often run unattended-upgrades at first boot: wait for the dpkg lock.
APT_LOCK_WAIT = "-o DPkg::Lock::Timeout=300"


def live_restore(settings: Settings) -> bool:
    return settings.docker_live_restore and not settings.swarm


def no_new_privileges(settings: Settings) -> bool:
    """Docker's default for every container. On a single host each service sets its own (compose's
    security_opt); a swarm ignores that setting, so a cluster node keeps the default on only where
    no service that runs there needs new privileges (the maintainer's sudo, on the db node)."""
    if not settings.swarm:
        return True
    return all(s.no_new_privileges for s in SERVICES if s.runs_on_node(settings.swarm_labels))


def daemon_config(settings: Settings) -> str:
    return json.dumps({
        "log-driver": "json-file",
        "log-opts": {"max-size": settings.docker_log_max_size,
                     "max-file": str(settings.docker_log_max_file)},
        # Docker refuses swarm mode with live-restore on (it is the swarm that keeps services running).
        "live-restore": live_restore(settings),
        # CIS Docker Benchmark settings that the stack keeps working with (README.md, "Hardening").
        "no-new-privileges": no_new_privileges(settings),
        "userland-proxy": False,
        "icc": False,
    }, indent=2, sort_keys=True) + "\n"


def _os() -> tuple[str, str]:
    meta = host.get_fact(LinuxDistribution)["release_meta"]
    os_id = (meta.get("ID") or "").lower()
    codename = meta.get("VERSION_CODENAME") or meta.get("CODENAME") or ""
    if os_id not in DISTRO_COMPOSE_PACKAGE or not codename:
        raise ValueError(f"kono-infra supports Debian and Ubuntu hosts, found ID={os_id!r} "
                         f"VERSION_CODENAME={codename!r}")
    return os_id, codename


@deploy("Docker Engine and compose v2")
def docker_engine(settings: Settings) -> None:
    os_id, codename = _os()
    repo_changed = False
    if settings.docker_source == "docker":
        files.directory(name="Directory for apt keyrings", path="/etc/apt/keyrings", mode="0755")
        files.download(name="Docker's apt signing key", src=f"{settings.docker_apt_url}/{os_id}/gpg",
                       dest=KEYRING, mode="0644")
        repo = apt.sources_file(name="Docker's apt repository, signed by its keyring", filename="docker",
                                uris=[f"{settings.docker_apt_url}/{os_id}"], suites=[codename],
                                components=["stable"], signed_by=KEYRING)
        repo_changed = repo.will_change
        packages = [*DOCKER_PACKAGES, API_CLIENT_PACKAGE]
    else:
        compose = settings.docker_compose_distro_package or DISTRO_COMPOSE_PACKAGE[os_id]
        packages = ["docker.io", compose, API_CLIENT_PACKAGE]

    daemon_json = root_files(name="Docker daemon settings (log rotation, live-restore)",
                             files={"/etc/docker/daemon.json": daemon_config(settings)})
    installed = host.get_fact(DebPackages)
    if repo_changed or any(package not in installed for package in packages):
        apt.update(name="Update apt lists")
        apt.packages(name=f"Install {', '.join(packages)}", packages=packages, no_recommends=False,
                     extra_install_args=APT_LOCK_WAIT)
    restart = daemon_json.will_change and bool(installed.get("docker.io") or installed.get("docker-ce"))
    effect = "containers keep running: live-restore" if live_restore(settings) else "containers restart"
    if restart:
        server.shell(name=f"Docker restarted for its new daemon settings ({effect})",
                     commands=[commands.restart_docker_keeping_containers()])
    systemd.service(name="Docker running and enabled at boot", service="docker", running=True, enabled=True)
