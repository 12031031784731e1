"""Host and container hardening, as data: the sshd and firewall files, the lockout guard, and the
compose settings every service gets from the table."""

import pytest
from pyinfra.api.exceptions import PyinfraError

from kono.hardening import check_no_lockout, firewall_ruleset, host_sshd_config
from kono.services import SERVICES
from kono.settings import SettingsError
from kono.ssh_policy import SSH_ALGORITHMS, maintainer_sshd_policy, supported_algorithms
from tests.lab import settings_of as settings
from tests.unit.test_services import VARIANTS, rendered



# What Ubuntu 24.04's OpenSSH 9.6 answers to `ssh -Q` (no ML-KEM, no plain sntrup761 name).
OPENSSH_9_6 = {
    "KexAlgorithms": "diffie-hellman-group14-sha256 diffie-hellman-group16-sha512 diffie-hellman-group18-sha512 "
                     "ecdh-sha2-nistp256 curve25519-sha256 curve25519-sha256@libssh.org "
                     "sntrup761x25519-sha512@openssh.com",
    "Ciphers": "aes128-ctr aes192-ctr aes256-ctr aes128-gcm@openssh.com aes256-gcm@openssh.com "
               "chacha20-poly1305@openssh.com 3des-cbc",
    "MACs": "hmac-sha1 hmac-sha2-256 hmac-sha2-256-etm@openssh.com hmac-sha2-512-etm@openssh.com "
            "umac-128-etm@openssh.com",
    "HostKeyAlgorithms": "ssh-ed25519 ecdsa-sha2-nistp256 ssh-rsa rsa-sha2-256 rsa-sha2-512",
}


def test_algorithms_are_cut_to_what_the_sshd_supports_and_keep_paramikos():
    chosen = supported_algorithms(OPENSSH_9_6)
    assert chosen["KexAlgorithms"] == ("sntrup761x25519-sha512@openssh.com", "curve25519-sha256",
                                       "curve25519-sha256@libssh.org", "diffie-hellman-group18-sha512",
                                       "diffie-hellman-group16-sha512")
    assert "3des-cbc" not in chosen["Ciphers"] and "hmac-sha1" not in chosen["MACs"]
    assert chosen["HostKeyAlgorithms"] == ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256")
    # pyinfra's paramiko negotiates these; without one of each, bootstrap would lock itself out.
    for directive, needed in (("KexAlgorithms", "curve25519-sha256@libssh.org"), ("Ciphers", "aes256-gcm@openssh.com"),
                              ("MACs", "hmac-sha2-256-etm@openssh.com"), ("HostKeyAlgorithms", "ssh-ed25519")):
        assert needed in SSH_ALGORITHMS[directive]


def test_an_sshd_with_none_of_the_allowed_algorithms_is_an_error():
    with pytest.raises(PyinfraError, match="MACs"):
        supported_algorithms({**OPENSSH_9_6, "MACs": "hmac-sha1 hmac-md5"})


def test_host_sshd_config_allows_keys_only_for_the_two_users():
    config = host_sshd_config(settings(admin_user="ubuntu"), supported_algorithms(OPENSSH_9_6))
    lines = config.splitlines()
    for line in ("AllowUsers ubuntu kono", "PermitRootLogin no", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "AuthenticationMethods publickey", "MaxAuthTries 3",
                 "AllowTcpForwarding local", "X11Forwarding no"):
        assert line in lines
    assert not any(line.startswith("PerSourcePenalties") for line in lines)  # not in OpenSSH 9.6


def test_the_maintainer_policy_is_the_same_table_without_any_forwarding():
    policy = maintainer_sshd_policy().splitlines()
    assert "AllowTcpForwarding no" in policy and "PasswordAuthentication no" in policy
    assert f"Ciphers {','.join(SSH_ALGORITHMS['Ciphers'])}" in policy
    # Directives newer than Ubuntu 24.04's OpenSSH 9.6 would stop its sshd from starting.
    assert not any(line.split()[0] in ("PerSourcePenalties", "PerSourcePenaltyExemptList", "RefuseConnection")
                   for line in policy)


@pytest.mark.parametrize("session, keys, method, error", [
    ("root 203.0.113.5", 1, "publickey", "admin_user: bootstrap runs as 'root'"),
    ("admin 203.0.113.5", 0, "publickey", "no valid key"),
    ("admin 198.51.100.7", 1, "publickey",
     "host_ssh_allowed_cidrs: expected to include this connection's address 198.51.100.7"),
    ("admin 203.0.113.5", 1, "password", "logged in as 'admin' by password, not a key"),
])
def test_bootstrap_refuses_what_would_lock_the_operator_out(session, keys, method, error):
    s = settings(admin_user="admin", host_ssh_allowed_cidrs=["203.0.113.0/24"])
    with pytest.raises(PyinfraError, match=error):
        check_no_lockout(s, session, keys, method)
    check_no_lockout(s, "admin 203.0.113.5", 1, "publickey")  # the same, right, passes


