"""The asyncio client (`smr.aio`): against fake members that speak the client protocol (pipelining,
back-pressure, redirects, the window, cancellation, timeouts, closing, consistency levels) and
against real member processes (two state machines, a thousand pipelined commands, failover when
the connected member is killed, with nothing applied twice). Each test runs its own event loop
(`asyncio.run`), so no pytest plugin is needed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

import smr
import smr.aio
from smr.aio import Call
from smr.client_core import ClientError, NotAppliedError, OutcomeUnknownError, RequestTooLargeError
from smr.runtime import protocol
from smr.runtime.config import parse
from smr.runtime.hosted import RESULT_ERROR, RESULT_OK, CommandError
from smr.statemachines import Counter, KVStore
from smr.transport.wire import FrameDecoder, Handshake, encode_frame

SECRET_HEX = "a1" * 16
WAIT_S = 20.0  # how long a test waits for what should happen at once (never reached when it does)
HOLD = object()  # an answer function's "keep this request unanswered until release()"


def run(coro, timeout_s: float = 60.0):
    """Run one test's coroutine on a fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


# -- fake members ---------------------------------------------------------------------------------


class FakeMember:
    """Accepts clients on a loopback port, proves the secret, and answers each request with
    `answer(member, request)`: a `protocol.Response`, a list of them, None (no answer) or HOLD
    (answered by `release()`). `hold`, while clear, keeps new connections in their handshake;
    `kill()` ends the member (listener and connections closed)."""

    def __init__(self, me: int, answer, *, hold: threading.Event | None = None):
        self.me = me
        self.answer = answer
        self.hold = hold
        self.requests: list = []
        self.held: list[tuple[socket.socket, object]] = []
        self.accepted = 0
        self.socks: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.socks.append(sock)
            threading.Thread(target=self._conn, args=(sock,), daemon=True).start()

    def _conn(self, sock: socket.socket) -> None:
        try:
            if self.hold is not None:
                self.hold.wait()
            hs = Handshake(bytes.fromhex(SECRET_HEX), server=True, my_id=self.me, role="member")
            sock.sendall(hs.initial())
            while not hs.done:
                data = sock.recv(4096)
                if not data:
                    return
                reply = hs.feed(data)
                if reply:
                    sock.sendall(reply)
            decoder = FrameDecoder(1 << 22)
            data = hs.leftover
            while True:
                out = []
                for _, body in decoder.feed(data):
                    request = protocol.decode_request(body)
                    with self.lock:
                        self.requests.append(request)
                    response = self.answer(self, request)
                    if response is HOLD:
                        with self.lock:
                            self.held.append((sock, request))
                        continue
                    out += [response] if isinstance(response, protocol.Response) else response or []
                if out:
                    sock.sendall(
                        b"".join(
                            encode_frame(protocol.FRAME_RESPONSE, protocol.encode(r)) for r in out
                        )
                    )
                data = sock.recv(65536)
                if not data:
                    return
        except OSError:
            return

    def release(self, answer=None) -> None:
        """Answer the held requests (with `answer`, default: served)."""
        with self.lock:
            held, self.held = self.held, []
        for sock, request in held:
            response = (answer or _served)(self, request)
            with contextlib.suppress(OSError):
                sock.sendall(encode_frame(protocol.FRAME_RESPONSE, protocol.encode(response)))

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.kill()

    def commands(self) -> list[protocol.Command]:
        with self.lock:
            return [r for r in self.requests if isinstance(r, protocol.Command)]

    def queries(self) -> list[protocol.Query]:
        with self.lock:
            return [r for r in self.requests if isinstance(r, protocol.Query)]


