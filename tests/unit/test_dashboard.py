"""The Grafana dashboard (files/grafana/kono-host.json), for the team's own Grafana: a dashboard as
Grafana's import takes it (its Prometheus data source asked for on import, one host chosen by a
variable), every query parsed by Prometheus's own parser (promtool), reading only series the
contract names (kono/monitoring.py), and every metric a host serves on a panel. No Grafana
runs here: what Grafana itself makes of the file beyond its import fields is not checked."""

import json
import re

import pytest
import yaml

from kono.monitoring import METRICS, NODE_METRICS
from tests.lab import REPO, promtool_path
from tests.unit.test_alerts import metric_names

DASHBOARD = json.loads((REPO / "files" / "grafana" / "kono-host.json").read_text())
SOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}  # filled in by Grafana's import from __inputs
TARGETS = [(panel["title"], target) for panel in DASHBOARD["panels"] for target in panel["targets"]]


def test_it_has_what_grafanas_import_needs_and_asks_for_the_prometheus_data_source():
    assert {"uid", "title", "schemaVersion", "panels", "templating"} <= set(DASHBOARD)
    assert DASHBOARD["__inputs"] == [{**DASHBOARD["__inputs"][0], "name": "DS_PROMETHEUS", "type": "datasource",
                                      "pluginId": "prometheus"}]
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"] == SOURCE and set(panel["gridPos"]) == {"x", "y", "w", "h"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]  # Grafana's grid is 24 wide
        assert panel["targets"] and all(t["datasource"] == SOURCE for t in panel["targets"]), panel["title"]
    (host,) = DASHBOARD["templating"]["list"]
    assert host["name"] == "instance" and host["datasource"] == SOURCE


def test_every_query_parses_and_chooses_the_host(tmp_path):
    # Grafana puts the chosen host in for $instance before it asks Prometheus.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": target["expr"].replace("$instance", "h1")}
        for n, (_, target) in enumerate(TARGETS)]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    import subprocess
    checked = subprocess.run([promtool_path(), "check", "rules", "queries.yml"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for title, target in TARGETS:
        assert 'instance="$instance"' in target["expr"], title


def test_it_reads_only_named_series_and_shows_every_metric_a_host_serves():
    read = {name for _, target in TARGETS for name in metric_names(target["expr"])}
    assert read - set(METRICS) - set(NODE_METRICS) - {"ALERTS"} == set()
    assert set(METRICS) - read == set()  # a single host's and a cluster's db node's


@pytest.mark.parametrize("variable", re.findall(r"label_values\((\w+), (\w+)\)",
                                                json.dumps(DASHBOARD["templating"])))
def test_the_host_variable_lists_the_hosts_by_a_series_every_host_serves(variable):
    metric, label = variable
    # node_exporter's, which every host and every node of a cluster serves (kono's own: the db node's only).
    assert metric in NODE_METRICS and label == "instance"
