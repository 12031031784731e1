"""The operator's declarations (inventory.py + group_data), read once and checked before anything runs.

``load(host.data)`` returns plain typed data or raises ``SettingsError`` naming the bad key and what
it expected. Every other module takes a ``Settings`` and never reads ``host.data`` itself.

Each knob is declared twice, no more: its default and one-line comment in group_data/all.py, its
type and check here (a ``Settings`` field); tests/unit/test_settings.py keeps the two lists equal.

Example::

    settings = load(host.data)
    settings.project_dir  # "/srv/kono"
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from pyinfra.api.exceptions import PyinfraError

from kono.commands import SECRET_VERSION_CHARS
from kono.services import SECRETS, SERVICES

USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
IMAGE_REF = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
SSH_PUBLIC_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/]+=*( .*)?$")
SERVER_NAME = re.compile(r"^[A-Za-z0-9._*~-]+( [A-Za-z0-9._*~-]+)*$")
DB_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
LOG_SIZE = re.compile(r"^[0-9]+[kmg]$")
GIT_URL = re.compile(r"^(https?|git|ssh|file)://[^\s'\"\\]+$|^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s'\"\\]+$")
GIT_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
HTTP_URL = re.compile(r"^https?://[^\s'\"]+$")
DEB_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")
DOCKER_SOURCES = ("docker", "distro")
HTTPS_MODES = ("off", "acme", "provided")
ENGINES = ("compose", "swarm")
SWARM_ROLES = ("manager", "worker")
# What a cluster node is for: nginx runs on every edge node, the api's replicas on the app nodes, the
# databases, backups and the maintainer (and their volumes) on the one db node.
NODE_LABELS = ("edge", "app", "db")
NODE_LABEL_PREFIX = "kono."  # a node's label key: kono.edge=true, ...; placement reads node.labels.kono.<label>
# A DNS name, lowercase; "*." in front only where the certificate is provided (HTTP-01 cannot prove one).
DOMAIN = re.compile(r"^(\*\.)?(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL = re.compile(r"^[^@\s'\"]+@[^@\s'\"]+\.[^@\s'\"]+$")
SMTP_SERVER = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")
SMTP_USERNAME = re.compile(r"^[^\s'\"]+$")
# restic repositories off the host: object storage, SFTP, restic's REST server, rclone remotes.
RESTIC_REPOSITORY = re.compile(r"^(s3|b2|azure|gs|swift|sftp|rest|rclone):[^\s'\"\\]+$")
DAILY_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
WEEKLY_TIME = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun) ([01][0-9]|2[0-3]):[0-5][0-9]$")
MEMORY = re.compile(r"^[1-9][0-9]*[kmg]$")
SWARM_NAME_MAX = 64  # Docker's longest name of a swarm secret
# A backup older than this is overdue: twice the daily schedule (status, drift and the alert say so).
BACKUP_MAX_AGE = datetime.timedelta(days=2)

PUBLISHED_PORTS = ("http_port", "https_port", "maintainer_ssh_port", "db_dev_port", "metrics_port")


class SettingsError(PyinfraError):
    """Bad inventory or group_data: raised before any operation runs."""


def _matches(pattern: re.Pattern) -> Callable[[Any], bool]:
    return lambda value: bool(pattern.match(value))


def knob(expected: str, test: Callable[[Any], bool] = lambda v: True, parse: Callable | None = None,
         given_as: type | None = None):
    """A Settings field: what a good value is (said in the error) and how to tell. ``parse`` turns a
    checked value into its typed form, raising SettingsError itself for nested mistakes; ``given_as``
    is the type group_data gives it in, when that is not the field's own."""
    return field(metadata={"expected": expected, "test": test, "parse": parse, "given_as": given_as})


USER = ("a Linux user name (lowercase letters, digits, _ or -)", _matches(USER_NAME))
IMAGE = ("an image reference like \"mysql:8.4\"", _matches(IMAGE_REF))
PORT = ("a port number from 1 to 65535", lambda v: 1 <= v <= 65535)
DATABASE = ("a database name (letters, digits, _)", _matches(DB_NAME))
BRANCH = ("a git branch name", _matches(GIT_BRANCH))
GIT_REPO = ("a git URL (https://, ssh://, git://, file:// or user@host:path)", _matches(GIT_URL))