@pytest.fixture
def members():
    made: list[FakeMember] = []

    def make(me: int, answer, **kw) -> FakeMember:
        m = FakeMember(me, answer, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def _config(*fakes: FakeMember):
    return parse(
        {
            "cluster": {"name": "fake", "secret_hex": SECRET_HEX},
            "members": [
                {"id": m.me, "port": 1 + m.port % 60000, "client_port": m.port} for m in fakes
            ],
            "subgroups": [
                {"type": "smr.statemachines:KVStore", "mode": "ordered"},
                {"type": "smr.statemachines:Counter", "mode": "ordered"},
            ],
        }
    )


def _served(member: FakeMember, request) -> protocol.Response:
    """What an active member answers: a command applied (its previous value None), a query
    read (the value b"v"), its status."""
    if isinstance(request, protocol.Query):
        return protocol.Response(
            request.id, True, version=7, value=RESULT_OK + KVStore.encode_result(b"v")
        )
    if isinstance(request, protocol.Status):
        return protocol.Response(
            request.id, True, status={"member": member.me, "views": [[1, [member.me]]]}
        )
    none = RESULT_OK + KVStore.encode_result(None)
    return protocol.Response(request.id, True, version=7, results={member.me: none})


def _silent(member: FakeMember, request) -> None:
    return None


def _held(member: FakeMember, request):
    return HOLD


async def _until(cond, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"{what} did not happen"
        await asyncio.sleep(0.005)


def test_smr_aio_is_reached_from_smr_and_not_imported_by_it():
    import subprocess
    import sys

    code = (
        "import sys, smr; assert 'smr.aio' not in sys.modules; "
        "print(smr.aio.connect.__module__, smr.aio.NotAppliedError is smr.NotAppliedError)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["smr.aio", "True"]


# -- operations -----------------------------------------------------------------------------------


def test_operations_status_and_async_with(members):
    m = members(1, _served)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            kv = client.subgroup(KVStore)
            assert await kv.put("a", b"1") == {1: None}
            assert await kv.get("a") == b"v"
            call = kv.submit("put", "b", b"2")
            assert isinstance(call, Call) and isinstance(call, asyncio.Future)
            assert call.seq == 2 and call.operation == "put"
            assert await call == {1: None}
            assert await kv.query("get", "a") == b"v"
            status = await client.status()
            assert status["member"] == 1 and client.member == 1
            assert await client.views() == [(1, (1,))]
            one = client.subgroup(KVStore, replies="one")
            assert await one.put("c", b"3") == {1: None}
        with pytest.raises(NotAppliedError, match="closed"):
            kv.submit("put", "late", b"x")

    run(main())
    (query,) = m.queries()[:1]
    assert query.min_version == 7  # read your writes: the version the put was answered at
    assert [c.replies for c in m.commands()] == [protocol.REPLIES_ALL] * 2 + [protocol.REPLIES_ONE]


def test_a_command_that_raised_at_the_replicas_raises_command_error(members):
    def raising(member, request):
        return protocol.Response(request.id, True, version=3, results={1: RESULT_ERROR + b"no"})

    m = members(1, raising)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            with pytest.raises(CommandError, match="no"):
                await client.subgroup(Counter).add(1)

    run(main())


def test_a_thousand_pipelined_commands_go_out_together_and_each_is_answered(members):
    m = members(1, _served)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=10) as client:
            kv = client.subgroup(KVStore)
            calls = [kv.submit("put", f"k{i}", b"v") for i in range(1000)]
            assert m.commands() == []  # nothing written yet: one write for the lot, below
            results = await asyncio.gather(*calls)
            assert results == [{1: None}] * 1000
            assert client.outstanding == 0

    run(main())
    seqs = [c.seq for c in m.commands()]
    assert sorted(seqs) == list(range(1, 1001)) and len({c.client for c in m.commands()}) == 1


def test_more_calls_than_the_window_wait_for_room_and_all_get_answers(members):
    m = members(1, _served)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=10, window_max=4) as client:
            kv = client.subgroup(KVStore)
            calls = [kv.submit("put", f"k{i}", b"v") for i in range(8)]  # 4 sent, 4 waiting
            assert client.outstanding == 8
            assert await asyncio.gather(*calls) == [{1: None}] * 8
            with pytest.raises(NotAppliedError, match="waiting for room"):
                for i in range(9):  # 4 outstanding and 4 waiting are the most
                    kv.submit("put", f"again{i}", b"v")

    run(main())


def test_a_call_waiting_for_room_for_timeout_s_was_not_applied(members):
    m = members(1, _silent)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=0.3, window_max=1) as client:
            kv = client.subgroup(KVStore)
            kv.submit("put", "k", b"1")
            waiting = kv.submit("put", "k", b"2")
            with pytest.raises(NotAppliedError, match="1 requests outstanding"):
                await waiting
            assert isinstance(await _failure(client.outcome(waiting)), NotAppliedError)

    run(main())
    assert len(m.commands()) == 1  # the second was never sent


