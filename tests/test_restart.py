"""Restart after total failure: the decision rule, the summaries on the wire, replicas agreeing on
the view they resume in, and the driver-side recovery from real logs."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from smr.core.errors import PeerProtocolError
from smr.core.layout import SubgroupSpec
from smr.core.ready import LogMeta, LogSnapshot, LogTruncate
from smr.core.replica import ACTIVE, JOINING, RESTARTING, Replica, StateTransfer
from smr.core.restart import (
    Acceptor,
    Recovered,
    RestartDecision,
    adopted,
    decide,
    decode_offer_meta,
    decode_view_meta,
    encode_view_meta,
    instance_of,
    quorum_missing,
)
from smr.core.views import Proposal, ViewInstalled
from smr.log import Log, Record
from smr.recovery import last_logged, perform, recover_member, replay
from smr.sim.disk import FaultyDisk

DURABLE = [SubgroupSpec("kv", mode="durable")]
TWO_SHARDS = [SubgroupSpec("kv", shards=2, mode="durable")]  # members split between the shards


def v(epoch: int, seq: int) -> int:
    return (epoch << 32) | seq


def rec(epoch=1, members=(1, 2, 3), logged=None, awaiting=(), proposal=None, acceptor=None):
    return Recovered(
        epoch,
        tuple(members),
        tuple(awaiting),
        proposal,
        logged if logged is not None else {},
        acceptor or Acceptor(),
    )


# -- the decision rule ------------------------------------------------------------------------


def test_the_longest_log_is_the_cut_and_shorter_logs_get_its_state():
    summaries = {2: rec(logged={(0, 0): v(1, 4)}), 3: rec(logged={(0, 0): v(1, 1)})}
    inst = instance_of(summaries.values(), DURABLE)
    assert (inst.epoch, inst.members) == (1, (1, 2, 3))
    d = decide(inst, DURABLE, summaries)
    assert d.epoch == 2 and d.members == (2, 3)
    assert d.cut((0, 0)) == v(1, 4)
    assert d.plans == ((2, (3,)),)


def test_a_majority_of_the_last_view_must_answer():
    one = {2: rec(logged={(0, 0): v(1, 4)})}
    inst = instance_of(one.values(), DURABLE)
    assert "1 of the 3 members" in quorum_missing(inst, DURABLE, one)


def test_every_durable_shard_needs_a_member_holding_its_state():
    # shard 0 is {1, 2, 3}, shard 1 is {4, 5}; only members of shard 0 answered
    members = (1, 2, 3, 4, 5)
    summaries = {m: rec(members=members, logged={(0, 0): v(1, 3)}) for m in (1, 2, 3)}
    inst = instance_of(summaries.values(), TWO_SHARDS)
    why = quorum_missing(inst, TWO_SHARDS, summaries)
    assert "shard 1" in why
    summaries[4] = rec(members=members, logged={(0, 1): v(1, 7)})
    assert quorum_missing(inst, TWO_SHARDS, summaries) == ""
    d = decide(inst, TWO_SHARDS, summaries)
    assert d.cut((0, 1)) == v(1, 7) and d.cut((0, 0)) == v(1, 3)


def test_a_member_still_waiting_for_state_does_not_count_as_a_holder():
    summaries = {
        2: rec(logged={(0, 0): 0}, awaiting=((0, 0),)),
        3: rec(logged={(0, 0): 0}, awaiting=((0, 0),)),
    }
    inst = instance_of(summaries.values(), DURABLE)
    assert "holding the state" in quorum_missing(inst, DURABLE, summaries)


def test_a_log_marked_stale_is_not_the_cut_and_its_member_gets_state():
    summaries = {
        2: rec(logged={(0, 0): v(1, 9)}, awaiting=((0, 0),)),  # beyond an earlier cut
        3: rec(logged={(0, 0): v(1, 4)}),
    }
    d = decide(instance_of(summaries.values(), DURABLE), DURABLE, summaries)
    assert d.cut((0, 0)) == v(1, 4)
    assert d.plans == ((3, (2,)),)


def test_a_logged_proposal_moves_the_instance_to_its_view_and_its_trim_bounds_the_cut():
    # view 1 proposed view 2 = [1, 2] with a trim of 3 messages of each of the 3 senders
    prop = Proposal(1, (1, 2), (), ((3, 3, 3),), ((0, ()),))
    summaries = {
        1: rec(logged={(0, 0): v(1, 8)}, proposal=prop),
        2: rec(logged={(0, 0): v(1, 6)}),
    }
    inst = instance_of(summaries.values(), DURABLE)
    assert (inst.epoch, inst.members, inst.installed_epoch) == (2, (1, 2), 1)
    assert inst.bounds == ((0, 0, v(1, 8)),)
    d = decide(inst, DURABLE, summaries)
    assert d.epoch == 3 and d.cut((0, 0)) == v(1, 8)


def test_an_installed_later_view_wins_over_older_summaries():
    summaries = {
        1: rec(epoch=1, logged={(0, 0): v(1, 2)}),
        2: rec(epoch=2, members=(2, 3), logged={(0, 0): v(2, 5)}),
        3: rec(epoch=2, members=(2, 3), logged={(0, 0): v(2, 3)}),
    }
    inst = instance_of(summaries.values(), DURABLE)
    assert (inst.epoch, inst.members) == (2, (2, 3))
    d = decide(inst, DURABLE, summaries)
    assert d.epoch == 3 and d.members == (1, 2, 3) and d.cut((0, 0)) == v(2, 5)
    assert d.plans == ((2, (1, 3)),)


def test_a_leader_that_learns_the_proposed_view_was_installed_asks_again_without_its_bound():
    # Member 1 left (or was cut off) during view 1's change to view 2 = [2, 3]: it logged the
    # proposal, whose trim bounds the cut to view 1, but never installed view 2; 2 and 3 did,
    # and persisted entries of view 2. Member 1, the lowest id, leads the restart. Its own
    # summary alone makes the instance view 2 as proposed; the promises show the same epoch and
    # members but installed, which lifts the bound: it must prepare again and cut at v(2, 5).
    prop = Proposal(1, (2, 3), (), ((2, 2, 2),), ((0, ()),))
    summaries = {
        1: rec(logged={(0, 0): v(1, 5)}, proposal=prop),
        2: rec(epoch=2, members=(2, 3), logged={(0, 0): v(2, 5)}),
        3: rec(epoch=2, members=(2, 3), logged={(0, 0): v(2, 5)}),
    }
    alone = instance_of([summaries[1]], DURABLE)
    every = instance_of(summaries.values(), DURABLE)
    assert (alone.epoch, alone.members) == (every.epoch, every.members) == (2, (2, 3))
    assert alone.bounds == ((0, 0, v(1, 5)),) and every.bounds == ()
    replicas = {m: Replica.restarting(m, summaries[m], layout=DURABLE) for m in (1, 2, 3)}
    _run(replicas, 0)
    assert all(r.status == ACTIVE and r.epoch == 3 for r in replicas.values())
    d = replicas[1].restart_decision
    assert d is not None and d.cut((0, 0)) == v(2, 5)


def test_a_decision_accepted_in_the_same_instance_is_adopted():
    d1 = RestartDecision(1, (1, 2), ((0, 0, v(1, 4)),), ((1, (2,)),))
    summaries = [
        rec(acceptor=Acceptor(1, 5 << 16 | 1, 5 << 16 | 1, d1.encode())),
        rec(acceptor=Acceptor(1, 3 << 16 | 2, 0, b"")),
    ]
    inst = instance_of(summaries, DURABLE)
    assert inst.epoch == 1
    assert adopted(inst, summaries) == d1


# -- encodings --------------------------------------------------------------------------------


def test_summaries_decisions_and_view_meta_round_trip():
    prop = Proposal(2, (1, 2), (), ((3, 4),), ((0, ()),))
    d = RestartDecision(4, (1, 3), ((0, 0, v(4, 2)), (0, 1, 0)), ((1, (3,)), (0, ())))
    r = rec(
        epoch=4,
        members=(1, 2, 3),
        logged={(0, 0): v(4, 2), (0, 1): 0},
        awaiting=((0, 1),),
        proposal=prop,
        acceptor=Acceptor(4, 7, 7, d.encode()),
    )
    assert Recovered.decode(r.encode(3)) == (3, r)
    assert RestartDecision.decode(d.encode()) == d
    assert decode_view_meta(encode_view_meta(5, (1, 2), [(0, 1)])) == (5, (1, 2), ((0, 1),))


@pytest.mark.parametrize("data", [b"", b"\x01" * 7, (1).to_bytes(8, "little") * 3])
def test_malformed_summaries_are_refused(data):
    with pytest.raises(PeerProtocolError):
        Recovered.decode(data)


# -- replicas ---------------------------------------------------------------------------------


def _run(replicas: dict[int, Replica], now_ns: int, rounds: int = 200) -> dict[int, list]:
    """Deliver every send between the replicas until nothing moves; return each one's events
    and persist requests in order."""
    seen: dict[int, list] = {m: [] for m in replicas}
    for _ in range(rounds):
        moved = False
        for m, r in replicas.items():
            r.tick(now_ns)
            while r.has_ready():
                ready = r.ready()
                seen[m].extend(ready.persist)
                seen[m].extend(ready.events)
                for ev in ready.events:
                    if isinstance(ev, StateTransfer):
                        r.send_state(ev.to, ev.subgroup, ev.shard, ev.version, b"state")
                for s in ready.sends:
                    if s.target in replicas:
                        replicas[s.target].on_data(m, s.payload)
                        moved = True
                for p in ready.writes:
                    for t in p.targets:
                        if t in replicas:
                            replicas[t].on_write(m, p.offset, p.data, p.epoch)
                            moved = True
                r.advance(ready)
        now_ns += 5_000_000
        if not moved and all(r.status != RESTARTING for r in replicas.values()):
            break
    return seen


def test_restarted_replicas_resume_in_one_new_view_with_state_transfer():
    logs = {1: v(1, 6), 2: v(1, 6), 3: v(1, 2)}
    replicas = {
        m: Replica.restarting(m, rec(logged={(0, 0): logs[m]}), layout=DURABLE) for m in (1, 2, 3)
    }
    seen = _run(replicas, 0)
    views = {m: [e for e in seen[m] if isinstance(e, ViewInstalled)] for m in replicas}
    assert all(r.status == ACTIVE and r.epoch == 2 for r in replicas.values())
    assert {tuple(e.members) for vs in views.values() for e in vs} == {(1, 2, 3)}
    d = replicas[3].restart_decision
    assert d is not None and d.cut((0, 0)) == v(1, 6)
    # member 3's log was short: it gets a snapshot at the cut and logs it in place of its log
    snaps = [p for p in seen[3] if isinstance(p, LogSnapshot)]
    assert [(s.version, s.data) for s in snaps] == [(v(1, 6), b"state")]
    # every member logged its promise and the view before it acted on them
    for m in replicas:
        names = [p.name for p in seen[m] if isinstance(p, LogMeta)]
        assert "restart-acceptor" in names and "view" in names


def test_a_member_restarting_after_the_group_resumed_joins_it_and_drops_its_log():
    group = {m: Replica(m, (1, 2), layout=DURABLE) for m in (1, 2)}
    late = Replica.restarting(3, rec(logged={(0, 0): v(1, 9)}), (1, 2), layout=DURABLE)
    replicas = {**group, 3: late}
    seen = _run(replicas, 0, rounds=40)
    assert late.status in (JOINING, ACTIVE)
    truncations = [p for p in seen[3] if isinstance(p, LogTruncate)]
    assert truncations == [LogTruncate(0, 0, 0)]
    view = next(p for p in seen[3] if isinstance(p, LogMeta) and p.name == "view")
    assert decode_view_meta(view.data)[2] == ((0, 0),)  # marked stale before it is dropped


def test_a_member_that_found_a_group_running_keeps_offering_its_logs_after_a_crash():
    # Member 3 had found the group running once, logged its offer and marked its log stale,
    # then crashed while joining: its summary shows the log stale (no restart may take it as a
    # holder) but the offer logged for the same epoch still stands.
    def offer_after_newer(recovered):
        group = {m: Replica(m, (1, 2), layout=DURABLE) for m in (1, 2)}
        late = Replica.restarting(3, recovered, (1, 2), layout=DURABLE)
        offers, now = [], 0
        while late.status == RESTARTING:  # until it hears NEWER (before it is admitted)
            seen = _run({**group, 3: late}, now, rounds=1)
            offers += [p for p in seen[3] if isinstance(p, LogMeta) and p.name == "offer"]
            now += 5_000_000
            assert now < 10**9
        assert late.status == JOINING
        return late, offers

    again = rec(logged={(0, 0): v(1, 9)}, awaiting=((0, 0),))
    late, offers = offer_after_newer(replace(again, offer_epoch=1, offerable=((0, 0),)))
    assert late.transfer.offer == (1, {(0, 0): v(1, 9)})
    assert [decode_offer_meta(p.data) for p in offers] == [(1, ((0, 0),))]
    # an offer logged in another view than the last one is void
    late, offers = offer_after_newer(replace(again, offer_epoch=0, offerable=((0, 0),)))
    assert late.transfer.offer == (1, {})


def _offer(epoch, logged):
    words = [epoch, len(logged)]
    for (sg, sh), version in sorted(logged.items()):
        words.extend((sg, sh, version))
    return struct.pack(f"<{len(words)}q", *words)


def test_a_member_vouches_for_an_offer_only_when_the_log_is_the_shards_state():
    # view 1 of [1, 2, 3, 4]: shard 0 is [1, 2], shard 1 is [3, 4]
    r = Replica(1, (1, 2, 3, 4), layout=TWO_SHARDS)
    # the joiner was in this view and in shard 1: its log is the shard's state at its start
    assert r.transfer.offer_mask(4, _offer(1, {(0, 1): v(0, 0)})) == [1]
    # but not for a shard it was not in, nor with a log of another view
    assert r.transfer.offer_mask(4, _offer(1, {(0, 0): v(0, 0)})) == []
    assert r.transfer.offer_mask(4, _offer(0, {(0, 1): v(0, 0)})) == []
    # nor a log that holds something of this epoch (delivered in it: not the state at its start)
    assert r.transfer.offer_mask(4, _offer(1, {(0, 1): v(1, 2)})) == []
    assert r.transfer.offer_mask(4, b"") == []
    with pytest.raises(PeerProtocolError):
        r.transfer.offer_mask(4, _offer(1, {(0, 1): 0})[:-8])


def test_a_member_of_the_view_whose_log_is_older_never_installed_it():
    r = Replica(1, (1, 2, 3, 4), layout=TWO_SHARDS)  # view 1
    # 4's last logged view is 0: a view is logged before it is installed, so 4 never installed
    # view 1 and delivered nothing in it; the leader may then take offers for 4's shards
    assert r.transfer.never_installed(4, _offer(0, {(0, 1): v(0, 0)}))
    assert not r.transfer.never_installed(4, _offer(1, {(0, 1): v(0, 0)}))  # it did
    assert not r.transfer.never_installed(5, _offer(0, {}))  # not a member of this view
    assert not r.transfer.never_installed(4, b"")  # no offer, no claim
    with pytest.raises(PeerProtocolError):
        r.transfer.never_installed(4, _offer(0, {(0, 1): 0})[:-8])


def test_after_a_restart_only_a_log_ending_at_the_cut_is_vouched_for():
    logs = {1: v(1, 6), 2: v(1, 6), 3: v(1, 2)}
    replicas = {
        m: Replica.restarting(m, rec(logged={(0, 0): logs[m]}), layout=DURABLE) for m in (1, 2, 3)
    }
    _run(replicas, 0)
    r = replicas[1]
    assert r.epoch == 2 and r.restart_decision is not None
    assert r.transfer.offer_mask(4, _offer(1, {(0, 0): v(1, 6)})) == [0]
    assert r.transfer.offer_mask(4, _offer(1, {(0, 0): v(1, 5)})) == []


# -- the driver side: real logs -----------------------------------------------------------------


def test_recover_and_replay_from_real_logs():
    disk = FaultyDisk()
    meta = Log.open("/m/meta", fs=disk)
    shard = Log.open("/m/s0", fs=disk)
    shard.append(Record(v(1, i), i, 0, 0, b"x%d" % i) for i in range(3))
    shard.sync()
    meta.meta_put("view", encode_view_meta(2, (1, 2), ()))
    r = recover_member(1, meta, {(0, 0): shard}, (1, 2, 3))
    assert (r.epoch, r.members, r.logged) == (2, (1, 2), {(0, 0): v(1, 2)})
    applied: list[bytes] = []
    assert replay(shard, lambda record: applied.append(record.payload), applied.append) == v(1, 2)
    assert applied == [b"x0", b"x1", b"x2"]
    # a received snapshot replaces the log; replay starts from it
    perform(shard, LogSnapshot(0, 0, v(2, 5), b"snap"))
    assert last_logged(shard) == v(2, 5)
    shard.append([Record(v(3, 0), 9, 0, 0, b"y")])
    shard.sync()
    applied.clear()
    assert replay(shard, lambda record: applied.append(record.payload), applied.append) == v(3, 0)
    assert applied == [b"snap", b"y"]
    perform(shard, LogTruncate(0, 0, v(2, 5)))
    assert last_logged(shard) == v(2, 5)


def test_a_member_without_a_logged_view_is_in_the_founding_view():
    r = recover_member(2, None, {}, (1, 2, 3))
    assert (r.epoch, r.members, r.logged) == (1, (1, 2, 3), {})


# -- the simulator ------------------------------------------------------------------------------


def test_simulated_total_failure_with_a_crash_during_the_restart():
    from smr.sim.harness import MS, SimConfig, Simulation

    sim = Simulation(SimConfig(nodes=3, seed=7, workload="kv"))
    for m in (1, 2, 3):
        sim.schedule(100 * MS, "crash", m)
    sim.schedule(110 * MS, "restart", 3)
    sim.schedule(112 * MS, "restart", 2)
    sim.schedule(114 * MS, "crash", 2)  # before the restart can finish
    sim.schedule(150 * MS, "restart", 1)
    sim.schedule(170 * MS, "restart", 2)
    result = sim.run()
    assert result.ok, result.violation
    notes = [text for _, text in sim.timeline]
    assert sum("restarts from its disk" in t for t in notes) == 4
    live = sim.live_nodes()
    assert sorted(n.id for n in live) == [1, 2, 3]
    assert live[0].replica.epoch > 1
    assert any(n.replica.restart_decision is not None for n in live)


@pytest.mark.parametrize("workload", ["kv", "bank"])
def test_simulated_total_failures_keep_every_invariant(workload):
    from smr.sim.harness import SimConfig, run_seed

    result = run_seed(SimConfig(nodes=5, seed=3, faults=frozenset({"total"}), workload=workload))
    assert result.ok, result.violation
    assert result.stats.get("totals", 0) >= 1
