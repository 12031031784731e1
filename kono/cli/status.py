"""Each host's kono services and their health, from the operator's machine, over SSH.

    python -m kono.cli.status inventory.py

One line per service of every host: state, health, and whether it is ready (running and its
healthcheck passing); with HTTPS, one line for the certificate nginx serves (on a cluster, on each
edge node): its names, issuer and expiry ("NOT OK" within 14 days); with backups, one for the last successful backup: its age, size
and snapshots ("NOT OK" when there is none or it is older than two days); with pitr, how far
db_production's binary logs are shipped ("NOT OK" past twice pitr_max_lag_seconds); with monitoring, one
line per alert Prometheus has firing (NOT OK), or one saying none fires. Exit 0 when every service
of every host is ready and nothing is NOT OK, 1 otherwise.

With engine = "swarm", as the first manager that answers sees the cluster: one line per node (ready,
availability, role; "NOT OK" when down, drained, or not in the declared role) and one per service,
its running and desired tasks across the swarm ("NOT OK" when fewer run): a dead db node's services
are counted too.
"""

from __future__ import annotations

from kono.remote import connect, inventory_hosts, run  # first: gevent patches before ssl loads

import argparse
import sys

from pyinfra.api.exceptions import ConnectError, OperationError

from kono import commands
from kono.cluster import cluster_of, holds_stack, is_edge, node_report, parse_swarm_state, swarm_state_command
from kono.services import SERVICES, enabled, ready, script
from kono.stack import not_converged, parse_services, parse_swarm_services
from kono.backup import MAX_AGE, backup_age, parse_last_backup, parse_shipped, shipping_ok, shipping_summary
from kono.monitoring import PROMETHEUS_PORT, alert_lines
from kono.tls import EXPIRY_WARNING_DAYS, certificate_summary, days_left


def certificate_line(name: str, served: bytes) -> bool:
    """Print the line of the certificate a host's nginx serves; whether it is ok."""
    summary = certificate_summary(served.decode())
    ok = summary is not None and days_left(summary) >= EXPIRY_WARNING_DAYS
    about = (f"{','.join(summary['names'])} issuer {summary['issuer']!r} expires "
             f"{summary['not_after']:%Y-%m-%d %H:%M} UTC ({days_left(summary):.0f} days)"
             if summary else "none served")
    print(f"{name}  certificate    {about} {'ok' if ok else 'NOT OK'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kono.cli.status", description=__doc__.splitlines()[0])
    parser.add_argument("inventory", help="the pyinfra inventory file, e.g. inventory.py")
    args = parser.parse_args(argv)

    all_ready = True
    targets = inventory_hosts(args.inventory)
    cluster = cluster_of((target.name, target.settings) for target in targets)
    nodes_shown = False
    for target in targets:
        stack = holds_stack(target.settings)
        project = target.settings.compose_project
        try:
            with connect(target) as client:
                output = (run(client, commands.services_state(project), target.settings.project_dir)
                          if stack and not target.settings.swarm else b"")
                swarm = (parse_swarm_state(run(client, swarm_state_command()).decode().splitlines())
                         if target.settings.swarm and not nodes_shown else None)
                listed = (run(client, commands.swarm_services(project)).decode().splitlines()
                          if swarm and swarm["manager"] else [])
                served = (run(client, commands.served_certificate(project))
                          if target.settings.https_on and is_edge(target.settings) else b"")
                last = (parse_last_backup(run(client, commands.last_backup(project, script("backup"))).decode())
                        if target.settings.backups_on else None)
                shipped = (parse_shipped(run(client, commands.shipped_binlogs(project, script("binlog"))).decode())
                           if target.settings.pitr_on else None)
                alerts = (run(client, commands.firing_alerts(project, PROMETHEUS_PORT)).decode()
                          if target.settings.monitoring else None)
        except (ConnectError, RuntimeError, OSError) as error:  # report every host, even when one is down
            print(f"{target.name}: unreachable: {type(error).__name__}: {error}")
            all_ready = False
            continue
        if swarm and swarm["manager"]:
            nodes_shown = True
            for name, about, ok in node_report(cluster, swarm, target.name):
                all_ready &= ok
                print(f"{target.name}  node {name:<20} {about} {'ok' if ok else 'NOT OK'}")
            # A cluster's services run on many nodes: counted by the swarm.
            try:
                tasks = parse_swarm_services(listed)
            except OperationError as error:  # an answer cut short
                print(f"{target.name}: {error}")
                all_ready = False
                tasks = {}
            services = enabled(SERVICES, target.settings)
            lagging = not_converged(tasks, tuple(s.name for s in services))
            for service in services:
                running, desired = tasks.get(service.name, (0, 0))
                ok = service.name not in lagging
                all_ready &= ok
                print(f"{target.name}  {service.name:<14} tasks {running}/{desired:<14} {'ok' if ok else 'NOT OK'}")
        if not stack:
            if target.settings.https_on and is_edge(target.settings):
                all_ready &= certificate_line(target.name, served)
            continue
        if not target.settings.swarm:
            try:
                states = parse_services(output.decode().splitlines())
            except OperationError as error:  # no curl on the host, or an answer cut short
                print(f"{target.name}: {error}")
                all_ready = False
                continue
            for service in enabled(SERVICES, target.settings):
                state, health = states.get(service.name, ("missing", ""))
                ok = ready(state, health)
                all_ready &= ok
                print(f"{target.name}  {service.name:<14} {state:<10} {health or '-':<10} {'ok' if ok else 'NOT OK'}")
        if target.settings.https_on and is_edge(target.settings):
            all_ready &= certificate_line(target.name, served)
        if target.settings.backups_on:
            ok = last is not None and backup_age(last) <= MAX_AGE
            all_ready &= ok
            about = (f"last success {last['time']:%Y-%m-%d %H:%M} UTC ({backup_age(last).total_seconds() / 3600:.1f} h ago), "
                     f"{last['bytes'] / 1e6:.1f} MB read, {last['added'] / 1e6:.1f} MB added, "
                     f"snapshots {' '.join(last['snapshots'])}" if last else "no success yet")
            print(f"{target.name}  last backup    {about} {'ok' if ok else 'NOT OK'}")
        if target.settings.pitr_on:
            ok = shipping_ok(shipped, target.settings)
            all_ready &= ok
            print(f"{target.name}  binary logs    {shipping_summary(shipped)} {'ok' if ok else 'NOT OK'}")
        for line, ok in alert_lines(alerts) if alerts is not None else ():
            all_ready &= ok
            print(f"{target.name}  {line} {'ok' if ok else 'NOT OK'}")
    if cluster and not nodes_shown:
        print(f"cluster: no manager answered ({', '.join(n.name for n in cluster.nodes if n.role == 'manager')}) NOT OK")
        all_ready = False
    return 0 if all_ready else 1


if __name__ == "__main__":
    sys.exit(main())
