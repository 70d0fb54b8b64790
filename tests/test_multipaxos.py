"""Classic Multi-Paxos (smr.core.multipaxos): the wire codec, one node's bounds, and a seeded
in-test network that drives N=3 and N=5 nodes through loss, duplication, reordering, crashes and
restarts from durable state only, forced elections and partitions, checking the spec's invariants
(proofs/MultiPaxos.tla) after every step, then heals everything and checks liveness. A broken node
(a quorum of one; no adoption of 1b votes) must be caught by the same harness."""

from __future__ import annotations

import contextlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.core.errors import PeerProtocolError, UsageError
from smr.core.multipaxos import (
    NOOP,
    AcceptRecord,
    Apply,
    CatchupRequest,
    Chosen,
    Commit,
    Heartbeat,
    Nack,
    P1a,
    P1b,
    P2a,
    P2b,
    PaxosConfig,
    PaxosNode,
    PromiseRecord,
    Recovered,
    Restore,
    Snapshot,
    TrimRecord,
    decode,
    encode,
)

MS = 1_000_000


class Violation(AssertionError):
    """An invariant of the spec failed in a harness run."""


# ---- the harness --------------------------------------------------------------------------


class Disk:
    """One process's durable acceptor state: the records, replayed."""

    def __init__(self) -> None:
        self.promised = -1
        self.votes: dict[int, tuple[int, bytes | None]] = {}
        self.floor = 0


def encode_state(values: list[bytes | None]) -> bytes:
    return json.dumps([None if v is None else v.decode() for v in values]).encode()


def decode_state(state: bytes) -> list[bytes | None]:
    return [None if v is None else v.encode() for v in json.loads(state)]


