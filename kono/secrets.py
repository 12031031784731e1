"""The one module that owns secrets: which exist, where they come from, where they land.

Which secrets exist, who gets them and which database accounts they are is the table in
kono/services.py. Stack secrets (database passwords, API key): each is a file ``<project_dir>/config/<env>/<name>``
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
The TLS certificate and key of ``https = "provided"`` come from the same sources as stack secrets
(``tls/certificate``, ``tls/private_key``) but are PEM files, checked and placed by kono/tls.py.

Only sha512-crypt hashes leave the operator's machine, as one secret file read by ``chpasswd -e`` in
the container. A hash is reused while the password still verifies against it, so an unchanged
password changes nothing. Verifying is slow on purpose (100,000 rounds), so a run verifies each
(password, hash) pair once, and every host that needs a new hash in a run gets the same one: a fleet
shares one hash per login and a no-op deploy of ten hosts verifies as much as one host's. A password
from a local file is verified against a hash once at all: the pair's SHA-256 then goes into
``maintainer_password_<login>.verified`` beside the file (0600). That is a fast hash of the password,
so it lives only where the password itself lies in plain text; a password from the environment is
verified every run and written nowhere.

Example::

    supplied = supplied_secrets(settings)      # checked against the host before anything changes
    passwords = maintainer_passwords(settings)
    place_secrets(settings, supplied, passwords)
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import posixpath
import re
from pathlib import Path

from passlib.hash import sha512_crypt
from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation
from pyinfra.api.exceptions import OperationError

from kono import commands
from kono.host_state import Read, read
from kono.plan import drift
from kono.services import (SECRETS, SERVICES, Secret, enabled, environments, replacement_note, restarted_by,
                           root_password_file, secret, stack_secrets)
from kono.settings import Settings, SettingsError
from kono.stack import FileDigests

PASSWORD_HASHES = next(s for s in SECRETS if s.origin == "maintainer passwords")  # "login:hash" lines
PASSWORD_ENV = "KONO_MAINTAINER_PASSWORD_{}"
SECRET_ENV = "KONO_SECRET_{}_{}"
# sha512-crypt rounds for new hashes: 20x glibc's default of 5,000; passlib's 656,000 would make every
# deploy spend ~0.35 s per user verifying unchanged passwords (bench/).
HASH_ROUNDS = 100_000
SECRET_LENGTH = 32  # characters from [A-Za-z0-9]: about 190 bits, and safe in any SQL or shell quoting
CREDENTIAL_LINE = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")  # storage credentials: KEY=value, one per line
NEEDS_CREDENTIALS = ("s3:", "b2:", "azure:", "gs:", "swift:")  # restic backends that cannot go without
SECRET_VALUE = re.compile(r"^[A-Za-z0-9._~+/=@%^,:-]{16,128}$")  # supplied values: no quotes, no spaces


class ConfigTree(FactBase):
    """Type, mode and size of everything under ``<directory>/config``: {relative path: (type, mode, size)}.

    Never reads a secret's content.
    """

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, directory: str) -> str:
        return commands.config_tree(directory)

    def process(self, output: list[str]) -> dict[str, tuple[str, str, int]]:
        tree = {}
        for line in output:
            kind, mode, size, path = line.split(" ", 3)
            tree[path] = (kind, mode, int(size))
        return tree


def upload_secret(path: str, value: str):
    # By SFTP into the 0700 directory, then 0600 and renamed into place: never on a command line.
    yield FileUploadCommand(io.BytesIO(value.encode()), f"{path}.new")
    yield commands.move_into_place(f"{path}.new", path)


@operation()
def secret_files(directory: str, secrets: tuple[Secret, ...], supplied: dict[str, str]):
    """
    Ensure every secret file exists (0600) in its 0700 directory: a missing one is written from the
    supplied value, or generated on the host. An existing one is never changed here.

    + directory: the project directory
    + secrets: the stack secrets (kono/services.py)
    + supplied: {"<env>/<name>": value} given by the operator

    **Example:**

    .. code:: python

        secret_files(name="Secrets", directory="/srv/kono", secrets=stack_secrets(), supplied={})
    """
    tree = read(ConfigTree, directory=directory)
    for folder in ["config", *(f"config/{env}" for env in environments(secrets))]:
        path = f"{directory}/{folder}"
        if folder not in tree:
            drift(f"{folder}/ is missing")
            yield commands.make_dir(path, "0700")
        elif tree[folder][1] != "700":
            drift(f"{folder}/ has mode {tree[folder][1]}, expected 700")
            yield commands.chmod("0700", path)
    for entry in secrets:
        path = f"{directory}/{entry.path}"
        found = tree.get(entry.path)
        if found is None or found[2] == 0:
            drift(f"{entry.path} is missing")
            if entry.key in supplied:
                yield from upload_secret(path, supplied[entry.key])
            else:
                yield commands.generate_secret(path, SECRET_LENGTH)
        elif found[1] != "600":
            drift(f"{entry.path} has mode {found[1]}, expected 600")
            yield commands.chmod("0600", path)


@operation()
def supplied_files(directory: str, files: dict[str, str]):
    """
    Place files the operator supplies (0600, in a 0700 folder under config/) where they differ from
    the host's: by SFTP, compared by digest, never shown.

    + directory: the project directory
    + files: {path relative to the project directory: content}, all in one folder

    **Example:**

    .. code:: python

        supplied_files(name="TLS", directory="/srv/kono", files={"config/tls/certificate": "-----BEGIN..."})
    """
    folder = posixpath.dirname(next(iter(files)))
    tree = read(ConfigTree, directory=directory)
    if folder not in tree:
        yield commands.make_dir(f"{directory}/{folder}", "0700")
    on_host = read(FileDigests, directory=directory, paths=sorted(files))
    changed = [path for path, content in sorted(files.items())
               if on_host.get(path) != hashlib.sha256(content.encode()).hexdigest()]
    if not changed:
        host.noop("the supplied files are in place")
        return
    for path in changed:
        drift(f"{path} differs from what the operator supplies")
        yield from upload_secret(f"{directory}/{path}", files[path])


def from_operator(variable: str, path: Path) -> tuple[str, str] | None:
    """A value the operator gives, by environment variable (CI) or local file (laptops), and where
    it came from; None when neither is there. A file's trailing newline is not part of it."""
    if os.environ.get(variable):
        return os.environ[variable], f"${variable}"
    if path.is_file():
        return path.read_text().rstrip("\n"), str(path)
    return None


