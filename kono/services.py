"""What the stack is made of: its services, its secrets and its volumes, each declared once, here.

Everything else derives from these tables: the compose file (each service's own block is
``templates/services/<name>.yaml.j2``; its ``secrets:`` and ``labels:`` are added from here), which
secret files exist, who gets which, rotation, backup, the readiness rule, status, drift and the
tests. Adding a service is one ``Service`` entry plus its template block; adding a secret is one
``Secret`` entry (and a mention in the block of the service that reads it, through ``secret_file``).

Example::

    [s.name for s in enabled(SERVICES, settings)]   # ["db_production", "db_dev", "api", "maintainer", "nginx"]
    secrets_of("api")                  # (Secret("production", "db_api_password", ...), Secret(..., "api_key", ...))
    unready({"api": ("running", "healthy")}, enabled(SERVICES, settings))   # every other service
"""

from __future__ import annotations

from dataclasses import dataclass

# Where a database service's entrypoint finds its secrets (see templates/compose.yaml.j2, x-db):
# the mysql image reads *_FILE as its mysql user, so they are copied into a tmpfs readable by it.
DB_SECRETS_DIR = "/run/db-secrets"
SECRETS_DIR = "/run/secrets"  # where compose mounts a service's secrets


@dataclass(frozen=True)
class Service:
    """One compose service."""

    name: str
    # Project folders (under project_dir) that the service mounts from the host. Their digest is a
    # label, so a changed file recreates the service: compose alone would not notice.
    inputs: tuple[str, ...] = ()
    # A MySQL server: (environment, the settings knob naming its database). None for other services.
    database: tuple[str, str] | None = None
    # How a change that needs a new container is applied. "recreate": stop the old one, start the new
    # (the service is down meanwhile; announced in the plan). "start-first": start the new container
    # beside the old, wait until it is healthy, then drain and remove the old (no downtime; the
    # service must publish no host port and tolerate two copies for a moment).
    rollout: str = "recreate"
    # The project folder mounted as its nginx conf.d: a change is checked with `nginx -t` first, then
    # applied by nginx's reload while the container stays, else by its new container (kono/stack.py,
    # project_tree). Left out of the digest that triggers `up`.
    nginx_confd: str | None = None
    # The settings knob naming its image; None for an image built from the project.
    image: str | None = None
    # Where its own script (files/<input>/<name>) is inside the container: its inputs folder is mounted
    # at the script's folder, or its image copies it there. Templates and commands take it from here.
    script: str | None = None
    # Seconds compose gives it to stop (stop_grace_period; a start-first swap's stop timeout too).
    # None: compose's default.
    stop_seconds: int | None = None
    # What users see while a new container of it starts (said in the plan before it happens).
    impact: str = "unavailable until the new container is healthy"
    # The Settings property (kono/settings.py) it exists with, e.g. "backups_on". None: always.
    only_when: str | None = None
    # The Linux capabilities it keeps; every other one is dropped (cap_drop: ALL).
    capabilities: tuple[str, ...] = ()
    # A read-only root filesystem with tmpfs at these paths (what it writes outside its volumes);
    # None: a writable root filesystem.
    read_only_tmpfs: tuple[str, ...] | None = None
    # no-new-privileges: nothing in it gains privileges through a setuid binary. False only where
    # that is the point (the maintainer's sudo).
    no_new_privileges: bool = True
    # On a cluster (engine = "swarm"): the node label (kono/settings.py, NODE_LABELS) of the nodes it
    # runs on (None: every node), and how many copies: None one; "global" one on every such node; else
    # the Settings knob that says.
    runs_on: str | None = "db"
    replicas: str | None = None
    # On a cluster: the stack's overlay networks it joins. "default" is every service's; "edge" only
    # the edges' nginx and the origin, which hands them the certificate's key.
    networks: tuple[str, ...] = ("default",)

    def runs_on_node(self, labels: tuple[str, ...]) -> bool:
        """Whether it runs on a cluster node with these labels."""
        return self.runs_on is None or self.runs_on in labels


