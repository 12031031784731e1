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
import json
import posixpath
import re
from pathlib import Path

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation
from pyinfra.api.exceptions import OperationError

from kono import commands
from kono.cluster import parse_node, spread_services
from kono.host_state import Read, read
from kono.plan import drift
from kono.services import (DB_SECRETS_DIR, ORIGIN_TLS_COPY, ORIGIN_TLS_PATH, ORIGIN_URL, RELEASES_PORT, api_environment, releases_url, SECRETS, SECRETS_DIR, SERVICES, VOLUMES, enabled, reloaded_folders,
                           replacement_note, restarting_secrets, secret, secret_file, secrets_of, service,
                           BINLOG_SERVER_OPTIONS, BINLOG_USER, TIMELINE_TAG,
                           unready)
from kono.monitoring import ALERTMANAGER_PORT, CONFIG_DIR, HEARTBEAT, SMTP_CA_NAME, monitoring_context
from kono.settings import NODE_LABEL_PREFIX, Settings
from kono.ssh_policy import maintainer_sshd_policy

COMPOSE_STOP_SECONDS = 10  # compose's stop_grace_period for a service that sets none

# libyaml's safe loader where PyYAML has it (its wheels do): a tenth of the pure-Python one's time.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
FILES = REPO / "files"
# files/<folder> -> <project_dir>/<folder>: what services mount (their inputs), and the production
# database's first-start scripts.
FIRST_START_FOLDERS = ("db/production",)
# The folder of the provided certificate and key (kono/tls.py), mounted whole into nginx.
TLS_DIR = posixpath.dirname(secret("tls/certificate").path)


def _digest(files: dict[str, str]) -> str:
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return sha.hexdigest()[:16]


