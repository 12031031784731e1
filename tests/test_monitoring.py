"""Monitoring: the host's metrics and the stack's own, node_exporter's Prometheus text on
metrics_port, served to metrics_allowed_cidrs (here the lab's gateway: this machine) and through an
SSH tunnel, closed to every other address (a second lab host tries). Read with a real HTTP client and
Prometheus's own parser (promtool). Ends with the shared host back on the defaults."""

import re
import subprocess
import time
import urllib.request

import pytest

from kono.monitoring import METRICS, METRICS_INTERVAL_SECONDS, NODE_METRICS
from kono.services import SERVICES
from tests import lab as lab_tools
from tests.lab import DEFAULT_SERVICES, DEFAULTS, container, metric_samples

pytestmark = pytest.mark.e2e

PORT = DEFAULTS["metrics_port"]
MONITORING_SERVICES = tuple(s.name for s in SERVICES if s.only_when == "monitoring")


def scrape(address: str, port: int = PORT, timeout: float = 10) -> str:
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=timeout) as response:
        return response.read().decode()


def healthy(text: str) -> dict[str, float]:
    return {m.group(1): value for key, value in metric_samples(text).items()
            if (m := re.fullmatch(r'kono_service_healthy\{service="([a-z_]+)"\}', key))}


def wait_for(address: str, condition, seconds: float, port: int = PORT) -> str:
    """The first scrape within ``seconds`` whose text meets ``condition``; fails with the last one."""
    deadline, text = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        try:
            text = scrape(address, port)
            if condition(text):
                return text
        except OSError as error:
            text = f"scrape failed: {error}"
        time.sleep(2)
    raise AssertionError(f"not within {seconds} s; the last scrape: {text[-3000:]}")


@pytest.fixture(scope="module")
def monitored(provisioned):
    provisioned.wait_healthy()
    lab_tools.load_images(provisioned.host, monitoring=True)
    inventory = lab_tools.write_inventory(
        provisioned.lab, [provisioned.host], provisioned.lab.workdir / "monitoring-inventory.py",
        api_repo=provisioned.git.repo("api"), app_repo=provisioned.git.repo("app"), monitoring=True,
        metrics_allowed_cidrs=[f"{provisioned.lab.gateway}/32"])
    lab_tools.bootstrap(inventory)  # the firewall lets metrics_port in from those sources
    lab_tools.deploy(inventory)  # monitoring on, in one deploy
    yield provisioned, inventory
    lab_tools.bootstrap(provisioned.inventory)  # the firewall as the defaults have it
    provisioned.reset()


def test_the_hosts_and_every_services_metrics_are_served_to_an_allowed_source(monitored):
    provisioned, inventory = monitored
    host = provisioned.host
    services = {s.name for s in DEFAULT_SERVICES} | set(MONITORING_SERVICES)
    text = wait_for(host.address, lambda t: healthy(t) == dict.fromkeys(services, 1.0), 120)
    # The stack's own lines pass Prometheus's parser and linter (node_exporter's are upstream's).
    own = "".join(line + "\n" for line in text.splitlines() if re.match(r"(# (HELP|TYPE) )?kono_", line))
    checked = subprocess.run([lab_tools.promtool_path(), "check", "metrics"], input=own, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for metric in NODE_METRICS:  # what the disk and memory alerts read
        assert re.search(rf"^{metric}[{{ ]", text, re.M), metric
    assert re.search(r'^node_filesystem_avail_bytes\{[^}]*mountpoint="/"', text, re.M)  # the host's own root
    found = metric_samples(text)
    assert found['kono_docker_disk_bytes{kind="images"}'] > 0
    kono = {key.split("{")[0] for key in found if key.startswith("kono_")}
    assert kono <= set(METRICS), kono - set(METRICS)
    assert {"kono_service_healthy", "kono_service_restarts_total", "kono_docker_disk_bytes"} <= kono
    # Prometheus scrapes them and evaluates the alerts: status reads what fires (nothing the lab
    # causes here; the host's own disk and memory are this machine's).
    shown = lab_tools.status(inventory, timeout=120).stdout
    assert re.search(r"^\S+  prometheus +running +healthy +ok$", shown, re.M), shown
    assert re.search(r"^\S+  (alerts         none firing ok|alert          .* NOT OK)$", shown, re.M), shown
    assert "Prometheus did not answer" not in shown


def test_a_stopped_service_reads_unhealthy_within_three_rounds_and_a_deploy_brings_it_back(monitored):
    provisioned, inventory = monitored
    host = provisioned.host
    wait_for(host.address, lambda t: healthy(t).get("db_dev") == 1.0, 120)
    host.ssh(f"docker stop {container('db_dev')}", user="kono")
    stopped = time.monotonic()
    wait_for(host.address, lambda t: healthy(t).get("db_dev") == 0.0, 3 * METRICS_INTERVAL_SECONDS + 10)
    print(f"db_dev stopped: unhealthy in the metrics after {time.monotonic() - stopped:.0f} s")
    lab_tools.deploy(inventory)
    wait_for(host.address, lambda t: healthy(t).get("db_dev") == 1.0, 180)


def test_metrics_port_is_closed_to_any_other_address(monitored):
    provisioned, _ = monitored
    host = provisioned.host
    other = provisioned.lab.boot()
    try:
        other.wait_for_ssh()
        web = other.ssh(f"curl -s -o /dev/null -w '%{{http_code}}' -m 10 http://{host.address}/", check=False)
        assert web.returncode == 0 and web.stdout != "000", web  # nginx answers it: the network between them works
        metrics = other.ssh(f"curl -s -m 10 http://{host.address}:{PORT}/metrics", check=False)
        assert metrics.returncode != 0 and "node_" not in metrics.stdout, metrics
    finally:
        other.stop()
    assert "kono_service_healthy" in scrape(host.address)  # while the allowed source is served


def test_without_sources_metrics_are_on_loopback_and_reach_the_operator_through_an_ssh_tunnel(monitored):
    provisioned, _ = monitored
    host = provisioned.host
    tunnel_only = lab_tools.write_inventory(
        provisioned.lab, [host], provisioned.lab.workdir / "monitoring-tunnel-inventory.py",
        api_repo=provisioned.git.repo("api"), app_repo=provisioned.git.repo("app"), monitoring=True)
    lab_tools.deploy(tunnel_only)
    with pytest.raises(OSError):
        scrape(host.address, timeout=5)
    port = lab_tools._free_port("127.0.0.1")
    tunnel = subprocess.Popen([*host.ssh_args("kono"), "-N", "-o", "ExitOnForwardFailure=yes",
                               "-L", f"127.0.0.1:{port}:127.0.0.1:{PORT}"], stdin=subprocess.DEVNULL)
    try:
        text = wait_for("127.0.0.1", lambda t: "kono_service_healthy" in t, 60, port=port)
        assert re.search(r"^node_memory_MemTotal_bytes ", text, re.M)
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


def test_a_second_deploy_changes_nothing_and_monitoring_off_removes_its_services_in_one_deploy(monitored):
    provisioned, inventory = monitored
    host = provisioned.host
    lab_tools.deploy(inventory)
    assert lab_tools.deploy(inventory, "--json").changes == 0
    provisioned.deploy()  # the defaults: monitoring off
    running = host.ssh("docker ps --format '{{.Label \"com.docker.compose.service\"}}'", user="kono").stdout.split()
    assert not set(MONITORING_SERVICES) & set(running), running
    assert {s.name for s in DEFAULT_SERVICES} <= set(running)
    with pytest.raises(OSError):
        scrape(host.address, timeout=5)
