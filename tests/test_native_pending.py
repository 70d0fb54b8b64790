"""The native stream's receive side (`smr._native.Pending`) against the reference
(`smr.core.pending.Pending`).

Both are driven with the same random shards: senders' rings written as a sender writes them
(messages with payloads inline, null runs, headers of large messages whose payload may or may not
have arrived), then damaged as a faulty or malicious peer might (a flipped byte, more messages
announced than written, more than a window); every `take`, `deliver` and `drain` result, every
exception type and message, and every queue after each step must be the same. Then the simulator
runs seeds on either and must give the same digests.

Nothing here skips: when the extension did not build, every test fails and says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from native_ext import native  # every test below fails, saying why, if it did not build

import smr
from smr.core.errors import PeerProtocolError
from smr.core.layout import SubgroupSpec
from smr.core.multicast import MulticastConfig
from smr.core.pending import (
    FLAG_REPLY,
    KIND_DATA,
    KIND_LARGE,
    KIND_NULLS,
    SLOT_HEADER,
    Pending,
    new_pending,
)
from smr.core.replica import CoreConfig, Replica
from smr.core.table import Layout, Table, byte_slots
from smr.sim import SimConfig, run_seed

WINDOW = 8
SLOT = 48
PAYLOAD_MAX = SLOT - SLOT_HEADER.size
RING = WINDOW * SLOT
SENDERS = (4, 7, 9)


def outcome(f: Any, *args: Any) -> Any:
    """A call's result, or its exception's type and message."""
    try:
        return ("ok", f(*args))
    except (PeerProtocolError, AssertionError) as e:
        return (type(e).__name__, str(e) if isinstance(e, PeerProtocolError) else "")


# one slot as a sender writes it: ("data", payload, reply) | ("nulls", run) | ("large", n, arrived)
slot_op = st.one_of(
    st.tuples(st.just("data"), st.binary(max_size=PAYLOAD_MAX), st.booleans()),
    st.tuples(st.just("nulls"), st.integers(1, 3)),
    st.tuples(st.just("large"), st.integers(0, 300), st.sampled_from([True, True, True, False])),
)
damage = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.tuples(st.just("flip"), st.integers(0, RING - 1), st.integers(1, 255)),
    st.tuples(st.just("announce"), st.integers(1, WINDOW + 2)),
)


def write_ring(
    buf: bytearray, at: int, k: int, start: int, ops: list, inbox: dict, rng_ts: int
) -> int:
    """Write sender rank `k`'s slots from message `start` into its ring at byte `at` (as
    `ShardStream.send` does, at most a window of indices); return the index after the last."""
    index = start
    for i, op in enumerate(ops):
        ts = rng_ts + i
        if op[0] == "data":
            kind, length, data = KIND_DATA | (FLAG_REPLY if op[2] else 0), len(op[1]), op[1]
            count = 1
        elif op[0] == "nulls":
            kind, length, data, count = KIND_NULLS, op[1], b"", op[1]
        else:
            kind, length, data, count = KIND_LARGE, op[1], b"", 1
            if op[2]:
                inbox[(k, index)] = bytes([k]) * op[1]
        if index + count > start + WINDOW:
            break
        base = at + (index % WINDOW) * SLOT
        SLOT_HEADER.pack_into(buf, base, index, ts, length, kind)
        buf[base + SLOT_HEADER.size : base + SLOT_HEADER.size + len(data)] = data
        index += count
    return index


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 3),
    base=st.integers(0, 40),
    rounds=st.lists(
        st.lists(st.tuples(st.lists(slot_op, max_size=6), damage), min_size=3, max_size=3),
        min_size=1,
        max_size=3,
    ),
)
def test_native_pending_matches_the_reference(n, base, rounds):
    senders = SENDERS[:n]
    ref = Pending(senders, 5, WINDOW, SLOT)
    nat = native().Pending(senders, 5, WINDOW, SLOT)
    buf = bytearray(16 + n * RING)  # rings at offsets that are not 0, as in a table
    received = [base] * n
    blocked = [-1] * n
    delivered = base * n
    for r, per_sender in enumerate(rounds):
        inbox: dict = {}
        for k in range(n):
            ops, dmg = per_sender[k]
            at = 16 + k * RING
            sent = write_ring(buf, at, k, received[k], ops, inbox, 1000 * r)
            if dmg is not None and dmg[0] == "flip":
                buf[at + dmg[1]] ^= dmg[2]
            elif dmg is not None:
                sent += dmg[1]
            if sent <= received[k] or blocked[k] == received[k]:
                continue
            ref_inbox, nat_inbox = dict(inbox), dict(inbox)
            a = outcome(ref.take, k, buf, at, received[k], sent, ref_inbox)
            b = outcome(nat.take, k, buf, at, received[k], sent, nat_inbox)
            assert a == b
            event(f"take: {a[0]}" + (" (blocked)" if a[0] == "ok" and a[1][2] else ""))
            assert ref_inbox == nat_inbox
            assert ref.own(k) == nat.own(k)
            if a[0] != "ok":
                blocked[k] = received[k]
                continue
            got, _ts, is_blocked = a[1]
            if is_blocked:
                blocked[k] = got
            received[k] = got
        m = min(received)
        stable = m * n + received.index(m)
        a = outcome(ref.deliver, delivered, stable, 2, 1, 3 << 32)
        b = outcome(nat.deliver, delivered, stable, 2, 1, 3 << 32)
        assert a == b
        assert a[0] == "ok"
        assert all(type(d).__name__ == "Delivery" for d in b[1])
        event(f"deliveries: {min(len(b[1]), 3)}+")
        delivered = stable
        assert len(ref) == len(nat)
        assert [ref.own(k) for k in range(n)] == [nat.own(k) for k in range(n)]


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(slot_op, max_size=8), flip=damage)
def test_raw_drain_matches_the_reference(ops, flip):
    ref = Pending((3,), 0, WINDOW, SLOT)
    nat = native().Pending((3,), 0, WINDOW, SLOT)
    buf = bytearray(RING)
    inbox: dict = {}
    sent = write_ring(buf, 0, 0, 0, ops, inbox, 7)
    if flip is not None and flip[0] == "flip":
        buf[flip[1]] ^= flip[2]
    a = outcome(ref.take, 0, buf, 0, 0, sent, dict(inbox))
    b = outcome(nat.take, 0, buf, 0, 0, sent, dict(inbox))
    assert a == b
    assert ref.drain(0, 1, 0, 1 << 32) == nat.drain(0, 1, 0, 1 << 32)
    assert len(ref) == len(nat) == 0


@pytest.mark.parametrize("impl", ["python", "native"])
def test_a_stable_sequence_number_never_received_is_an_assertion(impl):
    p = new_pending((1, 2), 0, WINDOW, SLOT, impl)
    with pytest.raises(AssertionError):
        p.deliver(0, 1, 0, 0, 0)


def test_own_messages_come_back_for_the_next_epoch():
    nat = native().Pending((1, 2), 0, WINDOW, SLOT)
    ref = Pending((1, 2), 0, WINDOW, SLOT)
    for p in (nat, ref):
        p.append(1, 0, 1, KIND_DATA, 11, b"a", True)
        p.append(1, 1, 2, KIND_NULLS, 0, None, False)
    assert (
        nat.own(1) == ref.own(1) == [(0, 1, KIND_DATA, 11, b"a", True), (1, 2, 2, 0, None, False)]
    )
    assert nat.own(0) == []


def test_the_ring_is_read_from_the_native_table_too():
    """The stream reads whichever table the replica has: the native one's `buf` is lent through
    the buffer protocol like the reference's bytearray."""
    layout = Layout((byte_slots("slots", RING),))
    tables = [Table(layout, (1, 2), 1), native().Table(layout, (1, 2), 1)]
    results = []
    for t in tables:
        payload = b"hello"
        row_base = t.row_bytes  # row 1: the sender's
        SLOT_HEADER.pack_into(t.buf, row_base, 0, 9, len(payload), KIND_DATA)
        t.buf[row_base + SLOT_HEADER.size : row_base + SLOT_HEADER.size + 5] = payload
        p = native().Pending((2,), 0, WINDOW, SLOT)
        results.append((p.take(0, t.buf, row_base, 0, 1, {}), p.deliver(0, 1, 0, 0, 0)))
    assert results[0] == results[1]
    assert results[0][1][0].payload == b"hello"


