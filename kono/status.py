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

from kono.remote import REPO, connection, inventory_hosts  # first: gevent patches before ssl loads

import docker
import paramiko
from docker.transport.sshconn import SSHHTTPAdapter

from kono.stack import SERVICES



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

    healthy = True
    for host_name, data, settings in inventory_hosts(args.inventory):
        where = connection(host_name, data, settings)
        known_hosts = str(REPO / where["known_hosts"]) if where["known_hosts"] else None
        try:
            client = docker_client(where["address"], where["user"], where["port"], where["key_filename"],
                                   known_hosts)
            state = services(client, settings.compose_project)
            client.close()
        except Exception as error:  # report every host, even when one is unreachable
            print(f"{host_name}: unreachable: {type(error).__name__}: {error}")
            healthy = False
            continue
        for name in SERVICES:
            status, health = state.get(name, ("missing", ""))
            ok = status == "running" and health in ("", "healthy")
            healthy &= ok
            print(f"{host_name}  {name:<14} {status:<10} {health or '-':<10} {'ok' if ok else 'NOT OK'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
