"""The operator's tools' way to the hosts: the inventory as pyinfra reads it, and SSH as pyinfra
connects (the deploy user, the inventory's key, strict checking against its known_hosts file).

Example::

    for name, data, settings in inventory_hosts("inventory.py"):
        with ssh_client(name, data, settings) as client:
            ...
"""

from __future__ import annotations

import os
from pathlib import Path

import pyinfra_cli  # noqa: F401  (gevent's monkey-patching must come before ssl and paramiko load)
import paramiko
from pyinfra.api import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from kono.settings import Settings, load

REPO = Path(__file__).resolve().parent.parent


def inventory_hosts(inventory: str) -> list[tuple[str, object, Settings]]:
    """(name, host data, checked settings) for each host, with group_data applied as pyinfra does."""
    with ctx_state.use(State()):  # pyinfra reads inventory files inside a state context
        hosts = make_inventory(inventory, cwd=str(REPO))
    return [(host.name, host.data, load(host.data)) for host in hosts]


def connection(name: str, data, settings: Settings) -> dict:
    """Where and how to reach a host: address, port, user, key file, known_hosts file."""
    return {
        "address": data.get("ssh_hostname") or name,
        "port": int(data.get("ssh_port") or 22),
        "user": data.get("ssh_user") or settings.deploy_user,
        "key_filename": data.get("ssh_key"),
        "known_hosts": data.get("ssh_known_hosts_file"),
    }


def ssh_client(name: str, data, settings: Settings) -> paramiko.SSHClient:
    where = connection(name, data, settings)
    client = paramiko.SSHClient()
    client.load_system_host_keys()
    if where["known_hosts"]:
        client.load_host_keys(str((REPO / os.path.expanduser(where["known_hosts"])).resolve()))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())  # never trust a key on first use
    client.connect(where["address"], port=where["port"], username=where["user"],
                   key_filename=os.path.expanduser(where["key_filename"]) if where["key_filename"] else None,
                   timeout=30)
    return client
