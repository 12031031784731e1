"""The operator tools' one way to the hosts: the inventory as pyinfra reads it, and SSH exactly as
pyinfra connects, through pyinfra's own connector, so every ``ssh_*`` knob (user, port, key and its
password, known_hosts file with ``~``, strict host key checking, ssh config, retries, ...) means
what it means in a deploy.

Example::

    for target in inventory_hosts("inventory.py"):
        with connect(target) as client:
            print(run(client, "docker compose ps", target.settings.project_dir))
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import pyinfra_cli  # noqa: F401  (gevent's monkey-patching must come before ssl and paramiko load)
import paramiko
from pyinfra.api import Config, State
from pyinfra.api.host import Host
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from kono import commands
from kono.settings import Settings, check_login, load

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    """One host of the inventory: its name, its checked settings, and pyinfra's host object."""

    name: str
    settings: Settings
    host: Host


def inventory_hosts(inventory: str) -> list[Target]:
    """Each host of the inventory, with group_data applied and every knob checked, as pyinfra does."""
    state = State()
    with ctx_state.use(state):  # pyinfra reads inventory files inside a state context
        hosts = make_inventory(inventory, cwd=str(REPO))
        state.init(hosts, Config())
    targets = [Target(host.name, load(host.data, host.name), host) for host in hosts]
    for target in targets:
        check_login(target.settings, target.host.data)
    return targets


@contextlib.contextmanager
def connect(target: Target) -> Iterator[paramiko.SSHClient]:
    """An SSH connection made by pyinfra's connector; closed on exit. Raises ConnectError."""
    with ctx_state.use(target.host.state):
        target.host.connect(show_errors=False, raise_exceptions=True)
    client = target.host.connector.client
    try:
        yield client
    finally:
        client.close()
        target.host.connected = False


def run(client: paramiko.SSHClient, command: str, directory: str | None = None,
        stdout: IO[bytes] | None = None, stdin: Path | None = None) -> bytes:
    """Run a command on the host (in ``directory``); stream its output to ``stdout`` (or return it),
    and a local file to its input. Raises RuntimeError with the end of its stderr (or of what it
    returns, where Docker puts its own errors; never of a streamed output) when it fails. A
    ``docker exec`` that never started is run again (``commands.unstarted``)."""
    for attempt in range(1, commands.UNSTARTED_ATTEMPTS + 1):
        status, output, error, sent = _run_once(client, command, directory, stdout, stdin)
        if not (stdout is None and commands.unstarted(status, output)) or attempt == commands.UNSTARTED_ATTEMPTS:
            break
        time.sleep(1)
    if status != 0:
        # A streamed output is the operator's data (a dump, a secret): only Docker's own message from it.
        shown = output if stdout is None or output.startswith(commands.DOCKER_EXEC_UNSTARTED) else b""
        said = error.decode(errors="replace").strip() or shown.decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(command.split(' ', 5)[:5])} failed on the host ({exit_said(status)}): "
                           f"{said[-500:]}")
    if sent:
        raise RuntimeError(f"{' '.join(command.split(' ', 5)[:5])}: its input was not all sent: {sent[0]}")
    return output if stdout is None else b""


def _run_once(client: paramiko.SSHClient, command: str, directory: str | None, stdout: IO[bytes] | None,
              stdin: Path | None) -> tuple[int, bytes, bytearray, list[BaseException]]:
    channel = client.get_transport().open_session()
    channel.exec_command(commands.in_dir(directory, command) if directory else command)
    # stderr is read beside stdout: left unread, it fills the channel's window and the command stalls
    # (a failed replay of binary logs prints tens of MB of its statement there).
    errors = bytearray()
    drain = threading.Thread(target=_read_stderr, args=(channel, errors), daemon=True)
    drain.start()
    # The input is sent beside the reading of stdout too: a command that answers while it reads
    # would otherwise stop reading once its stdout fills the window, and both ends would wait.
    sent: list[BaseException] = []
    feed = threading.Thread(target=_send_file, args=(channel, stdin, sent), daemon=True) if stdin else None
    if feed:
        feed.start()
    collected = bytearray()
    while chunk := channel.recv(65536):
        if stdout is None:
            collected.extend(chunk)
        else:
            stdout.write(chunk)
            collected.extend(chunk)  # its end only, for the error
            del collected[:-STDERR_KEPT]
    drain.join()
    if feed:
        feed.join()
    return channel.recv_exit_status(), bytes(collected), errors, sent


def exit_said(status: int) -> str:
    """A command's exit status in words. paramiko records no ``exit-signal``: -1 is a command killed
    by a signal, or a connection that ended before the command did."""
    if status == -1:
        return "no exit status: killed by a signal, or the connection ended"
    return f"exit {status}" + (f": 128 + signal {status - 128}" if status > 128 else "")


STDERR_KEPT = 65536  # the end of a command's stderr kept for its error message


def _send_file(channel: paramiko.Channel, path: Path, failed: list[BaseException]) -> None:
    try:
        with open(path, "rb") as source:
            while chunk := source.read(65536):
                channel.sendall(chunk)
        channel.shutdown_write()
    except (OSError, EOFError) as error:  # the command ended before reading it all: its status says why
        failed.append(error)


def _read_stderr(channel: paramiko.Channel, into: bytearray) -> None:
    while chunk := channel.recv_stderr(65536):
        into.extend(chunk)
        del into[:-STDERR_KEPT]