@functools.lru_cache(maxsize=None)  # one per run: it compiles each template once, not once per host
def _templates(directory: Path) -> Environment:
    return Environment(loader=FileSystemLoader(directory), undefined=StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def _render(template: str, **context) -> str:
    return _templates(TEMPLATES).get_template(template).render(**context)


def _static(folder: str) -> dict[str, str]:
    return {f"{folder}/{p.name}": p.read_text() for p in sorted((FILES / folder).iterdir()) if p.is_file()}


def _in_folders(files: dict[str, str], folders: tuple[str, ...]) -> dict[str, str]:
    """The files under any of the folders."""
    return {path: content for path, content in files.items()
            if any(path.startswith(folder + "/") for folder in folders)}


def service_secret_paths() -> dict[str, list[str]]:
    """{service: [the secret files whose change restarts it]}, for the .env of secret digests."""
    return {s.name: [secret.path for secret in restarting_secrets(s.name)] for s in SERVICES}


def tls_source(settings: Settings) -> str | None:
    """What nginx mounts at /etc/nginx/tls: the volume acme installs certificates in, the folder of
    the provided ones, or nothing without HTTPS."""
    return {"acme": "certificates", "provided": f"./{TLS_DIR}"}.get(settings.https)


def tls_check_mounts(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The same, as (host side, target) for the throwaway nginx that checks a configuration before
    it goes live: a folder ("./...") or the volume's full name; on a cluster's edge, the copy its
    nginx keeps."""
    source = "edge_tls" if settings.tls_from_origin else tls_source(settings)
    if source is None:
        return ()
    return ((source if source.startswith("./") else f"{settings.compose_project}_{source}", "/etc/nginx/tls"),)


def compose_secrets(settings: Settings) -> list:
    """The secrets compose.yaml declares (a swarm secret each on a cluster): those these settings
    enable, but the TLS files, which nginx mounts as a folder."""
    return [s for s in enabled(SECRETS, settings) if s.handed_by_compose]


def compose_file(settings: Settings, files: dict[str, str]) -> str:
    """compose.yaml: each service's own block from templates/services/, and from the tables its
    secrets, its labels, and the top-level secrets and volumes (those these settings enable)."""
    services = enabled(SERVICES, settings)
    tls_folder = tls_source(settings)
    monitoring = monitoring_context(settings, tls_folder)  # once, not per service
    blocks = {
        s.name: _render(f"services/{s.name}.yaml.j2", s=settings, tls_source=tls_folder,
                        api_environment=api_environment(settings.api_port, releases_url(settings), settings.releases_kept),
                        releases_port=RELEASES_PORT, script=s.script,
                        tls_origin=ORIGIN_URL + ORIGIN_TLS_PATH, origin_tls_copy=ORIGIN_TLS_COPY,
                        script_dir=posixpath.dirname(s.script) if s.script else None,
                        sshd_policy=maintainer_sshd_policy(), binlog_options=BINLOG_SERVER_OPTIONS,
                        binlog_user=BINLOG_USER, timeline_tag=TIMELINE_TAG,
                        secret_file=functools.partial(secret_file, service_name=s.name),
                        monitoring=monitoring, service_names=" ".join(x.name for x in services)).rstrip("\n")
        for s in services
    }
    # A label per service with the digest of the files it mounts: compose recreates a service when
    # its configuration changes, and a bind-mounted file's content is not part of that otherwise.
    inputs = {s.name: _digest(_in_folders(files, s.inputs)) for s in services}
    return _render(
        "compose.yaml.j2", s=settings, services=services, blocks=blocks, inputs=inputs,
        service_secrets={s.name: [secret.compose_name for secret in secrets_of(s.name)
                                  if secret in enabled(SECRETS, settings)] for s in services},
        images={s.name: getattr(settings, s.image) for s in services if s.image},
        restarting={s.name: bool(restarting_secrets(s.name)) for s in services},
        secrets_env_names={s.name: commands.env_name(s.name) for s in services},
        secrets=compose_secrets(settings),
        volumes=[v.name for v in enabled(VOLUMES, settings)],
        db_entrypoint=commands.db_entrypoint(SECRETS_DIR, DB_SECRETS_DIR), memory_limits=dict(settings.memory_limits),
    )


STACK_FILE = "stack.yaml"  # what `docker stack deploy` reads, beside compose.yaml (relative binds resolve there)
# How a swarm service is replaced: a start-first service's new task is healthy before the old one stops,
# else the update rolls back; others stop first (nginx's host-mode ports cannot be held twice). A new
# task is watched for 5 s once running (Docker's default): `docker stack deploy --detach=false` waits
# that long for every service, changed or not, one after the other. A start-first service's tasks are
# all replaced at once (parallelism 0): the scheduler then spreads the new ones over the nodes; one at
# a time, each new task ties between the node of the old one it replaces and the next, and the ties
# left both api replicas on one node (seen after a rotation).
STACK_UPDATE = {"start-first": {"order": "start-first", "parallelism": 0, "failure_action": "rollback", "monitor": "5s"},
                "recreate": {"order": "stop-first", "failure_action": "rollback", "monitor": "5s"}}


def stack_file(settings: Settings, compose_text: str) -> str:
    """stack.yaml, for ``docker stack deploy``: the rendered compose file with what a swarm needs
    and reads instead, derived from the tables. Where each service runs and how many copies
    (``Service.runs_on``, ``replicas``), found by DNS round-robin (no IPVS on every kernel: no
    virtual IPs, no routing mesh: ports published on the node that runs the task); a swarm secret
    per secret version (Swarm secrets cannot change: a new value is a new name, and the services
    that use it roll); the overlay network encrypted (IPsec) with swarm_overlay_encryption; tmpfs and
    memory limits in the swarm's own syntax; images built on the db
    node named; what a swarm ignores (build, restart, security_opt: the daemon's default instead,
    kono/docker_engine.py) left out. A port compose binds to loopback alone (db_dev's) is not
    published: a swarm cannot bind one address."""
    compose = yaml.load(compose_text, Loader=SAFE_LOADER)
    compose.pop("name", None)
    for name, block in compose["services"].items():
        entry = service(name)
        block.pop("restart", None)
        block.pop("security_opt", None)
        if block.pop("build", None) is not None:
            block["image"] = f"{settings.compose_project}-{name}"  # compose's own name for what it builds
        mounts = [{"type": "tmpfs", "target": path, **({"tmpfs": {"mode": int(options[len("mode="):], 8)}}
                                                          if options.startswith("mode=") else {})}
                  for path, _, options in (t.partition(":") for t in block.pop("tmpfs", []))]
        if mounts:
            block["volumes"] = [*block.get("volumes", []), *mounts]
        ports = [port.split(":") for port in block.pop("ports", [])]
        published = [{"target": int(inside), "published": int(outside), "protocol": "tcp", "mode": "host"}
                     for outside, inside in (p for p in ports if len(p) == 2)]
        if published:
            block["ports"] = published
        if "secrets" in block:
            block["secrets"] = [{"source": name_, "mode": 0o400} for name_ in block["secrets"]]
        # A swarm has no network_mode (the metrics service's "none"): it joins the stack's network,
        # where it listens on nothing.
        block.pop("network_mode", None)
        placement = {"placement": {"constraints": [f"node.labels.{NODE_LABEL_PREFIX}{entry.runs_on} == true"]}} if entry.runs_on else {}
        deploy = {"mode": "global"} if entry.replicas == "global" else \
            {"mode": "replicated", "replicas": getattr(settings, entry.replicas) if entry.replicas else 1}
        deploy.update({"endpoint_mode": "dnsrr", **placement,
                       "update_config": STACK_UPDATE[entry.rollout], "rollback_config": STACK_UPDATE[entry.rollout]})
        if "mem_limit" in block:
            deploy["resources"] = {"limits": {"memory": block.pop("mem_limit")}}
        block["deploy"] = deploy
        if entry.networks != ("default",):
            block["networks"] = list(entry.networks)
    for name, entry in compose.get("secrets", {}).items():
        entry["name"] = commands.secret_version_name(settings.compose_project, name)
    encrypted = settings.swarm_overlay_encryption
    compose["networks"] = {network: {"name": name, "driver": "overlay",
                                     **({"driver_opts": {"encrypted": ""}} if encrypted else {})}
                           for network, name in overlay_networks(settings).items()}
    for extension in [key for key in compose if key.startswith("x-")]:  # merged where used already
        del compose[extension]
    return ("# Rendered by kono-infra from compose.yaml and the tables in kono/services.py (kono/stack.py,\n"
            "# stack_file), for `docker stack deploy`: edit those, not this file.\n"
            + yaml.dump(compose, Dumper=_PlainDumper, sort_keys=False, width=120))


def overlay_networks(settings: Settings) -> dict[str, str]:
    """{network as the tables name it: its overlay network's name} for the stack's services."""
    wanted = dict.fromkeys(network for s in enabled(SERVICES, settings) for network in s.networks)
    return {network: commands.overlay_network(settings.compose_project, settings.swarm_overlay_encryption, network)
            for network in wanted}


class _PlainDumper(yaml.SafeDumper):
    """Each value written out where it is used: no YAML anchors for what the compose file shared."""

    def ignore_aliases(self, data) -> bool:
        return True


@functools.lru_cache(maxsize=None)  # hosts with the same settings share one rendering per run
def project_files(settings: Settings) -> dict[str, str]:
    """Every file of the compose project: {path relative to project_dir: content}. Holds no secret."""
    nginx = ["default.conf", "site.locations", *(["https.server"] if settings.https_on else [])]
    files = {f"nginx/{name}": _render(f"nginx/{name}.j2", s=settings, resolver_valid=commands.RESOLVER_VALID_SECONDS,
                                      origin=ORIGIN_URL)
             for name in nginx}
    if settings.swarm:  # the origin service's site, beside its entrypoint (files/origin/)
        files["origin/origin.conf"] = _render("nginx/origin.conf.j2", tls_path=ORIGIN_TLS_PATH, tls_copy=ORIGIN_TLS_COPY)
    for folder in (*FIRST_START_FOLDERS, *(f for s in enabled(SERVICES, settings) for f in s.inputs)):
        files.update(_static(folder))
    if settings.monitoring:  # beside files/monitoring/alerts.yml, which it names
        files["monitoring/prometheus.yml"] = _render(
            "monitoring/prometheus.yml.j2", m=monitoring_context(settings, tls_source(settings)), name=settings.host_name,
            alertmanager=f"alertmanager:{ALERTMANAGER_PORT}" if settings.alerts_on else None)
    if settings.alerts_on:
        # Where Alertmanager reads each alert secret that is asked for (the template names them).
        secret_files = {e.name: secret_file(e.key, service_name="alertmanager")
                        for e in enabled(SECRETS, settings) if e.origin == "alerts"}
        if settings.email_on and settings.alert_smtp_ca_bundle:
            files[f"monitoring/{SMTP_CA_NAME}"] = Path(settings.alert_smtp_ca_bundle).read_text()
        files["monitoring/alertmanager.yml"] = _render(
            "monitoring/alertmanager.yml.j2", s=settings, heartbeat_severity=HEARTBEAT, secret_files=secret_files,
            smtp_ca_file=f"{CONFIG_DIR}/{SMTP_CA_NAME}" if f"monitoring/{SMTP_CA_NAME}" in files else None)
    if settings.acme_on and settings.acme_ca_bundle:
        files["acme/ca-bundle.pem"] = Path(settings.acme_ca_bundle).read_text()
    files.update({f"maintainer/keys/{login}": "".join(key + "\n" for key in public_keys)
                  for login, public_keys in settings.maintainer_users})
    compose = compose_file(settings, files)
    stack = {STACK_FILE: stack_file(settings, compose)} if settings.swarm else {}
    return {commands.COMPOSE_FILE: compose, **stack, **files}


@functools.lru_cache(maxsize=None)
def service_records(settings: Settings) -> dict[str, str]:
    """{service: "<config digest> <image> <volumes digest>"}: what a container of it is made from
    (its compose definition as rendered, so the digests of the files it mounts are in it too)."""
    compose = yaml.load(project_files(settings)[commands.COMPOSE_FILE], Loader=SAFE_LOADER)
    records = {}
    for name, block in compose["services"].items():
        rest = {key: value for key, value in block.items() if key != "volumes"}
        records[name] = " ".join([_digest({"": json.dumps(rest, sort_keys=True)}),
                                  str(block.get("image", "built")),
                                  _digest({"": json.dumps(block.get("volumes", []))})])
    return records


def replacements(wanted: dict[str, str], recorded: dict[str, str],
                 secrets_now: dict[str, str]) -> dict[str, list[str]]:
    """{service: why it needs a new container}, for each service brought up before whose image,
    configuration, volumes or secrets differ from what it was brought up with. A service without a
    record (new, or brought up by an older kono-infra) is left to `compose up` alone."""
    changes: dict[str, list[str]] = {}
    for name, record in wanted.items():
        if len(recorded.get(name, "").split()) != 4:
            continue
        config, image, volumes = record.split()
        old_config, old_image, old_volumes, old_secrets = recorded[name].split()
        reasons = []
        if image != old_image:
            reasons.append(f"image {old_image} -> {image}")
        elif config != old_config:
            reasons.append("configuration")
        if volumes != old_volumes:
            reasons.append("volumes")
        if secrets_now.get(name, "-") != old_secrets:
            reasons.append("secret")
        if reasons:
            changes[name] = reasons
    return changes


class FileDigests(FactBase):
    """sha256 of the given files under a directory: {relative path: digest or None when missing}."""

    @staticmethod
    def default() -> dict:
        return {}

    def command(self, directory: str, paths: list[str]) -> str:
        return commands.file_digests(directory, paths)

    def process(self, output: list[str]) -> dict[str, str | None]:
        digests: dict[str, str | None] = {}
        for line in output:
            digest, path = line.split(maxsplit=1)
            digests[path] = None if digest == "-" else digest
        return digests


def tree_paths(files: dict[str, str], reloaded: tuple[str, ...]) -> list[str]:
    """The paths ``project_tree`` compares: every project file, and each reloaded folder's marker."""
    return sorted(files) + [commands.reloaded_marker(folder) for folder in reloaded]


def folder_markers(files: dict[str, str], folders) -> dict[str, str]:
    """{configuration folder applied by reload: the digest of its declared files}."""
    return {folder: _digest(_in_folders(files, (folder,))) for folder in folders}


def keeps_its_container(name: str, state: dict, records: dict[str, str]) -> bool:
    """Whether a service's running container stays through this deploy's bring-up (``compose_up``
    replaces it when it is not running and healthy, or when what it is made from changed)."""
    return not unready(state["services"], (service(name),)) and \
        name not in replacements(records, state["recorded"], state["secrets"])


@operation()
def project_tree(directory: str, files: dict[str, str], reload_images: dict[str, str], project: str,
                 records: dict[str, str], check_mounts: tuple[tuple[str, str], ...] = (), swarm: bool = False):
    """
    Upload each file whose content differs from the host's copy (one fact for all of them). A
    configuration folder applied by reload is changed in a staged copy and checked first, before
    anything else changes; then, if its service keeps its running container, put in place and
    reloaded; else left staged for ``compose_up`` to put in place right before the new container is
    created, so the live folder always holds what the container that reads it has accepted. The
    compose file is checked by compose before it replaces the live one.

    + directory: the project directory, which must exist
    + files: {relative path: content}
    + reload_images: {folder applied by reload: the image that checks it}
    + project: the compose project's name
    + records: {service: what it is to be brought up with} (``service_records``)
    + check_mounts: (source, target) the new container mounts besides the folder, when they exist (TLS files)
    + swarm: the stack runs on a swarm (a folder applied by reload goes live at once)

    **Example:**

    .. code:: python

        project_tree(name="Compose project", directory="/srv/kono", files={"compose.yaml": "..."},
                     reload_images={"nginx": "nginx:1.27"}, project="kono", records={...})
    """
    # Per reloaded folder, the marker its last reload wrote: stale or missing means apply it again.
    markers = folder_markers(files, reload_images)
    on_host = read(FileDigests, directory=directory, paths=tree_paths(files, tuple(reload_images)))
    made: set[str] = set()
    to_reload: dict[str, list[tuple[str, str]]] = {
        folder: [] for folder, digest in markers.items()
        if on_host.get(commands.reloaded_marker(folder)) != hashlib.sha256(f"{digest}\n".encode()).hexdigest()}
    changed = [(path, content) for path, content in sorted(files.items())
               if on_host.get(path) != hashlib.sha256(content.encode()).hexdigest()]
    others: list[tuple[str, str]] = []  # the changed files outside the reloaded folders
    for path, content in changed:
        drift(f"{path} {'is missing' if on_host.get(path) is None else 'differs from what is declared'}")
        folder = next((f for f in reload_images if path.startswith(f + "/")), None)
        if folder:
            to_reload.setdefault(folder, []).append((path, content))
        else:
            others.append((path, content))
    # Said before the first command (a plan runs an operation only up to its first command).
    state = read(StackState, directory=directory, project=project, swarm=swarm) if to_reload else {}
    by_reload = {}
    for folder in to_reload:
        owner = next(s.name for s in SERVICES if s.nginx_confd == folder)
        # On a swarm, no bring-up runs here to put it in place for a new container: it goes live now,
        # and nginx reloads in each container of its service that runs here (none: the next one reads it).
        by_reload[folder] = owner if swarm or keeps_its_container(owner, state, records) else None
        logger.warning(f"{host.print_prefix}{folder}/ changes: checked, then applied by a reload (no downtime)"
                       if by_reload[folder] else
                       f"{host.print_prefix}{folder}/ changes: checked, then applied by {owner}'s new container "
                       "at bring-up (its running one never loads them)")
    # Checked first: a configuration nginx rejects leaves every live file as it was.
    for folder, folder_files in to_reload.items():
        yield commands.stage_folder(directory, folder)
        for path, content in folder_files:
            yield FileUploadCommand(io.BytesIO(content.encode()),
                                    posixpath.join(directory, commands.STAGED_DIR, path))
        yield commands.nginx_check(directory, folder, reload_images[folder], markers[folder], mounts=check_mounts)
    for path, content in others:
        dest = posixpath.join(directory, path)
        parent = posixpath.dirname(dest)
        if parent != directory and parent not in made:
            made.add(parent)
            yield commands.make_dir(parent)
        if path == commands.COMPOSE_FILE:
            # Checked by compose itself before it replaces the live one: a broken template fails the
            # deploy with compose's own message and leaves the project as it was.
            staged = posixpath.join(directory, commands.STAGED_COMPOSE_FILE)
            yield commands.make_dir(posixpath.dirname(staged))
            yield FileUploadCommand(io.BytesIO(content.encode()), staged)
            yield commands.replace_compose_file_if_valid(directory)
            continue
        yield FileUploadCommand(io.BytesIO(content.encode()), dest)
        yield commands.chmod("0644", dest)
    for folder, owner in by_reload.items():
        if owner:
            yield commands.apply_folder(directory, folder, markers[folder], project, service=owner)


# Docker's container status ends with its health (moby daemon/container/health.go, Health.String():
# "health: starting", else the status itself), as in "Up 3 minutes (healthy)".
HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)$")


def parse_services(lines: list[str]) -> dict[str, tuple[str, str]]:
    """{service: (state, health)} from ``commands.services_state()`` output (the Engine API's container
    list); health is "healthy", "unhealthy", "starting", or "" without a healthcheck."""
    services = {}
    for line in lines:
        key, _, rest = line.partition(" ")
        if key != "containers" or not rest.strip():
            continue  # no containers line, or Docker down: no containers
        if rest.strip() == "no-curl":
            raise OperationError("curl is missing on the host; the deploy reads Docker's state with it: "
                                 "run bootstrap.py (it installs curl)")
        try:
            containers = json.loads(rest)
        except ValueError as error:
            raise OperationError(f"the Docker API's container list could not be read: {error}") from None
        for container in containers:
            name = (container.get("Labels") or {}).get("com.docker.compose.service")
            health = HEALTH_IN_STATUS.search(container.get("Status", ""))
            services[name] = (container.get("State", ""), health.group(1).removeprefix("health: ") if health else "")
    return services


# sha256sum's line for a file under the project directory (``commands.project_file_digests``).
FILE_DIGEST_LINE = re.compile(r"^[0-9a-f]{64}  \./")


def digest_of(file_digest_lines: list[str]) -> str:
    """What ``commands.project_digest`` prints, from the sha256sum lines it digests: a digest of them,
    in their order (the state read prints the lines, and the digest is taken here)."""
    return hashlib.sha256("".join(f"{line}\n" for line in file_digest_lines).encode()).hexdigest()


def _listed(lines: list[str], key: str) -> list:
    """The JSON list of the line "<key> <JSON>" (``commands.swarm_services``); [] without one."""
    for line in lines:
        found, _, rest = line.partition(" ")
        if found == key and rest.strip():
            try:
                return json.loads(rest)
            except ValueError as error:
                raise OperationError(f"the Docker API's answer ({key}) could not be read: {error}") from None
    return []


def parse_swarm_services(lines: list[str]) -> dict[str, tuple[int, int]]:
    """{service: (running tasks, desired tasks)} of the stack, from ``commands.swarm_services``'s
    lines (a manager's answer; nothing on any other host). Running: its tasks meant to run that do
    (a task on a dead node is meant to stop once the swarm restarts it elsewhere)."""
    placement = parse_swarm_placement(lines)
    return {_service_name(entry): (sum(placement.get(_service_name(entry), {}).values()),
                                   (entry.get("ServiceStatus") or {}).get("DesiredTasks", 0))
            for entry in _listed(lines, "swarm_services")}


def _service_name(entry: dict) -> str:
    """A stack service's name in the tables, from its entry in the Engine API's /services list."""
    spec = entry.get("Spec") or {}
    return spec.get("Name", "").removeprefix(f"{(spec.get('Labels') or {}).get(commands.STACK_NAMESPACE_LABEL, '')}_")


def parse_swarm_placement(lines: list[str]) -> dict[str, dict[str, int]]:
    """{service: {node id: its running tasks there}} of the stack, from ``commands.swarm_services``'s lines."""
    names = {entry.get("ID", ""): _service_name(entry) for entry in _listed(lines, "swarm_services")}
    placement: dict[str, dict[str, int]] = {}
    for task in _listed(lines, "swarm_tasks"):
        if task.get("ServiceID", "") in names and (task.get("Status") or {}).get("State") == "running":
            on_node = placement.setdefault(names[task["ServiceID"]], {})
            on_node[task.get("NodeID", "")] = on_node.get(task.get("NodeID", ""), 0) + 1
    return placement


def unevenly_spread(placement: dict[str, dict[str, int]], nodes: list[dict],
                    spread: dict[str, tuple[str, int]]) -> dict[str, dict[str, int]]:
    """{service: {node: its running copies there}} of the services of ``spread`` ({service: (the node
    label key its placement requires, its copies)}) that one ready, active node with that label runs
    two more copies of than another (``placement``: ``parse_swarm_placement``; ``nodes``:
    ``cluster.parse_node``'s)."""
    uneven = {}
    for name, (label, _) in spread.items():
        counts = dict(sorted((node["hostname"] or node["id"], placement.get(name, {}).get(node["id"], 0)) for node in nodes
                             if node["labels"].get(label) == "true"
                             and (node["state"], node["availability"]) == ("ready", "active")))
        if counts and max(counts.values()) - min(counts.values()) > 1:
            uneven[name] = counts
    return uneven


def parse_swarm_networks(lines: list[str]) -> list[str]:
    """The names of the stack's networks, from ``commands.swarm_services``'s lines."""
    return sorted(entry.get("Name", "") for entry in _listed(lines, "swarm_networks"))


class StackState(FactBase):
    """The project's digest now and as last brought up, what each service was last brought up with
    and its secrets' digest now, and each container's state and health; on a swarm, the stack's
    services' running and desired tasks and its networks too."""

    @staticmethod
    def default() -> dict:
        return {"digest": None, "applied": None, "services": {}, "recorded": {}, "secrets": {}, "swarm_services": {},
                "swarm_networks": [], "swarm_placement": {}, "swarm_nodes": []}

    def command(self, directory: str, project: str, swarm: bool = False) -> str:
        return commands.stack_state(directory, project, reloaded_folders(), service_secret_paths(), swarm)

    def process(self, output: list[str]) -> dict:
        state = self.default()
        files: list[str] | None = None  # the project's file lines, once the read got that far
        for line in output:
            key, _, rest = line.partition(" ")
            if line == "digest":
                files = []
            elif files is not None and FILE_DIGEST_LINE.match(line):
                files.append(line)
            elif key == "applied":
                state[key] = rest.strip() or None
            elif key == "recorded" and " " in rest:
                name, value = rest.split(" ", 1)
                state[key][name] = value.strip()
            elif key == "secrets" and " " in rest:
                name, value = rest.split(" ", 1)
                state[key][name] = value[:16]  # sha256sum's output, cut as .env's digest is
        if files is not None:
            state["digest"] = digest_of(files)
        state["services"] = parse_services(output)
        state["swarm_services"] = parse_swarm_services(output)
        state["swarm_networks"] = parse_swarm_networks(output)
        state["swarm_placement"] = parse_swarm_placement(output)
        state["swarm_nodes"] = [parse_node(node) for node in _listed(output, "swarm_nodes")]
        return state


@operation()
def compose_up(directory: str, project: str, wait_timeout: int, records: dict[str, str],
               markers: dict[str, str] | None = None):
    """
    ``docker compose up`` only when the project changed since the last successful one, or a service
    is not running and healthy. ``docker compose config`` gates it: a broken project never reaches
    the running containers. While planning, it says which services get a new container and why;
    a running start-first service (the api) is replaced beside the old one, without downtime.

    + directory: the project directory
    + project: the compose project's name (compose.yaml holds it)
    + wait_timeout: seconds to wait for every service to become healthy
    + records: {service: what it is to be brought up with} (``service_records``)
    + markers: {configuration folder: its declared digest}: one ``project_tree`` checked and left
      staged for a new container is put in place right before `up`

    **Example:**

    .. code:: python

        compose_up(name="Bring the stack up", directory="/srv/kono", project="kono", wait_timeout=300,
                   records={...}, markers={"nginx": "0123abcd"})
    """
    state = read(StackState, directory=directory, project=project, swarm=False)
    wanted = tuple(service(name) for name in records)  # the services these settings enable
    not_ready = unready(state["services"], wanted)
    # From what each service was brought up with, not from the project's files: a plan (--dry) has
    # not pushed them, and must still say what will restart.
    replaced = replacements(records, state["recorded"], state["secrets"])
    if state["digest"] and state["digest"] == state["applied"] and not not_ready and not replaced:
        host.noop("the stack is up to date, running and healthy")
        return
    for name in not_ready:
        status, health = state["services"].get(name, ("missing", ""))
        drift(f"service {name} is not running and healthy ({status}{', ' + health if health else ''})")
    if state["digest"] != state["applied"]:
        drift("the project changed since the stack was last brought up")
    rollouts = tuple(name for name in replaced if service(name).rollout == "start-first"
                     and name not in not_ready)
    # Said in the plan, and again right before it happens (with -y pyinfra plans nothing ahead).
    for name, reasons in replaced.items():
        logger.warning(f"{host.print_prefix}{replacement_note(name, reasons, name in rollouts)}")
    others = tuple(s.name for s in wanted if s.name not in rollouts)
    yield commands.compose_up(directory, wait_timeout, service_secret_paths(), reloaded_folders(),
                              {name: service(name).stop_seconds or COMPOSE_STOP_SECONDS for name in rollouts}, others, records,
                              markers=markers)


def reload_images(settings: Settings) -> dict[str, str]:
    """{folder applied by reload: the image that checks it}."""
    return {s.nginx_confd: getattr(settings, s.image) for s in SERVICES if s.nginx_confd}


def stack_reads(settings: Settings) -> list[Read]:
    """What ``push_project`` and ``bring_up`` read from the host (kono/host_state.py reads them in one
    command)."""
    return [(FileDigests, {"directory": settings.project_dir,
                           "paths": tree_paths(project_files(settings), tuple(reload_images(settings)))}),
            (StackState, {"directory": settings.project_dir, "project": settings.compose_project,
                          "swarm": settings.swarm})]


@deploy("Compose project")
def push_project(settings: Settings) -> None:
    project_tree(name="Compose project files (rendered from templates/ and files/)",
                 directory=settings.project_dir, files=project_files(settings),
                 reload_images=reload_images(settings), project=settings.compose_project,
                 records=service_records(settings), check_mounts=tls_check_mounts(settings), swarm=settings.swarm)


@deploy("Stack up")
def bring_up(settings: Settings) -> None:
    """The bring-up seam: compose on the one host, or `docker stack deploy` from the swarm's db node."""
    if settings.swarm:
        stack_up(name="Deploy the stack to the swarm if it changed or has not converged",
                 directory=settings.project_dir, project=settings.compose_project,
                 wait_timeout=settings.compose_wait_timeout,
                 services=tuple(s.name for s in enabled(SERVICES, settings)),
                 secret_versions={s.compose_name: s.path for s in compose_secrets(settings)},
                 networks=tuple(overlay_networks(settings).values()), spread=spread_services(settings))
        return
    compose_up(name="Validate the project and bring the stack up if it changed or is not healthy",
               directory=settings.project_dir, project=settings.compose_project,
               wait_timeout=settings.compose_wait_timeout, records=service_records(settings),
               markers=folder_markers(project_files(settings), reload_images(settings)))


def not_converged(swarm_services: dict[str, tuple[int, int]], wanted: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """{service: (running, desired)} of those of the stack's services that are missing from the swarm,
    have no task to run, or run fewer than they should."""
    found = {name: swarm_services.get(name, (0, 0)) for name in wanted}
    return {name: (running, desired) for name, (running, desired) in found.items() if not desired or running < desired}


@operation()
def stack_up(directory: str, project: str, wait_timeout: int, services: tuple[str, ...],
             secret_versions: dict[str, str], networks: tuple[str, ...],
             spread: dict[str, tuple[str, int]] | None = None):
    """
    ``docker stack deploy`` (``commands.stack_up``) from this manager only when the project changed
    since the last successful one, or a service of the stack has not converged (fewer tasks running
    than it should). A compose project of the same name on this host (a single host turned into a
    cluster's db node) is stopped first, said in the plan: its volumes stay, and the stack's services
    take them over. A service kept spread whose copies crowd one node (the swarm put a copy there
    while the other node was away, and never moves it back) is spread again (``commands.respread``),
    said in the plan.

    + directory: the project directory (stack.yaml and compose.yaml)
    + project: the stack's name (the compose project's: the volumes are named after it)
    + wait_timeout: seconds to wait for every service to converge
    + services: the stack's services, as these settings enable them
    + secret_versions: {secret's compose name: its file}, each made a swarm secret per version
    + networks: the stack's overlay networks (``overlay_networks``); a stack on others moves to
      them, every service restarting, said in the plan
    + spread: ``cluster.spread_services``

    **Example:**

    .. code:: python

        stack_up(name="Stack on the swarm", directory="/srv/kono", project="kono", wait_timeout=300,
                 services=("db_production", "api", "nginx"), secret_versions={"production_api_key": "config/production/api_key"},
                 networks=("kono_default", "kono_edge"), spread={"api": ("kono.app", 2)})
    """
    spread = spread or {}
    state = read(StackState, directory=directory, project=project, swarm=True)
    lagging = not_converged(state["swarm_services"], services)
    uneven = unevenly_spread(state["swarm_placement"], state["swarm_nodes"], spread)
    for name, counts in uneven.items():
        drift(f"service {name} runs its copies unevenly: " + ", ".join(f"{n} on {node}" for node, n in counts.items()))
        logger.warning(f"{host.print_prefix}the {name}'s copies crowd a node: one more starts on the emptiest node, "
                       "then one on the fullest stops (never fewer copies running than declared)")
    # A spread interrupted between its two steps leaves one copy too many; the stack's file says the same still.
    for name, (_, desired) in state["swarm_services"].items():
        if name in spread and desired and desired != spread[name][1]:
            drift(f"service {name} is scaled to {desired} copies, not {spread[name][1]}")
            uneven.setdefault(name, {})
    up_to_date = bool(state["digest"]) and state["digest"] == state["applied"] and not lagging
    if up_to_date and not uneven:
        host.noop("the stack is up to date and every service runs its tasks, spread as declared")
        return
    if not up_to_date:
        for name, (running, desired) in lagging.items():
            drift(f"service {name} runs {running} of {desired} tasks" if desired else f"service {name} is not on the swarm")
        if state["digest"] != state["applied"]:
            drift("the project changed since the stack was last deployed")
        moved = [name for name in state["swarm_networks"] if name not in networks]
        if moved and state["swarm_services"]:
            logger.warning(f"{host.print_prefix}the stack moves from the network {', '.join(moved)} to "
                           f"{', '.join(n for n in networks if n not in state['swarm_networks'])} "
                           "(swarm_overlay_encryption): every service restarts on it, the api start-first, the others "
                           "stopping first")
        if state["services"]:  # the compose project's containers (commands.services_state)
            logger.warning(f"{host.print_prefix}the compose project {project} stops here, then the swarm starts its "
                           "services: everything is down meanwhile (its volumes stay, and the stack takes them over)")
        yield commands.stack_up(directory, project, STACK_FILE, wait_timeout, service_secret_paths(), secret_versions,
                                networks, reloaded_folders())
    if uneven:
        yield commands.respread(project, {name: spread[name] for name in uneven}, wait_timeout)
