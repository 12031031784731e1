"""Maintainer password hashes: slow to verify on purpose, so a run verifies each pair once and a fleet
shares one hash per login (kono/secrets.py)."""

import os
from types import SimpleNamespace

import pytest
from passlib.hash import sha512_crypt

from kono import passwords as secrets
from kono.settings import load
from tests.lab import group_defaults

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhx7mzSuwLbv5Q0jcW2a1rW4yUBnbprqZhYOoN0SaHl ops@laptop"


def next_run(monkeypatch):
    """A new pyinfra process: nothing remembered in memory."""
    secrets.verifies.cache_clear()
    secrets.remembered_pairs.cache_clear()
    monkeypatch.setattr(secrets, "_GOOD_HASHES", {})


@pytest.fixture(autouse=True)
def fresh_run(monkeypatch):
    """Each test is one pyinfra run: empty caches, and a count of the slow verifications."""
    secrets.verifies.cache_clear()
    secrets.remembered_pairs.cache_clear()
    monkeypatch.setattr(secrets, "_GOOD_HASHES", {})
    calls = []
    real = sha512_crypt.verify
    monkeypatch.setattr(secrets.sha512_crypt, "verify", lambda *args: calls.append(args) or real(*args))
    monkeypatch.setattr(secrets, "HASH_ROUNDS", 1000)  # the test's speed, not the product's
    yield calls
    secrets.verifies.cache_clear()
    secrets.remembered_pairs.cache_clear()


def test_a_hash_the_password_verifies_against_is_kept_and_verified_once_per_run(fresh_run):
    on_host = sha512_crypt.using(rounds=1000).hash("correct horse")
    for _host in range(10):
        assert secrets.hash_to_keep("sysop", "correct horse", on_host) == on_host
    assert len(fresh_run) == 1


def test_hosts_that_need_a_hash_in_one_run_get_the_same_one(fresh_run):
    made = {secrets.hash_to_keep("sysop", "correct horse", None) for _host in range(10)}
    assert len(made) == 1
    assert sha512_crypt.verify("correct horse", made.pop())


def test_a_changed_password_gets_one_new_hash_for_the_fleet(fresh_run):
    old = sha512_crypt.using(rounds=1000).hash("old password")
    new = {secrets.hash_to_keep("sysop", "new password", old) for _host in range(3)}
    assert len(fresh_run) == 1  # the stale hash is tried once, not once per host
    assert len(new) == 1 and new != {old}
    assert sha512_crypt.verify("new password", new.pop())


def test_a_host_with_the_run_s_hash_is_not_verified_again(fresh_run):
    made = secrets.hash_to_keep("sysop", "correct horse", None)
    assert secrets.hash_to_keep("sysop", "correct horse", made) == made
    assert secrets.hash_to_keep("sysop", "correct horse", made) == made
    assert len(fresh_run) == 1


def test_hosts_with_different_valid_hashes_each_keep_their_own(fresh_run):
    first, second = (sha512_crypt.using(rounds=1000).hash("correct horse") for _ in range(2))
    assert secrets.hash_to_keep("sysop", "correct horse", first) == first
    assert secrets.hash_to_keep("sysop", "correct horse", second) == second  # no change on a no-op


def test_two_logins_with_the_same_password_never_share_a_hash(fresh_run):
    assert (secrets.hash_to_keep("sysop", "same password", None)
            != secrets.hash_to_keep("wheel", "same password", None))


def test_a_pair_from_a_password_file_is_verified_once_at_all_and_remembered_beside_it(fresh_run, tmp_path,
                                                                                       monkeypatch):
    memo = tmp_path / "maintainer_password_sysop.verified"
    on_host = sha512_crypt.using(rounds=1000).hash("correct horse")
    assert secrets.hash_to_keep("sysop", "correct horse", on_host, memo) == on_host
    assert len(fresh_run) == 1
    assert memo.stat().st_mode & 0o777 == 0o600
    assert "correct horse" not in memo.read_text() and on_host not in memo.read_text()
    for _run in range(3):
        next_run(monkeypatch)
        assert secrets.hash_to_keep("sysop", "correct horse", on_host, memo) == on_host
    assert len(fresh_run) == 1


def test_a_remembered_pair_vouches_for_no_other_password_or_hash(fresh_run, tmp_path, monkeypatch):
    memo = tmp_path / "maintainer_password_sysop.verified"
    first = sha512_crypt.using(rounds=1000).hash("correct horse")
    secrets.hash_to_keep("sysop", "correct horse", first, memo)
    next_run(monkeypatch)
    other = sha512_crypt.using(rounds=1000).hash("correct horse")  # another host's salt
    assert secrets.hash_to_keep("sysop", "correct horse", other, memo) == other
    next_run(monkeypatch)
    changed = secrets.hash_to_keep("sysop", "new password", first, memo)
    assert len(fresh_run) == 3  # first, other, then the stale hash with the new password
    assert len(memo.read_text().split()) == 2  # a pair that does not verify is not remembered
    assert changed != first and sha512_crypt.verify("new password", changed)


def test_only_a_password_from_a_local_file_is_remembered(tmp_path, monkeypatch):
    settings = load(SimpleNamespace(**{**group_defaults(), "deploy_authorized_keys": [KEY],
                                       "local_secrets_dir": str(tmp_path)}))
    monkeypatch.delenv("KONO_MAINTAINER_PASSWORD_SYSOP", raising=False)
    assert secrets.verification_memo(settings, "sysop") is None  # no password here at all
    (tmp_path / "maintainer_password_sysop").write_text("correct horse\n")
    assert secrets.verification_memo(settings, "sysop") == tmp_path / "maintainer_password_sysop.verified"
    monkeypatch.setenv("KONO_MAINTAINER_PASSWORD_SYSOP", "from the environment")
    assert secrets.verification_memo(settings, "sysop") is None
    assert os.listdir(tmp_path) == ["maintainer_password_sysop"]
