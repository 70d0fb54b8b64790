"""A peer's bad input puts a replica in one defined state, whatever drives it: the input is
dropped whole, the peer is suspected (the member wedges for the view change that removes it) and
a `PeerMisbehaved` event says so. A member process logs it and goes on; the simulator, whose
peers all run the real core, fails the run (it is a bug there)."""

from __future__ import annotations

import json

import pytest

from smr.core.codec import FRAME, FRAME_REPLIES
from smr.runtime.config import load, write_local
from smr.runtime.node import Node
from smr.sim.harness import SimConfig, Simulation, Violation
from smr.transport.base import Transport

BAD_FRAME = FRAME.pack(FRAME_REPLIES, 0, 3, 1) + b"\x01\x02"  # claims 3 replies, holds none


class LoopbackTransport(Transport):
    """A transport that records what the node asks of it (no peer is reachable)."""

    name = "test"

    def __init__(self, me, addresses, config):
        super().__init__(me, addresses, config)
        self.writes: list = []
        self.sends: list = []

    def start(self, handler):
        import selectors

        self._sel = selectors.DefaultSelector()

    def register(self, epoch, members, row_bytes):
        pass

    def write(self, targets, epoch, offset, data):
        self.writes.append((tuple(targets), epoch, offset, bytes(data)))

    def send(self, target, payload):
        self.sends.append((target, bytes(payload)))

    def poll(self, timeout_s):
        pass

    def wake(self):
        pass

    def close(self):
        if self._sel is not None:
            self._sel.close()
            self._sel = None


def test_a_member_process_drops_a_bad_frame_suspects_its_peer_and_goes_on(tmp_path):
    config = load(write_local(str(tmp_path), nodes=3, mode="ordered", transport="tcp"))
    lines: list[dict] = []
    transport = LoopbackTransport(1, config.addresses(), config.transport_config())
    node = Node(
        config,
        1,
        transport=transport,
        log=lambda event, **fields: lines.append({"event": event, **fields}),
    )
    try:
        transport.start(node)
        node._drain()
        node.on_data(2, BAD_FRAME)  # a peer's frame that breaks the protocol: no exception
        node._drain()
        errors = [line for line in lines if line["event"] == "peer-protocol-error"]
        assert len(errors) == 1 and errors[0]["peer"] == 2
        assert "replies frame" in errors[0]["error"]
        r = node.replica
        assert r.vc.suspects(r.table.my_row, r.members.index(2))
        json.dumps(errors)  # a log line, as written to stderr
        node.on_data(2, BAD_FRAME)  # again: dropped again, the member still runs
        node._drain()
        assert r.status == "active"
    finally:
        node.clients.stop()
        transport.close()


def test_the_simulator_fails_the_run_on_the_same_input():
    sim = Simulation(SimConfig(nodes=3, seed=1))
    node = sim.nodes[1]
    sim._step_member(node)
    node.replica.on_data(2, BAD_FRAME)
    with pytest.raises(Violation, match="peer-protocol: member 1 dropped input from 2"):
        sim._step_member(node)
    r = node.replica
    assert r.vc.suspects(r.table.my_row, r.members.index(2))  # the same state as the node's
