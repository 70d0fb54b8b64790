"""tcp-only behaviour: hostile or broken connections are closed and counted, the node keeps
serving its members, the send queue bound resets a link, and a joiner links up."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
from transport_factories.tcp import free_ports

from smr.transport.base import Address, TransportConfig, TransportError
from smr.transport.tcp import KIND_DATA, TcpTransport
from smr.transport.wire import HEADER, AuthError, FrameDecoder, connect, encode_frame

SECRET = b"tcp-test-secret-0123456789abcdef"
POLL_S = 0.02


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int, bytes]] = []
        self.data: list[tuple[int, bytes]] = []
        self.up: list[int] = []
        self.failed: list[int] = []

    def on_write(self, source, epoch, offset, data):
        self.writes.append((source, epoch, offset, bytes(data)))

    def on_data(self, source, payload):
        self.data.append((source, bytes(payload)))

    def on_link_up(self, peer):
        self.up.append(peer)

    def on_peer_failed(self, peer):
        self.failed.append(peer)


def _config(**kw) -> TransportConfig:
    base = dict(
        secret=SECRET,
        frame_bytes_max=1 << 20,
        connect_timeout_s=0.5,
        peer_failed_after_s=0.3,
        reconnect_backoff_s=0.02,
    )
    base.update(kw)
    return TransportConfig(**base)


class Pair:
    """Members 1 and 2 linked over loopback."""

    def __init__(self, handlers=None, **kw):
        self.config = _config(**kw)
        ports = free_ports(2)
        self.addresses = {m: Address("127.0.0.1", p) for m, p in zip((1, 2), ports, strict=True)}
        self.t = {m: TcpTransport(m, self.addresses, self.config) for m in (1, 2)}
        self.h = {m: Recorder() for m in (1, 2)} | (handlers or {})
        for m, t in self.t.items():
            t.start(self.h[m])
        self.until(lambda: self.h[1].up == [2] and self.h[2].up == [1], "the link up")

    def until(self, cond, what: str, polls_max: int = 500) -> None:
        for _ in range(polls_max):
            if cond():
                return
            for t in self.t.values():
                t.poll(POLL_S)
        assert cond(), f"{what} did not happen within {polls_max} polls"

    def still_serving(self, tag: bytes) -> None:
        """A message each way between the members: the node was not stalled or broken."""
        self.t[1].send(2, tag)
        self.t[2].send(1, tag)
        self.until(lambda: (1, tag) in self.h[2].data and (2, tag) in self.h[1].data, "traffic")

    def port(self, m: int = 1) -> int:
        return self.addresses[m].port

    def close(self) -> None:
        for t in self.t.values():
            t.close()


@pytest.fixture
def pair():
    made: list[Pair] = []

    def make(handlers=None, **kw) -> Pair:
        p = Pair(handlers, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def _closed_by_node(sock: socket.socket, p: Pair) -> bool:
    """Whether the node closed `sock` (EOF or reset), polling the pair meanwhile."""
    sock.setblocking(False)
    for _ in range(500):
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return True
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return True
        for t in p.t.values():
            t.poll(POLL_S)
    return False


def _member_connect(p: Pair, my_id: int, secret: bytes = SECRET, role: str = "member"):
    """An authenticated connection to member 1 as `role` `my_id`, made while the pair polls."""
    result: dict = {}

    def run() -> None:
        try:
            result["sock"] = connect(
                "127.0.0.1", p.port(), secret, my_id=my_id, role=role, timeout_s=10
            )
        except (AuthError, ConnectionError) as e:
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    p.until(lambda: not thread.is_alive(), "the handshake")
    return result


def test_garbage_bytes_are_refused(pair):
    p = pair()
    sock = _raw(p.port())
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _closed_by_node(sock, p)
    assert p.t[1].stats["auth_failed"] == 1
    assert p.t[1].recent_drops[-1] == "member ?: handshake: not an smr peer (bad magic)"
    p.still_serving(b"after garbage")


def test_a_wrong_secret_is_refused_and_the_secret_is_never_shown(pair):
    p = pair()
    result = _member_connect(p, 3, secret=b"not-the-cluster-secret-000000000")
    assert isinstance(result.get("error"), AuthError)
    p.until(lambda: p.t[1].stats["auth_failed"] == 1, "the node counting the bad proof")
    assert p.h[1].up == [2]  # member 3 never linked up
    texts = [str(result["error"]), repr(p.config), repr(p.t[1]), *p.t[1].recent_drops]
    for text in texts:
        assert SECRET.decode() not in text and SECRET.hex() not in text
    p.still_serving(b"after a wrong secret")


def test_a_silent_connection_times_out_while_the_node_serves_the_others(pair):
    p = pair()
    sock = _raw(p.port())
    p.still_serving(b"while one says nothing")
    assert _closed_by_node(sock, p)
    assert p.t[1].stats["handshake_timeouts"] == 1
    p.still_serving(b"after it")


def test_a_truncated_frame_delivers_nothing_and_the_link_is_reported_failed(pair):
    p = pair()
    result = _member_connect(p, 3)
    sock = result["sock"]
    p.until(lambda: 3 in p.h[1].up, "the joiner's link up")
    sock.sendall(encode_frame(KIND_DATA, b"complete"))
    sock.sendall(encode_frame(KIND_DATA, b"cut short by a crash")[:-4])
    sock.close()
    p.until(lambda: 3 in p.h[1].failed, "on_peer_failed(3)")
    assert [d for s, d in p.h[1].data if s == 3] == [b"complete"]
    p.still_serving(b"after a truncated frame")


def test_an_oversized_length_closes_the_connection(pair):
    p = pair()
    sock = _member_connect(p, 3)["sock"]
    sock.sendall(HEADER.pack((1 << 20) + 1, KIND_DATA))  # no body follows: none is awaited
    assert _closed_by_node(sock, p)
    assert p.t[1].stats["bad_frames"] == 1
    p.still_serving(b"after an oversized frame")


def test_an_unknown_kind_or_a_short_write_closes_the_connection(pair):
    p = pair()
    for frame in (encode_frame(99, b"?"), encode_frame(1, b"short")):
        sock = _member_connect(p, 3)["sock"]
        sock.sendall(frame)
        assert _closed_by_node(sock, p)
    assert p.t[1].stats["bad_frames"] == 2
    assert not [d for s, d in p.h[1].data if s == 3] and not p.h[1].writes
    p.still_serving(b"after malformed frames")


def test_a_client_role_or_my_own_id_is_not_a_member_link(pair):
    p = pair()
    for my_id, role in ((3, "client"), (1, "member")):
        sock = _member_connect(p, my_id, role=role)["sock"]
        assert _closed_by_node(sock, p)
    assert p.t[1].stats["auth_failed"] == 2
    assert p.h[1].up == [2]


def test_a_full_send_queue_resets_the_link_which_comes_back(pair):
    p = pair(frame_bytes_max=64 << 10, send_queue_bytes_max=256 << 10)
    chunk = b"z" * (60 << 10)
    for _ in range(200):  # member 2 does not poll: the kernel buffers, then the queue, fill
        p.t[1].send(2, chunk)
        if p.t[1].stats["queue_overflows"]:
            break
    assert p.t[1].stats["queue_overflows"] == 1
    p.until(lambda: p.h[1].up.count(2) == 2, "the link up again")
    p.still_serving(b"after the reset")


def test_writes_up_to_the_frame_bound_arrive_and_larger_ones_are_refused(pair):
    p = pair(frame_bytes_max=64 << 10)
    biggest = b"w" * ((64 << 10) - 12)  # the epoch and offset share the frame
    p.t[1].write([2], 7, 3, biggest)
    p.until(lambda: p.h[2].writes == [(1, 7, 3, biggest)], "the largest write")
    with pytest.raises(TransportError, match="exceeds frame_bytes_max"):
        p.t[1].write([2], 7, 0, biggest + b"w")
    with pytest.raises(TransportError, match="exceeds frame_bytes_max"):
        p.t[1].send(2, b"s" * ((64 << 10) + 1))


def test_a_joiner_dials_in_and_both_dialing_settles_on_one_link():
    cfg = _config()
    ports = free_ports(2)
    a1, a3 = Address("127.0.0.1", ports[0]), Address("127.0.0.1", ports[1])
    t1 = TcpTransport(1, {1: a1}, cfg)  # member 1 does not know the joiner's address
    t3 = TcpTransport(3, {1: a1, 3: a3}, cfg)
    h1, h3 = Recorder(), Recorder()
    t1.start(h1)
    t3.start(h3)
    try:

        def until(cond, what):
            for _ in range(500):
                if cond():
                    return
                t1.poll(POLL_S)
                t3.poll(POLL_S)
            assert cond(), what

        until(lambda: h1.up == [3] and h3.up == [1], "the joiner's link")
        t1.add_member(3, a3)  # its address came with the join request: both may dial now
        for i in range(50):
            t1.send(3, b"%d" % i)
            t3.send(1, b"%d" % i)
            t1.poll(0)
            t3.poll(0)
        until(lambda: len(h3.data) >= 50 and len(h1.data) >= 50, "messages both ways")
        assert [d for _, d in h3.data][-50:] == [b"%d" % i for i in range(50)]
        assert not h1.failed and not h3.failed
    finally:
        t1.close()
        t3.close()


def test_a_link_the_peer_no_longer_has_is_replaced_by_its_new_dials(pair):
    # member 2 (the higher id) dials member 1 only when it has no link: repeated dials while
    # member 1 holds a link mean that link is dead on 2's side (a reboot that never closed it)
    p = pair()
    socks = [_member_connect(p, 2)["sock"] for _ in range(3)]
    p.until(lambda: p.h[1].up == [2, 2], "the third dial replacing the link")
    for s in socks[:2]:
        assert _closed_by_node(s, p)
    stand_in = socks[2]
    p.t[1].send(2, b"to the new connection")
    p.t[1].poll(0)  # sends go out at the next poll
    stand_in.settimeout(10)
    d = FrameDecoder(1 << 20)
    frames: list = []
    while not frames:
        frames = d.feed(stand_in.recv(4096))
    assert frames == [(KIND_DATA, b"to the new connection")]
    stand_in.close()
    p.until(lambda: p.h[1].up.count(2) == 3, "the real member 2 linked again")
    p.still_serving(b"after the stand-in left")


def test_misuse_is_a_transport_error():
    cfg = _config()
    (port,) = free_ports(1)
    t = TcpTransport(1, {1: Address("127.0.0.1", port)}, cfg)
    with pytest.raises(TransportError, match="before start"):
        t.send(2, b"x")
    with pytest.raises(TransportError, match="poll\\(\\) before start"):
        t.poll(0)
    t.start(Recorder())
    with pytest.raises(TransportError, match="twice"):
        t.start(Recorder())
    busy = TcpTransport(1, {1: Address("127.0.0.1", port)}, cfg)
    with pytest.raises(TransportError, match=f"cannot listen on 127.0.0.1:{port}"):
        busy.start(Recorder())
    t.close()
    t.poll(0)  # a poll after close returns
    lost = TcpTransport(1, {1: Address("no-such-host.invalid", port)}, cfg)
    with pytest.raises(TransportError, match=r"'no-such-host\.invalid' does not resolve"):
        lost.start(Recorder())


def test_frames_sent_in_one_burst_arrive_in_order(pair):
    p = pair()
    payloads = [bytes([i % 256]) * (i * 37 % 5000) for i in range(2000)]
    for payload in payloads:
        p.t[1].send(2, payload)
    p.until(lambda: len(p.h[2].data) == len(payloads), "every message")
    assert [d for _, d in p.h[2].data] == payloads


def test_redials_back_off_and_the_failure_is_reported_once():
    now = [0.0]
    step_s = 1 / 16  # binary fractions: the schedule below is exact
    cfg = _config(reconnect_backoff_s=1 / 8, peer_failed_after_s=1.0)
    p1, p2 = free_ports(2)  # nobody listens on p2: every dial is refused
    addresses = {1: Address("127.0.0.1", p1), 2: Address("127.0.0.1", p2)}
    t = TcpTransport(1, addresses, cfg, clock=lambda: now[0])
    h = Recorder()
    t.start(h)
    dials_at = [0.0] * t.stats["dialed"]  # start() dials the higher ids at once
    failed_at = []
    try:
        while now[0] <= 4.0:
            # poll until a dial in flight is refused (the fake clock stands still meanwhile)
            for _ in range(200):
                before = t.stats["dialed"]
                t.poll(0.01)
                dials_at += [now[0]] * (t.stats["dialed"] - before)
                if t.stats["dials_failed"] == t.stats["dialed"]:
                    break
            else:
                raise AssertionError("a refused dial was never noticed")
            if h.failed and not failed_at:
                failed_at.append(now[0])
            now[0] += step_s
        # the backoff doubles from 1/8 s up to peer_failed_after_s
        assert dials_at[:5] == [0.0, 0.125, 0.375, 0.875, 1.875]
        assert dials_at[5:] == [2.875, 3.875]
        assert h.failed == [2] and failed_at == [1.0]  # once, at peer_failed_after_s
    finally:
        t.close()


def test_a_handler_may_close_the_transport_in_a_callback(pair):
    closing_of: list[TcpTransport] = []

    class Closing(Recorder):
        def on_data(self, source, payload):
            super().on_data(source, payload)
            closing_of[0].close()

    p = pair(handlers={2: Closing()})
    closing_of.append(p.t[2])
    p.t[1].send(2, b"close now")
    p.t[1].send(2, b"never seen")
    p.until(lambda: p.h[2].data, "the message")
    p.t[2].poll(0)  # a closed transport's poll returns
    assert p.h[2].data == [(1, b"close now")]
    p.until(lambda: 2 in p.h[1].failed, "member 1 noticing")


def test_a_handler_may_close_the_transport_when_told_a_peer_failed():
    now = [0.0]
    cfg = _config(peer_failed_after_s=1.0)
    p1, p2 = free_ports(2)  # member 2 never answers
    addresses = {1: Address("127.0.0.1", p1), 2: Address("127.0.0.1", p2)}
    t = TcpTransport(1, addresses, cfg, clock=lambda: now[0])

    class Closing(Recorder):
        def on_peer_failed(self, peer):
            super().on_peer_failed(peer)
            t.close()

    h = Closing()
    t.start(h)
    t.poll(0)
    now[0] = 5.0  # the failure is due when the next poll starts
    t.poll(0)
    assert h.failed == [2]
    t.poll(0)
    t.close()


def test_an_idle_poll_blocks_until_woken(pair):
    p = pair()
    for _ in range(5):
        p.t[1].poll(POLL_S)  # let every handshake and timer settle
    returned = threading.Event()
    thread = threading.Thread(target=lambda: (p.t[1].poll(None), returned.set()), daemon=True)
    thread.start()
    # nothing arrives and no timer is due: the poll must still be blocked (it spins or returns
    # early only through a bug, so a slow machine cannot make this fail)
    assert not returned.wait(0.3), "an idle poll(None) returned with nothing to report"
    p.t[1].wake()
    thread.join(30)
    assert returned.is_set()
    assert p.h[1].data == [] and p.h[1].writes == []


@pytest.mark.parametrize("host", ["localhost", "::1"])
def test_host_names_and_ipv6_addresses_link(host):
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 here")
    cfg = _config()
    addresses = {m: Address(host, p) for m, p in zip((1, 2), free_ports(2), strict=True)}
    t = {m: TcpTransport(m, addresses, cfg) for m in (1, 2)}
    h = {m: Recorder() for m in (1, 2)}
    try:
        for m in t:
            t[m].start(h[m])
        t1_sent = False
        for _ in range(500):
            if h[1].up and not t1_sent:
                t[1].send(2, b"over " + host.encode())
                t1_sent = True
            if h[2].data:
                break
            for x in t.values():
                x.poll(POLL_S)
        assert h[2].data == [(1, b"over " + host.encode())]
    finally:
        for x in t.values():
            x.close()


def test_a_flood_of_silent_connections_is_bounded_and_the_link_keeps_working(pair):
    p = pair()
    flood = [_raw(p.port()) for _ in range(70)]
    try:
        p.until(lambda: p.t[1].stats["accepted"] + p.t[1].stats["refused_busy"] == 70, "accepts")
        assert p.t[1].stats["accepted"] == 64 and p.t[1].stats["refused_busy"] == 6
        p.still_serving(b"during a flood")
        p.until(lambda: p.t[1].stats["handshake_timeouts"] == 64, "the flood timing out")
        p.still_serving(b"after the flood")
    finally:
        for s in flood:
            s.close()


_ECHO_NODE = """
import sys
from smr.transport.base import Address, TransportConfig
from smr.transport.tcp import TcpTransport

