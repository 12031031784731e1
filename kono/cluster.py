"""The cluster: with ``engine = "swarm"`` the inventory's swarm hosts form one Docker Swarm.

The shape is read from the whole inventory and checked before anything runs (``cluster_of``): 1 or 3
managers, one db node, an edge and an app node, one address each. A deploy then makes it so, in
three operations that pyinfra runs in order, each on every host before the next:

1. ``swarm_founded``: the first manager (in inventory order) inits the swarm when it is in none;
2. ``swarm_joined``: every other host joins it, one at a time (managers join the raft one by one);
   the join token goes from the first manager's reads to the joining host in this run's memory and
   reaches the host as a 0600 file that the Engine API reads and that is removed at once: never on
   a command line, never printed;
3. ``swarm_nodes``: the first manager gives each node the labels and role the inventory declares,
   and names any node the inventory does not (it stays until the operator removes it).

A second deploy reads each host's swarm state with its other reads and changes nothing.

Example::

    cluster = inventory_cluster(settings, inventory)  # None with engine = "compose"
    form_cluster(settings, cluster, host.name)
"""

from __future__ import annotations

import io
import ipaddress
import json
import posixpath
from dataclasses import dataclass
from shlex import quote
from typing import Iterable

from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation
from pyinfra.api.exceptions import OperationError

from kono import commands, host_state
from kono.host_state import Read, read
from kono.plan import drift
from kono.services import SERVICES, enabled
from kono.settings import NODE_LABEL_PREFIX, NODE_LABELS, Settings, SettingsError, load

MANAGER_PORT = 2377  # cluster management (tcp)
SWARM_PORTS = {"tcp": (MANAGER_PORT, 7946), "udp": (7946, 4789)}  # + node gossip (both), overlay VXLAN (udp)
MANAGER_COUNTS = (1, 3)  # 3 keep a majority (2 of 3) when one dies; 2 would stop with either
# Knobs the whole cluster shares (each is the swarm's or its overlay network's): one value, or an error.
CLUSTER_WIDE = {"swarm_address_pool": "pool", "swarm_overlay_encryption": "setting"}
JOIN_REQUEST = f"{commands.STATE_DIR}/swarm/join.json"  # under the project directory, removed once read


@dataclass(frozen=True)
class Node:
    """A swarm host of the inventory."""

    name: str  # its inventory name
    address: str  # where the other nodes reach it (swarm_advertise_address)
    role: str  # "manager" or "worker"
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    address_pool: str  # where its overlay networks take their subnets (swarm_address_pool)

    @property
    def founder(self) -> Node:
        """The first manager: it inits the swarm, and sets every node's labels and role."""
        return next(node for node in self.nodes if node.role == "manager")

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(node.address for node in self.nodes)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)


def _address(name: str, settings: Settings) -> str:
    if settings.swarm_advertise_address:
        return settings.swarm_advertise_address
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        raise SettingsError(f"swarm_advertise_address: expected the IP address other nodes reach {name} at "
                            f"(its inventory name is not an address), got None") from None


def _names(nodes: Iterable[Node]) -> str:
    return ", ".join(node.name for node in nodes) or "none"


def cluster_of(hosts: Iterable[tuple[str, Settings]]) -> Cluster | None:
    """The cluster the inventory's ``engine = "swarm"`` hosts form, checked; None without any. Raises
    SettingsError naming the knob and what it expected."""
    hosts = list(hosts)
    nodes = tuple(Node(name, _address(name, settings), settings.swarm_role, settings.swarm_labels)
                  for name, settings in hosts if settings.swarm)
    if not nodes:
        return None
    managers = [node for node in nodes if node.role == "manager"]
    if len(managers) not in MANAGER_COUNTS:
        raise SettingsError(f"swarm_role: expected 1 or 3 managers among the swarm hosts (3 keep a majority "
                            f"when one dies; 2 stop with either), got {len(managers)} ({_names(managers)})")
    for label in NODE_LABELS:
        holders = [node for node in nodes if label in node.labels]
        if label == "db" and len(holders) != 1:
            raise SettingsError(f"swarm_labels: expected exactly one swarm host labelled \"db\" (the databases' "
                                f"volumes live there), got {len(holders)} ({_names(holders)})")
        if not holders:
            raise SettingsError(f"swarm_labels: expected at least one swarm host labelled {label!r}, got none")
    db = next(node for node in nodes if "db" in node.labels)
    if db.role != "manager":
        raise SettingsError(f"swarm_role: expected the db node ({db.name}) to be a manager: the stack is deployed "
                            "from it, where its secrets and volumes are")
    seen: dict[str, str] = {}
    for node in nodes:
        if node.address in seen:
            raise SettingsError(f"swarm_advertise_address: expected an address of {node.name} alone, got "
                                f"{node.address}, which {seen[node.address]} has too")
        seen[node.address] = node.name
    for knob, what in CLUSTER_WIDE.items():
        values = {str(getattr(settings, knob)) for _, settings in hosts if settings.swarm}
        if len(values) != 1:
            raise SettingsError(f"{knob}: expected one {what} for the whole cluster, got {', '.join(sorted(values))}")
    pool = next(settings.swarm_address_pool for _, settings in hosts if settings.swarm)
    # An overlay subnet that holds a node's address makes that node unreachable from the containers.
    inside = [node for node in nodes if ipaddress.ip_address(node.address) in ipaddress.ip_network(pool)]
    if inside:
        raise SettingsError(f"swarm_address_pool: expected a network that holds none of the nodes' addresses "
                            f"(overlay networks take /24s from it), got {pool}, which holds {inside[0].address} "
                            f"({inside[0].name}): choose a private range no node or VPC uses")
    return Cluster(nodes, pool)


