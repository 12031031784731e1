# Deploy: connects as the deploy user, uses no sudo. Run after bootstrap, as often as you like:
#     pyinfra inventory.py deploy.py
from pyinfra import host, inventory

from kono.alerts import alert_secrets, place_alert_secrets
from kono.backup import backup_reads, backup_secrets, backups, place_backup_secrets
from kono.cluster import cluster_reads, form_cluster, holds_stack, inventory_cluster
from kono.deploy_run import begin_deploy, finish_deploy
from kono.hardening import check_firewall, firewall_reads
from kono.passwords import maintainer_passwords, password_reads, place_passwords
from kono.secrets import place_secrets, secret_reads, supplied_secrets
from kono.settings import check_login, load
from kono.stack import bring_up, push_project, stack_reads
from kono.supplied import check_supplied
from kono.tls import certificates, place_tls, provided_tls, tls_reads

# Everything the operator declared or supplied is checked first: bad input stops here, before any change
# (what needs the host, by check_supplied, as the first step once the deploy holds the lock).
settings = load(host.data, host.name)
check_login(settings, host.data)
cluster = inventory_cluster(settings, inventory)  # engine = "swarm": the inventory's swarm hosts, checked
stack = holds_stack(settings)  # the single host, or a cluster's db node (every node gets the project's files)
supplied = supplied_secrets(settings)
passwords = maintainer_passwords(settings)
provided = provided_tls(settings)
backup = backup_secrets(settings)
alerts = alert_secrets(settings)

# With the deploy lock, one command reads what the steps below compare (kono/host_state.py).
secret_state_reads = [*secret_reads(settings), *password_reads(settings), *backup_reads(settings)] if stack else []
begin_deploy(settings, reads=[*cluster_reads(settings), *secret_state_reads, *tls_reads(settings),
                              *stack_reads(settings), *firewall_reads(settings)])
if stack:
    check_supplied(settings, supplied, passwords, provided, backup, alerts)
check_firewall(settings, cluster)  # ports only bootstrap can open: said before anything changes
form_cluster(settings, cluster, host.name)
if stack:
    place_secrets(settings, supplied)
    place_passwords(settings, passwords)
    place_tls(settings, provided)
    place_backup_secrets(settings, backup)
    place_alert_secrets(settings, alerts)
push_project(settings)
if stack:
    bring_up(settings)
certificates(settings)  # the single host's, or a cluster's: issued on the db node, then on every edge
if stack:
    backups(settings)
finish_deploy(settings)
