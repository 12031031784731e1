"""The shell that kono-infra runs on a host, built by small pure functions (like Kamal's commands/).

Operations, facts and the operator tools only call these and yield or run what they return; each
is unit-tested for its exact text and its syntax (tests/unit/test_commands.py), without a host.
No function here takes a secret's value: secrets travel by SFTP or stdin, and commands only name
their files.

Example::

    compose_up("/srv/kono", 300, {"api": ["config/production/api_key"]})
"""

from __future__ import annotations

import json
import posixpath
from shlex import quote

# Our bookkeeping in the project directory (never part of the project's digest).
STATE_DIR = ".kono"
APPLIED = f"{STATE_DIR}/applied"  # digest of the project as of the last successful `up`
LAST_UP_SECONDS = f"{STATE_DIR}/last-up-seconds"  # how long that `up` took (bench/)
SERVICES_RECORD = f"{STATE_DIR}/services"  # what each service was last brought up with
STAGED_COMPOSE_FILE = f"{STATE_DIR}/compose.yaml.new"
COMPOSE_FILE = "compose.yaml"
LOCK = f"{STATE_DIR}/deploy.lock"
OWNER = f"{STATE_DIR}/deploy.owner"
PENDING = f"{STATE_DIR}/deploy.pending"  # the audit record of the run in progress
HOLDER = f"{STATE_DIR}/deploy.holder"  # the process id of the run's lock holder
AUDIT_LOG = f"{STATE_DIR}/audit.log"

STAGED_DIR = f"{STATE_DIR}/staged"  # a configuration folder checked here before it replaces the live one


def project_digest(reloaded: tuple[str, ...] = ()) -> str:
    """Digest of all project files but our own bookkeeping, .env and the folders applied by reload,
    in a stable order: what `compose up` must follow."""
    return f"{project_file_digests(reloaded)} | sha256sum | cut -c1-64"


def project_file_digests(reloaded: tuple[str, ...] = ()) -> str:
    """sha256sum lines of the files ``project_digest`` covers, in its order. The state read prints
    only these (``kono.stack.digest_of``): the digest itself is one sha256 of them, taken locally."""
    skipped = " -o ".join(f"-path {quote('./' + path)}" for path in (STATE_DIR, ".env", *reloaded))
    return f"find . \\( {skipped} \\) -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum"


def in_dir(directory: str, command: str) -> str:
    """``command`` run in ``directory``. Every value a command builder puts in a shell line goes
    through ``quote`` (shlex's), as here: tests/unit/test_commands.py feeds each one a hostile value."""
    return f"cd {quote(directory)} && {command}"


# -- project files -----------------------------------------------------------------------------

def file_digests(directory: str, paths: list[str]) -> str:
    """sha256sum of each file, or "- <path>" for a missing one (one sha256sum for them all)."""
    quoted = " ".join(quote(p) for p in paths)
    return in_dir(directory, f"set --; for f in {quoted}; do "
                             "if [ -f \"$f\" ]; then set -- \"$@\" \"$f\"; else echo \"- $f\"; fi; done; "
                             "[ $# -eq 0 ] || sha256sum -- \"$@\"")


def section_marker(index: int) -> str:
    return f"--- kono read {index}"


def sections(reads: list[str]) -> str:
    """Several reads as one command, each in its own subshell after its marker line (a read that
    fails leaves its section empty, as a fact that fails gives its default)."""
    return "; ".join(f"echo {quote(section_marker(i))}; ( {read} )" for i, read in enumerate(reads)) + "; true"


def file_text(path: str) -> str:
    """A file's text, nothing when it is missing (for a secret: read only by kono/host_state.py)."""
    return f"cat {quote(path)} 2>/dev/null || true"


def make_dir(path: str, mode: str | None = None) -> str:
    return f"mkdir {'-m ' + mode + ' ' if mode else '-p '}{quote(path)}"


def chmod(mode: str, *paths: str) -> str:
    return f"chmod {mode} " + " ".join(quote(p) for p in paths)


def files_state(paths: list[str]) -> str:
    """``stat MODE UID GID PATH`` and ``sha256 DIGEST  PATH`` lines for the paths that are there."""
    listed = " ".join(quote(p) for p in paths)
    return (f"{{ stat -c 'stat %a %u %g %n' {listed}; sha256sum {listed} | sed 's/^/sha256 /'; }} "
            "2>/dev/null; true")


def path_modes(paths: list[str]) -> str:
    """``PATH MODE`` lines for the paths that are there."""
    return "stat -c '%n %a' " + " ".join(quote(p) for p in paths) + " 2>/dev/null || true"


# A file root_files replaces is unpacked beside it under this suffix, then renamed over it.
STAGED_SUFFIX = ".kono-new"


def unpack_as_root(archive: str, paths: list[str], root: str = "/") -> str:
    """Unpack a tar archive of whole files, each at its path plus ``STAGED_SUFFIX``, with the
    archive's owner and mode (root's tar keeps them), making missing folders; then rename each over
    the file it replaces (a crash never leaves one half-written) and delete the archive. On a
    failure, no staged file is left."""
    staged = [posixpath.join(root, path.lstrip("/")) for path in paths]
    moves = " && ".join(f"mv -f {quote(path + STAGED_SUFFIX)} {quote(path)}" for path in staged)
    return (f"tar -x --no-overwrite-dir -f {quote(archive)} -C {quote(root)} && {moves}; unpacked=$?; "
            f"rm -f {quote(archive)}; [ $unpacked -eq 0 ] || rm -f "
            + " ".join(quote(path + STAGED_SUFFIX) for path in staged) + "; exit $unpacked")


