"""A local throwaway server: Debian 13 booted with ``systemd-nspawn -b``, reachable over real SSH.

It is a stand-in for a fresh cloud host (a sudo user ``admin`` with NOPASSWD, sshd, systemd),
used by the tests and by the demo alike. It knows nothing of the kono stack.

Needs root (nspawn, a bridge, iptables) and the Debian packages listed in ``HOST_PACKAGES``.
Why each nspawn flag is there (the error seen without it):

- ``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1``: runc fails to apply cgroup configuration (read-only cgroup v1).
- ``--system-call-filter=@keyring``: "unable to join session keyring" when a container starts.
- ``--system-call-filter=bpf`` and ``--capability=all``: "bpf_prog_query(BPF_CGROUP_DEVICE) failed".
- ``--register=no --keep-unit``: this machine has no system bus to register the guest with.
- The root filesystem sits on ext4 (as /tmp is) for Docker's overlay2 inside it.
- nspawn exits 133 when the guest reboots: the supervisor starts it again, as a hypervisor would.

Example::

    with Lab() as lab:
        host = lab.boot()
        host.ssh("true")
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kono.commands import UNSTARTED_ATTEMPTS, unstarted

HOST_PACKAGES = "mmdebstrap systemd-container iptables iproute2 openssh-client"
CACHE_DIR = Path(os.environ.get("KONO_CACHE", "/var/cache/kono-infra"))
SUITE = "trixie"
BRIDGE = "br-kono"
# The /24s the lab may use, first free one wins; .1 is the bridge. Every run on this machine shares one.
SUBNET_CANDIDATES = tuple(f"10.231.{n}" for n in range(0, 256, 17))
ADMIN_USER = "admin"
LOCK_DIR = Path("/run/kono-testhost")  # one file per address in use, holding the owner's PID
NETWORK_LOCK = LOCK_DIR / "network.lock"  # held while the bridge is made, joined or removed

HOST_ROOTFS_ARGS = [
    "--variant=minbase",
    "--include=systemd-sysv,dbus,openssh-server,sudo,iproute2,iputils-ping,ca-certificates,"
    "netbase,curl,gnupg,less,procps,python3",
    "--customize-hook=chroot \"$1\" systemctl mask systemd-modules-load.service",
    "--customize-hook=chroot \"$1\" systemctl enable systemd-networkd ssh",
    "--customize-hook=rm -f \"$1\"/etc/ssh/ssh_host_*",
]

NSPAWN_ARGS = [
    "--register=no",
    "--keep-unit",
    "--capability=all",
    "--system-call-filter=@keyring bpf",
]
NSPAWN_REBOOT_EXIT = 133


def run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    return subprocess.run([str(c) for c in cmd], **kwargs)


def debian_mirror(os_release: str | None = None, sources: list[str] | None = None) -> str:
    """The Debian mirror this machine's apt uses (the first URI of a main suite, not security), or
    $KONO_DEBIAN_MIRROR. On a machine that is not Debian, $KONO_DEBIAN_MIRROR is required."""
    if os.environ.get("KONO_DEBIAN_MIRROR"):
        return os.environ["KONO_DEBIAN_MIRROR"]
    if os_release is None:
        os_release = Path("/etc/os-release").read_text()
    if "ID=debian" not in os_release.splitlines():
        raise RuntimeError("this machine is not Debian: set KONO_DEBIAN_MIRROR to a Debian mirror "
                           "(e.g. http://deb.debian.org/debian) for the test host's root filesystem")
    if sources is None:
        files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
        sources = [f.read_text() for f in files if f.is_file() and f.suffix in (".list", ".sources")]
    for text in sources:
        for uri, suites in _apt_entries(text):
            if "security" not in uri and any("-" not in suite for suite in suites):
                return uri.rstrip("/")
    raise RuntimeError("found no Debian mirror in /etc/apt: set KONO_DEBIAN_MIRROR")


ONE_LINE_DEB = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)")


def _apt_entries(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of each `deb` entry of an apt sources file, one-line or deb822."""
    entries = [(m.group(1), [m.group(2)]) for m in map(ONE_LINE_DEB.match, text.splitlines()) if m]
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
            entries.extend((uri, fields.get("suites", [])) for uri in fields.get("uris", []))
    return entries


