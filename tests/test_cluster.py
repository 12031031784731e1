"""A cluster (#27): three fresh hosts declared with engine = "swarm" become one Docker Swarm in one
deploy: the first manager inits it, the others join (the join token never shown), node labels and
roles follow the inventory, the stack runs across them (`docker stack deploy` from the db node:
api replicas on the app nodes, nginx on every edge node, the rest on the db node), a second deploy
changes nothing, the swarm's ports are closed to anything but the cluster's nodes. One lab of three
hosts for the module."""

import datetime
import ipaddress
import json
import random
import re
import secrets
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kono import commands
from kono.services import script
from tests import lab as lab_tools

pytestmark = pytest.mark.e2e

MANAGER_PORT, GOSSIP_PORT = 2377, 7946
# The lab's hosts are in 10.231.0.0/24, which Docker's default pool (10.0.0.0/8) holds: the deploy
# refuses that, as it would a VPC's 10.0.0.0/16 (tests/unit/test_cluster.py).
POOL = "10.200.0.0/16"


@pytest.fixture(scope="module")
def cluster(lab, git_server, tmp_path_factory):
    """Three hosts become one cluster the way a team grows into one: h1 first runs the stack alone
    (compose, the default), holding data and backing up to a repository (with point-in-time
    recovery); then the inventory declares three swarm hosts (h1 a manager labelled db and edge, h2 a
    worker labelled app and edge, h3 a worker labelled app), bootstrap runs on every node again (h2
    and h3 fresh), the test doubles are loaded on each (no registry: each node runs the images it
    has), and one deploy forms the cluster. What h1 held before is in ``before``."""
    work = tmp_path_factory.mktemp("cluster")
    hosts = [lab.boot() for _ in range(3)]
    h1 = hosts[0]
    passwords = {login: secrets.token_urlsafe(12) for login in lab_tools.MAINTAINERS}
    env = {f"KONO_MAINTAINER_PASSWORD_{login.upper()}": password for login, password in passwords.items()}
    (work / "secrets" / "backup").mkdir(parents=True)
    (work / "secrets" / "backup" / "repository_password").write_text(secrets.token_urlsafe(24) + "\n")
    server = lab_tools.ResticServer(lab, "cluster-repository")
    shape = {hosts[0].address: ("manager", ["db", "edge"]), hosts[1].address: ("worker", ["app", "edge"]),
             hosts[2].address: ("worker", ["app"])}
    data = {"api_repo": git_server.repo("api"), "app_repo": git_server.repo("app"),
            "local_secrets_dir": str(work / "secrets"), "backup_repository": server.url, "pitr": True}
    single = lab_tools.write_inventory(lab, [h1], work / "single.py", **data)
    inventory = write_cluster_inventory(lab, hosts, work / "inventory.py", shape, data)
    # h1 as a single host; meanwhile h2 and h3 get the cluster's bootstrap.
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(lab_tools.bootstrap, single),
                     pool.submit(lab_tools.bootstrap, inventory, "--limit", hosts[1].address,
                                 "--limit", hosts[2].address)]:
            done.result()
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(lab_tools.load_images, hosts))
    lab_tools.deploy(single, env=env)
    lab_tools.add_greeting(h1, "written on the single host")
    lab_tools.mysql(h1, "dev", lab_tools.host_secret(h1, "dev", "db_dev_password"),
                    "CREATE TABLE IF NOT EXISTS drill (n INT PRIMARY KEY); INSERT INTO drill VALUES (1), (2);",
                    server="db_dev", database="dev")
    lab_tools.pin_maintainer_host_key(h1)
    lab_tools.maintainer(h1, "echo 'from the single host' > /srv/static/drill.txt")
    # A backup before the switch, as a careful operator takes one (a new host backs up at once only
    # when its tables exist as its backup service first looks).
    h1.ssh(f"docker exec {lab_tools.container('backup')} {lab_tools.BACKUP_SCRIPT} backup", user="kono")
    # The operator runs bootstrap on every node after changing the membership (h2's and h3's ran as
    # the cluster's already).
    lab_tools.bootstrap(inventory, "--limit", h1.address)
    # Docker restarted on h1 (live-restore off for swarm mode): its containers come back by themselves.
    back = wait_for(lambda: lab_tools.status(single), lambda shown: shown.returncode == 0, 240)
    assert back.returncode == 0, back.stdout + back.stderr
    # What h1 holds once it is ready to switch (the backup service's own first backup, which the
    # tables may have started beside the one above, long finished).
    before = {"data": lab_tools.data_fingerprint(h1), "backup": lab_tools.last_backup_record(h1),
              "volumes": h1.ssh("docker volume ls -q | sort", user="kono").stdout.split(),
              "host_key": h1.ssh(f"docker exec {lab_tools.container('maintainer')} "
                                 "cat /var/lib/kono-ssh/etc/ssh/ssh_host_ed25519_key.pub", user="kono").stdout}
    first = lab_tools.deploy(inventory, "-vvv", env=env)  # every command, its output and every fact read
    yield {"hosts": hosts, "inventory": inventory, "first": first, "env": env, "work": work, "git": git_server,
           "shape": shape, "before": before, "server": server, "data": data}
    server.stop()
    with ThreadPoolExecutor(len(hosts)) as pool:  # each powers off in its own time: side by side
        list(pool.map(lambda host: host.stop(), hosts))


def write_cluster_inventory(lab, hosts, path, shape, data):
    """Like an operator's inventory of a cluster: each host's role and labels in its own data."""
    # The lab's kernel has no IPsec ESP: unencrypted overlays (encryption's refusal is tested below).
    lab_tools.write_inventory(lab, hosts, path, engine="swarm", swarm_address_pool=POOL, swarm_overlay_encryption=False,
                              **data)
    text = path.read_text()
    namespace: dict = {}
    exec(text, {}, namespace)
    entries = [(name, {**data, "swarm_role": shape[name][0], "swarm_labels": shape[name][1]})
               for name, data in namespace["kono_hosts"]]
    path.write_text(f"# Written by tests/test_cluster.py for throwaway hosts.\nkono_hosts = {entries!r}\n")
    return path


def nodes(host) -> list[dict]:
    """The swarm's nodes as a manager lists them (the docker CLI on the host, over SSH)."""
    out = host.ssh("docker node ls -q | xargs docker node inspect", user="kono").stdout
    own = host.ssh("docker info -f '{{.Swarm.NodeID}}'", user="kono").stdout.strip()
    return [{"address": n["Status"]["Addr"], "state": n["Status"]["State"], "role": n["Spec"]["Role"],
             "availability": n["Spec"]["Availability"], "manager": (n.get("ManagerStatus") or {}).get("Addr", ""),
             "labels": {k: v for k, v in (n["Spec"].get("Labels") or {}).items()}, "id": n["ID"],
             "self": n["ID"] == own}
            for n in json.loads(out)]


def node_of(host, members: list[dict], address: str) -> dict:
    return next(n for n in members if n["address"] == address or n["manager"].split(":")[0] == address
                or (n["self"] and address == host.address))


def reachable(address: str, port: int, timeout: float = 3) -> bool:
    with socket.socket() as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            return True
        except OSError:
            return False