def make_private_dirs(paths: list[str]) -> str:
    return "mkdir -p -m 0700 " + " ".join(quote(p) for p in paths)


def replace_compose_file_if_valid(directory: str) -> str:
    """Check the staged compose file with compose itself; only a valid one replaces the live one."""
    return in_dir(directory, f"if docker compose --project-directory . -f {STAGED_COMPOSE_FILE} config --quiet; "
                             f"then chmod 0644 {STAGED_COMPOSE_FILE} && mv {STAGED_COMPOSE_FILE} {COMPOSE_FILE}; "
                             f"else rm -f {STAGED_COMPOSE_FILE}; exit 1; fi")


# -- the stack ---------------------------------------------------------------------------------

# The Docker Engine's socket, as the docker CLI reaches it without DOCKER_HOST.
DOCKER_SOCKET = "/var/run/docker.sock"


def _engine_get(path: str, filters: dict, option: str = "all=1") -> str:
    """curl, on the Docker socket, of a GET that lists by ``filters`` (empty output when Docker is down)."""
    encoded = json.dumps(filters, separators=(",", ":"))
    return (f"curl --silent --fail --unix-socket {DOCKER_SOCKET} --get --data-urlencode {option} "
            f"--data-urlencode {quote('filters=' + encoded)} http://docker/{path} 2>/dev/null")


def services_state(project: str, swarm: bool = False) -> str:
    """One line, "containers <JSON>": the compose project's containers as the Docker Engine API lists
    them (``GET /containers/json``), by the project's labels as ``docker compose ps --all`` lists
    them (one-off ``compose run`` containers left out); "containers" alone when Docker is down, and
    "containers no-curl" on a host without curl (bootstrap installs it).

    curl on the socket reads the same at half the CPU of ``docker ps`` (the CLI's start-up and API
    version negotiation) and at a seventh of ``docker compose ps`` (which loads and interpolates the
    whole project first): a fleet's no-op deploy pays this on every host.

    With ``swarm``, the lines of ``swarm_services`` too.
    """
    compose = _engine_get("containers/json", {"label": [f"com.docker.compose.project={project}",
                                                        "com.docker.compose.oneoff=False"]})
    lines = ("printf 'containers '; if command -v curl >/dev/null; then "
             f"{compose}; else printf no-curl; fi; echo")
    return lines + ("; " + swarm_services(project) if swarm else "")


def swarm_services(project: str) -> str:
    """Four lines: "swarm_services <JSON>", the stack's services with their desired task counts
    (``GET /services?status=true``); "swarm_tasks <JSON>", the swarm's tasks meant to run (``GET
    /tasks``), whose running ones are counted: the service status counts a task that last said
    "running" even on a node that died since; "swarm_networks <JSON>", the stack's networks (``GET
    /networks``); "swarm_nodes <JSON>", the swarm's nodes (``GET /nodes``). Any manager's answer,
    empty on a worker."""
    stack = {"label": [f"{STACK_NAMESPACE_LABEL}={project}"]}
    return (f"printf 'swarm_services '; {_engine_get('services', stack, 'status=true')}; echo; "
            f"printf 'swarm_tasks '; {_engine_get('tasks', {'desired-state': ['running']})}; echo; "
            f"printf 'swarm_networks '; {_engine_get('networks', stack)}; echo; "
            f"printf 'swarm_nodes '; {_engine_get('nodes', {})}; echo")


def respread(project: str, services: dict[str, tuple[str, int]], wait_timeout: int) -> str:
    """Spread each service's tasks evenly over the nodes it may run on ({service: (the node label
    key its placement requires, its copies)}), from a manager. A swarm places a task once and never
    moves it: a replica placed while its twin's other node was not there stays beside it, and one
    node's death then takes both. First wait (``wait_timeout``) until its copies run on ready,
    active nodes with the label (a label just moved: the swarm is still replacing a task); then,
    while one such node runs two more than another, run one copy more (the scheduler puts it on the
    emptiest node, and it is healthy before the next step) and then one fewer (the swarm stops one
    on the fullest node): no moment with fewer copies than declared. At most ``copies`` rounds; it
    ends at the declared copies whatever happens (a run stopped between the two steps left one
    more). A service not on the swarm yet is left alone."""
    steps = []
    for name, (label, copies) in services.items():
        service = quote(f"{project}_{name}")
        running = (f"docker service ps {service} --filter \"node=$id\" --filter desired-state=running "
                   "--format '{{.CurrentState}}' | grep -c '^Running'")
        # The running copies on each ready, active node with the label, fewest first.
        counts = (f"counts=$(for id in $(docker node ls -q --filter node.label={quote(label + '=true')}); do "
                  f"[ \"$(docker node inspect -f '{{{{.Status.State}}}}/{{{{.Spec.Availability}}}}' \"$id\")\" = ready/active ] "
                  f"&& {running}; done | sort -n)")
        total = "$(echo \"$counts\" | awk '{ n += $1 } END { print n + 0 }')"
        fewest, most = "$(echo \"$counts\" | head -n1)", "$(echo \"$counts\" | tail -n1)"
        scale = f"timeout {int(wait_timeout)} docker service scale --detach=false {service}"
        steps.append(
            f"if docker service inspect {service} >/dev/null 2>&1; then "
            f"for i in $(seq {int(wait_timeout)}); do {counts}; [ {total} -ge {copies} ] && break; sleep 1; done; "
            f"for round in $(seq {copies}); do {counts}; [ -n \"$counts\" ] && [ $(({most} - {fewest})) -gt 1 ] || break; "
            f"echo \"{name}: its copies run unevenly on the nodes labelled {label} ($(echo $counts | tr ' ' /)): "
            "one more starts on the emptiest, then one stops on the fullest\"; "
            f"{scale}={copies + 1} >/dev/null; {scale}={copies} >/dev/null || exit 1; done; "
            f"[ \"$(docker service inspect -f '{{{{.Spec.Mode.Replicated.Replicas}}}}' {service})\" = {copies} ] "
            f"|| {scale}={copies} >/dev/null || exit 1; fi")
    return "; ".join(steps) if steps else "true"


STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"  # what `docker stack deploy` labels its objects with


def overlay_network(project: str, encrypted: bool, network: str = "default") -> str:
    """One of the stack's overlay networks ("default", or another the services table names). Docker
    cannot change a network's options, and `docker stack deploy` leaves an existing one as it is: so
    its name says whether it is encrypted, and turning encryption on or off makes a new network every
    service moves to. Unencrypted, the name `docker stack deploy` gives it."""
    if network == "default":
        return f"{project}_{'encrypted' if encrypted else 'default'}"
    return f"{project}_{network}{'_encrypted' if encrypted else ''}"


def secrets_digest(paths: list[str]) -> str:
    """Shell expression: a digest of some secret files' contents (the contents never leave the host)."""
    return f"$(cat {' '.join(quote(p) for p in paths)} | sha256sum | cut -c1-16)"


def secrets_env(service_secrets: dict[str, list[str]]) -> str:
    """Write .env: per service, a digest of the secret files whose change restarts it. Compose puts
    it in a label, so that a changed secret recreates exactly the services that use it."""
    lines = [f"echo {env_name(service)}={secrets_digest(paths)}"
             for service, paths in service_secrets.items() if paths]
    return "{ " + "; ".join(lines) + "; } > .env"


def secrets_now(service_secrets: dict[str, list[str]]) -> str:
    """One line per service with restarting secrets: "secrets <service> <sha256sum output>", whose first
    16 characters are the digest .env would have (one or two processes a service: a no-op deploy runs it).
    A missing file (a service these settings do not enable) still ends its line: what follows is the
    containers' state, whose first line would otherwise be lost."""
    return "; ".join(f"printf 'secrets {service} '; "
                     + (f"{{ sha256sum < {quote(paths[0])} || echo; }}" if len(paths) == 1 else
                        f"cat {' '.join(quote(p) for p in paths)} | sha256sum")
                     for service, paths in service_secrets.items() if paths) or "true"


def env_name(service: str) -> str:
    """The .env variable holding a service's secrets digest."""
    return f"KONO_SECRETS_{service.upper()}"


def stack_state(directory: str, project: str, reloaded: tuple[str, ...],
                service_secrets: dict[str, list[str]], swarm: bool = False) -> str:
    """The project's digest now and as last brought up, what each service was last brought up with,
    its secrets' digests now, and each container's state and health."""
    return (f"cd {quote(directory)} 2>/dev/null || exit 0; "
            f"echo digest; {project_file_digests(reloaded)}; "
            f"printf 'applied '; cat {APPLIED} 2>/dev/null || echo; "
            f"sed 's/^/recorded /' {SERVICES_RECORD} 2>/dev/null; "
            f"{{ {secrets_now(service_secrets)}; }} 2>/dev/null; "
            + services_state(project, swarm))


def record_services(records: dict[str, str]) -> str:
    """Write what each service was brought up with: "<service> <its record> <its secrets digest or ->",
    the digest taken from the .env just used."""
    lines = "; ".join(f"s=$(sed -n 's/^{env_name(service)}=//p' .env); echo \"{service} {record} ${{s:--}}\""
                      for service, record in records.items())
    return f"{{ {lines}; }} > {SERVICES_RECORD}"


# How long nginx keeps a resolved address of the api (templates/nginx/site.locations.j2, `resolver ... valid=`).
RESOLVER_VALID_SECONDS = 1


def start_first(service: str, wait_timeout: int, stop_timeout: int) -> str:
    """Replace a service's container without downtime: a new one beside the old (compose scales it to
    two and keeps the old as it is), wait until it is healthy and until nginx has resolved its address
    (both serve meanwhile), then stop the old one, which drains, and remove it. If the new one never
    becomes healthy, it is removed and the old one keeps serving."""
    return (f"old=$(docker compose ps -q {service} | sort) && "
            f"if ! docker compose up --detach --no-deps --no-recreate --scale {service}=2 --wait "
            f"--wait-timeout {int(wait_timeout)} {service}; then "
            f"docker compose ps -aq {service} | grep -vxF \"$old\" | xargs -r docker rm -f >/dev/null; "
            f"echo '{service}: the new container did not become healthy; the old one keeps serving' >&2; exit 1; fi && "
            f"sleep {2 * RESOLVER_VALID_SECONDS} && "
            f"echo \"$old\" | xargs -r docker stop --time {int(stop_timeout)} >/dev/null && "
            f"echo \"$old\" | xargs -r docker rm >/dev/null")


