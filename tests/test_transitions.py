"""Turning a feature on or off on a running host. Each transition of a knob converges in one deploy
while clients load the host, the next deploy changes nothing, and the configuration left live is
one that nginx's container loads again after a restart. A failed deploy (compose or nginx rejecting
the change, a wrong key, an unreachable repository, a run killed half-way) leaves a stack that comes
back healthy when its containers and the host restart. Ends with the host on the defaults."""

import shutil
import signal
import time
from pathlib import Path

import pytest

from kono.services import SERVICES, enabled
from tests import lab as lab_tools
from tests.lab import AcmeServer, ResticServer, container, make_certificate, under_load
from tests.test_https import DOMAIN, handshake, http_get, tls_context

pytestmark = pytest.mark.e2e

RESTARTS_NGINX = "nginx gets a new container"
# A recreate the deploy announced may fail requests for about the time nginx takes to start again
# (measured here: 1 to 3 s); anything else fails none.
RECREATE_WINDOW = 10
OTHER_NAME = "www.kono.test"


class Walk:
    """One deployed host taken through the transitions, each deploy under load."""

    def __init__(self, provisioned, pebble: AcmeServer, repositories: tuple[ResticServer, ResticServer],
                 workdir: Path) -> None:
        self.provisioned, self.host, self.pebble, self.repositories = provisioned, provisioned.host, pebble, repositories
        self.workdir = workdir
        self.windows: list[tuple[str, int, float]] = []  # (transition, failed requests, seconds)
        secrets = provisioned.lab.workdir / "secrets"
        self.tls_dir = secrets / "tls"
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        self.ca = make_certificate(workdir / "ca", [], days=365, ca=True)
        make_certificate(workdir / "provided", [DOMAIN, OTHER_NAME], issuer=self.ca, days=90)
        shutil.copy(workdir / "provided.pem", self.tls_dir / "certificate")
        shutil.copy(workdir / "provided.key", self.tls_dir / "private_key")
        backup = secrets / "backup"
        backup.mkdir(parents=True, exist_ok=True)
        if not (backup / "repository_password").exists():  # test_backups.py may have written them
            import secrets as random_values
            (backup / "repository_password").write_text(random_values.token_urlsafe(24) + "\n")
            (backup / "storage_credentials").write_text("")

    def data(self, **knobs) -> dict:
        """The knobs of a step: HTTPS through Pebble when on, the defaults otherwise."""
        data = {"domains": [DOMAIN], **knobs}
        if data.get("https") == "acme":
            data.update(acme_email="ops@kono.test", acme_directory_url=self.pebble.directory_url,
                        acme_ca_bundle=str(self.pebble.ca_bundle))
        return data

    def inventory(self, **knobs) -> Path:
        return lab_tools.write_inventory(self.provisioned.lab, [self.host], self.workdir / "inventory.py",
                                         api_repo=self.provisioned.git.repo("api"),
                                         app_repo=self.provisioned.git.repo("app"), **self.data(**knobs))

    def services(self, **knobs) -> tuple:
        return enabled(SERVICES, lab_tools.settings_of(**self.data(**knobs)))

    def step(self, name: str, **knobs) -> lab_tools.Run:
        """Deploy ``knobs`` under load: it converges, fails no request but in a recreate it announced,
        the next deploy changes nothing, and nginx restarted comes back on the live configuration."""
        inventory = self.inventory(**knobs)
        run, load = under_load(self.host.address, lambda: lab_tools.deploy(inventory, check=False),
                               paths=("/healthz", "/api/health"))
        assert run.returncode == 0, f"{name}: {run.output[-4000:]}"
        self.windows.append((name, len(load.failures), load.window))
        if load.failures:
            assert RESTARTS_NGINX in run.output, f"{name}: requests failed, no restart announced: {load}"
            assert load.window <= RECREATE_WINDOW, f"{name}: {load}"
        assert lab_tools.deploy(inventory, "--json").changes == 0, name
        self.host.ssh(f"docker restart --time 5 {container('nginx')}", user="kono")
        self.provisioned.wait_healthy(services=self.services(**knobs), timeout=120)
        return run

    def https(self, port: int = 443, root: str | None = None) -> dict:
        """A verified handshake for DOMAIN (against Pebble's root, or the test CA of provided ones)."""
        context = tls_context(root or (self.workdir / "ca.pem").read_text())
        return handshake_on(self.host.address, context, port)