def test_a_request_over_the_frame_limit_raises_at_once(members):
    m = members(1, _served)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            client._core.frame_bytes_max = 1000
            with pytest.raises(RequestTooLargeError, match="frame_bytes_max"):
                client.subgroup(KVStore).submit("put", "k", b"x" * 2000)

    run(main())
    assert m.commands() == []


# -- back-pressure, redirects, failover -----------------------------------------------------------


def test_a_busy_member_gets_the_same_command_and_query_again_after_the_delay(members):
    def busy_once(member, request):
        if len(member.requests) in (1, 3):
            return protocol.Response(request.id, False, error="busy", retry_ms=20)
        return _served(member, request)

    m = members(1, busy_once)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            kv = client.subgroup(KVStore)
            started = time.monotonic()
            assert await kv.put("k", b"v") == {1: None}
            assert await kv.get("k") == b"v"  # refused with retry_ms too: sent again, not failed
            assert time.monotonic() - started >= 0.04

    run(main())
    first, again = m.commands()
    assert (first.client, first.seq) == (again.client, again.seq)
    assert len(m.queries()) == 2


def test_a_redirect_sends_the_command_to_the_member_named_with_the_same_seq(members):
    def leaving(member, request):
        return protocol.Response(request.id, False, error="member 1 left the view", redirect=[2])

    gone, other = members(1, leaving), members(2, _served)

    async def main():
        async with smr.aio.connect(_config(gone, other), member=1, timeout_s=5) as client:
            assert await client.subgroup(KVStore).put("k", b"v") == {2: None}
            assert client.member == 2

    run(main())
    (sent,), (resent,) = gone.commands(), other.commands()
    assert (sent.client, sent.seq) == (resent.client, resent.seq)


def _restarting(member, request):
    others = [m for m in (1, 2, 3) if m != member.me]
    return protocol.Response(
        request.id, False, error=f"member {member.me} is restarting", redirect=others
    )


def test_redirects_are_bounded(members):
    fakes = [members(m, _restarting) for m in (1, 2, 3)]

    async def main():
        async with smr.aio.connect(_config(*fakes), member=1, timeout_s=5) as client:
            kv = client.subgroup(KVStore)
            with pytest.raises(NotAppliedError, match=r"is restarting.*redirects"):
                await kv.query("get", "k")
            with pytest.raises(OutcomeUnknownError, match="is restarting"):
                await kv.submit("put", "k", b"v")

    run(main())
    assert sum(len(m.requests) for m in fakes) <= 2 * (2 * 3 + 1)


def test_a_lost_connection_fails_over_and_resends_with_the_same_seq(members):
    one, two = members(1, _silent), members(2, _served)

    async def main():
        async with smr.aio.connect(_config(one, two), member=1, timeout_s=5) as client:
            call = client.subgroup(KVStore).submit("put", "k", b"v")
            await _until(lambda: one.commands(), "the command reaching member 1")
            one.kill()
            assert await call == {2: None}
            assert client.member == 2

    run(main())
    (sent,), (resent,) = one.commands(), two.commands()
    assert (sent.client, sent.seq) == (resent.client, resent.seq)


