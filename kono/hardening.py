"""The host's own hardening (bootstrap, with sudo): SSH, firewall, unattended security updates,
kernel network settings. Each file is built by a pure function below; the deploy reads a fact,
compares, and changes only what differs.

Example::

    host_ssh(settings, _sudo=True)
    firewall(settings, _sudo=True)
    security_updates(settings, _sudo=True)
    host_settings(settings, _sudo=True)
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.api.exceptions import PyinfraError
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import Sha256File
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import apt, files, server, systemd

from kono import commands
from kono.cluster import SWARM_PORTS, Cluster
from kono.docker_engine import APT_LOCK_WAIT
from kono.host_state import Read, read
from kono.plan import drift
from kono.root_files import private_paths, root_files
from kono.settings import Settings
from kono.ssh_policy import SSH_COMMON, SSH_QUERY, supported_algorithms

SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-kono.conf"  # sshd keeps the first value it reads: 00 comes first
FIREWALL_FILE = "/etc/kono/firewall.nft"
FIREWALL_UNIT = "kono-firewall"
HOST_SSH_PORT = 22

def host_sshd_config(settings: Settings, algorithms: dict[str, tuple[str, ...]]) -> str:
    lines = ["# Written by kono-infra (bootstrap; kono/hardening.py). sshd keeps the first value it reads,",
             "# and this file is read before the main config and cloud-init's drop-in.",
             f"AllowUsers {settings.admin_user} {settings.deploy_user}",
             "AllowTcpForwarding local", "AllowStreamLocalForwarding local"]
    lines += [f"{key} {value}" for key, value in SSH_COMMON]
    lines += [f"{directive} {','.join(names)}" for directive, names in algorithms.items()]
    return "\n".join(lines) + "\n"


class SshAlgorithms(FactBase):
    """What the host's OpenSSH supports, by sshd_config directive: {directive: "name name ..."}."""

    def command(self) -> str:
        return commands.ssh_algorithms(SSH_QUERY)

    def process(self, output: list[str]) -> dict[str, str]:
        found, directive = {}, None
        for line in output:
            if line.startswith("## "):
                directive = line[3:].strip()
            elif directive:
                found[directive] = line
        return found


class SshSession(FactBase):
    """The user and client address of the SSH session pyinfra runs on: "user address"."""

    def command(self) -> str:
        return commands.ssh_session()

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else ""


class AuthorizedKeyCount(FactBase):
    """How many keys ``ssh-keygen`` accepts in a user's authorized_keys (0 when none or unreadable)."""

    def command(self, user: str) -> str:
        return commands.authorized_key_count(user)

    def process(self, output: list[str]) -> int:
        return int(output[0].strip() or 0) if output else 0


def _login_method() -> str | None:
    """How pyinfra's own SSH connection to this host logged in ("publickey", "password", ...), as
    paramiko recorded it; None when it cannot tell."""
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client else None
    return getattr(getattr(transport, "auth_handler", None), "auth_method", None)


def check_no_lockout(settings: Settings, session: str, admin_keys: int, login_method: str | None) -> None:
    """Refuse, before sshd or the firewall change, anything that would lock the operator out."""
    user, _, address = session.partition(" ")
    if login_method not in (None, "publickey"):
        raise PyinfraError(f"bootstrap logged in as {user!r} by {login_method}, not a key; sshd is about to "
                           f"allow keys only: log in with your key (ssh_key) and run it again")
    if user != settings.admin_user:
        raise PyinfraError(f"admin_user: bootstrap runs as {user!r}, but admin_user is {settings.admin_user!r}; "
                           f"sshd would allow only {settings.admin_user!r} and {settings.deploy_user!r}: set "
                           f"admin_user to the user you bootstrap as")
    if admin_keys < 1:
        raise PyinfraError(f"admin_user: {user!r} has no valid key in ~/.ssh/authorized_keys; sshd is about to "
                           f"allow keys only, so bootstrap stops here")
    if address and not in_cidrs(address, settings.host_ssh_allowed_cidrs):
        raise PyinfraError(f"host_ssh_allowed_cidrs: expected to include this connection's address {address} "
                           f"(the firewall would cut it off), got {list(settings.host_ssh_allowed_cidrs)!r}")


