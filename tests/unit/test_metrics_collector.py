"""files/monitoring/kono-metrics.js, the metrics service, run here with node on Docker engine answers
shaped as the engine gives them: what it makes of each service's containers and of `system df`,
written in the contract's names (kono/monitoring.py), in a text Prometheus's own parser and linter
(promtool check metrics) accept."""

import json
import re
import subprocess

import pytest

from kono.monitoring import contract_json
from tests.lab import REPO, make_certificate, metric_samples, promtool_path

SCRIPT = REPO / "files" / "monitoring" / "kono-metrics.js"


def container(service: str, running: bool = True, health: str | None = "healthy", restarts: int = 0) -> dict:
    """The parts of `GET /containers/{id}/json` the collector reads."""
    state = {"Running": running, "Status": "running" if running else "exited"}
    if health:
        state["Health"] = {"Status": health}
    return {"Config": {"Labels": {"com.docker.compose.service": service}}, "State": state, "RestartCount": restarts}


def collect(services, inspected, df, contract: str = contract_json(), facts: str = "") -> subprocess.CompletedProcess:
    program = (f"const m = require({json.dumps(str(SCRIPT))});"
               "const [contract, services, inspected, df, facts] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
               "process.stdout.write(m.render(contract, [...m.serviceSamples(services, inspected), ...m.diskSamples(df),"
               " ...m.factSamples(facts)]));")
    return subprocess.run(["node", "-e", program], input=json.dumps([json.loads(contract), services, inspected, df, facts]),
                          capture_output=True, text=True)


DF = {"Images": [{"Size": 1000}, {"Size": 500}], "Containers": [{"SizeRw": 20}, {"SizeRw": None}],
      "Volumes": [{"UsageData": {"Size": 300}}, {"UsageData": {"Size": -1}}], "BuildCache": None}


