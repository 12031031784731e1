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

TARGETS = {"noop_ratio": 3.0, "remote_commands": 40, "ten_hosts_ratio": 1.5, "overhead_share": 0.20}


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.monotonic()
    result = function(*args, **kwargs)
    return time.monotonic() - start, result


def median_time(runs: int, function, *args) -> float:
    return statistics.median(timed(function, *args)[0] for _ in range(runs))


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


def provision(lab: Lab, hosts: list[TestHost], inventory: Path) -> dict[str, float]:
    """Fresh hosts -> healthy stacks, timed by part."""
    parts: dict[str, float] = {}
    parts["bootstrap (Docker install)"], _ = timed(lab_tools.bootstrap, inventory, "--parallel", str(len(hosts)))
    with ThreadPoolExecutor(len(hosts)) as pool:
        parts["image builds (test doubles)"], _ = timed(lambda: list(pool.map(lab_tools.load_images, hosts)))
    deploy_time, _ = timed(lab_tools.deploy, inventory, "--parallel", str(len(hosts)))
    up = max(float(h.ssh("cat /srv/kono/.kono/last-up-seconds", user="kono").stdout) for h in hosts)
    parts["compose up"] = up
    parts["deploy overhead (ours)"] = deploy_time - up
    return parts


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
        out = host.ssh(commands.in_dir(lab_tools.PROJECT_DIR, commands.services_state()),
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
    parser.add_argument("--runs", type=int, default=5, help="runs per no-op measurement (median)")
    parser.add_argument("--out", type=Path, default=Path("bench/latest.json"))
    args = parser.parse_args()
    runs = 1 if args.smoke else args.runs
    fleet = [1] if args.smoke else [1, 5, 10]

    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
                    f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores",
                    "smoke": args.smoke, "runs": runs}
    with Lab() as lab, lab_tools.GitServer(lab) as git:
        hosts = [lab.boot() for _ in range(max(fleet))]
        passwords = {login: f"{login}-bench-Pa55" for login in lab_tools.MAINTAINERS}
        lab_tools.write_maintainer_passwords(lab, passwords)
        repos = {"api_repo": git.repo("api"), "app_repo": git.repo("app")}  # the same for every inventory
        one = lab_tools.write_inventory(lab, hosts[:1], lab.workdir / "one.py", **repos)
        parts = provision(lab, hosts[:1], one)
        result["fresh_provision_s"] = {"total": sum(parts.values()), **parts}
        if len(hosts) > 1:
            rest = lab_tools.write_inventory(lab, hosts[1:], lab.workdir / "rest.py", **repos)
            provision(lab, hosts[1:], rest)

        result["noop_deploy_s"] = median_time(runs, noop_deploy, one)
        result["exec_true_s"] = median_time(runs, exec_true, one)
        result["noop_ratio"] = result["noop_deploy_s"] / result["exec_true_s"]
        result["remote_commands"] = count_remote_commands(one)
        result["idle_cpu_percent"] = idle_cpu_percent(hosts[0], 10 if args.smoke else 120)
        result["under_load"] = zero_downtime(hosts[0], one, git, 1.0 if args.smoke else 3.0)

        result["fleet_noop_s"], result["fleet_exec_true_s"] = {}, {}
        for size in fleet:
            inventory = lab_tools.write_inventory(lab, hosts[:size], lab.workdir / f"fleet{size}.py", **repos)
            result["fleet_noop_s"][size] = median_time(runs, noop_deploy, inventory, "--parallel", str(size))
            result["fleet_exec_true_s"][size] = median_time(runs, exec_true, inventory)
        result["fleet_ratio"] = {size: t / result["fleet_noop_s"][1] for size, t in result["fleet_noop_s"].items()}
        # The same ratio for pyinfra itself connecting and running `true`: what a fleet costs anyway.
        result["fleet_exec_true_ratio"] = {size: t / result["fleet_exec_true_s"][1]
                                           for size, t in result["fleet_exec_true_s"].items()}

    total = result["fresh_provision_s"]["total"]
    result["overhead_share"] = result["fresh_provision_s"]["deploy overhead (ours)"] / total
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


def table(r: dict) -> str:
    def target(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = [
        f"kono-infra benchmark, {r['date']}, {r['machine']}, {'smoke' if r['smoke'] else 'full'} "
        f"(median of {r['runs']})",
        "| figure | value | target |",
        "|---|---|---|",
        f"| no-op redeploy | {r['noop_deploy_s']:.2f} s = {r['noop_ratio']:.2f}x `exec -- true` "
        f"({r['exec_true_s']:.2f} s) | <= {TARGETS['noop_ratio']}x: {target(r['noop_ratio'] <= TARGETS['noop_ratio'])} |",
        f"| remote commands in a no-op redeploy | {r['remote_commands']} | <= {TARGETS['remote_commands']}: "
        f"{target(r['remote_commands'] <= TARGETS['remote_commands'])} |",
        f"| idle CPU of a deployed host's containers (healthchecks included) | "
        f"{r['idle_cpu_percent']:.2f}% of one core | |",
        f"| fresh host -> healthy stack | {r['fresh_provision_s']['total']:.1f} s | |",
    ]
    for part, seconds in r["fresh_provision_s"].items():
        if part != "total":
            lines.append(f"| &nbsp; {part} | {seconds:.1f} s | |")
    lines.append(f"| our overhead share of a fresh provision | {r['overhead_share']:.0%} | < "
                 f"{TARGETS['overhead_share']:.0%}: {target(r['overhead_share'] < TARGETS['overhead_share'])} |")
    for size, ratio in r["fleet_ratio"].items():
        ok = "" if size != 10 else f"<= {TARGETS['ten_hosts_ratio']}x: {target(ratio <= TARGETS['ten_hosts_ratio'])}"
        lines.append(f"| no-op redeploy, {size} host(s) in parallel | {r['fleet_noop_s'][size]:.2f} s = "
                     f"{ratio:.2f}x one host (`exec -- true`: {r['fleet_exec_true_s'][size]:.2f} s = "
                     f"{r['fleet_exec_true_ratio'][size]:.2f}x) | {ok} |")
    lines += ["", "Under load (4 clients, /api/health and /api/greeting through nginx):", "",
              "| change | requests | failed | longest answer | failing for |", "|---|---|---|---|---|"]
    for change, m in r["under_load"].items():
        lines.append(f"| {change} | {m['requests']} | {m['failed']} | {m['longest_s']:.2f} s | {m['failing_for_s']:.2f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
