"""Secret sources (the environment, the team's SOPS file, local files) and rotation: supplied values
land as given, conflicts stop before any change, and a rotation changes the database account and the file together, recreating only its users."""

import secrets

import pytest

from tests import lab as lab_tools
from tests.lab import age_identity, encrypt_secrets, host_secret, mysql

pytestmark = pytest.mark.e2e


def test_a_supplied_value_that_differs_from_the_hosts_stops_before_any_change(provisioned):
    provisioned.wait_healthy()
    before = provisioned.snapshot()
    different = secrets.token_hex(16)
    run = provisioned.deploy(check=False, env={"KONO_SECRET_PRODUCTION_DB_API_PASSWORD": different})
    assert run.returncode != 0
    assert "production/db_api_password: expected the value the host has" in run.output
    assert "$KONO_SECRET_PRODUCTION_DB_API_PASSWORD" in run.output and different not in run.output
    assert provisioned.snapshot() == before
    same = host_secret(provisioned.host, "production", "db_api_password")
    assert provisioned.deploy("--json", env={"KONO_SECRET_PRODUCTION_DB_API_PASSWORD": same}).changes == 0


def test_a_missing_secret_is_written_from_the_local_secrets_directory(provisioned):
    provisioned.wait_healthy()
    value = secrets.token_hex(16)
    local = provisioned.lab.workdir / "secrets" / "production"
    local.mkdir(parents=True, exist_ok=True)
    (local / "api_key").write_text(value + "\n")
    try:
        provisioned.host.ssh("rm /srv/kono/config/production/api_key", user="kono")
        before = provisioned.container_ids()
        run = provisioned.deploy("--json")
        assert run.changes == 2  # the secret file, and the bring-up that hands it to the api
        secret = provisioned.testinfra("kono").file("/srv/kono/config/production/api_key")
        assert secret.content_string == value and secret.mode == 0o600
        provisioned.wait_healthy()
        after = provisioned.container_ids()
        assert [s for s in after if after[s] != before[s]] == ["api"]
        assert provisioned.deploy("--json").changes == 0
    finally:
        (local / "api_key").unlink()


def test_rotation_changes_the_account_and_the_file_and_recreates_only_its_users(provisioned):
    provisioned.wait_healthy()
    old = host_secret(provisioned.host, "production", "db_api_password")
    before = provisioned.container_ids()
    run = lab_tools.rotate(provisioned.inventory, "production/db_api_password")
    new = host_secret(provisioned.host, "production", "db_api_password")
    assert new != old and len(new) == 32
    assert new not in run.output and old not in run.output
    assert mysql(provisioned.host, "api", new, "SELECT 1;").returncode == 0
    assert mysql(provisioned.host, "api", old, "SELECT 1;").returncode != 0
    provisioned.wait_healthy()
    after = provisioned.container_ids()
    # db_production read that file only to initialise: a new value does not restart it.
    assert sorted(s for s in after if after[s] != before[s]) == ["api"]
    assert provisioned.deploy("--json").changes == 0


def test_rotating_an_unknown_secret_is_refused(provisioned):
    run = lab_tools.rotate(provisioned.inventory, "production/nope", check=False)
    assert run.returncode != 0
    assert "rotate: expected one of production/db_root_password" in run.output


def test_the_teams_encrypted_file_is_a_source_and_a_machine_without_its_identity_changes_nothing(provisioned):
    """secrets_sops_file: a rotation takes its new value from the team's SOPS file (age), decrypted on
    this machine only; where no identity of its recipients is, the deploy stops before any change,
    saying so."""
    provisioned.wait_healthy()
    lab, host = provisioned.lab, provisioned.host
    recipient = age_identity(lab.workdir / "team-identity.txt")
    age_identity(lab.workdir / "not-a-recipient.txt")
    value = secrets.token_hex(16)
    team_file = lab.workdir / "team.sops.yaml"
    encrypt_secrets(f"production:\n  db_api_password: {value}\n", team_file, recipient)
    inventory = lab_tools.write_inventory(lab, [host], lab.workdir / "team-inventory.py",
                                          api_repo=provisioned.git.repo("api"), app_repo=provisioned.git.repo("app"),
                                          secrets_sops_file=str(team_file))
    with_identity = {"SOPS_AGE_KEY_FILE": str(lab.workdir / "team-identity.txt")}
    before = provisioned.snapshot()
    refused = lab_tools.deploy(inventory, check=False, env={"SOPS_AGE_KEY_FILE": str(lab.workdir / "not-a-recipient.txt")})
    assert refused.returncode != 0
    assert f"secrets_sops_file: could not decrypt {team_file} with an age identity of this machine" in refused.output
    assert provisioned.snapshot() == before
    old = host_secret(host, "production", "db_api_password")
    run = lab_tools.rotate(inventory, "production/db_api_password", "-vv", env=with_identity)
    assert host_secret(host, "production", "db_api_password") == value
    assert mysql(host, "api", value, "SELECT 1;").returncode == 0
    assert mysql(host, "api", old, "SELECT 1;").returncode != 0
    provisioned.wait_healthy()
    done = lab_tools.deploy(inventory, "--json", env=with_identity)
    assert done.changes == 0  # the file's value is the host's now
    identity = next(line for line in (lab.workdir / "team-identity.txt").read_text().splitlines()
                    if line.startswith("AGE-SECRET-KEY-"))
    for output in (refused.output, run.output, done.output):
        assert value not in output and identity not in output
