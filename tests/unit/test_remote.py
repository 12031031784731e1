"""kono.remote.run against a channel that behaves as an SSH channel does when its window is full."""

import threading

import pytest

from kono import remote


class FullWindowChannel:
    """A command that writes more to stderr than the window holds before it writes stdout and ends:
    stdout gets nothing until stderr is read (the remote process is blocked on its stderr)."""

    def __init__(self, stderr: bytes, stdout: bytes, status: int):
        self.stderr, self.stdout, self.status = bytearray(stderr), bytearray(stdout), status
        self.stderr_read = threading.Event()

    def exec_command(self, command: str) -> None:
        self.command = command

    def recv_stderr(self, size: int) -> bytes:
        chunk = bytes(self.stderr[:size])
        del self.stderr[:size]
        if not chunk:
            self.stderr_read.set()
        return chunk

    def recv(self, size: int) -> bytes:
        if not self.stderr_read.wait(10):
            raise AssertionError("stdout waited for a stderr nobody reads: the command would hang")
        chunk = bytes(self.stdout[:size])
        del self.stdout[:size]
        return chunk

    def recv_exit_status(self) -> int:
        return self.status


def client(channel):
    class Transport:
        def open_session(self):
            return channel

    class Client:
        def get_transport(self):
            return Transport()
    return Client()


def test_a_command_that_fills_stderr_ends_and_its_error_says_the_end_of_it():
    noise = b"QkFTRTY0" * (5 * 2**20 // 8)  # 5 MB, more than paramiko's 2 MB window
    channel = FullWindowChannel(noise + b"\nERROR 1153 at line 12: Got a packet bigger than 'max_allowed_packet'\n",
                                b"", 1)
    with pytest.raises(RuntimeError, match="Got a packet bigger than 'max_allowed_packet'"):
        remote.run(client(channel), "docker compose exec -T backup sh restore")


def test_stdout_is_returned_whole_while_stderr_is_read_beside_it():
    channel = FullWindowChannel(b"w" * 3 * 2**20, b"o" * 3 * 2**20, 0)
    assert remote.run(client(channel), "true") == b"o" * 3 * 2**20


class AnsweringChannel(FullWindowChannel):
    """A command that answers as it reads: once its stdout fills the window it reads no more input
    until stdout is read."""

    def __init__(self, answer: bytes):
        super().__init__(b"", answer, 0)
        self.stdout_read, self.received = threading.Event(), bytearray()

    def sendall(self, data: bytes) -> None:
        if len(self.received) >= 2**20 and not self.stdout_read.wait(10):
            raise AssertionError("the input waited for a stdout nobody reads: the command would hang")
        self.received.extend(data)

    def shutdown_write(self) -> None:
        self.closed = True

    def recv(self, size: int) -> bytes:
        self.stdout_read.set()
        return super().recv(size)


def test_input_is_sent_while_the_commands_answer_is_read(tmp_path):
    source = tmp_path / "dump.sql"
    source.write_bytes(b"i" * 3 * 2**20)
    channel = AnsweringChannel(b"o" * 3 * 2**20)
    assert remote.run(client(channel), "mysql", stdin=source) == b"o" * 3 * 2**20
    assert channel.received == source.read_bytes() and channel.closed


@pytest.mark.parametrize("status, said", [
    (3, "(exit 3)"),
    (137, "(exit 137: 128 + signal 9)"),
    (-1, "(no exit status: killed by a signal, or the connection ended)"),
])
def test_a_failure_with_nothing_on_stderr_still_says_how_it_ended(status, said):
    with pytest.raises(RuntimeError) as failed:
        remote.run(client(FullWindowChannel(b"", b"", status)), "docker exec -i backup sh restore")
    assert str(failed.value) == f"docker exec -i backup sh failed on the host {said}: "


def sessions(*channels, opened=None):
    """A client whose sessions are these channels (or the list ``opened``), in turn."""
    opened = list(channels) if opened is None else opened

    class Transport:
        def open_session(self):
            return opened.pop(0)

    class Client:
        def get_transport(self):
            return Transport()
    return Client()


UNSTARTED = (b"OCI runtime exec failed: exec failed: unable to start container process: "
             b"read init-p: connection reset by peer: unknown\r\n")


def test_a_docker_exec_that_never_started_is_run_again(monkeypatch):
    monkeypatch.setattr(remote.time, "sleep", lambda seconds: None)
    assert remote.run(sessions(FullWindowChannel(b"", UNSTARTED, 126), FullWindowChannel(b"", b"[]", 0)),
                      "docker exec -i backup sh snapshots") == b"[]"


def test_one_that_never_starts_fails_saying_dockers_message_after_three_tries(monkeypatch):
    monkeypatch.setattr(remote.time, "sleep", lambda seconds: None)
    with pytest.raises(RuntimeError, match=r"\(exit 126\): OCI runtime exec failed: .* reset by peer: unknown$"):
        remote.run(sessions(*(FullWindowChannel(b"", UNSTARTED, 126) for _ in range(3))), "docker exec -i backup sh x")


@pytest.mark.parametrize("output, streamed", [(b"kono-backup: restored db_production\n" + UNSTARTED, False),
                                              (UNSTARTED, True)])
def test_nothing_is_run_again_once_some_of_it_ran_or_its_output_went_out(output, streamed, tmp_path):
    """A command that printed before its exec failed may have changed something (a restore, then the
    maintainer's reload); a streamed output already holds Docker's message."""
    channels = [FullWindowChannel(b"", output, 126), FullWindowChannel(b"", b"", 0)]
    with open(tmp_path / "out", "wb") as out, pytest.raises(RuntimeError, match=r"(?s)\(exit 126\): .*OCI runtime exec"):
        remote.run(sessions(opened=channels), "docker exec -i backup sh restore", stdout=out if streamed else None)
    assert len(channels) == 1  # the second session was never opened


def test_a_streamed_outputs_content_is_never_in_the_error(tmp_path):
    """A dump or a secret streamed to the operator's file that ends with nothing on stderr (a command
    killed by a signal) must not put its end in the error, which the tools print."""
    with open(tmp_path / "out", "wb") as out, pytest.raises(RuntimeError) as failed:
        remote.run(sessions(FullWindowChannel(b"", b"INSERT INTO users VALUES ('s3cr3t');\n", -1)),
                   "cat config/production/api_key", stdout=out)
    assert "s3cr3t" not in str(failed.value)
    assert str(failed.value).endswith("(no exit status: killed by a signal, or the connection ended): ")