def test_each_services_health_and_restarts_and_dockers_disk_use():
    done = collect(["api", "db_production", "maintainer", "backup"],
                   [container("api", restarts=1), container("api", health="starting", restarts=2),
                    container("db_production"), container("maintainer", health=None),
                    container("other")], DF)
    assert done.returncode == 0, done.stderr
    lines = set(done.stdout.splitlines())
    assert {'kono_service_healthy{service="api"} 0',  # one of its two still starting
            'kono_service_healthy{service="db_production"} 1',
            'kono_service_healthy{service="maintainer"} 1',  # no healthcheck: running is enough
            'kono_service_healthy{service="backup"} 0',  # no container at all
            'kono_service_restarts_total{service="api"} 3',
            'kono_docker_disk_bytes{kind="images"} 1500', 'kono_docker_disk_bytes{kind="containers"} 20',
            'kono_docker_disk_bytes{kind="volumes"} 300',  # -1: not computed, not a size
            'kono_docker_disk_bytes{kind="build_cache"} 0'} <= lines
    assert not [line for line in lines if 'service="other"' in line]  # only the declared services
    checked = subprocess.run([promtool_path(), "check", "metrics"], input=done.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_stopped_container_is_unhealthy():
    done = collect(["db_dev"], [container("db_dev", running=False)], DF)
    assert 'kono_service_healthy{service="db_dev"} 0' in done.stdout.splitlines()


@pytest.mark.parametrize("contract, error", [
    ({}, "not in the metrics contract: kono_service_healthy"),
    ({"kono_service_healthy": {"help": "h", "labels": ["name"], "kind": "gauge"}},
     "kono_service_healthy: labels service, the contract says name"),
])
def test_a_sample_the_contract_does_not_name_fails_the_round(contract, error):
    done = collect(["api"], [container("api")], {}, json.dumps(contract))
    assert done.returncode != 0 and error in done.stderr, done.stderr


def test_every_metric_name_a_shipped_file_spells_is_in_the_contract():
    from kono.monitoring import METRICS
    spelled = {(path.relative_to(REPO).as_posix(), name) for path in (REPO / "files").rglob("*") if path.is_file()
               for name in re.findall(r"\bkono_[a-z_]+_(?:total|seconds|bytes|healthy|failing|success|ready|running|desired)\b",
                                      path.read_text(errors="replace"))}
    assert {name for _, name in spelled} - set(METRICS) == set(), sorted(spelled)
    assert ("files/monitoring/kono-metrics.js", "kono_service_healthy") in spelled


def test_the_backups_facts_are_served_with_the_contracts_help():
    facts = ("kono_backup_last_success_timestamp_seconds 1796266800\nkono_backup_last_size_bytes 8813\n"
             "kono_backup_failing 0\n")
    done = collect([], [], DF, facts=facts)
    assert done.returncode == 0, done.stderr
    assert "kono_backup_last_success_timestamp_seconds 1796266800" in done.stdout.splitlines()
    assert "# HELP kono_backup_failing 1 while the last backup run failed" in done.stdout
    checked = subprocess.run([promtool_path(), "check", "metrics"], input=done.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    bad = collect([], [], DF, facts="kono_backup_failing yes\n")
    assert bad.returncode != 0 and 'not "name value": kono_backup_failing yes' in bad.stderr


def test_the_readmes_table_names_only_contract_metrics():
    from kono.monitoring import METRICS
    section = (REPO / "README.md").read_text().split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(kono_[a-z_]+)", section, re.M))
    assert listed and listed <= set(METRICS), listed - set(METRICS)


def samples_of(function: str, text: str) -> subprocess.CompletedProcess:
    """``function`` of kono-metrics.js on ``text``, rendered in the contract (as a round does)."""
    program = (f"const m = require({json.dumps(str(SCRIPT))});"
               "const [contract, text] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
               f"process.stdout.write(m.render(contract, m.{function}(text)));")
    return subprocess.run(["node", "-e", program], input=json.dumps([json.loads(contract_json()), text]),
                          capture_output=True, text=True)


def test_the_served_certificates_expiry_is_a_sample_per_name(tmp_path):
    ca = make_certificate(tmp_path / "ca", [], days=365, ca=True)
    _, leaf = make_certificate(tmp_path / "leaf", ["kono.example", "www.kono.example"], issuer=ca, days=10)
    chain = (tmp_path / "leaf.pem").read_text() + (tmp_path / "ca.pem").read_text()  # the leaf first, as served
    done = samples_of("certificateSamples", chain)
    assert done.returncode == 0, done.stderr
    expiry = int(leaf.not_valid_after_utc.timestamp())
    assert [line for line in done.stdout.splitlines() if not line.startswith("#")] == [
        f'kono_certificate_expiry_timestamp_seconds{{name="kono.example"}} {expiry}',
        f'kono_certificate_expiry_timestamp_seconds{{name="www.kono.example"}} {expiry}']
    checked = subprocess.run([promtool_path(), "check", "metrics"], input=done.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert samples_of("certificateSamples", "not a certificate").returncode != 0  # fails the round: said in its log


AUDIT = [  # as kono/deploy_run.py and kono-backup.sh write the host's audit log
    '{"commit": "a1", "started": "2026-12-04T06:00:00+00:00", "changes": 3, "finished": "2026-12-04T06:02:00+00:00", '
    '"result": "success"}',
    '{"backup": "backup failed", "time": "2026-12-04T06:05:00Z", "detail": "unreachable"}',
]


@pytest.mark.parametrize("lines, ended, success", [
    (AUDIT, "2026-12-04T06:02:00+00:00", 1),
    # cut short: its lock holder closed the record when the session ended (kono.commands.lock_holder)
    (AUDIT + ['{"commit": "b2", "started": "2026-12-04T07:00:00+00:00", "finished": "2026-12-04T07:00:40+00:00", '
              '"result": "failed or interrupted"}', '{"commit": "b2", "result": "succ'],  # one being written
     "2026-12-04T07:00:40+00:00", 0),
    # one the next deploy closed (the host went down under it): when it began
    (AUDIT + ['{"commit": "c3", "started": "2026-12-04T08:00:00+00:00", "result": "failed or interrupted"}'],
     "2026-12-04T08:00:00+00:00", 0),
    ([AUDIT[1]], None, None),  # no deploy recorded yet
])
def test_the_last_deploys_end_and_result_come_from_the_audit_log(lines, ended, success):
    import datetime
    done = samples_of("deploySamples", "\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    served = metric_samples(done.stdout)
    if ended is None:
        assert served == {}
        return
    assert served == {"kono_deploy_last_timestamp_seconds": datetime.datetime.fromisoformat(ended).timestamp(),
                      "kono_deploy_last_success": success}


def test_the_audit_log_is_followed_a_line_cut_between_rounds_waits_and_a_new_file_is_read_anew(tmp_path):
    """Each round reads only what was appended to the audit log (it grows for the host's life); the
    last deploy stays known when only other records follow it."""
    import base64
    import datetime
    log = tmp_path / "audit.log"
    cut = ('{"commit": "b2", "who": "zoë", "started": "2026-12-04T07:00:00+00:00", "finished": '
           '"2026-12-04T07:00:40+00:00", "result": "failed or interrupted"}\n').encode()
    middle = cut.index("ë".encode()) + 1  # between the two bytes of one character
    steps = [("none", b""), ("write", ("\n".join(AUDIT) + "\n").encode()), ("append", cut[:middle]),
             ("append", cut[middle:]), ("append", (AUDIT[1] + "\n").encode()),
             # another file, longer than what was read: read from its start
             ("replace", ('{"commit": "c3", "started": "2026-12-04T08:00:00+00:00", "result": "success"}\n'
                          + (AUDIT[1] + "\n") * 8).encode()),
             ("write", b"")]
    program = (f"const m = require({json.dumps(str(SCRIPT))}); const fs = require('fs');"
               "const [contract, path, steps] = JSON.parse(fs.readFileSync(0, 'utf8'));"
               "const last = m.auditFollower(path); const rounds = [];"
               "for (const [action, data] of steps) {"
               "  const bytes = Buffer.from(data, 'base64');"
               "  if (action === 'write') fs.writeFileSync(path, bytes);"
               "  if (action === 'append') fs.appendFileSync(path, bytes);"
               "  if (action === 'replace') { fs.writeFileSync(path + '.new', bytes); fs.renameSync(path + '.new', path); }"
               "  rounds.push(m.render(contract, last())); }"
               "process.stdout.write(JSON.stringify(rounds));")
    done = subprocess.run(["node", "-e", program], capture_output=True, text=True, input=json.dumps(
        [json.loads(contract_json()), str(log), [(a, base64.b64encode(d).decode()) for a, d in steps]]))
    assert done.returncode == 0, done.stderr

    def deploy(started_or_ended: str, success: int) -> dict:
        return {"kono_deploy_last_timestamp_seconds": datetime.datetime.fromisoformat(started_or_ended).timestamp(),
                "kono_deploy_last_success": success}
    a1, b2 = deploy("2026-12-04T06:02:00+00:00", 1), deploy("2026-12-04T07:00:40+00:00", 0)
    assert [metric_samples(text) for text in json.loads(done.stdout)] == [
        {}, a1, a1, b2, b2, deploy("2026-12-04T08:00:00+00:00", 1), {}]


# -- a cluster: the metrics service on the db node (a manager) reads the swarm -----------------------
# Shaped as the Engine API gives them: GET /nodes, /services?status=true, /tasks, /containers/{id}/json.

def node(node_id: str, address: str, state: str = "ready", manager: str | None = None) -> dict:
    return {"ID": node_id, "Status": {"State": state, "Addr": address},
            **({"ManagerStatus": {"Addr": manager}} if manager else {})}


def swarm_service(service_id: str, name: str, desired: int) -> dict:
    return {"ID": service_id, "Spec": {"Name": f"kono_{name}"}, "ServiceStatus": {"DesiredTasks": desired}}


def task(task_id: str, service_id: str, node_id: str, state: str = "running", desired: str = "running",
         address: str | None = None) -> dict:
    attached = [{"Network": {"Spec": {"Name": "kono_default"}}, "Addresses": [f"{address}/24"]},
                {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.255.0.9/16"]}] if address else []
    return {"ID": task_id, "ServiceID": service_id, "NodeID": node_id, "DesiredState": desired,
            "Status": {"State": state}, "NetworksAttachments": attached}


def swarm_container(service_id: str, task_id: str, running: bool = True, health: str | None = "healthy") -> dict:
    state = {"Running": running, **({"Health": {"Status": health}} if health else {})}
    return {"Config": {"Labels": {"com.docker.swarm.service.id": service_id, "com.docker.swarm.task.id": task_id}},
            "State": state, "RestartCount": 0}


def run_js(program: str, value) -> subprocess.CompletedProcess:
    return subprocess.run(["node", "-e", f"const m = require({json.dumps(str(SCRIPT))});"
                           "const v = JSON.parse(require('fs').readFileSync(0, 'utf8'));" + program],
                          input=json.dumps(value), capture_output=True, text=True)


NODES = [node("n1", "0.0.0.0", manager="10.231.0.2:2377"), node("n2", "10.231.0.3"), node("n3", "10.231.0.4", state="down")]
SERVICES = [swarm_service("s-api", "api", 2), swarm_service("s-db", "db_production", 1),
            swarm_service("s-ne", "node_exporter", 3)]


def test_a_clusters_nodes_replicas_and_the_db_nodes_own_services_health():
    tasks = [task("t1", "s-api", "n2"), task("t2", "s-api", "n3", desired="shutdown"),  # moved off the dead node
             task("t3", "s-api", "n2", state="pending"),
             task("t4", "s-db", "n1"), task("t5", "s-db", "n1", state="failed", desired="shutdown"),
             task("t6", "s-ne", "n1"), task("t7", "s-ne", "n2"), task("t8", "s-ne", "n3")]
    # On the db node: db_production's running task (healthy), its old task's exited container, and a
    # node_exporter still starting.
    inspected = [swarm_container("s-db", "t4"), swarm_container("s-db", "t5", running=False),
                 swarm_container("s-ne", "t6", health="starting")]
    done = run_js("const failed = m.taskFailures(); failed(v.tasks);"
                  "process.stdout.write(m.render(v.contract, m.swarmSamples('kono', v.nodes, v.services, v.tasks,"
                  " v.inspected, failed(v.tasks))));",
                  {"contract": json.loads(contract_json()), "nodes": NODES, "services": SERVICES, "tasks": tasks,
                   "inspected": inspected})
    assert done.returncode == 0, done.stderr
    lines = set(done.stdout.splitlines())
    assert {'kono_swarm_node_ready{node="10.231.0.2"} 1',  # a manager's 0.0.0.0: its manager address
            'kono_swarm_node_ready{node="10.231.0.3"} 1', 'kono_swarm_node_ready{node="10.231.0.4"} 0',
            'kono_swarm_service_replicas_running{service="api"} 1',  # the pending one is not running yet
            'kono_swarm_service_replicas_desired{service="api"} 2',
            'kono_swarm_service_replicas_running{service="db_production"} 1',
            'kono_swarm_service_replicas_running{service="node_exporter"} 3',
            'kono_service_healthy{service="db_production"} 1',  # the old task's container does not count
            'kono_service_healthy{service="node_exporter"} 0',  # the one here still starting
            'kono_service_restarts_total{service="db_production"} 0'} <= lines, done.stdout
    # api runs on other nodes: counted by the swarm, not inspected from here.
    assert not [line for line in lines if line.startswith('kono_service_healthy{service="api"}')]
    checked = subprocess.run([promtool_path(), "check", "metrics"], input=done.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_swarm_services_restarts_are_its_tasks_seen_failing_once_each():
    first = [task("t1", "s-api", "n2", state="failed", desired="shutdown"), task("t2", "s-api", "n2")]
    later = [*first, task("t3", "s-api", "n2", state="failed", desired="shutdown"),
             task("t4", "s-api", "n2", state="rejected", desired="shutdown"), task("t5", "s-db", "n1")]
    pruned = later[2:]  # the swarm keeps a few tasks per slot: t1 is gone, and counted still
    done = run_js("const failed = m.taskFailures();"
                  "process.stdout.write(JSON.stringify([failed(v[0]), failed(v[1]), failed(v[2]), failed(v[2])]));",
                  [first, later, pruned])
    assert done.returncode == 0, done.stderr
    # Failed before the service began: not counted (a counter starts at 0); then each once.
    assert json.loads(done.stdout) == [{}, {"s-api": 2}, {"s-api": 2}, {"s-api": 2}]


def test_prometheus_finds_each_up_nodes_node_exporter_on_the_stacks_network_named_by_its_node():
    tasks = [task("t6", "s-ne", "n1", address="10.200.0.6"), task("t7", "s-ne", "n2", address="10.200.0.7"),
             task("t8", "s-ne", "n3", address="10.200.0.8"),  # its node is down
             task("t9", "s-ne", "n2", state="shutdown", desired="shutdown", address="10.200.0.9"),
             task("t1", "s-api", "n2", address="10.200.0.10")]
    done = run_js("process.stdout.write(JSON.stringify(m.nodeTargets('kono', v.nodes, v.services, v.tasks,"
                  " 'kono_default', 9100)));", {"nodes": NODES, "services": SERVICES, "tasks": tasks})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"targets": ["10.200.0.6:9100"], "labels": {"instance": "10.231.0.2"}},
                                       {"targets": ["10.200.0.7:9100"], "labels": {"instance": "10.231.0.3"}}]
