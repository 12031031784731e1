"""The operator's declarations (inventory.py + group_data), read once and checked before anything runs.

``load(host.data)`` returns plain typed data or raises ``SettingsError`` naming the bad key and what
it expected. Every other module takes a ``Settings`` and never reads ``host.data`` itself.

Example::

    settings = load(host.data)
    settings.project_dir  # "/srv/kono"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pyinfra.api.exceptions import PyinfraError

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
DOCKER_SOURCES = ("docker", "distro")
PUBLISHED_PORTS = ("http_port", "maintainer_ssh_port", "db_dev_port")


class SettingsError(PyinfraError):
    """Bad inventory or group_data: raised before any operation runs."""


@dataclass(frozen=True)
class Settings:
    admin_user: str
    deploy_user: str
    deploy_authorized_keys: tuple[str, ...]
    project_dir: str
    compose_project: str
    docker_source: str
    docker_apt_url: str
    docker_compose_distro_package: str | None
    docker_log_max_size: str
    docker_log_max_file: int
    docker_live_restore: bool
    mysql_image: str
    node_image: str
    nginx_image: str
    maintainer_base_image: str
    http_port: int
    maintainer_ssh_port: int
    db_dev_port: int
    api_port: int
    server_name: str
    db_production_name: str
    db_dev_name: str
    compose_wait_timeout: int
    deploy_lock_wait: int
    maintainer_users: tuple[tuple[str, tuple[str, ...]], ...]  # ((login, (public key, ...)), ...)
    local_secrets_dir: str
    api_repo: str | None
    api_branch: str
    app_repo: str | None
    app_branch: str


def _check(data: Any, key: str, kind: type | tuple[type, ...], expected: str, test=lambda v: True):
    value = getattr(data, key, None)
    # bool is an int in Python; a port of True is still a mistake.
    if value is None or not isinstance(value, kind) or (kind is int and isinstance(value, bool)) \
            or not test(value):
        raise SettingsError(f"{key}: expected {expected}, got {value!r}")
    return value


def _matches(pattern: re.Pattern) -> Any:
    return lambda value: bool(pattern.match(value))


def _port(data: Any, key: str) -> int:
    return _check(data, key, int, "a port number from 1 to 65535", lambda v: 1 <= v <= 65535)


def load(data: Any) -> Settings:
    """Read and check every knob from pyinfra host data (attribute access, as ``host.data``)."""
    keys = _check(data, "deploy_authorized_keys", (list, tuple),
                  "a non-empty list of SSH public keys (\"ssh-ed25519 AAAA... comment\")",
                  lambda v: len(v) > 0)
    _check_keys("deploy_authorized_keys", keys)

    image = ("an image reference like \"mysql:8.4\"", _matches(IMAGE_REF))
    user = ("a Linux user name (lowercase letters, digits, _ or -)", _matches(USER_NAME))
    settings = Settings(
        admin_user=_check(data, "admin_user", str, *user),
        deploy_user=_check(data, "deploy_user", str, *user),
        deploy_authorized_keys=tuple(k.strip() for k in keys),
        project_dir=_check(data, "project_dir", str, "an absolute path of letters, digits and ._-/",
                           lambda v: bool(SAFE_PATH.match(v)) and v.rstrip("/") not in ("", "/")),
        compose_project=_check(data, "compose_project", str,
                               "a compose project name (lowercase letters, digits, _ or -)",
                               _matches(PROJECT_NAME)),
        docker_source=_check(data, "docker_source", str, f"one of {', '.join(DOCKER_SOURCES)}",
                             lambda v: v in DOCKER_SOURCES),
        docker_apt_url=_check(data, "docker_apt_url", str, "an http(s):// URL",
                              lambda v: re.match(r"^https?://[^\s'\"]+$", v) is not None),
        docker_compose_distro_package=_optional_package(data),
        docker_log_max_size=_check(data, "docker_log_max_size", str, "a size like \"10m\"",
                                   _matches(LOG_SIZE)),
        docker_log_max_file=_check(data, "docker_log_max_file", int, "a whole number >= 1",
                                   lambda v: v >= 1),
        docker_live_restore=_check(data, "docker_live_restore", bool, "True or False"),
        mysql_image=_check(data, "mysql_image", str, *image),
        node_image=_check(data, "node_image", str, *image),
        nginx_image=_check(data, "nginx_image", str, *image),
        maintainer_base_image=_check(data, "maintainer_base_image", str, *image),
        http_port=_port(data, "http_port"),
        maintainer_ssh_port=_port(data, "maintainer_ssh_port"),
        db_dev_port=_port(data, "db_dev_port"),
        api_port=_port(data, "api_port"),
        server_name=_check(data, "server_name", str, "nginx server names separated by spaces",
                           _matches(SERVER_NAME)),
        db_production_name=_check(data, "db_production_name", str,
                                  "a database name (letters, digits, _)", _matches(DB_NAME)),
        db_dev_name=_check(data, "db_dev_name", str, "a database name (letters, digits, _)",
                           _matches(DB_NAME)),
        compose_wait_timeout=_check(data, "compose_wait_timeout", int, "seconds, a whole number >= 10",
                                    lambda v: v >= 10),
        deploy_lock_wait=_check(data, "deploy_lock_wait", int, "seconds, a whole number >= 0",
                                lambda v: v >= 0),
        maintainer_users=_maintainer_users(data),
        local_secrets_dir=_check(data, "local_secrets_dir", str, "a local directory path",
                                       lambda v: v.strip() != ""),
        api_repo=_optional_git_url(data, "api_repo"),
        api_branch=_check(data, "api_branch", str, "a git branch name", _matches(GIT_BRANCH)),
        app_repo=_optional_git_url(data, "app_repo"),
        app_branch=_check(data, "app_branch", str, "a git branch name", _matches(GIT_BRANCH)),
    )
    _check_distinct_ports(settings)
    return settings


def _check_keys(key: str, keys: Any) -> None:
    for index, line in enumerate(keys):
        if not isinstance(line, str) or not SSH_PUBLIC_KEY.match(line.strip()):
            raise SettingsError(
                f"{key}[{index}]: expected an SSH public key line "
                f"(\"ssh-ed25519 AAAA... comment\"), got {str(line)[:40]!r}")


def _maintainer_users(data: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    users = _check(data, "maintainer_users", dict,
                   "a non-empty mapping of login name to a list of SSH public keys",
                   lambda v: len(v) > 0)
    for login, keys in users.items():
        if not isinstance(login, str) or not USER_NAME.match(login) or login == "root":
            raise SettingsError(f"maintainer_users: expected login names like \"sysop\" (not root), "
                                f"got {login!r}")
        if not isinstance(keys, (list, tuple)):
            raise SettingsError(f"maintainer_users[{login!r}]: expected a list of SSH public keys, "
                                f"got {keys!r}")
        _check_keys(f"maintainer_users[{login!r}]", keys)
    return tuple((login, tuple(k.strip() for k in keys)) for login, keys in users.items())


def _optional_git_url(data: Any, key: str) -> str | None:
    if getattr(data, key, None) is None:
        return None
    return _check(data, key, str, "a git URL (https://, ssh://, git://, file:// or user@host:path)",
                  _matches(GIT_URL))


def _optional_package(data: Any) -> str | None:
    value = getattr(data, "docker_compose_distro_package", None)
    if value is None:
        return None
    return _check(data, "docker_compose_distro_package", str, "a Debian package name or None",
                  lambda v: re.match(r"^[a-z0-9][a-z0-9.+-]+$", v) is not None)


def _check_distinct_ports(settings: Settings) -> None:
    seen: dict[int, str] = {}
    for key in PUBLISHED_PORTS:
        port = getattr(settings, key)
        if port in seen:
            raise SettingsError(f"{key}: expected a port not already used by {seen[port]}, got {port}")
        seen[port] = key

