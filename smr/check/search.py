"""The linearizability search: is there an order of a history's operations that respects real
time (an operation that returned before another was called comes first) and that the model's
sequential specification accepts, output by output?

This module owns the algorithm and its result. It is Wing and Gong's search with Lowe's
memoisation, the shape Porcupine uses: the calls and returns sit in one list in time order; the
search walks it from the front, tries to linearize each call it meets (the model accepts its
output; the operation leaves the list), and backs up when it meets a return, since that
operation can no longer come later than what is already placed. A cache of (linearized set,
model state) pairs cuts every branch that reaches a configuration already explored: the same
operations placed and the same state mean the same future. The checker runs it on each
partition the model allows (`Model.partition`), which keeps the sets small.

Unknown outcomes follow Knossos and Porcupine: such an operation returns at infinity (it stays
concurrent with everything after its call) with an output that matches anything; the search is
done once every `ok` operation is placed, so an unknown one may also never take effect. `fail`
operations are dropped, and so are unknown ones that change nothing (`Model.readonly`).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from smr.check.history import FAIL, OK, UNKNOWN, History, HistoryError, Operation
from smr.check.models import ANY, Model, model_named

Outcome = Literal["ok", "violation", "unknown"]

# How many search steps run between two looks at the clock (a look costs more than a step).
_DEADLINE_STRIDE = 1 << 12


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """The verdict on one partition (one key, or one group of keys, of the history).

    `ok` is True (linearizable), False (no linearization exists) or None (the search gave up
    at the deadline). `linearization` is, when `ok`, an order of the operations that works
    (unknown operations left out are the ones that never took effect); otherwise the longest
    order found, as far as any branch of the search got. There `blocked` is the operation with
    the earliest return that no branch could place after it, `candidates` the operations that
    could have come next (each was tried, and the model refused it or it led nowhere new), and
    `states` the model's state after each operation of `linearization` (`Model.describe`).
    """

    key: Hashable
    ok: bool | None
    operations: tuple[Operation, ...]
    linearization: tuple[int, ...]
    blocked: int | None = None
    candidates: tuple[int, ...] = ()
    states: tuple[str, ...] = ()
    steps: int = 0

    def describe(self, ops_by_id: dict[int, Operation] | None = None) -> str:
        """A few lines for a report: the partition, the verdict, and for a violation the
        furthest linearization and the operation it could not extend to."""
        by_id = ops_by_id or {op.id: op for op in self.operations}
        where = "the whole history" if self.key is None else f"key {self.key!r}"
        if self.ok:
            return f"{where}: linearizable ({len(self.operations)} operations)"
        if self.ok is None:
            return f"{where}: gave up after {self.steps} steps"
        lines = [
            f"{where}: not linearizable ({len(self.operations)} operations); the longest "
            f"linearization found places {len(self.linearization)}:"
        ]
        shown = list(zip(self.linearization, self.states, strict=True))
        if len(shown) > 8:
            lines.append(f"  ... {len(shown) - 8} earlier")
            shown = shown[-8:]
        for op_id, state in shown:
            op = by_id[op_id]
            lines.append(f"  op {op_id} {op.process}: {op.describe()}   => {state}")
        if self.blocked is not None:
            op = by_id[self.blocked]
            lines.append(f"  then op {op.id} {op.process}: {op.describe()} cannot be placed")
        others = [c for c in self.candidates if c != self.blocked]
        if others:
            lines.append(
                "  (nor any of the concurrent "
                + ", ".join(f"op {c} {by_id[c].describe()}" for c in others)
                + ")"
            )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a history: `outcome` is "ok", "violation" or "unknown" (the search gave
    up at the deadline before it found a violation); `partitions` holds one `PartitionResult`
    per part checked."""

    model: str
    outcome: Outcome
    partitions: tuple[PartitionResult, ...]
    operations: int
    dropped: int
    elapsed_s: float
    failures: tuple[PartitionResult, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def failure(self) -> PartitionResult | None:
        """The first partition that is not linearizable, if any."""
        return self.failures[0] if self.failures else None

    def summary(self) -> str:
        """The verdict in a few lines, as `smr check history` prints it."""
        head = {
            "ok": "linearizable",
            "violation": "NOT linearizable",
            "unknown": "undecided (the search reached its deadline)",
        }[self.outcome]
        lines = [
            f"{head}: {self.operations} operations ({self.dropped} dropped: failed, or unknown "
            f"and read-only), {len(self.partitions)} partition"
            f"{'s' if len(self.partitions) != 1 else ''}, model {self.model}, "
            f"{self.elapsed_s:.2f} s"
        ]
        for part in self.partitions:
            if part.ok is not True:
                lines.append(part.describe())
        return "\n".join(lines)


def check(
    history: History | Iterable[Operation],
    model: Model | str,
    *,
    partition: bool = True,
    timeout_s: float | None = None,
) -> CheckResult:
    """Check `history` for linearizability against `model` (a `Model` or its name).

    `partition=False` searches the history in one piece even when the model could split it
    (the same verdict, slower: tests compare the two). `timeout_s` bounds the whole check; a
    search still running then ends with outcome "unknown". Raises `ModelError` for an
    operation the model does not know and `HistoryError` for duplicate operation ids.
    """
    started = time.monotonic()
    deadline = None if timeout_s is None else started + timeout_s
    if isinstance(model, str):
        model = model_named(model)
    operations = list(history.operations if isinstance(history, History) else history)
    if len({op.id for op in operations}) != len(operations):
        raise HistoryError("operation ids repeat: every operation needs its own id")
    kept = []
    for op in operations:
        if op.status == FAIL:
            continue
        model.check_input(op.input)
        if op.status == UNKNOWN and op.name in model.readonly:
            continue  # it changed nothing and its output is unseen: it constrains nothing
        kept.append(op)
    kept.sort(key=lambda op: (op.call, op.id))
    parts = model.partition(kept) if partition else [(None, kept)]
    results = []
    for key, ops in parts:
        results.append(_search(model, key, ops, deadline))
        if results[-1].ok is None:
            break  # out of time: the rest would give up at once
    failures = tuple(r for r in results if r.ok is False)
    if failures:
        outcome: Outcome = "violation"
    elif all(r.ok for r in results) and len(results) == len(parts):
        outcome = "ok"
    else:
        outcome = "unknown"
    return CheckResult(
        model=model.name,
        outcome=outcome,
        partitions=tuple(results),
        operations=len(operations),
        dropped=len(operations) - len(kept),
        elapsed_s=time.monotonic() - started,
        failures=failures,
    )


class _Event:
    """A call or a return in the search's doubly linked list; a call's `match` is its return."""

    __slots__ = ("index", "is_call", "match", "next", "prev")

    def __init__(self, index: int, is_call: bool) -> None:
        self.index = index
        self.is_call = is_call
        self.match: _Event | None = None
        self.prev: _Event | None = None
        self.next: _Event | None = None


def _event_list(ops: Sequence[Operation]) -> _Event:
    """The calls and returns of `ops` in time order behind a head sentinel. At equal times calls
    come first: operations that touch are taken as concurrent, which can only allow more orders,
    never report a violation that a finer clock would not."""
    keyed = []
    for i, op in enumerate(ops):
        call, ret = _Event(i, True), _Event(i, False)
        call.match = ret
        keyed.append(((op.call, 0, i), call))
        keyed.append(((op.end, 1, i), ret))
    keyed.sort(key=lambda pair: pair[0])
    head = _Event(-1, False)
    prev = head
    for _, event in keyed:
        prev.next = event
        event.prev = prev
        prev = event
    return head


def _search(
    model: Model, key: Hashable, ops: Sequence[Operation], deadline: float | None
) -> PartitionResult:
    inputs = [op.input for op in ops]
    outputs = [ANY if op.status != OK else op.output for op in ops]
    required = [op.status == OK for op in ops]
    bits = [1 << i for i in range(len(ops))]
    head = _event_list(ops)
    step = model.step

    state: Any = model.init()
    placed = 0  # bit i: ops[i], an ok operation, is placed
    extra = 0  # bit i: ops[i], an unknown one, is placed (took effect)
    remaining = sum(required)  # ok operations not yet placed; 0 ends the search
    unknown_left = len(ops) - remaining  # unknown operations not placed (still in the list)
    # Lowe's cache, with the unknown operations apart: (placed, state) -> the `extra` sets seen
    # with them, none a subset of another. An unknown operation never has to be placed, so a
    # configuration is dominated by one with the same ok operations and state and a subset of
    # its unknown ones (every continuation of the first is one of the second): once that was
    # explored, this one need not be. Without it the unknown operations, which never expire,
    # multiply the configurations by two each.
    seen: dict[tuple[int, Any], list[int]] = {}
    # The placed operations as a chain of frames (call event, state before it, parent frame):
    # backing up is taking the parent, and keeping the furthest linearization is keeping a frame.
    top: tuple[Any, ...] | None = None
    depth = 0
    best_depth, best_top = -1, None
    blocked: int | None = None
    candidates: tuple[int, ...] = ()
    steps = 0

    # Unknown operations with the same input are interchangeable once called (both return at
    # infinity, their outputs unseen): of those in the list, only the first is tried, so the
    # ones placed are always the earliest called of their input, and the cache sees one set
    # where there would be one per choice.
    kinds: dict[Any, int] = {}
    kind = [_kind(kinds, inputs[i], i) for i in range(len(ops))]
    tried: set[int] = set()
    # Each configuration tries the ok calls before the return first, then the unknown ones:
    # configurations with fewer unknown operations placed are reached first, and they dominate.
    trying_unknown = False
    event = head.next
    while remaining:
        steps += 1
        if deadline is not None and steps % _DEADLINE_STRIDE == 0 and time.monotonic() > deadline:
            return PartitionResult(key, None, tuple(ops), _chain(best_top, ops), steps=steps)
        assert event is not None, "an ok operation's return is always ahead of the search"
        if event.is_call:
            i = event.index
            if required[i] == trying_unknown:
                event = event.next
                continue
            if trying_unknown:
                if kind[i] in tried:
                    event = event.next
                    continue
                tried.add(kind[i])
            accepted, after = step(state, inputs[i], outputs[i])
            if accepted:
                if required[i]:
                    new_placed, new_extra = placed | bits[i], extra
                else:
                    new_placed, new_extra = placed, extra | bits[i]
                config = (new_placed, after)
                extras = seen.get(config)
                if extras is None:
                    seen[config] = [new_extra]
                elif any(e | new_extra == new_extra for e in extras):
                    event = event.next  # dominated (or seen exactly): explored already
                    continue
                else:
                    # the sets it dominates can go: it prunes all that they would
                    extras[:] = [e for e in extras if e | new_extra != e]
                    extras.append(new_extra)
                top = (event, state, top)
                depth += 1
                state, placed, extra = after, new_placed, new_extra
                if required[i]:
                    remaining -= 1
                else:
                    unknown_left -= 1
                # lift the call and its return out of the list
                ret = event.match
                event.prev.next = event.next  # type: ignore[union-attr]
                event.next.prev = event.prev  # type: ignore[union-attr]
                ret.prev.next = ret.next  # type: ignore[union-attr]
                if ret.next is not None:  # type: ignore[union-attr]
                    ret.next.prev = ret.prev  # type: ignore[union-attr]
                trying_unknown = False
                event = head.next
                continue
            event = event.next
            continue
        # A return: this operation had to be placed by now, and every call before it was tried.
        if not trying_unknown and unknown_left:
            trying_unknown = True
            tried.clear()
            event = head.next
            continue
        if depth > best_depth:
            best_depth, best_top = depth, top
            blocked = ops[event.index].id
            candidates = _calls_before(head, event, ops)
        if top is None:
            lin = _chain(best_top, ops)
            return PartitionResult(
                key,
                False,
                tuple(ops),
                lin,
                blocked=blocked,
                candidates=candidates,
                states=_states(model, lin, ops),
                steps=steps,
            )
        event, state, top = top
        depth -= 1
        i = event.index
        if required[i]:
            placed ^= bits[i]
            remaining += 1
        else:
            extra ^= bits[i]
            unknown_left += 1
        # put the return back, then the call (the reverse of lifting them)
        ret = event.match
        ret.prev.next = ret
        if ret.next is not None:
            ret.next.prev = ret
        event.prev.next = event
        event.next.prev = event
        # go on with the calls after it, in the phase it was tried in
        trying_unknown = not required[i]
        if trying_unknown:
            tried = {kind[j] for j in _unknown_calls_before(head, event, required)}
        event = event.next
    return PartitionResult(key, True, tuple(ops), _chain(top, ops), steps=steps)


def _kind(kinds: dict[Any, int], input: tuple[Any, ...], index: int) -> int:
    """A number per distinct input (an unhashable one is its own kind)."""
    try:
        return kinds.setdefault(input, len(kinds))
    except TypeError:
        return -1 - index


def _unknown_calls_before(head: _Event, stop: _Event, required: list[bool]) -> list[int]:
    """The unknown operations whose calls are in the list before `stop`, `stop` included."""
    found = []
    event = head.next
    while event is not None:
        if event.is_call and not required[event.index]:
            found.append(event.index)
        if event is stop:
            break
        event = event.next
    return found


def _chain(top: tuple[Any, ...] | None, ops: Sequence[Operation]) -> tuple[int, ...]:
    """The operation ids of a frame chain, first placed first."""
    order = []
    while top is not None:
        order.append(ops[top[0].index].id)
        top = top[2]
    order.reverse()
    return tuple(order)


def _calls_before(head: _Event, stop: _Event, ops: Sequence[Operation]) -> tuple[int, ...]:
    """The ids of the unplaced operations called before the return `stop` (its own included)."""
    found = []
    event = head.next
    while event is not None and event is not stop:
        if event.is_call:
            found.append(ops[event.index].id)
        event = event.next
    return tuple(found)


def _states(model: Model, order: Sequence[int], ops: Sequence[Operation]) -> tuple[str, ...]:
    by_id = {op.id: op for op in ops}
    state = model.init()
    described = []
    for op_id in order:
        op = by_id[op_id]
        accepted, state = model.step(state, op.input, op.output if op.status == OK else ANY)
        assert accepted, "a linearization the search built replays"
        described.append(model.describe(state))
    return tuple(described)