def in_cidrs(address: str, cidrs: tuple[str, ...]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(cidr) for cidr in cidrs)


@deploy("Host SSH: keys only, named users, modern algorithms")
def host_ssh(settings: Settings) -> None:
    session = host.get_fact(SshSession, _sudo=False)
    check_no_lockout(settings, session, host.get_fact(AuthorizedKeyCount, user=settings.admin_user, _sudo=False),
                     _login_method())
    config = host_sshd_config(settings, supported_algorithms(host.get_fact(SshAlgorithms)))
    if host.get_fact(Sha256File, path=SSHD_DROP_IN) == _sha256(config):
        return
    staged = SSHD_DROP_IN + ".new"  # not *.conf: sshd's Include does not read it
    root_files(name=f"Stage {SSHD_DROP_IN}", files={staged: config})
    server.shell(name="Check the new sshd configuration (sshd -t) and put it in place, or keep the old one",
                 commands=[commands.install_checked_sshd_config(staged, SSHD_DROP_IN,
                                                       (settings.admin_user, settings.deploy_user))])
    systemd.service(name="Reload sshd (open sessions stay)", service="ssh", reloaded=True)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _split(values: tuple[str, ...], parse=ipaddress.ip_network) -> tuple[list[str], list[str]]:
    """IPv4 and IPv6 networks (or, with ``parse=ipaddress.ip_address``, addresses), apart."""
    parsed = [parse(value) for value in values]
    return ([str(p) for p in parsed if p.version == 4], [str(p) for p in parsed if p.version == 6])


def _set(name: str, family: str, elements: list[str]) -> str:
    listed = f" elements = {{ {', '.join(elements)} }};" if elements else ""
    return f"    set {name} {{ type {family}_addr; flags interval;{listed} }}"


ESP_PROTOCOL = 50  # IPsec ESP's IP protocol number (IANA); a number: nft needs no /etc/protocols for it


def _swarm_rules(cluster: Cluster | None) -> tuple[list[str], list[str]]:
    """The sets of a cluster's nodes and the rules that let them (only) reach each other's swarm ports."""
    if cluster is None:
        return [], []
    v4, v6 = _split(cluster.addresses, ipaddress.ip_address)
    sets = [_set("swarm_nodes_v4", "ipv4", v4), _set("swarm_nodes_v6", "ipv6", v6)]
    rules = [f"        {proto} dport {{ {', '.join(str(p) for p in numbers)} }} {family} saddr @swarm_nodes_{version} "
             f"accept comment \"swarm, from cluster nodes\""
             for proto, numbers in SWARM_PORTS.items() for family, version in (("ip", "v4"), ("ip6", "v6"))]
    # An encrypted overlay's VXLAN travels inside IPsec ESP (IP protocol 50), which has no port.
    rules += [f"        meta l4proto {ESP_PROTOCOL} {family} saddr @swarm_nodes_{version} accept "
              f"comment \"swarm encrypted overlay (IPsec ESP), from cluster nodes\""
              for family, version in (("ip", "v4"), ("ip6", "v6"))]
    return sets, rules


