"""The images the stack runs on behave as the official ones do: every row of the behaviour table in
tests/images/README.md, checked on the test host against the images in use, the test doubles by
default and the pulled official images with KONO_TEST_IMAGES=official. A double kinder than its
official image fails here."""

from shlex import quote

import pytest

from kono.monitoring import NODE_METRICS
from kono.services import BINLOG_SERVER_OPTIONS
from tests import lab as lab_tools
from tests.lab import DEFAULTS

pytestmark = pytest.mark.e2e

MYSQL, NGINX, NODE, UBUNTU, LEGO, RESTIC = (DEFAULTS[k] for k in (
    "mysql_image", "nginx_image", "node_image", "maintainer_base_image", "acme_image", "restic_image"))

# Sourced: runs inside the entrypoint (its helpers defined), after the step-down to mysql.
SOURCED = """echo "sourced uid=$(id -u) helper=$(type docker_process_sql >/dev/null 2>&1 && echo yes || echo no)" \
  > /var/lib/mysql/sourced.txt
echo "root-only readable=$(cat /run/secrets/root_only >/dev/null 2>&1 && echo yes || echo no)" >> /var/lib/mysql/sourced.txt
docker_process_sql <<<"CREATE TABLE made_by_sourced (n INT);"
"""
# Executable: run as its own process, so the entrypoint's functions are not defined in it.
EXECUTED = """#!/bin/bash
echo "executed uid=$(id -u) helper=$(type docker_process_sql >/dev/null 2>&1 && echo yes || echo no)" \
  > /var/lib/mysql/executed.txt
"""


def sh(provisioned, command: str, check: bool = True):
    return provisioned.host.ssh(command, user=lab_tools.DEPLOY_USER, check=check)


def run_in(provisioned, image: str, script: str, user: str = "") -> str:
    """A script in a throwaway container of the image, its own entrypoint bypassed."""
    as_user = f"--user {user} " if user else ""
    return sh(provisioned, f"docker run --rm {as_user}--entrypoint sh {image} -c {quote(script)}").stdout


@pytest.fixture(scope="module")
def mysql_first_start(provisioned):
    """A first start of the mysql image with a root-only password file and one init script of each
    kind, the way the stack starts it (root password by *_FILE). Yields a shell in the container."""
    workdir = "/srv/kono/.kono/image-test"
    name = "kono-image-test-mysql"
    sh(provisioned, f"rm -rf {workdir} && mkdir -p {workdir}/init && cd {workdir} && "
                    "umask 077 && printf 'Root-Pa55-word-for-the-test' > root_only && "
                    f"printf %s {quote(SOURCED)} > init/10-sourced.sh && "
                    f"printf %s {quote(EXECUTED)} > init/20-executed.sh && "
                    "chmod 0644 init/10-sourced.sh && chmod 0755 init/20-executed.sh")
    sh(provisioned, f"docker run -d --name {name} -e MYSQL_ROOT_PASSWORD_FILE=/run/secrets/root_only "
                    f"-e MYSQL_DATABASE=probe -v {workdir}/root_only:/run/secrets/root_only:ro "
                    f"-v {workdir}/init:/docker-entrypoint-initdb.d:ro {MYSQL} mysqld {' '.join(BINLOG_SERVER_OPTIONS)}")
    try:
        # "init process done" is logged before the entrypoint execs the real server; a ping that answers
        # after it is that server's (the temporary one is gone by then).
        ping = f"docker exec -e MYSQL_PWD=Root-Pa55-word-for-the-test {name} mysqladmin -uroot ping --silent"
        waited = sh(provisioned, f"for i in $(seq 180); do docker logs {name} 2>&1 | grep -q 'init process done' "
                                 f"&& {ping} >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1", check=False)
        assert waited.returncode == 0, sh(provisioned, f"docker logs {name} 2>&1 | tail -30").stdout
        yield lambda command: sh(provisioned, f"docker exec {name} sh -c {quote(command)}", check=False)
    finally:
        sh(provisioned, f"docker rm -f {name}; rm -rf {workdir}", check=False)