def secret_sources(settings: Settings, entry: Secret) -> tuple[str, Path]:
    """Where the operator may supply a stack secret: (environment variable, local file)."""
    return (SECRET_ENV.format(entry.env.upper(), entry.name.upper()),
            Path(settings.local_secrets_dir) / entry.env / entry.name)


def supplied_value(settings: Settings, entry: Secret) -> tuple[str, str] | None:
    """The operator's value for a stack secret and where it came from, or None."""
    found = from_operator(*secret_sources(settings, entry))
    if found is None:
        return None
    value, source = found[0].strip(), found[1]
    if not SECRET_VALUE.match(value):
        raise SettingsError(f"{entry.key}: expected 16 to 128 characters without spaces or quotes "
                            f"in {source}")
    return value, source


def supplied_secrets(settings: Settings) -> dict[str, str]:
    """The stack secrets the operator supplies, {"<env>/<name>": value}, checked against the host.

    Raises SettingsError, before anything changes, for a malformed value or one that differs from the
    host's (which a database was initialised with).
    """
    supplied: dict[str, str] = {}
    for entry in stack_secrets():
        found = supplied_value(settings, entry)
        if found is None:
            continue
        value, source = found
        on_host = read_host_file(f"{settings.project_dir}/{entry.path}")
        if on_host and on_host.strip() != value:
            raise SettingsError(
                f"{entry.key}: expected the value the host has, since its database was initialised "
                f"with it; {source} holds a different one. To change it, rotate it "
                f"(pyinfra INVENTORY rotate.py --data rotate={entry.key}).")
        supplied[entry.key] = value
    return supplied