def firewall_ruleset(settings: Settings, cluster: Cluster | None = None) -> str:
    """The nftables table ``inet kono``. It replaces only itself (never `flush ruleset`: that would wipe
    Docker's rules). Host ports: SSH from host_ssh_allowed_cidrs; nothing else. Published container ports
    are DNAT-ed and forwarded, never seen by the input hook, so the forward hook lets through only
    HTTP(S) and the maintainer's port (from maintainer_allowed_cidrs) and drops every other DNAT-ed
    connection from outside. New connections to the maintainer's SSH are rate-limited per source (the
    host's own SSH has fail2ban, which counts failed logins only). A cluster's node also lets in the
    swarm's ports from the cluster's nodes alone."""
    swarm_sets, swarm_rules = _swarm_rules(cluster)
    ssh4, ssh6 = _split(settings.host_ssh_allowed_cidrs)
    maint4, maint6 = _split(settings.maintainer_allowed_cidrs)
    metrics4, metrics6 = _split(settings.metrics_allowed_cidrs)
    # HTTPS is a deploy setting: its port is open whatever it is now (nothing is published there
    # while it is off), so turning it on needs no bootstrap.
    web_ports = f"{settings.http_port}, {settings.https_port}"
    mport = settings.maintainer_ssh_port
    rate = f"limit rate over {settings.maintainer_connections_per_minute}/minute burst {settings.maintainer_connections_per_minute} packets"
    return "\n".join([
        "#!/usr/sbin/nft -f",
        "# Written by kono-infra (bootstrap; kono/hardening.py). Replaces the table inet kono, nothing else.",
        "table inet kono {}",
        "delete table inet kono",
        "table inet kono {",
        _set("ssh_sources_v4", "ipv4", ssh4),
        _set("ssh_sources_v6", "ipv6", ssh6),
        _set("maintainer_sources_v4", "ipv4", maint4),
        _set("maintainer_sources_v6", "ipv6", maint6),
        _set("metrics_sources_v4", "ipv4", metrics4),
        _set("metrics_sources_v6", "ipv6", metrics6),
        "    set maintainer_flood_v4 { type ipv4_addr; flags dynamic; timeout 5m; }",
        "    set maintainer_flood_v6 { type ipv6_addr; flags dynamic; timeout 5m; }",
        *swarm_sets,
        "",
        "    chain input {",
        "        type filter hook input priority filter - 10; policy drop;",
        "        ct state established,related accept",
        "        ct state invalid drop",
        "        iifname \"lo\" accept",
        "        meta l4proto { icmp, ipv6-icmp } accept",
        "        udp dport 68 accept comment \"DHCP client\"",
        f"        tcp dport {HOST_SSH_PORT} ip saddr @ssh_sources_v4 accept",
        f"        tcp dport {HOST_SSH_PORT} ip6 saddr @ssh_sources_v6 accept",
        *swarm_rules,
        "    }",
        "",
        "    chain forward {",
        "        type filter hook forward priority filter - 10; policy accept;",
        "        ct state established,related accept",
        "        ct status dnat iifname { \"docker0\" } accept comment \"from containers\"",
        "        ct status dnat iifname \"br-*\" accept comment \"from containers\"",
        f"        ct status dnat ct state new meta l4proto tcp ct original proto-dst {mport} "
        f"update @maintainer_flood_v4 {{ ip saddr {rate} }} drop",
        f"        ct status dnat ct state new meta l4proto tcp ct original proto-dst {mport} "
        f"update @maintainer_flood_v6 {{ ip6 saddr {rate} }} drop",
        f"        ct status dnat meta l4proto tcp ct original proto-dst {{ {web_ports} }} accept",
        f"        ct status dnat meta l4proto tcp ct original proto-dst {mport} ip saddr @maintainer_sources_v4 accept",
        f"        ct status dnat meta l4proto tcp ct original proto-dst {mport} ip6 saddr @maintainer_sources_v6 accept",
        f"        ct status dnat meta l4proto tcp ct original proto-dst {settings.metrics_port} ip saddr @metrics_sources_v4 "
        "accept comment \"metrics, from metrics_allowed_cidrs\"",
        f"        ct status dnat meta l4proto tcp ct original proto-dst {settings.metrics_port} ip6 saddr @metrics_sources_v6 "
        "accept comment \"metrics, from metrics_allowed_cidrs\"",
        "        ct status dnat drop comment \"a published port kono-infra does not open\"",
        "    }",
        "}",
        "",
    ])


