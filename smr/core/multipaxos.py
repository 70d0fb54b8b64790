"""Classic Multi-Paxos as a sans-I/O protocol core (issue 17, step one; proofs/MultiPaxos.tla).

This module owns one process's three Multi-Paxos roles (proposer, acceptor, learner), the wire
messages they exchange and the one output, `PaxosReady`, that a driver executes. Nothing here does
I/O: inputs are `PaxosNode.on_message`, `tick(now_ns)`, `submit`, `campaign`, `snapshot_taken`;
the output is `ready()`, acknowledged with `advance(ready)`.

The protocol, as the spec has it:

* Ballots are `round * n + id`; a proposer uses only its own. On a leader change (an election
  timeout, staggered by id so proposers rarely duel, or `campaign()`) the proposer takes its next
  ballot, promises it at its own acceptor durably, and sends `P1a(ballot, from)` with `from` its
  commit point (the lowest slot it has not learned).
* An acceptor promises a higher ballot durably and answers `P1b` with its accepted (ballot, value)
  for every slot >= from, and its vote floor (it trimmed its votes below it under a snapshot, so
  every slot below it is chosen and it knows the values). A lower ballot gets `Nack(promise)`.
* With `P1b` from a majority the leader adopts, per slot, the value of the highest ballot
  reported, fills the gaps below the highest reported slot with no-ops, and then puts client
  commands in fresh slots. It never proposes below the highest vote floor reported: it learns
  those slots by catch-up instead (their votes may be gone everywhere in its quorum).
* Phase 2 is batched: `P2a(ballot, first, commit, values)` covers consecutive slots, all inside the
  window [commit point, commit point + window_max). An acceptor accepts at or above its promise,
  raises its promise, makes the votes durable, and answers `P2b(ballot, first, count)` per
  consecutive run it accepted.
* The leader counts the `P2b` of its own ballot (its own vote once the driver reported it durable);
  a majority chooses the slot and the leader sends `Chosen(ballot, first, count)` to the learners:
  the slots were chosen with the values the leader proposed in that ballot, so a learner whose
  vote there is of that ballot learns its vote (the value is not sent twice), and one without
  such a vote asks for it by catch-up. Learners apply in slot order. Heartbeats carry the
  leader's commit point; a learner behind it sends `CatchupRequest(from)` and gets `Commit` of
  the chosen values the peer still has, preceded by a `Snapshot` of the applied prefix when the
  peer trimmed those slots.

A value is `bytes` (a client command) or `NOOP` (`None`, a gap filled by a leader). A `True` from
`submit` means "queued at the leader", not "chosen": a leader that loses its ballot drops its queue
and its unchosen proposals, so clients retry, and the state machine must tolerate a command that
is chosen twice (deduplicate by a client id and sequence number).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from smr.core.errors import PeerProtocolError, UsageError

Value: TypeAlias = bytes | None
NOOP: Value = None
NO_BALLOT = -1

# Decoder limits: they bound what a peer can make us allocate.
VALUE_BYTES_MAX = 16 << 20  # a client command of up to 16 MiB with its headers
SNAPSHOT_BYTES_MAX = 1 << 28
BATCH_MAX = 1 << 16  # values in one P2a / Commit, votes in one P1b
SLOT_MAX = 1 << 62  # slots and ballots are below this (no int64 overflow on first + count)

# ---- wire format (little-endian) --------------------------------------------------------------

KIND_P1A = 1
KIND_P1B = 2
KIND_P2A = 3
KIND_P2B = 4
KIND_NACK = 5
KIND_HEARTBEAT = 6
KIND_CATCHUP_REQUEST = 7
KIND_COMMIT = 8
KIND_SNAPSHOT = 9
KIND_CHOSEN = 10

_KIND = struct.Struct("<B")
_P1A = struct.Struct("<qq")  # ballot, from slot
_P1B = struct.Struct("<qqI")  # ballot, vote floor, number of votes; then per vote:
_VOTE = struct.Struct("<qq")  # slot, vote ballot; then the value
_P2A = struct.Struct("<qqqI")  # ballot, first slot, leader's commit point, count; then values
_P2B = struct.Struct("<qqIq")  # ballot, first slot, count, acceptor's commit point
_NACK = struct.Struct("<q")  # the acceptor's promise
_HEARTBEAT = struct.Struct("<qq")  # ballot, leader's commit point
_CATCHUP_REQUEST = struct.Struct("<q")  # first slot wanted
_COMMIT = struct.Struct("<qI")  # first slot, count; then values
_SNAPSHOT = struct.Struct("<qI")  # slots below this are in the state, state length; then bytes
_CHOSEN = struct.Struct("<qqI")  # ballot, first slot, count
_VALUE_LEN = struct.Struct("<i")  # -1: a no-op; else that many bytes follow


@dataclass(frozen=True, slots=True)
class P1a:
    ballot: int
    from_slot: int


@dataclass(frozen=True, slots=True)
class P1b:
    ballot: int
    vote_floor: int
    votes: tuple[tuple[int, int, Value], ...]  # (slot, vote ballot, value), slots increasing


@dataclass(frozen=True, slots=True)
class P2a:
    ballot: int
    first_slot: int
    commit: int
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class P2b:
    ballot: int
    first_slot: int
    count: int
    commit: int


@dataclass(frozen=True, slots=True)
class Nack:
    promised: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    ballot: int
    commit: int


@dataclass(frozen=True, slots=True)
class CatchupRequest:
    from_slot: int


@dataclass(frozen=True, slots=True)
class Commit:
    first_slot: int
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    slot: int
    state: bytes


@dataclass(frozen=True, slots=True)
class Chosen:
    """Slots `first_slot` .. `first_slot + count - 1` were chosen in `ballot`: their values are
    the ones its leader proposed there (a commit by reference)."""

    ballot: int
    first_slot: int
    count: int


Message: TypeAlias = (
    P1a | P1b | P2a | P2b | Nack | Heartbeat | CatchupRequest | Commit | Snapshot | Chosen
)


def _encode_value(out: list[bytes], value: Value) -> None:
    if value is None:
        out.append(_VALUE_LEN.pack(-1))
    else:
        assert len(value) <= VALUE_BYTES_MAX, "a value over VALUE_BYTES_MAX"
        out.append(_VALUE_LEN.pack(len(value)))
        out.append(value)


def encode(msg: Message) -> bytes:
    """The bytes of one message: a kind byte, a fixed header, then the variable part."""
    out: list[bytes] = []
    if isinstance(msg, P1a):
        out += [_KIND.pack(KIND_P1A), _P1A.pack(msg.ballot, msg.from_slot)]
    elif isinstance(msg, P1b):
        assert len(msg.votes) <= BATCH_MAX
        out += [_KIND.pack(KIND_P1B), _P1B.pack(msg.ballot, msg.vote_floor, len(msg.votes))]
        for slot, vote_ballot, value in msg.votes:
            out.append(_VOTE.pack(slot, vote_ballot))
            _encode_value(out, value)
    elif isinstance(msg, P2a):
        assert 0 < len(msg.values) <= BATCH_MAX
        out += [
            _KIND.pack(KIND_P2A),
            _P2A.pack(msg.ballot, msg.first_slot, msg.commit, len(msg.values)),
        ]
        for value in msg.values:
            _encode_value(out, value)
    elif isinstance(msg, P2b):
        out += [_KIND.pack(KIND_P2B), _P2B.pack(msg.ballot, msg.first_slot, msg.count, msg.commit)]
    elif isinstance(msg, Nack):
        out += [_KIND.pack(KIND_NACK), _NACK.pack(msg.promised)]
    elif isinstance(msg, Heartbeat):
        out += [_KIND.pack(KIND_HEARTBEAT), _HEARTBEAT.pack(msg.ballot, msg.commit)]
    elif isinstance(msg, CatchupRequest):
        out += [_KIND.pack(KIND_CATCHUP_REQUEST), _CATCHUP_REQUEST.pack(msg.from_slot)]
    elif isinstance(msg, Commit):
        assert 0 < len(msg.values) <= BATCH_MAX
        out += [_KIND.pack(KIND_COMMIT), _COMMIT.pack(msg.first_slot, len(msg.values))]
        for value in msg.values:
            _encode_value(out, value)
    elif isinstance(msg, Chosen):
        assert 0 < msg.count <= BATCH_MAX
        out += [_KIND.pack(KIND_CHOSEN), _CHOSEN.pack(msg.ballot, msg.first_slot, msg.count)]
    else:
        assert isinstance(msg, Snapshot)
        assert len(msg.state) <= SNAPSHOT_BYTES_MAX
        out += [_KIND.pack(KIND_SNAPSHOT), _SNAPSHOT.pack(msg.slot, len(msg.state)), msg.state]
    return b"".join(out)


class _Reader:
    """Reads one message front to back; every shortfall is a PeerProtocolError."""

    __slots__ = ("data", "i")

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.i = 0

    def take(self, st: struct.Struct) -> tuple[int, ...]:
        if self.i + st.size > len(self.data):
            raise PeerProtocolError("a truncated multipaxos message")
        out = st.unpack_from(self.data, self.i)
        self.i += st.size
        return out

    def raw(self, n: int) -> bytes:
        if n < 0 or self.i + n > len(self.data):
            raise PeerProtocolError("a truncated multipaxos message")
        out = bytes(self.data[self.i : self.i + n])
        self.i += n
        return out

    def value(self) -> Value:
        (n,) = self.take(_VALUE_LEN)
        if n == -1:
            return NOOP
        if n < 0 or n > VALUE_BYTES_MAX:
            raise PeerProtocolError(f"a multipaxos value of length {n}")
        return self.raw(n)

    def values(self, count: int) -> tuple[Value, ...]:
        if count < 1 or count > BATCH_MAX:
            raise PeerProtocolError(f"a multipaxos batch of {count} values")
        return tuple(self.value() for _ in range(count))

    def end(self) -> None:
        if self.i != len(self.data):
            raise PeerProtocolError(
                f"{len(self.data) - self.i} trailing bytes in a multipaxos message"
            )


def _ranged(*numbers: int) -> None:
    for x in numbers:
        if not 0 <= x < SLOT_MAX:
            raise PeerProtocolError(f"a multipaxos slot or ballot out of range: {x}")


def decode(data: bytes) -> Message:
    """One message from its bytes; anything malformed, truncated, oversized or out of range
    raises PeerProtocolError (and nothing else)."""
    if len(data) > SNAPSHOT_BYTES_MAX + 64:
        raise PeerProtocolError(f"a multipaxos message of {len(data)} bytes")
    r = _Reader(data)
    (kind,) = r.take(_KIND)
    msg: Message
    if kind == KIND_P1A:
        ballot, from_slot = r.take(_P1A)
        _ranged(ballot, from_slot)
        msg = P1a(ballot, from_slot)
    elif kind == KIND_P1B:
        ballot, floor, count = r.take(_P1B)
        _ranged(ballot, floor)
        if count > BATCH_MAX:
            raise PeerProtocolError(f"a multipaxos 1b of {count} votes")
        votes = []
        last = -1
        for _ in range(count):
            slot, vote_ballot = r.take(_VOTE)
            _ranged(slot, vote_ballot)
            if slot <= last or vote_ballot > ballot:
                raise PeerProtocolError(
                    "a multipaxos 1b with votes out of order or above its ballot"
                )
            last = slot
            votes.append((slot, vote_ballot, r.value()))
        msg = P1b(ballot, floor, tuple(votes))
    elif kind == KIND_P2A:
        ballot, first, commit, count = r.take(_P2A)
        _ranged(ballot, first, commit, first + count)
        msg = P2a(ballot, first, commit, r.values(count))
    elif kind == KIND_P2B:
        ballot, first, count, commit = r.take(_P2B)
        _ranged(ballot, first, commit, first + count)
        if count < 1 or count > BATCH_MAX:
            raise PeerProtocolError(f"a multipaxos 2b of {count} slots")
        msg = P2b(ballot, first, count, commit)
    elif kind == KIND_NACK:
        (promised,) = r.take(_NACK)
        _ranged(promised)
        msg = Nack(promised)
    elif kind == KIND_HEARTBEAT:
        ballot, commit = r.take(_HEARTBEAT)
        _ranged(ballot, commit)
        msg = Heartbeat(ballot, commit)
    elif kind == KIND_CATCHUP_REQUEST:
        (from_slot,) = r.take(_CATCHUP_REQUEST)
        _ranged(from_slot)
        msg = CatchupRequest(from_slot)
    elif kind == KIND_COMMIT:
        first, count = r.take(_COMMIT)
        _ranged(first, first + count)
        msg = Commit(first, r.values(count))
    elif kind == KIND_CHOSEN:
        ballot, first, count = r.take(_CHOSEN)
        _ranged(ballot, first, first + count)
        if count < 1 or count > BATCH_MAX:
            raise PeerProtocolError(f"a multipaxos chosen run of {count} slots")
        msg = Chosen(ballot, first, count)
    elif kind == KIND_SNAPSHOT:
        slot, n = r.take(_SNAPSHOT)
        _ranged(slot)
        if n > SNAPSHOT_BYTES_MAX:
            raise PeerProtocolError(f"a multipaxos snapshot of {n} bytes")
        msg = Snapshot(slot, r.raw(n))
    else:
        raise PeerProtocolError(f"an unknown multipaxos message kind {kind}")
    r.end()
    return msg


# ---- durable acceptor records and the output ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromiseRecord:
    """The acceptor promised `ballot`: it accepts nothing lower, ever (durable)."""

    ballot: int


@dataclass(frozen=True, slots=True)
class AcceptRecord:
    """The acceptor accepted `value` at `slot` in `ballot` (durable; replaces an older vote)."""

    ballot: int
    slot: int
    value: Value


@dataclass(frozen=True, slots=True)
class TrimRecord:
    """Drop the votes below `slot`: a durable snapshot of the applied prefix covers them."""

    slot: int


Record: TypeAlias = PromiseRecord | AcceptRecord | TrimRecord


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply `value` (a command, or NOOP: skip) at `slot`; slots come in order, none skipped."""

    slot: int
    value: Value


