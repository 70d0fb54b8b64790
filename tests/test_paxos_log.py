"""The Multi-Paxos acceptor log (smr.runtime.paxos_log): round trips against a model, random
sequences with reopens, crashes at every step of every operation on the simulator's FaultyDisk
(torn writes included), damaged files, a PaxosNode group of 3 driven through it with restarts,
and `smr log inspect|dump|verify` of an acceptor log."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smr.cli.log_cmd import log_group
from smr.core.errors import UsageError
from smr.core.multipaxos import (
    NO_BALLOT,
    VALUE_BYTES_MAX,
    AcceptRecord,
    Apply,
    PaxosConfig,
    PaxosNode,
    PromiseRecord,
    Recovered,
    Restore,
    TrimRecord,
)
from smr.log import Log, LogConfig, LogCorruptionError, LogError, Record
from smr.runtime.paxos_log import (
    FORMAT,
    AcceptorLog,
    AcceptorLogCorruptionError,
    AcceptorLogError,
    decode_payload,
    encode_payload,
)
from smr.sim.disk import FaultyDisk

MS = 1_000_000

# ---- the model ----------------------------------------------------------------------------


class Model:
    """What an acceptor log must give back: the records replayed, the last state saved."""

    def __init__(self) -> None:
        self.promised = NO_BALLOT
        self.votes: dict[int, tuple[int, bytes | None]] = {}
        self.floor = 0
        self.slot = 0
        self.state = b""

    def copy(self) -> Model:
        m = Model()
        m.promised, m.votes, m.floor = self.promised, dict(self.votes), self.floor
        m.slot, m.state = self.slot, self.state
        return m

    def apply(self, rec) -> None:
        if isinstance(rec, PromiseRecord):
            self.promised = max(self.promised, rec.ballot)
        elif isinstance(rec, AcceptRecord):
            if rec.slot >= self.floor:
                self.votes[rec.slot] = (rec.ballot, rec.value)
        else:
            self.floor = max(self.floor, rec.slot)
            self.votes = {s: v for s, v in self.votes.items() if s >= self.floor}

    def save(self, slot: int, state: bytes) -> None:
        self.slot, self.state = slot, state

    def recovered(self) -> Recovered:
        return Recovered(self.promised, dict(self.votes), self.floor, self.slot, self.state)


def value_of(size: int, seed: int) -> bytes | None:
    if size < 0:
        return None
    return bytes((seed * 31 + i) & 0xFF for i in range(size))


# ---- round trips ----------------------------------------------------------------------------


def test_a_new_log_recovers_nothing(tmp_path):
    log = AcceptorLog.open(str(tmp_path / "a"))
    assert log.recovered() == Recovered()
    log.close()
    log = AcceptorLog.open(str(tmp_path / "a"))
    assert log.recovered() == Recovered()
    assert log.log.meta_get("format") == FORMAT
    log.close()


def test_round_trip_promise_accepts_trims_and_state(tmp_path):
    d = str(tmp_path / "a")
    m = Model()
    log = AcceptorLog.open(d, segment_bytes_max=400)

    def persist(records):
        log.persist(records)
        for r in records:
            m.apply(r)

    persist([PromiseRecord(4)])
    persist([AcceptRecord(4, s, value_of(s % 5 - 1, s)) for s in range(12)])
    persist([PromiseRecord(9), AcceptRecord(9, 7, b"again"), AcceptRecord(9, 12, None)])
    persist([PromiseRecord(7)])  # a lower promise never lowers it
    log.save_state(5, b"state at 5")
    m.save(5, b"state at 5")
    persist([TrimRecord(5), AcceptRecord(9, 13, b"x" * 300)])
    log.close()
    log = AcceptorLog.open(d, segment_bytes_max=400)
    assert log.recovered() == m.recovered()
    assert log.recovered().promised == 9 and log.recovered().votes[7] == (9, b"again")
    assert min(log.recovered().votes) == 5
    # Many more rounds of snapshots and trims: the log stays bounded.
    for r in range(15):
        base = 14 + r * 10
        persist([AcceptRecord(9 + r, base + i, value_of(100, i)) for i in range(10)])
        log.save_state(base + 5, b"s%d" % r)
        m.save(base + 5, b"s%d" % r)
        persist([TrimRecord(base + 5)])
    assert len(log.log.segments()) <= 8
    assert len(log.log) <= 40
    log.close()
    log = AcceptorLog.open(d, segment_bytes_max=400)
    assert log.recovered() == m.recovered()
    log.close()


def test_persist_is_one_fsync_and_an_empty_batch_writes_nothing():
    disk = FaultyDisk()
    log = AcceptorLog.open("a", fs=disk)
    log.persist([PromiseRecord(1)])
    before = (disk.writes, disk.fsyncs)
    log.persist([])
    assert (disk.writes, disk.fsyncs) == before
    log.persist([AcceptRecord(1, s, b"v") for s in range(50)])
    assert disk.fsyncs == before[1] + 1 and disk.writes == before[0] + 1


@pytest.mark.parametrize("policy", ["batch", "always", "interval:50"])
def test_every_policy_but_never_fsyncs_in_persist(policy):
    disk = FaultyDisk()
    log = AcceptorLog.open("a", fs=disk, sync_policy=policy)
    log.persist([PromiseRecord(0)])  # creates the segment (its header: an atomic replace)
    n = disk.fsyncs
    log.persist([PromiseRecord(1)])
    assert disk.fsyncs == n + 1
    disk.crash(random.Random(0))
    assert AcceptorLog.open("a", fs=disk).recovered().promised == 1


def test_never_does_not_fsync_and_a_bad_policy_is_refused():
    disk = FaultyDisk(tear_writes=False)
    log = AcceptorLog.open("a", fs=disk, sync_policy="never")
    log.persist([PromiseRecord(0)])
    n = disk.fsyncs
    log.persist([PromiseRecord(1)])
    assert disk.fsyncs == n
    disk.crash(random.Random(0))
    assert AcceptorLog.open("a", fs=disk).recovered().promised in (NO_BALLOT, 0)
    with pytest.raises(UsageError, match="sync policy"):
        AcceptorLog.open("b", fs=disk, sync_policy="sometimes")


def test_misuse_is_refused_and_writes_nothing():
    disk = FaultyDisk()
    log = AcceptorLog.open("a", fs=disk)
    log.persist([PromiseRecord(2), AcceptRecord(2, 0, b"v")])
    writes = disk.writes
    bad = [
        [AcceptRecord(2, 1, b"w"), TrimRecord(1)],  # a trim above the saved state
        [PromiseRecord(-5)],
        [AcceptRecord(2, -1, b"v")],
        [AcceptRecord(2, 1, b"v" * (VALUE_BYTES_MAX + 1))],
        [AcceptRecord(2, 1, "text")],
        ["not a record"],
    ]
    for records in bad:
        with pytest.raises(UsageError):
            log.persist(records)
    assert disk.writes == writes
    log.save_state(1, b"s")
    with pytest.raises(UsageError, match="below the saved one"):
        log.save_state(0, b"s")
    log.persist([TrimRecord(1)])
    log.close()
    with pytest.raises(LogError, match="closed"):
        log.persist([PromiseRecord(3)])
    assert AcceptorLog.open("a", fs=disk).recovered() == Recovered(2, {}, 1, 1, b"s")


# ---- random sequences, reopened ---------------------------------------------------------------

record_args = st.tuples(
    st.sampled_from(["promise", "accept", "accept", "accept", "trim"]),
    st.integers(0, 40),
    st.integers(0, 30),
    st.sampled_from([-1, 0, 3, 20, 700]),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("persist"), st.lists(record_args, max_size=6)),
        st.tuples(st.just("save"), st.integers(0, 12)),
        st.tuples(st.just("reopen"), st.none()),
    ),
    max_size=30,
)


def make_records(m: Model, args, seed: int) -> list:
    """Records a driver may persist in this model's state (a trim at most at the saved slot)."""
    out = []
    for kind, a, b, size in args:
        if kind == "promise":
            out.append(PromiseRecord(b))
        elif kind == "accept":
            out.append(AcceptRecord(b, max(0, m.floor - 2 + a), value_of(size, seed + a)))
        else:
            out.append(TrimRecord(a % (m.slot + 1)))
    return out