def test_a_single_host_and_two_fresh_ones_form_one_swarm_with_the_inventorys_labels_and_roles(cluster):
    h1, h2, h3 = cluster["hosts"]
    members = nodes(h1)
    assert len(members) == 3, members
    for host, (role, labels) in cluster["shape"].items():
        node = node_of(h1, members, host)
        assert node["state"] == "ready" and node["availability"] == "active", node
        assert node["role"] == role, node
        assert {k: v for k, v in node["labels"].items() if k.startswith("kono.")} == \
            {f"kono.{label}": "true" for label in labels}, node
    # Each joined host says so itself, as a worker of the same swarm.
    cluster_id = h1.ssh("docker info -f '{{.Swarm.Cluster.ID}}'", user="kono").stdout.strip()
    for host in (h2, h3):
        info = json.loads(host.ssh("docker info -f '{{json .Swarm}}'", user="kono").stdout)
        assert info["LocalNodeState"] == "active" and not info["ControlAvailable"], info
        assert info["NodeID"] in {n["id"] for n in members}
    assert cluster_id
    # Overlay networks take their subnets from the declared pool (the ingress network, made at init, too).
    ingress = json.loads(h1.ssh("docker network inspect ingress", user="kono").stdout)[0]
    subnets = [config["Subnet"] for config in ingress["IPAM"]["Config"]]
    assert subnets and all(ipaddress.ip_network(s).subnet_of(ipaddress.ip_network(POOL)) for s in subnets), subnets
    # Docker refuses swarm mode with live-restore: bootstrap turned it off on every node.
    for host in (h1, h2, h3):
        assert host.ssh("docker info -f '{{.LiveRestoreEnabled}}'", user="kono").stdout.strip() == "false"


def test_the_single_host_becomes_the_db_node_with_every_row_asset_volume_and_host_key(cluster):
    """#27 item 8: the compose project stopped (said first), never its volumes; the stack's services
    took them over; every row of both databases and every asset as the single host held them."""
    h1, h2, _ = cluster["hosts"]
    before = cluster["before"]
    assert "the compose project kono stops here" in cluster["first"].output
    # No container compose made is left (the swarm's tasks of the images compose built carry their
    # compose labels too; compose marks its own containers with oneoff).
    assert h1.ssh("docker ps -aq --filter label=com.docker.compose.project=kono "
                  "--filter label=com.docker.compose.oneoff=False", user="kono").stdout.split() == []
    assert set(before["volumes"]) <= set(h1.ssh("docker volume ls -q", user="kono").stdout.split())
    assert lab_tools.data_fingerprint(h1) == before["data"]
    # The maintainers' known_hosts stay true: the same host key, from the same volume.
    assert h1.ssh(f"docker exec {lab_tools.container('maintainer')} "
                  "cat /var/lib/kono-ssh/etc/ssh/ssh_host_ed25519_key.pub", user="kono").stdout == before["host_key"]
    assert lab_tools.maintainer(h1, "cat /srv/static/drill.txt").stdout == "from the single host\n"
    # The api's account reaches db_production over the stack's overlay network, with its row.
    api_password = lab_tools.host_secret(h1, "production", "db_api_password")
    assert lab_tools.mysql(h1, "api", api_password, "SELECT message FROM greetings;").stdout == \
        "written on the single host\n"
    # The backup service's record came along (its state volume): no backup is due, none was rerun.
    assert before["backup"] and lab_tools.last_backup_record(h1) == before["backup"]


