"""The benchmark's reading of pyinfra's -v output (bench/run.py): where a run's time went."""

from bench.run import APT_WORK, apt_seconds, phases
from tests.lab import REPO

LINES = [(0.10, "--> Loading config..."), (0.15, "--> Connecting to hosts..."), (0.30, "    [10.0.0.2] Connected"),
         (0.35, "--> Preparing operation files..."), (0.40, "    Loading: deploy.py"),
         (0.50, "--> Starting operation: Docker engine | Install docker.io, docker-compose"),
         (0.90, "    [10.0.0.2] Success"), (1.00, "--> Starting operation: Deploy user kono"),
         (1.20, "--> Starting operation: Security updates | unattended-upgrades"),
         (1.60, "--> Results:"), (1.70, "--> Disconnecting from hosts...")]


def test_each_phase_runs_until_the_next_one_starts_and_they_add_up():
    found = phases(2.0, LINES)
    assert list(found) == ["start-up: Python, imports, inventory", "connect", "prepare: the deploy file, per host",
                           "op: Docker engine | Install docker.io, docker-compose", "op: Deploy user kono",
                           "op: Security updates | unattended-upgrades", "results, disconnect, exit"]
    assert [round(s, 2) for s in found.values()] == [0.15, 0.2, 0.15, 0.5, 0.2, 0.4, 0.4]
    assert round(sum(found.values()), 6) == 2.0


def test_apt_work_is_package_lists_installs_and_updates_only():
    assert round(apt_seconds(2.0, LINES), 2) == 0.9
    assert not APT_WORK.search("Docker's apt signing key")
    assert APT_WORK.search("Apply pending security updates now (3 pending; a Docker restart is announced)")


def test_the_benchmark_page_holds_exactly_what_the_scripts_print_for_the_stored_runs():
    import json
    from bench import backup, cluster, monitoring, pitr, run
    page = (REPO / "bench" / "README.md").read_text()
    assert run.table(json.loads((REPO / "bench" / "latest.json").read_text())) in page
    assert backup.table(json.loads((REPO / "bench" / "backup-latest.json").read_text())) in page
    assert pitr.table(json.loads((REPO / "bench" / "pitr-latest.json").read_text())) in page
    assert cluster.table(json.loads((REPO / "bench" / "cluster-latest.json").read_text())) in page
    assert monitoring.table(json.loads((REPO / "bench" / "monitoring-latest.json").read_text())) in page
