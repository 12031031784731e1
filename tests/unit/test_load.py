"""The load checker that every "0 failed requests" rests on (tests/lab.py, Load): run against a local
server that answers one request in five correctly and the rest wrongly, it counts every wrong one
exactly, and under_load fails when a client stops loading before the action ends."""

import socket
import socketserver
import threading
from collections import Counter

import pytest

from tests import lab

GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
WRONG = {  # what the server does, by the order it accepts connections in (good, then each wrong kind)
    "cut body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly part",
    "garbled status line": b"HTTX/1.1 two hundred\r\n\r\n",
    "502": b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "reset": None,  # no answer: the connection is reset (SO_LINGER 0)
}


class Misbehaving(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.accepted = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            server = self.server
            with server.lock:
                turn = server.accepted % (len(WRONG) + 1)
                server.accepted += 1
            self.request.recv(65536)
            if turn == 0:
                self.request.sendall(GOOD)
                return
            answer = list(WRONG.values())[turn - 1]
            if answer is None:
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            else:
                self.request.sendall(answer)


@pytest.fixture
def server():
    with Misbehaving() as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.shutdown()


def test_every_wrong_answer_is_counted_exactly(server):
    load = lab.Load("127.0.0.1", paths=("/",), clients=2, most=50, port=server.server_address[1],
                    per_client_rate=200, timeout=5)
    result = load.wait()
    assert result.requests == 50 == server.accepted
    assert len(result.failures) == 40  # 4 of every 5
    kinds = Counter(failure.split(" ", 1)[1] for failure in result.failures)
    assert kinds["IncompleteRead"] == 10 and kinds["BadStatusLine"] == 10 and kinds["502"] == 10
    # A reset before any answer reads as one of these, by when the reset arrives.
    assert kinds["ConnectionResetError"] + kinds["RemoteDisconnected"] == 10, kinds
    assert result.window > 0


def test_a_timeout_is_a_failure():
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        result = lab.Load("127.0.0.1", paths=("/",), clients=1, most=2, port=silent.getsockname()[1],
                          timeout=0.3).wait()
    assert result.failures == ["/ TimeoutError", "/ TimeoutError"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the point: it dies
def test_a_client_that_stops_before_the_action_ends_fails_under_load(server, monkeypatch):
    class Dies(Exception):
        pass

    original = lab.Load._take
    calls = Counter()

    def take(self):
        calls[threading.current_thread().name] += 1
        if calls[threading.current_thread().name] > 3 and threading.current_thread() is self.threads[0]:
            raise SystemExit  # the first client's thread ends, as an error outside the request would end it
        return original(self)

    monkeypatch.setattr(lab.Load, "_take", take)
    with pytest.raises(AssertionError, match="clients stopped loading before the action ended"):
        lab.under_load("127.0.0.1", lambda: threading.Event().wait(1), settle=0.2, paths=("/",), clients=2,
                       port=server.server_address[1])


def test_a_load_bounded_by_count_that_runs_out_during_the_action_fails_under_load(server):
    with pytest.raises(AssertionError, match="clients stopped loading before the action ended"):
        lab.under_load("127.0.0.1", lambda: threading.Event().wait(1), settle=0.2, paths=("/",), clients=2,
                       most=4, port=server.server_address[1])
