"""The deterministic simulator: N replicas in one process running the real core, from one seed.

This module owns the run loop and the simulated processes. Simulated time never sleeps: it jumps
to the next event in a heap (a message arriving, a replica's timer, a fault, a submission). Every
random choice (delays, faults, workload) comes from one `random.Random(seed)`, so a seed
reproduces a run exactly; every run ends with a `digest` of what each replica delivered and a
`schedule_digest` of every step taken.

A run has two phases, as FoundationDB and TigerBeetle's VOPR do: a safety phase with faults, then a
liveness phase without (every link healed, every stopped process restarted if restarts are among
the faults) in which the group must install one view of every live process and answer what is
submitted. Invariant checkers (`smr.sim.invariants`) run after every step; the first violation
stops the run and is reported with the command that reproduces it.

The simulated driver does what the node runtime does: it executes each `Ready` (pushes and sends
onto the network, log requests onto a disk that makes appends durable after a delay, deliveries
into the state machines, results back as replies, snapshots for state transfer) and advances.
Payloads carry an 8-byte nonce (the simulator's own envelope, stripped before a state machine sees
the command) so that checkers can tell every submission apart.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smr.core.errors import PeerProtocolError
from smr.core.layout import allocate
from smr.core.multicast import Completed, MulticastConfig, PeerMisbehaved, SubmitFailed
from smr.core.reads import ReadConfirmed, ReadFailed
from smr.core.ready import Delivery, LogAppend, LogMeta, LogSnapshot, LogTruncate, Push, Ready, Send
from smr.core.replica import (
    ACTIVE,
    HALTED,
    RESTARTING,
    CoreConfig,
    FrontierReached,
    Replica,
    RestoreState,
    StateTransfer,
)
from smr.core.restart import Recovered
from smr.core.views import Halted, ViewBlocked, ViewInstalled
from smr.log import Log, LogConfig, LogCorruptionError, Record
from smr.recovery import perform, recover_member, replay
from smr.runtime.executor import Executor, StateVersionError
from smr.sim.disk import FaultyDisk
from smr.sim.network import Message, Network
from smr.sim.workloads import WORKLOADS, Workload, apply_delivery, make_workload

# `total` crashes every live member at once; each restarts later from its own disk (it implies
# restarts, whether or not `restart` is in the set). `restart` also restarts a crashed member from
# its own disk when no group is running (every other member is down or restarting too).
FAULTS = ("delay", "partition", "break", "crash", "restart", "join", "leave", "total")
BUGS = ("counter-down",)

MS = 1_000_000
NONCE_BYTES = 8
LOG_CONFIG = LogConfig(segment_bytes_max=64 << 10)  # small segments: rolling happens in runs


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
    liveness_ns: int = 400 * MS
    fault_interval_ns_mean: int = 25 * MS
    heal_ns_max: int = 60 * MS
    restart_ns_max: int = 80 * MS
    joiners_max: int = 2  # new process ids a `join` fault may add
    workload: str = "frontier"
    submit_interval_ns_mean: int = 10 * MS
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
        mc, default = self.core.multicast, MulticastConfig()
        if mc.schedule != default.schedule:
            parts.append(f"--schedule {mc.schedule}")
        if mc.block_bytes != default.block_bytes:
            parts.append(f"--block-bytes {mc.block_bytes}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Submission:
    member: int
    incarnation: int
    key: tuple[int, int]  # (subgroup, shard)
    index: int  # the member incarnation's n-th submission to this shard
    ticket: int


@dataclass
class SimNode:
    """A simulated process: one incarnation of a member id at a time."""

    id: int
    replica: Replica
    alive: bool = True
    incarnation: int = 0
    tick_at_ns: int = -1
    events: list[tuple[int, Any]] = field(default_factory=list)  # (time, event)
    deliveries: list[Any] = field(default_factory=list)
    machines: dict[tuple[int, int], Any] = field(default_factory=dict)  # (sg, sh) -> machine
    submitted: dict[tuple[int, int], int] = field(default_factory=dict)  # key -> count
    open_tickets: dict[int, tuple[int, int]] = field(default_factory=dict)  # ticket -> key
    # linearizable reads not answered: (incarnation, ticket) -> (step issued in, key)
    open_reads: dict[tuple[int, int], tuple[int, tuple[int, int]]] = field(default_factory=dict)
    digests: dict[tuple[tuple[int, int], int], str] = field(default_factory=dict)
    halted: str = ""
    # the node's disk and, per incarnation, a log per durable shard and one for metadata
    disk: FaultyDisk = field(default_factory=FaultyDisk)
    logs: dict[tuple[int, int], Log] = field(default_factory=dict)
    appended: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # versions, in order
    synced: dict[tuple[int, int], int] = field(default_factory=dict)  # last durable version seen
    sync_pending: set[tuple[int, int]] = field(default_factory=set)
    meta: Log | None = None
    dir_incarnation: int = 0  # the incarnation whose directory is this node's disk state
    applied: dict[tuple[int, int], int] = field(default_factory=dict)  # key -> machine version
    executor: Executor | None = None  # one per incarnation (see _revive)

    @property
    def active(self) -> bool:
        return self.alive and self.replica.status == ACTIVE

    @property
    def restarting(self) -> bool:
        return self.alive and self.replica.status == RESTARTING


@dataclass(frozen=True, slots=True)
class SimResult:
    config: SimConfig
    digest: str
    schedule_digest: str
    steps: int
    end_ns: int
    violation: Violation | None
    stats: dict[str, Any]
    view_change_ns: tuple[int, ...] = ()  # from a crash to the next view installed

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

    def after_write(
        self, sim: Simulation, node: SimNode, source: int, offset: int, data: bytes, epoch: int
    ) -> None:
        """Called just after a peer's write was handed to `node`."""

    def after_recover(self, sim: Simulation, node: SimNode, recovered: Recovered) -> None:
        """`node` restarts from its own disk with this summary of its logs."""

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
        tracer: Checker | None = None,
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
        self.initial_members = self.members
        self.workload = make_workload(config.workload, config.nodes)
        self.nodes: dict[int, SimNode] = {
            m: SimNode(m, factory(m, self.members, config, self.workload)) for m in self.members
        }
        for node in self.nodes.values():
            for st in node.replica.streams.values():
                self._new_machine(node, (st.subgroup, st.shard_index))
        self.checkers = list(invariants.default_checkers() if checkers is None else checkers)
        if tracer is not None:  # smr.sim.trace.Tracer: an observer, so it costs nothing when off
            self.checkers.append(tracer)
        self.in_liveness = False
        self.nonces: dict[bytes, Submission] = {}
        self._nonce = 0
        self._next_id = config.nodes + 1
        self._crashed_at: list[tuple[int, int]] = []  # (member, when) until a view drops it
        # The minority side of the partition in force: faults never overlap so that a majority
        # of the view stays connected (two overlapping partitions can leave no majority anywhere,
        # and then a virtually synchronous group rightly stops).
        self._isolated: set[int] = set()
        self._corrupted: set[int] = set()  # members whose disk has a flipped synced byte
        self._partition_until_ns = 0
        self.view_change_ns: list[int] = []
        self.stats: dict[str, int] = {
            "writes": 0,
            "data": 0,
            "faults": 0,
            "crashes": 0,
            "restarts": 0,
            "joins": 0,
            "leaves": 0,
            "halts": 0,
            "corruptions": 0,
            "corruption_detected": 0,
            "views": 0,
            "reads": 0,
            "reads_confirmed": 0,
        }
        self.timeline: list[tuple[int, str]] = []  # faults, views and phases in plain words

    # -- scheduling -----------------------------------------------------------------------------

    def _at(self, time_ns: int, kind: str, arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_ns, self._seq, kind, arg))

    def _schedule_tick(self, node: SimNode) -> None:
        if not node.alive or node.replica.status == HALTED:
            return
        at = max(node.replica.next_tick_ns(), self.now_ns)
        if node.tick_at_ns < 0 or at < node.tick_at_ns or node.tick_at_ns < self.now_ns:
            node.tick_at_ns = at
            self._at(at, "tick", (node.id, node.incarnation))

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> SimResult:
        violation: Violation | None = None
        try:
            self._run()
        except Violation as v:
            violation = v
        except PeerProtocolError as e:
            violation = Violation("peer-protocol", str(e))
        except StateVersionError as e:
            violation = Violation("restart.state", str(e))
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
            tuple(self.view_change_ns),
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
                self._at(self._submit_gap(), "submit", (m, 0))
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

    def _current(self, arg: tuple[int, int]) -> SimNode | None:
        member, incarnation = arg
        node = self.nodes[member]
        if not node.alive or node.incarnation != incarnation:
            return None
        return node

    def _step(self, kind: str, arg: Any) -> SimNode | bool | None:
        """Perform one event; return the node it happened at, None for a global step, or False if
        the event was stale and nothing happened."""
        if kind == "tick":
            node = self._current(arg)
            if node is None or node.tick_at_ns != self.now_ns:
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
                offset, data, epoch = message.body
                node.replica.on_write(message.source, offset, data, epoch)
                for c in self.checkers:
                    c.after_write(self, node, message.source, offset, data, epoch)
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
        if kind == "crash":
            if not self.nodes[arg].alive:
                return False
            self.crash(arg)
            return None
        if kind == "restart":
            node = self.nodes[arg]
            if node.alive and node.replica.status != HALTED:
                return False
            self._restart(node)
            return node
        if kind == "liveness":
            self._start_liveness()
            return None
        if kind == "submit":
            node = self._current(arg)
            if node is None:
                return False
            if self.now_ns < self.config.safety_ns + self.config.liveness_ns // 2:
                self._at(self.now_ns + self._submit_gap(), "submit", arg)
            if not node.active:
                return False
            self._submit(node)
            return node
        if kind == "sync":
            member, incarnation, key = arg
            node = self._current((member, incarnation))
            if node is None:
                return False
            node.sync_pending.discard(key)
            version = node.logs[key].sync()
            node.synced[key] = version
            self._trace("sync", member, key, version)
            node.replica.on_persisted(key[0], key[1], version)
            self._drain(node)
            return node
        raise AssertionError(f"unknown event {kind}")

    def _submit(self, node: SimNode) -> None:
        if self.workload.reads and self.rng.random() < self.workload.reads:
            self._read(node)
            return
        choices = [
            (st.subgroup, st.shard_index) for st in node.replica.streams.values() if st.my_rank >= 0
        ]
        if not choices:
            return
        op = self.workload.next_op(self.rng, node.id, choices)
        if op is None:
            return
        key = (op.subgroup, op.shard)
        self._nonce += 1
        nonce = self._nonce.to_bytes(NONCE_BYTES, "big")
        self._trace("submit", node.id, key, len(op.payload))
        ticket = node.replica.submit(op.subgroup, op.shard, nonce + op.payload, reply=op.reply)
        index = node.submitted.get(key, 0)
        node.submitted[key] = index + 1
        self.nonces[nonce] = Submission(node.id, node.incarnation, key, index, ticket)
        node.open_tickets[ticket] = key
        self._drain(node)

    def _read(self, node: SimNode) -> None:
        """A linearizable read of one of the node's ordered or durable shards (the checker
        `invariants.Reads` compares what it saw with every answer given before it began)."""
        choices = sorted(
            (st.subgroup, st.shard_index)
            for st in node.replica.streams.values()
            if st.mode != "raw"
        )
        if not choices:
            return
        key = self.rng.choice(choices)
        self._trace("read", node.id, key)
        ticket = node.replica.read(*key)
        node.open_reads[(node.incarnation, ticket)] = (self.steps, key)
        self.stats["reads"] += 1
        self._drain(node)

    def _submit_gap(self) -> int:
        return 1 + int(self.rng.expovariate(1.0 / self.config.submit_interval_ns_mean))

    def _drain(self, node: SimNode) -> None:
        replica = node.replica
        if node.alive:
            if node.executor is None:
                node.executor = Executor(node.id, SimHost(self, node))
            checkers = self.checkers

            def observe(ready: Ready) -> None:
                for c in checkers:
                    c.after_ready(self, node, ready)

            node.executor.drain(replica, observe)
        if node.alive and replica.status == HALTED and not node.halted:
            self._on_halt(node)
        self._schedule_tick(node)

    def _dir(self, node: SimNode) -> str:
        return f"/member-{node.id}/incarnation-{node.dir_incarnation}"

    def _log(self, node: SimNode, key: tuple[int, int]) -> Log:
        log = node.logs.get(key)
        if log is None:
            path = f"{self._dir(node)}/subgroup-{key[0]}-shard-{key[1]}"
            log = node.logs[key] = Log.open(path, LOG_CONFIG, fs=node.disk)
        return log

    def _meta(self, node: SimNode) -> Log:
        if node.meta is None:
            node.meta = Log.open(f"{self._dir(node)}/meta", LOG_CONFIG, fs=node.disk)
        return node.meta

    def _recover_disk(self, node: SimNode) -> None:
        """After a crash: every log must reopen holding every record it reported synced, and
        nothing the faulty disk could not explain (a flipped byte is reported, never skipped)."""
        for key, versions in node.appended.items():
            path = f"{self._dir(node)}/subgroup-{key[0]}-shard-{key[1]}"
            try:
                log = Log.open(path, LOG_CONFIG, fs=node.disk)
            except LogCorruptionError as e:
                if node.id in self._corrupted:
                    self.stats["corruption_detected"] += 1
                    continue
                raise Violation("log.recovery", f"member {node.id}: {e}") from None
            durable = node.synced.get(key, -1)
            present = set(log.versions())
            lost = [v for v in versions if v <= durable and v not in present]
            if lost:
                raise Violation(
                    "log.durable",
                    f"member {node.id} lost version {lost[0]:#x} of shard {key} in a crash, "
                    f"though its log had reported everything up to {durable:#x} synced",
                )
            extra = present - set(versions)
            if extra:
                raise Violation(
                    "log.recovery",
                    f"member {node.id}'s log of shard {key} returned version {min(extra):#x}, "
                    "never appended",
                )
            log.close()
        self._corrupted.discard(node.id)

    def _new_machine(self, node: SimNode, key: tuple[int, int]) -> Any:
        machine = self.workload.machine(key[0])
        if machine is not None:
            node.machines[key] = machine
        return machine

    def _on_halt(self, node: SimNode) -> None:
        self.stats["halts"] += 1
        self.note(f"member {node.id} halts: {node.replica.halt_reason}")
        node.halted = node.replica.halt_reason or "halted"
        # A halted process starts again from its disk, as the node runtime does by default
        # (`rejoin`); that is its own doing, not a fault, so it happens after faults stop too.
        if self._restarts():
            self._at(
                self.now_ns + self.rng.randint(MS, self.config.restart_ns_max), "restart", node.id
            )

    def _restarts(self) -> bool:
        return bool({"restart", "total"} & self.config.faults)

    def _transmit(self, source: int, target: int, kind: str, body: tuple) -> None:
        if target not in self.nodes:
            return
        message = Message(source, target, kind, self.network.generation(source, target), body)
        arrival = self.network.transit(self.now_ns, message)
        if arrival is not None:
            self._at(arrival, "msg", message)

    # -- faults ---------------------------------------------------------------------------------

    def _fault_gap(self) -> int:
        return 1 + int(self.rng.expovariate(1.0 / self.config.fault_interval_ns_mean))

    def spare(self, healthy: list[int]) -> int:
        """How many more members may fail now: in every view some live member is still in, a
        majority must stay healthy (a view change in progress needs a majority of its view)."""
        spare = len(healthy)
        for node in self.nodes.values():
            if not node.active:
                continue
            view = node.replica.members
            alive = sum(1 for m in view if m in healthy)
            spare = min(spare, alive - (len(view) // 2 + 1))
        return spare

    def _keeps_every_shard(self, lost: set[int], healthy: list[int], *, held: bool = False) -> bool:
        """Losing `lost` leaves every shard of the current view a healthy member that keeps its
        state. The state of an ordered or raw shard lives only in memory, so that member must
        hold it already (not wait for it from a provider). A durable shard's state is also on
        its holders' disks: a holder that fails comes back from its disk and provides it (a
        member still waiting keeps the shard going meanwhile), but only if members restart.
        With `held`, every shard needs a member holding its state in memory whatever its mode
        (losing `lost`'s disks too is then survivable)."""
        for node in self.nodes.values():
            if not node.active:
                continue
            for shard in node.replica.shards:
                keep = [m for m in shard.members if m in healthy and m not in lost]
                if held or shard.mode != "durable" or not self._restarts():
                    keep = [m for m in keep if self._holds(m, shard.index)]
                if not keep:
                    return False
        return True

    def _holds(self, member: int, g: int) -> bool:
        st = self.nodes[member].replica.streams.get(g)
        return st is not None and not st.awaiting_state

    def _settled(self) -> bool:
        live = [n for n in self.nodes.values() if n.active]
        return len({n.replica.epoch for n in live}) == 1 and not any(n.replica.frozen for n in live)

    def _healthy(self) -> list[int]:
        return [
            m
            for m, n in self.nodes.items()
            if n.active and m not in self._isolated and not n.replica._leaving
        ]

    def _inject_fault(self) -> None:
        kinds = sorted(self.config.faults - {"delay", "restart"})
        if not kinds:
            return
        kind = self.rng.choice(kinds)
        self.stats["faults"] += 1
        healthy = self._healthy()
        # Faults take out at most a minority of the current view at once, and none strikes while
        # a view change is under way, so the group always keeps a majority that can install the
        # next view (a view change needs a majority of its view).
        spare = self.spare(healthy) if self._settled() else 0
        if self.now_ns >= self._partition_until_ns:
            self._isolated.clear()
        if kind == "partition" and spare >= 1 and not self._isolated:
            side = self.rng.sample(healthy, self.rng.randint(1, spare))
            if not self._keeps_every_shard(set(side), healthy):
                return
            rest = [m for m in self.nodes if m not in side]
            one_way = self.rng.random() < 0.3
            heal_at = self.now_ns + self.rng.randint(MS, self.config.heal_ns_max)
            self._trace("partition", tuple(sorted(side)), one_way)
            arrow = "->" if one_way else "<->"
            self.note(
                f"partition {sorted(side)} {arrow} {sorted(rest)}, heals at {heal_at / MS:.1f} ms"
            )
            self._isolated = set(side)
            self._partition_until_ns = heal_at
            for a in side:
                for b in rest:
                    self._set_link(a, b, False)
                    self._at(heal_at, "heal", (a, b))
                    if not one_way:
                        self._set_link(b, a, False)
                        self._at(heal_at, "heal", (b, a))
        elif kind == "break" and len(healthy) > 1 and not self._isolated:
            a, b = self.rng.sample(healthy, 2)
            heal_at = self.now_ns + self.rng.randint(MS // 10, 5 * MS)
            self._trace("break", a, b)
            self.note(f"link {a}<->{b} breaks, reconnects at {heal_at / MS:.1f} ms")
            for x, y in ((a, b), (b, a)):
                self._set_link(x, y, False)
                self._at(heal_at, "heal", (x, y))
        elif kind == "crash" and not healthy and self.rng.random() < 0.5:
            # a crash in the middle of a restart after total failure
            restarting = [m for m, n in self.nodes.items() if n.restarting]
            if restarting:
                self.crash(self.rng.choice(restarting), corrupt=False)
        elif (
            kind == "total"
            and spare >= 1
            and not self._isolated
            and all(m in healthy for n in self.live_nodes() for m in n.replica.members)
        ):
            self._total_failure()
        elif kind == "crash" and spare >= 1:
            victim = self.rng.choice(healthy)
            if not self._keeps_every_shard({victim}, healthy):
                return
            self.crash(victim)
        elif kind == "join" and self._next_id <= self.config.nodes + self.config.joiners_max:
            new_id = self._next_id
            self._next_id += 1
            self._trace("join", new_id)
            self.note(f"process {new_id} starts and asks to join")
            self.nodes[new_id] = SimNode(new_id, self._joiner(new_id))
            self.members = (*self.members, new_id)
            self.stats["joins"] += 1
            self._drain(self.nodes[new_id])
        elif kind == "leave" and spare >= 1:
            leaver = self.rng.choice(healthy)
            if not self._keeps_every_shard({leaver}, healthy):
                return
            self._trace("leave", leaver)
            self.note(f"member {leaver} leaves")
            self.stats["leaves"] += 1
            self.nodes[leaver].replica.leave()
            self._drain(self.nodes[leaver])

    def schedule(self, at_ns: int, what: str, member: int) -> None:
        """Script a fault: `what` is "crash" or "restart" of `member` at simulated `at_ns`."""
        assert what in ("crash", "restart"), what
        self._at(at_ns, what, member)

    def _total_failure(self) -> None:
        """Every live member crashes at once; each restarts from its own disk a little later."""
        self._trace("total")
        self.note("total failure: every live member crashes")
        self.stats["totals"] = self.stats.get("totals", 0) + 1
        for m in sorted(self.nodes):
            if self.nodes[m].alive:
                self.crash(m, corrupt=False)
                if "restart" not in self.config.faults:
                    at = self.now_ns + self.rng.randint(MS, self.config.restart_ns_max)
                    self._at(at, "restart", m)

    def crash(self, member: int, *, corrupt: bool = True) -> None:
        """Member `member` stops; its disk loses what was not synced. With `corrupt`, one time in
        ten a synced byte flips too, but never on a disk that may hold the only copy of a shard's
        state (in a total failure, during a restart after one, or while no other healthy member
        holds some shard's state in memory): the group then rightly cannot come back, and stays
        blocked, safely (tests/test_sim_state_holder.py scripts that case)."""
        self._trace("crash", member)
        self.note(f"member {member} crashes")
        node = self.nodes[member]
        sole = not self._keeps_every_shard({member}, self._healthy(), held=True)
        node.alive = False
        node.disk.crash(self.rng)  # unsynced writes lost, the last one maybe torn
        if corrupt and self.rng.random() < 0.1 and not sole:
            self._corrupt_sector(node)
        self.stats["crashes"] += 1
        self._crashed_at.append((member, self.now_ns))
        for other in self.nodes:
            if other != member:
                self.network.set_up(member, other, False)
                self.network.set_up(other, member, False)
        if self._restarts() and not self.in_liveness:
            self._at(
                self.now_ns + self.rng.randint(MS, self.config.restart_ns_max), "restart", member
            )

    def _corrupt_sector(self, node: SimNode) -> None:
        """Flip a byte of a synced record: the restart must report it, not skip it."""
        choices = []
        for key in sorted(node.appended):
            path = f"{self._dir(node)}/subgroup-{key[0]}-shard-{key[1]}"
            if node.disk.exists(path):
                for name in sorted(node.disk.listdir(path)):
                    full = f"{path}/{name}"
                    if name.endswith(".seg") and node.disk.durable_size(full) > 64:
                        choices.append(full)
        if choices:
            full = self.rng.choice(choices)
            node.disk.corrupt(full, self.rng.randint(64, node.disk.durable_size(full) - 1))
            self._corrupted.add(node.id)
            self.stats["corruptions"] += 1

    def _joiner(self, member: int) -> Replica:
        contacts = [m for m in self.nodes if m != member]
        self.rng.shuffle(contacts)
        return Replica.joiner(
            member, contacts, layout=self.workload.layout(), config=self.config.core, strict=True
        )

    def _restart(self, node: SimNode) -> None:
        """A stopped process (crashed, or halted) starts again, as the node runtime does: from
        its own disk with `Replica.restarting` when the disk says which view it was in; the core
        then finds the group running (and joins it, offering the state its logs hold) or agrees
        with the other restarted members on a view to resume in. Without a view on its disk: a
        new incarnation with a fresh directory that joins with state transfer."""
        if self._has_view(node):
            self._restart_from_disk(node)
            return
        self._trace("restart", node.id)
        self.note(f"member {node.id} restarts and asks to join")
        self.stats["restarts"] += 1
        if node.logs:
            self._recover_disk(node)
        node.logs = {}
        node.appended = {}
        node.synced = {}
        node.sync_pending = set()
        node.meta = None
        node.incarnation += 1
        node.dir_incarnation = node.incarnation
        node.applied = {}
        node.replica = self._joiner(node.id)
        node.machines.clear()
        self._revive(node)

    def _has_view(self, node: SimNode) -> bool:
        """The node's disk says which view it was in: a founding member's first directory, or a
        logged view (a joiner that never entered the group has nothing to restart from)."""
        if node.id in self.initial_members and node.dir_incarnation == 0:
            return True
        meta = f"{self._dir(node)}/meta"
        return node.disk.exists(meta) and any(
            name.startswith("view.") for name in node.disk.listdir(meta)
        )

    def _shard_logs(self, node: SimNode) -> dict[tuple[int, int], Log]:
        logs: dict[tuple[int, int], Log] = {}
        for shard in allocate(self.initial_members, self.workload.layout()):
            key = (shard.subgroup, shard.shard)
            if node.disk.is_dir(f"{self._dir(node)}/subgroup-{key[0]}-shard-{key[1]}"):
                logs[key] = self._log(node, key)
        return logs

    def _restart_from_disk(self, node: SimNode) -> None:
        """Recover the logs (the faulty disk lost what was not synced), replay them into fresh
        state machines and restart the replica from what they say."""
        self._trace("restart-from-disk", node.id)
        self.note(f"member {node.id} restarts from its disk")
        self.stats["restarts"] += 1
        corrupted = node.id in self._corrupted
        if node.appended:
            self._recover_disk(node)
        node.logs = {}
        node.meta = None
        node.sync_pending = set()
        node.incarnation += 1
        node.machines.clear()
        node.applied = {}
        try:
            logs = self._shard_logs(node)
            meta = self._meta(node)
        except LogCorruptionError as e:
            if not corrupted:
                raise Violation("log.recovery", f"member {node.id}: {e}") from None
            # a flipped byte the log refuses to open: start as a fresh process that joins
            self.stats["corruption_detected"] += 1
            self._corrupted.discard(node.id)
            node.incarnation += 1
            node.dir_incarnation = node.incarnation
            node.logs, node.meta, node.appended, node.synced = {}, None, {}, {}
            node.replica = self._joiner(node.id)
            self._revive(node)
            return
        recovered = recover_member(node.id, meta, logs, self.initial_members)
        node.appended, node.synced = {}, {}
        for key, log in logs.items():
            node.appended[key] = log.versions()
            node.synced[key] = log.durable_version
            machine = self._new_machine(node, key)
            if machine is None:
                continue
            sg, sh = key

            def apply(record: Record, machine: Any = machine, sg: int = sg, sh: int = sh) -> None:
                d = Delivery(sg, sh, record.version, record.timestamp_ns, 0, record.payload)
                apply_delivery(machine, d, NONCE_BYTES)

            version = replay(log, apply, machine.restore)
            node.applied[key] = version
            if version:
                node.digests[(key, version)] = machine.digest()
        for c in self.checkers:
            c.after_recover(self, node, recovered)
        contacts = [m for m in self.nodes if m != node.id]
        node.replica = Replica.restarting(
            node.id,
            recovered,
            contacts,
            layout=self.workload.layout(),
            config=self.config.core,
            strict=True,
        )
        self._revive(node)

    def _revive(self, node: SimNode) -> None:
        node.executor = None
        node.alive = True
        node.halted = ""
        node.tick_at_ns = -1
        node.open_tickets.clear()
        node.submitted.clear()
        for other in self.nodes:
            if other != node.id and self.nodes[other].alive:
                for a, b in ((node.id, other), (other, node.id)):
                    self._set_link(a, b, True)
        if self.workload.submits:
            self._at(self.now_ns + self._submit_gap(), "submit", (node.id, node.incarnation))
        self._drain(node)

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
        self.note(
            "faults stop; every link is healed"
            + (" and every stopped member restarts" if self._restarts() else "")
        )
        self.in_liveness = True
        for (a, b), link in sorted(self.network.links.items()):
            if not link.up:
                self._set_link(a, b, True)
        if self._restarts():
            for node in list(self.nodes.values()):
                if not node.alive or node.replica.status == HALTED:
                    self._restart(node)
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
        for m in sorted(self.nodes):
            node = self.nodes[m]
            h.update(repr((m, [e for _, e in node.events], node.deliveries)).encode())
        return h.hexdigest()[:16]

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.active]


class SimHost:
    """The executor's host for a simulated member (`smr.runtime.executor`): the node's faulty
    disk, the simulated network and the workload's state machines. Appends become durable a
    little later, in one sync per shard that covers everything appended by then (group commit);
    metadata, truncations and snapshots are durable at once."""

    def __init__(self, sim: Simulation, node: SimNode):
        self.sim = sim
        self.node = node
        self._joined: tuple[int, ...] = ()  # of the view this Ready installs, until it is in force

    def prepare_view(self, event: ViewInstalled) -> None:
        node = self.node
        self._joined = event.joined
        for sg, sh, _, _ in event.shards:
            if (sg, sh) not in node.machines and node.id not in event.joined:
                self.sim._new_machine(node, (sg, sh))

    def persist_meta(self, request: LogMeta) -> None:
        self.sim._meta(self.node).meta_put(request.name, request.data)

    def persist_append(self, request: LogAppend) -> None:
        sim, node = self.sim, self.node
        key = (request.subgroup, request.shard)
        sim._log(node, key).append(
            Record(d.version, d.timestamp_ns, d.subgroup, d.shard, d.payload)
            for d in request.entries
        )
        node.appended.setdefault(key, []).extend(d.version for d in request.entries)
        if key not in node.sync_pending:
            node.sync_pending.add(key)
            at = sim.now_ns + sim.rng.randint(MS // 20, sim.config.persist_ns_max)
            sim._at(at, "sync", (node.id, node.incarnation, key))

    def persist_flush(self, subgroup: int, shard: int) -> None:
        key = (subgroup, shard)
        self.node.synced[key] = self.sim._log(self.node, key).sync()

    def persist_rewrite(self, request: LogTruncate | LogSnapshot) -> None:
        node = self.node
        key = (request.subgroup, request.shard)
        perform(self.sim._log(node, key), request)
        if isinstance(request, LogTruncate):
            node.appended[key] = [v for v in node.appended.get(key, []) if v <= request.version]
        else:
            node.appended[key] = []

    def push(self, push: Push) -> None:
        sim = self.sim
        for target in push.targets:
            sim._transmit(self.node.id, target, "write", (push.offset, push.data, push.epoch))
            sim.stats["writes"] += 1

    def send(self, send: Send) -> None:
        self.sim._transmit(self.node.id, send.target, "data", (send.payload,))
        self.sim.stats["data"] += 1

    def apply(self, deliveries: tuple[Delivery, ...]) -> list[bytes]:
        node = self.node
        results = []
        touched: dict[tuple[int, int], int] = {}
        for d in deliveries:
            node.deliveries.append(d)
            key = (d.subgroup, d.shard)
            machine = node.machines.get(key)
            if machine is not None:
                results.append(apply_delivery(machine, d, NONCE_BYTES))
                touched[key] = d.version
                node.applied[key] = d.version
            else:
                results.append(b"%d" % len(d.payload))
        for key, version in touched.items():
            st = node.replica.stream(*key)
            if st is None or st.mode != "raw":
                node.digests[(key, version)] = node.machines[key].digest()
        return results

    def state_of(self, subgroup: int, shard: int) -> tuple[int, bytes]:
        node = self.node
        machine = node.machines.get((subgroup, shard))
        data = machine.snapshot() if machine is not None else b""
        return node.applied.get((subgroup, shard), 0), data

    def state_sent(self, event: StateTransfer, version: int, size_bytes: int) -> None:
        sim, node = self.sim, self.node
        node.events.append((sim.now_ns, event))
        if node.id in self._joined:
            # a joiner provides a shard's state from its own log (the group had lost it)
            sim.stats["state_from_joiner"] = sim.stats.get("state_from_joiner", 0) + 1
            sim.note(f"joiner {node.id} provides shard {event.subgroup, event.shard}")

    def restore(self, event: RestoreState) -> None:
        sim, node = self.sim, self.node
        node.events.append((sim.now_ns, event))
        key = (event.subgroup, event.shard)
        machine = sim._new_machine(node, key)
        if machine is not None:
            if event.data:  # empty: the initial state (a provider with nothing logged)
                machine.restore(event.data)
            node.applied[key] = event.version
            st = node.replica.stream(*key)
            if event.version and (st is None or st.mode != "raw"):
                node.digests[(key, event.version)] = machine.digest()

    def view_installed(self, event: ViewInstalled) -> None:
        sim, node = self.sim, self.node
        node.events.append((sim.now_ns, event))
        self._joined = ()
        sim.stats["views"] += 1
        mine = {(sg, sh) for sg, sh, _, _ in event.shards}
        for key in list(node.machines):
            if key not in mine:
                del node.machines[key]  # a shard this member left (its state went on)
        for victim, t in list(sim._crashed_at):
            if victim in event.departed:
                # the first view installed without a crashed member: what failover costs
                sim.view_change_ns.append(sim.now_ns - t)
                sim._crashed_at.remove((victim, t))
        if node.id == event.members[0]:
            sim.note(
                f"view {event.epoch} installed: members {list(event.members)}"
                + (f", joined {list(event.joined)}" if event.joined else "")
                + (f", departed {list(event.departed)}" if event.departed else "")
            )

    def answer(self, event: Completed | SubmitFailed, results: dict[int, bytes] | None) -> None:
        self.node.events.append((self.sim.now_ns, event))
        self.node.open_tickets.pop(event.ticket, None)

    def answer_read(self, event: ReadConfirmed | ReadFailed) -> None:
        self.node.events.append((self.sim.now_ns, event))

    def flush_answers(self) -> None:
        pass  # answers are the events recorded above

    def notify(self, event: Halted | ViewBlocked | FrontierReached | PeerMisbehaved) -> None:
        self.node.events.append((self.sim.now_ns, event))
        if type(event) is PeerMisbehaved:
            # every simulated peer runs the real core: a protocol error is a bug in it
            raise Violation(
                "peer-protocol",
                f"member {self.node.id} dropped input from {event.peer}: {event.reason}",
            )


def run_seed(config: SimConfig, **kwargs: Any) -> SimResult:
    return Simulation(config, **kwargs).run()
