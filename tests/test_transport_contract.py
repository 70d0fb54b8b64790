"""The transport contract (`smr/transport/base.py`), checked against every provider.

Providers come from `tests/transport_factories/` (one module each). Writes are checked the way a
replica reads them: every reported write is applied to the receiver's copy of the writer's row,
and after each one that copy must equal the writer's row after some prefix of the writes made, a
prefix that never shrinks (whole writes, per-link FIFO; a provider may report several writes at
once, or only the bytes that changed). Nothing here measures time: waits are bounded numbers of
polls that fail with a message.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import socket
import threading

import pytest
import transport_factories

from smr.transport.base import Transport, TransportConfig

PROVIDERS = transport_factories.discover()
POLL_S = 0.02
ROW_BYTES = (1 << 20) - 4096  # the largest write: nearly a whole frame
FRAME_BYTES_MAX = 1 << 20


def _config() -> TransportConfig:
    return TransportConfig(
        secret=b"contract-test-secret-0123456789",
        cluster=f"ct{os.urandom(4).hex()}",
        frame_bytes_max=FRAME_BYTES_MAX,
        connect_timeout_s=1.0,
        peer_failed_after_s=0.3,
        reconnect_backoff_s=0.02,
        send_queue_bytes_max=64 << 20,
    )


class Recorder:
    """A handler that records everything, and keeps each writer's row per epoch as written."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.rows: dict[tuple[int, int], bytearray] = {}  # (source, epoch) -> row copy
        self.data: dict[int, list[bytes]] = {}
        self.up: list[int] = []
        self.failed: list[int] = []
        self.on_each_write = None  # called as (source, epoch, row) after every write

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        assert isinstance(data, bytes | bytearray | memoryview)
        row = self.rows.setdefault((source, epoch), bytearray(ROW_BYTES))
        assert offset >= 0 and offset + len(data) <= ROW_BYTES, (offset, len(data))
        row[offset : offset + len(data)] = data
        self.events.append(("write", source, epoch, offset, len(data)))
        if self.on_each_write is not None:
            self.on_each_write(source, epoch, row)

    def on_data(self, source: int, payload: bytes) -> None:
        self.data.setdefault(source, []).append(bytes(payload))
        self.events.append(("data", source, len(payload)))

    def on_link_up(self, peer: int) -> None:
        self.up.append(peer)
        self.events.append(("up", peer))

    def on_peer_failed(self, peer: int) -> None:
        self.failed.append(peer)
        self.events.append(("failed", peer))


class RangesRecorder(Recorder):
    """A handler that takes a row read as its changed ranges (`on_write_ranges`), applied
    together: the row after them must still be the state after some prefix of the writes."""

    def on_write_ranges(self, source: int, epoch: int, ranges: list[tuple[int, bytes]]) -> None:
        row = self.rows.setdefault((source, epoch), bytearray(ROW_BYTES))
        for offset, data in ranges:
            assert offset >= 0 and offset + len(data) <= ROW_BYTES, (offset, len(data))
            row[offset : offset + len(data)] = data
        self.events.append(("write", source, epoch, ranges[0][0] if ranges else 0, 0))
        if self.on_each_write is not None:
            self.on_each_write(source, epoch, row)


class Group:
    """Transports of one provider, started, with a recorder each."""

    def __init__(self, factory, members: list[int], tmp_path, recorder=Recorder):
        self.factory = factory
        self.config = _config()
        self.t: dict[int, Transport] = factory.make(members, self.config, tmp_path)
        assert sorted(self.t) == sorted(members)
        self.h: dict[int, Recorder] = {m: recorder() for m in members}
        self.members = list(members)
        for m, t in self.t.items():
            t.start(self.h[m])
        for m in self.t:
            self.register(m, 1)

    def register(self, m: int, epoch: int) -> None:
        self.t[m].register(epoch, self.members, ROW_BYTES)

    def poll_until(self, cond, what: str, polls_max: int = 500) -> None:
        """Poll every live transport until `cond()` holds; fail naming `what` otherwise."""
        elapse = getattr(self.factory, "elapse", None)  # a simulated clock (see the factories)
        for _ in range(polls_max):
            if cond():
                return
            for t in list(self.t.values()):
                t.poll(POLL_S)
            if elapse is not None:
                elapse(self.t, POLL_S)
        assert cond(), f"{self.factory.NAME}: {what} did not happen within {polls_max} polls"

    def connected(self) -> None:
        self.poll_until(
            lambda: all(
                set(self.h[m].up) >= set(self.members) - {m} for m in self.members if m in self.t
            ),
            "every link up",
        )

    def restart(self, m: int, old: Transport) -> None:
        again = getattr(self.factory, "restart", None)
        new = again(old) if again else type(old)(old.me, old.addresses, old.config)
        self.t[m] = new
        self.h[m] = Recorder()
        new.start(self.h[m])
        self.register(m, 1)

    def close(self) -> None:
        for t in self.t.values():
            t.close()


