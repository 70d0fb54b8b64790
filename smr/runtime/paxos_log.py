"""The durable acceptor log of the built-in Multi-Paxos (issue 17): `AcceptorLog`.

One member's `smr.core.multipaxos` acceptor records (`PromiseRecord`, `AcceptRecord`,
`TrimRecord`) and the snapshot of its applied prefix, in one `smr.log` directory (the segment
files, checksums, torn-tail repair and atomic blobs of shard logs; docs/log-format.md). The
driver calls `persist(ready.persist)` before it sends anything of that ready, `save_state(slot,
state)` for `ready.snapshot_wanted` before `PaxosNode.snapshot_taken`, and on restart gives the
node `recovered()`.

Format (`format` metadata = b"multipaxos-acceptor-1"; a shard log has no such marker):

* One log record per acceptor record. `version` is a private sequence number (strictly
  increasing, not contiguous), `timestamp_ns`, `subgroup` and `shard` are 0. The payload, little
  endian, starts with a kind byte:

      1 promise   i64 ballot
      2 accept    i64 ballot, i64 slot, i32 value length (-1: a no-op), the value (<= 16 MiB)
      3 trim      i64 slot: the votes below it are gone (the vote floor)

* The state snapshot is the log's snapshot blob (`<version>.snap`, one kept): kind byte 4,
  i64 slot (every slot below it is applied), then the state. Its version is a sequence number
  reserved when it was saved: records before it may be trimmed once they are restated after it.

Replay, in version order: a promise raises the promise (never lowers it), an accept at or above
the floor replaces the vote of its slot (the latest wins), a trim raises the floor and drops the
votes below it. A replay of any prefix of the records a `persist` wrote is a state between the one
before and the one after it: a crash part way through loses nothing an earlier `persist`
returned for.

Compaction, so the log does not grow without bound: a `persist` whose trim raises the floor
appends, after the batch and under the same fsync, the live state again (trim at the floor, the
promise, every vote at or above the floor), then `Log.trim_below(min(start of that restatement,
version of the state snapshot))`. Everything below that point is restated above it or summarised
by the snapshot, so a crash between any two of these steps recovers a state at least as strong:
the promise never lower, no vote at or above the floor lost, the floor never above the snapshot's
slot (a trim above the saved snapshot's slot is refused). Whole segments go, so the log holds
the live votes, the records since the last snapshot and at most one segment more.

Durability: `persist` and `save_state` are durable when they return. Promise and accept records
must be on disk before the 1b or 2b that announces them leaves (persist-before-send is the
protocol's rule), so `sync_policy` "batch" (or "always") and "interval:<ms>" both fsync once per
`persist` (the caller's batching is the group commit); "never" writes without fsync, for
benchmarks only: a crash may then forget a promise or a vote, which breaks Paxos.

Bounds: `persist` streams its records (and the restatement) into the log, whose write buffer is
bounded by `LogConfig.buffer_bytes_max`; the votes kept in memory are those the node keeps too
(the same value objects). One driver thread uses an `AcceptorLog`.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from smr.core.errors import UsageError
from smr.core.multipaxos import (
    NO_BALLOT,
    SLOT_MAX,
    SNAPSHOT_BYTES_MAX,
    VALUE_BYTES_MAX,
    AcceptRecord,
    PromiseRecord,
    Recovered,
    TrimRecord,
    Value,
)
from smr.log import FileSystem, Log, LogConfig, LogCorruptionError, LogError, OsFileSystem, Record
from smr.log import format as logfmt
from smr.log.fs import join
from smr.log.log import META_SUFFIX, SNAPSHOT_SUFFIX

AcceptorRecord: TypeAlias = PromiseRecord | AcceptRecord | TrimRecord

FORMAT_META: Final = "format"
FORMAT_PREFIX: Final = b"multipaxos-acceptor-"
FORMAT_VERSION: Final = 1
FORMAT: Final = FORMAT_PREFIX + str(FORMAT_VERSION).encode()

KIND_PROMISE: Final = 1
KIND_ACCEPT: Final = 2
KIND_TRIM: Final = 3
KIND_STATE: Final = 4

SEGMENT_BYTES_DEFAULT: Final = 8 << 20
SYNC_POLICIES: Final = ("always", "batch", "never", "interval:<ms>")

_KIND = struct.Struct("<B")
_PROMISE = struct.Struct("<Bq")
_ACCEPT = struct.Struct("<Bqqi")
_TRIM = struct.Struct("<Bq")
_STATE = struct.Struct("<Bq")


class AcceptorLogError(LogError):
    """The directory is not an acceptor log of this format (a shard log, a newer format)."""


class AcceptorLogCorruptionError(LogCorruptionError):
    """A record or the state snapshot passed its checksum but does not decode as an acceptor
    record: names the file, the byte offset and the record's version."""

    def __init__(self, path: str | None, offset: int, what: str, version: int | None = None):
        self.version = version
        super().__init__(path, offset, what)


