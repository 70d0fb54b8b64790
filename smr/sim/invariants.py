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


def default_checkers() -> list[Checker]:
    return [TableMonotone(), TableOwnRow(), TableApplied(), FrontierStable()]