def test_the_firewall_replaces_only_its_own_table_and_splits_v4_from_v6():
    rules = firewall_ruleset(settings(host_ssh_allowed_cidrs=["203.0.113.0/24", "2001:db8::/32"],
                                      maintainer_allowed_cidrs=["198.51.100.7/32"]))
    assert "flush ruleset" not in rules
    assert rules.index("table inet kono {}") < rules.index("delete table inet kono")
    assert "set ssh_sources_v4 { type ipv4_addr; flags interval; elements = { 203.0.113.0/24 }; }" in rules
    assert "set ssh_sources_v6 { type ipv6_addr; flags interval; elements = { 2001:db8::/32 }; }" in rules
    assert "set maintainer_sources_v6 { type ipv6_addr; flags interval; }" in rules
    assert "policy drop" in rules.split("chain input")[1].split("}")[0]
    forward = rules.split("chain forward")[1]
    assert "ct original proto-dst { 80, 443 } accept" in forward  # 443 too: https is a deploy setting
    assert "ct original proto-dst 8022 ip saddr @maintainer_sources_v4 accept" in forward
    assert forward.index("accept") < forward.index('ct status dnat drop comment')


def test_the_firewall_follows_the_port_knobs():
    rules = firewall_ruleset(settings(http_port=8080, https_port=8443, maintainer_ssh_port=2222))
    assert "ct original proto-dst { 8080, 8443 } accept" in rules
    assert "ct original proto-dst 2222 ip saddr @maintainer_sources_v4 accept" in rules


@pytest.mark.parametrize("key, value, expected", [
    ("host_ssh_allowed_cidrs", ["10.0.0.1/8"], "host_ssh_allowed_cidrs[0]: expected an IPv4 or IPv6 network"),
    ("host_ssh_allowed_cidrs", [], "non-empty list"),
    ("maintainer_allowed_cidrs", ["anywhere"], "maintainer_allowed_cidrs[0]"),
    ("memory_limits", {"web": "1g"}, "memory_limits: expected service names"),
    ("memory_limits", {"api": "lots"}, "memory_limits['api']: expected a size"),
    ("auto_reboot_time", "4am", "auto_reboot_time: expected a time of day"),
    ("maintainer_connections_per_minute", 1, "maintainer_connections_per_minute: expected a whole number >= 5"),
])
def test_bad_hardening_knobs_are_named(key, value, expected):
    with pytest.raises(SettingsError) as error:
        settings(**{key: value})
    assert expected in str(error.value)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_drops_all_capabilities_but_its_own(variant):
    services = rendered(**VARIANTS[variant])["services"]
    for service in SERVICES:
        if service.name not in services:
            continue
        block = services[service.name]
        assert block["cap_drop"] == ["ALL"]
        assert block.get("cap_add", []) == list(service.capabilities)
        assert block["security_opt"] == [f"no-new-privileges:{str(service.no_new_privileges).lower()}"]
        assert block.get("read_only", False) == (service.read_only_tmpfs is not None)
        assert "mem_limit" not in block
    # Only the maintainer may gain privileges (sudo); it and nothing else keeps a writable root.
    assert [s.name for s in SERVICES if not s.no_new_privileges] == ["maintainer"]
    assert [s.name for s in SERVICES if s.read_only_tmpfs is None] == ["maintainer"]


def test_memory_limits_are_set_only_where_asked():
    services = rendered(memory_limits={"db_production": "2g", "api": "512m"})["services"]
    assert services["db_production"]["mem_limit"] == "2g" and services["api"]["mem_limit"] == "512m"
    assert "mem_limit" not in services["nginx"]


@pytest.mark.parametrize("https", ["off", "provided"])
def test_the_deploy_reads_back_the_ports_bootstrap_opened(https):
    from kono.hardening import firewall_open_ports, published_ports
    chosen = settings(http_port=8080, https_port=8443, maintainer_ssh_port=2222, https=https,
                      domains=["kono.example.com"])
    opened = firewall_open_ports(firewall_ruleset(chosen))
    assert opened == {8080, 8443, 2222}  # HTTPS's port is open whether it is on or not
    assert set(published_ports(chosen).values()) <= opened
    assert firewall_open_ports("") is None  # no firewall file: nothing to check against
    other = firewall_open_ports(firewall_ruleset(settings()))
    assert not set(published_ports(chosen).values()) & other  # bootstrapped on the defaults: all closed


def test_the_metrics_port_is_open_to_its_sources_alone_and_only_when_there_are_some():
    from kono.hardening import firewall_open_ports, published_ports
    chosen = settings(monitoring=True, metrics_allowed_cidrs=["192.0.2.0/24", "2001:db8::/32"])
    rules = firewall_ruleset(chosen)
    assert "set metrics_sources_v4 { type ipv4_addr; flags interval; elements = { 192.0.2.0/24 }; }" in rules
    assert ("ct status dnat meta l4proto tcp ct original proto-dst 9100 ip saddr @metrics_sources_v4 accept "
            "comment \"metrics, from metrics_allowed_cidrs\"") in rules
    assert 9100 in firewall_open_ports(rules) and published_ports(chosen)["metrics_port"] == 9100
    tunnel_only = settings(monitoring=True)
    assert 9100 not in firewall_open_ports(firewall_ruleset(tunnel_only))
    assert "metrics_port" not in published_ports(tunnel_only)  # loopback alone: the firewall is not asked
