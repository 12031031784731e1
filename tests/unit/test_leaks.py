"""No plaintext secret in git (kono/cli/leaks.py), in a throwaway repository: a tracked file holding
a value from any source (the environment, a local secrets file, the team's encrypted file) or the
shape of a secret fails the check, which names where and never the value; the encrypted file and
the git-ignored secrets/ folder do not."""

import subprocess

from kono import operator_input
from kono.cli.leaks import main
from tests.lab import age_identity, encrypt_secrets, make_certificate

FROM_FILE = "from-a-local-file-0123456789"
FROM_SOPS = "from-the-team-file-0123456789"
FROM_ENV = "from-the-environment-0123456789"
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example, put together here: this file is tracked too


def repository(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "all.py").write_text('local_secrets_dir = "secrets"\n'
                                                   'secrets_sops_file = "secrets.sops.yaml"\n')
    (tmp_path / ".gitignore").write_text("/secrets/\n")
    (tmp_path / "secrets" / "production").mkdir(parents=True)
    (tmp_path / "secrets" / "production" / "api_key").write_text(FROM_FILE + "\n")
    recipient = age_identity(tmp_path / "ci.txt")
    encrypt_secrets(f"alerts:\n  webhook_url: https://hooks.example.com/{FROM_SOPS}\n", tmp_path / "secrets.sops.yaml",
                    recipient)
    # The identity in the environment, as CI's secret store gives it.
    identity = next(line for line in (tmp_path / "ci.txt").read_text().splitlines() if line.startswith("AGE-"))
    (tmp_path / "ci.txt").unlink()
    monkeypatch.setenv("SOPS_AGE_KEY", identity)
    monkeypatch.delenv("SOPS_AGE_KEY_FILE", raising=False)
    monkeypatch.setenv("KONO_SECRET_PRODUCTION_API_KEY", FROM_ENV)
    monkeypatch.chdir(tmp_path)
    operator_input._decrypted.cache_clear()
    return tmp_path


def track(repo, name: str, text: str) -> None:
    (repo / name).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)


def test_a_clean_repository_passes_with_its_encrypted_file_tracked(tmp_path, monkeypatch, capsys):
    repo = repository(tmp_path, monkeypatch)
    track(repo, "README.md", "Secrets live in secrets.sops.yaml.\n")
    assert main([]) == 0
    assert "looked for 3 values and" in capsys.readouterr().err


def test_each_source_and_shape_committed_is_found_and_named_without_its_value(tmp_path, monkeypatch, capsys):
    repo = repository(tmp_path, monkeypatch)
    make_certificate(tmp_path / "leaked", ["kono.test"])
    track(repo, "notes.txt", f"api key {FROM_FILE}\nenv {FROM_ENV}\nhook https://hooks.example.com/{FROM_SOPS}\n"
                             f"aws {AWS_KEY}\n")
    track(repo, "key.txt", (tmp_path / "leaked.key").read_text())
    assert main([]) == 1
    out = capsys.readouterr().out
    assert "notes.txt:1: the value of secrets/production/api_key" in out.replace(str(tmp_path) + "/", "")
    assert "notes.txt:2: the value of $KONO_SECRET_PRODUCTION_API_KEY" in out
    assert "notes.txt:3: the value of secrets.sops.yaml's alerts/webhook_url" in out.replace(str(tmp_path) + "/", "")
    assert "notes.txt:4: an AWS access key" in out
    assert "key.txt:1: a private key" in out
    for value in (FROM_FILE, FROM_ENV, FROM_SOPS, AWS_KEY):
        assert value not in out
