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

Each simulated process is the node runtime itself (`smr.runtime.node.Node`, the code a member
process runs), with its I/O replaced and nothing else: the network is the sim transport
(`smr.transport.sim`) over this run's `Network`, its disk a `FaultyDisk`, its group commit a
writer whose syncs are events here, its clock the simulated one, and its clients are calls that
hand it protocol requests and keep its answers. A crash ends the Node (its transport closes, its
disk loses what was not synced); a restart is a new Node on the same disk, which decides by
itself, as a process does, whether it resumes from its logs or joins afresh; a halted Node rejoins
by itself. The workloads' state machines are `StateMachine` types the Node hosts. Every client
command carries the node runtime's own envelope (client id, sequence number), which the checkers
use to tell submissions apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from smr.core.errors import PeerProtocolError, UsageError
from smr.core.multicast import MulticastConfig, PeerMisbehaved
from smr.core.ready import LogSnapshot, LogTruncate, Ready
from smr.core.replica import ACTIVE, HALTED, RESTARTING, CoreConfig, Replica, StateTransfer
from smr.core.restart import Recovered
from smr.core.views import Halted, ViewInstalled
from smr.log import Log, LogConfig, LogCorruptionError, Record
from smr.runtime import protocol
from smr.runtime.config import ClusterConfig, MemberConfig, SubgroupConfig
from smr.runtime.executor import StateVersionError
from smr.runtime.hosted import ENVELOPE, wrap
from smr.runtime.node import Node, NodeExit
from smr.sim.disk import FaultyDisk
from smr.sim.network import Network
from smr.sim.workloads import WORKLOADS, make_workload
from smr.transport.base import Handler
from smr.transport.sim import SimTransport, SimWorld

# `total` crashes every live member at once; each restarts later from its own disk (it implies
# restarts, whether or not `restart` is in the set). `restart` also restarts a crashed member from
# its own disk when no group is running (every other member is down or restarting too).
FAULTS = (
    "delay",
    "partition",
    "break",
    "crash",
    "restart",
    "join",
    "leave",
    "total",
    "reconfigure",
)
BUGS = ("counter-down",)

MS = 1_000_000
NONCE_BYTES = ENVELOPE.size  # a submission is told apart by its envelope: (client id, seq)
DATA_DIR = "/sim"
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
    added_max: int = 3  # new ids, not in the configuration, a `reconfigure` fault may add
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
    request: int  # the client request's id


@dataclass
class SimNode:
    """A simulated process: one `Node` at a time for a member id, on the member's disk.

    `incarnation` counts the member's replicas (a restart or a rejoin after a halt starts a new
    one; checkers keep their per-replica state under it); `process` counts its Nodes (a crash
    ends one), and events scheduled for an ended Node are stale."""

    id: int
    proc: Node | None = None
    alive: bool = True
    incarnation: int = 0
    process: int = 0
    client: int = 0  # the client id this incarnation's commands carry
    tick_at_ns: int = -1
    rejoins: int = 0  # the Node's own rejoins seen so far
    events: list[tuple[int, Any]] = field(default_factory=list)  # (time, event)
    deliveries: list[Any] = field(default_factory=list)
    submitted: dict[tuple[int, int], int] = field(default_factory=dict)  # key -> count
    open_tickets: dict[int, tuple[int, int]] = field(default_factory=dict)  # request -> key
    # linearizable reads not answered: request id -> (step issued in, key)
    open_reads: dict[int, tuple[int, tuple[int, int]]] = field(default_factory=dict)
    digests: dict[tuple[tuple[int, int], int], str] = field(default_factory=dict)
    digested: dict[tuple[int, int], int] = field(default_factory=dict)  # key -> version digested
    halted: str = ""
    removed: bool = False  # the group removed this id for good: it never starts again
    # a member added at runtime (`reconfigure`): not in the configuration the others read, so
    # it starts with its own address given, as `smr node --id --host --port` does
    own: MemberConfig | None = None
    disk: FaultyDisk = field(default_factory=FaultyDisk)
    # what this member's durable shard logs were asked to hold and reported synced, for the
    # recovery check after a crash
    appended: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # versions, in order
    synced: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def replica(self) -> Replica:
        assert self.proc is not None
        return self.proc.replica

    @property
    def machines(self) -> dict[tuple[int, int], Any]:
        """The state machines the Node hosts now, by shard."""
        if self.proc is None:
            return {}
        return {key: h.machine for key, h in self.proc.hosted.items()}

    @property
    def applied(self) -> dict[tuple[int, int], int]:
        """The version each hosted shard's state is at."""
        if self.proc is None:
            return {}
        return {key: h.version for key, h in self.proc.hosted.items()}

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

    def after_answer(
        self, sim: Simulation, node: SimNode, request: Any, response: protocol.Response
    ) -> None:
        """`node` answered a client's `request` (a `protocol.Command` or `Query`)."""

    def at_liveness_start(self, sim: Simulation) -> None:
        """Faults have stopped and every link is healed."""

    def at_end(self, sim: Simulation) -> None:
        """The liveness phase is over."""


