"""The stack on a swarm: stack.yaml derived from the compose file and the tables, the command that
deploys it, and the swarm's state as the Engine API reports it."""

import json
import subprocess

import pytest
import yaml

from kono import cluster, commands
from kono.cluster import parse_node
from kono.rotation import rotation_target
from kono.services import SECRETS, SERVICES, enabled, restarted_by
from kono.settings import SettingsError
from kono.stack import StackState, not_converged, parse_swarm_services, project_files, unevenly_spread
from tests.lab import settings_of
from tests.unit.test_commands import syntax_ok


def swarm_settings(**knobs):
    return settings_of(engine="swarm", swarm_role="manager", swarm_labels=["db", "edge", "app"],
                       swarm_address_pool="10.200.0.0/16", **knobs)


def stack(**knobs) -> dict:
    return yaml.safe_load(project_files(swarm_settings(**knobs))["stack.yaml"])


def test_each_service_runs_where_the_table_says_with_as_many_copies():
    services = stack(api_replicas=3)["services"]
    assert set(services) == {s.name for s in enabled(SERVICES, swarm_settings())}
    assert services["api"]["deploy"]["replicas"] == 3
    assert services["api"]["deploy"]["placement"]["constraints"] == ["node.labels.kono.app == true"]
    assert services["nginx"]["deploy"]["mode"] == "global"
    assert services["nginx"]["deploy"]["placement"]["constraints"] == ["node.labels.kono.edge == true"]
    for name in ("db_production", "db_dev", "maintainer"):
        assert services[name]["deploy"]["placement"]["constraints"] == ["node.labels.kono.db == true"]
        assert services[name]["deploy"]["replicas"] == 1
    # No IPVS everywhere: services found by DNS round-robin, ports published on the task's node.
    assert {s["deploy"]["endpoint_mode"] for s in services.values()} == {"dnsrr"}
    assert services["nginx"]["ports"] == [{"target": 80, "published": 80, "protocol": "tcp", "mode": "host"}]
    assert services["maintainer"]["ports"] == [{"target": 22, "published": 8022, "protocol": "tcp", "mode": "host"}]
    # A swarm cannot bind one address: db_dev, which compose binds to loopback alone, is not published.
    assert "ports" not in services["db_dev"]
    # The api rolls start-first and back on a failed health check; nginx (host ports) stops first.
    assert services["api"]["deploy"]["update_config"]["order"] == "start-first"
    assert services["api"]["deploy"]["update_config"]["parallelism"] == 0  # all at once: spread by the scheduler
    assert services["api"]["deploy"]["update_config"]["failure_action"] == "rollback"
    assert services["nginx"]["deploy"]["update_config"]["order"] == "stop-first"


def test_backups_and_binary_log_shipping_run_on_the_db_node_beside_the_volumes_they_read():
    services = stack(backup_repository="sftp:backup@example.com:/kono", pitr=True)["services"]
    for name in ("backup", "binlog"):
        assert services[name]["deploy"]["placement"]["constraints"] == ["node.labels.kono.db == true"]
        assert services[name]["deploy"]["replicas"] == 1
    assert {"repository_password", "storage_credentials"} <= {s["source"].split("_", 1)[1]
                                                              for s in services["backup"]["secrets"]}
    # restic's locks carry the hostname: each service's is its own and the same in every container
    # (kono-backup.sh takes away a lock its dead container left); the other service's are not its own.
    compose = yaml.safe_load(project_files(settings_of(backup_repository="sftp:backup@example.com:/kono",
                                                       pitr=True))["compose.yaml"])["services"]
    for engine in (services, compose):
        assert {name: engine[name]["hostname"] for name in ("backup", "binlog")} == \
            {"backup": "kono-backup", "binlog": "kono-binlog"}


