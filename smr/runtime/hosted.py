"""One hosted shard at one member: the state machine plus the client sessions that make a retried
command apply once.

This module owns what a delivered entry does at a replica. A client's command travels wrapped in
an envelope (`wrap`): the client's id and its request sequence number ahead of the operation. Every
replica keeps, per client, the results of its last `session_results_max` commands, as part of the
replicated state (the same at every replica, because it changes only in delivery order, and part
of every snapshot, so state transfer and log replay carry it). A command whose (client, seq) was
applied already is answered from that table and not applied again: the client may resend a command
to another member after a failure without applying it twice.

Results travel as `b"\\x00" + result` (msgpack of the returned value) or `b"\\x01" + message` when
the command raised (deterministically, at every replica).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from smr.api import StateMachine

ENVELOPE = struct.Struct("<BQQ")  # magic, client id, sequence number
ENVELOPE_MAGIC = 0xC5
RESULT_OK, RESULT_ERROR = b"\x00", b"\x01"
SNAPSHOT_FORMAT = "snapshot.format"  # log metadata: b"hosted" when snapshots are Hosted's


def wrap(client_id: int, seq: int, payload: bytes) -> bytes:
    return ENVELOPE.pack(ENVELOPE_MAGIC, client_id, seq) + payload


def unwrap(payload: bytes) -> tuple[int, int, bytes]:
    """(client id, seq, operation) of an entry; client id 0 for an entry without an envelope."""
    if len(payload) >= ENVELOPE.size and payload[0] == ENVELOPE_MAGIC:
        _, client_id, seq = ENVELOPE.unpack_from(payload)
        return client_id, seq, payload[ENVELOPE.size :]
    return 0, 0, payload


def operation_of(payload: bytes) -> bytes | memoryview:
    """An entry's operation without its client envelope, as a view (no copy)."""
    if len(payload) >= ENVELOPE.size and payload[0] == ENVELOPE_MAGIC:
        return memoryview(payload)[ENVELOPE.size :]
    return payload


class _Entry(NamedTuple):
    payload: bytes
    version: int
    timestamp_ns: int


class _Session:
    """One client's: the version of its last command, its last results by seq in the order
    applied, and `floor`, the highest seq whose result was dropped (a command at or below it
    that is not kept cannot be told applied or not)."""

    __slots__ = ("floor", "results", "version")

    def __init__(self, version: int, results: OrderedDict[int, bytes], floor: int) -> None:
        self.version = version
        self.results = results
        self.floor = floor


_ENVELOPE_BYTES = ENVELOPE.size
_unpack_envelope = ENVELOPE.unpack_from


