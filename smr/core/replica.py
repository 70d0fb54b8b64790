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
from dataclasses import dataclass
from typing import Any

from smr.core.predicates import Kind, Predicate, PredicateSet
from smr.core.ready import Push, Ready
from smr.core.table import Column, Layout, Table, counter


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timing and sizing of the core; every bound is named with its unit last."""

    heartbeat_period_ns: int = 5_000_000
    predicate_rounds_max: int = 32

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


class Replica:
    """One member of a group in one epoch."""

    def __init__(
        self,
        me: int,
        members: Sequence[int],
        *,
        epoch: int = 1,
        config: CoreConfig | None = None,
        strict: bool = False,
    ):
        assert epoch >= 0
        self.config = config or CoreConfig()
        self.me = me
        self.epoch = epoch
        self.table = Table(Layout(HEARTBEAT_COLUMNS), members, me, strict=strict)
        self.members = self.table.members
        self.peers = tuple(m for m in self.members if m != me)
        self._row_of = {m: i for i, m in enumerate(self.members)}
        self._predicates = PredicateSet(
            HEARTBEAT_PREDICATES, rounds_max=self.config.predicate_rounds_max
        )
        self.now_ns = 0
        self._next_heartbeat_ns = 0
        self._writes: list[Push] = []
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
        self._evaluate()

    def on_write(self, source: int, offset: int, data: bytes) -> None:
        self.table.apply_write(self._row_of[source], offset, data)
        self._evaluate()

    def on_link_up(self, peer: int) -> None:
        """A link to `peer` was (re)established: writes pushed while it was down were lost, so the
        peer's copy of our row is brought up to date with one write of the whole row."""
        assert peer in self._row_of and peer != self.me, peer
        w = self.table.push_row()
        self._writes.append(Push((peer,), w.offset, w.data))

    def next_tick_ns(self) -> int:
        """The simulated or real time at which `tick` next has work to do."""
        return self._next_heartbeat_ns

    # -- output ---------------------------------------------------------------------------------

    def ready(self) -> Ready:
        assert self._taken is None, "advance() the previous Ready before asking for another"
        r = Ready(writes=tuple(self._writes), events=tuple(self._events))
        self._taken = r
        return r

    def advance(self, ready: Ready) -> None:
        assert ready is self._taken, "advance() takes the Ready that ready() returned"
        del self._writes[: len(ready.writes)]
        del self._events[: len(ready.events)]
        self._taken = None

    def has_ready(self) -> bool:
        return bool(self._writes or self._events)

    # -- helpers for protocol modules -----------------------------------------------------------

    def push_all(self, names: Sequence[str]) -> None:
        for w in self.table.push(names):
            self._writes.append(Push(self.peers, w.offset, w.data))

    def _evaluate(self) -> None:
        self._events.extend(self._predicates.evaluate(self))