def test_what_a_swarm_ignores_is_given_in_its_own_syntax():
    compose = yaml.safe_load(project_files(swarm_settings(memory_limits={"api": "256m"}))["compose.yaml"])
    services = stack(memory_limits={"api": "256m"})["services"]
    for name, block in services.items():
        assert not {"build", "restart", "security_opt", "tmpfs", "mem_limit"} & set(block), name
        # Each tmpfs a mount of type tmpfs, its mode kept (a swarm drops the service-level key silently).
        wanted = [t.split(":")[0] for t in compose["services"][name].get("tmpfs", [])]
        assert [v["target"] for v in block.get("volumes", []) if isinstance(v, dict) and v["type"] == "tmpfs"] == wanted
    db_mounts = {v["target"]: v for v in services["db_production"]["volumes"] if isinstance(v, dict)}
    assert db_mounts["/var/run/mysqld"]["tmpfs"]["mode"] == 0o1777
    assert services["api"]["deploy"]["resources"]["limits"]["memory"] == "256m"
    # What compose builds, named as compose names it: the stack runs the image built on the db node.
    assert services["maintainer"]["image"] == "kono-maintainer"
    # Secrets readable by root alone in the container (a swarm's default is 0444).
    assert {s["mode"] for block in services.values() for s in block.get("secrets", [])} == {0o400}
    assert not [key for key in stack() if key.startswith("x-")]


def test_each_secret_version_is_a_swarm_secret_of_its_own():
    secrets = stack()["secrets"]
    handed = [s for s in enabled(SECRETS, swarm_settings()) if s.handed_by_compose]
    assert set(secrets) == {s.compose_name for s in handed}
    for entry in handed:
        assert secrets[entry.compose_name] == {
            "file": f"./{entry.path}",
            "name": f"kono_{entry.compose_name}_${{KONO_SECRET_{entry.compose_name.upper()}}}"}


def test_a_single_host_has_no_stack_file():
    assert "stack.yaml" not in project_files(settings_of())


def test_the_stack_deploy_command():
    command = commands.stack_up("/srv/kono", "kono", "stack.yaml", 300, {"api": ["config/production/api_key"]},
                                {"production_api_key": "config/production/api_key"}, ("kono_encrypted", "kono_edge_encrypted"),
                                ("nginx",))
    assert syntax_ok(command)
    assert "KONO_SECRET_PRODUCTION_API_KEY=$(sha256sum < config/production/api_key | cut -c1-12)" in command
    assert "docker compose down;" in command and "down -v" not in command and "--volumes" not in command
    deploy = command.index("docker stack deploy --detach=false --prune --resolve-image never -c stack.yaml kono")
    assert command.index("docker compose build") < deploy < command.index("echo \"$digest\" > .kono/applied")
    # Old versions go after a successful deploy; the current ones stay.
    assert command.index("docker secret rm") > deploy
    assert "grep -vxF \"$(printf '%s\\n' \"kono_production_api_key_${KONO_SECRET_PRODUCTION_API_KEY}\")\"" in command
    # So do the stack's networks but those it is on now (an encryption turned on or off).
    assert command.index("docker network rm") > deploy
    assert "--filter label=com.docker.stack.namespace=kono --format '{{.Name}}' | grep -vxF \"$(printf '%s\\n' " \
           "kono_encrypted kono_edge_encrypted)\" | xargs -r docker network rm" in command


FAKE_DOCKER = """#!/bin/sh
# Every docker command succeeds and is logged, but `docker stack deploy`, which exits $FAKE_DEPLOY.
echo "$*" >> "$FAKE_LOG"
case "$1 $2" in "stack deploy") exit "$FAKE_DEPLOY" ;; "secret ls"|"network ls") echo kono_old ;; esac
"""


