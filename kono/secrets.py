"""The one module that owns secrets: which exist, where they come from, where they land.

Generated secrets (database passwords, API keys). Each is a file ``<project_dir>/config/<env>/<name>`` (directories 0700, files 0600, owned by
the deploy user), handed to containers with compose ``secrets:`` as ``<env>_<name>``. A missing secret
is generated *on the host* from /dev/urandom, so its value never crosses the wire, never sits on a
command line and never appears in pyinfra's output. An existing secret is never changed: the
databases were initialised with it.

Maintainer passwords (sudo inside the maintainer container) come from the operator: the environment
variable ``KONO_MAINTAINER_PASSWORD_<LOGIN>`` (CI), else the git-ignored local file
``<maintainer_password_dir>/maintainer_password_<login>`` (laptops), else the hash already on the host.
Only sha512-crypt hashes leave the operator's machine, as one secret file read by ``chpasswd -e`` in
the container. A hash is reused while the password still verifies against it, so an unchanged
password changes nothing.

Example::

    passwords = maintainer_passwords(settings)
    place_secrets(settings, passwords)
"""

from __future__ import annotations

import io
import os
import shlex
from pathlib import Path

from passlib.hash import sha512_crypt
from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation
from pyinfra.api.exceptions import OperationError

from kono.settings import Settings, SettingsError

SECRETS: dict[str, tuple[str, ...]] = {
    "production": ("db_root_password", "db_api_password", "db_unauthorized_api_password", "api_key"),
    "dev": ("db_root_password", "db_dev_password"),
}
PASSWORD_HASHES = ("production", "maintainer_password_hashes")  # "login:hash" lines, for chpasswd -e
PASSWORD_ENV = "KONO_MAINTAINER_PASSWORD_{}"
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


def password_sources(settings: Settings, login: str) -> tuple[str, Path]:
    """Where the operator gives ``login``'s password: (environment variable, local file)."""
    return (PASSWORD_ENV.format(login.upper().replace("-", "_")),
            Path(settings.maintainer_password_dir) / f"maintainer_password_{login}")


def maintainer_passwords(settings: Settings) -> dict[str, str | None]:
    """Each maintainer login's password from the operator, or None where none is given here.

    Raises SettingsError before anything changes when a login has no password here nor on the host.
    """
    passwords: dict[str, str | None] = {}
    for login, _keys in settings.maintainer_users:
        env, path = password_sources(settings, login)
        if os.environ.get(env):
            passwords[login] = os.environ[env]
        elif path.is_file():
            passwords[login] = path.read_text().rstrip("\n")
        else:
            passwords[login] = None
    unknown = [login for login, password in passwords.items() if password is None]
    if unknown:
        on_host = host.get_fact(HashedLogins, path=f"{settings.project_dir}/{secret_path(*PASSWORD_HASHES)}")
        for login in unknown:
            if login not in on_host:
                env, path = password_sources(settings, login)
                raise SettingsError(f"maintainer_users[{login!r}]: expected a password in ${env} "
                                    f"or the file {path}, and the host has none yet")
    return passwords


class HashedLogins(FactBase):
    """The logins that have a hash in the maintainer password file (names only, never the hashes)."""

    @staticmethod
    def default() -> list:
        return []

    def command(self, path: str) -> str:
        return f"cut -d: -f1 {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


def _read_hashes(path: str) -> str:
    # Over SFTP into memory: the hashes are never printed, not even at -vvv as a fact would be.
    buffer = io.BytesIO()
    try:
        host.get_file(path, buffer)
    except OSError:
        return ""
    return buffer.getvalue().decode()


@operation()
def password_hashes(path: str, passwords: dict[str, str | None]):
    """
    Keep ``login:sha512-crypt-hash`` lines for each login in a 0600 file, rehashing only a password
    that no longer verifies against its current hash.

    + path: the hash file on the host, in an existing 0700 directory
    + passwords: {login: plain password, or None to keep the host's hash}

    **Example:**

    .. code:: python

        password_hashes(name="Maintainer passwords", path="/srv/kono/config/production/hashes",
                        passwords={"sysop": "correct horse"})
    """
    current_text = _read_hashes(path)
    current = dict(line.split(":", 1) for line in current_text.splitlines() if ":" in line)
    lines = []
    for login, password in passwords.items():
        old = current.get(login)
        if password is None:
            if old is None:
                raise OperationError(f"no password for maintainer user {login!r}")
            lines.append(f"{login}:{old}")
        elif old and sha512_crypt.verify(password, old):
            lines.append(f"{login}:{old}")
        else:
            lines.append(f"{login}:{sha512_crypt.hash(password)}")
    wanted = "".join(line + "\n" for line in lines)
    if wanted == current_text:
        host.noop("maintainer password hashes are up to date")
        return
    staged = shlex.quote(f"{path}.new")
    yield FileUploadCommand(io.BytesIO(wanted.encode()), f"{path}.new")
    yield f"chmod 0600 {staged} && mv {staged} {shlex.quote(path)}"


@deploy("Secrets")
def place_secrets(settings: Settings, passwords: dict[str, str | None]) -> None:
    secret_files(name="Secret files under config/ (generated on the host when missing)",
                 directory=settings.project_dir, secrets=SECRETS)
    password_hashes(name="Maintainer password hashes (rehashed only when a password changed)",
                    path=f"{settings.project_dir}/{secret_path(*PASSWORD_HASHES)}", passwords=passwords)
