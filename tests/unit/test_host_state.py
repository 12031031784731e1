"""kono/host_state.py: a deploy's reads of a host, in one command, re-read only after a change."""

from types import SimpleNamespace

import pytest

from kono import commands, host_state
from kono.passwords import PasswordHashFile
from kono.secrets import ConfigTree
from kono.stack import FileDigests


class FakeHost:
    """What host_state uses of pyinfra's host: a name, the run's state, and run_shell_command."""

    def __init__(self, answers):
        self.name = "h1"
        self.ops: dict = {}
        self.state = SimpleNamespace(is_executing=True, print_input=False, ops={self: self.ops})
        self.commands: list[str] = []
        self.answers = answers

    def run_shell_command(self, command, **kwargs):
        assert not kwargs.get("print_output"), "a read's output is never printed"
        self.commands.append(command)
        return True, SimpleNamespace(stdout_lines=self.answers(command), stderr_lines=[])

    def operation_changed(self) -> None:
        meta = SimpleNamespace(is_complete=lambda: True, did_change=lambda: True)
        self.ops[len(self.ops)] = SimpleNamespace(operation_meta=meta)


READS = [(ConfigTree, {"directory": "/srv/kono"}),
         (PasswordHashFile, {"path": "/srv/kono/config/production/maintainer_password_hashes"})]


def host_answering(tree_line: str):
    def answers(command: str) -> list[str]:
        lines = ["taken"] if command.startswith("lock") else []
        if commands.section_marker(0) in command:
            lines += [commands.section_marker(0), tree_line, commands.section_marker(1), "sysop:$6$x$y"]
        elif command == FileDigests().command(directory="/srv/kono", paths=["compose.yaml"]):
            lines += ["- compose.yaml"]
        return lines
    return FakeHost(answers)


@pytest.fixture
def fake(monkeypatch):
    fake = host_answering("d 700 4096 config")
    monkeypatch.setattr(host_state, "host", fake)
    monkeypatch.setattr(host_state, "_DECLARED", {})
    monkeypatch.setattr(host_state, "_READ", {})
    host_state.declare(READS)
    return fake


def test_the_lock_takes_every_declared_read_along_in_one_command(fake):
    assert host_state.run_with_reads("lock") == ["taken"]
    assert host_state.read(ConfigTree, directory="/srv/kono") == {"config": ("d", "700", 4096)}
    assert host_state.read(PasswordHashFile, path=READS[1][1]["path"]) == "sysop:$6$x$y\n"
    assert len(fake.commands) == 1


def test_after_an_operation_changed_the_host_the_reads_run_again_once(fake):
    host_state.run_with_reads("lock")
    fake.operation_changed()
    host_state.read(ConfigTree, directory="/srv/kono")
    host_state.read(PasswordHashFile, path=READS[1][1]["path"])
    assert len(fake.commands) == 2 and commands.section_marker(0) in fake.commands[1]


def test_a_read_nobody_declared_runs_its_own_command(fake):
    host_state.run_with_reads("lock")
    assert host_state.read(FileDigests, directory="/srv/kono", paths=["compose.yaml"]) == {"compose.yaml": None}
    assert len(fake.commands) == 2


def test_a_held_lock_runs_no_read(fake):
    fake.answers = lambda command: ["locked {\"user\": \"someone\"}"]
    assert host_state.run_with_reads("lock") == ["locked {\"user\": \"someone\"}"]
    assert host_state._READ == {}