@pytest.mark.parametrize("deployed", [True, False])
def test_a_failed_stack_deploy_fails_the_command_and_records_or_removes_nothing(tmp_path, deployed):
    """A swarm that refuses the stack (a secret it cannot create, say) is a failed deploy: the
    project's digest is not recorded (the next deploy tries again) and no old version goes."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text(FAKE_DOCKER)
    (tmp_path / "bin" / "docker").chmod(0o755)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "api_key").write_text("x\n")
    log = tmp_path / "log"
    command = commands.stack_up(str(tmp_path), "kono", "stack.yaml", 300, {"api": ["config/api_key"]},
                                {"production_api_key": "config/api_key"}, ("kono_default", "kono_edge"))
    run = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "FAKE_LOG": str(log),
                              "FAKE_DEPLOY": "0" if deployed else "1"})
    ran = log.read_text()
    assert "stack deploy" in ran
    assert (run.returncode == 0) == deployed, run.stderr
    assert (tmp_path / ".kono" / "applied").exists() == deployed
    assert ("secret rm" in ran and "network rm" in ran) == deployed, ran


def test_the_overlay_network_is_encrypted_as_the_knob_says_and_named_for_it():
    """Docker cannot change a network's options, and `docker stack deploy` keeps an existing one: a
    network per setting, which every service moves to when it changes."""
    on = stack(swarm_overlay_encryption=True)["networks"]
    assert on == {"default": {"name": "kono_encrypted", "driver": "overlay", "driver_opts": {"encrypted": ""}},
                  "edge": {"name": "kono_edge_encrypted", "driver": "overlay", "driver_opts": {"encrypted": ""}}}
    off = stack(swarm_overlay_encryption=False)["networks"]
    # Off: the names `docker stack deploy` gives them, so a stack deployed before keeps its default one.
    assert off == {"default": {"name": "kono_default", "driver": "overlay"},
                   "edge": {"name": "kono_edge", "driver": "overlay"}}
    services = stack()["services"]
    assert "networks" not in services["api"]  # the default network
    # The edge network: the edges' nginx and the origin, which hands them the certificate's key, alone.
    assert services["nginx"]["networks"] == ["default", "edge"] and services["origin"]["networks"] == ["edge"]
    assert [name for name, block in services.items() if "edge" in block.get("networks", [])] == ["nginx", "origin"]


def test_the_stack_moving_to_another_network_is_said_before_it_happens(monkeypatch):
    from kono import stack as stack_module
    warned = []
    monkeypatch.setattr(stack_module, "read", lambda fact, **kwargs: {
        **StackState.default(), "digest": "new", "applied": "old", "swarm_services": {"api": (2, 2)},
        "swarm_networks": ["kono_default"]})
    monkeypatch.setattr(stack_module.logger, "warning", warned.append)
    monkeypatch.setattr(stack_module, "drift", lambda finding: None)
    monkeypatch.setattr(stack_module, "host", type("Host", (), {"print_prefix": "[h1] ", "noop": print})())
    list(stack_module.stack_up._inner(directory="/srv/kono", project="kono", wait_timeout=300, services=("api",),
                                      secret_versions={}, networks=("kono_encrypted", "kono_edge_encrypted")))
    assert warned == ["[h1] the stack moves from the network kono_default to kono_encrypted, kono_edge_encrypted "
                      "(swarm_overlay_encryption): every service restarts on it, the api start-first, the others "
                      "stopping first"]


def test_the_swarms_services_and_its_tasks_containers_are_read():
    services = [{"ID": "s1", "Spec": {"Name": "kono_api", "Labels": {"com.docker.stack.namespace": "kono"}},
                 "ServiceStatus": {"RunningTasks": 2, "DesiredTasks": 2}},
                {"ID": "s2", "Spec": {"Name": "kono_nginx", "Labels": {"com.docker.stack.namespace": "kono"}},
                 "ServiceStatus": {"RunningTasks": 2, "DesiredTasks": 2}}]
    # Asked for the tasks meant to run: the api's second one is starting; nginx's two run. (The
    # service status says api 2: it counts a task on a node that died, which last said "running".)
    tasks = [{"ServiceID": "s1", "Status": {"State": "running"}}, {"ServiceID": "s1", "Status": {"State": "starting"}},
             {"ServiceID": "s2", "Status": {"State": "running"}}, {"ServiceID": "s2", "Status": {"State": "running"}}]
    lines = [f"swarm_services {json.dumps(services)}", f"swarm_tasks {json.dumps(tasks)}"]
    assert parse_swarm_services(lines) == {"api": (1, 2), "nginx": (2, 2)}
    assert parse_swarm_services(["swarm_services ", "swarm_tasks "]) == {}  # a worker, or Docker down
    assert not_converged({"api": (1, 2), "nginx": (2, 2), "db_dev": (0, 0)}, ("api", "nginx", "db_dev", "backup")) == \
        {"api": (1, 2), "db_dev": (0, 0), "backup": (0, 0)}
    state = StackState().process(["digest", "applied ", "containers []", *lines])
    assert state["services"] == {} and state["swarm_services"]["api"] == (1, 2)
    compose = [{"Labels": {"com.docker.compose.service": "api"}, "State": "running", "Status": "Up 3 minutes (healthy)"}]
    assert StackState().process(["digest", "applied ", f"containers {json.dumps(compose)}"])["services"] == \
        {"api": ("running", "healthy")}
    networks = [{"Name": "kono_default", "Labels": {"com.docker.stack.namespace": "kono"}}]
    assert StackState().process(["digest", "applied ", "containers []",
                                 f"swarm_networks {json.dumps(networks)}"])["swarm_networks"] == ["kono_default"]
    assert "swarm_services" in commands.services_state("kono", swarm=True)
    assert "swarm_services" not in commands.services_state("kono")


@pytest.mark.parametrize("https", ["acme", "provided"])
def test_with_https_every_edge_copies_the_pair_from_the_origin_which_alone_mounts_it(https):
    """A cluster's edges: the certificate and key come from the db node's origin service (over the edge
    network) into each edge's own volume; the app and the challenges are proxied to it."""
    acme = {"acme_email": "ops@example.com"} if https == "acme" else {}
    settings = swarm_settings(https=https, domains=["example.com"], **acme)
    files = project_files(settings)
    services = yaml.safe_load(files["stack.yaml"])["services"]
    nginx, origin = services["nginx"], services["origin"]
    assert "edge_tls:/etc/nginx/tls" in nginx["volumes"]  # read-write: its entrypoint copies the pair there
    assert nginx["environment"] == {"KONO_TLS_ORIGIN": "http://origin/tls/"}
    source = "certificates" if https == "acme" else "./config/tls"
    assert f"{source}:/etc/nginx/tls:ro" in origin["volumes"] and \
        not any(v.startswith(source) for v in nginx["volumes"] if isinstance(v, str))
    assert origin["deploy"]["placement"]["constraints"] == ["node.labels.kono.db == true"]
    assert origin["environment"] == {"KONO_TLS_COPY": "/run/kono-tls"}
    assert "alias /run/kono-tls/;" in files["origin/origin.conf"] and "location ^~ /tls/ {" in files["origin/origin.conf"]
    # HTTPS turns on at each edge once it has the pair, as with acme on a single host.
    assert "include tls/*.conf;" in files["nginx/default.conf"]
    assert "proxy_pass $origin_upstream;" in files["nginx/site.locations"]
    if https == "acme":
        assert "set $origin_upstream http://origin;" in files["nginx/https.server"]
        assert "/srv/acme" not in files["nginx/default.conf"] + files["nginx/https.server"]
    # No app volume on an edge (it would be an empty one on every node but the db node's).
    assert not any(v.startswith(("app_build", "app_static", "acme_webroot")) for v in nginx["volumes"]
                   if isinstance(v, str))


