"""Findings of "Linearizable reads, and real member processes under faults" on the client side:
queries follow redirects like commands; a failed command says whether it was certainly not
applied or its outcome is unknown; a reconnect does not hold up the client's other requests; and
member log lines carry the monotonic clock beside the wall clock. Fake members speak the client
protocol (what a restarting or joining member answers); the log lines come from the node's own
logger."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time

import pytest

from smr.client import (
    Client,
    ClientError,
    NotAppliedError,
    OutcomeUnknownError,
    RequestTooLargeError,
)
from smr.runtime import protocol
from smr.runtime.config import parse
from smr.runtime.hosted import RESULT_OK
from smr.runtime.node import json_logger
from smr.statemachines import KVStore
from smr.transport.wire import FrameDecoder, Handshake, encode_frame

SECRET_HEX = "ef" * 16
WAIT_S = 20.0  # how long a test waits for what should happen at once (never reached when it does)

# -- the log lines --------------------------------------------------------------------------------


def test_every_member_log_line_carries_the_monotonic_clock_beside_the_wall_clock():
    stream = io.StringIO()
    log = json_logger(3, stream)
    before = time.monotonic()
    log("start", role="founder")
    log("view", epoch=1, members=[1, 2, 3])
    after = time.monotonic()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["start", "view"]
    for r in records:
        assert r["member"] == 3 and isinstance(r["t"], float) and isinstance(r["mono"], float)
        # the process's time.monotonic(), the clock a client's history is stamped with
        assert before - 1e-6 <= r["mono"] <= after + 1e-6
    assert records[0]["mono"] <= records[1]["mono"]


# -- fake members ---------------------------------------------------------------------------------


class FakeMember:
    """Accepts clients on a loopback port, proves the secret, and answers each request with
    `answer(member, request)`: a `protocol.Response`, a list of them, or None for no answer.
    `hold`, while clear, keeps new connections in their handshake; `kill()` ends the process
    (listener and connections closed, later dials refused)."""

    def __init__(self, me: int, answer, *, hold: threading.Event | None = None):
        self.me = me
        self.answer = answer
        self.hold = hold
        self.requests: list = []
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
            decoder = FrameDecoder(1 << 20)
            data = hs.leftover
            while True:
                for _, body in decoder.feed(data):
                    request = protocol.decode_request(body)
                    with self.lock:
                        self.requests.append(request)
                    response = self.answer(self, request)
                    for r in (
                        [response] if isinstance(response, protocol.Response) else response or ()
                    ):
                        sock.sendall(encode_frame(protocol.FRAME_RESPONSE, protocol.encode(r)))
                data = sock.recv(65536)
                if not data:
                    return
        except OSError:
            return

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
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


@pytest.fixture
def clients():
    made: list[Client] = []

    def make(*fakes: FakeMember, **kw) -> Client:
        c = Client(_config(*fakes), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _config(*fakes: FakeMember):
    return parse(
        {
            "cluster": {"name": "fake", "secret_hex": SECRET_HEX},
            "members": [
                {"id": m.me, "port": 1 + m.port % 60000, "client_port": m.port} for m in fakes
            ],
            "subgroups": [{"type": "smr.statemachines:KVStore", "mode": "ordered"}],
        }
    )


def _served(member: FakeMember, request) -> protocol.Response:
    """What an active member answers: a command applied (its previous value None), a query
    read (the value b"v")."""
    if isinstance(request, protocol.Query):
        return protocol.Response(
            request.id, True, version=7, value=RESULT_OK + KVStore.encode_result(b"v")
        )
    none = RESULT_OK + KVStore.encode_result(None)
    return protocol.Response(request.id, True, version=7, results={member.me: none})


def _restarting(member: FakeMember, request) -> protocol.Response:
    """What a restarting member answers every command and query (`Node._handle_request`)."""
    others = [1, 2, 3]
    others.remove(member.me)
    return protocol.Response(
        request.id, False, error=f"member {member.me} is restarting", redirect=others
    )


def _silent(member: FakeMember, request) -> None:
    return None


# -- 1. queries follow redirects ------------------------------------------------------------------


def test_a_query_at_a_restarting_member_is_read_at_the_member_it_redirects_to(members, clients):
    one, two = members(1, _served), members(2, _restarting)
    client = clients(one, two, member=2, timeout_s=5)
    assert client.subgroup(KVStore).get("k") == b"v"  # not ClientError('member 2 is restarting')
    assert client.member == 1
    (asked,), (read,) = two.requests, one.requests
    assert isinstance(read, protocol.Query) and (read.payload, read.min_version) == (
        asked.payload,
        asked.min_version,
    )


def test_a_redirected_query_keeps_its_read_your_writes_version(members, clients):
    restarted = threading.Event()

    def restarts(member, request):
        return _restarting(member, request) if restarted.is_set() else _served(member, request)

    one, two = members(1, restarts), members(2, _served)
    client = clients(one, two, member=1, timeout_s=5)
    kv = client.subgroup(KVStore)
    assert kv.put("k", b"v") == {1: None}  # answered at version 7
    restarted.set()
    assert kv.get("k") == b"v"
    (query,) = two.requests
    assert isinstance(query, protocol.Query) and query.min_version == 7


def test_redirects_are_bounded_a_query_redirected_everywhere_is_not_applied(members, clients):
    one, two, three = members(1, _restarting), members(2, _restarting), members(3, _restarting)
    client = clients(one, two, three, member=1, timeout_s=5)
    with pytest.raises(NotAppliedError, match=r"is restarting.*redirects"):
        client.subgroup(KVStore).query("get", "k").result(WAIT_S)
    asked = sum(len(m.requests) for m in (one, two, three))
    assert 2 <= asked <= 2 * 3 + 1  # followed, and at most twice per member


def test_a_command_redirected_everywhere_fails_with_its_outcome_unknown(members, clients):
    # a member that left the view redirects the commands it had taken, just as a restarting one
    # redirects those it never took: the client cannot tell them apart, so it does not claim
    # "not applied"
    one, two, three = members(1, _restarting), members(2, _restarting), members(3, _restarting)
    client = clients(one, two, three, member=1, timeout_s=5)
    with pytest.raises(OutcomeUnknownError, match="is restarting"):
        client.subgroup(KVStore).submit("put", "k", b"v").result(WAIT_S)
    assert sum(len(m.requests) for m in (one, two, three)) <= 2 * 3 + 1


# -- 2. not applied, or outcome unknown ----------------------------------------------------------


def _until(cond, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.005)


def _window_full(member, request) -> protocol.Response:
    # the member's SubmitFailed: the command never entered its send window
    return protocol.Response(request.id, False, error="the send window stayed full for 5.000 s")


def test_a_command_a_member_refuses_was_not_applied(members, clients):
    client = clients(members(1, _window_full), timeout_s=5)
    with pytest.raises(NotAppliedError, match="send window stayed full"):
        client.subgroup(KVStore).put("k", b"v")


def test_a_command_over_the_frame_limit_was_not_applied(members, clients):
    client = clients(members(1, _served), timeout_s=5)
    client.frame_bytes_max = 1000
    with pytest.raises(NotAppliedError) as e:
        client.subgroup(KVStore).put("k", b"x" * 2000)
    assert isinstance(e.value, RequestTooLargeError)


def test_a_command_past_a_full_client_window_was_not_applied(members, clients):
    member = members(1, _silent)
    client = clients(member, timeout_s=0.3, window_max=1)
    kv = client.subgroup(KVStore)
    kv.submit("put", "k", b"1")
    with pytest.raises(NotAppliedError, match="1 requests outstanding"):
        kv.submit("put", "k", b"2")
    assert len(member.requests) <= 1  # the second was never sent


def test_a_command_refused_as_busy_for_timeout_s_was_not_applied(members, clients):
    def busy(member, request):
        return protocol.Response(request.id, False, error="busy", retry_ms=20)

    client = clients(members(1, busy), timeout_s=0.3)
    kv = client.subgroup(KVStore)
    with pytest.raises(NotAppliedError, match="busy"):
        kv.submit("put", "k", b"v").result(WAIT_S)  # pipelined: no longer retried forever


def test_a_blocking_call_gives_up_a_command_waiting_to_be_sent_again_as_not_applied(
    members, clients
):
    def busy(member, request):
        return protocol.Response(request.id, False, error="busy", retry_ms=60_000)

    member = members(1, busy)
    client = clients(member, timeout_s=0.3)
    with pytest.raises(NotAppliedError, match="not sent"):
        client.subgroup(KVStore).put("k", b"v")  # refused, and withdrawn before its retry
    assert len(member.requests) == 1


def test_a_command_sent_and_never_answered_has_its_outcome_unknown(members, clients):
    member = members(1, _silent)
    client = clients(member, timeout_s=0.3)
    with pytest.raises(OutcomeUnknownError, match="may or may not"):
        client.subgroup(KVStore).put("k", b"v")  # was: TimeoutError, which said nothing of it
    assert len(member.requests) == 1


def test_a_command_whose_connection_broke_has_its_outcome_unknown(members, clients):
    member = members(1, _silent)
    client = clients(member, timeout_s=0.3)
    kv = client.subgroup(KVStore)
    f = kv.submit("put", "k", b"v")
    _until(lambda: member.requests, "the command reaching the member")
    member.kill()  # the only member: no failover
    with pytest.raises(OutcomeUnknownError, match="no member"):
        f.result(WAIT_S)


def test_a_query_whose_connection_broke_was_not_applied(members, clients):
    member = members(1, _silent)
    client = clients(member, timeout_s=0.3)
    f = client.subgroup(KVStore).query("get", "k")
    _until(lambda: member.requests, "the query reaching the member")
    member.kill()
    with pytest.raises(NotAppliedError, match="no member"):
        f.result(WAIT_S)


def test_a_refusal_after_a_lost_connection_does_not_claim_not_applied(members, clients):
    # member 1 may have applied the command before its connection broke; member 2's refusal
    # says nothing of that
    one, two = members(1, _silent), members(2, _window_full)
    client = clients(one, two, member=1, timeout_s=5)
    f = client.subgroup(KVStore).submit("put", "k", b"v")
    _until(lambda: one.requests, "the command reaching member 1")
    one.kill()
    with pytest.raises(OutcomeUnknownError, match="send window stayed full"):
        f.result(WAIT_S)
    (sent,), (resent,) = one.requests, two.requests
    assert (sent.client, sent.seq) == (resent.client, resent.seq)


def test_closing_the_client_leaves_a_sent_command_unknown(members, clients):
    member = members(1, _silent)
    client = clients(member, timeout_s=5)
    f = client.subgroup(KVStore).submit("put", "k", b"v")
    _until(lambda: member.requests, "the command reaching the member")
    client.close()
    with pytest.raises(OutcomeUnknownError, match="closed"):
        f.result(WAIT_S)
    with pytest.raises(NotAppliedError, match="closed"):
        client.subgroup(KVStore).submit("put", "k", b"w")


def test_an_applied_command_whose_answer_was_lost_is_neither(members, clients):
    def too_large(member, request):
        # what a member answers when a command's answer is over the frame limit
        return protocol.Response(
            request.id, False, version=9, error="the command was applied, but its answer ..."
        )

    client = clients(members(1, too_large), timeout_s=5)
    with pytest.raises(ClientError, match="was applied") as e:
        client.subgroup(KVStore).put("k", b"v")
    assert not isinstance(e.value, (NotAppliedError, OutcomeUnknownError))


# -- 3. a reconnect does not hold the client's lock -----------------------------------------------


def test_requests_go_on_while_the_client_redials(members, clients):
    hold = threading.Event()
    one, two = members(1, _served), members(2, _served, hold=hold)
    client = clients(one, two, member=1, timeout_s=60)
    kv = client.subgroup(KVStore)
    assert kv.put("k", b"v") == {1: None}
    one.kill()
    _until(lambda: two.accepted, "the client dialing member 2")  # its handshake is held
    made: list = []
    submitted = threading.Event()

    def submit():
        made.append(kv.submit("put", "k", b"w"))
        made.append(kv.query("get", "k"))
        submitted.set()

    threading.Thread(target=submit, daemon=True).start()
    try:
        # a submit during the dial returns at once (it used to wait for the dial, up to 60 s)
        assert submitted.wait(WAIT_S), "submit waited for the reconnect"
        assert not any(f.done() for f in made)
    finally:
        hold.set()
    command, query = made
    assert command.result(WAIT_S) == {2: None} and query.result(WAIT_S) == b"v"
    assert client.member == 2


def test_threads_that_see_one_dead_connection_dial_once(members, clients):
    held: list = []

    def redirect_both(member, request):
        # answer two requests together, each with a redirect: two threads fail over at once
        held.append(request)
        if len(held) < 2:
            return None
        return [
            protocol.Response(r.id, False, error="member 1 is joining", redirect=[2]) for r in held
        ]

    one, two = members(1, redirect_both), members(2, _served)
    client = clients(one, two, member=1, timeout_s=5)
    kv = client.subgroup(KVStore)
    first, second = kv.query("get", "a"), kv.query("get", "b")
    assert first.result(WAIT_S) == b"v" and second.result(WAIT_S) == b"v"
    assert two.accepted == 1


# -- real member processes ------------------------------------------------------------------------

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # one loopback address per member (Linux)


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    """Three real members over tcp, each on its own loopback address, KVStore in three shards of
    one member each: every member redirects requests for the two shards it does not host."""
    from smr.runtime.cluster import LocalCluster
    from smr.runtime.config import write_local

    d = str(tmp_path_factory.mktemp("spread"))
    path = write_local(d, nodes=3, shards=3, mode="ordered", transport="tcp")
    with open(path) as f:
        text = f.read()
    for host in HOSTS:
        text = text.replace('host = "127.0.0.1"', f'host = "{host}"', 1)
    with open(path, "w") as f:
        f.write(text + "max_size = 1\n")  # the last section is [[subgroups]]
    with LocalCluster(3, data_dir=d, config_path=path) as c:
        c.wait_ready()
        yield c


@pytest.mark.cluster
def test_real_members_redirect_a_query_for_a_shard_they_do_not_host(spread):
    import smr

    for shard in range(3):
        with smr.connect(spread.config_path, member=1, timeout_s=10) as client:
            kv = client.subgroup(KVStore, shard=shard)
            assert len(kv.put("k", b"%d" % shard)) == 1  # a shard of one member
        with smr.connect(spread.config_path, member=1, timeout_s=10) as client:
            # a fresh client: its query goes to member 1 first, which hosts one shard of three
            assert client.subgroup(KVStore, shard=shard).get("k") == b"%d" % shard


@pytest.mark.cluster
def test_real_members_links_come_from_their_configured_addresses(spread):
    ports = {m.port: m.host for m in spread.config.members.values()}
    links = _established_to(ports)
    assert links, "no member-to-member connection seen in /proc/net/tcp"
    for (local_host, _), (remote_host, _) in links:
        assert remote_host in HOSTS and remote_host != local_host  # not all from 127.0.0.1


@pytest.mark.cluster
def test_real_member_log_lines_carry_the_monotonic_clock(spread):
    for m in (1, 2, 3):
        with open(spread.log_path(m)) as f:
            records = [json.loads(line) for line in f if line.startswith("{")]
        assert records and all(isinstance(r["mono"], float) and "t" in r for r in records)


def _established_to(ports: dict[int, str]) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """The established tcp connections accepted on one of `ports` at its host:
    ((local host, port), (remote host, port)), from /proc/net/tcp."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state != "01":  # ESTABLISHED
                continue
            lh, lp = _addr(local)
            if ports.get(lp) == lh:
                out.append(((lh, lp), _addr(remote)))
    return out