def test_backups_binary_logs_and_a_point_in_time_restore_run_on_the_db_node(cluster):
    """#27 items 4 and 6: the backup and binlog services run on the db node beside the volumes they
    read, status says how they do there, and a restore to a second before a mistake, from the
    repository alone, puts back every row of both databases and every asset."""
    h1, h2, h3 = cluster["hosts"]
    inventory = cluster["inventory"]
    placed = tasks(h1)
    assert placed["backup"] == [h1.address] and placed["binlog"] == [h1.address], placed
    shown = lab_tools.status(inventory)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert re.search(rf"{re.escape(h1.address)}  last backup +last success .* ok", shown.stdout), shown.stdout
    assert re.search(rf"{re.escape(h1.address)}  binary logs +shipped up to .* ok", shown.stdout), shown.stdout
    assert not [line for line in shown.stdout.splitlines() if "backup" in line and h1.address not in line]

    # A backup on the cluster (db_dev and the files; db_production's binary logs carry its base).
    ran = h1.ssh(f"docker exec {lab_tools.container('backup')} {lab_tools.BACKUP_SCRIPT} backup", user="kono", check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    at_backup = lab_tools.data_fingerprint(h1)
    moment = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    time.sleep(1.5)
    api_password = lab_tools.host_secret(h1, "production", "db_api_password")
    assert lab_tools.mysql(h1, "api", api_password, "DELETE FROM greetings; INSERT INTO greetings (message) "
                           "VALUES ('after the mistake');").returncode == 0
    assert lab_tools.mysql(h1, "dev", lab_tools.host_secret(h1, "dev", "db_dev_password"),
                           "DELETE FROM drill WHERE n = 1;", server="db_dev", database="dev").returncode == 0
    lab_tools.maintainer(h1, "echo changed > /srv/static/drill.txt")
    assert lab_tools.data_fingerprint(h1) != at_backup
    # Until the mistake itself is shipped: a round that started between the moment and the mistake
    # ships nothing new, and the repository's newest binary logs would end before the moment (seen).
    lab_tools.wait_shipped_past(h1, datetime.datetime.now(datetime.timezone.utc), 150)

    restored = lab_tools.backup_tool("restore-repository", str(inventory), "--until", f"{moment:%Y-%m-%d %H:%M:%S}",
                                     "--force")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"db_production is as of {moment:%Y-%m-%d %H:%M:%S} UTC" in restored.stdout, restored.stdout
    assert f"{h1.address}: restored from its repository" in restored.stdout
    assert h2.address not in restored.stdout and h3.address not in restored.stdout  # the data is on h1 alone
    assert lab_tools.data_fingerprint(h1) == at_backup  # every row of both databases, every asset
    # The maintainer's sshd re-read its (restored) host keys and still lets the team in.
    assert lab_tools.maintainer(h1, "cat /srv/static/drill.txt").stdout == "from the single host\n"
    # The comparison sees one missing row.
    dev_password = lab_tools.host_secret(h1, "dev", "db_dev_password")
    lab_tools.mysql(h1, "dev", dev_password, "DELETE FROM drill WHERE n = 2;", server="db_dev", database="dev")
    assert lab_tools.data_fingerprint(h1)["db_dev"] != at_backup["db_dev"]
    lab_tools.mysql(h1, "dev", dev_password, "INSERT INTO drill VALUES (2);", server="db_dev", database="dev")


def tasks(host) -> dict[str, list[str]]:
    """{service: the addresses of the nodes its running tasks are on}, as the manager ``host`` sees them."""
    nodes_by_id = {n["id"]: host.address if n["self"] else n["manager"].split(":")[0] or n["address"]
                   for n in nodes(host)}
    names = [line.split() for line in host.ssh("docker service ls --format '{{.ID}} {{.Name}}'", user="kono").stdout.splitlines()]
    ids = host.ssh("docker service ls -q | xargs -r -n1 docker service ps -q --filter desired-state=running",
                   user="kono").stdout.split()
    found: dict[str, list[str]] = {}
    for task in json.loads(host.ssh(f"docker inspect {' '.join(ids)}", user="kono").stdout) if ids else []:
        if task["Status"]["State"] == "running":
            name = next(name for short, name in names if task["ServiceID"].startswith(short))
            found.setdefault(name.removeprefix("kono_"), []).append(nodes_by_id[task["NodeID"]])
    return found


def task_history(host, service: str) -> str:
    """The swarm's tasks of ``service``, old ones too: node, desired and current state, error."""
    return host.ssh(f"docker service ps kono_{service} --no-trunc --format "
                    "'{{.Name}} {{.Node}} desired={{.DesiredState}} {{.CurrentState}} {{.Error}}'",
                    user="kono", check=False).stdout


def get(address: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", f"http://{address}{path}"],
                          capture_output=True, text=True)


def test_the_stack_runs_across_the_nodes_as_the_tables_place_it(cluster):
    h1, h2, h3 = cluster["hosts"]
    placed = tasks(h1)
    # api: its 2 replicas (api_replicas) on the app nodes, one each (the swarm spreads them);
    # nginx: one on every edge node; the rest on the db node, where their volumes are.
    assert sorted(placed["api"]) == sorted([h2.address, h3.address]), placed
    assert sorted(placed["nginx"]) == sorted([h1.address, h2.address]), placed
    for service in ("db_production", "db_dev", "maintainer"):
        assert placed[service] == [h1.address], placed
    # Through each edge node: nginx there reaches an api replica over the overlay network.
    for edge in (h1, h2):
        answer = get(edge.address, "/api/health")
        assert answer.returncode == 0, (edge.address, answer.stderr)
    assert not reachable(h3.address, 80)  # not an edge: publishes nothing
    # The api reads its secrets (the swarm's, mode 0400 for root, copied for node by its entrypoint).
    api = h3.ssh(f"docker exec {lab_tools.container('api')} sh -c 'stat -c %a /run/secrets/production_api_key; "
                 "grep NoNewPrivs /proc/1/status'", user="kono").stdout.split()
    assert api[0] == "400" and api[-1] == "1", api  # and the daemon's no-new-privileges holds on an app node
    # On the db node the daemon leaves new privileges to the services (a swarm ignores each one's
    # own setting): the maintainer's sudo works, as on a single host.
    lab_tools.pin_maintainer_host_key_of(h1, lab_tools.container("maintainer"))
    password = cluster["env"]["KONO_MAINTAINER_PASSWORD_SYSOP"]
    sudo = lab_tools.maintainer(h1, "sudo -S -p '' id -un", input=password + "\n", check=False)
    assert sudo.stdout.strip() == "root", sudo.stderr
    # No container on any node has the Docker socket.
    for host in (h1, h2, h3):
        mounts = host.ssh("docker ps -q | xargs -r docker inspect -f '{{range .Mounts}}{{.Source}} {{end}}'",
                          user="kono").stdout
        assert "docker.sock" not in mounts, (host.address, mounts)


def test_the_join_token_and_the_repository_password_are_never_shown(cluster):
    h1 = cluster["hosts"][0]
    tokens = [h1.ssh(f"docker swarm join-token -q {role}", user="kono").stdout.strip() for role in ("worker", "manager")]
    assert all(token.startswith("SWMTKN-") for token in tokens)
    # The secret part of a token is its last field: none of it in the first deploy's output (-vvv:
    # every command, its output, every fact read).
    output = cluster["first"].output
    assert "swarm" in output.lower()  # the output is the deploy's, which formed the swarm
    for token in tokens:
        assert token.rsplit("-", 1)[1] not in output
    # Nor the backup repository's password (a swarm secret on the cluster, as any other).
    password = (cluster["work"] / "secrets" / "backup" / "repository_password").read_text().strip()
    assert password and password not in output
    # Nor left on a joined host's disk.
    for host in cluster["hosts"][1:]:
        assert host.ssh("ls /srv/kono/.kono/swarm/", user="kono").stdout.strip() == ""


def test_a_second_deploy_changes_nothing(cluster):
    again = lab_tools.deploy(cluster["inventory"], "--json", env=cluster["env"])
    assert again.changes == 0, again.output[-3000:]


def nginx_on(host) -> tuple[str, str, str]:
    """(container id, its nginx master's children, its live default.conf) of the edge node's nginx."""
    out = host.ssh(f"c={lab_tools.container('nginx')}; echo $c; docker exec $c cat /proc/1/task/1/children; echo; "
                   "docker exec $c cat /etc/nginx/conf.d/default.conf", user="kono").stdout
    container, children, conf = out.split("\n", 2)
    return container, children, conf


def test_an_nginx_configuration_change_is_checked_and_reloaded_on_every_edge(cluster):
    h1, h2, _ = cluster["hosts"]
    edges = (h1, h2)
    before = {edge.address: nginx_on(edge) for edge in edges}
    lab_tools.deploy(cluster["inventory"], "--data", "server_name=cluster.example _", env=cluster["env"])
    for edge in edges:
        container, children, conf = nginx_on(edge)
        assert container == before[edge.address][0]  # the same container: reloaded, not restarted
        assert children != before[edge.address][1]  # new workers: the reload happened
        assert "server_name cluster.example _;" in conf
    # Checked first on each edge: nginx's own message, and what every edge serves stays as it was.
    live = {edge.address: nginx_on(edge)[2] for edge in edges}
    bad = lab_tools.deploy(cluster["inventory"], "--data", "server_name=~*", env=cluster["env"], check=False)
    assert bad.returncode != 0 and re.search(r"pcre2?_compile\(\) failed", bad.output), bad.output[-3000:]
    for edge in edges:
        assert nginx_on(edge)[2] == live[edge.address]
        assert get(edge.address, "/api/health").returncode == 0
    lab_tools.deploy(cluster["inventory"], env=cluster["env"])  # back to the inventory's


def swarm_secrets(host) -> set[str]:
    return set(host.ssh("docker secret ls --format '{{.Name}}'", user="kono").stdout.split())


def test_a_rotated_secret_is_a_new_swarm_secret_every_api_replica_reads_and_the_old_one_goes(cluster):
    h1, h2, h3 = cluster["hosts"]
    before = swarm_secrets(h1)
    (old,) = [name for name in before if name.startswith("kono_production_api_key_")]
    lab_tools.rotate(cluster["inventory"], "production/api_key", env=cluster["env"])
    after = swarm_secrets(h1)
    (new,) = [name for name in after if name.startswith("kono_production_api_key_")]
    assert new != old and old not in after  # a new version, the old one removed once no task used it
    assert after - {new} == before - {old}  # no other secret touched
    assert sorted(tasks(h1)["api"]) == sorted([h2.address, h3.address])  # still one on each app node
    # Every api replica reads the new value (compared by digest: no secret leaves a host).
    wanted = h1.ssh("sha256sum < /srv/kono/config/production/api_key", user="kono").stdout.split()[0]
    assert new.endswith(wanted[:12])
    for address in tasks(h1)["api"]:
        host = next(h for h in cluster["hosts"] if h.address == address)
        seen = host.ssh(f"docker exec {lab_tools.container('api')} sha256sum /run/secrets/production_api_key",
                        user="kono").stdout.split()[0]
        assert seen == wanted, address
    assert lab_tools.deploy(cluster["inventory"], "--json", env=cluster["env"]).changes == 0


def test_a_rotated_database_password_reaches_the_database_and_every_api_replica(cluster):
    """A database password on a cluster: ALTER USER in db_production on the db node, then a new swarm
    secret, which db_production (it reads it only at its first start, but a swarm's secret is in
    the spec) and the api replicas roll to; the plan says the database restarts before it does."""
    h1, h2, h3 = cluster["hosts"]
    # The API's code on every replica (a new node's replica serves a placeholder): its /api/greeting
    # reads db_production with the password the replica was given.
    deployed = lab_tools.maintainer(h1, "kono-deploy api")
    assert set(replica_versions(cluster).values()) == {cluster["git"].api_version()}, deployed.stdout
    old = lab_tools.host_secret(h1, "production", "db_api_password")
    rotated = lab_tools.rotate(cluster["inventory"], "production/db_api_password", env=cluster["env"])
    assert "db_production gets a new container (secret): RESTARTS" in rotated.output, rotated.output[-3000:]
    assert rotated.output.index("db_production gets a new container") < rotated.output.index("Stack up")
    new = lab_tools.host_secret(h1, "production", "db_api_password")
    assert new != old
    assert lab_tools.mysql(h1, "api", new, "SELECT 1;").returncode == 0
    assert lab_tools.mysql(h1, "api", old, "SELECT 1;").returncode != 0
    # Each replica, on each app node, reaches the database with the new one.
    assert sorted(tasks(h1)["api"]) == sorted([h2.address, h3.address])
    for edge in (h1, h2):
        for _ in range(4):  # DNS round-robin: both replicas answer in a few requests
            answer = get(edge.address, "/api/greeting")
            assert answer.returncode == 0, (edge.address, answer.stderr)
    assert old not in rotated.output and new not in rotated.output
    assert lab_tools.deploy(cluster["inventory"], "--json", env=cluster["env"]).changes == 0


def replica_versions(cluster) -> dict[str, str]:
    """{node address: the version its api replica answers with, asked inside the replica}."""
    ask = ("node -e \"fetch('http://127.0.0.1:3000/api/health').then(r => r.json())"
           ".then(j => console.log(j.version || 'placeholder'), () => console.log('no answer'))\"")
    versions = {}
    for address in tasks(cluster["hosts"][0])["api"]:
        host = next(h for h in cluster["hosts"] if h.address == address)
        versions[address] = host.ssh(f"docker exec {lab_tools.container('api')} {ask}", user="kono").stdout.strip()
    return versions


def test_kono_deploy_gets_new_code_to_every_api_replica_on_every_node_and_drops_no_request(cluster):
    """The maintainer (db node) publishes a release; each api replica (the app nodes) copies it from
    the releases service and swaps to it without a failed request; kono-deploy returns once every
    replica serves it, or, for a release that fails its health check, once every one is back."""
    h1, h2, h3 = cluster["hosts"]
    git = cluster["git"]
    lab_tools.pin_maintainer_host_key_of(h1, lab_tools.container("maintainer"))
    first = lab_tools.maintainer(h1, "kono-deploy api")
    v1 = git.api_version()
    assert set(replica_versions(cluster).values()) == {v1}, (first.stdout, first.stderr)
    assert len(replica_versions(cluster)) == 2
    git.push_api("cluster-v2")
    loads = [lab_tools.Load(edge.address, paths=("/api/health",), clients=4, seconds=300) for edge in (h1, h2)]
    time.sleep(2)
    second = lab_tools.maintainer(h1, "kono-deploy api")
    # Returned: every replica serves it already, not soon.
    assert replica_versions(cluster) == {h2.address: "cluster-v2", h3.address: "cluster-v2"}, second.stderr
    time.sleep(2)
    results = [load.stop() for load in loads]
    print("kono-deploy on a cluster: " + "; ".join(f"through {e.address}: {r}" for e, r in zip((h1, h2), results)))
    for edge, result in zip((h1, h2), results):
        assert result.requests > 200 and result.stopped_early == 0 and not result.failures, (edge.address, str(result))
    # A release that dies at start: kono-deploy says so and returns once every replica serves v2 again.
    git.push_api("cluster-v3", broken=True)
    try:
        broken = lab_tools.maintainer(h1, "kono-deploy api", check=False)
    finally:
        git.push_api("cluster-v4")  # the session's repository: the next module deploys its newest commit
    assert broken.returncode != 0 and "failed its health check and never took traffic" in broken.stderr, broken.stderr
    assert "every replica serves" in broken.stderr, broken.stderr
    assert set(replica_versions(cluster).values()) == {"cluster-v2"}
    rollback = lab_tools.maintainer(h1, "kono-deploy --rollback api", check=False)
    assert rollback.returncode == 0, rollback.stderr
    assert set(replica_versions(cluster).values()) == {v1}


def test_an_address_pool_declared_after_the_swarm_exists_is_named_not_applied(cluster):
    other = "10.201.0.0/16"
    run = lab_tools.deploy(cluster["inventory"], "--data", f"swarm_address_pool={other}", env=cluster["env"])
    assert f"swarm_address_pool is {other}, but the swarm was created with {POOL}" in run.output, run.output[-3000:]
    h1 = cluster["hosts"][0]
    pool = json.loads(h1.ssh("docker info -f '{{json .Swarm.Cluster.DefaultAddrPool}}'", user="kono").stdout)
    assert pool == [POOL]


def test_overlay_encryption_on_a_kernel_without_ipsec_is_refused_before_the_cluster_changes(cluster):
    """swarm_overlay_encryption's default is on; this lab's kernel has no ESP, as a real cloud kernel
    has: each node says so, naming the knob, and nothing of the stack changes."""
    h1 = cluster["hosts"][0]
    services = "docker service ls -q | xargs docker service inspect -f '{{.Spec.Name}} {{.Version.Index}}'"
    before = h1.ssh(services, user="kono").stdout
    run = lab_tools.deploy(cluster["inventory"], "--data", "swarm_overlay_encryption=True", env=cluster["env"], check=False)
    assert run.returncode != 0
    for host in cluster["hosts"]:
        assert re.search(rf"\[{re.escape(host.address)}\].*swarm_overlay_encryption: expected this node's kernel to "
                         r"have IPsec ESP for encrypted overlay networks, but it has no esp4", run.output), run.output[-3000:]
    assert h1.ssh(services, user="kono").stdout == before
    assert sorted(h1.ssh("docker network ls --filter label=com.docker.stack.namespace=kono --format '{{.Name}}'",
                         user="kono").stdout.split()) == ["kono_default", "kono_edge"]
    assert drift(cluster["inventory"]).returncode == 0  # the inventory's (off) is what runs


def test_the_swarm_ports_are_open_between_nodes_and_closed_to_any_other_address(cluster):
    h1, h2, _ = cluster["hosts"]
    # This machine is on the hosts' network but no cluster node: closed.
    for port in (MANAGER_PORT, GOSSIP_PORT):
        assert not reachable(h1.address, port), port
    # A node reaches the manager on both.
    for port in (MANAGER_PORT, GOSSIP_PORT):
        probe = h2.ssh(f"timeout 3 bash -c '</dev/tcp/{h1.address}/{port}'", user="kono", check=False)
        assert probe.returncode == 0, (port, probe.stderr)


def drift(inventory) -> subprocess.CompletedProcess:
    return lab_tools.drift(inventory, timeout=600)  # a dead node's connection attempts take their time


def test_a_missing_replica_is_drift_and_the_next_deploy_brings_it_back(cluster):
    """A service the swarm cannot place (here: a constraint added by hand) runs fewer tasks than
    declared: status and drift say so and exit 1; a deploy puts the declared service back."""
    h1 = cluster["hosts"][0]
    inventory = cluster["inventory"]
    h1.ssh("docker service update --detach --constraint-add node.labels.kono.nowhere==true kono_maintainer",
           user="kono")
    seen = wait_for_status(inventory, lambda s: "maintainer     tasks 0/1" in s.stdout, 60)
    assert seen.returncode == 1 and "maintainer     tasks 0/1" in seen.stdout, seen.stdout
    found = drift(inventory)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "service maintainer runs 0 of 1 tasks" in found.stdout, found.stdout
    lab_tools.deploy(inventory, env=cluster["env"])
    assert lab_tools.status(inventory).returncode == 0
    assert lab_tools.deploy(inventory, "--json", env=cluster["env"]).changes == 0


def team_messages(receiver) -> list[str]:
    """What the team's webhook got, in order: each message's title and text ("[FIRING] NodeDown on
    <db node>: Swarm node <address> is down (as <db node> sees it).")."""
    return [f"{a['title']}: {a.get('text', '').strip()}" for _, body in receiver.posts("team")
            for a in body.get("attachments", [])]


def wait_for_team(receiver, title: str, about: str, seconds: float) -> float:
    """Seconds until a message with this title and ``about`` in its text came; fails with what came."""
    start = time.monotonic()
    while not any(m.startswith(title) and about in m for m in team_messages(receiver)):
        if time.monotonic() - start > seconds:
            raise AssertionError(f"no {title!r} about {about!r} within {seconds} s; the webhook got: "
                                 f"{team_messages(receiver)}")
        time.sleep(2)
    return time.monotonic() - start


def prometheus_targets(host) -> dict[str, str]:
    """{instance: health} of Prometheus's node job, as its API on the db node lists them."""
    listed = host.ssh(f"docker exec {lab_tools.container('prometheus')} wget -q -O - "
                      "http://127.0.0.1:9090/api/v1/targets", user="kono", check=False).stdout
    try:
        active = json.loads(listed)["data"]["activeTargets"]
    except (ValueError, KeyError):
        return {}
    return {t["labels"]["instance"]: t["health"] for t in active if t["labels"].get("job") == "node"}


def test_monitoring_on_a_cluster_tells_the_team_of_each_dead_node_and_of_an_api_with_nowhere_to_run(cluster):
    """#28 on a cluster. Monitoring turned on converges in one deploy: node_exporter on every node,
    the metrics service, Prometheus and Alertmanager on the db node; the next deploy changes nothing.
    Prometheus reads every node (named by its address); without metrics_allowed_cidrs no node
    publishes metrics_port. Both app nodes lose their power: the team's webhook is told NodeDown for
    each, then, once the api has had no node to run on for 5 minutes, ServiceBelowReplicas; status
    names the firing alerts. Powered on, each alert is told resolved, once. Monitoring turned off: its
    services leave the swarm."""
    hosts = cluster["hosts"]
    h1, h2, h3 = hosts
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(lambda host: lab_tools.load_images(host, monitoring=True), hosts))
    secrets_dir = cluster["work"] / "secrets" / "alerts"
    secrets_dir.mkdir(exist_ok=True)
    with lab_tools.WebhookReceiver(h1.lab) as receiver:
        (secrets_dir / "webhook_url").write_text(receiver.url("team") + "\n")
        monitored = write_cluster_inventory(h1.lab, hosts, cluster["work"] / "monitored.py", cluster["shape"],
                                            {**cluster["data"], "monitoring": True, "alert_webhook": True})
        outputs = [("deploy -vvv", lab_tools.deploy(monitored, "-vvv", env=cluster["env"]).output)]
        assert lab_tools.deploy(monitored, "--json", env=cluster["env"]).changes == 0
        placed = tasks(h1)
        assert sorted(placed["node_exporter"]) == sorted(h.address for h in hosts), placed
        for name in ("metrics", "prometheus", "alertmanager"):
            assert placed[name] == [h1.address], (name, placed)
        every_node = {h.address: "up" for h in hosts}
        seen = wait_for(lambda: prometheus_targets(h1), lambda found: found == every_node, 120)
        assert seen == every_node, seen
        port = lab_tools.settings_of().metrics_port
        for host in hosts:  # no metrics_allowed_cidrs: published nowhere (Prometheus reads the overlay)
            assert not reachable(host.address, port), host.address
        quiet = wait_for_status(monitored, lambda s: "alerts         none firing ok" in s.stdout, 120)
        assert quiet.returncode == 0 and "alerts         none firing ok" in quiet.stdout, quiet.stdout
        assert team_messages(receiver) == []
        cut = time.monotonic()
        h2.power_cut()
        h3.power_cut()
        try:
            told = {host.address: wait_for_team(receiver, f"[FIRING] NodeDown on {h1.address}",
                                                f"Swarm node {host.address} is down", 300) for host in (h2, h3)}
            wait_for_team(receiver, f"[FIRING] ServiceBelowReplicas on {h1.address}",
                          "api runs fewer tasks than declared", 600 - (time.monotonic() - cut))
            print(f"dead app nodes: NodeDown told {max(told.values()):.0f} s, ServiceBelowReplicas "
                  f"{time.monotonic() - cut:.0f} s after the power cut")
            shown = lab_tools.status(monitored)
            assert shown.returncode == 1, shown.stdout
            for about in ("alert          NodeDown: Swarm node ", "alert          ServiceBelowReplicas: api "):
                assert f"{h1.address}  {about}" in shown.stdout, shown.stdout
        finally:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda host: host.power_on(), (h2, h3)))
        back = time.monotonic()
        for about in (f"Swarm node {h2.address} is down", f"Swarm node {h3.address} is down"):
            wait_for_team(receiver, f"[RESOLVED] NodeDown on {h1.address}", about, 300)
        wait_for_team(receiver, f"[RESOLVED] ServiceBelowReplicas on {h1.address}", "api runs fewer", 300)
        print(f"resolved {time.monotonic() - back:.0f} s after the power came back")
        time.sleep(60)  # nothing told twice (Alertmanager's group interval)
        messages = team_messages(receiver)
        assert sorted(m.split(":")[0] for m in messages) == sorted(
            [f"[FIRING] NodeDown on {h1.address}"] * 2 + [f"[RESOLVED] NodeDown on {h1.address}"] * 2
            + [f"[FIRING] ServiceBelowReplicas on {h1.address}", f"[RESOLVED] ServiceBelowReplicas on {h1.address}"]), \
            messages
        # The webhook's URL (a swarm secret here) is in no output, message, container or tracked file.
        seen = [*outputs, ("the webhook's messages", repr([body for _, _, body in receiver.received])),
                *[(f"{where} on {host.address}", text) for host in hosts for where, text in
                  lab_tools.containers_and_git(host)]]
        assert [where for where, text in seen if receiver.token in text] == [], "the webhook's token is shown"
    # Off again, in one deploy: the monitoring services leave the swarm; the cluster is as before.
    lab_tools.deploy(cluster["inventory"], env=cluster["env"])
    assert not {"node_exporter", "metrics", "prometheus", "alertmanager"} & set(tasks(h1))
    assert wait_for_status(cluster["inventory"], lambda s: s.returncode == 0, 180).returncode == 0


