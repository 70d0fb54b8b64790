"""The receive side of one shard's stream: decoding the senders' slot rings, and the per-sender
queues of messages received and not yet delivered, merged in round-robin order on delivery.

This module owns `Pending` (the pure-Python reference) and `new_pending`, which picks it or the
native one, `smr._native.Pending`: the same methods, results, exceptions and messages, checked
against each other by `tests/test_native_pending.py` and by the simulator's digests. Which one a
stream gets is `MulticastConfig.engine`: `"python"`, `"native"`, or `"auto"` (the default: native
unless the process started with `SMR_NATIVE=0`; `smr/__init__` reads it, since the core reads no
environment).

A slot (`SLOT_HEADER`: index, timestamp, length, kind | flags) is a data message with its payload
inline, a null run (`length` indices at once, no payload) or the header of a large message whose
payload the data plane brings (`large_inbox`, keyed by (sender rank, index)). Everything in a ring
is the sender's input, so every field is checked and a bad one is the sender's fault
(`PeerProtocolError`); a call that raises leaves the queues as they were.

Entries are `(index, count, kind, timestamp_ns, payload, reply)`: `count` is 1 for a data message
and the run length for nulls (payload None). Sequence numbers are round robin: message `index` of
sender rank `k` among `n` senders is `seq = index * n + k`.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

import smr
from smr.core.errors import PeerProtocolError
from smr.core.ready import Delivery

# index, timestamp_ns, length (payload bytes, or the run length of a null run), kind | flags
SLOT_HEADER = struct.Struct("<qqiI")
KIND_DATA = 1
KIND_NULLS = 2
KIND_LARGE = 3
FLAG_REPLY = 1 << 8
KIND_MASK = 0xFF
SEQ_MAX = (1 << 32) - 1

ENGINES = ("auto", "native", "python")

_new_tuple = tuple.__new__  # builds a Delivery without NamedTuple's Python-level __new__


def native_wanted(engine: str = "auto") -> bool:
    """Whether `engine` means the native stream (`"auto"`: yes, unless the process started with
    `SMR_NATIVE=0`, which `smr/__init__` read)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        return smr._NATIVE_DEFAULT
    return engine == "native"


def new_pending(
    sender_ids: tuple[int, ...], g: int, window_max: int, slot_bytes: int, engine: str = "auto"
) -> Any:
    """A `Pending` of the engine asked for: `smr._native.Pending` or the reference."""
    if native_wanted(engine):
        try:
            from smr import _native
        except ImportError as e:  # pragma: no cover - the build makes it; say how to do without
            raise ImportError(
                f"the native stream (smr._native) is not built: {e}; rebuild with "
                "`pip install -e .`, or run the pure-Python one with SMR_NATIVE=0"
            ) from e
        return _native.Pending(sender_ids, g, window_max, slot_bytes)
    return Pending(sender_ids, g, window_max, slot_bytes)


