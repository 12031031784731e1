"""What the operator supplies on their own machine: a value by environment variable (CI) or by a
git-ignored local file (laptops), and where each kind of value is looked for. Nothing here touches a
host; kono/secrets.py, kono/passwords.py, kono/tls.py and kono/backup.py check and place the values.

Per value, the first source found wins: the environment variable, then the local file.

- a stack secret or a file-shaped secret (``<env>/<name>`` in kono/services.py):
  ``KONO_SECRET_<ENV>_<NAME>``, else ``<local_secrets_dir>/<env>/<name>``;
- a maintainer's sudo password: ``KONO_MAINTAINER_PASSWORD_<LOGIN>``, else
  ``<local_secrets_dir>/maintainer_password_<login>``.

Example::

    found = from_operator(*secret_sources(settings, secret("production/api_key")))  # (value, where) or None
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kono.services import Secret
from kono.settings import Settings, SettingsError

PASSWORD_ENV = "KONO_MAINTAINER_PASSWORD_{}"
SECRET_ENV = "KONO_SECRET_{}_{}"
SECRET_VALUE = re.compile(r"^[A-Za-z0-9._~+/=@%^,:-]{16,128}$")  # supplied values: no quotes, no spaces


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


def password_sources(settings: Settings, login: str) -> tuple[str, Path]:
    """Where the operator gives ``login``'s password: (environment variable, local file)."""
    return (PASSWORD_ENV.format(login.upper().replace("-", "_")),
            Path(settings.local_secrets_dir) / f"maintainer_password_{login}")
