"""The tables in kono/services.py: everything derives from them, so a new service or secret is one
entry (plus its template block) and the compose file, the secrets, the labels and the readiness
rule follow."""

import dataclasses
from types import SimpleNamespace

import pytest
import yaml

from kono import services, stack
from kono.services import SECRETS, SERVICES, VOLUMES, Secret, Service, secret_file, secrets_of, unready
from kono.settings import load
from tests.lab import group_defaults

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhx7mzSuwLbv5Q0jcW2a1rW4yUBnbprqZhYOoN0SaHl ops@laptop"


def settings(**overrides):
    return load(SimpleNamespace(**{**group_defaults(), "deploy_authorized_keys": [KEY], **overrides}))


def rendered(**overrides) -> dict:
    stack.project_files.cache_clear()
    return yaml.safe_load(stack.project_files(settings(**overrides))["compose.yaml"])


def test_the_compose_file_has_exactly_the_tables_services_secrets_and_volumes():
    compose = rendered()
    assert list(compose["services"]) == [s.name for s in SERVICES]
    assert compose["secrets"] == {s.compose_name: {"file": f"./{s.path}"} for s in SECRETS}
    assert list(compose["volumes"]) == list(VOLUMES)
    for service in SERVICES:
        block = compose["services"][service.name]
        assert block.get("secrets", []) == [s.compose_name for s in secrets_of(service.name)]
        labels = block.get("labels", {})
        assert ("kono.inputs" in labels) == bool(service.inputs)
        assert ("kono.secrets" in labels) == bool(secrets_of(service.name))
        assert "healthcheck" in block, f"{service.name}: the readiness rule needs a healthcheck"


def test_every_secret_a_service_reads_is_handed_to_it():
    compose = rendered()
    for name, block in compose["services"].items():
        for value in (block.get("environment") or {}).values():
            value = str(value)
            if value.startswith(("/run/secrets/", "/run/db-secrets/")):
                assert value.rsplit("/", 1)[1] in block["secrets"], (name, value)


def test_a_secret_not_handed_to_a_service_cannot_be_named_in_its_block():
    with pytest.raises(KeyError, match="not handed to 'api'"):
        secret_file("production/db_root_password", "api")


def test_a_throwaway_service_and_secret_through_the_tables_alone(monkeypatch, tmp_path):
    """One Service entry, one Secret entry and a template block: the rest follows."""
    templates = tmp_path / "templates"
    (templates / "services").mkdir(parents=True)
    for path in stack.TEMPLATES.rglob("*.j2"):
        (templates / path.relative_to(stack.TEMPLATES)).write_text(path.read_text())
    (templates / "services/cache.yaml.j2").write_text(
        "image: redis:7\nenvironment:\n  PASSWORD_FILE: {{ secret_file('production/cache_password') }}\n"
        "healthcheck:\n  test: [\"CMD\", \"true\"]\n")
    cache = Service("cache", inputs=("nginx",))
    password = Secret("production", "cache_password", ("cache",))
    monkeypatch.setattr(stack, "TEMPLATES", templates)
    for module in (services, stack):
        monkeypatch.setattr(module, "SERVICES", (*SERVICES, cache))
        monkeypatch.setattr(module, "SECRETS", (*SECRETS, password))

    compose = rendered()
    block = compose["services"]["cache"]
    assert block["image"] == "redis:7"
    assert block["environment"]["PASSWORD_FILE"] == "/run/secrets/production_cache_password"
    assert block["secrets"] == ["production_cache_password"]
    assert block["labels"] == {"kono.inputs": compose["services"]["nginx"]["labels"]["kono.inputs"],
                               "kono.secrets": "${KONO_SECRETS_CACHE:-}"}
    assert compose["secrets"]["production_cache_password"] == {"file": "./config/production/cache_password"}
    assert stack.service_secret_paths()["cache"] == ["config/production/cache_password"]
    assert password in services.stack_secrets()  # generated on the host, backed up, rotatable
    everything_else_ready = {s.name: ("running", "healthy") for s in SERVICES}
    assert unready(everything_else_ready) == ["cache"]
    stack.project_files.cache_clear()


def test_readiness_is_running_and_healthy():
    assert services.ready("running", "healthy")
    for state, health in [("running", "starting"), ("running", "unhealthy"), ("running", ""),
                          ("exited", "healthy"), ("restarting", "")]:
        assert not services.ready(state, health)
    assert unready({}) == [s.name for s in SERVICES]


def test_table_entries_are_consistent():
    names = [s.name for s in SERVICES]
    assert len(set(names)) == len(names)
    assert len({s.key for s in SECRETS}) == len(SECRETS)
    for entry in SECRETS:
        assert set(entry.services) <= set(names), entry.key
        assert entry.origin in ("stack", "maintainer passwords")
    for database in services.databases():
        root = services.root_password(database.name)
        assert root.database == database.name
        assert database.database[1] in {f.name for f in dataclasses.fields(type(settings()))}
    assert [s.key for s in services.stack_secrets()] == [
        "production/db_root_password", "production/db_api_password", "production/db_unauthorized_api_password",
        "production/api_key", "dev/db_root_password", "dev/db_dev_password"]


def test_project_files_hold_no_secret_and_the_templates_render_every_knob():
    files = stack.project_files(settings(server_name="kono.example.com", http_port=8080))
    assert "server_name kono.example.com;" in files["nginx/default.conf"]
    assert '"8080:80"' in files["compose.yaml"]
    assert not any(path.startswith("config/") for path in files)
