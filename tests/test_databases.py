"""Databases, least privilege: api writes kono, unauthorized_api only reads, dev only on db_dev."""

import subprocess
import time

import pytest

from tests.lab import host_secret, mysql, sdk_container

pytestmark = pytest.mark.e2e


def test_api_user_reads_and_writes_kono(provisioned):
    api = host_secret(provisioned.host, "production", "db_api_password")
    wrote = mysql(provisioned.host, "api", api,
                  "CREATE TABLE IF NOT EXISTS notes (n INT); INSERT INTO notes VALUES (7); SELECT SUM(n) FROM notes;")
    assert wrote.returncode == 0, wrote.stderr
    assert wrote.stdout.split()[-1].isdigit()


def test_unauthorized_api_user_reads_but_cannot_write(provisioned):
    api = host_secret(provisioned.host, "production", "db_api_password")
    mysql(provisioned.host, "api", api, "CREATE TABLE IF NOT EXISTS notes (n INT);")
    reader = host_secret(provisioned.host, "production", "db_unauthorized_api_password")
    read = mysql(provisioned.host, "unauthorized_api", reader, "SELECT COUNT(*) FROM notes;")
    assert read.returncode == 0, read.stderr
    write = mysql(provisioned.host, "unauthorized_api", reader, "INSERT INTO notes VALUES (1);")
    assert write.returncode != 0
    assert "denied" in write.stderr.lower()


def test_dev_user_exists_only_on_db_dev(provisioned):
    dev = host_secret(provisioned.host, "dev", "db_dev_password")
    assert mysql(provisioned.host, "dev", dev, "SELECT 1;", server="db_dev", database="dev").returncode == 0
    assert mysql(provisioned.host, "dev", dev, "SELECT 1;", database="kono").returncode != 0


def test_dev_db_is_reachable_through_an_ssh_tunnel_only(provisioned):
    """The dev database listens on the host's 127.0.0.1: a developer reaches it with `ssh -L`."""
    dev = host_secret(provisioned.host, "dev", "db_dev_password")
    tunnel = subprocess.Popen([*provisioned.host.ssh_args("kono"), "-N", "-L", "127.0.0.1:33307:127.0.0.1:3307"],
                              stdin=subprocess.DEVNULL)
    try:
        for _ in range(50):
            probe = subprocess.run(["mysql", "-h", "127.0.0.1", "-P", "33307", "-u", "dev", "-N", "dev",
                                    "-e", "SELECT CURRENT_USER()"], capture_output=True, text=True,
                                   env={"MYSQL_PWD": dev, "PATH": "/usr/bin:/bin"})
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.strip().startswith("dev@")
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


def test_production_db_listens_on_no_host_port(provisioned):
    host = provisioned.testinfra("kono")
    assert not host.socket("tcp://3306").is_listening
    assert host.socket("tcp://127.0.0.1:3307").is_listening
    assert not host.socket("tcp://0.0.0.0:3307").is_listening


def test_the_api_container_holds_no_root_password(provisioned):
    roots = {host_secret(provisioned.host, env, "db_root_password") for env in ("production", "dev")}
    client = provisioned.docker()
    try:
        api = sdk_container(client, "api")
        env = api.attrs["Config"]["Env"]
        assert not [e for e in env if any(root in e for root in roots)]
        listing = api.exec_run(["ls", "/run/secrets"]).output.decode().split()
        assert sorted(listing) == ["production_api_key", "production_db_api_password"]
        for name in listing:
            content = api.exec_run(["cat", f"/run/secrets/{name}"]).output.decode().strip()
            assert content not in roots
    finally:
        client.close()
