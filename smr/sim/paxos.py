"""The deterministic simulator for the built-in Multi-Paxos: `smr sim --protocol multipaxos`.

This module owns a simulated Multi-Paxos cluster: every member is the runtime itself
(`smr.runtime.paxos_node.PaxosMember`, the code of a `smr node` process whose configuration says
`protocol = "multipaxos"`) on the sim transport (`smr.transport.sim`), its acceptor log on a
faulty disk (`smr.sim.disk.FaultyDisk`: a crash loses what was not synced and may tear the last
write) and an in-process client port; one seed fixes a run exactly.

Clients submit commands to a random member: in the `kv` workload KV writes, each to a key of its
own (`c<client>-<seq>`); in `bank`, `Bank` operations on four accounts (open, deposit, withdraw
and transfers, many of them refused for want of funds, so results depend on the order). They
follow what the answer says: a redirect to the leader, a retry after `retry_ms`, or another
member after a silence (the same client and sequence number: the hosted sessions apply a command
once). Faults, during the safety phase, never take out more than a minority at once: `crash` (a
member stops; `restart` brings it back from its disk a little later), `partition` (a minority
cut off, then healed), `delay` (slower, spiky links), `total` (every member crashes and restarts
from its disk). Then the liveness phase: every link heals, every member restarts, and the
clients must get every command answered.

Checked:

- **agreement** (`paxos.agreement`): no two members apply different values at one slot (after
  every applied value);
- **durability** (`paxos.durability`): at the end, every member's state holds every write a
  client was told succeeded (and the members' states are equal: `paxos.equal`);
- **replay** (`paxos.replay`): every member's state is the state of the values chosen, applied in
  slot order to a fresh machine, and every command a client was told succeeded is among them,
  with the very result the client was given (`paxos.exactly_once`: applied once, in that order);
- **conservation** (`bank.conservation`, the bank workload): at every member the balances sum to
  the deposits less the withdrawals, and none is negative;
- **liveness** (`paxos.live`): every command submitted is answered by the end.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from smr.core.layout import SubgroupSpec
from smr.core.multipaxos import P1b, PaxosNode
from smr.runtime import protocol
from smr.runtime.config import ClusterConfig, MemberConfig, SubgroupConfig
from smr.runtime.hosted import ENVELOPE, ENVELOPE_MAGIC, Hosted
from smr.runtime.node import NodeExit
from smr.runtime.paxos_node import SESSION_RESULTS_MAX, PaxosMember, command_of
from smr.sim.disk import FaultyDisk
from smr.sim.network import Network
from smr.statemachines import Bank, KVStore
from smr.transport.sim import SimTransport, SimWorld

MS = 1_000_000
PAXOS_FAULTS = ("crash", "restart", "partition", "delay", "total")
PAXOS_BUGS = ("quorum-of-one", "no-adoption")
PAXOS_WORKLOADS = ("kv", "bank")
ACCOUNTS = ("alice", "bob", "carol", "dave")
DATA_DIR = "/sim"
TICK_NS = 5 * MS  # each member's loop runs at least this often (its heartbeats and timeouts)
CLIENT_SILENCE_NS = 300 * MS  # a client asks another member after this long without an answer


class PaxosViolation(Exception):
    def __init__(self, invariant: str, detail: str):
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@dataclass(frozen=True)
class PaxosSimConfig:
    nodes: int = 3
    seed: int = 1
    faults: frozenset[str] = frozenset()
    safety_ns: int = 1500 * MS
    liveness_ns: int = 3000 * MS
    clients: int = 4
    submit_interval_ns_mean: int = 3 * MS
    fault_interval_ns_mean: int = 150 * MS
    heal_ns_max: int = 400 * MS
    restart_ns_max: int = 400 * MS
    bugs: frozenset[str] = frozenset()  # rules broken on purpose (`PAXOS_BUGS`)
    workload: str = "kv"

    def __post_init__(self) -> None:
        assert self.nodes >= 1
        assert self.workload in PAXOS_WORKLOADS, f"unknown workload {self.workload!r}"
        unknown = set(self.faults) - set(PAXOS_FAULTS)
        assert not unknown, f"unknown faults {sorted(unknown)}"
        assert not set(self.bugs) - set(PAXOS_BUGS), f"unknown bugs {sorted(self.bugs)}"

    def command(self) -> str:
        parts = [f"smr sim --protocol multipaxos --nodes {self.nodes} --seeds {self.seed}"]
        if self.workload != "kv":
            parts.append(f"--workload {self.workload}")
        if self.faults:
            parts.append("--faults " + ",".join(sorted(self.faults)))
        if self.bugs:
            parts.append("--inject-bug " + ",".join(sorted(self.bugs)))
        return " ".join(parts)


class _QuorumOfOne(PaxosNode):
    """Broken: any one process is a quorum."""

    def is_quorum(self, count: int) -> bool:
        return count >= 1


class _NoAdoption(PaxosNode):
    """Broken: acceptors report no votes in their 1b, so a new leader adopts nothing."""

    def _report(self, ballot: int, from_slot: int) -> P1b:
        return P1b(ballot, self.vote_floor, ())


_BUG_CLASSES: dict[str, type[PaxosNode]] = {
    "quorum-of-one": _QuorumOfOne,
    "no-adoption": _NoAdoption,
}


@dataclass
class _Member:
    id: int
    disk: FaultyDisk = field(default_factory=FaultyDisk)
    proc: PaxosMember | None = None
    alive: bool = False
    process: int = 0  # counts the member's processes: events of an ended one are stale
    tick_at_ns: int = -1


@dataclass
class _Command:
    client: int
    seq: int
    key: str  # kv: the key written ("" in the bank)
    value: bytes  # kv: the value written
    payload: bytes  # the operation, encoded
    member: int  # where it was sent last
    sent_ns: int
    request: int  # the request id of the last send
    done: bool = False


@dataclass(frozen=True)
class PaxosSimResult:
    seed: int
    digest: str
    steps: int
    end_ns: int
    violation: PaxosViolation | None
    stats: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.violation is None


class _Port:
    """A simulated member's client port: answers go to the run's clients at once."""

    def __init__(self, sim: PaxosSimulation, member: _Member, process: int):
        self.sim = sim
        self.member = member
        self.process = process

    def attach(self, transport: Any) -> None:
        pass

    def respond(self, conn_id: int, response: protocol.Response) -> None:
        if self.member.process == self.process and self.member.alive:
            self.sim._answered(self.member.id, conn_id, response)

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        pass


class PaxosSimulation:
    def __init__(self, config: PaxosSimConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.now_ns = 0
        self.steps = 0
        self._heap: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        delayed = "delay" in config.faults
        self.network = Network(
            self.rng,
            delay_ns_max=3 * MS if delayed else 200_000,
            spike_probability=0.02 if delayed else 0.0,
        )
        self.world = SimWorld(network=self.network, on_due=self._on_due)
        ids = tuple(range(1, config.nodes + 1))
        self.machine_type: type[KVStore] | type[Bank] = (
            Bank if config.workload == "bank" else KVStore
        )
        name = self.machine_type.__name__
        spec = SubgroupSpec(name, mode="durable")
        self.cluster = ClusterConfig(
            path="<paxos-sim>",
            name="sim",
            secret=bytes(32),
            transport="sim",
            data_dir=DATA_DIR,
            sync_policy="batch",
            founders=ids,
            rejoin=True,
            members={m: MemberConfig(m, "127.0.0.1", 20_000 + m, 30_000 + m) for m in ids},
            subgroups=(SubgroupConfig(f"smr.statemachines:{name}", self.machine_type, spec),),
            protocol="multipaxos",
            heartbeat_ms=5.0,
            suspect_ms=40.0,
            peer_failed_ms=200.0,
            segment_bytes_max=64 << 10,
        )
        self.members = {m: _Member(m) for m in ids}
        self._paxos_class = PaxosNode
        for bug in sorted(config.bugs):
            self._paxos_class = _BUG_CLASSES[bug]
        self.chosen: dict[int, bytes] = {}  # slot -> digest of the value first applied there
        self.values: dict[int, bytes | None] = {}  # slot -> the value first applied there
        # (client, seq) -> the result a client was told, for commands answered ok
        self.results: dict[tuple[int, int], bytes] = {}
        self.commands: dict[tuple[int, int], _Command] = {}
        self.acked: dict[str, bytes] = {}  # key -> value, for writes a client was told applied
        self._requests: dict[int, tuple[int, int]] = {}  # request id -> (client, seq)
        self._next_request = 0
        self._next_seq = [0] * (config.clients + 1)
        self._isolated: set[int] = set()
        self._digest = hashlib.sha256()
        self.in_liveness = False
        self.stats: dict[str, int] = {
            "commands": 0,
            "acked": 0,
            "redirects": 0,
            "resends": 0,
            "crashes": 0,
            "restarts": 0,
            "partitions": 0,
            "totals": 0,
            "applied": 0,
        }
        for m in ids:
            self._spawn(self.members[m])

    # -- members --------------------------------------------------------------------------------

    def _spawn(self, member: _Member) -> None:
        member.process += 1
        member.alive = True
        member.tick_at_ns = -1
        m = member.id
        transport = SimTransport(
            m, self.cluster.addresses(), self.cluster.transport_config(), world=self.world
        )
        member.proc = PaxosMember(
            self.cluster,
            m,
            transport=transport,
            log=lambda event, **fields: None,
            fs=member.disk,
            clock_ns=lambda: self.now_ns,
            wall_ns=lambda: self.now_ns,
            clients=_Port(self, member, member.process),
            observe=lambda slot, value, m=m: self._applied(m, slot, value),
            paxos_class=self._paxos_class,
        )
        member.proc.start()
        self._step(member)

    def _applied(self, member: int, slot: int, value: bytes | None) -> None:
        self.stats["applied"] += 1
        d = hashlib.sha256(b"noop" if value is None else value).digest()[:8]
        first = self.chosen.setdefault(slot, d)
        self.values.setdefault(slot, None if value is None else bytes(value))
        self._digest.update(repr((member, slot, d)).encode())
        if first != d:
            raise PaxosViolation(
                "paxos.agreement", f"member {member} applied another value at slot {slot}"
            )

    def _step(self, member: _Member) -> None:
        proc = member.proc
        assert proc is not None and member.alive
        self.steps += 1
        try:
            proc.step()
        except NodeExit as e:
            raise PaxosViolation("paxos.exit", f"member {member.id} stopped: {e}") from e
        at = self.now_ns + TICK_NS
        if member.tick_at_ns < self.now_ns or member.tick_at_ns > at:
            member.tick_at_ns = at
            self._at(at, "tick", (member.id, member.process))

    def _crash(self, member: _Member) -> None:
        assert member.proc is not None
        member.alive = False
        member.proc.transport.close()
        member.disk.crash(self.rng)
        self.stats["crashes"] += 1

    def _restart(self, member: _Member) -> None:
        if member.alive:
            return
        self.stats["restarts"] += 1
        self._spawn(member)

    # -- scheduling -----------------------------------------------------------------------------

    def _at(self, time_ns: int, kind: str, arg: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_ns, self._seq, kind, arg))

    def _on_due(self, time_ns: int, member: int) -> None:
        m = self.members.get(member)
        if m is not None:
            self._at(max(time_ns, self.now_ns), "due", (member, m.process))

    def _current(self, arg: tuple[int, int]) -> _Member | None:
        member, process = arg
        m = self.members[member]
        return m if m.alive and m.process == process else None

    def run(self) -> PaxosSimResult:
        cfg = self.config
        violation = None
        end = cfg.safety_ns + cfg.liveness_ns
        for c in range(1, cfg.clients + 1):
            self._at(self.rng.randint(0, 10 * MS), "submit", c)
        if set(cfg.faults) - {"delay", "restart"}:
            self._at(self._gap(cfg.fault_interval_ns_mean), "fault", None)
        self._at(cfg.safety_ns, "liveness", None)
        try:
            while self._heap:
                time_ns, _, kind, arg = heapq.heappop(self._heap)
                if time_ns > end:
                    break
                self.now_ns = max(self.now_ns, time_ns)
                self.world.advance_to(self.now_ns)
                self._event(kind, arg)
            self.now_ns = end
            self._check_end()
        except PaxosViolation as v:
            violation = v
        return PaxosSimResult(
            cfg.seed, self._digest.hexdigest()[:16], self.steps, self.now_ns, violation, self.stats
        )

    def _gap(self, mean_ns: int) -> int:
        return 1 + int(self.rng.expovariate(1.0 / mean_ns))

    def _event(self, kind: str, arg: Any) -> None:
        if kind in ("due", "tick"):
            member = self._current(arg)
            if member is not None:
                self._step(member)
        elif kind == "submit":
            if self.now_ns < self.config.safety_ns + self.config.liveness_ns // 2:
                self._submit(arg)
                self._at(
                    self.now_ns + self._gap(self.config.submit_interval_ns_mean), "submit", arg
                )
        elif kind == "resend":
            self._resend(*arg)
        elif kind == "fault":
            if not self.in_liveness:
                self._fault()
                self._at(self.now_ns + self._gap(self.config.fault_interval_ns_mean), "fault", None)
        elif kind == "restart":
            self._restart(self.members[arg])
        elif kind == "heal":
            self._heal()
        elif kind == "liveness":
            self._liveness()
        else:
            raise AssertionError(kind)

    # -- clients --------------------------------------------------------------------------------

    def _submit(self, client: int) -> None:
        self._next_seq[client] += 1
        seq = self._next_seq[client]
        if self.config.workload == "bank":
            key, value, payload = "", b"", self._bank_operation()
        else:
            key = f"c{client}-{seq}"
            value = b"%d" % self.rng.getrandbits(32)
            payload = KVStore.encode_command("put", key, value)
        target = self.rng.choice(sorted(self.members))
        cmd = _Command(client, seq, key, value, payload, target, self.now_ns, 0)
        self.commands[(client, seq)] = cmd
        self.stats["commands"] += 1
        self._send(cmd, target)

    def _send(self, cmd: _Command, member: int) -> None:
        self._next_request += 1
        rid = self._next_request
        cmd.request, cmd.member, cmd.sent_ns = rid, member, self.now_ns
        self._requests[rid] = (cmd.client, cmd.seq)
        self._at(self.now_ns + CLIENT_SILENCE_NS, "resend", (cmd.client, cmd.seq, rid, None))
        m = self.members[member]
        if not m.alive or m.proc is None:
            return  # a connection refused: the silence timer sends it elsewhere
        request = protocol.Command(
            rid, 0, 0, cmd.client, cmd.seq, cmd.payload, protocol.REPLIES_ONE
        )
        m.proc._on_request(rid, request)
        self._step(m)

    def _bank_operation(self) -> bytes:
        a, b = self.rng.sample(ACCOUNTS, 2)
        r = self.rng.random()
        if r < 0.15:
            return Bank.encode_command("open_account", a)
        if r < 0.35:
            return Bank.encode_command("deposit", a, self.rng.randint(1, 100))
        if r < 0.45:
            return Bank.encode_command("withdraw", a, self.rng.randint(1, 100))
        return Bank.encode_command("transfer", a, b, self.rng.randint(1, 150))

    def _resend(self, client: int, seq: int, rid: int, to: int | None) -> None:
        cmd = self.commands[(client, seq)]
        if cmd.done or cmd.request != rid:
            return  # answered, or sent again since
        self.stats["resends"] += 1
        if to is None:
            to = self.rng.choice([m for m in sorted(self.members) if m != cmd.member] or [to])
        self._send(cmd, to if to is not None else cmd.member)

    def _answered(self, member: int, rid: int, response: protocol.Response) -> None:
        key = self._requests.pop(rid, None)
        if key is None:
            return
        cmd = self.commands[key]
        if cmd.done or cmd.request != rid:
            return
        if response.ok:
            cmd.done = True
            if cmd.key:
                self.acked[cmd.key] = cmd.value
            self.results[(cmd.client, cmd.seq)] = response.results.get(member, b"")
            self.stats["acked"] += 1
            return
        if response.redirect:
            self.stats["redirects"] += 1
            to = response.redirect[0]
            self._at(self.now_ns + MS // 10, "resend", (cmd.client, cmd.seq, rid, to))
        else:
            delay = max(response.retry_ms, 1) * MS
            self._at(self.now_ns + delay, "resend", (cmd.client, cmd.seq, rid, member))

    # -- faults ---------------------------------------------------------------------------------

    def _down(self) -> set[int]:
        return {m for m, x in self.members.items() if not x.alive} | self._isolated

    def _fault(self) -> None:
        kinds = sorted(set(self.config.faults) - {"delay", "restart"})
        if not kinds:
            return
        kind = self.rng.choice(kinds)
        n = self.config.nodes
        spare = (n - 1) // 2 - len(self._down())
        restarts = "restart" in self.config.faults or kind == "total"
        if kind == "crash" and spare >= 1:
            victim = self.rng.choice([m for m in sorted(self.members) if m not in self._down()])
            self._crash(self.members[victim])
            if restarts:
                self._at(
                    self.now_ns + self.rng.randint(MS, self.config.restart_ns_max),
                    "restart",
                    victim,
                )
        elif kind == "partition" and spare >= 1 and not self._isolated:
            side = self.rng.sample(
                [m for m in sorted(self.members) if m not in self._down()],
                self.rng.randint(1, spare),
            )
            self._isolated = set(side)
            self.stats["partitions"] += 1
            for a in side:
                for b in self.members:
                    if b not in side:
                        self.world.set_link(a, b, False)
                        self.world.set_link(b, a, False)
            self._at(self.now_ns + self.rng.randint(MS, self.config.heal_ns_max), "heal", None)
        elif kind == "total" and not self._down():
            self.stats["totals"] += 1
            for m in sorted(self.members):
                self._crash(self.members[m])
                self._at(
                    self.now_ns + self.rng.randint(MS, self.config.restart_ns_max), "restart", m
                )

    def _heal(self) -> None:
        for a in self.members:
            for b in self.members:
                if a != b:
                    self.world.set_link(a, b, True)
        self._isolated.clear()

    def _liveness(self) -> None:
        self.in_liveness = True
        self._heal()
        for m in sorted(self.members):
            self._restart(self.members[m])

    # -- the end --------------------------------------------------------------------------------

    def _check_end(self) -> None:
        open_ = [c for c in self.commands.values() if not c.done]
        if open_:
            c = open_[0]
            raise PaxosViolation(
                "paxos.live",
                f"{len(open_)} commands never answered after the faults stopped (client "
                f"{c.client} seq {c.seq}, last sent to member {c.member})",
            )
        states = {}
        for m, member in sorted(self.members.items()):
            assert member.proc is not None
            machine = member.proc.hosted.machine
            if isinstance(machine, Bank):
                if not machine.check_conservation():
                    raise PaxosViolation(
                        "bank.conservation",
                        f"member {m}: the balances are not deposits less withdrawals",
                    )
                states[m] = machine.snapshot()
                continue
            assert isinstance(machine, KVStore)
            data = dict(machine.data)
            missing = [k for k, v in self.acked.items() if data.get(k) != v]
            if missing:
                raise PaxosViolation(
                    "paxos.durability",
                    f"member {m} lacks {len(missing)} acknowledged writes (e.g. {missing[0]})",
                )
            states[m] = data
        self._check_replay()
        first = next(iter(states.values()))
        for m, data in states.items():
            if data != first:
                raise PaxosViolation("paxos.equal", f"member {m}'s state differs from member 1's")

    def _check_replay(self) -> None:
        """The values chosen, applied in slot order to a fresh machine, give every member's
        state, and every command answered ok is among them with the result its client got."""
        slots = sorted(self.values)
        if slots != list(range(len(slots))):
            raise PaxosViolation(
                "paxos.replay", "a slot below the last one applied was never applied"
            )
        reference = Hosted(self.machine_type(), session_results_max=SESSION_RESULTS_MAX)
        first: dict[tuple[int, int], bytes] = {}  # (client, seq) -> its result where first applied
        for slot in slots:
            value = self.values[slot]
            command = None if value is None else command_of(value)
            if command is None:
                continue
            ts, payload = command
            result = reference.apply(payload, slot + 1, ts)
            if payload[:1] == bytes([ENVELOPE_MAGIC]) and len(payload) >= ENVELOPE.size:
                _, client, seq = ENVELOPE.unpack_from(payload)
                first.setdefault((client, seq), result)
        for key, told in sorted(self.results.items()):
            if key not in first:
                raise PaxosViolation(
                    "paxos.exactly_once",
                    f"client {key[0]} seq {key[1]} was answered but never chosen",
                )
            if first[key] != told:
                raise PaxosViolation(
                    "paxos.exactly_once",
                    f"client {key[0]} seq {key[1]} was told {told!r}, but applied in slot order it "
                    f"gives {first[key]!r}",
                )
        expected = reference.machine.snapshot()
        for m, member in sorted(self.members.items()):
            assert member.proc is not None
            if member.proc.hosted.machine.snapshot() != expected:
                raise PaxosViolation(
                    "paxos.replay",
                    f"member {m}'s state is not the chosen values applied in slot order",
                )


def run_paxos_seed(config: PaxosSimConfig) -> PaxosSimResult:
    return PaxosSimulation(config).run()