def open_log(disk: FaultyDisk) -> AcceptorLog:
    return AcceptorLog.open("node/paxos", fs=disk, segment_bytes_max=600)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_random_sequences_with_reopens_match_the_model(ops):
    disk = FaultyDisk()
    m = Model()
    log = open_log(disk)
    for i, (kind, arg) in enumerate([*ops, ("reopen", None)]):
        if kind == "persist":
            records = make_records(m, arg, i)
            log.persist(records)
            for r in records:
                m.apply(r)
        elif kind == "save":
            state = b"state %d" % i
            log.save_state(m.slot + arg, state)
            m.save(m.slot + arg, state)
        else:
            log.close()
            log = open_log(disk)
            assert log.recovered() == m.recovered()
        assert (log.promised, log.vote_floor, log.state_slot) == (m.promised, m.floor, m.slot)
    log.close()


# ---- crashes at every step ---------------------------------------------------------------------


class Crash(Exception):
    pass


class _Handle:
    def __init__(self, disk: CrashingDisk, inner) -> None:
        self.disk, self.inner = disk, inner

    def write(self, data) -> None:
        self.disk.step()
        self.inner.write(data)

    def fsync(self) -> None:
        self.disk.step()
        self.inner.fsync()

    def close(self) -> None:
        self.inner.close()