def inventory_cluster(settings: Settings, inventory) -> Cluster | None:
    """For a swarm host's deploy: the cluster of the whole inventory (every host's settings checked,
    an error naming the host), limited runs included. None for a host with engine = "compose"."""
    if not settings.swarm:
        return None
    hosts = []
    for other in inventory:
        try:
            hosts.append((other.name, load(other.data, other.name)))
        except SettingsError as error:
            raise SettingsError(f"{other.name}: {error}") from None
    return cluster_of(hosts)


# --- Reading a node's swarm state -------------------------------------------------------------

def swarm_state_command() -> str:
    """Three lines: "info <JSON>" (the Engine API's /info, whose Swarm part says whether and how this
    host is in a swarm), then "swarm <JSON>" (join tokens) and "nodes <JSON>" (the node list), which
    only a manager answers (empty elsewhere)."""
    get = f"curl --silent --fail --unix-socket {commands.DOCKER_SOCKET}"
    return "; ".join(f"printf '{key} '; {get} http://docker/{key} 2>/dev/null; echo"
                     for key in ("info", "swarm", "nodes"))


def _json(text: str):
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def parse_node(node: dict) -> dict:
    """What the cluster operation compares of a node in the Engine API's /nodes list."""
    spec, status = node.get("Spec") or {}, node.get("Status") or {}
    manager = node.get("ManagerStatus") or {}
    return {"id": node.get("ID", ""), "hostname": (node.get("Description") or {}).get("Hostname", ""),
            "role": spec.get("Role", ""), "availability": spec.get("Availability", ""),
            "labels": {k: v for k, v in (spec.get("Labels") or {}).items() if k.startswith(NODE_LABEL_PREFIX)},
            "state": status.get("State", ""), "address": status.get("Addr", ""),
            "manager_address": manager.get("Addr", "").rsplit(":", 1)[0],
            "reachability": manager.get("Reachability", ""), "leader": bool(manager.get("Leader"))}


def parse_swarm_state(lines: list[str]) -> dict:
    """{"state": "inactive" | "pending" | "active" | "error" | "locked" | "" (Docker down), "node_id",
    "cluster_id" (a manager's only), "manager": whether it manages, "managers": the managers' addresses
    it knows, "error", "tokens": {"worker", "manager"} or None, "address_pool": the overlay networks'
    pools, as "10.0.0.0/8" (or "" where unknown: a worker),
    "nodes": [parse_node(...)]} from ``swarm_state_command`` output."""
    parts = {key: rest for key, _, rest in (line.partition(" ") for line in lines)}
    swarm = (_json(parts.get("info", "")) or {}).get("Swarm") or {}
    spec = _json(parts.get("swarm", "")) or {}
    tokens = spec.get("JoinTokens")
    return {"state": swarm.get("LocalNodeState", ""), "node_id": swarm.get("NodeID", ""),
            "cluster_id": (swarm.get("Cluster") or {}).get("ID", ""), "manager": bool(swarm.get("ControlAvailable")),
            "managers": sorted(m.get("Addr", "").rsplit(":", 1)[0] for m in swarm.get("RemoteManagers") or []),
            "error": swarm.get("Error", ""),
            "tokens": {"worker": tokens.get("Worker", ""), "manager": tokens.get("Manager", "")} if tokens else None,
            "address_pool": " ".join(spec.get("DefaultAddrPool") or []),
            "nodes": [parse_node(node) for node in _json(parts.get("nodes", "")) or []]}