class Cluster:
    """N nodes, a network of in-flight messages delivered in random order, durable disks and
    durable application states (the applied prefix). Every choice comes from `rng`."""

    def __init__(self, n: int, seed: int, node_cls: type[PaxosNode] = PaxosNode, **cfg):
        self.n = n
        self.seed = seed
        self.rng = random.Random(seed)
        self.node_cls = node_cls
        defaults = dict(
            window_max=3,
            submit_queue_max=4,
            chosen_retained_max=5,
            learned_ahead_max=64,
            votes_ahead_max=64,
            catchup_batch_max=4,
            election_timeout_ns=200 * MS,
            election_stagger_ns=60 * MS,
            heartbeat_ns=40 * MS,
        )
        defaults.update(cfg)
        self.cfg = PaxosConfig(n=n, **defaults)
        self.now_ns = 0
        self.disks = [Disk() for _ in range(n)]
        self.apps: list[list[bytes | None]] = [[] for _ in range(n)]
        self.nodes: list[PaxosNode | None] = [node_cls(i, self.cfg) for i in range(n)]
        self.net: list[tuple[int, int, bytes]] = []
        self.groups: list[int] = [0] * n  # partition: messages cross only within a group
        self.loss = 0.0
        self.dup = 0.0
        self.mid_crash = 0.0
        self.next_cmd = 0
        self.submitted: set[bytes] = set()
        self.acked: set[bytes] = set()
        self.applied_at: dict[int, bytes | None] = {}  # slot -> the value applied there anywhere
        self.votes_for: dict[tuple[int, int], dict[bytes | None, set[int]]] = {}
        self.chosen: dict[int, bytes | None] = {}  # truly chosen: majority voted, one ballot
        self.max_outstanding = 0
        self.steps = 0

    def fail(self, what: str) -> None:
        raise Violation(f"{what} (reproduce with n={self.n} seed={self.seed}, step {self.steps})")

    # -- driving a node --

    def drain(self, i: int) -> None:
        node = self.nodes[i]
        while node is not None:
            ready = node.ready()
            if not ready:
                node.advance(ready)
                return
            assert not ready.misbehaved, ready.misbehaved
            if self.rng.random() < self.mid_crash:
                # A crash in the middle of executing a Ready: before or after its persist.
                if self.rng.random() < 0.5:
                    self.persist(i, ready.persist)
                self.crash(i)
                return
            self.persist(i, ready.persist)
            self.net.extend((i, to, data) for to, data in ready.sends)
            for item in ready.apply:
                self.apply(i, item)
            node.advance(ready)
            self.max_outstanding = max(self.max_outstanding, len(node.proposed))
            if ready.snapshot_wanted is not None:
                assert ready.snapshot_wanted == len(self.apps[i])
                node.snapshot_taken(ready.snapshot_wanted, encode_state(self.apps[i]))

    def persist(self, i: int, records) -> None:
        disk = self.disks[i]
        majority = self.n // 2 + 1
        for rec in records:
            if isinstance(rec, PromiseRecord):
                assert rec.ballot >= disk.promised
                disk.promised = rec.ballot
            elif isinstance(rec, AcceptRecord):
                assert (
                    rec.ballot >= disk.promised or rec.ballot == disk.votes.get(rec.slot, (-1,))[0]
                )
                disk.promised = max(disk.promised, rec.ballot)
                disk.votes[rec.slot] = (rec.ballot, rec.value)
                voters = self.votes_for.setdefault((rec.ballot, rec.slot), {})
                voters.setdefault(rec.value, set()).add(i)
                if len(voters) > 1:
                    self.fail(f"two values in ballot {rec.ballot} at slot {rec.slot}")
                if len(voters[rec.value]) >= majority:
                    old = self.chosen.setdefault(rec.slot, rec.value)
                    if old != rec.value:
                        self.fail(f"agreement: {old!r} and {rec.value!r} chosen at {rec.slot}")
            else:
                assert isinstance(rec, TrimRecord)
                assert rec.slot <= len(self.apps[i]), "votes trimmed above the durable state"
                disk.floor = max(disk.floor, rec.slot)
                disk.votes = {s: v for s, v in disk.votes.items() if s >= disk.floor}

    def apply(self, i: int, item) -> None:
        app = self.apps[i]
        if isinstance(item, Restore):
            if item.slot <= len(app):
                self.fail(f"node {i} restored a snapshot at {item.slot} below its state")
            app[:] = decode_state(item.state)
            if len(app) != item.slot:
                self.fail("a snapshot's state is not its slot's prefix")
            for slot, value in enumerate(app):
                self.check_applied(i, slot, value)
            return
        assert isinstance(item, Apply)
        if item.slot != len(app):
            self.fail(f"node {i} applied slot {item.slot} after {len(app)} slots: out of order")
        app.append(item.value)
        self.check_applied(i, item.slot, item.value)

    def check_applied(self, i: int, slot: int, value) -> None:
        old = self.applied_at.setdefault(slot, value)
        if old != value:
            self.fail(f"agreement: node {i} applied {value!r} at {slot}, another {old!r}")
        if self.chosen.get(slot, object()) != value:
            self.fail(f"node {i} applied {value!r} at {slot}, not chosen by a majority")
        if value is not NOOP and value not in self.submitted:
            self.fail(f"validity: {value!r} applied, never submitted")

    # -- faults and clients --

    def crash(self, i: int) -> None:
        self.nodes[i] = None

    def restart(self, i: int) -> None:
        disk = self.disks[i]
        rec = Recovered(
            promised=disk.promised,
            votes=dict(disk.votes),
            vote_floor=disk.floor,
            apply_next=len(self.apps[i]),
            snapshot=encode_state(self.apps[i]),
        )
        node = self.node_cls(i, self.cfg, rec)
        node.tick(self.now_ns)
        self.nodes[i] = node
        self.drain(i)

    def leaders(self) -> list[int]:
        return [i for i, node in enumerate(self.nodes) if node is not None and node.leading]

    def submit(self, command: bytes, to: int) -> None:
        node = self.nodes[to]
        self.submitted.add(command)
        if node is not None and node.submit(command):
            self.acked.add(command)
            self.drain(to)

    def new_command(self) -> None:
        live = [i for i, node in enumerate(self.nodes) if node is not None]
        if not live:
            return
        to = self.rng.choice(self.leaders() or live)
        self.next_cmd += 1
        self.submit(b"c%d" % self.next_cmd, to)

    def deliver(self) -> None:
        k = self.rng.randrange(len(self.net))
        self.net[k], self.net[-1] = self.net[-1], self.net[k]
        src, dst, data = self.net.pop()
        if self.rng.random() < self.dup:
            self.net.append((src, dst, data))
        node = self.nodes[dst]
        if node is None or self.groups[src] != self.groups[dst] or self.rng.random() < self.loss:
            return
        node.on_message(src, data)
        self.drain(dst)

    def tick(self, dt_ns: int) -> None:
        self.now_ns += dt_ns
        for i, node in enumerate(self.nodes):
            if node is not None:
                node.tick(self.now_ns)
                self.drain(i)

    # -- the two phases --

    def chaos(self, steps: int) -> None:
        rng = self.rng
        self.loss, self.dup, self.mid_crash = 0.1, 0.05, 0.01
        for _ in range(steps):
            self.steps += 1
            r = rng.random()
            if self.net and r < 0.55:
                self.deliver()
            elif r < 0.70:
                self.tick(rng.randint(1, 40) * MS)
            elif r < 0.85:
                self.new_command()
            elif r < 0.89:
                live = [i for i, node in enumerate(self.nodes) if node is not None]
                if live:
                    self.crash(rng.choice(live))
            elif r < 0.93:
                dead = [i for i, node in enumerate(self.nodes) if node is None]
                if dead:
                    self.restart(rng.choice(dead))
            elif r < 0.96:
                i = rng.randrange(self.n)
                if self.nodes[i] is not None:
                    self.nodes[i].campaign()
                    self.drain(i)
            elif r < 0.98:
                self.groups = [rng.randrange(2) for _ in range(self.n)]
            else:
                self.groups = [0] * self.n

    def heal(self, steps_max: int = 20_000) -> None:
        """No more faults: restart everyone, join the partitions, keep clients retrying; every
        acknowledged command must be applied everywhere, and the nodes must agree."""
        self.loss = self.dup = self.mid_crash = 0.0
        self.groups = [0] * self.n
        for i, node in enumerate(self.nodes):
            if node is None:
                self.restart(i)
        for _ in range(steps_max):
            self.steps += 1
            applied = set(self.apps[0])
            if (
                self.acked <= applied
                and all(app == self.apps[0] for app in self.apps)
                and len(self.leaders()) == 1
            ):
                return
            if self.net and self.rng.random() < 0.9:
                self.deliver()
            else:
                self.tick(self.rng.randint(1, 40) * MS)
                for leader in self.leaders():
                    node = self.nodes[leader]
                    busy = set(self.apps[leader]) | set(node.queue) | set(node.proposed.values())
                    for command in sorted(self.acked - busy)[:4]:
                        self.submit(command, leader)
        missing = sorted(self.acked - set(self.apps[0]))[:5]
        lengths = [len(app) for app in self.apps]
        self.fail(f"liveness: after healing, missing {missing}, applied lengths {lengths}")

    def check_durable(self) -> None:
        """Every value once applied anywhere is applied, at its slot, everywhere now."""
        for app in self.apps:
            for slot, value in self.applied_at.items():
                if slot >= len(app) or app[slot] != value:
                    self.fail(f"durability: slot {slot} ({value!r}) lost")