def test_mysql_reads_file_secrets_as_root_then_runs_init_scripts_as_mysql_999(mysql_first_start):
    sourced = mysql_first_start("cat /var/lib/mysql/sourced.txt").stdout
    assert "sourced uid=999 helper=yes" in sourced
    assert "root-only readable=no" in sourced  # init scripts run after the step-down
    assert "executed uid=999 helper=no" in mysql_first_start("cat /var/lib/mysql/executed.txt").stdout


def test_mysql_creates_root_for_any_host_and_the_database_and_listens_on_its_socket(mysql_first_start):
    query = ("MYSQL_PWD=Root-Pa55-word-for-the-test mysql -uroot -N -e "
             "\"SELECT host FROM mysql.user WHERE user = 'root' ORDER BY host; SHOW TABLES FROM probe\"")
    out = mysql_first_start(query)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["%", "localhost", "made_by_sourced"]
    assert mysql_first_start("test -S /var/run/mysqld/mysqld.sock").returncode == 0
    for client in ("mysql", "mysqladmin", "mysqldump"):
        assert mysql_first_start(f"command -v {client}").returncode == 0, client


def test_mysql_logs_the_first_start_as_the_command_says_but_not_the_root_password(mysql_first_start):
    """Upstream's temporary server gets the command's options (docker_temp_server_start "$@"), and
    its root setup runs with SQL_LOG_BIN=0; the binary log client is mysqlbinlog or mariadb-binlog,
    and mysqldump writes the dump's position with --source-data or --master-data."""
    logs = mysql_first_start("ls /var/lib/mysql/ | grep -c '^binlog\\.[0-9]'")
    assert int(logs.stdout or 0) >= 1, logs.stdout + logs.stderr
    first_start = mysql_first_start("cat /var/lib/mysql/binlog.[0-9]* | grep -a -c -e 'CREATE DATABASE IF NOT EXISTS `probe`'")
    assert int(first_start.stdout or 0) >= 1
    assert mysql_first_start("cat /var/lib/mysql/binlog.[0-9]* | grep -a -c Root-Pa55-word").stdout.strip() == "0"
    clients = mysql_first_start("for c in mysqlbinlog mariadb-binlog; do command -v $c; done").stdout.split()
    assert len(clients) >= 1, "no binary log client"
    options = mysql_first_start("mysqldump --help").stdout
    assert "--source-data" in options or "--master-data" in options


def test_nginx_logs_are_symlinks_to_stdout_and_stderr_in_the_image(provisioned):
    links = run_in(provisioned, NGINX, "readlink /var/log/nginx/access.log /var/log/nginx/error.log")
    assert links.split() == ["/dev/stdout", "/dev/stderr"]


def test_nginx_workers_run_as_nginx_101_and_it_stops_on_sigquit(provisioned):
    assert run_in(provisioned, NGINX, "id -u nginx; id -g nginx").split() == ["101", "101"]
    scan = ("for p in /proc/[0-9]*; do case \"$(tr -d '\\000' < $p/cmdline 2>/dev/null)\" in "
            "'nginx: worker process'*) awk '/^Uid:/ {print $2}' $p/status;; esac; done")
    workers = sh(provisioned, f"docker exec {lab_tools.container('nginx')} sh -c {quote(scan)}").stdout.split()
    assert workers and set(workers) == {"101"}
    config = sh(provisioned, f"docker image inspect -f '{{{{.Config.StopSignal}}}} {{{{json .Config.Entrypoint}}}}' "
                             f"{NGINX}").stdout.split()
    assert config == ["SIGQUIT", '["/docker-entrypoint.sh"]']
    found = run_in(provisioned, NGINX, "ls /docker-entrypoint.d; command -v curl")
    assert "10-listen-on-ipv6-by-default.sh" in found and "/curl" in found
    # Temp folders under /var/cache/nginx, made by the master at start (the read-only root's tmpfs).
    made = run_in(provisioned, NGINX, "nginx -q -t 2>/dev/null; ls /var/cache/nginx")
    assert "client_temp" in made.split() and "proxy_temp" in made.split()