def three_managers(cluster):
    """The cluster redeclared with three managers (a majority survives one's death), the app label
    moved from h2 to h1 (h3 keeps it): (its inventory, its shape)."""
    h1, h2, h3 = cluster["hosts"]
    shape = {h1.address: ("manager", ["db", "edge", "app"]), h2.address: ("manager", ["edge"]),
             h3.address: ("manager", ["app"])}
    return write_cluster_inventory(h1.lab, cluster["hosts"], cluster["work"] / "three-managers.py", shape,
                                   cluster["data"]), shape


def test_labels_and_roles_follow_the_inventory_in_one_deploy_then_stay(cluster):
    """Three managers and the app label moved from h2 to h1: one deploy converges, the api's copies
    one on each app node (the swarm moves h2's to a node with the label, maybe beside its twin on h3,
    and the deploy spreads them again), and the next deploy changes nothing."""
    h1, h2, h3 = cluster["hosts"]
    inventory, shape = three_managers(cluster)
    lab_tools.deploy(inventory, env=cluster["env"])
    members = nodes(h1)
    for address, (role, labels) in shape.items():
        node = node_of(h1, members, address)
        assert node["role"] == role, node
        assert {k for k in node["labels"] if k.startswith("kono.")} == {f"kono.{label}" for label in labels}, node
    assert sum(1 for n in members if n["manager"]) == 3
    assert sorted(tasks(h1)["api"]) == sorted([h1.address, h3.address]), task_history(h1, "api")
    assert lab_tools.deploy(inventory, "--json", env=cluster["env"]).changes == 0


