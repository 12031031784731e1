"""The compose project: rendered from templates/ and files/, pushed, validated, brought up when needed.

Bring-up is decided on the host, from one fact: a digest of every file of the project (secrets
included, as digests only) against the digest recorded after the last successful ``up``, and the
state of every service. So an interrupted run is finished by the next one, and a stopped or
unhealthy service is brought back, while an unchanged, healthy stack costs one read-only command.

Example::

    push_project(settings)
    bring_up(settings)
"""

from __future__ import annotations

import functools
import hashlib
import io
import posixpath
import shlex
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation

from kono.drift import drift
from kono.secrets import PASSWORD_HASHES, compose_name, secret_path
from kono.settings import Settings

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
FILES = REPO / "files"
SERVICES = ("db_production", "db_dev", "api", "maintainer", "nginx")
# Each service gets only the secrets it needs: (env, name) under config/.
SERVICE_SECRETS = {
    "db_production": [("production", "db_root_password"), ("production", "db_api_password"),
                      ("production", "db_unauthorized_api_password")],
    "db_dev": [("dev", "db_root_password"), ("dev", "db_dev_password")],
    "api": [("production", "db_api_password"), ("production", "api_key")],
    "maintainer": [PASSWORD_HASHES],
}
COMPOSE_FILE = "compose.yaml"
STAGED_COMPOSE_FILE = ".kono/compose.yaml.new"
APPLIED = ".kono/applied"  # digest of the project as of the last successful `up`
LAST_UP_SECONDS = ".kono/last-up-seconds"  # how long that `up` took (bench/)

# Digest of all project files but our own bookkeeping, in a stable order. Runs on the host.
PROJECT_DIGEST = (
    "find . \\( -path ./.kono -o -path ./.env \\) -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum "
    "| sha256sum | cut -c1-64"
)


def _digest(files: dict[str, str]) -> str:
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return sha.hexdigest()[:16]


def _render(template: str, **context) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(template).render(**context)


def _static(folder: str) -> dict[str, str]:
    return {f"{folder}/{p.name}": p.read_text() for p in sorted((FILES / folder).iterdir()) if p.is_file()}


@functools.lru_cache(maxsize=None)  # hosts with the same settings share one rendering per run
def project_files(settings: Settings) -> dict[str, str]:
    """Every file of the compose project: {path relative to project_dir: content}. Holds no secret."""
    nginx = {"nginx/default.conf": _render("nginx.conf.j2", s=settings)}
    api = _static("api")
    keys = {f"maintainer/keys/{login}": "".join(key + "\n" for key in public_keys)
            for login, public_keys in settings.maintainer_users}
    # A label per service with the digest of the files it mounts: compose recreates a service when
    # its configuration changes, and a bind-mounted file's content is not part of that otherwise.
    inputs = {"api": _digest(api), "nginx": _digest(nginx), "maintainer": _digest(keys)}
    compose = _render(
        "compose.yaml.j2", s=settings, inputs=inputs,
        service_secrets={service: [compose_name(*secret) for secret in secrets]
                         for service, secrets in SERVICE_SECRETS.items()},
        secret_files={compose_name(*secret): secret_path(*secret)
                      for secrets in SERVICE_SECRETS.values() for secret in secrets},
    )
    return {COMPOSE_FILE: compose, **nginx, **api, **keys, **_static("maintainer"),
            **_static("db/production")}


def secrets_env() -> str:
    """Shell that writes .env: per service, a digest of its secret files, which compose puts in a
    label so that a changed secret recreates exactly the services that use it."""
    lines = []
    for service, secrets in SERVICE_SECRETS.items():
        paths = " ".join(shlex.quote(secret_path(*secret)) for secret in secrets)
        lines.append(f"echo KONO_SECRETS_{service.upper()}=$(cat {paths} | sha256sum | cut -c1-16)")
    return "{ " + "; ".join(lines) + "; } > .env"


class FileDigests(FactBase):
    """sha256 of the given files under a directory: {relative path: digest or None when missing}."""

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, directory: str, paths: list[str]) -> str:
        quoted = " ".join(shlex.quote(p) for p in paths)
        return (f"cd {shlex.quote(directory)} && for f in {quoted}; do "
                "if [ -f \"$f\" ]; then sha256sum \"$f\"; else echo \"- $f\"; fi; done")

    def process(self, output: list[str]) -> dict[str, str | None]:
        digests: dict[str, str | None] = {}
        for line in output:
            digest, path = line.split(maxsplit=1)
            digests[path] = None if digest == "-" else digest
        return digests


