"""The one executor of the core's `Ready`: every driver (the node process, the simulator, the
transcripts, `LocalGroup`, the tests' network) runs this code, so the simulator tests what a
member process does.

This module owns the order in which a `Ready`'s duties are done (the contract is stated per field
in `smr.core.ready`) and the bookkeeping that is the same for every driver: the sender's own
results of commands submitted without a reply map, the version check and snapshot of a state
transfer, replies handed back to the replica. It performs no I/O itself: a `Host` does the
storage, the network, the state machines and the answers, each in its own way (a real disk and
sockets, a simulated disk and network, dictionaries). `Executor.drain` is the loop every driver
runs: take a `Ready`, execute it, `advance`.

The order, for one `Ready`:

1. a view being installed is prepared (`Host.prepare_view`: its table registered with the
   transport, the logs and state machines of shards that are new to this member opened), so
   that nothing below meets an epoch or a shard the host does not know;
2. `persist`, in list order: metadata replaced durably, appends handed to the log (durable
   later, reported with `Replica.on_persisted`), truncations and snapshots durably; then the
   appends marked `sync` are flushed: everything durable-before-visible is durable now;
3. `writes` and `sends`, except in a Ready that answers clients (rule A below);
4. `deliveries`, in order, applied to the state machines, each result handed back
   (`Replica.reply_many`) or kept as the sender's own result;
5. `events`, in list order: answers, state transfers (snapshot now: after every delivery of the
   ended epoch, before any of the next), restores, the view installed (shards this member left
   are dropped only now, after it provided their state), halts;
6. rule A: **a Ready that completes commands or reads answers them before it pushes** (the
   answers depend on the table as it is, not on these pushes, and the doorbells of the pushes
   would wake the peers, a context switch, before the client heard). Nothing
   durable-before-visible is at stake: the persist step is done either way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, assert_never

from smr.core.multicast import Completed, PeerMisbehaved, SubmitFailed
from smr.core.reads import ReadConfirmed, ReadFailed
from smr.core.ready import (
    Delivery,
    LogAppend,
    LogMeta,
    LogSnapshot,
    LogTruncate,
    Push,
    Ready,
    Send,
)
from smr.core.replica import FrontierReached, Replica, RestoreState, StateTransfer
from smr.core.views import Halted, RemovalRefused, ViewBlocked, ViewInstalled

if TYPE_CHECKING:
    from smr.core.ready import Event

Key = tuple[int, int]
OWN_RESULTS_MAX = 1 << 16  # own results kept for commands not yet answered (a bound, not a goal)


class StateVersionError(AssertionError):
    """A provider's state machine is not at the version the core planned to transfer: our bug
    (the logs or the replay disagree with the core), never a peer's."""


class Host(Protocol):
    """What the executor needs from a driver. Every method is called on the driver's loop."""

    def prepare_view(self, event: ViewInstalled) -> None:
        """A view is being installed: register its table, open the logs and state machines of
        shards new to this member (a joiner opens logs only: state arrives by `restore`)."""

    def persist_meta(self, request: LogMeta) -> None:
        """Replace a metadata blob atomically; durable when this returns."""

    def persist_append(self, request: LogAppend) -> None:
        """Append entries to a shard's log; durable later (group commit), reported to the
        replica with `on_persisted`. A shard without a log (not durable here) ignores it."""

    def persist_flush(self, subgroup: int, shard: int) -> None:
        """Everything appended to this shard's log so far is durable when this returns."""

    def persist_rewrite(self, request: LogTruncate | LogSnapshot) -> None:
        """Truncate a shard's log or replace it by a snapshot, after whatever was appended
        before; durable when this returns."""

    def push(self, push: Push) -> None:
        """A one-sided write of my row to its targets."""

    def send(self, send: Send) -> None:
        """A data-plane message."""

    def apply(self, deliveries: tuple[Delivery, ...]) -> list[bytes]:
        """Apply a batch of delivered entries, in order, to their shards' state machines; return
        each one's result bytes (one call per Ready: a native engine enters Python per batch)."""

    def state_of(self, subgroup: int, shard: int) -> tuple[int, bytes]:
        """(version, snapshot) of a shard's state machine as it stands now; (0, b"") when this
        member holds no state machine of it."""

    def restore(self, event: RestoreState) -> None:
        """Replace a shard's state machine by the snapshot in `event`."""

    def view_installed(self, event: ViewInstalled) -> None:
        """The view is in force; drop what belongs to shards this member left."""

    def answer(self, event: Completed | SubmitFailed, results: dict[int, bytes] | None) -> None:
        """A submission is answered: `results` is the reply map, or this member's own result
        for a command sent without one (`{me: result}`, or `{}` if it was not kept)."""

    def answer_read(self, event: ReadConfirmed | ReadFailed) -> None:
        """A linearizable read is confirmed (run it now against the shard's state machine and
        answer it) or failed (answer that it may be asked again)."""

    def flush_answers(self) -> None:
        """Send the answers given so far now (rule A)."""

    def notify(
        self, event: Halted | ViewBlocked | FrontierReached | PeerMisbehaved | RemovalRefused
    ) -> None:
        """An event for the application only."""

    def state_sent(self, event: StateTransfer, version: int, size_bytes: int) -> None:
        """A snapshot went to `event.to` (for logs and statistics)."""