def wait_for(what, done, seconds: float):
    """Poll ``what()`` every 2 s until ``done`` holds for it or ``seconds`` pass: the last value."""
    end = time.monotonic() + seconds
    while True:
        value = what()
        if done(value) or time.monotonic() > end:
            return value
        time.sleep(2)


def wait_for_status(inventory, done, seconds: float) -> subprocess.CompletedProcess:
    return wait_for(lambda: lab_tools.status(inventory), done, seconds)


def api_line(host, running: int, desired: int) -> str:
    return f"{host.address}  api            tasks {running}/{desired}"


def test_an_app_node_dies_under_load_the_service_stays_and_the_node_rejoins_by_itself(cluster):
    """Three managers: with one dead, the two left are a majority and the swarm still answers. h3, an
    app node, loses its power while clients load both edges: every GET is answered (a request its
    api replica took is passed by nginx to the other one), the swarm runs the lost replica elsewhere
    within 60 s, status and drift name the dead node; powered on, it rejoins with no step of ours,
    and a deploy spreads the api's copies over both app nodes again. Then the db node dies: status names it and the services pinned to it, which run again once it is back."""
    h1, h2, h3 = cluster["hosts"]
    inventory, _ = three_managers(cluster)
    lab_tools.deploy(inventory, env=cluster["env"])  # converged already when the module ran in order
    spread = sorted([h1.address, h3.address])
    assert sorted(tasks(h1)["api"]) == spread, task_history(h1, "api")
    before = lab_tools.status(inventory)
    assert before.returncode == 0, before.stdout + before.stderr
    for host in (h1, h2, h3):
        assert f"node {host.address:<20} ready active manager" in before.stdout, before.stdout
    # Each client waits longer than nginx does for an answer (api_answer_timeout, then the next replica).
    answer = lab_tools.settings_of().api_answer_timeout + 15
    loads = [lab_tools.Load(edge.address, paths=("/api/health",), clients=4, seconds=300, timeout=answer)
             for edge in (h1, h2)]
    time.sleep(3)
    cut = time.monotonic()
    h3.power_cut()  # no shutdown: the others notice missed heartbeats
    after = wait_for_status(inventory, lambda s: f"node {h3.address:<20} down" in s.stdout
                            and api_line(h1, 2, 2) in s.stdout, 120)
    back_to_two = time.monotonic() - cut
    time.sleep(3)  # and answered after it too
    results = [load.stop() for load in loads]
    print(f"node loss: api back to 2 replicas {back_to_two:.0f} s after the power cut; "
          + "; ".join(f"through {edge.address}: {result}" for edge, result in zip((h1, h2), results)))
    for edge, result in zip((h1, h2), results):
        assert result.requests > 500 and result.stopped_early == 0, (edge.address, str(result))
        assert not result.failures, (edge.address, str(result))
    assert api_line(h1, 2, 2) in after.stdout, after.stdout
    assert back_to_two <= 60, f"the api ran 2 replicas again {back_to_two:.0f} s after the node died"
    assert sorted(tasks(h1)["api"]) == [h1.address, h1.address]
    assert after.returncode == 1, after.stdout
    assert f"{h3.address}: unreachable" in after.stdout
    assert f"node {h3.address:<20} down active manager NOT OK" in after.stdout, after.stdout
    for host in (h1, h2):
        assert f"node {host.address:<20} ready active manager" in after.stdout, after.stdout
    found = drift(inventory)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"node {h3.address} ({h3.address}) is down" in found.stdout, found.stdout
    assert f"[{h3.address}] unreachable: Could not connect" in found.stdout, found.stdout
    # Back: Docker starts at boot and the node takes its place again, with no step of ours.
    h3.power_on()
    back = wait_for_status(inventory, lambda s: s.returncode == 0, 90)
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"node {h3.address:<20} ready active manager" in back.stdout, back.stdout
    # It runs no api copy: the swarm never moves a task back. Drift says the api crowds h1; a deploy
    # spreads it again, saying so first, with no request dropped meanwhile; the next changes nothing.
    crowded = drift(inventory)
    assert crowded.returncode == 1, crowded.stdout + crowded.stderr
    finding = next((line for line in crowded.stdout.splitlines() if "service api runs its copies unevenly: " in line), "")
    assert f"2 on {h1.name}" in finding and f"0 on {h3.name}" in finding, crowded.stdout
    loads = [lab_tools.Load(edge.address, paths=("/api/health",), clients=4, seconds=300, timeout=answer)
             for edge in (h1, h2)]
    time.sleep(3)
    spread_again = lab_tools.deploy(inventory, env=cluster["env"])
    time.sleep(3)
    results = [load.stop() for load in loads]
    print("api spread again: " + "; ".join(f"through {edge.address}: {result}" for edge, result in zip((h1, h2), results)))
    assert "the api's copies crowd a node: one more starts on the emptiest node" in spread_again.output
    assert sorted(tasks(h1)["api"]) == spread, task_history(h1, "api")
    for edge, result in zip((h1, h2), results):
        assert result.requests > 200 and result.stopped_early == 0 and not result.failures, (edge.address, str(result))
    assert lab_tools.deploy(inventory, "--json", env=cluster["env"]).changes == 0
    # The db node dies: what it runs cannot move (its volumes are there; failover is later work).
    # Status says so plainly, as another manager sees the swarm.
    h1.power_cut()
    pinned = ("db_production", "db_dev", "maintainer", "releases")
    dead = wait_for_status(inventory, lambda s: f"node {h1.address:<20} down" in s.stdout
                           and f"{h2.address}  db_production  tasks 0/1" in s.stdout, 90)
    assert dead.returncode == 1, dead.stdout
    assert f"{h1.address}: unreachable" in dead.stdout
    assert f"{h2.address}  node {h1.address:<20} down active manager NOT OK" in dead.stdout, dead.stdout
    for service in pinned:
        assert re.search(rf"{re.escape(h2.address)}  {service} +tasks 0/1 +NOT OK", dead.stdout), dead.stdout
    h1.power_on()
    again = wait_for_status(inventory, lambda s: s.returncode == 0, 180)
    assert again.returncode == 0, again.stdout + again.stderr
    for service in pinned:
        assert re.search(rf"{re.escape(h1.address)}  {service} +tasks 1/1 +ok", again.stdout), again.stdout