# The lines of ``firewall_ruleset`` that let published ports in (the deploy reads them back).
OPEN_WEB_PORTS = re.compile(r"ct original proto-dst \{ ([0-9, ]+) \} accept$")
OPEN_MAINTAINER_PORT = re.compile(r"ct original proto-dst ([0-9]+) ip saddr @maintainer_sources_v4 accept$")
# The metrics port is open when its sources are some: the set's line names them.
OPEN_METRICS_PORT = re.compile(r"ct original proto-dst ([0-9]+) ip6? saddr @metrics_sources_v[46] accept ")
METRICS_SOURCES = re.compile(r"set metrics_sources_v[46] \{ [^}]*elements = ")


def firewall_open_ports(ruleset: str) -> set[int] | None:
    """The published ports a ruleset written by ``firewall_ruleset`` lets in; None for no ruleset."""
    ports: set[int] = set()
    metrics_open = bool(METRICS_SOURCES.search(ruleset))
    for line in ruleset.splitlines():
        opened = OPEN_METRICS_PORT.search(line.strip())
        if opened and metrics_open:
            ports.add(int(opened.group(1)))
        web, maintainer = OPEN_WEB_PORTS.search(line.strip()), OPEN_MAINTAINER_PORT.search(line.strip())
        if web:
            ports.update(int(port) for port in web.group(1).split(","))
        if maintainer:
            ports.add(int(maintainer.group(1)))
    return ports if ruleset.strip() else None


def published_ports(settings: Settings) -> dict[str, int]:
    """{knob: port} of what the stack publishes on every address of the host with these settings."""
    return {"http_port": settings.http_port, "maintainer_ssh_port": settings.maintainer_ssh_port,
            **({"https_port": settings.https_port} if settings.https_on else {}),
            **({"metrics_port": settings.metrics_port} if settings.monitoring and settings.metrics_allowed_cidrs else {})}


class FirewallRules(FactBase):
    """The firewall file bootstrap wrote (public: ports and address ranges), or "" without one."""

    @staticmethod
    def default() -> str:
        return ""

    def command(self) -> str:
        return commands.file_text(FIREWALL_FILE)

    def process(self, output: list[str]) -> str:
        return "\n".join(output)


def firewall_reads(settings: Settings) -> list[Read]:
    return [(FirewallRules, {})] if settings.firewall else []


SWARM_NODES_SET = re.compile(r"set swarm_nodes_v[46] \{[^}]*?elements = \{ ([^}]*) \}")


def firewall_swarm_nodes(ruleset: str) -> set[str]:
    """The cluster nodes a ruleset written by ``firewall_ruleset`` lets reach the swarm's ports."""
    return {address.strip() for match in SWARM_NODES_SET.finditer(ruleset) for address in match.group(1).split(",")}


@operation()
def ports_open_in_firewall(ports: dict[str, int], swarm_nodes: tuple[str, ...] = ()):
    """
    Fail, before anything changes, when the host's firewall (written by bootstrap, which the deploy
    cannot change without sudo) does not let in a port the stack is to publish, or does not let a
    node of the cluster reach the swarm's ports.

    + ports: {knob: port} the stack publishes
    + swarm_nodes: the addresses of the cluster's nodes (none without a cluster)

    **Example:**

    .. code:: python

        ports_open_in_firewall(name="Published ports open", ports={"http_port": 80})
    """
    rules = read(FirewallRules)
    open_ports = firewall_open_ports(rules)
    closed = {knob: port for knob, port in ports.items() if open_ports is not None and port not in open_ports}
    shut_out = sorted(set(swarm_nodes) - firewall_swarm_nodes(rules)) if open_ports is not None else []
    if closed or shut_out:
        problems = [f"{knob}: expected a port the host's firewall opens "
                    f"({', '.join(str(p) for p in sorted(open_ports))}), {port} is closed there"
                    for knob, port in closed.items()]
        if shut_out:
            problems.append(f"engine: expected the host's firewall to let the cluster's nodes reach the swarm's "
                            f"ports, it shuts out {', '.join(shut_out)}")
        message = "; ".join(problems) + ". Run bootstrap.py with the same inventory first (it opens them), then deploy.py"
        drift(message)
        yield commands.fail(message)
        return
    host.noop("the firewall lets in every port the stack publishes" + (" and the cluster's nodes" if swarm_nodes else ""))