@dataclass(frozen=True, slots=True)
class Restore:
    """Replace the state machine by `state`, the applied prefix of every slot below `slot`."""

    slot: int
    state: bytes


@dataclass(slots=True)
class PaxosReady:
    """The work of one step, for the driver, in this order:

    * `persist`: acceptor records, in list order, durable **BEFORE** any of `sends` goes out (a
      1b or 2b announces a promise or a vote; a restarted acceptor must still hold it).
    * `sends`: (peer, bytes), in list order per peer, after `persist` is durable.
    * `apply`: `Apply` and `Restore` in list order, against the state machine; free relative to
      `sends` (what is applied is chosen, it depends on no local persistence).
    * `snapshot_wanted`: the node retains more chosen values than `chosen_retained_max` (or more
      of their bytes than `chosen_retained_bytes_max`); after
      applying, snapshot the state machine at this slot, make it durable, then call
      `PaxosNode.snapshot_taken(slot, state)`.
    * `misbehaved`: (peer, reason) of inputs dropped as malformed, for the logs.

    Then `PaxosNode.advance(ready)`: only then is the node's own vote counted.
    """

    persist: list[Record] = field(default_factory=list)
    sends: list[tuple[int, bytes]] = field(default_factory=list)
    apply: list[Apply | Restore] = field(default_factory=list)
    snapshot_wanted: int | None = None
    misbehaved: list[tuple[int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.persist or self.sends or self.apply or self.misbehaved) or (
            self.snapshot_wanted is not None
        )


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a restarted process brings back: its acceptor's durable records (replayed: the
    highest promise, the latest vote per slot, the trim point) and its applied prefix (the state
    machine is at `apply_next`, `snapshot` is its state there, served to laggards)."""

    promised: int = NO_BALLOT
    votes: Mapping[int, tuple[int, Value]] = field(default_factory=dict)
    vote_floor: int = 0
    apply_next: int = 0
    snapshot: bytes = b""


@dataclass(frozen=True, slots=True)
class PaxosConfig:
    n: int
    window_max: int = 16  # slots a leader has proposed and not yet learned
    submit_queue_max: int = 1024  # commands queued at the leader, waiting for a slot
    chosen_retained_max: int = 1024  # applied values kept for catch-up before a snapshot is wanted
    chosen_retained_bytes_max: int = 64 << 20  # ... and their bytes (large values: fewer kept)
    learned_ahead_max: int = 4096  # chosen values kept above a gap, waiting to be applied
    votes_ahead_max: int = 4096  # an acceptor votes only below its commit point + this
    catchup_batch_max: int = 256  # values in one catch-up Commit
    election_timeout_ns: int = 200_000_000
    election_stagger_ns: int = 100_000_000  # added per id, so timeouts rarely coincide
    heartbeat_ns: int = 40_000_000  # heartbeats, retransmissions, catch-up requests
    check_scans: bool = True  # `_check` scans every vote and chosen value after each input
    # Bytes, not only counts: a leader stops filling its window once the values proposed and
    # not yet learned hold `window_bytes_max` (one at least), and a 2a or a catch-up Commit holds
    # values of at most `message_bytes_max` (one at least), under a transport's frame limit.
    window_bytes_max: int = 32 << 20
    message_bytes_max: int = 8 << 20

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UsageError("a multipaxos group needs at least one process")
        if not 0 < self.window_max <= min(self.votes_ahead_max, self.learned_ahead_max, BATCH_MAX):
            raise UsageError(
                "window_max must be positive and at most votes_ahead_max, learned_ahead_max"
            )
        if (
            min(
                self.submit_queue_max,
                self.chosen_retained_max,
                self.catchup_batch_max,
                self.chosen_retained_bytes_max,
                self.window_bytes_max,
                self.message_bytes_max,
            )
            < 1
        ):
            raise UsageError("every multipaxos bound must be positive")
        if (
            self.catchup_batch_max > BATCH_MAX
            or self.chosen_retained_max + self.votes_ahead_max > BATCH_MAX
        ):
            raise UsageError(
                f"catch-up batches and the votes one 1b may carry are at most {BATCH_MAX}"
            )


# ---- the node --------------------------------------------------------------------------------


class PaxosNode:
    """One process: acceptor, learner and proposer of classic Multi-Paxos. See the module doc.

    The driver loop: give an input, then while `ready()` is non-empty execute it (persist, send,
    apply) and call `advance(ready)`. No input may come between `ready()` and `advance()`.
    """

    def __init__(self, node_id: int, config: PaxosConfig, recovered: Recovered | None = None):
        if not 0 <= node_id < config.n:
            raise UsageError(f"node id {node_id} is not in 0..{config.n - 1}")
        rec = recovered or Recovered()
        self.id = node_id
        self.config = config
        # Acceptor: mirrors the durable records exactly.
        vote_ballots = [b for b, _ in rec.votes.values()]
        self.promised = max([rec.promised, *vote_ballots])
        self.votes: dict[int, tuple[int, Value]] = {
            s: v for s, v in rec.votes.items() if s >= rec.vote_floor
        }
        self.vote_floor = rec.vote_floor
        # Learner: every slot below apply_next is applied; chosen holds [snapshot_slot, ...).
        self.apply_next = rec.apply_next
        self.snapshot_slot = rec.apply_next
        self.snapshot_state = rec.snapshot
        self.chosen: dict[int, Value] = {}
        self._retained_bytes = 0  # bytes of the applied values kept (below apply_next)
        self._snapshot_asked = False
        # Proposer (volatile: lost on a crash; the durable promise keeps ballots unique).
        self.ballot = NO_BALLOT
        self.leading = False
        self.ballot_seen_max = self.promised
        self._p1_from = 0
        self._p1_reports: dict[int, P1b] = {}
        self._plan: dict[int, Value] = {}
        self._plan_top = -1  # no-ops fill the slots up to here that the plan does not name
        self._catchup_floor = 0  # the highest vote floor phase 1 reported, and who reported it
        self._catchup_holder = node_id
        self._next_slot = 0
        self.proposed: dict[int, Value] = {}  # slot -> value sent in 2a in this ballot, unlearned
        self._proposed_bytes = 0  # of the values in `proposed`
        self._acks: dict[int, set[int]] = {}
        self.queue: deque[bytes] = deque()
        # Time, as the driver last told it.
        self.now_ns = 0
        self._heard_ns = 0
        self._sent_ns = 0
        self._catchup_ns: int | None = None
        self._pushed_ns: int | None = None
        self.leader_hint: int | None = None
        self._out = PaxosReady()
        self._in_flight = False
        self._check()

    # ---- inputs ------------------------------------------------------------------------------

    def on_message(self, source: int, payload: bytes) -> None:
        assert not self._in_flight, "an input between ready() and advance()"
        if not 0 <= source < self.config.n or source == self.id:
            raise UsageError(f"a message from {source}, not a peer of {self.id}")
        try:
            msg = decode(payload)
        except PeerProtocolError as e:
            self._out.misbehaved.append((source, str(e)))
            return
        if isinstance(msg, P1a):
            self._on_p1a(source, msg)
        elif isinstance(msg, P1b):
            self._on_p1b(source, msg)
        elif isinstance(msg, P2a):
            self._on_p2a(source, msg)
        elif isinstance(msg, P2b):
            self._on_p2b(source, msg)
        elif isinstance(msg, Nack):
            self._see_ballot(msg.promised)
        elif isinstance(msg, Heartbeat):
            self._on_heartbeat(source, msg)
        elif isinstance(msg, CatchupRequest):
            self._on_catchup_request(source, msg)
        elif isinstance(msg, Commit):
            for i, value in enumerate(msg.values):
                self._learn(msg.first_slot + i, value)
        elif isinstance(msg, Chosen):
            self._on_chosen(source, msg)
        else:
            self._on_snapshot(msg)
        self._propose()
        self._check()

    def tick(self, now_ns: int) -> None:
        """Time passed. The leader sends heartbeats and retransmits; a campaigner retransmits
        its 1a; anyone else who heard no leader for its (staggered) timeout campaigns."""
        assert not self._in_flight, "an input between ready() and advance()"
        assert now_ns >= self.now_ns, "time went backwards"
        self.now_ns = now_ns
        cfg = self.config
        if self.ballot != NO_BALLOT:
            if now_ns - self._sent_ns >= cfg.heartbeat_ns:
                self._sent_ns = now_ns
                if self.leading:
                    self._broadcast(Heartbeat(self.ballot, self.apply_next))
                    self._send_2a(sorted(self.proposed))
                    if self.apply_next < self._catchup_floor:
                        # The quorum trimmed slots we lack: until we have them, the window
                        # may not reach the slots we may propose in.
                        self._ask_catchup(self._catchup_holder)
                else:
                    self._broadcast(P1a(self.ballot, self._p1_from))
        elif now_ns - self._heard_ns >= cfg.election_timeout_ns + self.id * cfg.election_stagger_ns:
            self.campaign()
        self._propose()
        self._check()

    def submit(self, command: bytes) -> bool:
        """Queue a client command at the leader. False when this process is not the leader (no
        forwarding: `leader_hint` names the leader last heard) or its queue is full."""
        assert not self._in_flight, "an input between ready() and advance()"
        if len(command) > VALUE_BYTES_MAX:
            raise UsageError(f"a command of {len(command)} bytes; at most {VALUE_BYTES_MAX}")
        if not self.leading or len(self.queue) >= self.config.submit_queue_max:
            return False
        self.queue.append(command)
        self._propose()
        self._check()
        return True

    def leader_heard(self, within_ns: int) -> int | None:
        """The leader this process heard from (its own id while it leads) within `within_ns`
        of its last tick; None when it knows of none that recent (where a client should wait
        for an election rather than be sent to a leader that may be gone)."""
        if self.leading:
            return self.id
        if self.leader_hint is None or self.now_ns - self._heard_ns > within_ns:
            return None
        return self.leader_hint

    def campaign(self) -> None:
        """Start phase 1 with this process's next ballot (a timeout, or a forced election)."""
        assert not self._in_flight, "an input between ready() and advance()"
        n = self.config.n
        top = max(self.promised, self.ballot_seen_max, self.ballot)
        ballot = top // n * n + self.id  # the smallest own ballot above top (the spec's)
        if ballot <= top:
            ballot += n
        assert ballot > top and ballot % n == self.id
        self._reset_proposer()
        self.ballot = ballot
        self.ballot_seen_max = ballot
        # Durable before the 1a: a restarted proposer must never take this ballot again.
        self.promised = ballot
        self._out.persist.append(PromiseRecord(ballot))
        self._p1_from = self.apply_next
        self._sent_ns = self.now_ns
        self._heard_ns = self.now_ns
        self._p1_reports[self.id] = self._report(ballot, self._p1_from)
        self._broadcast(P1a(ballot, self._p1_from))
        self._maybe_lead()
        self._propose()
        self._check()

    def snapshot_taken(self, slot: int, state: bytes) -> None:
        """The driver made a snapshot of the state machine at `slot` durable: drop the chosen
        values and the votes below it."""
        assert not self._in_flight, "an input between ready() and advance()"
        if not self.snapshot_slot <= slot <= self.apply_next:
            raise UsageError(
                f"a snapshot at {slot}, outside {self.snapshot_slot}..{self.apply_next}"
            )
        self._snapshot_asked = False
        self.snapshot_slot = slot
        self.snapshot_state = state
        for s in [s for s in self.chosen if s < slot]:
            del self.chosen[s]
        self._retained_bytes = self._bytes_applied_kept()
        if slot > self.vote_floor:
            self.vote_floor = slot
            for s in [s for s in self.votes if s < slot]:
                del self.votes[s]
            self._out.persist.append(TrimRecord(slot))
        self._check()

    # ---- output ------------------------------------------------------------------------------

    def ready(self) -> PaxosReady:
        assert not self._in_flight, "ready() twice without advance()"
        out, self._out = self._out, PaxosReady()
        self._in_flight = True
        return out

    def advance(self, ready: PaxosReady) -> None:
        """The driver did all of `ready`: its votes are durable, so the leader counts its own."""
        assert self._in_flight, "advance() without ready()"
        self._in_flight = False
        chosen = [
            rec.slot
            for rec in ready.persist
            if isinstance(rec, AcceptRecord)
            and self.leading
            and rec.ballot == self.ballot
            and self._ack(self.id, rec.slot)
        ]
        self._announce(sorted(chosen))
        self._propose()
        self._check()

    # ---- acceptor ----------------------------------------------------------------------------

    def _report(self, ballot: int, from_slot: int) -> P1b:
        votes = tuple((s, b, v) for s, (b, v) in sorted(self.votes.items()) if s >= from_slot)
        return P1b(ballot, self.vote_floor, votes)

    def _on_p1a(self, source: int, msg: P1a) -> None:
        if msg.ballot < self.promised:
            self._send(source, Nack(self.promised))
            return
        self._see_ballot(msg.ballot)
        if msg.ballot > self.promised:
            self.promised = msg.ballot
            self._out.persist.append(PromiseRecord(msg.ballot))
            # Give the campaigner its chance before we time out ourselves.
            self._heard_ns = self.now_ns
        # Equal: a retransmitted 1a; the promise is already durable, answer again.
        self._send(source, self._report(msg.ballot, msg.from_slot))

    def _on_p2a(self, source: int, msg: P2a) -> None:
        if msg.ballot < self.promised:
            self._send(source, Nack(self.promised))
            return
        self._see_ballot(msg.ballot)
        self._heard_from_leader(source)
        if msg.ballot > self.promised:
            self.promised = msg.ballot
            self._out.persist.append(PromiseRecord(msg.ballot))
        limit = self.apply_next + self.config.votes_ahead_max
        run_first, run_count = -1, 0
        for i, value in enumerate(msg.values):
            slot = msg.first_slot + i
            if self.vote_floor <= slot < limit:
                vote = (msg.ballot, value)
                if self.votes.get(slot) != vote:  # else a duplicate: already durable
                    self.votes[slot] = vote
                    self._out.persist.append(AcceptRecord(msg.ballot, slot, value))
                if run_count == 0:
                    run_first = slot
                run_count += 1
            elif run_count:
                self._send(source, P2b(msg.ballot, run_first, run_count, self.apply_next))
                run_count = 0
        if run_count:
            self._send(source, P2b(msg.ballot, run_first, run_count, self.apply_next))
        self._behind(source, msg.commit)

    # ---- proposer ----------------------------------------------------------------------------

    def is_quorum(self, count: int) -> bool:
        """A majority: any two intersect (the one place the quorum is decided)."""
        return 2 * count > self.config.n

    def _reset_proposer(self) -> None:
        self.ballot = NO_BALLOT
        self.leading = False
        self._p1_reports.clear()
        self._plan.clear()
        self._plan_top = -1
        self.proposed.clear()
        self._proposed_bytes = 0
        self._acks.clear()
        self.queue.clear()

    def _see_ballot(self, ballot: int) -> None:
        """A higher ballot exists: a proposer with a lower one steps down (and waits a timeout)."""
        self.ballot_seen_max = max(self.ballot_seen_max, ballot)
        if self.ballot != NO_BALLOT and ballot > self.ballot:
            self._reset_proposer()
            self._heard_ns = self.now_ns

    def _on_p1b(self, source: int, msg: P1b) -> None:
        self._see_ballot(msg.ballot)
        if msg.ballot != self.ballot or self.leading:
            return
        self._p1_reports[source] = msg
        self._maybe_lead()

    def _maybe_lead(self) -> None:
        if self.leading or not self.is_quorum(len(self._p1_reports)):
            return
        reports = self._p1_reports
        # Below the highest floor reported the votes may be trimmed everywhere in the quorum:
        # those slots are chosen, and are learned by catch-up, never proposed.
        floor, holder = max((r.vote_floor, a) for a, r in reports.items())
        start = max(self._p1_from, floor)
        best: dict[int, tuple[int, Value]] = {}
        for r in reports.values():
            for slot, vote_ballot, value in r.votes:
                if slot >= start and (slot not in best or vote_ballot > best[slot][0]):
                    best[slot] = (vote_ballot, value)
        self._plan = {s: v for s, (_, v) in best.items()}
        self._plan_top = max(best, default=start - 1)
        self._next_slot = start
        self.leading = True
        self.leader_hint = self.id
        reports.clear()
        self._catchup_floor, self._catchup_holder = floor, holder
        if floor > self.apply_next:
            self._catchup_ns = None
            self._ask_catchup(holder)
        self._broadcast(Heartbeat(self.ballot, self.apply_next))

    def _propose(self) -> None:
        """Fill the window with the plan's values, then queued commands; one 2a per run."""
        if not self.leading:
            return
        assert self.promised == self.ballot
        limit = self.apply_next + self.config.window_max
        slot = max(self._next_slot, self.apply_next)
        for stale in [s for s in self._plan if s < slot]:
            del self._plan[stale]  # learned meanwhile (catch-up): nothing left to impose
        new: list[int] = []
        while slot < limit:
            if slot in self.chosen or slot in self.proposed:
                slot += 1
                continue
            if slot in self._plan:
                value = self._plan.pop(slot)
            elif slot <= self._plan_top:
                value = NOOP
            elif self.queue:
                size = len(self.queue[0])
                if self.proposed and self._proposed_bytes + size > self.config.window_bytes_max:
                    break  # the window is full of bytes; a plan's values are never held back
                value = self.queue.popleft()
            else:
                break
            assert slot >= self.vote_floor
            self.proposed[slot] = value
            self._proposed_bytes += len(value) if value else 0
            self._acks[slot] = set()
            # The leader's own acceptor votes first; counted once durable (advance).
            self.votes[slot] = (self.ballot, value)
            self._out.persist.append(AcceptRecord(self.ballot, slot, value))
            new.append(slot)
            slot += 1
        self._next_slot = slot
        self._send_2a(new)

    def _send_2a(self, slots: list[int]) -> None:
        for first, values in self._runs(slots, self.proposed):
            for at, chunk in self._chunks(first, values):
                self._broadcast(P2a(self.ballot, at, self.apply_next, chunk))

    def _chunks(
        self, first: int, values: tuple[Value, ...]
    ) -> Iterable[tuple[int, tuple[Value, ...]]]:
        """A run of values cut into messages of at most `message_bytes_max` of values (one value
        at least in each)."""
        limit = self.config.message_bytes_max
        start, size = 0, 0
        for i, v in enumerate(values):
            n = len(v) if v else 0
            if i > start and size + n > limit:
                yield first + start, values[start:i]
                start, size = i, 0
            size += n
        yield first + start, values[start:]

    def _on_p2b(self, source: int, msg: P2b) -> None:
        if msg.ballot != self.ballot or not self.leading:
            return
        chosen = [
            s for s in range(msg.first_slot, msg.first_slot + msg.count) if self._ack(source, s)
        ]
        self._announce(chosen)
        if msg.commit > self.apply_next:
            self._ask_catchup(source)

    def _ack(self, acceptor: int, slot: int) -> bool:
        """Count `acceptor`'s vote for `slot` in my ballot; True when that made it chosen."""
        acks = self._acks.get(slot)
        if acks is None:
            return False
        acks.add(acceptor)
        if not self.is_quorum(len(acks)):
            return False
        self._learn(slot, self.proposed[slot])
        return True

    def _announce(self, slots: list[int]) -> None:
        """Tell the learners the `slots` (increasing) were chosen in my ballot, by reference."""
        i = 0
        while i < len(slots):
            j = i + 1
            while j < len(slots) and slots[j] == slots[j - 1] + 1 and j - i < BATCH_MAX:
                j += 1
            self._broadcast(Chosen(self.ballot, slots[i], j - i))
            i = j

    def _on_chosen(self, source: int, msg: Chosen) -> None:
        """Learn the chosen slots whose vote here is of the ballot that chose them: the value
        a leader proposes at a slot in its ballot is one, so that vote holds it. A slot whose vote
        is gone, absent or of another ballot comes by catch-up instead."""
        missing = False
        for slot in range(msg.first_slot, msg.first_slot + msg.count):
            if slot < self.apply_next or slot in self.chosen:
                continue
            vote = self.votes.get(slot)
            if vote is not None and vote[0] == msg.ballot:
                self._learn(slot, vote[1])
            else:
                missing = True
        if missing:
            self._ask_catchup(source)

    # ---- learner -----------------------------------------------------------------------------

    def _learn(self, slot: int, value: Value) -> None:
        if slot < self.apply_next or slot in self.chosen:
            return
        if slot >= self.apply_next + self.config.learned_ahead_max:
            return  # beyond what we keep; catch-up brings it again
        self.chosen[slot] = value
        was = self.proposed.pop(slot, None)
        if was:
            self._proposed_bytes -= len(was)
        self._acks.pop(slot, None)
        self._apply_chosen()

    def _apply_chosen(self) -> None:
        while self.apply_next in self.chosen:
            value = self.chosen[self.apply_next]
            self._out.apply.append(Apply(self.apply_next, value))
            self.apply_next += 1
            if value:
                self._retained_bytes += len(value)
        retained = self.apply_next - self.snapshot_slot
        # Ask once per snapshot; a request not yet handed out moves up with what we apply (the
        # driver snapshots after applying all of this Ready).
        unasked = not self._snapshot_asked or self._out.snapshot_wanted is not None
        if unasked and (
            retained > self.config.chosen_retained_max
            or self._retained_bytes > self.config.chosen_retained_bytes_max
        ):
            self._snapshot_asked = True
            self._out.snapshot_wanted = self.apply_next

    def _on_heartbeat(self, source: int, msg: Heartbeat) -> None:
        if msg.ballot < self.promised:
            self._send(source, Nack(self.promised))
            return
        self._see_ballot(msg.ballot)
        self._heard_from_leader(source)
        self._behind(source, msg.commit)

    def _behind(self, leader: int, commit: int) -> None:
        """Compare with the leader's commit point: ask it for what we lack, or give it what it
        lacks (it cannot fill its window with slots our votes no longer cover)."""
        if commit > self.apply_next:
            self._ask_catchup(leader)
        elif commit < self.apply_next and (
            self._pushed_ns is None or self.now_ns - self._pushed_ns >= self.config.heartbeat_ns
        ):
            self._pushed_ns = self.now_ns
            self._on_catchup_request(leader, CatchupRequest(commit))

    def _heard_from_leader(self, source: int) -> None:
        self._heard_ns = self.now_ns
        self.leader_hint = source

    def _ask_catchup(self, source: int) -> None:
        # At most one request per heartbeat interval: the answer may be large.
        if (
            self._catchup_ns is not None
            and self.now_ns - self._catchup_ns < self.config.heartbeat_ns
        ):
            return
        self._catchup_ns = self.now_ns
        self._send(source, CatchupRequest(self.apply_next))

    def _on_catchup_request(self, source: int, msg: CatchupRequest) -> None:
        start = msg.from_slot
        if start < self.snapshot_slot:
            self._send(source, Snapshot(self.snapshot_slot, self.snapshot_state))
            start = self.snapshot_slot
        values: list[Value] = []
        size = 0
        while start + len(values) in self.chosen and len(values) < self.config.catchup_batch_max:
            value = self.chosen[start + len(values)]
            n = len(value) if value else 0
            if values and size + n > self.config.message_bytes_max:
                break  # the learner asks again from where this ends
            values.append(value)
            size += n
        if values:
            self._send(source, Commit(start, tuple(values)))

    def _on_snapshot(self, msg: Snapshot) -> None:
        if msg.slot <= self.apply_next:
            return
        self._out.apply.append(Restore(msg.slot, msg.state))
        self.apply_next = msg.slot
        self.snapshot_slot = msg.slot
        self.snapshot_state = msg.state
        self._snapshot_asked = False
        for table in (self.chosen, self.proposed, self._acks):
            for s in [s for s in table if s < msg.slot]:
                del table[s]
        self._proposed_bytes = sum(len(v) for v in self.proposed.values() if v)
        self._retained_bytes = 0  # nothing below the restored slot is kept
        if self._out.snapshot_wanted is not None and self._out.snapshot_wanted < msg.slot:
            self._out.snapshot_wanted = None  # the restored state is this process's snapshot
        self._apply_chosen()

    # ---- plumbing ----------------------------------------------------------------------------

    def _bytes_applied_kept(self) -> int:
        return sum(len(v) for s, v in self.chosen.items() if s < self.apply_next and v)

    @staticmethod
    def _runs(
        slots: list[int], values: Mapping[int, Value]
    ) -> Iterable[tuple[int, tuple[Value, ...]]]:
        """Consecutive runs of `slots` (sorted) with their values."""
        i = 0
        while i < len(slots):
            j = i + 1
            while j < len(slots) and slots[j] == slots[j - 1] + 1:
                j += 1
            yield slots[i], tuple(values[s] for s in slots[i:j])
            i = j

    def _send(self, peer: int, msg: Message) -> None:
        self._out.sends.append((peer, encode(msg)))

    def _broadcast(self, msg: Message) -> None:
        data = encode(msg)
        self._out.sends.extend((p, data) for p in range(self.config.n) if p != self.id)

    def _check(self) -> None:
        """Invariants of one process after every input: the O(1) ones always, the ones that
        scan every vote, chosen value and proposal with `check_scans` (tests; a running
        member's inputs are thousands a second, and the scans cover thousands of slots)."""
        cfg = self.config
        assert self.vote_floor <= self.apply_next and self.snapshot_slot <= self.apply_next
        assert self.apply_next not in self.chosen
        assert len(self.queue) <= cfg.submit_queue_max
        assert len(self.proposed) <= cfg.window_max
        assert len(self.proposed) == len(self._acks)
        if cfg.check_scans:
            assert all(b <= self.promised for b, _ in self.votes.values())
            assert all(s >= self.vote_floor for s in self.votes)
            assert all(
                self.snapshot_slot <= s < self.apply_next + cfg.learned_ahead_max
                for s in self.chosen
            )
            assert all(
                self.apply_next <= s < self.apply_next + cfg.window_max for s in self.proposed
            )
            assert self.proposed.keys() == self._acks.keys()
            assert self._proposed_bytes == sum(len(v) for v in self.proposed.values() if v)
        if self.ballot != NO_BALLOT:
            assert self.ballot % cfg.n == self.id and self.ballot == self.promised
        assert not self.leading or self.ballot != NO_BALLOT