def run(n: int, seed: int, node_cls: type[PaxosNode] = PaxosNode, steps: int = 600) -> Cluster:
    cluster = Cluster(n, seed, node_cls)
    cluster.chaos(steps)
    cluster.heal()
    cluster.check_durable()
    assert cluster.max_outstanding <= cluster.cfg.window_max
    return cluster


# ---- the simulation tests -----------------------------------------------------------------


@pytest.mark.parametrize(("n", "seeds"), [(3, range(0, 300)), (5, range(1000, 1150))])
def test_safety_under_faults_then_liveness_after_healing(n, seeds):
    applied_total = 0
    for seed in seeds:
        cluster = run(n, seed)
        applied_total += len(cluster.apps[0])
    # The runs did real work: most acknowledged commands made it through the faults.
    assert applied_total > 3 * len(seeds)


def test_a_run_is_determined_by_its_seed():
    a, b = run(3, 7), run(3, 7)
    assert a.apps == b.apps and a.steps == b.steps and a.now_ns == b.now_ns


class QuorumOfOne(PaxosNode):
    """Broken: any one process is a quorum (the spec's QUORUM = FALSE)."""

    def is_quorum(self, count: int) -> bool:
        return count >= 1


class NoAdoption(PaxosNode):
    """Broken: acceptors report no votes in their 1b, so a new leader adopts nothing."""

    def _report(self, ballot, from_slot):
        return P1b(ballot, self.vote_floor, ())


@pytest.mark.parametrize("broken", [QuorumOfOne, NoAdoption])
def test_the_harness_catches_a_broken_node(broken):
    for seed in range(200):
        try:
            run(3, seed, broken)
        except Violation as e:
            assert "agreement" in str(e) or "chosen" in str(e), e
            return
    pytest.fail(f"{broken.__name__} passed 200 seeds: the checker cannot fail")