def compose_up(directory: str, wait_timeout: int, service_secrets: dict[str, list[str]],
               reloaded: tuple[str, ...] = (), rollouts: dict[str, int] | None = None, others: tuple[str, ...] = (),
               records: dict[str, str] | None = None, markers: dict[str, str] | None = None) -> str:
    """Validate the project, bring it up and wait for health; record its digest, what each service
    was brought up with, and how long it took. Services in ``rollouts`` are replaced start-first
    ({service: seconds it has to stop}; ``others`` then lists every other service, which a plain
    `up` handles). A configuration folder checked and left staged for a new container ({folder:
    digest} in ``markers``) is put in place right before `up`."""
    up = (f"docker compose up --detach --build --remove-orphans --wait --wait-timeout {int(wait_timeout)}"
          + "".join(f" {service}" for service in (others if rollouts else ())))
    steps = [up, *(start_first(service, wait_timeout, stop) for service, stop in (rollouts or {}).items())]
    return in_dir(directory, (
        f"{secrets_env(service_secrets)} && docker compose config --quiet && "
        f"digest=$({project_digest(reloaded)}) && started=$(date +%s.%N) && "
        + (f"{{ {switch_staged_folders(markers)}; }} && " if markers else "")
        + " && ".join(steps) +
        f" && mkdir -p {STATE_DIR} && echo \"$digest\" > {APPLIED}"
        + (f" && {record_services(records)}" if records else "") +
        f" && awk \"BEGIN {{ print $(date +%s.%N) - $started }}\" > {LAST_UP_SECONDS}"
    ))




SECRET_VERSION_CHARS = 12  # a swarm secret's name ends with this much of its content's sha256


def secret_version_env(compose_name: str) -> str:
    """The variable holding a secret's version while the stack is deployed (stack.yaml names it)."""
    return f"KONO_SECRET_{compose_name.upper()}"


def secret_version_name(project: str, compose_name: str) -> str:
    """A secret's name in the swarm, as stack.yaml declares it: one per version of its content."""
    return f"{project}_{compose_name}_${{{secret_version_env(compose_name)}}}"


def stack_up(directory: str, project: str, stack_file: str, wait_timeout: int, service_secrets: dict[str, list[str]],
             secret_versions: dict[str, str], networks: tuple[str, ...], reloaded: tuple[str, ...] = ()) -> str:
    """Bring the stack up on the swarm from this manager: each secret's version ({name: its file})
    taken from its content; a compose project of the same name here stopped first (its containers,
    not its volumes, which the stack's services take over: same names); the images the project
    builds built here; `docker stack deploy`, waiting until every service has converged (a failed
    update rolls back); then the secret versions and networks (but ``networks``) no service uses any
    more removed, and the project's digest recorded, as ``compose_up`` does. Docker's registry is
    never asked (``--resolve-image never``): each node runs the image it has or pulls by name."""
    versions = " ".join(f"{secret_version_env(name)}=$(sha256sum < {quote(path)} | cut -c1-{SECRET_VERSION_CHARS})"
                        for name, path in secret_versions.items())
    kept = " ".join(f"\"{secret_version_name(project, name)}\"" for name in secret_versions)
    return in_dir(directory, (
        f"{secrets_env(service_secrets)} && docker compose config --quiet && "
        f"set -a && . ./.env && set +a && export {versions} && "
        f"digest=$({project_digest(reloaded)}) && started=$(date +%s.%N) && "
        "if [ -n \"$(docker compose ps -aq)\" ]; then docker compose down; fi && "
        "docker compose build --quiet && "
        f"timeout {int(wait_timeout)} docker stack deploy --detach=false --prune --resolve-image never "
        f"-c {quote(stack_file)} {quote(project)} && "
        f"mkdir -p {STATE_DIR} && echo \"$digest\" > {APPLIED} && "
        f"awk \"BEGIN {{ print $(date +%s.%N) - $started }}\" > {LAST_UP_SECONDS} && {{ "
        # In use (an old task still stopping) or not: what cannot go now goes next time. Only after a
        # deploy that succeeded, and never what decides the command's exit status.
        f"docker secret ls --filter label={STACK_NAMESPACE_LABEL}={quote(project)} --format '{{{{.Name}}}}' | "
        f"grep -vxF \"$(printf '%s\\n' {kept})\" | xargs -r docker secret rm >/dev/null 2>&1; "
        f"docker network ls --filter label={STACK_NAMESPACE_LABEL}={quote(project)} --format '{{{{.Name}}}}' | "
        f"grep -vxF \"$(printf '%s\\n' {' '.join(quote(n) for n in networks)})\" | xargs -r docker network rm >/dev/null 2>&1; true; }}"
    ))


