"""The one module that owns secrets: which exist, where they come from, where they land.

Stack secrets (database passwords, API key). Each is a file ``<project_dir>/config/<env>/<name>``
(directories 0700, files 0600, owned by the deploy user), handed to containers with compose
``secrets:`` as ``<env>_<name>``. Per secret, the first source found wins:

1. the environment variable ``KONO_SECRET_<ENV>_<NAME>`` (CI),
2. the git-ignored local file ``<local_secrets_dir>/<env>/<name>`` (laptops, backups),
3. the value already on the host,
4. else a value generated *on the host* from /dev/urandom, which never crosses the wire.

A supplied value that differs from the host's stops the deploy before anything changes: a database
was initialised with the host's. Changing one is ``rotate`` (kono/rotate.py): the database user's
password (``ALTER USER``) and the file change together, then only the services using it are recreated.
Values travel by SFTP or stdin only: never on a command line, never in pyinfra's output.

Maintainer passwords (sudo inside the maintainer container) come from the operator: the environment
variable ``KONO_MAINTAINER_PASSWORD_<LOGIN>`` (CI), else the git-ignored local file
``<local_secrets_dir>/maintainer_password_<login>`` (laptops), else the hash already on the host.
Only sha512-crypt hashes leave the operator's machine, as one secret file read by ``chpasswd -e`` in
the container. A hash is reused while the password still verifies against it, so an unchanged
password changes nothing.

Example::

    supplied = supplied_secrets(settings)      # checked against the host before anything changes
    passwords = maintainer_passwords(settings)
    place_secrets(settings, supplied, passwords)
"""

from __future__ import annotations

import io
import os
import re
import shlex
from pathlib import Path

from passlib.hash import sha512_crypt
from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation
from pyinfra.api.exceptions import OperationError

from kono.drift import drift
from kono.settings import Settings, SettingsError

SECRETS: dict[str, tuple[str, ...]] = {
    "production": ("db_root_password", "db_api_password", "db_unauthorized_api_password", "api_key"),
    "dev": ("db_root_password", "db_dev_password"),
}
PASSWORD_HASHES = ("production", "maintainer_password_hashes")  # "login:hash" lines, for chpasswd -e
PASSWORD_ENV = "KONO_MAINTAINER_PASSWORD_{}"
SECRET_ENV = "KONO_SECRET_{}_{}"
# sha512-crypt rounds for new hashes: 20x glibc's default of 5,000; passlib's 656,000 would make every
# deploy spend ~0.35 s per user verifying unchanged passwords (bench/).
HASH_ROUNDS = 100_000
SECRET_LENGTH = 32  # characters from [A-Za-z0-9]: about 190 bits, and safe in any SQL or shell quoting
SECRET_VALUE = re.compile(r"^[A-Za-z0-9._~+/=@%^,:-]{16,128}$")  # supplied values: no quotes, no spaces
# The database accounts whose password each secret is: (service, ["user@host", ...]).
DATABASE_ACCOUNTS = {
    ("production", "db_root_password"): ("db_production", ["root@%", "root@localhost"]),
    ("production", "db_api_password"): ("db_production", ["api@%"]),
    ("production", "db_unauthorized_api_password"): ("db_production", ["unauthorized_api@%"]),
    ("dev", "db_root_password"): ("db_dev", ["root@%", "root@localhost"]),
    ("dev", "db_dev_password"): ("db_dev", ["dev@%"]),
}


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


def _random_into(path: str) -> str:
    """Shell that writes a new random secret, made on the host, into a 0600 file."""
    return f"umask 077 && tr -dc A-Za-z0-9 </dev/urandom | head -c {SECRET_LENGTH} > {shlex.quote(path)}"


def _generate(path: str) -> str:
    # Written to a temporary name and renamed, so an interrupted run never leaves a short secret.
    return f"{_random_into(path + '.new')} && mv {shlex.quote(path + '.new')} {shlex.quote(path)}"


