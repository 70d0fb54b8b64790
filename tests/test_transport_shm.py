"""The shm transport through its public API: one-sided writes land whole and FIFO, epochs stay
apart, data frames arrive whole and in order, rings coalesce, failures and restarts are reported,
and no file outlives its member. Two tests run a member in another process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from smr.transport.base import Address, TransportConfig, TransportError
from smr.transport.shm import (
    BUSY,
    RANGES_MAX,
    ROW_HEADER_BYTES,
    RowSlot,
    ShmTransport,
    region_bytes,
)

sys.path.insert(0, str(Path(__file__).parent))
from shm_peer import ROW_BYTES, SECRET, make_row, row_ok

PEER_SCRIPT = str(Path(__file__).parent / "shm_peer.py")


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int, bytes]] = []
        self.data: list[tuple[int, bytes]] = []
        self.up: list[int] = []
        self.failed: list[int] = []

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        self.writes.append((source, epoch, offset, data))

    def on_data(self, source: int, payload: bytes) -> None:
        self.data.append((source, payload))

    def on_link_up(self, peer: int) -> None:
        self.up.append(peer)

    def on_peer_failed(self, peer: int) -> None:
        self.failed.append(peer)

    def image(self, source: int, epoch: int, row_bytes: int) -> bytearray:
        row = bytearray(row_bytes)
        for s, e, off, data in self.writes:
            if (s, e) == (source, epoch):
                row[off : off + len(data)] = data
        return row


def config(cluster: str, **kw) -> TransportConfig:
    return TransportConfig(secret=SECRET, cluster=cluster, **kw)


@pytest.fixture
def cluster():
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    d = Path("/dev/shm") / f"smr-{name}-u{os.getuid()}"
    leftovers = sorted(p.name for p in d.iterdir()) if d.exists() else []
    assert leftovers == [], f"files leaked in {d}: {leftovers}"


def pair(cluster: str, members=(1, 2), **kw):
    addrs = {m: Address("local", 0) for m in members}
    ts = {m: ShmTransport(m, addrs, config(cluster, **kw)) for m in members}
    hs = {m: Recorder() for m in members}
    for m in members:
        ts[m].start(hs[m])
    pump(ts, lambda: all(len(hs[m].up) == len(members) - 1 for m in members))
    return ts, hs


def pump(ts, done, rounds_max=2000, timeout_s=0.01):
    for _ in range(rounds_max):
        if done():
            return
        for t in ts.values():
            t.poll(timeout_s)
    assert done(), "condition not reached"


def close_all(ts):
    for t in ts.values():
        t.close()


def test_row_slot_reports_the_union_of_recent_writes_and_the_whole_row_after_many():
    buf = memoryview(bytearray(ROW_HEADER_BYTES + 64))
    slot = RowSlot(buf, 0, 64)
    assert slot.read(0, 10) is None
    slot.write(8, b"a" * 8)
    slot.write(24, b"b" * 8)
    seq, off, data = slot.read(0, 10)
    assert (seq, off, data) == (4, 8, b"a" * 8 + bytes(8) + b"b" * 8)
    for i in range(RANGES_MAX + 1):
        slot.write(0, bytes([i]) * 8)
    seq2, off2, data2 = slot.read(seq, 10)
    assert (off2, len(data2)) == (0, 64) and data2[:8] == bytes([RANGES_MAX]) * 8
    assert slot.mark_seen(seq2) is False
    slot.q[0] += 1  # a writer stopped in the middle of a write
    assert slot.read(seq2, 10) is BUSY
    slot.write(0, b"z" * 8)  # the next writer finishes the dead one's seqlock first
    seq3, off3, data3 = slot.read(seq2, 10)
    assert seq3 % 2 == 0 and seq3 > seq2 and (off3, len(data3)) == (0, 64)


def test_row_slot_reads_far_apart_ranges_apart_and_near_ones_as_one():
    row_bytes = 4096
    slot = RowSlot(memoryview(bytearray(ROW_HEADER_BYTES + row_bytes)), 0, row_bytes)
    assert slot.read_ranges(0, 10) is None
    slot.write(3000, b"s" * 100)  # a ring slot
    slot.write(8, b"c" * 16)  # counters, far from it
    slot.write(40, b"d" * 8)  # near the counters: copied with them
    seq, ranges = slot.read_ranges(0, 10)
    assert seq == 6
    assert ranges == [(8, b"c" * 16 + bytes(16) + b"d" * 8), (3000, b"s" * 100)]
    # past RANGES_MAX writes since the last read, the whole row
    for i in range(RANGES_MAX + 1):
        slot.write(100 * i, bytes([i + 1]) * 8)
    seq2, ranges2 = slot.read_ranges(seq, 10)
    assert [(off, len(data)) for off, data in ranges2] == [(0, row_bytes)]
    # the reader's copy after applying the ranges equals the row
    image = bytearray(row_bytes)
    for off, data in ranges + ranges2:
        image[off : off + len(data)] = data
    assert bytes(image) == bytes(slot.data)
    slot.q[0] += 1  # a writer stopped in the middle of a write
    assert slot.read_ranges(seq2, 10) is BUSY


def test_writes_land_whole_and_in_order(cluster):
    ts, hs = pair(cluster)
    for t in ts.values():
        t.register(1, [1, 2], 64)
    ts[1].write([2], 1, 0, b"A" * 16)
    ts[1].write([2], 1, 8, b"B" * 8)
    ts[1].write([2], 1, 56, b"C" * 8)
    pump(ts, lambda: hs[2].image(1, 1, 64)[56:] == b"C" * 8)
    assert hs[2].image(1, 1, 64) == b"A" * 8 + b"B" * 8 + bytes(40) + b"C" * 8
    assert all(s == 1 and e == 1 and off % 8 == 0 for s, e, off, _ in hs[2].writes)
    assert hs[1].writes == []
    close_all(ts)


def test_rings_coalesce_while_the_reader_has_not_caught_up(cluster):
    ts, hs = pair(cluster)
    for t in ts.values():
        t.register(1, [1, 2], 64)
    for i in range(100):
        ts[1].write([2], 1, 0, i.to_bytes(8, "little"))
    assert ts[1].statistics()["writes"] == 100
    assert ts[1].statistics()["rings"] == 1
    pump(ts, lambda: hs[2].image(1, 1, 64)[:8] == (99).to_bytes(8, "little"))
    ts[1].write([2], 1, 0, (100).to_bytes(8, "little"))
    assert ts[1].statistics()["rings"] == 2  # the reader caught up: the next write rings
    pump(ts, lambda: hs[2].image(1, 1, 64)[:8] == (100).to_bytes(8, "little"))
    close_all(ts)


def test_a_write_to_a_future_epoch_reaches_a_reader_that_has_not_registered_it(cluster):
    ts, hs = pair(cluster)
    for t in ts.values():
        t.register(1, [1, 2], 64)
    ts[1].write([2], 1, 0, b"old-last")
    ts[1].register(2, [1, 2], 128)  # the writer moved on; the reader is still in epoch 1
    ts[1].write([2], 2, 120, b"new-row!")
    pump(ts, lambda: any(e == 2 for _, e, _, _ in hs[2].writes))
    epochs = [e for _, e, _, _ in hs[2].writes]
    assert epochs == sorted(epochs), "epoch 1's writes are reported before epoch 2's"
    assert hs[2].image(1, 1, 64)[:8] == b"old-last"
    assert hs[2].image(1, 2, 128)[120:] == b"new-row!"
    assert hs[2].image(1, 2, 128)[:8] == bytes(8), "the epochs' tables do not mix"
    ts[2].register(2, [1, 2], 128)  # the reader's own layout matches the writer-made region
    close_all(ts)


def test_a_layout_mismatch_and_bad_writes_are_refused(cluster):
    ts, _ = pair(cluster)
    ts[1].register(1, [1, 2], 64)
    ts[1].write([2], 1, 0, b"x" * 8)  # creates 2's region with 1's layout
    with pytest.raises(TransportError, match="layout"):
        ts[2].register(1, [1, 2], 128)
    with pytest.raises(TransportError, match="does not fit"):
        ts[1].write([2], 1, 60, b"x" * 8)
    with pytest.raises(TransportError, match="does not fit"):
        ts[1].write([2], 1, 4, b"x" * 8)
    with pytest.raises(TransportError, match="did not register"):
        ts[1].write([2], 7, 0, b"x" * 8)
    with pytest.raises(TransportError, match="frame_bytes_max"):
        ts[1].send(2, bytes(ts[1].config.frame_bytes_max + 1))
    close_all(ts)


def test_old_epochs_are_released(cluster):
    ts, _ = pair(cluster)
    for e in (1, 2, 3):
        ts[1].register(e, [1, 2], 64)
    assert [f for f in ts[1].files() if f.startswith("t1-")] == sorted(
        f for f in ts[1].files() if f.endswith(("-e2.tbl", "-e3.tbl"))
    )
    ts[1].write([2], 1, 0, b"x" * 8)  # a released epoch: dropped, not an error
    close_all(ts)


def test_data_arrives_whole_and_in_order(cluster):
    ts, hs = pair(cluster)
    big = os.urandom(3 << 20)
    ts[1].send(2, b"first")
    ts[1].send(2, big)
    ts[1].send(2, b"")
    ts[1].send(2, b"last")
    pump(ts, lambda: len(hs[2].data) == 4)
    assert hs[2].data == [(1, b"first"), (1, big), (1, b""), (1, b"last")]
    close_all(ts)


def test_wake_from_another_thread_ends_a_blocking_poll(cluster):
    ts, _ = pair(cluster)
    waker = threading.Timer(0.05, ts[1].wake)
    waker.start()
    ts[1].poll(None)  # returns only because of the wake
    waker.join()
    close_all(ts)


def test_failure_then_restart_is_reported_and_files_are_removed(cluster):
    ts, hs = pair(cluster, peer_failed_after_s=0.1)
    ts[2].close()
    assert ts[2].files() == []
    pump({1: ts[1]}, lambda: hs[1].failed == [2])
    again = ShmTransport(2, ts[1].addresses, config(cluster, peer_failed_after_s=0.1))
    h2 = Recorder()
    again.start(h2)
    pump({1: ts[1], 2: again}, lambda: hs[1].up == [2, 2] and h2.up == [1])
    again.close()
    ts[1].close()


def test_a_second_process_with_the_same_id_is_refused(cluster):
    ts, _ = pair(cluster)
    dup = ShmTransport(2, ts[1].addresses, config(cluster))
    with pytest.raises(TransportError, match="already running"):
        dup.start(Recorder())
    close_all(ts)


def spawn(cluster: str, me: int, peer: int, mode: str, n: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, PEER_SCRIPT, cluster, str(me), str(peer), mode, str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_two_processes_exchange_rows_that_are_never_torn(cluster):
    addrs = {1: Address("local", 0), 2: Address("local", 0)}
    me = ShmTransport(1, addrs, config(cluster, peer_failed_after_s=0.2))
    h = Recorder()
    me.start(h)
    me.register(1, [1, 2], ROW_BYTES)
    writes_n = 3000
    child = spawn(cluster, 2, 1, "rows", writes_n)
    try:
        image = bytearray(ROW_BYTES)
        counters = []
        seen = 0
        for _ in range(200_000):
            me.poll(0.01)
            for _s, _e, off, data in h.writes[seen:]:
                image[off : off + len(data)] = data
                assert row_ok(image), "a torn row reached the handler"
                counters.append(int.from_bytes(image[:8], "little"))
            seen = len(h.writes)
            if h.data:
                break
        assert h.data == [(2, b"done")]
        me.poll(0)
        assert bytes(image) == make_row(writes_n)
        assert counters == sorted(counters), "rows are reported in the order written"
        assert len(counters) >= 1
    finally:
        me.close()
        assert child.wait(timeout=30) == 0


def test_a_killed_process_is_reported_and_its_files_removed(cluster):
    addrs = {1: Address("local", 0), 2: Address("local", 0)}
    me = ShmTransport(1, addrs, config(cluster, peer_failed_after_s=0.1))
    h = Recorder()
    me.start(h)
    me.register(1, [1, 2], ROW_BYTES)
    child = spawn(cluster, 2, 1, "idle")
    try:
        pump({1: me}, lambda: h.up == [2])
        assert child.stdout.readline() == "up\n"
        me.write([2], 1, 0, make_row(1))  # maps (creates) a region of member 2
        h.failed.clear()  # a slow child start may already have counted as a failure
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        pump({1: me}, lambda: h.failed == [2])
        left = [p.name for p in me.dir.iterdir() if p.name.startswith("t2-")]
        assert left == [], "the dead incarnation's tables were removed"
        # a restart over the dead one's socket and FIFO files is accepted
        child = spawn(cluster, 2, 1, "idle")
        pump({1: me}, lambda: h.up == [2, 2])
        assert child.stdout.readline() == "up\n"
    finally:
        me.close()
        child.wait(timeout=30)
    d = me.dir
    assert not d.exists() or sorted(p.name for p in d.iterdir()) == []


def test_a_peer_whose_process_ended_is_reported_at_once_not_after_the_timeout(cluster):
    addrs = {1: Address("local", 0), 2: Address("local", 0)}
    me = ShmTransport(1, addrs, config(cluster, peer_failed_after_s=30.0))
    h = Recorder()
    me.start(h)
    child = spawn(cluster, 2, 1, "idle")
    try:
        pump({1: me}, lambda: h.up == [2])
        assert child.stdout.readline() == "up\n"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        started = time.monotonic()
        pump({1: me}, lambda: h.failed == [2])
        assert time.monotonic() - started < 10.0  # far below peer_failed_after_s
        child = spawn(cluster, 2, 1, "idle")  # its restart clears the dead one's files
        pump({1: me}, lambda: h.up == [2, 2])
        assert child.stdout.readline() == "up\n"
    finally:
        me.close()
        child.wait(timeout=30)


def test_a_peer_never_reached_is_reported_only_after_the_timeout(cluster):
    addrs = {1: Address("local", 0), 2: Address("local", 0)}
    me = ShmTransport(1, addrs, config(cluster, peer_failed_after_s=30.0))
    h = Recorder()
    me.start(h)
    try:
        for _ in range(20):
            me.poll(0.01)
        assert h.failed == []  # not yet started is not dead: founders start seconds apart
    finally:
        me.close()


def test_region_size_is_deterministic():
    assert region_bytes(3, 64) == region_bytes(3, 64)
    assert region_bytes(3, 64) % 64 == 0 and region_bytes(3, 72) > region_bytes(3, 64)