def test_engine_selection(monkeypatch):
    """The config's engine picks the implementation; "auto" follows SMR_NATIVE, which a process
    reads when it imports smr, and a wrong value is refused there."""
    bad = subprocess.run(
        [sys.executable, "-c", "import smr"],
        env={**os.environ, "SMR_NATIVE": "yes"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "SMR_NATIVE must be 0" in bad.stderr
    python = subprocess.run(
        [sys.executable, "-c", "import smr.core.pending as p; print(p.native_wanted())"],
        env={**os.environ, "SMR_NATIVE": "0"},
        capture_output=True,
        text=True,
    )
    assert python.stdout.strip() == "False", python.stderr
    with pytest.raises(ValueError, match="unknown engine"):
        MulticastConfig(engine="fast")
    assert type(new_pending((1,), 0, WINDOW, SLOT, "python")) is Pending
    assert type(new_pending((1,), 0, WINDOW, SLOT, "native")) is native().Pending
    monkeypatch.setattr(smr, "_NATIVE_DEFAULT", False)  # as SMR_NATIVE=0 sets it
    assert type(new_pending((1,), 0, WINDOW, SLOT)) is Pending
    monkeypatch.setattr(smr, "_NATIVE_DEFAULT", True)
    assert type(new_pending((1,), 0, WINDOW, SLOT)) is native().Pending
    spec = [SubgroupSpec("x", mode="ordered", senders=((1, 2),))]
    for engine, cls in (("python", Pending), ("native", native().Pending)):
        r = Replica(
            1, (1, 2), layout=spec, config=CoreConfig(multicast=MulticastConfig(engine=engine))
        )
        assert r.streams
        assert all(type(s.pending) is cls for s in r.streams.values())


@pytest.mark.parametrize(
    "nodes, seed, workload, faults",
    [
        (3, 1, "kv", frozenset({"delay", "crash", "restart", "partition"})),
        (5, 2, "kv", frozenset({"delay", "crash", "join", "leave", "total"})),
        (4, 3, "bank", frozenset({"delay", "partition", "crash", "restart"})),
        (4, 4, "bytes", frozenset({"delay", "crash", "restart", "break"})),
        (3, 5, "counter", frozenset({"delay", "crash", "join"})),
    ],
)
def test_the_simulator_gives_the_same_digests_on_either_engine(
    monkeypatch, nodes, seed, workload, faults
):
    """Every stream of every member on the native receive side, then on the reference: the same
    seed gives the same deliveries (kv and counter have a raw shard, bytes large messages)."""
    config = SimConfig(nodes=nodes, seed=seed, workload=workload, faults=faults)
    monkeypatch.setattr(smr, "_NATIVE_DEFAULT", True)
    on_native = run_seed(config)
    monkeypatch.setattr(smr, "_NATIVE_DEFAULT", False)
    reference = run_seed(config)
    assert reference.ok and on_native.ok, (reference.violation, on_native.violation)
    assert (on_native.digest, on_native.schedule_digest, on_native.steps) == (
        reference.digest,
        reference.schedule_digest,
        reference.steps,
    )


def test_a_cluster_of_native_and_pure_python_members(tmp_path):
    """Same bytes on the wire: member 2 runs the pure-Python receive side (SMR_NATIVE=0), 1 and 3
    the native one, over tcp, with commands in the slots and larger ones on the data plane; every
    member applies the same commands, and the members' logs pass `smr log verify`."""
    import json
    from pathlib import Path

    from smr.runtime.cluster import LocalCluster
    from smr.statemachines import KVStore

    data_dir = str(tmp_path)
    env = {2: {"SMR_NATIVE": "0"}}
    with LocalCluster(
        3, data_dir=data_dir, transport="tcp", mode="durable", member_env=env
    ) as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=3) as client:
            kv = client.subgroup(KVStore)
            for i in range(80):
                value = b"v%d-" % i + bytes(5000 if i % 10 == 0 else 10)  # 1 in 10 on RDMC
                assert sorted(kv.put(f"k{i % 7}", value)) == [1, 2, 3]
        states = {}
        for m in (1, 2, 3):
            with smr.connect(cluster.config_path, member=m) as c:
                sub = c.subgroup(KVStore)
                states[m] = {k: sub.get(k, consistency="sequential") for k in sorted(sub.keys())}
        assert states[1] == states[2] == states[3] and len(states[1]) == 7
        engines = {}
        for m in (1, 2, 3):
            for line in Path(cluster.log_path(m)).read_text().splitlines():
                if line.startswith("{") and json.loads(line)["event"] == "start":
                    engines[m] = json.loads(line)["engine"]
        assert engines == {1: "native", 2: "python", 3: "native"}
    for m in (1, 2):
        shard = os.path.join(data_dir, "data", f"member-{m}", "subgroup-0-shard-0")
        verify = subprocess.run(
            [sys.executable, "-m", "smr.cli.main", "log", "verify", shard],
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
