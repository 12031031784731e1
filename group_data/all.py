# Every knob kono-infra has, with its default. Override per host in inventory.py, per group in
# group_data/<group>.py, or for one run with `--data name=value`. No secrets here: see README.md.

# --- Hosts and users --------------------------------------------------------------------------
admin_user = "ubuntu"              # the cloud image's sudo user; bootstrap connects as it ("admin" on Debian)
deploy_user = "kono"               # unprivileged user deploy connects as: docker group, no sudo rights
deploy_authorized_keys = []        # SSH public keys (strings) allowed to log in as deploy_user; at least one
ssh_user = deploy_user             # whom pyinfra connects as (a host that sets deploy_user sets this too); bootstrap: --user <admin_user>
ssh_known_hosts_file = "known_hosts"   # pinned host keys (relative to where pyinfra runs)
ssh_strict_host_key_checking = "yes"   # unknown or changed host key: refuse; "accept-new" only if you ask
project_dir = "/srv/kono"          # the compose project on the host, owned by deploy_user
compose_project = "kono"           # fixed compose project name; volumes carry it, so never change it

# --- Docker Engine (bootstrap) ----------------------------------------------------------------
docker_source = "docker"           # "docker": Docker's apt repository; "distro": the distribution's docker.io
docker_apt_url = "https://download.docker.com/linux"   # Docker's repository, + /<debian|ubuntu>
docker_compose_distro_package = None   # "distro" compose v2 package; None picks by OS (Debian: docker-compose)
docker_log_max_size = "10m"        # json-file log rotation: size of one container log file
docker_log_max_file = 3            # json-file log rotation: files kept per container
docker_live_restore = True         # containers keep running while dockerd restarts or upgrades (not with engine = "swarm": Docker refuses)

# --- Images (official ones, pinned by tag) ----------------------------------------------------
mysql_image = "mysql:8.4"          # db_production and db_dev
node_image = "node:22-slim"        # api
nginx_image = "nginx:1.27"         # nginx
maintainer_base_image = "ubuntu:24.04"  # base of the maintainer image (sshd, git, mysql client)

# --- Ports ------------------------------------------------------------------------------------
http_port = 80                     # nginx, on every address of the host
https_port = 443                   # nginx's HTTPS, on every address of the host (when https is not "off")
maintainer_ssh_port = 8022         # the maintainer container's sshd, on every address of the host
db_dev_port = 3307                 # db_dev on the host's 127.0.0.1 only (production DB is never published)
api_port = 3000                    # the api inside the compose network (not published)

# --- Maintainer container ---------------------------------------------------------------------
maintainer_users = {               # login -> SSH public keys; each user is in the container's sudo group
    "sysop": [],
    "wheel": [],
}
# Their sudo passwords come from the operator, never from here: see README.md, "Secrets".
local_secrets_dir = "secrets"      # git-ignored local directory of supplied secrets (see README.md, "Secrets")
secrets_sops_file = None           # the team's SOPS-encrypted secrets (age), committed: read after $KONO_* and before local_secrets_dir

# --- Code the maintainer deploys (git URLs; None until there is one) --------------------------
api_repo = None                    # the API's repository, cloned into api_build by `kono-deploy`
api_branch = "main"                # the API's branch to deploy
app_repo = None                    # the web app's repository, built into app_build (served at /)
app_branch = "main"                # the web app's branch to deploy
releases_kept = 5                  # releases of the API and of the app kept for `kono-deploy --rollback`

# --- HTTPS (README.md, "HTTPS") ---------------------------------------------------------------
https = "off"                      # "off"; "acme": certificates from an ACME CA; "provided": yours, as secrets
domains = []                       # DNS names served over HTTPS, each pointing at the host; the first names the certificate
acme_email = None                  # contact address given to the ACME CA (optional)
acme_directory_url = "https://acme-v02.api.letsencrypt.org/directory"  # Let's Encrypt; staging first (README)
acme_ca_bundle = None              # local PEM file to trust for a private ACME CA's own HTTPS (tests: Pebble)
acme_image = "goacme/lego:v4.27.0" # the ACME client (lego v4; v5 changed its command line)
hsts_max_age = 0                   # Strict-Transport-Security max-age in seconds; 0: none (browsers remember it)

