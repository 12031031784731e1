"""The metrics contract: what the host exposes for Prometheus, and what the alert rules read.

kono's own metrics are named once here (the collector writes them, files/monitoring/alerts.yml
reads them, README's table lists them); the node_exporter metrics the rules read are named here too,
so a rule that reads anything else fails the unit suite (tests/unit/test_alerts.py) rather than
never firing. Thresholds a rule compares with (a backup's maximum age, the shipping lag) are
exported as metrics from the operator's settings: the rules stay one static file, testable by
``promtool test rules`` without a host.

Example::

    METRICS["kono_backup_last_success_timestamp_seconds"].help
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from kono.commands import AUDIT_LOG, STATE_DIR, overlay_network
from kono.settings import BACKUP_MAX_AGE


@dataclass(frozen=True)
class Metric:
    help: str
    labels: tuple[str, ...] = ()
    kind: str = "gauge"


METRICS = {
    "kono_service_healthy": Metric(
        "1 when every container of the service runs (and passes its health check, where it has one)",
        ("service",)),
    "kono_service_restarts_total": Metric("restarts of the service's containers (a cluster's: its tasks seen failing)",
                                          ("service",), "counter"),
    "kono_backup_last_success_timestamp_seconds": Metric("when the last successful backup started (Unix time)"),
    "kono_backup_last_size_bytes": Metric("bytes the last successful backup read"),
    "kono_backup_failing": Metric("1 while the last backup run failed"),
    "kono_backup_max_age_seconds": Metric("a backup older than this is overdue: twice backup's schedule"),
    "kono_binlog_shipped_up_to_timestamp_seconds": Metric(
        "every commit before this time is in the repository (Unix time; point-in-time recovery); until a "
        "first round ships, when shipping began"),
    "kono_binlog_max_lag_seconds": Metric("pitr_max_lag_seconds: what shipping promises"),
    "kono_certificate_expiry_timestamp_seconds": Metric("when the served certificate expires (Unix time)",
                                                        ("name",)),
    "kono_certificate_renewal_failing": Metric("1 while the last ACME renewal check failed"),
    "kono_deploy_last_timestamp_seconds": Metric("when the last deploy ended (Unix time)"),
    "kono_deploy_last_success": Metric("1 when the last deploy succeeded"),
    "kono_docker_disk_bytes": Metric("Docker's disk use, by kind (images, containers, volumes, build_cache)",
                                     ("kind",)),
    "kono_swarm_node_ready": Metric("1 when the swarm node is ready (a cluster's managers report it)", ("node",)),
    "kono_swarm_service_replicas_running": Metric("a swarm service's running tasks", ("service",)),
    "kono_swarm_service_replicas_desired": Metric("a swarm service's declared tasks", ("service",)),
}

# node_exporter's metrics the rules and the dashboard (files/grafana/kono-host.json) read (its
# filesystem, memory and CPU collectors).
NODE_METRICS = (
    "node_filesystem_avail_bytes", "node_filesystem_size_bytes",
    "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes", "node_cpu_seconds_total",
)
# Prometheus's own series the rules read.
PROMETHEUS_SERIES = ("up",)

# The stack's metrics reach node_exporter as a file (its textfile collector) in the metrics volume,
# which the metrics service (files/monitoring/kono-metrics.js) writes and node_exporter reads.
METRICS_DIR = "/metrics"
METRICS_FILE = f"{METRICS_DIR}/kono.prom"
# On a cluster, where the metrics service lists each node's node_exporter for Prometheus (its
# file_sd format: {targets, labels}), in the same volume, which Prometheus mounts there too.
NODES_FILE = f"{METRICS_DIR}/nodes.json"
METRICS_INTERVAL_SECONDS = 15  # how often kono-metrics.js reads the engine (a scrape sees values this old at most)
NODE_EXPORTER_PORT = 9100  # node_exporter's own, inside its container; metrics_port publishes it
ALERTMANAGER_PORT = 9093  # Alertmanager's own, inside its container; not published
PROMETHEUS_PORT = 9090  # Prometheus's own, inside its container; not published (status reads it by docker exec)
CONFIG_DIR = "/etc/kono-monitoring"  # where Prometheus finds the monitoring folder: prometheus.yml, alerts.yml
# Go's garbage collector for the monitoring services (Prometheus, Alertmanager, node_exporter): a new
# cycle when the heap grows by half, not its default whole, so each keeps less than twice what is live
# (bench/README.md, Monitoring: the 200 MB target); their idle CPU stays a fraction of a percent.
GO_GC_PERCENT = 50
SMTP_CA_NAME = "smtp-ca.pem"  # alert_smtp_ca_bundle's copy in that folder, which Alertmanager mounts too


def contract_json() -> str:
    """The contract, for kono-metrics.js (by environment): {name: {help, labels, kind}}."""
    return json.dumps({name: {"help": m.help, "labels": list(m.labels), "kind": m.kind} for name, m in METRICS.items()},
                      separators=(",", ":"))


# Facts a service writes as "name value" lines in its own state volume, which the metrics service
# mounts read-only at /facts/<volume>: (the Settings property it exists with, volume, file in it).
FACT_FILES = (("backups_on", "backup_state", "metrics"),  # files/backup/kono-backup.sh, facts
              ("pitr_on", "binlog_state", "metrics"),  # kono-backup.sh, ship_facts
              ("acme_on", "acme_state", "metrics"))  # files/acme/kono-acme.sh, renewal_fact
# The certificate nginx serves: the file in its TLS folder (the secret tls/certificate's name in
# kono/services.py, what kono-acme.sh installs), read for its expiry; the folder is mounted read-only.
CERTIFICATE_FILE = "certificate"
TLS_MOUNT = "/facts/tls"
# The deploys' audit log (kono/deploy_run.py), read for the last deploy's end and result.
STATE_MOUNT = "/facts/kono-state"


def fact_files(settings) -> list[tuple[str, str]]:
    """(volume, file in it) of the fact files these settings have; the volume is mounted at /facts/<volume>."""
    return [(volume, name) for when, volume, name in FACT_FILES if getattr(settings, when)]


def constants(settings) -> dict[str, float]:
    """The thresholds a rule compares with, from the operator's settings (served as metrics)."""
    return {**({"kono_backup_max_age_seconds": BACKUP_MAX_AGE.total_seconds()} if settings.backups_on else {}),
            **({"kono_binlog_max_lag_seconds": settings.pitr_max_lag_seconds} if settings.pitr_on else {})}


