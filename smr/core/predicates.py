"""Predicates: named (condition, trigger) pairs declared as data, evaluated to a fixed point.

This module owns evaluation order and the evaluation loop. A protocol declares its predicates as a
tuple, in the order they must be evaluated (ordering is data, not a comment like Derecho's "must be
after num_received!"). After every input the replica calls `PredicateSet.evaluate(ctx)`, which runs
rounds over the table until a round in which no predicate fires, bounded by `rounds_max`.

Kinds:
* ONE_TIME: fires the first time its condition holds, then is retired.
* RECURRENT: fires every round its condition holds. Its trigger must make progress that eventually
  falsifies the condition (delivering the stable messages makes "something is stable" false).
* TRANSITION: fires on a false-to-true edge of its condition, once per edge.

Triggers return actions (or None): their effects (the columns to push, the entries to deliver,
the next view to install) as values, for the caller to carry out; they never perform I/O and
never call back into what evaluates them. Because the columns they read are
monotone, a condition over peers' rows that became true stays true (knowledge only grows); this is
what makes the fixed point well defined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

Ctx = TypeVar("Ctx")


class Kind(Enum):
    ONE_TIME = "one_time"
    RECURRENT = "recurrent"
    TRANSITION = "transition"


@dataclass(frozen=True, slots=True)
class Predicate(Generic[Ctx]):
    name: str
    kind: Kind
    condition: Callable[[Ctx], bool]
    trigger: Callable[[Ctx], Iterable[Any] | None]


class PredicateSet(Generic[Ctx]):
    """An ordered set of predicates with the state their kinds need (retired, last value)."""

    __slots__ = (
        "_final",
        "_last",
        "_plan",
        "_retired",
        "fired_count",
        "predicates",
        "rounds_max",
        "stopped",
    )

    def __init__(
        self,
        predicates: Sequence[Predicate[Ctx]],
        *,
        rounds_max: int = 32,
        final: tuple[type, ...] = (),
    ):
        """`final`: kinds of action that end the evaluation (and stop the set) when a trigger
        returns one as its last: what the triggers read is about to be replaced."""
        names = [p.name for p in predicates]
        assert len(set(names)) == len(names), f"duplicate predicate names in {names}"
        assert rounds_max >= 1
        self.predicates = tuple(predicates)
        self._plan = tuple(
            (p.name, p.kind is Kind.ONE_TIME, p.kind is Kind.TRANSITION, p.condition, p.trigger)
            for p in self.predicates
        )
        self.rounds_max = rounds_max
        self._retired: set[str] = set()
        self._last: dict[str, bool] = {}
        self.fired_count: dict[str, int] = dict.fromkeys(names, 0)
        self._final = final
        self.stopped = False

    def stop(self) -> None:
        """Stop evaluating, even in the middle of a round: the state these predicates read is
        gone (the epoch ended, or the member halted)."""
        self.stopped = True

    def evaluate(self, ctx: Ctx, actions: list[Any] | None = None) -> list[Any]:
        """Run rounds until none fires; return the actions the triggers produced, in order,
        appended to `actions` when given (so that a caller still has those of the triggers that
        fired before one raised)."""
        if actions is None:
            actions = []
        if self.stopped:
            return actions
        retired, last, fired_count = self._retired, self._last, self.fired_count
        for _ in range(self.rounds_max):
            fired = False
            # the plan holds each predicate's fields as locals: this loop runs a few times per
            # input on the hot path, and attribute and enum lookups were a third of its cost
            for name, once, edge, condition, trigger in self._plan:
                if once and name in retired:
                    continue
                holds = condition(ctx)
                if edge:
                    was = last.get(name, False)
                    last[name] = holds
                    if not holds or was:
                        continue
                elif not holds:
                    continue
                if once:
                    retired.add(name)
                fired = True
                fired_count[name] += 1
                produced = trigger(ctx)
                if produced:
                    actions.extend(produced)
                    if type(actions[-1]) in self._final:
                        self.stopped = True
                        return actions
                if self.stopped:  # only a trigger can stop the set
                    return actions
            if not fired:
                return actions
        raise AssertionError(
            f"predicates did not reach a fixed point in {self.rounds_max} rounds: "
            "a RECURRENT trigger is not making progress"
        )
