"""Invariant checkers for the simulator: the table's rules and the first protocol's guarantees.

This module owns the checks that run after every simulated step. Each checker raises
`Violation(invariant, detail)`; the harness stops the run and reports it with the reproducing
command. The table's invariants:

* `table.monotone`: no monotone column of any copy of the table ever decreases (`Table._check`).
* `table.own-row`: a member only ever pushes bytes of its own row, exactly as they are.
* `table.applied`: a write that arrives on a link that stayed up is applied whole; once the run is
  quiet, every member's copy of a peer's row equals that peer's own row.

The first protocol (`heartbeat_frontier`):

* `frontier.stable`: a member reports the frontier reached `k` only when every member's own
  counter really is at least `k` (never before everyone got there).
* `frontier.live`: once faults stop, every live member's frontier rises past where the fastest
  member's counter stood when they stopped.
"""

from __future__ import annotations

from collections import defaultdict

from smr.core.multicast import SEQ_MAX, Completed
from smr.core.ready import Ready
from smr.core.replica import FrontierReached
from smr.sim.harness import Checker, SimNode, Simulation, Violation


class TableMonotone(Checker):
    name = "table.monotone"

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        targets = sim.live_nodes() if node is None else [node]
        for n in targets:
            try:
                n.replica.table._check()
            except AssertionError as e:
                raise Violation(self.name, f"at member {n.id}: {e}") from None


class TableOwnRow(Checker):
    """Pushed bytes are the member's own row: the last push of each byte in a `Ready` equals the
    row as it stands, and an earlier push of a monotone word is never above its current value
    (a protocol may push a column, raise it and push again in one step)."""

    name = "table.own-row"

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        table = node.replica.table
        row = table.row_bytes_of(table.my_row)
        words = memoryview(row).cast("q")
        covered: set[int] = set()
        for push in reversed(ready.writes):
            if node.id in push.targets:
                raise Violation(self.name, f"member {node.id} pushed a write to itself")
            data = memoryview(push.data + bytes(-len(push.data) % 8)).cast("q")
            first = push.offset // 8
            for i, value in enumerate(data):
                w = first + i
                if w not in covered:
                    covered.add(w)
                    if value != words[w]:
                        raise Violation(
                            self.name,
                            f"member {node.id} pushed word {w} of its row as {value}, "
                            f"but its row holds {words[w]}",
                        )
                else:
                    placed = table.layout.column_at(w * 8)
                    if placed is not None and placed.column.monotone and value > words[w]:
                        raise Violation(
                            self.name,
                            f"member {node.id} pushed {placed.column.name} = {value}, above "
                            f"the {words[w]} its row now holds: the column went down",
                        )


class TableApplied(Checker):
    name = "table.applied"

    def after_write(
        self, sim: Simulation, node: SimNode, source: int, offset: int, data: bytes
    ) -> None:
        table = node.replica.table
        row = table.row_bytes_of(table.members.index(source))
        if row[offset : offset + len(data)] != data:
            raise Violation(self.name, f"write from {source} at {offset} not applied at {node.id}")

    def at_end(self, sim: Simulation) -> None:
        for (a, b), link in sim.network.links.items():
            na, nb = sim.nodes[a], sim.nodes[b]
            if not (link.up and na.alive and nb.alive) or link.in_flight:
                continue
            ta, tb = na.replica.table, nb.replica.table
            if ta.row_bytes_of(ta.my_row) != tb.row_bytes_of(tb.members.index(a)):
                raise Violation(
                    self.name, f"after the run, member {b}'s copy of member {a}'s row is stale"
                )


class FrontierStable(Checker):
    name = "frontier.stable"

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.live_from = 0

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        for event in ready.events:
            if not isinstance(event, FrontierReached):
                continue
            prev = self.last.get(node.id, 0)
            if event.value <= prev:
                raise Violation(
                    self.name, f"member {node.id} frontier went {prev} -> {event.value}"
                )
            self.last[node.id] = event.value
            for m, other in sim.nodes.items():
                t = other.replica.table
                own = t.get(t.my_row, "heartbeat")
                if own < event.value:
                    raise Violation(
                        self.name,
                        f"member {node.id} reported frontier {event.value} while member {m}'s "
                        f"counter was {own}",
                    )

    def at_liveness_start(self, sim: Simulation) -> None:
        self.live_from = max(
            n.replica.table.get(n.replica.table.my_row, "heartbeat") for n in sim.live_nodes()
        )

    def at_end(self, sim: Simulation) -> None:
        if sim.stats["crashes"]:
            return  # a crash-stopped member holds the minimum down until a view change removes it
        for n in sim.live_nodes():
            if self.last.get(n.id, 0) <= self.live_from:
                raise Violation(
                    "frontier.live",
                    f"member {n.id} stuck at frontier {self.last.get(n.id, 0)} after faults "
                    f"stopped (counters were at {self.live_from})",
                )


