# Bootstrap: the only step that uses sudo. Connect as the cloud image's admin user:
#     pyinfra inventory.py bootstrap.py --user ubuntu      (admin on Debian)
from pyinfra import host, inventory

from kono.cluster import inventory_cluster
from kono.deploy_user import deploy_user
from kono.docker_engine import docker_engine
from kono.hardening import firewall, host_settings, host_ssh, security_updates
from kono.settings import load

settings = load(host.data, host.name)
cluster = inventory_cluster(settings, inventory)  # engine = "swarm": the firewall lets the other nodes in

docker_engine(settings, _sudo=True)
deploy_user(settings, _sudo=True)
# sshd changes only after the deploy user's keys are in place, and after checks that nobody is locked out.
host_ssh(settings, _sudo=True)
firewall(settings, cluster, _sudo=True)
security_updates(settings, _sudo=True)
host_settings(settings, _sudo=True)
