"""Property tests on FaultyDisk: crashes (with torn writes) and flipped bytes never lose a synced
record silently and never yield a record that fails its checksum."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.log import Log, LogConfig, LogCorruptionError, LogError, Record, verify
from smr.sim.disk import FaultyDisk

CFG = LogConfig(segment_bytes_max=600, buffer_bytes_max=300)

op = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 6), st.integers(0, 60)),
    st.tuples(st.just("sync"), st.just(0), st.just(0)),
    st.tuples(st.just("flush"), st.just(0), st.just(0)),
    st.tuples(st.just("crash"), st.just(0), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 100), st.just(0)),
    st.tuples(st.just("snapshot_trim"), st.integers(0, 100), st.just(0)),
)


def payload(v, size):
    return bytes((v * 7 + i) & 0xFF for i in range(size))


def read_all(log):
    return list(log)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=40), st.integers(0, 2**32), st.booleans())
def test_crashes_keep_every_synced_record(ops, seed, tear):
    rng = random.Random(seed)
    disk = FaultyDisk(tear_writes=tear)
    log = Log.open("db", CFG, fs=disk)
    appended: list[Record] = []  # what the log may hold, in order
    synced_version = -1
    next_version = 1
    for kind, a, b in [*ops, ("crash", 0, 0)]:
        if kind == "append":
            batch = []
            for _ in range(a):
                next_version += 1 + rng.randrange(3)
                batch.append(
                    Record(next_version, rng.randrange(10**6), 0, 0, payload(next_version, b))
                )
            log.append(batch)
            appended += batch
        elif kind == "sync":
            synced_version = log.sync()
        elif kind == "flush":
            log.flush()
        elif kind == "truncate" and appended:
            keep = appended[: a * len(appended) // 100]
            v = keep[-1].version if keep else 0
            if v < log.trimmed_below - 1:
                with pytest.raises(LogError, match="trimmed"):
                    log.truncate_after(v)
                continue
            try:
                log.truncate_after(v)
            except LogError:
                # Refused only when it would delete the snapshot the trim relied on.
                assert not [s for s in log.snapshot_versions() if log.trimmed_below - 1 <= s <= v]
                continue
            appended = [r for r in appended if r.version <= v]
            synced_version = min(synced_version, v)
        elif kind == "snapshot_trim":
            durable = [r for r in appended if r.version <= synced_version]
            if durable:
                v = durable[a * (len(durable) - 1) // 100].version
                log.save_snapshot(v, b"state")
                log.trim_below(v)
                appended = [r for r in appended if r.version >= v]
        elif kind == "crash":
            disk.crash(rng)
            log = Log.open("db", CFG, fs=disk)
            got = read_all(log)
            assert got == appended[: len(got)], (
                "recovered records are a prefix of what was appended"
            )
            # A prefix at least as long as the synced records: every synced record is there.
            assert len(got) >= sum(1 for r in appended if r.version <= synced_version)
            assert verify("db", fs=disk, config=CFG).ok
            log._check()
            appended = got
            synced_version = got[-1].version if got else -1
            next_version = max(next_version, synced_version)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 60), st.integers(0, 30), st.integers(0, 2**32), st.floats(0, 1))
def test_a_flipped_byte_is_an_error_or_harmless(n_synced, n_unsynced, seed, where):
    rng = random.Random(seed)
    disk = FaultyDisk(tear_writes=True)
    log = Log.open("db", CFG, fs=disk)
    rs = [
        Record(v, v, 0, 0, payload(v, rng.randrange(40)))
        for v in range(1, n_synced + n_unsynced + 1)
    ]
    log.append(rs[:n_synced])
    log.sync()
    log.append(rs[n_synced:])
    log.flush()
    disk.crash(rng)
    files = [f"db/{n}" for n in disk.listdir("db")]
    sizes = [disk.size(f) for f in files]
    total = sum(sizes)
    at = int(where * (total - 1))
    for f, size in zip(files, sizes, strict=True):
        if at < size:
            disk.corrupt(f, at)
            damaged, offset = f, at
            break
        at -= size
    # The flip hit durable bytes; anything that hit a synced record or a header must be reported.
    try:
        reopened = Log.open("db", CFG, fs=disk)
        got = list(reopened)
    except LogCorruptionError as e:
        assert e.path == damaged, (e, damaged, offset)
        # A record is reported where its frame starts; a blob's single CRC cannot locate a byte.
        assert e.offset <= offset or not damaged.endswith(".seg"), (e, offset)
        assert not verify("db", fs=disk, config=CFG).ok
        return
    # Opened fine: the flip was in the torn, never-synced tail, which recovery cut off.
    assert got == rs[: len(got)]
    assert len(got) >= n_synced
    assert reopened.recovery.torn_tails
