"""Each host's kono services and their health, from the operator's machine, over SSH.

    python -m kono.cli.status inventory.py

One line per service of every host: state, health, and whether it is ready (running and its
healthcheck passing); with HTTPS, one line for the certificate nginx serves: its names, issuer and
expiry ("NOT OK" within 14 days). Exit 0 when every service of every host is ready and no
certificate is missing or near its end, 1 otherwise.
"""

from __future__ import annotations

from kono.remote import connect, inventory_hosts, run  # first: gevent patches before ssl loads

import argparse
import sys

from pyinfra.api.exceptions import ConnectError

from kono import commands
from kono.services import SERVICES, enabled, ready
from kono.stack import parse_services
from kono.tls import EXPIRY_WARNING_DAYS, certificate_summary, days_left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kono.cli.status", description=__doc__.splitlines()[0])
    parser.add_argument("inventory", help="the pyinfra inventory file, e.g. inventory.py")
    args = parser.parse_args(argv)

    all_ready = True
    for target in inventory_hosts(args.inventory):
        try:
            with connect(target) as client:
                output = run(client, commands.services_state(), target.settings.project_dir)
                served = (run(client, commands.served_certificate(target.settings.project_dir))
                          if target.settings.https != "off" else b"")
        except (ConnectError, RuntimeError, OSError) as error:  # report every host, even when one is down
            print(f"{target.name}: unreachable: {type(error).__name__}: {error}")
            all_ready = False
            continue
        states = parse_services(output.decode().splitlines())
        for service in enabled(SERVICES, target.settings):
            state, health = states.get(service.name, ("missing", ""))
            ok = ready(state, health)
            all_ready &= ok
            print(f"{target.name}  {service.name:<14} {state:<10} {health or '-':<10} {'ok' if ok else 'NOT OK'}")
        if target.settings.https != "off":
            summary = certificate_summary(served.decode())
            ok = summary is not None and days_left(summary) >= EXPIRY_WARNING_DAYS
            all_ready &= ok
            about = (f"{','.join(summary['names'])} issuer {summary['issuer']!r} expires "
                     f"{summary['not_after']:%Y-%m-%d %H:%M} UTC ({days_left(summary):.0f} days)"
                     if summary else "none served")
            print(f"{target.name}  certificate    {about} {'ok' if ok else 'NOT OK'}")
    return 0 if all_ready else 1


if __name__ == "__main__":
    sys.exit(main())