def test_a_project_name_too_long_for_swarm_secret_names_is_refused():
    longest = max(len(s.compose_name) for s in SECRETS)
    fits = "k" * (64 - longest - 2 - commands.SECRET_VERSION_CHARS)
    assert swarm_settings(compose_project=fits).compose_project == fits
    with pytest.raises(SettingsError, match=f"compose_project: expected at most {len(fits)} characters"):
        swarm_settings(compose_project=fits + "k")


def test_a_database_password_rotated_on_a_cluster_restarts_its_database_too_and_says_so():
    """A swarm's secret cannot change under a running task: a new value is a new secret in the spec
    of every service that reads it, the database that reads it only at its first start included."""
    assert rotation_target(swarm_settings(), "production/db_api_password")[0].key == "production/db_api_password"
    assert [s.name for s in restarted_by("production/db_api_password")] == ["api"]
    assert [s.name for s in restarted_by("production/db_api_password", immutable=True)] == ["db_production", "api"]
    assert [s.name for s in restarted_by("production/api_key", immutable=True)] == ["api"]


def test_monitoring_on_a_cluster_node_exporter_on_every_node_the_rest_beside_the_data():
    files = project_files(swarm_settings(monitoring=True, alert_webhook=True))
    services = yaml.safe_load(files["stack.yaml"])["services"]
    # Every node's metrics: one node_exporter on each, whatever its labels (no constraint).
    assert services["node_exporter"]["deploy"]["mode"] == "global"
    assert "placement" not in services["node_exporter"]["deploy"]
    # What reads the swarm (a manager's API), the facts and the certificate, and keeps the history: the db node.
    for name in ("metrics", "prometheus", "alertmanager"):
        assert services[name]["deploy"]["placement"]["constraints"] == ["node.labels.kono.db == true"], name
        assert services[name]["deploy"]["replicas"] == 1
    # A swarm has no network_mode; the metrics service publishes nothing.
    assert "network_mode" not in services["metrics"] and "ports" not in services["metrics"]
    environment = services["metrics"]["environment"]
    assert environment["KONO_METRICS_NODES_FILE"] == "/metrics/nodes.json"
    assert environment["KONO_METRICS_NETWORK"] == commands.overlay_network("kono", True)
    assert environment["KONO_METRICS_NODE_EXPORTER_PORT"] == "9100"
    # Prometheus reads that list from the metrics volume.
    assert "metrics:/metrics:ro" in services["prometheus"]["volumes"]
    prometheus = yaml.safe_load(files["monitoring/prometheus.yml"])
    node_job = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "node")
    assert node_job["file_sd_configs"] == [{"files": ["/metrics/nodes.json"]}] and "static_configs" not in node_job
    # Without metrics_allowed_cidrs, no port: a swarm cannot bind loopback alone (Prometheus scrapes
    # over the stack's network). With them, every node publishes it (its firewall lets them in alone).
    assert "ports" not in services["node_exporter"]
    opened = yaml.safe_load(project_files(swarm_settings(monitoring=True, metrics_allowed_cidrs=["192.0.2.0/24"]))
                            ["stack.yaml"])["services"]["node_exporter"]
    assert opened["ports"] == [{"target": 9100, "published": 9100, "protocol": "tcp", "mode": "host"}]


