"""Where the alerts go: the secrets Alertmanager sends them with, supplied by the operator.

With ``alert_webhook = True`` the team's webhook URL (it carries its token) is the secret
``alerts/webhook_url``: ``KONO_SECRET_ALERTS_WEBHOOK_URL``, else ``<local_secrets_dir>/alerts/webhook_url``
(kono/operator_input.py); with ``alert_heartbeat = True`` the dead man's switch's URL, likewise
``alerts/heartbeat_url``. Neither is ever generated; a new value is placed by the next deploy (by SFTP,
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


def alert_entries(settings: Settings) -> list[Secret]:
    return [e for e in enabled(SECRETS, settings) if e.origin == "alerts"]


def alert_secrets(settings: Settings) -> dict[str, str]:
    """The alert secrets the operator gives, {path: content}. Raises SettingsError for one that is not
    an http(s) URL (without showing it)."""
    files = {}
    for entry in alert_entries(settings):
        found = from_operator(*secret_sources(settings, entry))
        if found is None:
            continue
        value, source = found[0].strip(), found[1]
        if not HTTP_URL.match(value):
            raise SettingsError(f"{entry.key}: expected one http:// or https:// URL (without spaces or quotes) "
                                f"in {source}")
        files[entry.path] = value
    return files


def alert_secret_problems(settings: Settings, given: dict[str, str], tree: dict) -> list[str]:
    """An alert secret given neither by the operator nor on the host (ConfigTree)."""
    problems = []
    for entry in alert_entries(settings):
        if entry.path not in given and not has_file(tree, entry.path):
            variable, path = secret_sources(settings, entry)
            # webhook_url, asked for by alert_webhook (only_when "webhook_on"); heartbeat_url likewise
            what, knob = entry.name.removesuffix("_url"), "alert_" + entry.only_when.removesuffix("_on")
            problems.append(f"{entry.key}: expected the {what}'s URL in ${variable} or {path} ({knob} = True), "
                            "and the host has none")
    return problems


def place_alert_secrets(settings: Settings, files: dict[str, str]) -> None:
    if files:
        supplied_files(name="Alert URLs", directory=settings.project_dir, files=files,
                       compared=supplied_paths(settings))