def _public_keys(key: str, keys: Any) -> tuple[str, ...]:
    for index, line in enumerate(keys):
        if not isinstance(line, str) or not SSH_PUBLIC_KEY.match(line.strip()):
            raise SettingsError(
                f"{key}[{index}]: expected an SSH public key line "
                f"(\"ssh-ed25519 AAAA... comment\"), got {str(line)[:40]!r}")
    return tuple(k.strip() for k in keys)


def _domains(key: str, names: Any) -> tuple[str, ...]:
    for index, name in enumerate(names):
        if not isinstance(name, str) or not DOMAIN.match(name):
            raise SettingsError(f"{key}[{index}]: expected a DNS name like \"example.com\" (lowercase), got {name!r}")
    if len(set(names)) != len(names):
        raise SettingsError(f"{key}: expected each name once, got {list(names)!r}")
    return tuple(names)


def _local_text(key: str, path: str, what: str) -> str:
    """A file on the operator's machine that a knob names: its text, or a SettingsError saying ``what``."""
    try:
        return Path(path).expanduser().read_text()
    except OSError as error:
        raise SettingsError(f"{key}: expected a readable {what}, got {path!r} ({error.strerror})") from None


def _ca_bundle(key: str, path: str) -> str:
    """A local CA bundle file (on the operator's machine), checked to hold certificates."""
    if "-----BEGIN CERTIFICATE-----" not in _local_text(key, path, "PEM file of CA certificates"):
        raise SettingsError(f"{key}: expected a PEM file of CA certificates, {path!r} holds none")
    return str(Path(path).expanduser())


def _email_addresses(key: str, addresses: Any) -> tuple[str, ...]:
    for index, address in enumerate(addresses):
        if not isinstance(address, str) or not EMAIL.match(address) or "," in address:
            raise SettingsError(f"{key}[{index}]: expected an email address like \"oncall@example.com\", "
                                f"got {address!r}")
    return tuple(addresses)


def _sops_file(key: str, path: str) -> str:
    """The team's encrypted secrets file (kono/operator_input.py decrypts it), checked to be one."""
    if not re.search(r"^sops:\s*$", _local_text(key, path, "SOPS-encrypted YAML file"), re.M):
        raise SettingsError(f"{key}: expected a SOPS-encrypted YAML file (with its sops: metadata), {path!r} is "
                            "not one: a plain file of secrets must never be committed (encrypt it with "
                            "sops encrypt -i)")
    return str(Path(path).expanduser())


def _cidrs(key: str, cidrs: Any) -> tuple[str, ...]:
    for index, cidr in enumerate(cidrs):
        try:
            ipaddress.ip_network(cidr)
        except (TypeError, ValueError):
            raise SettingsError(f"{key}[{index}]: expected an IPv4 or IPv6 network like \"203.0.113.0/24\" "
                                f"(host bits zero), got {cidr!r}") from None
    return tuple(str(ipaddress.ip_network(cidr)) for cidr in cidrs)


def _node_labels(key: str, labels: Any) -> tuple[str, ...]:
    for index, label in enumerate(labels):
        if label not in NODE_LABELS:
            raise SettingsError(f"{key}[{index}]: expected one of {', '.join(NODE_LABELS)}, got {label!r}")
    if len(set(labels)) != len(labels):
        raise SettingsError(f"{key}: expected each label once, got {list(labels)!r}")
    return tuple(labels)


