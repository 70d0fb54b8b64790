"""The sans-I/O replica: one member's protocol state, driven by method calls, read through `Ready`.

This module owns the replica's inputs and its single output, in the shape of etcd raft's RawNode:

    inputs   on_write(source, offset, data, epoch)  a peer's one-sided write into its row
             on_data(source, payload)         a data-plane message (large payloads, replies,
                                              join requests, state transfer)
             on_link_up(peer)                 a (re)connected link: the peer's copy of us is stale
             on_peer_failed(peer)             the transport gave up on a peer
             tick(now_ns)                     time passed (heartbeats, timeouts, the clock)
             submit(...)                      the application multicasts a message
             reply(...)                       the application's result for a delivery
             on_persisted(...)                the log made entries durable
             send_state(...)                  a snapshot for a member that needs state
             leave()                          depart cleanly
    output   ready() -> Ready                 the work to do; see smr.core.ready for the duties
             advance(ready)                   the driver did it

**Ordering duty (durable before visible):** every `Ready.persist` request with `sync=True` must be
durable before any of that `Ready`'s `writes` is pushed, because those writes may announce it.

Each input updates the local copy of the table, then evaluates the predicates to a fixed point
(`smr.core.predicates`); triggers return actions which accumulate until the driver takes them.
The replica never touches a socket, a thread, a clock, a random source or a file.

A replica lives across epochs: each view has its own table, streams and predicates
(`smr.core.views` decides the next view), and everything a peer sends carries the epoch it
belongs to, so nothing of an old epoch is applied to a new table (writes of a later epoch are
kept until it is installed). A process that is not in the group starts with `Replica.joiner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from smr.core import multicast, reads, views
from smr.core.codec import (
    FRAME,
    FRAME_BLOCK,
    FRAME_JOIN_OK,
    FRAME_JOIN_REFUSED,
    FRAME_JOIN_REQUEST,
    FRAME_LARGE,
    FRAME_REPLIES,
    FRAME_REPLY,
    FRAME_RESTART_ACCEPT,
    FRAME_RESTART_COMMIT,
    FRAME_RESTART_NEWER,
    FRAME_RESTART_PREPARE,
    FRAME_STATE,
    RESTART_FRAMES,
    encode_members,
)
from smr.core.errors import LayoutError, PeerProtocolError, UsageError
from smr.core.layout import Shard, SubgroupSpec, allocate
from smr.core.multicast import (
    Completed,
    Deliver,
    MulticastConfig,
    PeerMisbehaved,
    ShardStream,
    SubmitFailed,
    parse_replies,
)
from smr.core.predicates import Kind, Predicate, PredicateSet
from smr.core.reads import ReadFailed, Reads
from smr.core.ready import Delivery, LogAppend, LogMeta, LogSnapshot, LogTruncate, Push, Ready, Send
from smr.core.restart import (
    Recovered,
    Restart,
    RestartDecision,
    at_cut_of,
)
from smr.core.table import Column, Layout, Table, counter
from smr.core.transfer import RestoreState as RestoreState  # re-exported: drivers' import
from smr.core.transfer import StateTransfer as StateTransfer
from smr.core.transfer import Transfer
from smr.core.views import (
    FINAL_ACTIONS,
    Halted,
    InstallView,
    Proposal,
    RemovalRefused,
    Roster,
    View,
    ViewChange,
    ViewConfig,
    ViewInstalled,
    plan_next,
    trim_count,
)

ACTIVE, JOINING, HALTED, RESTARTING = "active", "joining", "halted", "restarting"


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timing and sizing of the core; every bound is named with its unit last."""

    heartbeat_period_ns: int = 5_000_000
    predicate_rounds_max: int = 64
    join_retry_ns: int = 50_000_000
    restart_retry_ns: int = 20_000_000  # a restart leader's round; others wait longer per rank
    future_epochs_max: int = 2  # epochs ahead of ours whose writes we keep until we install them
    # Results of survivors for commands delivered at the end of an epoch are waited for this
    # long at most (a reply frame lost with a connection is not sent again).
    late_reply_timeout_ns: int = 100_000_000
    late_replies_max: int = 1 << 16
    # A linearizable read not confirmed in this long fails (retriable): the member could not
    # show that it is in the current view with a majority (smr.core.reads).
    read_timeout_ns: int = 1_000_000_000
    reads_max: int = 1 << 16  # reads waiting at one member
    multicast: MulticastConfig = field(default_factory=MulticastConfig)
    views: ViewConfig = field(default_factory=ViewConfig)

    def __post_init__(self) -> None:
        assert self.heartbeat_period_ns > 0
        assert self.predicate_rounds_max >= 1
        assert self.join_retry_ns > 0
        assert self.restart_retry_ns > 0
        assert self.future_epochs_max >= 1
        assert self.read_timeout_ns > 0 and self.reads_max >= 1


@dataclass(frozen=True, slots=True)
class FrontierReached:
    """Event: every member's heartbeat counter reached `value` in `epoch` (the stability
    pattern)."""

    value: int
    epoch: int = 0


HEARTBEAT_COLUMNS: tuple[Column, ...] = (
    counter("heartbeat", "raised every heartbeat period; the member is alive and ticking"),
    counter("frontier", "the minimum heartbeat this member has seen over every row"),
)


def _frontier_rises(r: Replica) -> bool:
    return r.table.column_min("heartbeat") > r.table.get(r.table.my_row, "frontier")


def _raise_frontier(r: Replica) -> list[Any]:
    value = r.table.column_min("heartbeat")
    r.table.set("frontier", value)
    return [*r.pushes(("frontier",)), FrontierReached(value, r.epoch)]


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


