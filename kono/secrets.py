"""The one module that owns secrets: which exist, where they land, how they are made.

Each secret is a file ``<project_dir>/config/<env>/<name>`` (directories 0700, files 0600, owned by
the deploy user), handed to containers with compose ``secrets:`` as ``<env>_<name>``. A missing secret
is generated *on the host* from /dev/urandom, so its value never crosses the wire, never sits on a
command line and never appears in pyinfra's output. An existing secret is never changed: the
databases were initialised with it.

Example::

    place_secrets(settings)
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation

from kono.settings import Settings

SECRETS: dict[str, tuple[str, ...]] = {
    "production": ("db_root_password", "db_api_password", "api_key"),
    "dev": ("db_root_password", "db_dev_password"),
}
SECRET_LENGTH = 32  # characters from [A-Za-z0-9]: about 190 bits, and safe in any SQL or shell quoting


def compose_name(env: str, name: str) -> str:
    """The secret's name in compose.yaml and under /run/secrets in a container."""
    return f"{env}_{name}"


def secret_path(env: str, name: str) -> str:
    """The secret's file, relative to the project directory."""
    return f"config/{env}/{name}"


class ConfigTree(FactBase):
    """Type, mode and size of everything under ``<directory>/config``: {relative path: (type, mode, size)}.

    Never reads a secret's content.
    """

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, directory: str) -> str:
        return (f"cd {shlex.quote(directory)} 2>/dev/null && "
                "find config -printf '%y %m %s %p\\n' 2>/dev/null || true")

    def process(self, output: list[str]) -> dict[str, tuple[str, str, int]]:
        tree = {}
        for line in output:
            kind, mode, size, path = line.split(" ", 3)
            tree[path] = (kind, mode, int(size))
        return tree


def _generate(path: str) -> str:
    # Written to a temporary name and renamed, so an interrupted run never leaves a short secret.
    return (f"umask 077 && tr -dc A-Za-z0-9 </dev/urandom | head -c {SECRET_LENGTH} > {path}.new "
            f"&& mv {path}.new {path}")


@operation()
def secret_files(directory: str, secrets: dict[str, tuple[str, ...]]):
    """
    Ensure every secret file exists (0600) in its 0700 directory, generating missing ones on the host.

    + directory: the project directory
    + secrets: {env: (name, ...)}

    **Example:**

    .. code:: python

        secret_files(name="Secrets", directory="/srv/kono", secrets={"dev": ("db_root_password",)})
    """
    tree = host.get_fact(ConfigTree, directory=directory)
    for folder in ["config", *(f"config/{env}" for env in secrets)]:
        path = shlex.quote(f"{directory}/{folder}")
        if folder not in tree:
            yield f"mkdir -m 0700 {path}"
        elif tree[folder][1] != "700":
            yield f"chmod 0700 {path}"
    for env, names in secrets.items():
        for name in names:
            relative = secret_path(env, name)
            path = shlex.quote(f"{directory}/{relative}")
            found = tree.get(relative)
            if found is None or found[2] == 0:
                yield _generate(path)
            elif found[1] != "600":
                yield f"chmod 0600 {path}"


@deploy("Secrets")
def place_secrets(settings: Settings) -> None:
    secret_files(name="Secret files under config/ (generated on the host when missing)",
                 directory=settings.project_dir, secrets=SECRETS)