@operation()
def project_tree(directory: str, files: dict[str, str]):
    """
    Upload each file whose content differs from the host's copy (one fact for all of them).

    + directory: the project directory, which must exist
    + files: {relative path: content}

    **Example:**

    .. code:: python

        project_tree(name="Compose project", directory="/srv/kono", files={"compose.yaml": "..."})
    """
    on_host = host.get_fact(FileDigests, directory=directory, paths=sorted(files))
    made: set[str] = set()
    for path, content in sorted(files.items()):
        if on_host.get(path) == hashlib.sha256(content.encode()).hexdigest():
            continue
        drift(f"{path} {'is missing' if on_host.get(path) is None else 'differs from what is declared'}")
        dest = posixpath.join(directory, path)
        parent = posixpath.dirname(dest)
        if parent != directory and parent not in made:
            made.add(parent)
            yield f"mkdir -p {shlex.quote(parent)}"
        if path == COMPOSE_FILE:
            # Checked by compose itself before it replaces the live one: a broken template fails the
            # deploy with compose's own message and leaves the project as it was.
            staged = posixpath.join(directory, STAGED_COMPOSE_FILE)
            yield f"mkdir -p {shlex.quote(posixpath.dirname(staged))}"
            yield FileUploadCommand(io.BytesIO(content.encode()), staged)
            yield (f"cd {shlex.quote(directory)} && if docker compose --project-directory . "
                   f"-f {STAGED_COMPOSE_FILE} config --quiet; then chmod 0644 {STAGED_COMPOSE_FILE} "
                   f"&& mv {STAGED_COMPOSE_FILE} {COMPOSE_FILE}; else rm -f {STAGED_COMPOSE_FILE}; exit 1; fi")
            continue
        yield FileUploadCommand(io.BytesIO(content.encode()), dest)
        yield f"chmod 0644 {shlex.quote(dest)}"


class StackState(FactBase):
    """The project's digest now, the digest last brought up, and each service's state and health."""

    @staticmethod
    def default() -> dict:
        return {"digest": None, "applied": None, "services": {}}

    def command(self, directory: str) -> str:
        return (
            f"cd {shlex.quote(directory)} 2>/dev/null || exit 0; "
            f"echo \"digest $({PROJECT_DIGEST})\"; "
            f"echo \"applied $(cat {APPLIED} 2>/dev/null)\"; "
            "docker compose ps --all --format 'service {{.Service}} {{.State}} {{.Health}}' 2>/dev/null || true"
        )

    def process(self, output: list[str]) -> dict:
        state = self.default()
        for line in output:
            key, _, rest = line.partition(" ")
            if key == "service":
                name, status, *health = rest.split()
                state["services"][name] = (status, health[0] if health else "")
            elif key in ("digest", "applied"):
                state[key] = rest.strip() or None
        return state


def _unready(services: dict[str, tuple[str, str]]) -> list[str]:
    return [name for name in SERVICES
            if name not in services or services[name][0] != "running"
            or services[name][1] not in ("", "healthy")]


@operation()
def compose_up(directory: str, wait_timeout: int):
    """
    ``docker compose up`` only when the project changed since the last successful one, or a service
    is not running and healthy. ``docker compose config`` gates it: a broken project never reaches
    the running containers.

    + directory: the project directory (compose.yaml holds the fixed project name)
    + wait_timeout: seconds to wait for every service to become healthy

    **Example:**

    .. code:: python

        compose_up(name="Bring the stack up", directory="/srv/kono", wait_timeout=300)
    """
    state = host.get_fact(StackState, directory=directory)
    unready = _unready(state["services"])
    if state["digest"] and state["digest"] == state["applied"] and not unready:
        host.noop("the stack is up to date, running and healthy")
        return
    for name in unready:
        status, health = state["services"].get(name, ("missing", ""))
        drift(f"service {name} is not running and healthy ({status}{', ' + health if health else ''})")
    if state["digest"] != state["applied"]:
        drift("the project changed since the stack was last brought up")
    yield (
        f"cd {shlex.quote(directory)} && {secrets_env()} && docker compose config --quiet && "
        f"digest=$({PROJECT_DIGEST}) && started=$(date +%s.%N) && "
        f"docker compose up --detach --build --remove-orphans --wait --wait-timeout {int(wait_timeout)} "
        f"&& mkdir -p .kono && echo \"$digest\" > {APPLIED} "
        f"&& awk \"BEGIN {{ print $(date +%s.%N) - $started }}\" > {LAST_UP_SECONDS}"
    )


@deploy("Compose project")
def push_project(settings: Settings) -> None:
    project_tree(name="Compose project files (rendered from templates/ and files/)",
                 directory=settings.project_dir, files=project_files(settings))


@deploy("Stack up")
def bring_up(settings: Settings) -> None:
    compose_up(name="Validate the project and bring the stack up if it changed or is not healthy",
               directory=settings.project_dir, wait_timeout=settings.compose_wait_timeout)
