"""Fixtures: one lab per test session, and one host taken from fresh to a deployed stack.

The provisioned host is reached only as a user would: the pyinfra CLI, ssh, curl, mysql, testinfra and
the docker SDK, all over the lab's bridge with strict host key checking.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra

from kono.services import SECRETS, VOLUMES, enabled, environments, unready
from tests.testhost import ADMIN_USER, Lab, TestHost
from tests import lab as lab_tools


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: boots a throwaway host and runs the real pyinfra CLI (slow)")


# The end-to-end modules that take longest, slowest first (as CI measured them). With
# --no-loadscope-reorder (.ci/run), pytest-xdist hands whole modules to its workers in collection
# order: the long ones start first and the short ones fill in after, rather than a long one starting
# last (left to itself, xdist orders modules by their number of tests).
SLOWEST_MODULES = ("test_cluster.py", "test_alerting.py", "test_backups.py", "test_transitions.py", "test_pitr.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: place for place, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_MODULES)))  # stable: a module's own order stays


@pytest.fixture(scope="session")
def lab():
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="session")
def git_server(lab):
    with lab_tools.GitServer(lab) as server:
        yield server


@dataclass
class Provisioned:
    lab: Lab
    host: TestHost
    inventory: Path
    bootstrap: lab_tools.Run
    first_deploy: lab_tools.Run
    deploy_window: tuple[int, int]  # host clock (epoch seconds) around the sudo-less first deploy
    passwords: dict[str, str]  # maintainer login -> sudo password, as the operator gave them
    git: lab_tools.GitServer

    def maintainer(self, command: str, login: str = "sysop", check: bool = True, input: str | None = None,
                   timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a command in the maintainer container, logged in over SSH with a key."""
        return lab_tools.maintainer(self.host, command, login, check, input, timeout)

    def testinfra(self, user: str = "kono"):
        return testinfra.get_host(f"ssh://{user}@{self.host.address}", ssh_config=str(self.lab.ssh_config))

    def docker(self):
        return lab_tools.docker_client(self.host)

    def container_ids(self) -> dict[str, str]:
        """{service: the id of its running container}: a changed id is a new container."""
        client = self.docker()
        try:
            return {c.labels["com.docker.compose.service"]: c.id for c in client.containers.list()}
        finally:
            client.close()

    def deploy(self, *args: str, **kwargs) -> lab_tools.Run:
        return lab_tools.deploy(self.inventory, *args, **kwargs)

    def provision_new(self, host: TestHost, inventory: Path, **data) -> Path:
        """A brand-new host taken, as an operator would, through bootstrap and a first deploy (the
        same maintainer passwords, the same code repositories); returns its inventory."""
        lab_tools.write_inventory(self.lab, [host], inventory, api_repo=self.git.repo("api"),
                                  app_repo=self.git.repo("app"), **data)
        lab_tools.bootstrap(inventory)
        lab_tools.load_images(host, monitoring=data.get("monitoring", False))
        lab_tools.deploy(inventory, env={f"KONO_MAINTAINER_PASSWORD_{login.upper()}": password
                                         for login, password in self.passwords.items()})
        return inventory

    def reset(self) -> None:
        """Back to what a first deploy with the defaults leaves, for the modules after this one (each
        worker runs the modules in its own order): the defaults deployed, and the volumes and secret
        folders of what they turn off (a certificate, backup secrets) removed, as on a fresh host."""
        self.deploy()
        defaults = lab_tools.settings_of()
        volumes = " ".join(f"{defaults.compose_project}_{v.name}" for v in VOLUMES if v not in enabled(VOLUMES, defaults))
        folders = " ".join(f"config/{env}" for env in environments(SECRETS)
                           if env not in environments(enabled(SECRETS, defaults)))
        self.host.ssh(f"docker volume rm --force {volumes}; cd {lab_tools.PROJECT_DIR} && rm -rf {folders}", user="kono")
        # The project's digest covers config/: the next deploy would bring the stack up once. This one does.
        self.deploy()
        assert self.deploy("--json").changes == 0
        self.wait_healthy()

    def snapshot(self) -> str:
        """Everything a deploy could change: project files (path, mode, owner, digest), containers.
        Leaves out the deploy lock, the record of the run in progress, the audit log, where a run
        records the one before it that failed (kono/deploy_run.py), and the staged copy of a
        configuration checked but not applied (put in place only for a run that declares it again)."""
        return self.host.ssh(
            "cd /srv/kono && find . \\( -path './.kono/deploy.*' -o -path ./.kono/audit.log -o -path ./.kono/staged \\) "
            "-prune -o "
            "-printf '%p %m %u ' -exec sh -c "
            "'[ -f \"$1\" ] && sha256sum < \"$1\" || echo dir' _ {} \\; | sort; "
            "docker ps -a --format '{{.ID}} {{.Names}} {{.State}}' | sort",
            user="kono").stdout

    def wait_healthy(self, timeout: float = 240, services: tuple = lab_tools.DEFAULT_SERVICES) -> dict:
        end = time.monotonic() + timeout
        while True:
            client = self.docker()
            try:
                state = {c.labels["com.docker.compose.service"]:
                         (c.status, c.attrs["State"].get("Health", {}).get("Status", ""))
                         for c in client.containers.list(all=True)}
            finally:
                client.close()
            if not unready(state, services) and len(state) == len(services):
                return state
            if time.monotonic() > end:
                raise AssertionError(f"stack not healthy after {timeout}s: {state}")
            time.sleep(3)


