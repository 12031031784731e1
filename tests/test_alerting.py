"""Alerts reach the team: with alert_webhook, Alertmanager on the host sends each alert once, and its
end once, to the team's webhook: here a receiver on the lab's bridge whose URL carries a random
token, supplied as the secret alerts/webhook_url; with alert_email_to, the same by email, through a
mail server on the bridge that takes mail only over STARTTLS (its certificate from a CA the operator
names) and with the login whose password is the secret alerts/smtp_password. The faults are real:
the backup repository stopped (BackupFailed, and BinaryLogsBehind with commits waiting), a database
container stopped (ServiceUnhealthy, after its 5 minutes), a disk of the host filled (DiskAlmostFull:
a small filesystem of its own), a provided certificate ten days from its expiry
(CertificateExpiresSoon) and a deploy cut short (DeployFailed). With alert_heartbeat, the dead man's
switch (another path of the receiver) hears the host every minute, and stops hearing it when its
Prometheus dies. The URLs, the password and every secret of the host are in no message, output,
log, container or git."""

import datetime
import secrets as random_values
import time
from pathlib import Path

import pytest

from tests import lab as lab_tools
from tests.lab import BACKUP_SCRIPT, MailReceiver, ResticServer, WebhookReceiver, container, make_certificate

pytestmark = pytest.mark.e2e

TEAM = "team"  # the receiver's path for the team's webhook
HEARTBEAT = "heartbeat"  # and for the dead man's switch
DATA = "CREATE TABLE IF NOT EXISTS alerting_kept (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64));"
DOMAIN = "kono.test"
ONCALL = "oncall@kono.test"  # alert_email_to
DISK = "/mnt/kono-small-disk"  # a filesystem of its own on the host, filled by a test


def provide_certificate(secrets: Path, ca, days: float) -> None:
    """A certificate for DOMAIN signed by ``ca``, valid ``days``, and its key, where the operator gives them."""
    tls = secrets / "tls"
    tls.mkdir(exist_ok=True)
    make_certificate(tls / "alerting", [DOMAIN], issuer=ca, days=days)
    (tls / "alerting.pem").rename(tls / "certificate")
    (tls / "alerting.key").rename(tls / "private_key")


@pytest.fixture(scope="module")
def alerting(provisioned):
    provisioned.wait_healthy()
    lab_tools.load_images(provisioned.host, monitoring=True)
    secrets = provisioned.lab.workdir / "secrets"
    (secrets / "backup").mkdir(parents=True, exist_ok=True)
    if not (secrets / "backup" / "repository_password").exists():  # (another module's, if it ran here first)
        (secrets / "backup" / "repository_password").write_text(random_values.token_urlsafe(24) + "\n")
    (secrets / "alerts").mkdir(exist_ok=True)
    ca = make_certificate(provisioned.lab.workdir / "alerting-ca", [], days=365, ca=True)
    provide_certificate(secrets, ca, days=10)
    with (WebhookReceiver(provisioned.lab) as receiver, MailReceiver(provisioned.lab, ca) as mail,
          ResticServer(provisioned.lab) as server):
        (secrets / "alerts" / "webhook_url").write_text(receiver.url(TEAM) + "\n")
        (secrets / "alerts" / "heartbeat_url").write_text(receiver.url(HEARTBEAT) + "\n")
        (secrets / "alerts" / "smtp_password").write_text(mail.password + "\n")
        inventory = lab_tools.write_inventory(
            provisioned.lab, [provisioned.host], provisioned.lab.workdir / "alerting-inventory.py",
            api_repo=provisioned.git.repo("api"), app_repo=provisioned.git.repo("app"),
            backup_repository=server.url, pitr=True, https="provided", domains=[DOMAIN],
            monitoring=True, alert_webhook=True, alert_heartbeat=True,
            alert_email_to=[ONCALL], alert_email_from=f"kono@{DOMAIN}", alert_smtp_server=mail.server,
            alert_smtp_username=mail.username, alert_smtp_ca_bundle=str(provisioned.lab.workdir / "alerting-ca.pem"))
        outputs = [("deploy -vvv", lab_tools.deploy(inventory, "-vvv").output)]
        yield provisioned, receiver, server, inventory, outputs, ca, mail
    for given in ("alerts/webhook_url", "alerts/heartbeat_url", "alerts/smtp_password", "tls/certificate",
                  "tls/private_key"):
        (secrets / given).unlink()
    provisioned.reset()


def messages(receiver: WebhookReceiver) -> list[str]:
    """The titles of what the team's webhook got, in order ("[FIRING] BackupFailed on <host>")."""
    return [attachment["title"] for _, body in receiver.posts(TEAM) for attachment in body.get("attachments", [])]


