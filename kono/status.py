"""Each host's kono services and their health, from the operator's machine, over SSH.

    python -m kono.status inventory.py

It reads the same inventory and group_data as pyinfra, connects as the deploy user with the
docker SDK over SSH (the host's key checked against ``ssh_known_hosts_file`` or ~/.ssh/known_hosts),
and prints one line per service. Exit 0 when every service of every host runs and is healthy.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pyinfra_cli  # noqa: F401  (gevent's monkey-patching must come before ssl and paramiko load)
import docker
import paramiko
from docker.transport.sshconn import SSHHTTPAdapter

from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory  # the CLI's own reading of inventory + group_data

from kono.settings import load
from kono.stack import SERVICES

REPO = Path(__file__).resolve().parent.parent


class _HostSSHAdapter(SSHHTTPAdapter):
    """The docker SDK's SSH transport, with the inventory's key and known_hosts file."""

    def __init__(self, base_url: str, key_filename: str | None, known_hosts: str | None) -> None:
        self._key_filename = key_filename
        self._known_hosts = known_hosts
        super().__init__(base_url)

    def _create_paramiko_client(self, base_url: str) -> None:
        super()._create_paramiko_client(base_url)
        if self._known_hosts:
            self.ssh_client.load_host_keys(os.path.expanduser(self._known_hosts))
        self.ssh_client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if self._key_filename:
            self.ssh_params["key_filename"] = os.path.expanduser(self._key_filename)


def docker_client(address: str, user: str, port: int = 22, key_filename: str | None = None,
                  known_hosts: str | None = None) -> docker.DockerClient:
    base_url = f"ssh://{user}@{address}:{port}"
    client = docker.DockerClient(base_url=base_url, use_ssh_client=True, version="1.41", timeout=30)
    adapter = _HostSSHAdapter(base_url, key_filename, known_hosts)
    client.api.mount("http+docker://ssh", adapter)
    client.api._custom_adapter = adapter
    return client


def services(client: docker.DockerClient, project: str) -> dict[str, tuple[str, str]]:
    """{service: (state, health)} of the compose project's containers."""
    found = {}
    for container in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
        health = container.attrs["State"].get("Health", {}).get("Status", "")
        found[container.labels.get("com.docker.compose.service", container.name)] = (container.status, health)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kono.status", description=__doc__.splitlines()[0])
    parser.add_argument("inventory", help="the pyinfra inventory file, e.g. inventory.py")
    args = parser.parse_args(argv)

    with ctx_state.use(State()):  # pyinfra reads inventory files inside a state context
        inventory = make_inventory(args.inventory, cwd=str(REPO))
    healthy = True
    for host in inventory:
        data = host.data
        settings = load(data)
        address = data.get("ssh_hostname") or host.name
        try:
            client = docker_client(address, data.get("ssh_user") or settings.deploy_user,
                                   int(data.get("ssh_port") or 22), data.get("ssh_key"),
                                   data.get("ssh_known_hosts_file"))
            state = services(client, settings.compose_project)
            client.close()
        except Exception as error:  # report every host, even when one is unreachable
            print(f"{host.name}: unreachable: {type(error).__name__}: {error}")
            healthy = False
            continue
        for name in SERVICES:
            status, health = state.get(name, ("missing", ""))
            ok = status == "running" and health in ("", "healthy")
            healthy &= ok
            print(f"{host.name}  {name:<14} {status:<10} {health or '-':<10} {'ok' if ok else 'NOT OK'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