# ---- one node: bounds, window, catch-up ------------------------------------------------------


def cfg(**kw) -> PaxosConfig:
    base = dict(n=3, window_max=2, submit_queue_max=3, chosen_retained_max=4)
    base.update(kw)
    return PaxosConfig(**base)


def lead(node: PaxosNode) -> None:
    """Make `node` (id 0 of 3) the leader with one peer's empty 1b."""
    node.campaign()
    r = node.ready()
    assert r.persist == [PromiseRecord(0)]
    assert sorted(to for to, _ in r.sends) == [1, 2] and decode(r.sends[0][1]) == P1a(0, 0)
    node.advance(r)
    node.on_message(1, encode(P1b(0, 0, ())))
    assert node.leading
    node.advance(node.ready())


def test_the_window_and_the_submit_queue_are_bounded():
    node = PaxosNode(0, cfg())
    assert not node.submit(b"x"), "a non-leader refuses (no forwarding)"
    lead(node)
    assert all(node.submit(b"c%d" % k) for k in range(5))  # 2 proposed, 3 queued
    assert not node.submit(b"c5"), "beyond submit_queue_max"
    assert sorted(node.proposed) == [0, 1] and len(node.queue) == 3
    r = node.ready()
    assert [decode(d) for to, d in r.sends if to == 1] == [
        P2a(0, 0, 0, (b"c0",)),
        P2a(0, 1, 0, (b"c1",)),
    ]
    node.advance(r)  # its own votes count now
    node.on_message(1, encode(P2b(0, 0, 2, 0)))
    r = node.ready()
    assert r.apply == [Apply(0, b"c0"), Apply(1, b"c1")]
    assert sorted(node.proposed) == [2, 3], "the window slid"
    p2a = [decode(d) for to, d in r.sends if to == 2 and isinstance(decode(d), P2a)]
    assert p2a == [P2a(0, 2, 2, (b"c2", b"c3"))], "new slots go in one batch"
    node.advance(r)


def test_own_vote_counts_only_once_durable():
    node = PaxosNode(0, cfg())
    lead(node)
    node.submit(b"a")
    r = node.ready()
    assert r.persist == [AcceptRecord(0, 0, b"a")]
    # The peer's 2b cannot arrive before our sends; but even if it did, without our durable vote
    # one 2b is no majority of 3.
    node.advance(r)
    node.on_message(2, encode(P2b(0, 0, 1, 0)))
    assert node.ready().apply == [Apply(0, b"a")]


def test_a_new_leader_adopts_the_highest_vote_and_fills_gaps_with_noops():
    rec = Recovered(promised=5, votes={0: (4, b"new")})
    node = PaxosNode(0, cfg(window_max=4), rec)
    node.campaign()
    assert node.ballot == 6, "its next own ballot above its promise"
    node.advance(node.ready())
    node.on_message(1, encode(P1b(6, 0, ((0, 1, b"old"), (3, 4, b"x")))))
    assert node.leading and node.proposed == {0: b"new", 1: NOOP, 2: NOOP, 3: b"x"}


def test_a_lower_ballot_is_refused_with_a_nack_and_a_higher_one_preempts():
    node = PaxosNode(1, cfg())
    node.on_message(0, encode(P1a(3, 0)))
    r = node.ready()
    assert r.persist == [PromiseRecord(3)] and decode(r.sends[0][1]) == P1b(3, 0, ())
    node.advance(r)
    node.on_message(2, encode(P2a(2, 0, 0, (b"z",))))
    r = node.ready()
    assert r.persist == [] and decode(r.sends[0][1]) == Nack(3)
    node.advance(r)
    node.campaign()
    assert node.ballot == 4
    node.advance(node.ready())
    node.on_message(0, encode(Heartbeat(6, 0)))
    assert node.ballot == -1 and not node.leading, "stepped down for a higher ballot"