def free_subnet(routes: str, candidates: tuple[str, ...] = SUBNET_CANDIDATES) -> str:
    """The first candidate /24 that no route of ``ip -4 route show`` (given) overlaps."""
    taken = []
    for line in routes.splitlines():
        destination = line.split()[0] if line.split() else ""
        if destination and destination != "default":
            taken.append(ipaddress.ip_network(destination, strict=False))
    for subnet in candidates:
        network = ipaddress.ip_network(f"{subnet}.0/24")
        if not any(network.overlaps(other) for other in taken):
            return subnet
    raise RuntimeError(f"every lab subnet ({candidates[0]}.0/24 ...) is routed elsewhere on this machine: "
                       "free one, or stop the other lab")


def cached_rootfs(name: str, mmdebstrap_args: list[str]) -> Path:
    """A Debian ``SUITE`` root filesystem as a tar, built once with mmdebstrap and kept in CACHE_DIR.

    The file name carries a digest of the recipe, so changing the recipe builds a new one.
    """
    mirror = debian_mirror()
    recipe = "\n".join([SUITE, mirror, *mmdebstrap_args])
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    target = CACHE_DIR / f"{name}-{SUITE}-{digest}.tar"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs building the same tar wait for each other
        if not target.exists():
            partial = target.with_suffix(".partial")
            run("mmdebstrap", "--quiet", "--format=tar", *mmdebstrap_args, SUITE, partial, mirror,
                stdout=subprocess.DEVNULL)
            partial.rename(target)
    return target


def nat_rule(subnet: str) -> list[str]:
    # Not "! -o BRIDGE": bridged traffic passes iptables here, so that form would also rewrite
    # traffic between hosts of another bridge on the same subnet.
    return ["POSTROUTING", "-s", f"{subnet}.0/24", "!", "-d", f"{subnet}.0/24", "-j", "MASQUERADE"]


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _children(pid: int) -> list[tuple[int, str]]:
    """A process's children, each with its start time: a PID alone may be reused by then."""
    found = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.append((int(child), _start_time(int(child))))
    return found


def _guest_inits(nspawn: int) -> list[tuple[int, str]]:
    """nspawn's children in a PID namespace of their own: the guest's init. (While nspawn starts,
    its first child is a helper in nspawn's own namespace that soon exits.)"""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        own = os.readlink(f"/proc/{nspawn}/ns/pid")
        inits = []
        for pid, started in _children(nspawn):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if os.readlink(f"/proc/{pid}/ns/pid") != own:
                    inits.append((pid, started))
        return inits
    return []


def _start_time(pid: int) -> str:
    """When a live process started ("" once it is gone or a zombie)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return "" if fields[0] == "Z" else fields[19]
    return ""


def _live_users() -> list[int]:
    """The runs (PIDs) registered as using the bridge that are still alive; forget dead ones."""
    users = []
    for entry in LOCK_DIR.glob("user.*"):
        pid = int(entry.name.split(".")[1])
        if _alive(pid):
            users.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return users


def _nameserver() -> str:
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            return parts[1]
    raise RuntimeError("no nameserver in /etc/resolv.conf: the test host would have no DNS")


def die_with_parent() -> None:
    """For Popen's preexec_fn: the child gets SIGTERM when the thread that started it dies (nspawn: a
    clean poweroff), in a session of its own."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()


class SSHCommandFailed(subprocess.CalledProcessError):
    """A command run over SSH failed: its message ends with what it said on stderr."""

    def __str__(self) -> str:
        said = self.stderr.decode(errors="replace") if isinstance(self.stderr, bytes) else (self.stderr or "")
        return f"{super().__str__()}\nstderr: {said[-2000:]}"


