"""What the tests and the demo do with throwaway hosts: inventories, the real pyinfra CLI, test doubles.

Every pyinfra run here is the real CLI in a subprocess, over real SSH, with strict host key checking
against the lab's own known_hosts file.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import docker
import paramiko
from docker.transport.sshconn import SSHHTTPAdapter

from kono import operator_input
from kono.commands import running_containers
from kono.deploy_run import deploy_commit
from kono.services import SERVICES, enabled, root_password_file, script, secret
from kono.settings import Settings, load
from tests.testhost import CACHE_DIR, Lab, TestHost, cached_rootfs, die_with_parent

REPO = Path(__file__).resolve().parent.parent
IMAGES = Path(__file__).resolve().parent / "images"
SAMPLE = Path(__file__).resolve().parent / "sample"
MAINTAINERS = ("sysop", "wheel")
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
BASE_IMAGE = "kono-testdouble/debian:trixie"
# Stand-in directory -> the group_data knob whose default (official) tag it is built under.
STANDINS = {"mysql": "mysql_image", "node": "node_image", "nginx": "nginx_image",
            "ubuntu": "maintainer_base_image", "lego": "acme_image", "restic": "restic_image"}
# Those only a host with monitoring = True runs: built on the hosts that ask for them.
MONITORING_STANDINS = {"prometheus": "prometheus_image", "alertmanager": "alertmanager_image",
                       "node-exporter": "node_exporter_image"}


# A well-formed public key, for settings that need one (deploy_authorized_keys) and never log in.
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhx7mzSuwLbv5Q0jcW2a1rW4yUBnbprqZhYOoN0SaHl ops@laptop"


def group_defaults() -> dict:
    defaults: dict = {}
    exec((REPO / "group_data" / "all.py").read_text(), {}, defaults)
    return defaults


def settings_of(**knobs) -> Settings:
    """The checked settings of a host with these knobs over group_data's defaults."""
    return load(SimpleNamespace(**{**group_defaults(), "deploy_authorized_keys": [KEY], **knobs}))


DEFAULTS = group_defaults()
DEFAULT_SERVICES = enabled(SERVICES, settings_of())  # the services of a host deployed with the defaults (no HTTPS)
DEPLOY_USER = DEFAULTS["deploy_user"]
PROJECT_DIR = DEFAULTS["project_dir"]


def labels(service: str) -> list[str]:
    """The compose labels that find a service's container (its name changes with each rollout)."""
    return [f"com.docker.compose.project={DEFAULTS['compose_project']}", f"com.docker.compose.service={service}"]


def container(service: str) -> str:
    """Shell, for commands run on the host: the id of the service's running container there, compose's
    or a swarm task's (on a cluster's node)."""
    return f"$({{ {running_containers(DEFAULTS['compose_project'], service)}; }} | head -n 1)"


# SQL on stdin as the api's database account, its password read from the host's secret file (a
# database container's own copy is the one it started with: a rotation since leaves it behind), and
# handed to the client by environment, never on a command line.
API_SQL = (f"MYSQL_PWD=$(cat {PROJECT_DIR}/{secret('production/db_api_password').path}) "
           f"docker exec -i -e MYSQL_PWD {container('db_production')} mysql -uapi -N kono")


def sdk_container(client, service: str):
    """The docker SDK's object for the service's (running) container."""
    return client.containers.list(filters={"label": labels(service)})[0]


# The lab's daily backup_schedule: twelve hours from when the tests started (UTC), so no scheduled
# backup runs in the middle of a test that counts the runs it makes (group_data's 03:00 did, in a
# run at 03:00). The schedule itself is tested with one of its own (test_backups.py).
QUIET_BACKUP_SCHEDULE = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=12)).strftime("%H:%M")


def write_inventory(lab: Lab, hosts: list[TestHost], path: Path, **data) -> Path:
    """An inventory like an operator's, for the lab's hosts; ``data`` overrides knobs per run.

    Maintainer passwords are read from ``<lab>/secrets`` (see ``write_maintainer_passwords``).
    """
    host_data = {
        "admin_user": "admin",
        "deploy_authorized_keys": [lab.public_key],
        "docker_source": "distro",  # Docker's own repository is unreachable here
        "maintainer_users": {login: [lab.public_key] for login in MAINTAINERS},
        "local_secrets_dir": str(lab.workdir / "secrets"),
        "ssh_key": str(lab.key),
        "ssh_known_hosts_file": str(lab.known_hosts),
        "backup_schedule": QUIET_BACKUP_SCHEDULE,
        **data,
    }
    entries = [(h.address, host_data) for h in hosts]
    path.write_text("# Written by tests/lab.py for throwaway hosts.\n"
                    f"kono_hosts = {entries!r}\n")
    return path


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    @property
    def changes(self) -> int:
        return self.json["results"]["totals"]["success"]


