"""A member whose disk fails stops at once, says why, and recovers once it is fixed.

A failed write or fsync is never retried (after an fsync error the kernel may have dropped the
pages it could not write; PostgreSQL learned it in 2018): the group-commit writer stops at its
first error and tells its owner at once, and the member exits with status 4 whatever its
`rejoin` setting. Nothing it had not reported durable was acknowledged. The real-process test
gives one member its own small tmpfs and fills it (ENOSPC), which needs root to mount.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

import smr
from smr.log import Log, LogConfig, LogWriterError, Record
from smr.log.fs import OsFileSystem
from smr.log.group_commit import GroupCommitWriter
from smr.runtime.cluster import LocalCluster
from smr.runtime.node import EXIT_DISK
from smr.statemachines import KVStore


class _FailingFile:
    def __init__(self, inner, fs):
        self.inner = inner
        self.fs = fs

    def write(self, data):
        self.inner.write(data)

    def fsync(self):
        self.fs.fsyncs += 1
        if self.fs.failing:
            raise OSError(errno.EIO, "Input/output error")
        self.inner.fsync()

    def close(self):
        self.inner.close()


class FailingFsync(OsFileSystem):
    """The real file system, whose segment fsyncs fail (EIO) once `failing` is set."""

    def __init__(self):
        self.failing = False
        self.fsyncs = 0

    def create(self, path):
        return _FailingFile(super().create(path), self)

    def open_append(self, path):
        return _FailingFile(super().open_append(path), self)


def test_the_group_commit_writer_stops_at_the_first_fsync_error_and_says_so_at_once(tmp_path):
    fs = FailingFsync()
    log = Log.open(str(tmp_path / "log"), LogConfig(), fs=fs)
    durable: list[int] = []
    errors: list[BaseException] = []
    told = threading.Event()

    def on_error(e):
        errors.append(e)
        told.set()

    writer = GroupCommitWriter(log, durable.append, on_error=on_error)
    writer.submit([Record(1, 0, 0, 0, b"a")])
    assert writer.flush(timeout_s=5) == 1
    fs.failing = True
    fsyncs = fs.fsyncs
    writer.submit([Record(2, 0, 0, 0, b"b")])
    assert told.wait(5)  # the owner hears of it without calling the writer again
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    assert durable == [1]  # version 2 is never reported durable
    with pytest.raises(LogWriterError, match="Input/output error"):
        writer.submit([Record(3, 0, 0, 0, b"c")])
    with pytest.raises(LogWriterError):
        writer.close()
    assert fs.fsyncs == fsyncs + 1  # tried once, never again


def _mount_tmpfs(path: str, size: str) -> bool:
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True
    )
    return done.returncode == 0


def _fill(path: str) -> str:
    ballast = os.path.join(path, "ballast")
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return ballast


@pytest.mark.cluster
def test_a_member_whose_disk_fills_up_stops_says_why_and_recovers_when_it_is_freed(tmp_path):
    cluster = LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable")
    member_dir = cluster.config.member_dir(3)
    if not _mount_tmpfs(member_dir, "16m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        with cluster:
            cluster.wait_ready()
            with smr.connect(cluster.config_path, member=1) as client:
                kv = client.subgroup(KVStore)
                for i in range(20):
                    assert sorted(kv.put(f"k{i}", b"v%d" % i)) == [1, 2, 3]
                ballast = _fill(member_dir)
                # the next appends fail at member 3 with ENOSPC: it exits, and the others go on
                answered = {}
                deadline = time.monotonic() + 30
                while cluster.procs[3].poll() is None and time.monotonic() < deadline:
                    i = len(answered) + 20
                    answered[i] = kv.put(f"k{i}", b"v%d" % i)
                assert cluster.procs[3].poll() == EXIT_DISK
                lines = [
                    json.loads(line)
                    for line in Path(cluster.log_path(3)).read_text().splitlines()
                    if line.startswith("{")
                ]
                exits = [line for line in lines if line["event"] == "exit"]
                assert exits and "No space left on device" in exits[-1]["reason"]
                assert "not retried" in exits[-1]["reason"]
                for i in range(40, 60):  # the group of two goes on
                    answered[i] = kv.put(f"k{i}", b"v%d" % i)
                assert all(sorted(r) in ([1, 2], [1, 2, 3]) for r in answered.values())
                os.remove(ballast)
                cluster.restart(3)
                cluster.wait_ready([1, 2, 3])
                assert sorted(kv.put("after", b"x")) == [1, 2, 3]
            # the restarted member holds every acknowledged write
            with smr.connect(cluster.config_path, member=3) as client3:
                kv3 = client3.subgroup(KVStore)
                for i in [*range(20), *answered]:
                    assert kv3.get(f"k{i}", consistency="sequential") == b"v%d" % i
    finally:
        subprocess.run(["umount", "-l", member_dir], capture_output=True)


def test_the_chaos_nemesis_fills_a_disk_whatever_was_on_it(tmp_path):
    """`smr chaos`'s full disk: the ballast fills the file system however much was already on
    it (a last chunk written in part), heals without a trace, and can fill it again. A buffered
    ballast raised ENOSPC again at its close, which ended a 10-minute run."""
    from smr.chaos.disk import DiskFaults, DiskFaultUnavailable

    member_dir = str(tmp_path / "member-1")
    try:
        faults = DiskFaults({1: member_dir}, str(tmp_path), full=True, shim=None)
    except DiskFaultUnavailable as e:
        pytest.skip(f"mounting a tmpfs needs root: {e}")
    try:
        # one page: the free space ends 4 KiB short of a whole chunk, so the last chunk is cut
        # 4 KiB short (a buffered file kept those 4 KiB, and failed at its close)
        Path(member_dir, "log").write_bytes(b"x" * 100)
        for _ in range(2):
            faults.fill(1)
            more = os.path.join(member_dir, "more")
            with pytest.raises(OSError) as full, open(more, "wb", buffering=0) as f:
                f.write(b"y" * 4096)
            assert full.value.errno == errno.ENOSPC
            assert faults.heal() == []
            assert sorted(os.listdir(member_dir)) == ["log", "more"]
            os.remove(more)
    finally:
        faults.close()
