"""Monitoring benchmark: what the monitoring services cost a host while nothing happens (issue #28:
at most 2% of a core and 200 MB together), beside the rest of the stack in the same windows.

    sudo .venv/bin/python -m bench.monitoring [--rounds 5] [--seconds 60]

One host, deployed with monitoring = True, alert_webhook and alert_heartbeat (both to a receiver on
the lab's bridge), left to settle for --settle seconds (Prometheus's first blocks, the first
heartbeats); then --rounds windows of --seconds each. Per window and container: CPU time from its
cgroup (healthchecks included: `docker exec` joins it), and the resident memory of its processes
(page cache left out, as `docker stats` leaves out inactive file pages). Reports the median and spread over the
windows, and the largest memory seen. Writes bench/monitoring-latest.json; ``--table FILE`` prints a
stored run's table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.backup import machine
from tests import lab as lab_tools
from tests.lab import WebhookReceiver
from tests.testhost import Lab

TARGETS = {"cpu_percent": 2.0, "memory_mb": 200.0}  # issue #28, the monitoring services together
MONITORING = ("node_exporter", "metrics", "prometheus", "alertmanager")

# Per container of the project: its service, CPU time (microseconds) and its processes' resident
# memory (kB). The test host's nested cgroups have no memory controller (no memory.current), so
# memory is the RSS of the processes in the container's cgroup, which leaves out page cache.
CONTAINERS_USAGE = (
    "for c in $(docker ps -q --filter label=com.docker.compose.project={project}); do "
    "set -- $(docker inspect -f '{{{{index .Config.Labels \"com.docker.compose.service\"}}}} {{{{.State.Pid}}}}' $c); "
    "d=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$2/cgroup); "
    "echo $1 $(awk '/^usage_usec/ {{print $2}}' $d/cpu.stat) "
    "$(for p in $(cat $d/cgroup.procs); do awk '/^VmRSS/ {{print $2}}' /proc/$p/status 2>/dev/null; done "
    "| awk '{{s += $1}} END {{print s + 0}}'); "
    "done"
)


def usage(host) -> dict[str, tuple[int, int]]:
    """{service: (CPU microseconds, resident memory in bytes)}."""
    out = host.ssh(CONTAINERS_USAGE.format(project=lab_tools.DEFAULTS["compose_project"]),
                   user=lab_tools.DEPLOY_USER).stdout
    found = {}
    for line in out.splitlines():
        service, cpu, rss_kb = line.split()
        found[service] = (int(cpu), int(rss_kb) * 1024)
    missing = set(MONITORING) - set(found)
    if missing:
        raise RuntimeError(f"no running container for {sorted(missing)}: {out}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--settle", type=float, default=120)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("monitoring-latest.json"))
    parser.add_argument("--table", type=Path, help="print the table of a stored run and exit")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "rounds": args.rounds,
                    "seconds": args.seconds, "windows": []}
    with Lab() as lab, lab_tools.GitServer(lab) as git, WebhookReceiver(lab) as receiver:
        host = lab.boot()
        lab_tools.write_maintainer_passwords(lab, {login: f"{login}-bench-Pa55" for login in lab_tools.MAINTAINERS})
        alerts = lab.workdir / "secrets" / "alerts"
        alerts.mkdir(parents=True, exist_ok=True)
        (alerts / "webhook_url").write_text(receiver.url("team") + "\n")
        (alerts / "heartbeat_url").write_text(receiver.url("heartbeat") + "\n")
        inventory = lab_tools.write_inventory(lab, [host], lab.workdir / "one.py", api_repo=git.repo("api"),
                                              app_repo=git.repo("app"), monitoring=True, alert_webhook=True,
                                              alert_heartbeat=True)
        lab_tools.bootstrap(inventory)
        lab_tools.load_images(host, monitoring=True)
        lab_tools.deploy(inventory)
        time.sleep(args.settle)
        for _ in range(args.rounds):
            before, start = usage(host), time.monotonic()
            time.sleep(args.seconds)
            after, took = usage(host), time.monotonic() - start
            window = {service: {"cpu_percent": (after[service][0] - before[service][0]) / 1e6 / took * 100,
                                "memory_bytes": after[service][1]} for service in after if service in before}
            result["windows"].append(window)
            print(json.dumps({s: round(w["cpu_percent"], 3) for s, w in window.items()}), flush=True)
        result["heartbeats"] = len(receiver.posts("heartbeat"))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


def table(r: dict) -> str:
    """Per monitoring service and for them together (and the rest of the stack, beside): CPU, median
    and spread over the windows; memory, median and the largest seen."""
    windows = r["windows"]

    def cpu(services) -> list[float]:
        return [sum(w[s]["cpu_percent"] for s in services if s in w) for w in windows]

    def memory(services) -> list[float]:
        return [sum(w[s]["memory_bytes"] for s in services if s in w) / 1e6 for w in windows]

    def row(label: str, services, target: bool = False) -> str:
        c, m = cpu(services), memory(services)
        cells = (f"| {label} | {statistics.median(c):.2f}% ({min(c):.2f} to {max(c):.2f}) | "
                 f"{statistics.median(m):.0f} MB (largest {max(m):.0f}) |")
        if target:
            met = [statistics.median(c) <= TARGETS["cpu_percent"], max(m) <= TARGETS["memory_mb"]]
            cells += (f" <= {TARGETS['cpu_percent']:g}% and <= {TARGETS['memory_mb']:g} MB: "
                      f"{'met' if all(met) else 'MISSED'} |")
        else:
            cells += " |"
        return cells

    others = sorted({s for w in windows for s in w} - set(MONITORING))
    lines = [f"kono-infra monitoring benchmark, {r['date']}, {r['machine']}: one host, idle, "
             f"{len(windows)} windows of {r['seconds']:.0f} s (median and spread; CPU in % of one core)", "",
             "| containers | CPU | memory | target |", "|---|---|---|---|",
             row("the monitoring services together", MONITORING, target=True),
             *(row(f"&nbsp; {service}", [service]) for service in MONITORING),
             row(f"the rest of the stack ({len(others)} containers), beside", others)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