def _addr(hex_addr: str) -> tuple[str, int]:
    ip, port = hex_addr.split(":")
    return socket.inet_ntoa(bytes.fromhex(ip)[::-1]), int(port, 16)


# -- a waiting query whose member leaves the view (the node's code, in simulated time) -----------


def test_a_query_waiting_at_a_member_that_leaves_the_view_is_redirected(tmp_path):
    # member 3 holds a query for a version it has not applied, is cut off, removed, and on
    # healing halts and rejoins (its shards dropped): the query is redirected, not failed
    from smr.runtime.config import load, write_local
    from smr.sim.members import SimMembers

    config = load(write_local(str(tmp_path), nodes=3, mode="durable", transport="tcp"))
    sim = SimMembers(config, 11)
    sim.run_until(lambda: all(n.replica.status == "active" for n in sim.nodes.values()))

    def put(value: bytes, seq: int) -> protocol.Response:
        payload = KVStore.encode_command("put", "k", value)
        conn = sim.request(
            1, lambda rid: protocol.Command(rid, 0, 0, 99, seq, payload, protocol.REPLIES_ALL)
        )
        sim.run_until(lambda: sim.answer(1, conn) is not None)
        return sim.answer(1, conn)

    first = put(b"1", 1)
    assert first.ok
    query = KVStore.encode_query("get", "k")
    waiting = sim.request(3, lambda rid: protocol.Query(rid, 0, 0, query, first.version + 1))
    for other in (1, 2):
        sim.world.set_link(3, other, False)
        sim.world.set_link(other, 3, False)
    sim.run_until(lambda: all(3 not in sim.nodes[m].replica.members for m in (1, 2)))
    assert put(b"2", 2).ok
    for other in (1, 2):
        sim.world.set_link(3, other, True)
        sim.world.set_link(other, 3, True)
    sim.run_until(lambda: sim.answer(3, waiting) is not None)
    answer = sim.answer(3, waiting)
    assert not answer.ok and sorted(answer.redirect) == [1, 2], answer