class _FutureRows:
    """Writes of an epoch we have not installed yet, coalesced per source into a row image (a
    push carries values, not deltas, so the latest bytes are all that matter): bounded by the
    row size, applied whole when the epoch is installed."""

    def __init__(self) -> None:
        self.images: dict[int, tuple[bytearray, bytearray]] = {}  # source -> (bytes, mask)

    def add(self, source: int, offset: int, data: bytes, row_bytes_max: int) -> None:
        end = offset + len(data)
        if offset < 0 or end > row_bytes_max:
            raise PeerProtocolError(f"a write from {source} beyond any row ({end} bytes)")
        image, mask = self.images.setdefault(source, (bytearray(), bytearray()))
        if len(image) < end:
            image.extend(bytes(end - len(image)))
            mask.extend(bytes(end - len(mask)))
        image[offset:end] = data
        mask[offset:end] = b"\x01" * len(data)

    def apply(self, table: Table) -> None:
        for source, (image, mask) in self.images.items():
            if source not in table.members or source == table.members[table.my_row]:
                continue
            row = table.members.index(source)
            end = min(len(image), table.row_bytes)
            start = mask.find(1, 0, end)
            while start >= 0:
                stop = mask.find(0, start, end)
                stop = end if stop < 0 else stop
                lo, hi = start - start % 8, (stop + 7) // 8 * 8
                table.apply_write(row, lo, bytes(image[lo:hi]))
                start = mask.find(1, stop, end)


@dataclass(slots=True)
class _Late:
    """A command of mine delivered at the end of an epoch, waiting for survivors' results."""

    event: Completed
    results: dict[int, bytes]
    expected: frozenset[int]
    deadline_ns: int

    def completed(self) -> Completed:
        e = self.event
        return Completed(e.ticket, e.subgroup, e.shard, e.version, self.results)