class CrashingDisk(FaultyDisk):
    """A FaultyDisk whose power fails just before its `budget`-th mutating operation."""

    budget: int | None = None

    def step(self) -> None:
        if self.budget is not None:
            if self.budget <= 0:
                raise Crash
            self.budget -= 1

    def create(self, path):
        self.step()
        return _Handle(self, super().create(path))

    def open_append(self, path):
        return _Handle(self, super().open_append(path))

    def truncate(self, path, size):
        self.step()
        super().truncate(path, size)

    def rename(self, src, dst):
        self.step()
        super().rename(src, dst)

    def remove(self, path):
        self.step()
        super().remove(path)

    def fsync_dir(self, path):
        self.step()
        super().fsync_dir(path)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(0, 2**32), st.booleans())
def test_a_crash_anywhere_loses_nothing_persist_returned_for(ops, seed, tear):
    """Crash before a random operation on the disk inside persist, save_state or open: the log
    then recovers exactly the state before the interrupted call, or after a prefix of it; every
    call that returned is back (the promise never lower, no vote above the floor lost, the floor
    never above the state)."""
    rng = random.Random(seed)
    disk = CrashingDisk(tear_writes=tear)
    m = Model()
    log = open_log(disk)
    for i, (kind, arg) in enumerate(ops):
        if kind == "persist":
            records = make_records(m, arg, i)
            candidates = [m.copy()]
            for r in records:
                candidates.append(candidates[-1].copy())
                candidates[-1].apply(r)
        elif kind == "save":
            state = b"state %d" % i
            candidates = [m.copy(), m.copy()]
            candidates[1].save(m.slot + arg, state)
        else:
            candidates = [m.copy()]
        disk.budget = rng.randrange(12)
        try:
            if kind == "persist":
                log.persist(records)
            elif kind == "save":
                log.save_state(m.slot + arg, state)
            else:
                log.close()
                log = open_log(disk)
            disk.budget = None
            m = candidates[-1]
            continue
        except Crash:
            disk.budget = None
        disk.crash(rng)
        log = open_log(disk)
        got = log.recovered()
        matches = [c for c in candidates if c.recovered() == got]
        assert matches, f"after a crash in {kind}: {got} is none of {candidates}"
        m = matches[-1]
        assert got.vote_floor <= got.apply_next
    log.close()
    disk.crash(rng)
    assert open_log(disk).recovered() == m.recovered()


# ---- damaged files -------------------------------------------------------------------------------


def build(disk: FaultyDisk, rounds: int = 6) -> Model:
    m = Model()
    log = open_log(disk)
    for r in range(rounds):
        records = [PromiseRecord(3 * r + 1)] + [
            AcceptRecord(3 * r + 1, m.floor + i, value_of(i * 7 - 1, r)) for i in range(8)
        ]
        log.persist(records)
        for rec in records:
            m.apply(rec)
        log.save_state(m.floor + 4, b"state %d" % r)
        m.save(m.floor + 4, b"state %d" % r)
        log.persist([TrimRecord(m.slot)])
        m.apply(TrimRecord(m.slot))
    log.persist([PromiseRecord(100), AcceptRecord(100, m.floor + 1, b"last")])
    m.apply(PromiseRecord(100))
    m.apply(AcceptRecord(100, m.floor + 1, b"last"))
    log.close()
    return m


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32))
def test_a_flipped_byte_is_an_error_never_a_wrong_promise(seed):
    rng = random.Random(seed)
    disk = FaultyDisk()
    m = build(disk)
    names = [n for n in disk.listdir("node/paxos")]
    path = "node/paxos/" + rng.choice(names)
    disk.corrupt(path, rng.randrange(disk.size(path)))
    try:
        got = open_log(disk).recovered()
    except LogError as e:  # LogCorruptionError, or a marker that no longer reads
        assert "node/paxos" in str(e)
        return
    assert got == m.recovered(), path