class Pending:
    """Per sender rank of one shard: what was received and is not delivered yet, in order."""

    def __init__(self, sender_ids: tuple[int, ...], g: int, window_max: int, slot_bytes: int):
        assert sender_ids, "a shard has at least one sender"
        assert window_max >= 2 and slot_bytes >= SLOT_HEADER.size
        self.sender_ids = tuple(sender_ids)
        self.g = g
        self.window_max = window_max
        self.slot_bytes = slot_bytes
        self.n = len(sender_ids)
        self.queues: list[deque[tuple]] = [deque() for _ in sender_ids]

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues)

    def append(
        self, k: int, index: int, count: int, kind: int, ts: int, payload: bytes | None, reply: bool
    ) -> None:
        """Queue one of my own messages (or null runs) as I place it in my ring."""
        self.queues[k].append((index, count, kind, ts, payload, reply))

    def own(self, k: int) -> list[tuple]:
        """Sender rank `k`'s entries not yet delivered, oldest first."""
        return list(self.queues[k])

    def take(
        self, k: int, buf: Any, ring: int, got: int, sent: int, large_inbox: dict
    ) -> tuple[int, int, bool]:
        """Read sender rank `k`'s slots from message `got` up to `sent` out of its ring, which
        starts at byte `ring` of `buf`; return the next message to read, the largest timestamp
        seen and whether a large message's payload is missing (then the next message is it)."""
        window, slot_bytes = self.window_max, self.slot_bytes
        if sent > got + window:
            raise PeerProtocolError(
                f"sender {self.sender_ids[k]} announced {sent} messages in shard "
                f"{self.g} but a window holds {window} past the {got} received"
            )
        unpack = SLOT_HEADER.unpack_from
        hsize = SLOT_HEADER.size
        taken: list[tuple] = []
        ts_max = 0
        blocked = False
        while got < sent:
            base = ring + (got % window) * slot_bytes
            index, ts, length, kind_flags = unpack(buf, base)
            if index != got:
                raise PeerProtocolError(
                    f"slot for message {got} of sender {self.sender_ids[k]} in shard {self.g} "
                    f"holds message {index}"
                )
            kind = kind_flags & KIND_MASK
            reply = bool(kind_flags & FLAG_REPLY)
            if kind == KIND_DATA:
                if not 0 <= length <= slot_bytes - hsize:
                    raise PeerProtocolError(f"slot payload length {length} in shard {self.g}")
                payload = bytes(buf[base + hsize : base + hsize + length])
                count = 1
            elif kind == KIND_NULLS:
                if not 1 <= length <= sent - got:
                    raise PeerProtocolError(f"null run of {length} in shard {self.g}")
                payload, count = None, length
            elif kind == KIND_LARGE:
                data = large_inbox.pop((k, got), None)
                if data is None:
                    blocked = True  # the data plane has not brought it yet
                    break
                if len(data) != length:
                    raise PeerProtocolError(
                        f"large message {got} in shard {self.g}: {len(data)} bytes, "
                        f"its slot says {length}"
                    )
                payload, count, kind = data, 1, KIND_DATA
            else:
                raise PeerProtocolError(f"unknown slot kind {kind} in shard {self.g}")
            if ts > ts_max:
                ts_max = ts
            taken.append((got, count, kind, ts, payload, reply))
            got += count
        self.queues[k].extend(taken)
        return got, ts_max, blocked

    def drain(self, k: int, subgroup: int, shard: int, epoch_bits: int) -> list[Delivery]:
        """Raw mode: everything queued for sender rank `k`, delivered on receipt (nulls dropped)."""
        q = self.queues[k]
        n = self.n
        out = []
        while q:
            e = q.popleft()
            if e[2] == KIND_NULLS:
                continue
            seq = e[0] * n + k
            assert 0 <= seq <= SEQ_MAX, f"sequence {seq} overflows the epoch's 32 bits"
            fields = (subgroup, shard, epoch_bits | seq, e[3], self.sender_ids[k], e[4], e[5])
            out.append(_new_tuple(Delivery, fields))
        return out

    def deliver(
        self, seq: int, stable: int, subgroup: int, shard: int, epoch_bits: int
    ) -> list[Delivery]:
        """Deliver sequence numbers `seq` up to `stable`, in order: the round robin over the
        senders' queues, a null run consumed one sequence number at a time."""
        n = self.n
        queues = self.queues
        out: list[Delivery] = []
        append = out.append
        senders = self.sender_ids
        new = _new_tuple
        while seq < stable:
            k = seq % n if n > 1 else 0
            q = queues[k]
            assert q, f"sequence {seq} of shard {self.g} is stable but was never received"
            e = q[0]
            index = seq // n if n > 1 else seq
            if e[2] == KIND_NULLS:
                if index == e[0] + e[1] - 1:
                    q.popleft()
                seq += 1
                continue
            assert e[0] == index, (e[0], index)
            q.popleft()
            append(new(Delivery, (subgroup, shard, epoch_bits | seq, e[3], senders[k], e[4], e[5])))
            seq += 1
        assert seq <= SEQ_MAX
        return out