class SwarmState(FactBase):
    """This host's part in a swarm, and on a manager the join tokens and the nodes. Read through
    ``kono.host_state`` only: that never prints a read's output (the tokens are in it)."""

    @staticmethod
    def default() -> dict:
        return parse_swarm_state([])

    def command(self) -> str:
        return swarm_state_command()

    def process(self, output: list[str]) -> dict:
        return parse_swarm_state(output)


# What Docker's encrypted overlay networks need of the kernel: IPsec ESP, configured over netlink.
IPSEC_MODULES = ("esp4", "xfrm_user")


def ipsec_command() -> str:
    """A line "<module> yes|no" per IPsec module: loaded, built in, or installed for the running kernel
    (the kernel loads it when Docker first asks). Read as the deploy user: no root needed."""
    modules = '/lib/modules/"$(uname -r)"'
    return (f"for module in {' '.join(IPSEC_MODULES)}; do if grep -q \"^$module \" /proc/modules || "
            f"grep -qs \"/$module\\.ko\" {modules}/modules.builtin {modules}/modules.dep; "
            "then echo \"$module yes\"; else echo \"$module no\"; fi; done")


class KernelIpsec(FactBase):
    """{module: whether this kernel has it} for the IPsec modules encrypted overlays need."""

    @staticmethod
    def default() -> dict:
        return {}

    def command(self) -> str:
        return ipsec_command()

    def process(self, output: list[str]) -> dict:
        return {module: answer == "yes" for module, _, answer in (line.partition(" ") for line in output)
                if module in IPSEC_MODULES}


def cluster_reads(settings: Settings) -> list[Read]:
    if not settings.swarm:
        return []
    return [(SwarmState, {}), *([(KernelIpsec, {})] if settings.swarm_overlay_encryption else [])]


def _state_now() -> dict:
    """Read again, now: after this operation's own change (the declared reads are fresh per operation)."""
    return parse_swarm_state(host_state.run(swarm_state_command()))


def same_swarm(state: dict, founded: dict, founder_address: str) -> bool:
    """Whether a node is in the first manager's swarm: a manager knows the swarm's id; a worker knows
    only its managers' addresses."""
    if state["cluster_id"]:
        return state["cluster_id"] == founded["cluster_id"]
    return founder_address in state["managers"]


def spread_services(settings: Settings) -> dict[str, tuple[str, int]]:
    """{service: (the node label key its placement requires, its copies)} of the services a swarm runs
    as several copies over the nodes with a label (the api over the app nodes): kept evenly spread."""
    return {entry.name: (f"{NODE_LABEL_PREFIX}{entry.runs_on}", getattr(settings, entry.replicas))
            for entry in enabled(SERVICES, settings) if entry.runs_on and entry.replicas not in (None, "global")}


# --- Commands ---------------------------------------------------------------------------------

OVERLAY_SUBNET_BITS = 24  # each overlay network's subnet (Docker's default): 254 containers


def swarm_init(address: str, pool: str) -> str:
    """Init a swarm whose managers talk on ``address`` and whose overlay networks take their subnets
    from ``pool``. Its output (which prints a join token) is dropped."""
    return (f"docker swarm init --advertise-addr {quote(address)} --listen-addr {quote(f'{address}:{MANAGER_PORT}')}"
            f" --default-addr-pool {quote(pool)} --default-addr-pool-mask-length {OVERLAY_SUBNET_BITS} >/dev/null")


def join_request(address: str, manager: str, token: str) -> str:
    """The Engine API's /swarm/join body: join the swarm ``manager`` is in, with this host's address."""
    return json.dumps({"ListenAddr": f"{address}:{MANAGER_PORT}", "AdvertiseAddr": address,
                       "RemoteAddrs": [f"{manager}:{MANAGER_PORT}"], "JoinToken": token})


def swarm_join(request_file: str) -> str:
    """POST the join request in ``request_file`` (the token is in it: never on a command line), remove
    the file whatever happens, and fail with Docker's message (which never holds the token)."""
    return (f"answer=$(curl --silent --show-error --unix-socket {commands.DOCKER_SOCKET} -X POST "
            f"-H 'Content-Type: application/json' --data-binary @{quote(request_file)} "
            f"-w ' %{{http_code}}' http://docker/swarm/join); status=$?; rm -f {quote(request_file)}; "
            "[ $status -eq 0 ] && [ \"${answer##* }\" = 200 ] || "
            "{ echo \"joining the swarm failed: ${answer% *}\" >&2; exit 1; }")


