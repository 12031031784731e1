"""The cluster's shape checks, the swarm state as the Engine API reports it, and the commands that
form a cluster (exact text, shell syntax, and that no join token reaches a command line)."""

import json

import pytest

from kono import cluster, commands
from kono.cluster import Node, cluster_of, find_node, node_changes, parse_swarm_state
from kono.hardening import firewall_ruleset
from kono.settings import SettingsError
from tests.lab import settings_of
from tests.unit.test_commands import syntax_ok


def swarm_host(name, role="worker", labels=(), **knobs):
    knobs.setdefault("swarm_address_pool", "10.200.0.0/16")  # the hosts below are in 10.0.1.0/24
    return name, settings_of(engine="swarm", swarm_role=role, swarm_labels=list(labels), **knobs)


THREE = [swarm_host("10.0.1.5", "manager", ["db", "edge"]), swarm_host("10.0.1.6", labels=["app", "edge"]),
         swarm_host("10.0.1.7", labels=["app"])]


def test_the_inventory_swarm_hosts_form_one_cluster_founded_by_its_first_manager():
    shape = cluster_of([THREE[1], ("10.0.1.9", settings_of()), *THREE[::2]])  # a compose host stays out
    assert shape.founder == Node("10.0.1.5", "10.0.1.5", "manager", ("db", "edge"))
    assert shape.addresses == ("10.0.1.6", "10.0.1.5", "10.0.1.7")
    assert cluster_of([("10.0.1.9", settings_of())]) is None
    named = cluster_of([swarm_host("db.internal", "manager", ["db", "edge", "app"],
                                   swarm_advertise_address="10.0.2.5")])
    assert named.founder.address == "10.0.2.5"


@pytest.mark.parametrize("hosts, error", [
    ([swarm_host("10.0.1.5", "manager", ["db", "edge", "app"]), swarm_host("10.0.1.6", "manager")],
     r"swarm_role: expected 1 or 3 managers .* got 2 \(10.0.1.5, 10.0.1.6\)"),
    ([swarm_host("10.0.1.5", labels=["db", "edge", "app"])], r"swarm_role: expected 1 or 3 managers .* got 0"),
    ([swarm_host("10.0.1.5", "manager", ["edge", "app"])],
     r"swarm_labels: expected exactly one swarm host labelled \"db\" .* got 0 \(none\)"),
    ([swarm_host("10.0.1.5", "manager", ["db", "edge", "app"]), swarm_host("10.0.1.6", labels=["db"])],
     r"swarm_labels: expected exactly one .* got 2 \(10.0.1.5, 10.0.1.6\)"),
    ([swarm_host("10.0.1.5", "manager", ["db", "app"])], r"swarm_labels: expected at least one swarm host labelled 'edge'"),
    ([swarm_host("db.internal", "manager", ["db", "edge", "app"])],
     r"swarm_advertise_address: expected the IP address other nodes reach db.internal at"),
    ([swarm_host("10.0.1.5", "manager", ["db", "edge", "app"]),
      swarm_host("10.0.1.6", swarm_advertise_address="10.0.1.5")],
     r"swarm_advertise_address: expected an address of 10.0.1.6 alone, got 10.0.1.5, which 10.0.1.5 has too"),
    # Docker's default pool holds a VPC's usual 10.0.0.0/16: an overlay subnet would hide the nodes.
    ([swarm_host("10.0.1.5", "manager", ["db", "edge", "app"], swarm_address_pool="10.0.0.0/8")],
     r"swarm_address_pool: expected a network that holds none of the nodes' addresses .* got 10.0.0.0/8, "
     r"which holds 10.0.1.5 \(10.0.1.5\)"),
    ([swarm_host("10.0.1.5", "manager", ["db", "edge", "app"]), swarm_host("10.0.1.6", swarm_address_pool="10.9.0.0/16")],
     r"swarm_address_pool: expected one pool for the whole cluster, got 10.200.0.0/16, 10.9.0.0/16"),
    ([swarm_host("10.0.1.5", "manager", ["db", "edge", "app"]), swarm_host("10.0.1.6", swarm_overlay_encryption=False)],
     r"swarm_overlay_encryption: expected one setting for the whole cluster, got False, True"),
])
def test_a_cluster_that_cannot_work_is_refused_before_anything_runs(hosts, error):
    with pytest.raises(SettingsError, match=error):
        cluster_of(hosts)