def test_with_no_member_left_a_sent_command_is_unknown_and_a_query_not_applied(members):
    m = members(1, _silent)

    async def main():
        client = await smr.aio.connect(_config(m), timeout_s=0.3)
        kv = client.subgroup(KVStore)
        command, query = kv.submit("put", "k", b"v"), kv.query("get", "k")
        await _until(lambda: len(m.requests) == 2, "both requests reaching the member")
        m.kill()
        with pytest.raises(OutcomeUnknownError, match="no member"):
            await command
        with pytest.raises(NotAppliedError, match="no member"):
            await query
        await client.close()

    run(main())


def test_connecting_to_no_member_is_a_client_error(members):
    m = members(1, _served)
    config = _config(m)
    m.kill()

    async def main():
        with pytest.raises(ClientError, match="no member of"):
            await smr.aio.connect(config, timeout_s=0.3)

    run(main())


# -- cancellation ---------------------------------------------------------------------------------


async def _failure(future) -> BaseException | None:
    """The error a future fails with (None: it succeeded)."""
    try:
        await future
    except Exception as e:
        return e
    return None


def test_a_command_cancelled_before_it_was_written_is_not_applied(members):
    m = members(1, _served)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            kv = client.subgroup(KVStore)
            call = kv.submit("put", "cancelled", b"x")
            assert call.cancel() and call.cancelled()
            error = await _failure(client.outcome(call))
            assert isinstance(error, NotAppliedError) and "not yet written" in str(error)
            assert isinstance(await _failure(client.outcome(call.seq)), NotAppliedError)
            assert await kv.put("after", b"y") == {1: None}  # the connection goes on

    run(main())
    assert [c.payload for c in m.commands()] == [KVStore.encode_command("put", "after", b"y")]


def test_a_command_cancelled_while_waiting_for_room_is_not_applied(members):
    m = members(1, _held)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5, window_max=1) as client:
            kv = client.subgroup(KVStore)
            first = kv.submit("put", "k", b"1")
            waiting = kv.submit("put", "k", b"2")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(waiting, 0.05)  # wait_for cancels it
            assert waiting.cancelled()
            assert isinstance(await _failure(client.outcome(waiting)), NotAppliedError)
            await _until(lambda: m.held, "the first command reaching the member")
            m.release()
            assert await first == {1: None}

    run(main())
    assert len(m.commands()) == 1


def test_a_command_cancelled_while_no_connection_is_up_is_not_applied(members):
    hold = threading.Event()
    one, two = members(1, _served), members(2, _served, hold=hold)

    async def main():
        async with smr.aio.connect(_config(one, two), member=1, timeout_s=10) as client:
            kv = client.subgroup(KVStore)
            assert await kv.put("k", b"v") == {1: None}
            one.kill()
            await _until(lambda: two.accepted, "the client dialing member 2")  # held there
            call = kv.submit("put", "k", b"cancelled")  # waits for the connection
            call.cancel()
            assert isinstance(await _failure(client.outcome(call)), NotAppliedError)
            hold.set()
            assert await kv.put("k", b"after") == {2: None}

    run(main())
    assert [c.payload for c in two.commands()] == [KVStore.encode_command("put", "k", b"after")]


def test_a_command_cancelled_after_it_was_sent_still_has_its_outcome_learnt(members):
    m = members(1, _held)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            kv = client.subgroup(KVStore)
            call = kv.submit("put", "k", b"v")
            await _until(lambda: m.held, "the command reaching the member")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call, 0.01)
            assert call.cancelled()
            outcome = client.outcome(call)
            by_seq = client.outcome(call.seq)
            assert not outcome.done() and client.outstanding == 1  # still tracked
            m.release()
            assert await outcome == {1: None} and await by_seq == {1: None}
            assert await client.outcome(call) == {1: None}  # kept

    run(main())