me, p1, p2 = (int(a) for a in sys.argv[1:4])
addresses = {1: Address("127.0.0.1", p1), 2: Address("127.0.0.1", p2)}
config = TransportConfig(secret=sys.argv[4].encode(), peer_failed_after_s=0.3,
                         reconnect_backoff_s=0.02)
t = TcpTransport(me, addresses, config)

class Echo:
    def on_write(self, source, epoch, offset, data):
        pass
    def on_data(self, source, payload):
        t.send(source, b"echo:" + payload)
    def on_link_up(self, peer):
        pass
    def on_peer_failed(self, peer):
        pass

t.start(Echo())
while True:
    t.poll(None)
"""


def test_a_killed_process_is_reported_and_its_restart_links_again():
    cfg = _config()
    p1, p2 = free_ports(2)
    addresses = {1: Address("127.0.0.1", p1), 2: Address("127.0.0.1", p2)}
    t = TcpTransport(1, addresses, cfg)
    h = Recorder()
    t.start(h)
    argv = [sys.executable, "-c", _ECHO_NODE, "2", str(p1), str(p2), SECRET.decode()]

    def until(cond, what):
        for _ in range(1000):
            if cond():
                return
            t.poll(POLL_S)
        assert cond(), f"{what} did not happen within 1000 polls"

    def echo(payload: bytes) -> None:
        # a frame sent while the two ends settle on one connection may be lost with the
        # other (the contract: on_link_up, and the replica sends again): send until it echoes
        for _ in range(20):
            t.send(2, payload)
            for _ in range(50):
                if (2, b"echo:" + payload) in h.data:
                    return
                t.poll(POLL_S)
        raise AssertionError(f"no echo of {payload!r}")

    child = subprocess.Popen(argv)
    try:
        # both ends may dial while the child starts: a second connection can replace the
        # first, each reported with on_link_up (the contract), so count, don't compare
        until(lambda: 2 in h.up, "the child's link")
        echo(b"one")
        child.kill()  # SIGKILL: no goodbye, the kernel closes its sockets
        child.wait()
        until(lambda: h.failed == [2], "on_peer_failed(2)")
        ups = len(h.up)
        child = subprocess.Popen(argv)  # the same port again
        until(lambda: len(h.up) > ups, "the restarted child's link")
        echo(b"two")
    finally:
        child.kill()
        child.wait()
        t.close()


def test_a_killed_process_is_reported_at_once_not_after_the_timeout():
    cfg = _config(peer_failed_after_s=30.0)
    p1, p2 = free_ports(2)
    addresses = {1: Address("127.0.0.1", p1), 2: Address("127.0.0.1", p2)}
    t = TcpTransport(1, addresses, cfg)
    h = Recorder()
    t.start(h)
    child = subprocess.Popen(
        [sys.executable, "-c", _ECHO_NODE, "2", str(p1), str(p2), SECRET.decode()]
    )
    try:
        for _ in range(1000):
            if 2 in h.up:  # once or twice: a replacing connection is reported too
                break
            t.poll(POLL_S)
        assert set(h.up) == {2}
        child.kill()
        child.wait()
        started = time.monotonic()
        for _ in range(1000):  # at most about 20 s of polls, below peer_failed_after_s
            if h.failed == [2]:
                break
            t.poll(POLL_S)
        assert h.failed == [2], "a refused redial after the link broke was not reported"
        assert time.monotonic() - started < 25
    finally:
        child.kill()
        child.wait()
        t.close()


def test_a_handler_error_propagates_and_no_frame_after_it_is_skipped(pair):
    class Refusing(Recorder):
        def on_data(self, source, payload):
            if payload == b"bad":
                raise ValueError("refused by the replica")
            super().on_data(source, payload)

    p = pair(handlers={2: Refusing()})
    for payload in (b"a", b"bad", b"b", b"c"):
        p.t[1].send(2, payload)
    p.t[1].poll(0)  # out in one batch
    raised = False
    for _ in range(500):
        try:
            p.t[2].poll(POLL_S)
        except ValueError:
            raised = True
            break
    assert raised
    if p.t[2].stats["links_lost"]:
        # frames read with the bad one were not reported, so the link was reset: member 1 sees
        # it linked again (its replica resends), and nothing was silently skipped on a live link
        p.until(lambda: p.h[1].up.count(2) == 2, "the link up again")
        assert [d for _, d in p.h[2].data] == [b"a"]
    else:  # the bad frame came last in its read: the rest arrives on the same link
        p.until(lambda: len(p.h[2].data) == 3, "the rest")
        assert [d for _, d in p.h[2].data] == [b"a", b"b", b"c"]
    p.still_serving(b"after the error")
