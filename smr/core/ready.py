"""The core's single output: `Ready`, the work a driver must do, and the action types in it.

This module owns the contract between the sans-I/O core and whatever drives it. Every driver runs
one executor of it (`smr.runtime.executor`), so the duties below are carried out the same way in
a member process, in the simulator, in the transcripts and in `LocalGroup`. Per field, in the
etcd raft style (what must happen BEFORE what, what is free):

* `persist`: log requests, performed in list order (a truncation after the appends before it).
  - `LogMeta` (replace a named blob of the member's metadata log: "view",
    "view-proposal-<epoch>", "restart-acceptor", "offer"), `LogTruncate` and `LogSnapshot` are
    `sync=True`: durable **BEFORE** any of this Ready's `writes` is pushed or `sends` is sent,
    since those may announce them (the ragged trim is logged before the flag that publishes it;
    a restart acceptor's promise before its answer).
  - `LogAppend` (delivered entries of a durable shard) is `sync=False`: it may be made durable
    later and in the background (group commit); its durability reaches the core only through
    `Replica.on_persisted`, and the core announces nothing about it before that. An append with
    `sync=True` would be flushed before the writes like the rest.
  - A driver restarting after a crash builds `smr.core.restart.Recovered` from these logs and
    replays each shard log into its state machine before calling `Replica.restarting`
    (`smr.recovery` does both).
* `writes`: one-sided writes of byte ranges of this member's row, each to its targets, **in list
  order** (the transports keep per-link FIFO, so a slot's bytes land before the counter that
  announces it). They may go out before or after this Ready's `deliveries` are applied: nothing in
  them depends on the application.
* `sends`: data-plane messages, each to one peer, in list order per peer; free relative to
  `writes` of other links and to the deliveries.
* `deliveries`: entries to apply to the state machines **in list order** (the total order per
  shard), all of them before any `StateTransfer` or `ViewInstalled` in `events` is acted on (a
  provider's snapshot comes after every delivery of the ended epoch). A result asked for
  (`Delivery.reply`) goes back through `Replica.reply_many` (or `reply`), in delivery order.
* `events`: in list order, after the deliveries:
  - `ViewInstalled`: the next view. Before anything of its epoch is pushed (this Ready's own
    writes include the new epoch's first), the driver registers its table with the transport and
    opens the logs of the shards new to the member; shards it left are dropped only after the
    events before it (a `StateTransfer` of a shard it left still needs the state machine).
  - `StateTransfer`: snapshot the shard's state machine now and give it to
    `Replica.send_state` with the version the machine is at; a non-zero `version` is the one the
    core expects (a restart's cut, a joiner's offer), and a machine anywhere else is a bug.
  - `RestoreState`: replace the shard's state machine before any later delivery of it.
  - `ReadConfirmed`: run the read now, against the state machine as this Ready's deliveries
    left it, and answer it; `ReadFailed`: answer that it could not be confirmed (retriable).
  - `Completed`, `SubmitFailed`: answer the submitter. Rule A (the one exception to "persist,
    push, apply, tell"): a Ready holding a `Completed` or a `ReadConfirmed` applies its
    deliveries and answers its clients before it pushes its writes: the answers depend on the
    table as it is, not on these pushes, and a push's doorbell wakes the peers (a context
    switch) before the client would hear. `persist` still comes first, so nothing
    durable-before-visible is at stake.
  - `Halted`, `ViewBlocked`, `FrontierReached`, `PeerMisbehaved` (a peer's input was dropped
    and the peer suspected): for the application and its logs only.

After doing all of it the driver calls `Replica.advance(ready)`, and only then asks for the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

if TYPE_CHECKING:  # the event types live with the protocols that emit them
    from smr.core.multicast import Completed, PeerMisbehaved, SubmitFailed
    from smr.core.reads import ReadConfirmed, ReadFailed
    from smr.core.replica import FrontierReached
    from smr.core.transfer import RestoreState, StateTransfer
    from smr.core.views import Halted, ViewBlocked, ViewInstalled

    # Everything a Ready's `events` may hold; the executor handles each kind (mypy checks it).
    Event: TypeAlias = (
        Completed
        | SubmitFailed
        | ReadConfirmed
        | ReadFailed
        | StateTransfer
        | RestoreState
        | ViewInstalled
        | ViewBlocked
        | Halted
        | FrontierReached
        | PeerMisbehaved
    )


class Push(NamedTuple):
    """Copy `data` into the writer's row at `offset` of each target's table for `epoch` (the
    transport carries the epoch so that no write lands in a table of another view). NamedTuples,
    `Push` and `Send` like `Delivery`: several are built on every pass of a busy loop, and a
    frozen dataclass's `__init__` costs about a microsecond."""

    targets: tuple[int, ...]
    offset: int
    data: bytes
    epoch: int = 0


class Send(NamedTuple):
    """A data-plane message to one member."""

    target: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class LogAppend:
    """Append these delivered entries of a shard to its log. `entries` are `Delivery` values."""

    subgroup: int
    shard: int
    entries: tuple[Any, ...]
    sync: bool = False


@dataclass(frozen=True, slots=True)
class LogTruncate:
    """Drop every record of a shard's log above `version` (0: every record and snapshot), durably,
    before anything later in `persist` (a restart's agreed cut, or a log that no longer holds the
    shard's state)."""

    subgroup: int
    shard: int
    version: int
    sync: bool = True


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """Replace a shard's log by this snapshot of its state at `version`: drop every record and
    snapshot, then store this one durably (the state arrived by state transfer; replaying the log
    must give it back)."""

    subgroup: int
    shard: int
    version: int
    data: bytes
    sync: bool = True


@dataclass(frozen=True, slots=True)
class LogMeta:
    """Replace a named metadata blob of the member's log atomically (a view, a ragged trim)."""

    name: str
    data: bytes
    sync: bool = True


class Delivery(NamedTuple):
    """An entry delivered in order: apply it to the shard's state machine.

    `version = (epoch << 32) | seq`; `timestamp_ns` is the sender's hybrid logical clock; `reply`
    says the sender waits for this member's result (`Replica.reply`). A NamedTuple rather than a
    dataclass because one is built per delivered message on the hot path.
    """

    subgroup: int
    shard: int
    version: int
    timestamp_ns: int
    sender: int
    payload: bytes
    reply: bool = False


@dataclass(frozen=True, slots=True)
class Ready:
    persist: tuple[LogAppend | LogMeta | LogTruncate | LogSnapshot, ...] = ()
    writes: tuple[Push, ...] = ()
    sends: tuple[Send, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
    events: tuple[Event, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.persist or self.writes or self.sends or self.deliveries or self.events)


EMPTY = Ready()
