"""The team's encrypted secrets file (kono/operator_input.py): a real SOPS file, encrypted by the sops
of requirements.txt for throwaway age identities (Debian's age-keygen), is read after the environment
and before the local files, decrypted in memory only; a machine without a matching identity, a file
that is not encrypted and a value that is not text each get a clear error that shows no value."""

import pytest

from kono import operator_input
from kono.operator_input import from_operator, password_sources, secret_sources
from kono.services import secret
from kono.settings import SettingsError
from tests.lab import age_identity, settings_of
from tests.lab import encrypt_secrets as encrypt

API_KEY = "from-the-sops-file-0123456789"
PASSWORD = "a sudo password with spaces"
PLAIN = f"""production:
  api_key: {API_KEY}
maintainer_password_sysop: "{PASSWORD}"
"""


@pytest.fixture
def team(tmp_path, monkeypatch):
    """An encrypted file for one recipient, whose identity this machine has."""
    recipient = age_identity(tmp_path / "alice.txt")
    encrypt(PLAIN, tmp_path / "secrets.sops.yaml", recipient)
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "alice.txt"))
    monkeypatch.delenv("SOPS_AGE_KEY", raising=False)
    operator_input._decrypted.cache_clear()
    return settings_of(secrets_sops_file=str(tmp_path / "secrets.sops.yaml"), local_secrets_dir=str(tmp_path / "secrets"))


def test_a_value_comes_from_the_encrypted_file_after_the_environment_and_before_the_local_file(team, tmp_path,
                                                                                                monkeypatch):
    api_key = secret("production/api_key")
    local = tmp_path / "secrets" / "production" / "api_key"
    local.parent.mkdir(parents=True)
    local.write_text("from-the-local-file-0123456789\n")
    assert from_operator(secret_sources(team, api_key)) == (API_KEY, f"{tmp_path}/secrets.sops.yaml's production/api_key")
    assert from_operator(password_sources(team, "sysop"))[0] == PASSWORD
    monkeypatch.setenv("KONO_SECRET_PRODUCTION_API_KEY", "from-the-environment-0123456789")
    assert from_operator(secret_sources(team, api_key))[0] == "from-the-environment-0123456789"
    # A value the encrypted file does not hold comes from the local file.
    dev = tmp_path / "secrets" / "dev" / "db_dev_password"
    dev.parent.mkdir(parents=True)
    dev.write_text("from-the-local-file-for-dev-01\n")
    assert from_operator(secret_sources(team, secret("dev/db_dev_password"))) == ("from-the-local-file-for-dev-01", str(dev))


def test_errors_name_every_source_in_its_order(team, tmp_path):
    assert str(secret_sources(team, secret("production/api_key"))) == (
        f"$KONO_SECRET_PRODUCTION_API_KEY, {tmp_path}/secrets.sops.yaml's production/api_key or the file "
        f"{tmp_path}/secrets/production/api_key")
    assert str(secret_sources(settings_of(local_secrets_dir="secrets"), secret("production/api_key"))) == (
        "$KONO_SECRET_PRODUCTION_API_KEY or the file secrets/production/api_key")


def test_it_is_decrypted_in_memory_once_and_written_nowhere(team, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    for _ in range(3):
        from_operator(secret_sources(team, secret("production/api_key")))
    assert operator_input._decrypted.cache_info().misses == 1
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert all(API_KEY not in p.read_text() for p in before if p.is_file())


def test_a_machine_without_a_matching_identity_gets_a_clear_error_without_a_value(team, tmp_path, monkeypatch):
    age_identity(tmp_path / "mallory.txt")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "mallory.txt"))
    monkeypatch.setenv("HOME", str(tmp_path))  # (no ~/.ssh key to try either)
    operator_input._decrypted.cache_clear()
    with pytest.raises(SettingsError) as refused:
        from_operator(secret_sources(team, secret("production/api_key")))
    message = str(refused.value)
    assert message.startswith(f"secrets_sops_file: could not decrypt {tmp_path}/secrets.sops.yaml with an age "
                              "identity of this machine")
    assert "Failed to get the data key" in message
    assert API_KEY not in message and PASSWORD not in message


def test_a_second_recipient_reads_it_too(tmp_path, monkeypatch):
    alice, bob = age_identity(tmp_path / "alice.txt"), age_identity(tmp_path / "bob.txt")
    encrypt(PLAIN, tmp_path / "secrets.sops.yaml", alice, bob)
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "bob.txt"))
    operator_input._decrypted.cache_clear()
    settings = settings_of(secrets_sops_file=str(tmp_path / "secrets.sops.yaml"))
    assert from_operator(secret_sources(settings, secret("production/api_key")))[0] == API_KEY


def test_a_plain_file_is_refused_as_the_encrypted_one_before_anything_changes(tmp_path):
    (tmp_path / "secrets.sops.yaml").write_text(PLAIN)
    with pytest.raises(SettingsError, match=r"^secrets_sops_file: expected a SOPS-encrypted YAML file \(with its "
                                            r"sops: metadata\), '.*' is not one") as refused:
        settings_of(secrets_sops_file=str(tmp_path / "secrets.sops.yaml"))
    assert API_KEY not in str(refused.value)
    with pytest.raises(SettingsError, match=r"^secrets_sops_file: expected a readable SOPS-encrypted YAML file"):
        settings_of(secrets_sops_file=str(tmp_path / "missing.sops.yaml"))


def test_a_value_that_is_not_text_is_refused_naming_its_key(tmp_path, monkeypatch):
    recipient = age_identity(tmp_path / "alice.txt")
    encrypt("production:\n  api_key: 1234567890123456\n", tmp_path / "secrets.sops.yaml", recipient)
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / "alice.txt"))
    operator_input._decrypted.cache_clear()
    settings = settings_of(secrets_sops_file=str(tmp_path / "secrets.sops.yaml"))
    with pytest.raises(SettingsError, match=r"^secrets_sops_file: expected text at production/api_key, got a int"):
        from_operator(secret_sources(settings, secret("production/api_key")))
