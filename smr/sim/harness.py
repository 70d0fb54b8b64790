"""The deterministic simulator: N replicas in one process running the real core, from one seed.

This module owns the run loop. Simulated time never sleeps: it jumps to the next event in a heap
(a message arriving, a replica's timer, a fault). Every random choice (delays, faults, workload)
comes from one `random.Random(seed)`, so a seed reproduces a run exactly; every run ends with a
`digest` of what each replica delivered and a `schedule_digest` of every step taken.

A run has two phases, as FoundationDB and TigerBeetle's VOPR do: a safety phase with faults, then a
liveness phase without (every link healed) in which the protocol must make progress. Invariant
checkers (`smr.sim.invariants`) run after every step; the first violation stops the run and is
reported with the command that reproduces it.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smr.core.errors import PeerProtocolError
from smr.core.multicast import Completed, SubmitFailed
from smr.core.ready import LogAppend, Ready
from smr.core.replica import CoreConfig, Replica
from smr.sim.network import Message, Network
from smr.sim.workloads import WORKLOADS, Workload, apply_delivery, make_workload

FAULTS = ("delay", "partition", "break", "crash")
BUGS = ("counter-down",)

MS = 1_000_000


class Violation(Exception):
    """An invariant does not hold. `invariant` names it; the message says where and how."""

    def __init__(self, invariant: str, detail: str):
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 3
    seed: int = 1
    faults: frozenset[str] = frozenset()
    bugs: frozenset[str] = frozenset()
    safety_ns: int = 300 * MS
    liveness_ns: int = 200 * MS
    fault_interval_ns_mean: int = 20 * MS
    heal_ns_max: int = 60 * MS
    workload: str = "frontier"
    submit_interval_ns_mean: int = 4 * MS
    persist_ns_max: int = 2 * MS
    core: CoreConfig = field(default_factory=CoreConfig)

    def __post_init__(self) -> None:
        assert self.nodes >= 1
        unknown = set(self.faults) - set(FAULTS)
        assert not unknown, f"unknown faults {sorted(unknown)}"
        assert not set(self.bugs) - set(BUGS), f"unknown bugs {sorted(self.bugs)}"
        assert self.workload in WORKLOADS, f"unknown workload {self.workload}"

    def command(self) -> str:
        """The CLI command that reproduces this run."""
        parts = [f"smr sim --nodes {self.nodes} --seeds {self.seed}"]
        if self.workload != "frontier":
            parts.append(f"--workload {self.workload}")
        if self.faults:
            parts.append("--faults " + ",".join(sorted(self.faults)))
        if self.bugs:
            parts.append("--inject-bug " + ",".join(sorted(self.bugs)))
        return " ".join(parts)


@dataclass
class SimNode:
    id: int
    replica: Replica
    alive: bool = True
    tick_at_ns: int = -1
    events: list[tuple[int, Any]] = field(default_factory=list)  # (time, event)
    deliveries: list[Any] = field(default_factory=list)
    machines: dict[int, Any] = field(default_factory=dict)  # shard index -> state machine
    submitted: dict[int, list[tuple[int, bytes]]] = field(
        default_factory=dict
    )  # g -> (ticket, payload)
    open_tickets: dict[int, int] = field(default_factory=dict)  # ticket -> shard index
    digests: dict[tuple[int, int], str] = field(default_factory=dict)  # (g, version) -> digest


@dataclass(frozen=True, slots=True)
class SimResult:
    config: SimConfig
    digest: str
    schedule_digest: str
    steps: int
    end_ns: int
    violation: Violation | None
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.violation is None


class Checker:
    """An invariant checker. `after_step` runs after every step; `at_end` once, after liveness."""

    name = "checker"

    def attach(self, sim: Simulation) -> None:
        """Called once before the run starts."""

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        """Raise `Violation` if the invariant does not hold after a step at `node`."""

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        """Inspect what a replica asked the driver to do, before it is done."""

    def before_write(
        self, sim: Simulation, node: SimNode, source: int, offset: int, data: bytes
    ) -> None:
        """Called just before a peer's write is applied at `node`."""

    def after_write(
        self, sim: Simulation, node: SimNode, source: int, offset: int, data: bytes
    ) -> None:
        """Called just after a peer's write was applied at `node`."""

    def at_liveness_start(self, sim: Simulation) -> None:
        """Faults have stopped and every link is healed."""

    def at_end(self, sim: Simulation) -> None:
        """The liveness phase is over."""


