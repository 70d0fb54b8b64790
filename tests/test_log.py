"""The Log and GroupCommitWriter through their public APIs, on the OS filesystem and FaultyDisk."""

import random
import threading

import pytest

from smr.log import (
    GroupCommitWriter,
    Log,
    LogConfig,
    LogCorruptionError,
    LogError,
    LogWriterError,
    Record,
    RecordNotFoundError,
    TrimmedError,
    recover,
    verify,
)
from smr.sim.disk import FaultyDisk


def recs(lo, hi, step=3, size=20):
    return [
        Record(v, 10 * v, 1, 2, v.to_bytes(4, "little") * (size // 4)) for v in range(lo, hi, step)
    ]


SMALL = LogConfig(segment_bytes_max=400)


def test_append_sync_read_and_rolling(tmp_path):
    log = Log.open(str(tmp_path), SMALL)
    rs = recs(1, 100)
    log.append(rs)
    assert log.durable_version == -1
    assert log.sync() == rs[-1].version
    assert len(log.segments()) > 3
    assert all(s.file_bytes <= 400 for s in log.segments())
    assert list(log) == rs
    assert log.read(rs[7].version) == rs[7]
    with pytest.raises(RecordNotFoundError):
        log.read(2)
    assert [r.version for r in log.iter(10, 20)] == [10, 13, 16, 19]
    log._check()
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".seg")
    assert names == [f"{s.first_version:016x}.seg" for s in Log.open(str(tmp_path)).segments()]


def test_index_rebuilt_on_open(tmp_path):
    with Log.open(str(tmp_path), SMALL) as log:
        log.append(recs(1, 200))
    log = Log.open(str(tmp_path), SMALL)
    assert log.recovery.clean
    assert list(log) == recs(1, 200)
    assert log.durable_version == log.last_version == recs(1, 200)[-1].version
    with pytest.raises(ValueError):
        log.append(recs(1, 5))
    log._check()


def test_time_reads_use_first_record_at_or_after(tmp_path):
    log = Log.open(str(tmp_path), SMALL)
    ts = [5, 9, 7, 20, 20, 31]  # clocks may step back: the first in log order with ts >= t wins
    log.append([Record(i + 1, t, 0, 0, b"p") for i, t in enumerate(ts)])
    log.sync()
    assert log.first_at_or_after_time(8).version == 2
    assert log.first_at_or_after_time(10).version == 4
    assert log.first_at_or_after_time(0).version == 1
    assert log.first_at_or_after_time(32) is None
    assert [r.version for r in log.iter_from_time(21)] == [6]


def test_snapshots_trim_and_trimmed_error(tmp_path):
    log = Log.open(str(tmp_path), SMALL)
    log.append(recs(1, 300))
    log.sync()
    with pytest.raises(LogError, match="snapshot"):
        log.trim_below(100)
    log.save_snapshot(150, b"state@150")
    with pytest.raises(LogError):
        log.trim_below(151)
    before = len(log.segments())
    removed = log.trim_below(150)
    assert removed > 0 and len(log.segments()) == before - removed
    with pytest.raises(TrimmedError, match="trimmed"):
        log.read(148)
    with pytest.raises(TrimmedError):
        list(log.iter(1))
    assert [r.version for r in log] == [v for v in range(1, 300, 3) if v >= 150]
    assert log.latest_snapshot().data == b"state@150"
    log.close()
    log = Log.open(str(tmp_path), SMALL)
    assert log.trimmed_below == 150 and log.versions()[0] == 151
    log._check()


def test_snapshots_keep_max_and_at_or_below(tmp_path):
    log = Log.open(str(tmp_path), LogConfig(snapshots_keep_max=2))
    for v in (10, 20, 30):
        log.save_snapshot(v, str(v).encode())
    assert log.snapshot_versions() == [20, 30]
    assert log.latest_snapshot(at_or_below=25).data == b"20"
    assert log.latest_snapshot(at_or_below=5) is None


def test_truncate_after(tmp_path):
    log = Log.open(str(tmp_path), SMALL)
    log.append(recs(1, 300))
    log.sync()
    log.save_snapshot(250, b"s")
    log.append(recs(301, 320))  # buffered, then dropped too
    log.truncate_after(100)
    assert log.last_version == log.durable_version == 100
    assert log.snapshot_versions() == []
    log.append([Record(101, 0, 0, 0, b"new")])
    log.sync()
    log.close()
    log = Log.open(str(tmp_path), SMALL)
    assert log.versions()[-2:] == [100, 101]
    assert log.read(101).payload == b"new"
    assert verify(str(tmp_path)).ok
    log._check()


def test_truncate_crash_is_finished_on_open():
    disk = FaultyDisk()
    log = Log.open("db", SMALL, fs=disk)
    log.append(recs(1, 300))
    log.sync()

    class Boom(Exception):
        pass

    # Crash right after the intent is written and the later segments are removed.
    real_truncate = disk.truncate

    def failing_truncate(path, size):
        raise Boom

    disk.truncate = failing_truncate
    with pytest.raises(Boom):
        log.truncate_after(40)
    disk.truncate = real_truncate
    disk.crash(random.Random(1))
    log = Log.open("db", SMALL, fs=disk)
    assert log.recovery.redone and log.last_version == 40
    assert log.meta_get("log.truncate_after") is None or log.versions()[-1] == 40


def test_metadata_is_atomic_under_crash():
    disk = FaultyDisk()
    log = Log.open("db", fs=disk)
    log.meta_put("view", b"view-1")
    # A put cut short before its rename: the old value must survive.
    f = disk.create("db/view.meta.tmp")
    f.write(b"garbage")
    disk.crash(random.Random(2))
    log = Log.open("db", fs=disk)
    assert log.meta_get("view") == b"view-1"
    assert "db/view.meta.tmp" in log.recovery.removed_files or not disk.exists("db/view.meta.tmp")
    log.meta_put("view", b"view-2")
    disk.crash(random.Random(3))
    assert Log.open("db", fs=disk).meta_get("view") == b"view-2"
    with pytest.raises(ValueError):
        log.meta_put("../x", b"")


def test_torn_tail_truncated_and_reported(tmp_path):
    log = Log.open(str(tmp_path), SMALL)
    log.append(recs(1, 50))
    log.close()
    last = sorted(tmp_path.glob("*.seg"))[-1]
    data = last.read_bytes()
    last.write_bytes(data[:-5])
    log = Log.open(str(tmp_path), SMALL)
    assert len(log.recovery.torn_tails) == 1
    t = log.recovery.torn_tails[0]
    assert t.path.endswith(last.name) and t.bytes_dropped > 0
    assert list(log) == recs(1, 50)[:-1]
    assert "truncated" in log.recovery.lines()[0]


def test_middle_damage_is_an_error_naming_file_and_offset(tmp_path):
    log = Log.open(str(tmp_path), SMALL)
    log.append(recs(1, 100))
    log.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    b = bytearray(first.read_bytes())
    b[60] ^= 0x10
    first.write_bytes(bytes(b))
    with pytest.raises(LogCorruptionError, match=first.name) as e:
        Log.open(str(tmp_path), SMALL)
    assert e.value.offset <= 60 and e.value.path.endswith(first.name)


def test_bad_record_followed_by_valid_data_in_last_segment(tmp_path):
    log = Log.open(str(tmp_path))
    log.append(recs(1, 30))
    log.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    b = bytearray(seg.read_bytes())
    b[24 + 40] ^= 0x01
    seg.write_bytes(bytes(b))
    with pytest.raises(LogCorruptionError, match="CRC32C"):
        Log.open(str(tmp_path))


def test_bad_header_names_the_file(tmp_path):
    with Log.open(str(tmp_path)) as log:
        log.append(recs(1, 10))
    seg = sorted(tmp_path.glob("*.seg"))[0]
    b = bytearray(seg.read_bytes())
    b[0] = ord("X")
    seg.write_bytes(bytes(b))
    with pytest.raises(LogCorruptionError, match=seg.name + ".*magic"):
        Log.open(str(tmp_path))


def test_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(LogError, match="does not exist"):
        Log.open(str(tmp_path / "nope"), create=False)


def test_compressed_sealed_segments(tmp_path):
    cfg = LogConfig(segment_bytes_max=2000, compress_sealed=True)
    log = Log.open(str(tmp_path), cfg)
    rs = recs(1, 600, size=60)
    log.append(rs)
    log.sync()
    segs = log.segments()
    assert all(s.compressed for s in segs[:-1]) and not segs[-1].compressed
    assert segs[0].file_bytes < segs[0].body_bytes
    assert list(log) == rs and log.read(rs[3].version) == rs[3]
    log.close()
    log = Log.open(str(tmp_path), cfg)
    assert list(log) == rs
    assert verify(str(tmp_path)).ok
    log.truncate_after(rs[5].version)  # into a compressed segment: rewritten plain
    assert list(log) == rs[:6]
    log.close()
    assert list(Log.open(str(tmp_path), cfg)) == rs[:6]


class Counter:
    """A tiny state machine with the smr.api shape."""

    def __init__(self):
        self.total = 0
        self.applied = []

    def restore(self, data):
        self.total = int(data)

    def apply_record(self, record):
        self.total += int.from_bytes(record.payload[:4], "little")
        self.applied.append(record.version)

    def digest(self):
        return str(self.total)


def test_recover_from_snapshot_then_replay(tmp_path):
    log = Log.open(str(tmp_path), SMALL)
    rs = recs(1, 100)
    log.append(rs)
    log.sync()
    upto_50 = sum(r.version for r in rs if r.version <= 49)
    log.save_snapshot(49, str(upto_50).encode())
    log.trim_below(49)
    sm = Counter()
    res = recover(log, sm)
    assert res.snapshot_version == 49 and sm.applied[0] == 52
    assert sm.total == sum(r.version for r in rs)
    sm2 = Counter()
    res = recover(log, restore=sm2.restore, apply=sm2.apply_record, upto=70)
    assert sm2.total == sum(r.version for r in rs if r.version <= 70)
    assert res.last_applied_version == 70


# ------------------------------------------------------------------ group commit


def test_group_commit_concurrent_submitters(tmp_path):
    log = Log.open(str(tmp_path), LogConfig(segment_bytes_max=64 << 10))
    seen = []
    lock = threading.Lock()
    next_version = [0]
    w = GroupCommitWriter(log, seen.append, queue_records_max=64)

    def submitter():
        for _ in range(200):
            with lock:  # versions must be submitted in order; the lock stands in for the core
                next_version[0] += 1
                w.submit([Record(next_version[0], 0, 0, 0, b"x" * 100)])

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.flush() == 800
    w.close()
    assert seen == sorted(seen) and len(set(seen)) == len(seen) and seen[-1] == 800
    st = w.statistics()
    assert st["records"] == 800 and st["fsyncs"] <= st["batches"] + 1
    assert [r.version for r in Log.open(str(tmp_path))] == list(range(1, 801))


def test_group_commit_batches_under_backpressure():
    disk = FaultyDisk()
    log = Log.open("db", fs=disk)
    w = GroupCommitWriter(log, queue_records_max=10)
    for v in range(1, 501):
        w.submit([Record(v, 0, 0, 0, b"y")])
    w.close()
    st = w.statistics()
    assert st["records"] == 500
    assert log.durable_version == 500


def test_group_commit_errors_surface(tmp_path):
    log = Log.open(str(tmp_path))

    def bad(version):
        raise RuntimeError("callback broke")

    w = GroupCommitWriter(log, bad)
    w.submit(recs(1, 5))
    with pytest.raises(LogWriterError, match="callback broke"):
        w.flush(timeout_s=10)
    with pytest.raises(LogWriterError):
        w.submit(recs(10, 12))
    with pytest.raises(LogWriterError):
        w.close()


def test_group_commit_rejects_non_increasing(tmp_path):
    w = GroupCommitWriter(Log.open(str(tmp_path)))
    w.submit(recs(5, 6))
    with pytest.raises(ValueError):
        w.submit(recs(5, 6))
    w.close()


@pytest.mark.parametrize("policy", ["batch", "interval:5", "never"])
def test_sync_policies(policy):
    disk = FaultyDisk(tear_writes=False)
    log = Log.open("db", LogConfig(sync_policy=policy), fs=disk)
    durable = []
    w = GroupCommitWriter(log, durable.append)
    for v in range(1, 101):
        w.submit([Record(v, 0, 0, 0, b"z" * 10)])
    assert w.flush(timeout_s=30) == 100
    fsyncs_before_close = disk.fsyncs
    w.close()
    assert durable[-1] == 100 and durable == sorted(durable)
    disk.crash(random.Random(0))
    reopened = Log.open("db", fs=disk, read_only=True)  # a writable open records its own policy
    assert reopened.meta_get("log.sync_policy") == policy.encode()
    if policy == "batch":
        assert len(reopened) == 100
    if policy == "never":
        assert fsyncs_before_close < 20  # only the segment/metadata creation fsyncs


def test_interval_policy_reports_only_after_fsync():
    disk = FaultyDisk(tear_writes=False)
    t = [0.0]
    log = Log.open("db", LogConfig(sync_policy="interval:1000"), fs=disk)
    durable = []
    w = GroupCommitWriter(log, durable.append, clock=lambda: t[0])
    w.submit(recs(1, 10))
    with pytest.raises(TimeoutError):
        w.flush(timeout_s=0.0)
    t[0] = 2.0
    w.close()
    assert durable and durable[-1] == recs(1, 10)[-1].version


def test_bad_sync_policy():
    with pytest.raises(ValueError, match="sync policy"):
        LogConfig(sync_policy="sometimes")
