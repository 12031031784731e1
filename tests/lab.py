"""What the tests and the demo do with throwaway hosts: inventories, the real pyinfra CLI, test doubles.

Every pyinfra run here is the real CLI in a subprocess, over real SSH, with strict host key checking
against the lab's own known_hosts file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kono.testhost import Lab, TestHost, cached_rootfs

REPO = Path(__file__).resolve().parent.parent
IMAGES = Path(__file__).resolve().parent / "images"
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
BASE_IMAGE = "kono-testdouble/debian:trixie"
# Stand-in directory -> the group_data knob whose default (official) tag it is built under.
STANDINS = {"mysql": "mysql_image", "node": "node_image", "nginx": "nginx_image",
            "ubuntu": "maintainer_base_image"}


def group_defaults() -> dict:
    defaults: dict = {}
    exec((REPO / "group_data" / "all.py").read_text(), {}, defaults)
    return defaults


def write_inventory(lab: Lab, hosts: list[TestHost], path: Path, **data) -> Path:
    """An inventory like an operator's, for the lab's hosts; ``data`` overrides knobs per run."""
    host_data = {
        "admin_user": "admin",
        "deploy_authorized_keys": [lab.public_key],
        "docker_source": "distro",  # Docker's own repository is unreachable here
        "ssh_key": str(lab.key),
        "ssh_known_hosts_file": str(lab.known_hosts),
        "ssh_strict_host_key_checking": "yes",
        **data,
    }
    entries = [(h.address, host_data) for h in hosts]
    path.write_text("# Written by tests/lab.py for throwaway hosts.\n"
                    f"kono_hosts = {entries!r}\n")
    return path


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    @property
    def changes(self) -> int:
        return self.json["results"]["totals"]["success"]


def pyinfra(inventory: Path, deploy_file: str, *args: str, check: bool = True,
            timeout: float = 900) -> Run:
    """Run the real pyinfra CLI from the repository root, non-interactively.

    ``-y`` (execute without asking) is added unless ``--dry`` plans only: a plan without ``-y``
    also detects which operations would change.
    """
    yes = [] if "--dry" in args else ["-y"]
    cmd = [PYINFRA, *yes, *args, str(inventory), deploy_file]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run = Run(cmd, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{run.output[-6000:]}")
    return run


def bootstrap(inventory: Path, *args: str, **kwargs) -> Run:
    return pyinfra(inventory, "kono/bootstrap.py", "--user", "admin", *args, **kwargs)


def deploy(inventory: Path, *args: str, **kwargs) -> Run:
    return pyinfra(inventory, "deploy.py", *args, **kwargs)


def load_standins(host: TestHost, user: str = "kono") -> None:
    """Build the test doubles of the official images inside the host's Docker (see images/README.md)."""
    base = cached_rootfs("image-base", ["--variant=minbase"])
    with open(base, "rb") as tar:
        subprocess.run([*host.ssh_args(user), f"docker import - {BASE_IMAGE}"], stdin=tar,
                       check=True, capture_output=True, timeout=300)
    tags = group_defaults()

    def build(folder: str) -> None:
        context = subprocess.run(["tar", "-C", IMAGES / folder, "-c", "."], capture_output=True,
                                 check=True).stdout
        proc = host.ssh(f"docker build --quiet --tag {tags[STANDINS[folder]]} -", user=user,
                        input=context, check=False, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"building the {folder} stand-in failed:\n{proc.stderr.decode()[-3000:]}")

    with ThreadPoolExecutor(len(STANDINS)) as pool:
        list(pool.map(build, STANDINS))