# ---- encoding --------------------------------------------------------------------------------


def encode_payload(record: AcceptorRecord) -> bytes:
    """The payload of the log record that holds `record` (see the module docstring)."""
    if isinstance(record, PromiseRecord):
        return _PROMISE.pack(KIND_PROMISE, record.ballot)
    if isinstance(record, AcceptRecord):
        value = record.value
        if value is None:
            return _ACCEPT.pack(KIND_ACCEPT, record.ballot, record.slot, -1)
        return _ACCEPT.pack(KIND_ACCEPT, record.ballot, record.slot, len(value)) + value
    assert isinstance(record, TrimRecord)
    return _TRIM.pack(KIND_TRIM, record.slot)


def _ranged(what: str, x: int) -> str | None:
    if not 0 <= x < SLOT_MAX:
        return f"{what} {x} is out of range (0..{SLOT_MAX - 1})"
    return None


def decode_payload(payload: bytes) -> AcceptorRecord:
    """The acceptor record in a log record's payload; ValueError says what is wrong (the caller
    names the file and the record)."""
    if not payload:
        raise ValueError("an empty acceptor record")
    kind = payload[0]
    problem: str | None
    if kind == KIND_PROMISE:
        if len(payload) != _PROMISE.size:
            raise ValueError(f"a promise record of {len(payload)} bytes (want {_PROMISE.size})")
        _, ballot = _PROMISE.unpack(payload)
        problem = _ranged("ballot", ballot)
        if problem:
            raise ValueError(problem)
        return PromiseRecord(ballot)
    if kind == KIND_ACCEPT:
        if len(payload) < _ACCEPT.size:
            raise ValueError(f"an accept record of {len(payload)} bytes, under its header")
        _, ballot, slot, n = _ACCEPT.unpack_from(payload)
        problem = _ranged("ballot", ballot) or _ranged("slot", slot)
        if problem:
            raise ValueError(problem)
        rest = len(payload) - _ACCEPT.size
        value: Value
        if n == -1:
            if rest:
                raise ValueError(f"a no-op accept record with {rest} bytes of value")
            value = None
        else:
            if not 0 <= n <= VALUE_BYTES_MAX:
                raise ValueError(f"an accept record's value length {n}")
            if rest != n:
                raise ValueError(f"an accept record says {n} value bytes and holds {rest}")
            value = bytes(payload[_ACCEPT.size :])
        return AcceptRecord(ballot, slot, value)
    if kind == KIND_TRIM:
        if len(payload) != _TRIM.size:
            raise ValueError(f"a trim record of {len(payload)} bytes (want {_TRIM.size})")
        _, slot = _TRIM.unpack(payload)
        problem = _ranged("slot", slot)
        if problem:
            raise ValueError(problem)
        return TrimRecord(slot)
    raise ValueError(f"an unknown acceptor record kind {kind}")


def record_kind(record: AcceptorRecord) -> str:
    """The kind of an acceptor record: "promise", "accept" or "trim"."""
    if isinstance(record, PromiseRecord):
        return "promise"
    return "accept" if isinstance(record, AcceptRecord) else "trim"


def encode_state(slot: int, state: bytes) -> bytes:
    return _STATE.pack(KIND_STATE, slot) + state


def decode_state(data: bytes) -> tuple[int, bytes]:
    """(slot, state) of a state snapshot blob's data; ValueError says what is wrong."""
    if len(data) < _STATE.size or data[0] != KIND_STATE:
        raise ValueError("not an acceptor state snapshot")
    _, slot = _STATE.unpack_from(data)
    problem = _ranged("state snapshot slot", slot)
    if problem:
        raise ValueError(problem)
    if len(data) - _STATE.size > SNAPSHOT_BYTES_MAX:
        raise ValueError(f"a state snapshot of {len(data) - _STATE.size} bytes")
    return slot, bytes(data[_STATE.size :])


