"""The RDMC data plane of ShardStream, through the Replica's public inputs and outputs."""

from __future__ import annotations

import pytest
from conftest import dropped

from smr.core.codec import FRAME, FRAME_BLOCK
from smr.core.errors import UsageError
from smr.core.layout import SubgroupSpec
from smr.core.multicast import BLOCK_HEADER, MulticastConfig
from smr.core.rdmc import SCHEDULES
from smr.core.replica import CoreConfig, Replica
from smr.sim.transcript import Transcript

BLOCK = 256


def config(schedule: str = "binomial", **kw) -> CoreConfig:
    return CoreConfig(
        multicast=MulticastConfig(slot_bytes=64, block_bytes=BLOCK, schedule=schedule, **kw)
    )


def payloads(net, m):
    return [bytes(d.payload) for d in net.deliveries[m]]


def big(seed: int, size: int) -> bytes:
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(size))


def block_frames(net, a, b):
    """Block frames queued on the link a -> b."""
    return [
        item[1]
        for item in net.links.get((a, b), ())
        if item[0] == "d" and item[1][0] == FRAME_BLOCK
    ]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("n", range(2, 8))
def test_large_messages_are_delivered_identically(make_net, schedule, n):
    members = list(range(1, n + 1))
    net = make_net(members, layout=[SubgroupSpec("s")], config=config(schedule))
    # sizes: several blocks not dividing evenly, exactly one block, one byte over a block,
    # exactly k blocks, and a small message in between
    sizes = [BLOCK * 5 + 17, BLOCK, BLOCK + 1, BLOCK * 8, 10]
    sent = []
    for i, size in enumerate(sizes):
        for m in (members[0], members[-1]):
            p = big(m * 10 + i, size)
            net.r[m].submit(0, 0, p)
            sent.append(p)
    net.run()
    first = payloads(net, members[0])
    assert sorted(first) == sorted(sent)
    for m in members:
        assert payloads(net, m) == first


def test_receivers_relay_blocks_so_the_sender_sends_each_block_about_once(make_net):
    members = list(range(1, 9))
    net = make_net(members, layout=[SubgroupSpec("s", senders=((1,),))], config=config())
    blocks = 32
    for t in members[1:]:
        net.hold(1, t)
    net.r[1].submit(0, 0, big(1, BLOCK * blocks))
    net.run()
    from_sender = sum(len(block_frames(net, 1, t)) for t in members[1:])
    # binomial pipeline: the sender injects every block once, plus log2(8) - 1 = 2 late copies
    # of the last block to neighbours that lack it (sequential would send 7 * 32)
    assert blocks <= from_sender <= blocks + 2
    for t in members[1:]:
        net.release(1, t)
    net.run()
    for m in members:
        assert payloads(net, m) == [big(1, BLOCK * blocks)]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_link_lost_mid_transfer_is_repaired_after_link_up(make_net, schedule):
    members = [1, 2, 3, 4, 5]
    net = make_net(members, layout=[SubgroupSpec("s", senders=((1,),))], config=config(schedule))
    payload = big(3, BLOCK * 12 + 5)
    # hold every link into 4, let the rest run, then lose what was in flight to 4
    for a in members:
        net.hold(a, 4)
    net.r[1].submit(0, 0, payload)
    net.run()
    assert payloads(net, 4) == []
    lost = 0
    for a in members:
        q = net.links.get((a, 4))
        if q:
            lost += len(q)
            q.clear()
        net.release(a, 4)
    assert lost > 0
    for a in members:
        if a != 4:
            net.r[a].on_link_up(4)
            net.r[4].on_link_up(a)
    net.run()
    for m in members:
        assert payloads(net, m) == [payload]


