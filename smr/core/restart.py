"""Restart after total failure: what a member recovered from its log, and how the restarted
members agree on the view they resume in.

This module owns the restart summary (`Recovered`), the decision (`RestartDecision`), the pure
decision rule (`decide`) and the acceptor/leader state of one restarting member (`Restart`). The
replica (`Replica.restarting`) drives it with data-plane frames; nothing here does I/O.

**Driver duties before `Replica.restarting`** (see `smr.recovery` for a reusable implementation):
open the member's metadata log and every durable shard log it has; build `Recovered` from them
(the last installed view and the shards of it still waiting for state, the last view proposal
logged in that epoch, the restart acceptor state, and per shard the last logged version, a
snapshot's version counting as logged); replay each shard log into a fresh state machine (the
latest snapshot, then every record above it), so the machine is at exactly the logged version.
After that the replica's `Ready.persist` may ask for `LogTruncate` (drop records above a version)
and `LogSnapshot` (replace a shard's log by a received snapshot), see `smr.core.ready`.

**The protocol** (single-decree Paxos per *instance*, the instance being the last view that may
have existed; ballots are `round << 16 | member id`):

1. Every restarting member asks the members it knows (its last view, the members of its last
   logged proposal, the driver's contacts). A member that is active in a view answers `NEWER`
   with that view: the restarting member joins it with state transfer, offering the state its
   shard logs hold in its join request; on admission it provides the state of any shard the
   group had lost and could take from its log, and drops every other log (what it has beyond
   the group's agreed history must never come back). See `Replica._offer_mask`.
2. The leader is the lowest id that has been heard from lately; it sends `PREPARE(b)`. Each
   acceptor logs its promise durably, then answers `PROMISE` with its whole summary (including
   any decision it accepted in this instance).
3. The instance: `H` = the highest installed epoch among the summaries; if any summary logged a
   view proposal in epoch `H`, that proposal may have been committed and installed by members
   not heard from, so the instance is its view (`H + 1`, the members of the highest-ballot
   proposal logged in `H`; views.py guarantees any proposal at or above a committed ballot
   carries the committed value). Otherwise the instance is view `H` as installed.
4. With promises for ballot `b` from a **majority of the instance view**, and, for every
   durable shard of the highest installed view, a promiser that installed it and holds that
   shard's state (or, if every member of the shard that answered still waited for its state,
   every member of that view: the provider is one of them), and, for a proposed instance, one
   promiser in every shard of the instance view, the leader waits half a round more for the rest
   of the view, then: if a promise carries a decision accepted in this instance, the one with
   the highest ballot is adopted; otherwise `decide` computes one. Ordered shards resume empty
   (never on disk). The leader logs it (as an acceptor), sends `ACCEPT`, and once a majority of
   the instance view logged it and answered `ACCEPTED`, the decision is chosen: it sends `COMMIT`
   to every decided member and installs.
5. Installing a decision: log the new view (epoch = instance epoch + 1), truncate every shard log
   above the decided cut, build the epoch with sequence numbers from zero, and either hold the
   shard's state (the log ends exactly at the cut) or wait for a snapshot from the provider (the
   member whose log ends at the cut), received through the state-transfer path.

**Why logs are prefixes.** A member appends a shard's entries in the order it delivers them, and
delivery is in the one agreed order of versions (agreement). Within an epoch nobody delivers a
message beyond the ragged trim (delivery needs every member to have received it, and the trim is
the minimum of the survivors' received counts). A member entering a shard gets a snapshot (logged
with its version) before it logs anything of the shard. So every member's log of a shard is the
agreed history up to its last logged version, with a snapshot standing for a prefix; the longest
log among the promisers contains every other, and its end is the cut. Logs beyond the cut
(possible only for members absent from the decision) are truncated when they come back.

**Why nothing durable is lost.** A version at or below a shard's global persistence frontier in
epoch `e` was persisted by every member of that shard in `e`. The leader waits until, for every
shard of the highest installed view `H`, a promiser that installed `H` and holds the shard's state
answered: that member's log includes everything persisted in `H` (the frontier is the minimum
over the members) and everything the shard held when `H` was installed (a survivor persisted the
trim before installing; a newcomer logged the snapshot it received). Views after `H` were never
installed (or `H` would not be the highest: a view proposed in `H` counts, see step 3, and a view
is installed only after a majority of `H` logged its proposal, which intersects every majority).
The cut is the longest log, so it is at or above every frontier.

**Why no two views share an epoch.** A view `e + 1` comes either from a normal view change of `e`
(committed by a majority of `e`, each of which logged the proposal before acknowledging) or from
the restart instance `e` (chosen by a majority of `e`'s members, each of which logged the
accepted decision). A restart majority of `e` intersects the view-change majority, so if the
normal change may have committed, some promiser reports its proposal and the instance moves to
`e + 1`. Two restart decisions of the same instance are the same value (Paxos: the leader of a
higher ballot adopts the highest accepted value among a majority). A member that restarts after
the group resumed hears `NEWER` from a member of the new view (any majority of the old view
includes one) and joins instead (its logs are dropped on admission, or provide the state of a shard
the group lost: `Replica._offer_mask` says when a log is exactly that state).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from smr.core.codec import (
    FRAME,
    FRAME_RESTART_ACCEPT,
    FRAME_RESTART_ACCEPTED,
    FRAME_RESTART_COMMIT,
    FRAME_RESTART_NEWER,
    FRAME_RESTART_PREPARE,
    FRAME_RESTART_PROMISE,
    WordReader,
    pack_words,
)
from smr.core.errors import LayoutError, PeerProtocolError
from smr.core.layout import SubgroupSpec, allocate
from smr.core.ready import LogMeta, Send
from smr.core.views import (
    CARD_BYTES_MAX,
    EMPTY_ROSTER,
    RETIRED_MAX,
    Proposal,
    Roster,
    trim_count,
)

Key = tuple[int, int]  # (subgroup, shard)

# restart frames: FRAME kinds (smr.core.codec); number = ballot, epoch = instance

BALLOT_MEMBER_BITS = 16


def _blob_words(data: bytes) -> list[int]:
    assert len(data) % 8 == 0
    words = memoryview(data).cast("q") if data else ()
    return [len(words), *words]


@dataclass(frozen=True, slots=True)
class Acceptor:
    """The restart acceptor state a member keeps durably (`LogMeta("restart-acceptor")`)."""

    instance: int = 0  # epoch of the instance view this state is about
    promised: int = 0  # highest ballot promised in it
    accepted: int = 0  # ballot of the accepted decision (0: none)
    decision: bytes = b""

    def encode(self) -> bytes:
        decision = _blob_words(self.decision)
        return pack_words([self.instance, self.promised, self.accepted, *decision])

    @classmethod
    def decode(cls, data: bytes) -> Acceptor:
        r = WordReader(data, "restart message")
        return cls(r.one(), r.one(), r.one(), r.blob())


@dataclass(frozen=True, slots=True)
class Recovered:
    """What one member read back from its log after a total failure; see the module docstring
    for how the driver builds it. `logged[(sg, sh)]` is the last logged version of each durable
    shard log the member has (a snapshot's version counts; 0 when the log is empty)."""

    epoch: int
    members: tuple[int, ...]
    awaiting: tuple[Key, ...] = ()
    proposal: Proposal | None = None  # the last proposal logged in `epoch`
    logged: Mapping[Key, int] = field(default_factory=dict)
    acceptor: Acceptor = Acceptor()
    # The logs it offered when it last found a group running (`LogMeta("offer")`, see
    # `encode_offer_meta`): marked stale for a restart, still offered when it joins. Not part of
    # the summary a promise carries.
    offer_epoch: int = 0
    offerable: tuple[Key, ...] = ()
    roster: Roster = EMPTY_ROSTER  # the last view's (`LogMeta("view")`)

    def __post_init__(self) -> None:
        assert self.epoch >= 1 and self.members, "a restart needs the last view it was in"

    def encode(self, me: int) -> bytes:
        words = [me, self.epoch, len(self.members), *self.members, len(self.awaiting)]
        for sg, sh in self.awaiting:
            words.extend((sg, sh))
        words.extend(_blob_words(self.proposal.encode() if self.proposal else b""))
        words.append(len(self.logged))
        for (sg, sh), v in sorted(self.logged.items()):
            words.extend((sg, sh, v))
        words.extend(_blob_words(self.acceptor.encode()))
        words.extend(self.roster.words())
        return pack_words(words)

    @classmethod
    def decode(cls, data: bytes) -> tuple[int, Recovered]:
        r = WordReader(data, "restart message")
        me, epoch = r.one(), r.one()
        members = r.seq()
        awaiting = tuple((r.one(), r.one()) for _ in range(r.one()))
        prop = r.blob()
        logged = {}
        for _ in range(r.one()):
            sg, sh, v = r.take(3)
            logged[(sg, sh)] = v
        acceptor = Acceptor.decode(r.blob())
        roster = Roster.read(r, CARD_BYTES_MAX) if r.left else Roster()
        if epoch < 1 or not members or len(set(members)) != len(members):
            raise PeerProtocolError(f"a restart summary with view {epoch} {members}")
        proposal = Proposal.decode(prop) if prop else None
        return me, cls(epoch, members, awaiting, proposal, logged, acceptor, roster=roster)


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """The view the restarted group resumes in. `instance` is the epoch of the last view that may
    have existed; the new view has epoch `instance + 1`. `cuts` gives, per durable shard of the
    layout, the agreed last version (every log is truncated above it). `plans` are per shard of
    the new view (allocation order): (provider, members needing its state), provider 0 when
    nobody does."""

    instance: int
    members: tuple[int, ...]
    cuts: tuple[tuple[int, int, int], ...]
    plans: tuple[tuple[int, tuple[int, ...]], ...]
    roster: Roster = EMPTY_ROSTER  # the new view's

    @property
    def epoch(self) -> int:
        return self.instance + 1

    def cut(self, key: Key) -> int:
        for sg, sh, v in self.cuts:
            if (sg, sh) == key:
                return v
        return 0

    def encode(self) -> bytes:
        words = [self.instance, len(self.members), *self.members, len(self.cuts)]
        for c in self.cuts:
            words.extend(c)
        words.append(len(self.plans))
        for provider, needy in self.plans:
            words.extend((provider, len(needy), *needy))
        words.extend(self.roster.words())
        return pack_words(words)

    @classmethod
    def decode(cls, data: bytes) -> RestartDecision:
        r = WordReader(data, "restart message")
        instance = r.one()
        members = r.seq()
        cuts = tuple(r.take(3) for _ in range(r.one()))
        plans = tuple((r.one(), r.seq()) for _ in range(r.one()))
        roster = Roster.read(r, CARD_BYTES_MAX) if r.left else Roster()
        if instance < 1 or not members or len(set(members)) != len(members):
            raise PeerProtocolError(f"a restart decision for {instance} with {members}")
        if set(members) & set(roster.retired):
            raise PeerProtocolError(f"a restart decision with removed members {roster.retired}")
        return cls(instance, members, cuts, plans, roster)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Instance:
    """The view the restart is about: `epoch` and `members`, and the highest installed view
    (`installed_epoch`, `installed_members`) whose shards' state must be found. `bounds` caps, per
    durable shard, the versions that may survive (the ragged trim of a logged view proposal, or
    the cuts of a restart decision that may have been chosen)."""

    epoch: int
    members: tuple[int, ...]
    installed_epoch: int
    installed_members: tuple[int, ...]
    bounds: tuple[tuple[int, int, int], ...] = ()


def instance_of(summaries: Iterable[Recovered], layout: Sequence[SubgroupSpec] = ()) -> Instance:
    """Step 3 of the protocol: the last view that may have existed. An installed view is certain;
    a view proposed in the highest installed epoch may have been installed by members not heard
    from, so it is the instance when one was logged. A restart decision accepted in a later
    instance than that (possible only if its acceptors saw a proposal these did not) may have
    been chosen, so its view is the instance then; one accepted in the same instance is adopted
    by the leader instead (`adopted`)."""
    ss = list(summaries)
    assert ss
    top = max(s.epoch for s in ss)
    installed = next(s.members for s in ss if s.epoch == top)
    props = [s.proposal for s in ss if s.epoch == top and s.proposal is not None]
    inst = Instance(top, installed, top, installed)
    if props:
        best = max(props, key=lambda p: p.ballot)
        bounds = []
        if layout:
            for sh, trim in zip(allocate(installed, layout), best.trims, strict=False):
                bounds.append((sh.subgroup, sh.shard, (top << 32) + trim_count(trim) - 1))
        inst = Instance(top + 1, best.members, top, installed, tuple(bounds))
    later = [
        (s.acceptor.instance, s.acceptor.accepted, s.acceptor.decision)
        for s in ss
        if s.acceptor.accepted and s.acceptor.instance > inst.epoch
    ]
    if later:
        _, _, data = max(later)
        d = RestartDecision.decode(data)
        inst = Instance(d.epoch, d.members, top, installed, d.cuts)
    # An acceptor promised a later instance with nothing accepted there (its leader saw evidence
    # these summaries no longer show, or crashed): nothing can be chosen in it without one of
    # these acceptors reporting it, so the same view is restarted under that instance number
    # (the new epoch skips ahead) rather than blocked below the promise forever.
    floor = max(s.acceptor.instance for s in ss)
    if floor > inst.epoch:
        inst = Instance(floor, inst.members, top, installed, inst.bounds)
    return inst


def adopted(inst: Instance, summaries: Iterable[Recovered]) -> RestartDecision | None:
    """The decision accepted in this instance with the highest ballot, if any (Paxos: it may
    have been chosen, so a later leader proposes it again)."""
    best: tuple[int, bytes] | None = None
    for s in summaries:
        a = s.acceptor
        if a.accepted and a.instance == inst.epoch and (best is None or a.accepted > best[0]):
            best = (a.accepted, a.decision)
    return None if best is None else RestartDecision.decode(best[1])


def durable_keys(layout: Sequence[SubgroupSpec], members: Sequence[int]) -> list[Key]:
    return [(s.subgroup, s.shard) for s in allocate(members, layout) if s.mode == "durable"]


def _holders(inst: Instance, layout: Sequence[SubgroupSpec], summaries: Mapping[int, Recovered]):
    shards = allocate(inst.installed_members, layout)
    out: dict[Key, list[int]] = {}
    for s in shards:
        key = (s.subgroup, s.shard)
        out[key] = [
            m
            for m in s.members
            if m in summaries
            and summaries[m].epoch == inst.installed_epoch
            and key not in summaries[m].awaiting
        ]
    return shards, out


def quorum_missing(
    inst: Instance, layout: Sequence[SubgroupSpec], summaries: Mapping[int, Recovered]
) -> str:
    """Why the promisers in `summaries` are not yet enough to decide ("" when they are)."""
    have = [m for m in inst.members if m in summaries]
    if 2 * len(have) <= len(inst.members):
        return f"{len(have)} of the {len(inst.members)} members of view {inst.epoch} answered"
    try:
        shards, holders = _holders(inst, layout, summaries)
    except LayoutError as e:
        return str(e)
    everyone = all(m in summaries for m in inst.installed_members)
    for s in shards:
        # When every member of the shard that answered still waited for its state, nothing was
        # persisted in the shard in that view (their `persisted` stayed 0), and its state is on
        # the member that was to provide it: some member of the view, so wait for all of them.
        if s.mode == "durable" and not holders[(s.subgroup, s.shard)] and not everyone:
            return (
                f"no member holding the state of subgroup {s.subgroup} shard {s.shard} of view "
                f"{inst.installed_epoch} answered"
            )
    if inst.epoch != inst.installed_epoch:
        for s in allocate(inst.members, layout):
            if not any(m in summaries for m in s.members):
                return f"no member of subgroup {s.subgroup} shard {s.shard} of view {inst.epoch}"
    return ""


def decide(
    inst: Instance, layout: Sequence[SubgroupSpec], summaries: Mapping[int, Recovered]
) -> RestartDecision:
    """Step 4: the new view from the promisers' summaries. Members: every promiser, in id order,
    but an id any summary's roster retired (a removed member restarted from logs older than its
    removal: it joins, and is refused). The roster merges the summaries', the latest view's
    first.
    Per durable shard, the cut is the longest log (the highest logged version, kept at or below
    the ragged trim of a logged proposal of the instance's installed epoch); the provider is a
    member whose log ends exactly there; everyone else in the new shard needs its state. Raises
    `LayoutError` if the promisers cannot provision the layout."""
    assert not quorum_missing(inst, layout, summaries)
    roster = merged_roster(summaries.values())
    members = tuple(sorted(m for m in summaries if m not in roster.retired))
    roster = roster.next(members, {}, (), RETIRED_MAX)
    new_shards = allocate(members, layout)  # raises LayoutError when it cannot be provisioned
    bound = {(sg, sh): v for sg, sh, v in inst.bounds}
    keys = sorted(
        {(s.subgroup, s.shard) for s in new_shards if s.mode == "durable"}
        | {k for s in summaries.values() for k in s.logged}
    )
    cuts = []
    for key in keys:
        best = 0
        for s in summaries.values():
            v = s.logged.get(key, 0)
            if key not in s.awaiting and v <= bound.get(key, v) and v > best:
                best = v
        cuts.append((key[0], key[1], best))
    cut_of = {(sg, sh): v for sg, sh, v in cuts}
    plans: list[tuple[int, tuple[int, ...]]] = []
    for sh in new_shards:
        key = (sh.subgroup, sh.shard)
        if sh.mode != "durable":
            plans.append((0, ()))
            continue
        cut = cut_of[key]
        at_cut = [m for m in members if at_cut_of(summaries[m], key, cut)]
        needy = tuple(m for m in sh.members if m not in at_cut)
        if not at_cut:  # only when nothing was ever logged and every log is marked stale
            needy = ()
        plans.append((at_cut[0] if needy else 0, needy))
    return RestartDecision(inst.epoch, members, tuple(cuts), tuple(plans), roster)


def merged_roster(summaries: Iterable[Recovered]) -> Roster:
    """One roster from the restarted members' last views': a member's card from the latest view
    that has one, every id any of them retired (the latest view's order first)."""
    cards: dict[int, bytes] = {}
    retired: list[int] = []
    for s in sorted(summaries, key=lambda s: -s.epoch):
        for m, c in s.roster.cards:
            cards.setdefault(m, c)
        retired.extend(m for m in s.roster.retired if m not in retired)
    return Roster(tuple(sorted(cards.items())), tuple(retired[-RETIRED_MAX:]))


def at_cut_of(r: Recovered, key: Key, cut: int) -> bool:
    """The member's state machine of `key`, as replayed from its log, is exactly the state at
    `cut` (a log marked as not holding the state counts only when it is empty)."""
    v = r.logged.get(key, 0)
    return v == cut and (cut == 0 or key not in r.awaiting)


def make_ballot(round_: int, me: int) -> int:
    assert 0 <= me < 1 << BALLOT_MEMBER_BITS
    return (round_ << BALLOT_MEMBER_BITS) | me


def ballot_round(ballot: int) -> int:
    return ballot >> BALLOT_MEMBER_BITS


def encode_view_meta(
    epoch: int, members: Sequence[int], awaiting: Iterable[Key], roster: Roster = EMPTY_ROSTER
) -> bytes:
    """The `LogMeta("view")` blob: the installed view, the shards whose logs do not hold the
    shard's state (waiting for a snapshot, or left beyond a restart's cut), and the view's
    roster."""
    keys = sorted(set(awaiting))
    words = [len(members), *members, epoch, len(keys)]
    for sg, sh in keys:
        words.extend((sg, sh))
    words.extend(roster.words())
    return pack_words(words)


def encode_offer_meta(epoch: int, keys: Iterable[Key]) -> bytes:
    """The `LogMeta("offer")` blob: the epoch of the view this member was last in and the shard
    logs that held their state then. A member that finds a group running marks every log stale
    (no restart may take one as a holder: it may hold entries beyond a cut it never heard of)
    but keeps offering these until it is admitted, even across a crash; valid only while the
    logged view is still that epoch."""
    keys = sorted(set(keys))
    words = [epoch, len(keys)]
    for sg, sh in keys:
        words.extend((sg, sh))
    return pack_words(words)


def decode_offer_meta(data: bytes) -> tuple[int, tuple[Key, ...]]:
    r = WordReader(data, "restart message")
    epoch = r.one()
    return epoch, tuple((r.one(), r.one()) for _ in range(r.one()))


def decode_view_meta(data: bytes) -> tuple[int, tuple[int, ...], tuple[Key, ...]]:
    """(epoch, members, awaiting) from a `LogMeta("view")` blob."""
    r = WordReader(data, "restart message")
    members = r.seq()
    epoch = r.one()
    awaiting = tuple((r.one(), r.one()) for _ in range(r.one())) if r.i < len(r.words) else ()
    return epoch, members, awaiting


def decode_view_roster(data: bytes) -> Roster:
    """The roster of a `LogMeta("view")` blob (empty in one written before rosters existed)."""
    r = WordReader(data, "restart message")
    r.seq()
    r.one()
    if r.left:
        r.take(2 * r.one())
    return Roster.read(r, CARD_BYTES_MAX) if r.left else Roster()


class Restart:
    """One restarting member's leader and acceptor state (steps 2 to 4 of the protocol). Inputs
    return nothing; the actions (`Send`, `LogMeta`) accumulate in `out` for the replica to take,
    and `chosen` is set once a decision this member is to install is known."""

    def __init__(
        self,
        me: int,
        recovered: Recovered,
        contacts: Sequence[int],
        layout: Sequence[SubgroupSpec],
        retry_ns: int,
    ):
        self.frame = FRAME
        self.me = me
        self.layout = tuple(layout)
        self.retry_ns = retry_ns
        known = set(recovered.members) | set(contacts)
        if recovered.proposal is not None:
            known |= set(recovered.proposal.members)
        self.contacts = tuple(sorted(known - {me}))
        self.summaries: dict[int, Recovered] = {me: recovered}
        self.leader_heard_ns: dict[int, int] = {}
        a = recovered.acceptor
        self.round_seen = max(ballot_round(a.promised), ballot_round(a.accepted))
        self.ballot = 0
        self.instance: Instance | None = None
        self.promised_by: set[int] = set()
        self.accepted_by: set[int] = set()
        self.proposing: RestartDecision | None = None
        self.chosen: RestartDecision | None = None
        self.newer: tuple[int, tuple[int, ...]] | None = None  # (epoch, members) of a live group
        self.waiting = ""  # why this leader cannot decide yet
        self.next_try_ns: int | None = None
        # a leader with a quorum still waits until then for the rest of the view to answer, so
        # members restarting together resume together rather than join one by one
        self.decide_at_ns = 0
        self.now_ns = 0
        self.out: list[Send | LogMeta] = []

    @property
    def recovered(self) -> Recovered:
        return self.summaries[self.me]

    def _frame(self, kind: int, ballot: int, instance: int, body: bytes = b"") -> bytes:
        return self.frame.pack(kind, 0, ballot, instance) + body

    def _send(self, to: int, frame: bytes) -> None:
        self.out.append(Send(to, frame))

    def _set_acceptor(self, a: Acceptor) -> None:
        r = self.recovered
        self.summaries[self.me] = Recovered(
            r.epoch,
            r.members,
            r.awaiting,
            r.proposal,
            r.logged,
            a,
            r.offer_epoch,
            r.offerable,
            r.roster,
        )
        self.out.append(LogMeta("restart-acceptor", a.encode(), sync=True))

    # -- time -----------------------------------------------------------------------------------

    def on_tick(self, now_ns: int) -> None:
        self.now_ns = now_ns
        if self.chosen is not None or self.newer is not None:
            return
        if self.next_try_ns is None:
            # the lowest id tries first; the others give it a head start
            rank = sorted((*self.contacts, self.me)).index(self.me)
            self.next_try_ns = now_ns + self.retry_ns * (1 + rank)
            return
        if self.proposing is None and self.instance is not None and now_ns >= self.decide_at_ns:
            self._try_propose()
        if now_ns < self.next_try_ns:
            return
        self.next_try_ns = now_ns + 2 * self.retry_ns
        lower = [
            m
            for m, t in self.leader_heard_ns.items()
            if m < self.me and now_ns - t < 3 * self.retry_ns
        ]
        if not lower:
            self._prepare()

    def next_deadline_ns(self) -> int | None:
        """When `on_tick` next has work (None before the first tick)."""
        if self.next_try_ns is None:
            return None
        if self.proposing is None and self.instance is not None and self.now_ns < self.decide_at_ns:
            return min(self.next_try_ns, self.decide_at_ns)
        return self.next_try_ns

    def _prepare(self) -> None:
        self.round_seen += 1
        self.ballot = make_ballot(self.round_seen, self.me)
        self.instance = instance_of(self.summaries.values(), self.layout)
        self.promised_by, self.accepted_by, self.proposing = set(), set(), None
        self.decide_at_ns = self.now_ns + self.retry_ns // 2
        frame = self._frame(FRAME_RESTART_PREPARE, self.ballot, self.instance.epoch)
        for c in self.contacts:
            self._send(c, frame)
        self.on_frame(self.me, frame)

    # -- frames ---------------------------------------------------------------------------------

    def on_frame(self, source: int, payload: bytes) -> None:
        kind, _, ballot, instance = self.frame.unpack_from(payload)
        body = payload[self.frame.size :]
        if kind == FRAME_RESTART_PREPARE:
            self._on_prepare(source, ballot, instance)
        elif kind == FRAME_RESTART_PROMISE:
            self._on_promise(source, ballot, instance, body)
        elif kind == FRAME_RESTART_ACCEPT:
            self._on_accept(source, ballot, instance, body)
        elif kind == FRAME_RESTART_ACCEPTED:
            self._on_accepted(source, ballot, instance)
        elif kind == FRAME_RESTART_COMMIT:
            d = RestartDecision.decode(body)
            if self.chosen is None and self.newer is None:
                if self.me in d.members:
                    self.chosen = d
                else:
                    self.newer = (d.epoch, d.members)
        elif kind == FRAME_RESTART_NEWER and self.chosen is None and self.newer is None:
            r = WordReader(body, "restart message")
            self.newer = (instance, r.seq())

    def _reply(self, to: int, frame: bytes) -> None:
        if to == self.me:
            self.on_frame(self.me, frame)
        else:
            self._send(to, frame)

    def _on_prepare(self, source: int, ballot: int, instance: int) -> None:
        if source != self.me:
            self.leader_heard_ns[source] = self.now_ns
        self.round_seen = max(self.round_seen, ballot_round(ballot))
        a = self.recovered.acceptor
        if (instance, ballot) > (a.instance, a.promised):
            if instance > a.instance:
                a = Acceptor(instance, ballot)
            else:
                a = Acceptor(instance, ballot, a.accepted, a.decision)
            self._set_acceptor(a)
        body = self.recovered.encode(self.me)
        self._reply(source, self._frame(FRAME_RESTART_PROMISE, ballot, instance, body))

    def _on_promise(self, source: int, ballot: int, instance: int, body: bytes) -> None:
        sender, summary = Recovered.decode(body)
        if sender != source:
            raise PeerProtocolError(f"a restart summary of {sender} sent by {source}")
        if source != self.me:  # my own is kept whole (its offer is not in the encoding)
            self.summaries[source] = summary
        a = summary.acceptor
        self.round_seen = max(self.round_seen, ballot_round(a.promised))
        if ballot != self.ballot or self.instance is None or self.proposing is not None:
            return
        if a.instance == self.instance.epoch and a.promised == ballot:
            self.promised_by.add(source)
        now = instance_of(self.summaries.values(), self.layout)
        if now != self.instance:
            # A later view may exist: ask again about it. The whole instance counts, not just its
            # epoch and members: a summary showing that a view proposed in the last epoch known
            # so far was installed keeps the same epoch and members but moves the installed
            # view, whose shards must be found, and lifts the trim bound on the cuts (a leader
            # that kept the old bound cut below what the installed view had persisted).
            self._prepare()
            return
        self._try_propose()

    def _try_propose(self) -> None:
        assert self.instance is not None
        promisers = {m: self.summaries[m] for m in sorted(self.promised_by)}
        why = quorum_missing(self.instance, self.layout, promisers)
        if why:
            self.waiting = why
            return
        if self.now_ns < self.decide_at_ns and not set(self.instance.members) <= self.promised_by:
            self.waiting = "a quorum answered; waiting briefly for the rest of the view"
            return
        d = adopted(self.instance, promisers.values())
        if d is None:
            try:
                d = decide(self.instance, self.layout, promisers)
            except LayoutError as e:
                self.waiting = str(e)
                return
        self.waiting = ""
        self.proposing = d
        frame = self._frame(FRAME_RESTART_ACCEPT, self.ballot, self.instance.epoch, d.encode())
        for m in sorted(promisers):
            self._reply(m, frame)

    def _on_accept(self, source: int, ballot: int, instance: int, body: bytes) -> None:
        if source != self.me:
            self.leader_heard_ns[source] = self.now_ns
        RestartDecision.decode(body)  # refuse a malformed one before logging it
        a = self.recovered.acceptor
        if (instance, ballot) >= (a.instance, a.promised):
            self._set_acceptor(Acceptor(instance, ballot, ballot, bytes(body)))
            self._reply(source, self._frame(FRAME_RESTART_ACCEPTED, ballot, instance))

    def _on_accepted(self, source: int, ballot: int, instance: int) -> None:
        if (
            ballot != self.ballot
            or self.proposing is None
            or self.instance is None
            or instance != self.instance.epoch
            or self.chosen is not None
        ):
            return
        self.accepted_by.add(source)
        have = sum(1 for m in self.instance.members if m in self.accepted_by)
        if 2 * have <= len(self.instance.members):
            return
        d = self.proposing
        frame = self._frame(FRAME_RESTART_COMMIT, ballot, instance, d.encode())
        for m in sorted(set(d.members) | set(self.contacts)):
            if m != self.me:
                self._send(m, frame)
        if self.me in d.members:
            self.chosen = d
        else:
            self.newer = (d.epoch, d.members)