def check_record(record: object) -> None:
    """Raise UsageError unless `record` is an acceptor record a log may hold."""
    if isinstance(record, PromiseRecord):
        problem = _ranged("ballot", record.ballot)
    elif isinstance(record, AcceptRecord):
        problem = _ranged("ballot", record.ballot) or _ranged("slot", record.slot)
        value = record.value
        if problem is None and value is not None:
            if not isinstance(value, bytes):
                problem = f"a value of type {type(value).__name__}, not bytes or None"
            elif len(value) > VALUE_BYTES_MAX:
                problem = f"a value of {len(value)} bytes; at most {VALUE_BYTES_MAX}"
    elif isinstance(record, TrimRecord):
        problem = _ranged("slot", record.slot)
    else:
        problem = f"{type(record).__name__} is not an acceptor record"
    if problem is not None:
        raise UsageError(f"cannot persist {record!r}: {problem}")


# ---- the replayed state ----------------------------------------------------------------------


@dataclass(slots=True)
class AcceptorState:
    """The acceptor's durable state as the records say it, and the state snapshot."""

    promised: int = NO_BALLOT
    votes: dict[int, tuple[int, Value]] = field(default_factory=dict)
    vote_floor: int = 0
    state_slot: int = 0
    state: bytes = b""
    state_version: int | None = None  # the log snapshot's version, None without one

    def apply(self, record: AcceptorRecord) -> bool:
        """Replay one record; True when it raised the vote floor."""
        if isinstance(record, PromiseRecord):
            self.promised = max(self.promised, record.ballot)
        elif isinstance(record, AcceptRecord):
            if record.slot >= self.vote_floor:
                self.votes[record.slot] = (record.ballot, record.value)
        elif record.slot > self.vote_floor:
            self.vote_floor = record.slot
            for s in [s for s in self.votes if s < record.slot]:
                del self.votes[s]
            return True
        return False

    def recovered(self) -> Recovered:
        return Recovered(
            promised=self.promised,
            votes=dict(sorted(self.votes.items())),
            vote_floor=self.vote_floor,
            apply_next=self.state_slot,
            snapshot=self.state,
        )

    def restatement(self) -> Iterator[AcceptorRecord]:
        """Records whose replay alone gives this state's promise, floor and votes."""
        yield TrimRecord(self.vote_floor)
        if self.promised != NO_BALLOT:
            yield PromiseRecord(self.promised)
        for slot in sorted(self.votes):
            ballot, value = self.votes[slot]
            yield AcceptRecord(ballot, slot, value)


def _record_location(log: Log, version: int) -> tuple[str, int]:
    """The segment file and byte offset of the record with `version` (for error messages)."""
    for seg in log.segments():
        if seg.first_version <= version <= seg.last_version:
            path = join(log.path, seg.name)
            if seg.compressed:
                return path, 0
            data = log.fs.read(path)
            frames, _ = logfmt.scan_frames(
                data,
                logfmt.SEGMENT_HEADER_BYTES,
                len(data),
                record_bytes_max=log.config.record_bytes_max,
            )
            for f in frames:
                if f.version == version:
                    return path, f.offset
            return path, 0
    return log.path, 0


def iter_records(log: Log) -> Iterator[tuple[int, AcceptorRecord]]:
    """(version, acceptor record) of every record of an acceptor log, in order; a record that
    does not decode raises AcceptorLogCorruptionError naming its file and offset."""
    for r in log.iter():
        try:
            record = decode_payload(r.payload)
        except ValueError as e:
            path, offset = _record_location(log, r.version)
            raise AcceptorLogCorruptionError(
                path, offset, f"record {r.version:#x}: {e}", r.version
            ) from None
        yield r.version, record


def read_state_snapshot(log: Log) -> tuple[int, int, bytes] | None:
    """(log version, slot, state) of the newest state snapshot, or None."""
    snap = log.latest_snapshot()
    if snap is None:
        return None
    try:
        slot, state = decode_state(snap.data)
    except ValueError as e:
        raise AcceptorLogCorruptionError(
            join(log.path, f"{snap.version:016x}{SNAPSHOT_SUFFIX}"),
            logfmt.BLOB_HEADER_BYTES,
            str(e),
            snap.version,
        ) from None
    return snap.version, slot, state


