"""Data survives: after a reboot the stack comes back by itself, with the rows written before."""

import pytest

pytestmark = pytest.mark.e2e

# The password stays on the host: read from the secret inside the container, passed by environment.
MYSQL_AS_API = ("docker exec -i kono-db_production-1 sh -c "
                "'MYSQL_PWD=$(cat /run/db-secrets/production_db_api_password) mysql -uapi -N kono'")


def test_stack_and_rows_survive_a_reboot(provisioned):
    host = provisioned.host
    host.ssh(MYSQL_AS_API, user="kono",
             input="CREATE TABLE IF NOT EXISTS survivors (note VARCHAR(64));"
                   "INSERT INTO survivors VALUES ('written before reboot');")
    host.reboot()
    provisioned.wait_healthy(timeout=240)
    rows = host.ssh(MYSQL_AS_API, user="kono", input="SELECT note FROM survivors;").stdout.split("\n")
    assert "written before reboot" in rows
    assert provisioned.deploy("--json").changes == 0
