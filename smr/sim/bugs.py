"""Deliberate bugs the simulator can inject, to show that its checkers catch what they claim to.

This module owns replica variants that break a rule on purpose; they are selected with
`SimConfig.bugs` (`smr sim --inject-bug NAME`) and never used otherwise.

* `counter-down`: after its 5th heartbeat, member 1 moves its heartbeat counter back by 3 by
  writing its row's memory directly (bypassing the table's own assertion) and pushes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from smr.core.replica import Replica


class CounterDownReplica(Replica):
    def tick(self, now_ns: int) -> None:
        super().tick(now_ns)
        t = self.table
        hb = t.get(t.my_row, "heartbeat")
        if hb == 5 and not getattr(self, "_bug_done", False):
            self._bug_done = True
            t.words[t.my_row * t.row_words + t.layout["heartbeat"].word] = hb - 3
            self.push_all(("heartbeat",))


def replica_class_for(bugs: frozenset[str], me: int, founders: Sequence[int]) -> type[Replica]:
    """The core's class for member `me`'s Node in a run with `bugs`."""
    if "counter-down" in bugs and me == founders[0]:
        return CounterDownReplica
    return Replica
