"""The tables in kono/services.py: everything derives from them, so a new service or secret is one
entry (plus its template block) and the compose file, the secrets, the labels and the readiness
rule follow."""

import dataclasses
import json

import pytest
import yaml

from kono import monitoring, services, stack
from kono.services import (SECRETS, SERVICES, VOLUMES, Secret, Service, enabled, secret_file, secrets_of,
                           unready)
from tests.lab import settings_of as settings



def rendered(**overrides) -> dict:
    stack.project_files.cache_clear()
    return yaml.safe_load(stack.project_files(settings(**overrides))["compose.yaml"])


HTTPS = {"acme": dict(https="acme", domains=["kono.example.com"], acme_email="ops@example.com"),
         "provided": dict(https="provided", domains=["kono.example.com"])}
VARIANTS = {"defaults": {}, **HTTPS, "backups": dict(backup_repository="s3:s3.amazonaws.com/bucket/kono"),
            "pitr": dict(backup_repository="s3:s3.amazonaws.com/bucket/kono", pitr=True),
            "monitoring": dict(monitoring=True), "alerts": dict(monitoring=True, alert_webhook=True)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_compose_file_has_exactly_the_tables_services_secrets_and_volumes(variant):
    chosen = settings(**VARIANTS[variant])
    compose = rendered(**VARIANTS[variant])
    services_now = enabled(SERVICES, chosen)
    optional = {"acme": variant == "acme", "backup": variant in ("backups", "pitr"), "binlog": variant == "pitr",
                "node_exporter": variant in ("monitoring", "alerts"), "metrics": variant in ("monitoring", "alerts"),
                "prometheus": variant in ("monitoring", "alerts"), "alertmanager": variant == "alerts",
                "releases": False, "origin": False}  # a cluster's alone (tests/unit/test_swarm_stack.py)
    assert [s.name for s in services_now] == [s.name for s in SERVICES if optional.get(s.name, True)]
    assert compose["secrets"] == {s.compose_name: {"file": f"./{s.path}"} for s in enabled(SECRETS, chosen)
                                  if s.handed_by_compose}
    assert list(compose["volumes"]) == [v.name for v in enabled(VOLUMES, chosen)]
    assert list(compose["services"]) == [s.name for s in services_now]
    for service in services_now:
        block = compose["services"][service.name]
        assert block.get("secrets", []) == [s.compose_name for s in secrets_of(service.name)
                                            if s in enabled(SECRETS, chosen)]
        labels = block.get("labels", {})
        assert ("kono.inputs" in labels) == bool(service.inputs)
        assert ("kono.secrets" in labels) == bool(services.restarting_secrets(service.name))
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
        (templates / path.relative_to(stack.TEMPLATES)).parent.mkdir(parents=True, exist_ok=True)
        (templates / path.relative_to(stack.TEMPLATES)).write_text(path.read_text())
    (templates / "services/cache.yaml.j2").write_text(
        "image: redis:7\nenvironment:\n  PASSWORD_FILE: {{ secret_file('production/cache_password') }}\n"
        "healthcheck:\n  test: [\"CMD\", \"true\"]\n")
    cache = Service("cache", inputs=("api",))
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
    assert block["labels"] == {"kono.inputs": compose["services"]["api"]["labels"]["kono.inputs"],
                               "kono.secrets": "${KONO_SECRETS_CACHE:-}"}
    assert compose["secrets"]["production_cache_password"] == {"file": "./config/production/cache_password"}
    assert stack.service_secret_paths()["cache"] == ["config/production/cache_password"]
    assert password in services.stack_secrets()  # generated on the host, backed up, rotatable
    everything_else_ready = {s.name: ("running", "healthy") for s in SERVICES}
    assert unready(everything_else_ready, services.SERVICES) == ["cache"]
    stack.project_files.cache_clear()


def test_a_secret_read_only_at_first_start_does_not_restart_its_database():
    """Rotating the api's database password restarts the api, not db_production (which needs the
    file only to initialise), and the database keeps receiving it for a first start."""
    paths = stack.service_secret_paths()
    assert "config/production/db_api_password" in paths["api"]
    assert "config/production/db_api_password" not in paths["db_production"]
    assert paths["db_production"] == ["config/production/db_root_password"]
    compose = rendered()
    assert "production_db_api_password" in compose["services"]["db_production"]["secrets"]


def test_readiness_is_running_and_healthy():
    assert services.ready("running", "healthy")
    for state, health in [("running", "starting"), ("running", "unhealthy"), ("running", ""),
                          ("exited", "healthy"), ("restarting", "")]:
        assert not services.ready(state, health)
    assert unready({}, SERVICES) == [s.name for s in SERVICES]


def test_table_entries_are_consistent():
    names = [s.name for s in SERVICES]
    assert len(set(names)) == len(names)
    assert len({s.key for s in SECRETS}) == len(SECRETS)
    for entry in SECRETS:
        assert set(entry.services) <= set(names), entry.key
        assert entry.origin in ("stack", "maintainer passwords", "tls", "operator", "alerts")
    for database in services.databases():
        root = services.root_password(database.name)
        assert root.database == database.name
        assert database.database[1] in {f.name for f in dataclasses.fields(type(settings()))}
    assert [s.key for s in services.stack_secrets()] == [
        "production/db_root_password", "production/db_api_password", "production/db_unauthorized_api_password",
        "production/api_key", "dev/db_root_password", "dev/db_dev_password", "production/db_binlog_password"]
    assert "production/db_binlog_password" not in [s.key for s in services.stack_secrets(settings())]


def test_project_files_hold_no_secret_and_the_templates_render_every_knob():
    files = stack.project_files(settings(server_name="kono.example.com", http_port=8080))
    assert "server_name kono.example.com;" in files["nginx/default.conf"]
    assert "resolver 127.0.0.11 valid=1s ipv6=off;" in files["nginx/site.locations"]
    assert '"8080:80"' in files["compose.yaml"]
    assert not any(path.startswith("config/") for path in files)


def test_what_needs_a_new_container_and_why():
    recorded = {"api": "c1 node:22-slim v1 s1", "nginx": "c2 nginx:1.27 v2 -", "db_dev": "c3 mysql:8.4 v3 s3",
                "db_production": "an older record"}
    wanted = {"api": "c1 node:22-slim v1", "nginx": "c2x nginx:1.28 v2", "db_dev": "c3x mysql:8.4 v3x",
              "maintainer": "c4 built v4", "db_production": "c5 mysql:8.4 v5"}
    changes = stack.replacements(wanted, recorded, {"api": "s1-rotated", "db_dev": "s3"})
    assert changes == {"api": ["secret"], "nginx": ["image nginx:1.27 -> nginx:1.28"],
                       "db_dev": ["configuration", "volumes"]}  # never brought up, or an unreadable record: not listed
    assert stack.replacements(wanted | {"api": "c1 node:22-slim v1"}, recorded, {"api": "s1", "db_dev": "s3"}) \
        == {"nginx": ["image nginx:1.27 -> nginx:1.28"], "db_dev": ["configuration", "volumes"]}


def test_service_records_change_with_what_a_container_is_made_from():
    base = stack.service_records(settings())
    assert set(base) == {s.name for s in enabled(SERVICES, settings())}
    assert base["api"].split()[1] == "node:22-slim" and base["maintainer"].split()[1] == "built"
    stack.project_files.cache_clear(), stack.service_records.cache_clear()
    other = stack.service_records(settings(node_image="node:24-slim", server_name="elsewhere.example"))
    assert other["api"] != base["api"]
    assert other["nginx"] == base["nginx"]  # a config-only change of nginx is a reload, not a new container
    assert other["db_production"] == base["db_production"]
    stack.project_files.cache_clear(), stack.service_records.cache_clear()


def test_a_plan_names_what_restarts_and_how():
    assert [s.name for s in services.restarted_by("production/db_api_password")] == ["api"]
    assert [s.name for s in services.restarted_by("production/db_root_password")] == ["db_production", "backup"]
    assert services.replacement_note("api", ["secret"], True) == (
        "api gets a new container (secret): started beside the old one, which drains once the new one is "
        "healthy: no downtime")
    assert services.replacement_note("nginx", ["image nginx:1.27 -> nginx:1.28"], False).startswith(
        "nginx gets a new container (image nginx:1.27 -> nginx:1.28): RESTARTS: every HTTP request fails")
    compose = rendered(**HTTPS["acme"], **VARIANTS["pitr"], **VARIANTS["alerts"])["services"]
    for entry in SERVICES:  # start-first needs no published port: two copies run side by side
        block = compose[entry.name] if entry.only_when != "swarm" else {}  # a cluster's: none publishes one
        assert entry.rollout == "recreate" or not block.get("ports"), entry.name


def test_the_apis_times_fit_together():
    from kono.commands import RESOLVER_VALID_SECONDS
    # The old process answers until nginx has re-resolved, and compose waits for the drain and the linger.
    assert services.API_LINGER_SECONDS > RESOLVER_VALID_SECONDS
    assert services.service("api").stop_seconds > services.API_DRAIN_SECONDS + services.API_LINGER_SECONDS


@pytest.mark.parametrize("sources, published", [((), "127.0.0.1:9100:9100"), (("192.0.2.0/24",), "9100:9100")])
def test_metrics_are_published_on_loopback_alone_unless_sources_are_allowed(sources, published):
    compose = rendered(monitoring=True, metrics_allowed_cidrs=list(sources))
    assert compose["services"]["node_exporter"]["ports"] == [published]
    collector = compose["services"]["metrics"]
    assert collector["network_mode"] == "none" and collector["cap_drop"] == ["ALL"]
    assert collector["cap_add"] == ["DAC_READ_SEARCH"]  # it reads; it writes only its own volume
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in collector["volumes"]
    environment = collector["environment"]
    assert json.loads(environment["KONO_METRICS_CONTRACT"]) == json.loads(monitoring.contract_json())
    assert environment["KONO_SERVICES"].split() == [s.name for s in enabled(SERVICES, settings(monitoring=True))]
    # compose interpolates $ in environment values: the contract must carry none.
    assert "$" not in monitoring.contract_json()


@pytest.mark.parametrize("https, certificate_from", [
    ({}, None), (HTTPS["acme"], "certificates"), (HTTPS["provided"], "./config/tls")])
def test_the_metrics_service_reads_the_served_certificate_and_the_deploys_audit_log_read_only(https, certificate_from):
    compose = rendered(monitoring=True, **https)
    collector = compose["services"]["metrics"]
    environment = collector["environment"]
    assert "./.kono:/facts/kono-state:ro" in collector["volumes"]
    assert environment["KONO_METRICS_AUDIT_LOG"] == "/facts/kono-state/audit.log"
    if certificate_from is None:
        assert environment["KONO_METRICS_CERTIFICATE"] == ""
        assert not [v for v in collector["volumes"] if "/facts/tls" in v]
    else:
        assert f"{certificate_from}:/facts/tls:ro" in collector["volumes"]
        assert f"{certificate_from}:/etc/nginx/tls:ro" in compose["services"]["nginx"]["volumes"]  # what nginx serves
        assert environment["KONO_METRICS_CERTIFICATE"] == "/facts/tls/certificate"  # its ssl_certificate's file


def test_the_metrics_service_reads_the_backups_facts_and_thresholds_only_with_backups():
    from kono.backup import MAX_AGE
    plain = rendered(monitoring=True)["services"]["metrics"]
    assert json.loads(plain["environment"]["KONO_METRICS_CONSTANTS"]) == {} and not plain["environment"]["KONO_METRICS_FACTS"]
    backed_up = rendered(monitoring=True, **VARIANTS["backups"])["services"]["metrics"]
    assert "backup_state:/facts/backup_state:ro" in backed_up["volumes"]
    assert backed_up["environment"]["KONO_METRICS_FACTS"] == "/facts/backup_state/metrics"
    assert json.loads(backed_up["environment"]["KONO_METRICS_CONSTANTS"]) == {
        "kono_backup_max_age_seconds": MAX_AGE.total_seconds()}