def node_changes(node: Node, found: dict) -> list[str]:
    """The commands (run on a manager) that give a node of the swarm the labels and role declared."""
    wanted = {f"{NODE_LABEL_PREFIX}{label}": "true" for label in node.labels}
    changes = []
    add = [f"{key}={value}" for key, value in sorted(wanted.items()) if found["labels"].get(key) != value]
    remove = sorted(key for key in found["labels"] if key not in wanted)
    if add or remove:
        changes.append(" ".join(["docker node update", *(f"--label-add {quote(a)}" for a in add),
                                 *(f"--label-rm {quote(r)}" for r in remove), quote(found["id"]), ">/dev/null"]))
    if found["role"] != node.role:
        changes.append(promote(found["id"]) if node.role == "manager" else f"docker node demote {quote(found['id'])}")
    return changes


PROMOTION_SECONDS = 60


def promote(node_id: str) -> str:
    """Make a node a manager, and return once it is a reachable member of the managers' raft (the
    majority the swarm needs counts it only then), failing after ``PROMOTION_SECONDS``."""
    reachability = f"docker node inspect -f '{{{{if .ManagerStatus}}}}{{{{.ManagerStatus.Reachability}}}}{{{{end}}}}' {quote(node_id)}"
    return (f"docker node promote {quote(node_id)} >/dev/null && "
            f"for i in $(seq {PROMOTION_SECONDS}); do [ \"$({reachability})\" = reachable ] && exit 0; sleep 1; done; "
            f"echo 'node {node_id} is not a reachable manager {PROMOTION_SECONDS} s after its promotion' >&2; exit 1")


DRAIN_SECONDS = 120  # a drained node's tasks move elsewhere within this, or its removal fails


def remove_node(found: dict) -> str:
    """Take a node out of the swarm: drain it (its tasks start elsewhere first), wait until none runs
    there, demote it if it manages, then remove it from the managers' list. The node itself is not
    reached (the inventory no longer names it): it keeps running until it is switched off."""
    node = quote(found["id"])
    running = f"docker node ps {node} --filter desired-state=running -q"
    return (f"docker node update --availability drain {node} >/dev/null || exit 1; "
            f"for i in $(seq {DRAIN_SECONDS}); do [ -z \"$({running})\" ] && break; sleep 1; done; "
            f"if [ -n \"$({running})\" ]; then echo 'node {found['id']} still runs tasks {DRAIN_SECONDS} s after "
            "it was drained: not removed' >&2; exit 1; fi; "
            + (f"docker node demote {node} >/dev/null && " if found["role"] == "manager" else "")
            + f"docker node rm --force {node} >/dev/null")


def find_node(node: Node, nodes: list[dict], own_id: str, reader: bool) -> dict | None:
    """A node of the inventory in the swarm's node list read on the manager ``reader`` says whether it
    is: itself by its own id, the others by the address they joined from (a manager's advertised one,
    a worker's as the managers see it). Not the first manager by id everywhere: read on another
    manager (the first one dead), that id is the reader's own."""
    for found in nodes:
        if (found["id"] == own_id) if reader else node.address in (found["address"], found["manager_address"]):
            return found
    return None


def matched(cluster: Cluster, state: dict, reader: str) -> tuple[list[tuple[Node, dict | None]], list[dict]]:
    """([(each node of the inventory, its entry in the node list the manager ``reader`` (its inventory
    name) read, or None)], the entries of nodes the inventory does not name)."""
    pairs = [(node, find_node(node, state["nodes"], state["node_id"], node.name == reader))
             for node in cluster.nodes]
    known = {found["id"] for _, found in pairs if found}
    return pairs, [found for found in state["nodes"] if found["id"] not in known]


def node_report(cluster: Cluster, state: dict, reader: str) -> list[tuple[str, str, bool]]:
    """(node, what the manager ``reader`` says of it, ok) for each node of the inventory and each stray
    one: ok is ready and active, in the role declared."""
    pairs, strays = matched(cluster, state, reader)
    report = []
    for node, found in pairs:
        if found is None:
            report.append((node.name, "not in the swarm", False))
            continue
        leader = ", leader" if found["leader"] else ""
        about = f"{found['state']} {found['availability']} {found['role']}{leader}"
        ok = found["state"] == "ready" and found["availability"] == "active" and found["role"] == node.role
        report.append((node.name, about + ("" if found["role"] == node.role else f" (declared {node.role})"), ok))
    return report + [(found["hostname"], f"{found['state']} {found['availability']} {found['role']}, "
                                         "not in the inventory", False) for found in strays]


