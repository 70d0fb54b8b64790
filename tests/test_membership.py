"""Membership at runtime in the core: contact cards carried by joins into the view's roster,
removal for good (`Replica.remove`) through the view change, and its refusals."""

import pytest

from smr.core.codec import FRAME, FRAME_JOIN_REQUEST
from smr.core.errors import PeerProtocolError, UsageError
from smr.core.layout import SubgroupSpec
from smr.core.replica import HALTED, Replica
from smr.core.restart import (
    Recovered,
    RestartDecision,
    decode_view_roster,
    encode_view_meta,
    merged_roster,
)
from smr.core.views import Proposal, Roster
from smr.sim.transcript import Transcript

LAYOUT = [SubgroupSpec("kv")]


def group(n=3):
    t = Transcript()
    t.layout = LAYOUT
    members = tuple(range(1, n + 1))
    for m in members:
        t._add(m, Replica(m, members, layout=LAYOUT, config=t.config))
    t._settle()
    t.run("tick 5")
    t.run("stabilize")
    return t


def join(t, member, card):
    contacts = sorted(t.running)
    r = Replica.joiner(member, contacts, layout=LAYOUT, config=t.config, card=card)
    r.tick(t.now_ns)
    t._add(member, r)
    t._settle()
    for _ in range(20):
        t.run("tick 5")
        t.run("stabilize")
    return r


def test_a_joiners_card_reaches_every_member_in_the_roster_and_stays_while_it_is_a_member():
    t = group(3)
    join(t, 4, b"host-4:7104")
    for m in (1, 2, 3, 4):
        r = t.replicas[m]
        assert r.view.members == (1, 2, 3, 4)
        assert r.roster.card(4) == b"host-4:7104", m
    # a later view (another joiner) keeps it, and adds the new card
    join(t, 5, b"host-5")
    for m in (1, 2, 3, 4, 5):
        assert t.replicas[m].roster.dict_cards() == {4: b"host-4:7104", 5: b"host-5"}


def test_a_removed_member_halts_for_good_and_its_id_is_refused_when_it_asks_again():
    t = group(4)
    t.replicas[1].remove(3)
    for _ in range(10):
        t.run("tick 5")
        t.run("stabilize")
    assert t.replicas[1].view.members == (1, 2, 4)
    assert t.replicas[2].roster.retired == (3,)
    three = t.replicas[3]
    assert three.status == HALTED and "removed from the group for good" in three.halt_reason
    # a new process with the retired id is refused, and told why
    t.running.discard(3)
    again = join(t, 3, b"")
    assert again.status == HALTED
    assert "member 3 was removed from the group for good" in again.halt_reason
    assert t.replicas[1].view.members == (1, 2, 4)
    with pytest.raises(UsageError, match="removed already"):
        t.replicas[2].remove(3)


def test_removing_an_id_outside_the_view_retires_it_in_a_new_view_with_the_same_members():
    t = group(3)
    epoch = t.replicas[1].epoch
    t.replicas[2].remove(9)
    for _ in range(10):
        t.run("tick 5")
        t.run("stabilize")
    for m in (1, 2, 3):
        r = t.replicas[m]
        assert r.epoch == epoch + 1 and r.view.members == (1, 2, 3)
        assert r.roster.retired == (9,)


def test_a_removal_that_would_leave_less_than_a_majority_alive_is_refused_and_changes_nothing():
    t = group(3)
    t.run("crash 3")
    for _ in range(12):
        t.run("tick 5")
        t.run("stabilize")
    assert t.replicas[1].view.members == (1, 2)
    with pytest.raises(UsageError, match=r"would leave 1 live members of the 2 .* majority \(2\)"):
        t.replicas[1].remove(2)
    # the failed member itself may be retired: two stay, a majority of the view
    t.replicas[1].remove(3)
    for _ in range(10):
        t.run("tick 5")
        t.run("stabilize")
    assert t.replicas[2].view.members == (1, 2) and t.replicas[2].roster.retired == (3,)


def test_remove_is_refused_where_it_cannot_be_carried_out():
    t = group(3)
    joiner = Replica.joiner(7, [1], layout=LAYOUT, config=t.config)
    with pytest.raises(UsageError, match="not active"):
        joiner.remove(2)
    with pytest.raises(UsageError, match="at most 128"):
        Replica.joiner(7, [1], layout=LAYOUT, config=t.config, card=bytes(129))


def test_a_join_request_whose_card_length_does_not_fit_is_a_protocol_error():
    t = group(3)
    r = t.replicas[1]
    bad = FRAME.pack(FRAME_JOIN_REQUEST, 0, 500, 0) + b"short"
    r.on_data(7, bad)
    ready = r.ready()
    assert any("card" in getattr(e, "reason", "") for e in ready.events)
    r.advance(ready)