def test_the_leader_commits_by_reference_and_a_learner_without_the_vote_catches_up():
    leader = PaxosNode(0, cfg(window_max=4))
    lead(leader)
    for k in range(3):
        leader.submit(b"v%d" % k)
    r = leader.ready()
    p2a = [decode(d) for to, d in r.sends if to == 1]
    leader.advance(r)
    # member 1 votes for all three; member 2 got only the first P2a's first value
    voter, laggard = PaxosNode(1, cfg(window_max=4)), PaxosNode(2, cfg(window_max=4))
    for msg in p2a:
        voter.on_message(0, encode(msg))
    laggard.on_message(0, encode(P2a(0, 0, 0, (b"v0",))))
    voter.advance(voter.ready())
    laggard.advance(laggard.ready())
    leader.on_message(1, encode(P2b(0, 0, 3, 0)))
    r = leader.ready()
    announced = {decode(d) for _, d in r.sends}
    assert announced == {Chosen(0, 0, 3)}, "one message for the run, and no value in it"
    assert [a.slot for a in r.apply] == [0, 1, 2]
    leader.advance(r)
    voter.on_message(0, encode(Chosen(0, 0, 3)))
    r = voter.ready()
    assert r.apply == [Apply(0, b"v0"), Apply(1, b"v1"), Apply(2, b"v2")]
    voter.advance(r)
    laggard.on_message(0, encode(Chosen(0, 0, 3)))
    r = laggard.ready()
    assert r.apply == [Apply(0, b"v0")], "it learns the slot it voted for"
    assert [decode(d) for _, d in r.sends] == [CatchupRequest(1)]
    laggard.advance(r)
    # a vote of another ballot is not taken for the value chosen in this one
    other = PaxosNode(2, cfg(window_max=4))
    other.on_message(0, encode(P2a(0, 0, 0, (b"old",))))
    other.advance(other.ready())
    other.on_message(0, encode(Chosen(3, 0, 1)))
    r = other.ready()
    assert r.apply == [] and [decode(d) for _, d in r.sends] == [CatchupRequest(0)]


def test_catch_up_serves_chosen_values_then_a_snapshot_when_trimmed():
    node = PaxosNode(0, cfg(chosen_retained_max=2, catchup_batch_max=2))
    lead(node)
    for k in range(3):
        node.submit(b"v%d" % k)
        node.advance(node.ready())
        node.on_message(1, encode(P2b(0, k, 1, 0)))
        r = node.ready()
        node.advance(r)
    assert r.snapshot_wanted == 3 and node.apply_next == 3
    node.on_message(2, encode(CatchupRequest(1)))
    r = node.ready()
    assert [decode(d) for _, d in r.sends] == [Commit(1, (b"v1", b"v2"))]
    node.advance(r)
    node.snapshot_taken(3, b"state@3")
    r = node.ready()
    assert r.persist == [TrimRecord(3)] and node.votes == {}
    node.advance(r)
    node.on_message(2, encode(CatchupRequest(1)))
    r = node.ready()
    assert [decode(d) for _, d in r.sends] == [Snapshot(3, b"state@3")]
    node.advance(r)
    # The laggard restores the snapshot, then applies what follows.
    lag = PaxosNode(2, cfg())
    lag.on_message(0, encode(Commit(4, (b"v4",))))
    lag.on_message(0, encode(Snapshot(3, b"state@3")))
    lag.on_message(0, encode(Commit(3, (b"v3",))))
    assert lag.ready().apply == [Restore(3, b"state@3"), Apply(3, b"v3"), Apply(4, b"v4")]


def test_a_snapshot_is_wanted_once_the_applied_values_kept_pass_their_byte_bound():
    node = PaxosNode(0, cfg(chosen_retained_max=100, chosen_retained_bytes_max=100))
    lead(node)
    wanted = []
    for k in range(3):
        node.submit(bytes(60))
        node.advance(node.ready())
        node.on_message(1, encode(P2b(0, k, 1, 0)))
        r = node.ready()
        wanted.append(r.snapshot_wanted)
        node.advance(r)
    assert wanted == [None, 2, None]  # 120 bytes kept after two; asked once
    node.snapshot_taken(2, b"state@2")
    assert node._retained_bytes == 60  # slot 2, applied after the snapshot's slot
    node.advance(node.ready())


def test_the_window_holds_a_bytes_bound_and_a_2a_a_message_bound():
    node = PaxosNode(0, cfg(window_max=8, window_bytes_max=250, message_bytes_max=120))
    lead(node)
    for _ in range(5):
        assert node.submit(bytes(100))
    r = node.ready()
    twoas = [decode(d) for peer, d in r.sends if peer == 1]
    # two fit under 250 bytes in flight (one at least, always)
    assert [(m.first_slot, len(m.values)) for m in twoas] == [(0, 1), (1, 1)]
    assert len(node.proposed) == 2 and len(node.queue) == 3
    node.advance(r)
    node.on_message(1, encode(P2b(0, 0, 2, 0)))  # chosen: the window empties, two more go
    r = node.ready()
    assert sorted(node.proposed) == [2, 3] and len(node.queue) == 1
    # the two go in one run, cut into 2a messages of at most 120 bytes of values
    twoas = [decode(d) for peer, d in r.sends if peer == 1 and isinstance(decode(d), P2a)]
    assert [(m.first_slot, len(m.values)) for m in twoas] == [(2, 1), (3, 1)]
    node.advance(r)


