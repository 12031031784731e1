"""The stack's secret files on the host: which exist, where they come from, where they land.

Which secrets exist, who gets them and which database accounts they are is the table in
kono/services.py. Stack secrets (database passwords, API key): each is a file ``<project_dir>/config/<env>/<name>``
(directories 0700, files 0600, owned by the deploy user), handed to containers with compose
``secrets:`` as ``<env>_<name>``. Per secret, the first source found wins:

1. the environment variable ``KONO_SECRET_<ENV>_<NAME>`` (CI),
2. the git-ignored local file ``<local_secrets_dir>/<env>/<name>`` (laptops, backups),
3. the value already on the host,
4. else a value generated *on the host* from /dev/urandom, which never crosses the wire.

A supplied value that differs from the host's stops the deploy before anything changes: a database
was initialised with the host's. Changing one is rotation (``rotate.py``, kono/rotation.py): the
database user's password (``ALTER USER``) and the file change together, then only the services using
it are recreated. Values travel by SFTP or stdin only: never on a command line, never in pyinfra's
output. Files the operator supplies whole (the TLS pair, kono/tls.py; the backup secrets,
kono/backup.py) are placed by ``supplied_files``; maintainer passwords are kono/passwords.py.

Example::

    supplied = supplied_secrets(settings)      # checked against the host before anything changes
    passwords = maintainer_passwords(settings)
    place_secrets(settings, supplied, passwords)
"""

from __future__ import annotations

import hashlib
import io
import posixpath

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation

from kono import commands
from kono.host_state import Read, read
from kono.operator_input import supplied_value
from kono.plan import drift
from kono.services import SECRETS, Secret, enabled, environments, secret, stack_secrets
from kono.settings import Settings
from kono.stack import FileDigests

EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()  # an empty file holds no secret (it is written anew)
SECRET_LENGTH = 32  # characters from [A-Za-z0-9]: about 190 bits, and safe in any SQL or shell quoting


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


def has_file(tree: dict, path: str) -> bool:
    """Whether the host holds a non-empty file at ``path`` (relative), by its ConfigTree."""
    return tree.get(path, ("", "", 0))[2] > 0


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
def supplied_files(directory: str, files: dict[str, str], compared: list[str], defaults: dict[str, str] | None = None):
    """
    Place files the operator supplies (0600, in a 0700 folder under config/) where they differ from
    the host's: by SFTP, compared by digest, never shown. ``defaults`` are placed only where the host
    has no such file, or an empty one.

    + directory: the project directory
    + files: {path relative to the project directory: content}, all in one folder
    + compared: the paths the deploy read the digests of (``supplied_paths``), these among them
    + defaults: {path: content} for a file the operator did not supply, when the host has none (or an
      empty one)

    **Example:**

    .. code:: python

        supplied_files(name="TLS", directory="/srv/kono", files={"config/tls/certificate": "-----BEGIN..."},
                       compared=["config/tls/certificate", "config/tls/private_key"])
    """
    tree = read(ConfigTree, directory=directory)
    files = {**{path: content for path, content in (defaults or {}).items() if not has_file(tree, path)}, **files}
    if not files:
        host.noop("the supplied files are in place")
        return
    folder = posixpath.dirname(next(iter(files)))
    if folder not in tree:
        yield commands.make_dir(f"{directory}/{folder}", "0700")
    on_host = read(FileDigests, directory=directory, paths=compared)
    changed = [path for path, content in sorted(files.items())
               if on_host.get(path) != hashlib.sha256(content.encode()).hexdigest()]
    if not changed:
        host.noop("the supplied files are in place")
        return
    for path in changed:
        drift(f"{path} differs from what the operator supplies")
        yield from upload_secret(f"{directory}/{path}", files[path])


def same_value(value: str, digest: str | None) -> bool:
    """Whether a host file whose sha256 is ``digest`` holds ``value`` (a trailing newline aside): the
    host's secret is compared by its digest, and never leaves the host."""
    return digest in {hashlib.sha256(value.encode()).hexdigest(), hashlib.sha256(f"{value}\n".encode()).hexdigest()}


def supplied_secrets(settings: Settings) -> dict[str, str]:
    """The stack secrets the operator supplies, {"<env>/<name>": value}. Raises SettingsError for a
    malformed one; ``secret_conflicts`` compares them with the host's once the deploy holds the lock."""
    supplied: dict[str, str] = {}
    for entry in stack_secrets(settings):
        found = supplied_value(settings, entry)
        if found is not None:
            supplied[entry.key] = found[0]
    return supplied


def secret_conflicts(settings: Settings, supplied: dict[str, str], digests: dict[str, str | None]) -> list[str]:
    """What is wrong with the supplied stack secrets given the host's files' digests ({path: digest or
    None}): a value other than the one the host's database was initialised with."""
    problems = []
    for key, value in supplied.items():
        entry = secret(key)
        on_host = digests.get(entry.path)
        if on_host is not None and on_host != EMPTY_DIGEST and not same_value(value, on_host):
            source = supplied_value(settings, entry)[1]
            problems.append(f"{entry.key}: expected the value the host has, since its database was initialised "
                            f"with it; {source} holds a different one. To change it, rotate it "
                            f"(pyinfra INVENTORY rotate.py --data rotate={entry.key}).")
    return problems


def supplied_paths(settings: Settings) -> list[str]:
    """Every secret file the operator may supply with these settings: the deploy reads their digests
    (never their content) to compare and place what is supplied."""
    return sorted(s.path for s in enabled(SECRETS, settings) if s.origin != "maintainer passwords")


def secret_reads(settings: Settings) -> list[Read]:
    """What the secret steps read from the host (kono/host_state.py reads them in one command)."""
    return [(ConfigTree, {"directory": settings.project_dir}),
            (FileDigests, {"directory": settings.project_dir, "paths": supplied_paths(settings)})]


@deploy("Secrets")
def place_secrets(settings: Settings, supplied: dict[str, str]) -> None:
    secret_files(name="Secret files under config/ (supplied, or generated on the host, when missing)",
                 directory=settings.project_dir, secrets=stack_secrets(settings), supplied=supplied)