def test_rosters_round_trip_in_every_record_that_carries_them():
    roster = Roster(((4, b"a"), (6, bytes(range(20)))), (3, 9))
    p = Proposal(3, (1, 2, 4, 6), (6,), ((1, 2),), ((0, ()),), roster)
    assert Proposal.decode(p.encode()) == p
    assert Proposal.decode(p.encode() + bytes(64)) == p  # as read from a padded table slot
    legacy = Proposal(3, (1, 2), (), ((1, 2),))
    assert Proposal.decode(legacy.encode()).roster == Roster()
    meta = encode_view_meta(5, (1, 2, 4, 6), [(0, 0)], roster)
    assert decode_view_roster(meta) == roster
    assert decode_view_roster(encode_view_meta(5, (1, 2), [])) == Roster()
    rec = Recovered(5, (1, 2, 4, 6), roster=roster)
    assert Recovered.decode(rec.encode(1))[1].roster == roster
    d = RestartDecision(5, (1, 2), ((0, 0, 7),), ((0, ()),), roster)
    assert RestartDecision.decode(d.encode()) == d


def test_a_damaged_roster_is_a_protocol_error_never_an_exception_of_another_kind():
    roster = Roster(((4, b"abc"),), (3,))
    data = bytearray(Proposal(3, (1, 2, 4), (4,), ((1,),), ((0, ()),), roster).encode())
    # the card's length word: claim more bytes than a card may have
    i = data.find((3).to_bytes(8, "little"), 8 * 10)
    data[i : i + 8] = (10_000).to_bytes(8, "little")
    with pytest.raises(PeerProtocolError):
        Proposal.decode(bytes(data))
    with pytest.raises(PeerProtocolError, match="removed members"):
        Proposal.decode(Proposal(3, (1, 3), (), ((1,),), (), roster).encode())


def test_a_restart_merges_the_rosters_and_leaves_out_retired_members():
    old = Recovered(4, (1, 2, 3), roster=Roster(((3, b"three-old"),), ()))
    new = Recovered(6, (1, 2), roster=Roster(((5, b"five"),), (3,)))
    merged = merged_roster([old, new])
    assert merged.retired == (3,)
    assert merged.dict_cards() == {3: b"three-old", 5: b"five"}


def test_the_simulator_adds_processes_no_configuration_lists_and_removes_members_safely():
    from smr.sim import SimConfig
    from smr.sim.harness import Simulation

    sim = Simulation(
        SimConfig(nodes=5, seed=3, workload="kv", faults=frozenset({"reconfigure", "delay"}))
    )
    result = sim.run()
    assert result.ok, result
    assert sim.stats["added"] >= 2 and sim.stats["removed"] >= 2
    removed = [m for m, n in sim.nodes.items() if n.removed]
    final = sim.live_nodes()[0].replica
    assert removed and not set(removed) & set(final.members)
    assert set(removed) <= set(final.roster.retired)
    added = [m for m in sim.nodes if m > 5 + sim.config.joiners_max and m in final.members]
    assert added and all(final.roster.card(m) for m in added)


def test_a_removal_right_after_an_install_is_not_refused_for_flags_still_on_their_way():
    # member 1 alone, before any peer's first push of the epoch: it has not seen member 2's
    # ready flag for the shard yet, and must not conclude that 2 lacks the shard's state
    layout = [SubgroupSpec("pinned", members=((2, 3),), min_size=1)]
    r = Replica(1, (1, 2, 3), layout=layout)
    r.remove(3)
    assert r.vc.removals_relayed() == [3]


def test_removals_asked_for_at_once_that_together_break_the_majority_are_declined_in_part():
    # each asker checks its own removal; with a crash not yet suspected, two of them together
    # would leave 2 of 5 alive: the leader carries out the first and declines the other
    t = group(5)
    t.run("crash 2")
    t.replicas[1].remove(4)
    t.replicas[3].remove(5)
    out = []
    for _ in range(20):
        out += t.run("tick 5")
        out += t.run("stabilize")
    assert t.replicas[1].view.members == (1, 3, 5)
    assert t.replicas[1].roster.retired == (4,)
    assert any(line.startswith("3: removal refused: member 5 was not removed") for line in out)
    assert t.replicas[3]._removing == []  # nothing left to ask again: the churn ends
    # asked again in the view of three, it keeps a majority of that view: carried out
    t.replicas[3].remove(5)
    for _ in range(10):
        t.run("tick 5")
        t.run("stabilize")
    assert t.replicas[1].view.members == (1, 3) and t.replicas[1].roster.retired == (4, 5)
