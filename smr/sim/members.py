"""Simulated member processes: `smr.runtime.node.Node`, the code a member process runs, with its
I/O replaced by simulated parts and driven in simulated time from one thread.

This module owns those parts and the loop that drives them:

* the network is `smr.transport.sim.SimTransport` on a shared `SimWorld` (its clock is the
  members' clock);
* each member's disk is a `smr.sim.disk.FaultyDisk` (a crash loses what was not synced);
* a shard log's appends are made durable by `SyncWriter`, on the loop's thread: one sync per
  `flush`, or when the driver calls `sync_all` (group commit without a thread);
* clients are in-process (`LocalClients`): requests go in with `request`, answers are kept.

`SimMembers.run_until` advances time to the next thing due (an arrival, a member's timer) and
steps every running member, so a run is determined by the seed. Nothing here decides anything:
the Node does, as in a process.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

from smr.log import Log, Record
from smr.runtime import protocol
from smr.runtime.config import ClusterConfig
from smr.runtime.node import Node, NodeExit
from smr.sim.disk import FaultyDisk
from smr.transport.sim import SimTransport, SimWorld

STEPS_MAX = 1_000_000  # bound on the work one `run_until` may drive; a livelock is our bug


class SyncWriter:
    """A shard log's group commit on the caller's thread: appends are written at once, made
    durable by `flush` (or `sync`, which the driver calls), and reported with `on_durable`."""

    def __init__(self, log: Log, on_durable: Callable[[int], None]):
        self.log = log
        self.on_durable = on_durable
        self.pending = False

    def submit(self, records: Sequence[Record], timeout_s: float | None = None) -> None:
        self.log.append(records)
        self.pending = True

    def sync(self) -> None:
        if self.pending:
            self.pending = False
            self.on_durable(self.log.sync())

    def flush(self, timeout_s: float | None = None) -> int:
        self.sync()
        return self.log.durable_version

    def close(self) -> None:
        self.pending = False


class LocalClients:
    """The client port of a simulated member: requests are handed in by `request`, every answer
    is kept in `responses` (connection id -> responses, in order)."""

    def __init__(self) -> None:
        self.node: Node | None = None
        self.responses: dict[int, list[protocol.Response]] = {}

    def attach(self, transport: Any) -> None:
        pass

    def request(self, conn_id: int, request: Any) -> None:
        assert self.node is not None
        self.node._on_request(conn_id, request)

    def respond(self, conn_id: int, response: protocol.Response) -> None:
        self.responses.setdefault(conn_id, []).append(response)

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def is_open(self, conn_id: int) -> bool:
        return True  # in-process: a connection never breaks

    def pending_bytes(self, conn_id: int) -> int:
        return 0  # an answer is taken as it is given

    def counters(self) -> dict[str, int]:
        return {}  # no sockets: nothing to count


class SimMembers:
    """`config`'s members as simulated Node instances on one simulated world, from `seed`."""

    def __init__(self, config: ClusterConfig, seed: int, *, log: Callable[..., None] | None = None):
        self.config = config
        self.world = SimWorld(random.Random(seed))
        self.disks = {m: FaultyDisk() for m in config.members}
        self.nodes: dict[int, Node] = {}
        self.clients: dict[int, LocalClients] = {}
        self.writers: dict[int, list[SyncWriter]] = {}
        self.lines: list[dict[str, Any]] = []
        self._log = log
        self._ids = itertools.count(1)
        for m in sorted(config.members):
            self.start(m)

    def start(self, member: int) -> Node:
        """Start (or restart, from its disk) member `member`'s process."""
        writers = self.writers[member] = []

        def writer(log: Log, on_durable: Callable[[int], None]) -> SyncWriter:
            w = SyncWriter(log, on_durable)
            writers.append(w)
            return w

        def log(event: str, **fields: Any) -> None:
            line = {"t_ns": self.world.now_ns, "member": member, "event": event, **fields}
            self.lines.append(line)
            if self._log is not None:
                self._log(line)

        clients = self.clients[member] = LocalClients()
        transport = SimTransport(
            member, self.config.addresses(), self.config.transport_config(), world=self.world
        )
        node = Node(
            self.config,
            member,
            transport=transport,
            log=log,
            fs=self.disks[member],
            clock_ns=lambda: self.world.now_ns,
            clients=clients,
            writer=writer,
        )
        clients.node = node
        node.start()
        self.nodes[member] = node
        return node

    def crash(self, member: int) -> None:
        """The process stops at once; its disk loses what was not synced."""
        node = self.nodes.pop(member)
        node.transport.close()
        self.disks[member].crash(self.world_rng)

    @property
    def world_rng(self) -> random.Random:
        return self.world.network.rng

    def request(self, member: int, make: Callable[[int], Any]) -> int:
        """Hand member `member` a client request built by `make(request_id)`; returns the
        connection id its answer is kept under."""
        conn_id = next(self._ids)
        self.clients[member].request(conn_id, make(conn_id))
        return conn_id

    def answer(self, member: int, conn_id: int) -> protocol.Response | None:
        got = self.clients[member].responses.get(conn_id)
        return got[0] if got else None

    def sync_all(self) -> None:
        for member in self.nodes:
            for w in self.writers[member]:
                w.sync()

    def step(self) -> None:
        """Move time to the next thing due and step every running member."""
        nodes = self.nodes
        due = [n.replica.next_tick_ns() for n in nodes.values()]
        arrival = self.world.next_event_ns()
        if arrival is not None:
            due.append(arrival)
        if due:
            self.world.advance_to(max(self.world.now_ns, min(due)))
        for m in sorted(nodes):
            try:
                nodes[m].step()
            except NodeExit:
                del nodes[m]
        self.sync_all()

    def run_until(self, condition: Callable[[], bool], steps_max: int = STEPS_MAX) -> None:
        for _ in range(steps_max):
            if condition():
                return
            self.step()
        raise AssertionError(f"not reached in {steps_max} steps (now {self.world.now_ns} ns)")

    def run_for(self, duration_ns: int) -> None:
        end = self.world.now_ns + duration_ns
        self.run_until(lambda: self.world.now_ns >= end)