# --- Operations -------------------------------------------------------------------------------

# This run's hand-over between operations on different hosts (pyinfra runs each operation on every
# host before the next): the first manager's state once founded (with the join tokens), and which
# hosts joined. In memory on the operator's machine only.
_FOUNDED: dict[str, dict] = {}
_JOINED: set[str] = set()


@operation()
def overlay_encryption_possible():
    """
    With swarm_overlay_encryption, before anything of the cluster changes: this node's kernel has
    what Docker's encrypted overlay networks need (IPsec ESP), or a clear error naming the knob.

    **Example:**

    .. code:: python

        overlay_encryption_possible(name="The kernel can encrypt overlay traffic")
    """
    found = read(KernelIpsec)
    missing = [module for module in IPSEC_MODULES if not found.get(module)]
    if missing:
        message = (f"swarm_overlay_encryption: expected this node's kernel to have IPsec ESP for encrypted overlay "
                   f"networks, but it has no {' or '.join(missing)} (neither loaded nor built in nor under "
                   "/lib/modules for the running kernel); use a kernel that has them (Debian's and Ubuntu's cloud "
                   "kernels do), or set swarm_overlay_encryption = False only if the nodes reach each other over a "
                   "private network you trust")
        drift(message)
        yield commands.fail(message)
        return
    host.noop("the kernel has IPsec ESP for encrypted overlay networks")


@operation()
def swarm_founded(address: str, pool: str):
    """
    Init the swarm on this host (the first manager) when it is in none; hand its state, join tokens
    included, to the hosts that join it in this run.

    + address: where the other nodes reach this one
    + pool: where overlay networks take their subnets (Docker fixes it when the swarm is created)

    **Example:**

    .. code:: python

        swarm_founded(name="Swarm initialised", address="10.0.1.5", pool="10.0.0.0/8")
    """
    state = read(SwarmState)
    if state["state"] == "inactive":
        drift("this host (the first manager) is in no swarm")
        yield swarm_init(address, pool)
        state = _state_now() if host.state.is_executing else state
    elif state["state"] != "active" or not state["manager"]:
        what = "a worker" if state["state"] == "active" else f"in the swarm state {state['state'] or 'unknown (is Docker up?)'}"
        message = (f"swarm_role: expected this host, the first manager, to manage its swarm; it is {what}"
                   f"{': ' + state['error'] if state['error'] else ''}")
        drift(message)
        raise OperationError(message)
    else:
        host.noop("the swarm is initialised, and this host manages it")
        if state["address_pool"] != pool:
            # Docker has no way to change it: said on every deploy rather than failing them all.
            message = (f"swarm_address_pool is {pool}, but the swarm was created with {state['address_pool']}: "
                       "Docker sets it only when a swarm is created (README, Cluster)")
            drift(message)
            logger.warning(f"{host.print_prefix}{message}")
    if host.state.is_executing:
        _FOUNDED[host.name] = state


@operation()
def swarm_joined(role: str, address: str, founder: str, founder_address: str, directory: str):
    """
    Join the swarm the first manager founded, as a manager or a worker, when this host is in none.

    + role: "manager" or "worker"
    + address: where the other nodes reach this one
    + founder: the first manager's inventory name; founder_address: its address
    + directory: the project directory (the join request passes through a private file under it)

    **Example:**

    .. code:: python

        swarm_joined(name="In the swarm", role="worker", address="10.0.1.6", founder="10.0.1.5",
                     founder_address="10.0.1.5", directory="/srv/kono")
    """
    state = read(SwarmState)
    founded = _FOUNDED.get(founder)
    if state["state"] == "active":
        if founded and not same_swarm(state, founded, founder_address):
            raise OperationError(f"this host is in another swarm than {founder}'s: leave it first "
                                 "(`docker swarm leave`), then deploy again")
        host.noop("this host is in the swarm")
        return
    if state["state"] != "inactive":
        raise OperationError(f"this host's swarm state is {state['state'] or 'unknown (is Docker up?)'}"
                             f"{': ' + state['error'] if state['error'] else ''}")
    drift(f"this host is in no swarm (it joins {founder}'s as a {role})")
    if host.state.is_executing and not (founded and founded["tokens"]):
        raise OperationError(f"the first manager {founder} handed over no join token in this run: a run "
                             "limited to some hosts must include it (--limit), or its deploy failed")
    # While planning, no token is needed (nor known, when the swarm is founded in this run).
    token = founded["tokens"][role] if host.state.is_executing else ""
    request = posixpath.join(directory, JOIN_REQUEST)
    yield commands.make_private_dirs([posixpath.dirname(request)])
    yield FileUploadCommand(io.BytesIO(join_request(address, founder_address, token).encode()), request)
    yield swarm_join(request)
    if host.state.is_executing:
        _JOINED.add(host.name)