def wait_for_message(receiver: WebhookReceiver, title: str, seconds: float) -> float:
    """Seconds until a message with this title came; fails with what came."""
    start = time.monotonic()
    while title not in messages(receiver):
        if time.monotonic() - start > seconds:
            raise AssertionError(f"no {title!r} within {seconds} s; the webhook got: {messages(receiver)}")
        time.sleep(2)
    return time.monotonic() - start


def assert_emailed_once_each(mail: MailReceiver, alerts: tuple[str, ...], name: str) -> None:
    """Each alert emailed to ONCALL when it fired and when it ended, once each, as the webhook was told
    (one notification, both integrations: the mail may come a moment after the POST)."""
    deadline = time.monotonic() + 60
    while not all(f"[RESOLVED] {alert} on {name}" in mail.subjects() for alert in alerts):
        assert time.monotonic() < deadline, f"the mailbox got: {mail.subjects()} ({mail.refused_logins} logins refused)"
        time.sleep(2)
    for alert in alerts:
        assert [t for t in mail.subjects() if f"] {alert} " in t] == [f"[FIRING] {alert} on {name}",
                                                                       f"[RESOLVED] {alert} on {name}"]
    assert {tuple(to) for _, to, _ in mail.received} == {(ONCALL,)}
    assert mail.refused_logins == 0


def mail_texts(mail: MailReceiver) -> list[str]:
    """Each email's plain text (Alertmanager sends multipart/alternative, here with its text part alone)."""
    return [message.get_body(preferencelist=("plain",)).get_content() for _, _, message in list(mail.received)]


def beats(receiver: WebhookReceiver) -> list[float]:
    """When the dead man's switch heard the host."""
    return [at for at, _ in receiver.posts(HEARTBEAT)]


def test_a_failed_backup_a_stopped_database_and_a_full_disk_are_each_told_once_and_their_end_once(alerting):
    provisioned, receiver, server, inventory, outputs, _, mail = alerting
    host = provisioned.host
    name = host.address  # the inventory names the host by its address
    alerts = ("BackupFailed", "BinaryLogsBehind", "ServiceUnhealthy", "DiskAlmostFull")
    host.ssh(lab_tools.API_SQL, user="kono", input=DATA)  # (an empty database is not backed up)
    # Binary logs are being shipped (a new host's timeline has begun) before the repository stops.
    lab_tools.wait_shipped_past(host, datetime.datetime.now(datetime.timezone.utc), 180)
    with host.small_disk(DISK) as disk:
        server.stop()
        try:
            failed = host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono", check=False)
            assert failed.returncode != 0
            host.ssh(f"docker stop {container('db_dev')}", user="kono")
            # A disk of the host filled to 95%, by the deploy user (the rule: above 85% for 5 minutes).
            host.ssh(f"fallocate -l $(( $(df --output=avail -k {disk} | tail -1) * 95 / 100 ))K {disk}/fill",
                     user="kono")
            stopped = time.monotonic()
            # A commit that cannot reach the repository (pitr_max_lag_seconds 60: the rule allows twice
            # it, then waits a minute).
            host.ssh(lab_tools.API_SQL, user="kono", input="INSERT INTO alerting_kept (note) VALUES ('waiting');")
            took = wait_for_message(receiver, f"[FIRING] BackupFailed on {name}", 180)
            print(f"BackupFailed told {took:.0f} s after the failed run")
            wait_for_message(receiver, f"[FIRING] BinaryLogsBehind on {name}", 5 * 60)
            print(f"BinaryLogsBehind told {time.monotonic() - stopped:.0f} s after the repository stopped")
            for alert in ("ServiceUnhealthy", "DiskAlmostFull"):  # (their rules wait 5 minutes)
                wait_for_message(receiver, f"[FIRING] {alert} on {name}", 5 * 60 + 150)
                print(f"{alert} told {time.monotonic() - stopped:.0f} s after db_dev stopped and the disk filled")
        finally:
            server.start()
        outputs.append(("deploy", lab_tools.deploy(inventory).output))  # db_dev back
        # A restic run the outage caught mid-way (the service's first base backup, its prune) keeps
        # the repository's lock until its retries get through (restic gives up after 15 minutes);
        # a backup started meanwhile fails on the lock (seen here), so the operator's waits for it.
        waiting, deadline = time.monotonic(), time.monotonic() + 16 * 60
        while host.ssh(f"docker exec {container('backup')} sh -c 'grep -lx restic /proc/[0-9]*/comm'", user="kono",
                       check=False).stdout.strip():
            assert time.monotonic() < deadline, "a restic run outlived its retries"
            time.sleep(5)
        print(f"the restic run the outage caught ended {time.monotonic() - waiting:.0f} s after the fix")
        host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")  # (it dumps db_dev too)
        host.ssh(f"rm {disk}/fill", user="kono")
        fixed = time.monotonic()
        for alert in alerts:
            wait_for_message(receiver, f"[RESOLVED] {alert} on {name}", 240)
        print(f"all told resolved {time.monotonic() - fixed:.0f} s after the fix")
    got = messages(receiver)
    for alert in alerts:  # once each, though they lasted minutes
        assert [t for t in got if f"] {alert} " in t] == [f"[FIRING] {alert} on {name}", f"[RESOLVED] {alert} on {name}"]
    assert not [t for t in got if "Watchdog" in t], got  # the dead man's switch is not the team's
    texts = [attachment.get("text", "") for _, body in receiver.posts(TEAM) for attachment in body["attachments"]]
    assert any("db_dev on " in text and "unhealthy for 5 minutes" in text for text in texts), texts
    assert any(f"{DISK} on {name} is 9" in text and "% full." in text for text in texts), texts
    assert_emailed_once_each(mail, alerts, name)
    assert any("db_dev on " in text and "unhealthy for 5 minutes" in text for text in mail_texts(mail))
    assert lab_tools.deploy(inventory, "--json").changes == 0