def replay(log: Log) -> AcceptorState:
    """The acceptor state an acceptor log holds (it may be opened read-only)."""
    st = AcceptorState()
    snap = read_state_snapshot(log)
    if snap is not None:
        st.state_version, st.state_slot, st.state = snap
    for _, record in iter_records(log):
        st.apply(record)
    if st.vote_floor > st.state_slot:
        raise AcceptorLogCorruptionError(
            log.path,
            0,
            f"the vote floor {st.vote_floor} is above the state snapshot's slot {st.state_slot}: "
            "the votes below it are gone and no state covers them",
        )
    return st


def read_format(path: str, fs: FileSystem | None = None) -> bytes | None:
    """The `format` marker of the log directory `path` (None when it has none), read without
    opening the log (so nothing is repaired or rewritten)."""
    fs = fs if fs is not None else OsFileSystem()
    p = join(path.rstrip("/") or "/", FORMAT_META + META_SUFFIX)
    if not fs.exists(p):
        return None
    _, data = logfmt.decode_blob(fs.read(p), kind=logfmt.BLOB_KIND_META, path=p)
    return data


def is_acceptor_format(marker: bytes | None) -> bool:
    """True for any acceptor log's marker, this format or another."""
    return marker is not None and marker.startswith(FORMAT_PREFIX)


def check_format(path: str, marker: bytes | None) -> None:
    """Raise AcceptorLogError unless `marker` is this format's."""
    if marker == FORMAT:
        return
    if is_acceptor_format(marker):
        assert marker is not None
        raise AcceptorLogError(
            f"{path} is a Multi-Paxos acceptor log of format {marker.decode(errors='replace')!r}; "
            f"this smr reads {FORMAT.decode()!r} (written by a newer smr?)"
        )
    what = f"its format marker is {marker!r}" if marker is not None else "it has no format marker"
    raise AcceptorLogError(
        f"{path} is not a Multi-Paxos acceptor log ({what}): a shard log? "
        "point at the member's acceptor log directory"
    )


def _fresh(fs: FileSystem, path: str) -> bool:
    """True when `path` holds nothing but what `Log.open` itself writes first (a directory
    being created, perhaps by a process that crashed before it wrote the format marker)."""
    if not fs.is_dir(path):
        return True
    return all(
        n.endswith(".tmp") or (n.startswith("log.") and n.endswith(META_SUFFIX))
        for n in fs.listdir(path)
    )


def _log_sync_policy(sync_policy: str) -> str:
    if sync_policy == "always":
        return "batch"
    try:
        LogConfig(sync_policy=sync_policy)
    except ValueError:
        raise UsageError(
            f"bad sync policy {sync_policy!r}: use 'batch' (or 'always'), 'interval:<ms>' or "
            "'never'"
        ) from None
    return sync_policy


# ---- the log ---------------------------------------------------------------------------------


