"""One deploy at a time on a host, and a record of each: a lock and an audit log under ``.kono/``.

The lock is an flock held by a small process on the host for as long as this run's SSH connection
lives: a second deploy waits for it (``deploy_lock_wait`` seconds, saying so), then fails naming the
one that holds it; a run killed half-way (laptop closed, CI cancelled) drops its connection, and with
it the lock, once whatever command it had running on the host has ended.

The audit log ``.kono/audit.log`` gets one JSON line per deploy: when, who (local user and
machine), the deploy repository's git commit, how many operations changed something, and the result.
A run that fails or dies before its end is recorded, as ``"failed or interrupted"``, by the next one.

Neither is a change to the host's declared state, so neither counts as one: they act from inside
operations that yield no command.

Example::

    begin_deploy(settings, reads=[...])  # takes the lock, and reads the host's state with it
    ...  # the deploy steps
    finish_deploy(settings)
"""

from __future__ import annotations

import datetime
import functools
import getpass
import json
import socket
import subprocess
import threading
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.api.exceptions import OperationError

from kono import commands, host_state
from kono.settings import Settings

REPO = Path(__file__).resolve().parent.parent


# pyinfra prepares its hosts side by side (gevent): while the first host waits for git, the others
# would each start git too. The lock (gevent's, under pyinfra) makes them wait for the first answer.
_COMMIT_LOCK = threading.Lock()


def deploy_commit() -> str:
    """The deploy repository's commit, with "-dirty" when tracked files have changes: once per run."""
    with _COMMIT_LOCK:
        return _deploy_commit()


@functools.lru_cache(maxsize=None)
def _deploy_commit() -> str:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (proc.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


@operation(is_idempotent=False)
def deploy_lock(directory: str, wait: int, commit: str):
    """
    Take this host's deploy lock for the rest of the run, and start its audit record. While another
    deploy holds it, wait up to ``wait`` seconds, saying so, then fail naming the holder.

    + directory: the project directory
    + wait: seconds to wait for another deploy on the same host to finish
    + commit: the deploy repository's commit, for the audit record

    **Example:**

    .. code:: python

        deploy_lock(name="Deploy lock", directory="/srv/kono", wait=600, commit=deploy_commit())
    """
    if not host.state.is_executing:
        return  # planning only: take nothing
    take = _take_lock(directory, 0, commit)
    if take[-1] != "taken":
        logger.warning(f"[{host.name}] another deploy is running on this host ({_holder(take)}); "
                       f"waiting up to {wait}s for it to finish")
        take = _take_lock(directory, wait, commit)
    if take[-1] != "taken":
        raise OperationError(f"another deploy is running on this host, started as {_holder(take)}; "
                             f"waited {wait}s (deploy_lock_wait). Let it finish, then run again.")
    yield from ()


def _holder(lines: list[str]) -> str:
    return lines[-1][len("locked "):] or "(unknown)"


def _take_lock(directory: str, wait: int, commit: str) -> list[str]:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = json.dumps({"started": started, "user": getpass.getuser(), "machine": socket.gethostname(),
                         "commit": commit}, sort_keys=True)
    # The reads the deploy declared run in the same command, once the lock is taken.
    return host_state.run_with_reads(commands.take_lock(directory, wait, record)) or ["locked "]


@operation(is_idempotent=False)
def deploy_record(directory: str):
    """
    Append this run's line to the audit log (``.kono/audit.log``).

    + directory: the project directory

    **Example:**

    .. code:: python

        deploy_record(name="Audit log", directory="/srv/kono")
    """
    if not host.state.is_executing:
        return
    changes = sum(1 for data in host.state.ops[host].values()
                  if data.operation_meta.is_complete() and data.operation_meta.did_change())
    finished = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    host_state.run(commands.finish_record(directory, {"changes": changes, "finished": finished, "result": "success"}))
    yield from ()


def begin_deploy(settings: Settings, reads: list[host_state.Read] | tuple = ()) -> None:
    """Take the lock, and with it read what the deploy needs from the host (``reads``: one command)."""
    host_state.declare(reads)
    deploy_lock(name="Take the host's deploy lock (one deploy at a time)", directory=settings.project_dir,
                wait=settings.deploy_lock_wait, commit=deploy_commit())


def finish_deploy(settings: Settings) -> None:
    deploy_record(name="Record this deploy in the host's audit log", directory=settings.project_dir)
