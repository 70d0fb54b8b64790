"""Replicas driven over real tcp transports: the core's pushes, sends and link events through
sockets, with a minimal driver (the node runtime does the same with a log and state machines)."""

from __future__ import annotations

import pytest
from transport_factories.tcp import free_ports

from smr.core.layout import SubgroupSpec
from smr.core.multicast import Completed
from smr.core.replica import Replica
from smr.transport.base import Address, TransportConfig
from smr.transport.tcp import TcpTransport

MEMBERS = [1, 2, 3]


class Node:
    """A replica, its transport, and what it delivered."""

    def __init__(self, replica: Replica, transport: TcpTransport):
        self.r = replica
        self.t = transport
        self.delivered: list[bytes] = []
        self.completed: list[int] = []
        self.epochs: set[int] = set()

    # the transport's handler: what arrives goes to the replica
    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        self.r.on_write(source, offset, data, epoch)

    def on_data(self, source: int, payload: bytes) -> None:
        self.r.on_data(source, payload)

    def on_link_up(self, peer: int) -> None:
        self.r.on_link_up(peer)

    def on_peer_failed(self, peer: int) -> None:
        self.r.on_peer_failed(peer)

    def step(self) -> None:
        """Do one Ready: persist (reported at once: no disk here), writes, sends, deliveries."""
        r = self.r
        if r.epoch not in self.epochs:
            self.t.register(r.epoch, r.members, r.table.row_bytes)
            self.epochs.add(r.epoch)
        if not r.has_ready():
            return
        ready = r.ready()
        r.advance(ready)
        for push in ready.writes:
            self.t.write(push.targets, push.epoch, push.offset, push.data)
        for send in ready.sends:
            self.t.send(send.target, send.payload)
        for req in ready.persist:
            entries = getattr(req, "entries", ())
            if entries:
                r.on_persisted(req.subgroup, req.shard, entries[-1].version)
        self.delivered.extend(d.payload for d in ready.deliveries)
        self.completed.extend(e.ticket for e in ready.events if isinstance(e, Completed))


@pytest.fixture
def nodes():
    config = TransportConfig(
        secret=b"replicas-over-tcp-secret-0123456",
        peer_failed_after_s=0.5,
        reconnect_backoff_s=0.02,
    )
    addresses = {m: Address("127.0.0.1", p) for m, p in zip(MEMBERS, free_ports(3), strict=True)}
    made = {}
    for m in MEMBERS:
        replica = Replica(m, MEMBERS, layout=[SubgroupSpec("s")], epoch=1)
        made[m] = Node(replica, TcpTransport(m, addresses, config))
    for node in made.values():
        node.t.start(node)
    yield made
    for node in made.values():
        node.t.close()


def run_until(nodes: dict[int, Node], cond, what: str, rounds_max: int = 2000) -> None:
    for _ in range(rounds_max):
        if cond():
            return
        for node in nodes.values():
            node.step()
        for node in nodes.values():
            node.t.poll(0.005)
    assert cond(), f"{what} did not happen within {rounds_max} rounds"


def test_ordered_multicast_over_tcp_delivers_the_same_sequence_everywhere(nodes):
    tickets = {m: [] for m in MEMBERS}
    for i in range(40):
        for m in MEMBERS:
            payload = b"%d-%d" % (m, i) + b"." * (i * 97 % 3000)  # some spill to the data plane
            tickets[m].append(nodes[m].r.submit(0, 0, payload))
    run_until(
        nodes,
        lambda: (
            all(len(n.completed) == 40 for n in nodes.values())
            and all(len(n.delivered) == 120 for n in nodes.values())
        ),
        "every submission delivered and completed",
    )
    assert nodes[1].delivered == nodes[2].delivered == nodes[3].delivered
    for m in MEMBERS:
        assert sorted(nodes[m].completed) == sorted(tickets[m])
        mine = [p for p in nodes[1].delivered if p.startswith(b"%d-" % m)]
        assert [p.split(b".")[0] for p in mine] == [b"%d-%d" % (m, i) for i in range(40)]


def test_a_crashed_member_is_reported_by_tcp_and_the_survivors_move_on(nodes):
    for i in range(5):
        for m in MEMBERS:
            nodes[m].r.submit(0, 0, b"before-%d-%d" % (m, i))
    run_until(nodes, lambda: all(len(n.delivered) == 15 for n in nodes.values()), "the first 15")
    crashed = nodes.pop(3)
    crashed.t.close()  # the process is gone: its sockets close
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
