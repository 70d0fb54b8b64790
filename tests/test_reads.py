"""Linearizable reads (smr.core.reads): a read index confirmed through the table, through the
replica's public inputs and outputs, and through `LocalGroup`."""

import pytest

from smr.core.errors import UsageError
from smr.core.layout import SubgroupSpec
from smr.core.multicast import Completed
from smr.core.reads import ReadConfirmed, ReadFailed
from smr.core.replica import CoreConfig
from smr.group import LocalGroup
from smr.statemachines import KVStore

MEMBERS = [1, 2, 3]
MS = 1_000_000


def answered(net, m, ticket):
    """(event, version the member's state machine was at) of a read, or None."""
    executor = net.executors.get(m)
    return None if executor is None else executor.host.reads.get(ticket)


def run_for(net, until_ns, step_ns=MS):
    now = max(r.now_ns for r in net.r.values())
    while now < until_ns:
        now += step_ns
        for r in net.r.values():
            r.tick(now)
        net.run()


def test_a_read_at_a_member_that_lags_waits_for_what_was_answered_elsewhere(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s", mode="ordered")])
    net.hold(3, 2)  # member 2 cannot see that member 3 received the command
    ticket = net.r[1].submit(0, 0, b"write")
    net.run()
    done = [e for e in net.events[1] if isinstance(e, Completed) and e.ticket == ticket]
    assert done, "member 1 answered the command (every member received it)"
    assert net.deliveries[2] == []  # member 2 does not know it is stable yet

    read = net.r[2].read(0, 0)
    net.run()
    # A sequential read here would miss the answered write; the linearizable one waits for
    # member 3's acknowledgement, which comes behind its counters on the held link.
    assert answered(net, 2, read) is None
    net.release(3, 2)
    net.run()
    event, version = answered(net, 2, read)
    assert isinstance(event, ReadConfirmed)
    assert version >= done[0].version


def test_reads_made_together_share_one_round_of_the_table(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")])
    net.r[1].submit(0, 0, b"x")
    net.run()
    tickets = [net.r[2].read(0, 0) for _ in range(50)]
    net.run()
    assert all(isinstance(answered(net, 2, t)[0], ReadConfirmed) for t in tickets)
    assert net.r[2].table.get(net.r[2].table.my_row, "read_req") == 1
    later = net.r[2].read(0, 0)
    net.run()
    assert isinstance(answered(net, 2, later)[0], ReadConfirmed)
    assert net.r[2].table.get(net.r[2].table.my_row, "read_req") == 2


def test_a_member_cut_off_from_the_majority_fails_the_read_and_never_serves_it(make_net):
    config = CoreConfig(read_timeout_ns=10 * MS)
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")], config=config)
    net.run()
    for other in (1, 2):
        net.hold(3, other)
        net.hold(other, 3)
    read = net.r[3].read(0, 0)
    net.run()
    run_for(net, 15 * MS)
    event, _ = answered(net, 3, read)
    assert isinstance(event, ReadFailed)
    assert "could not confirm" in event.reason
    # the majority side goes on: after the view without member 3, its reads are confirmed
    run_for(net, 200 * MS)
    assert net.r[1].view.members == (1, 2)
    ok = net.r[1].read(0, 0)
    net.run()
    event, _ = answered(net, 1, ok)
    assert isinstance(event, ReadConfirmed)


def test_a_read_waiting_across_a_view_change_is_asked_again_in_the_next_view(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")])
    net.run()
    for other in (1, 2):  # member 3 crashes
        net.hold(3, other)
        net.hold(other, 3)
    read = net.r[1].read(0, 0)
    net.run()
    assert answered(net, 1, read) is None
    run_for(net, 300 * MS)
    event, _ = answered(net, 1, read)
    assert isinstance(event, ReadConfirmed)
    assert net.r[1].epoch > 1


def test_raw_shards_refuse_linearizable_reads_and_a_full_queue_says_busy(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("r", mode="raw")])
    with pytest.raises(UsageError, match="raw"):
        net.r[1].read(0, 0)
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")], config=CoreConfig(reads_max=2))
    net.hold(2, 1)
    tickets = [net.r[1].read(0, 0) for _ in range(3)]
    net.run()
    event, _ = answered(net, 1, tickets[2])
    assert isinstance(event, ReadFailed) and event.busy
    net.release(2, 1)
    net.run()
    assert all(isinstance(answered(net, 1, t)[0], ReadConfirmed) for t in tickets[:2])


def test_a_halted_member_fails_its_waiting_reads(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")])
    net.hold(2, 1)
    read = net.r[1].read(0, 0)
    net.run()
    net.r[1].halt("stopped by the test")
    net.run()
    event, _ = answered(net, 1, read)
    assert isinstance(event, ReadFailed) and "halted" in event.reason


def test_local_group_reads_are_linearizable_by_default_and_sequential_on_request():
    group = LocalGroup(members=3, types=[KVStore])
    kv = group.subgroup(KVStore, member=1)
    kv.put("a", b"1").result()
    assert group.subgroup(KVStore, member=3).get("a") == b"1"
    assert group.subgroup(KVStore, member=2, consistency="sequential").get("a") == b"1"
    with pytest.raises(ValueError, match="linearizable, sequential"):
        group.subgroup(KVStore, consistency="eventual")