def test_a_certificate_near_its_expiry_and_a_deploy_cut_short_are_each_told_once_and_their_end_once(alerting):
    provisioned, receiver, _, inventory, outputs, ca, mail = alerting
    host = provisioned.host
    name = host.address
    # The fixture's deploy gave the host a certificate for ten days (the rule says 21).
    wait_for_message(receiver, f"[FIRING] CertificateExpiresSoon on {name}", 180)
    # A deploy cut short once it holds the host's lock (a laptop closed, a CI job cancelled): killed as
    # its step after the lock starts (a no-op deploy holds the lock a second or two: polling the
    # host for it raced, in CI, with the deploy's end).
    lab_tools.kill_when_operation_starts(lab_tools.pyinfra_background(inventory, "deploy.py"), "Compose project files")
    cut = time.monotonic()
    wait_for_message(receiver, f"[FIRING] DeployFailed on {name}", 180)
    print(f"DeployFailed told {time.monotonic() - cut:.0f} s after the deploy was cut")
    # The fixes: the operator's renewed certificate, given by a deploy that ends.
    provide_certificate(provisioned.lab.workdir / "secrets", ca, days=90)
    outputs.append(("deploy, a renewed certificate", lab_tools.deploy(inventory).output))
    fixed = time.monotonic()
    for alert in ("CertificateExpiresSoon", "DeployFailed"):
        wait_for_message(receiver, f"[RESOLVED] {alert} on {name}", 240)
    print(f"both told resolved {time.monotonic() - fixed:.0f} s after the fix")
    got = messages(receiver)
    for alert in ("CertificateExpiresSoon", "DeployFailed"):
        assert [t for t in got if f"] {alert} " in t] == [f"[FIRING] {alert} on {name}", f"[RESOLVED] {alert} on {name}"]
    texts = [attachment.get("text", "") for _, body in receiver.posts(TEAM) for attachment in body["attachments"]]
    assert any(f"The certificate for {DOMAIN} on {name} expires in 9d" in text for text in texts), texts
    assert_emailed_once_each(mail, ("CertificateExpiresSoon", "DeployFailed"), name)
    assert lab_tools.deploy(inventory, "--json").changes == 0


def test_without_the_webhook_url_the_deploy_stops_before_changing_anything(alerting):
    provisioned, _, _, inventory, outputs, _, _ = alerting
    url = provisioned.lab.workdir / "secrets" / "alerts" / "webhook_url"
    kept = url.read_text()
    url.unlink()
    provisioned.host.ssh(f"mv {lab_tools.PROJECT_DIR}/config/alerts/webhook_url /tmp/webhook_url", user="kono")
    try:
        before = provisioned.snapshot()
        failed = lab_tools.deploy(inventory, check=False)
        outputs.append(("deploy without the webhook url", failed.output))
        assert failed.returncode != 0
        assert ("alerts/webhook_url: expected the webhook's URL in $KONO_SECRET_ALERTS_WEBHOOK_URL or the file "
                f"{url} (alert_webhook = True), and the host has none") in failed.output
        assert provisioned.snapshot() == before
    finally:
        url.write_text(kept)
        provisioned.host.ssh(f"mv /tmp/webhook_url {lab_tools.PROJECT_DIR}/config/alerts/webhook_url", user="kono")