class Simulation:
    def __init__(
        self,
        config: SimConfig,
        *,
        checkers: Iterable[Checker] | None = None,
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
        self.world = SimWorld(network=self.network, on_due=self._on_due)
        self.cluster = self._cluster_config()
        self._clients = 0
        self._requests = 0
        self.nodes: dict[int, SimNode] = {m: SimNode(m) for m in self.members}
        self.checkers = list(invariants.default_checkers() if checkers is None else checkers)
        if tracer is not None:  # smr.sim.trace.Tracer: an observer, so it costs nothing when off
            self.checkers.append(tracer)
        self.in_liveness = False
        self.nonces: dict[bytes, Submission] = {}
        self._nonce = 0
        self._next_id = config.nodes + 1
        self._next_added = config.nodes + config.joiners_max + 1
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
            "added": 0,
            "removed": 0,
            "removals_refused": 0,
        }
        self.timeline: list[tuple[int, str]] = []  # faults, views and phases in plain words
        for node in self.nodes.values():
            self._spawn(node, step=False)  # the first pass is the first tick of the run

    def _cluster_config(self) -> ClusterConfig:
        """The configuration every simulated Node reads: founders 1..nodes, the ids a `join`
        fault may add as spares, the workload's subgroups, and this run's core timing."""
        config, workload = self.config, self.workload
        ids = range(1, config.nodes + config.joiners_max + 1)
        types = workload.machine_types()
        layout = workload.layout()
        assert len(types) == len(layout), f"workload {workload.name}: a type per subgroup"
        return ClusterConfig(
            path="<sim>",
            name="sim",
            secret=bytes(32),
            transport="sim",
            data_dir=DATA_DIR,
            sync_policy="batch",
            founders=self.members,
            rejoin=self._restarts(),
            members={m: MemberConfig(m, "127.0.0.1", 20_000 + m, 30_000 + m) for m in ids},
            subgroups=tuple(
                SubgroupConfig(spec.name, t, spec) for spec, t in zip(layout, types, strict=True)
            ),
            core=config.core,
            segment_bytes_max=LOG_CONFIG.segment_bytes_max,
        )

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
            self._at(at, "tick", (node.id, node.process))

    def _on_due(self, time_ns: int, member: int) -> None:
        """The sim transport has something for `member` to poll at `time_ns`."""
        node = self.nodes.get(member)
        if node is not None and node.alive:
            self._at(max(time_ns, self.now_ns), "poll", (member, node.process))

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
        while self._heap:
            time_ns, _, kind, arg = heapq.heappop(self._heap)
            if time_ns > end:
                break
            assert time_ns >= self.now_ns
            self.now_ns = time_ns
            self.world.advance_to(time_ns)
            node = self._step(kind, arg)
            if node is not False:
                self.steps += 1
                for c in self.checkers:
                    c.after_step(self, node)
        self.now_ns = end
        for c in self.checkers:
            c.at_end(self)

    def _current(self, arg: tuple[int, int]) -> SimNode | None:
        member, process = arg
        node = self.nodes[member]
        if not node.alive or node.process != process:
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
            self._step_member(node)
            return node
        if kind == "poll":
            node = self._current(arg)
            if node is None or not self.world.has_due(node.id):
                return False
            self._trace("poll", node.id)
            self._step_member(node)
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
            member, process, writer = arg
            node = self._current((member, process))
            if node is None or not writer.pending:
                return False
            self._trace("sync", member, writer.key)
            writer.sync()
            self._step_member(node)
            return node
        raise AssertionError(f"unknown event {kind}")

    def _submit(self, node: SimNode) -> None:
        """A client command (or, for the workload's share, a linearizable read) handed to the
        node's client port, which the node takes in its next pass (made at once)."""
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
        self._requests += 1
        rid = self._requests
        self._trace("submit", node.id, key, len(op.payload))
        replies = protocol.REPLIES_ALL if op.reply else protocol.REPLIES_ONE
        command = protocol.Command(
            rid, op.subgroup, op.shard, node.client, rid, op.payload, replies
        )
        index = node.submitted.get(key, 0)
        node.submitted[key] = index + 1
        self.nonces[wrap(node.client, rid, b"")] = Submission(
            node.id, node.incarnation, key, index, rid
        )
        node.open_tickets[rid] = key
        self._request(node, command)

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
        self._requests += 1
        rid = self._requests
        self._trace("read", node.id, key)
        payload = self.workload.read_op(self.rng, key[0])
        node.open_reads[rid] = (self.steps, key)
        self.stats["reads"] += 1
        self._request(node, protocol.Query(rid, key[0], key[1], payload))

    def _request(self, node: SimNode, request: Any) -> None:
        assert node.proc is not None
        port = node.proc.clients
        assert isinstance(port, _ClientPort)
        port.requests[request.id] = request
        node.proc._on_request(request.id, request)
        self._step_member(node)

    def _answered(self, node: SimNode, request: Any, response: protocol.Response) -> None:
        """The node answered a client (called from its client port, during its pass)."""
        for c in self.checkers:
            c.after_answer(self, node, request, response)
        if isinstance(request, protocol.Command):
            node.open_tickets.pop(request.id, None)
        else:
            node.open_reads.pop(request.id, None)

    def _submit_gap(self) -> int:
        return 1 + int(self.rng.expovariate(1.0 / self.config.submit_interval_ns_mean))

    # -- the processes ----------------------------------------------------------------------

    def _spawn(self, node: SimNode, *, step: bool = True) -> None:
        """Start a Node for `node`'s member on its disk: a founder's first start, a restart
        from its logs, or a joiner (the Node decides from what the disk holds)."""
        member = node.id
        node.process += 1
        node.alive = True
        node.halted = ""
        node.tick_at_ns = -1
        node.rejoins = 0
        writers: list[_SyncWriter] = []
        process = node.process

        def writer(log: Log, on_durable: Callable[[int], None]) -> _SyncWriter:
            w = _SyncWriter(self, node, process, log, on_durable)
            writers.append(w)
            return w

        def observe(ready: Ready) -> None:
            self._observe(node, ready)

        replica_class = Replica
        if self.config.bugs:
            from smr.sim.bugs import replica_class_for

            replica_class = replica_class_for(self.config.bugs, member, self.members)
        cluster = self.cluster
        if node.own is not None:
            cluster = dataclasses.replace(cluster, members={**cluster.members, member: node.own})
        transport = _Transport(self, node, member, cluster.addresses(), cluster.transport_config())
        proc = Node(
            cluster,
            member,
            transport=transport,
            log=self._logger(node),
            fs=node.disk,
            clock_ns=lambda: self.now_ns,
            clients=_ClientPort(self, node),
            writer=writer,
            observe=observe,
            strict=True,
            replica_class=replica_class,
        )
        node.proc = proc
        self._new_incarnation(node)
        proc.start()
        if step:
            self._step_member(node)

    def _logger(self, node: SimNode) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            if event == "log-corrupt":
                # a damaged log the Node refused to trust: only a byte this run flipped may do it
                if node.id not in self._corrupted:
                    raise Violation("log.recovery", f"member {node.id}: {fields.get('error')}")
                self._corrupted.discard(node.id)
                self.stats["corruption_detected"] += 1

        return log

    def _new_incarnation(self, node: SimNode) -> None:
        """The Node made a new replica (it started, or rejoined after a halt): the checkers'
        per-replica state starts again, and what its logs hold is what was appended."""
        proc = node.proc
        assert proc is not None
        node.incarnation += 1
        self._clients += 1
        node.client = self._clients
        node.open_tickets.clear()
        node.open_reads.clear()
        node.submitted.clear()
        node.digested = {}
        node.appended = {key: log.versions() for key, log in proc.logs.items()}
        node.synced = {key: log.durable_version for key, log in proc.logs.items()}
        status = proc.replica.status
        if proc.recovered is not None and status == RESTARTING:
            for c in self.checkers:
                c.after_recover(self, node, proc.recovered)
        self._digest(node)
        if self.workload.submits:
            self._at(self.now_ns + self._submit_gap(), "submit", (node.id, node.process))

    def _step_member(self, node: SimNode) -> None:
        """One pass of the node's loop (what its poll has, a tick if due, log completions,
        client requests), then its state's digests and its next timer."""
        proc = node.proc
        assert proc is not None and node.alive
        try:
            proc.step()
        except NodeExit as e:
            # it halted and does not rejoin (members do not restart in this run): it exits
            node.halted = str(e)
            proc.transport.close()
        if proc.rejoins != node.rejoins:
            # it halted and rejoined by itself, as a member process does by default
            node.rejoins = proc.rejoins
            self.stats["restarts"] += 1
            self._new_incarnation(node)
        self._digest(node)
        self._schedule_tick(node)

    def _observe(self, node: SimNode, ready: Ready) -> None:
        """A Ready of `node`'s replica, before the Node carries it out."""
        now = self.now_ns
        node.deliveries.extend(ready.deliveries)
        joined: tuple[int, ...] = ()
        for event in ready.events:
            if type(event) is ViewInstalled:
                joined = event.joined
        for event in ready.events:
            node.events.append((now, event))
            kind = type(event)
            if kind is StateTransfer and node.id in joined:
                # a joiner provides a shard's state from its own log (the group had lost it)
                self.stats["state_from_joiner"] = self.stats.get("state_from_joiner", 0) + 1
                self.note(f"joiner {node.id} provides shard {event.subgroup, event.shard}")
            elif kind is ViewInstalled:
                self._view_installed(node, event)
            elif kind is Halted:
                self.stats["halts"] += 1
                self.note(f"member {node.id} halts: {event.reason}")
                if event.removed:
                    node.removed = True
                    self.stats["removed"] += 1
            elif kind is PeerMisbehaved:
                # every simulated peer runs the real core: a protocol error is a bug in it
                raise Violation(
                    "peer-protocol",
                    f"member {node.id} dropped input from {event.peer}: {event.reason}",
                )
        for request in ready.persist:
            if isinstance(request, LogTruncate):
                key = (request.subgroup, request.shard)
                node.appended[key] = [v for v in node.appended.get(key, []) if v <= request.version]
            elif isinstance(request, LogSnapshot):
                node.appended[(request.subgroup, request.shard)] = []
        for c in self.checkers:
            c.after_ready(self, node, ready)

    def _view_installed(self, node: SimNode, event: ViewInstalled) -> None:
        self.stats["views"] += 1
        for victim, t in list(self._crashed_at):
            if victim in event.departed:
                # the first view installed without a crashed member: what failover costs
                self.view_change_ns.append(self.now_ns - t)
                self._crashed_at.remove((victim, t))
        if node.id == event.members[0]:
            self.note(
                f"view {event.epoch} installed: members {list(event.members)}"
                + (f", joined {list(event.joined)}" if event.joined else "")
                + (f", departed {list(event.departed)}" if event.departed else "")
            )

    def _digest(self, node: SimNode) -> None:
        """Note the digest of every ordered or durable shard whose state moved on."""
        proc = node.proc
        assert proc is not None
        subgroups = self.cluster.subgroups
        for key, h in proc.hosted.items():
            version = h.version
            if (
                version
                and node.digested.get(key) != version
                and subgroups[key[0]].spec.mode_of(key[1]) != "raw"
            ):
                node.digested[key] = version
                node.digests[(key, version)] = h.machine.digest()

    def _shard_dir(self, node: SimNode, key: tuple[int, int]) -> str:
        return f"{self.cluster.member_dir(node.id)}/subgroup-{key[0]}-shard-{key[1]}"

    def _recover_disk(self, node: SimNode) -> None:
        """After a crash: every log must reopen holding every record it reported synced, and
        nothing the faulty disk could not explain (a flipped byte is reported, never skipped)."""
        for key, versions in node.appended.items():
            path = self._shard_dir(node, key)
            if not node.disk.exists(path):
                continue
            try:
                log = Log.open(path, LOG_CONFIG, fs=node.disk)
            except LogCorruptionError as e:
                if node.id in self._corrupted:
                    continue  # the Node must find it too, and join afresh
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

    def _restarts(self) -> bool:
        return bool({"restart", "total"} & self.config.faults)

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
            self.nodes[new_id] = SimNode(new_id)
            self.members = (*self.members, new_id)
            self.stats["joins"] += 1
            self._spawn(self.nodes[new_id])
        elif kind == "reconfigure":
            self._reconfigure(healthy, spare)
        elif kind == "leave" and spare >= 1:
            leaver = self.rng.choice(healthy)
            if not self._keeps_every_shard({leaver}, healthy):
                return
            self._trace("leave", leaver)
            self.note(f"member {leaver} leaves")
            self.stats["leaves"] += 1
            self.nodes[leaver].replica.leave()
            self._step_member(self.nodes[leaver])

    def _reconfigure(self, healthy: list[int], spare: int) -> None:
        """Membership changed at runtime, as `smr cluster add|remove` does: a process with a new
        id, in no configuration, starts and joins; or a member asks the group to remove an id
        for good: a member of the view (when one may go), or one outside it (a crashed or
        departed member, which is then refused when it comes back)."""
        config = self.config
        if self.rng.random() < 0.4 and self._next_added <= (
            config.nodes + config.joiners_max + config.added_max
        ):
            new_id = self._next_added
            self._next_added += 1
            self._trace("add", new_id)
            self.note(f"process {new_id}, in no configuration, starts and asks to join")
            own = MemberConfig(new_id, "127.0.0.1", 20_000 + new_id, 30_000 + new_id)
            self.nodes[new_id] = SimNode(new_id, own=own)
            self.members = (*self.members, new_id)
            self.stats["added"] += 1
            self._spawn(self.nodes[new_id])
            return
        askers = [m for m in healthy if self.nodes[m].active]
        if not askers:
            return
        view = self.nodes[askers[0]].replica.members
        retired = self.nodes[askers[0]].replica.roster.retired
        outside = [m for m, n in self.nodes.items() if m not in view and not n.removed]
        pick = self.rng.random()
        if retired and pick < 0.2:
            target = self.rng.choice(retired)  # refused: removed already
        elif pick < 0.7 or not outside:
            inside = [m for m in view if m in healthy]
            # now and then past what the fault budget allows: the core must refuse a removal
            # that leaves less than a majority alive, and whatever it accepts must still be safe
            if not inside or (spare < 1 and self.rng.random() < 0.7):
                return
            target = self.rng.choice(inside)
            if not self._keeps_every_shard({target}, healthy):
                return
        else:
            target = self.rng.choice(outside)
        asker = self.rng.choice([m for m in askers if m != target] or askers)
        self._trace("remove", asker, target)
        try:
            self.nodes[asker].replica.remove(target)
        except UsageError as e:
            self.stats["removals_refused"] += 1
            self.note(f"member {asker} refuses to remove {target}: {e}")
            return
        self.note(f"member {asker} asks to remove {target} for good")
        self._step_member(self.nodes[asker])

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
        assert node.proc is not None
        node.proc.transport.close()  # its links end with it
        node.disk.crash(self.rng)  # unsynced writes lost, the last one maybe torn
        if corrupt and self.rng.random() < 0.1 and not sole:
            self._corrupt_sector(node)
        self.stats["crashes"] += 1
        self._crashed_at.append((member, self.now_ns))
        if self._restarts() and not self.in_liveness:
            self._at(
                self.now_ns + self.rng.randint(MS, self.config.restart_ns_max), "restart", member
            )

    def _corrupt_sector(self, node: SimNode) -> None:
        """Flip a byte of a synced record: the restart must report it, not skip it."""
        choices = []
        for key in sorted(node.appended):
            path = self._shard_dir(node, key)
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

    def _restart(self, node: SimNode) -> None:
        """A stopped process (crashed, or halted) starts again on its disk, as a member process
        does: after the disk's check, a new Node, which resumes from its logs when they say which
        view it was in (the core then finds the group running and joins it, offering the state
        its logs hold, or agrees with the other restarted members on a view to resume in), and
        otherwise joins with state transfer."""
        if node.removed:
            return  # the group removed it for good: its process is gone, never to start again
        if not node.alive and node.appended:
            self._recover_disk(node)
        self.stats["restarts"] += 1
        self._trace("restart", node.id)
        self._spawn(node, step=False)
        how = "from its disk" if node.replica.status == RESTARTING else "and asks to join"
        self.note(f"member {node.id} restarts {how}")
        for other in self.nodes:
            if other != node.id and self.nodes[other].alive:
                for a, b in ((node.id, other), (other, node.id)):
                    self._set_link(a, b, True)  # a new process: new connections
        self._step_member(node)

    def _set_link(self, a: int, b: int, up: bool) -> None:
        if self.world.set_link(a, b, up) and up:
            self._trace("link-up", a, b)  # the sim transport reports it to `a`'s next poll

    def _start_liveness(self) -> None:
        self._trace("liveness")
        self.note(
            "faults stop; every link is healed"
            + (" and every stopped member restarts" if self._restarts() else "")
        )
        self.in_liveness = True
        for a, b in sorted(self.network.links):
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


