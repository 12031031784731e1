"""Data is sacred: rows and uploaded assets survive a changed template, recreated database
containers and a host reboot."""

import urllib.request

import pytest

from tests.lab import API_SQL

pytestmark = pytest.mark.e2e


def rows(provisioned) -> list[str]:
    return provisioned.host.ssh(API_SQL, user="kono", input="SELECT note FROM survivors ORDER BY note;"
                                ).stdout.split("\n")[:-1]


def asset(provisioned) -> bytes:
    with urllib.request.urlopen(f"http://{provisioned.host.address}/static/survivor.txt", timeout=10) as r:
        return r.read()


@pytest.fixture(scope="module")
def written(provisioned):
    provisioned.wait_healthy()
    provisioned.host.ssh(API_SQL, user="kono",
                         input="CREATE TABLE IF NOT EXISTS survivors (note VARCHAR(64));"
                               "INSERT INTO survivors VALUES ('first row'), ('second row');")
    provisioned.maintainer("echo 'uploaded asset' > /srv/static/survivor.txt")
    assert asset(provisioned) == b"uploaded asset\n"
    return rows(provisioned)


def test_data_survives_a_redeploy_with_changed_templates(provisioned, written):
    run = provisioned.deploy("--json", "--data", "server_name=data.example", "--data", "releases_kept=6")
    assert run.changes == 2  # the project files, and the bring-up that recreates the maintainer
    provisioned.wait_healthy()
    assert rows(provisioned) == written
    assert asset(provisioned) == b"uploaded asset\n"
    provisioned.deploy("--data", "server_name=_", "--data", "releases_kept=5")


def test_data_survives_recreated_database_containers(provisioned, written):
    provisioned.host.ssh("cd /srv/kono && docker compose up --detach --force-recreate --wait "
                         "db_production db_dev", user="kono")
    provisioned.wait_healthy()
    assert rows(provisioned) == written


def test_stack_and_data_come_back_after_a_reboot(provisioned, written):
    provisioned.host.reboot()
    provisioned.wait_healthy(timeout=300)
    assert rows(provisioned) == written
    assert asset(provisioned) == b"uploaded asset\n"
    assert provisioned.deploy("--json").changes == 0