@dataclass(frozen=True)
class Secret:
    """One secret: a file ``config/<env>/<name>`` in the project, handed to ``services``."""

    env: str
    name: str
    services: tuple[str, ...]
    # The database accounts ("user@host") whose password this is, on the database service ``services[0]``.
    accounts: tuple[str, ...] = ()
    # "stack": supplied by the operator or generated on the host, then never changed but by rotation;
    # "maintainer passwords": sha512-crypt hashes of the passwords the operator gives (kono/secrets.py);
    # "tls": a PEM certificate or key the operator provides (kono/tls.py), placed as given, never generated;
    # "operator": supplied by the operator and never generated on the host (a backup repository's
    # password must outlive the host), then never changed (the repository was initialised with it);
    # "alerts": supplied by the operator (kono/alerts.py), never generated; a new value replaces the host's.
    origin: str = "stack"
    # Services that read it only when they initialise (a database's first start): a new value does not
    # restart them.
    first_start_only: tuple[str, ...] = ()
    # The Settings property (kono/settings.py) it exists with, e.g. "tls_provided". None: always.
    only_when: str | None = None

    @property
    def handed_by_compose(self) -> bool:
        """False for the TLS files: nginx mounts their folder, so a new one is applied by a reload."""
        return self.origin != "tls"

    @property
    def key(self) -> str:
        """How the operator names it: ``--data rotate=<key>``, ``<local_secrets_dir>/<key>``."""
        return f"{self.env}/{self.name}"

    @property
    def compose_name(self) -> str:
        """Its name in compose.yaml, and its file name under /run/secrets in a container."""
        return f"{self.env}_{self.name}"

    @property
    def path(self) -> str:
        """Its file, relative to the project directory."""
        return f"config/{self.env}/{self.name}"

    @property
    def database(self) -> str | None:
        """The database service holding the accounts this secret is the password of."""
        return self.services[0] if self.accounts else None


# Capabilities, by what needs them. As root, the compose entrypoint copies the secrets for mysql
# (DAC_OVERRIDE: they are the deploy user's 0600 files; `install -o mysql -m 0400` chowns, then
# chmods a file root no longer owns: CHOWN, FOWNER); the official entrypoint chowns the data and
# socket directories to mysql (CHOWN, DAC_OVERRIDE to walk them), then `gosu mysql` (SETUID, SETGID).
DB_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")
DB_TMPFS = (f"{DB_SECRETS_DIR}:mode=0755", "/var/run/mysqld:mode=1777", "/tmp:mode=1777")

