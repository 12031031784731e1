"""Maintainer passwords (sudo inside the maintainer container): given by the operator, kept on the
host only as sha512-crypt hashes.

The passwords come from the operator (kono/operator_input.py: ``KONO_MAINTAINER_PASSWORD_<LOGIN>``,
else ``<local_secrets_dir>/maintainer_password_<login>``), else the hash already on the host stays.
Only the hashes leave the operator's machine, as one secret file read by ``chpasswd -e`` in the
container. A hash is reused while the password still verifies against it, so an unchanged password
changes nothing. Verifying is slow on purpose (100,000 rounds), so a run verifies each (password,
hash) pair once, and every host that needs a new hash in a run gets the same one: a fleet shares one
hash per login and a no-op deploy of ten hosts verifies as much as one host's. A password from a
local file is verified against a hash once at all: the pair's SHA-256 then goes into
``maintainer_password_<login>.verified`` beside the file (0600). That is a fast hash of the password,
so it lives only where the password itself lies in plain text; a password from the environment is
verified every run and written nowhere.

Example::

    passwords = maintainer_passwords(settings)        # before anything changes
    password_hashes(name="...", path=password_hash_file(settings), passwords=passwords)
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from passlib.hash import sha512_crypt
from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.api.exceptions import OperationError

from kono import commands
from kono.host_state import Read, read
from kono.operator_input import from_operator, password_sources
from kono.plan import drift
from kono.secrets import upload_secret
from kono.services import SECRETS
from kono.settings import Settings

PASSWORD_HASHES = next(s for s in SECRETS if s.origin == "maintainer passwords")  # "login:hash" lines
# sha512-crypt rounds for new hashes: 20x glibc's default of 5,000; passlib's 656,000 would make every
# deploy spend ~0.35 s per user verifying unchanged passwords (bench/).
HASH_ROUNDS = 100_000


def password_hash_file(settings: Settings) -> str:
    """The maintainer password hash file on the host."""
    return f"{settings.project_dir}/{PASSWORD_HASHES.path}"


def maintainer_passwords(settings: Settings) -> dict[str, str | None]:
    """Each maintainer login's password from the operator, or None where none is given here (the
    host's hash stays: ``missing_passwords`` checks it has one, once the deploy holds the lock)."""
    passwords: dict[str, str | None] = {}
    for login, _keys in settings.maintainer_users:
        found = from_operator(password_sources(settings, login))
        passwords[login] = found[0] if found else None
    return passwords


def hashed_logins(hash_file_text: str) -> set[str]:
    return {line.split(":", 1)[0] for line in hash_file_text.splitlines() if ":" in line}


def missing_passwords(settings: Settings, passwords: dict[str, str | None], hash_file_text: str) -> list[str]:
    """The logins with a password neither here nor on the host (given the host's hash file's text)."""
    on_host = hashed_logins(hash_file_text)
    problems = []
    for login, password in passwords.items():
        if password is None and login not in on_host:
            problems.append(f"maintainer_users[{login!r}]: expected a password in {password_sources(settings, login)}, "
                            "and the host has none yet")
    return problems


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
    sources = password_sources(settings, login)
    found = from_operator(sources)
    if found is None or found[1] != str(sources.path):
        return None
    return sources.path.with_name(sources.path.name + ".verified")


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


def password_reads(settings: Settings) -> list[Read]:
    """What ``place_passwords`` reads from the host (kono/host_state.py reads it with the others)."""
    return [(PasswordHashFile, {"path": password_hash_file(settings)})]


@deploy("Maintainer passwords")
def place_passwords(settings: Settings, passwords: dict[str, str | None]) -> None:
    password_hashes(name="Maintainer password hashes (rehashed only when a password changed)",
                    path=password_hash_file(settings), passwords=passwords,
                    memos={login: verification_memo(settings, login) for login in passwords})
