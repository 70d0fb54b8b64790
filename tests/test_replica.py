"""The sans-I/O replica driven by hand: ready/advance and the heartbeat frontier protocol."""

import pytest

from smr.core.replica import CoreConfig, FrontierReached, Replica

MS = 1_000_000


def group(n=3):
    members = list(range(1, n + 1))
    return {
        m: Replica(m, members, config=CoreConfig(heartbeat_period_ns=MS), strict=True)
        for m in members
    }


def exchange(replicas):
    """Deliver every pending write to its targets until nothing is pending; return events."""
    events = {m: [] for m in replicas}
    while any(r.has_ready() for r in replicas.values()):
        for m, r in replicas.items():
            if not r.has_ready():
                continue
            ready = r.ready()
            events[m].extend(ready.events)
            r.advance(ready)
            for push in ready.writes:
                for t in push.targets:
                    replicas[t].on_write(m, push.offset, push.data)
    return events


def test_frontier_fires_only_once_every_member_reached_it():
    rs = group()
    rs[1].tick(0)
    rs[2].tick(0)
    events = exchange(rs)
    assert all(not e for e in events.values())  # member 3 has not ticked: minimum is 0
    rs[3].tick(0)
    events = exchange(rs)
    assert all(e == [FrontierReached(1, 1)] for e in events.values())
    for m in rs:
        rs[m].tick(MS)
    events = exchange(rs)
    assert all(e == [FrontierReached(2, 1)] for e in events.values())


def test_ready_must_be_advanced_before_the_next():
    r = group()[1]
    r.tick(0)
    ready = r.ready()
    assert ready.writes and ready.writes[0].targets == (2, 3)
    with pytest.raises(AssertionError):
        r.ready()
    r.advance(ready)
    assert not r.has_ready()


def test_time_may_not_go_back():
    r = group()[1]
    r.tick(5 * MS)
    with pytest.raises(AssertionError, match="time went back"):
        r.tick(4 * MS)


def test_link_up_resends_the_whole_row_to_that_peer_only():
    r = group()[1]
    r.tick(0)
    r.advance(r.ready())
    r.on_link_up(3)
    ready = r.ready()
    assert [(p.targets, p.offset, len(p.data)) for p in ready.writes] == [
        ((3,), 0, r.table.row_bytes)
    ]


@pytest.mark.parametrize("how", ["on_writes", "batched"])
def test_inputs_evaluated_in_batches_deliver_what_inputs_one_by_one_deliver(make_net, how):
    from smr.core.layout import SubgroupSpec

    layout = [SubgroupSpec("s", mode="ordered")]
    nets = []
    for batch in (False, True):
        net = make_net([1, 2, 3], layout=layout)
        net.batch_writes = batch and how == "on_writes"
        net.batched = batch and how == "batched"
        for i in range(40):
            for m in (1, 2, 3):
                net.r[m].submit(0, 0, b"m%d-%d" % (m, i))
            if i % 7 == 0:
                net.run()
        net.run()
        nets.append(net)
    one, batched = ([(d.version, d.payload) for d in n.deliveries[2]] for n in nets)
    assert len(one) == 120 and one == batched
    assert all([(d.version, d.payload) for d in nets[1].deliveries[m]] == batched for m in (1, 3))
