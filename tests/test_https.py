"""HTTPS: certificates from a real ACME server (Pebble, with real HTTP-01 validation through the
host's nginx), renewal under load, and certificates the operator provides. Ends with the host back
on plain HTTP, as the other modules expect it."""

import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kono.services import script
from tests import lab as lab_tools
from tests.lab import AcmeServer, container, make_certificate, under_load

pytestmark = pytest.mark.e2e

DOMAIN = "kono.test"


def tls_context(root_pem: str, h2: bool = False, **versions) -> ssl.SSLContext:
    """Trusting only ``root_pem``; offering HTTP/2 with ``h2`` (for a handshake only: the HTTP clients
    here speak HTTP/1.1)."""
    context = ssl.create_default_context(cadata=root_pem)
    context.set_alpn_protocols(["h2", "http/1.1"] if h2 else ["http/1.1"])
    for name, value in versions.items():
        setattr(context, name, value)
    return context


def handshake(address: str, context: ssl.SSLContext, name: str = DOMAIN) -> dict:
    """A verified TLS handshake with nginx for ``name``: what was agreed, and the certificate served."""
    with socket.create_connection((address, 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return {"version": tls.version(), "alpn": tls.selected_alpn_protocol(),
                    "serial": tls.getpeercert()["serialNumber"]}


def http_get(address: str, path: str, host: str = DOMAIN) -> tuple[int, str]:
    """A plain HTTP GET with a Host header, redirects not followed: (status, Location)."""
    import http.client
    connection = http.client.HTTPConnection(address, 80, timeout=10)
    connection.request("GET", path, headers={"Host": host})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, response.getheader("Location", "")


def https_get(address: str, context: ssl.SSLContext, path: str = "/healthz") -> int:
    import http.client
    connection = http.client.HTTPSConnection(DOMAIN, 443, context=context, timeout=10)
    connection.sock = context.wrap_socket(socket.create_connection((address, 443), timeout=10),
                                          server_hostname=DOMAIN)
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    return response.status


def wait_for_serial(address: str, context: ssl.SSLContext, old: str, seconds: float = 60) -> str:
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        serial = handshake(address, context)["serial"]
        if serial != old:
            return serial
        time.sleep(0.5)
    raise AssertionError(f"nginx still serves certificate {old} after {seconds} s")


class Https:
    def __init__(self, provisioned, pebble: AcmeServer):
        self.provisioned, self.pebble, self.host = provisioned, pebble, provisioned.host
        self.outputs: list[tuple[str, str]] = []  # (what ran, its output): the leak check reads them
        self.keys: list[str] = []  # every private key nginx served or a deploy was given, failing ones too
        self.secrets_dir = provisioned.lab.workdir / "secrets" / "tls"

    def inventory(self, **data) -> Path:
        path = self.provisioned.lab.workdir / "https-inventory.py"
        return lab_tools.write_inventory(self.provisioned.lab, [self.host], path,
                                         api_repo=self.provisioned.git.repo("api"),
                                         app_repo=self.provisioned.git.repo("app"), domains=[DOMAIN], **data)

    def acme(self, **data) -> Path:
        return self.inventory(https="acme", acme_email="ops@kono.test", acme_directory_url=self.pebble.directory_url,
                              acme_ca_bundle=str(self.pebble.ca_bundle), **data)

    def serving(self, **data) -> Path:
        """The ACME inventory (with ``data``), its certificate served: as the test that first issues one
        leaves the host, and made so when a test runs alone (the CA's DNS then points at the host)."""
        self.pebble.point_to(self.host.address)
        try:
            handshake(self.host.address, tls_context(self.pebble.root()))
        except (OSError, ssl.SSLError):
            self.deploy(self.acme())
        return self.acme(**data)

    def served_key(self) -> None:
        self.keys.append(self.host.ssh(f"docker exec {container('nginx')} cat /etc/nginx/tls/private_key",
                                       user="kono").stdout)

    def deploy(self, inventory: Path, *args: str, **kwargs) -> lab_tools.Run:
        run = lab_tools.deploy(inventory, *args, **kwargs)
        self.outputs.append((f"deploy {' '.join(args)}", run.output))
        return run

    def provide(self, name: str, days: float, ca) -> None:
        """A certificate for DOMAIN signed by ``ca``, and its key, where the operator supplies them."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        make_certificate(self.secrets_dir / name, [DOMAIN], issuer=ca, days=days)
        (self.secrets_dir / "certificate").write_bytes((self.secrets_dir / f"{name}.pem").read_bytes())
        self.give_key((self.secrets_dir / f"{name}.key").read_text())

    def give_key(self, pem: str) -> None:
        """Where the operator supplies the key: the next deploy is given it (the leak check looks for it)."""
        (self.secrets_dir / "private_key").write_text(pem)
        self.keys.append(pem)


@pytest.fixture(scope="module")
def https(provisioned):
    provisioned.wait_healthy()
    with AcmeServer(provisioned.lab, points_to=provisioned.lab.gateway) as pebble:  # DNS not pointed yet
        yield Https(provisioned, pebble)
    provisioned.reset()  # back to plain HTTP for the modules after this one


def test_a_failed_issuance_fails_the_deploy_with_the_reason_and_http_keeps_serving(https):
    failed = https.deploy(https.acme(), check=False)
    assert failed.returncode != 0
    # The CA's own reason: Pebble fetched the challenge from the wrong address.
    assert "acme: error" in failed.output and "urn:ietf:params:acme:error" in failed.output, failed.output[-3000:]
    assert http_get(https.host.address, "/healthz") == (200, "")
    assert http_get(https.host.address, "/", host="other.example")[0] in (200, 404)  # no redirect
    with pytest.raises(OSError):
        handshake(https.host.address, tls_context(https.pebble.root()))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # the point: refused
def test_once_dns_points_at_the_host_the_next_deploy_gets_a_certificate_and_serves_https(https):
    https.pebble.point_to(https.host.address)
    https.deploy(https.acme(), "-v")
    root = https.pebble.root()
    agreed = handshake(https.host.address, tls_context(root, h2=True))  # verified: a chain to Pebble's root
    assert agreed["alpn"] == "h2" and agreed["version"] in ("TLSv1.2", "TLSv1.3")
    assert https_get(https.host.address, tls_context(root)) == 200
    old_clients = tls_context(root, maximum_version=ssl.TLSVersion.TLSv1_1, minimum_version=ssl.TLSVersion.TLSv1)
    with pytest.raises(ssl.SSLError):
        handshake(https.host.address, old_clients)
    # Plain HTTP for the domain moves to HTTPS, but for ACME challenges.
    assert http_get(https.host.address, "/api/health?x=1") == (301, f"https://{DOMAIN}/api/health?x=1")
    assert http_get(https.host.address, "/.well-known/acme-challenge/unknown")[0] == 404
    # The key on the host: 0600, in the certificates volume.
    mode = https.host.ssh(f"docker exec {container('nginx')} stat -c '%a %U' /etc/nginx/tls/private_key",
                          user="kono").stdout.split()
    assert mode == ["600", "root"]
    https.served_key()


def test_a_second_deploy_changes_nothing(https):
    assert https.deploy(https.serving(), "--json").changes == 0


def test_a_forced_renewal_under_load_fails_no_request_and_nginx_is_not_recreated(https):
    https.serving()
    root = https.pebble.root()
    before = handshake(https.host.address, tls_context(root))["serial"]
    nginx = https.provisioned.container_ids()["nginx"]

    def renew():
        https.host.ssh(f"docker exec {container('acme')} sh {script('acme')} renew 100000", user="kono")
        return wait_for_serial(https.host.address, tls_context(root), before)

    after, load = under_load(https.host.address, renew, port=443, tls=(tls_context(root), DOMAIN),
                             paths=("/healthz", "/api/health"))
    assert after != before
    assert load.failures == [], load
    assert https.provisioned.container_ids()["nginx"] == nginx  # reloaded, never recreated
    https.served_key()


def test_status_shows_the_certificate_names_issuer_and_expiry(https):
    proc = subprocess.run([sys.executable, "-m", "kono.cli.status", str(https.serving())], cwd=lab_tools.REPO,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    https.outputs.append(("status", proc.stdout + proc.stderr))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if " certificate " in line)
    assert DOMAIN in line and "Pebble" in line and line.endswith(" ok")


def alert_lines_of(https, inventory: Path) -> list[str]:
    shown = lab_tools.status(inventory, timeout=120)
    https.outputs.append(("status", shown.stdout + shown.stderr))
    return [line for line in shown.stdout.splitlines() if re.search(r"  alerts? ", line)]


def test_with_monitoring_a_failed_renewal_fires_its_alert_until_a_renewal_succeeds(https):
    """A real failed renewal: the CA cannot fetch its challenge from the host (its DNS points elsewhere),
    in the check the acme service makes twice a day, made now with the certificate due (`check 100000`)."""
    lab_tools.load_images(https.host, monitoring=True)
    monitored = https.serving(monitoring=True)
    https.deploy(monitored)
    check_now = f"docker exec {container('acme')} sh {script('acme')} check 100000"
    https.pebble.point_to(https.provisioned.lab.gateway)
    try:
        failed = https.host.ssh(check_now, user="kono", check=False)
        https.outputs.append(("a failed check", failed.stdout + failed.stderr))
        assert failed.returncode != 0 and "kono-acme: the check failed" in failed.stderr, failed.stderr[-2000:]
        deadline = time.monotonic() + 120  # (a scrape every 15 s, the rule evaluated every 15 s)
        while True:
            lines = alert_lines_of(https, monitored)
            if any("CertificateRenewalFailed" in line for line in lines):
                break
            assert time.monotonic() < deadline, f"status names no failed renewal: {lines}"
            time.sleep(10)
        assert [line for line in lines if "CertificateRenewalFailed" in line][0].endswith(" NOT OK"), lines
    finally:
        https.pebble.point_to(https.host.address)
    https.host.ssh(check_now, user="kono")  # renewed
    deadline = time.monotonic() + 120
    while (lines := [line.split("  ", 1)[1] for line in alert_lines_of(https, monitored)]) != [
            "alerts         none firing ok"]:
        assert time.monotonic() < deadline, f"the failed renewal still fires after a good one: {lines}"
        time.sleep(10)
    https.served_key()
    https.deploy(https.acme())  # monitoring off again, for the tests after this one


def test_a_provided_certificate_is_served_and_a_new_one_applied_by_reload(https, tmp_path):
    ca = make_certificate(tmp_path / "ca", [], days=365, ca=True)
    https.provide("first", days=90, ca=ca)
    provided = https.inventory(https="provided")
    https.deploy(provided, "-vvv")
    context = tls_context((tmp_path / "ca.pem").read_text())
    served = handshake(https.host.address, context)["serial"]
    assert https.deploy(provided, "--json").changes == 0
    nginx = https.provisioned.container_ids()["nginx"]

    https.provide("second", days=10, ca=ca)  # renewed by the operator, but for ten days only
    run, load = under_load(https.host.address, lambda: https.deploy(provided, "--debug", "--diff"), port=443,
                           tls=(context, DOMAIN), paths=("/healthz",))
    assert load.failures == [], load
    assert wait_for_serial(https.host.address, context, served) != served
    assert https.provisioned.container_ids()["nginx"] == nginx
    drift = lab_tools.drift(provided)
    https.outputs.append(("drift", drift.stdout + drift.stderr))
    assert drift.returncode == 1 and f"the certificate for {DOMAIN} expires in" in drift.stdout, drift.stdout


def test_a_key_that_is_not_the_certificates_stops_the_deploy_before_anything_changes(https, tmp_path):
    ca = make_certificate(tmp_path / "ca", [], days=365, ca=True)
    https.provide("third", days=90, ca=ca)
    make_certificate(tmp_path / "other", [DOMAIN], issuer=ca)
    https.give_key((tmp_path / "other.key").read_text())  # not the certificate's
    before = https.provisioned.snapshot()
    failed = https.deploy(https.inventory(https="provided"), "-vv", check=False)
    assert failed.returncode != 0
    assert "tls/private_key: expected the private key of the certificate" in failed.output
    assert https.provisioned.snapshot() == before


def test_no_private_key_appears_in_any_output_or_container(https, tmp_path):
    # Runs of its own too (so that it checks something when selected alone): a provided pair deployed
    # at -vvv and with --debug --diff, then a failing deploy given a key that is not the certificate's.
    ca = make_certificate(tmp_path / "ca", [], days=365, ca=True)
    https.provide("leak-check", days=90, ca=ca)
    provided = https.inventory(https="provided")
    https.deploy(provided, "-vvv")
    https.served_key()
    make_certificate(tmp_path / "stray", [DOMAIN], issuer=ca)
    https.give_key((tmp_path / "stray.key").read_text())
    assert https.deploy(provided, "--debug", "--diff", check=False).returncode != 0
    seen = list(https.outputs) + lab_tools.containers_and_git(https.host)
    # Each line of a key's base64 body is 64 characters of key material.
    lines = {line for key in https.keys for line in key.splitlines() if line and not line.startswith("-----")}
    assert len(https.keys) >= 3 and lines
    assert sorted({where for where, text in seen for line in lines if line in text}) == []
