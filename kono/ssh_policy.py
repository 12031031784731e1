"""The SSH policy, one table for both sshds: the host's (kono/hardening.py writes it at bootstrap) and
the maintainer container's (kono/stack.py hands it over at deploy). Plain data and pure functions:
a deploy imports this without bootstrap's operations.

Example::

    maintainer_sshd_policy()   # "Key value" lines for the maintainer's entrypoint
"""

from __future__ import annotations

from pyinfra.api.exceptions import PyinfraError

# Modern algorithms only, best first (ssh-audit's policy for OpenSSH 9.x/10): each list is cut to what
# the sshd in question supports (`ssh -Q`), so one table serves Debian 13's OpenSSH 10, Ubuntu 24.04's
# 9.6 and the maintainer image. pyinfra's paramiko needs one of each: curve25519-sha256@libssh.org,
# aes*-gcm/ctr, hmac-sha2-*-etm, ssh-ed25519/rsa-sha2-*.
SSH_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "KexAlgorithms": ("mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
                      "curve25519-sha256", "curve25519-sha256@libssh.org", "diffie-hellman-group18-sha512",
                      "diffie-hellman-group16-sha512"),
    "Ciphers": ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
                "aes256-ctr", "aes192-ctr", "aes128-ctr"),
    "MACs": ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com"),
    "HostKeyAlgorithms": ("ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com", "sk-ssh-ed25519@openssh.com",
                          "sk-ssh-ed25519-cert-v01@openssh.com", "rsa-sha2-512", "rsa-sha2-512-cert-v01@openssh.com",
                          "rsa-sha2-256", "rsa-sha2-256-cert-v01@openssh.com"),
}
# `ssh -Q <this>` lists what the local OpenSSH supports for each directive.
SSH_QUERY = {"KexAlgorithms": "kex", "Ciphers": "cipher", "MACs": "mac", "HostKeyAlgorithms": "HostKeyAlgorithms"}

# Settings both sshds get (host and maintainer). On the host, forwarding stays "local" (client to
# server only): the dev database through `ssh -L` (README), and the docker SDK over SSH, which reaches
# the deploy user's docker socket as a forwarded unix socket. The maintainer forwards nothing.
SSH_COMMON = (
    ("PermitRootLogin", "no"),
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("PubkeyAuthentication", "yes"),
    ("AuthenticationMethods", "publickey"),
    ("PermitEmptyPasswords", "no"),
    ("PermitUserEnvironment", "no"),
    ("MaxAuthTries", "3"),
    ("LoginGraceTime", "30"),
    ("MaxStartups", "10:30:60"),
    ("ClientAliveInterval", "300"),
    ("ClientAliveCountMax", "2"),
    ("TCPKeepAlive", "no"),
    ("X11Forwarding", "no"),
    ("AllowAgentForwarding", "no"),
    ("PermitTunnel", "no"),
    ("GatewayPorts", "no"),
    ("LogLevel", "VERBOSE"),
    ("UseDNS", "no"),
)


def supported_algorithms(query_output: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Each directive's preferred algorithms that the sshd supports (``ssh -Q`` output by directive)."""
    chosen = {}
    for directive, preferred in SSH_ALGORITHMS.items():
        offered = set(query_output.get(directive, "").split())
        chosen[directive] = tuple(name for name in preferred if name in offered)
        if not chosen[directive]:
            raise PyinfraError(f"sshd supports none of the algorithms kono-infra allows for {directive} "
                               f"({', '.join(preferred)}): OpenSSH is too old")
    return chosen


def maintainer_sshd_policy() -> str:
    """The maintainer's sshd settings, "Key value" lines; its entrypoint cuts each algorithm list to what
    the image's OpenSSH supports (files/maintainer/entrypoint.sh). No forwarding of any kind there."""
    lines = [f"{key} {value}" for key, value in SSH_COMMON] + ["AllowTcpForwarding no",
                                                              "AllowStreamLocalForwarding no"]
    lines += [f"{directive} {','.join(names)}" for directive, names in SSH_ALGORITHMS.items()]
    return "\n".join(lines)
