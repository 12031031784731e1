"""Facts' process(): from output captured on a real host to the data the operations decide on."""

import hashlib
import json

import pytest
from pyinfra.api.exceptions import OperationError

from kono import commands, host_state
from kono.passwords import PasswordHashFile, hashed_logins
from kono.secrets import ConfigTree
from kono.stack import FileDigests, StackState, parse_services

def container(service: str, state: str, status: str) -> dict:
    """One entry of the Engine API's ``GET /containers/json``, as a deployed test host answered it
    (docker 26, compose 2.26), the fields we do not read left out."""
    return {"Id": "35816a203a83b1d580ef3d806c64d58741a6b585ce08ce6d426d7722fc82e663",
            "Names": [f"/kono-{service}-1"], "Image": "mysql:8.4",
            "Labels": {"com.docker.compose.oneoff": "False", "com.docker.compose.project": "kono",
                       "com.docker.compose.service": service, "kono.secrets": "76c4bcfec2f6551d"},
            "State": state, "Status": status}


# Captured from a deployed test host (digests shortened where they do not matter; the starting and
# unhealthy statuses in the shape of moby's daemon/container/health.go, Health.String()).
FILE_LINES = ["07540a67df27e640a6d93c175d22ba72b29d2e21ff3c0d54b899c282ff521d5b  ./api/kono-api.sh",
              "041cf857db52f6f0c4af5ffb438dfdd7355feb11cfa0864b6cae1fa3d8eb39a9  ./compose.yaml"]
PROJECT_DIGEST = hashlib.sha256("".join(line + "\n" for line in FILE_LINES).encode()).hexdigest()
CONTAINERS = [container("api", "running", "Up 11 minutes (healthy)"),
              container("db_dev", "running", "Up 11 minutes (healthy)"),
              container("db_production", "running", "Up 2 seconds (health: starting)"),
              container("maintainer", "exited", "Exited (0) Less than a second ago"),
              container("nginx", "running", "Up 5 minutes (unhealthy)"),
              container("worker", "running", "Up About an hour")]
STACK_STATE_OUTPUT = ["digest", *FILE_LINES, f"applied {PROJECT_DIGEST}", *"""\
recorded api 0a1b2c3d4e5f6a7b node:22-slim 9f8e7d6c5b4a3f2e fedcba0987654321
recorded nginx 1111111111111111 nginx:1.27 2222222222222222 -
secrets api fedcba0987654321d3038a6d22cb3db57a44f914c52c417b1776e119973babde  -""".splitlines(),
                      "containers " + json.dumps(CONTAINERS, separators=(",", ":"))]


def test_stack_state_reads_digests_and_each_services_state_and_health():
    state = StackState().process(STACK_STATE_OUTPUT)
    assert state["digest"] == state["applied"] == PROJECT_DIGEST
    assert state["services"] == {
        "api": ("running", "healthy"), "db_dev": ("running", "healthy"),
        "db_production": ("running", "starting"), "maintainer": ("exited", ""),
        "nginx": ("running", "unhealthy"), "worker": ("running", ""),
    }
    assert state["recorded"] == {"api": "0a1b2c3d4e5f6a7b node:22-slim 9f8e7d6c5b4a3f2e fedcba0987654321",
                                 "nginx": "1111111111111111 nginx:1.27 2222222222222222 -"}
    assert state["secrets"] == {"api": "fedcba0987654321"}


def test_stack_state_of_a_host_never_brought_up():
    state = StackState().process(["digest", "applied ", "containers []"])
    assert state == {"digest": hashlib.sha256(b"").hexdigest(), "applied": None, "services": {},
                     "recorded": {}, "secrets": {}, "swarm_services": {}, "swarm_networks": [],
                     "swarm_placement": {}, "swarm_nodes": []}


def test_no_containers_when_docker_is_down_and_a_clear_error_without_curl():
    assert parse_services(["containers "]) == {}
    with pytest.raises(OperationError, match="curl is missing on the host.*bootstrap"):
        parse_services(["containers no-curl"])
    with pytest.raises(OperationError, match="container list could not be read"):
        parse_services(['containers [{"Labels": '])  # cut short


def test_file_digests_mark_missing_files_as_none():
    digests = FileDigests().process([
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  compose.yaml",
        "- nginx/default.conf",
        "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae  maintainer/keys/a b",
    ])
    assert digests == {"compose.yaml": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                       "nginx/default.conf": None,
                       "maintainer/keys/a b": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}


def test_config_tree_has_type_mode_and_size_never_content():
    tree = ConfigTree().process(["d 700 4096 config", "d 700 4096 config/dev",
                                 "f 600 32 config/dev/db_root_password", "f 644 0 config/dev/empty"])
    assert tree == {"config": ("d", "700", 4096), "config/dev": ("d", "700", 4096),
                    "config/dev/db_root_password": ("f", "600", 32), "config/dev/empty": ("f", "644", 0)}