def test_a_torn_tail_recovers_a_prefix():
    disk = FaultyDisk()
    m = build(disk)
    segs = sorted(n for n in disk.listdir("node/paxos") if n.endswith(".seg"))
    last = "node/paxos/" + segs[-1]
    disk.truncate(last, disk.size(last) - 3)
    got = open_log(disk).recovered()
    assert got.promised == 100 and got.vote_floor == m.floor
    # the last accept was torn off: its slot keeps the vote before it
    assert got.votes[m.floor + 1] != m.votes[m.floor + 1] == (100, b"last")
    assert {s: v for s, v in got.votes.items() if s != m.floor + 1} == {
        s: v for s, v in m.votes.items() if s != m.floor + 1
    }


def raw_log(tmp_path: Path, payloads: list[bytes]) -> str:
    d = str(tmp_path / "raw")
    log = Log.open(d, LogConfig())
    log.meta_put("format", FORMAT)
    log.append([Record(v + 1, 0, 0, 0, p) for v, p in enumerate(payloads)])
    log.close()
    return d


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x09",
        b"\x01\x00",
        encode_payload(PromiseRecord(1)) + b"x",
        encode_payload(AcceptRecord(1, 2, b"abc"))[:-1],
        encode_payload(AcceptRecord(1, 2, None)) + b"z",
        b"\x02"
        + (1).to_bytes(8, "little")
        + (2).to_bytes(8, "little")
        + (1 << 30).to_bytes(4, "little"),
        b"\x01" + (2**63 - 1).to_bytes(8, "little"),
        b"\x03" + (2**64 - 1).to_bytes(8, "little"),
    ],
)
def test_a_record_that_does_not_decode_is_a_clear_error(tmp_path, payload):
    d = raw_log(tmp_path, [encode_payload(PromiseRecord(1)), payload])
    with pytest.raises(AcceptorLogCorruptionError) as e:
        AcceptorLog.open(d)
    assert isinstance(e.value, LogCorruptionError)
    assert "0000000000000001.seg" in str(e.value) and "record 0x2" in str(e.value)
    r = CliRunner().invoke(log_group, ["verify", d])
    assert r.exit_code == 1 and "DAMAGED" in r.output and "record 0x2" in r.output


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40))
def test_decoding_any_payload_is_a_record_or_a_value_error(payload):
    try:
        rec = decode_payload(payload)
    except ValueError:
        return
    assert encode_payload(rec) == payload


def test_a_shard_log_or_a_newer_format_is_refused(tmp_path):
    shard = str(tmp_path / "shard")
    log = Log.open(shard)
    log.append([Record(1, 5, 0, 0, b"put k v")])
    log.close()
    before = {p.name: p.read_bytes() for p in Path(shard).iterdir()}
    with pytest.raises(AcceptorLogError, match="not a Multi-Paxos acceptor log"):
        AcceptorLog.open(shard)
    assert {p.name: p.read_bytes() for p in Path(shard).iterdir()} == before  # untouched
    newer = str(tmp_path / "newer")
    log = Log.open(newer)
    log.meta_put("format", b"multipaxos-acceptor-2")
    log.close()
    with pytest.raises(AcceptorLogError, match="newer"):
        AcceptorLog.open(newer)
    r = CliRunner().invoke(log_group, ["inspect", newer])
    assert r.exit_code == 1 and "newer" in r.output


def test_a_creation_cut_short_before_the_marker_opens_as_new():
    disk = FaultyDisk()
    Log.open("a", fs=disk).close()  # what AcceptorLog.open does before it writes the marker
    log = AcceptorLog.open("a", fs=disk)
    assert log.recovered() == Recovered()
    assert log.log.meta_get("format") == FORMAT


# ---- a PaxosNode group driven through acceptor logs -------------------------------------------


def encode_state(values: list[bytes | None]) -> bytes:
    return json.dumps([None if v is None else v.decode() for v in values]).encode()


