"""Facts' process(): from output captured on a real host to the data the operations decide on."""

import pytest
from pyinfra.api.exceptions import OperationError

from kono import commands, host_state
from kono.secrets import ConfigTree, HashedLogins, PasswordHashFile
from kono.stack import FileDigests, StackState

# Captured from a deployed test host (digests shortened where they do not matter; the starting and
# unhealthy statuses in the shape of moby's daemon/container/health.go, Health.String()).
STACK_STATE_OUTPUT = """\
digest 5d41402abc4b2a76b9719d911017c592aaf0c5c9e4b3a1e1d1b1e1f0a1b2c3d4
applied 5d41402abc4b2a76b9719d911017c592aaf0c5c9e4b3a1e1d1b1e1f0a1b2c3d4
recorded api 0a1b2c3d4e5f6a7b node:22-slim 9f8e7d6c5b4a3f2e fedcba0987654321
recorded nginx 1111111111111111 nginx:1.27 2222222222222222 -
secrets api fedcba0987654321d3038a6d22cb3db57a44f914c52c417b1776e119973babde  -
service api running Up 11 minutes (healthy)
service db_dev running Up 11 minutes (healthy)
service db_production running Up 2 seconds (health: starting)
service maintainer exited Exited (0) Less than a second ago
service nginx running Up 5 minutes (unhealthy)
service worker running Up About an hour""".splitlines()


def test_stack_state_reads_digests_and_each_services_state_and_health():
    state = StackState().process(STACK_STATE_OUTPUT)
    assert state["digest"] == state["applied"] == STACK_STATE_OUTPUT[0].split()[1]
    assert state["services"] == {
        "api": ("running", "healthy"), "db_dev": ("running", "healthy"),
        "db_production": ("running", "starting"), "maintainer": ("exited", ""),
        "nginx": ("running", "unhealthy"), "worker": ("running", ""),
    }
    assert state["recorded"] == {"api": "0a1b2c3d4e5f6a7b node:22-slim 9f8e7d6c5b4a3f2e fedcba0987654321",
                                 "nginx": "1111111111111111 nginx:1.27 2222222222222222 -"}
    assert state["secrets"] == {"api": "fedcba0987654321"}


def test_stack_state_of_a_host_never_brought_up():
    state = StackState().process(["digest 0123", "applied "])
    assert state == {"digest": "0123", "applied": None, "services": {}, "recorded": {}, "secrets": {}}


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
    assert HashedLogins().process(["sysop", "wheel", ""]) == ["sysop", "wheel"]


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