def test_a_method_call_times_out_with_its_outcome_unknown_and_learnt_later(members):
    m = members(1, _held)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=0.3) as client:
            kv = client.subgroup(KVStore)
            started = time.monotonic()
            with pytest.raises(OutcomeUnknownError, match="may or may not") as e:
                await kv.put("k", b"v")
            assert 0.25 <= time.monotonic() - started < WAIT_S
            with pytest.raises(NotAppliedError, match="no answer within"):
                await kv.get("k")  # a query changes nothing: not applied
            with pytest.raises(TimeoutError):
                await client.status()
            m.release()
            assert await client.outcome(e.value.seq) == {1: None}

    run(main())


def test_closing_with_requests_outstanding_says_what_is_known_of_each(members):
    m = members(1, _silent)

    async def main():
        client = await smr.aio.connect(_config(m), timeout_s=5, window_max=2)
        kv = client.subgroup(KVStore)
        sent, query = kv.submit("put", "k", b"v"), kv.query("get", "k")
        waiting = kv.submit("put", "k", b"w")
        given_up = kv.submit("put", "k", b"given up")  # waiting too; cancelled below
        await _until(lambda: len(m.requests) == 2, "the first two reaching the member")
        given_up.cancel()
        await client.close()
        await client.close()  # again: nothing more to do
        assert isinstance(await _failure(sent), OutcomeUnknownError)
        assert "closed" in str(sent.exception())
        assert isinstance(await _failure(query), NotAppliedError)
        assert isinstance(await _failure(waiting), NotAppliedError)
        assert isinstance(await _failure(client.outcome(given_up)), NotAppliedError)
        with pytest.raises(NotAppliedError, match="closed"):
            kv.submit("put", "k", b"late")

    run(main())
    assert len(m.requests) == 2


def test_a_sent_command_cancelled_and_then_closed_is_unknown(members):
    m = members(1, _held)

    async def main():
        client = await smr.aio.connect(_config(m), timeout_s=5)
        call = client.subgroup(KVStore).submit("put", "k", b"v")
        await _until(lambda: m.held, "the command reaching the member")
        call.cancel()
        outcome = client.outcome(call)
        await client.close()
        assert isinstance(await _failure(outcome), OutcomeUnknownError)

    run(main())


def test_an_outcome_asked_while_waiting_for_room_is_given_when_the_client_closes(members):
    m = members(1, _silent)

    async def main():
        client = await smr.aio.connect(_config(m), timeout_s=5, window_max=1)
        kv = client.subgroup(KVStore)
        kv.submit("put", "k", b"1")
        waiting = kv.submit("put", "k", b"2")
        outcome = client.outcome(waiting)
        await client.close()
        assert isinstance(await _failure(outcome), NotAppliedError)
        assert isinstance(await _failure(waiting), NotAppliedError)

    run(main())


def test_outcome_refuses_queries_and_unknown_commands(members):
    m = members(1, _served)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            query = client.subgroup(KVStore).query("get", "k")
            with pytest.raises(ValueError, match="query"):
                client.outcome(query)
            with pytest.raises(ValueError, match="no outcome known of command 99"):
                client.outcome(99)
            call = client.subgroup(KVStore).submit("put", "k", b"v")
            assert await client.outcome(call) == {1: None}  # its own answer
            assert await client.outcome(call) == {1: None}
            await query

    run(main())


# -- read consistency levels ----------------------------------------------------------------------