ReplicaFactory = Callable[[int, Sequence[int], SimConfig, Workload], Replica]


def default_factory(
    me: int, members: Sequence[int], config: SimConfig, workload: Workload
) -> Replica:
    kwargs: dict[str, Any] = {"config": config.core, "strict": True, "layout": workload.layout()}
    if config.bugs:
        from smr.sim.bugs import buggy_replica

        return buggy_replica(config.bugs, me, members, **kwargs)
    return Replica(me, members, **kwargs)


class Simulation:
    def __init__(
        self,
        config: SimConfig,
        *,
        checkers: Iterable[Checker] | None = None,
        factory: ReplicaFactory = default_factory,
    ):
        from smr.sim import invariants  # the default checkers

        self.config = config
        self.rng = random.Random(config.seed)
        self.now_ns = 0
        self.steps = 0
        self._heap: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        self._schedule = hashlib.sha256()
        delay_max = 3 * MS if "delay" in config.faults else 200_000
        self.network = Network(
            self.rng,
            delay_ns_max=delay_max,
            spike_probability=0.02 if "delay" in config.faults else 0.0,
        )
        self.members = tuple(range(1, config.nodes + 1))
        self.workload = make_workload(config.workload, config.nodes)
        self.nodes = {
            m: SimNode(m, factory(m, self.members, config, self.workload)) for m in self.members
        }
        for node in self.nodes.values():
            for g, st in node.replica.streams.items():
                machine = self.workload.machine(st.subgroup)
                if machine is not None:
                    node.machines[g] = machine
                node.submitted[g] = []
        self.checkers = list(invariants.default_checkers() if checkers is None else checkers)
        self.in_liveness = False
        self.stats: dict[str, int] = {"writes": 0, "data": 0, "faults": 0, "crashes": 0}
        self.timeline: list[tuple[int, str]] = []  # faults and phases in plain words

    # -- scheduling -----------------------------------------------------------------------------

    def _at(self, time_ns: int, kind: str, arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_ns, self._seq, kind, arg))

    def _schedule_tick(self, node: SimNode) -> None:
        if not node.alive:
            return
        at = max(node.replica.next_tick_ns(), self.now_ns)
        if node.tick_at_ns < 0 or at < node.tick_at_ns or node.tick_at_ns < self.now_ns:
            node.tick_at_ns = at
            self._at(at, "tick", node.id)

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> SimResult:
        violation: Violation | None = None
        try:
            self._run()
        except Violation as v:
            violation = v
        except PeerProtocolError as e:
            violation = Violation("peer-protocol", str(e))
        except AssertionError as e:
            violation = Violation("core-assertion", str(e) or "assertion failed")
        return SimResult(
            self.config,
            self.digest(),
            self._schedule.hexdigest()[:16],
            self.steps,
            self.now_ns,
            violation,
            dict(self.stats),
        )

    def _run(self) -> None:
        for c in self.checkers:
            c.attach(self)
        for node in self.nodes.values():
            self._schedule_tick(node)
        safety_end = self.config.safety_ns
        end = safety_end + self.config.liveness_ns
        if self.config.faults - {"delay"}:
            self._at(self._fault_gap(), "fault", None)
        self._at(safety_end, "liveness", None)
        if self.workload.submits:
            for m in self.members:
                self._at(self._submit_gap(), "submit", m)
        while self._heap:
            time_ns, _, kind, arg = heapq.heappop(self._heap)
            if time_ns > end:
                break
            assert time_ns >= self.now_ns
            self.now_ns = time_ns
            node = self._step(kind, arg)
            if node is not False:
                self.steps += 1
                for c in self.checkers:
                    c.after_step(self, node)
        self.now_ns = end
        for c in self.checkers:
            c.at_end(self)

    def _step(self, kind: str, arg: Any) -> SimNode | bool | None:
        """Perform one event; return the node it happened at, None for a global step, or False if
        the event was stale and nothing happened."""
        if kind == "tick":
            node = self.nodes[arg]
            if not node.alive or node.tick_at_ns != self.now_ns:
                return False
            node.tick_at_ns = -1
            self._trace("tick", node.id)
            node.replica.tick(self.now_ns)
            self._drain(node)
            return node
        if kind == "msg":
            message: Message = arg
            if not self.network.arrive(message):
                return False
            node = self.nodes[message.target]
            if not node.alive:
                return False
            self._trace(message.kind, message.source, message.target)
            if message.kind == "write":
                offset, data = message.body
                for c in self.checkers:
                    c.before_write(self, node, message.source, offset, data)
                node.replica.on_write(message.source, offset, data)
                for c in self.checkers:
                    c.after_write(self, node, message.source, offset, data)
            else:
                (payload,) = message.body
                node.replica.on_data(message.source, payload)
            self._drain(node)
            return node
        if kind == "fault":
            if self.in_liveness:
                return False
            self._inject_fault()
            if self.now_ns < self.config.safety_ns:
                self._at(self.now_ns + self._fault_gap(), "fault", None)
            return None
        if kind == "heal":
            a, b = arg
            self._set_link(a, b, True)
            return None
        if kind == "liveness":
            self._start_liveness()
            return None
        if kind == "submit":
            node = self.nodes[arg]
            if not node.alive:
                return False
            self._submit(node)
            if self.now_ns < self.config.safety_ns + self.config.liveness_ns // 2:
                self._at(self.now_ns + self._submit_gap(), "submit", node.id)
            return node
        if kind == "persisted":
            member, sg, sh, version = arg
            node = self.nodes[member]
            if not node.alive:
                return False
            self._trace("persisted", member, sg, sh, version)
            node.replica.on_persisted(sg, sh, version)
            self._drain(node)
            return node
        raise AssertionError(f"unknown event {kind}")

    def _drain(self, node: SimNode) -> None:
        replica = node.replica
        while replica.has_ready():
            ready = replica.ready()
            for c in self.checkers:
                c.after_ready(self, node, ready)
            self._execute(node, ready)
            replica.advance(ready)
        self._schedule_tick(node)

    def _submit(self, node: SimNode) -> None:
        choices = [
            (st.subgroup, st.shard_index) for st in node.replica.streams.values() if st.my_rank >= 0
        ]
        if not choices:
            return
        op = self.workload.next_op(self.rng, node.id, choices)
        if op is None:
            return
        self._trace("submit", node.id, op.subgroup, op.shard, len(op.payload))
        ticket = node.replica.submit(op.subgroup, op.shard, op.payload, reply=op.reply)
        g = node.replica.stream(op.subgroup, op.shard).g
        node.submitted[g].append((ticket, op.payload))
        node.open_tickets[ticket] = g
        self._drain(node)

    def _submit_gap(self) -> int:
        return 1 + int(self.rng.expovariate(1.0 / self.config.submit_interval_ns_mean))

    def _execute(self, node: SimNode, ready: Ready) -> None:
        for request in ready.persist:
            # The simulated disk makes an append durable after a seeded delay (group commit);
            # a crash-stopped member's pending appends are simply never reported.
            if isinstance(request, LogAppend) and request.entries:
                at = self.now_ns + self.rng.randint(MS // 20, self.config.persist_ns_max)
                last = request.entries[-1].version
                self._at(at, "persisted", (node.id, request.subgroup, request.shard, last))
        for push in ready.writes:
            for target in push.targets:
                self._transmit(node.id, target, "write", (push.offset, push.data))
                self.stats["writes"] += 1
        for send in ready.sends:
            self._transmit(node.id, send.target, "data", (send.payload,))
            self.stats["data"] += 1
        touched: dict[int, int] = {}
        for d in ready.deliveries:
            node.deliveries.append(d)
            st = node.replica.stream(d.subgroup, d.shard)
            machine = node.machines.get(st.g)
            if machine is not None:
                result = apply_delivery(machine, d)
                touched[st.g] = d.version
            else:
                result = b"%d" % len(d.payload)
            if d.reply:
                node.replica.reply(d, result)
        for g, version in touched.items():
            if node.replica.streams[g].mode != "raw":
                node.digests[(g, version)] = node.machines[g].digest()
        for event in ready.events:
            node.events.append((self.now_ns, event))
            if isinstance(event, SubmitFailed):
                g = node.open_tickets.pop(event.ticket)
                node.submitted[g] = [x for x in node.submitted[g] if x[0] != event.ticket]
            elif isinstance(event, Completed):
                node.open_tickets.pop(event.ticket)

    def _transmit(self, source: int, target: int, kind: str, body: tuple) -> None:
        message = Message(source, target, kind, self.network.generation(source, target), body)
        arrival = self.network.transit(self.now_ns, message)
        if arrival is not None:
            self._at(arrival, "msg", message)

    # -- faults ---------------------------------------------------------------------------------

    def _fault_gap(self) -> int:
        return 1 + int(self.rng.expovariate(1.0 / self.config.fault_interval_ns_mean))

    def _inject_fault(self) -> None:
        kinds = sorted(self.config.faults - {"delay"})
        kind = self.rng.choice(kinds)
        self.stats["faults"] += 1
        if kind == "partition":
            side = self.rng.sample(self.members, self.rng.randint(1, max(1, len(self.members) - 1)))
            rest = [m for m in self.members if m not in side]
            one_way = self.rng.random() < 0.3
            heal_at = self.now_ns + self.rng.randint(MS, self.config.heal_ns_max)
            self._trace("partition", tuple(sorted(side)), one_way)
            arrow = "->" if one_way else "<->"
            self.note(f"partition {sorted(side)} {arrow} {rest}, heals at {heal_at / MS:.1f} ms")
            for a in side:
                for b in rest:
                    self._set_link(a, b, False)
                    self._at(heal_at, "heal", (a, b))
                    if not one_way:
                        self._set_link(b, a, False)
                        self._at(heal_at, "heal", (b, a))
        elif kind == "break":
            a, b = self.rng.sample(self.members, 2) if len(self.members) > 1 else (1, 1)
            if a == b:
                return
            heal_at = self.now_ns + self.rng.randint(MS // 10, 5 * MS)
            self._trace("break", a, b)
            self.note(f"link {a}<->{b} breaks, reconnects at {heal_at / MS:.1f} ms")
            for x, y in ((a, b), (b, a)):
                self._set_link(x, y, False)
                self._at(heal_at, "heal", (x, y))
        elif kind == "crash":
            alive = [m for m, n in self.nodes.items() if n.alive]
            # A crash-stopped member stays down until the view-change layer can readmit it; keep
            # a majority up so the run still says something about the survivors.
            if len(alive) - 1 > len(self.members) // 2:
                victim = self.rng.choice(alive)
                self._trace("crash", victim)
                self.note(f"member {victim} crashes")
                self.crash(victim)

    def crash(self, member: int) -> None:
        node = self.nodes[member]
        node.alive = False
        self.stats["crashes"] += 1
        for other in self.members:
            if other != member:
                self.network.set_up(member, other, False)
                self.network.set_up(other, member, False)

    def _set_link(self, a: int, b: int, up: bool) -> None:
        if up and not (self.nodes[a].alive and self.nodes[b].alive):
            return
        if self.network.set_up(a, b, up) and up:
            # A new connection: the writer's row at the peer may be stale (writes were lost).
            self._trace("link-up", a, b)
            self.nodes[a].replica.on_link_up(b)
            self._drain(self.nodes[a])

    def _start_liveness(self) -> None:
        self._trace("liveness")
        self.note("faults stop; every link is healed")
        for (a, b), link in sorted(self.network.links.items()):
            if not link.up:
                self._set_link(a, b, True)
        self.in_liveness = True
        for c in self.checkers:
            c.at_liveness_start(self)

    # -- results --------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.timeline.append((self.now_ns, text))

    def _trace(self, *what: Any) -> None:
        self._schedule.update(repr((self.now_ns, *what)).encode())

    def digest(self) -> str:
        """A digest of what every replica delivered and observed, in order."""
        h = hashlib.sha256()
        for m in self.members:
            node = self.nodes[m]
            h.update(repr((m, [e for _, e in node.events], node.deliveries)).encode())
        return h.hexdigest()[:16]

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]


def run_seed(config: SimConfig, **kwargs: Any) -> SimResult:
    return Simulation(config, **kwargs).run()