def test_a_node_the_inventory_drops_is_named_then_drained_and_removed_when_the_operator_says_so(cluster):
    h1, h2, h3 = cluster["hosts"]
    lab_tools.deploy(cluster["inventory"], env=cluster["env"])  # the module's first shape: h3 a worker
    without = write_cluster_inventory(h1.lab, [h1, h2], cluster["work"] / "without-h3.py",
                                      {h1.address: ("manager", ["db", "edge"]), h2.address: ("worker", ["app", "edge"])},
                                      cluster["data"])
    named = lab_tools.deploy(without, env=cluster["env"])
    assert f"({h3.address}) is in the swarm but not in the inventory" in named.output, named.output[-3000:]
    assert len(nodes(h1)) == 3  # named, not touched
    removed = lab_tools.deploy(without, "--data", "swarm_remove_strays=True", env=cluster["env"])
    told = "drained (its tasks move first), then removed; switch it off now"
    assert told in removed.output, removed.output[-3000:]
    members = nodes(h1)
    assert len(members) == 2 and h3.address not in {n["address"] for n in members}, members
    assert lab_tools.deploy(without, "--json", env=cluster["env"]).changes == 0
    # Then, as README says, the operator switches it off. Left on (as this module once did), it still
    # counted itself a member: in one run, api containers it started after its removal were in the
    # api's name on every edge and took requests; the requests that hung 30 s through an edge (CI)
    # came only in runs that left it on. Off, each edge's nginx finds only the api's running replicas
    # on the nodes that stay.
    h3.stop()
    api_name_is_only_the_running_replicas((h1, h2))


