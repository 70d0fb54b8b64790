"""The Python client against fake members that speak the client protocol: its future, back-pressure
(a "busy" answer is retried), a member that leaves (the command goes to another one, same
sequence number), the bound on outstanding requests, and many commands at once (`submit_many`)."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time

import pytest

from smr.api import OperationError
from smr.client import Client, ClientError, Future, NotAppliedError, RequestTooLargeError
from smr.runtime import protocol
from smr.runtime.config import parse
from smr.runtime.hosted import RESULT_OK
from smr.statemachines import KVStore
from smr.transport.wire import FrameDecoder, Handshake, encode_frame

SECRET_HEX = "cd" * 16


# -- the future --------------------------------------------------------------------------------


def test_a_future_gives_its_result_to_waiters_and_callbacks_once():
    f = Future()
    seen = []
    f.add_done_callback(lambda done: seen.append(("early", done.result())))
    waiter = concurrent.futures.ThreadPoolExecutor(1).submit(f.result, 5)
    time.sleep(0.01)
    assert not f.done() and f.running() and not waiter.done()
    f.set_result(42)
    f.set_result(43)  # a second answer (a resend's) changes nothing
    assert waiter.result(5) == 42 and f.result() == 42 and f.exception() is None
    f.add_done_callback(lambda done: seen.append(("late", done.result())))
    assert seen == [("early", 42), ("late", 42)]
    assert not f.cancel() and not f.cancelled()


def test_a_failed_future_raises_and_times_out_while_pending():
    f = Future()
    with pytest.raises(TimeoutError):
        f.result(timeout=0.01)
    f.set_exception(ClientError("gone"))
    with pytest.raises(ClientError, match="gone"):
        f.result()
    assert isinstance(f.exception(), ClientError)


def test_a_future_converts_for_concurrent_futures_wait():
    f = Future()
    real = f.as_concurrent()
    threading.Timer(0.01, f.set_result, args=("ok",)).start()
    done, _ = concurrent.futures.wait([real], timeout=5)
    assert real in done and real.result() == "ok"


def test_a_raising_callback_does_not_stop_the_others():
    f = Future()
    seen = []
    f.add_done_callback(lambda _: 1 / 0)
    f.add_done_callback(lambda done: seen.append(done.result()))
    f.set_result(1)
    assert seen == [1]


# -- fake members --------------------------------------------------------------------------------


class FakeMember:
    """Accepts clients on a port, proves the secret, and answers each request with `answer`."""

    def __init__(self, me: int, answer):
        self.me = me
        self.answer = answer  # (FakeMember, Command) -> protocol.Response or None (no answer)
        self.commands: list[protocol.Command] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(sock,), daemon=True).start()

    def _conn(self, sock: socket.socket) -> None:
        hs = Handshake(bytes.fromhex(SECRET_HEX), server=True, my_id=self.me, role="member")
        sock.sendall(hs.initial())
        decoder = FrameDecoder(1 << 20)
        data = b""
        try:
            while not hs.done:
                reply = hs.feed(sock.recv(4096))
                if reply:
                    sock.sendall(reply)
            data = hs.leftover
            while True:
                for _, body in decoder.feed(data):
                    request = protocol.decode_request(body)
                    self.commands.append(request)
                    response = self.answer(self, request)
                    if response is not None:
                        body = protocol.encode(response)
                        sock.sendall(encode_frame(protocol.FRAME_RESPONSE, body))
                data = sock.recv(65536)
                if not data:
                    return
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()


def _config(*members: FakeMember):
    return parse(
        {
            "cluster": {"name": "fake", "secret_hex": SECRET_HEX},
            "members": [
                {"id": m.me, "port": 1 + m.port % 60000, "client_port": m.port} for m in members
            ],
            "subgroups": [{"type": "smr.statemachines:KVStore", "mode": "ordered"}],
        }
    )


def _ok(member: FakeMember, request) -> protocol.Response:
    none = RESULT_OK + KVStore.encode_result(None)
    return protocol.Response(request.id, True, version=7, results={member.me: none})


def test_a_busy_member_gets_the_same_command_again_after_the_delay():
    def busy_once(member, request):
        if len(member.commands) == 1:
            return protocol.Response(request.id, False, error="busy", retry_ms=20)
        return _ok(member, request)

    m = FakeMember(1, busy_once)
    client = Client(_config(m), timeout_s=5)
    try:
        started = time.monotonic()
        assert client.subgroup(KVStore).put("k", b"v") == {1: None}
        assert time.monotonic() - started >= 0.02
        first, again = m.commands
        assert (first.client, first.seq) == (again.client, again.seq)
    finally:
        client.close()
        m.close()


def test_a_member_that_leaves_sends_the_client_to_another_with_the_same_command():
    def leaving(member, request):
        return protocol.Response(request.id, False, error="member 1 left the view", redirect=[2])

    gone, other = FakeMember(1, leaving), FakeMember(2, _ok)
    client = Client(_config(gone, other), member=1, timeout_s=5)
    try:
        assert client.subgroup(KVStore).put("k", b"v") == {2: None}
        assert client.member == 2
        (sent,), (resent,) = gone.commands, other.commands
        assert (sent.client, sent.seq) == (resent.client, resent.seq)
    finally:
        client.close()
        gone.close()
        other.close()


def test_at_most_window_max_requests_are_outstanding():
    m = FakeMember(1, lambda member, request: None)  # never answers
    client = Client(_config(m), timeout_s=0.3, window_max=3)
    try:
        kv = client.subgroup(KVStore)
        futures = [kv.submit("put", "k", b"%d" % i) for i in range(3)]
        with pytest.raises(ClientError, match="3 requests outstanding"):
            kv.submit("put", "k", b"more")
        assert not any(f.done() for f in futures)
    finally:
        client.close()
        m.close()
    for f in futures:
        with pytest.raises(ClientError, match="closed"):
            f.result(1)


def test_submit_many_sends_each_command_once_in_order_with_its_own_answer():
    m = FakeMember(1, _ok)
    client = Client(_config(m), timeout_s=5)
    try:
        kv = client.subgroup(KVStore)
        futures = kv.submit_many("put", [(f"k{i}", b"v%d" % i) for i in range(500)])
        assert [f.result(5) for f in futures] == [{1: None}] * 500
        sent = m.commands
        assert [KVStore.decode_command(c.payload)[1]["key"] for c in sent] == [
            f"k{i}" for i in range(500)
        ]
        assert [c.seq for c in sent] == list(range(1, 501)) and len({c.client for c in sent}) == 1
        assert kv.submit_many("put", []) == []
    finally:
        client.close()
        m.close()


def test_submit_many_past_the_window_waits_for_room_and_fails_only_what_got_none():
    answering = threading.Event()

    def held(member, request):
        return _ok(member, request) if answering.is_set() else None

    m = FakeMember(1, held)
    client = Client(_config(m), timeout_s=0.3, window_max=3)
    try:
        kv = client.subgroup(KVStore)
        futures = kv.submit_many("put", [("k", b"%d" % i) for i in range(5)])
        # 3 sent, never answered; the window had no room for the other 2 within timeout_s
        assert not any(f.done() for f in futures[:3])
        for f in futures[3:]:
            with pytest.raises(NotAppliedError, match="3 requests outstanding"):
                f.result(1)
        assert len(m.commands) == 3
    finally:
        client.close()
        m.close()


def test_submit_many_encodes_everything_before_sending_anything():
    m = FakeMember(1, _ok)
    client = Client(_config(m), timeout_s=5)
    try:
        kv = client.subgroup(KVStore)
        with pytest.raises(OperationError):
            kv.submit_many("put", [("k", b"v"), ("k",)])  # the second lacks its value
        with pytest.raises(TypeError, match="tuple of arguments per command"):
            kv.submit_many("put", [b"not a tuple"])
        time.sleep(0.1)
        assert m.commands == []
    finally:
        client.close()
        m.close()


def test_a_command_of_submit_many_over_the_frame_limit_fails_alone():
    m = FakeMember(1, _ok)
    client = Client(_config(m), timeout_s=5)
    try:
        client._core.frame_bytes_max = 1000
        kv = client.subgroup(KVStore)
        small, large, after = kv.submit_many("put", [("a", b"1"), ("b", b"x" * 2000), ("c", b"3")])
        assert small.result(5) == after.result(5) == {1: None}
        with pytest.raises(RequestTooLargeError, match="frame_bytes_max"):
            large.result(1)
    finally:
        client.close()
        m.close()


def test_submit_many_waiting_for_room_when_the_client_closes_fails_the_rest_not_applied():
    m = FakeMember(1, lambda member, request: None)  # never answers
    client = Client(_config(m), timeout_s=5, window_max=2)
    try:
        kv = client.subgroup(KVStore)
        threading.Timer(0.2, client.close).start()
        futures = kv.submit_many("put", [("k", b"%d" % i) for i in range(4)])
        for f in futures[2:]:
            with pytest.raises(NotAppliedError, match="closed"):
                f.result(1)
        for f in futures[:2]:  # sent, never answered: unknown
            with pytest.raises(ClientError):
                f.result(1)
        with pytest.raises(NotAppliedError, match="closed"):
            kv.submit_many("put", [("k", b"late")])
    finally:
        client.close()
        m.close()
