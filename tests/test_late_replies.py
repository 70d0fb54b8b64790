"""Results that arrive after a view change: a command delivered by the ragged trim at the end of
an epoch is answered once every survivor's result is in (`Replica._carry_over`, `_late`). The
case below was found by the simulator once it ran the node runtime (`bytes`, 4 nodes, seed 2)."""

from smr.core.layout import SubgroupSpec
from smr.core.multicast import Completed

TWO_SHARDS = [SubgroupSpec("A"), SubgroupSpec("B")]


def _end_epoch_with_deliveries_pending(net, submitter: int, failed: int) -> list[int]:
    """`submitter` sends one command with results to each shard; `failed` receives nothing and
    is then suspected, so the commands are delivered by the trim at the view change and the
    other survivors' results travel after it."""
    for m in net.r:
        if m != failed:
            net.hold(m, failed)
            net.hold(failed, m)
    r = net.r[submitter]
    tickets = [r.submit(sg, 0, b"cmd-%d" % sg, reply=True) for sg in (0, 1)]
    net.run()
    assert not [e for e in net.events[submitter] if isinstance(e, Completed)]
    for m in net.r:
        if m != failed:
            net.r[m].on_peer_failed(failed)
    net.run()
    return tickets


def test_commands_of_two_shards_with_the_same_version_are_both_answered_late(make_net):
    # the first command of member 1 in each shard has the same version (epoch 1, seq 0): the
    # late results were kept by version alone, so one shard's entry replaced the other's and
    # that command was never answered
    net = make_net((1, 2, 3), layout=TWO_SHARDS)
    net.run()
    tickets = _end_epoch_with_deliveries_pending(net, submitter=1, failed=3)
    assert all(r.epoch == 2 for m, r in net.r.items() if m != 3)
    done = {e.ticket: e for e in net.events[1] if isinstance(e, Completed)}
    assert sorted(done) == sorted(tickets)
    versions = {done[t].version for t in tickets}
    assert len(versions) == 1  # the same version in both shards
    for t in tickets:
        assert sorted(done[t].results) == [1, 2]  # member 2's result came after the change