def test_a_single_hosts_monitoring_is_as_before():
    files = project_files(settings_of(monitoring=True))
    compose = yaml.safe_load(files["compose.yaml"])["services"]
    assert compose["metrics"]["network_mode"] == "none"
    assert not any(name.startswith("KONO_METRICS_NODES") for name in compose["metrics"]["environment"])
    assert all(not volume.startswith("metrics:") for volume in compose["prometheus"]["volumes"])


# A swarm of three nodes for the spread command, after swarmkit: the scheduler puts a new task on the
# node, of those that may run it, with the fewest of its service (manager/scheduler/scheduler.go,
# nodeLess); a scale-down stops tasks on the node with the most (manager/orchestrator/replicated/
# services.go, reconcile). $FAKE_DIR holds "nodes" (id, state/availability, label) and "tasks" (the
# node of each running task) and "replicas".
FAKE_SWARM = r"""#!/bin/sh
d=$FAKE_DIR; echo "$*" >> "$d/log"
eligible() { awk '$2 == "ready/active" && $3 == "app" { print $1 }' "$d/nodes"; }
count() { grep -cx "$1" "$d/tasks"; }
case "$1 $2" in
"service inspect") [ -f "$d/replicas" ] || exit 1; [ "$3" = -f ] && cat "$d/replicas"; exit 0 ;;
"node ls") awk '$3 == "app" { print $1 }' "$d/nodes" ;;
"node inspect") awk -v id="$5" '$1 == id { print $2 }' "$d/nodes" ;;
"service ps") grep -x "${5#node=}" "$d/tasks" | sed 's/.*/Running 2 minutes ago/' ;;
"service scale")
  n=${4#*=}; echo "$n" > "$d/replicas"
  while [ "$(wc -l < "$d/tasks")" -lt "$n" ]; do
    for id in $(eligible); do echo "$(count "$id") $id"; done | sort -n | head -n1 | cut -d' ' -f2 >> "$d/tasks"
  done
  while [ "$(wc -l < "$d/tasks")" -gt "$n" ]; do
    most=$(for id in $(awk '{ print $1 }' "$d/nodes"); do echo "$(count "$id") $id"; done | sort -n | tail -n1 | cut -d' ' -f2)
    awk -v id="$most" '$0 == id && !done { done = 1; next } { print }' "$d/tasks" > "$d/t" && mv "$d/t" "$d/tasks"
  done ;;
esac
"""