@pytest.mark.parametrize("key, value, expected", [
    ("engine", "kubernetes", "engine: expected one of compose, swarm"),
    ("swarm_role", "leader", "swarm_role: expected one of manager, worker"),
    ("swarm_labels", ["web"], r"swarm_labels\[0\]: expected one of edge, app, db, got 'web'"),
    ("swarm_labels", ["db", "db"], "swarm_labels: expected each label once"),
    ("swarm_advertise_address", "node-1", "swarm_advertise_address: expected an IP address"),
    ("swarm_address_pool", "10.0.0.0/25", r"swarm_address_pool: expected an IPv4 network .* /24 or wider"),
    ("swarm_address_pool", "10.0.0.1/8", r"swarm_address_pool: expected an IPv4 network .* \(host bits zero\)"),
    ("swarm_address_pool", "fd00::/64", r"swarm_address_pool: expected an IPv4 network"),
])
def test_bad_cluster_knobs_are_named(key, value, expected):
    with pytest.raises(SettingsError, match=expected):
        settings_of(**{key: value})


def test_swarm_nodes_turn_docker_live_restore_off_for_docker_refuses_swarm_mode_with_it():
    from kono.docker_engine import daemon_config
    assert json.loads(daemon_config(settings_of()))["live-restore"] is True
    assert json.loads(daemon_config(THREE[0][1]))["live-restore"] is False


# The Engine API's answers, as Docker 26 gives them (fields the code does not read left out).
INFO = {"Swarm": {"NodeID": "n1", "NodeAddr": "10.0.1.5", "LocalNodeState": "active", "ControlAvailable": True,
                  "Error": "", "Cluster": {"ID": "c1"}}}
SWARM = {"ID": "c1", "JoinTokens": {"Worker": "SWMTKN-1-abc-worker", "Manager": "SWMTKN-1-abc-manager"},
         "DefaultAddrPool": ["10.200.0.0/16"], "SubnetSize": 24}
