"""Ordered multicast in one epoch, through the Replica's public inputs and outputs."""

import pytest
from conftest import dropped

from smr.core.errors import PeerProtocolError, UsageError, WindowFullError
from smr.core.layout import SubgroupSpec
from smr.core.multicast import (
    FRAME,
    FRAME_REPLIES,
    REPLY_ITEM,
    Completed,
    MulticastConfig,
    SubmitFailed,
    parse_replies,
)
from smr.core.replica import CoreConfig, Replica

MEMBERS = [1, 2, 3]


def completed(net, m):
    return [e for e in net.events[m] if isinstance(e, Completed)]


def payloads(net, m):
    return [d.payload for d in net.deliveries[m]]


def test_round_robin_total_order_with_versions(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")], epoch=7)
    for i in range(3):
        for m in MEMBERS:
            net.r[m].submit(0, 0, b"%d-%d" % (m, i))
    net.run()
    assert payloads(net, 1) == payloads(net, 2) == payloads(net, 3)
    assert payloads(net, 1)[:3] == [b"1-0", b"2-0", b"3-0"]  # seq = index * 3 + rank
    versions = [d.version for d in net.deliveries[2]]
    assert versions == [(7 << 32) | seq for seq in range(9)]
    stamps = [d.timestamp_ns for d in net.deliveries[1] if d.sender == 1]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_idle_senders_send_nulls_so_the_round_robin_never_stalls(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")])
    for i in range(5):
        net.r[2].submit(0, 0, b"only-2-%d" % i)
    net.run()
    for m in MEMBERS:
        assert payloads(net, m) == [b"only-2-%d" % i for i in range(5)]
    assert len(completed(net, 2)) == 5


def test_ordered_answers_only_after_every_member_received(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s", mode="ordered")])
    net.hold(1, 3)  # member 3 cannot receive member 1's slots yet
    net.r[1].submit(0, 0, b"hello")
    net.run()
    assert completed(net, 1) == []
    assert payloads(net, 1) == payloads(net, 2) == []  # not stable: 3 has not received it
    net.release(1, 3)
    net.run()
    assert len(completed(net, 1)) == 1
    assert payloads(net, 3) == [b"hello"]


def test_durable_answers_only_after_every_member_persisted(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s", mode="durable")])
    net.disk_held.add(3)
    ticket = net.r[1].submit(0, 0, b"keep me")
    net.run()
    # delivered everywhere, persisted at 1 and 2, but member 3's disk has not synced
    assert all(payloads(net, m) == [b"keep me"] for m in MEMBERS)
    assert completed(net, 1) == []
    net.disk_held.discard(3)
    net.sync_disk(3)
    net.run()
    (done,) = completed(net, 1)
    assert done.ticket == ticket


def test_replies_from_every_member_of_the_shard(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")])
    net.r[2].submit(0, 0, b"ping", reply=True)
    net.run()
    (done,) = completed(net, 2)
    assert done.results == {1: b"r1:ping", 2: b"r2:ping", 3: b"r3:ping"}


def test_large_payloads_take_the_data_plane_and_keep_the_order(make_net):
    config = CoreConfig(multicast=MulticastConfig(slot_bytes=64))
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")], config=config)
    big = bytes(range(256)) * 40
    net.r[1].submit(0, 0, b"small-1")
    net.r[1].submit(0, 0, big)
    net.r[2].submit(0, 0, b"small-2")
    net.run()
    assert payloads(net, 3) == payloads(net, 1) == [b"small-1", b"small-2", big]


def test_raw_mode_delivers_on_receipt(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s", mode="raw")])
    net.hold(2, 3)
    net.r[1].submit(0, 0, b"from-1")
    net.r[2].submit(0, 0, b"from-2")
    net.run()
    assert payloads(net, 3) == [b"from-1"]  # no waiting for the round robin
    net.release(2, 3)
    net.run()
    assert sorted(payloads(net, 3)) == [b"from-1", b"from-2"]


def test_window_backpressure_then_timeout():
    config = CoreConfig(
        multicast=MulticastConfig(window_max=4, submit_queue_max=3, submit_timeout_ns=1_000_000)
    )
    r = Replica(1, MEMBERS, layout=[SubgroupSpec("s")], config=config)
    tickets = [r.submit(0, 0, b"x") for _ in range(7)]  # 4 enter the window, 3 wait
    with pytest.raises(WindowFullError, match="wait for the send window"):
        r.submit(0, 0, b"x")
    r.advance(r.ready())
    r.tick(2_000_000)  # nobody received anything: the waiting ones time out
    failed = [e for e in r.ready().events if isinstance(e, SubmitFailed)]
    assert [e.ticket for e in failed] == tickets[4:]
    assert "window stayed full" in failed[0].reason


def test_only_designated_senders_may_submit():
    r = Replica(3, MEMBERS, layout=[SubgroupSpec("s", senders=((1, 2),))])
    with pytest.raises(UsageError, match="not a sender"):
        r.submit(0, 0, b"x")
    with pytest.raises(UsageError, match="not in subgroup 5"):
        r.submit(5, 0, b"x")


def test_sharded_layout_each_shard_its_own_stream(make_net):
    members = [1, 2, 3, 4]
    net = make_net(members, layout=[SubgroupSpec("kv", shards=2, mode=("ordered", "durable"))])
    net.r[1].submit(0, 0, b"a")
    net.r[3].submit(0, 1, b"b")
    net.run()
    assert payloads(net, 2) == [b"a"] and payloads(net, 4) == [b"b"]
    assert net.deliveries[4][0].shard == 1


def test_a_slot_that_does_not_hold_the_announced_message_is_dropped_and_its_sender_suspected():
    a = Replica(1, [1, 2, 3], layout=[SubgroupSpec("s")])
    b = Replica(2, [1, 2, 3], layout=[SubgroupSpec("s")])
    a.advance(a.ready())  # what a founding member pushes at start
    b.advance(b.ready())
    a.submit(0, 0, b"x")
    ready = a.ready()
    a.advance(ready)
    slots, counters = ready.writes[0], ready.writes[-1]
    assert slots.offset < counters.offset
    b.on_write(1, counters.offset, counters.data)  # the counter without the slot: no raise
    (event,) = dropped(b)
    assert event.peer == 1 and "shard 0" in event.reason
    assert b.vc.suspects(b.table.my_row, b.members.index(1))
    assert b.frozen  # wedged for the view change that removes the sender
    b.on_write(1, slots.offset, slots.data)  # what follows from it changes nothing
    assert dropped(b) == [] and b.stream(0, 0).can_receive() is False


@pytest.mark.parametrize(
    "frame", [b"", b"\x01", b"\x09\x00\x00" + bytes(8), b"\x01\x07\x00" + bytes(8)]
)
def test_malformed_data_frames_are_dropped_and_their_sender_suspected(frame):
    r = Replica(1, [1, 2, 3], layout=[SubgroupSpec("s")])
    r.advance(r.ready())
    r.on_data(2, frame)
    assert [e.peer for e in dropped(r)] == [2]
    assert r.vc.suspects(r.table.my_row, r.members.index(2))


def test_the_replies_of_a_batch_travel_in_one_frame_per_sender(make_net):
    net = make_net(MEMBERS, layout=[SubgroupSpec("s")])
    sent: list[tuple[int, int, bytes]] = []
    original = net.r[1].ready

    def spy_ready():
        ready = original()
        sent.extend((1, s.target, s.payload) for s in ready.sends)
        return ready

    net.r[1].ready = spy_ready
    for i in range(20):
        net.r[2].submit(0, 0, b"%04d" % i, reply=True)
    net.run()
    done = completed(net, 2)
    assert len(done) == 20
    assert sorted(d.results[1] for d in done) == [b"r1:%04d" % i for i in range(20)]
    assert all(d.results.keys() == {1, 2, 3} for d in done)
    frames_to_2 = [p for _, target, p in sent if target == 2 and p[0] == FRAME_REPLIES]
    assert 1 <= len(frames_to_2) < 20  # member 1's replies went in batches


def test_replies_frames_round_trip_and_malformed_ones_are_peer_errors():
    items = [(5 << 32 | i, b"x" * i) for i in range(40)]
    body = b"".join(REPLY_ITEM.pack(v, len(r)) + r for v, r in items)
    assert parse_replies(len(items), body) == items
    for count, bad in [
        (0, body),  # no replies
        (41, body),  # more than it holds
        (40, body[:-1]),  # cut inside a result
        (40, body + b"!"),  # trailing bytes
        (1, REPLY_ITEM.pack(1, 10) + b"short"),
        (2, REPLY_ITEM.pack(1, 0) + b"\x00" * 5),  # cut inside a header
    ]:
        with pytest.raises(PeerProtocolError):
            parse_replies(count, bad)


@pytest.mark.parametrize("cut", range(0, 30, 3))
def test_a_truncated_replies_frame_from_a_peer_is_dropped(cut):
    r = Replica(1, [1, 2], layout=[SubgroupSpec("s")])
    r.advance(r.ready())
    frame = FRAME.pack(FRAME_REPLIES, 0, 2, r.epoch) + REPLY_ITEM.pack(1, 4) + b"abcd"
    frame += REPLY_ITEM.pack(2, 4) + b"efgh"
    r.on_data(2, frame[: len(frame) - 1 - cut])
    assert [e.peer for e in dropped(r)] == [2]