class _SyncWriter:
    """A durable shard log's group commit in simulated time: appends are written at once and
    made durable by one sync, a little later, that covers everything appended by then (an event
    of the run); `flush` syncs at once. Reports to the Node as its `GroupCommitWriter` does."""

    def __init__(
        self,
        sim: Simulation,
        node: SimNode,
        process: int,
        log: Log,
        on_durable: Callable[[int], None],
    ):
        self.sim = sim
        self.node = node
        self.process = process
        self.log = log
        self.on_durable = on_durable
        self.pending = False
        name = log.path.rsplit("/", 1)[-1]
        sg, sh = name.removeprefix("subgroup-").split("-shard-")
        self.key = (int(sg), int(sh))

    def submit(self, records: Sequence[Record], timeout_s: float | None = None) -> None:
        self.log.append(records)
        self.node.appended.setdefault(self.key, []).extend(r.version for r in records)
        if not self.pending:
            self.pending = True
            sim = self.sim
            at = sim.now_ns + sim.rng.randint(MS // 20, sim.config.persist_ns_max)
            sim._at(at, "sync", (self.node.id, self.process, self))

    def sync(self) -> None:
        if self.pending:
            self.pending = False
            version = self.log.sync()
            self.node.synced[self.key] = version
            self.on_durable(version)

    def flush(self, timeout_s: float | None = None) -> int:
        self.sync()
        self.node.synced[self.key] = self.log.sync()
        return self.log.durable_version

    def close(self) -> None:
        self.pending = False


class _ClientPort:
    """A simulated member's client port: the run hands requests in (`Simulation._request`);
    each answer goes to the run's checkers at once."""

    def __init__(self, sim: Simulation, node: SimNode):
        self.sim = sim
        self.node = node
        self.requests: dict[int, Any] = {}  # connection (= request) id -> request

    def attach(self, transport: Any) -> None:
        pass

    def respond(self, conn_id: int, response: protocol.Response) -> None:
        request = self.requests.pop(conn_id, None)
        if request is not None and self.sim.nodes[self.node.id] is self.node and self.node.alive:
            self.sim._answered(self.node, request, response)

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


class _Transport(SimTransport):
    """The sim transport, counted, with the checkers told of each table write it hands over."""

    def __init__(self, sim: Simulation, node: SimNode, *args: Any):
        super().__init__(*args, world=sim.world)
        self.sim = sim
        self.node = node

    def start(self, handler: Handler) -> None:
        super().start(_Observed(self.sim, self.node, handler))

    def write(self, targets: Sequence[int], epoch: int, offset: int, data: bytes) -> None:
        self.sim.stats["writes"] += len(targets)
        super().write(targets, epoch, offset, data)

    def send(self, target: int, payload: bytes) -> None:
        self.sim.stats["data"] += 1
        super().send(target, payload)


class _Observed:
    """A Node's transport handler, with `Checker.after_write` after each write it applies."""

    def __init__(self, sim: Simulation, node: SimNode, handler: Handler):
        self.sim = sim
        self.node = node
        self.handler = handler

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        self.sim._trace("write", source, self.node.id)
        self.handler.on_write(source, epoch, offset, data)
        for c in self.sim.checkers:
            c.after_write(self.sim, self.node, source, offset, data, epoch)

    def on_data(self, source: int, payload: bytes) -> None:
        self.sim._trace("data", source, self.node.id)
        self.handler.on_data(source, payload)

    def on_link_up(self, peer: int) -> None:
        self.handler.on_link_up(peer)

    def on_peer_failed(self, peer: int) -> None:
        self.handler.on_peer_failed(peer)


def run_seed(config: SimConfig, **kwargs: Any) -> SimResult:
    return Simulation(config, **kwargs).run()