def test_queries_carry_their_consistency_level(members):
    m = members(1, _served)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            assert client.consistency == "linearizable"
            kv = client.subgroup(KVStore)
            await kv.get("k")
            await kv.query("get", "k", consistency="sequential")
            await kv.query("get", "k", consistency="sequential", min_version=5)
            await client.subgroup(KVStore, consistency="sequential").get("k")
        async with smr.aio.connect(_config(m), timeout_s=5, consistency="sequential") as client:
            kv = client.subgroup(KVStore)
            await kv.get("k")
            await kv.query("get", "k", consistency="linearizable")

    run(main())
    sent = [(q.consistency, q.min_version) for q in m.queries()]
    assert sent == [
        ("linearizable", 0),
        ("sequential", 0),
        ("sequential", 5),
        ("sequential", 0),
        ("sequential", 0),
        ("linearizable", 0),
    ]


def test_an_unknown_consistency_level_is_a_value_error(members):
    m = members(1, _served)

    async def main():
        with pytest.raises(ValueError, match="'linearizable', 'sequential'"):
            smr.aio.connect(_config(m), consistency="strong")
        async with smr.aio.connect(_config(m), timeout_s=5) as client:
            with pytest.raises(ValueError, match="not 'eventual'"):
                client.subgroup(KVStore, consistency="eventual")
            with pytest.raises(ValueError, match="consistency"):
                client.subgroup(KVStore).query("get", "k", consistency="LINEARIZABLE")
            assert client.outstanding == 0

    run(main())
    assert m.queries() == []


def test_the_threaded_client_sends_the_same_levels_and_validates_them(members):
    m = members(1, _served)
    with pytest.raises(ValueError, match="'linearizable', 'sequential', not 'strong'"):
        smr.connect(_config(m), consistency="strong")
    with smr.connect(_config(m), timeout_s=5) as client:
        assert client.consistency == "linearizable"
        kv = client.subgroup(KVStore)
        assert kv.get("k") == b"v"
        assert kv.query("get", "k", consistency="sequential").result(WAIT_S) == b"v"
        kv.query("get", "k", consistency="sequential", min_version=5).result(WAIT_S)
        assert client.subgroup(KVStore, consistency="sequential").get("k") == b"v"
        with pytest.raises(ValueError, match="not 'eventual'"):
            client.subgroup(KVStore, consistency="eventual")
        with pytest.raises(ValueError, match="consistency"):
            kv.query("get", "k", consistency="LINEARIZABLE")
    with smr.connect(_config(m), timeout_s=5, consistency="sequential") as client:
        kv = client.subgroup(KVStore)
        kv.get("k")
        kv.query("get", "k", consistency="linearizable").result(WAIT_S)
    sent = [(q.consistency, q.min_version) for q in m.queries()]
    assert sent == [
        ("linearizable", 0),
        ("sequential", 0),
        ("sequential", 5),
        ("sequential", 0),
        ("sequential", 0),
        ("linearizable", 0),
    ]


def test_the_threaded_client_retries_a_query_refused_with_retry_ms(members):
    # what a member answers a linearizable read it cannot confirm yet: the same query, later
    def refused_twice(member, request):
        if len(member.requests) <= 2:
            return protocol.Response(request.id, False, error="not confirmed", retry_ms=10)
        return _served(member, request)

    m = members(1, refused_twice)
    with smr.connect(_config(m), timeout_s=5) as client:
        assert client.subgroup(KVStore).get("k") == b"v"
    assert len(m.queries()) == 3 and len({q.id for q in m.queries()}) == 1


def test_a_query_refused_with_retry_ms_for_timeout_s_was_not_applied(members):
    def refused(member, request):
        return protocol.Response(request.id, False, error="not confirmed", retry_ms=20)

    m = members(1, refused)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=0.3) as client:
            with pytest.raises(NotAppliedError, match=r"busy for .* s \(not confirmed\)"):
                await client.subgroup(KVStore).query("get", "k")

    run(main())
    assert len(m.queries()) > 2


# -- real member processes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from smr.runtime.cluster import LocalCluster

    d = str(tmp_path_factory.mktemp("aio"))
    types = ("smr.statemachines:KVStore", "smr.statemachines:Counter")
    with LocalCluster(3, data_dir=d, transport="tcp", mode="ordered", types=types) as c:
        c.wait_ready()
        yield c


