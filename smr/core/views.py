"""Epoch-based view changes: failure detection, wedging, the proposal with its ragged trim, leader
failover, commit, and the hand-over to the next epoch. Virtual synchrony as Derecho does it,
written as predicates over the table.

This module owns the view-change columns and predicates of one epoch (`ViewChange`) and the
`Proposal` they agree on. The steps, in predicate order:

1. **Detect.** Every member raises `heartbeat` each period; a peer whose heartbeat has not moved
   for `suspect_timeout_ns` (or whose link the transport reports failed) is suspected:
   `suspected[me][peer]` is set. Peers silent for half the timeout or more are suspected
   together, once all of them are past it (a member cut off from the rest suspects them all at
   once), and a peer heard again after such a silence restarts the clocks of the others as
   silent (a partition healed; their first writes may still be on the way). Suspicions are
   merged: a member adopts what the rows of members
   it does not suspect (and that do not suspect it) suspect, once the suspecting member has shown
   it is still alive (or it has itself not heard from the suspect for half the timeout). A member
   learns that it was cut off when the majority commits a view without it; then it halts.
2. **Wedge.** A member that sees a reason to change the view (a suspicion, a join request, a
   member leaving) wedges: it stops sending, receiving and delivering in this epoch, so its
   `received` and `seq` columns freeze, and pushes its whole row to every member (the leader needs
   every shard's counters). Partition safety: a member that sees half or more of the view
   suspected may be in a minority: it halts and never installs a view on its own.
3. **Ballots.** The leader is the lowest-ranked member not suspected; a member follows it by
   setting `ballot = leader rank + 1` (ballots only grow, as suspicions do).
4. **Propose.** The leader waits until every unsuspected member is wedged and follows its ballot.
   Those rows are a majority of the view, so if any earlier leader's proposal may have been
   committed, one of them acknowledged it: the leader adopts the acknowledged proposal with the
   highest ballot (leader failover, Derecho's #126). Otherwise it computes one: the next view's
   members (survivors in rank order, then joiners) and, per shard, the **ragged trim**: for each
   sender, the minimum over the shard's survivors of `received` (everyone surviving has those
   messages). It proposes only a view that can provision every shard's layout and keeps every
   shard's state on a survivor; otherwise the view is blocked (`ViewBlocked`).
5. **Acknowledge.** A follower copies its leader's proposal into its own row, **after logging it
   durably** (a `LogMeta` with `sync=True`, which the driver makes durable before the push that
   shows the acknowledgement). So every member has logged the trim before any member applies it
   (Derecho's #104). The leader logs before proposing.
6. **Commit.** When every unsuspected member acknowledged the leader's ballot, it sets
   `committed`; anyone who sees a committed row adopts that row's proposal (any proposal at a
   ballot at or above a committed one carries the same value) and echoes `committed`.
7. **Trim and install.** Each member delivers, in each of its shards, exactly the messages below
   the trim (in sequence order) and discards the rest; in durable shards it waits until every
   surviving shard member persisted that far; then the replica installs the next epoch: a new
   table, sequence numbers from zero, and a `ViewInstalled` upcall.

Improvement on Derecho, named: the ragged trim is part of the proposal and is decided with it by
the same ballot-and-majority rule, instead of a second per-shard leader round; one agreed value,
logged at every member before anyone applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smr.core.codec import WORD, WordReader, pack_words
from smr.core.errors import LayoutError, PeerProtocolError
from smr.core.layout import Shard, SubgroupSpec, allocate
from smr.core.predicates import Kind, Predicate
from smr.core.ready import LogMeta, Push
from smr.core.table import Column, byte_slots, counter, flag, vector

if TYPE_CHECKING:
    from smr.core.replica import Replica


CARD_BYTES_MAX = 128
RETIRED_MAX = 256


@dataclass(frozen=True, slots=True)
class ViewConfig:
    suspect_timeout_ns: int = 40_000_000
    # In a group's founding view, a founder that has not started yet (its heartbeat is still 0)
    # is suspected only after this long: processes of one cluster start seconds apart, and a
    # founder must not be cut off for being the last to come up. 0: no grace (the simulator,
    # whose founders all start at time 0).
    startup_grace_ns: int = 0
    # In any later view, a member that has not started it yet (a joiner still taking its
    # JOIN_OK and state, a survivor still logging the view) is suspected only after this long.
    install_grace_ns: int = 0
    # A member whose own ticks stopped for half the timeout (its process was stopped or starved)
    # restarts its peers' silence clocks instead of suspecting them for its own pause. Off for
    # drivers that jump time on purpose (transcripts); the node runtime turns it on.
    forgive_own_pauses: bool = False
    members_max: int = 64  # members a view may have (joiners included)
    joins_max: int = 8  # join requests a member relays at once
    card_bytes_max: int = CARD_BYTES_MAX  # a member's contact card (`Roster`), opaque here
    removals_max: int = 8  # removals a member asks for at once (`remove`)
    retired_max: int = RETIRED_MAX  # ids a roster remembers as removed for good (newest kept)
    partition_safety: bool = True

    def __post_init__(self) -> None:
        assert self.suspect_timeout_ns > 0
        assert 1 <= self.joins_max <= self.members_max
        assert self.card_bytes_max > 0 and 1 <= self.removals_max <= self.retired_max


def _card_words(card: bytes) -> list[int]:
    padded = card + bytes(-len(card) % 8)
    words = memoryview(padded).cast("q") if padded else ()
    return [len(card), *words]


@dataclass(frozen=True, slots=True)
class Roster:
    """What a view says about its members beyond their ids: each member's contact card (bytes
    the driver gave the member's replica, `card=`, carried through its join: its addresses, say;
    opaque here) and the ids removed from the group for good (`Replica.remove`), which are never
    let in again. Decided with the view, logged with it, handed to joiners with their acceptance
    and to a restart with the recovered view, so every member of any later view knows it."""

    cards: tuple[tuple[int, bytes], ...] = ()  # (member, card), in member order
    retired: tuple[int, ...] = ()  # oldest first

    def card(self, member: int) -> bytes | None:
        for m, c in self.cards:
            if m == member:
                return c
        return None

    def dict_cards(self) -> dict[int, bytes]:
        return dict(self.cards)

    def words(self) -> list[int]:
        out = [len(self.cards)]
        for m, c in self.cards:
            out.append(m)
            out.extend(_card_words(c))
        out.append(len(self.retired))
        out.extend(self.retired)
        return out

    @classmethod
    def read(cls, w: WordReader, card_bytes_max: int) -> Roster:
        cards = []
        for _ in range(w.one()):
            m, n = w.take(2)
            if not 0 <= n <= card_bytes_max:
                raise PeerProtocolError(f"a {w.what} with a card of {n} bytes")
            data = pack_words(w.take((n + 7) // 8))[:n]
            cards.append((m, data))
        retired = w.seq()
        if len({m for m, _ in cards}) != len(cards) or len(set(retired)) != len(retired):
            raise PeerProtocolError(f"a {w.what} with a malformed roster")
        return cls(tuple(sorted(cards)), retired)

    @staticmethod
    def words_max(config: ViewConfig) -> int:
        per_card = 2 + (config.card_bytes_max + 7) // 8
        return 2 + config.members_max * per_card + config.retired_max

    def next(
        self,
        members: Sequence[int],
        joiner_cards: dict[int, bytes],
        removed: Sequence[int],
        retired_max: int,
    ) -> Roster:
        """The roster of a next view with `members`: cards of members that stay, those the
        joiners brought (a joiner's new card replaces its old one), and the newly removed."""
        cards = dict(self.cards)
        cards.update(joiner_cards)
        retired = list(self.retired) + [m for m in removed if m not in self.retired]
        return Roster(
            tuple(sorted((m, c) for m, c in cards.items() if m in members and c)),
            tuple(retired[-retired_max:]),
        )


EMPTY_ROSTER = Roster()


@dataclass(frozen=True, slots=True)
class View:
    epoch: int
    members: tuple[int, ...]
    roster: Roster = EMPTY_ROSTER


@dataclass(frozen=True, slots=True)
class Proposal:
    """The next view and the ragged trim of the current one, as the leader of `ballot` proposed.

    `trims[g]` is, for the current view's shard `g`, the number of messages of each sender (in
    sender rank order) that every survivor delivers before the epoch ends; `joiners` are the
    members of `members` that were not survivors of the current view (they need state);
    `roster` is the next view's (`Roster`); `declined` are removals asked for (`Replica.remove`)
    that the leader did not carry out: together with the others they would have left less than
    a majority of the view, or a shard without its state."""

    ballot: int
    members: tuple[int, ...]
    joiners: tuple[int, ...]
    trims: tuple[tuple[int, ...], ...]
    # per shard of the next view (allocation order): (provider, members that need its state);
    # provider 0 when nobody needs state
    plans: tuple[tuple[int, tuple[int, ...]], ...] = ()
    roster: Roster = EMPTY_ROSTER
    declined: tuple[int, ...] = ()

    def encode(self) -> bytes:
        words = [
            self.ballot,
            len(self.members),
            *self.members,
            len(self.joiners),
            *self.joiners,
            len(self.trims),
        ]
        for t in self.trims:
            words.append(len(t))
            words.extend(t)
        words.append(len(self.plans))
        for provider, needy in self.plans:
            words.extend((provider, len(needy), *needy))
        words.extend(self.roster.words())
        words.extend((len(self.declined), *self.declined))
        return pack_words(words)

    @classmethod
    def decode(cls, data: bytes, card_bytes_max: int = CARD_BYTES_MAX) -> Proposal:
        # a proposal lives in a fixed-size byte slot of the table: zero padded (and a roster of
        # zero words is the empty one, so a proposal logged before rosters existed reads)
        w = WordReader(data, "view proposal", padded=True)
        ballot = w.one()
        members = w.seq()
        joiners = w.seq()
        trims = tuple(w.seq() for _ in range(w.one()))
        plans: list[tuple[int, tuple[int, ...]]] = []
        for _ in range(w.one()):
            provider = w.one()
            plans.append((provider, w.seq()))
        roster = Roster.read(w, card_bytes_max) if w.left else Roster()
        declined = w.seq() if w.left else ()
        if ballot <= 0 or not members or len(set(members)) != len(members):
            raise PeerProtocolError(f"a view proposal with ballot {ballot} and members {members}")
        if set(members) & set(roster.retired):
            raise PeerProtocolError(f"a view proposal with removed members {roster.retired}")
        return cls(ballot, members, joiners, trims, tuple(plans), roster, declined)

    @staticmethod
    def words_max(config: ViewConfig, shards: Sequence[Shard]) -> int:
        plans = len(shards) * (2 + config.members_max)  # the next view has as many shards
        return (
            5
            + 2 * config.members_max
            + len(shards)
            + sum(len(s.senders) for s in shards)
            + plans
            + Roster.words_max(config)
            + 1
            + config.members_max * config.removals_max
        )


def trim_count(trim: Sequence[int]) -> int:
    """The number of sequence numbers a per-sender trim covers: the contiguous prefix of the
    round robin in which every message's index is below its sender's trim."""
    m = min(trim)
    return m * len(trim) + list(trim).index(m)


def offer_words(shards: Sequence[Shard]) -> int:
    """Words of one joiner's offer mask: one bit per shard of the view, and bit `len(shards)`
    for a joiner that is a member of this view and never installed it (`relay_join`)."""
    return (len(shards) + 64) // 64


def _card_slot_bytes(config: ViewConfig) -> int:
    return 8 + 8 * ((config.card_bytes_max + 7) // 8)


def columns(n: int, shards: Sequence[Shard], config: ViewConfig) -> tuple[Column, ...]:
    prop_bytes = 8 * Proposal.words_max(config, shards)
    return (
        vector("suspected", n, "1 where this member suspects that member"),
        flag("wedged", "stopped sending, receiving and delivering in this epoch"),
        counter("ballot", "leader rank + 1 of the view-change leader this member follows"),
        counter("acked_ballot", "ballot of the proposal this member logged and acknowledged"),
        counter("committed", "ballot of a proposal this member knows to be committed"),
        flag("leaving", "this member asked to leave cleanly"),
        counter("joins_num", "join requests this member relays (ids in `joins`)"),
        byte_slots("joins", 8 * config.joins_max, "ids of processes asking to join"),
        byte_slots(
            "join_cards",
            config.joins_max * _card_slot_bytes(config),
            "per relayed joiner, the contact card it sent (its length, then its bytes)",
        ),
        counter("removals_num", "members this member asks to remove for good (ids in `removals`)"),
        byte_slots("removals", 8 * config.removals_max, "ids of members to remove for good"),
        byte_slots(
            "join_offers",
            8 * config.joins_max * offer_words(shards),
            "per relayed joiner, a bitmask of the shards whose state its own log holds, and "
            "whether it is a member of this view that never installed it",
        ),
        byte_slots("prop", prop_bytes, "the proposal this member made as leader"),
        byte_slots("acked", prop_bytes, "the proposal this member acknowledged"),
        byte_slots("decided", prop_bytes, "the proposal this member knows to be committed"),
    )


@dataclass(frozen=True, slots=True)
class ViewInstalled:
    """Upcall: a new view. `shards` lists (subgroup, shard, members, mode) of this member's
    shards; `joined` and `departed` say how the membership changed; `roster` is the view's
    (`Roster`: members' contact cards, ids removed for good)."""

    epoch: int
    members: tuple[int, ...]
    rank: int
    shards: tuple[tuple[int, int, tuple[int, ...], str], ...]
    joined: tuple[int, ...]
    departed: tuple[int, ...]
    roster: Roster = EMPTY_ROSTER


@dataclass(frozen=True, slots=True)
class ViewBlocked:
    """Event: the next view cannot be proposed (a layout it cannot provision, or a shard whose
    state it would lose)."""

    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class InstallView:
    """Action of the view change's last trigger: the epoch is over, and the replica builds the
    next one from `decided` (or halts, if it is not in it). It ends the evaluation: the state
    the predicates read is about to go."""

    decided: Proposal


@dataclass(frozen=True, slots=True)
class Halt:
    """Action: this member must stop for good, saying why (it ends the evaluation)."""

    reason: str


FINAL_ACTIONS = (InstallView, Halt)


@dataclass(frozen=True, slots=True)
class RemovalRefused:
    """Event for the member that asked to remove `member` (`Replica.remove`): the view change
    did not carry it out, saying why (with the removals asked for at once, or the failures
    since it was asked, it would have left less than a majority of the view, or a shard
    without its state). Nothing changed for it; it may be asked for again."""

    member: int
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class Halted:
    """Event: this member stopped for good (a minority, removed from the view, or it left).
    The process should exit with `reason`; to come back it restarts and joins, unless
    `removed`: the group removed this member's id for good (`Replica.remove`, or a join
    refused for it), and it never lets that id in again."""

    reason: str
    removed: bool = False


def plan_next(
    specs: Sequence[SubgroupSpec],
    old_shards: Sequence[Shard],
    survivors: Sequence[int],
    members: Sequence[int],
    has_state: Callable[[int, Shard], bool],
    offered: Callable[[int, Shard], bool] | None = None,
) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Allocate the next view and plan its state transfers: for each of its shards, the member
    that provides the state (the first survivor that holds it) and the members that need it.

    When no survivor holds a shard's state, a joiner among `members` whose own log holds it
    (`offered`: the caller has checked that its log is exactly the state the shard ends this
    epoch with) provides it instead; its plan names it even if nobody else needs the state.

    Raises `LayoutError` if the next view cannot provision the layout, or if a shard would lose
    its state (no survivor holds it and no joiner offers it)."""
    new = allocate(members, specs)
    old = {(s.subgroup, s.shard): s for s in old_shards}
    alive = set(survivors)
    plans: list[tuple[int, tuple[int, ...]]] = []
    for s in new:
        before = old.get((s.subgroup, s.shard))
        if before is None:
            plans.append((0, ()))
            continue
        holders = [
            m for m in members if m in alive and m in before.members and has_state(m, before)
        ]
        joiner = False
        if not holders and offered is not None:
            holders = [m for m in members if m not in alive and offered(m, before)][:1]
            joiner = bool(holders)
        if not holders:
            raise LayoutError(
                f"subgroup {s.subgroup_name} shard {s.shard} would lose its state: no survivor of "
                f"{list(before.members)} holds it"
            )
        needy = tuple(m for m in s.members if m not in holders)
        # a joiner that holds the state is named even when nobody needs it: it must learn that
        # it holds the shard from its own log (its acceptance says which shards it provides)
        plans.append((holders[0] if needy or joiner else 0, needy))
    return tuple(plans)


class ViewChange:
    """One epoch's view-change state at one member."""

    def __init__(self, replica: Replica, config: ViewConfig):
        self.replica = replica
        self.config = config
        table = replica.table
        self.table = table
        self.n = table.n_rows
        self.me_row = table.my_row
        self.last_heartbeat = [0] * self.n
        # set at this member's first tick in the epoch: an epoch may be installed by an input
        # that carries no time (a write, a join acceptance), and the clock starts then
        self.last_heard_ns: list[int | None] = [None] * self.n
        # rows whose silence clock a healed partition restarted, until they are heard: at most
        # once per silence, so a peer that keeps coming back cannot hide one that failed
        self.clock_restarted: set[int] = set()
        self.founding = False  # the group's first view: founders get `startup_grace_ns`
        self.last_tick_ns: int | None = None
        self.decided: Proposal | None = None
        self.trimmed = False
        self.from_joiner: set[int] = set()  # see _state_from_joiner; set with the trim
        self.blocked_on: tuple | None = None
        self.halted = False
        self.join_requests: list[int] = []
        self.first_seen_heartbeat: dict[tuple[int, int], int] = {}
        lay = table.layout
        # The view-change columns are one span of every row; while every row has them all zero
        # nothing is going on and the predicates below need not look (the steady state).
        self.span_lo = lay["suspected"].offset
        self.span_hi = lay["decided"].end
        self._words_lo = self.span_lo // 8
        self._words_hi = self.span_hi // 8
        self.quiet = False

    # -- reading the table ----------------------------------------------------------------------

    def is_quiet(self) -> bool:
        """True while no row shows any view-change activity (cached until a write touches the
        view-change span of some row, or this member suspects, relays a join or leaves)."""
        if self.quiet:
            return True
        words, rw = self.table.words, self.table.row_words
        for r in range(self.n):
            if any(words[r * rw + self._words_lo : r * rw + self._words_hi]):
                return False
        self.quiet = True
        return True

    def suspects(self, row: int, other: int) -> bool:
        return self.table.vget(row, "suspected", other) == 1

    def suspected_rows(self) -> list[int]:
        return [j for j in range(self.n) if self.suspects(self.me_row, j)]

    def unsuspected_rows(self) -> list[int]:
        return [j for j in range(self.n) if not self.suspects(self.me_row, j)]

    def leader_row(self) -> int:
        for j in range(self.n):
            if not self.suspects(self.me_row, j):
                return j
        raise AssertionError("every member is suspected, myself included")

    def mine(self, name: str) -> int:
        return self.table.get(self.me_row, name)

    def proposal_in(self, row: int, name: str) -> Proposal | None:
        data = self.table.bget(row, name, 0, self.table.layout[name].column.length)
        if WORD.unpack_from(data)[0] == 0:
            return None
        return Proposal.decode(data, self.config.card_bytes_max)

    def _relayed(self) -> Iterator[tuple[int, int, int]]:
        """(row, slot, joiner) of every join the unsuspected members relay, in row order."""
        for r in self.unsuspected_rows():
            for i in range(min(self.table.get(r, "joins_num"), self.config.joins_max)):
                (j,) = WORD.unpack_from(self.table.bget(r, "joins", 8 * i, 8 * i + 8))
                yield r, i, j

    def joiners_relayed(self) -> list[int]:
        """Processes asking to join, as relayed in the rows of unsuspected members."""
        out: list[int] = []
        members = self.table.members
        for _, _, j in self._relayed():
            if j not in out and (j not in members or self.suspects(self.me_row, members.index(j))):
                out.append(j)
        return out

    def offers_relayed(self) -> dict[int, int]:
        """Per relayed joiner, the shards of this view (a bitmask of indices) whose state its
        own log holds, as vouched for by the unsuspected members that relay it (see
        `Replica._offer_mask`)."""
        out: dict[int, int] = {}
        words = offer_words(self.replica.shards)
        for r, i, j in self._relayed():
            data = self.table.bget(r, "join_offers", 8 * words * i, 8 * words * (i + 1))
            mask = int.from_bytes(data, "little")
            if mask:
                out[j] = out.get(j, 0) | mask
        return out

    def cards_relayed(self) -> dict[int, bytes]:
        """Per relayed joiner, the contact card its join request carried (the first relaying
        row's; a joiner sends the same card to every contact)."""
        out: dict[int, bytes] = {}
        slot = _card_slot_bytes(self.config)
        for r, i, j in self._relayed():
            data = self.table.bget(r, "join_cards", slot * i, slot * (i + 1))
            (n,) = WORD.unpack_from(data)
            if j not in out and 0 < n <= self.config.card_bytes_max:
                out[j] = bytes(data[8 : 8 + n])
        return out

    def removals_relayed(self) -> list[int]:
        """Ids the unsuspected members ask to remove for good (`remove`)."""
        out: list[int] = []
        for r in self.unsuspected_rows():
            k = min(self.table.get(r, "removals_num"), self.config.removals_max)
            for i in range(k):
                (m,) = WORD.unpack_from(self.table.bget(r, "removals", 8 * i, 8 * i + 8))
                if m not in out:
                    out.append(m)
        return out

    def change_needed(self) -> bool:
        t = self.table
        if any(self.suspects(self.me_row, j) for j in range(self.n)):
            return True
        return any(
            t.get(r, "leaving") or t.get(r, "joins_num") or t.get(r, "removals_num")
            for r in range(self.n)
        )

    # -- inputs ---------------------------------------------------------------------------------

    def on_tick(self, now_ns: int) -> None:
        t = self.table
        timeout = self.config.suspect_timeout_ns
        grace = self.config.startup_grace_ns if self.founding else self.config.install_grace_ns
        paused = (
            self.config.forgive_own_pauses
            and self.last_tick_ns is not None
            and now_ns - self.last_tick_ns > timeout // 2
        )
        # Silences below are counted up to my previous tick: how long before it I last saw a
        # peer's heartbeat move. A driver that jumps time between ticks (transcripts) must not
        # make every peer look long silent.
        prev_tick_ns = now_ns if self.last_tick_ns is None else self.last_tick_ns
        self.last_tick_ns = now_ns
        if paused:
            # I did not run for a while (a stopped process, a starved host): the silence I would
            # see is mine, not my peers'. Their clocks restart now.
            self.last_heard_ns = [now_ns] * self.n
            return
        healed = False
        oldest_ns = now_ns  # the earliest time a peer was last heard
        for r in range(self.n):
            if r == self.me_row:
                continue
            hb = t.get(r, "heartbeat")
            heard = self.last_heard_ns[r]
            if hb != self.last_heartbeat[r] or heard is None:
                self.last_heartbeat[r] = hb
                self.last_heard_ns[r] = now_ns
                self.clock_restarted.discard(r)
                healed = healed or (heard is not None and prev_tick_ns - heard >= timeout // 2)
            else:
                oldest_ns = min(oldest_ns, heard)
        if healed:
            # A peer I had not heard from for half the timeout or more is back: a partition
            # around me (or it) healed. Peers silent as long may be behind the same partition,
            # their first writes still on the way; suspecting them now would push a suspicion
            # the majority, which hears them fine, cannot tell from a true one. Their clocks
            # restart, once: a peer that really failed is suspected one timeout later.
            for r in range(self.n):
                heard = self.last_heard_ns[r]
                if (
                    r != self.me_row
                    and r not in self.clock_restarted
                    and heard is not None
                    and prev_tick_ns - heard >= timeout // 2
                ):
                    self.last_heard_ns[r] = now_ns
                    self.clock_restarted.add(r)
        # Peers silent for half the timeout or more are suspected together, once every one of
        # them is silent past the timeout: members behind one partition fall silent at about the
        # same time. So a member cut off from the rest suspects all of them at once (and halts,
        # in a minority), and the majority, each of whom it then suspects, never adopts its
        # suspicions; one by one, a suspicion raised as the partition heals, before the other
        # side's first writes arrive, would look true to a majority that hears the suspect fine.
        if now_ns - oldest_ns <= timeout:
            return  # nobody is silent past the timeout (the steady state)
        silent_ns = {}
        for r in range(self.n):
            if r == self.me_row or self.suspects(self.me_row, r):
                continue
            heard = self.last_heard_ns[r]
            assert heard is not None  # set above for every peer
            if t.get(r, "heartbeat") == 0 and now_ns - heard <= grace:
                continue
            if prev_tick_ns - heard >= timeout // 2 or now_ns - heard > timeout:
                silent_ns[r] = now_ns - heard
        if silent_ns and min(silent_ns.values()) > timeout:
            self.suspect(*sorted(silent_ns))  # (they stay suspected; we still note their life)

    def suspect(self, *rows: int) -> None:
        """Suspect `rows`, all in one write: a peer must never see some of them suspected
        without the others (a member cut off from the rest would look, for one write, like a
        member of a majority that suspects the rest)."""
        new = [r for r in rows if r != self.me_row and not self.suspects(self.me_row, r)]
        if not new:
            return
        self.quiet = False
        for row in new:
            self.table.vset("suspected", row, 1)
        self.replica.push_all(("suspected",))

    def relay_join(
        self,
        joiner: int,
        offered: Sequence[int] = (),
        never_installed: bool = False,
        card: bytes = b"",
    ) -> None:
        """Relay a join request; `offered` are the indices of this view's shards whose state the
        joiner's own log holds, and `never_installed` says the joiner is a member of this view
        whose log shows it never installed it (both checked by the caller); `card` is the
        joiner's contact card, for the next view's roster."""
        if joiner in self.join_requests:
            return
        members = self.table.members
        if joiner in members:
            # the process restarted: the incarnation we know is gone
            self.suspect(members.index(joiner))
        if len(self.join_requests) >= self.config.joins_max:
            return  # relayed later, when a view change made room; the joiner retries
        i = len(self.join_requests)
        self.quiet = False
        self.join_requests.append(joiner)
        words = offer_words(self.replica.shards)
        mask = 0
        for g in offered:
            assert 0 <= g < len(self.replica.shards), g
            mask |= 1 << g
        if never_installed:
            assert joiner in members, joiner
            mask |= 1 << len(self.replica.shards)
        assert len(card) <= self.config.card_bytes_max, len(card)
        slot = _card_slot_bytes(self.config)
        self.table.bset("join_offers", 8 * words * i, mask.to_bytes(8 * words, "little"))
        self.table.bset("join_cards", slot * i, WORD.pack(len(card)) + card)
        self.table.bset("joins", 8 * i, WORD.pack(joiner))
        self.table.set("joins_num", i + 1)
        self.replica.push_writes(
            self._pushes_in_order("join_offers", "join_cards", "joins", "joins_num")
        )

    def remove(self, member: int) -> None:
        """Ask that `member` be removed for good (checked by the caller, `Replica.remove`): the
        next view excludes it and retires its id."""
        k = self.mine("removals_num")
        for i in range(k):
            (m,) = WORD.unpack_from(self.table.bget(self.me_row, "removals", 8 * i, 8 * i + 8))
            if m == member:
                return
        assert k < self.config.removals_max, k
        self.quiet = False
        self.table.bset("removals", 8 * k, WORD.pack(member))
        self.table.set("removals_num", k + 1)
        self.replica.push_writes(self._pushes_in_order("removals", "removals_num"))

    def leave(self) -> None:
        if not self.mine("leaving"):
            self.quiet = False
            self.table.set("leaving", 1)
            self.replica.push_all(("leaving",))

    def _pushes_in_order(self, *names: str) -> list[Push]:
        """Pushes of columns one write each, in this order: bytes before the counter that
        announces them (per-link FIFO then guarantees a reader never sees the counter without
        them)."""
        return [p for name in names for p in self.replica.pushes((name,))]

    # -- predicates -----------------------------------------------------------------------------

    def predicates(self) -> tuple[Predicate[Replica], ...]:
        return (
            Predicate("merge_suspicions", Kind.RECURRENT, self._merge_needed, self._merge),
            Predicate("wedge", Kind.RECURRENT, self._wedge_needed, self._wedge),
            Predicate("minority", Kind.ONE_TIME, self._in_minority, self._halt_minority),
            Predicate("follow", Kind.RECURRENT, self._follow_needed, self._follow),
            Predicate("propose", Kind.RECURRENT, self._can_propose, self._propose),
            Predicate("acknowledge", Kind.RECURRENT, self._can_ack, self._ack),
            Predicate("commit", Kind.RECURRENT, self._can_commit, self._commit),
            Predicate("learn_commit", Kind.RECURRENT, self._can_learn, self._learn),
            Predicate("ragged_trim", Kind.RECURRENT, self._can_trim, self._trim),
            Predicate("install", Kind.RECURRENT, self._can_install, self._install),
        )

    def _merge_sources(self) -> list[int]:
        """Rows whose suspicions I may adopt: members I do not suspect and who do not suspect me.
        A member cut off from the rest suspects everyone before it learns it is in a minority;
        taking its word that I failed would let one isolated member take down the majority.
        Whether I am still in the group is decided by the view the majority commits."""
        me = self.me_row
        return [r for r in self.unsuspected_rows() if r != me and not self.suspects(r, me)]

    def _credible(self, r: int, j: int) -> bool:
        """Adopt member r's suspicion of j once r has shown it is alive since (its heartbeat rose
        twice after I first saw the suspicion), or once I have not heard from j for half the
        timeout myself. A member cut off from the rest suspects everyone before it learns it is in
        a minority and halts; its last suspicions, pushed as the partition heals, must not make
        the majority suspect members it hears from just fine."""
        hb = self.table.get(r, "heartbeat")
        first = self.first_seen_heartbeat.setdefault((r, j), hb)
        if hb - first >= 2:
            return True
        heard = self.last_heard_ns[j]
        return heard is not None and (
            self.replica.now_ns - heard >= self.config.suspect_timeout_ns // 2
        )

    def _to_merge(self) -> list[int]:
        me = self.me_row
        out: list[int] = []
        for r in self._merge_sources():
            for j in range(self.n):
                if (
                    j not in out
                    and self.suspects(r, j)
                    and not self.suspects(me, j)
                    and self._credible(r, j)
                ):
                    out.append(j)
        return out

    def _merge_needed(self, _: Any = None) -> bool:
        if self.is_quiet():
            return False
        return bool(self._to_merge())

    def _merge(self, r_: Any = None) -> list[Any]:
        for j in self._to_merge():
            self.table.vset("suspected", j, 1)
        return self.replica.pushes(("suspected",))

    def _wedge_needed(self, _: Any = None) -> bool:
        if self.is_quiet():
            return False
        return not self.mine("wedged") and self.change_needed()

    def _wedge(self, r_: Any = None) -> list[Any]:
        self.table.set("wedged", 1)
        # Everyone needs every shard's counters now (the leader computes the ragged trim): one
        # write of the whole row, which also shows the wedge.
        return [self.replica.row_push()]

    def _in_minority(self, _: Any = None) -> bool:
        if self.is_quiet():
            return False
        if not self.config.partition_safety:
            return False
        return 2 * len(self.unsuspected_rows()) <= self.n

    def _halt_minority(self, r_: Any = None) -> list[Any]:
        alive = len(self.unsuspected_rows())
        return self._halt(
            f"member {self.replica.me} sees only {alive} of the {self.n} members of view "
            f"{self.replica.epoch}: it may be in a minority partition, so it stops rather than "
            "risk a second view"
        )

    def _halt(self, reason: str) -> list[Any]:
        self.halted = True
        return [Halt(reason)]

    def _follow_needed(self, _: Any = None) -> bool:
        if self.is_quiet():
            return False
        return bool(self.mine("wedged")) and self.mine("ballot") < self.leader_row() + 1

    def _follow(self, r_: Any = None) -> list[Any]:
        self.table.set("ballot", self.leader_row() + 1)
        return self.replica.pushes(("ballot",))

    def _ballot_if_leader(self) -> int:
        b = self.mine("ballot")
        return b if b == self.me_row + 1 else 0

    def _can_propose(self, _: Any = None) -> bool:
        if self.is_quiet():
            return False
        b = self._ballot_if_leader()
        if not b or self.decided is not None:
            return False
        mine = self.proposal_in(self.me_row, "prop")
        if mine is not None and mine.ballot >= b:
            return False
        t = self.table
        rows = self.unsuspected_rows()
        if 2 * len(rows) <= self.n and self.config.partition_safety:
            return False
        if not all(t.get(r, "wedged") and t.get(r, "ballot") == b for r in rows):
            return False
        return self.blocked_on != self._signature(b)

    def _signature(self, b: int) -> tuple:
        return (
            b,
            tuple(self.unsuspected_rows()),
            tuple(r for r in self.suspected_rows() if self._heard_lately(r)),
            tuple(self.joiners_relayed()),
            tuple(sorted(self.offers_relayed().items())),
            tuple(self.table.get(r, "leaving") for r in range(self.n)),
            tuple(self.removals_relayed()),
            tuple(
                self.table.get(r, f"s{s.index}_ready")
                for s in self.replica.shards
                for r in range(self.n)
            ),
        )

    def _propose(self, r_: Any = None) -> list[Any]:
        b = self.mine("ballot")
        t = self.table
        rows = self.unsuspected_rows()
        adopted: Proposal | None = None
        for r in rows:
            if t.get(r, "acked_ballot") and (
                adopted is None or t.get(r, "acked_ballot") > adopted.ballot
            ):
                adopted = self.proposal_in(r, "acked")
        if adopted is not None:
            proposal = Proposal(
                b,
                adopted.members,
                adopted.joiners,
                adopted.trims,
                adopted.plans,
                adopted.roster,
                adopted.declined,
            )
        else:
            members = self.table.members
            roster = self.replica.view.roster
            trims = []
            # Shards with a live member still waiting for their state: its `persisted` stayed 0,
            # so nothing of the shard was acknowledged in this epoch, and no member that goes on
            # delivers the trim (the others are suspected; a waiting member delivers nothing).
            waiting = set()
            for shard in self.replica.shards:
                shard_rows = [members.index(m) for m in shard.members]
                alive = [r for r in shard_rows if r in rows] or shard_rows
                w = t.layout[f"s{shard.index}_received"].word
                trims.append(
                    tuple(
                        min(t.words[r * t.row_words + w + k] for r in alive)
                        for k in range(len(shard.senders))
                    )
                )
                ready = t.layout[f"s{shard.index}_ready"].word
                if any(r in rows and not t.words[r * t.row_words + ready] for r in shard_rows):
                    waiting.add(shard.index)
            offers = self.offers_relayed()
            # Members that never installed this view (their logs, offered in a join, say so):
            # they received nothing in it and persisted nothing, so a shard with one among its
            # members delivered nothing acknowledged, as a shard with a member waiting did.
            # A restart may name a member that crashes before installing; when it was the only
            # one holding a shard, the offers of that shard's state are all there is.
            absent = 1 << len(self.replica.shards)
            for shard in self.replica.shards:
                if any(offers.get(m, 0) & absent for m in shard.members):
                    waiting.add(shard.index)

            def offered(m: int, shard: Shard) -> bool:
                # The joiner's log holds exactly the shard's state as of the start of this epoch
                # and nothing of it (`Replica._offer_mask`). For a shard with a member waiting
                # throughout, that is the state it ends the epoch with: what was delivered in it
                # was never acknowledged, and its senders submit it again.
                return shard.index in waiting and bool(offers.get(m, 0) >> shard.index & 1)

            # Removals asked for (`remove`) are carried out together when the view that results
            # keeps a majority of this one alive and every shard's state; otherwise the last
            # asked for are declined, one by one, and their askers told (`RemovalRefused`):
            # each asker checked only its own, and members may have failed since.
            removed = [m for m in self.removals_relayed() if m not in roster.retired]
            declined: list[int] = []
            while True:
                # removed for good: neither a survivor nor a joiner, now or ever again
                barred = set(roster.retired) | set(removed)
                survivors = tuple(
                    members[r] for r in rows if not t.get(r, "leaving") and members[r] not in barred
                )
                if removed and len(survivors) < self.n // 2 + 1:
                    declined.insert(0, removed.pop())
                    continue
                joiners = tuple(
                    j for j in self.joiners_relayed() if j not in survivors and j not in barred
                )
                room = self.config.members_max - len(survivors)
                joiners = joiners[: max(0, room)]
                # Suspected members that are alive after all (a healed partition) can come back as
                # joiners, with state transfer, when the view cannot go on without them (all the
                # designated senders of a shard were on the other side, say).
                back = tuple(
                    members[r]
                    for r in self.suspected_rows()
                    if self._heard_lately(r)
                    and members[r] not in survivors + joiners
                    and members[r] not in barred
                )
                plans, error = None, ""
                for candidate in (joiners, joiners + back) if back else (joiners,):
                    try:
                        plans = plan_next(
                            self.replica.layout_specs,
                            self.replica.shards,
                            survivors,
                            survivors + candidate,
                            self._has_state,
                            offered,
                        )
                    except LayoutError as e:
                        error = error or str(e)
                        continue
                    joiners = candidate
                    break
                if plans is None and removed:
                    declined.insert(0, removed.pop())
                    continue
                if plans is None:
                    self.blocked_on = self._signature(b)
                    return [ViewBlocked(self.replica.epoch, error)]
                break
            cards = self.cards_relayed()
            next_roster = roster.next(
                survivors + joiners,
                {j: cards[j] for j in joiners if j in cards},
                removed,
                self.config.retired_max,
            )
            proposal = Proposal(
                b,
                survivors + joiners,
                joiners,
                tuple(trims),
                plans,
                next_roster,
                tuple(declined),
            )
        data = proposal.encode()
        t.bset("prop", 0, data)
        # The leader acknowledges its own proposal, logged first like everyone's.
        t.bset("acked", 0, data)
        t.set("acked_ballot", b)
        return [*self._pushes_in_order("prop", "acked", "acked_ballot"), self._log(proposal)]

    def _heard_lately(self, row: int) -> bool:
        heard = self.last_heard_ns[row]
        return heard is not None and (
            self.replica.now_ns - heard < self.config.suspect_timeout_ns // 2
        )

    def _has_state(self, member: int, shard: Shard) -> bool:
        row = self.table.members.index(member)
        return self.table.get(row, f"s{shard.index}_ready") == 1

    def _log(self, proposal: Proposal) -> LogMeta:
        return LogMeta(f"view-proposal-{self.replica.epoch}", proposal.encode(), sync=True)

    def _can_ack(self, _: Any = None) -> bool:
        if self.is_quiet():
            return False
        b = self.mine("ballot")
        if not b or b == self.me_row + 1 or self.mine("acked_ballot") >= b:
            return False
        leader = b - 1
        p = self.proposal_in(leader, "prop")
        return p is not None and p.ballot == b

    def _ack(self, r_: Any = None) -> list[Any]:
        b = self.mine("ballot")
        proposal = self.proposal_in(b - 1, "prop")
        assert proposal is not None
        self._check_proposal(proposal)
        self.table.bset("acked", 0, proposal.encode())
        self.table.set("acked_ballot", b)
        return [*self._pushes_in_order("acked", "acked_ballot"), self._log(proposal)]

    def _check_proposal(self, p: Proposal) -> None:
        shards = self.replica.shards
        if len(p.trims) != len(shards) or any(
            len(t) != len(s.senders) for t, s in zip(p.trims, shards, strict=False)
        ):
            raise PeerProtocolError("a view proposal whose trims do not match the layout")

    def _can_commit(self, _: Any = None) -> bool:
        if self.is_quiet():
            return False
        b = self._ballot_if_leader()
        if not b or self.mine("acked_ballot") != b or self.mine("committed") >= b:
            return False
        t = self.table
        rows = self.unsuspected_rows()
        if 2 * len(rows) <= self.n and self.config.partition_safety:
            return False
        return all(t.get(r, "acked_ballot") == b for r in rows)

    def _commit(self, r_: Any = None) -> list[Any]:
        b = self.mine("ballot")
        self.decided = self.proposal_in(self.me_row, "acked")
        assert self.decided is not None
        self.table.bset("decided", 0, self.decided.encode())
        self.table.set("committed", b)
        return self._pushes_in_order("decided", "committed")

    def _can_learn(self, _: Any = None) -> bool:
        if self.is_quiet():
            return False
        if self.decided is not None:
            return False
        return any(self.table.get(r, "committed") for r in range(self.n))

    def _learn(self, r_: Any = None) -> list[Any]:
        t = self.table
        row = max(range(self.n), key=lambda r: t.get(r, "committed"))
        proposal = self.proposal_in(row, "decided")
        if proposal is None:
            raise PeerProtocolError(f"member {t.members[row]} shows a commit without its proposal")
        self._check_proposal(proposal)
        self.decided = proposal
        t.bset("decided", 0, proposal.encode())
        t.set("committed", t.get(row, "committed"))
        return self._pushes_in_order("decided", "committed")

    def _can_trim(self, _: Any = None) -> bool:
        return self.decided is not None and not self.trimmed

    def _trim(self, r_: Any = None) -> list[Any]:
        assert self.decided is not None
        self.trimmed = True
        self.from_joiner = self._state_from_joiner()
        if self.replica.me not in self.decided.members:
            # Excluded: my counters were not part of the trim, so I may not have what it covers.
            return [InstallView(self.decided)]  # it halts, saying why
        if self.replica.me in self.decided.joiners:
            # Suspected, then taken back as a joiner: the trim was computed without me, and the
            # next view sends me every shard's state instead.
            return []
        actions: list[Any] = []
        for g, st in self.replica.streams.items():
            if g in self.from_joiner:
                # The next view takes this shard's state from a joiner's log: the state at the
                # start of this epoch. A member whose state arrived only after it wedged (it was
                # not a holder when the leader planned) must not apply the trim on top, or it
                # would answer for messages the next view's state lacks; they are submitted again.
                continue
            actions.extend(st.deliver_upto(trim_count(self.decided.trims[g])))
        return actions

    def _state_from_joiner(self) -> set[int]:
        """Indices of this epoch's shards whose state the decided next view takes from a joiner
        (`plan_next` names a joiner as provider only for an offer)."""
        d = self.decided
        assert d is not None
        if not d.joiners or not d.plans:
            return set()
        new = allocate(d.members, self.replica.layout_specs)
        keys = {
            (sh.subgroup, sh.shard)
            for sh, (provider, _) in zip(new, d.plans, strict=True)
            if provider in d.joiners
        }
        return {sh.index for sh in self.replica.shards if (sh.subgroup, sh.shard) in keys}

    def _can_install(self, _: Any = None) -> bool:
        if not self.trimmed:
            return False
        assert self.decided is not None
        t = self.table
        members = t.members
        for g, st in self.replica.streams.items():
            if st.mode != "durable" or g in self.from_joiner:
                continue  # (nobody delivers the trim of a shard whose state comes from a joiner)
            need = trim_count(self.decided.trims[g])
            w = st.w_persisted
            ready = t.layout[f"s{g}_ready"].word
            for m in st.shard.members:
                r = members.index(m)
                base = r * t.row_words
                if m not in self.decided.members or (
                    r != self.me_row and self.suspects(self.me_row, r)
                ):
                    continue  # it leaves with this view: it delivers nothing more here
                if t.words[base + ready] and t.words[base + w] < need:
                    return False  # (a member still waiting for the shard's state persists none)
        return True

    def _install(self, r_: Any = None) -> list[Any]:
        assert self.decided is not None
        return [InstallView(self.decided)]