def test_a_restarted_node_keeps_its_promise_and_votes():
    rec = Recovered(promised=4, votes={7: (5, b"q")}, vote_floor=7, apply_next=7, snapshot=b"s")
    node = PaxosNode(2, cfg(), rec)
    assert node.promised == 5, "a vote implies its ballot was promised"
    node.on_message(0, encode(P1a(6, 7)))
    r = node.ready()
    assert decode(r.sends[0][1]) == P1b(6, 7, ((7, 5, b"q"),))
    node.advance(r)
    node.campaign()
    assert node.ballot == 8, "never a ballot at or below its promise"


def test_bad_config_and_usage_are_usage_errors():
    with pytest.raises(UsageError):
        PaxosConfig(n=3, window_max=0)
    with pytest.raises(UsageError):
        PaxosNode(3, cfg())
    node = PaxosNode(0, cfg())
    with pytest.raises(UsageError):
        node.on_message(0, encode(Nack(1)))
    with pytest.raises(UsageError):
        node.snapshot_taken(1, b"")


# ---- the codec --------------------------------------------------------------------------------

values = st.one_of(st.none(), st.binary(max_size=20))
slots = st.integers(0, 1 << 40)
messages = st.one_of(
    st.builds(P1a, slots, slots),
    st.builds(
        lambda b, f, vs: P1b(
            (b + 1) << 20, f, tuple((s, b, v) for s, v in sorted(dict(vs).items()))
        ),
        slots,
        slots,
        st.lists(st.tuples(slots, values), max_size=5),
    ),
    st.builds(P2a, slots, slots, slots, st.lists(values, min_size=1, max_size=5).map(tuple)),
    st.builds(P2b, slots, slots, st.integers(1, 100), slots),
    st.builds(Nack, slots),
    st.builds(Heartbeat, slots, slots),
    st.builds(CatchupRequest, slots),
    st.builds(Commit, slots, st.lists(values, min_size=1, max_size=5).map(tuple)),
    st.builds(Snapshot, slots, st.binary(max_size=50)),
    st.builds(Chosen, slots, slots, st.integers(1, 100)),
)


@given(messages)
@settings(max_examples=300, deadline=None)
def test_every_message_round_trips_and_every_cut_or_extension_is_refused(msg):
    data = encode(msg)
    assert decode(data) == msg
    for cut in range(len(data)):
        with pytest.raises(PeerProtocolError):
            decode(data[:cut])
    with pytest.raises(PeerProtocolError):
        decode(data + b"\x00")


@given(st.binary(max_size=200))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_decode_or_raise_a_peer_error(data):
    with contextlib.suppress(PeerProtocolError):
        decode(data)


@given(messages, st.data())
@settings(max_examples=300, deadline=None)
def test_corrupted_messages_decode_or_raise_a_peer_error(msg, data):
    raw = bytearray(encode(msg))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(PeerProtocolError):
        decode(bytes(raw))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x63",
        encode(P1a(1, 2))[:-1],
        b"\x01" + b"\xff" * 16,  # negative ballot
        encode(P2a(1, 0, 0, (b"a",))).replace(b"\x01\x00\x00\x00a", b"\xff\xff\xff\x7fa"),  # huge
        b"\x03" + bytes(24) + b"\x00\x00\x00\x00",  # a batch of zero values
        b"\x03" + bytes(24) + b"\xff\xff\xff\xff",  # a batch over BATCH_MAX
        b"\x02" + (1).to_bytes(8, "little") + bytes(8) + (2).to_bytes(4, "little") + bytes(64),
        encode(Snapshot(0, b"abc"))[:-1],
    ],
)
def test_malformed_messages_are_peer_errors(data):
    with pytest.raises(PeerProtocolError):
        decode(data)


def test_a_malformed_message_is_dropped_and_reported():
    node = PaxosNode(1, cfg())
    node.on_message(0, b"\x09garbage")
    r = node.ready()
    assert r.misbehaved and r.misbehaved[0][0] == 0 and not r.sends and not r.persist
