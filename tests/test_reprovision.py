"""Backup and reprovision: a brand-new host gets the old host's rows, assets and credentials."""

import urllib.request

import pytest

from kono.services import stack_secrets
from tests import lab as lab_tools
from tests.lab import host_secret, mysql

pytestmark = pytest.mark.e2e

backup_tool = lab_tools.backup_tool


def secrets_of(host) -> str:
    """The stack secrets' digests (what a backup carries; a provided TLS pair comes from the operator)."""
    paths = " ".join(entry.path for entry in stack_secrets(lab_tools.settings_of()))
    return host.ssh(f"cd /srv/kono && for f in {paths}; do echo \"$f $(sha256sum < $f)\"; done", user="kono").stdout


def test_backup_and_reprovision_onto_a_fresh_host(provisioned, lab, tmp_path):
    a = provisioned.host
    api_password = host_secret(a, "production", "db_api_password")
    assert mysql(a, "api", api_password, "CREATE TABLE IF NOT EXISTS moved (note VARCHAR(64)); "
                                         "INSERT INTO moved VALUES ('row from host A');").returncode == 0
    provisioned.maintainer("echo 'asset from host A' > /srv/static/moved.txt")
    rows_a = mysql(a, "api", api_password, "SELECT note FROM moved ORDER BY note;").stdout

    made = backup_tool("create", str(provisioned.inventory), "--with-secrets", "--to", str(tmp_path / "backups"))
    assert made.returncode == 0, made.stderr
    backup = next((tmp_path / "backups" / a.address).iterdir())
    assert sorted(p.name for p in backup.iterdir()) == ["app_static.tar", "db_production.sql", "secrets"]
    for path in backup.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    assert f"its secrets are plain files in {backup / 'secrets'}" in made.stdout
    plain = backup_tool("create", str(provisioned.inventory), "--to", str(tmp_path / "plain"))
    assert plain.returncode == 0 and "plain files" not in plain.stdout
    assert sorted(p.name for p in next((tmp_path / "plain" / a.address).iterdir()).iterdir()) == [
        "app_static.tar", "db_production.sql"]

    b = lab.boot()
    try:
        inventory = provisioned.provision_new(b, tmp_path / "new-host.py", local_secrets_dir=str(backup / "secrets"))
        passwords = {f"KONO_MAINTAINER_PASSWORD_{login.upper()}": password
                     for login, password in provisioned.passwords.items()}
        restored = backup_tool("restore", str(inventory), str(backup))
        assert restored.returncode == 0, restored.stderr

        assert secrets_of(b) == secrets_of(a)  # the backup's credentials, not new ones
        assert mysql(b, "api", api_password, "SELECT note FROM moved ORDER BY note;").stdout == rows_a
        with urllib.request.urlopen(f"http://{b.address}/static/moved.txt", timeout=10) as response:
            assert response.read() == b"asset from host A\n"
        lab_tools.pin_maintainer_host_key(b)
        sudo = lab_tools.maintainer(b, "sudo -S -p '' id -un", check=False, input=provisioned.passwords["sysop"] + "\n")
        assert sudo.stdout.strip() == "root"

        again = backup_tool("restore", str(inventory), str(backup))
        assert again.returncode != 0
        assert "refusing to restore: db_production already holds" in again.stdout + again.stderr
        assert lab_tools.deploy(inventory, "--json", env=passwords).changes == 0
    finally:
        b.stop()