def test_a_relayer_whose_link_breaks_resends_its_blocks(make_net):
    """Only the link 2 -> 3 breaks (not the sender's): 3 still completes, from 2's resend."""
    members = [1, 2, 3, 4]
    net = make_net(members, layout=[SubgroupSpec("s", senders=((1,),))], config=config("chain"))
    payload = big(5, BLOCK * 6)
    net.hold(2, 3)
    net.r[1].submit(0, 0, payload)
    net.run()
    assert block_frames(net, 2, 3), "in a chain 1 -> 2 -> 3 -> 4, 2 relays to 3"
    net.links[(2, 3)].clear()
    net.release(2, 3)
    net.r[2].on_link_up(3)
    net.run()
    for m in members:
        assert payloads(net, m) == [payload]


def test_delivery_waits_for_every_member_to_hold_the_whole_message(make_net):
    members = [1, 2, 3]
    net = make_net(members, layout=[SubgroupSpec("s", senders=((1,),))], config=config("chain"))
    net.hold(2, 3)  # in the chain 3 gets its blocks from 2
    net.r[1].submit(0, 0, big(7, BLOCK * 3))
    net.run()
    assert all(payloads(net, m) == [] for m in members)  # 3 lacks it: not stable anywhere
    net.release(2, 3)
    net.run()
    assert all(payloads(net, m) == [big(7, BLOCK * 3)] for m in members)


def test_bad_block_frames_are_refused():
    r = Replica(2, [1, 2, 3], layout=[SubgroupSpec("s")], config=config())
    r.advance(r.ready())

    def frame(k, block, bb, total, body, index=0):
        head = FRAME.pack(FRAME_BLOCK, 0, index, r.epoch) + BLOCK_HEADER.pack(k, block, bb, total)
        return head + body

    r.on_data(1, frame(0, 0, 128, 1000, bytes(128)))
    assert ["block_bytes" in e.reason for e in dropped(r)] == [True]
    r.on_data(1, frame(0, 0, BLOCK, 1000, bytes(10)))
    assert ["expected" in e.reason for e in dropped(r)] == [True]
    r.on_data(1, frame(0, 9, BLOCK, 1000, bytes(BLOCK)))
    assert ["block 9" in e.reason for e in dropped(r)] == [True]
    r.on_data(1, frame(7, 0, BLOCK, 1000, bytes(BLOCK)))
    assert ["sender rank" in e.reason for e in dropped(r)] == [True]
    r.on_data(1, frame(0, 0, BLOCK, 1000, bytes(BLOCK), index=10_000))
    assert ["outside the window" in e.reason for e in dropped(r)] == [True]


def test_bad_configuration_and_oversized_payloads_are_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        MulticastConfig(schedule="ring")
    with pytest.raises(ValueError, match="block_bytes"):
        MulticastConfig(block_bytes=3)
    r = Replica(1, [1, 2], layout=[SubgroupSpec("s")], config=config(large_bytes_max=4096))
    with pytest.raises(UsageError, match="large_bytes_max"):
        r.submit(0, 0, bytes(4097))


def test_a_relayer_that_crashes_mid_transfer_stalls_the_message_only_until_the_view_change():
    t = Transcript()
    t.config = config("chain")
    t.layout = [SubgroupSpec("kv", senders=((1,),))]
    members = (1, 2, 3, 4)
    for m in members:
        t._add(m, Replica(m, members, layout=t.layout, config=t.config))
    t.run("tick 5")
    t.run("stabilize")
    payload = (b"relayed-" * BLOCK)[: BLOCK * 7 + 3]  # text: the transcript prints it
    t.cut.add((2, 3))  # in the chain 1 -> 2 -> 3 -> 4, 3 and 4 get their blocks through 2
    t.replicas[1].submit(0, 0, payload)
    t.run("stabilize")
    assert all(not t.states[m].get(0) for m in members)  # 3 and 4 lack it: nobody delivers
    t.run("crash 2")
    for _ in range(4):
        t.run("tick 30")
        t.run("stabilize")
    assert all(t.replicas[m].epoch > 0 for m in (1, 3, 4))
    assert [bytes(p) for p in t.states[1][0]] == [payload]  # submitted again in the new view
    assert t.states[3][0] == t.states[4][0] == t.states[1][0]