class Hosted:
    """A state machine and its sessions; `apply` returns the result bytes for the reply map."""

    def __init__(
        self,
        machine: StateMachine,
        *,
        sessions_max: int = 4096,
        session_results_max: int = 256,
    ):
        assert sessions_max >= 1 and session_results_max >= 1
        self.machine = machine
        self.sessions_max = sessions_max
        self.session_results_max = session_results_max
        # client id -> its session. O(1) per command: the oldest kept result goes (an
        # OrderedDict pops its front in O(1); the smallest seq cost a scan), and the session is
        # changed in place (a new tuple per command cost a tenth of a small command's apply)
        self.sessions: dict[int, _Session] = {}
        self.version = 0  # the version of the last applied entry
        self.applied = 0  # commands applied (not answered from a session)

    def apply(self, payload: bytes, version: int, timestamp_ns: int) -> bytes:
        """Apply one entry; returns its result (`RESULT_OK` or `RESULT_ERROR` first)."""
        return self.apply_many((_Entry(payload, version, timestamp_ns),))[0][0]

    def apply_many(self, entries: Iterable[Any]) -> tuple[list[bytes], list[int]]:
        """Apply entries in order (anything with `payload`, `version` and `timestamp_ns`: a
        `Delivery`, a log `Record`), each as `apply` does: their results, and the positions of
        those answered from a client's session (a retry: the machine did not change). One call
        per delivered batch: the loop's names are bound once, not once per command."""
        results: list[bytes] = []
        repeats: list[int] = []
        append = results.append
        machine = self.machine
        apply_at = machine.apply_at
        encode_result = machine.encode_result
        sessions = self.sessions
        kept_max = self.session_results_max
        fresh = 0
        for position, entry in enumerate(entries):
            payload = entry.payload
            version = entry.version
            session = None
            self.version = version
            if len(payload) >= _ENVELOPE_BYTES and payload[0] == ENVELOPE_MAGIC:
                _, client_id, seq = _unpack_envelope(payload)
                # the operation decodes from a view: no copy of the payload per replica
                op: bytes | memoryview = memoryview(payload)[_ENVELOPE_BYTES:]
                session = sessions.get(client_id)
                if session is not None:
                    cached = session.results.get(seq)
                    if cached is None and seq <= session.floor:
                        cached = RESULT_ERROR + b"command too old to tell whether it was applied"
                    if cached is not None:
                        append(cached)
                        repeats.append(position)
                        continue
            else:
                client_id, seq, op = 0, 0, payload
            try:
                result = RESULT_OK + encode_result(apply_at(op, version, entry.timestamp_ns))
            except Exception as e:
                result = RESULT_ERROR + f"{type(e).__name__}: {e}".encode()[:4096]
            fresh += 1
            append(result)
            if client_id:
                if session is None:
                    session = self._open(client_id, version)
                session.version = version
                kept = session.results
                kept[seq] = result
                while len(kept) > kept_max:
                    oldest, _ = kept.popitem(last=False)
                    if oldest > session.floor:
                        session.floor = oldest
        self.applied += fresh
        return results, repeats

    def _open(self, client_id: int, version: int) -> _Session:
        session = self.sessions[client_id] = _Session(version, OrderedDict(), 0)
        if len(self.sessions) > self.sessions_max:
            # the client idle longest goes (every replica picks the same one); never the new one,
            # which has the newest version
            oldest = min(self.sessions, key=lambda c: self.sessions[c].version)
            del self.sessions[oldest]
        return session

    def apply_record(self, record: Any) -> None:
        """Replay a logged record (`smr.log.Record`) into the machine (`smr.recovery.replay`)."""
        self.apply_many((record,))

    def snapshot(self) -> bytes:
        sessions = [
            [cid, x.version, list(x.results.items()), x.floor]
            for cid, x in sorted(self.sessions.items())
        ]
        return msgspec.msgpack.encode([self.machine.snapshot(), self.version, sessions])

    def restore(self, data: bytes) -> None:
        state, version, sessions = msgspec.msgpack.decode(data)
        self.machine.restore(state)
        self.version = version
        self.sessions = {}
        for cid, v, results, *rest in sessions:
            kept = OrderedDict((s, r) for s, r in results)
            # snapshots before the floor was kept: everything below the oldest kept seq is lost
            floor = rest[0] if rest else (min(kept) - 1 if kept else 0)
            self.sessions[cid] = _Session(v, kept, floor)

    def query(self, payload: bytes) -> bytes:
        try:
            return RESULT_OK + self.machine.encode_result(self.machine.run_query(payload))
        except Exception as e:
            return RESULT_ERROR + f"{type(e).__name__}: {e}".encode()[:4096]


def decode_result(cls: type[StateMachine], data: bytes, operation: str | None = None) -> Any:
    """A result from `Hosted.apply`/`query`: the value, or `CommandError` raised."""
    if data[:1] == RESULT_ERROR:
        raise CommandError(data[1:].decode(errors="replace"))
    if data[:1] != RESULT_OK:
        raise CommandError(f"a malformed result ({len(data)} bytes)")
    return cls.decode_result(data[1:], operation)


class CommandError(Exception):
    """The command raised at the replicas (the same error at each) or could not be run."""