def test_node_runs_as_root_with_a_node_user_1000_and_has_no_curl_or_git(provisioned):
    assert sh(provisioned, f"docker image inspect -f '{{{{.Config.User}}}}' {NODE}").stdout.strip() == ""
    assert run_in(provisioned, NODE, "id -u node; id -g node").split() == ["1000", "1000"]
    assert run_in(provisioned, NODE, "command -v curl wget git || true").strip() == ""
    # The api's entrypoint steps down to node with util-linux's setpriv.
    assert run_in(provisioned, NODE, "setpriv --reuid=node --regid=node --init-groups id -u").strip() == "1000"
    # What the stack uses of Node: global fetch (the healthcheck), fs.watchFile and http (start.js).
    used = run_in(provisioned, NODE, "node -e \"console.log(typeof fetch, typeof require('fs').watchFile, "
                                     "typeof require('http').createServer, process.versions.node)\"").split()
    assert used[:3] == ["function", "function", "function"]
    if lab_tools.image_mode() == "official":
        assert used[3].split(".")[0] == NODE.split(":")[1].split("-")[0]


def test_ubuntu_has_user_ubuntu_1000_and_no_wheel_group(provisioned):
    out = run_in(provisioned, UBUNTU, "id -u ubuntu; getent group wheel || echo no-wheel; command -v apt-get")
    assert out.split() == ["1000", "no-wheel", "/usr/bin/apt-get"]


def test_lego_is_slash_lego_off_the_path_runs_as_root_with_the_tools_the_acme_script_uses(provisioned):
    config = sh(provisioned, f"docker image inspect -f '{{{{json .Config.Entrypoint}}}} {{{{.Config.User}}}}' "
                             f"{LEGO}").stdout.split()
    assert config == ['["/lego"]']  # and no user: root
    found = run_in(provisioned, LEGO, "command -v lego || echo not-on-path; id -u; "
                                      "for t in cut cmp cp mv cat sleep; do command -v $t >/dev/null || echo missing $t; done; "
                                      "/lego renew --help")
    assert found.split()[:2] == ["not-on-path", "0"] and "missing" not in found
    assert "--days" in found and "--no-random-sleep" in found


def test_restic_is_usr_bin_restic_of_the_pinned_version_with_stdin_from_command(provisioned):
    found = run_in(provisioned, RESTIC, "/usr/bin/restic version; /usr/bin/restic backup --help")
    assert found.startswith(f"restic {RESTIC.split(':')[1]} ")
    assert "--stdin-from-command" in found


# -- the monitoring images (prometheus, alertmanager, node-exporter) -----------------------------

PROMETHEUS, ALERTMANAGER, NODE_EXPORTER = (DEFAULTS[k] for k in (
    "prometheus_image", "alertmanager_image", "node_exporter_image"))
NOBODY = "65534"  # busybox's and Debian's nobody (and nogroup)


@pytest.fixture(scope="module")
def monitoring_images(provisioned):
    lab_tools.load_images(provisioned.host, monitoring=True)
    return provisioned


def started(provisioned, name: str, options: str, image: str, port: int, path: str = "/-/ready",
            args: str = "") -> bool:
    """A container of ``image`` run with its own entrypoint (and command, or ``args``), and whether it answered
    ``path`` on ``port`` within 60 s (asked by the image's own wget: it has no curl)."""
    sh(provisioned, f"docker rm -f {name} >/dev/null 2>&1; docker run -d --name {name} {options} {image} {args}")
    waited = sh(provisioned, f"for i in $(seq 60); do docker exec {name} wget -q -O /dev/null "
                             f"http://127.0.0.1:{port}{path} && exit 0; "
                             f"[ \"$(docker inspect -f '{{{{.State.Running}}}}' {name})\" = true ] || exit 1; "
                             "sleep 1; done; exit 1", check=False)
    return waited.returncode == 0