def test_the_webhook_url_is_in_no_message_output_log_container_or_git(alerting):
    """Alertmanager's failed sends are logged: a webhook that does not answer must not put its URL
    (and token) in that log either."""
    provisioned, receiver, server, inventory, outputs, _, mail = alerting
    host = provisioned.host
    url_file = provisioned.lab.workdir / "secrets" / "alerts" / "webhook_url"
    kept = url_file.read_text()
    closed = f"http://{provisioned.lab.gateway}:{lab_tools._free_port(provisioned.lab.gateway)}/team/" \
             f"{random_values.token_urlsafe(18)}"
    url_file.write_text(closed + "\n")
    try:
        outputs.append(("deploy -vvv, a new webhook url", lab_tools.deploy(inventory, "-vvv").output))
        outputs.append(("deploy --debug --diff", lab_tools.deploy(inventory, "--debug", "--diff").output))
        host.ssh(lab_tools.API_SQL, user="kono", input=DATA)  # (an empty database is not backed up)
        server.stop()
        try:  # an alert to send where nothing answers
            failed = host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono", check=False)
            assert failed.returncode != 0
            deadline, logs = time.monotonic() + 300, ""
            while "Notify" not in logs:
                assert time.monotonic() < deadline, f"Alertmanager logged no failed send: {logs[-3000:]}"
                time.sleep(5)
                logs = host.ssh(f"docker logs {container('alertmanager')} 2>&1", user="kono").stdout
        finally:
            server.start()
        host.ssh(f"docker exec {container('backup')} {BACKUP_SCRIPT} backup", user="kono")
        shown = lab_tools.status(inventory, timeout=120)
        outputs.append(("status", shown.stdout + shown.stderr))
        seen = [*outputs, ("alertmanager's log", logs), ("the webhook's messages", repr([body for _, _, body in receiver.received])),
                ("the emails", "\n".join(str(message) for _, _, message in mail.received)),
                *lab_tools.containers_and_git(host)]
        values = {kept.strip(), receiver.token, closed, closed.rsplit("/", 1)[1], receiver.url(HEARTBEAT), mail.password}
        # Every secret file, the TLS key's lines among them (not the certificate: it is served to all).
        on_host = host.ssh("cd /srv/kono/config && for f in */*; do [ \"$f\" = tls/certificate ] || cat \"$f\"; echo; done",
                           user="kono").stdout
        values |= {line.strip() for line in on_host.splitlines()
                   if len(line.strip()) >= 16 and not line.startswith(("-----", "#"))}
        assert len(values) >= 8
        leaked = sorted({(where, value[:6] + "...") for where, text in seen for value in values if value in text})
        assert leaked == []
    finally:
        url_file.write_text(kept)
        lab_tools.deploy(inventory)


def test_the_dead_mans_switch_hears_the_host_each_minute_and_no_more_once_its_prometheus_is_gone(alerting):
    provisioned, receiver, _, inventory, outputs, _, _ = alerting
    host = provisioned.host
    began = time.time()  # (the tests before this one recreate Alertmanager: its beats pause then)
    deadline = time.monotonic() + 240
    while len([at for at in beats(receiver) if at > began]) < 3:
        assert time.monotonic() < deadline, f"heartbeats: {beats(receiver)}"
        time.sleep(5)
    heard = [at for at in beats(receiver) if at > began]
    gaps = [later - earlier for earlier, later in zip(heard, heard[1:])]
    assert max(gaps) < 70, gaps  # each minute
    titles = {a["title"] for _, body in receiver.posts(HEARTBEAT) for a in body["attachments"]}
    assert titles == {f"Watchdog: the alerting of {host.address} is alive"}
    assert not [t for t in messages(receiver) if "Watchdog" in t]  # never the team's
    # Last in this module: Alertmanager counts what was firing as resolved once Prometheus is gone,
    # and tells the team so (the tests before count each alert's messages).
    host.ssh(f"docker stop {container('prometheus')}", user="kono")
    stopped = time.time()
    silence = 150  # what a switch expecting a beat each minute would allow
    deadline = time.monotonic() + 6 * 60
    while time.time() - max(beats(receiver)) < silence:
        assert time.monotonic() < deadline, f"still heard after Prometheus stopped: {beats(receiver)[-6:]}, {stopped}"
        time.sleep(5)
    print(f"the last heartbeat came {max(beats(receiver)) - stopped:.0f} s after Prometheus stopped")
    assert max(beats(receiver)) - stopped < 90  # Alertmanager held the Watchdog a minute, no more
    outputs.append(("deploy, prometheus stopped", lab_tools.deploy(inventory).output))  # brought back
    back = time.time()
    deadline = time.monotonic() + 180
    while max(beats(receiver)) < back:
        assert time.monotonic() < deadline, f"no heartbeat since the deploy brought Prometheus back: {beats(receiver)[-3:]}"
        time.sleep(5)
    print(f"heard again {max(beats(receiver)) - back:.0f} s after the deploy")