def check_firewall(settings: Settings, cluster: Cluster | None = None) -> None:
    """Before anything changes: the firewall bootstrap wrote lets in what the stack publishes (on a
    cluster, wherever the swarm puts a service's task) and, in a cluster, the other nodes."""
    if settings.firewall:
        ports_open_in_firewall(name="The firewall lets in every port the stack publishes (and the cluster's nodes)",
                               ports=published_ports(settings),
                               swarm_nodes=cluster.addresses if cluster else ())


FIREWALL_SERVICE = f"""\
# Written by kono-infra (bootstrap). Loads only the table inet kono; stopping removes only it
# (Debian's nftables.service would `flush ruleset`, Docker's rules included: not used).
[Unit]
Description=kono-infra firewall (nftables table inet kono)
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {FIREWALL_FILE}
ExecReload=/usr/sbin/nft -f {FIREWALL_FILE}
ExecStop=/usr/sbin/nft delete table inet kono

[Install]
WantedBy=multi-user.target
"""


@deploy("Firewall: SSH, HTTP(S) and the maintainer port only (and the swarm's ports between cluster nodes)")
def firewall(settings: Settings, cluster: Cluster | None = None) -> None:
    if not settings.firewall:
        return
    apt.packages(name="nftables (the nft command)", packages=["nftables"], extra_install_args=APT_LOCK_WAIT)
    rules = root_files(name=f"Firewall rules {FIREWALL_FILE} and {FIREWALL_UNIT}.service",
                       files={FIREWALL_FILE: firewall_ruleset(settings, cluster),
                              f"/etc/systemd/system/{FIREWALL_UNIT}.service": FIREWALL_SERVICE})
    systemd.service(name="Firewall loaded, and at boot", service=FIREWALL_UNIT, running=True, enabled=True,
                    reloaded=rules.will_change, daemon_reload=rules.will_change)


AUTO_UPGRADES = """\
// Written by kono-infra (bootstrap): refresh the lists and apply security updates every day.
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
APT::Periodic::AutocleanInterval "7";
"""


def unattended_upgrades_config(settings: Settings) -> str:
    return ("// Written by kono-infra (bootstrap). The origins are the distribution's (security updates);\n"
            "// Docker's own repository is not among them: Docker is upgraded deliberately.\n"
            f"Unattended-Upgrade::Automatic-Reboot \"{str(settings.auto_reboot).lower()}\";\n"
            f"Unattended-Upgrade::Automatic-Reboot-Time \"{settings.auto_reboot_time}\";\n"
            "Unattended-Upgrade::Remove-Unused-Dependencies \"true\";\n")


class AptSuites(FactBase):
    """Every suite named in the host's apt sources (one-line and deb822 formats)."""

    def command(self) -> str:
        return commands.apt_suites()

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


