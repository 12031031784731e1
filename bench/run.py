"""What a no-op deploy, a fresh provision and many hosts cost, measured on local throwaway hosts.

    sudo .venv/bin/python -m bench.run              # the full run: 1, 5 and 10 hosts
    sudo .venv/bin/python -m bench.run --smoke      # 1 host, 1 run of each (CI: the script cannot rot)

Prints a table and writes JSON (``--out``). Every figure comes from the real pyinfra CLI over SSH,
all in one run on this machine, so ratios compare like with like. Times are reported, not asserted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kono import commands
from kono.services import unready
from kono.stack import parse_services
from tests.testhost import Lab, TestHost
from tests import lab as lab_tools

# Issue #16: a no-op deploy within 1.5x pyinfra's own `exec -- true`, ten hosts within 1.5x one host,
# a fresh provision within 1.2x its unavoidable parts (apt, image builds, first start).
TARGETS = {"noop_ratio": 1.5, "remote_commands": 2, "ten_hosts_ratio": 1.5, "provision_ratio": 1.2}
# Bootstrap operations that are apt's own work (lists, installs, security updates): unavoidable on a fresh host.
APT_WORK = re.compile(r"(^|\| )(Install |Update apt lists|nftables \(the nft command\)$|unattended-upgrades$|"
                      r"Apply pending security updates)")


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.monotonic()
    result = function(*args, **kwargs)
    return time.monotonic() - start, result


def interleaved(runs: int, measurements: dict[str, tuple]) -> dict[str, list[float]]:
    """Each measurement once per round, ``runs`` rounds: a slow spell of the machine touches all alike."""
    times: dict[str, list[float]] = {name: [] for name in measurements}
    for _ in range(runs):
        for name, (function, *args) in measurements.items():
            times[name].append(timed(function, *args)[0])
    return times


def spread(values: list[float], unit: str = "s") -> str:
    """Median, and the spread of the runs."""
    if len(values) == 1:
        return f"{values[0]:.2f} {unit}"
    return f"{statistics.median(values):.2f} {unit} ({min(values):.2f} to {max(values):.2f})"


def exec_true(inventory: Path) -> lab_tools.Run:
    """`pyinfra INVENTORY exec -- true`: the cost of connecting and running one command."""
    proc = subprocess.run([lab_tools.PYINFRA, "-y", str(inventory), "exec", "--", "true"], cwd=lab_tools.REPO,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    if proc.returncode:
        raise RuntimeError(proc.stdout + proc.stderr)
    return lab_tools.Run([], proc.returncode, proc.stdout, proc.stderr)


def noop_deploy(inventory: Path, *args: str) -> lab_tools.Run:
    run = lab_tools.deploy(inventory, "--json", *args)
    if run.changes:
        raise RuntimeError(f"a no-op deploy changed {run.changes} operations")
    return run


def pyinfra_floor(inventory: Path, *args: str) -> lab_tools.Run:
    """bench/pyinfra_floor.py: pyinfra running a deploy of our shape that does nothing."""
    return lab_tools.pyinfra(inventory, "bench/pyinfra_floor.py", *args)


def timeline(inventory: Path, deploy_file: str, *args: str) -> tuple[float, list[tuple[float, str]]]:
    """Run pyinfra with -v; (total seconds, [(seconds since start, output line)])."""
    cmd = [lab_tools.PYINFRA, "-y", "-v", *args, str(inventory), deploy_file]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=lab_tools.REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [(time.monotonic() - start, line.rstrip("\n")) for line in proc.stdout]
    if proc.wait():
        raise RuntimeError("\n".join(line for _, line in lines[-40:]))
    return time.monotonic() - start, lines


PHASE_STARTS = (("--> Connecting to hosts", "connect"), ("--> Preparing operation", "prepare: the deploy file, per host"),
                ("--> Starting operation: ", None), ("--> Results", "results, disconnect, exit"))


def phases(total: float, lines: list[tuple[float, str]]) -> dict[str, float]:
    """Where a pyinfra run's time went, from its -v output: {phase: seconds}. Each operation is a phase
    (pyinfra runs it on every host, then the next one)."""
    marks = [(0.0, "start-up: Python, imports, inventory")]
    for at, line in lines:
        for prefix, name in PHASE_STARTS:
            if line.lstrip().startswith(prefix):
                marks.append((at, name or "op: " + line.split(prefix, 1)[1].strip()))
    result: dict[str, float] = {}
    for (at, name), (end, _) in zip(marks, marks[1:] + [(total, "")]):
        result[name] = result.get(name, 0.0) + end - at
    return result


def apt_seconds(total: float, lines: list[tuple[float, str]]) -> float:
    return sum(seconds for name, seconds in phases(total, lines).items()
               if name.startswith("op: ") and APT_WORK.search(name[4:]))


def provision(lab: Lab, hosts: list[TestHost], inventory: Path) -> dict[str, float]:
    """Fresh hosts -> healthy stacks, timed by part: apt's work, image builds (pulls, on a real host) and
    the first `compose up` are unavoidable; the rest is ours."""
    bootstrap_s, lines = timeline(inventory, "bootstrap.py", "--user", "admin", "--parallel", str(len(hosts)))
    apt_s = apt_seconds(bootstrap_s, lines)
    with ThreadPoolExecutor(len(hosts)) as pool:
        images_s, _ = timed(lambda: list(pool.map(lab_tools.load_images, hosts)))
    deploy_s, _ = timed(lab_tools.deploy, inventory, "--parallel", str(len(hosts)))
    up = max(float(h.ssh("cat /srv/kono/.kono/last-up-seconds", user="kono").stdout) for h in hosts)
    return {"apt: Docker, host packages, security updates (bootstrap)": apt_s,
            "image builds (test doubles; pulls on a real host)": images_s,
            "first compose up": up,
            "ours: the rest of bootstrap": bootstrap_s - apt_s,
            "ours: the rest of the first deploy": deploy_s - up}


# CPU time (microseconds) of every container of the project, from their cgroups: healthchecks run
# there too (`docker exec` joins the container's cgroup), so they are counted.
CONTAINERS_CPU_USEC = (
    "for c in $(docker ps -q --filter label=com.docker.compose.project={project}); do "
    "pid=$(docker inspect -f '{{{{.State.Pid}}}}' $c); "
    "awk '/^usage_usec/ {{print $2}}' /sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$pid/cgroup)/cpu.stat; "
    "done | awk '{{s += $1; n += 1}} END {{print s + 0, n + 0}}'"
)


def idle_cpu_percent(host: TestHost, seconds: float) -> float:
    """CPU the deployed stack's containers use while nothing happens, in % of one core."""
    command = CONTAINERS_CPU_USEC.format(project=lab_tools.DEFAULTS["compose_project"])

    def cpu_usec() -> int:
        usec, found = host.ssh(command, user=lab_tools.DEPLOY_USER).stdout.split()
        if int(found) != len(lab_tools.DEFAULT_SERVICES):
            raise RuntimeError(f"read the CPU time of {found} containers, expected {len(lab_tools.DEFAULT_SERVICES)}")
        return int(usec)

    before = cpu_usec()
    start = time.monotonic()
    time.sleep(seconds)
    return (cpu_usec() - before) / 1e6 / (time.monotonic() - start) * 100


