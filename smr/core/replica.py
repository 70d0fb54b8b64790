"""The sans-I/O replica: one member's protocol state, driven by method calls, read through `Ready`.

This module owns the replica's inputs and its single output, in the shape of etcd raft's RawNode:

    inputs   on_write(source, offset, data)   a peer's one-sided write into its row of our table
             on_data(source, payload)         a data-plane message
             on_link_up(peer)                 a (re)connected link: the peer's copy of us is stale
             tick(now_ns)                     time passed (heartbeats, timeouts, the clock)
             submit(...)                      the application multicasts a message
             on_persisted(...)                the log made entries durable
    output   ready() -> Ready                 the work to do; see smr.core.ready for the duties
             advance(ready)                   the driver did it

**Ordering duty (durable before visible):** every `Ready.persist` request with `sync=True` must be
durable before any of that `Ready`'s `writes` is pushed, because those writes may announce it.

Each input updates the local copy of the table, then evaluates the predicates to a fixed point
(`smr.core.predicates`); triggers return actions which accumulate until the driver takes them.
The replica never touches a socket, a thread, a clock, a random source or a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from smr.core import multicast
from smr.core.errors import PeerProtocolError, UsageError
from smr.core.layout import Shard, SubgroupSpec, allocate
from smr.core.multicast import FRAME, FRAME_LARGE, FRAME_REPLY, MulticastConfig, ShardStream
from smr.core.predicates import Kind, Predicate, PredicateSet
from smr.core.ready import Delivery, LogAppend, LogMeta, Push, Ready, Send
from smr.core.table import Column, Layout, Table, counter


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timing and sizing of the core; every bound is named with its unit last."""

    heartbeat_period_ns: int = 5_000_000
    predicate_rounds_max: int = 64
    multicast: MulticastConfig = field(default_factory=MulticastConfig)

    def __post_init__(self) -> None:
        assert self.heartbeat_period_ns > 0
        assert self.predicate_rounds_max >= 1


@dataclass(frozen=True, slots=True)
class FrontierReached:
    """Event: every member's heartbeat counter reached `value` (the stability pattern)."""

    value: int


HEARTBEAT_COLUMNS: tuple[Column, ...] = (
    counter("heartbeat", "raised every heartbeat period; the member is alive and ticking"),
    counter("frontier", "the minimum heartbeat this member has seen over every row"),
)


def _frontier_rises(r: Replica) -> bool:
    return r.table.column_min("heartbeat") > r.table.get(r.table.my_row, "frontier")


def _raise_frontier(r: Replica) -> list[Any]:
    value = r.table.column_min("heartbeat")
    r.table.set("frontier", value)
    r.push_all(("frontier",))
    return [FrontierReached(value)]


# The first protocol on the table: each member raises its own counter; a predicate fires at each
# member once the minimum over all rows rises. Every later protocol (stability, persistence,
# view-change acknowledgements) is this pattern over other columns.
HEARTBEAT_PREDICATES: tuple[Predicate[Replica], ...] = (
    Predicate("heartbeat_frontier", Kind.RECURRENT, _frontier_rises, _raise_frontier),
)


def _stream_predicates(st: ShardStream) -> tuple[Predicate[Replica], ...]:
    """One shard's predicates, in evaluation order: send before receive (my own messages count
    as received at once), receive before deliver, deliver before completion."""
    g = st.g
    return (
        Predicate(f"send[{g}]", Kind.RECURRENT, lambda r: st.can_send(), lambda r: st.send()),
        Predicate(
            f"receive[{g}]", Kind.RECURRENT, lambda r: st.can_receive(), lambda r: st.receive()
        ),
        Predicate(
            f"deliver[{g}]", Kind.RECURRENT, lambda r: st.can_deliver(), lambda r: st.deliver()
        ),
        Predicate(
            f"complete[{g}]", Kind.RECURRENT, lambda r: st.can_complete(), lambda r: st.complete()
        ),
    )


