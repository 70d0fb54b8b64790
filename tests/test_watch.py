"""Watches: every command applied to a shard, in order, each once, from any member, across a
member's SIGKILL; a version no longer kept is a clear error; a slow watcher is cut off."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import smr
from smr.cli.main import cli
from smr.runtime import protocol
from smr.runtime.cluster import LocalCluster
from smr.runtime.watches import ENTRY_OVERHEAD_BYTES, Watches
from smr.statemachines import KVStore
from smr.watch import WatchTrimmedError

# -- the member side, alone -----------------------------------------------------------------------


def _watches(**kwargs):
    sent: list[tuple[int, protocol.Response]] = []
    backlog = {"bytes": 0}
    w = Watches(
        lambda conn, r: sent.append((conn, r)),
        pending_bytes=lambda conn: backlog["bytes"],
        **kwargs,
    )
    return w, sent, backlog


def test_a_watch_gets_what_comes_after_its_version_once_in_order():
    w, sent, _ = _watches()
    w.reset((0, 0), 0)
    for v in (1, 2, 3):
        w.applied((0, 0), v, b"op%d" % v, b"r")
    w.add(7, protocol.Watch(1, 0, 0, from_version=1))
    w.pump()
    w.applied((0, 0), 4, b"op4", b"r")
    w.applied((0, 1), 9, b"other shard", b"r")
    w.pump()
    w.pump()  # nothing new: nothing sent
    events = [e for _, r in sent for e in r.events]
    assert [v for v, _, _ in events] == [2, 3, 4]
    assert all(r.ok for _, r in sent) and len(sent) == 3  # started, then two batches


def test_a_version_no_longer_kept_is_refused_with_the_oldest_that_is():
    w, sent, _ = _watches(history_max=3)
    w.reset((0, 0), 0)
    for v in range(1, 11):
        w.applied((0, 0), v, b"x", b"r")
    w.add(1, protocol.Watch(1, 0, 0, from_version=2))
    assert not sent[-1][1].ok and sent[-1][1].trimmed == 7  # 8, 9, 10 are kept
    w.add(1, protocol.Watch(2, 0, 0, from_version=7))
    w.pump()
    assert [v for v, _, _ in sent[-1][1].events] == [8, 9, 10]
    # a restored state: nothing before it is here
    w.reset((0, 0), 100)
    w.add(1, protocol.Watch(3, 0, 0, from_version=50))
    assert sent[-1][1].trimmed == 100


def test_the_history_is_bounded_in_bytes_too():
    w, sent, _ = _watches(history_bytes_max=1000)
    w.reset((0, 0), 0)
    for v in range(1, 101):
        w.applied((0, 0), v, b"x" * 100, b"")
    w.add(1, protocol.Watch(1, 0, 0, from_version=0))
    assert not sent[-1][1].ok and sent[-1][1].trimmed > 90


class _ReferenceHistory:
    """The history's rules one command at a time: keep the newest commands while there are more
    than max_n or more than max_b bytes (each its payload, result and the overhead), one at
    least."""

    def __init__(self, floor, max_n, max_b):
        self.floor, self.max_n, self.max_b = floor, max_n, max_b
        self.entries = []

    def size(self, e):
        return len(e[1]) + len(e[2]) + ENTRY_OVERHEAD_BYTES

    def add(self, entry):
        if entry[0] <= (self.entries[-1][0] if self.entries else self.floor):
            return
        self.entries.append(entry)
        while len(self.entries) > self.max_n or (
            sum(map(self.size, self.entries)) > self.max_b and len(self.entries) > 1
        ):
            self.floor = self.entries.pop(0)[0]

    def after(self, version, bytes_max):
        out, total = [], 0
        for e in self.entries:
            if e[0] <= version:
                continue
            total += self.size(e)
            if out and total > bytes_max:
                break
            out.append(e)
        return out


@settings(max_examples=300, deadline=None)
@given(
    max_n=st.integers(1, 40),
    max_b=st.integers(1, 3000),
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), max_size=30), max_size=40
    ),
    repeat_first=st.booleans(),
    bytes_max=st.integers(1, 2000),
)
def test_a_batched_history_keeps_what_one_command_at_a_time_would(
    max_n, max_b, batches, repeat_first, bytes_max
):
    w, _, _ = _watches(history_max=max_n, history_bytes_max=max_b)
    w.reset((0, 0), 0)
    ref = _ReferenceHistory(0, max_n, max_b)
    version = 0
    for batch in batches:
        start = version
        entries = []
        for payload_bytes, result_bytes in batch:
            version += 1
            entries.append((version, b"p" * payload_bytes, b"r" * result_bytes))
        if repeat_first and start:
            entries.insert(0, (start, b"again", b""))  # a version applied already: left out
        for e in entries:
            ref.add(e)
        if entries:
            versions, payloads, results = map(list, zip(*entries, strict=True))
            w.applied_many((0, 0), versions, payloads, results)
        h = w._history[(0, 0)]
        assert (h.floor, h.last) == (ref.floor, ref.entries[-1][0] if ref.entries else ref.floor)
        assert h.size_bytes == sum(map(ref.size, ref.entries))
        # what was dropped is let go: at most 1024 entries or an eighth of them, and an eighth
        # of the bytes bound, are still held
        held_bytes = (h.ends[h.head - 1] if h.head else h.base) - h.base
        assert (h.head <= 1024 or h.head * 8 <= len(h.entries)) and held_bytes <= max_b // 8
        for v in (0, ref.floor, start, version - 1, version):
            assert h.after(v, bytes_max) == ref.after(v, bytes_max)


def test_a_watcher_that_falls_behind_is_cut_off_and_told_where_to_resume():
    w, sent, backlog = _watches(backlog_bytes_max=1000)
    w.reset((0, 0), 0)
    w.add(1, protocol.Watch(1, 0, 0, from_version=0))
    w.applied((0, 0), 1, b"x", b"r")
    w.pump()
    backlog["bytes"] = 5000  # the client stopped reading
    w.applied((0, 0), 2, b"x", b"r")
    w.pump()
    last = sent[-1][1]
    assert not last.ok and "cut off" in last.error and "0x1" in last.error
    assert len(w) == 0 and w.cut_off == 1


def test_watchers_of_a_shard_that_leaves_are_sent_elsewhere():
    w, sent, _ = _watches()
    w.reset((0, 0), 0)
    w.add(1, protocol.Watch(1, 0, 0, from_version=0))
    w.drop((0, 0), "member 1 does not host subgroup 0 shard 0", [2, 3])
    assert not sent[-1][1].ok and sent[-1][1].redirect == [2, 3] and len(w) == 0


# -- real members ---------------------------------------------------------------------------------


def _collect(watch, into: list, stop: threading.Event) -> None:
    for event in watch:
        into.append(event)
        if stop.is_set():
            break


@pytest.mark.cluster
def test_a_watch_sees_every_put_once_in_order_across_a_sigkill_of_its_member(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=1) as client:
            kv = client.subgroup(KVStore)
            seen: list = []
            stop = threading.Event()
            watch = kv.watch(from_version=0, member=2)
            reader = threading.Thread(target=_collect, args=(watch, seen, stop), daemon=True)
            reader.start()
            written = []
            for i in range(60):
                value = b"v%d" % i
                kv.put(f"k{i % 5}", value)
                written.append(value)
                if i == 30:
                    assert watch.member == 2
                    cluster.kill(2)  # the watched member: the watch moves on by itself
            kv.delete("k0")
            written.append(None)
            deadline = 200
            while len(seen) < len(written) and deadline:
                deadline -= 1
                threading.Event().wait(0.05)
            stop.set()
            watch.close()
            reader.join(5)
            assert watch.resumes >= 1 and watch.member != 2
        values = [e.args.get("value") for e in seen]
        assert values == written  # every acknowledged command, in order, once
        versions = [e.version for e in seen]
        assert versions == sorted(set(versions))
        assert seen[0].operation == "put" and seen[0].result is None  # the previous value
        assert seen[-1].operation == "delete" and seen[-1].result is True


@pytest.mark.cluster
def test_after_a_total_restart_a_watch_from_before_is_trimmed_and_from_there_works(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path) as client:
            kv = client.subgroup(KVStore)
            for i in range(5):
                kv.put("a", b"%d" % i)
        cluster.stop()
        cluster.start()
        cluster.wait_ready()
        with smr.connect(cluster.config_path) as client:
            kv = client.subgroup(KVStore)
            with pytest.raises(WatchTrimmedError) as trimmed, kv.watch(from_version=0) as w:
                next(w)
            assert trimmed.value.oldest > 0
            with kv.watch(from_version=trimmed.value.oldest) as w:
                kv.put("a", b"after")
                event = next(w)
            assert event.args == {"key": "a", "value": b"after"} and event.result == b"4"
            # the command line, on the same cluster
            result = CliRunner().invoke(
                cli,
                [
                    "kv",
                    "--config",
                    cluster.config_path,
                    "watch",
                    "a",
                    "--from-version",
                    hex(trimmed.value.oldest),
                    "--count",
                    "1",
                ],
            )
            assert result.exit_code == 0, result.output
            assert result.output.split()[1:] == ["put", "a", "after"]