def backup_secrets(settings: Settings) -> dict[str, str]:
    """With a backup repository: the backup secrets to place, {path: content}, from the operator (never
    generated: a repository password that only the host knows dies with it). Raises SettingsError
    before anything changes for a missing or malformed one, or a password other than the host's."""
    entries = {e.name: e for e in enabled(SECRETS, settings) if e.origin == "operator"}
    if not entries:
        return {}
    password, credentials = entries["repository_password"], entries["storage_credentials"]
    tree = host.get_fact(ConfigTree, directory=settings.project_dir)
    on_host = {e.name: tree.get(e.path, ("", "", 0))[2] > 0 for e in entries.values()}
    files: dict[str, str] = {}
    found = supplied_value(settings, password)
    if found:
        value, source = found
        if on_host["repository_password"] and \
                read_host_file(f"{settings.project_dir}/{password.path}").strip() != value:
            raise SettingsError(f"{password.key}: expected the value the host has, since the repository was "
                                f"initialised with it; {source} holds a different one")
        if not on_host["repository_password"]:
            files[password.path] = value
    elif not on_host["repository_password"]:
        variable, path = secret_sources(settings, password)
        raise SettingsError(f"{password.key}: expected it in ${variable} or the file {path} (backup_repository is "
                            f"set; it is never generated on the host, which it must outlive), and the host has none")
    given = from_operator(*secret_sources(settings, credentials))
    if given:
        lines = [line.strip() for line in given[0].splitlines() if line.strip()]
        bad = [line.split("=", 1)[0] for line in lines if not CREDENTIAL_LINE.match(line)]
        if bad:
            raise SettingsError(f"{credentials.key}: expected KEY=value lines (e.g. AWS_ACCESS_KEY_ID=...) in "
                                f"{given[1]}, got a line starting {bad[0][:12]!r}")
        files[credentials.path] = "".join(line + "\n" for line in lines)
    elif not on_host["storage_credentials"]:
        if settings.backup_repository.startswith(NEEDS_CREDENTIALS):
            variable, path = secret_sources(settings, credentials)
            raise SettingsError(f"{credentials.key}: expected KEY=value lines in ${variable} or the file {path} "
                                f"({settings.backup_repository.split(':')[0]}: needs credentials), and the host has none")
        files[credentials.path] = ""  # a backend that needs none (rest:, sftp: with keys, rclone:)
    return files


@deploy("Backup secrets")
def place_backup_secrets(settings: Settings, files: dict[str, str]) -> None:
    if files:
        supplied_files(name="Backup repository password and storage credentials", directory=settings.project_dir,
                       files=files)


def rotation_target(settings: Settings, target: object) -> tuple[Secret, str | None]:
    """Check ``--data rotate=<env>/<name>``: (the secret, the supplied new value or None)."""
    known = [entry.key for entry in stack_secrets()]
    if not isinstance(target, str) or target not in known:
        raise SettingsError(f"rotate: expected one of {', '.join(known)}, got {target!r}")
    entry = secret(target)
    found = supplied_value(settings, entry)
    return entry, found[0] if found else None


@deploy("Rotate a secret")
def rotate_secret(settings: Settings, entry: Secret, value: str | None) -> None:
    rotated_secret(name=f"New value for {entry.key} (database account and file together)",
                   directory=settings.project_dir, key=entry.key, value=value,
                   services=tuple(s.name for s in enabled(SERVICES, settings)))


def read_host_file(path: str) -> str:
    """A small file's content, over SFTP into memory; "" when it is missing. Never printed."""
    buffer = io.BytesIO()
    try:
        host.get_file(path, buffer)
    except OSError:
        return ""
    return buffer.getvalue().decode()


def password_hash_file(settings: Settings) -> str:
    """The maintainer password hash file on the host."""
    return f"{settings.project_dir}/{PASSWORD_HASHES.path}"


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
        found = from_operator(*password_sources(settings, login))
        passwords[login] = found[0] if found else None
    unknown = [login for login, password in passwords.items() if password is None]
    if unknown:
        on_host = host.get_fact(HashedLogins, path=password_hash_file(settings))
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
        return commands.hashed_logins(path)

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class PasswordHashFile(FactBase):
    """The maintainer password hash file's text, "" when it is missing. Read with kono.host_state.read,
    which never prints it (``host.get_fact`` would, at ``-vvv``)."""

    @staticmethod
    def default() -> str:
        return ""

    def command(self, path: str) -> str:
        return commands.file_text(path)

    def process(self, output: list[str]) -> str:
        return "".join(line + "\n" for line in output)


@functools.lru_cache(maxsize=None)  # once per run per pair: hosts that share a hash verify it once
def verifies(password: str, hashed: str) -> bool:
    return sha512_crypt.verify(password, hashed)


def pair_digest(password: str, hashed: str) -> str:
    return hashlib.sha256(f"{password}\0{hashed}".encode()).hexdigest()


@functools.lru_cache(maxsize=None)  # read once per run
def remembered_pairs(memo: Path) -> set[str]:
    try:
        return set(memo.read_text().split())
    except FileNotFoundError:
        return set()


