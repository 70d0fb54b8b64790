"""Ordered multicast in one epoch, per shard, driven only by monotone table columns.

This module owns one shard's stream at one member (`ShardStream`): its columns, its predicates and
the local buffers behind them. It follows Derecho's multicast_group (see PROTOCOL_NOTES.md):

Columns, per shard `g` (every member's row has them so offsets agree; only the shard's members
read them, and they are pushed only to the shard's members):

    s{g}_slots      bytes   the sender's ring of `window_max` slots (small messages, null runs,
                            headers of large messages)
    s{g}_sent       counter message indices this member placed in its ring (nulls included)
    s{g}_received   vector  per sender: indices received from it (contiguously)
    s{g}_seq        counter contiguous sequence numbers received: every seq below it is here
    s{g}_delivered  counter sequence numbers delivered locally
    s{g}_persisted  counter sequence numbers persisted locally (durable mode)

Order: message `index` of the sender of rank `k` among `S` senders has `seq = index * S + k`
(round robin). A receiver's contiguous count is `m * S + j` where `m = min_k received[k]` and `j`
is the first sender rank with `received[j] == m`. A sequence number is stable, and is delivered,
once it is below every shard member's `seq` (everyone received it); every newly stable message is
delivered in one pass and the table is pushed once per batch (Spindle's opportunistic batching).
Its version is `(epoch << 32) | seq`. An idle sender that sees another ahead sends a null run (one
slot, many indices) so the round robin never stalls.

Window: a sender may place index `i` only while `i < min over members of received[me] + window_max`,
so it never overwrites a slot some member has not read. Submissions that cannot enter the window
wait in a bounded queue and fail with `SubmitFailed` after `submit_timeout_ns`.

Payloads larger than a slot travel on the data plane (`Send`, sent before the slot that announces
them); the slot carries the header only, and a receiver counts the message as received only when
both are there. Order and delivery are decided by the table counters alone. The data plane is
RDMC's (smr.core.rdmc): the payload is cut into blocks of `block_bytes`, and each block frame
(`FRAME_BLOCK`: sender rank, block, block size and total size, so a receiver preallocates the
message and fills it in place) travels along the configured schedule, every member relaying the
blocks the schedule gives it as soon as it holds them, in the schedule's order (`_Transfer`).
A receiver's completion shows only as its `received` column rising, as for any message.

Reconnection: a broken link loses the frames in flight on it, and only on it. So when a link to
`peer` comes back (`resend`), every member sends `peer` again the blocks it had already sent it
for messages `peer`'s `received` column says it still lacks, and the message's sender also sends
it the whole payload (`FRAME_LARGE`) for each, which `peer` takes as every block at once and
relays on from. Blocks `peer` would have got from a third member come either from that member
(if its link to `peer` broke too, it resends) or are still in flight (FIFO links that did not
break lose nothing), so `peer` completes. A relayer that crashes mid-transfer leaves the members
below it in the relay tree without the message: their `received` stays below it, the group
stalls on that sender until the failure is suspected, and the ragged trim then delivers only
messages every survivor received whole (the minimum of `received`), so nothing half-received is
delivered anywhere; the sender submits the rest again in the next view.

Modes: `ordered` (above), `durable` (delivered entries become `LogAppend` requests; `persisted`
rises when the driver reports them durable; a submitter is answered when the shard's global
persistence frontier, the minimum of `persisted`, passes its message), `raw` (delivered on receipt,
per-sender FIFO, no total order).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from smr.core.codec import FRAME, FRAME_BLOCK, FRAME_LARGE, FRAME_REPLIES
from smr.core.errors import PeerProtocolError, UsageError, WindowFullError
from smr.core.layout import Shard
from smr.core.pending import (
    ENGINES,
    FLAG_REPLY,
    KIND_DATA,
    KIND_LARGE,
    KIND_NULLS,
    SEQ_MAX,
    SLOT_HEADER,
    new_pending,
)
from smr.core.rdmc import BLOCKS_MAX, SCHEDULES, schedule
from smr.core.ready import Delivery, LogAppend, Push, Send
from smr.core.table import Column, byte_slots, counter, flag, vector

if TYPE_CHECKING:
    from smr.core.replica import Replica


# Data-plane frames (FRAME and the kinds: smr.core.codec). A replies frame carries every reply a
# member has for a sender after one batch of deliveries (REPLY_ITEM and a result, repeated): a
# frame per reply cost each member a send per command, and the sender a receive per command and
# member.
REPLY_ITEM = struct.Struct("<qI")  # version, result length
REPLIES_FRAME_BYTES = 1 << 18  # a replies frame is cut after this many bytes of results
# sender rank, block number, block size, total size: enough to preallocate and place the block
BLOCK_HEADER = struct.Struct("<HIIq")


@dataclass(frozen=True, slots=True)
class MulticastConfig:
    window_max: int = 64  # message indices a sender may have ahead of its slowest receiver
    slot_bytes: int = 256  # header + payload; larger payloads go on the data plane
    submit_queue_max: int = 10_000  # submissions waiting for the window, per shard
    submit_timeout_ns: int = 5_000_000_000
    reply_cache_max: int = 1 << 16  # replies kept per sender for resending after a reconnect
    block_bytes: int = 1 << 17  # RDMC block size, measured (docs/performance.md, RDMC data plane)
    schedule: str = "binomial"  # RDMC block schedule: binomial, chain or sequential
    large_bytes_max: int = 1 << 30  # the largest payload a member may submit
    # the receive side's implementation (smr.core.pending): "auto" is native unless SMR_NATIVE=0
    engine: str = "auto"

    def __post_init__(self) -> None:
        assert 2 <= self.window_max <= 1 << 15
        assert self.slot_bytes >= SLOT_HEADER.size + 8 and self.slot_bytes % 8 == 0
        assert self.submit_queue_max >= 1
        assert self.submit_timeout_ns > 0
        if not 64 <= self.block_bytes <= 1 << 30:
            raise ValueError(f"block_bytes must be 64..2**30, not {self.block_bytes}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")

    @property
    def slot_payload_max(self) -> int:
        return self.slot_bytes - SLOT_HEADER.size


@dataclass(frozen=True, slots=True)
class Deliver:
    """A trigger's effect: these entries join the Ready's deliveries, after those of the
    triggers that fired before it (one per batch: it is on the hot path)."""

    deliveries: list[Delivery]


class Completed(NamedTuple):
    """Event: a submission is answered. `results` maps member -> result bytes when replies were
    asked for (every shard member's, like Derecho's reply map), else None. A NamedTuple, like
    `Delivery`: one is built per command (a frozen dataclass's `__init__` cost 3% of the
    client's member)."""

    ticket: int
    subgroup: int
    shard: int
    version: int
    results: dict[int, bytes] | None


@dataclass(frozen=True, slots=True)
class PeerMisbehaved:
    """Event: input from `peer` broke the protocol in `epoch` (a malformed frame or slot, a
    counter that went back). The input was dropped whole and the peer is suspected, so the view
    change removes it; the replica goes on."""

    peer: int
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class SubmitFailed:
    """Event: a submission could not enter the send window before its timeout."""

    ticket: int
    subgroup: int
    shard: int
    reason: str


def columns(shard: Shard, config: MulticastConfig) -> tuple[Column, ...]:
    g = shard.index
    return (
        byte_slots(f"s{g}_slots", config.window_max * config.slot_bytes, "ring of message slots"),
        counter(f"s{g}_sent", "message indices placed in my ring, nulls included"),
        vector(f"s{g}_received", len(shard.senders), "indices received from each sender"),
        counter(f"s{g}_seq", "contiguous sequence numbers received"),
        counter(f"s{g}_delivered", "sequence numbers delivered"),
        counter(f"s{g}_persisted", "sequence numbers persisted"),
        counter(f"s{g}_answered", "my messages below this seq need no more replies"),
        flag(f"s{g}_ready", "this member holds the shard's state (it is not waiting for it)"),
    )


class _Waiting(NamedTuple):
    ticket: int
    payload: bytes
    reply: bool
    deadline_ns: int


class _Transfer:
    """A large message in flight through this member: its buffer, the blocks held, and the
    schedule's sends of this member, made in order as the blocks arrive."""

    __slots__ = ("buf", "count", "done", "have", "next_out", "outgoing", "total")

    def __init__(self, total: int, blocks: int, outgoing: tuple[tuple[int, int], ...]):
        self.total = total
        self.buf: bytearray | bytes = bytearray(total)
        self.have = bytearray(blocks)
        self.count = 0
        self.outgoing = outgoing  # (block, member id) in step order
        self.next_out = 0
        self.done = False  # the whole payload went to `large_inbox`


# A received message waiting for delivery, as a plain tuple (one is built per message):
# (first index, count: 1 or a null run's length, kind, timestamp_ns, payload, reply)


class ShardStream:
    """One shard's ordered stream at one member."""

    def __init__(self, replica: Replica, shard: Shard, config: MulticastConfig):
        table = replica.table
        me = replica.me
        assert me in shard.members
        self.replica = replica
        self.shard = shard
        self.config = config
        self.g = g = shard.index
        self.subgroup = shard.subgroup
        self.shard_index = shard.shard
        self.mode = shard.mode
        self.epoch_bits = replica.epoch << 32
        self.n_senders = len(shard.senders)
        self.my_rank = shard.senders.index(me) if me in shard.senders else -1
        self.targets = tuple(m for m in shard.members if m != me)
        self.member_rows = tuple(table.members.index(m) for m in shard.members)
        self.sender_rows = tuple(table.members.index(m) for m in shard.senders)
        self.row_of_member = {m: table.members.index(m) for m in table.members}
        self.sender_ids = shard.senders
        lay = table.layout
        self.w_sent = lay[f"s{g}_sent"].word
        self.w_received = lay[f"s{g}_received"].word
        self.w_seq = lay[f"s{g}_seq"].word
        self.w_delivered = lay[f"s{g}_delivered"].word
        self.w_persisted = lay[f"s{g}_persisted"].word
        self.w_answered = lay[f"s{g}_answered"].word
        self.counters = (
            f"s{g}_sent",
            f"s{g}_received",
            f"s{g}_seq",
            f"s{g}_delivered",
            f"s{g}_persisted",
            f"s{g}_answered",
            f"s{g}_ready",
        )
        self.slots_name = f"s{g}_slots"
        self.slots_offset = lay[self.slots_name].offset
        self.window_max = config.window_max
        self.slot_bytes = config.slot_bytes
        self.table = table
        self.my_row = table.my_row
        self.row_words = table.row_words
        self.row_bytes = table.row_bytes
        # local state
        self.pending = new_pending(
            tuple(shard.senders), g, config.window_max, config.slot_bytes, config.engine
        )
        self.queue: deque[_Waiting] = deque()
        self.large_inbox: dict[tuple[int, int], bytes] = {}  # (sender rank, index) -> payload
        # What the data plane may have to send again after a link comes back (a broken
        # connection loses what was in flight): my large payloads until every member received
        # them, and my replies until their sender needs no more (its `answered` column).
        self.large_outbox: dict[int, bytes] = {}  # my index -> payload
        # large messages of other senders I receive or relay, until every member received them;
        # at most 2 windows per sender (`on_block` refuses indices beyond)
        self.transfers: dict[tuple[int, int], _Transfer] = {}
        self.transfers_max = 2 * self.window_max * self.n_senders
        self.block_bytes = config.block_bytes
        self.completed = 0  # large messages whose last block arrived (a receive may be due)
        # my results for each sender, in version order, until its `answered` column passes them
        # (a deque: trimming a dict from the front leaves holes every later trim walks over)
        self.reply_cache: dict[int, deque[tuple[int, bytes]]] = {m: deque() for m in shard.senders}
        self.reply_out: dict[int, list[tuple[int, bytes]]] = {}  # sender -> replies not yet sent
        self.blocked: list[int] = [-1] * self.n_senders  # index waiting for its large payload
        self.awaiting: dict[int, int] = {}  # seq of my message -> ticket
        self.replies: dict[int, dict[int, bytes]] = {}  # version -> member -> result
        self.want_reply: set[int] = set()  # seqs of my messages that asked for replies
        self.persist_batches: deque[tuple[int, int]] = deque()  # (last real version, seq count)
        self.durable_version = -1
        self.frontier_seen = 0  # the global persistence frontier (seq count) last acted on
        self.dirty_counters = False
        self.dirty_slots: tuple[int, int] | None = None  # index range [from, to) placed this round
        self.awaiting_state = False  # a member new to the shard waits for its state (`set_ready`)
        self.epoch = replica.epoch

    # -- helpers --------------------------------------------------------------------------------

    def _mine(self, word: int) -> int:
        return self.table.words[self.my_row * self.row_words + word]

    def _set_mine(self, word: int, value: int) -> None:
        i = self.my_row * self.row_words + word
        assert value >= self.table.words[i], f"s{self.g} column would decrease"
        self.table.words[i] = value
        self.dirty_counters = True

    def version_of(self, seq: int) -> int:
        assert 0 <= seq <= SEQ_MAX, f"sequence {seq} overflows the epoch's 32 bits"
        return self.epoch_bits | seq

    def delivered_count(self) -> int:
        return self._mine(self.w_delivered)

    def stable_count(self) -> int:
        words, rw, w = self.table.words, self.row_words, self.w_seq
        return min(words[r * rw + w] for r in self.member_rows)

    def persisted_frontier(self) -> int:
        """The shard's global persistence frontier (a seq count) as this member sees it."""
        words, rw, w = self.table.words, self.row_words, self.w_persisted
        return min(words[r * rw + w] for r in self.member_rows)

    # -- submit and send ------------------------------------------------------------------------

    def submit(self, ticket: int, payload: bytes, reply: bool, resubmitted: bool = False) -> None:
        if self.my_rank < 0:
            raise UsageError(
                f"member {self.replica.me} is not a sender of subgroup {self.subgroup} shard "
                f"{self.shard_index} (senders: {list(self.sender_ids)})"
            )
        if self.queue_full() and not resubmitted:
            raise WindowFullError(
                f"subgroup {self.subgroup} shard {self.shard_index}: "
                f"{len(self.queue)} submissions already wait for the send window; retry later"
            )
        if len(payload) > self.config.large_bytes_max:
            raise UsageError(
                f"a payload of {len(payload)} bytes is over large_bytes_max "
                f"({self.config.large_bytes_max})"
            )
        if len(payload) > BLOCKS_MAX * self.block_bytes:
            raise UsageError(
                f"a payload of {len(payload)} bytes makes more than {BLOCKS_MAX} blocks of "
                f"{self.block_bytes} bytes; raise block_bytes"
            )
        deadline = self.replica.now_ns + self.config.submit_timeout_ns
        self.queue.append(_Waiting(ticket, bytes(payload), reply, deadline))

    def queue_full(self) -> bool:
        return len(self.queue) >= self.config.submit_queue_max

    def _window_end(self) -> int:
        """The first index this sender may not place yet."""
        words, rw, w = self.table.words, self.row_words, self.w_received + self.my_rank
        return min(words[r * rw + w] for r in self.member_rows) + self.window_max

    def can_send(self) -> bool:
        if self.my_rank < 0 or self.replica.frozen:
            return False
        sent = self._mine(self.w_sent)
        if not self.queue and self._nulls_needed(sent) <= 0:
            return False
        return sent < self._window_end()

    def _nulls_needed(self, sent: int) -> int:
        if self.n_senders == 1:
            return 0
        words = self.table.words
        base = self.my_row * self.row_words + self.w_received
        return max(words[base : base + self.n_senders]) - sent

    def send(self) -> list[Any]:
        """Place queued messages (and null runs) into the ring, as far as the window allows."""
        sent = self._mine(self.w_sent)
        end = self._window_end()
        first = sent
        sends: list[Any] = []
        own: list[Delivery] = []  # raw mode: delivered on receipt, and the sender has it already
        replica = self.replica
        rank = self.my_rank
        n = self.n_senders
        payload_max = self.config.slot_payload_max
        while sent < end:
            if self.queue:
                w = self.queue.popleft()
                ts = replica.next_timestamp()
                flags = FLAG_REPLY if w.reply else 0
                if len(w.payload) <= payload_max:
                    self._write_slot(sent, ts, len(w.payload), KIND_DATA | flags, w.payload)
                else:
                    sends.extend(self._send_blocks(sent, w.payload))
                    self.large_outbox[sent] = w.payload
                    self._write_slot(sent, ts, len(w.payload), KIND_LARGE | flags, b"")
                seq = sent * n + rank
                if self.mode == "raw":
                    own.append(
                        Delivery(
                            self.subgroup,
                            self.shard_index,
                            self.version_of(seq),
                            ts,
                            replica.me,
                            w.payload,
                            w.reply,
                        )
                    )
                    self._set_mine(self.w_delivered, self._mine(self.w_delivered) + 1)
                else:
                    self.pending.append(rank, sent, 1, KIND_DATA, ts, w.payload, w.reply)
                self.awaiting[seq] = w.ticket
                if w.reply:
                    self.want_reply.add(seq)
                sent += 1
                continue
            nulls = min(self._nulls_needed(sent), end - sent)
            if nulls <= 0:
                break
            self._write_slot(sent, 0, nulls, KIND_NULLS, b"")
            if self.mode != "raw":
                self.pending.append(rank, sent, nulls, KIND_NULLS, 0, None, False)
            sent += nulls
        if own:
            sends.append(Deliver(own))
        if sent == first:
            return sends
        self._set_mine(self.w_sent, sent)
        self._set_mine(self.w_received + rank, sent)
        self._raise_answered()
        prev = self.dirty_slots
        self.dirty_slots = (first if prev is None else prev[0], sent)
        self._update_seq()
        return sends

    def _write_slot(self, index: int, ts: int, length: int, kind: int, payload: bytes) -> None:
        pos = (index % self.window_max) * self.slot_bytes
        base = self.my_row * self.row_bytes + self.slots_offset + pos
        buf = self.table.buf
        SLOT_HEADER.pack_into(buf, base, index, ts, length, kind)
        if payload:
            start = base + SLOT_HEADER.size
            buf[start : start + len(payload)] = payload

    # -- receive --------------------------------------------------------------------------------

    def can_receive(self) -> bool:
        if self.replica.frozen or self.awaiting_state:
            return False
        words, rw = self.table.words, self.row_words
        mine = self.my_row * rw + self.w_received
        w_sent = self.w_sent
        blocked = self.blocked
        for k, r in enumerate(self.sender_rows):
            got = words[mine + k]
            if words[r * rw + w_sent] > got and blocked[k] != got:
                return True
        return False

    def receive(self) -> list[Any]:
        """Copy newly announced messages out of the senders' rings (in my copy of their rows).
        A sender whose slots break the protocol is reported (`PeerMisbehaved`, for the replica
        to suspect it) and nothing it announced in this call is taken; the others go on."""
        words, rw = self.table.words, self.row_words
        mine = self.my_row * rw + self.w_received
        out: list[Any] = []
        bad: list[Any] = []
        replica = self.replica
        pending, buf, inbox = self.pending, self.table.buf, self.large_inbox
        raw = self.mode == "raw"
        for k, r in enumerate(self.sender_rows):
            got = words[mine + k]
            sent = words[r * rw + self.w_sent]
            if sent <= got or self.blocked[k] == got:
                continue
            ring = r * self.row_bytes + self.slots_offset
            try:
                taken, ts_max, blocked = pending.take(k, buf, ring, got, sent, inbox)
            except PeerProtocolError as e:
                # its row is blocked at the last message taken, and no later read of it helps
                self.blocked[k] = got
                bad.append(PeerMisbehaved(self.sender_ids[k], self.epoch, str(e)))
                continue
            if blocked:
                self.blocked[k] = taken  # the data plane has not brought its payload yet
            if raw:
                out.extend(pending.drain(k, self.subgroup, self.shard_index, self.epoch_bits))
            if ts_max:
                replica.observe_timestamp(ts_max)
            if taken != got:
                self._set_mine(self.w_received + k, taken)
        self._update_seq()
        self._prune_transfers()
        if out:
            self._set_mine(self.w_delivered, self._mine(self.w_delivered) + len(out))
            bad.append(Deliver(out))
        return bad

    def _update_seq(self) -> None:
        words = self.table.words
        base = self.my_row * self.row_words + self.w_received
        received = words[base : base + self.n_senders]
        m = min(received)
        j = list(received).index(m)
        count = m * self.n_senders + j
        if count > words[self.my_row * self.row_words + self.w_seq]:
            self._set_mine(self.w_seq, count)

    # -- the RDMC data plane --------------------------------------------------------------------

    def _outgoing(self, k: int, blocks: int) -> tuple[tuple[int, int], ...]:
        """My sends, (block, member), for a message of `blocks` blocks from sender rank `k`:
        ranks are positions in the member list rotated so that the sender is rank 0."""
        members = self.shard.members
        n = len(members)
        base = members.index(self.sender_ids[k])
        me = (members.index(self.replica.me) - base) % n
        sched = schedule(self.config.schedule, n, blocks)
        return tuple((b, members[(base + r) % n]) for b, r in sched.outgoing(me))

    def _block_frame(self, k: int, index: int, block: int, total: int, data: memoryview) -> bytes:
        bb = self.block_bytes
        lo = block * bb
        head = FRAME.pack(FRAME_BLOCK, self.g, index, self.epoch)
        return b"".join((head, BLOCK_HEADER.pack(k, block, bb, total), data[lo : lo + bb]))

    def _send_blocks(self, index: int, payload: bytes) -> list[Send]:
        """The sender's part of the schedule: it holds every block, so it sends them all now."""
        if not self.targets:
            return []
        blocks = -(-len(payload) // self.block_bytes)
        data = memoryview(payload)
        k, total = self.my_rank, len(payload)
        return [
            Send(to, self._block_frame(k, index, b, total, data))
            for b, to in self._outgoing(k, blocks)
        ]

    def _transfer(self, source: int, k: int, index: int, total: int) -> _Transfer | None:
        """The record of sender `k`'s message `index`, made at its first block; None when the
        message was received and forgotten already (a resend after a reconnection)."""
        t = self.transfers.get((k, index))
        if t is not None:
            if t.total != total:
                raise PeerProtocolError(
                    f"large message {index} in shard {self.g}: {total} bytes from {source}, "
                    f"{t.total} before"
                )
            return t
        got = self._mine(self.w_received + k)
        if index < got:
            return None
        if index >= got + 2 * self.window_max:
            raise PeerProtocolError(
                f"large message {index} from {source} in shard {self.g} is outside the window"
            )
        if not self.config.slot_payload_max < total <= self.config.large_bytes_max:
            raise PeerProtocolError(f"a large message of {total} bytes from {source}")
        if len(self.transfers) >= self.transfers_max:
            self._prune_transfers()
        assert len(self.transfers) < self.transfers_max, "more large messages than two windows"
        blocks = -(-total // self.block_bytes)
        t = self.transfers[(k, index)] = _Transfer(total, blocks, self._outgoing(k, blocks))
        return t

    def _pump(self, k: int, index: int, t: _Transfer) -> list[Send]:
        """Relay, in the schedule's order, every block of mine whose turn came and that I hold."""
        out: list[Send] = []
        todo, have, i = t.outgoing, t.have, t.next_out
        if i < len(todo) and have[todo[i][0]]:
            data = memoryview(t.buf)
            while i < len(todo) and have[todo[i][0]]:
                b, to = todo[i]
                out.append(Send(to, self._block_frame(k, index, b, t.total, data)))
                i += 1
            t.next_out = i
        return out

    def _complete(self, k: int, index: int, t: _Transfer) -> None:
        t.buf = bytes(t.buf)  # what `receive` delivers; relays go on from it
        t.done = True
        self.completed += 1
        self.large_inbox[(k, index)] = t.buf
        if self.blocked[k] == index:
            self.blocked[k] = -1

    def _prune_transfers(self) -> None:
        """Forget large messages every member received: nobody needs a block of them again."""
        if not self.transfers:
            return
        words, rw, w = self.table.words, self.row_words, self.w_received
        low = [min(words[r * rw + w + k] for r in self.member_rows) for k in range(self.n_senders)]
        for key in [key for key in self.transfers if key[1] < low[key[0]]]:
            del self.transfers[key]

    def _sender_rank(self, source: int, k: int) -> int:
        if source not in self.shard.members:
            raise PeerProtocolError(f"member {source} is not a member of shard {self.g}")
        if not 0 <= k < self.n_senders:
            raise PeerProtocolError(f"a block of sender rank {k} in shard {self.g}")
        return k

    def on_block(self, source: int, index: int, body: memoryview | bytes) -> list[Send]:
        """One block of a large message (`FRAME_BLOCK`): place it, and relay what is now due."""
        if len(body) < BLOCK_HEADER.size:
            raise PeerProtocolError(f"a block frame of {len(body)} bytes from {source}")
        k, block, bb, total = BLOCK_HEADER.unpack_from(body)
        k = self._sender_rank(source, k)
        if bb != self.block_bytes:
            raise PeerProtocolError(
                f"blocks of {bb} bytes from {source}, but block_bytes is {self.block_bytes} here"
            )
        t = self._transfer(source, k, index, total)
        if t is None:
            return []  # sent again after a reconnection, and we received the message already
        if block >= len(t.have):
            raise PeerProtocolError(f"block {block} of a {total}-byte message from {source}")
        if t.done or t.have[block]:
            return []  # sent again after a reconnection, and we had it already
        lo = block * bb
        size = min(bb, total - lo)
        if len(body) - BLOCK_HEADER.size != size:
            raise PeerProtocolError(
                f"block {block} of message {index} from {source}: "
                f"{len(body) - BLOCK_HEADER.size} bytes, expected {size}"
            )
        # a bytearray until the message is done (then bytes), and a done one returned above
        t.buf[lo : lo + size] = memoryview(body)[BLOCK_HEADER.size :]  # type: ignore[index]
        t.have[block] = 1
        t.count += 1
        if t.count == len(t.have):
            self._complete(k, index, t)
        return self._pump(k, index, t)

    def on_large(self, source: int, index: int, payload: bytes) -> list[Send]:
        """A whole large message (`FRAME_LARGE`, the sender's fallback after a reconnection):
        every block at once, relayed on as the schedule says."""
        if source not in self.sender_ids:
            raise PeerProtocolError(f"member {source} is not a sender of shard {self.g}")
        k = self.sender_ids.index(source)
        t = self._transfer(source, k, index, len(payload))
        if t is None or t.done:
            return []
        t.buf = payload
        t.have[:] = b"\x01" * len(t.have)
        t.count = len(t.have)
        self._complete(k, index, t)
        return self._pump(k, index, t)

    # -- deliver --------------------------------------------------------------------------------

    def can_deliver(self) -> bool:
        if self.mode == "raw" or self.replica.frozen or self.awaiting_state:
            return False
        return self.stable_count() > self._mine(self.w_delivered)

    def deliver(self) -> list[Any]:
        """Deliver every newly stable message in one pass, in sequence order."""
        return self._deliver_to(self.stable_count())

    def deliver_upto(self, count: int) -> list[Any]:
        """The ragged trim: deliver exactly the sequence numbers below `count`, which every
        survivor has received, whether or not this member saw them stable."""
        if self.mode == "raw":
            return []  # delivered on receipt; nothing is ordered, nothing to trim
        if self.awaiting_state:
            return []  # no state to apply them to: the next view's plan sends it, trim included
        have = self._mine(self.w_seq)
        assert count <= have, f"trim {count} above the {have} messages received in shard {self.g}"
        if count <= self._mine(self.w_delivered):
            return []
        return self._deliver_to(count)

    def _deliver_to(self, stable: int) -> list[Any]:
        out = self.pending.deliver(
            self._mine(self.w_delivered), stable, self.subgroup, self.shard_index, self.epoch_bits
        )
        self._set_mine(self.w_delivered, stable)
        actions: list[Any] = [Deliver(out)] if out else []
        if self.mode == "durable":
            last = out[-1].version if out else -1
            self.persist_batches.append((last, stable))
            if out:
                actions.append(LogAppend(self.subgroup, self.shard_index, tuple(out)))
            self._advance_persisted()
        return actions

    # -- persistence ----------------------------------------------------------------------------

    def on_persisted(self, version: int) -> None:
        if version > self.durable_version:
            self.durable_version = version
        self._advance_persisted()

    def _advance_persisted(self) -> None:
        batches = self.persist_batches
        count = -1
        while batches and batches[0][0] <= self.durable_version:
            count = batches.popleft()[1]
        if count > self._mine(self.w_persisted):
            self._set_mine(self.w_persisted, count)

    # -- completion -----------------------------------------------------------------------------

    def can_complete(self) -> bool:
        return bool(self.awaiting) and next(self._completable(), None) is not None

    def _completable(self):
        """My messages that met their mode's guarantee and have every result they asked for,
        in sequence order (`awaiting` is filled in sequence order), up to the first that has
        not."""
        done = self._answered_count()
        members = len(self.shard.members)
        for seq in self.awaiting:
            if seq >= done:
                return
            if seq in self.want_reply:
                got = self.replies.get(self.epoch_bits | seq)
                if got is None or len(got) < members:
                    return  # answered in order: the scan stays short under a full window
            yield seq

    def _answered_count(self) -> int:
        """Seq count below which my messages met their mode's guarantee."""
        if self.mode == "ordered":
            return self._mine(self.w_delivered)
        if self.mode == "durable":
            return self.persisted_frontier()
        # raw: every member received it
        words, rw, w = self.table.words, self.row_words, self.w_received + self.my_rank
        received = min(words[r * rw + w] for r in self.member_rows)
        return received * self.n_senders + self.my_rank

    def complete(self) -> list[Any]:
        events: list[Any] = []
        for seq in list(self._completable()):
            version = self.epoch_bits | seq
            results = None
            if seq in self.want_reply:
                self.want_reply.discard(seq)
                results = self.replies.pop(version)
            ticket = self.awaiting.pop(seq)
            events.append(Completed(ticket, self.subgroup, self.shard_index, version, results))
        self._raise_answered()
        return events

    def _raise_answered(self) -> None:
        answered = (
            next(iter(self.awaiting))
            if self.awaiting
            else self._mine(self.w_sent) * self.n_senders + self.my_rank
        )
        if answered > self._mine(self.w_answered):
            self._set_mine(self.w_answered, answered)
        # my large payloads that every member has received are not needed again
        if self.large_outbox:
            words, rw, w = self.table.words, self.row_words, self.w_received + self.my_rank
            low = min(words[r * rw + w] for r in self.member_rows)
            for index in [i for i in self.large_outbox if i < low]:
                del self.large_outbox[index]

    def queue_replies(self, sender: int, items: list[tuple[int, bytes]]) -> None:
        """Keep my results for `sender` (version, result), in version order, until it needs them
        no more, and queue them for the next replies frame (`take_replies`)."""
        assert items[-1][0] >= items[0][0], "replies out of version order"
        cache = self.reply_cache[sender]
        row = self.row_of_member[sender]
        answered = self.table.words[row * self.row_words + self.w_answered]
        # deliveries come in version order, so the answered replies are the oldest entries
        while cache and (cache[0][0] & SEQ_MAX) < answered:
            cache.popleft()
        assert not cache or items[0][0] > cache[-1][0], "replies out of version order"
        cache.extend(items)
        assert len(cache) <= self.config.reply_cache_max, "reply cache over its bound"
        out = self.reply_out.get(sender)
        if out is None:
            self.reply_out[sender] = items
        else:
            out.extend(items)

    def take_replies(self) -> list[Send]:
        """The queued replies, one frame per sender (cut every REPLIES_FRAME_BYTES)."""
        out, self.reply_out = self.reply_out, {}
        return [
            Send(sender, frame)
            for sender, items in out.items()
            for frame in self._replies_frames(items)
        ]

    def _replies_frames(self, items: list[tuple[int, bytes]]) -> list[bytes]:
        frames: list[bytes] = []
        parts: list[bytes] = []
        count = size = 0
        pack = REPLY_ITEM.pack
        for version, result in items:
            parts.append(pack(version, len(result)))
            parts.append(result)
            count += 1
            size += len(result)
            if size >= REPLIES_FRAME_BYTES:
                frames.append(self._replies_frame(count, parts))
                parts, count, size = [], 0, 0
        if count:
            frames.append(self._replies_frame(count, parts))
        return frames

    def _replies_frame(self, count: int, parts: list[bytes]) -> bytes:
        return b"".join([FRAME.pack(FRAME_REPLIES, self.g, count, self.replica.epoch), *parts])

    def resend(self, peer: int) -> list[Send]:
        """What the data plane must send again to `peer` after its link came back."""
        out: list[Send] = []
        row = self.table.members.index(peer)
        received = row * self.row_words + self.w_received
        if peer in self.shard.members:
            words = self.table.words
            # blocks I relayed to it for messages it still lacks
            for (k, index), t in self.transfers.items():
                if index < words[received + k]:
                    continue
                data = memoryview(t.buf)
                out.extend(
                    Send(peer, self._block_frame(k, index, b, t.total, data))
                    for b, to in t.outgoing[: t.next_out]
                    if to == peer
                )
            # my own messages it lacks, whole (the sender's fallback)
            if self.my_rank >= 0:
                got = words[received + self.my_rank]
                for i, payload in sorted(self.large_outbox.items()):
                    if i >= got:
                        frame = FRAME.pack(FRAME_LARGE, self.g, i, self.epoch) + payload
                        out.append(Send(peer, frame))
        if peer in self.reply_cache:
            answered = self.table.words[row * self.row_words + self.w_answered]
            cache = self.reply_cache[peer]
            items = [(v, r) for v, r in cache if (v & SEQ_MAX) >= answered]
            out.extend(Send(peer, f) for f in self._replies_frames(items))
        return out

    def on_reply(self, member: int, version: int, result: bytes) -> None:
        self.on_replies(member, ((version, result),))

    def on_replies(self, member: int, items: Iterable[tuple[int, bytes]]) -> None:
        """Member's results for my messages (a replies frame's, or my own of a batch)."""
        epoch = self.replica.epoch
        want = self.want_reply
        replies = self.replies
        checked = False
        for version, result in items:
            if (version >> 32) != epoch or (version & SEQ_MAX) not in want:
                continue  # a late reply to something already answered, or from an old epoch
            if not checked:
                if member not in self.shard.members:
                    raise PeerProtocolError(f"reply from {member}, not a member of shard {self.g}")
                checked = True
            got = replies.get(version)
            if got is None:
                replies[version] = {member: result}
            else:
                got[member] = result

    def expire(self, now_ns: int) -> list[Any]:
        events: list[Any] = []
        while self.queue and self.queue[0].deadline_ns <= now_ns:
            w = self.queue.popleft()
            events.append(
                SubmitFailed(
                    w.ticket,
                    self.subgroup,
                    self.shard_index,
                    f"the send window stayed full for {self.config.submit_timeout_ns / 1e9:.3f} s "
                    "(a member is slow or unreachable)",
                )
            )
        return events

    def next_deadline_ns(self) -> int | None:
        return self.queue[0].deadline_ns if self.queue else None

    def set_ready(self) -> None:
        """This member holds the shard's state: it may deliver, and provide state to others."""
        self.awaiting_state = False
        name = f"s{self.g}_ready"
        w = self.table.layout[name].word
        if not self._mine(w):
            self._set_mine(w, 1)
            # every member reads it: a view-change leader plans state transfers from it
            self.replica.push_all((name,))

    # -- the end of the epoch -------------------------------------------------------------------

    def carry_over(
        self, covered: int | None = None
    ) -> tuple[list[tuple[int, bytes, bool]], list[Any]]:
        """At the end of the epoch: my messages to submit again in the next one (discarded by
        the trim, or never placed), in order, and the events answering those it delivered.
        `covered`: the trim's count, for a member that did not deliver it itself (it waited
        for the shard's state, which brings the trim's deliveries with it)."""
        delivered = max(self._mine(self.w_delivered), covered or 0)
        done: list[Any] = []
        again: list[tuple[int, bytes, bool]] = []
        own = self.pending.own(self.my_rank) if self.my_rank >= 0 and self.mode != "raw" else ()
        by_seq = {}
        for e in own:
            if e[2] != KIND_NULLS:
                by_seq[e[0] * self.n_senders + self.my_rank] = e
        for seq, ticket in list(self.awaiting.items()):
            version = self.epoch_bits | seq
            if self.mode == "raw" or seq < delivered:
                results = self.replies.pop(version, {}) if seq in self.want_reply else None
                done.append(Completed(ticket, self.subgroup, self.shard_index, version, results))
            else:
                e = by_seq[seq]
                again.append((ticket, e[4], e[5]))
        again.extend((w.ticket, w.payload, w.reply) for w in self.queue)
        self.awaiting.clear()
        self.queue.clear()
        return again, done

    # -- pushes ---------------------------------------------------------------------------------

    def flush(self, out: list[Push]) -> None:
        """Append this round's pushes: new slots first, then the counters that announce them."""
        if self.dirty_slots is not None:
            lo, hi = self.dirty_slots
            self.dirty_slots = None
            window, sb = self.window_max, self.slot_bytes
            if hi - lo >= window:
                spans = [(0, window * sb)]
            else:
                a, b = lo % window, (hi - 1) % window
                spans = (
                    [(a * sb, (b + 1) * sb)]
                    if a <= b
                    else [(a * sb, window * sb), (0, (b + 1) * sb)]
                )
            for start, end in spans:
                w = self.table.push_bytes(self.slots_name, start, end)
                out.append(Push(self.targets, w.offset, w.data, self.epoch))
        if self.dirty_counters:
            self.dirty_counters = False
            for w in self.table.push(self.counters):
                out.append(Push(self.targets, w.offset, w.data, self.epoch))


def parse_replies(count: int, body: bytes | memoryview) -> list[tuple[int, bytes]]:
    """The (version, result) pairs of a FRAME_REPLIES body; a malformed body is the peer's
    fault (PeerProtocolError)."""
    if not 1 <= count <= len(body) // REPLY_ITEM.size:
        raise PeerProtocolError(f"a replies frame claims {count} replies in {len(body)} bytes")
    out = []
    at = 0
    item = REPLY_ITEM.size
    unpack = REPLY_ITEM.unpack_from
    for _ in range(count):
        if at + item > len(body):
            raise PeerProtocolError("a replies frame ends inside a reply header")
        version, length = unpack(body, at)
        at += item
        if at + length > len(body):
            raise PeerProtocolError("a replies frame ends inside a result")
        out.append((version, bytes(body[at : at + length])))
        at += length
    if at != len(body):
        raise PeerProtocolError(f"{len(body) - at} bytes after the last reply of a replies frame")
    return out
