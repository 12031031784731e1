"""The newcomer's demo: boot a local throwaway server, bootstrap it, deploy kono, and show it.

    sudo bash .ci/setup && sudo .venv/bin/python -m tests.demo

No cloud account: the server is a Debian 13 system container on this machine (see kono/testhost.py),
and the official images are replaced by local test doubles (tests/images/). Ctrl-C tears it down.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from kono.testhost import Lab
from tests import lab as lab_tools


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true", help="tear down as soon as it is up")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # tear down on SIGTERM as on Ctrl-C

    started = time.monotonic()
    with Lab() as lab:
        say("booting a fresh Debian 13 server (systemd-nspawn)")
        host = lab.boot()
        inventory = lab_tools.write_inventory(lab, [host], lab.workdir / "inventory.py")
        say(f"server {host.address} is up; bootstrap (Docker, deploy user), as admin with sudo")
        lab_tools.bootstrap(inventory)
        say("building local test doubles of the official images inside it (no registry here)")
        lab_tools.load_standins(host)
        say("deploy, as the deploy user kono, without sudo")
        lab_tools.deploy(inventory)
        say("second deploy: nothing to change")
        print(f"    changes: {lab_tools.deploy(inventory, '--json').changes}")
        subprocess.run([sys.executable, "-m", "kono.status", str(inventory)], cwd=lab_tools.REPO,
                       check=False)
        say(f"ready in {time.monotonic() - started:.0f}s")
        print(f"""
    nginx:        curl http://{host.address}/healthz   and   curl http://{host.address}/api/health
    maintainer:   ssh -F {lab.ssh_config} -p 8022 <user>@{host.address}
    the host:     ssh -F {lab.ssh_config} kono@{host.address}   (deploy user; admin@ has sudo)
    redeploy:     .venv/bin/pyinfra {inventory} deploy.py
    status:       .venv/bin/python -m kono.status {inventory}
""", flush=True)
        if not args.no_wait:
            say("Ctrl-C to tear everything down")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        say("tearing down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