def _ip_address(key: str, address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise SettingsError(f"{key}: expected an IP address like \"10.0.1.5\", got {address!r}") from None


def _address_pool(key: str, pool: str) -> str:
    try:
        network = ipaddress.ip_network(pool)
    except (TypeError, ValueError):
        network = None
    if network is None or network.version != 4 or network.prefixlen > 24:
        raise SettingsError(f"{key}: expected an IPv4 network like \"10.0.0.0/8\" (host bits zero), /24 or wider "
                            f"(each overlay network takes a /24), got {pool!r}")
    return str(network)


def _memory_limits(key: str, limits: dict) -> tuple[tuple[str, str], ...]:
    names = [service.name for service in SERVICES]
    for service, limit in limits.items():
        if service not in names:
            raise SettingsError(f"{key}: expected service names ({', '.join(names)}), got {service!r}")
        if not isinstance(limit, str) or not MEMORY.match(limit):
            raise SettingsError(f"{key}[{service!r}]: expected a size like \"512m\" or \"2g\", got {limit!r}")
    return tuple(sorted(limits.items()))


def _maintainer_users(key: str, users: dict) -> tuple[tuple[str, tuple[str, ...]], ...]:
    for login, keys in users.items():
        if not isinstance(login, str) or not USER_NAME.match(login) or login == "root":
            raise SettingsError(f"{key}: expected login names like \"sysop\" (not root), got {login!r}")
        if not isinstance(keys, (list, tuple)):
            raise SettingsError(f"{key}[{login!r}]: expected a list of SSH public keys, got {keys!r}")
        _public_keys(f"{key}[{login!r}]", keys)
    return tuple((login, _public_keys(key, keys)) for login, keys in users.items())


@dataclass(frozen=True)
class Settings:
    # Hosts and users
    admin_user: str = knob(*USER)
    deploy_user: str = knob(*USER)
    deploy_authorized_keys: tuple[str, ...] = knob(
        "a non-empty list of SSH public keys (\"ssh-ed25519 AAAA... comment\")", lambda v: len(v) > 0,
        _public_keys)
    project_dir: str = knob("an absolute path of letters, digits and ._-/",
                            lambda v: bool(SAFE_PATH.match(v)) and v.rstrip("/") not in ("", "/"))
    compose_project: str = knob("a compose project name (lowercase letters, digits, _ or -)",
                                _matches(PROJECT_NAME))
    # Docker Engine
    docker_source: str = knob(f"one of {', '.join(DOCKER_SOURCES)}", lambda v: v in DOCKER_SOURCES)
    docker_apt_url: str = knob("an http(s):// URL", _matches(HTTP_URL))
    docker_compose_distro_package: str | None = knob("a Debian package name or None", _matches(DEB_PACKAGE))
    docker_log_max_size: str = knob("a size like \"10m\"", _matches(LOG_SIZE))
    docker_log_max_file: int = knob("a whole number >= 1", lambda v: v >= 1)
    docker_live_restore: bool = knob("True or False")
    # Images
    mysql_image: str = knob(*IMAGE)
    node_image: str = knob(*IMAGE)
    nginx_image: str = knob(*IMAGE)
    maintainer_base_image: str = knob(*IMAGE)
    # Ports
    http_port: int = knob(*PORT)
    https_port: int = knob(*PORT)
    maintainer_ssh_port: int = knob(*PORT)
    db_dev_port: int = knob(*PORT)
    api_port: int = knob(*PORT)
    # Maintainer container: ((login, (public key, ...)), ...)
    maintainer_users: tuple[tuple[str, tuple[str, ...]], ...] = knob(
        "a non-empty mapping of login name to a list of SSH public keys", lambda v: len(v) > 0,
        _maintainer_users, given_as=dict)
    local_secrets_dir: str = knob("a local directory path", lambda v: v.strip() != "")
    secrets_sops_file: str | None = knob("the path of a SOPS-encrypted YAML file", lambda v: v.strip() != "",
                                         _sops_file)
    # Code the maintainer deploys
    api_repo: str | None = knob(*GIT_REPO)
    api_branch: str = knob(*BRANCH)
    app_repo: str | None = knob(*GIT_REPO)
    app_branch: str = knob(*BRANCH)
    releases_kept: int = knob("a whole number >= 2 (the current release and one to roll back to)",
                              lambda v: v >= 2)
    # Stack
    server_name: str = knob("nginx server names separated by spaces", _matches(SERVER_NAME))
    db_production_name: str = knob(*DATABASE)
    db_dev_name: str = knob(*DATABASE)
    # HTTPS
    https: str = knob(f"one of {', '.join(HTTPS_MODES)}", lambda v: v in HTTPS_MODES)
    domains: tuple[str, ...] = knob("a list of DNS names", parse=_domains)
    acme_email: str | None = knob("an email address", _matches(EMAIL))
    acme_directory_url: str = knob("an https:// URL of an ACME directory", lambda v: v.startswith("https://")
                                   and bool(HTTP_URL.match(v)))
    acme_ca_bundle: str | None = knob("the path of a local PEM file of CA certificates",
                                      lambda v: v.strip() != "", _ca_bundle)
    acme_image: str = knob(*IMAGE)
    hsts_max_age: int = knob("seconds, a whole number >= 0 (0: no Strict-Transport-Security header)",
                             lambda v: v >= 0)
    # Backups
    backup_repository: str | None = knob(
        "a restic repository off the host (s3:, b2:, azure:, gs:, swift:, sftp:, rest: or rclone:...)",
        _matches(RESTIC_REPOSITORY))
    backup_schedule: str = knob("a daily time, UTC, like \"03:00\"", _matches(DAILY_TIME))
    backup_check_schedule: str = knob("a weekly day and time, UTC, like \"sun 04:30\"", _matches(WEEKLY_TIME))
    backup_keep_daily: int = knob("a whole number >= 1", lambda v: v >= 1)
    backup_keep_weekly: int = knob("a whole number >= 0", lambda v: v >= 0)
    backup_keep_monthly: int = knob("a whole number >= 0", lambda v: v >= 0)
    restic_image: str = knob(*IMAGE)
    pitr: bool = knob("True or False")
    pitr_max_lag_seconds: int = knob("seconds, a whole number from 10 to 3600", lambda v: 10 <= v <= 3600)
    pitr_full_backup_days: int = knob("days, a whole number from 1 to 31", lambda v: 1 <= v <= 31)
    pitr_days: int = knob("days, a whole number >= 1", lambda v: v >= 1)
    # Monitoring
    monitoring: bool = knob("True or False")
    metrics_port: int = knob(*PORT)
    metrics_allowed_cidrs: tuple[str, ...] = knob("a list of networks like \"203.0.113.0/24\" (empty: only through "
                                                  "an SSH tunnel)", parse=_cidrs)
    alert_webhook: bool = knob("True or False")
    alert_heartbeat: bool = knob("True or False")
    alert_email_to: tuple[str, ...] = knob("a list of email addresses", parse=_email_addresses)
    alert_email_from: str | None = knob("an email address", _matches(EMAIL))
    alert_smtp_server: str | None = knob("a mail server as \"host:port\" (like \"smtp.example.com:587\")",
                                         lambda v: bool(SMTP_SERVER.match(v)) and 1 <= int(v.rsplit(":", 1)[1]) <= 65535)
    alert_smtp_username: str | None = knob("a login name (no spaces or quotes)", _matches(SMTP_USERNAME))
    alert_smtp_ca_bundle: str | None = knob("the path of a local PEM file of CA certificates",
                                            lambda v: v.strip() != "", _ca_bundle)
    metrics_retention_days: int = knob("days, a whole number from 1 to 3650", lambda v: 1 <= v <= 3650)
    metrics_retention_mb: int = knob("megabytes, a whole number >= 64", lambda v: v >= 64)
    prometheus_image: str = knob(*IMAGE)
    alertmanager_image: str = knob(*IMAGE)
    node_exporter_image: str = knob(*IMAGE)
    # Host hardening
    host_ssh_allowed_cidrs: tuple[str, ...] = knob("a non-empty list of networks like \"203.0.113.0/24\"",
                                              lambda v: len(v) > 0, _cidrs)
    maintainer_allowed_cidrs: tuple[str, ...] = knob("a non-empty list of networks like \"203.0.113.0/24\"",
                                                     lambda v: len(v) > 0, _cidrs)
    maintainer_connections_per_minute: int = knob("a whole number >= 5", lambda v: v >= 5)
    firewall: bool = knob("True or False")
    auto_reboot: bool = knob("True or False")
    auto_reboot_time: str = knob("a time of day like \"04:00\"", _matches(DAILY_TIME))
    debian_security_url: str = knob("an http(s):// URL", _matches(HTTP_URL))
    memory_limits: tuple[tuple[str, str], ...] = knob("a mapping of service name to a size like \"512m\"",
                                                      parse=_memory_limits, given_as=dict)
    # Cluster
    engine: str = knob(f"one of {', '.join(ENGINES)}", lambda v: v in ENGINES)
    swarm_role: str = knob(f"one of {', '.join(SWARM_ROLES)}", lambda v: v in SWARM_ROLES)
    swarm_labels: tuple[str, ...] = knob(f"a list of node labels ({', '.join(NODE_LABELS)})", parse=_node_labels)
    swarm_advertise_address: str | None = knob("an IP address", lambda v: v.strip() != "", _ip_address)
    swarm_remove_strays: bool = knob("True or False")
    swarm_address_pool: str = knob("an IPv4 network like \"10.0.0.0/8\", /24 or wider", parse=_address_pool)
    swarm_overlay_encryption: bool = knob("True or False")
    api_replicas: int = knob("a whole number >= 1", lambda v: v >= 1)
    api_answer_timeout: int = knob("seconds, a whole number >= 1", lambda v: v >= 1)
    compose_wait_timeout: int = knob("seconds, a whole number >= 10", lambda v: v >= 10)
    deploy_lock_wait: int = knob("seconds, a whole number >= 0", lambda v: v >= 0)
    # Not a knob: the host's name in the inventory (load's ``name``); the alerts name the host by it.
    host_name: str = field(default="", metadata={"derived": True})

    # What the knobs turn on, said once (the tables in kono/services.py name these in ``only_when``).
    @property
    def https_on(self) -> bool:
        return self.https != "off"

    @property
    def acme_on(self) -> bool:
        return self.https == "acme"

    @property
    def tls_provided(self) -> bool:
        return self.https == "provided"

    @property
    def webhook_on(self) -> bool:
        """The alerts go to the team's webhook (its URL the operator supplies)."""
        return self.monitoring and self.alert_webhook

    @property
    def heartbeat_on(self) -> bool:
        """The dead man's switch is told the alerting lives (its URL the operator supplies)."""
        return self.monitoring and self.alert_heartbeat

    @property
    def email_on(self) -> bool:
        """The alerts are emailed to the team too (through the operator's mail server)."""
        return self.monitoring and bool(self.alert_email_to)

    @property
    def smtp_login_on(self) -> bool:
        """Alertmanager logs in to the mail server (with the password the operator supplies)."""
        return self.email_on and self.alert_smtp_username is not None

    @property
    def team_on(self) -> bool:
        """The team is told of each alert (by webhook, email or both)."""
        return self.webhook_on or self.email_on

    @property
    def alerts_on(self) -> bool:
        """Alertmanager sends the alerts on (to the team, the heartbeat, or both)."""
        return self.team_on or self.heartbeat_on

    @property
    def backups_on(self) -> bool:
        return self.backup_repository is not None

    @property
    def pitr_on(self) -> bool:
        return self.pitr

    @property
    def swarm(self) -> bool:
        return self.engine == "swarm"

    @property
    def tls_from_origin(self) -> bool:
        """HTTPS on a cluster: each edge's nginx copies the certificate from the db node's origin service."""
        return self.swarm and self.https_on


# The Python type group_data gives a knob in, by its annotation's type (a tuple comes as a list).
_KINDS = {str: str, int: int, bool: bool, tuple: (list, tuple)}


def _kind(annotation: Any) -> tuple[Any, bool]:
    """(the type group_data gives the value in, whether None is allowed) from a field's annotation."""
    args = typing.get_args(annotation)
    optional = isinstance(annotation, types.UnionType) and type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    return _KINDS[typing.get_origin(annotation) or annotation], optional


_HINTS = typing.get_type_hints(Settings)
KNOBS: tuple[str, ...] = tuple(f.name for f in fields(Settings) if not f.metadata.get("derived"))


def _check(data: Any, name: str) -> Any:
    spec = next(f for f in fields(Settings) if f.name == name)
    kind, optional = _kind(_HINTS[name])
    kind = spec.metadata["given_as"] or kind
    value = getattr(data, name, None)
    if value is None and optional:
        return None
    expected = spec.metadata["expected"] + (" or None" if optional and "None" not in spec.metadata["expected"] else "")
    # bool is an int in Python; a port of True is still a mistake.
    if value is None or not isinstance(value, kind) or (kind is int and isinstance(value, bool)) \
            or not spec.metadata["test"](value):
        raise SettingsError(f"{name}: expected {expected}, got {value!r}")
    parse = spec.metadata["parse"]
    return parse(name, value) if parse else value


def load(data: Any, name: str = "") -> Settings:
    """Read and check every knob from pyinfra host data (attribute access, as ``host.data``) of the
    inventory's host ``name``."""
    settings = Settings(**{knob: _check(data, knob) for knob in KNOBS}, host_name=name)
    _check_distinct_ports(settings)
    _check_https(settings)
    if settings.pitr and not settings.backups_on:
        raise SettingsError("pitr: expected backup_repository to be set (binary logs go to that repository), "
                            "got pitr = True without one")
    _check_swarm(settings)
    _check_monitoring(settings)
    return settings


def _check_monitoring(settings: Settings) -> None:
    for knob in ("alert_webhook", "alert_heartbeat"):
        if getattr(settings, knob) and not settings.monitoring:
            raise SettingsError(f"{knob}: expected False with monitoring = False (the alerts come from the host's "
                                "monitoring), got True")
    if settings.alert_email_to and not settings.monitoring:
        raise SettingsError("alert_email_to: expected [] with monitoring = False (the alerts come from the host's "
                            f"monitoring), got {list(settings.alert_email_to)}")
    for knob in ("alert_email_from", "alert_smtp_server"):
        if settings.email_on and getattr(settings, knob) is None:
            raise SettingsError(f"{knob}: expected it set with alert_email_to (the emails need a sender and a "
                                "mail server), got None")
    if settings.metrics_allowed_cidrs and not settings.firewall:
        raise SettingsError("metrics_allowed_cidrs: expected [] with firewall = False (the firewall is what keeps "
                            f"every other address out), got {list(settings.metrics_allowed_cidrs)}")


def _check_swarm(settings: Settings) -> None:
    """What only a cluster asks of the knobs."""
    if not settings.swarm:
        return
    # A swarm secret's name is "<project>_<secret>_<version>" (kono/commands.py), 64 characters at most.
    longest = max(len(s.compose_name) for s in SECRETS) + len("__") + SECRET_VERSION_CHARS
    if len(settings.compose_project) + longest > SWARM_NAME_MAX:
        raise SettingsError(f"compose_project: expected at most {SWARM_NAME_MAX - longest} characters with engine = "
                            f"\"swarm\" (it starts each swarm secret's name), got {settings.compose_project!r}")


def check_login(settings: Settings, data: Any) -> None:
    """Deploy, rotate and the operator tools log in as ``deploy_user``. group_data/all.py sets
    ``ssh_user = deploy_user`` once, from the default, so a host (or group) that changes
    ``deploy_user`` must change ``ssh_user`` with it; raise SettingsError, before anything runs, if not."""
    login = getattr(data, "ssh_user", None)
    if login != settings.deploy_user:
        raise SettingsError(f"deploy_user: expected the user pyinfra logs in as (ssh_user {login!r}), got "
                            f"{settings.deploy_user!r}; where you set deploy_user = {settings.deploy_user!r}, "
                            f"set ssh_user = {settings.deploy_user!r} too")


def _check_https(settings: Settings) -> None:
    if settings.https == "off":
        return
    if not settings.domains:
        raise SettingsError(f"domains: expected at least one DNS name when https = {settings.https!r}, got []")
    shared = sorted(set(settings.server_name.split()) & set(settings.domains))
    if shared:
        raise SettingsError(f"server_name: expected names other than those in domains (they are served over "
                            f"HTTPS, and plain HTTP redirects there), got {' '.join(shared)}")
    if settings.https == "acme":
        if settings.acme_email is None:
            raise SettingsError("acme_email: expected an email address when https = 'acme' (the ACME account's "
                                "contact; lego requires one), got None")
        wildcards = [name for name in settings.domains if name.startswith("*.")]
        if wildcards:
            raise SettingsError(f"domains: expected names without \"*.\" when https = 'acme' (HTTP-01 cannot "
                                f"prove a wildcard; provide the certificate instead), got {wildcards[0]!r}")


def _check_distinct_ports(settings: Settings) -> None:
    seen: dict[int, str] = {}
    for key in PUBLISHED_PORTS:
        port = getattr(settings, key)
        if port in seen:
            raise SettingsError(f"{key}: expected a port not already used by {seen[port]}, got {port}")
        seen[port] = key