def monitoring_context(settings, tls_folder: str | None) -> dict:
    """What the node_exporter and metrics templates read; ``tls_folder``: what nginx mounts as its
    TLS folder (a volume, or "./<folder>"), None without HTTPS."""
    facts = fact_files(settings)
    mounts = [(volume, f"/facts/{volume}") for volume, _ in facts] + [(f"./{STATE_DIR}", STATE_MOUNT)]
    if tls_folder:
        mounts.append((tls_folder, TLS_MOUNT))
    return {"dir": METRICS_DIR, "file": METRICS_FILE, "interval": METRICS_INTERVAL_SECONDS,
            "port": NODE_EXPORTER_PORT, "prometheus_port": PROMETHEUS_PORT, "config_dir": CONFIG_DIR, "go_gc_percent": GO_GC_PERCENT,
            "alertmanager_port": ALERTMANAGER_PORT,
            "contract": contract_json(),
            "mounts": mounts,
            "facts": " ".join(f"/facts/{volume}/{name}" for volume, name in facts),
            "certificate": f"{TLS_MOUNT}/{CERTIFICATE_FILE}" if tls_folder else "",
            "audit_log": f"{STATE_MOUNT}/{AUDIT_LOG.removeprefix(STATE_DIR + '/')}",
            "constants": json.dumps(constants(settings), separators=(",", ":")),
            # A cluster's: the file above, and the overlay network on which Prometheus reaches them.
            "nodes_file": NODES_FILE if settings.swarm else "",
            "network": overlay_network(settings.compose_project, settings.swarm_overlay_encryption) if settings.swarm else ""}


HEARTBEAT = "heartbeat"  # the severity of the alert that always fires (alerts.yml, Watchdog)


def alert_lines(listed: str) -> list[tuple[str, bool]]:
    """What status says of Prometheus's alerts (its /api/v1/alerts answer; "" when it did not
    answer): a NOT OK line per firing alert, one ok line when none fires (the heartbeat aside)."""
    try:
        alerts = json.loads(listed)["data"]["alerts"]
    except (ValueError, KeyError, TypeError):
        return [("alerts         unknown: Prometheus did not answer", False)]
    lines = []
    for alert in sorted(alerts, key=lambda a: (a["activeAt"], a["labels"]["alertname"])):
        if alert["state"] != "firing" or alert["labels"].get("severity") == HEARTBEAT:
            continue
        since = datetime.datetime.fromisoformat(alert["activeAt"][:19])
        summary = alert.get("annotations", {}).get("summary", "")
        lines.append((f"alert          {alert['labels']['alertname']}: {summary} (since {since:%Y-%m-%d %H:%M} UTC)",
                      False))
    return lines or [("alerts         none firing", True)]