def pyinfra(inventory: Path, deploy_file: str, *args: str, check: bool = True,
            timeout: float = 900, env: dict[str, str] | None = None, cwd: Path = REPO) -> Run:
    """Run the real pyinfra CLI from the repository root, non-interactively.

    ``-y`` (execute without asking) is added unless ``--dry`` plans only: a plan without ``-y``
    also detects which operations would change.
    """
    yes = [] if "--dry" in args else ["-y"]
    cmd = [PYINFRA, *yes, *args, str(inventory), deploy_file]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    run = Run(cmd, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{run.output[-6000:]}")
    return run


def pyinfra_background(inventory: Path, deploy_file: str, *args: str, cwd: Path = REPO,
                       env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the real pyinfra CLI and return at once (to race it or kill it)."""
    return subprocess.Popen([PYINFRA, "-y", *args, str(inventory), deploy_file], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def kill_when_operation_starts(run: subprocess.Popen, operation: str, seconds: float = 300) -> tuple[list[str], str]:
    """SIGKILL a pyinfra run (pyinfra_background) as soon as it says it starts ``operation``
    ("--> Starting operation: [<deploy> | ]<operation>"). Returns (its lines up to then, the rest
    it printed); fails, with its output, when it ended or ``seconds`` passed first."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            line = run.stdout.readline()
            seen.append(line)
            if not line or ("--> Starting operation: " in line and operation in line):
                break
    finally:
        run.send_signal(signal.SIGKILL)
        rest, _ = run.communicate(timeout=30)
    assert operation in seen[-1], "".join(seen)[-3000:]
    return seen, rest


def bootstrap(inventory: Path, *args: str, **kwargs) -> Run:
    return pyinfra(inventory, "bootstrap.py", "--user", "admin", *args, **kwargs)


def deploy(inventory: Path, *args: str, **kwargs) -> Run:
    return pyinfra(inventory, "deploy.py", *args, **kwargs)


def drift(inventory: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The drift check (kono/cli/drift.py) on an inventory, as a scheduled job runs it: no standard input."""
    return subprocess.run([sys.executable, "-m", "kono.cli.drift", str(inventory)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def status(inventory: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The status check (kono/cli/status.py) on an inventory, with no standard input."""
    return subprocess.run([sys.executable, "-m", "kono.cli.status", str(inventory)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


BACKUP_SCRIPT = f"sh {script('backup')}"  # the backup service's script, run in its container


def last_backup_record(host: TestHost) -> str:
    """The backup service's record of its last success on ``host`` ("" before the first)."""
    return host.ssh(f"docker exec {container('backup')} cat /state/last-success 2>/dev/null || true",
                    user=DEPLOY_USER).stdout.strip()


def metric_samples(text: str) -> dict[str, float]:
    """{'name{labels}': value} of every sample line of a Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def promtool_path() -> str:
    """Prometheus's promtool: $PROMTOOL, Debian's that `.ci/setup` unpacks into .venv/prometheus, or one on PATH."""
    return _unpacked_tool("promtool", "PROMTOOL", "prometheus")


def amtool_path() -> str:
    """Alertmanager's amtool: $AMTOOL, Debian's that `.ci/setup` unpacks into .venv/alertmanager, or one on PATH."""
    return _unpacked_tool("amtool", "AMTOOL", "alertmanager")


def _unpacked_tool(name: str, variable: str, folder: str) -> str:
    unpacked = REPO / f".venv/{folder}/usr/bin/{name}"
    found = os.environ.get(variable) or (str(unpacked) if unpacked.exists() else shutil.which(name))
    assert found, f"no {name}: `bash .ci/setup` unpacks Debian's into .venv/{folder} (or set {variable})"
    return found


def backup_tool(*args: str) -> subprocess.CompletedProcess:
    """The operator's backup command (kono/cli/backup.py), from the repository root."""
    return subprocess.run([sys.executable, "-m", "kono.cli.backup", *args], cwd=REPO, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=600)


def rotate(inventory: Path, key: str, *args: str, **kwargs) -> Run:
    return pyinfra(inventory, "rotate.py", *args, "--data", f"rotate={key}", **kwargs)


IMAGE_MODES = ("doubles", "official")


def image_mode() -> str:
    """KONO_TEST_IMAGES: "doubles" (default; built here, no registry needed) or "official"."""
    mode = os.environ.get("KONO_TEST_IMAGES", "doubles")
    if mode not in IMAGE_MODES:
        raise ValueError(f"KONO_TEST_IMAGES: expected one of {', '.join(IMAGE_MODES)}, got {mode!r}")
    return mode


class ImageUnavailable(RuntimeError):
    """An official image could not be pulled: the run stops; it never falls back to a double."""


def load_images(host: TestHost, user: str = DEPLOY_USER, monitoring: bool = False) -> None:
    """The images the stack pins, in the host's Docker: test doubles built here (images/README.md),
    or, with KONO_TEST_IMAGES=official, the official images pulled from their registry; with
    ``monitoring``, those of the monitoring services too."""
    groups = [STANDINS, *([MONITORING_STANDINS] if monitoring else [])]
    if image_mode() == "official":
        for tag in [DEFAULTS[knob] for standins in groups for knob in standins.values()]:
            pulled = host.ssh(f"docker pull --quiet {tag}", user=user, check=False, timeout=900)
            if pulled.returncode != 0:
                reason = (pulled.stderr.strip().splitlines() or ["no output"])[-1]
                raise ImageUnavailable(f"KONO_TEST_IMAGES=official: cannot pull {tag} on the test host: {reason}")
        return
    base = cached_rootfs("image-base", ["--variant=minbase"])
    for standins in groups:  # each group its own cache: asking for monitoring rebuilds no other double
        cache = doubles_cache(base, standins)
        with open(cache.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another run building the same doubles: wait, then load them
            if not cache.exists():
                _build_doubles(host, user, base, standins, cache)
                continue
        with open(cache, "rb") as tar:
            try:
                loaded = subprocess.run([*host.ssh_args(user), "docker load --quiet"], stdin=tar, capture_output=True,
                                        timeout=600)
            except subprocess.TimeoutExpired:  # seen once in CI (a fresh host, 10 minutes): say what the host was doing
                seen = host.ssh("uptime; df -h /var/lib/docker | tail -n 1; systemctl is-active docker; "
                                "docker images --format '{{.Repository}}:{{.Tag}}' | head -n 20", user=user,
                                check=False, timeout=60)
                raise RuntimeError(f"docker load of {cache} into {host.name} took over 600 s; the host: "
                                   f"{seen.stdout}{seen.stderr}") from None
        if loaded.returncode != 0:
            raise RuntimeError(f"docker load of {cache} failed: {loaded.stderr.decode()[-2000:]}")


def _build_doubles(host: TestHost, user: str, base: Path, standins: dict[str, str], cache: Path) -> None:
    """Build the doubles on ``host`` from its Debian base, then keep them in ``cache``."""
    with open(base, "rb") as tar:
        subprocess.run([*host.ssh_args(user), f"docker import - {BASE_IMAGE}"], stdin=tar,
                       check=True, capture_output=True, timeout=300)

    def build(folder: str) -> None:
        context = subprocess.run(["tar", "-C", IMAGES / folder, "-c", "."], capture_output=True,
                                 check=True).stdout
        proc = host.ssh(f"docker build --quiet --tag {DEFAULTS[standins[folder]]} -", user=user,
                        input=context, check=False, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"building the {folder} stand-in failed (exit {proc.returncode}):\n"
                               f"{proc.stderr.decode()[-3000:]}{proc.stdout.decode()[-1000:]}")

    with ThreadPoolExecutor(len(standins)) as pool:
        list(pool.map(build, standins))
    partial = cache.with_suffix(".partial")
    with open(partial, "wb") as out:
        subprocess.run([*host.ssh_args(user), f"docker save {BASE_IMAGE} "
                        f"{' '.join(DEFAULTS[knob] for knob in standins.values())}"], stdout=out, check=True, timeout=600)
    partial.rename(cache)


def doubles_cache(base: Path, standins: dict[str, str]) -> Path:
    """Where the doubles of ``standins`` are kept once built (one `docker save` tar, loaded into each
    next host): named by a digest of the base image's tar and of every file of their folders, so a
    changed Dockerfile or base builds them anew."""
    digest = hashlib.sha256(base.name.encode())
    for folder in sorted(standins):
        for path in sorted((IMAGES / folder).rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(IMAGES).as_posix().encode() + b"\0" + path.read_bytes())
    return CACHE_DIR / f"doubles-{digest.hexdigest()[:16]}.tar"


def containers_and_git(host: TestHost) -> list[tuple[str, str]]:
    """(where, text) for what every user of the host or the repository can read: `docker inspect` of
    each container on the host (its env, labels, command), and each file git tracks here."""
    # One `docker inspect` over one SSH session (the SDK's request per container over paramiko once lost
    # its transport half-way on a loaded lab: seen).
    inspected = host.ssh("ids=$(docker ps -aq); [ -z \"$ids\" ] && echo [] || docker inspect $ids", user="kono").stdout
    seen = [(f"docker inspect {c['Name']}", json.dumps(c)) for c in json.loads(inspected)]
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, text=True,
                             check=True).stdout.split("\0")
    seen.extend((f"git: {path}", (REPO / path).read_text(errors="replace")) for path in tracked
                if path and (REPO / path).is_file())
    return seen


def git_commit() -> str:
    """This checkout's commit, as the deploy records it (kono/deploy_run.py)."""
    return deploy_commit().split("-")[0]


def local_user() -> str:
    import getpass
    return getpass.getuser()


def host_secret(host: TestHost, env: str, name: str) -> str:
    """A stack secret's value, read over SSH as the deploy user (the test is the operator here)."""
    return host.ssh(f"cat {PROJECT_DIR}/{secret(f'{env}/{name}').path}", user=DEPLOY_USER).stdout.strip()


def mysql(host: TestHost, user: str, password: str, sql: str, server: str = "db_production",
          database: str = "kono") -> subprocess.CompletedProcess:
    """The mysql client in the maintainer container; the password goes by stdin, never argv."""
    command = (f"docker exec -i {container('maintainer')} sh -c 'read -r MYSQL_PWD; export MYSQL_PWD; "
               f"exec mysql -N -h {server} -u {user} {database}'")
    return host.ssh(command, user=DEPLOY_USER, check=False, input=f"{password}\n{sql}\n")


def maintainer(host: TestHost, command: str, login: str = "sysop", check: bool = True,
               input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command in the maintainer container, logged in over SSH with a key, as the team does."""
    return subprocess.run([*host.ssh_args(login, port=DEFAULTS["maintainer_ssh_port"]), command], input=input,
                          text=True, capture_output=True, check=check, timeout=timeout)


def add_greeting(host: TestHost, message: str) -> subprocess.CompletedProcess:
    """A row in db_production for the sample API's /api/greeting to read, written as the api user."""
    password = host_secret(host, "production", "db_api_password")
    return mysql(host, "api", password,
                 "CREATE TABLE IF NOT EXISTS greetings (id INT AUTO_INCREMENT PRIMARY KEY, message VARCHAR(64)); "
                 f"INSERT INTO greetings (message) VALUES ('{message}');")


def data_fingerprint(host: TestHost) -> dict[str, str]:
    """Every row of every table of both databases (ordered dumps, without dates) and every uploaded asset
    (sha256 of each file): equal fingerprints, equal data. Read as the deploy user on the host."""
    from kono.services import databases
    found = {}
    for service in databases():
        name = DEFAULTS[service.database[1]]
        dump = host.ssh(f"docker exec {container(service.name)} sh -c 'MYSQL_PWD=$(cat {root_password_file(service.name)}) "
                        f"exec mysqldump -uroot --skip-dump-date --skip-comments --order-by-primary "
                        f"--skip-extended-insert --databases {name}'", user=DEPLOY_USER)
        found[service.name] = dump.stdout
    found["assets"] = host.ssh(f"docker exec {container('maintainer')} sh -c 'cd /srv/static && "
                               "find . -type f -exec sha256sum {} + | sort'", user=DEPLOY_USER).stdout
    return found


def write_maintainer_passwords(lab: Lab, passwords: dict[str, str]) -> None:
    """The operator's local password files (git-ignored in a real checkout), one per login."""
    folder = lab.workdir / "secrets"
    folder.mkdir(mode=0o700, exist_ok=True)
    for login, password in passwords.items():
        path = folder / f"maintainer_password_{login}"
        path.write_text(password + "\n")
        path.chmod(0o600)


def pin_maintainer_host_key(host: TestHost, port: int = DEFAULTS["maintainer_ssh_port"]) -> None:
    """Add the maintainer container's host key to the lab's known_hosts, read over the trusted
    channel (SSH to the host itself), as an operator would before first logging in."""
    pin_maintainer_host_key_of(host, container("maintainer"), port)


def pin_maintainer_host_key_of(host: TestHost, maintainer: str, port: int = DEFAULTS["maintainer_ssh_port"]) -> None:
    """The same, for the maintainer container ``maintainer`` (shell giving its id) names."""
    key = host.ssh(f"docker exec {maintainer} cat /var/lib/kono-ssh/etc/ssh/ssh_host_ed25519_key.pub",
                   user=DEPLOY_USER).stdout.split()[:2]
    with open(host.lab.known_hosts, "a") as known:
        known.write(f"[{host.address}]:{port} {' '.join(key)}\n")


class _HostSSHAdapter(SSHHTTPAdapter):
    """The docker SDK's SSH transport, with the lab's key and known_hosts file (strict)."""

    def __init__(self, base_url: str, key_filename: str, known_hosts: str) -> None:
        self._key_filename = key_filename
        self._known_hosts = known_hosts
        super().__init__(base_url)

    def _create_paramiko_client(self, base_url: str) -> None:
        super()._create_paramiko_client(base_url)
        self.ssh_client.load_host_keys(self._known_hosts)
        self.ssh_client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.ssh_params["key_filename"] = self._key_filename


def docker_client(host: TestHost, user: str = DEPLOY_USER) -> docker.DockerClient:
    """The docker SDK, over SSH to a lab host: a real client, independent of kono's own code."""
    base_url = f"ssh://{user}@{host.address}:22"
    client = docker.DockerClient(base_url=base_url, use_ssh_client=True, version="1.41", timeout=30)
    adapter = _HostSSHAdapter(base_url, str(host.lab.key), str(host.lab.known_hosts))
    client.api.mount("http+docker://ssh", adapter)
    client.api._custom_adapter = adapter
    return client


SAMPLE_API_VERSION = re.compile(r"const VERSION = '([^']*)';")  # in tests/sample/api/server.js


class GitServer:
    """Bare repositories of the sample API and app, served read-only by `git daemon` on the lab's
    bridge address, where the maintainer container clones from."""

    def __init__(self, lab: Lab) -> None:
        workdir, address = lab.workdir, lab.gateway
        self.root = workdir / "git"
        self.root.mkdir()
        self.port = _free_port(address)
        self.url = f"git://{address}:{self.port}"
        self._proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={self.root}",
             f"--listen={address}", f"--port={self.port}", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex((address, self.port)) == 0:
                    break
            time.sleep(0.1)
        for name in ("api", "app"):
            work = workdir / f"{name}-work"
            shutil.copytree(SAMPLE / name, work)
            _git(work, "init", "--quiet", "--initial-branch=main")
            self.commit(name, "first version")
            subprocess.run(["git", "clone", "--quiet", "--bare", work, self.root / f"{name}.git"], check=True)
            _git(work, "remote", "add", "origin", self.root / f"{name}.git")

    def repo(self, name: str) -> str:
        return f"{self.url}/{name}.git"

    def _api_server(self) -> Path:
        """The sample API's server, in the working copy its commits are made from."""
        return self.root.parent / "api-work" / "server.js"

    def api_version(self) -> str:
        """The version string of the sample API's newest commit."""
        return SAMPLE_API_VERSION.search(self._api_server().read_text()).group(1)

    def push_api(self, version: str, broken: bool = False) -> None:
        """A new commit of the sample API: a new version string, or a server that dies at start."""
        work = self._api_server()
        text = SAMPLE_API_VERSION.sub(f"const VERSION = '{version}';", work.read_text())
        text = text.replace("process.exit(7); // broken release\n", "")
        if broken:
            text = text.replace("'use strict';\n", "'use strict';\nprocess.exit(7); // broken release\n", 1)
        work.write_text(text)
        self.commit("api", version, push=True)

    def commit(self, name: str, message: str, edit: tuple[str, str, str] | None = None,
               push: bool = False) -> None:
        """Commit the sample ``name`` (optionally after replacing old->new in one file) and push it."""
        work = self.root.parent / f"{name}-work"
        if edit:
            path, old, new = edit
            text = (work / path).read_text()
            assert old in text, f"{old!r} not in {path}"
            (work / path).write_text(text.replace(old, new))
        _git(work, "add", "--all", "--force")
        _git(work, "commit", "--quiet", "-m", message)
        if push:
            _git(work, "push", "--quiet", "origin", "main")

    def __enter__(self) -> GitServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=10)


def make_certificate(path_prefix: Path, names: list[str], issuer: tuple | None = None, days: float = 90,
                     ip: str | None = None, ca: bool = False) -> tuple:
    """A key and certificate written as <prefix>.key / <prefix>.pem: self-signed (a CA with ``ca``), or
    signed by ``issuer`` (its (key, certificate)). Returns (key, certificate) for signing others."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    common_name = names[0] if names else ip or f"kono test CA {x509.random_serial_number() % 10**6}"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[1].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    alt = [x509.DNSName(n) for n in names] + ([x509.IPAddress(ipaddress.ip_address(ip))] if ip else [])
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    certificate = builder.sign(issuer[0] if issuer else key, hashes.SHA256())
    path_prefix.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path_prefix.with_suffix(".pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, certificate


class AcmeServer:
    """Pebble, the ACME CA for tests (Debian's package), on the lab's bridge address, with real HTTP-01
    validation: it fetches the challenge from port 80 of the address its DNS gives for the domain.
    That DNS is pebble-challtestsrv, answering every name with ``points_to`` (changed with
    ``point_to``). Pebble's own HTTPS API uses a test CA made here (``ca_bundle``, the operator's
    acme_ca_bundle); what it issues chains to its root, fetched from its management port (``root``)."""

    def __init__(self, lab: Lab, points_to: str) -> None:
        address = lab.gateway
        self.workdir = lab.workdir / "pebble"
        self.workdir.mkdir(exist_ok=True)
        ca = make_certificate(self.workdir / "api-ca", [], days=30, ca=True)
        make_certificate(self.workdir / "api", [], issuer=ca, days=30, ip=address)
        self.ca_bundle = self.workdir / "api-ca.pem"
        port, management, dns, control = (_free_port(address) for _ in range(4))
        config = {"pebble": {"listenAddress": f"{address}:{port}", "managementListenAddress": f"{address}:{management}",
                             "certificate": str(self.workdir / "api.pem"), "privateKey": str(self.workdir / "api.key"),
                             "httpPort": DEFAULTS["http_port"], "tlsPort": DEFAULTS["https_port"],
                             "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        (self.workdir / "pebble.json").write_text(json.dumps(config))
        self.directory_url = f"https://{address}:{port}/dir"
        self.control = f"http://{address}:{control}"
        self.management = f"https://{address}:{management}"
        self._procs = [
            subprocess.Popen(["pebble-challtestsrv", "-defaultIPv4", points_to, "-defaultIPv6", "",
                              "-dns01", f"{address}:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                              "-management", f"{address}:{control}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent),
            # No PEBBLE_VA_ALWAYS_VALID: every challenge is really fetched. No random validation delay,
            # and no nonces rejected at random (lego retries them, but a test should not depend on it).
            # No valid authorization reused in a new order (Pebble's README: half the time by default):
            # each order fetches its challenge, so a renewal that must fail (its DNS points elsewhere)
            # fails every time (CI once saw one skip its challenge and succeed).
            subprocess.Popen(["pebble", "-config", str(self.workdir / "pebble.json"), "-dnsserver", f"{address}:{dns}"],
                             stdout=open(self.workdir / "pebble.log", "wb"), stderr=subprocess.STDOUT,
                             env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                                  "PEBBLE_AUTHZREUSE": "0"},
                             preexec_fn=die_with_parent),
        ]
        for where in ((address, port), (address, management), (address, control)):
            deadline = time.monotonic() + 15
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(where) == 0:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pebble did not listen on {where}: {self.log()[-2000:]}")
                time.sleep(0.1)

    def root(self) -> str:
        """Pebble's root certificate (PEM), which every certificate it issues chains to."""
        import ssl
        import urllib.request
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context, timeout=10) as response:
            return response.read().decode()

    def point_to(self, address: str) -> None:
        """Make the DNS Pebble validates with answer ``address`` for every name."""
        import urllib.request
        request = urllib.request.Request(f"{self.control}/set-default-ipv4", method="POST",
                                         data=json.dumps({"ip": address}).encode())
        urllib.request.urlopen(request, timeout=10).read()

    def log(self) -> str:
        return (self.workdir / "pebble.log").read_text(errors="replace")

    def __enter__(self) -> AcmeServer:
        return self

    def __exit__(self, *exc) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)


class ResticServer:
    """A restic repository served over the network by a second process on the lab's bridge: rclone's
    REST server (`rclone serve restic`, Debian's rclone), the real protocol restic's rest: backend
    speaks. ``stop``/``start`` make it unreachable and back, on the same address and data. Each
    server has a folder of its own: two of one lab are two repositories, never one seen twice."""

    def __init__(self, lab: Lab, name: str = "restic-repository") -> None:
        self.address, self.root = lab.gateway, Path(tempfile.mkdtemp(prefix=f"{name}-", dir=lab.workdir))
        self.port = _free_port(self.address)
        self.url = f"rest:http://{self.address}:{self.port}/"
        self._proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self._proc = subprocess.Popen(["rclone", "serve", "restic", "--addr", f"{self.address}:{self.port}",
                                       str(self.root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      preexec_fn=die_with_parent)
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as probe:
                if probe.connect_ex((self.address, self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("rclone serve restic did not listen")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=10)

    def __enter__(self) -> ResticServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _git(work: Path, *args) -> None:
    subprocess.run(["git", "-C", str(work), "-c", "user.name=kono tests", "-c", "user.email=tests@kono.invalid",
                    *[str(a) for a in args]], check=True, capture_output=True)


class WebhookReceiver:
    """The team's chat and dead man's switch in the lab: an HTTP server on the lab's bridge that keeps
    every POST (its path and JSON body, with when it came). Alertmanager is given its URLs, each with a
    random token in the path, as a real webhook URL carries one."""

    def __init__(self, lab: Lab) -> None:
        import http.server
        import secrets as random_values
        self.address, self.port = lab.gateway, _free_port(lab.gateway)
        self.token = random_values.token_urlsafe(18)
        self.received: list[tuple[float, str, dict]] = []
        received, lock = self.received, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"not json": body.decode(errors="replace")}
                with lock:
                    received.append((time.time(), self.path, payload))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer((self.address, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://{self.address}:{self.port}/{name}/{self.token}"

    def posts(self, name: str) -> list[tuple[float, dict]]:
        """What came to ``url(name)``, in order: (when, JSON body)."""
        return [(at, body) for at, path, body in list(self.received) if path == f"/{name}/{self.token}"]

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


# The team's encrypted secrets (kono/operator_input.py): throwaway age identities, files encrypted by sops.
def age_identity(path: Path) -> str:
    """A new age identity in ``path``; returns its recipient (public key)."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()


def encrypt_secrets(plain: str, path: Path, *recipients: str) -> None:
    """As an operator would with `sops encrypt`: the plain text on standard input, never in a file."""
    encrypted = operator_input.run_sops("encrypt", "--age", ",".join(recipients), "--input-type", "yaml",
                                        "--output-type", "yaml", "--filename-override", str(path), "/dev/stdin",
                                        input=plain)
    encrypted.check_returncode()
    path.write_text(encrypted.stdout)


class MailReceiver:
    """The team's mailbox in the lab: an SMTP submission server (aiosmtpd) on the lab's bridge, as strict
    as a provider's: STARTTLS before anything (its certificate, for the bridge's address, signed by
    ``ca``: the operator's alert_smtp_ca_bundle), then a login with ``password``, refused otherwise.
    Keeps each message it accepts (when, envelope recipients, the parsed email)."""

    def __init__(self, lab: Lab, ca: tuple) -> None:
        import email
        import email.policy
        import secrets as random_values
        import ssl
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

        class Submission(SMTP):
            # AUTH LOGIN's prompts as Postfix (Cyrus SASL) and Dovecot send them, and as clients expect
            # them (Alertmanager's LOGIN, which it picks when a server lists it first, answers only
            # these: notify/email/email.go); aiosmtpd's own are "User Name\0" and "Password\0".
            AuthLoginUsernameChallenge = "Username:"
            AuthLoginPasswordChallenge = "Password:"

        class Server(Controller):
            def factory(self):
                return Submission(self.handler, **self.SMTP_kwargs)

        self.address, self.port = lab.gateway, _free_port(lab.gateway)
        self.username, self.password = "kono-alerts", random_values.token_urlsafe(18)
        self.received: list[tuple[float, list[str], email.message.EmailMessage]] = []
        self.refused_logins = 0
        make_certificate(lab.workdir / "mail-server", [], issuer=ca, ip=self.address)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(lab.workdir / "mail-server.pem", lab.workdir / "mail-server.key")
        receiver = self

        def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
            good = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == receiver.username
                    and auth_data.password.decode() == receiver.password)
            receiver.refused_logins += not good
            return AuthResult(success=good, handled=False)  # (handled: aiosmtpd answers the client itself)

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                receiver.received.append((time.time(), list(envelope.rcpt_tos), message))
                return "250 OK"

        self._controller = Server(Handler(), hostname=self.address, port=self.port, tls_context=tls,
                                      require_starttls=True, auth_required=True, auth_require_tls=True,
                                      authenticator=authenticate)
        self._controller.start()

    @property
    def server(self) -> str:
        """alert_smtp_server: "host:port"."""
        return f"{self.address}:{self.port}"

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for _, _, message in list(self.received)]

    def __enter__(self) -> MailReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@dataclass
class LoadResult:
    requests: int
    failures: list[str]  # "<path> <status or error>" for each non-2xx answer and each error of any kind
    longest: float  # seconds, the slowest answer
    window: float = 0.0  # seconds from the first failure to the last (0 without failures)
    stopped_early: int = 0  # clients no longer loading when the load was stopped (died, or ran out)

    def __str__(self) -> str:
        return (f"{self.requests} requests, {len(self.failures)} failed, longest {self.longest:.2f} s"
                + (f", {self.stopped_early} clients stopped early" if self.stopped_early else "")
                + (f": {sorted(set(self.failures))[:5]}" if self.failures else ""))


class Load:
    """Clients in a loop against a host's published HTTP port (through nginx), each request on a new
    connection, alternating paths; bounded by time and by an exact count of requests. Every answer
    that is not a complete 2xx response counts as failed, whatever went wrong (a refused or reset
    connection, a timeout, a body cut short, a garbled status line); and the slowest answer."""

    def __init__(self, address: str, paths: tuple[str, ...] = ("/api/health", "/api/greeting"),
                 clients: int = 4, seconds: float = 900, most: int = 100_000, port: int = 80,
                 per_client_rate: float = 40, tls: tuple | None = None, timeout: float = 30) -> None:
        # tls: (ssl.SSLContext, the name to ask for): HTTPS to ``address``, verified for that name.
        self.address, self.port, self.paths, self.tls, self.timeout = address, port, paths, tls, timeout
        # Paced: a new connection per request, unpaced, would run this machine out of ephemeral ports
        # (each closed connection waits 60 s in TIME_WAIT) and count that as failed requests.
        self.deadline, self.most, self.interval = time.monotonic() + seconds, most, 1 / per_client_rate
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.requests, self.failures, self.longest, self.failed_at = 0, [], 0.0, []
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]
        for thread in self.threads:
            thread.start()

    def _take(self) -> bool:
        """One more request, if the bounds allow it (counted before it is sent: exactly ``most``)."""
        with self.lock:
            if self.stopping.is_set() or time.monotonic() >= self.deadline or self.requests >= self.most:
                return False
            self.requests += 1
            return True

    def _client(self, index: int) -> None:
        n = index
        while self._take():
            path = self.paths[n % len(self.paths)]
            n += 1
            started = time.monotonic()
            try:
                connection = self._connection()
                try:
                    connection.request("GET", path)
                    response = connection.getresponse()
                    response.read()
                finally:
                    connection.close()
                outcome = "" if 200 <= response.status < 300 else f"{path} {response.status}"
            except Exception as error:  # any of them is a request a user saw fail
                outcome = f"{path} {type(error).__name__}"
            with self.lock:
                self.longest = max(self.longest, time.monotonic() - started)
                if outcome:
                    self.failures.append(outcome)
                    self.failed_at.append(time.monotonic())
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _connection(self) -> http.client.HTTPConnection:
        if not self.tls:
            return http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        context, name = self.tls
        connection = http.client.HTTPSConnection(name, self.port, context=context, timeout=self.timeout)
        raw = socket.create_connection((self.address, self.port), timeout=self.timeout)
        connection.sock = context.wrap_socket(raw, server_hostname=name)
        return connection

    def wait(self) -> LoadResult:
        """Until the clients have made their requests (the count or the time bound), then the result."""
        for thread in self.threads:
            thread.join()
        return self.stop()

    def stop(self) -> LoadResult:
        early = sum(1 for thread in self.threads if not thread.is_alive())
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        window = max(self.failed_at) - min(self.failed_at) if self.failed_at else 0.0
        return LoadResult(self.requests, self.failures, self.longest, window, early)


def under_load(address: str, action, settle: float = 1.0, **load) -> tuple[object, LoadResult]:
    """Run ``action()`` while clients load the host; a moment of load before and after it."""
    running = Load(address, **load)
    time.sleep(settle)
    try:
        outcome = action()
        time.sleep(settle)
    finally:
        result = running.stop()
    assert result.requests > 0, "the load loop made no request"
    # Every client loaded from before the action until after it: none died or ran out on the way.
    assert result.stopped_early == 0, f"clients stopped loading before the action ended: {result}"
    return outcome, result


# -- point-in-time recovery (tests/test_pitr.py, bench/pitr.py) ------------------------------------

def root_sql(host, sql: str, server: str = "db_production", database: str = "kono") -> str:
    """SQL as root inside the database's own container (the password stays in the container)."""
    done = host.ssh(f"docker exec -i {container(server)} sh -c 'MYSQL_PWD=$(cat {root_password_file(server)}) "
                    f"exec mysql -uroot -N {database}'", user="kono", input=sql + "\n", check=False)
    if done.returncode != 0:  # what the container was doing, for a failure that says nothing itself (rc 255, 137)
        seen = host.ssh(f"docker ps -a --format '{{{{.Names}}}} {{{{.Status}}}}' | grep {server}; uptime", user="kono",
                        check=False)
        raise AssertionError(f"{server} on {host.name}: rc {done.returncode}, {done.stderr.strip()!r}; "
                             f"{seen.stdout.strip()!r} {seen.stderr.strip()!r}")
    return done.stdout


def shipped_up_to(host) -> datetime.datetime | None:
    asked = host.ssh(f"docker exec {container('binlog')} sh {script('binlog')} shipped", user="kono", check=False)
    said = asked.stdout.split()
    # A failed exec ("OCI runtime exec failed ...", seen once in CI while the repository came back)
    # says nothing: the caller polls again until its deadline.
    if asked.returncode != 0 or not said or said[0] == "none":
        return None
    return datetime.datetime.strptime(said[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def wait_shipped_past(host, moment: datetime.datetime, seconds: float) -> float:
    """Seconds until the binlog service says everything committed before ``moment`` is shipped."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        up_to = shipped_up_to(host)
        if up_to is not None and up_to > moment:
            return time.monotonic() - started
        time.sleep(1)
    logs = host.ssh(f"docker logs --tail 30 {container('binlog')}", user="kono", check=False)
    raise AssertionError(f"nothing shipped past {moment} after {seconds} s: {logs.stdout}{logs.stderr}")


class Writer:
    """Commits a row into orders every 100 ms (its id, the server's NOW(6), the writer's own clock),
    inside db_production's container, and reports each commit the server acknowledged. Bounded: at
    most ``rows`` rows."""

    PID_FILE = "/tmp/kono-writer.pid"  # in the container: a `docker exec` outlives its client

    def __init__(self, host, rows: int = 3000) -> None:
        self.host = host
        self.first = int(root_sql(host, "SELECT COALESCE(MAX(id), 0) + 1 FROM orders;"))
        loop = (f"echo $$ > {self.PID_FILE}; "
                f"i={self.first - 1}; while [ $i -lt {self.first - 1 + rows} ]; do i=$((i+1)); t=$(date +%s.%N); "
                f"if MYSQL_PWD=$(cat {root_password_file('db_production')}) mysql -uroot kono "
                "-e \"INSERT INTO orders VALUES ($i, NOW(6), $t)\"; then echo \"$i $t $(date +%s.%N)\"; fi; sleep 0.1; done")
        self.acked: list[tuple[int, float]] = []
        self.acknowledged_at: dict[int, float] = {}  # each acked row: when its client had the answer (after its commit)
        self._proc = subprocess.Popen(
            [*host.ssh_args("kono"), f"docker exec {container('db_production')} sh -c '{loop}'"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            number, at, answered = line.split()
            self.acknowledged_at[int(number)] = float(answered)
            self.acked.append((int(number), float(at)))

    def stop(self, host_alive: bool = True) -> list[tuple[int, float]]:
        """Stop writing (in the container first, when the host is alive); what was acknowledged until
        now (later lines are dropped)."""
        seen = list(self.acked)
        if host_alive:
            self.host.ssh(f"docker exec {container('db_production')} sh -c 'kill $(cat {self.PID_FILE})'",
                          user=DEPLOY_USER, timeout=30)
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=30)
        return seen
