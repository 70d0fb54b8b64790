"""The core's single output: `Ready`, the work a driver must do, and the action types in it.

This module owns the contract between the sans-I/O core and whatever drives it (the simulator, the
node runtime). The ordering duties, in the order a driver must honour them:

1. `persist`: log requests, performed in list order. Every request with `sync=True` must be
   durable (fsynced) **before any write in `writes` is pushed or any message in `sends` is sent**:
   those may announce it (the ragged trim is logged before the flag that publishes it; a restart
   acceptor's promise before its answer; durable-before-visible). Requests with `sync=False` may
   be performed asynchronously (group commit); their durability is reported back with
   `Replica.on_persisted`. Kinds: `LogAppend` (delivered entries of a durable shard), `LogMeta`
   (replace a named blob of the member's metadata log: "view", "view-proposal-<epoch>",
   "restart-acceptor"), `LogTruncate` (drop a shard log's records above a version) and
   `LogSnapshot` (replace a shard log by a received snapshot). A driver restarting after a crash
   builds `smr.core.restart.Recovered` from these logs and replays each shard log into its state
   machine before calling `Replica.restarting` (`smr.recovery` does both).
2. `writes`: one-sided writes of byte ranges of this member's row, each to the listed peers, in
   list order (the transports keep per-link FIFO, so a slot's bytes land before the counter that
   announces it).
3. `sends`: data-plane messages (large payloads, replies), each to one peer, in list order per peer.
4. `deliveries`: entries to apply to the state machines, in list order (total order per shard).
5. `events`: everything else the application should see (a submit completed, a frontier reached).

After doing all of it the driver calls `Replica.advance(ready)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class Push:
    """Copy `data` into the writer's row at `offset` of each target's table for `epoch` (the
    transport carries the epoch so that no write lands in a table of another view)."""

    targets: tuple[int, ...]
    offset: int
    data: bytes
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Send:
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
    events: tuple[Any, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.persist or self.writes or self.sends or self.deliveries or self.events)


EMPTY = Ready()
