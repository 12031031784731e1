"""Rotating one stack secret (``rotate.py``): the database accounts' password (``ALTER USER``) and the
secret file change together, then only the services that use the secret are recreated. The new value
comes from the operator (kono/operator_input.py) when given, else is generated on the host.

Example::

    secret, value = rotation_target(settings, host.data.get("rotate"))
    rotate_secret(settings, secret, value)
"""

from __future__ import annotations

import io

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, deploy, operation

from kono import commands
from kono.operator_input import supplied_value
from kono.secrets import SECRET_LENGTH
from kono.services import (SERVICES, Secret, enabled, replacement_note, restarted_by, root_password_file, secret,
                           stack_secrets)
from kono.settings import Settings, SettingsError


def rotation_target(settings: Settings, target: object) -> tuple[Secret, str | None]:
    """Check ``--data rotate=<env>/<name>``: (the secret, the supplied new value or None)."""
    known = [entry.key for entry in stack_secrets(settings)]
    if not isinstance(target, str) or target not in known:
        raise SettingsError(f"rotate: expected one of {', '.join(known)}, got {target!r}")
    entry = secret(target)
    found = supplied_value(settings, entry)
    return entry, found[0] if found else None


@deploy("Rotate a secret")
def rotate_secret(settings: Settings, entry: Secret, value: str | None) -> None:
    rotated_secret(name=f"New value for {entry.key} (database account and file together)",
                   directory=settings.project_dir, project=settings.compose_project, key=entry.key, value=value,
                   services=tuple(s.name for s in enabled(SERVICES, settings)), immutable_secrets=settings.swarm)


@operation(is_idempotent=False)
def rotated_secret(directory: str, project: str, key: str, value: str | None, services: tuple[str, ...],
                   immutable_secrets: bool = False):
    """
    Give a secret a new value: the database accounts' password (``ALTER USER``, with the running
    database's current root password) and the secret file change together.

    + directory: the project directory
    + project: the compose project (the stack's name on a cluster)
    + key: the secret, e.g. "production/db_api_password"
    + value: the new value, or None to generate one on the host
    + services: the services the host runs (those these settings enable)
    + immutable_secrets: a swarm's secrets: every service that reads this one restarts, a database
      that reads it only at its first start included (said in the plan)

    **Example:**

    .. code:: python

        rotated_secret(name="Rotate", directory="/srv/kono", project="kono", key="production/api_key", value=None,
                       services=("api", "nginx"))
    """
    entry = secret(key)
    # Said in the plan, and right before it happens.
    for restarted in (s for s in restarted_by(key, immutable_secrets) if s.name in services):
        logger.warning(f"{host.print_prefix}"
                       f"{replacement_note(restarted.name, ['secret'], restarted.rollout == 'start-first')}")
    path = f"{directory}/{entry.path}"
    staged = f"{path}.rotating"
    if value is None:
        yield commands.random_secret_into(staged, SECRET_LENGTH)
    else:
        yield FileUploadCommand(io.BytesIO(value.encode()), staged)
        yield commands.chmod("0600", staged)
    if entry.accounts:
        yield commands.alter_users(staged, project, entry.database, root_password_file(entry.database), entry.accounts)
    yield commands.rename(staged, path)