def run_respread(tmp_path, tasks, replicas, nodes="n1 ready/active app\nn2 ready/active app\nn3 ready/active -\n"):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "docker").write_text(FAKE_SWARM)
    (tmp_path / "bin" / "docker").chmod(0o755)
    (tmp_path / "nodes").write_text(nodes)
    (tmp_path / "tasks").write_text("".join(f"{t}\n" for t in tasks))
    if replicas is not None:
        (tmp_path / "replicas").write_text(f"{replicas}\n")
    command = commands.respread("kono", {"api": ("kono.app", 2)}, 5)
    run = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60,
                         env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "FAKE_DIR": str(tmp_path)})
    log = (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""
    scales = [line.split()[-1] for line in log.splitlines() if line.startswith("service scale")]
    return run, sorted((tmp_path / "tasks").read_text().split()), scales


def test_copies_crowding_one_node_are_spread_one_more_first_then_one_fewer(tmp_path):
    run, tasks, scales = run_respread(tmp_path, ["n2", "n2"], 2)
    assert run.returncode == 0, run.stderr
    assert tasks == ["n1", "n2"]
    assert scales == ["kono_api=3", "kono_api=2"]  # never fewer than two running
    assert "api: its copies run unevenly on the nodes labelled kono.app (0/2)" in run.stdout
    assert syntax_ok(commands.respread("kono", {"api": ("kono.app", 2)}, 300))


def test_copies_spread_evenly_or_over_one_node_left_are_left_alone(tmp_path):
    for case, (tasks, nodes) in enumerate([(["n1", "n2"], None),
                                           (["n1", "n1"], "n1 ready/active app\nn2 down/active app\n"),
                                           (["n1", "n1"], "n1 ready/active app\nn2 ready/drain app\n")]):
        folder = tmp_path / str(case)
        folder.mkdir()
        run, after, scales = run_respread(folder, tasks, 2, *([nodes] if nodes else []))
        assert run.returncode == 0 and after == sorted(tasks) and scales == [], (case, run.stdout, run.stderr)


def test_a_spread_stopped_between_its_steps_ends_at_the_declared_copies_and_no_stack_is_no_step(tmp_path):
    (tmp_path / "stopped").mkdir()
    run, tasks, scales = run_respread(tmp_path / "stopped", ["n1", "n1", "n2"], 3)
    assert run.returncode == 0, run.stderr
    assert tasks == ["n1", "n2"] and scales == ["kono_api=2"]
    (tmp_path / "none").mkdir()
    run, _, scales = run_respread(tmp_path / "none", [], None)
    assert run.returncode == 0 and scales == [], run.stderr


def test_copies_crowding_a_node_are_drift_and_the_deploy_spreads_them_saying_so_first(monkeypatch):
    from kono import stack as stack_module
    nodes = [{"ID": "n1", "Description": {"Hostname": "kono-11"}, "Spec": {"Role": "manager", "Availability": "active",
              "Labels": {"kono.app": "true", "kono.db": "true"}}, "Status": {"State": "ready", "Addr": "0.0.0.0"}},
             {"ID": "n2", "Description": {"Hostname": "kono-12"}, "Spec": {"Role": "worker", "Availability": "active",
              "Labels": {"kono.edge": "true"}}, "Status": {"State": "ready", "Addr": "10.0.1.6"}},
             {"ID": "n3", "Description": {"Hostname": "kono-13"}, "Spec": {"Role": "worker", "Availability": "active",
              "Labels": {"kono.app": "true"}}, "Status": {"State": "ready", "Addr": "10.0.1.7"}}]
    services = [{"ID": "s1", "Spec": {"Name": "kono_api", "Labels": {"com.docker.stack.namespace": "kono"}},
                 "ServiceStatus": {"DesiredTasks": 2}},
                {"ID": "s2", "Spec": {"Name": "kono_db_dev", "Labels": {"com.docker.stack.namespace": "kono"}},
                 "ServiceStatus": {"DesiredTasks": 1}}]
    running = {"Status": {"State": "running"}}
    crowded = [{"ServiceID": "s1", "NodeID": "n3", **running}, {"ServiceID": "s1", "NodeID": "n3", **running},
               {"ServiceID": "s1", "NodeID": "n1", "Status": {"State": "starting"}},
               {"ServiceID": "s2", "NodeID": "n1", **running}]
    state = StackState().process(["digest", "applied ", "containers []", f"swarm_services {json.dumps(services)}",
                                  f"swarm_tasks {json.dumps(crowded)}", f"swarm_nodes {json.dumps(nodes)}"])
    assert state["swarm_placement"] == {"api": {"n3": 2}, "db_dev": {"n1": 1}}
    spread = {"api": ("kono.app", 2)}
    assert unevenly_spread(state["swarm_placement"], state["swarm_nodes"], spread) == {"api": {"kono-11": 0, "kono-13": 2}}
    assert unevenly_spread({"api": {"n1": 1, "n3": 1}}, state["swarm_nodes"], spread) == {}
    down = [{**node, "Status": {"State": "down"}} if node["ID"] == "n1" else node for node in nodes]
    assert unevenly_spread(state["swarm_placement"], [parse_node(n) for n in down], spread) == {}
    assert cluster.spread_services(swarm_settings(api_replicas=3)) == {"api": ("kono.app", 3)}

    def plan(placement_state):
        said, found, noops = [], [], []
        monkeypatch.setattr(stack_module, "read", lambda fact, **kwargs: placement_state)
        monkeypatch.setattr(stack_module.logger, "warning", said.append)
        monkeypatch.setattr(stack_module, "drift", found.append)
        monkeypatch.setattr(stack_module, "host", type("Host", (), {"print_prefix": "[h1] ", "noop": noops.append})())
        steps = list(stack_module.stack_up._inner(directory="/srv/kono", project="kono", wait_timeout=300,
                                                  services=("api", "db_dev"), secret_versions={},
                                                  networks=("kono_default",), spread=spread))
        return steps, said, found, noops

    up_to_date = {**state, "digest": "d", "applied": "d", "swarm_services": {"api": (2, 2), "db_dev": (1, 1)}}
    steps, said, found, noops = plan(up_to_date)
    assert steps == [commands.respread("kono", spread, 300)]
    assert found == ["service api runs its copies unevenly: 0 on kono-11, 2 on kono-13"]
    assert said == ["[h1] the api's copies crowd a node: one more starts on the emptiest node, then one on the "
                    "fullest stops (never fewer copies running than declared)"]
    spread_evenly = {**up_to_date, "swarm_placement": {"api": {"n1": 1, "n3": 1}, "db_dev": {"n1": 1}}}
    assert plan(spread_evenly)[0] == [] and plan(spread_evenly)[3] != []
    stopped_midway = {**spread_evenly, "swarm_services": {"api": (3, 3), "db_dev": (1, 1)}}
    steps, said, found, _ = plan(stopped_midway)
    assert steps == [commands.respread("kono", spread, 300)] and found == ["service api is scaled to 3 copies, not 2"]
    changed = {**up_to_date, "applied": "old"}
    steps = plan(changed)[0]
    assert len(steps) == 2 and steps[1] == commands.respread("kono", spread, 300) and "stack deploy" in steps[0]