def stage_folder(directory: str, folder: str) -> str:
    """A copy of a live configuration folder under .kono/staged/, to change and check there."""
    staged = staged_folder(folder)
    return in_dir(directory, f"rm -rf {quote(staged)} {quote(checked_marker(folder))} && mkdir -p {quote(staged)} && "
                             f"cp -a {quote(folder)}/. {quote(staged)}/ 2>/dev/null; true")


def reloaded_marker(folder: str) -> str:
    """What a configuration folder was last applied with (a digest): a deploy that died between
    putting files in place and reloading is finished by the next one."""
    return f"{STATE_DIR}/reloaded.{folder}"


def staged_folder(folder: str) -> str:
    """Where a configuration folder is changed and checked before it goes live."""
    return f"{STAGED_DIR}/{folder}"


def checked_marker(folder: str) -> str:
    """The digest of the declared files a staged folder was checked with (``nginx_check``)."""
    return f"{staged_folder(folder)}.checked"


def nginx_check(directory: str, folder: str, image: str, digest: str,
                mounts: tuple[tuple[str, str], ...] = ()) -> str:
    """Check a staged nginx conf.d with `nginx -t` in a throwaway container of the image (the whole
    configuration, as the image's nginx.conf includes it, with those of the ``mounts`` the service's
    container will have (source: "./folder" or a volume; target) that exist yet), and note the
    ``digest`` it passed with. On failure, nginx's own message; nothing live is touched either way
    (``apply_folder`` or ``switch_staged_folders`` puts it in place)."""
    staged = staged_folder(folder)
    check = "rm -rf /etc/nginx/conf.d/* && tar -C /etc/nginx/conf.d -xf - && nginx -t -q"
    # A volume is not made here (compose makes its own, labelled), nor a folder: what is not there
    # yet is not mounted, and what the configuration includes from it is then absent, as in nginx.
    found = "".join(
        (f"if [ -d {quote(source)} ]; then mounts=\"$mounts -v $PWD/{source[2:]}:{target}:ro\"; fi; "
         if source.startswith("./") else
         f"if docker volume inspect {quote(source)} >/dev/null 2>&1; then "
         f"mounts=\"$mounts -v {source}:{target}:ro\"; fi; ")
        for source, target in mounts)
    return in_dir(directory, (
        f"mounts=''; {found}"
        f"tar -C {quote(staged)} -cf - . | docker run --rm -i --network none $mounts --entrypoint sh "
        f"{quote(image)} -c {quote(check)} && echo {quote(digest)} > {quote(checked_marker(folder))}"
    ))


def _put_in_place(folder: str) -> str:
    """The checked, staged copy of a configuration folder copied over the live one."""
    staged = staged_folder(folder)
    return (f"mkdir -p {quote(folder)} && cp -a {quote(staged)}/. {quote(folder)}/ && "
            f"rm -rf {quote(staged)} {quote(checked_marker(folder))}")


def _mark_applied(folder: str, digest: str) -> str:
    return f"echo {quote(digest)} > {quote(reloaded_marker(folder))}"


def running_containers(project: str, service: str) -> str:
    """Shell: the ids of a service's running containers on this host, started by compose or, as a
    swarm's tasks, by ``docker stack deploy``."""
    return (f"docker ps -q --filter label=com.docker.compose.project={quote(project)} "
            f"--filter label=com.docker.compose.service={quote(service)} --filter status=running; "
            f"docker ps -q --filter label={STACK_NAMESPACE_LABEL}={quote(project)} "
            f"--filter label=com.docker.swarm.service.name={quote(f'{project}_{service}')} --filter status=running")


def apply_folder(directory: str, folder: str, digest: str, project: str, service: str = "nginx") -> str:
    """Put a checked folder in place and reload the nginx of each of the service's running containers
    here, which stay (the check had their mounts): their workers finish what they serve, none is dropped."""
    return in_dir(directory, (
        f"{_put_in_place(folder)} && "
        f"for container in $({running_containers(project, service)}); do "
        "docker exec \"$container\" nginx -s reload || exit 1; done && "
        f"{_mark_applied(folder, digest)}"
    ))


def switch_staged_folders(markers: dict[str, str]) -> str:
    """For a bring-up that gives a service a new container: each folder staged and checked for what
    is declared now ({folder: digest}), which its service's old container never loaded, put in
    place right before `up` creates the new one, once the images are built (a failed build leaves the
    live folder as the old container knows it). A folder staged for anything else is left alone."""
    checked = {folder: f"[ \"$(cat {quote(checked_marker(folder))} 2>/dev/null)\" = {quote(digest)} ]"
               for folder, digest in markers.items()}
    return (f"if {' || '.join(checked.values())}; then docker compose build --quiet || exit 1; fi; "
            + "; ".join(f"if {test}; then {_put_in_place(folder)} && {_mark_applied(folder, markers[folder])} "
                        "|| exit 1; fi" for folder, test in checked.items()))


# -- certificates ------------------------------------------------------------------------------

TLS_DIR_IN_NGINX = "/etc/nginx/tls"  # what nginx mounts: the certificates volume, or config/tls


def served_certificate(project: str, service: str = "nginx") -> str:
    """The certificate nginx serves, or on a cluster's db node the one the origin service hands the
    edges (public: the key is never read); nothing when there is none."""
    return read_in_service(project, service, f"cat {TLS_DIR_IN_NGINX}/certificate")