class Replica:
    """One member of a group, across the epochs it lives through.

    `layout` declares the subgroups and shards (`SubgroupSpec`); every member computes the same
    allocation from each view. The replica runs a `ShardStream` for every shard it belongs to and
    a `ViewChange` that decides the next view.
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
        card: bytes = b"",
    ):
        assert 0 <= epoch < 1 << 31
        self.config = config or CoreConfig()
        if len(card) > self.config.views.card_bytes_max:
            raise UsageError(
                f"a contact card of {len(card)} bytes (at most "
                f"{self.config.views.card_bytes_max}): give the member shorter addresses"
            )
        self.me = me
        self.card = bytes(card)  # this member's contact card, carried by its joins (`Roster`)
        self.layout_specs = tuple(layout)
        self.strict = strict
        self.status = ACTIVE
        self.halt_reason = ""
        self._built = False  # an epoch was built (`_build`): a view, a table, predicates
        self.now_ns = 0
        self.hlc_ns = 0
        self._next_ticket = 1
        self._submitted = False
        self._replies_queued = False  # a stream holds replies for the next Ready's sends
        self._barrier = False  # a Ready holds an install; hold new-epoch work until it is taken
        self._persist: list[LogAppend | LogMeta | LogTruncate | LogSnapshot] = []
        self._writes: list[Push] = []
        self._sends: list[Send] = []
        self._deliveries: list[Delivery] = []
        self._events: list[Any] = []
        self._taken: Ready | None = None
        self._future: dict[int, _FutureRows] = {}
        self._future_data: list[tuple[int, int, bytes]] = []  # (epoch, source, frame)
        self._prev_row: tuple[int, bytes] | None = None
        self._row_bytes_max = 1 << 24
        self._leaving = False  # asked to leave: asked again in every epoch until it is out
        self._removing: list[int] = []  # asked to remove: asked again until retired (`remove`)
        self.transfer = Transfer(self)  # joins and state transfer (smr.core.transfer)
        self.reads = Reads(  # linearizable reads (smr.core.reads)
            self, timeout_ns=self.config.read_timeout_ns, reads_max=self.config.reads_max
        )
        # (shard index, version) -> a command answered late (see _carry_over); versions are per
        # shard, so two shards' commands can share one
        self._late: dict[tuple[int, int], _Late] = {}
        self._batch_depth = 0  # inside batched(): evaluation waits for the end of the batch
        self._batch_pending = False
        self._batch = _Batch(self)  # entered on every pass of a loop: no generator per use
        self._restart: Restart | None = None
        self.restart_decision: RestartDecision | None = None  # the decision this member resumed by
        self.epoch = epoch
        if members:
            self._build(View(epoch, tuple(members)))
            self.vc.founding = True
            for st in self.streams.values():
                st.set_ready()  # the founding members hold every shard's (empty) state

    @classmethod
    def joiner(
        cls,
        me: int,
        contacts: Sequence[int],
        *,
        layout: Sequence[SubgroupSpec] = (),
        config: CoreConfig | None = None,
        strict: bool = False,
        card: bytes = b"",
    ) -> Replica:
        """A process outside the group that asks `contacts` (any members) to let it join. It
        enters in the next view and receives its shards' state before it delivers anything.
        `card` (its addresses, say) reaches every member in the next view's roster."""
        r = cls(me, (), epoch=0, layout=layout, config=config, strict=strict, card=card)
        r.status = JOINING
        r.transfer.join_contacts = tuple(c for c in contacts if c != me)
        assert r.transfer.join_contacts, "a joiner needs at least one member to contact"
        return r

    @classmethod
    def restarting(
        cls,
        me: int,
        recovered: Recovered,
        contacts: Sequence[int] = (),
        *,
        layout: Sequence[SubgroupSpec] = (),
        config: CoreConfig | None = None,
        strict: bool = False,
        card: bytes = b"",
    ) -> Replica:
        """A member restarting from its own log after a crash (see `smr.core.restart` for the
        protocol and for what the driver must do first: build `recovered`, replay the logs). It
        asks the members of its last view (and `contacts`); if a group is running it joins it
        (with state transfer; its shard logs are dropped on admission unless they provide the
        state of a shard the group lost), otherwise the restarted members agree on
        a new view and it resumes in it."""
        r = cls(me, (), epoch=0, layout=layout, config=config, strict=strict, card=card)
        r.status = RESTARTING
        r._restart = Restart(me, recovered, contacts, r.layout_specs, r.config.restart_retry_ns)
        r.transfer.stale_logs = set(recovered.awaiting)
        return r

    # -- building an epoch ----------------------------------------------------------------------

    def _build(self, view: View) -> None:
        self._built = True
        self.view = view
        self.epoch = view.epoch
        self.shards: tuple[Shard, ...] = allocate(view.members, self.layout_specs)
        self._index_of = {(s.subgroup, s.shard): s.index for s in self.shards}
        columns = list(HEARTBEAT_COLUMNS)
        columns.extend(views.columns(len(view.members), self.shards, self.config.views))
        for shard in self.shards:
            columns.extend(multicast.columns(shard, self.config.multicast))
        columns.extend(reads.columns(len(view.members)))  # last: no other column moves
        self.table = Table(Layout(tuple(columns)), view.members, self.me, strict=self.strict)
        self.members = self.table.members
        self.peers = tuple(m for m in self.members if m != self.me)
        self._row_of = {m: i for i, m in enumerate(self.members)}
        self._wedged_index = (
            self.table.my_row * self.table.row_words + self.table.layout["wedged"].word
        )
        self._next_heartbeat_ns = self.now_ns
        self.streams: dict[int, ShardStream] = {}
        self._stream_of: dict[tuple[int, int], ShardStream] = {}
        self.vc = ViewChange(self, self.config.views)
        if self._leaving:
            self.vc.leave()
        self._removing = [m for m in self._removing if m not in view.roster.retired]
        for m in self._removing:
            self.vc.remove(m)
        predicates = list(HEARTBEAT_PREDICATES)
        predicates.extend(self.vc.predicates())
        for shard in self.shards:
            if self.me in shard.members:
                st = ShardStream(self, shard, self.config.multicast)
                self.streams[shard.index] = st
                self._stream_of[(shard.subgroup, shard.shard)] = st
                predicates.extend(_stream_predicates(st))
        predicates.extend(self.reads.predicates())
        self._predicates = PredicateSet(
            predicates, rounds_max=self.config.predicate_rounds_max, final=FINAL_ACTIONS
        )
        self.transfer.new_epoch()
        self.reads.new_epoch()
        future = self._future.pop(view.epoch, None)
        if future is not None:
            future.apply(self.table)
        for e in [e for e in self._future if e < view.epoch]:
            del self._future[e]
        early, self._future_data = self._future_data, []
        for epoch, source, frame in early:
            if epoch == view.epoch and source in self._row_of:
                kind, g, number, _ = FRAME.unpack_from(frame)
                if kind == FRAME_REPLY:  # a late reply for the epoch that just ended
                    self._late_reply(source, g, number, frame[FRAME.size :])
                else:
                    self._on_frame(source, frame)
            elif epoch > view.epoch:
                self._future_data.append((epoch, source, frame))

    @property
    def frozen(self) -> bool:
        """No sending, receiving or delivering: wedged for a view change, or an installed view
        not yet handed to the driver."""
        return self._barrier or self.table.words[self._wedged_index] != 0

    # -- inputs ---------------------------------------------------------------------------------

    def tick(self, now_ns: int) -> None:
        assert now_ns >= self.now_ns, f"time went back from {self.now_ns} to {now_ns}"
        self.now_ns = now_ns
        if self.status == HALTED:
            return
        if self.status == RESTARTING:
            assert self._restart is not None
            self._restart.on_tick(now_ns)
            self._restart_step()
            return
        if self.status == JOINING:
            self.transfer.tick_joining(now_ns)
            return
        if now_ns >= self._next_heartbeat_ns:
            self.table.set("heartbeat", self.table.get(self.table.my_row, "heartbeat") + 1)
            self.push_all(("heartbeat",))
            self._next_heartbeat_ns = now_ns + self.config.heartbeat_period_ns
        self.vc.on_tick(now_ns)
        for st in self.streams.values():
            self._events.extend(st.expire(now_ns))
        if len(self.reads):
            self._events.extend(self.reads.expire(now_ns))
        if self._late:
            self._expire_late()
        self._evaluate()

    def on_write(self, source: int, offset: int, data: bytes, epoch: int | None = None) -> None:
        """A peer's one-sided write into its row, for `epoch` (default: ours)."""
        epoch = self.epoch if epoch is None else epoch
        try:
            applied = self._apply_write(source, offset, data, epoch)
        except PeerProtocolError as e:
            self._reject(source, e)
            applied = True
        if applied:
            self._evaluate()

    def on_writes(self, writes: Sequence[tuple[int, int, int, bytes]]) -> None:
        """Several writes `(source, epoch, offset, data)`, in the order they arrived, evaluated
        once: what one poll of a transport read. The predicates are monotonic, so seeing the
        table after several writes is as good as after each (Derecho's predicate thread reads
        whatever the table holds)."""
        applied = False
        for source, epoch, offset, data in writes:
            try:
                applied = self._apply_write(source, offset, data, epoch) or applied
            except PeerProtocolError as e:
                self._reject(source, e)
                applied = True
        if applied:
            self._evaluate()

    def _reject(self, peer: int, error: PeerProtocolError) -> None:
        """A peer's input broke the protocol: it was dropped whole (decoders check before they
        change anything), the peer is suspected (a peer that sends one bad input cannot be
        trusted with the next) and `PeerMisbehaved` says so. The replica goes on."""
        self._misbehaved(PeerMisbehaved(peer, self.epoch, str(error)))

    def _misbehaved(self, event: PeerMisbehaved) -> None:
        self._events.append(event)
        row = self._row_of.get(event.peer) if self.status == ACTIVE else None
        if row is not None and row != self.table.my_row:
            self.vc.suspect(row)

    def _apply_write(self, source: int, offset: int, data: bytes, epoch: int) -> bool:
        if self.status == HALTED:
            return False
        if self.status == JOINING or epoch > self.epoch:
            if epoch <= self.epoch and self.status != JOINING:
                return False
            rows = self._future.setdefault(epoch, _FutureRows())
            rows.add(source, offset, data, self._row_bytes_max)
            while len(self._future) > self.config.future_epochs_max:
                del self._future[min(self._future)]
            return False
        if epoch < self.epoch:
            return False  # a write to a table that no longer exists
        row = self._row_of.get(source)
        if row is None:
            raise PeerProtocolError(f"a write from {source}, who is not in view {self.epoch}")
        self.table.apply_write(row, offset, data)
        vc = self.vc
        if offset < vc.span_hi and offset + len(data) > vc.span_lo:
            vc.quiet = False
        return True

    def on_data(self, source: int, payload: bytes) -> None:
        """A data-plane frame: a large message's payload, a member's result for my message, a
        join request, a join acceptance, or a shard's state."""
        try:
            evaluate = self._on_data(source, payload)
        except PeerProtocolError as e:
            self._reject(source, e)
            evaluate = True
        if evaluate:
            self._evaluate()

    def _on_data(self, source: int, payload: bytes) -> bool:
        """Take a data frame; True when the predicates are to be evaluated."""
        if self.status == HALTED:
            return False
        if len(payload) < FRAME.size:
            raise PeerProtocolError(f"a data frame of {len(payload)} bytes from {source}")
        kind, _, number, epoch = FRAME.unpack_from(payload)
        if kind in RESTART_FRAMES:
            self._on_restart_frame(source, kind, payload)
            return False
        if kind == FRAME_JOIN_REQUEST:
            return self.status == ACTIVE and self.transfer.on_join_request(
                source, number, payload[FRAME.size :]
            )
        if kind == FRAME_JOIN_REFUSED:
            if self.status == JOINING:
                self.transfer.on_join_refused(source, payload[FRAME.size :])
            return False
        if kind == FRAME_JOIN_OK:
            rs = self._restart
            if self.status == RESTARTING and rs is not None and epoch > rs.recovered.epoch:
                # A running group admitted me without my asking: a view-change leader brings a
                # suspected member it heard lately back when the view needs it, and I am a later
                # incarnation of it, restarted from my disk. That is a group found running, as a
                # `restart-newer` answer says: I join it, my logs kept aside as for any joiner.
                self.transfer.restart_to_joiner(epoch, ())
            if self.status == JOINING:
                self.transfer.on_join_ok(source, epoch, payload[FRAME.size :])
            return False
        if kind == FRAME_REPLY:
            # A survivor's result for my command delivered at the end of epoch `epoch` (see
            # `reply`), sent once it installed the next view. It can beat my own install of that
            # view: it is then kept, and taken when the view is built (when `_late` waits for it).
            if epoch < self.epoch:
                if self._late:
                    _, g, number, _ = FRAME.unpack_from(payload)
                    self._late_reply(source, g, number, payload[FRAME.size :])
            elif len(self._future_data) < 4 * self.config.multicast.window_max:
                self._future_data.append((epoch + 1, source, payload))
            return False
        if self.status == JOINING or epoch > self.epoch:
            if len(self._future_data) < 4 * self.config.multicast.window_max:
                self._future_data.append((epoch, source, payload))
            return False
        if epoch < self.epoch:
            if kind == FRAME_REPLIES and self._late:
                _, g, count, _ = FRAME.unpack_from(payload)
                for version, result in parse_replies(count, memoryview(payload)[FRAME.size :]):
                    self._late_reply(source, g, version, result)
            return False
        if source not in self._row_of or source == self.me:
            raise PeerProtocolError(f"a data frame from {source}, who is not a peer in the view")
        return self._on_frame(source, payload)

    def _on_frame(self, source: int, payload: bytes) -> bool:
        """Take a frame; False when no predicate can have changed (a block that completed no
        message only relays, and evaluating the predicates per block cost 3/4 of its time)."""
        kind, g, number, _ = FRAME.unpack_from(payload)
        st = self.streams.get(g)
        if st is None:
            raise PeerProtocolError(f"a data frame from {source} for shard {g}, not mine")
        if kind == FRAME_BLOCK:
            # placed straight into the message's buffer, through a view of the frame
            done = st.completed
            self._sends.extend(st.on_block(source, number, memoryview(payload)[FRAME.size :]))
            return st.completed != done
        if kind == FRAME_REPLIES:
            # parsed through a view: each result is copied once, not the frame first
            st.on_replies(source, parse_replies(number, memoryview(payload)[FRAME.size :]))
            return True
        body = payload[FRAME.size :]
        if kind == FRAME_LARGE:
            self._sends.extend(st.on_large(source, number, body))
        elif kind == FRAME_STATE:
            self.transfer.on_state_frame(g, number, body)
        else:
            raise PeerProtocolError(f"a data frame of unknown type {kind} from {source}")
        return True

    def on_link_up(self, peer: int) -> None:
        """A link to `peer` was (re)established: writes pushed while it was down were lost, so the
        peer's copy of our row is brought up to date with one write of the whole row (and of our
        last row in the previous epoch, in case the peer is still finishing it)."""
        if self.status != ACTIVE:
            return
        if self._prev_row is not None:
            epoch, row = self._prev_row
            self._writes.append(Push((peer,), 0, row, epoch))
        if peer not in self._row_of or peer == self.me:
            return
        w = self.table.push_row()
        self._writes.append(Push((peer,), w.offset, w.data, self.epoch))
        for st in self.streams.values():
            self._sends.extend(st.resend(peer))
        self.transfer.resend(peer)

    def on_peer_failed(self, peer: int) -> None:
        """The transport reports a peer unreachable: suspect it now rather than at the timeout."""
        if self.status == ACTIVE and peer in self._row_of:
            self.vc.suspect(self._row_of[peer])
            self._evaluate()

    def submit(self, subgroup: int, shard: int, payload: bytes, *, reply: bool = False) -> int:
        """Multicast `payload` in a shard; returns a ticket answered by a `Completed` event (at
        stability in `ordered` mode, at the global persistence frontier in `durable` mode, once
        every member received it in `raw` mode) or a `SubmitFailed` event. With `reply`, the
        `Completed` event carries every shard member's result (see `reply`). Submissions made
        together are placed together when the driver next asks for work (`ready`)."""
        if self.status != ACTIVE:
            raise UsageError(f"member {self.me} is {self.status}: it cannot multicast")
        st = self._stream(subgroup, shard)
        ticket = self._next_ticket
        if self._submitted and st.queue_full():
            self._evaluate()  # place what the window allows before calling the queue full
        st.submit(ticket, payload, reply)
        self._next_ticket += 1
        self._submitted = True
        return ticket

    def read(self, subgroup: int, shard: int) -> int:
        """A linearizable read of a shard (`smr.core.reads`); returns a ticket answered by a
        `ReadConfirmed` event (run the query then, after that Ready's deliveries) or a
        `ReadFailed` one (retriable: nothing was read). Reads made together share one round."""
        ticket = self._next_ticket
        self._next_ticket += 1
        if self.status != ACTIVE:
            self._events.append(
                ReadFailed(ticket, subgroup, shard, f"member {self.me} is {self.status}")
            )
            return ticket
        self._events.extend(self.reads.read(ticket, subgroup, shard))
        self._submitted = True  # the round starts when the driver next asks for work
        return ticket

    def on_persisted(self, subgroup: int, shard: int, version: int) -> None:
        """The log made every entry of this shard up to `version` durable."""
        if self.status != ACTIVE:
            return
        st = self._stream_of.get((subgroup, shard))
        if st is None:
            return  # a shard this member left in the last view change
        st.on_persisted(version)
        self._evaluate()

    def reply(self, delivery: Delivery, result: bytes) -> None:
        """The application's result for a delivery that asked for one; it goes to the sender
        (`reply_many` for a batch)."""
        assert delivery.reply, "reply() is for deliveries whose sender asked for results"
        self.reply_many((delivery,), (result,))

    def _reply_after_epoch(self, delivery: Delivery, result: bytes) -> None:
        """A result for a delivery of the epoch that just ended: the sender waits for the
        survivors' results (a shard's index is the same in every epoch: declaration order)."""
        g = self._index_of[(delivery.subgroup, delivery.shard)]
        if delivery.sender == self.me:
            self._late_reply(self.me, g, delivery.version, result)
        elif delivery.sender in self._row_of and delivery.version >> 32 == self.epoch - 1:
            frame = FRAME.pack(FRAME_REPLY, g, delivery.version, delivery.version >> 32)
            self._sends.append(Send(delivery.sender, frame + result))

    def reply_many(self, deliveries: Sequence[Delivery], results: Sequence[bytes]) -> None:
        """`reply` for each of a batch's deliveries that asked for a result (the others are
        passed over): the results for each sender are queued together."""
        if self.status != ACTIVE:
            return
        epoch = self.epoch
        me = self.me
        key: tuple[int, int] | None = None
        st: ShardStream | None = None
        queued: dict[int, list[tuple[int, bytes]]] = {}
        for d, result in zip(deliveries, results, strict=True):
            if not d.reply:
                continue
            version = d.version
            if version >> 32 != epoch:
                self._reply_after_epoch(d, result)
                continue
            if key != (d.subgroup, d.shard):
                if queued:
                    assert st is not None
                    self._queue_replies(st, queued)
                    queued = {}
                key = (d.subgroup, d.shard)
                st = self._stream(*key)
            assert st is not None
            sender = d.sender
            if sender == me:
                st.on_reply(me, version, result)
                self._submitted = True  # evaluated once, when the driver next asks for work
            elif sender in self._row_of:
                # sent with the other replies of this batch, in one frame (`_take_replies`)
                items = queued.get(sender)
                if items is None:
                    queued[sender] = [(version, result)]
                else:
                    items.append((version, result))
        if queued:
            assert st is not None
            self._queue_replies(st, queued)

    def _queue_replies(self, st: ShardStream, queued: dict[int, list[tuple[int, bytes]]]) -> None:
        for sender, items in queued.items():
            st.queue_replies(sender, items)
        self._replies_queued = True

    def send_state(self, to: int, subgroup: int, shard: int, version: int, data: bytes) -> None:
        """The driver's answer to `StateTransfer`: the snapshot goes to member `to`."""
        self.transfer.send_state(to, subgroup, shard, version, data)

    @property
    def roster(self) -> Roster:
        """The current view's roster: members' contact cards, ids removed for good (for a
        restarting member, its last view's, as recovered)."""
        if self._built:
            return self.view.roster
        if self._restart is not None:
            return self._restart.recovered.roster
        return Roster()

    def remove(self, member: int) -> None:
        """Ask the group to remove `member` for good: the next view excludes it and its roster
        retires the id, which no view lets in again (a live member halts with `removed`). It
        may be a member of the view or an id outside it (a failed machine already out, which
        must never come back). Raises `UsageError` when refused: this member is not active, the
        id is retired already, or the view without it would have fewer live members than a
        majority of this one, or could not hold every shard's state."""
        if self.status != ACTIVE:
            raise UsageError(f"member {self.me} is {self.status}, not active: ask another member")
        view = self.view
        if member in view.roster.retired:
            raise UsageError(f"member {member} was removed already")
        if member in self._removing:
            return
        if len(self._removing) >= self.config.views.removals_max:
            raise UsageError(
                f"member {self.me} is removing {len(self._removing)} members already (at most "
                f"{self.config.views.removals_max} at once): wait for the next view"
            )
        vc = self.vc
        live = [
            m
            for m in view.members
            if m != member
            and m not in self._removing
            and not vc.suspects(self.table.my_row, self._row_of[m])
        ]
        need = len(view.members) // 2 + 1
        if len(live) < need:
            raise UsageError(
                f"removing member {member} would leave {len(live)} live members of the "
                f"{len(view.members)} in view {view.epoch}, fewer than a majority ({need}): add "
                "a member first, or wait for the failed ones to come back"
            )
        survivors = [m for m in view.members if m != member and m not in self._removing]

        def may_hold(m: int, shard: Shard) -> bool:
            # A member raises its ready flags when it installs the view, before its first
            # heartbeat of the epoch (per-link FIFO): one not heard from yet may hold the state
            # and says so soon; the view change decides on what the rows then show.
            row = self._row_of[m]
            return vc._has_state(m, shard) or self.table.get(row, "heartbeat") == 0

        try:
            plan_next(self.layout_specs, self.shards, live, survivors, may_hold)
        except LayoutError as e:
            raise UsageError(f"removing member {member}: {e}") from None
        self._removing.append(member)
        vc.remove(member)
        self._evaluate()

    def leave(self) -> None:
        """Depart cleanly: the next view excludes this member without suspecting it."""
        if self.status == ACTIVE:
            self._leaving = True
            self.vc.leave()
            self._evaluate()

    def next_tick_ns(self) -> int:
        """The time at which `tick` next has work to do (a heartbeat, a timeout, a retry)."""
        if self.status == HALTED:
            return 1 << 62
        if self.status == JOINING:
            return self.transfer.next_join_ns
        if self.status == RESTARTING:
            assert self._restart is not None
            t_try = self._restart.next_deadline_ns()
            return self.now_ns if t_try is None else t_try
        # asked two or three times on every pass of the loop: comparisons, not min() calls
        t = self.now_ns + self.config.views.suspect_timeout_ns
        if self._next_heartbeat_ns < t:
            t = self._next_heartbeat_ns
        for st in self.streams.values():
            d = st.next_deadline_ns()
            if d is not None and d < t:
                t = d
        for late in self._late.values():
            if late.deadline_ns < t:
                t = late.deadline_ns
        d = self.reads.next_deadline_ns()
        return t if d is None or t <= d else d

    # -- output ---------------------------------------------------------------------------------

    def ready(self) -> Ready:
        assert self._taken is None, "advance() the previous Ready before asking for another"
        if self._submitted:
            self._evaluate()
        if self._replies_queued:
            self._take_replies()
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
        if self._barrier:
            self._barrier = False
            if self.status == ACTIVE:
                self._evaluate()

    def has_ready(self) -> bool:
        if self._submitted and self._taken is None:
            self._evaluate()
        if self._replies_queued and self._taken is None:
            self._take_replies()
        return bool(
            self._persist or self._writes or self._sends or self._deliveries or self._events
        )

    def _take_replies(self) -> None:
        self._replies_queued = False
        for st in self.streams.values():
            if st.reply_out:
                self._sends.extend(st.take_replies())

    # -- helpers for protocol modules -----------------------------------------------------------

    def pushes(self, names: Sequence[str]) -> list[Push]:
        """The writes that copy these columns of my row to every peer (it changes nothing:
        a trigger returns them, an input handler hands them to `push_writes`)."""
        return [Push(self.peers, w.offset, w.data, self.epoch) for w in self.table.push(names)]

    def row_push(self) -> Push:
        w = self.table.push_row()
        return Push(self.peers, w.offset, w.data, self.epoch)

    def push_writes(self, pushes: Sequence[Push]) -> None:
        self._writes.extend(pushes)

    def push_all(self, names: Sequence[str]) -> None:
        self._writes.extend(self.pushes(names))

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

    def halt(self, reason: str, removed: bool = False) -> None:
        """Stop for good: no more inputs are acted on, and the application is told why;
        `removed`: the group removed this id for good, it must not come back."""
        if self.status == HALTED:
            return
        self.status = HALTED
        self.halt_reason = reason
        if self._built:  # a joiner or a restarting member has no epoch (nor predicates) yet
            self._predicates.stop()
        self._events.extend(self.reads.fail_all(f"member {self.me} halted"))
        self._events.append(Halted(reason, removed))

    # -- view installation ----------------------------------------------------------------------

    def install_next(self, decided: Proposal) -> None:
        """The current epoch is over: every survivor delivered up to the ragged trim and, in
        durable shards, persisted it. Build the next epoch from the decided proposal."""
        old_view, old_streams = self.view, self.streams
        self._predicates.stop()
        if self.me not in decided.members:
            removed = self.me in decided.roster.retired
            if removed:
                reason = "was removed from the group for good"
            elif self.table.get(self.table.my_row, "leaving"):
                reason = "left the group cleanly"
            else:
                reason = "the group installed a view without this member"
            self.halt(f"member {self.me} {reason} (view {old_view.epoch + 1})", removed)
            return
        for st in old_streams.values():
            st.flush(self._writes)  # the last counters of the old epoch (persisted) still count
        carried, completed = self._carry_over(old_streams, decided)
        if self._late:
            self._expire_late(decided.members)
        self._prev_row = (self.epoch, self.table.row_bytes_of(self.table.my_row))
        self.prev_table = self.table  # for inspection (transcripts); the next install drops it
        new_view = View(old_view.epoch + 1, decided.members, decided.roster)
        for m in [m for m in self._removing if m in decided.declined]:
            self._removing.remove(m)
            self._events.append(
                RemovalRefused(
                    m,
                    new_view.epoch,
                    f"member {m} was not removed in view {new_view.epoch}: with the other "
                    "removals asked for and the failures since, the view would have kept less "
                    "than a majority of the previous one alive, or a shard without its state; "
                    "nothing changed for it",
                )
            )
        self._build(new_view)
        self._barrier = True
        self._events.extend(completed)
        joiners = set(decided.joiners)
        survivors = [m for m in decided.members if m not in joiners]
        if survivors and survivors[0] == self.me:
            self.transfer.admit(decided)
        self.transfer.plan_state(decided)
        self.transfer.mark_awaited_stale()
        self._persist.append(self._view_meta())
        for (sg, sh), items in carried.items():
            carrier = self._stream_of.get((sg, sh))
            for ticket, payload, reply in items:
                if carrier is None or carrier.my_rank < 0:
                    self._events.append(
                        SubmitFailed(
                            ticket,
                            sg,
                            sh,
                            f"member {self.me} is no longer a sender of subgroup "
                            f"{sg} shard {sh} in view {new_view.epoch}",
                        )
                    )
                else:
                    carrier.submit(ticket, payload, reply, resubmitted=True)
        self._events.append(
            self._installed(
                tuple(decided.joiners),
                tuple(m for m in old_view.members if m not in new_view.members),
            )
        )
        self._submitted = True

    # -- restart after total failure ------------------------------------------------------------

    def _on_restart_frame(self, source: int, kind: int, payload: bytes) -> None:
        if self.status == RESTARTING:
            assert self._restart is not None
            self._restart.on_frame(source, payload)
            self._restart_step()
        elif self.status == ACTIVE and kind in (
            FRAME_RESTART_PREPARE,
            FRAME_RESTART_ACCEPT,
            FRAME_RESTART_COMMIT,
        ):
            # a group is running: the restarting member must join it, not start another
            body = encode_members(self.view.members)
            self._sends.append(
                Send(source, FRAME.pack(FRAME_RESTART_NEWER, 0, 0, self.epoch) + body)
            )
        elif (
            self.status == JOINING
            and kind == FRAME_RESTART_PREPARE
            and self.transfer.offer is not None
            and self._restart_needs_me(source, FRAME.unpack_from(payload)[3])
        ):
            # This member was restarting and turned to join when a member of a running group
            # answered NEWER; this PREPARE says that group is restarting now (its members halted:
            # a two-member view whose members suspected each other, say), and this member's
            # promise may be needed for a majority of its last view: a joiner never gives one,
            # so the restart would wait for it forever. It starts again from its own logs, as a
            # restarted process would (a halt, which the driver follows with a new incarnation);
            # they were marked stale when it turned to join, so it is never taken as a holder.
            self.halt(
                f"member {self.me} was joining a group that is restarting now (member {source} "
                "prepares a restart): it restarts with it from its own logs"
            )

    def _restart_needs_me(self, source: int, instance: int) -> bool:
        """Whether a PREPARE for restart `instance` from `source` may need this joiner's promise.

        Only if the group it turned to join (view `epoch`) is what restarts: the preparer was a
        member of that view and this member is one too (else its promise counts for no majority
        of the instance), or the preparer knows a later view than this member found. A PREPARE of
        an older instance, or from a member that does not know the running view yet (it will
        hear NEWER from that view's members), is no reason to halt: two joiners that restarted
        on each other's PREPAREs would never be admitted."""
        epoch, members = self.transfer.found
        if instance > epoch:
            return True
        return instance == epoch and self.me in members and source in members

    def _restart_step(self) -> None:
        """Take the restart's actions; install its decision, or join the group found running."""
        rs = self._restart
        assert rs is not None
        for action in rs.out:
            if isinstance(action, Send):
                self._sends.append(action)
            else:
                self._persist.append(action)
        rs.out.clear()
        if rs.chosen is not None:
            self._install_restart(rs.chosen)
        elif rs.newer is not None:
            self.transfer.restart_to_joiner(*rs.newer)

    def _view_meta(self) -> LogMeta:
        return self.transfer.view_meta()

    def _install_restart(self, d: RestartDecision) -> None:
        """Resume in the decided view: sequence numbers from zero, logs cut at the agreed
        versions, shard state held (the log ends at the cut) or awaited from the provider."""
        rs = self._restart
        assert rs is not None
        rec = rs.recovered
        self._restart = None
        self.restart_decision = d
        self.status = ACTIVE
        old = rec.members
        self._build(View(d.epoch, d.members, d.roster))
        self._barrier = True
        plans = tuple((p, n) for p, n in d.plans)
        versions = {sh.index: d.cut((sh.subgroup, sh.shard)) for sh in self.shards}
        self.transfer.plan_state(Proposal(1, d.members, (), (), plans), versions)
        truncate = []
        stale = self.transfer.stale_logs
        for key, v in sorted(rec.logged.items()):
            cut = d.cut(key)
            if v > cut:
                truncate.append(LogTruncate(key[0], key[1], cut))
            if v > cut or key in rec.awaiting:
                stale.add(key)
        for st in self.streams.values():
            key = (st.subgroup, st.shard_index)
            if st.awaiting_state and st.mode == "durable":
                stale.add(key)
            elif key in stale and at_cut_of(rec, key, d.cut(key)):
                stale.discard(key)
        # the view first: a crash before the truncations finish leaves those logs marked stale
        self._persist.append(self._view_meta())
        self._persist.extend(truncate)
        self._events.append(self._installed((), tuple(m for m in old if m not in d.members)))
        self._submitted = True

    def _installed(self, joined: tuple[int, ...], departed: tuple[int, ...]) -> ViewInstalled:
        """The upcall for the view just built."""
        return ViewInstalled(
            self.epoch,
            self.view.members,
            self.view.members.index(self.me),
            tuple(
                (st.subgroup, st.shard_index, st.shard.members, st.mode)
                for st in self.streams.values()
            ),
            joined,
            departed,
            self.view.roster,
        )

    def _carry_over(
        self, old_streams: dict[int, ShardStream], decided: Proposal
    ) -> tuple[dict[tuple[int, int], list[tuple[int, bytes, bool]]], list[Any]]:
        """My messages the trim discarded or that never entered the window are submitted again in
        the next epoch, in their order; those delivered but not yet answered are answered now
        (every survivor delivered them and, in durable shards, persisted them)."""
        carried: dict[tuple[int, int], list[tuple[int, bytes, bool]]] = {}
        completed: list[Any] = []
        # a member that rejoins in this view is a new incarnation: it delivered nothing of the
        # old epoch and sends no result for it
        survivors = set(decided.members) - set(decided.joiners)
        from_joiner = self.vc.from_joiner
        for st in old_streams.values():
            # A member still waiting for the shard's state delivered nothing of the trim (the
            # next view's state includes it), but the survivors did: its own messages below the
            # trim are delivered, not to be sent again (unless that state is a joiner's log from
            # before this epoch, which lacks them)
            covered = None
            if st.awaiting_state and st.g not in from_joiner:
                covered = trim_count(decided.trims[st.g])
            items, done = st.carry_over(covered)
            carried[(st.subgroup, st.shard_index)] = items
            expected = frozenset(
                m
                for m in st.shard.members
                if m in survivors and not (m == self.me and covered is not None)
            )
            for event in done:
                if event.results is None or expected <= event.results.keys():
                    completed.append(event)
                else:
                    # Delivered by every survivor, whose results may still be on their way (or
                    # not yet computed): wait for them a little, not for the departed.
                    self._late[(st.g, event.version)] = _Late(
                        event,
                        dict(event.results),
                        expected,
                        self.now_ns + self.config.late_reply_timeout_ns,
                    )
        while len(self._late) > self.config.late_replies_max:
            oldest = min(self._late, key=lambda k: k[1])
            completed.append(self._late.pop(oldest).completed())
        return carried, completed

    def _late_reply(self, member: int, g: int, version: int, result: bytes) -> None:
        late = self._late.get((g, version))
        if late is None or member not in late.expected:
            return
        late.results[member] = result
        if late.expected <= late.results.keys():
            del self._late[(g, version)]
            self._events.append(late.completed())

    def _expire_late(self, members: Sequence[int] | None = None) -> None:
        """Late replies from members no longer in the view, or after the timeout, are not
        waited for."""
        for key, late in list(self._late.items()):
            if members is not None:
                late.expected = late.expected & frozenset(members)
            if late.expected <= late.results.keys() or self.now_ns >= late.deadline_ns:
                del self._late[key]
                self._events.append(late.completed())

    def batched(self) -> _Batch:
        """Inputs given inside are evaluated once, on leaving (a driver wraps what one poll of
        its transport read). The predicates are monotonic, so evaluating after several inputs is
        as good as after each; Derecho's predicate thread likewise reads whatever the table
        holds. If the block raises, evaluation waits for the next `has_ready`/`ready`."""
        return self._batch

    def _batch_enter(self) -> None:
        self._batch_depth += 1

    def _batch_exit(self, failed: bool) -> None:
        self._batch_depth -= 1
        if failed:
            self._submitted = self._submitted or self._batch_pending
            self._batch_pending = False
        elif self._batch_depth == 0 and self._batch_pending:
            self._batch_pending = False
            self._evaluate()

    def _take_effects(self, actions: list[Any]) -> list[Any]:
        """Carry out the triggers' pushes and deliveries, in the order they fired, before the
        rest of their actions (and before an install: the old epoch's pushes go out first, the
        trim's entries are delivered in it); return the rest."""
        rest: list[Any] = []
        writes, deliveries = self._writes, self._deliveries
        for action in actions:
            kind = type(action)
            if kind is Push:
                writes.append(action)
            elif kind is Deliver:
                deliveries.extend(action.deliveries)
            else:
                rest.append(action)
        return rest

    def _evaluate(self) -> None:
        if self._batch_depth:
            self._batch_pending = True
            return
        self._submitted = False
        if self.status != ACTIVE:
            return
        if self._replies_queued:
            self._take_replies()  # before an install can replace the streams that hold them
        while True:
            epoch = self.epoch
            if len(self.reads):
                self._writes.extend(self.reads.start())
            if self.transfer.arrived:
                self._events.extend(self.transfer.take_state())
            suspected = False
            actions: list[Any] = []
            try:
                self._predicates.evaluate(self, actions)
            except PeerProtocolError as e:
                # A trigger met a peer's bad input half-way through its work: what it changed
                # cannot be trusted, so this member stops (and rejoins with state transfer);
                # decoders that can drop an input whole report it as PeerMisbehaved instead.
                self._take_effects(actions)
                self._events.append(PeerMisbehaved(e.peer or 0, self.epoch, str(e)))
                self.halt(f"member {self.me} halted on a peer's bad input: {e}")
                return
            actions = self._take_effects(actions)
            if actions and type(actions[-1]) in FINAL_ACTIONS:
                # The epoch ends (or the member stops) before what the earlier triggers returned
                # is taken: their actions follow the install's, as they always have.
                final = actions.pop()
                if type(final) is InstallView:
                    self.install_next(final.decided)
                else:
                    self.halt(final.reason)
            for action in actions:
                if isinstance(action, Send):
                    self._sends.append(action)
                elif isinstance(action, (LogAppend, LogMeta, LogTruncate, LogSnapshot)):
                    self._persist.append(action)
                elif type(action) is PeerMisbehaved:
                    self._misbehaved(action)
                    suspected = True
                else:
                    self._events.append(action)
            if self.status != ACTIVE:
                return
            for st in self.streams.values():
                if st.dirty_counters or st.dirty_slots is not None:
                    st.flush(self._writes)
            if (self.epoch == epoch and not suspected) or self._barrier:
                return


class _Batch:
    """`Replica.batched()`'s context manager: one object per replica, entered on every pass of
    the loop (contextlib's form made a generator and its frames per pass)."""

    __slots__ = ("_replica",)

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def __enter__(self) -> None:
        self._replica._batch_enter()

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._replica._batch_exit(kind is not None)