def api_name_is_only_the_running_replicas(nodes_left) -> None:
    """The api's name, as each edge's nginx resolves it (where it passes requests), holds the
    addresses of the api's running containers on ``nodes_left`` alone, within 2 minutes (a node that
    died or left drops out once the others notice)."""
    live = {address for node in nodes_left for address in node.ssh(
        f"for c in $({commands.running_containers(lab_tools.DEFAULTS['compose_project'], 'api')}); do "
        "docker inspect -f '{{range .NetworkSettings.Networks}}{{println .IPAddress}}{{end}}' $c; done",
        user="kono").stdout.split()}

    def resolved(edge) -> set[str]:
        return set(edge.ssh(f"docker exec {edge_nginx(edge)} getent ahostsv4 api | cut -d' ' -f1",
                            user="kono").stdout.split())
    edges = [node for node in nodes_left if edge_nginx(node)]
    found = {edge.address: wait_for(lambda: resolved(edge), lambda names: names <= live, 120) for edge in edges}
    assert edges and all(names and names <= live for names in found.values()), (found, live)


# -- The db node lost, then HTTPS and the web app at every edge (the cluster as the tests above leave it) --

DOMAIN = "kono.test"


def edges_only(cluster, path, **data):
    """The cluster as it stands after the tests above (h1 a manager labelled db and edge, h2 a worker
    labelled app and edge; h3 a worker labelled app while still a member, as when run alone); with
    ``data`` over the module's knobs."""
    h1, h2, h3 = cluster["hosts"]
    shape = {h1.address: ("manager", ["db", "edge"]), h2.address: ("worker", ["app", "edge"])}
    members = [h1, h2]
    if any(n["address"] == h3.address for n in nodes(h1)):
        shape[h3.address] = ("worker", ["app"])
        members.append(h3)
    return write_cluster_inventory(h1.lab, members, cluster["work"] / path, shape, {**cluster["data"], **data})


def edge_nginx(edge) -> str:
    """The id of the nginx task's container on an edge node."""
    return edge.ssh(f"echo {lab_tools.container('nginx')}", user="kono").stdout.strip()


def https_loads(edges, context) -> list:
    return [lab_tools.Load(edge.address, paths=("/healthz", "/api/health"), clients=4, seconds=300, port=443,
                           tls=(context, DOMAIN)) for edge in edges]


def stopped(loads, edges) -> list:
    results = [load.stop() for load in loads]
    for edge, result in zip(edges, results):
        assert result.requests > 100 and result.stopped_early == 0, (edge.address, str(result))
        assert not result.failures, (edge.address, str(result), nginx_errors(edge))
    return results


def nginx_errors(edge) -> str:
    """The edge nginx's requests that took a second or more (with the upstream each went to) and its
    last error-log lines: which hop held or failed a request (a failure's clue)."""
    def read(name: str) -> list[str]:
        return edge.ssh(f"docker exec {edge_nginx(edge)} cat /var/log/nginx/{name}", user="kono",
                        check=False).stdout.splitlines()
    slow = [line for line in read("access.log") if re.search(r" rt=(?!0\.)", line)]
    return "\n".join(["requests of 1 s or more:", *slow[-20:], "errors:", *read("error.log")[-40:]])


def test_the_db_nodes_power_cut_under_writes_loses_at_most_the_pitr_limit_restored_on_a_brand_new_host(cluster):
    """Point-in-time recovery on a cluster: db_production takes a commit every 100 ms on the db node
    until its power is cut (its init killed: no shutdown); a brand-new host restores the cluster's
    repository to its latest point. Lost are at most the commits of the last pitr_max_lag_seconds;
    every row from before the writes is back, in both databases. Then the db node is powered on, and
    the cluster is whole again for the tests after this one."""
    h1 = cluster["hosts"][0]
    limit = lab_tools.DEFAULTS["pitr_max_lag_seconds"]
    lab = h1.lab
    # The replacement, booted and bootstrapped first, so nothing else runs while the node takes writes.
    b = lab.boot()
    cut = False
    try:
        replacement = lab_tools.write_inventory(lab, [b], cluster["work"] / "replacement.py", **cluster["data"])
        lab_tools.bootstrap(replacement)
        lab_tools.load_images(b)
        lab_tools.root_sql(h1, "CREATE TABLE IF NOT EXISTS orders (id INT PRIMARY KEY, at DATETIME(6) NOT NULL, "
                               "client_at DOUBLE NOT NULL);")
        # The base: a backup now (db_dev comes back as of it; db_production, as of its binary logs).
        h1.ssh(f"docker exec {lab_tools.container('backup')} {lab_tools.BACKUP_SCRIPT} backup", user="kono")
        kept = {"greetings": lab_tools.root_sql(h1, "SELECT id, message FROM greetings ORDER BY id;"),
                "drill": lab_tools.root_sql(h1, "SELECT n FROM drill ORDER BY n;", server="db_dev", database="dev")}
        assert kept["greetings"].strip() and kept["drill"].strip(), kept
        earlier = set(map(int, lab_tools.root_sql(h1, "SELECT id FROM orders;").split()))
        writer = lab_tools.Writer(h1)
        started = time.time()
        # A random moment late enough that the base alone would lose more than the limit.
        time.sleep(limit + 15 + random.uniform(0, 20))
        killed_at = time.time()
        h1.power_cut()
        cut = True
        acked = writer.stop(host_alive=False)

        lab_tools.deploy(replacement, env=cluster["env"])
        restored = lab_tools.backup_tool("restore-repository", str(replacement))
        assert restored.returncode == 0, restored.stdout + restored.stderr
        rows = set(map(int, lab_tools.root_sql(b, "SELECT id FROM orders;").split()))
        assert acked and earlier <= rows, "rows from before the writes are missing"
        lost = [(n, at) for n, at in acked if n not in rows]
        assert all(n > max(rows) for n, _ in lost), "a row before the newest restored one is missing"
        loss = killed_at - min(at for _, at in lost) if lost else 0.0
        print(f"\ndb node killed {killed_at - started:.0f} s into the writes: {len(lost)} of {len(acked)} "
              f"acknowledged rows lost, {loss:.1f} s of commits (limit {limit} s)")
        assert loss <= limit
        assert lab_tools.root_sql(b, "SELECT id, message FROM greetings ORDER BY id;") == kept["greetings"]
        assert lab_tools.root_sql(b, "SELECT n FROM drill ORDER BY n;", server="db_dev", database="dev") == kept["drill"]
    finally:
        b.stop()  # before the db node is back: one host ships to the repository at a time
        if cut:
            h1.power_on()
    back = wait_for_status(edges_only(cluster, "after-the-drill.py"), lambda s: s.returncode == 0, 180)
    assert back.returncode == 0, back.stdout + back.stderr
    # Whole as users see it: each edge answers the api 100 times in a row. Status counts tasks, not
    # the path between nodes, and once (CI) the test after this one saw requests through the node
    # that came back fail or hang (502, 504, 30 s) for half a minute and once more a minute later.
    healed = {}
    for edge in cluster["hosts"][:2]:
        start, in_a_row = time.monotonic(), 0
        while in_a_row < 100:
            assert time.monotonic() - start < 240, f"{edge.address} still fails /api/health 240 s after status said ok"
            in_a_row = in_a_row + 1 if get(edge.address, "/api/health").returncode == 0 else 0
            time.sleep(0.1)
        healed[edge.address] = time.monotonic() - start
    print("after the power came back and status said ok, 100 answers in a row took "
          + ", ".join(f"{seconds:.0f} s through {address}" for address, seconds in healed.items()))
    members = {h1.address} | {node["address"] for node in nodes(h1)}  # (a manager's own Addr may be 0.0.0.0)
    api_name_is_only_the_running_replicas([host for host in cluster["hosts"] if host.address in members])