@pytest.fixture(params=PROVIDERS, ids=[p.NAME for p in PROVIDERS])
def factory(request):
    reason = getattr(request.param, "skip_reason", lambda: None)()
    if reason:
        pytest.skip(f"{request.param.NAME}: {reason}")
    return request.param


@pytest.fixture
def group(factory, tmp_path):
    groups: list[Group] = []

    def make(members=(1, 2, 3), recorder=Recorder) -> Group:
        g = Group(factory, list(members), tmp_path, recorder)
        groups.append(g)
        g.connected()
        return g

    yield make
    for g in groups:
        g.close()


def _writes(count: int, seed: int) -> list[tuple[int, bytes]]:
    """`count` writes of sizes from 1 byte to the whole row, at varied offsets, each distinct."""
    out = []
    sizes = [1, 8, 64, 100, 4096, 65536, ROW_BYTES]
    for i in range(count):
        size = sizes[i % len(sizes)] if i % 5 else 8
        offset = ((i * 7919 + seed) * 8) % (ROW_BYTES - size + 1) // 8 * 8
        body = hashlib.sha256(f"{seed}:{i}".encode()).digest()
        out.append((offset, (body * (size // len(body) + 1))[:size]))
    return out


def _prefix_hashes(writes: list[tuple[int, bytes]]) -> dict[bytes, int]:
    row = bytearray(ROW_BYTES)
    hashes = {hashlib.sha256(row).digest(): 0}
    for i, (offset, data) in enumerate(writes, 1):
        row[offset : offset + len(data)] = data
        hashes.setdefault(hashlib.sha256(row).digest(), i)
    return hashes


class PrefixCheck:
    """Asserts that a receiver's row copy is always a never-shrinking prefix of the writes."""

    def __init__(self, writes_by_source: dict[int, list[tuple[int, bytes]]]):
        self.hashes = {s: _prefix_hashes(w) for s, w in writes_by_source.items()}
        self.seen = {s: 0 for s in writes_by_source}
        self.total = {s: len(w) for s, w in writes_by_source.items()}

    def __call__(self, source: int, epoch: int, row: bytearray) -> None:
        index = self.hashes[source].get(hashlib.sha256(row).digest())
        assert index is not None, f"the row of {source} is not the state after any prefix"
        assert index >= self.seen[source], f"the row of {source} went back: {index}"
        self.seen[source] = index

    def complete(self) -> bool:
        return self.seen == self.total


@pytest.mark.parametrize("recorder", [Recorder, RangesRecorder], ids=["union", "ranges"])
def test_writes_arrive_whole_and_in_order(group, recorder):
    g = group(recorder=recorder)
    writes = {s: _writes(120, seed=s) for s in g.members}
    checks = {m: PrefixCheck({s: w for s, w in writes.items() if s != m}) for m in g.members}
    for m in g.members:
        g.h[m].on_each_write = checks[m]
    for i in range(120):
        for s in g.members:
            offset, data = writes[s][i]
            g.t[s].write([m for m in g.members if m != s], 1, offset, data)
        if i % 10 == 9:
            for t in g.t.values():
                t.poll(0)
    g.poll_until(lambda: all(c.complete() for c in checks.values()), "every write delivered")
    for m in g.members:
        assert {e[2] for e in g.h[m].events if e[0] == "write"} == {1}  # the epoch written


def test_writes_keep_their_epoch(group):
    g = group((1, 2))
    for m in g.members:
        g.register(m, 2)
    g.t[1].write([2], 1, 0, b"one" * 8)
    g.t[1].write([2], 2, 8, b"two" * 8)
    want_1 = bytearray(ROW_BYTES)
    want_1[0:24] = b"one" * 8
    want_2 = bytearray(ROW_BYTES)
    want_2[8:32] = b"two" * 8
    g.poll_until(
        lambda: g.h[2].rows.get((1, 1)) == want_1 and g.h[2].rows.get((1, 2)) == want_2,
        "writes of two epochs applied to their own tables",
    )


def test_data_messages_arrive_whole_and_in_order(group):
    g = group()
    sizes = [0, 1, 17, 1000, 70000, FRAME_BYTES_MAX, 5, FRAME_BYTES_MAX // 3]
    sent = {}
    for s in g.members:
        for m in g.members:
            if m == s:
                continue
            msgs = [os.urandom(size) for size in sizes] + [b"%d" % i for i in range(300)]
            sent[s, m] = msgs
            for payload in msgs:
                g.t[s].send(m, payload)
    g.poll_until(
        lambda: all(len(g.h[m].data.get(s, [])) >= len(v) for (s, m), v in sent.items()),
        "every data message delivered",
    )
    for (s, m), msgs in sent.items():
        assert g.h[m].data[s] == msgs, f"messages from {s} to {m} differ"


def test_writes_and_sends_keep_order_per_link(group, factory):
    if not getattr(factory, "ORDERED_ACROSS_CHANNELS", False):
        pytest.skip(f"{factory.NAME} does not order writes against sends")
    g = group((1, 2))
    seen_at_data: list[tuple[int, int]] = []
    rec = g.h[2]
    original = rec.on_data

    def on_data(source: int, payload: bytes) -> None:
        row = rec.rows.get((source, 1), bytearray(8))
        seen_at_data.append((int(payload), int.from_bytes(row[:8], "little")))
        original(source, payload)

    rec.on_data = on_data
    for i in range(1, 400):
        g.t[1].write([2], 1, 0, i.to_bytes(8, "little"))
        g.t[1].send(2, b"%d" % i)
    g.poll_until(lambda: len(seen_at_data) == 399, "every message delivered")
    assert [n for n, _ in seen_at_data] == list(range(1, 400))
    for n, counter in seen_at_data:
        assert counter >= n, f"message {n} arrived before the write made before it"


def _poll_returns(t: Transport, before=None) -> bool:
    """Whether `t.poll(None)`, run in a thread after `before()`, returns (with a guard of 30 s
    against hanging the suite; not a measure of speed)."""
    returned = threading.Event()

    def blocked() -> None:
        t.poll(None)
        returned.set()

    thread = threading.Thread(target=blocked, daemon=True)
    if before is not None:
        before()
    thread.start()
    return returned.wait(30)


def test_wake_from_another_thread_ends_a_blocked_poll(group):
    # sim: a poll never blocks, so this holds at once; tests/test_transport_sim.py checks what
    # wake() means there (the member is ready now)
    g = group((1, 2))
    t = g.t[1]
    waker = threading.Timer(0.05, t.wake)  # most likely while the poll is blocked
    waker.start()
    assert _poll_returns(t), "poll(None) did not return after wake() from another thread"
    waker.join()
    # a wake-up made before the poll also ends that poll
    assert _poll_returns(t, before=t.wake), "poll(None) did not return after an earlier wake()"


def test_a_watched_socket_of_the_driver_is_served_by_poll(group):
    g = group((1, 2))
    t = g.t[1]
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    events: list[int] = []
    try:
        t.watch(ours, events.append)
        theirs.send(b"x")
        assert _poll_returns(t), "poll(None) did not return for a readable watched socket"
        assert events and events[-1] & selectors.EVENT_READ
        assert ours.recv(10) == b"x"
        t.watch(ours, events.append, write=True)  # a writable socket: poll reports it at once
        events.clear()
        t.poll(0.5)
        assert events and events[-1] & selectors.EVENT_WRITE
        t.unwatch(ours)
        events.clear()
        theirs.send(b"y")
        t.poll(0.05)
        assert events == [], "an unwatched socket was still reported"
    finally:
        ours.close()
        theirs.close()


def test_a_closed_peer_is_reported_failed(group):
    g = group()
    g.t[3].close()
    del g.t[3]
    g.poll_until(lambda: 3 in g.h[1].failed and 3 in g.h[2].failed, "on_peer_failed(3)")
    assert 1 not in g.h[2].failed and 2 not in g.h[1].failed
    # the survivors still talk
    g.t[1].send(2, b"still here")
    g.poll_until(lambda: g.h[2].data.get(1) == [b"still here"], "a message between survivors")


@pytest.mark.parametrize("who", [1, 2], ids=["lower-id", "higher-id"])
def test_a_restarted_peer_gets_link_up_and_traffic_flows(group, who):
    g = group((1, 2))
    other = 3 - who
    old = g.t.pop(who)
    old.close()
    g.poll_until(lambda: who in g.h[other].failed, f"on_peer_failed({who})")
    ups_before = g.h[other].up.count(who)
    g.restart(who, old)
    g.poll_until(
        lambda: g.h[other].up.count(who) > ups_before and other in g.h[who].up,
        "the link up after restart",
    )
    g.t[other].write([who], 1, 0, b"after restart")
    g.t[other].send(who, b"hello again")
    g.t[who].send(other, b"I am back")
    g.poll_until(
        lambda: (
            g.h[who].data.get(other) == [b"hello again"]
            and g.h[other].data.get(who) == [b"I am back"]
        ),
        "messages both ways after restart",
    )
    assert g.h[who].rows[other, 1][:13] == b"after restart"


def test_writes_and_sends_to_a_down_peer_do_not_raise(group):
    g = group()
    g.t[3].close()
    del g.t[3]
    g.t[1].write([2, 3], 1, 0, b"x" * 64)
    g.t[1].send(3, b"lost")
    g.poll_until(lambda: 3 in g.h[1].failed, "on_peer_failed(3)")
    g.t[1].write([3], 1, 0, b"y" * 64)
    g.t[1].send(3, b"lost again")
    g.t[1].send(2, b"delivered")
    g.poll_until(lambda: g.h[2].data.get(1) == [b"delivered"], "the live peer's message")


def test_close_is_idempotent(group):
    g = group((1, 2))
    g.t[1].close()
    g.t[1].close()
    g.t[2].close()
    g.t[2].close()