class Replica:
    """One member of a group in one epoch.

    `layout` declares the subgroups and shards (`SubgroupSpec`); every member computes the same
    allocation from the view. The replica runs a `ShardStream` for every shard it belongs to.
    """

    def __init__(
        self,
        me: int,
        members: Sequence[int],
        *,
        epoch: int = 1,
        layout: Sequence[SubgroupSpec] = (),
        config: CoreConfig | None = None,
        strict: bool = False,
    ):
        assert 0 <= epoch < 1 << 31
        self.config = config or CoreConfig()
        self.me = me
        self.epoch = epoch
        self.shards: tuple[Shard, ...] = allocate(members, layout)
        columns = list(HEARTBEAT_COLUMNS)
        for shard in self.shards:
            columns.extend(multicast.columns(shard, self.config.multicast))
        self.table = Table(Layout(tuple(columns)), members, me, strict=strict)
        self.members = self.table.members
        self.peers = tuple(m for m in self.members if m != me)
        self._row_of = {m: i for i, m in enumerate(self.members)}
        self.now_ns = 0
        self.hlc_ns = 0
        self._next_heartbeat_ns = 0
        self.streams: dict[int, ShardStream] = {}
        self._stream_of: dict[tuple[int, int], ShardStream] = {}
        predicates = list(HEARTBEAT_PREDICATES)
        for shard in self.shards:
            if me in shard.members:
                st = ShardStream(self, shard, self.config.multicast)
                self.streams[shard.index] = st
                self._stream_of[(shard.subgroup, shard.shard)] = st
                predicates.extend(_stream_predicates(st))
        self._predicates = PredicateSet(predicates, rounds_max=self.config.predicate_rounds_max)
        self._next_ticket = 1
        self._submitted = False
        self._persist: list[LogAppend | LogMeta] = []
        self._writes: list[Push] = []
        self._sends: list[Send] = []
        self._deliveries: list[Delivery] = []
        self._events: list[Any] = []
        self._taken: Ready | None = None

    # -- inputs ---------------------------------------------------------------------------------

    def tick(self, now_ns: int) -> None:
        assert now_ns >= self.now_ns, f"time went back from {self.now_ns} to {now_ns}"
        self.now_ns = now_ns
        if now_ns >= self._next_heartbeat_ns:
            self.table.set("heartbeat", self.table.get(self.table.my_row, "heartbeat") + 1)
            self.push_all(("heartbeat",))
            self._next_heartbeat_ns = now_ns + self.config.heartbeat_period_ns
        for st in self.streams.values():
            self._events.extend(st.expire(now_ns))
        self._evaluate()

    def on_write(self, source: int, offset: int, data: bytes) -> None:
        row = self._row_of.get(source)
        if row is None:
            raise PeerProtocolError(f"a write from {source}, who is not in the view")
        self.table.apply_write(row, offset, data)
        self._evaluate()

    def on_data(self, source: int, payload: bytes) -> None:
        """A data-plane frame: a large message's payload, or a member's result for my message."""
        if source not in self._row_of or source == self.me:
            raise PeerProtocolError(f"a data frame from {source}, who is not a peer in the view")
        if len(payload) < FRAME.size:
            raise PeerProtocolError(f"a data frame of {len(payload)} bytes from {source}")
        kind, g, number = FRAME.unpack_from(payload)
        st = self.streams.get(g)
        if st is None:
            raise PeerProtocolError(f"a data frame from {source} for shard {g}, not mine")
        body = payload[FRAME.size :]
        if kind == FRAME_LARGE:
            st.on_large(source, number, body)
        elif kind == FRAME_REPLY:
            st.on_reply(source, number, body)
        else:
            raise PeerProtocolError(f"a data frame of unknown type {kind} from {source}")
        self._evaluate()

    def on_link_up(self, peer: int) -> None:
        """A link to `peer` was (re)established: writes pushed while it was down were lost, so the
        peer's copy of our row is brought up to date with one write of the whole row."""
        assert peer in self._row_of and peer != self.me, peer
        w = self.table.push_row()
        self._writes.append(Push((peer,), w.offset, w.data))
        for st in self.streams.values():
            self._sends.extend(st.resend(peer))

    def submit(self, subgroup: int, shard: int, payload: bytes, *, reply: bool = False) -> int:
        """Multicast `payload` in a shard; returns a ticket answered by a `Completed` event (at
        stability in `ordered` mode, at the global persistence frontier in `durable` mode, once
        every member received it in `raw` mode) or a `SubmitFailed` event. With `reply`, the
        `Completed` event carries every shard member's result (see `reply`)."""
        st = self._stream(subgroup, shard)
        ticket = self._next_ticket
        if self._submitted and st.queue_full():
            self._evaluate()  # place what the window allows before calling the queue full
        st.submit(ticket, payload, reply)
        self._next_ticket += 1
        # Evaluated when the driver next asks for work, so that submissions made together share
        # one push of slots and one round of predicates (sender-side batching).
        self._submitted = True
        return ticket

    def on_persisted(self, subgroup: int, shard: int, version: int) -> None:
        """The log made every entry of this shard up to `version` durable."""
        self._stream(subgroup, shard).on_persisted(version)
        self._evaluate()

    def reply(self, delivery: Delivery, result: bytes) -> None:
        """The application's result for a delivery that asked for one; it goes to the sender."""
        assert delivery.reply, "reply() is for deliveries whose sender asked for results"
        st = self._stream(delivery.subgroup, delivery.shard)
        if delivery.sender == self.me:
            st.on_reply(self.me, delivery.version, result)
            self._evaluate()
        else:
            frame = st.reply_frame(delivery.sender, delivery.version, result)
            self._sends.append(Send(delivery.sender, frame))

    def next_tick_ns(self) -> int:
        """The time at which `tick` next has work to do (a heartbeat, a submit deadline)."""
        t = self._next_heartbeat_ns
        for st in self.streams.values():
            d = st.next_deadline_ns()
            if d is not None and d < t:
                t = d
        return t

    # -- output ---------------------------------------------------------------------------------

    def ready(self) -> Ready:
        assert self._taken is None, "advance() the previous Ready before asking for another"
        if self._submitted:
            self._evaluate()
        r = Ready(
            persist=tuple(self._persist),
            writes=tuple(self._writes),
            sends=tuple(self._sends),
            deliveries=tuple(self._deliveries),
            events=tuple(self._events),
        )
        self._taken = r
        return r

    def advance(self, ready: Ready) -> None:
        assert ready is self._taken, "advance() takes the Ready that ready() returned"
        del self._persist[: len(ready.persist)]
        del self._writes[: len(ready.writes)]
        del self._sends[: len(ready.sends)]
        del self._deliveries[: len(ready.deliveries)]
        del self._events[: len(ready.events)]
        self._taken = None

    def has_ready(self) -> bool:
        if self._submitted and self._taken is None:
            self._evaluate()
        return bool(
            self._persist or self._writes or self._sends or self._deliveries or self._events
        )

    # -- helpers for protocol modules -----------------------------------------------------------

    def push_all(self, names: Sequence[str]) -> None:
        for w in self.table.push(names):
            self._writes.append(Push(self.peers, w.offset, w.data))

    def deliver(self, deliveries: list[Delivery]) -> None:
        self._deliveries.extend(deliveries)

    def next_timestamp(self) -> int:
        """The hybrid logical clock: never behind the local clock, never behind a timestamp seen,
        strictly increasing."""
        self.hlc_ns = max(self.hlc_ns + 1, self.now_ns)
        return self.hlc_ns

    def observe_timestamp(self, ts_ns: int) -> None:
        if ts_ns > self.hlc_ns:
            self.hlc_ns = ts_ns

    def stream(self, subgroup: int, shard: int) -> ShardStream | None:
        return self._stream_of.get((subgroup, shard))

    def _stream(self, subgroup: int, shard: int) -> ShardStream:
        st = self._stream_of.get((subgroup, shard))
        if st is None:
            raise UsageError(
                f"member {self.me} is not in subgroup {subgroup} shard {shard} "
                f"(its shards: {sorted(self._stream_of)})"
            )
        return st

    def _evaluate(self) -> None:
        self._submitted = False
        for action in self._predicates.evaluate(self):
            if isinstance(action, Send):
                self._sends.append(action)
            elif isinstance(action, (LogAppend, LogMeta)):
                self._persist.append(action)
            else:
                self._events.append(action)
        for st in self.streams.values():
            if st.dirty_counters or st.dirty_slots is not None:
                st.flush(self._writes)
