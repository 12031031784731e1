"""The alert rules (files/monitoring/alerts.yml): valid, each one fired and kept quiet by its
fixtures (promtool test rules), and reading only metrics the contract names (kono/monitoring.py)."""

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from kono.monitoring import METRICS, NODE_METRICS, PROMETHEUS_SERIES
from tests.lab import promtool_path

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "files" / "monitoring"
RULES = yaml.safe_load((FOLDER / "alerts.yml").read_text())["groups"][0]["rules"]
FIXTURES = yaml.safe_load((FOLDER / "alerts-test.yml").read_text())["tests"]


@pytest.fixture(scope="module")
def promtool() -> str:
    return promtool_path()


def test_the_rules_are_valid(promtool):
    checked = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=FOLDER, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in checked.stdout


def test_each_alert_fires_and_stays_quiet_as_its_fixtures_say(promtool):
    tested = subprocess.run([promtool, "test", "rules", "alerts-test.yml"], cwd=FOLDER, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    fired = {case["alertname"] for test in FIXTURES for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in FIXTURES for case in test["alert_rule_test"] if not case["exp_alerts"]}
    alerts = {rule["alert"] for rule in RULES}
    assert fired == alerts
    assert quiet == alerts - {"Watchdog"}  # the dead man's switch is never quiet


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: its identifiers, less functions, keywords, label matchers,
    grouping clauses, ranges and strings."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\()\b", expr)
    return {w for w in words if w not in {"and", "or", "unless", "bool", "offset"}
            and not re.fullmatch(r"\d+[smhdwy]", w)}


def test_the_rules_read_only_metrics_the_contract_names():
    named = set(METRICS) | set(NODE_METRICS) | set(PROMETHEUS_SERIES)
    read = {rule["alert"]: metric_names(rule["expr"]) for rule in RULES}
    assert read["BackupOverdue"] == {"kono_backup_last_success_timestamp_seconds", "kono_backup_max_age_seconds"}
    assert read["Watchdog"] == set()
    assert {alert: names - named for alert, names in read.items() if names - named} == {}


def test_every_summary_names_the_instance_and_no_value_a_secret_could_be_in():
    for rule in RULES:
        summary = rule["annotations"]["summary"]
        if rule["alert"] != "Watchdog":
            assert "{{ $labels.instance }}" in summary, rule["alert"]
        # Only labels the contract declares, Prometheus's target labels and node_exporter's mount point, and
        # numbers: never a free-form text.
        declared = {label for metric in METRICS.values() for label in metric.labels}
        assert set(re.findall(r"\$labels\.(\w+)", summary)) <= declared | {"instance", "job", "mountpoint"}


def test_the_rendered_prometheus_configuration_is_valid_and_reads_these_rules(promtool, tmp_path):
    """What the prometheus service reads: the host's monitoring folder as a deploy writes it."""
    from kono import stack
    from tests.lab import settings_of
    stack.project_files.cache_clear()
    files = stack.project_files(dataclasses.replace(settings_of(monitoring=True, metrics_retention_days=3),
                                                    host_name="web-1.example.com"))
    for path, content in files.items():
        if path.startswith("monitoring/"):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(content)
    checked = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path / "monitoring",
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in checked.stdout
    config = yaml.safe_load(files["monitoring/prometheus.yml"])
    from kono.monitoring import METRICS_INTERVAL_SECONDS, NODE_EXPORTER_PORT
    assert config["global"]["scrape_interval"] == f"{METRICS_INTERVAL_SECONDS}s"
    assert [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]][0] == \
        f"node_exporter:{NODE_EXPORTER_PORT}"
    # The alerts' summaries name the host as the inventory does.
    assert {c["labels"]["instance"] for job in config["scrape_configs"] for c in job["static_configs"]} == \
        {"web-1.example.com"}
    assert config["global"]["external_labels"] == {"instance": "web-1.example.com"}  # the Watchdog's too
    command = yaml.safe_load(files["compose.yaml"])["services"]["prometheus"]["command"]
    assert "--storage.tsdb.retention.time=3d" in command and "--storage.tsdb.retention.size=1024MB" in command