def _upload(path: str, value: str):
    # By SFTP into the 0700 directory, then 0600 and renamed into place: never on a command line.
    yield FileUploadCommand(io.BytesIO(value.encode()), f"{path}.new")
    yield f"chmod 0600 {shlex.quote(path + '.new')} && mv {shlex.quote(path + '.new')} {shlex.quote(path)}"


@operation()
def secret_files(directory: str, secrets: dict[str, tuple[str, ...]], supplied: dict[str, str]):
    """
    Ensure every secret file exists (0600) in its 0700 directory: a missing one is written from the
    supplied value, or generated on the host. An existing one is never changed here.

    + directory: the project directory
    + secrets: {env: (name, ...)}
    + supplied: {"<env>/<name>": value} given by the operator

    **Example:**

    .. code:: python

        secret_files(name="Secrets", directory="/srv/kono", secrets={"dev": ("db_root_password",)},
                     supplied={})
    """
    tree = host.get_fact(ConfigTree, directory=directory)
    for folder in ["config", *(f"config/{env}" for env in secrets)]:
        path = shlex.quote(f"{directory}/{folder}")
        if folder not in tree:
            drift(f"{folder}/ is missing")
            yield f"mkdir -m 0700 {path}"
        elif tree[folder][1] != "700":
            drift(f"{folder}/ has mode {tree[folder][1]}, expected 700")
            yield f"chmod 0700 {path}"
    for env, names in secrets.items():
        for name in names:
            relative = secret_path(env, name)
            path = f"{directory}/{relative}"
            found = tree.get(relative)
            if found is None or found[2] == 0:
                drift(f"{relative} is missing")
                if f"{env}/{name}" in supplied:
                    yield from _upload(path, supplied[f"{env}/{name}"])
                else:
                    yield _generate(path)
            elif found[1] != "600":
                drift(f"{relative} has mode {found[1]}, expected 600")
                yield f"chmod 0600 {shlex.quote(path)}"


def secret_sources(settings: Settings, env: str, name: str) -> tuple[str, Path]:
    """Where the operator may supply a stack secret: (environment variable, local file)."""
    return (SECRET_ENV.format(env.upper(), name.upper()), Path(settings.local_secrets_dir) / env / name)


def supplied_value(settings: Settings, env: str, name: str) -> tuple[str, str] | None:
    """The operator's value for a stack secret and where it came from, or None."""
    variable, path = secret_sources(settings, env, name)
    if os.environ.get(variable):
        value, source = os.environ[variable].strip(), f"${variable}"
    elif path.is_file():
        value, source = path.read_text().strip(), str(path)
    else:
        return None
    if not SECRET_VALUE.match(value):
        raise SettingsError(f"{env}/{name}: expected 16 to 128 characters without spaces or quotes "
                            f"in {source}")
    return value, source


def supplied_secrets(settings: Settings) -> dict[str, str]:
    """The stack secrets the operator supplies, {"<env>/<name>": value}, checked against the host.

    Raises SettingsError, before anything changes, for a malformed value or one that differs from the
    host's (which a database was initialised with).
    """
    supplied: dict[str, str] = {}
    for env, names in SECRETS.items():
        for name in names:
            found = supplied_value(settings, env, name)
            if found is None:
                continue
            value, source = found
            on_host = read_host_file(f"{settings.project_dir}/{secret_path(env, name)}")
            if on_host and on_host.strip() != value:
                raise SettingsError(
                    f"{env}/{name}: expected the value the host has, since its database was initialised "
                    f"with it; {source} holds a different one. To change it, rotate it "
                    f"(pyinfra INVENTORY kono/rotate.py --data rotate={env}/{name}).")
            supplied[f"{env}/{name}"] = value
    return supplied


