"""Where the alerts go: the secrets Alertmanager sends them with, supplied by the operator.

With ``alert_webhook = True`` the team's webhook URL (it carries its token) is the secret
``alerts/webhook_url``: ``KONO_SECRET_ALERTS_WEBHOOK_URL``, else ``<local_secrets_dir>/alerts/webhook_url``
(kono/operator_input.py); with ``alert_heartbeat = True`` the dead man's switch's URL, likewise
``alerts/heartbeat_url``; with ``alert_smtp_username`` set, the mail server's password,
``alerts/smtp_password``. None is ever generated; a new value is placed by the next deploy (by SFTP,
compared by digest, never shown) and Alertmanager reads it at each notification. Not given and not
on the host: the deploy stops before anything changes.

Example::

    files = alert_secrets(settings)          # {path: URL}; SettingsError for a malformed one
    check_supplied(..., alerts=files)        # alert_secret_problems: given or on the host
    place_alert_secrets(settings, files)
"""

from __future__ import annotations

from kono.operator_input import from_operator, secret_sources
from kono.secrets import has_file, supplied_files, supplied_paths
from kono.services import SECRETS, Secret, enabled
from kono.settings import HTTP_URL, Settings, SettingsError


def _one_url(value: str) -> bool:
    return bool(HTTP_URL.match(value))


def _one_line(value: str) -> bool:
    return value != "" and "\n" not in value


ONE_URL = "one http:// or https:// URL (without spaces or quotes)"

# Each alert secret: what it is and the knob that asks for it (said when it is missing), and what a
# good value looks like (said when it is not one).
KINDS = {
    "webhook_url": ("the webhook's URL", "alert_webhook = True", ONE_URL, _one_url),
    "heartbeat_url": ("the heartbeat's URL", "alert_heartbeat = True", ONE_URL, _one_url),
    "smtp_password": ("the mail server's password", "alert_smtp_username is set", "one line, not empty", _one_line),
}


def alert_entries(settings: Settings) -> list[Secret]:
    return [e for e in enabled(SECRETS, settings) if e.origin == "alerts"]


def alert_secrets(settings: Settings) -> dict[str, str]:
    """The alert secrets the operator gives, {path: content}. Raises SettingsError for one that is not
    what its kind expects (without showing it)."""
    files = {}
    for entry in alert_entries(settings):
        found = from_operator(secret_sources(settings, entry))
        if found is None:
            continue
        value, source = found[0].strip(), found[1]
        _what, _knob, expected, good = KINDS[entry.name]
        if not good(value):
            raise SettingsError(f"{entry.key}: expected {expected} in {source}")
        files[entry.path] = value
    return files


def alert_secret_problems(settings: Settings, given: dict[str, str], tree: dict) -> list[str]:
    """An alert secret given neither by the operator nor on the host (ConfigTree)."""
    problems = []
    for entry in alert_entries(settings):
        if entry.path not in given and not has_file(tree, entry.path):
            what, knob, _expected, _good = KINDS[entry.name]
            problems.append(f"{entry.key}: expected {what} in {secret_sources(settings, entry)} ({knob}), "
                            "and the host has none")
    return problems


def place_alert_secrets(settings: Settings, files: dict[str, str]) -> None:
    if files:
        supplied_files(name="Alert secrets", directory=settings.project_dir, files=files,
                       compared=supplied_paths(settings))
