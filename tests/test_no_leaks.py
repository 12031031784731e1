"""No leaks: no secret value, password or password hash in anything a user or the host can see."""

import secrets as random_values
import subprocess
import sys
import threading

import pytest

from tests import lab as lab_tools

pytestmark = pytest.mark.e2e


def secret_values(provisioned) -> set[str]:
    """Every stack secret on the host now, every maintainer password hash, and the lines of a provided
    TLS private key (left by test_https.py; its certificate is public)."""
    text = provisioned.host.ssh(
        "cd /srv/kono/config && for f in */*; do [ \"$f\" = tls/certificate ] || cat \"$f\"; echo; done",
        user="kono").stdout
    values = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("-----", "#")):
            continue  # a PEM armour line ("-----BEGIN PRIVATE KEY-----") or a comment: not secret
        if ":" in line and line.split(":", 1)[1].startswith("$6$"):
            values.add(line.split(":", 1)[1])  # a password hash
        elif line:
            values.add(line)
    return values


class PsSampler:
    """Samples every process's arguments on the host, as root, while a deploy runs."""

    def __init__(self, provisioned):
        self.proc = subprocess.Popen(
            [*provisioned.host.ssh_args("admin"),
             "for i in $(seq 600); do sudo -n ps -eo args; sleep 0.05; done"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.output = ""
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self):
        self.output = self.proc.stdout.read()

    def stop(self) -> str:
        self.proc.terminate()
        self.thread.join(timeout=30)
        return self.output


def test_no_secret_appears_in_any_output_the_host_the_containers_or_git(provisioned):
    provisioned.wait_healthy()
    seen: list[tuple[str, str]] = []  # (where, what a user or the host could see there)
    secrets: set[str] = secret_values(provisioned)
    passwords = set(provisioned.passwords.values())
    # Values made now, not written in this file: git must not hold them either.
    wheel = {"KONO_MAINTAINER_PASSWORD_WHEEL": random_values.token_urlsafe(12)}
    passwords |= set(wheel.values())

    sampler = PsSampler(provisioned)
    try:
        # Every verbosity and output mode, each run with a secret in flight (a new password's hash).
        seen.append(("deploy -vvv", provisioned.deploy("-vvv", "--data", "server_name=leaks-1.example", env=wheel).output))
        secrets |= secret_values(provisioned)
        wheel["KONO_MAINTAINER_PASSWORD_WHEEL"] = random_values.token_urlsafe(12)
        passwords |= set(wheel.values())
        seen.append(("deploy --debug --diff", provisioned.deploy("--debug", "--diff", env=wheel).output))
        secrets |= secret_values(provisioned)
        wheel["KONO_MAINTAINER_PASSWORD_WHEEL"] = random_values.token_urlsafe(12)
        passwords |= set(wheel.values())
        seen.append(("deploy --dry --diff -vv", provisioned.deploy("--dry", "--diff", "-vv", env=wheel).output))
        seen.append(("deploy --json -v", provisioned.deploy("--json", "-v", env=wheel).output))
        secrets |= secret_values(provisioned)
        # Rotations put new values through the host's shells and the database.
        for target in ("production/api_key", "production/db_unauthorized_api_password"):
            seen.append((f"rotate {target}", lab_tools.rotate(provisioned.inventory, target, "-vv").output))
            secrets |= secret_values(provisioned)
        # A deliberately failing deploy: a supplied value that conflicts with the host's.
        conflicting = random_values.token_hex(16)
        failed = provisioned.deploy("-vvv", check=False, env={"KONO_SECRET_DEV_DB_DEV_PASSWORD": conflicting})
        assert failed.returncode != 0
        seen.append(("failing deploy -vvv", failed.output))
        passwords.add(conflicting)
    finally:
        seen.append(("ps on the host", sampler.stop()))
    lab_tools.write_maintainer_passwords(provisioned.lab, {"wheel": wheel["KONO_MAINTAINER_PASSWORD_WHEEL"]})
    provisioned.passwords["wheel"] = wheel["KONO_MAINTAINER_PASSWORD_WHEEL"]
    seen.append(("deploy", provisioned.deploy("--data", "server_name=_").output))

    seen.append(("status", subprocess.run([sys.executable, "-m", "kono.cli.status", str(provisioned.inventory)],
                                          cwd=lab_tools.REPO, capture_output=True, text=True).stdout))
    seen.append(("bootstrap", provisioned.bootstrap.output))
    seen.append(("sudo log", provisioned.host.ssh("sudo -n journalctl --no-pager -q _COMM=sudo").stdout))
    seen.extend(lab_tools.containers_and_git(provisioned.host))

    assert len(secrets) >= 8 and len(passwords) >= 5
    leaked = sorted({(where, value[:6] + "...") for where, text in seen for value in secrets | passwords
                     if value in text})
    assert leaked == []
