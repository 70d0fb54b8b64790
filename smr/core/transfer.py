"""Joins and state transfer: how a process gets into the group and how a shard's state reaches
the members that need it.

This module owns the protocol with the most cases: joins, state-transfer plans carried out,
offers of state from restarted members and the rules by which members vouch for them, and the
marks on logs that do not hold a shard's state. `Transfer` is one member's part; the replica
owns one (`Replica.transfer`) and feeds it the frames and the moments below. The view change
(`smr.core.views`) decides who joins and plans, per shard of the next view, its provider and
the members that need its state (`views.plan_next`, from the ready flags and the vouched
offers); everything else is here, in this order:

1. **Asking.** A process outside the group (`Replica.joiner`), or a member that restarted from
   its disk and found the group running (`restart_to_joiner`), sends a join request to one of
   its contacts every `join_retry_ns`. The request carries its *offer*: the epoch of its last
   installed view and the last logged version of each durable shard log it held the state of
   then (`offer_body`). What it offers is logged first (`LogMeta("offer")`), and every log it
   restarted with is marked stale, so no later restart takes one as a holder.
2. **Vouching.** A member of the view that receives the request relays the join in its row
   (`ViewChange.relay_join`) with the shards whose offered log it vouches for: the log holds
   exactly the shard's state at the start of this epoch, by what this member knows of the epoch
   (`offer_mask` gives the rules). A request from a member of this view that never started is
   not relayed before that member is suspected.
3. **Planning.** The view-change leader proposes the next view with each shard's provider: a
   survivor that holds the state, else a joiner whose offer was vouched for.
4. **Installing.** At the install, the first survivor sends each joiner its acceptance (the
   view, the shards it must wait for, the shards it provides from its own log: `join_ok`), and
   each provider gets a `StateTransfer` event per member that needs its state (`plan_state`).
5. **Sending.** The driver snapshots the shard's state machine and calls `Replica.send_state`;
   the frame is kept for the epoch and sent again after a reconnection while the member's ready
   flag says it still waits (`resend`).
6. **Receiving.** A state frame is kept until the member knows it waits for it (frames may come
   before the acceptance). Taken (`take_state`), it becomes a `RestoreState` event, a
   `LogSnapshot` for a durable shard (the log is replaced by the snapshot) and the log's stale
   mark is lifted; the shard's ready flag goes up, and nothing of the shard is delivered before
   the driver has restored it (the replica's barrier).
7. **Entering.** The joiner, on its acceptance (`on_join_ok`, `join`), enters the view: it waits
   for the shards listed, provides the ones named from its log (only those whose log it still
   has), and drops every other log it restarted with (they may hold entries beyond the group's
   cut, which must never come back).

Stale logs: a durable shard log that does not hold the shard's state (a newcomer's, before its
snapshot; a restarted member's beyond a cut) is listed in the "view" metadata record, so that a
restart after a total failure never counts it as a holder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smr.core.codec import (
    FRAME,
    FRAME_JOIN_OK,
    FRAME_JOIN_REFUSED,
    FRAME_JOIN_REQUEST,
    FRAME_STATE,
    WordReader,
    encode_members,
    pack_words,
)
from smr.core.errors import PeerProtocolError
from smr.core.layout import Shard, allocate
from smr.core.multicast import ShardStream
from smr.core.ready import LogMeta, LogSnapshot, LogTruncate, Send
from smr.core.restart import encode_offer_meta, encode_view_meta
from smr.core.views import Proposal, Roster, View

if TYPE_CHECKING:
    from smr.core.replica import Replica

Key = tuple[int, int]


@dataclass(frozen=True, slots=True)
class StateTransfer:
    """Event for a shard's state provider: snapshot the state machine of (subgroup, shard) as it
    stands now (after every delivery of the previous epoch, before any of this one) and pass it to
    `Replica.send_state` for member `to`, with the version it is at; a non-zero `version` is the
    one the core expects it at (a restart's cut, the joiner's own log)."""

    to: int
    subgroup: int
    shard: int
    version: int


@dataclass(frozen=True, slots=True)
class RestoreState:
    """Event for a member that needs state: restore the state machine of (subgroup, shard) from
    `data` (a snapshot at `version`) before applying any later delivery of that shard."""

    subgroup: int
    shard: int
    version: int
    data: bytes


class Transfer:
    """One member's joins and state transfers, across the epochs it lives through."""

    def __init__(self, replica: Replica):
        self.r = replica
        self.join_contacts: tuple[int, ...] = ()
        self.next_join_ns = 0
        self.awaiting: set[int] = set()  # shard indices whose state has not arrived
        self.arrived: dict[int, tuple[int, bytes]] = {}  # shard index -> (version, snapshot)
        # as the view-change leader's first survivor: each joiner's shards to wait for, and the
        # shards it provides from its own log
        self.awaiting_for_joiners: dict[int, tuple[int, ...]] = {}
        self.providing_for_joiners: dict[int, tuple[int, ...]] = {}
        # shard index -> (the member this epoch's plan named as its provider, whether it was a
        # joiner providing from its own log); see `offer_mask`
        self.providers: dict[int, tuple[int, bool]] = {}
        # A member that restarted from its disk and found a group running: its logs stay as they
        # are until it is admitted, so that it can offer the state they hold (`offer_body`):
        # (epoch of its last view, last version of each log it offers), and every shard log it
        # restarted with (dropped on admission unless it provides from it).
        self.offer: tuple[int, dict[Key, int]] | None = None
        self.restart_logs: tuple[Key, ...] = ()
        # (epoch, members) of the running view such a member turned to join, as it learned of it
        self.found: tuple[int, tuple[int, ...]] = (0, ())
        # (shard index, member) -> the state frame sent in this epoch, to send again after a
        # reconnection (the driver snapshots once; the shard does not move until it arrives)
        self.sent: dict[tuple[int, int], bytes] = {}
        # (subgroup, shard) whose log does not hold the shard's state (see LogMeta "view")
        self.stale_logs: set[Key] = set()

    def new_epoch(self) -> None:
        """A table was built: what was waited for, arrived or sent belonged to the last one."""
        self.awaiting = set()
        self.arrived = {}
        self.sent = {}
        self.providers = {}  # set by plan_state for the epoch being installed

    def view_meta(self) -> LogMeta:
        r = self.r
        meta = encode_view_meta(r.epoch, r.view.members, self.stale_logs, r.view.roster)
        return LogMeta("view", meta, sync=True)

    # -- 1. asking --------------------------------------------------------------------------------

    def tick_joining(self, now_ns: int) -> None:
        if now_ns >= self.next_join_ns:
            r = self.r
            i = (now_ns // r.config.join_retry_ns) % len(self.join_contacts)
            card = r.card
            frame = FRAME.pack(FRAME_JOIN_REQUEST, 0, len(card), 0) + card + self.offer_body()
            r._sends.append(Send(self.join_contacts[i], frame))
            self.next_join_ns = now_ns + r.config.join_retry_ns

    def restart_to_joiner(self, epoch: int, members: Sequence[int]) -> None:
        """A group resumed without this member: join it with state transfer. Its shard logs stay
        as they are until it is admitted: a log that holds a shard's state the group lost (its
        only holder failed while a newcomer waited for it) is offered in the join request
        (`offer_body`) and provided from; every other log is dropped on admission (`join`),
        since it may hold entries beyond the group's cut, which must never come back.

        Every log is marked stale now, as before, so that no later restart takes one as a holder
        (one may be beyond a cut this member never heard of); what it offers is logged first
        (`LogMeta("offer")`), so a crash while joining does not lose the offer."""
        r = self.r
        rs = r._restart
        assert rs is not None
        rec = rs.recovered
        # A durable shard this member held in its last view with nothing logged (no log at all)
        # was at the empty state, version 0: durable before visible, so anything delivered in
        # it would be in the log (and a newcomer logs the snapshot it receives).
        logged = {
            (sh.subgroup, sh.shard): 0
            for sh in allocate(rec.members, r.layout_specs)
            if sh.mode == "durable" and r.me in sh.members
        }
        logged.update(rec.logged)
        offered = {k for k in logged if k not in rec.awaiting}
        if rec.offer_epoch == rec.epoch:
            offered |= set(rec.offerable) & set(logged)  # offered before a crash
        self.offer = (rec.epoch, {k: logged[k] for k in sorted(offered)})
        self.restart_logs = tuple(sorted(rec.logged))
        keys = set(rec.logged) | set(rec.awaiting)
        self.stale_logs |= keys
        r._persist.append(LogMeta("offer", encode_offer_meta(rec.epoch, offered), sync=True))
        r._persist.append(
            LogMeta("view", encode_view_meta(rec.epoch, rec.members, keys, rec.roster), sync=True)
        )
        from smr.core.replica import JOINING

        r._restart = None
        r.status = JOINING
        self.join_contacts = tuple(m for m in members if m != r.me) or rs.contacts
        self.found = (epoch, tuple(members))
        self.next_join_ns = r.now_ns

    def offer_body(self) -> bytes:
        """The join request's offer: the epoch of this member's last installed view and, per
        durable shard log it offers (it held the shard's state then), the last logged version.
        Empty for a joiner without logs."""
        if self.offer is None:
            return b""
        epoch, held = self.offer
        words = [epoch, len(held)]
        for (sg, sh), v in sorted(held.items()):
            words.extend((sg, sh, v))
        return pack_words(words)

    # -- 2. vouching ------------------------------------------------------------------------------

    def on_join_request(self, source: int, card_bytes: int, body: bytes) -> bool:
        """A join request reached this active member; True when it was relayed. A request from
        an id the group removed for good is refused, saying so."""
        r = self.r
        if not 0 <= card_bytes <= min(len(body), r.config.views.card_bytes_max):
            raise PeerProtocolError(f"a join request from {source} with a {card_bytes}-byte card")
        card, body = bytes(body[:card_bytes]), body[card_bytes:]
        if source in r.view.roster.retired:
            why = (
                f"member {source} was removed from the group for good (member {r.me}, view "
                f"{r.epoch}): start it with a new id to add it again"
            )
            r._sends.append(
                Send(source, FRAME.pack(FRAME_JOIN_REFUSED, 0, 0, r.epoch) + why.encode())
            )
            return False
        row = r._row_of.get(source)
        if (
            row is not None
            and r.table.get(row, "heartbeat") == 0
            and not r.vc.suspects(r.table.my_row, row)
        ):
            # A member of this view that has not started: its acceptance was lost, or it is a
            # later incarnation of it. Either way it is suspected once its silence times out,
            # and its next request is relayed then (a view change without its old row may need
            # the state its logs hold); answering now could let a new incarnation take over the
            # old one's row in the middle of the epoch.
            return False
        r.vc.relay_join(
            source, self.offer_mask(source, body), self.never_installed(source, body), card
        )
        return True

    def _decode_offer(self, joiner: int, body: bytes) -> tuple[int, dict[Key, int]]:
        """A join request's offer: (epoch of the joiner's last view, last logged version of each
        shard log it offers)."""
        w = WordReader(body, f"join offer from {joiner}", words_max=2 + 3 * len(self.r.shards))
        epoch, n = w.take(2)
        if n < 0 or w.left != 3 * n:
            raise PeerProtocolError(f"a malformed join offer from {joiner}")
        logged = {}
        for _ in range(n):
            subgroup, shard, version = w.take(3)
            logged[(subgroup, shard)] = version
        return epoch, logged

    def never_installed(self, joiner: int, body: bytes) -> bool:
        """Whether the joiner is a member of this view whose own log shows it never installed
        it: the last view it logged is older (a view is logged before it is installed)."""
        if not body or joiner not in self.r.view.members:
            return False
        epoch, _ = self._decode_offer(joiner, body)
        return epoch < self.r.epoch

    def offer_mask(self, joiner: int, body: bytes) -> list[int]:
        """The shards of this view whose state, as of the start of this epoch, the joiner's log
        holds exactly, by what its offer says and what this member knows of the epoch:

        * the epoch was installed by a restart, and the joiner's log ends exactly at the cut
          (logs are prefixes of one agreed history, and the versions a restart cut away are
          never used again, so a log that ends at an agreed version holds exactly that prefix);
        * the joiner's last view is this one and it held the shard in it (a survivor persisted
          the previous epoch's trim before installing, a newcomer logged its snapshot; a log
          marked stale is not offered);
        * this epoch's plan already named the joiner as the shard's provider, and either it was
          a joiner admitted to provide from its log (it failed, or lost its acceptance, before
          it sent the state) or its last view is this one (a survivor that installed the view
          and failed before the state arrived: it persisted the previous trim before
          installing). A survivor provider that failed before installing is not vouched for:
          the others need not have waited for its persistence once they suspected it.

        and the log holds nothing of this epoch. The view-change leader uses an offer only for a
        shard none of whose survivors holds its state (`ViewChange._propose`)."""
        if not body:
            return []
        r = self.r
        epoch, logged = self._decode_offer(joiner, body)
        d = r.restart_decision
        restarted = d is not None and d.epoch == r.epoch
        out = []
        for sh in r.shards:
            key = (sh.subgroup, sh.shard)
            if sh.mode != "durable" or key not in logged or logged[key] >> 32 >= r.epoch:
                continue
            provider, from_log = self.providers.get(sh.index, (0, False))
            if (
                (restarted and d is not None and logged[key] == d.cut(key))
                or (epoch == r.epoch and joiner in sh.members)
                or (provider == joiner and (from_log or epoch == r.epoch))
            ):
                out.append(sh.index)
        return out

    # -- 4. installing ----------------------------------------------------------------------------

    def admit(self, decided: Proposal) -> None:
        """As the first survivor of the decided view: tell each joiner what it enters with."""
        r = self.r
        self.awaiting_for_joiners = {
            j: tuple(
                sh.index
                for sh, (_, needy) in zip(r.shards, decided.plans, strict=True)
                if j in needy
            )
            for j in decided.joiners
        }
        self.providing_for_joiners = {
            j: tuple(
                sh.index
                for sh, (provider, _) in zip(r.shards, decided.plans, strict=True)
                if provider == j
            )
            for j in decided.joiners
        }
        r._sends.extend(Send(j, self.join_ok(j)) for j in decided.joiners)

    def join_ok(self, joiner: int) -> bytes:
        """The view a joiner enters, and the shards whose state it must wait for."""
        r = self.r
        awaiting = self.awaiting_for_joiners.get(joiner, ())
        provides = self.providing_for_joiners.get(joiner, ())
        return (
            FRAME.pack(FRAME_JOIN_OK, 0, 0, r.epoch)
            + encode_members(r.view.members)
            + encode_members((-1, *awaiting))
            + encode_members((-2, *provides))
            + pack_words((-3, *r.view.roster.words()))
        )

    def plan_state(self, decided: Proposal, versions: dict[int, int] | None = None) -> None:
        """Carry out the decided state transfers: provide, or wait for, each shard's state."""
        r = self.r
        assert len(decided.plans) == len(r.shards)
        self.providers = {
            sh.index: (provider, provider in decided.joiners)
            for sh, (provider, _) in zip(r.shards, decided.plans, strict=True)
            if provider
        }
        for shard, (provider, needy) in zip(r.shards, decided.plans, strict=True):
            if provider == r.me:
                v = (versions or {}).get(shard.index, 0)
                r._events.extend(
                    StateTransfer(m, shard.subgroup, shard.shard, v) for m in needy if m != r.me
                )
            st = r.streams.get(shard.index)
            if st is None:
                continue
            self.await_state(st, r.me in needy)

    def mark_awaited_stale(self) -> None:
        """A durable shard this member now waits for: its log does not hold the state."""
        self.stale_logs |= {
            (st.subgroup, st.shard_index)
            for st in self.r.streams.values()
            if st.awaiting_state and st.mode == "durable"
        }

    # -- 5. sending -------------------------------------------------------------------------------

    def send_state(self, to: int, subgroup: int, shard: int, version: int, data: bytes) -> None:
        r = self.r
        new_shard = next(s for s in r.shards if (s.subgroup, s.shard) == (subgroup, shard))
        frame = FRAME.pack(FRAME_STATE, new_shard.index, version, r.epoch) + data
        self.sent[(new_shard.index, to)] = frame
        r._sends.append(Send(to, frame))

    def resend(self, peer: int) -> None:
        """The link to `peer` is new: the state may have been lost with the connection; send it
        again while the member still waits for it (nothing of the shard is delivered until it
        has it)."""
        r = self.r
        for (g, to), frame in self.sent.items():
            peer_row = r._row_of.get(peer)
            ready = r.table.layout[f"s{g}_ready"].word
            if to == peer and (
                peer_row is None or not r.table.words[peer_row * r.table.row_words + ready]
            ):
                r._sends.append(Send(peer, frame))

    # -- 6. receiving -----------------------------------------------------------------------------

    def on_state_frame(self, g: int, version: int, data: bytes) -> None:
        self.arrived[g] = (version, data)  # taken once we know we wait for it

    def await_state(self, st: ShardStream, needed: bool) -> None:
        """A shard's state is to arrive from its provider (`needed`), or is here already."""
        if needed:
            self.awaiting.add(st.g)
            st.awaiting_state = True
        else:
            st.set_ready()

    def take_state(self) -> list[Any]:
        r = self.r
        events: list[Any] = []
        for g, (version, data) in list(self.arrived.items()):
            del self.arrived[g]
            if g not in self.awaiting:
                continue  # a duplicate, or state we already have
            st = r.streams[g]
            events.append(RestoreState(st.subgroup, st.shard_index, version, data))
            key = (st.subgroup, st.shard_index)
            if st.mode == "durable":
                r._persist.append(LogSnapshot(key[0], key[1], version, data))
            if key in self.stale_logs:
                self.stale_logs.discard(key)
                r._persist.append(self.view_meta())
            st.set_ready()
            self.awaiting.discard(g)
            r._barrier = True  # restore before any delivery of this shard
        return events

    # -- 7. entering ------------------------------------------------------------------------------

    def on_join_ok(self, source: int, epoch: int, body: bytes) -> None:
        """A join acceptance reached this joining process."""
        r = self.r
        # the view's members, then (-1, awaited shards...), (-2, provided shards...) and -3,
        # the view's roster
        w = WordReader(body, f"join acceptance from {source}")
        members = w.seq()
        if not 0 < len(members) <= r.config.views.members_max:
            raise PeerProtocolError(f"a malformed join acceptance from {source}")
        awaiting = w.seq()
        provides = w.seq() if w.left else (-2,)
        if awaiting[:1] != (-1,) or provides[:1] != (-2,):
            raise PeerProtocolError(f"a malformed join acceptance from {source}")
        roster = Roster()
        if w.left:
            if w.one() != -3:
                raise PeerProtocolError(f"a malformed join acceptance from {source}")
            roster = Roster.read(w, r.config.views.card_bytes_max)
        if w.left:
            raise PeerProtocolError(f"a malformed join acceptance from {source}")
        awaiting, provides = awaiting[1:], provides[1:]
        if r.me not in members:
            raise PeerProtocolError(f"a join acceptance from {source} that omits me")
        self.join(View(epoch, members, roster), awaiting, provides)

    def on_join_refused(self, source: int, body: bytes) -> None:
        """A member refused this joiner: its id was removed from the group for good."""
        why = bytes(body[:512]).decode("utf-8", "replace") or f"member {source} refused the join"
        self.r.halt(why, removed=True)

    def join(self, view: View, awaiting: Sequence[int], provides: Sequence[int] = ()) -> None:
        """Enter the group in `view`: wait for the state of the shards in `awaiting`, and provide
        from this member's own logs the state of the shards in `provides` (its offer)."""
        r = self.r
        n_shards = len(allocate(view.members, r.layout_specs))
        for g in (*awaiting, *provides):
            if not 0 <= g < n_shards:
                raise PeerProtocolError(f"a join acceptance naming shard {g} of {n_shards}")
        from smr.core.replica import ACTIVE

        offer, self.offer = self.offer, None
        r.status = ACTIVE
        r._build(view)
        r._barrier = True
        held_logs = {} if offer is None else offer[1]
        held: list[Shard] = []
        for g in provides:
            sh = r.shards[g]
            # An offer relayed for an earlier incarnation whose logs are gone (a damaged disk):
            # never claim a state this member does not have; the shard then waits.
            if (sh.subgroup, sh.shard) in held_logs:
                held.append(sh)
        held_idx = {sh.index for sh in held}
        for st in r.streams.values():
            self.await_state(st, st.g in awaiting or (st.g in provides and st.g not in held_idx))
            if st.awaiting_state and st.mode == "durable":
                self.stale_logs.add((st.subgroup, st.shard_index))
        for sh in held:
            key = (sh.subgroup, sh.shard)
            r._events.extend(
                StateTransfer(m, sh.subgroup, sh.shard, held_logs[key])
                for m in sh.members
                if m != r.me
            )
        # Every other log this member restarted with is dropped: it may hold entries beyond the
        # group's cut (marked stale since it found the group). A log it provides from holds the
        # shard's state: no longer stale. (The offer logged then is void once the view is this.)
        kept = {(sh.subgroup, sh.shard) for sh in held}
        dropped = [k for k in self.restart_logs if k not in kept]
        self.restart_logs = ()
        self.stale_logs -= kept
        r._persist.append(self.view_meta())
        r._persist.extend(LogTruncate(sg, sh, 0) for sg, sh in dropped)
        r._events.append(r._installed((r.me,), ()))
