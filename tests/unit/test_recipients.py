"""Onboarding and offboarding (kono/cli/recipients.py) on a real SOPS file: a recipient added can
decrypt it; one removed cannot decrypt it as re-encrypted (a new data key), and is told what to
rotate; names and keys are checked first."""


import pytest

from kono import operator_input
from kono.cli.recipients import main, read_recipients, rotation_advice, sops_config
from kono.operator_input import run_sops
from tests.lab import age_identity
from tests.unit.test_sops import PLAIN


def decrypts(tmp_path, identity: str) -> bool:
    return run_sops("decrypt", str(tmp_path / "secrets.sops.yaml"),
                    env={"SOPS_AGE_KEY_FILE": str(tmp_path / identity), "HOME": str(tmp_path)}).returncode == 0


def recipients(tmp_path, *args: str, identity: str, monkeypatch) -> int:
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(tmp_path / identity))
    operator_input._decrypted.cache_clear()
    return main(["--file", str(tmp_path / "secrets.sops.yaml"), "--config", str(tmp_path / ".sops.yaml"), *args])


def test_add_then_remove_a_recipient(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    alice, bob = age_identity(tmp_path / "alice.txt"), age_identity(tmp_path / "bob.txt")
    assert recipients(tmp_path, "add", "alice", alice, identity="alice.txt", monkeypatch=monkeypatch) == 0
    # The team's first file, encrypted by the creation rules the tool wrote.
    encrypted = run_sops("--config", str(tmp_path / ".sops.yaml"), "encrypt", "--filename-override",
                         str(tmp_path / "secrets.sops.yaml"), "/dev/stdin", input=PLAIN)
    encrypted.check_returncode()
    (tmp_path / "secrets.sops.yaml").write_text(encrypted.stdout)
    assert decrypts(tmp_path, "alice.txt") and not decrypts(tmp_path, "bob.txt")
    assert recipients(tmp_path, "add", "bob", bob, identity="alice.txt", monkeypatch=monkeypatch) == 0
    assert decrypts(tmp_path, "alice.txt") and decrypts(tmp_path, "bob.txt")
    assert read_recipients((tmp_path / ".sops.yaml").read_text()) == {"alice": alice, "bob": bob}
    capsys.readouterr()
    # Offboarding, by the one who stays.
    assert recipients(tmp_path, "remove", "alice", identity="bob.txt", monkeypatch=monkeypatch) == 0
    assert decrypts(tmp_path, "bob.txt") and not decrypts(tmp_path, "alice.txt")
    told = capsys.readouterr().out
    assert "alice could read these values before" in told
    assert "production/api_key: put a new value in the file (sops edit) or delete it there, then pyinfra " \
           "inventory.py rotate.py --data rotate=production/api_key" in told
    assert "maintainer_password_sysop: put a new password in the file, then deploy" in told
    assert "from-the-sops-file" not in told and "a sudo password" not in told


def test_bad_names_keys_and_the_last_recipient_are_refused(tmp_path, monkeypatch, capsys):
    alice = age_identity(tmp_path / "alice.txt")
    assert recipients(tmp_path, "add", "alice", "age1notakey", identity="alice.txt", monkeypatch=monkeypatch) == 1
    assert "expected a name (letters, digits, . _ @ -) and an age recipient" in capsys.readouterr().err
    assert recipients(tmp_path, "add", "two words", alice, identity="alice.txt", monkeypatch=monkeypatch) == 1
    assert recipients(tmp_path, "add", "alice", alice, identity="alice.txt", monkeypatch=monkeypatch) == 0
    assert recipients(tmp_path, "add", "alice", alice, identity="alice.txt", monkeypatch=monkeypatch) == 1
    assert "alice is a recipient already" in capsys.readouterr().err
    assert recipients(tmp_path, "remove", "carol", identity="alice.txt", monkeypatch=monkeypatch) == 1
    assert "remove: expected one of alice, got 'carol'" in capsys.readouterr().err
    assert recipients(tmp_path, "remove", "alice", identity="alice.txt", monkeypatch=monkeypatch) == 1
    assert "the last recipient" in capsys.readouterr().err


def test_the_sops_config_keeps_each_name_beside_its_key_and_matches_only_the_file():
    config = sops_config("secrets.sops.yaml", {"ci": "age1" + "q" * 58, "alice": "age1" + "p" * 58})
    assert read_recipients(config) == {"ci": "age1" + "q" * 58, "alice": "age1" + "p" * 58}
    assert r"path_regex: (^|/)secrets\.sops\.yaml$" in config


@pytest.mark.parametrize("key, advice", [
    ("production/db_api_password", "rotate.py --data rotate=production/db_api_password"),
    ("tls/private_key", "a new key and certificate"),
    ("backup/repository_password", "not rotatable by kono-infra"),
    ("alerts/smtp_password", "revoke it where it was issued"),
])
def test_each_kind_of_value_gets_its_own_way_to_rotate(key, advice):
    assert advice in rotation_advice(key)