def verified(password: str, hashed: str, memo: Path | None) -> bool:
    """Whether ``password`` verifies against ``hashed``: remembered in ``memo`` by an earlier run, else
    verified now (slow) and, when it does, remembered there (None: remembered nowhere)."""
    digest = pair_digest(password, hashed)
    if memo is not None and digest in remembered_pairs(memo):
        return True
    if not verifies(password, hashed):
        return False
    if memo is not None:
        fd = os.open(memo, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as file:
            file.write(digest + "\n")
        remembered_pairs(memo).add(digest)
    return True


def verification_memo(settings: Settings, login: str) -> Path | None:
    """Where runs remember the hashes ``login``'s password verified against: beside the password's
    local file, only when the password comes from that file (never for one from the environment)."""
    env, path = password_sources(settings, login)
    found = from_operator(env, path)
    if found is None or found[1] != str(path):
        return None
    return path.with_name(path.name + ".verified")


_GOOD_HASHES: dict[tuple[str, str], str] = {}  # (login, password) -> a hash found or made in this run


def hash_to_keep(login: str, password: str, current: str | None, memo: Path | None = None) -> str:
    """``current`` while the password verifies against it; else the hash this run already found or
    made for this login and password, else a new one. Hosts share it (one salt for the same login and
    password across one operator's fleet); two logins never do, so equal passwords do not show.
    ``memo``: see ``verified``."""
    if current and verified(password, current, memo):
        _GOOD_HASHES.setdefault((login, password), current)
        return current
    if (login, password) not in _GOOD_HASHES:
        _GOOD_HASHES[login, password] = sha512_crypt.using(rounds=HASH_ROUNDS).hash(password)
    return _GOOD_HASHES[login, password]


@operation()
def password_hashes(path: str, passwords: dict[str, str | None], memos: dict[str, Path | None] | None = None):
    """
    Keep ``login:sha512-crypt-hash`` lines for each login in a 0600 file, rehashing only a password
    that no longer verifies against its current hash.

    + path: the hash file on the host, in an existing 0700 directory
    + passwords: {login: plain password, or None to keep the host's hash}
    + memos: {login: local file remembering the hashes its password verified against}, see ``verified``

    **Example:**

    .. code:: python

        password_hashes(name="Maintainer passwords", path="/srv/kono/config/production/hashes",
                        passwords={"sysop": "correct horse"},
                        memos={"sysop": Path("secrets/maintainer_password_sysop.verified")})
    """
    memos = memos or {}
    current_text = read(PasswordHashFile, path=path)
    current = dict(line.split(":", 1) for line in current_text.splitlines() if ":" in line)
    lines = []
    for login, password in passwords.items():
        old = current.get(login)
        if password is None:
            if old is None:
                raise OperationError(f"no password for maintainer user {login!r}")
            lines.append(f"{login}:{old}")
        else:
            lines.append(f"{login}:{hash_to_keep(login, password, old, memos.get(login))}")
    wanted = "".join(line + "\n" for line in lines)
    if wanted == current_text:
        host.noop("maintainer password hashes are up to date")
        return
    drift("maintainer password hashes differ from the passwords given")
    yield from upload_secret(path, wanted)


def secret_reads(settings: Settings) -> list[Read]:
    """What ``place_secrets`` reads from the host (kono/host_state.py reads them in one command)."""
    return [(ConfigTree, {"directory": settings.project_dir}),
            (PasswordHashFile, {"path": password_hash_file(settings)})]


@deploy("Secrets")
def place_secrets(settings: Settings, supplied: dict[str, str], passwords: dict[str, str | None]) -> None:
    secret_files(name="Secret files under config/ (supplied, or generated on the host, when missing)",
                 directory=settings.project_dir, secrets=stack_secrets(), supplied=supplied)
    password_hashes(name="Maintainer password hashes (rehashed only when a password changed)",
                    path=password_hash_file(settings), passwords=passwords,
                    memos={login: verification_memo(settings, login) for login in passwords})


@operation(is_idempotent=False)
def rotated_secret(directory: str, key: str, value: str | None, services: tuple[str, ...]):
    """
    Give a secret a new value: the database accounts' password (``ALTER USER``, with the running
    database's current root password) and the secret file change together.

    + directory: the project directory
    + key: the secret, e.g. "production/db_api_password"
    + value: the new value, or None to generate one on the host
    + services: the services the host runs (those these settings enable)

    **Example:**

    .. code:: python

        rotated_secret(name="Rotate", directory="/srv/kono", key="production/api_key", value=None,
                       services=("api", "nginx"))
    """
    entry = secret(key)
    # Said in the plan, and right before it happens.
    for restarted in (s for s in restarted_by(key) if s.name in services):
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
        yield commands.in_dir(directory, commands.alter_users(staged, entry.database,
                                                              root_password_file(entry.database), entry.accounts))
    yield commands.rename(staged, path)