def image_config(provisioned, image: str) -> dict:
    import json
    return json.loads(sh(provisioned, f"docker image inspect --format '{{{{json .Config}}}}' {image}").stdout)


@pytest.mark.parametrize("image, port, volume, tool", [
    (PROMETHEUS, 9090, "/prometheus", "/bin/promtool"), (ALERTMANAGER, 9093, "/alertmanager", "/bin/amtool")])
def test_prometheus_and_alertmanager_run_as_nobody_from_their_volume_with_their_checker_and_wget(
        monitoring_images, image, port, volume, tool):
    config = image_config(monitoring_images, image)
    binary = f"/bin/{image.split('/')[1].split(':')[0]}"
    assert (config["User"], config["WorkingDir"], config["Entrypoint"]) == ("nobody", volume, [binary])
    assert volume in config["Volumes"] and config["Cmd"][0].startswith("--config.file=")
    name = "kono-image-test-" + binary[5:]
    try:
        assert started(monitoring_images, name, "", image, port), sh(
            monitoring_images, f"docker logs {name} 2>&1 | tail -20").stdout
        found = sh(monitoring_images, f"docker exec {name} sh -c 'id -u; stat -c %u {volume}; "
                                      f"{tool} --version >/dev/null && echo checker; command -v curl || echo no-curl'")
        assert found.stdout.split() == [NOBODY, NOBODY, "checker", "no-curl"]
    finally:
        sh(monitoring_images, f"docker rm -f {name}", check=False)


@pytest.mark.parametrize("image, port", [(PROMETHEUS, 9090), (ALERTMANAGER, 9093)])
def test_a_config_only_its_owner_can_read_stops_prometheus_and_alertmanager(monitoring_images, image, port):
    """nobody cannot read a 0600 file of the deploy user: the stack must hand their configs over readable."""
    workdir = "/srv/kono/.kono/image-test-config"
    name = "kono-image-test-private-config"
    default = image_config(monitoring_images, image)["Cmd"][0].split("=", 1)[1]
    sh(monitoring_images, f"rm -rf {workdir} && mkdir -p {workdir} && docker run --rm --entrypoint cat {image} "
                          f"{default} > {workdir}/config.yml && chmod 0600 {workdir}/config.yml")
    try:
        assert not started(monitoring_images, name, f"-v {workdir}/config.yml:{default}:ro", image, port)
        logs = sh(monitoring_images, f"docker logs {name} 2>&1").stdout
        assert "permission denied" in logs, logs[-2000:]
    finally:
        sh(monitoring_images, f"docker rm -f {name}; rm -rf {workdir}", check=False)


def test_node_exporter_runs_as_nobody_and_reports_the_hosts_filesystems_under_run(monitoring_images):
    """Upstream's filesystem defaults exclude /dev, /proc, /sys, /run/credentials and Docker's own
    mounts, but not /run: the disk alert must leave tmpfs out itself."""
    config = image_config(monitoring_images, NODE_EXPORTER)
    assert (config["User"], config["Entrypoint"], config["Cmd"]) == ("nobody", ["/bin/node_exporter"], None)
    name = "kono-image-test-node-exporter"
    try:
        assert started(monitoring_images, name, "-v /:/host:ro,rslave", NODE_EXPORTER, 9100, "/metrics",
                       "--path.rootfs=/host")
        metrics = sh(monitoring_images, f"docker exec {name} wget -q -O - http://127.0.0.1:9100/metrics").stdout
        assert sh(monitoring_images, f"docker exec {name} id -u").stdout.strip() == NOBODY
        mounts = {line.split('mountpoint="')[1].split('"')[0] for line in metrics.splitlines()
                  if line.startswith("node_filesystem_avail_bytes{")}
        assert "/" in mounts and "/run" in mounts, mounts
        assert not any(m.startswith(("/proc", "/sys", "/dev", "/var/lib/docker/")) for m in mounts), mounts
        for metric in NODE_METRICS:  # what the alert rules read
            assert f"\n{metric}" in metrics, metric
    finally:
        sh(monitoring_images, f"docker rm -f {name}", check=False)
