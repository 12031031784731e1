# The hosts kono-infra manages. Replace the example with your servers.
#
# Each host is a name (its DNS name or address) with optional data; any knob from
# group_data/all.py can be set here per host. Deploy connects as `deploy_user` (default kono);
# bootstrap connects as the cloud image's admin user:  pyinfra inventory.py bootstrap.py --user ubuntu
#
# Host keys are checked strictly against ./known_hosts (group_data/all.py; README.md, "Host keys").

kono_hosts = [
    (
        "kono.example.com",
        {
            "admin_user": "ubuntu",                    # "admin" on Debian AMIs
            "deploy_authorized_keys": [
                # "ssh-ed25519 AAAA... you@laptop",
            ],
        },
    ),
]