def handshake_on(address: str, context, port: int) -> dict:
    if port == 443:
        return handshake(address, context)
    import socket
    with socket.create_connection((address, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            return {"version": tls.version(), "serial": tls.getpeercert()["serialNumber"]}


@pytest.fixture(scope="module")
def walk(provisioned, tmp_path_factory):
    provisioned.wait_healthy()
    with AcmeServer(provisioned.lab, points_to=provisioned.host.address) as pebble, \
            ResticServer(provisioned.lab) as first, ResticServer(provisioned.lab) as second:
        walk = Walk(provisioned, pebble, (first, second), tmp_path_factory.mktemp("transitions"))
        yield walk
        # What the README quotes: failed requests, and the window they fell in, per transition.
        for name, failed, window in walk.windows:
            print(f"transition {name:32} {failed:4d} failed, window {window:5.2f} s")
        lab_tools.bootstrap(provisioned.inventory)  # the firewall back on the default ports
        provisioned.reset()  # back to the defaults for the modules after this one


def test_https_off_to_provided_serves_the_certificate_in_one_deploy(walk):
    run = walk.step("off -> provided", https="provided")
    assert RESTARTS_NGINX in run.output  # new mounts and port: a new container, said before
    assert walk.https()["version"] in ("TLSv1.2", "TLSv1.3")


def test_https_provided_to_off_serves_plain_http_again(walk):
    walk.step("provided -> off")
    assert http_get(walk.host.address, "/healthz") == (200, "")
    with pytest.raises(OSError):
        walk.https()


def test_https_off_to_acme_gets_a_certificate_in_one_deploy(walk):
    walk.step("off -> acme", https="acme")
    assert walk.https(root=walk.pebble.root())["version"] in ("TLSv1.2", "TLSv1.3")
    assert http_get(walk.host.address, "/") == (301, f"https://{DOMAIN}/")


def test_https_acme_to_provided_serves_the_provided_certificate(walk):
    walk.step("acme -> provided", https="provided")
    walk.https()  # verified against the test CA, not Pebble's


def test_https_provided_to_acme_serves_the_acmes_certificate(walk):
    walk.step("provided -> acme", https="acme")
    walk.https(root=walk.pebble.root())


def test_a_new_domain_gets_a_certificate_for_every_name(walk):
    walk.step("domains +1 (acme)", https="acme", domains=[DOMAIN, OTHER_NAME])
    context = tls_context(walk.pebble.root())
    import socket
    with socket.create_connection((walk.host.address, 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=OTHER_NAME) as tls:  # verified for the new name
            assert tls.version()


def test_https_acme_to_off_serves_plain_http_again(walk):
    walk.step("acme -> off")
    assert http_get(walk.host.address, "/")[0] in (200, 404)  # no redirect


def test_a_new_https_port_needs_the_firewall_first_and_then_converges(walk):
    knobs = {"https": "provided", "https_port": 8443}
    before = walk.provisioned.snapshot()
    refused = lab_tools.deploy(walk.inventory(**knobs), check=False)
    assert refused.returncode != 0
    assert "https_port: expected a port the host's firewall opens" in refused.output, refused.output[-3000:]
    assert "bootstrap.py" in refused.output and "Traceback" not in refused.output
    assert walk.provisioned.snapshot() == before
    lab_tools.bootstrap(walk.inventory(**knobs))
    walk.step("off -> provided on 8443", **knobs)
    walk.https(port=8443)
    assert http_get(walk.host.address, "/x") == (301, f"https://{DOMAIN}:8443/x")
    walk.step("provided on 8443 -> off")
    lab_tools.bootstrap(walk.inventory())  # the firewall back on the default ports


def snapshots(repository: ResticServer) -> int:
    folder = repository.root / "snapshots"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def wait_for_snapshots(repository: ResticServer, seconds: float = 180) -> None:
    """The backup service backs a host up at once in a repository it has no success in yet."""
    deadline = time.monotonic() + seconds
    while snapshots(repository) == 0:
        assert time.monotonic() < deadline, f"no snapshot in {repository.url} after {seconds} s"
        time.sleep(2)


def test_backups_set_changed_and_unset_each_converge(walk):
    first, second = walk.repositories
    made = lab_tools.add_greeting(walk.host, "kept across repositories")  # a database worth backing up
    assert made.returncode == 0, made.stderr
    walk.step("backup_repository set", backup_repository=first.url)
    wait_for_snapshots(first)
    walk.step("backup_repository changed", backup_repository=second.url)
    wait_for_snapshots(second)  # not left empty until the next scheduled backup
    walk.step("backup_repository unset")
    assert "backup" not in walk.provisioned.container_ids()


# -- a failed deploy leaves a stack that survives a restart ------------------------------------------

def healthz(walk) -> tuple[int, str]:
    """/healthz by the host's address (the names in domains redirect to HTTPS while it is on)."""
    return http_get(walk.host.address, "/healthz", host=walk.host.address)


def restart_everything(walk, reboot: bool = False, **knobs) -> None:
    """Restart every container of the stack (and the host): the same stack comes back healthy."""
    walk.host.ssh("docker ps -q --filter label=com.docker.compose.project=kono | xargs -r docker restart --time 10",
                  user="kono", timeout=300)
    if reboot:
        walk.host.reboot()
    walk.provisioned.wait_healthy(services=walk.services(**knobs), timeout=300)
    assert healthz(walk) == (200, "")


def without_tls_pair(snapshot: str) -> str:
    return "\n".join(line for line in snapshot.splitlines() if not line.startswith("./config/tls"))


def broken_checkout(tmp_path: Path, template: str, old: str, new: str) -> Path:
    checkout = tmp_path / "kono-infra"
    shutil.copytree(lab_tools.REPO, checkout, ignore=shutil.ignore_patterns(".venv", ".git", "node_modules"))
    path = checkout / template
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return checkout


FAILURES = {  # name: (template, text, replacement, what the failed deploy says)
    "compose rejects the new nginx block": ("templates/services/nginx.yaml.j2", "restart: unless-stopped\n",
                                            "restart: unless-stopped\nbogus_setting: 1\n", "bogus_setting"),
    "nginx rejects the new HTTPS site": ("templates/nginx/https.server.j2", "    http2 on;\n",
                                         "    http2 on;\n    bogus_directive on;\n", "bogus_directive"),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_rejected_transition_changes_nothing_and_the_stack_survives_a_restart(walk, failure, tmp_path):
    template, old, new, said = FAILURES[failure]
    checkout = broken_checkout(tmp_path, template, old, new)
    before = without_tls_pair(walk.provisioned.snapshot())
    failed = lab_tools.pyinfra(walk.inventory(https="provided"), "deploy.py", check=False,
                               cwd=checkout)
    assert failed.returncode != 0 and said in failed.output, failed.output[-3000:]
    # The old files, the old containers; the provided pair, checked on the operator's machine, is
    # placed first (the new site is checked with it) and nothing reads it while HTTPS is off.
    assert without_tls_pair(walk.provisioned.snapshot()) == before
    restart_everything(walk)


def test_a_wrong_key_changes_nothing_and_the_stack_survives_a_restart(walk):
    other = make_certificate(walk.workdir / "other", [DOMAIN], issuer=walk.ca)
    assert other
    key = walk.tls_dir / "private_key"
    good = key.read_bytes()
    key.write_bytes((walk.workdir / "other.key").read_bytes())
    try:
        before = walk.provisioned.snapshot()
        failed = lab_tools.deploy(walk.inventory(https="provided"), check=False)
        assert failed.returncode != 0 and "tls/private_key: expected the private key" in failed.output
        assert walk.provisioned.snapshot() == before
    finally:
        key.write_bytes(good)
    restart_everything(walk)


def test_an_unreachable_repository_leaves_a_stack_that_survives_a_restart(walk):
    first, _ = walk.repositories
    first.stop()
    try:
        lab_tools.deploy(walk.inventory(backup_repository=first.url), check=False)
        walk.host.ssh("docker ps -q --filter label=com.docker.compose.project=kono | xargs -r docker restart "
                      "--time 10", user="kono", timeout=300)
        walk.provisioned.wait_healthy(services=walk.services(backup_repository=first.url),
                                      timeout=300)
    finally:
        first.start()
    walk.step("back without backups")


def test_a_transition_killed_half_way_survives_a_reboot_and_the_next_deploy_finishes_it(walk):
    inventory = walk.inventory(https="provided")
    victim = lab_tools.pyinfra_background(inventory, "deploy.py")
    seen = []
    deadline = time.monotonic() + 300
    # Killed once it announced nginx's new container: the bring-up is starting on the host, and the
    # reboot right after cuts it short there too.
    while time.monotonic() < deadline:
        line = victim.stdout.readline()
        if not line:
            break
        seen.append(line)
        if RESTARTS_NGINX in line:
            break
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert any(RESTARTS_NGINX in line for line in seen), "".join(seen)[-3000:]
    walk.host.reboot()
    walk.provisioned.wait_healthy(services=walk.services(), timeout=300)
    assert healthz(walk) == (200, "")
    finished = lab_tools.deploy(inventory, "--json")
    assert finished.json["results"]["totals"]["error"] == 0
    assert lab_tools.deploy(inventory, "--json").changes == 0
    walk.https()
    restart_everything(walk, reboot=True)  # the finished transition survives a reboot too
    walk.https()
    walk.step("provided -> off (after the kill)")