def acme_certificate_state(project: str, acme_script: str) -> str:
    """"current" when the acme service's installed certificate is for its domains from its CA, "stale"
    when not, nothing without an acme service running."""
    return read_in_service(project, "acme", f"sh {quote(acme_script)} current")


def issue_certificate(project: str, acme_script: str, holder: str, holder_script: str, holder_step: str) -> str:
    """The acme service's first issuance (lego's own messages, the CA's reason among them, on failure),
    then the service that holds it takes it at once: nginx checked and reloaded (``reload``, returning
    when the reload took effect), or on a cluster the origin's copy for the edges (``copy``). Their
    watchers would within seconds, but the deploy goes on with it in place."""
    return (f"{in_service(project, 'acme', f'sh {quote(acme_script)} issue')} && "
            f"{in_service(project, holder, f'sh {quote(holder_script)} {holder_step}')}")


def fetch_certificate(project: str, nginx_script: str) -> str:
    """On a cluster's edge: nginx copies the certificate and key from the origin service now, checked
    and reloaded (it would within seconds by itself)."""
    return in_service(project, "nginx", f"sh {quote(nginx_script)} fetch")


# -- backups (the backup service, files/backup/kono-backup.sh) ---------------------------------

def last_backup(project: str, script: str) -> str:
    """The backup service's record of its last success to its repository now ("<UTC time> <bytes read> <bytes added>
    <snapshot ids>"), or nothing."""
    return read_in_service(project, "backup", f"sh {quote(script)} last")


def firing_alerts(project: str, port: int) -> str:
    """Prometheus's alerts as its API lists them (JSON), or nothing when it does not answer."""
    return read_in_service(project, "prometheus", f"wget -q -O - http://127.0.0.1:{port}/api/v1/alerts")


def repository_snapshots(project: str, script: str) -> str:
    """The host's snapshots in its repository, as restic's JSON list."""
    return in_service(project, "backup", f"sh {quote(script)} snapshots")


SSHD_REREAD = 'kill -HUP "$(cat /run/sshd.pid)"'  # sshd re-executes itself: new host keys, open sessions kept


def restore_from_repository(project: str, snapshots: tuple[str, str, str], force: bool, script: str,
                            replay: tuple[str, tuple[str, ...]] | None = None, pin: tuple[str, ...] = ()) -> str:
    """Both databases and the files back from a snapshot of the repository, then (``replay``: (until,
    binary log snapshots)) db_production's binary logs replayed onto it up to ``until`` ("" for all),
    and the snapshots ``pin`` tagged keep before the restored state's own backup; then the
    maintainer's sshd re-reads its host keys, restored into its volume (SIGHUP: sshd re-executes
    itself; open sessions stay)."""
    env = ("KONO_RESTORE_FORCE=yes",) if force else ()
    if pin:
        env += ("KONO_RESTORE_KEEP=" + " ".join(pin),)
    words = [*snapshots, *(("replay", replay[0], *replay[1]) if replay else ())]
    restore = f"sh {quote(script)} restore {' '.join(quote(word) for word in words)}"
    return (f"{in_service(project, 'backup', restore, env)} && "
            f"{in_service(project, 'maintainer', SSHD_REREAD)}")


def shipped_binlogs(project: str, script: str) -> str:
    """The binlog service's "<UTC time> <failing since|->": everything committed before that time is in
    the repository."""
    return read_in_service(project, "binlog", f"sh {quote(script)} shipped")


# -- secrets -----------------------------------------------------------------------------------

def config_tree(directory: str) -> str:
    """Type, mode, size and path of everything under config/. Never reads a secret's content."""
    return f"cd {quote(directory)} 2>/dev/null && find config -printf '%y %m %s %p\\n' 2>/dev/null || true"


def random_secret_into(path: str, length: int) -> str:
    """A new random secret made on the host, [A-Za-z0-9]{length}, into a 0600 file."""
    return f"umask 077 && tr -dc A-Za-z0-9 </dev/urandom | head -c {int(length)} > {quote(path)}"


def generate_secret(path: str, length: int) -> str:
    # Written to a temporary name and renamed, so an interrupted run never leaves a short secret.
    return f"{random_secret_into(path + '.new', length)} && {move_into_place(path + '.new', path)}"


def move_into_place(staged: str, path: str) -> str:
    """A staged file (uploaded by SFTP) made 0600 and renamed over the real one."""
    return f"chmod 0600 {quote(staged)} && mv {quote(staged)} {quote(path)}"


def rename(staged: str, path: str) -> str:
    return f"mv {quote(staged)} {quote(path)}"


def read_file(path: str) -> str:
    return f"cat {quote(path)}"


def in_service(project: str, service: str, script: str, env: tuple[str, ...] = ()) -> str:
    """Run a shell script in the service's running container on this host, with stdin passed
    through: compose's container or a swarm's task alike (``docker compose exec`` sees no task).
    ``env``: NAME=value words for it. Fails, saying so, when none runs here."""
    flags = "".join(f" -e {quote(word)}" for word in env)
    missing = quote(f"{service}: no running container of it on this host")
    return (f"{{ container=$({{ {running_containers(project, service)}; }} | head -n 1); "
            f"if [ -n \"$container\" ]; then docker exec -i{flags} \"$container\" sh -c {quote(script)}; "
            f"else printf '%s\\n' {missing} >&2; false; fi; }}")


