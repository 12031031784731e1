"""Maintainer access: SSH by key on port 8022, never by password; sudo passwords set by deploy."""

import secrets

import paramiko
import pytest

from tests import lab as lab_tools

pytestmark = pytest.mark.e2e


def sudo(provisioned, login: str, password: str):
    return provisioned.maintainer("sudo -S -p '' id -un", login=login, check=False, input=password + "\n")


def test_each_maintainer_logs_in_by_key_and_is_in_the_sudo_group(provisioned):
    for login in lab_tools.MAINTAINERS:
        out = provisioned.maintainer("id -un; id -Gn", login=login).stdout.split("\n")
        assert out[0] == login
        assert "sudo" in out[1].split()


def test_password_login_is_refused(provisioned):
    client = paramiko.SSHClient()
    client.load_host_keys(str(provisioned.lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException) as refused:
        client.connect(provisioned.host.address, port=8022, username="sysop",
                       password=provisioned.passwords["sysop"], look_for_keys=False, allow_agent=False,
                       timeout=10)
    client.close()
    allowed = getattr(refused.value, "allowed_types", None)
    assert allowed == ["publickey"], allowed


def test_sudo_takes_the_operators_password_and_refuses_a_wrong_one(provisioned):
    assert sudo(provisioned, "sysop", provisioned.passwords["sysop"]).stdout.strip() == "root"
    wrong = sudo(provisioned, "sysop", "not-the-password")
    assert wrong.returncode != 0 and "root" not in wrong.stdout


def test_no_password_or_hash_reaches_a_command_line_or_the_output(provisioned):
    hashes = provisioned.host.ssh("cat /srv/kono/config/production/maintainer_password_hashes",
                                  user="kono").stdout
    assert {line.split(":", 1)[0] for line in hashes.splitlines()} == set(lab_tools.MAINTAINERS)
    for line in hashes.splitlines():
        assert line.split(":", 1)[1].startswith("$6$")
        assert line.split(":", 1)[1] not in provisioned.first_deploy.output
    for password in provisioned.passwords.values():
        assert password not in provisioned.first_deploy.output


def test_a_new_password_takes_effect_and_an_unchanged_one_changes_nothing(provisioned):
    provisioned.wait_healthy()
    before = provisioned.deploy("--json")
    assert before.changes == 0, before.stdout

    old, new = provisioned.passwords["wheel"], secrets.token_urlsafe(12)
    changed = provisioned.deploy("--json", env={"KONO_MAINTAINER_PASSWORD_WHEEL": new})
    assert changed.changes == 2  # the hash file, and the bring-up that applies it
    lab_tools.write_maintainer_passwords(provisioned.lab, {"wheel": new})
    provisioned.passwords["wheel"] = new

    assert sudo(provisioned, "wheel", new).stdout.strip() == "root"
    assert sudo(provisioned, "wheel", old).returncode != 0
    assert sudo(provisioned, "sysop", provisioned.passwords["sysop"]).stdout.strip() == "root"
    assert provisioned.deploy("--json").changes == 0
