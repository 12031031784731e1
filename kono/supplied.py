"""What the operator supplies, checked against the host as the deploy's first step once it holds the
lock: every host read it needs is one of the deploy's declared reads (kono/host_state.py), taken
with the lock, and a host secret is compared by its digest only, never read.

Checks that need no host (a value's format, a TLS pair's parts) ran before the lock, where the
values are read (kono/secrets.py, kono/passwords.py, kono/tls.py, kono/backup.py); what needs the
host is here. A problem stops the deploy here, before anything changes, with every problem found.

Example::

    begin_deploy(settings, reads=[...])
    check_supplied(settings, supplied, passwords, provided, backup, alerts)
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation

from kono import commands
from kono.alerts import alert_secret_problems
from kono.backup import backup_secret_problems
from kono.host_state import read
from kono.passwords import PasswordHashFile, missing_passwords, password_hash_file
from kono.plan import drift
from kono.secrets import ConfigTree, secret_conflicts, supplied_paths
from kono.settings import Settings
from kono.stack import FileDigests
from kono.tls import missing_pair


@operation()
def supplied_match_host(settings: Settings, supplied: dict[str, str], passwords: dict[str, str | None],
                        provided: dict[str, str], backup: dict[str, str], alerts: dict[str, str]):
    """
    Fail, before anything changes, when what the operator supplies does not fit the host: a secret
    other than the one a database or the repository was initialised with, or a secret, password or
    TLS pair given neither here nor on the host.

    + settings: the host's settings
    + supplied: {"<env>/<name>": value} of the stack secrets given (kono/secrets.py)
    + passwords: {login: password or None} (kono/passwords.py)
    + provided: the TLS pair given, {key: PEM} or {} (kono/tls.py)
    + backup: the backup secrets given, {path: content} (kono/backup.py)
    + alerts: the alert secrets given, {path: content} (kono/alerts.py)

    **Example:**

    .. code:: python

        supplied_match_host(name="Supplied secrets fit the host", settings=settings, supplied={},
                            passwords={"sysop": None}, provided={}, backup={}, alerts={})
    """
    directory = settings.project_dir
    tree = read(ConfigTree, directory=directory)
    digests = read(FileDigests, directory=directory, paths=supplied_paths(settings))
    problems = [*secret_conflicts(settings, supplied, digests),
                *missing_passwords(settings, passwords, read(PasswordHashFile, path=password_hash_file(settings))),
                *missing_pair(settings, provided, tree),
                *backup_secret_problems(settings, backup, tree, digests),
                *alert_secret_problems(settings, alerts, tree)]
    if problems:
        for problem in problems:
            drift(problem)
        yield commands.fail("\n".join(problems))
        return
    host.noop("what the operator supplies fits the host")


@deploy("Supplied secrets")
def check_supplied(settings: Settings, supplied: dict[str, str], passwords: dict[str, str | None],
                   provided: dict[str, str], backup: dict[str, str], alerts: dict[str, str]) -> None:
    supplied_match_host(name="What the operator supplies fits the host (checked before anything changes)",
                        settings=settings, supplied=supplied, passwords=passwords, provided=provided, backup=backup,
                        alerts=alerts)