class AcceptorLog:
    """One member's Multi-Paxos acceptor records and applied-state snapshots, in one smr.log
    directory. See the module docstring for the format, compaction and durability."""

    def __init__(self, log: Log, state: AcceptorState, sync: bool, _token: object) -> None:
        assert _token is _OPEN_TOKEN, "use AcceptorLog.open()"
        self.log = log
        self.path = log.path
        self._state = state
        self._recovered = state.recovered()
        self._sync = sync
        top = max([log.last_version, *log.snapshot_versions()])
        self._seq = max(top, 0)
        self._failed: BaseException | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str,
        *,
        fs: FileSystem | None = None,
        sync_policy: str = "batch",
        segment_bytes_max: int | None = None,
    ) -> AcceptorLog:
        """Open (or create) the acceptor log in directory `path`, repairing a torn tail.

        Raises AcceptorLogError for a directory that holds another kind of log (a shard log)
        or a newer format, LogCorruptionError for damage a crash cannot explain.
        """
        fs = fs if fs is not None else OsFileSystem()
        path = path.rstrip("/") or "/"
        marker = read_format(path, fs) if fs.is_dir(path) else None
        fresh = marker is None and _fresh(fs, path)
        if not fresh:
            check_format(path, marker)
        config = LogConfig(
            segment_bytes_max=segment_bytes_max or SEGMENT_BYTES_DEFAULT,
            record_bytes_max=_ACCEPT.size + VALUE_BYTES_MAX,
            sync_policy=_log_sync_policy(sync_policy),
            snapshots_keep_max=1,
        )
        log = Log.open(path, config, fs=fs)
        try:
            if fresh:
                log.meta_put(FORMAT_META, FORMAT)
            state = replay(log)
        except BaseException:
            log.close()
            raise
        return cls(log, state, config.sync_policy != "never", _OPEN_TOKEN)

    def recovered(self) -> Recovered:
        """What open() read back: give it to `PaxosNode(..., recovered=...)`, and restore the
        state machine from its `snapshot` (at `apply_next`)."""
        return self._recovered

    @property
    def promised(self) -> int:
        return self._state.promised

    @property
    def vote_floor(self) -> int:
        return self._state.vote_floor

    @property
    def state_slot(self) -> int:
        return self._state.state_slot

    def persist(self, records: Sequence[AcceptorRecord]) -> None:
        """Append `records` in order, then fsync once: durable when this returns. An empty list
        does nothing. A trim above the saved state snapshot's slot is refused (UsageError, and
        nothing is written); an I/O error leaves the log unusable (what reached the disk is
        unknown: reopen it)."""
        if not records:
            return
        self._check_usable()
        for rec in records:
            check_record(rec)
            if isinstance(rec, TrimRecord) and rec.slot > self._state.state_slot:
                raise UsageError(
                    f"a trim at slot {rec.slot} above the saved state snapshot's slot "
                    f"{self._state.state_slot}: save_state() first"
                )
        # The state is updated before the write: if the write fails the log is unusable anyway.
        st = self._state
        compact = False
        for rec in records:
            compact |= st.apply(rec)
        try:
            self._append(records)
            restated = self._seq + 1
            if compact:
                self._append(st.restatement())
            self._commit()
            if compact and st.state_version is not None:
                self.log.trim_below(min(restated, st.state_version))
        except BaseException as e:
            self._failed = e
            raise

    def save_state(self, slot: int, state: bytes) -> None:
        """Save the snapshot of the applied prefix (every slot below `slot`), atomically and
        durably; it replaces the previous one. Then the node's `snapshot_taken(slot, state)`,
        and a later persist() brings `TrimRecord(slot)`."""
        self._check_usable()
        if not isinstance(state, bytes):
            raise UsageError(f"a state of type {type(state).__name__}, not bytes")
        if len(state) > SNAPSHOT_BYTES_MAX:
            raise UsageError(f"a state of {len(state)} bytes; at most {SNAPSHOT_BYTES_MAX}")
        if not self._state.state_slot <= slot < SLOT_MAX:
            raise UsageError(
                f"a state snapshot at slot {slot}, below the saved one ({self._state.state_slot})"
            )
        try:
            self._seq += 1
            self.log.save_snapshot(self._seq, encode_state(slot, state))
        except BaseException as e:
            self._failed = e
            raise
        self._state.state_slot = slot
        self._state.state = state
        self._state.state_version = self._seq

    def close(self) -> None:
        """Release the files. Idempotent; everything persist() returned for is already durable."""
        if self._closed:
            return
        self._closed = True
        if self._failed is not None:
            # The error that failed it was raised already; nothing here is reported durable.
            with contextlib.suppress(OSError, LogError):
                self.log.close()
            return
        self.log.close()

    def __enter__(self) -> AcceptorLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise LogError(f"acceptor log {self.path} is closed")
        if self._failed is not None:
            raise LogError(
                f"acceptor log {self.path} failed earlier ({self._failed!r}); reopen it"
            ) from self._failed

    def _append(self, records: Iterable[AcceptorRecord]) -> None:
        def frames() -> Iterator[Record]:
            for rec in records:
                self._seq += 1
                yield Record(self._seq, 0, 0, 0, encode_payload(rec))

        self.log.append(frames())

    def _commit(self) -> None:
        if self._sync:
            self.log.sync()
        else:
            self.log.flush()


_OPEN_TOKEN: Final = object()