def rotation_target(settings: Settings, target: object) -> tuple[str, str, str | None]:
    """Check ``--data rotate=<env>/<name>``: (env, name, the supplied new value or None)."""
    known = [f"{env}/{name}" for env, names in SECRETS.items() for name in names]
    if not isinstance(target, str) or target not in known:
        raise SettingsError(f"rotate: expected one of {', '.join(known)}, got {target!r}")
    env, name = target.split("/")
    found = supplied_value(settings, env, name)
    return env, name, found[0] if found else None


@deploy("Rotate a secret")
def rotate_secret(settings: Settings, env: str, name: str, value: str | None) -> None:
    rotated_secret(name=f"New value for {env}/{name} (database account and file together)",
                   directory=settings.project_dir, env=env, secret=name, value=value)


def read_host_file(path: str) -> str:
    """A small file's content, over SFTP into memory; "" when it is missing. Never printed."""
    buffer = io.BytesIO()
    try:
        host.get_file(path, buffer)
    except OSError:
        return ""
    return buffer.getvalue().decode()


def password_sources(settings: Settings, login: str) -> tuple[str, Path]:
    """Where the operator gives ``login``'s password: (environment variable, local file)."""
    return (PASSWORD_ENV.format(login.upper().replace("-", "_")),
            Path(settings.local_secrets_dir) / f"maintainer_password_{login}")


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
    current_text = read_host_file(path)
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
            lines.append(f"{login}:{sha512_crypt.using(rounds=HASH_ROUNDS).hash(password)}")
    wanted = "".join(line + "\n" for line in lines)
    if wanted == current_text:
        host.noop("maintainer password hashes are up to date")
        return
    drift("maintainer password hashes differ from the passwords given")
    yield from _upload(path, wanted)


@deploy("Secrets")
def place_secrets(settings: Settings, supplied: dict[str, str], passwords: dict[str, str | None]) -> None:
    secret_files(name="Secret files under config/ (supplied, or generated on the host, when missing)",
                 directory=settings.project_dir, secrets=SECRETS, supplied=supplied)
    password_hashes(name="Maintainer password hashes (rehashed only when a password changed)",
                    path=f"{settings.project_dir}/{secret_path(*PASSWORD_HASHES)}", passwords=passwords)


@operation(is_idempotent=False)
def rotated_secret(directory: str, env: str, secret: str, value: str | None):
    """
    Give a secret a new value: the database account's password (``ALTER USER``, with the running
    database's current root password) and the secret file change together.

    + directory: the project directory
    + env, secret: the secret, e.g. "production", "db_api_password"
    + value: the new value, or None to generate one on the host

    **Example:**

    .. code:: python

        rotated_secret(name="Rotate", directory="/srv/kono", env="production", secret="api_key", value=None)
    """
    path = f"{directory}/{secret_path(env, secret)}"
    staged = f"{path}.rotating"
    if value is None:
        yield _random_into(staged)
    else:
        yield FileUploadCommand(io.BytesIO(value.encode()), staged)
        yield f"chmod 0600 {shlex.quote(staged)}"
    account = DATABASE_ACCOUNTS.get((env, secret))
    apply = ""
    if account:
        service, users = account
        root = f"/run/db-secrets/{compose_name(env, 'db_root_password')}"
        # printf is a shell builtin: the new password goes by pipe, never through an argv.
        statements = "".join(
            f"ALTER USER '{user.split('@')[0]}'@'{user.split('@')[1].replace('%', '%%')}' IDENTIFIED BY '%s'; "
            for user in users)
        values = " ".join(['"$new"'] * len(users))
        apply = (f"new=$(cat {shlex.quote(staged)}) && printf \"{statements}\\n\" {values} | "
                 f"docker compose exec -T {service} sh -c 'MYSQL_PWD=$(cat {root}) exec mysql -uroot' && ")
    yield f"cd {shlex.quote(directory)} && {apply}mv {shlex.quote(staged)} {shlex.quote(path)}"