NODES = [
    {"ID": "n1", "Description": {"Hostname": "kono-10"},
     "Spec": {"Role": "manager", "Availability": "active", "Labels": {"kono.db": "true", "other": "x"}},
     "Status": {"State": "ready", "Addr": "0.0.0.0"},
     "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "10.0.1.5:2377"}},
    {"ID": "n2", "Description": {"Hostname": "kono-11"},
     "Spec": {"Role": "worker", "Availability": "active", "Labels": {}},
     "Status": {"State": "down", "Addr": "10.0.1.6"}},
]


def state_lines(info=INFO, swarm=SWARM, nodes=NODES):
    return [f"info {json.dumps(info)}", f"swarm {json.dumps(swarm) if swarm else ''}",
            f"nodes {json.dumps(nodes) if nodes else ''}"]


def test_the_swarm_state_is_read_from_the_engine_api():
    state = parse_swarm_state(state_lines())
    assert state["state"] == "active" and state["node_id"] == "n1" and state["cluster_id"] == "c1"
    assert state["manager"] is True
    assert state["tokens"] == {"worker": "SWMTKN-1-abc-worker", "manager": "SWMTKN-1-abc-manager"}
    assert state["address_pool"] == "10.200.0.0/16"
    assert state["nodes"][0] == {"id": "n1", "hostname": "kono-10", "role": "manager", "availability": "active",
                                 "labels": {"kono.db": "true"}, "state": "ready", "address": "0.0.0.0",
                                 "manager_address": "10.0.1.5", "reachability": "reachable", "leader": True}
    assert state["nodes"][1]["state"] == "down" and state["nodes"][1]["labels"] == {}


def test_a_host_in_no_swarm_a_worker_and_docker_down_read_as_such():
    alone = parse_swarm_state(state_lines({"Swarm": {"LocalNodeState": "inactive", "NodeID": ""}}, None, None))
    assert (alone["state"], alone["tokens"], alone["nodes"]) == ("inactive", None, [])
    worker = parse_swarm_state(state_lines({"Swarm": {**INFO["Swarm"], "ControlAvailable": False, "Cluster": None,
                                                      "RemoteManagers": [{"NodeID": "n1", "Addr": "10.0.1.5:2377"}]}},
                                           None, None))
    assert worker["state"] == "active" and worker["manager"] is False
    assert worker["cluster_id"] == "" and worker["managers"] == ["10.0.1.5"] and worker["address_pool"] == ""
    # A worker is in the first manager's swarm when it knows it as a manager; a manager, by the swarm's id.
    founded = parse_swarm_state(state_lines())
    assert cluster.same_swarm(worker, founded, "10.0.1.5")
    assert not cluster.same_swarm(worker, founded, "10.0.1.8")
    assert cluster.same_swarm(founded, founded, "10.0.1.8")
    assert not cluster.same_swarm({**founded, "cluster_id": "c2"}, founded, "10.0.1.5")
    assert parse_swarm_state(["info ", "swarm ", "nodes "])["state"] == ""
    assert parse_swarm_state([]) == cluster.SwarmState.default()


def test_the_state_read_is_one_shell_command_of_three_lines():
    command = cluster.swarm_state_command()
    assert syntax_ok(command)
    assert command.count("curl --silent --fail --unix-socket /var/run/docker.sock") == 3
    assert [part.split()[1] for part in command.split("; ") if part.startswith("printf")] == \
        ["'info", "'swarm", "'nodes"]


def test_nodes_are_found_by_id_for_the_manager_that_read_the_list_and_by_address_for_the_others():
    nodes = parse_swarm_state(state_lines())["nodes"]
    founder, worker = cluster_of(THREE).nodes[:2]
    assert find_node(founder, nodes, "n1", reader=True)["id"] == "n1"
    assert find_node(worker, nodes, "n1", reader=False)["id"] == "n2"
    manager = Node("10.0.1.5", "10.0.1.5", "manager", ())
    assert find_node(manager, nodes, "n9", reader=False)["id"] == "n1"  # by its advertised address
    assert find_node(Node("10.0.1.8", "10.0.1.8", "worker", ()), nodes, "n1", reader=False) is None


def test_labels_and_roles_converge_to_the_inventorys():
    found = parse_swarm_state(state_lines())["nodes"]
    assert node_changes(Node("a", "10.0.1.5", "manager", ("db",)), found[0]) == []
    assert node_changes(Node("a", "10.0.1.5", "manager", ("edge", "db")), found[0]) == \
        ["docker node update --label-add kono.edge=true n1 >/dev/null"]
    assert node_changes(Node("b", "10.0.1.6", "manager", ("app",)), found[1]) == \
        ["docker node update --label-add kono.app=true n2 >/dev/null", cluster.promote("n2")]
    assert cluster.promote("n2").startswith("docker node promote n2 >/dev/null && for i in $(seq 60); do ")
    assert "docker node inspect -f '{{if .ManagerStatus}}{{.ManagerStatus.Reachability}}{{end}}' n2" in cluster.promote("n2")
    assert node_changes(Node("a", "10.0.1.5", "worker", ()), found[0]) == \
        ["docker node update --label-rm kono.db n1 >/dev/null", "docker node demote n1"]
    for change in node_changes(Node("b", "10.0.1.6", "manager", ("app", "edge")), found[1]):
        assert syntax_ok(change)


def test_the_join_token_travels_in_a_file_never_on_a_command_line():
    request = json.loads(cluster.join_request("10.0.1.6", "10.0.1.5", "SWMTKN-1-abc-worker"))
    assert request == {"ListenAddr": "10.0.1.6:2377", "AdvertiseAddr": "10.0.1.6",
                       "RemoteAddrs": ["10.0.1.5:2377"], "JoinToken": "SWMTKN-1-abc-worker"}
    join = cluster.swarm_join("/srv/kono/.kono/swarm/join.json")
    assert syntax_ok(join) and "SWMTKN" not in join
    assert "--data-binary @/srv/kono/.kono/swarm/join.json" in join
    assert "rm -f /srv/kono/.kono/swarm/join.json" in join.split("status=$?")[1]  # removed, failed or not
    # `docker swarm init` prints a join token: its output goes nowhere.
    assert cluster.swarm_init("10.0.1.5", "10.200.0.0/16") == \
        "docker swarm init --advertise-addr 10.0.1.5 --listen-addr 10.0.1.5:2377 " \
        "--default-addr-pool 10.200.0.0/16 --default-addr-pool-mask-length 24 >/dev/null"


def test_the_swarm_join_command_fails_with_dockers_message(tmp_path):
    """Run for real against a stand-in for curl: a refused join fails with Docker's message, a
    good one passes, and the request file is gone either way."""
    import subprocess
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "curl").write_text("#!/bin/sh\nprintf '%s' \"$FAKE_ANSWER\"\nexit ${FAKE_EXIT:-0}\n")
    (fake / "curl").chmod(0o755)
    request = tmp_path / "join.json"
    for answer, code, ok in (('{"message":"invalid join token"} 400', 0, False), ("{} 200", 0, True),
                             ("", 7, False)):
        request.write_text("{}")
        proc = subprocess.run(["sh", "-c", cluster.swarm_join(str(request))], capture_output=True, text=True,
                              env={"PATH": f"{fake}:/usr/bin:/bin", "FAKE_ANSWER": answer, "FAKE_EXIT": str(code)})
        assert (proc.returncode == 0) is ok, proc.stderr
        assert not request.exists()
        if not ok:
            assert "joining the swarm failed" in proc.stderr
    assert "invalid join token" in subprocess.run(
        ["sh", "-c", f"echo '{{}}' > {request}; " + cluster.swarm_join(str(request))], capture_output=True,
        text=True, env={"PATH": f"{fake}:/usr/bin:/bin", "FAKE_ANSWER": '{"message":"invalid join token"} 400'}).stderr


