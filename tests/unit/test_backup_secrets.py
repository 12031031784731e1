"""The backup secrets the operator gives, and what the deploy checks against the host's before changing it."""

import hashlib

from kono.backup import NO_CREDENTIALS, backup_secret_problems, backup_secrets
from tests.lab import settings_of


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_backend_without_credentials_gets_a_comment_not_an_empty_file(tmp_path):
    """A swarm refuses a secret without content; the backup script skips comment lines."""
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "repository_password").write_text("correct-horse-battery-staple\n")
    (tmp_path / "backup" / "storage_credentials").write_text("")
    settings = settings_of(backup_repository="rest:http://10.0.0.9:8000/", local_secrets_dir=str(tmp_path))
    assert backup_secrets(settings)["config/backup/storage_credentials"] == NO_CREDENTIALS
    (tmp_path / "backup" / "storage_credentials").write_text("AWS_ACCESS_KEY_ID=AKIA1\n\nAWS_SECRET_ACCESS_KEY=x\n")
    assert backup_secrets(settings)["config/backup/storage_credentials"] == \
        "AWS_ACCESS_KEY_ID=AKIA1\nAWS_SECRET_ACCESS_KEY=x\n"


def test_a_host_holding_only_the_no_credentials_comment_has_none_for_a_backend_that_needs_them(tmp_path):
    settings = settings_of(backup_repository="s3:s3.amazonaws.com/kono-backups", local_secrets_dir=str(tmp_path))
    password, credentials = "config/backup/repository_password", "config/backup/storage_credentials"
    tree = {password: ("f", "600", 29), credentials: ("f", "600", len(NO_CREDENTIALS))}
    problems = backup_secret_problems(settings, {}, tree, {credentials: digest(NO_CREDENTIALS)})
    assert len(problems) == 1 and problems[0].startswith("backup/storage_credentials: expected KEY=value lines")
    real = "AWS_ACCESS_KEY_ID=AKIA1\n"
    tree[credentials] = ("f", "600", len(real))
    assert backup_secret_problems(settings, {}, tree, {credentials: digest(real)}) == []