# What the Docker CLI prints, on the exec's stdout (stderr empty), with exit 126, when the runtime
# could not start the process: nothing in the container ran. Seen here on a non-executable file and,
# with a message lost, once in 7,000 execs of a working script on a loaded nested host, and as two
# CI failures with an empty stderr.
DOCKER_EXEC_UNSTARTED = b"OCI runtime exec failed"
UNSTARTED_ATTEMPTS = 3  # tries of a command whose docker exec never started (kono/remote.py, the lab)


def unstarted(status: int, output: bytes) -> bool:
    """Whether a command failed before anything of it ran: its first ``docker exec`` never started
    (its output is Docker's message alone), so running it again is safe."""
    return status == 126 and output.startswith(DOCKER_EXEC_UNSTARTED)


def read_in_service(project: str, service: str, script: str) -> str:
    """``in_service`` for a read that status and drift make: what it prints, or nothing (no error)
    when the service does not run here."""
    return f"{in_service(project, service, script)} 2>/dev/null || true"


def mysql_root(project: str, service: str, root_password_file: str, args: str = "") -> str:
    """The mysql client as root inside a database service; SQL on stdin. The root password is read
    from the secret file inside the container, so it is on no command line and leaves no host."""
    return in_service(project, service, f"MYSQL_PWD=$(cat {root_password_file}) exec mysql -uroot{' ' + args if args else ''}")


def mysqldump(project: str, service: str, root_password_file: str, database: str) -> str:
    """A consistent dump of one database, without locking it (InnoDB)."""
    return in_service(project, service, f"MYSQL_PWD=$(cat {root_password_file}) exec mysqldump -uroot "
                               f"--single-transaction --routines --triggers --databases {database}")


def alter_users(staged: str, project: str, service: str, root_password_file: str, accounts: tuple[str, ...]) -> str:
    """Set the accounts' password to the staged file's content. printf is a shell builtin: the new
    password goes by pipe, never through an argv; and not into the binary logs, which leave the host."""
    statements = "SET SESSION sql_log_bin = 0; " + "".join(
        f"ALTER USER '{user}'@'{host.replace('%', '%%')}' IDENTIFIED BY '%s'; "
        for user, host in (account.split("@") for account in accounts))
    values = " ".join(['"$new"'] * len(accounts))
    return (f"new=$(cat {quote(staged)}) && printf \"{statements}\\n\" {values} | "
            f"{mysql_root(project, service, root_password_file)}")


def table_count(project: str, service: str, root_password_file: str, database: str) -> str:
    return (f"printf \"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{database}';\\n\" | "
            f"{mysql_root(project, service, root_password_file, '-N')}")


def tar_out(project: str, service: str, folder: str) -> str:
    return in_service(project, service, f"tar -C {quote(folder)} -cf - .")


def tar_in(project: str, service: str, folder: str, group: str) -> str:
    return in_service(project, service, f"tar -C {quote(folder)} -xf - && chgrp -R {group} {quote(folder)}")


def restart_docker_keeping_containers() -> str:
    """Restart Docker, then start again each compose container that ran before and does not now.
    Turning live-restore off (a host joining a swarm) kills the running containers as the new
    daemon starts and skips their restart policies that once ("ShouldRestart failed, container will
    not be restarted": moby/moby#31735, seen with Docker 26.1). A swarm's tasks are the swarm's."""
    return ("running=$(docker ps -q --filter label=com.docker.compose.oneoff=False) && systemctl restart docker && "
            "for container in $running; do "
            "[ \"$(docker inspect -f '{{.State.Running}}' \"$container\" 2>/dev/null)\" = true ] || "
            "docker start \"$container\" >/dev/null || exit 1; done")


def fail(message: str) -> str:
    """Stop the deploy here with ``message`` (no secret in it) on stderr, as a failed command: pyinfra
    prints it and stops the host's run, without a traceback."""
    return f"printf '%s\\n' {quote(message)} >&2; exit 1"


def db_entrypoint(secrets_dir: str, db_secrets_dir: str) -> str:
    """A database container's entrypoint (its ``sh -c`` script, as compose.yaml gives it: ``$$`` is
    compose's escape for ``$``): the secrets copied where the image's mysql user can read them, then
    the image's own entrypoint with the command's arguments."""
    return (f"install -o mysql -g mysql -m 0400 {quote(secrets_dir)}/* {quote(db_secrets_dir)}/ && "
            'exec docker-entrypoint.sh "$$@"')


# -- one deploy at a time, and its record ------------------------------------------------------