SERVICES: tuple[Service, ...] = (
    Service("db_production", database=("production", "db_production_name"), image="mysql_image",
            impact="the production database stops for a few seconds: API requests that need it fail",
            capabilities=DB_CAPABILITIES, read_only_tmpfs=DB_TMPFS),
    Service("db_dev", database=("dev", "db_dev_name"), image="mysql_image",
            impact="the development database stops for a few seconds",
            capabilities=DB_CAPABILITIES, read_only_tmpfs=DB_TMPFS),
    # files/api/kono-api.sh copies its secrets for node (DAC_OVERRIDE, CHOWN, FOWNER), hands node
    # (1000) what it writes, then steps down to it (SETUID, SETGID): node keeps no capability at all.
    Service("api", inputs=("api",), rollout="start-first", image="node_image", stop_seconds=30,
            runs_on="app", replicas="api_replicas",
            script="/opt/kono/kono-api.sh",
            impact="API requests fail until the new container answers (about 4 s)",
            capabilities=("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"),
            read_only_tmpfs=("/run/api-secrets", "/tmp:mode=1777")),
    # The team's workstation: sshd (privilege separation: SETUID, SETGID, SYS_CHROOT; AUDIT_WRITE for
    # its login records; KILL to end sessions), sudo, useradd and the shared folders (CHOWN, FOWNER,
    # FSETID for their setgid bit, DAC_OVERRIDE). Writable, and sudo needs new privileges.
    Service("maintainer", inputs=("maintainer",),
            impact="open SSH sessions on the maintainer port are cut; logins fail for a few seconds",
            capabilities=("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                          "SYS_CHROOT"),
            no_new_privileges=False),
    # nginx's master is root: it creates its cache folders for the workers (CHOWN), reads the TLS key
    # (the deploy user's 0600 file with https = "provided": DAC_OVERRIDE), and starts the workers as
    # nginx, 101 (SETUID, SETGID). Port 80 inside needs nothing (Docker lets any user bind low ports).
    Service("nginx", inputs=("nginx-entrypoint",), nginx_confd="nginx", image="nginx_image", script="/kono/kono-nginx.sh",
            impact="every HTTP request fails until nginx is back (about a second)",
            capabilities=("CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID"),
            read_only_tmpfs=("/var/cache/nginx", "/run", "/tmp:mode=1777"), runs_on="edge", replicas="global",
            networks=("default", "edge")),
    # What a cluster's edges take from the db node (files/origin/): the web app, the uploaded assets and
    # the ACME challenges (proxied to it), and the certificate and its key (each edge's nginx copies them,
    # files/nginx-entrypoint/kono-nginx.sh). The official nginx image; its entrypoint copies the pair
    # where its workers can read it (CHOWN, DAC_OVERRIDE), its master starts them (SETUID, SETGID).
    # Only the edges' nginx reaches it: it is on the edge network alone.
    Service("origin", inputs=("origin",), image="nginx_image", only_when="swarm", script="/kono/kono-origin.sh",
            impact="the web app and assets fail on every edge until it is back (about a second); the API does not",
            capabilities=("CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID"),
            read_only_tmpfs=("/var/cache/nginx", "/run", "/tmp:mode=1777"), networks=("edge",)),
    # A cluster's api replicas copy releases from it (files/api/releases.js): the db node's api_build
    # volume, where kono-deploy publishes them, read-only; as node, with no capability at all.
    Service("releases", inputs=("api",), image="node_image", only_when="swarm", script="/opt/kono/releases.js",
            impact="api replicas keep what they serve; a new release reaches them when it is back",
            read_only_tmpfs=("/tmp:mode=1777",)),
    Service("acme", inputs=("acme",), image="acme_image", only_when="acme_on", script="/kono/kono-acme.sh",
            impact="nothing users see: it renews certificates, and checks again when it is back",
            read_only_tmpfs=("/tmp:mode=1777",)),
    # Reads what it backs up whoever owns it (DAC_READ_SEARCH, DAC_OVERRIDE); a restore puts back
    # owners, modes and setgid folders (CHOWN, FOWNER, FSETID).
    Service("backup", inputs=("backup",), only_when="backups_on", script="/usr/local/lib/kono-backup.sh",
            impact="nothing users see: a backup due meanwhile runs when it is back",
            capabilities=("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID"),
            # /backup: the folder the volumes are mounted in; a restore sets its owner and mode too.
            read_only_tmpfs=("/backup", "/tmp:mode=1777")),
    # Point-in-time recovery: ships db_production's binary logs to the repository (the same image and
    # script as backup). Root in its container, it reads its secrets (the deploy user's 0600 files) and
    # appends to the deploy user's audit log (DAC_OVERRIDE, CHOWN); it holds no database root
    # password, only its own replication account's.
    Service("binlog", inputs=("backup",), only_when="pitr_on", script="/usr/local/lib/kono-backup.sh",
            impact="nothing users see: binary logs wait on the database server and are shipped when it is back",
            capabilities=("CHOWN", "DAC_OVERRIDE"), read_only_tmpfs=("/tmp:mode=1777",)),
    # Monitoring (README.md, "Monitoring"). node_exporter (nobody, no capability) serves the host's
    # metrics, read from its root mounted read-only, and the stack's own from the metrics volume. On a
    # cluster, one on every node; the metrics service, Prometheus and Alertmanager on the db node.
    Service("node_exporter", image="node_exporter_image", only_when="monitoring",
            impact="metrics are not served until it is back: a scrape meanwhile fails",
            read_only_tmpfs=(), runs_on=None, replicas="global"),
    # files/monitoring/kono-metrics.js: reads the Docker engine through its socket (read-only mount; no
    # network on a single host), writes the stack's metrics into the metrics volume (on a cluster, the
    # swarm's too, as the db node, a manager, sees it; and where Prometheus finds every node's
    # node_exporter). Root in its container for the socket (root's own file); DAC_READ_SEARCH alone,
    # to read (never write) the served certificate, a provided one being the deploy user's 0600 file.
    Service("metrics", inputs=("monitoring",), image="node_image", only_when="monitoring",
            script="/kono/kono-metrics.js", capabilities=("DAC_READ_SEARCH",),
            impact="the stack's own metrics are missing from a scrape until it is back; the host's are served",
            read_only_tmpfs=("/tmp:mode=1777",)),
    # Prometheus (nobody, no capability): scrapes node_exporter every METRICS_INTERVAL_SECONDS and
    # evaluates files/monitoring/alerts.yml; keeps metrics_retention_days (at most _mb) in its volume.
    Service("prometheus", inputs=("monitoring",), image="prometheus_image", only_when="monitoring",
            impact="alerts are not evaluated until it is back (a fault that lasts is caught then)",
            read_only_tmpfs=()),
    # Alertmanager sends each alert once, and its end once (templates/monitoring/alertmanager.yml.j2),
    # to the webhook. Root in its container, as the backup service: the webhook's URL is the deploy
    # user's 0600 file (DAC_OVERRIDE; compose keeps a secret's owner and mode), and its volume is
    # the image's, owned by nobody (DAC_OVERRIDE). Nothing else: no network but the stack's.
    Service("alertmanager", inputs=("monitoring",), image="alertmanager_image", only_when="alerts_on",
            impact="alerts wait in Prometheus until it is back, then are sent",
            capabilities=("DAC_OVERRIDE",), read_only_tmpfs=()),
)

# The api's contract with its supervisor (files/api/start.js and worker.js), compose and nginx, said
# once here and handed to the container as environment (``api_environment``): the scripts spell none.
API_HEALTH_PATH = "/api/health"  # a release answers 2xx here once it can serve
API_HEALTH_TIMEOUT_SECONDS = 30  # a new release that does not by then never takes traffic
API_DRAIN_SECONDS = 20  # after SIGTERM, what is in flight finishes within this
API_LINGER_SECONDS = 3  # then the old process keeps answering while nginx re-resolves (> its resolver's validity)


def api_worker_ports(api_port: int) -> tuple[int, int]:
    """The supervisor's two private worker ports: the old release's and the new one's during a swap."""
    return api_port + 1, api_port + 2


def api_status_port(api_port: int) -> int:
    """Where the supervisor says what it serves and its verdict on the newest release (kono-deploy asks)."""
    return api_port + 3


RELEASES_PORT = 8000  # the releases service's, on the stack's network only

# The origin service (a cluster only) as the edges' nginx reach it (the edge network, port 80), where
# it serves the certificate and key, and where its entrypoint keeps the copy it serves them from.
ORIGIN_URL = "http://origin"
ORIGIN_TLS_PATH = "/tls/"
ORIGIN_TLS_COPY = "/run/kono-tls"


def releases_url(settings) -> str:
    """Where a cluster's api replicas copy releases from; "" on a single host, where the api shares
    the maintainer's api_build volume."""
    return f"http://releases:{RELEASES_PORT}" if settings.swarm else ""


def api_environment(api_port: int, releases_from: str = "", releases_kept: int = 5) -> dict[str, str]:
    """The api container's contract, as its environment; with ``releases_from`` (``releases_url``),
    where it copies releases from, and how many copies it keeps."""
    return {"PORT": str(api_port), "KONO_API_HEALTH_PATH": API_HEALTH_PATH,
            "KONO_API_WORKER_PORTS": " ".join(str(port) for port in api_worker_ports(api_port)),
            "KONO_API_STATUS_PORT": str(api_status_port(api_port)),
            "KONO_API_HEALTH_TIMEOUT_MS": str(API_HEALTH_TIMEOUT_SECONDS * 1000),
            "KONO_API_DRAIN_TIMEOUT_MS": str(API_DRAIN_SECONDS * 1000),
            "KONO_API_LINGER_MS": str(API_LINGER_SECONDS * 1000),
            **({"KONO_API_RELEASES_URL": releases_from, "KONO_API_RELEASES_KEPT": str(releases_kept)}
               if releases_from else {})}


# db_production's binary logs, set explicitly so that MySQL 8.4 and MariaDB (the test double) agree
# (MariaDB writes none by default, MIXED format, sync_binlog 0; tests/images/README.md): row-based,
# synced at each commit, named binlog.NNNNNN in the data directory, kept on the server for three days
# (what the shipper may fall behind by before a gap; status says NOT OK long before).
BINLOG_SERVER_OPTIONS = ("--log-bin=binlog", "--server-id=1", "--binlog-format=ROW", "--sync-binlog=1",
                         f"--binlog-expire-logs-seconds={3 * 86400}")
# What the backup script tags a base (db_production's dump) and the binary logs with, + the database
# server's timeline (kono-backup.sh): binary logs replay only onto a base of their own timeline.
TIMELINE_TAG = "timeline-"
BINLOG_USER = "kono_binlog"  # the shipper's account: REPLICATION SLAVE, REPLICATION CLIENT, RELOAD (kono-backup.sh)

SECRETS: tuple[Secret, ...] = (
    Secret("production", "db_root_password", ("db_production", "backup"), ("root@%", "root@localhost")),
    Secret("production", "db_api_password", ("db_production", "api"), ("api@%",),
           first_start_only=("db_production",)),
    Secret("production", "db_unauthorized_api_password", ("db_production",), ("unauthorized_api@%",),
           first_start_only=("db_production",)),
    Secret("production", "api_key", ("api",)),
    Secret("dev", "db_root_password", ("db_dev", "backup"), ("root@%", "root@localhost")),
    Secret("dev", "db_dev_password", ("db_dev",), ("dev@%",), first_start_only=("db_dev",)),
    Secret("production", "maintainer_password_hashes", ("maintainer",), origin="maintainer passwords"),
    Secret("tls", "certificate", ("nginx",), origin="tls", only_when="tls_provided"),
    Secret("tls", "private_key", ("nginx",), origin="tls", only_when="tls_provided"),
    # The shipper's replication account (kono-backup.sh: ship). The backup service creates it as root
    # when it is missing (a database initialised before point-in-time recovery was turned on).
    Secret("production", "db_binlog_password", ("db_production", "binlog", "backup"), (f"{BINLOG_USER}@%",),
           first_start_only=("db_production", "backup"), only_when="pitr_on"),
    Secret("backup", "repository_password", ("backup", "binlog"), origin="operator", only_when="backups_on"),
    # KEY=value lines for the repository's storage (AWS_ACCESS_KEY_ID=..., AWS_SECRET_ACCESS_KEY=...);
    # empty for a backend that needs none.
    Secret("backup", "storage_credentials", ("backup", "binlog"), origin="operator", only_when="backups_on"),
    # The team's webhook (Slack, Mattermost, Discord's /slack), with its token: supplied by the operator
    # (kono/alerts.py); a new one is placed by the next deploy and used from the next alert on.
    Secret("alerts", "webhook_url", ("alertmanager",), origin="alerts", only_when="webhook_on"),
    # The dead man's switch's URL (healthchecks.io and the like), likewise.
    Secret("alerts", "heartbeat_url", ("alertmanager",), origin="alerts", only_when="heartbeat_on"),
    # The password of alert_smtp_username on the mail server, likewise.
    Secret("alerts", "smtp_password", ("alertmanager",), origin="alerts", only_when="smtp_login_on"),
)


@dataclass(frozen=True)
class Volume:
    """One named volume (compose prefixes it with the project name)."""

    name: str
    holds: str
    only_when: str | None = None  # as Service.only_when


VOLUMES: tuple[Volume, ...] = (
    Volume("data_production_volume", "db_production's data"),
    Volume("data_dev_volume", "db_dev's data"),
    Volume("api_build", "the API's deployed code"),
    Volume("api_log", "the API's log"),
    Volume("app_build", "the web app's deployed build"),
    Volume("app_static", "uploaded assets, served at /static/"),
    Volume("nginx_log", "nginx's access and error logs"),
    Volume("maintainer_host_keys", "the maintainer container's SSH host keys"),
    Volume("acme_state", "the ACME account and lego's certificates", "acme_on"),
    Volume("certificates", "the certificate and key nginx serves, installed by acme", "acme_on"),
    Volume("acme_webroot", "the ACME HTTP-01 challenge files nginx serves", "acme_on"),
    Volume("edge_tls", "on a cluster's edge node: the certificate and key its nginx copied from the origin",
           "tls_from_origin"),
    Volume("backup_state", "the last backup's outcome, and restic's cache", "backups_on"),
    Volume("binlog_state", "binary logs on their way to the repository, and what was shipped", "pitr_on"),
    Volume("metrics", "the stack's own metrics, as node_exporter serves them", "monitoring"),
    Volume("prometheus_data", "Prometheus's metrics, kept metrics_retention_days", "monitoring"),
    Volume("alertmanager_data", "which alerts were sent (each is sent once), and silences", "alerts_on"),
)


def script(service_name: str) -> str:
    """A service's script inside its container (``Service.script``)."""
    path = service(service_name).script
    if path is None:
        raise KeyError(f"service {service_name!r} has no script in kono/services.py")
    return path


def enabled(entries: tuple, settings) -> tuple:
    """The entries of a table (services, secrets, volumes) that exist with these settings (kono.settings.Settings)."""
    return tuple(e for e in entries if e.only_when is None or getattr(settings, e.only_when))


def service(name: str) -> Service:
    for entry in SERVICES:
        if entry.name == name:
            return entry
    raise KeyError(f"no service {name!r} in kono/services.py")


def secret(key: str) -> Secret:
    for entry in SECRETS:
        if entry.key == key:
            return entry
    raise KeyError(f"no secret {key!r} in kono/services.py")


def stack_secrets(settings=None) -> tuple[Secret, ...]:
    """The secrets supplied by the operator or generated on the host (not the password hashes); only
    those these settings (kono.settings.Settings) enable, when given."""
    return tuple(s for s in (SECRETS if settings is None else enabled(SECRETS, settings)) if s.origin == "stack")


def secrets_of(service_name: str) -> tuple[Secret, ...]:
    """The secrets compose hands to a service, in table order."""
    return tuple(s for s in SECRETS if service_name in s.services and s.handed_by_compose)


def reloaded_folders() -> tuple[str, ...]:
    """The nginx conf.d folders: applied by a checked reload, or by nginx's new container."""
    return tuple(s.nginx_confd for s in SERVICES if s.nginx_confd)


def restarting_secrets(service_name: str) -> tuple[Secret, ...]:
    """The secrets whose new value must restart a service: those it reads beyond its first start."""
    return tuple(s for s in secrets_of(service_name) if service_name not in s.first_start_only)


def environments(secrets: tuple[Secret, ...] = SECRETS) -> tuple[str, ...]:
    """The folders under config/ that hold these secrets, in table order."""
    return tuple(dict.fromkeys(s.env for s in secrets))


def databases() -> tuple[Service, ...]:
    return tuple(s for s in SERVICES if s.database)


def root_password(database_service: str) -> Secret:
    """The secret holding a database service's root password."""
    for entry in SECRETS:
        if entry.database == database_service and "root@localhost" in entry.accounts:
            return entry
    raise KeyError(f"no root password secret for {database_service!r} in kono/services.py")


def root_password_file(database_service: str) -> str:
    """Where a database service's processes read its root password (rotation and backup use it)."""
    return secret_file(root_password(database_service).key, database_service)


def secret_file(key: str, service_name: str) -> str:
    """Where ``service_name``'s processes read the secret ``key``: /run/db-secrets/<name> in a
    database service, /run/secrets/<name> elsewhere. Refuses a secret not handed to that service."""
    entry = secret(key)
    if service_name not in entry.services:
        raise KeyError(f"secret {key!r} is not handed to {service_name!r}: add it to its Secret entry")
    folder = DB_SECRETS_DIR if service(service_name).database else SECRETS_DIR
    return f"{folder}/{entry.compose_name}"


def replacement_note(service_name: str, reasons: list[str], start_first: bool) -> str:
    """What a plan says, before it happens, about a service getting a new container."""
    how = ("started beside the old one, which drains once the new one is healthy: no downtime" if start_first
           else f"RESTARTS: {service(service_name).impact}")
    return f"{service_name} gets a new container ({', '.join(reasons)}): {how}"


def restarted_by(key: str, immutable: bool = False) -> tuple[Service, ...]:
    """The services a new value of the secret restarts. ``immutable``: secrets that cannot change
    under a running container (a swarm's: a new value is a new secret, in each service's spec), so
    each service that reads it restarts, even one that reads it only at its first start."""
    entry = secret(key)
    return tuple(s for s in SERVICES if entry in (secrets_of(s.name) if immutable else restarting_secrets(s.name)))


def ready(state: str, health: str) -> bool:
    """The one readiness rule: running, and its healthcheck passing (every service has one)."""
    return state == "running" and health == "healthy"


def unready(states: dict[str, tuple[str, str]], services: tuple[Service, ...]) -> list[str]:
    """Those of the services (``enabled(SERVICES, settings)``) that are not running and healthy, given
    {service: (state, health)}."""
    return [s.name for s in services if not ready(*states.get(s.name, ("missing", "")))]
