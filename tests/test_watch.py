"""Watches: every command applied to a shard, in order, each once, from any member, across a
member's SIGKILL; a version no longer kept is a clear error; a slow watcher is cut off."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner

import smr
from smr.cli.main import cli
from smr.runtime import protocol
from smr.runtime.cluster import LocalCluster
from smr.runtime.watches import Watches
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