def take_lock(directory: str, wait: int, record: str) -> str:
    """Take the deploy lock, held for as long as this SSH session lives (or until ``finish_record``
    ends its holder); prints "taken", or "locked <holder's record>" after ``wait`` seconds. Closes a
    record left pending by a run that died, as failed or interrupted, and starts this run's."""
    return in_dir(directory, (
        f"mkdir -p {STATE_DIR} && exec 9>>{LOCK} && "
        f"if ! flock -w {int(wait)} 9; then echo \"locked $(cat {OWNER} 2>/dev/null)\"; exit 0; fi; "
        f"printf '%s\\n' {quote(record)} > {OWNER}; "
        # $PPID is this SSH connection's session process: the lock holder lives exactly as long as it.
        f"session=$PPID; ( setsid sh -c {quote(lock_holder())} sh \"$session\" </dev/null >/dev/null 2>&1 & ); "
        f"if [ -s {PENDING} ]; then {close_record({'result': 'failed or interrupted'})}; fi; "
        f"printf '%s\\n' {quote(record)} > {PENDING}; echo taken"
    ))


def lock_holder() -> str:
    """The lock holder (``sh -c HOLDER sh SESSION``, in the project directory, with the lock as fd 9):
    lives as long as the SSH session SESSION. A run that ends with its record still pending (it
    failed, or was cut) is recorded here as failed, with the time it ended: what the metrics read."""
    # It keeps fd 9 (the lock); its sleeps do not, so ending the holder frees the lock at once.
    return (f"echo $$ > {HOLDER}; while kill -0 \"$1\" 2>/dev/null; do sleep 1 9>&-; done; "
            f"if [ -s {PENDING} ]; then {close_record({'result': 'failed or interrupted'}, ended_now=True)} "
            f"&& rm -f {PENDING}; fi; rm -f {HOLDER}")


def close_record(fields: dict, ended_now: bool = False) -> str:
    """Append the pending audit record, with ``fields`` added, to the audit log; with ``ended_now``,
    a "finished" field too, the host's time now."""
    extra = json.dumps(fields, sort_keys=True)[1:-1]
    replacement = extra.replace("\\", "\\\\").replace("/", "\\/").replace("&", "\\&")
    expression = quote("s/}$/, " + replacement + "}/")
    if ended_now:
        expression = quote('s/}$/, "finished": "') + '"$(date -u +%FT%T+00:00)"' + quote('", ' + replacement + "}/")
    return f"sed {expression} {PENDING} >> {AUDIT_LOG}"


def finish_record(directory: str, fields: dict) -> str:
    """Close this run's audit record, and free the deploy lock now (its holder would notice the end
    of the SSH session only within a second: a deploy right after this one would wait for it)."""
    return in_dir(directory, f"{close_record(fields)} && rm -f {PENDING} && "
                             f"{{ kill $(cat {HOLDER} 2>/dev/null) 2>/dev/null; rm -f {HOLDER}; }}")


# -- bootstrap's reads of the host (kono/hardening.py) -------------------------------------------

def ssh_algorithms(queries: dict[str, str]) -> str:
    """``## <directive>`` then what ``ssh -Q <query>`` lists, on one line, for each directive."""
    return "; ".join(f"echo {quote('## ' + directive)}; ssh -Q {quote(query)} | tr '\\n' ' '; echo"
                     for directive, query in queries.items())


def ssh_session() -> str:
    """The user and client address of the SSH session this runs in: "user address"."""
    return 'echo "$(id -un) ${SSH_CONNECTION%% *}"'


def authorized_key_count(user: str) -> str:
    """How many keys ``ssh-keygen`` accepts in a user's authorized_keys (0 when none or unreadable)."""
    home = f"$(getent passwd {quote(user)} | cut -d: -f6)"
    return f"ssh-keygen -l -f \"{home}/.ssh/authorized_keys\" 2>/dev/null | wc -l"


def apt_suites() -> str:
    """Every suite named in the host's apt sources (one-line and deb822 formats), one a line."""
    return ("cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources "
            "2>/dev/null | sed -n -e 's/^Suites://p' -e 's/^deb\\(-src\\)\\? \\(\\[[^]]*\\] \\)\\?[^ ]* "
            "\\([^ ]*\\).*/\\3/p' | tr ' ' '\\n' | sort -u")


def pending_security_updates() -> str:
    """How many security updates apt would install now."""
    return "apt-get -s -o Debug::NoLocking=1 dist-upgrade 2>/dev/null | grep -c '^Inst .*-security' || true"


def apply_security_updates() -> str:
    return "unattended-upgrade"


def apply_sysctl(path: str) -> str:
    return f"sysctl -q -p {quote(path)}"


def install_checked_sshd_config(staged: str, dest: str, users: tuple[str, ...]) -> str:
    """Move ``staged`` to ``dest`` only if `sshd -t` accepts the whole configuration with it and
    every kept user may still log in with a key; otherwise restore what was there and fail."""
    checks = " && ".join(
        f"t=$(sshd -T -C user={quote(user)},host=localhost,addr=127.0.0.1) && "
        f"echo \"$t\" | grep -qx 'pubkeyauthentication yes' && echo \"$t\" | grep -qx 'allowusers {user}'"
        for user in users)
    return (f"set -e; if [ -e {quote(dest)} ]; then cp -p {quote(dest)} {quote(dest)}.old; fi; "
            f"mv {quote(staged)} {quote(dest)}; "
            f"if sshd -t && {checks}; then rm -f {quote(dest)}.old; else "
            f"if [ -e {quote(dest)}.old ]; then mv {quote(dest)}.old {quote(dest)}; else rm -f {quote(dest)}; fi; "
            f"echo 'the new sshd configuration failed its check: kept the old one' >&2; exit 1; fi")