class Multicast(Checker):
    """The ordered multicast's guarantees, checked against the simulator's global knowledge.

    * `multicast.total-order`: for every two members of a shard, one delivered sequence is a prefix
      of the other (ordered and durable shards).
    * `multicast.fifo`: the c-th message a member delivers from a sender is the sender's c-th
      submission to that shard: per-sender FIFO, no duplication, no creation, no gaps.
    * `multicast.stability`: a message is delivered only once every shard member received it.
    * `multicast.answered`: a submitter is answered in `ordered` mode only after every member
      received the message, in `durable` mode only after every member persisted it.
    * `multicast.frontier`: each member's view of a shard's global persistence frontier never
      falls and is never above any member's own `persisted` count.
    * `state.digest`: members that delivered up to the same version have the same state.
    * `workload`: the workload's own invariant (the bank conserves money).
    * `multicast.live`: once faults stop, every submission is answered and every member of a shard
      delivered the same entries, ending in the same state.
    """

    name = "multicast"

    def attach(self, sim: Simulation) -> None:
        self.reference: dict[int, list[tuple[int, int, bytes]]] = defaultdict(list)
        self.cursor: dict[tuple[int, int], int] = defaultdict(int)
        self.from_sender: dict[tuple[int, int, int], int] = defaultdict(int)
        self.frontier: dict[tuple[int, int], int] = defaultdict(int)
        self.digests: dict[tuple[int, int], tuple[int, str]] = {}

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        for d in ready.deliveries:
            st = node.replica.stream(d.subgroup, d.shard)
            g = st.g
            seq = d.version & SEQ_MAX
            key = (node.id, g, d.sender)
            c = self.from_sender[key]
            expected = sim.nodes[d.sender].submitted[g]
            if c >= len(expected) or expected[c][1] != d.payload:
                raise Violation(
                    "multicast.fifo",
                    f"member {node.id} delivered, as message {c} of sender {d.sender} in shard "
                    f"{g}, something that sender did not submit as its message {c}",
                )
            self.from_sender[key] = c + 1
            if st.mode == "raw":
                continue
            ref = self.reference[g]
            pos = self.cursor[(node.id, g)]
            entry = (d.version, d.sender, d.payload)
            if pos < len(ref):
                if ref[pos] != entry:
                    raise Violation(
                        "multicast.total-order",
                        f"member {node.id} delivered version {d.version:#x} from {d.sender} at "
                        f"position {pos} of shard {g}; another member delivered version "
                        f"{ref[pos][0]:#x} from {ref[pos][1]} there",
                    )
            else:
                ref.append(entry)
            self.cursor[(node.id, g)] = pos + 1
            for m in st.shard.members:
                other = sim.nodes[m].replica.streams[g]
                if other._mine(other.w_seq) <= seq:
                    raise Violation(
                        "multicast.stability",
                        f"member {node.id} delivered seq {seq} of shard {g} before member {m} "
                        "received it",
                    )
        for event in ready.events:
            if not isinstance(event, Completed):
                continue
            st = node.replica.stream(event.subgroup, event.shard)
            seq = event.version & SEQ_MAX
            word = st.w_persisted if st.mode == "durable" else st.w_seq
            did = "persisted" if st.mode == "durable" else "received"
            for m in st.shard.members:
                other = sim.nodes[m].replica.streams[st.g]
                if st.mode != "raw" and other._mine(word) <= seq:
                    raise Violation(
                        "multicast.answered",
                        f"member {node.id} was answered for seq {seq} of {st.mode} shard {st.g} "
                        f"before member {m} {did} it",
                    )

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        if node is None:
            return
        for g, st in node.replica.streams.items():
            if st.mode == "durable":
                f = st.persisted_frontier()
                if f < self.frontier[(node.id, g)]:
                    raise Violation(
                        "multicast.frontier",
                        f"member {node.id}'s frontier of shard "
                        f"{g} fell from {self.frontier[(node.id, g)]} to {f}",
                    )
                self.frontier[(node.id, g)] = f
                for m in st.shard.members:
                    other = sim.nodes[m].replica.streams[g]
                    if f > other._mine(other.w_persisted):
                        raise Violation(
                            "multicast.frontier",
                            f"member {node.id} sees shard {g}'s "
                            f"frontier at {f}, above member {m}'s own persisted count",
                        )
        for (g, version), digest in node.digests.items():
            seen = self.digests.get((g, version))
            if seen is None:
                self.digests[(g, version)] = (node.id, digest)
            elif seen[1] != digest:
                raise Violation(
                    "state.digest",
                    f"members {seen[0]} and {node.id} have different "
                    f"state in shard {g} at version {version:#x}",
                )
            machine = node.machines[g]
            problem = sim.workload.check_machine(node.replica.streams[g].subgroup, machine)
            if problem:
                raise Violation("workload", f"member {node.id}, shard {g}: {problem}")
        node.digests.clear()

    def at_end(self, sim: Simulation) -> None:
        if sim.stats["crashes"]:
            return  # a crash-stopped member stalls its shards until a view change removes it
        for node in sim.live_nodes():
            if node.open_tickets:
                ticket, g = next(iter(node.open_tickets.items()))
                raise Violation(
                    "multicast.live",
                    f"member {node.id}'s submission {ticket} to "
                    f"shard {g} was never answered after faults stopped",
                )
        finals: dict[int, tuple[int, str]] = {}
        for node in sim.live_nodes():
            for g, machine in node.machines.items():
                digest = machine.digest()
                if g in finals and finals[g][1] != digest:
                    raise Violation(
                        "multicast.live",
                        f"members {finals[g][0]} and {node.id} end "
                        f"in different states in shard {g}",
                    )
                finals[g] = (node.id, digest)


def default_checkers() -> list[Checker]:
    return [TableMonotone(), TableOwnRow(), TableApplied(), FrontierStable(), Multicast()]