@deploy("Security updates, unattended")
def security_updates(settings: Settings) -> None:
    meta = host.get_fact(LinuxDistribution)["release_meta"]
    codename = meta.get("VERSION_CODENAME") or ""
    added = False
    if (meta.get("ID") or "").lower() == "debian" and f"{codename}-security" not in host.get_fact(AptSuites):
        apt.sources_file(name=f"Debian's security repository ({codename}-security)", filename="debian-security",
                         uris=[settings.debian_security_url], suites=[f"{codename}-security"],
                         components=["main"], signed_by="/usr/share/keyrings/debian-archive-keyring.gpg")
        apt.update(name="Update apt lists (security repository added)")
        added = True
    packages = ["unattended-upgrades", "apt-listchanges"]
    if any(p not in host.get_fact(DebPackages) for p in packages):
        apt.packages(name="unattended-upgrades", packages=packages, extra_install_args=APT_LOCK_WAIT)
    root_files(name="Daily security updates, automatic reboot after them (auto_reboot)",
               files={"/etc/apt/apt.conf.d/20auto-upgrades": AUTO_UPGRADES,
                      "/etc/apt/apt.conf.d/52kono-unattended-upgrades": unattended_upgrades_config(settings)})
    pending = host.get_fact(PendingSecurityUpdates)
    if added or pending:
        # A security update of docker.io restarts dockerd: containers keep running (live-restore).
        server.shell(name=f"Apply pending security updates now ({pending or 'lists just added'}; a Docker "
                          f"update restarts dockerd, containers keep running)",
                     commands=[commands.apply_security_updates()])


class PendingSecurityUpdates(FactBase):
    """How many packages the security suites would upgrade now (as of the host's apt lists)."""

    def command(self) -> str:
        return commands.pending_security_updates()

    def process(self, output: list[str]) -> int:
        return int(output[0].strip() or 0) if output else 0


# Kernel network settings (net.* only: the rest of the kernel is the cloud image's business). Not
# here on purpose: net.ipv4.conf.all.forwarding=0 (Docker routes containers' traffic).
NETWORK_SYSCTLS = {
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.default.accept_source_route": "0",
    "net.ipv4.conf.all.log_martians": "1",
    "net.ipv4.conf.default.log_martians": "1",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
    "net.ipv4.icmp_ignore_bogus_error_responses": "1",
    "net.ipv4.tcp_syncookies": "1",
}
SYSCTL_FILE = "/etc/sysctl.d/60-kono-network.conf"
# Protocols and storage a cloud server never uses (modprobe loads none of them on request).
UNUSED_MODULES = ("dccp", "sctp", "rds", "tipc", "usb-storage", "firewire-core")
# lynis counts these words in a banner; this one says what a login banner should.
BANNER = "Authorized access only. This system is private and monitored; unauthorized use is prohibited " \
         "under the owner's policy.\n"
# Host tools: package checksums (weekly), patch status, activity accounting,
# password quality for any password ever set, and fail2ban for SSH (OpenSSH 9.6 on Ubuntu 24.04 has
# no PerSourcePenalties). Not here: apt-listbugs (fails every install when Debian's bug tracker is
# unreachable), libpam-tmpdir (its per-user TMPDIR under sudo breaks pyinfra's uploads), auditd
# and AIDE (README, "Hardening").
HOST_PACKAGES = ("debsums", "apt-show-versions", "sysstat", "acct", "libpam-pwquality",
                 "fail2ban", "python3-systemd")
FAIL2BAN_JAIL = f"""\
# Written by kono-infra (bootstrap). Three failed logins in ten minutes ban the source for an hour
# (in a nftables table of fail2ban's own). Logins are by key, so a wrong key counts (publickey=any;
# a login that then succeeds forgets its attempts). The whole ssh unit is read: OpenSSH 9.8+ logs as
# sshd-session. The maintainer's port is throttled by the firewall instead.
[sshd]
enabled = true
backend = systemd
journalmatch = _SYSTEMD_UNIT=ssh.service
filter = sshd[publickey=any]
port = {HOST_SSH_PORT}
maxretry = 3
findtime = 10m
bantime = 1h
"""
SHELL_PROFILE = """\
# Written by kono-infra (bootstrap): no core dumps (they can hold secrets); idle shells end after 15 min.
ulimit -c 0
TMOUT=900
readonly TMOUT
export TMOUT
"""
COREDUMP = "# Written by kono-infra (bootstrap).\n[Coredump]\nStorage=none\nProcessSizeMax=0\n"
CORE_LIMITS = "# Written by kono-infra (bootstrap).\n* hard core 0\n"
# For any password ever set (logins are by key); the rounds apply where ENCRYPT_METHOD is SHA512.
LOGIN_DEFS = {"PASS_MAX_DAYS": "365", "PASS_MIN_DAYS": "1", "SHA_CRYPT_MIN_ROUNDS": "65536",
              "SHA_CRYPT_MAX_ROUNDS": "65536"}