@pytest.mark.cluster
def test_real_members_serve_two_state_machines_at_both_consistency_levels(cluster):
    async def main():
        async with smr.aio.connect(cluster.config_path, member=2) as client:
            kv = client.subgroup(KVStore)
            assert sorted(await kv.put("a", b"1")) == [1, 2, 3]
            assert await kv.get("a") == b"1"
            assert await kv.query("get", "a", consistency="sequential") == b"1"
            assert await kv.query("get", "a", consistency="linearizable") == b"1"
            counter = client.subgroup(Counter)
            before = await counter.value()
            results = await counter.add(5)
            assert sorted(results) == [1, 2, 3] and set(results.values()) == {before + 5}
            assert await client.subgroup(Counter, consistency="sequential").get() == before + 5
            status = await client.status()
            assert status["member"] == 2 and sorted(status["members"]) == [1, 2, 3]

    run(main())
    with smr.connect(cluster.config_path, member=1) as client:  # the threaded client, alike
        kv = client.subgroup(KVStore)
        assert kv.query("get", "a", consistency="sequential").result(WAIT_S) == b"1"
        assert kv.query("get", "a", consistency="linearizable").result(WAIT_S) == b"1"


@pytest.mark.cluster
def test_real_members_take_a_thousand_pipelined_commands_each_once(cluster):
    async def main():
        async with smr.aio.connect(cluster.config_path, member=3) as client:
            kv = client.subgroup(KVStore, replies="one")
            results = await asyncio.gather(
                *(kv.submit("append", "pipelined", b"%d," % i) for i in range(1000))
            )
            assert all(r.keys() == {3} for r in results)
            return await kv.get("pipelined")

    value = run(main())
    entries = value.split(b",")[:-1]
    assert sorted(entries, key=int) == [b"%d" % i for i in range(1000)]


@pytest.mark.cluster
def test_a_client_fails_over_when_its_member_is_killed_and_nothing_applies_twice(tmp_path):
    from smr.runtime.cluster import LocalCluster

    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()

        async def main():
            async with smr.aio.connect(cluster.config_path, member=2, timeout_s=20) as client:
                kv = client.subgroup(KVStore)
                calls = [kv.submit("append", "log", b"%d," % i) for i in range(200)]
                await asyncio.sleep(0)  # written, and none answered yet
                assert client.outstanding > 0
                cluster.kill(2)  # the client's member: it reconnects and sends again
                results = await asyncio.gather(*calls)
                assert client.member != 2
                assert all(len(r) >= 2 for r in results)
                assert sorted(await kv.append("log", b"end,")) in ([1, 3], [1, 2, 3])
                return await kv.get("log")

        value = run(main())
    entries = value.split(b",")[:-1]
    assert entries[-1] == b"end"
    assert sorted(entries[:-1], key=int) == [b"%d" % i for i in range(200)]  # each exactly once


def test_submit_many_makes_a_call_per_command_written_together(members):
    m = members(1, _served)

    async def main():
        async with smr.aio.connect(_config(m), timeout_s=10, window_max=300) as client:
            kv = client.subgroup(KVStore)
            client._core.frame_bytes_max = 1000
            calls = kv.submit_many(
                "put", [(f"k{i}", b"v") for i in range(500)] + [("x", b"x" * 2000)]
            )
            assert m.commands() == []  # nothing written yet: one write for the lot
            *fine, large = calls
            assert await asyncio.gather(*fine) == [{1: None}] * 500  # 200 waited for room
            with pytest.raises(RequestTooLargeError, match="frame_bytes_max"):
                await large
            with pytest.raises(TypeError, match="tuple of arguments"):
                kv.submit_many("put", ["k"])

    run(main())
    assert [c.seq for c in m.commands()] == list(range(1, 501))