def test_status_says_each_firing_alert_but_the_heartbeat_and_not_ok_when_prometheus_is_silent():
    import json
    from kono.monitoring import alert_lines

    def alert(name, state, severity="warning", at="2026-12-04T03:12:45.123456789Z"):
        return {"labels": {"alertname": name, "severity": severity}, "state": state, "activeAt": at,
                "annotations": {"summary": f"{name} summary."}, "value": "1e+00"}
    answer = {"status": "success", "data": {"alerts": [
        alert("Watchdog", "firing", "heartbeat"), alert("ServiceUnhealthy", "pending"),
        alert("BackupFailed", "firing", at="2026-12-04T03:10:00Z")]}}
    assert alert_lines(json.dumps(answer)) == [
        ("alert          BackupFailed: BackupFailed summary. (since 2026-12-04 03:10 UTC)", False)]
    answer["data"]["alerts"] = [alert("Watchdog", "firing", "heartbeat")]
    assert alert_lines(json.dumps(answer)) == [("alerts         none firing", True)]
    assert alert_lines("") == [("alerts         unknown: Prometheus did not answer", False)]
    assert alert_lines('{"status": "success", "data": {"alerts": [{"labels": {}}') [0][1] is False  # cut short


def test_the_rendered_alertmanager_configuration_is_valid_tells_each_alert_once_and_never_the_heartbeat(tmp_path):
    from kono import stack
    from kono.monitoring import HEARTBEAT
    from kono.services import SECRETS_DIR, secret
    from tests.lab import amtool_path, settings_of
    stack.project_files.cache_clear()
    files = stack.project_files(settings_of(monitoring=True, alert_webhook=True))
    (tmp_path / "alertmanager.yml").write_text(files["monitoring/alertmanager.yml"])
    checked = subprocess.run([amtool_path(), "check-config", "alertmanager.yml"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(files["monitoring/alertmanager.yml"])
    route = config["route"]
    assert route["group_by"] == ["..."]  # every alert its own message
    assert route["repeat_interval"] == "8760h"  # not again while it lasts (what was sent is kept longer)
    command = yaml.safe_load(files["compose.yaml"])["services"]["alertmanager"]["command"]
    assert "--data.retention=8784h" in command
    assert route["routes"] == [{"matchers": [f'severity="{HEARTBEAT}"'], "receiver": "nobody"}]
    assert {r["name"] for r in config["receivers"]} == {"nobody", "team"}
    slack = next(r for r in config["receivers"] if r["name"] == "team")["slack_configs"]
    assert slack == [{**slack[0], "api_url_file": f"{SECRETS_DIR}/{secret('alerts/webhook_url').compose_name}",
                      "send_resolved": True}]
    # Prometheus sends its alerts there; without alert_webhook, nowhere (and no Alertmanager runs).
    assert yaml.safe_load(files["monitoring/prometheus.yml"])["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]}
    quiet = stack.project_files(settings_of(monitoring=True))  # (no webhook, no heartbeat)
    assert "alerting" not in yaml.safe_load(quiet["monitoring/prometheus.yml"])
    assert "monitoring/alertmanager.yml" not in quiet
    assert "alertmanager" not in yaml.safe_load(quiet["compose.yaml"])["services"]


@pytest.mark.parametrize("webhook", [True, False])
def test_with_alert_heartbeat_the_watchdog_goes_to_the_heartbeat_url_every_minute_and_never_to_the_team(tmp_path, webhook):
    from kono import stack
    from kono.monitoring import HEARTBEAT
    from kono.services import SECRETS_DIR, secret
    from tests.lab import amtool_path, settings_of
    stack.project_files.cache_clear()
    files = stack.project_files(settings_of(monitoring=True, alert_webhook=webhook, alert_heartbeat=True))
    (tmp_path / "alertmanager.yml").write_text(files["monitoring/alertmanager.yml"])
    checked = subprocess.run([amtool_path(), "check-config", "alertmanager.yml"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(files["monitoring/alertmanager.yml"])
    assert config["route"]["receiver"] == ("team" if webhook else "nobody")
    assert config["route"]["routes"] == [{"matchers": [f'severity="{HEARTBEAT}"'], "receiver": "heartbeat",
                                          "group_wait": "0s", "group_interval": "30s", "repeat_interval": "50s"}]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == {"nobody", "heartbeat", *(["team"] if webhook else [])}
    beat = receivers["heartbeat"]["slack_configs"]
    assert beat == [{**beat[0], "api_url_file": f"{SECRETS_DIR}/{secret('alerts/heartbeat_url').compose_name}",
                     "send_resolved": False}]
    compose = yaml.safe_load(files["compose.yaml"])
    assert {"alerts_heartbeat_url", *(["alerts_webhook_url"] if webhook else [])} == {
        s if isinstance(s, str) else s["source"] for s in compose["services"]["alertmanager"]["secrets"]}


def test_with_alert_email_to_the_team_is_emailed_each_alert_and_its_end_over_checked_tls(tmp_path):
    from kono import stack
    from kono.monitoring import CONFIG_DIR, SMTP_CA_NAME
    from kono.services import SECRETS_DIR, secret
    from tests.lab import amtool_path, make_certificate, settings_of
    make_certificate(tmp_path / "ca", [], ca=True)
    email = dict(monitoring=True, alert_email_to=["oncall@example.com", "lead@example.org"],
                 alert_email_from="kono@example.com", alert_smtp_server="smtp.example.com:587")
    for knobs in (dict(email), dict(email, alert_webhook=True, alert_smtp_username="kono",
                                    alert_smtp_ca_bundle=str(tmp_path / "ca.pem"))):
        stack.project_files.cache_clear()
        files = stack.project_files(settings_of(**knobs))
        (tmp_path / "alertmanager.yml").write_text(files["monitoring/alertmanager.yml"])
        checked = subprocess.run([amtool_path(), "check-config", "alertmanager.yml"], cwd=tmp_path,
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        config = yaml.safe_load(files["monitoring/alertmanager.yml"])
        assert config["route"]["receiver"] == "team"
        team = next(r for r in config["receivers"] if r["name"] == "team")
        assert ("slack_configs" in team) == knobs.get("alert_webhook", False)
        [mail] = team["email_configs"]
        assert {k: mail[k] for k in ("to", "from", "smarthost", "require_tls", "send_resolved")} == {
            "to": "oncall@example.com, lead@example.org", "from": "kono@example.com",
            "smarthost": "smtp.example.com:587", "require_tls": True, "send_resolved": True}
        assert "{{ .CommonLabels.alertname }} on {{ .CommonLabels.instance }}" in mail["headers"]["Subject"]
        if "alert_webhook" in knobs:
            assert mail["headers"]["Subject"] == team["slack_configs"][0]["title"]  # one wording
        secrets = {s if isinstance(s, str) else s["source"]
                   for s in yaml.safe_load(files["compose.yaml"])["services"]["alertmanager"].get("secrets", [])}
        if "alert_smtp_username" in knobs:  # the password by file, never in the configuration
            assert (mail["auth_username"], mail["auth_password_file"]) == (
                "kono", f"{SECRETS_DIR}/{secret('alerts/smtp_password').compose_name}")
            assert "alerts_smtp_password" in secrets
            assert mail["tls_config"] == {"ca_file": f"{CONFIG_DIR}/{SMTP_CA_NAME}"}
            assert files[f"monitoring/{SMTP_CA_NAME}"] == (tmp_path / "ca.pem").read_text()
        else:
            assert "auth_username" not in mail and "tls_config" not in mail and "alerts_smtp_password" not in secrets
            assert f"monitoring/{SMTP_CA_NAME}" not in files


def test_a_clusters_prometheus_configuration_is_valid_and_scrapes_the_listed_nodes(promtool, tmp_path):
    """On a cluster: every node's node_exporter, as the metrics service lists them (file_sd)."""
    from kono import stack
    from tests.lab import settings_of
    files = stack.project_files(dataclasses.replace(
        settings_of(monitoring=True, engine="swarm", swarm_role="manager", swarm_labels=["db", "edge", "app"],
                    swarm_address_pool="10.200.0.0/16"), host_name="db-1.example.com"))
    for path, content in files.items():
        if path.startswith("monitoring/"):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(content)
    config = yaml.safe_load(files["monitoring/prometheus.yml"])
    [node_job] = [job for job in config["scrape_configs"] if job["job_name"] == "node"]
    # promtool checks that the file_sd file exists where the configuration says: here, beside it.
    listed = node_job["file_sd_configs"][0]["files"][0]
    node_job["file_sd_configs"][0]["files"] = ["nodes.json"]
    (tmp_path / "monitoring" / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "monitoring" / "nodes.json").write_text(
        '[{"targets": ["10.200.0.6:9100"], "labels": {"instance": "10.231.0.2"}}]\n')
    checked = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path / "monitoring",
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in checked.stdout
    from kono.monitoring import NODES_FILE
    assert listed == NODES_FILE