def zero_downtime(host: TestHost, inventory: Path, git: lab_tools.GitServer, seconds: float) -> dict:
    """Each kind of change under load (4 clients on /api/health and /api/greeting through nginx):
    requests, failed requests, the longest answer, and how long failures lasted."""
    def maintainer(command: str) -> str:
        return lab_tools.maintainer(host, command, timeout=600).stdout

    def compose(command: str) -> None:
        host.ssh(f"cd {lab_tools.PROJECT_DIR} && docker compose {command}", user=lab_tools.DEPLOY_USER)

    lab_tools.pin_maintainer_host_key(host)
    maintainer("kono-deploy")
    lab_tools.add_greeting(host, "bench")
    changes = {
        "new API code (kono-deploy api)": lambda: (git.push_api("bench-2"), maintainer("kono-deploy api")),
        "rollback (kono-deploy --rollback api)": lambda: maintainer("kono-deploy --rollback api"),
        "api container replaced (rotated production/api_key)":
            lambda: lab_tools.rotate(inventory, "production/api_key"),
        "nginx configuration (server_name; reload)":
            lambda: lab_tools.deploy(inventory, "--data", "server_name=bench.example _"),
        "a deploy that changes nothing": lambda: lab_tools.deploy(inventory, "--data", "server_name=bench.example _"),
        "maintainer recreated (its configuration)": lambda: compose("up -d --wait --force-recreate maintainer"),
        "docker compose restart api (not a deploy; for comparison)": lambda: compose("restart api"),
        "api recreated in place (not a deploy; for comparison)": lambda: compose("up -d --wait --force-recreate api"),
        "db_production recreated (e.g. its image)": lambda: compose("up -d --wait --force-recreate db_production"),
        "nginx recreated (e.g. its image)": lambda: compose("up -d --wait --force-recreate nginx"),
    }
    results = {}
    for name, change in changes.items():
        _, load = lab_tools.under_load(host.address, change, settle=seconds)
        results[name] = {"requests": load.requests, "failed": len(load.failures),
                         "longest_s": round(load.longest, 3), "failing_for_s": round(load.window, 2),
                         "failures": dict(collections.Counter(load.failures))}
        wait_ready(host)
    lab_tools.deploy(inventory)  # back to the declared state
    return results


