"""View changes through the Replica's public inputs, beyond the golden transcripts."""

from smr.core.layout import SubgroupSpec
from smr.core.replica import Replica
from smr.core.views import Proposal, trim_count
from smr.sim.transcript import Transcript


def group(layout, n=3):
    t = Transcript()
    t.layout = layout
    members = tuple(range(1, n + 1))
    for m in members:
        t._add(m, Replica(m, members, layout=layout, config=t.config))
    t._settle()
    return t


def run(t, *commands):
    out = []
    for c in commands:
        out.extend(t.run(c))
    return out


def test_a_view_that_cannot_provision_the_layout_is_blocked_not_installed():
    t = group([SubgroupSpec("pinned", members=((1, 2),), min_size=2)])
    out = run(t, "tick 5", "stabilize", "crash 2", "tick 45", "stabilize", "tick 45", "stabilize")
    assert any("view blocked: subgroup pinned shard 0 needs 2 members" in line for line in out)
    assert not any("installs view" in line for line in out)


def test_a_member_that_leaves_is_excluded_without_being_suspected():
    t = group([SubgroupSpec("kv")], n=4)
    run(t, "tick 5", "stabilize")
    t.replicas[4].leave()
    out = run(t, "stabilize")
    assert "1: installs view 2 [1, 2, 3] (departed [4])" in out
    assert any(line.startswith("4: halts: member 4 left the group cleanly") for line in out)
    assert not any("suspected=" in line for line in out)


def test_partition_safety_can_be_turned_off_and_then_a_minority_installs_a_view():
    from smr.core.replica import CoreConfig
    from smr.core.views import ViewConfig

    t = group([SubgroupSpec("kv")], n=3)
    t.config = CoreConfig(views=ViewConfig(partition_safety=False))
    # rebuild with the unsafe configuration, as an operator could
    t2 = Transcript()
    t2.config = t.config
    t2.layout = t.layout
    for m in (1, 2, 3):
        t2._add(m, Replica(m, (1, 2, 3), layout=t.layout, config=t.config))
    t2._settle()
    out = run(
        t2, "tick 5", "stabilize", "partition 3|1,2", "tick 45", "stabilize", "tick 45", "stabilize"
    )
    assert "3: installs view 2 [3] (departed [1, 2])" in out  # the split brain it prevents


def test_proposals_round_trip_and_trims_count_the_contiguous_prefix():
    p = Proposal(3, (1, 2, 4), (4,), ((2, 1, 2), (0,)), ((1, (4,)), (0, ())))
    assert Proposal.decode(p.encode() + bytes(24)) == p
    assert trim_count((2, 1, 2)) == 4  # seqs 0..3: indices 0,1 of sender 0; 0 of 1; 0,1 of 2
    assert trim_count((3,)) == 3


def test_a_crashed_member_is_suspected_only_after_the_timeout():
    t = group([SubgroupSpec("kv")])
    run(t, "tick 5", "stabilize", "crash 3")
    quiet = run(t, "tick 30", "stabilize")  # heard 3 at 5 ms: 30 ms of silence is not enough
    assert not any("suspected" in line for line in quiet)
    out = run(t, "tick 30", "stabilize", "tick 30", "stabilize")
    assert any(line.startswith("1: suspected=[0, 0, 1]") for line in out)
    assert "1: installs view 2 [1, 2] (departed [3])" in out