class Executor:
    """One member's executor. `me` is its id; one executor serves every incarnation of the
    member (`reset` when the replica is replaced)."""

    def __init__(self, me: int, host: Host, *, own_results_max: int = OWN_RESULTS_MAX):
        assert own_results_max >= 1
        self.me = me
        self.host = host
        self.own_results_max = own_results_max
        # my own results of commands submitted without the reply map, by version, until their
        # Completed event: my commands complete in version order, so older ones are dropped
        self._own: OrderedDict[int, bytes] = OrderedDict()

    def reset(self) -> None:
        self._own.clear()

    def drain(self, replica: Replica, observe: Callable[[Ready], None] | None = None) -> int:
        """Execute every Ready the replica has; return how many. `observe` sees each Ready
        before it is executed (the simulator's checkers)."""
        done = 0
        while replica.has_ready():
            ready = replica.ready()
            if observe is not None:
                observe(ready)
            self.execute(replica, ready)
            replica.advance(ready)
            done += 1
        return done

    def execute(self, replica: Replica, ready: Ready) -> None:
        host = self.host
        for event in ready.events:
            if type(event) is ViewInstalled:
                host.prepare_view(event)
        self._persist(ready)
        answers = any(type(e) is Completed or type(e) is ReadConfirmed for e in ready.events)
        if not answers:
            self._push(ready)
        if ready.deliveries:
            self._deliver(replica, ready.deliveries)
        for event in ready.events:
            self._event(replica, event)
        if answers:
            host.flush_answers()
            self._push(ready)

    def _persist(self, ready: Ready) -> None:
        host = self.host
        flush: list[Key] = []
        for request in ready.persist:
            match request:
                case LogMeta():
                    host.persist_meta(request)
                case LogAppend():
                    if request.entries:
                        host.persist_append(request)
                        if request.sync:
                            flush.append((request.subgroup, request.shard))
                case LogTruncate() | LogSnapshot():
                    host.persist_rewrite(request)
                case _:
                    assert_never(request)
        for subgroup, shard in flush:
            host.persist_flush(subgroup, shard)  # durable before the writes that announce it

    def _push(self, ready: Ready) -> None:
        host = self.host
        for push in ready.writes:
            host.push(push)
        for send in ready.sends:
            host.send(send)

    def _deliver(self, replica: Replica, deliveries: tuple[Delivery, ...]) -> None:
        results = self.host.apply(deliveries)
        assert len(results) == len(deliveries), "a result for every delivery"
        replica.reply_many(deliveries, results)
        me = self.me
        own = self._own
        for d, result in zip(deliveries, results, strict=True):
            if d.sender == me and not d.reply:
                own[d.version] = result
                if len(own) > self.own_results_max:
                    own.popitem(last=False)

    def _own_result(self, version: int) -> dict[int, bytes]:
        own = self._own
        while own:
            first = next(iter(own))
            if first >= version:
                break
            own.popitem(last=False)  # a delivery that belonged to no client's command
        result = own.pop(version, None)
        return {} if result is None else {self.me: result}

    def _event(self, replica: Replica, event: Event) -> None:
        host = self.host
        match event:
            case Completed():
                results = event.results
                host.answer(event, self._own_result(event.version) if results is None else results)
            case SubmitFailed():
                host.answer(event, None)
            case ReadConfirmed() | ReadFailed():
                host.answer_read(event)
            case StateTransfer():
                version, data = host.state_of(event.subgroup, event.shard)
                if event.version and version != event.version:
                    raise StateVersionError(
                        f"member {self.me} is to provide shard {(event.subgroup, event.shard)} "
                        f"at version {event.version:#x}, but its state machine is at {version:#x}"
                    )
                replica.send_state(event.to, event.subgroup, event.shard, version, data)
                host.state_sent(event, version, len(data))
            case RestoreState():
                host.restore(event)
            case ViewInstalled():
                host.view_installed(event)
            case Halted() | ViewBlocked() | FrontierReached() | PeerMisbehaved() | RemovalRefused():
                host.notify(event)
            case _:
                assert_never(event)