PRIVATE_DIRS = ("/etc/cron.d", "/etc/cron.daily", "/etc/cron.hourly", "/etc/cron.weekly", "/etc/cron.monthly",
                "/etc/cron.yearly")
PRIVATE_FILES = {"/etc/crontab": "0600", "/etc/ssh/sshd_config": "0600"}


def sysctl_config() -> str:
    return "# Written by kono-infra (bootstrap).\n" + "".join(f"{k} = {v}\n" for k, v in NETWORK_SYSCTLS.items())


def modprobe_config() -> str:
    return "# Written by kono-infra (bootstrap).\n" + "".join(f"install {m} /bin/false\n" for m in UNUSED_MODULES)


@deploy("Host settings: network sysctls, no core dumps, fail2ban, audit tools, banners")
def host_settings(settings: Settings) -> None:
    installed = host.get_fact(DebPackages)
    if any(package not in installed for package in HOST_PACKAGES):
        apt.packages(name=f"Install {', '.join(HOST_PACKAGES)}", packages=list(HOST_PACKAGES),
                     extra_install_args=APT_LOCK_WAIT)
    sysctls = root_files(name=f"Network settings {SYSCTL_FILE}", files={SYSCTL_FILE: sysctl_config()})
    server.shell(name="Apply the network settings", commands=[commands.apply_sysctl(SYSCTL_FILE)],
                 _if=sysctls.did_change)
    root_files(name="Unused kernel modules never loaded, no core dumps, idle shells end, login banners",
               files={"/etc/modprobe.d/kono-unused.conf": modprobe_config(),
                      "/etc/systemd/coredump.conf.d/kono.conf": COREDUMP,
                      "/etc/security/limits.d/kono-no-core.conf": CORE_LIMITS,
                      "/etc/profile.d/kono-hardening.sh": SHELL_PROFILE,
                      "/etc/issue": BANNER, "/etc/issue.net": BANNER})
    for key, value in LOGIN_DEFS.items():
        files.line(name=f"login.defs {key} {value}", path="/etc/login.defs", line=f"^{key}\\s.*",
                   replace=f"{key}\t{value}")
    files.line(name="debsums checks packages weekly", path="/etc/default/debsums", line="^CRON_CHECK=.*",
               replace="CRON_CHECK=weekly")
    sysstat = files.line(name="sysstat collects", path="/etc/default/sysstat", line="^ENABLED=.*",
                         replace='ENABLED="true"')
    # Its start writes a boot record under sadc's lock (-L) on the day's file; a collection by
    # sysstat-collect.timer at that moment fails it (a fresh host's bootstrap, rarely: seen twice).
    systemd.service(name="sysstat running", service="sysstat", running=True, enabled=True,
                    restarted=sysstat.will_change, _retries=2, _retry_delay=5)
    jail = root_files(name="fail2ban: SSH jail", files={"/etc/fail2ban/jail.local": FAIL2BAN_JAIL})
    systemd.service(name="fail2ban running", service="fail2ban", running=True, enabled=True,
                    restarted=jail.will_change)
    private_paths(name="cron's folders 0700, /etc/crontab and /etc/ssh/sshd_config 0600", dirs=PRIVATE_DIRS,
                  files=PRIVATE_FILES)
