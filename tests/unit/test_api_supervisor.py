"""files/api/start.js, the api container's main process, run here with node against release
folders in a temporary directory: releases swap under load without a failed request, a release
that fails its health check never gets one, and SIGTERM drains."""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kono.services import API_HEALTH_PATH, api_environment
from tests.lab import REPO

RELEASE = """const http = require('http');
const VERSION = %s;
if (%s) process.exit(3);  // a release that dies at start
http.createServer((req, res) => {
  setTimeout(() => {  // every request takes a moment: some are always in flight during a swap
    res.writeHead(req.url === process.env.KONO_API_HEALTH_PATH ? 200 : 404, {'Content-Type': 'application/json'});
    res.end(JSON.stringify({version: VERSION}) + '\\n');
  }, 20);
}).listen(Number(process.env.PORT));
"""


def free_port() -> int:
    """A port whose next three are free too (the workers', the status port), below the ephemeral range that the load's
    own client sockets take their ports from, as the container's 3000 is."""
    for base in range(20000 + os.getpid() % 5000, 30000, 4):
        try:
            for port in range(base, base + 4):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no four free ports in 20000-30000")


class Api:
    def __init__(self, root: Path, port: int, health_path: str = API_HEALTH_PATH, releases_from: str = "",
                 releases_kept: int = 5):
        self.root, self.port, self.health_path = root, port, health_path
        # The container's environment as compose gets it (kono/services.py), quicker for a test.
        env = {**os.environ, **api_environment(port, releases_from, releases_kept), "KONO_API_HEALTH_PATH": health_path,
               "KONO_API_ROOT": str(root), "KONO_API_LOG_DIR": str(root / "log"),
               "KONO_API_HEALTH_TIMEOUT_MS": "5000", "KONO_API_LINGER_MS": "300"}
        self.proc = subprocess.Popen(["node", str(REPO / "files/api/start.js")], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def release(self, name: str, dies: bool = False) -> None:
        folder = self.root / "releases" / name
        folder.mkdir(parents=True)
        (folder / "server.js").write_text(RELEASE % (json.dumps(name), "true" if dies else "false"))

    def switch(self, name: str) -> None:
        staged = self.root / ".current.new"
        staged.symlink_to(f"releases/{name}")
        staged.rename(self.root / "current")

    def get(self) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", self.health_path)
            response = connection.getresponse()
            return response.status, json.loads(response.read()).get("version", "")
        finally:
            connection.close()

    def status(self) -> dict:
        path = self.root / ".kono-status"
        return json.loads(path.read_text()) if path.exists() else {}

    def says(self) -> dict:
        """What the supervisor answers on its status port (what kono-deploy reads)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port + 3, timeout=5)
        try:
            connection.request("GET", "/")
            return json.loads(connection.getresponse().read())
        except OSError:
            return {}
        finally:
            connection.close()

    def wait(self, predicate, timeout: float = 15):
        end = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < end, (self.status(), self.proc.poll())
            time.sleep(0.05)


@pytest.fixture
def api(tmp_path):
    api = Api(tmp_path, free_port())
    api.wait(lambda: api.status().get("state") == "active")  # the placeholder
    yield api
    if api.proc.poll() is None:
        api.proc.terminate()
    api.proc.wait(timeout=30)


class Load:
    """Four clients in a loop, bounded by count and time; every error and non-2xx is counted."""

    def __init__(self, api: Api, clients: int = 4, seconds: float = 20, most: int = 20000):
        self.api, self.results, self.stop = api, [], threading.Event()
        self.deadline, self.most = time.monotonic() + seconds, most
        self.threads = [threading.Thread(target=self._loop) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _loop(self):
        while not self.stop.is_set() and time.monotonic() < self.deadline and len(self.results) < self.most:
            try:
                self.results.append(self.api.get())
            except OSError as error:
                self.results.append((0, type(error).__name__))

    def finish(self) -> list:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        return self.results


def test_releases_swap_under_load_without_a_failed_request(api):
    api.release("r1")
    api.release("r2")
    load = Load(api)
    api.switch("r1")
    api.wait(lambda: api.status() == {**api.status(), "release": str(api.root / "releases/r1"), "state": "active"})
    time.sleep(0.5)
    api.switch("r2")
    api.wait(lambda: api.status().get("release", "").endswith("r2"))
    time.sleep(0.5)
    results = load.finish()
    failures = [r for r in results if r[0] != 200]
    assert failures == [] and len(results) > 100
    versions = [version for _, version in results]
    assert versions[-1] == "r2" and "r1" in versions


def test_a_release_that_fails_its_health_check_never_takes_traffic(api):
    api.release("good")
    api.release("broken", dies=True)
    api.switch("good")
    api.wait(lambda: api.status().get("release", "").endswith("good"))
    load = Load(api, seconds=10)
    api.switch("broken")
    api.wait(lambda: api.status().get("state") == "failed")
    time.sleep(0.5)
    results = load.finish()
    assert {r for r in results} == {(200, "good")}
    status = api.status()
    assert status["release"].endswith("broken") and "exited" in status["reason"]
    assert status["serving"].endswith("good")


def test_sigterm_stops_accepting_and_finishes_requests_in_flight(api):
    api.release("r1")
    api.switch("r1")
    api.wait(lambda: api.status().get("release", "").endswith("r1"))
    in_flight = []
    thread = threading.Thread(target=lambda: in_flight.append(api.get()))
    thread.start()
    time.sleep(0.005)
    api.proc.send_signal(signal.SIGTERM)
    thread.join()
    assert in_flight == [(200, "r1")]
    assert api.proc.wait(timeout=10) == 0
    with pytest.raises(OSError):
        api.get()


def test_the_health_path_is_said_once_and_the_compose_file_supervisor_and_kono_deploy_follow(tmp_path, monkeypatch):
    import yaml
    from kono import services, stack
    from tests.lab import settings_of
    monkeypatch.setattr(services, "API_HEALTH_PATH", "/ready-x")
    stack.project_files.cache_clear()
    try:
        api = yaml.safe_load(stack.project_files(settings_of())["compose.yaml"])["services"]["api"]
    finally:
        stack.project_files.cache_clear()
    assert api["environment"]["KONO_API_HEALTH_PATH"] == "/ready-x"
    assert "/ready-x" in api["healthcheck"]["test"][-1] and "/api/health" not in str(api)
    for script in ("files/api/start.js", "files/api/worker.js", "files/maintainer/kono-deploy"):
        assert "/api/health" not in (REPO / script).read_text(), script  # nobody spells it again
    # The supervisor probes the path it is handed: a release answering it goes live.
    supervisor = Api(tmp_path, free_port(), health_path="/ready-x")
    try:
        supervisor.release("r1")
        supervisor.switch("r1")
        supervisor.wait(lambda: supervisor.status().get("release") == str(tmp_path / "releases/r1")
                        and supervisor.status().get("state") == "active")
        assert supervisor.get() == (200, "r1")
    finally:
        supervisor.proc.terminate()
        supervisor.proc.wait(timeout=30)


def test_a_clusters_replica_copies_each_release_the_releases_service_names_and_serves_it(tmp_path):
    """files/api/releases.js serves the maintainer's volume; a replica with its own empty volume follows
    its `current`: it copies a new release, serves it once healthy, keeps the old one when the new one
    fails, goes back with a rollback, keeps releases_kept copies, and says it all on its status port."""
    source = Api(tmp_path / "source", free_port())  # the maintainer's volume (its own supervisor unused)
    source.proc.terminate()
    source.proc.wait(timeout=30)
    replica_port = free_port()
    with socket.socket() as probe:  # the server's: any other free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["node", str(REPO / "files/api/releases.js")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "KONO_API_ROOT": str(source.root), "KONO_RELEASES_PORT": str(port)})
    replica = Api(tmp_path / "replica", replica_port, releases_from=f"http://127.0.0.1:{port}", releases_kept=1)
    try:
        replica.wait(lambda: replica.says().get("state") == "active")
        assert replica.says()["serving"] == ""  # nothing published yet: the placeholder
        for name in ("r1", "r2", "r3"):
            source.release(name)
        source.release("broken", dies=True)
        source.switch("r1")
        replica.wait(lambda: replica.says().get("serving", "").endswith("/releases/r1"))
        assert replica.get() == (200, "r1")
        assert (replica.root / "releases/r1/server.js").read_text() == (source.root / "releases/r1/server.js").read_text()
        source.switch("broken")
        replica.wait(lambda: replica.says().get("state") == "failed")
        said = replica.says()
        assert said["release"].endswith("/releases/broken") and said["serving"].endswith("/releases/r1"), said
        assert replica.get() == (200, "r1")
        source.switch("r2")
        replica.wait(lambda: replica.says().get("serving", "").endswith("/releases/r2"))
        source.switch("r1")  # a rollback: a release it has had
        replica.wait(lambda: replica.says().get("serving", "").endswith("/releases/r1"))
        source.switch("r3")
        replica.wait(lambda: replica.says().get("serving", "").endswith("/releases/r3"))
        # releases_kept (1) copies, and the one it served when r3 came (kept until the next switch).
        assert sorted(p.name for p in (replica.root / "releases").iterdir()) == ["r1", "r3"]
        # The releases service hands out releases alone: no path leaves its releases folder.
        for path in ("/releases/..%2Fsource.tar", "/releases/.hidden.tar", "/current/x", "/releases/nope.tar"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            assert connection.getresponse().status == 404, path
            connection.close()
    finally:
        for proc in (replica.proc, server):
            proc.terminate()
            proc.wait(timeout=30)