def decode_state(state: bytes) -> list[bytes | None]:
    return [None if v is None else v.encode() for v in json.loads(state)] if state else []


class Group:
    """N PaxosNodes, each with an AcceptorLog on its own FaultyDisk; persist before the sends
    go into the network; a crash loses the node and whatever its disk did not sync."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.rng = random.Random(seed)
        self.cfg = PaxosConfig(
            n=n,
            window_max=4,
            chosen_retained_max=12,
            catchup_batch_max=8,
            election_timeout_ns=200 * MS,
            election_stagger_ns=60 * MS,
            heartbeat_ns=40 * MS,
        )
        self.now_ns = 0
        self.disks = [FaultyDisk() for _ in range(n)]
        self.logs: list[AcceptorLog | None] = [None] * n
        self.nodes: list[PaxosNode | None] = [None] * n
        self.apps: list[list[bytes | None]] = [[] for _ in range(n)]
        self.shadow = [Model() for _ in range(n)]  # what every returned persist made durable
        self.applied_at: dict[int, bytes | None] = {}
        self.net: list[tuple[int, int, bytes]] = []
        self.acked: set[bytes] = set()
        self.next_cmd = 0
        self.restarts = 0
        for i in range(n):
            self.start(i)

    def start(self, i: int) -> None:
        log = AcceptorLog.open("paxos", fs=self.disks[i], segment_bytes_max=2048)
        rec = log.recovered()
        assert rec == self.shadow[i].recovered(), f"node {i} lost durable state"
        self.apps[i] = decode_state(rec.snapshot)
        assert len(self.apps[i]) == rec.apply_next
        self.logs[i] = log
        self.nodes[i] = PaxosNode(i, self.cfg, rec)
        self.nodes[i].tick(self.now_ns)
        self.drain(i)

    def crash(self, i: int) -> None:
        self.nodes[i] = self.logs[i] = None
        self.disks[i].crash(self.rng)
        self.restarts += 1

    def drain(self, i: int) -> None:
        node, log = self.nodes[i], self.logs[i]
        while node is not None and log is not None:
            ready = node.ready()
            if not ready:
                node.advance(ready)
                return
            log.persist(ready.persist)  # durable before any send of this ready
            for rec in ready.persist:
                self.shadow[i].apply(rec)
            self.net.extend((i, to, data) for to, data in ready.sends)
            for item in ready.apply:
                self.apply(i, item)
            node.advance(ready)
            if ready.snapshot_wanted is not None:
                slot = ready.snapshot_wanted
                state = encode_state(self.apps[i][:slot])
                log.save_state(slot, state)
                self.shadow[i].save(slot, state)
                node.snapshot_taken(slot, state)

    def apply(self, i: int, item) -> None:
        app = self.apps[i]
        if isinstance(item, Restore):
            app[:] = decode_state(item.state)
            assert len(app) == item.slot
        else:
            assert isinstance(item, Apply) and item.slot == len(app)
            app.append(item.value)
        for slot in [item.slot] if isinstance(item, Apply) else range(len(app)):
            old = self.applied_at.setdefault(slot, app[slot])
            assert old == app[slot], f"node {i} applied {app[slot]!r} at {slot}, another {old!r}"

    def leader(self) -> int | None:
        leaders = [i for i, nd in enumerate(self.nodes) if nd is not None and nd.leading]
        return leaders[0] if len(leaders) == 1 else None

    def submit(self, command: bytes) -> None:
        i = self.leader()
        if i is not None and self.nodes[i].submit(command):
            self.acked.add(command)
            self.drain(i)

    def step(self) -> None:
        if self.net and self.rng.random() < 0.85:
            k = self.rng.randrange(len(self.net))
            self.net[k], self.net[-1] = self.net[-1], self.net[k]
            src, dst, data = self.net.pop()
            node = self.nodes[dst]
            if node is not None and self.nodes[src] is not None and self.rng.random() > 0.02:
                node.on_message(src, data)
                self.drain(dst)
        else:
            self.now_ns += self.rng.randint(1, 30) * MS
            for i, node in enumerate(self.nodes):
                if node is not None:
                    node.tick(self.now_ns)
                    self.drain(i)

    def settle(self, steps_max: int = 40_000) -> None:
        """Run, resubmitting acknowledged commands a leader lost, until every node applied the
        same sequence holding every acknowledged command."""
        for _ in range(steps_max):
            if self.acked <= set(self.apps[0]) and all(a == self.apps[0] for a in self.apps):
                return
            self.step()
            i = self.leader()
            if i is not None and self.rng.random() < 0.05:
                node = self.nodes[i]
                busy = set(self.apps[i]) | set(node.queue) | set(node.proposed.values())
                for command in sorted(self.acked - busy)[:4]:
                    self.submit(command)
        raise AssertionError(f"no agreement: applied lengths {[len(a) for a in self.apps]}")


@pytest.mark.parametrize("seed", range(4))
def test_a_group_of_three_applies_the_same_sequence_across_restarts(seed):
    g = Group(3, seed)
    commands = 300
    crashes = [(100, "leader"), (200, "follower")]
    crashed: int | None = None
    down_steps = 0
    while g.next_cmd < commands or crashed is not None:
        g.step()
        if g.next_cmd < commands and g.rng.random() < 0.3:
            g.next_cmd += 1
            g.submit(b"c%d" % g.next_cmd)
        if crashed is None and crashes and g.next_cmd >= crashes[0][0]:
            _, who = crashes.pop(0)
            leader = g.leader()
            crashed = 0 if leader is None else leader if who == "leader" else (leader + 1) % g.n
            g.crash(crashed)
            down_steps = 0
        elif crashed is not None:
            down_steps += 1
            if down_steps > 400:
                g.start(crashed)
                crashed = None
    g.settle()
    assert g.restarts == 2 and not crashes
    assert len(g.acked) > commands // 3
    assert len(g.apps[0]) > 2 * g.cfg.chosen_retained_max  # several snapshots and trims
    assert all(app == g.apps[0] for app in g.apps)
    for i in range(3):  # each restarts from its log with what it had made durable
        g.crash(i)
        g.start(i)
    g.settle()
    assert all(app == g.apps[0] for app in g.apps)


# ---- smr log inspect | dump | verify ------------------------------------------------------------


def make_acceptor_log(path: Path) -> Model:
    m = Model()
    log = AcceptorLog.open(str(path), segment_bytes_max=500)
    steps: list = [
        [PromiseRecord(7)],
        [AcceptRecord(7, s, b"cmd %d" % s) for s in range(10)] + [AcceptRecord(7, 10, None)],
        [PromiseRecord(11), AcceptRecord(11, 8, b"cmd 8 again")],
        ("save", 6, b"state-6"),
        [TrimRecord(6), AcceptRecord(11, 11, b"\xff\x00binary")],
    ]
    for s in steps:
        if isinstance(s, tuple):
            log.save_state(s[1], s[2])
            m.save(s[1], s[2])
        else:
            log.persist(s)
            for r in s:
                m.apply(r)
    log.close()
    return m


def run(*args):
    return CliRunner().invoke(log_group, [str(a) for a in args])


def test_cli_inspect_shows_the_acceptor_state(tmp_path):
    make_acceptor_log(tmp_path)
    r = run("inspect", tmp_path)
    assert r.exit_code == 0, r.output
    out = r.output
    assert out.startswith(f"acceptor log {tmp_path}")
    assert "multipaxos-acceptor-1" in out
    assert "promise:       ballot 11" in out
    assert "vote floor:    slot 6" in out
    assert "votes:         6 at slots 6..11  (1 no-ops" in out
    assert "snapshot at slot 6 (7 bytes" in out
    assert "segments:" in out and ".seg" in out


def test_cli_dump_text_and_json(tmp_path):
    make_acceptor_log(tmp_path)
    r = run("dump", tmp_path)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any("promise  ballot=11" in x for x in lines)
    assert any("accept   slot=8 ballot=11 11B b'cmd 8 again'" in x for x in lines)
    assert any("accept   slot=10 ballot=7 no-op" in x for x in lines)
    assert any("trim     slot=6" in x for x in lines)
    assert any("state    slot=6 7B" in x for x in lines)
    versions = [int(x.split()[0], 16) for x in lines]
    assert versions == sorted(versions)
    r = run("dump", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.output.splitlines()]
    kinds = {row["kind"] for row in rows}
    assert kinds == {"promise", "accept", "trim", "state"}
    binary = [row for row in rows if row["kind"] == "accept" and row["slot"] == 11]
    assert binary[-1]["value_bytes"] == 8 and "b64" in binary[-1]["value"]
    first = rows[2]["version"]
    r = run("dump", tmp_path, "--json", "--from", first, "--to", first)
    assert [json.loads(x)["version"] for x in r.output.splitlines()] == [first]
    r = run("dump", tmp_path, "--state-machine", "x:Y")
    assert r.exit_code == 2 and "acceptor log" in r.output


def test_cli_verify_ok_and_damaged(tmp_path):
    m = make_acceptor_log(tmp_path)
    r = run("verify", tmp_path)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ok: acceptor log:")
    assert f"promise {m.promised}, vote floor {m.floor}, state at slot {m.slot}" in r.output
    seg = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x10
    seg.write_bytes(bytes(data))
    r = run("verify", tmp_path)
    assert r.exit_code == 1 and "DAMAGED" in r.output and seg.name in r.output
    r = run("dump", tmp_path)
    assert r.exit_code == 1 and seg.name in r.output and "Traceback" not in r.output


def test_cli_snapshot_and_trim_refuse_an_acceptor_log(tmp_path):
    make_acceptor_log(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for args in (["snapshot"], ["trim", "--below", "1"]):
        r = run(args[0], tmp_path, *args[1:])
        assert r.exit_code == 1 and "acceptor log" in r.output, r.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_cli_replay_of_an_acceptor_log_rebuilds_its_state_snapshot_and_counts_the_votes(tmp_path):
    from smr.runtime.hosted import Hosted, wrap
    from smr.statemachines import Counter, KVStore

    hosted = Hosted(KVStore())
    for i, (k, v) in enumerate([("a", b"1"), ("b", b"2"), ("a", b"3")]):
        hosted.apply(wrap(9, i + 1, KVStore.encode_command("put", k, v)), i + 1, 0)
    log = AcceptorLog.open(str(tmp_path))
    log.persist([PromiseRecord(3)] + [AcceptRecord(3, s, b"v%d" % s) for s in range(5)])
    log.save_state(3, hosted.snapshot())
    log.persist([TrimRecord(3)])
    log.close()
    kv = "smr.statemachines:KVStore"
    r = run("replay", tmp_path, "--state-machine", kv, "--query", "get a", "--show")
    assert r.exit_code == 0, r.output
    assert "state snapshot: slots below 3 applied" in r.output
    assert "votes above it: 2 at slots 3..4, not applied: a vote is not a decision" in r.output
    assert "get a: b'3'" in r.output and f"digest: {hosted.machine.digest()}" in r.output
    r = run("replay", tmp_path, "--state-machine", kv, "--upto", "2")
    assert r.exit_code == 2 and "state snapshot only" in r.output
    r = run("replay", tmp_path, "--state-machine", "smr.statemachines:Counter")
    assert r.exit_code == 1 and "not a Counter state" in r.output, r.output

    fresh = tmp_path / "fresh"
    AcceptorLog.open(str(fresh)).close()
    r = run("replay", fresh, "--state-machine", "smr.statemachines:Counter")
    assert r.exit_code == 0, r.output
    assert "none yet" in r.output and f"digest: {Counter().digest()}" in r.output


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, 2**32))
def test_cli_verify_finds_any_flipped_byte_in_a_segment(tmp_path_factory, seed):
    d = tmp_path_factory.mktemp("acc")
    make_acceptor_log(d)
    rng = random.Random(seed)
    seg = rng.choice(sorted(d.glob("*.seg")))
    data = bytearray(seg.read_bytes())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    seg.write_bytes(bytes(data))
    r = run("verify", d)
    assert r.exit_code == 1 and "DAMAGED" in r.output


def test_cli_names_the_acceptor_log_in_a_member_directory(tmp_path):
    make_acceptor_log(tmp_path / "member-1" / "paxos")
    r = run("inspect", tmp_path / "member-1")
    assert r.exit_code == 1
    assert "its acceptor log is: paxos" in r.output and "Traceback" not in r.output


def test_cli_replay_finds_the_type_of_a_member_acceptor_log_from_its_cluster(tmp_path):
    from smr.runtime.config import load, write_local

    config = load(write_local(str(tmp_path), nodes=3, types=("smr.statemachines:Counter",)))
    directory = os.path.join(config.member_dir(1), "paxos")
    AcceptorLog.open(directory).close()
    r = run("replay", directory)
    assert r.exit_code == 0, r.output
    assert "type: smr.statemachines.counter:Counter" in r.output