def _without_sudo_rights(host: TestHost) -> tuple[Path, Path]:
    """Take every sudo right from the admin user (the deploy user never had one), from outside."""
    rules = host.root / "etc/sudoers.d/90-cloud-init-users"
    parked = host.lab.workdir / f"{host.name}.sudoers"
    shutil.move(rules, parked)
    subprocess.run(["chroot", host.root, "gpasswd", "-d", ADMIN_USER, "sudo"], check=True,
                   capture_output=True)
    return rules, parked


def _restore_sudo_rights(host: TestHost, rules: Path, parked: Path) -> None:
    subprocess.run(["chroot", host.root, "gpasswd", "-a", ADMIN_USER, "sudo"], check=True,
                   capture_output=True)
    shutil.move(parked, rules)


@pytest.fixture(scope="session")
def provisioned(lab, git_server) -> Provisioned:
    """Fresh host -> bootstrap -> (test doubles loaded) -> every sudo right removed -> deploy."""
    host = lab.boot()
    passwords = {login: secrets.token_urlsafe(12) for login in lab_tools.MAINTAINERS}
    lab_tools.write_maintainer_passwords(lab, passwords)
    inventory = lab_tools.write_inventory(lab, [host], lab.workdir / "inventory.py",
                                          api_repo=git_server.repo("api"), app_repo=git_server.repo("app"))
    bootstrap = lab_tools.bootstrap(inventory)
    try:
        lab_tools.load_images(host)
    except lab_tools.ImageUnavailable as error:
        pytest.exit(str(error), returncode=1)  # one clear line, never a silent fallback to doubles
    rules, parked = _without_sudo_rights(host)
    try:
        for user in (ADMIN_USER, "kono"):
            assert host.ssh("sudo -n true", user=user, check=False).returncode != 0, user
        time.sleep(1.1)  # keep the checks' own sudo attempts out of the deploy's window
        started = int(host.ssh("date +%s", user="kono").stdout)
        first = lab_tools.deploy(inventory, "-vv")
        ended = int(host.ssh("date +%s", user="kono").stdout) + 1
    finally:
        _restore_sudo_rights(host, rules, parked)
    lab_tools.pin_maintainer_host_key(host)
    return Provisioned(lab, host, inventory, bootstrap, first, (started, ended), passwords, git_server)