@dataclass
class TestHost:
    """One booted throwaway host."""

    name: str
    address: str
    root: Path
    lab: Lab
    console: Path
    _proc: subprocess.Popen | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _supervisor: threading.Thread | None = None
    _guest: list[tuple[int, str]] = field(default_factory=list)
    boots: int = 0

    def ssh_args(self, user: str = ADMIN_USER, port: int = 22) -> list[str]:
        return ["ssh", "-F", str(self.lab.ssh_config), "-p", str(port), f"{user}@{self.address}"]

    def ssh(self, command: str, user: str = ADMIN_USER, check: bool = True, timeout: float = 300,
            input: str | bytes | None = None) -> subprocess.CompletedProcess:
        """Run a shell command on the host over SSH; returns text output. A ``docker exec`` that never
        started (kono.commands.unstarted: nothing of the command ran) is run again, and said."""
        text = not isinstance(input, bytes)
        for attempt in range(UNSTARTED_ATTEMPTS):
            done = subprocess.run([*self.ssh_args(user), command], input=input, capture_output=True, text=text,
                                  timeout=timeout)
            output = done.stdout.encode() if text else done.stdout
            if not unstarted(done.returncode, output or b"") or attempt == UNSTARTED_ATTEMPTS - 1:
                break
            print(f"{self.name}: {output.decode(errors='replace').strip()} (exit 126): run again", file=sys.stderr)
            time.sleep(1)
        if check and done.returncode != 0:
            raise SSHCommandFailed(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def wait_for_ssh(self, deadline: float = 120) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self._proc is not None and self._proc.poll() not in (None, NSPAWN_REBOOT_EXIT):
                raise RuntimeError(f"{self.name}: nspawn exited; console: {self.console_tail()}")
            try:
                if self.ssh("true", check=False, timeout=15).returncode == 0:
                    return
            except subprocess.TimeoutExpired:  # a login begun, not ended in 15 s (booting on a loaded machine)
                pass
            time.sleep(1)
        raise TimeoutError(f"{self.name} ({self.address}) never answered SSH; console: {self.console_tail()}")

    def console_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no console log)"

    def reboot(self) -> None:
        """Reboot from inside, as an operator would, and wait until SSH answers again."""
        boots = self.boots
        self.ssh("sudo systemctl reboot", check=False, timeout=30)
        # Shutting down can wait ~2 minutes on a user's systemd manager that will not stop inside
        # nspawn (../shared/test-host.md; seen here under load: "Job user@1001.service/stop"), so
        # the limit is well past that.
        end = time.monotonic() + 300
        while self.boots == boots and time.monotonic() < end:
            time.sleep(0.5)
        if self.boots == boots:
            raise TimeoutError(f"{self.name} did not reboot; console: {self.console_tail()}")
        self.wait_for_ssh()

    def _start(self) -> None:
        cmd = [
            "systemd-nspawn", "-D", str(self.root), "-M", self.name, "-b",
            f"--network-bridge={BRIDGE}", *NSPAWN_ARGS,
        ]
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        ready = threading.Event()

        def supervise() -> None:
            # nspawn exits with 133 when the guest reboots: start it again, as a hypervisor would.
            with open(self.console, "ab") as console:
                while True:
                    self._proc = subprocess.Popen(
                        cmd, env=env, stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                        preexec_fn=die_with_parent,
                    )
                    self.boots += 1
                    ready.set()
                    self._guest = self._wait_for_guest(self._proc)
                    code = self._proc.wait()
                    if self._stopping.is_set() or code != NSPAWN_REBOOT_EXIT:
                        return

        self._supervisor = threading.Thread(target=supervise, name=f"nspawn-{self.name}", daemon=True)
        self._supervisor.start()
        ready.wait(10)

    @staticmethod
    def _wait_for_guest(nspawn: subprocess.Popen) -> list[tuple[int, str]]:
        """The guest's init (PID 1 of its own PID namespace), once nspawn has started it."""
        end = time.monotonic() + 60
        while nspawn.poll() is None and time.monotonic() < end:
            if guest := _guest_inits(nspawn.pid):
                return guest
            time.sleep(0.05)
        return []

    def kill(self) -> None:
        """Lose the host: SIGKILL to its init ends every process in it at once (its containers too),
        with no shutdown; then clean up as ``stop`` does. (What it wrote is in this machine's page
        cache and would survive, unlike a power cut: measure what was lost on another host.)"""
        self._kill_guest()
        self.stop()

    def power_cut(self) -> None:
        """As ``kill``, but its disk stays: ``power_on`` boots it again, as a node that comes back."""
        self._kill_guest()
        if self._proc is not None:
            self._proc.wait(timeout=30)
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
        run("ip", "link", "del", f"vb-{self.name}", check=False, capture_output=True)

    @contextlib.contextmanager
    def small_disk(self, mountpoint: str, megabytes: int = 64):
        """A filesystem of its own at ``mountpoint``, for a test to fill: an ext4 image on a loop device
        of this machine (the guest has none), mounted in the guest's mount namespace alone (its
        systemd shares it on, into containers that mount the host's root). Unmounted, detached and
        deleted on exit; a guest that is gone by then took its mount with it."""
        image = Path(f"{self.root}-disk.img")
        subprocess.run(["truncate", "-s", f"{megabytes}M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True)
        device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                                text=True).stdout.strip()
        number = os.stat(device).st_rdev
        node = "/kono-test-disk"  # the device, for the mount alone (the guest's /dev and /run are nodev)
        try:
            self._in_guest_mounts(f"mkdir -p {mountpoint} && mknod {node} b {os.major(number)} {os.minor(number)} && "
                                  f"mount {node} {mountpoint} && rm {node} && chmod 1777 {mountpoint}")
            yield mountpoint
        finally:
            if self._guest_init():
                self._in_guest_mounts(f"umount {mountpoint}; rm -f {node}", check=False)
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
            image.unlink(missing_ok=True)

    def _guest_init(self) -> int | None:
        inits = _guest_inits(self._proc.pid) if self._proc is not None and self._proc.poll() is None else []
        return inits[0][0] if inits else None

    def _in_guest_mounts(self, script: str, check: bool = True) -> None:
        """A shell script of this machine's, in the guest's mount namespace (its files, this machine's rights)."""
        pid = self._guest_init()
        if pid is None:
            raise RuntimeError(f"{self.name} is not running")
        done = subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "sh", "-c", script], capture_output=True,
                              text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.name}: {script!r} failed: {done.stderr.strip()}")

    def power_on(self) -> None:
        # A second nspawn on a running host's root cannot start ("Directory tree ... is currently
        # busy") and would take the first one's place in _proc: stop() then missed the running
        # machine, which outlived its deleted root and broke the next host booted under its name (CI).
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"{self.name} is on: power_on is for a host whose power was cut")
        self._stopping.clear()
        self._start()
        self.wait_for_ssh()

    def _kill_guest(self) -> None:
        self._stopping.set()
        proc = self._proc
        for pid, started in (_guest_inits(proc.pid) if proc else []) or self._guest:
            if started and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop(self, poweroff_timeout: float = 30) -> None:
        """Power off (SIGTERM to nspawn itself), wait for it to exit, then delete the root filesystem.
        Once stopped, nothing more: its address, and with it its name and its veth's name, may be
        another lab's host's by then (a second stop deleted that host's veth: CI's test_reprovision
        lost its new host's network when test_cluster's module ended and stopped h3 a second time)."""
        if self not in self.lab.hosts:
            return
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._guest = _guest_inits(proc.pid) or self._guest
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=poweroff_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
        # A SIGKILLed nspawn leaves its guest running (seen here: systemd and its services, still
        # holding the address and writing into the root filesystem being deleted). Killing the
        # guest's init ends every process in its PID namespace.
        for pid, started in self._guest:
            if started and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                end = time.monotonic() + 30
                while _start_time(pid) == started and time.monotonic() < end:
                    time.sleep(0.1)
        # The host side of its veth can outlive the guest's network namespace for a long while.
        run("ip", "link", "del", f"vb-{self.name}", check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            shutil.rmtree(self.root)  # says what could not be removed; the address stays claimed
        self.lab.hosts.remove(self)
        self.lab.release_address(self.address)


class Lab:
    """Everything one run needs: an SSH key pair, a known_hosts file, the bridge, and its hosts."""

    def __init__(self, workdir: Path | None = None) -> None:
        if os.geteuid() != 0:
            raise PermissionError("the throwaway test host needs root (systemd-nspawn, a bridge, iptables)")
        # The root filesystem must sit on ext4 (as /tmp does) for Docker's overlay2 inside it.
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kono-lab-", dir="/tmp"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.touch()
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kono-lab", "-f", self.key)
        self.public_key = self.key.with_suffix(".pub").read_text().strip()
        self.hosts: list[TestHost] = []
        self._rootfs = cached_rootfs("host", HOST_ROOTFS_ARGS)
        self.subnet = self._network_up()  # "10.231.N": the lab's /24, shared by every run on this machine
        # For ssh, scp and testinfra: the lab's key, and strict checking against the lab's known_hosts.
        self.ssh_config = self.workdir / "ssh_config"
        self.ssh_config.write_text(
            f"Host {self.subnet}.*\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  ConnectTimeout 5\n  LogLevel ERROR\n"
            # A connection that dies silently (no RST) fails within two minutes instead of hanging.
            "  ServerAliveInterval 15\n  ServerAliveCountMax 8\n"
        )

    @property
    def gateway(self) -> str:
        """The machine's address on the lab's bridge: what the test hosts reach it at."""
        return f"{self.subnet}.1"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- network -----------------------------------------------------------------------------
    # Every run on this machine shares one bridge. Each run registers itself while it uses it; the
    # last one to leave removes the bridge and its NAT rule, whichever run made them.
    @property
    def _registration(self) -> Path:
        # Per lab, not per process: a test may run a second lab beside the session's.
        return LOCK_DIR / f"user.{os.getpid()}.{id(self)}"

    def _network_up(self) -> str:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        with _locked(NETWORK_LOCK):
            self._registration.write_text("")
            if run("ip", "link", "show", BRIDGE, check=False, capture_output=True).returncode == 0:
                address = run("ip", "-4", "-o", "addr", "show", "dev", BRIDGE, capture_output=True,
                              text=True).stdout.split()[3]
                subnet = address.rsplit(".", 1)[0]
            else:
                # A subnet another interface already routes would swallow the lab's traffic silently.
                routes = run("ip", "-4", "route", "show", capture_output=True, text=True).stdout
                subnet = free_subnet(routes)
                run("ip", "link", "add", BRIDGE, "type", "bridge")
                run("ip", "addr", "add", f"{subnet}.1/24", "dev", BRIDGE)
            run("ip", "link", "set", BRIDGE, "up")
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
            nat = nat_rule(subnet)
            if run("iptables", "-t", "nat", "-C", *nat, check=False, capture_output=True).returncode:
                run("iptables", "-t", "nat", "-A", *nat)
        return subnet

    def _network_down(self) -> None:
        with _locked(NETWORK_LOCK):
            self._registration.unlink(missing_ok=True)
            if _live_users():
                return  # another run still uses the bridge
            ports = Path(f"/sys/class/net/{BRIDGE}/brif")
            end = time.monotonic() + 10  # a stopped host's veth may take a moment to go away
            while ports.exists() and any(ports.iterdir()) and time.monotonic() < end:
                time.sleep(0.2)
            run("ip", "link", "del", BRIDGE, check=False, capture_output=True)
            while run("iptables", "-t", "nat", "-D", *nat_rule(self.subnet), check=False,
                      capture_output=True).returncode == 0:
                pass

    def claim_address(self, wanted: str | None = None) -> str:
        """The lowest free address of the lab's /24 (or ``wanted``), claimed for this process."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        numbers = [int(wanted.rsplit(".", 1)[1])] if wanted else range(10, 250)
        for n in numbers:
            lock = LOCK_DIR / f"{self.subnet}.{n}"
            with contextlib.suppress(FileNotFoundError, ValueError):
                if _alive(int(lock.read_text())):
                    continue  # in use by a live run
                lock.unlink()  # left behind by a run that died
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return f"{self.subnet}.{n}"
        raise RuntimeError(f"{wanted} is in use" if wanted else f"no free address left in {self.subnet}.0/24")

    def release_address(self, address: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (LOCK_DIR / address).unlink()

    # -- hosts -------------------------------------------------------------------------------
    def boot(self, name: str | None = None, address: str | None = None) -> TestHost:
        address = self.claim_address(address)
        name = name or f"kono-{address.rsplit('.', 1)[1]}"
        root = self.workdir / name
        root.mkdir()
        host = TestHost(name=name, address=address, root=root, lab=self,
                        console=self.workdir / f"{name}.console.log")
        self.hosts.append(host)
        run("tar", "-C", root, "-xf", self._rootfs)
        self._prepare(host)
        host._start()
        host.wait_for_ssh()
        return host

    def _prepare(self, host: TestHost) -> None:
        """Make the unpacked rootfs look like a new cloud instance: fresh host keys, a sudo user."""
        root = host.root
        run("chroot", root, "ssh-keygen", "-A", capture_output=True)
        run("chroot", root, "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", ADMIN_USER)
        sudoers = root / "etc/sudoers.d/90-cloud-init-users"
        sudoers.write_text(f"{ADMIN_USER} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)
        ssh_dir = root / "home" / ADMIN_USER / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(self.public_key + "\n")
        run("chroot", root, "chown", "-R", f"{ADMIN_USER}:{ADMIN_USER}", f"/home/{ADMIN_USER}/.ssh")
        # logind stopping a user's manager can hang ~2 min inside nspawn, and logins wait on it.
        (root / "var/lib/systemd/linger").mkdir(parents=True, exist_ok=True)
        (root / "var/lib/systemd/linger" / ADMIN_USER).touch()
        logind = root / "etc/systemd/logind.conf.d"
        logind.mkdir(parents=True, exist_ok=True)
        (logind / "kono-testhost.conf").write_text("[Login]\nUserStopDelaySec=infinity\n")
        # The same stop hangs a reboot ~2 min ("Job user@1000.service/stop", seen on the console of
        # a test host with the stack): a user's manager gets 10 s to stop, then is killed. Nothing
        # of the stack runs in one (its services are Docker's, stopped before).
        user_units = root / "etc/systemd/system/user@.service.d"
        user_units.mkdir(parents=True, exist_ok=True)
        (user_units / "kono-testhost.conf").write_text("[Service]\nTimeoutStopSec=10s\n")
        (root / "etc/hostname").write_text(host.name + "\n")
        with open(root / "etc/hosts", "a") as hosts:
            hosts.write(f"127.0.1.1 {host.name}\n")
        (root / "etc/machine-id").write_text("")
        nameserver = _nameserver()
        (root / "etc/systemd/network/10-host0.network").write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={host.address}/24\n"
            f"Gateway={self.gateway}\nDNS={nameserver}\n"
        )
        resolv = root / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text(f"nameserver {nameserver}\n")
        # An address is reused once its host stopped: forget the keys the old host (and its
        # maintainer container) had there, as an operator does for a reprovisioned address.
        kept = [line for line in self.known_hosts.read_text().splitlines(keepends=True)
                if line.split(" ", 1)[0] not in (host.address, f"[{host.address}]")
                and not line.startswith(f"[{host.address}]:")]
        self.known_hosts.write_text("".join(kept))
        with open(self.known_hosts, "a") as known:
            for pub in sorted((root / "etc/ssh").glob("ssh_host_*_key.pub")):
                keytype, key = pub.read_text().split()[:2]
                known.write(f"{host.address} {keytype} {key}\n")

    def close(self) -> None:
        # In parallel: a guest's poweroff can wait ~30 s on its users' systemd managers (see stop()).
        stoppers = [threading.Thread(target=host.stop) for host in list(self.hosts)]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        self._network_down()
        shutil.rmtree(self.workdir, ignore_errors=True)
