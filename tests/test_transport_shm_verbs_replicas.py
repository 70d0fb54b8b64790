"""Replicas driven over real shm transports and over verbs (on the pyverbs fake): ordered
multicast agrees everywhere, and a closed member is reported and drives the view change. The
driver is the tcp replica test's (`Node`, `run_until`)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from fakes import pyverbs_fake
from test_transport_tcp_replicas import MEMBERS, Node, run_until
from transport_factories.tcp import free_ports

from smr.core.layout import SubgroupSpec
from smr.core.replica import Replica
from smr.transport.base import Address, TransportConfig
from smr.transport.shm import ShmTransport
from smr.transport.verbs import VerbsTransport


def _shm(m, config):
    return ShmTransport(m, {x: Address("localhost", 0) for x in MEMBERS}, config)


@pytest.fixture(params=["shm", "verbs"])
def nodes(request):
    config = TransportConfig(
        secret=b"replicas-over-shm-and-verbs-0123",
        cluster=f"r-{uuid.uuid4().hex[:10]}",
        peer_failed_after_s=0.5,
        reconnect_backoff_s=0.02,
    )
    if request.param == "verbs":
        ports = free_ports(len(MEMBERS))
        addrs = {m: Address("127.0.0.1", p) for m, p in zip(MEMBERS, ports, strict=True)}

        def make(m, cfg):
            return VerbsTransport(m, addrs, cfg, pyverbs=pyverbs_fake)
    else:
        make = _shm
    made = {}
    for m in MEMBERS:
        replica = Replica(m, MEMBERS, layout=[SubgroupSpec("s")], epoch=1)
        made[m] = Node(replica, make(m, dataclasses.replace(config)))
    for node in made.values():
        node.t.start(node)
    yield made
    for node in made.values():
        node.t.close()


def test_ordered_multicast_delivers_the_same_sequence_everywhere(nodes):
    for i in range(40):
        for m in MEMBERS:
            payload = b"%d-%d" % (m, i) + b"." * (i * 97 % 3000)  # some spill to the data plane
            nodes[m].r.submit(0, 0, payload)
    run_until(
        nodes,
        lambda: all(len(n.completed) == 40 and len(n.delivered) == 120 for n in nodes.values()),
        "every submission delivered and completed",
    )
    assert nodes[1].delivered == nodes[2].delivered == nodes[3].delivered
    for m in MEMBERS:
        mine = [p for p in nodes[1].delivered if p.startswith(b"%d-" % m)]
        assert [p.split(b".")[0] for p in mine] == [b"%d-%d" % (m, i) for i in range(40)]


def test_a_closed_member_is_reported_and_the_survivors_move_on(nodes):
    for i in range(5):
        for m in MEMBERS:
            nodes[m].r.submit(0, 0, b"before-%d-%d" % (m, i))
    run_until(nodes, lambda: all(len(n.delivered) == 15 for n in nodes.values()), "the first 15")
    nodes.pop(3).t.close()
    run_until(nodes, lambda: all(n.r.epoch > 1 for n in nodes.values()), "a view without 3")
    assert all(n.r.members == (1, 2) for n in nodes.values())
    for i in range(5):
        for m in (1, 2):
            nodes[m].r.submit(0, 0, b"after-%d-%d" % (m, i))
    run_until(
        nodes,
        lambda: all(sum(p.startswith(b"after") for p in n.delivered) == 10 for n in nodes.values()),
        "the next 10 in the new view",
    )
    assert nodes[1].delivered == nodes[2].delivered