def wait_ready(host: TestHost, timeout: float = 120) -> None:
    """Until every service is ready by the product's own rule, read as `kono.cli.status` reads it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = host.ssh(commands.in_dir(lab_tools.PROJECT_DIR, commands.services_state(lab_tools.DEFAULTS["compose_project"])),
                       user=lab_tools.DEPLOY_USER).stdout
        if not unready(parse_services(out.splitlines()), lab_tools.DEFAULT_SERVICES):
            return
        time.sleep(1)
    raise RuntimeError("the stack did not become ready again")


def count_remote_commands(inventory: Path) -> int:
    run = lab_tools.deploy(inventory, "-vv")
    return len(re.findall(r"^\s*\[[^\]]+\] >>> ", run.output, flags=re.M))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 host, 1 run of each: quick, for CI")
    parser.add_argument("--runs", type=int, default=7, help="interleaved rounds of the no-op measurements")
    parser.add_argument("--out", type=Path, default=Path("bench/latest.json"))
    parser.add_argument("--table", type=Path, help="print the tables of a stored run (its JSON) and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    runs = 1 if args.smoke else args.runs
    fleet = [1] if args.smoke else [1, 5, 10]

    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
                    f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores",
                    "command": "python -m bench.run" + (" --smoke" if args.smoke else f" --runs {runs}"),
                    "runs": runs}
    with Lab() as lab, lab_tools.GitServer(lab) as git:
        hosts = [lab.boot() for _ in range(max(fleet))]
        passwords = {login: f"{login}-bench-Pa55" for login in lab_tools.MAINTAINERS}
        lab_tools.write_maintainer_passwords(lab, passwords)
        repos = {"api_repo": git.repo("api"), "app_repo": git.repo("app")}  # the same for every inventory
        inventories = {size: lab_tools.write_inventory(lab, hosts[:size], lab.workdir / f"fleet{size}.py", **repos)
                       for size in fleet}
        one = inventories[1]
        result["fresh_provision_s"] = provision(lab, hosts[:1], one)
        if len(hosts) > 1:  # the others together: like a team adding hosts to one it had
            provision(lab, hosts[1:], lab_tools.write_inventory(lab, hosts[1:], lab.workdir / "rest.py", **repos))

        measurements: dict[str, tuple] = {}
        for size in fleet:
            measurements[f"noop {size}"] = (noop_deploy, inventories[size], "--parallel", str(size))
            measurements[f"exec {size}"] = (exec_true, inventories[size])
            measurements[f"floor {size}"] = (pyinfra_floor, inventories[size], "--parallel", str(size))
        result["times_s"] = interleaved(runs, measurements)
        result["phases_s"] = {}
        for size in sorted({1, max(fleet)}):
            runs_phases = [phases(*timeline(inventories[size], "deploy.py", "--parallel", str(size)))
                           for _ in range(1 if args.smoke else 3)]
            result["phases_s"][size] = {name: statistics.median(p[name] for p in runs_phases)
                                        for name in runs_phases[0]}
        result["remote_commands"] = count_remote_commands(one)
        result["idle_cpu_percent"] = idle_cpu_percent(hosts[0], 10 if args.smoke else 120)
        result["under_load"] = zero_downtime(hosts[0], one, git, 1.0 if args.smoke else 3.0)

    median = {name: statistics.median(values) for name, values in result["times_s"].items()}
    result["noop_ratio"] = median["noop 1"] / median["exec 1"]
    result["fleet_ratio"] = {size: median[f"noop {size}"] / median["noop 1"] for size in fleet}
    # The same ratio for pyinfra itself connecting and running `true`: what a fleet costs anyway.
    result["fleet_exec_true_ratio"] = {size: median[f"exec {size}"] / median["exec 1"] for size in fleet}
    result["fleet_floor_ratio"] = {size: median[f"floor {size}"] / median["floor 1"] for size in fleet}
    parts = result["fresh_provision_s"]
    result["provision_ratio"] = sum(parts.values()) / sum(s for part, s in parts.items() if not part.startswith("ours"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


def table(r: dict) -> str:
    def target(key: str, value: float) -> str:
        return f"<= {TARGETS[key]}{'x' if key != 'remote_commands' else ''}: " + \
            ("met" if value <= TARGETS[key] else "MISSED")

    times, parts = r["times_s"], r["fresh_provision_s"]
    # A real host pulls the official images instead of building the doubles: the ratio without them.
    builds = sum(seconds for part, seconds in parts.items() if part.startswith("image builds"))
    unavoidable = sum(seconds for part, seconds in parts.items() if not part.startswith("ours"))
    without_builds = (sum(parts.values()) - builds) / (unavoidable - builds)
    lines = [
        f"kono-infra benchmark, {r['date']}, {r['machine']}: `{r['command']}` "
        f"(median of {r['runs']} interleaved runs, spread min to max)",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| no-op redeploy, 1 host | {spread(times['noop 1'])} = {r['noop_ratio']:.2f}x `exec -- true` "
        f"({spread(times['exec 1'])}) | {target('noop_ratio', r['noop_ratio'])} |",
        f"| &nbsp; pyinfra's floor for its shape (bench/pyinfra_floor.py), 1 host | {spread(times['floor 1'])} | |",
    ]
    for key, ratio in r["fleet_ratio"].items():
        size = int(key)  # an int here, a string once stored as JSON
        if size != 1:
            lines.append(f"| no-op redeploy, {size} hosts in parallel | {spread(times[f'noop {size}'])} = {ratio:.2f}x "
                         f"one host (`exec -- true`: {spread(times[f'exec {size}'])} = "
                         f"{r['fleet_exec_true_ratio'][key]:.2f}x; pyinfra's floor: {spread(times[f'floor {size}'])} = "
                         f"{r['fleet_floor_ratio'][key]:.2f}x) | "
                         f"{target('ten_hosts_ratio', ratio) if size == 10 else ''} |")
    lines += [
        f"| remote commands in a no-op redeploy | {r['remote_commands']} | "
        f"{target('remote_commands', r['remote_commands'])} |",
        f"| fresh host -> healthy stack | {sum(parts.values()):.1f} s = {r['provision_ratio']:.2f}x its "
        f"unavoidable parts | {target('provision_ratio', r['provision_ratio'])} |",
        f"| &nbsp; the same without building the test doubles (a real host pulls the images) | "
        f"{sum(parts.values()) - builds:.1f} s = {without_builds:.2f}x its unavoidable parts | |",
    ]
    lines += [f"| &nbsp; {part} | {seconds:.1f} s | |" for part, seconds in parts.items()]
    lines.append(f"| idle CPU of a deployed host's containers (healthchecks included) | "
                 f"{r['idle_cpu_percent']:.2f}% of one core | |")
    sizes = list(r["phases_s"])
    lines += ["", "Where a no-op redeploy's time goes (pyinfra -v, median of 3; each operation runs on every host, "
              "then the next):", "", "| phase | " + " | ".join(f"{size} host(s)" for size in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    for name in r["phases_s"][sizes[0]]:
        cell = name.replace("|", "\\|")  # operation names hold "deploy | operation"
        lines.append(f"| {cell} | " + " | ".join(f"{r['phases_s'][size].get(name, 0):.2f} s" for size in sizes) + " |")
    lines += ["", "Under load (4 clients, /api/health and /api/greeting through nginx):", "",
              "| change | requests | failed | longest answer | failing for |", "|---|---|---|---|---|"]
    for change, m in r["under_load"].items():
        lines.append(f"| {change} | {m['requests']} | {m['failed']} | {m['longest_s']:.2f} s | {m['failing_for_s']:.2f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