def test_the_firewall_lets_only_the_clusters_nodes_reach_the_swarm_ports():
    shape = cluster_of(THREE)
    rules = firewall_ruleset(THREE[0][1], shape)
    assert "set swarm_nodes_v4 { type ipv4_addr; flags interval; elements = { 10.0.1.5, 10.0.1.6, 10.0.1.7 }; }" in rules
    assert "set swarm_nodes_v6 { type ipv6_addr; flags interval; }" in rules
    inputs = rules.split("chain input")[1].split("chain forward")[0]
    assert 'tcp dport { 2377, 7946 } ip saddr @swarm_nodes_v4 accept comment "swarm, from cluster nodes"' in inputs
    assert 'udp dport { 7946, 4789 } ip saddr @swarm_nodes_v4 accept comment "swarm, from cluster nodes"' in inputs
    # An encrypted overlay's traffic is IPsec ESP (protocol 50, no port): from the nodes too.
    assert 'meta l4proto 50 ip saddr @swarm_nodes_v4 accept comment "swarm encrypted overlay (IPsec ESP), from cluster nodes"' in inputs
    assert "policy drop" in inputs
    # A single host's firewall is what it was before clusters existed.
    assert "swarm" not in firewall_ruleset(settings_of())


def test_status_names_each_node_a_down_one_and_a_stray_one():
    shape = cluster_of([swarm_host("10.0.1.5", "manager", ["db", "edge", "app"]), swarm_host("10.0.1.6"),
                        swarm_host("10.0.1.7")])
    stray = {"ID": "n3", "Description": {"Hostname": "old-box"}, "Spec": {"Role": "worker", "Availability": "drain"},
             "Status": {"State": "ready", "Addr": "10.0.1.99"}}
    report = cluster.node_report(shape, parse_swarm_state(state_lines(nodes=[*NODES, stray])), "10.0.1.5")
    assert report == [("10.0.1.5", "ready active manager, leader", True),
                      ("10.0.1.6", "down active worker", False),
                      ("10.0.1.7", "not in the swarm", False),
                      ("old-box", "ready drain worker, not in the inventory", False)]
    promoted = cluster_of([swarm_host("10.0.1.5", "manager", ["db", "edge", "app"]), swarm_host("10.0.1.6", "manager"),
                           swarm_host("10.0.1.7", "manager")])
    assert cluster.node_report(promoted, parse_swarm_state(state_lines()), "10.0.1.5")[1] == \
        ("10.0.1.6", "down active worker (declared manager)", False)
    # Read on another manager (the first one dead): the first manager found by its address, not by the
    # reader's own id (once, it took the reader's entry for its own and named itself a stray).
    other = parse_swarm_state(state_lines())
    other["node_id"] = "n2"
    assert cluster.node_report(shape, other, "10.0.1.6")[:2] == [("10.0.1.5", "ready active manager, leader", True),
                                                               ("10.0.1.6", "down active worker", False)]


def test_the_deploy_reads_back_which_nodes_bootstrap_let_in():
    from kono.hardening import firewall_swarm_nodes
    assert firewall_swarm_nodes(firewall_ruleset(THREE[0][1], cluster_of(THREE))) == {"10.0.1.5", "10.0.1.6", "10.0.1.7"}
    assert firewall_swarm_nodes(firewall_ruleset(settings_of())) == set()


def test_drift_counts_a_host_that_does_not_answer_as_a_finding():
    from kono.cli.drift import findings, unreachable
    # pyinfra's lines (seen in tests/test_cluster.py's run), one in colour as on a terminal.
    output = ("    [10.231.0.10] drift: node 10.231.0.12 (10.231.0.12) is down\n"
              "\x1b[31m[10.231.0.12] Could not connect ([Errno None] Unable to connect to port 22 on 10.231.0.12)\x1b[0m\n"
              "--> Connecting to hosts...\n")
    assert unreachable(output) == ["[10.231.0.12] unreachable: Could not connect ([Errno None] Unable to connect to "
                                   "port 22 on 10.231.0.12)"]
    assert findings(output) == ["[10.231.0.10] node 10.231.0.12 (10.231.0.12) is down"]
    assert unreachable("--> Connecting to hosts...\n    [10.231.0.10] No changes\n") == []