def test_hashed_logins_are_names_only():
    assert hashed_logins("sysop:$6$rounds=100000$salt$hash\nwheel:$6$x$y\n\n") == {"sysop", "wheel"}


def test_the_last_backup_record_is_read_for_status_and_drift():
    import datetime
    from kono.backup import MAX_AGE, backup_age, parse_last_backup
    last = parse_last_backup("2026-11-25T03:00:07Z 123456 2048 1a2b3c4d 5e6f7a8b 9c0d1e2f\n")
    assert last == {"time": datetime.datetime(2026, 11, 25, 3, 0, 7, tzinfo=datetime.timezone.utc),
                    "bytes": 123456, "added": 2048, "snapshots": ["1a2b3c4d", "5e6f7a8b", "9c0d1e2f"]}
    assert parse_last_backup("") is None
    assert backup_age(last, last["time"] + MAX_AGE) == MAX_AGE


def test_the_password_hash_file_reads_back_as_written():
    written = "sysop:$6$rounds=100000$salt$hash\nwheel:$6$rounds=100000$salt2$hash2\n"
    assert PasswordHashFile().process(written.splitlines()) == written


def test_a_read_of_the_host_cut_short_fails_rather_than_deciding_on_half_of_it():
    with pytest.raises(OperationError, match="read 1 of 3 sections"):
        host_state.split_sections(["taken", commands.section_marker(0), "d 700 4096 config"], 3)


def _snapshot(short_id: str, part: str, time: str) -> dict:
    return {"id": short_id + "0" * 56, "short_id": short_id, "time": time, "tags": ["kono", part]}


RUNS = [  # two daily backups, each three snapshots a few seconds apart, as restic lists them
    _snapshot("aaaa0001", "db_production", "2026-11-30T03:00:01.123456789+00:00"),
    _snapshot("aaaa0002", "db_dev", "2026-11-30T03:00:04Z"),
    _snapshot("aaaa0003", "files", "2026-11-30T03:00:09Z"),
    _snapshot("bbbb0001", "db_production", "2026-12-01T03:00:01Z"),
    _snapshot("bbbb0002", "db_dev", "2026-12-01T03:00:05Z"),
    _snapshot("bbbb0003", "files", "2026-12-01T03:00:08Z"),
]


def test_a_snapshot_names_its_whole_backup_and_latest_the_newest():
    from kono.backup import snapshot_set
    assert snapshot_set(RUNS, "latest") == ("bbbb0001", "bbbb0002", "bbbb0003")
    for member in ("aaaa0001", "aaaa0002", "aaaa0003"):  # any of an older run's three: that run, whole
        assert snapshot_set(RUNS, member) == ("aaaa0001", "aaaa0002", "aaaa0003")
    assert snapshot_set(RUNS, "aaaa0003" + "0" * 8) == ("aaaa0001", "aaaa0002", "aaaa0003")  # a longer id
    pinned = [{**s, "id": "cccc" + s["id"][4:], "short_id": "cccc" + s["short_id"][4:], "original": s["id"],
               "tags": s["tags"] + ["keep"]} if s["short_id"].startswith("aaaa") else s for s in RUNS]
    # Pinned (tagged keep), a snapshot has a new id; the one the operator noted before still finds it.
    assert snapshot_set(pinned, "aaaa0002") == ("cccc0001", "cccc0002", "cccc0003")


def test_a_restore_pins_the_newest_snapshot_of_each_part_it_goes_back_from():
    from kono.backup import displaced_by_restore
    # Back to the older run: the newer run would be displaced by the restored state's backup today.
    assert displaced_by_restore(RUNS, ("aaaa0001", "aaaa0002", "aaaa0003")) == ("bbbb0001", "bbbb0002", "bbbb0003")
    assert displaced_by_restore(RUNS, ("bbbb0001", "bbbb0002", "bbbb0003")) == ()  # the newest: nothing newer
    assert displaced_by_restore(RUNS, ("aaaa0001", "bbbb0002", "bbbb0003")) == ("bbbb0001",)
    already = [{**s, "tags": s["tags"] + ["keep"]} if s["short_id"] == "bbbb0002" else s for s in RUNS]
    assert displaced_by_restore(already, ("aaaa0001", "aaaa0002", "aaaa0003")) == ("bbbb0001", "bbbb0003")


@pytest.mark.parametrize("snapshots, wanted, said", [
    (RUNS, "cccc", "no snapshot 'cccc' in the repository"),
    (RUNS, "aaaa000", "more than one snapshot 'aaaa000'"),
    ([s for s in RUNS if s["short_id"] != "aaaa0002"], "aaaa0001",
     "the backup that snapshot aaaa0001 belongs to has no db_dev snapshot"),
    ([], "latest", "the repository holds no db_production, db_dev, files snapshot"),
])
def test_a_snapshot_set_that_cannot_be_found_says_why(snapshots, wanted, said):
    from kono.backup import snapshot_set
    with pytest.raises(ValueError, match=said):
        snapshot_set(snapshots, wanted)