@operation()
def swarm_nodes(cluster: Cluster, remove_strays: bool = False, project: str = "kono",
                spread: dict[str, tuple[str, int]] | None = None, wait_timeout: int = 300):
    """
    Give each node the labels (``kono.<label>=true``) and role the inventory declares; name the swarm's
    nodes that the inventory does not (they keep their tasks until the operator removes them). When
    labels or roles change, the services kept spread are spread again once the swarm has moved what
    the change moves (``commands.respread``: a label that left a node moves its task to a node that
    may already run its twin, and the swarm never moves it back).

    + cluster: the inventory's cluster (``cluster_of``)
    + remove_strays: drain and remove the nodes the inventory does not name, rather than name them
    + project: the stack's name; spread: ``spread_services``; wait_timeout: seconds to wait for each
      of them to run its copies again, and for each copy started to spread them

    **Example:**

    .. code:: python

        swarm_nodes(name="Node labels and roles", cluster=cluster)
    """
    state = read(SwarmState)
    if host.state.is_executing and _JOINED:
        state = _state_now()  # nodes joined in this run: the list read before lacks them
    pairs, strays = matched(cluster, state, cluster.founder.name)  # read here, on the first manager
    changed = False
    for node, found in pairs:
        if found is None:
            drift(f"node {node.name} ({node.address}) is not in the swarm")
            continue
        if found["state"] != "ready":
            drift(f"node {node.name} ({node.address}) is {found['state']}")
        for change in node_changes(node, found):
            drift(f"node {node.name}: labels or role differ from the inventory's")
            changed = True
            yield change
    if changed and spread:
        logger.warning(f"{host.print_prefix}node labels or roles change: where the swarm moves a copy of "
                       f"{', '.join(spread)} beside its twin, the copies are spread again (one more starts first)")
        yield commands.respread(project, spread, wait_timeout)
    for found in strays:
        stray = f"node {found['hostname']} ({found['address']}) is in the swarm but not in the inventory"
        drift(stray)
        if remove_strays:
            logger.warning(f"{host.print_prefix}{stray}: drained (its tasks move first), then removed; switch "
                           "it off now: until then it counts itself a member, and containers it starts join the "
                           "cluster's networks")
            yield remove_node(found)
        else:
            logger.warning(f"{host.print_prefix}{stray}: it keeps its tasks until a deploy with "
                           "swarm_remove_strays = True drains and removes it (README.md, \"Cluster\")")


def holds_stack(settings: Settings) -> bool:
    """Whether this host holds the stack's secrets and brings it up: the single host, or a cluster's
    db node (a manager: it deploys the stack to the swarm; its data and volumes are there). Every
    node of a cluster holds the project's files (what its services mount)."""
    return not settings.swarm or "db" in settings.swarm_labels


def is_edge(settings: Settings) -> bool:
    """Whether this host's nginx serves the users: the single host, or a cluster's edge node."""
    return not settings.swarm or "edge" in settings.swarm_labels


@deploy("Cluster")
def form_cluster(settings: Settings, cluster: Cluster | None, name: str) -> None:
    if cluster is None or not settings.swarm:
        return
    node, founder = cluster.node(name), cluster.founder
    if settings.swarm_overlay_encryption:
        overlay_encryption_possible(name="The kernel can encrypt overlay traffic (IPsec ESP)")
    if node == founder:
        swarm_founded(name="Swarm initialised on the first manager", address=node.address, pool=cluster.address_pool)
    else:
        swarm_joined(name=f"In the swarm, as a {node.role}", role=node.role, address=node.address,
                     founder=founder.name, founder_address=founder.address, directory=settings.project_dir,
                     _serial=True)
    if node == founder:
        swarm_nodes(name="Node labels and roles as the inventory declares", cluster=cluster,
                    remove_strays=settings.swarm_remove_strays, project=settings.compose_project,
                    spread=spread_services(settings), wait_timeout=settings.compose_wait_timeout)
