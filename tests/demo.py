"""The newcomer's demo: boot a local throwaway server, bootstrap it, deploy kono, and show it.

    sudo bash .ci/setup && sudo .venv/bin/python -m tests.demo

No cloud account: the server is a Debian 13 system container on this machine (see tests/testhost.py),
and the official images are replaced by local test doubles (tests/images/). Ctrl-C tears it down.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time

from tests.testhost import Lab
from tests import lab as lab_tools


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true", help="tear down as soon as it is up")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # tear down on SIGTERM as on Ctrl-C

    started = time.monotonic()
    with Lab() as lab, lab_tools.GitServer(lab) as git:  # git: the sample API and app
        say("booting a fresh Debian 13 server (systemd-nspawn)")
        host = lab.boot()
        # The operator's maintainer passwords: random for the demo, in the team's encrypted secrets file
        # (SOPS, for the demo's own throwaway age identity), as a team commits it beside its inventory.
        passwords = {login: secrets.token_urlsafe(12) for login in lab_tools.MAINTAINERS}
        identity, team_file = lab.workdir / "age-identity.txt", lab.workdir / "secrets.sops.yaml"
        lab_tools.encrypt_secrets("".join(f"maintainer_password_{login}: {json.dumps(password)}\n"
                                          for login, password in passwords.items()),
                                  team_file, lab_tools.age_identity(identity))
        os.environ["SOPS_AGE_KEY_FILE"] = str(identity)  # (for pyinfra, run from here)
        inventory = lab_tools.write_inventory(lab, [host], lab.workdir / "inventory.py", api_repo=git.repo("api"),
                                              app_repo=git.repo("app"), secrets_sops_file=str(team_file))
        say(f"server {host.address} is up; bootstrap (Docker, deploy user, hardening), as admin with sudo")
        lab_tools.bootstrap(inventory)
        say("building local test doubles of the official images inside it (no registry here)")
        lab_tools.load_images(host)
        say("deploy, as the deploy user kono, without sudo")
        lab_tools.deploy(inventory)
        say("second deploy: nothing to change")
        print(f"    changes: {lab_tools.deploy(inventory, '--json').changes}")
        subprocess.run([sys.executable, "-m", "kono.cli.status", str(inventory)], cwd=lab_tools.REPO,
                       check=False)
        lab_tools.pin_maintainer_host_key(host)
        say("the maintainer pulls the sample API and app over SSH: kono-deploy")
        print(lab_tools.maintainer(host, "kono-deploy", timeout=600).stdout, end="", flush=True)
        say(f"ready in {time.monotonic() - started:.0f}s")
        print(f"""
    nginx:        curl http://{host.address}/   curl http://{host.address}/api/health
    maintainer:   ssh -F {lab.ssh_config} -p 8022 sysop@{host.address}      (or wheel@)
                  inside: kono-deploy, kono-deploy --rollback api, sudo -i,
                          tail /var/log/api/api.log /var/log/nginx/access.log
    sudo passwords: {', '.join(f'{k}: {v}' for k, v in passwords.items())}   (demo only; encrypted in {team_file})
    the host:     ssh -F {lab.ssh_config} kono@{host.address}   (deploy user; admin@ has sudo)
    redeploy:     SOPS_AGE_KEY_FILE={identity} .venv/bin/pyinfra {inventory} deploy.py
    status:       .venv/bin/python -m kono.cli.status {inventory}
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