def test_https_from_acme_reaches_every_edge_and_renews_under_load_with_no_restart(cluster):
    """The CA's HTTP-01 check asks h2, an edge that is not the db node: its nginx passes the challenge
    to the db node's origin service, where the acme service wrote it. One deploy: both edges serve the
    certificate (its key crossed only the edge network, which no other service joins; it appears in no
    output). A forced renewal on the db node reaches both edges under HTTPS load: no failed request,
    no nginx restarted."""
    from tests.test_https import handshake, tls_context, wait_for_serial
    h1, h2, _ = cluster["hosts"]
    edges = (h1, h2)
    with lab_tools.AcmeServer(h1.lab, points_to=h2.address) as pebble:
        inventory = edges_only(cluster, "https-acme.py", https="acme", domains=[DOMAIN], acme_email="ops@kono.test",
                               acme_directory_url=pebble.directory_url, acme_ca_bundle=str(pebble.ca_bundle))
        first = lab_tools.deploy(inventory, "-vvv", env=cluster["env"])
        context = tls_context(pebble.root())
        served = {edge.address: handshake(edge.address, context)["serial"] for edge in edges}
        assert len(set(served.values())) == 1, served  # the one certificate, at each edge
        # The CA asked h2, which passed the challenge to the origin on h1.
        logs = h2.ssh(f"docker logs {edge_nginx(h2)} 2>&1", user="kono").stdout
        assert re.search(r'"GET /.well-known/acme-challenge/\S+ HTTP/1.1" 200', logs), logs[-2000:]
        key = h1.ssh(f"docker exec {lab_tools.container('origin')} cat /etc/nginx/tls/private_key",
                     user="kono").stdout
        body = [line for line in key.splitlines() if line and not line.startswith("-----")]
        assert body and not [line for line in body if line in first.output]
        # Only the edges' nginx reach the origin: an api replica cannot even resolve its name.
        api = next(edge for edge in edges if edge.ssh(f"echo {lab_tools.container('api')}", user="kono").stdout.strip())
        assert api.ssh(f"docker exec {lab_tools.container('api')} getent hosts origin", user="kono",
                       check=False).returncode != 0
        assert h2.ssh(f"docker exec {edge_nginx(h2)} getent hosts origin", user="kono", check=False).returncode == 0
        assert lab_tools.deploy(inventory, "--json", env=cluster["env"]).changes == 0
        shown = lab_tools.status(inventory)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        for edge in edges:
            assert re.search(rf"^{re.escape(edge.address)}  certificate +{DOMAIN} issuer .*Pebble.* ok$",
                             shown.stdout, re.MULTILINE), shown.stdout

        containers = {edge.address: edge_nginx(edge) for edge in edges}
        before = served[h1.address]
        loads = https_loads(edges, context)
        time.sleep(2)
        h1.ssh(f"docker exec {lab_tools.container('acme')} sh {script('acme')} renew 100000", user="kono")
        renewed = {edge.address: wait_for_serial(edge.address, context, before) for edge in edges}
        time.sleep(2)
        results = stopped(loads, edges)
        print("renewal on a cluster: " + "; ".join(f"through {e.address}: {r}" for e, r in zip(edges, results)))
        assert len(set(renewed.values())) == 1, renewed
        assert {edge.address: edge_nginx(edge) for edge in edges} == containers  # reloaded, never restarted


def test_a_provided_certificate_reaches_every_edge_and_a_new_one_too_with_no_restart(cluster, tmp_path):
    """The operator's pair goes to the db node only; each edge copies it from the origin. A new pair
    deployed under HTTPS load reaches both edges: no failed request, no nginx restarted."""
    from tests.test_https import handshake, tls_context, wait_for_serial
    h1, h2, _ = cluster["hosts"]
    edges = (h1, h2)
    folder = cluster["work"] / "secrets" / "tls"
    folder.mkdir(parents=True, exist_ok=True)
    ca = lab_tools.make_certificate(tmp_path / "ca", [], days=365, ca=True)
    context = tls_context((tmp_path / "ca.pem").read_text())

    def provide(name: str) -> str:
        lab_tools.make_certificate(tmp_path / name, [DOMAIN], issuer=ca, days=90)
        (folder / "certificate").write_bytes((tmp_path / f"{name}.pem").read_bytes())
        (folder / "private_key").write_bytes((tmp_path / f"{name}.key").read_bytes())
        return (tmp_path / f"{name}.key").read_text()

    def verified(edge) -> str:  # the serial, once the edge serves a certificate of ``ca`` (a few seconds)
        try:
            return handshake(edge.address, context)["serial"]
        except ssl.SSLError:
            return ""

    keys = [provide("first")]
    inventory = edges_only(cluster, "https-provided.py", https="provided", domains=[DOMAIN])
    outputs = [lab_tools.deploy(inventory, "-vvv", env=cluster["env"]).output]
    # An edge that served the module's ACME certificate copies the new pair within seconds (a first
    # one, the deploy waits for).
    served = {edge.address: wait_for(lambda: verified(edge), bool, 30) for edge in edges}
    assert len(set(served.values())) == 1, served
    containers = {edge.address: edge_nginx(edge) for edge in edges}
    keys.append(provide("second"))
    loads = https_loads(edges, context)
    time.sleep(2)
    outputs.append(lab_tools.deploy(inventory, "-vvv", env=cluster["env"]).output)
    renewed = {edge.address: wait_for_serial(edge.address, context, served[h1.address]) for edge in edges}
    time.sleep(2)
    stopped(loads, edges)
    assert len(set(renewed.values())) == 1, renewed
    assert {edge.address: edge_nginx(edge) for edge in edges} == containers
    lines = {line for key in keys for line in key.splitlines() if line and not line.startswith("-----")}
    assert lines and not [line for line in lines for output in outputs if line in output]


def test_the_web_app_is_served_at_every_edge_and_a_new_release_reaches_each_at_once(cluster):
    """The app lives on the db node (the maintainer's kono-deploy builds it there); every edge serves
    it through the origin, so a new release is served by each as soon as kono-deploy returns."""
    h1, h2, _ = cluster["hosts"]
    edges = (h1, h2)
    lab_tools.deploy(edges_only(cluster, "app.py"), env=cluster["env"])  # plain HTTP again
    version = f"edge release {secrets.token_hex(4)}"
    # The sample app is the session's (test_code_updates expects its v1 text): a line added, then taken out.
    cluster["git"].commit("app", version, edit=("index.html", "</body>", f"<p>{version}</p></body>"), push=True)
    try:
        lab_tools.maintainer(h1, "kono-deploy app")
    finally:
        cluster["git"].commit("app", "as before", edit=("index.html", f"<p>{version}</p></body>", "</body>"), push=True)
    for edge in edges:
        answer = get(edge.address, "/")
        assert answer.returncode == 0 and version in answer.stdout, (edge.address, answer.stdout, answer.stderr)
    # And the uploaded assets.
    lab_tools.maintainer(h1, f"echo '{version}' > /srv/static/edge.txt")
    for edge in edges:
        assert get(edge.address, "/static/edge.txt").stdout.strip() == version, edge.address