def test_a_stray_node_is_drained_then_removed_and_demoted_first_when_it_manages():
    worker, manager = cluster.remove_node({"id": "n3", "role": "worker"}), cluster.remove_node({"id": "n3", "role": "manager"})
    for command in (worker, manager):
        assert syntax_ok(command)
        assert command.startswith("docker node update --availability drain n3 >/dev/null || exit 1; ")
        assert command.endswith("docker node rm --force n3 >/dev/null")
        assert command.index("--availability drain") < command.index("desired-state=running") < command.index("rm --force")
    assert "demote" not in worker and "docker node demote n3 >/dev/null && docker node rm" in manager


def test_a_kernel_without_ipsec_esp_is_named_before_the_cluster_changes(monkeypatch):
    """Encrypted overlays need the kernel's IPsec ESP; the lab's kernel has none, a cloud kernel has it."""
    assert syntax_ok(cluster.ipsec_command())
    assert cluster.KernelIpsec().process(["esp4 no", "xfrm_user yes"]) == {"esp4": False, "xfrm_user": True}
    assert [fact for fact, _ in cluster.cluster_reads(settings_of(engine="swarm"))] == [cluster.SwarmState, cluster.KernelIpsec]
    assert [fact for fact, _ in cluster.cluster_reads(settings_of(engine="swarm", swarm_overlay_encryption=False))] == \
        [cluster.SwarmState]
    monkeypatch.setattr(cluster, "read", lambda fact: {"esp4": False, "xfrm_user": True})
    found = []
    monkeypatch.setattr(cluster, "drift", found.append)
    (command,) = cluster.overlay_encryption_possible._inner()
    assert found[0].startswith("swarm_overlay_encryption: expected this node's kernel to have IPsec ESP for encrypted "
                               "overlay networks, but it has no esp4 (")
    assert "or set swarm_overlay_encryption = False only if the nodes reach each other over a private network" in found[0]
    assert command == commands.fail(found[0])
    noted = []
    monkeypatch.setattr(cluster, "read", lambda fact: {"esp4": True, "xfrm_user": True})
    monkeypatch.setattr(cluster, "host", type("Host", (), {"noop": noted.append})())
    assert list(cluster.overlay_encryption_possible._inner()) == [] and noted


def test_labels_moved_between_nodes_are_followed_by_spreading_the_copies_again(monkeypatch):
    """A label that leaves a node moves its task to a node that may run its twin already (and the swarm
    never moves it back): after the labels change, the copies are spread again; no change, no step."""
    nodes = [{**NODES[0], "Spec": {**NODES[0]["Spec"], "Labels": {"kono.db": "true", "kono.edge": "true"}}},
             {**NODES[1], "Spec": {**NODES[1]["Spec"], "Labels": {"kono.app": "true", "kono.edge": "true"}},
              "Status": {"State": "ready", "Addr": "10.0.1.6"}}]
    state = parse_swarm_state(state_lines(nodes=nodes))
    monkeypatch.setattr(cluster, "read", lambda fact, **kwargs: state)
    monkeypatch.setattr(cluster, "drift", lambda finding: None)
    said = []
    monkeypatch.setattr(cluster.logger, "warning", said.append)
    monkeypatch.setattr(cluster, "host", type("Host", (), {"print_prefix": "[h1] ",
                                                           "state": type("State", (), {"is_executing": False})()})())
    spread = {"api": ("kono.app", 2)}

    def steps(hosts):
        return list(cluster.swarm_nodes._inner(cluster=cluster_of(hosts), project="kono", spread=spread, wait_timeout=300))

    same = [swarm_host("10.0.1.5", "manager", ["db", "edge"]), swarm_host("10.0.1.6", labels=["app", "edge"])]
    assert steps(same) == [] and said == []
    moved = [swarm_host("10.0.1.5", "manager", ["db", "edge", "app"]), swarm_host("10.0.1.6", labels=["edge"])]
    assert steps(moved) == ["docker node update --label-add kono.app=true n1 >/dev/null",
                            "docker node update --label-rm kono.app n2 >/dev/null",
                            commands.respread("kono", spread, 300)]
    assert said == ["[h1] node labels or roles change: where the swarm moves a copy of api beside its twin, the "
                    "copies are spread again (one more starts first)"]