# --- Backups (README.md, "Backups") ----------------------------------------------------------
backup_repository = None           # restic repository, one per host, e.g. "s3:s3.amazonaws.com/bucket/kono-web1"; None: no scheduled backups
backup_schedule = "03:00"          # daily backup, UTC: both databases, assets, host keys, config
backup_check_schedule = "sun 04:30"  # weekly `restic check`, reading a rotating seventh of the data
backup_keep_daily = 7              # retention (restic forget --prune): daily snapshots kept
backup_keep_weekly = 4             # weekly snapshots kept
backup_keep_monthly = 6            # monthly snapshots kept
restic_image = "restic/restic:0.18.0"  # restic, copied into the backup image (built on mysql_image for its mysqldump)
pitr = False                       # point-in-time recovery: db_production's binary logs shipped continuously (needs backup_repository)
pitr_max_lag_seconds = 60          # a commit reaches the repository within this; status says NOT OK past twice it
pitr_full_backup_days = 7          # with pitr: db_production's full dump (the base) every this many days; the rest daily
pitr_days = 7                      # with pitr: restore to any second of the last this many days

# --- Monitoring (README.md, "Monitoring") -----------------------------------------------------------
monitoring = False                 # the host's metrics and the stack's own, in Prometheus's format, on metrics_port
metrics_port = 9100                # where they are served (node_exporter's /metrics)
metrics_allowed_cidrs = []         # sources that may scrape metrics_port (needs firewall); []: only through an SSH tunnel
alert_webhook = False              # send each alert, and its end, to the webhook URL supplied as the secret alerts/webhook_url
alert_heartbeat = False            # POST to the URL supplied as alerts/heartbeat_url every minute or so while alerting lives (a dead man's switch)
alert_email_to = []                # email each alert, and its end, to these addresses too (through alert_smtp_server)
alert_email_from = None            # the address those emails come from
alert_smtp_server = None           # the mail server, "host:port" (587 as a rule); STARTTLS always, its certificate checked
alert_smtp_username = None         # the login on it (None: it takes mail without one); its password is the secret alerts/smtp_password
alert_smtp_ca_bundle = None        # local PEM file to trust for the mail server instead of the public CAs (tests: the lab's CA)
metrics_retention_days = 15        # Prometheus keeps the host's metrics this many days...
metrics_retention_mb = 1024        # ... and at most this many MB of them (the oldest go first)
node_exporter_image = "prom/node-exporter:v1.9.0"   # serves the host's metrics (disk, memory) and the stack's
prometheus_image = "prom/prometheus:v2.53.3"        # collects the metrics and evaluates files/monitoring/alerts.yml
alertmanager_image = "prom/alertmanager:v0.28.1"    # sends the alerts (with alert_webhook; a busybox image: its healthcheck uses wget)

# --- Host hardening (bootstrap; README.md, "Hardening") ---------------------------------------
host_ssh_allowed_cidrs = ["0.0.0.0/0", "::/0"]     # sources that may reach the host's SSH (port 22)
maintainer_allowed_cidrs = ["0.0.0.0/0", "::/0"]   # sources that may reach the maintainer's SSH (maintainer_ssh_port)
maintainer_connections_per_minute = 30  # new connections per source and minute to the maintainer port; more are dropped
firewall = True                    # nftables table "inet kono": only SSH, HTTP(S) and the maintainer port get in
auto_reboot = False                # unattended-upgrades reboots by itself when an update needs it
auto_reboot_time = "04:00"         # when it may (the host's time zone, UTC on cloud images)
debian_security_url = "http://security.debian.org/debian-security"  # added on Debian hosts whose apt sources lack it
memory_limits = {}                 # service -> memory limit, e.g. {"db_production": "2g"}; none by default

# --- Cluster (README.md, "Cluster") ----------------------------------------------------------
engine = "compose"                 # "compose": this host runs the stack alone; "swarm": the inventory's swarm hosts form one cluster
swarm_role = "manager"             # with swarm: "manager" or "worker"; 1 or 3 managers (3 keep a quorum when one dies)
swarm_labels = []                  # with swarm: what the node runs: "edge" (nginx), "app" (api), "db" (databases, backups, maintainer)
swarm_advertise_address = None     # with swarm: the private address other nodes reach this one at; None: the inventory's address
swarm_remove_strays = False        # with swarm: a deploy drains and removes the nodes the inventory no longer names (else it names them)
swarm_address_pool = "10.0.0.0/8"  # with swarm: where overlay networks take their /24s (Docker's default), fixed when the swarm is created; must hold no node's address
swarm_overlay_encryption = True    # with swarm: traffic between nodes in IPsec (needs the kernel's ESP: checked); False only on a private network you trust
api_replicas = 2                   # with swarm: copies of the api, spread over the nodes labelled "app"

# --- Stack ------------------------------------------------------------------------------------
server_name = "_"                  # nginx server_name ("_" answers any name)
db_production_name = "kono"        # database created in db_production on first start
db_dev_name = "dev"                # database created in db_dev on first start
api_answer_timeout = 60            # seconds nginx waits for the api's answer; unanswered, a GET goes to another replica (a dead node's)
compose_wait_timeout = 300         # seconds `compose up --wait` waits for every service to be healthy
deploy_lock_wait = 600             # seconds a deploy waits for another one on the same host to finish
