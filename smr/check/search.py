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

    @property
    def where(self) -> str:
        """The partition as a report names it: `key 'a'`, `the whole history`, ..."""
        return _where(self.key)

    def describe(self, ops_by_id: dict[int, Operation] | None = None) -> str:
        """A few lines for a report: the partition, the verdict, and for a violation the
        furthest linearization and the operation it could not extend to."""
        by_id = ops_by_id or {op.id: op for op in self.operations}
        where = self.where
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


def _where(key: Hashable) -> str:
    """A partition's name in a report."""
    if key is None:
        return "the whole history"
    if key == ():
        return "the operations that touch no key"
    if isinstance(key, tuple):
        return f"keys {', '.join(map(repr, key))}"
    return f"key {key!r}"


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


def _event_list(ops: Sequence[Operation]) -> tuple[_Event, list[_Event]]:
    """The calls and returns of `ops` in time order behind a head sentinel, and each operation's
    call. At equal times calls come first: operations that touch are taken as concurrent, which
    can only allow more orders, never report a violation that a finer clock would not."""
    keyed = []
    calls = []
    for i, op in enumerate(ops):
        call, ret = _Event(i, True), _Event(i, False)
        call.match = ret
        calls.append(call)
        keyed.append(((op.call, 0, i), call))
        keyed.append(((op.end, 1, i), ret))
    keyed.sort(key=lambda pair: pair[0])
    head = _Event(-1, False)
    prev = head
    for _, event in keyed:
        prev.next = event
        event.prev = prev
        prev = event
    return head, calls


def _search(
    model: Model, key: Hashable, ops: Sequence[Operation], deadline: float | None
) -> PartitionResult:
    """Search one partition; `ops` are in call order."""
    inputs = [op.input for op in ops]
    outputs = [ANY if op.status != OK else op.output for op in ops]
    required = [op.status == OK for op in ops]
    bits = [1 << i for i in range(len(ops))]
    head, calls = _event_list(ops)
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
    # Unknown operations with the same input are interchangeable once called (they return at
    # infinity, their outputs unseen), so only one per input is tried: the earliest called not
    # yet placed. The ones placed are then always the first of their input, and the cache sees
    # one set where there would be one per choice.
    kinds: dict[Any, int] = {}
    kind = [_kind(kinds, inputs[i], i) for i in range(len(ops))]
    members: dict[int, list[int]] = {}
    for i in range(len(ops)):
        if not required[i]:
            members.setdefault(kind[i], []).append(i)
    kind_placed = dict.fromkeys(members, 0)
    # The placed operations as a chain of frames (call event, state before it, parent frame,
    # and for an unknown operation the candidates it was one of and where to go on in them):
    # backing up is taking the parent, keeping the furthest linearization is keeping a frame.
    top: tuple[Any, ...] | None = None
    depth = 0
    best_depth, best_top = -1, None
    blocked: int | None = None
    candidates: tuple[int, ...] = ()
    steps = 0

    # A configuration first tries the ok calls before the earliest return, in call order, then
    # the unknown operations (`unknowns`, from `next_unknown` on), the most recently called
    # first: configurations with fewer unknown operations placed are reached first, and they
    # dominate; and when a read shows that one took effect, it is most often the latest.
    unknowns: list[int] | None = None
    next_unknown = 0
    event = head.next
    while remaining:
        steps += 1
        if deadline is not None and steps % _DEADLINE_STRIDE == 0 and time.monotonic() > deadline:
            return PartitionResult(key, None, tuple(ops), _chain(best_top, ops), steps=steps)
        if unknowns is None:
            assert event is not None, "an ok operation's return is always ahead of the search"
            if event.is_call:
                i = event.index
                if required[i]:
                    accepted, after = step(state, inputs[i], outputs[i])
                    if accepted and _first_visit(seen, placed | bits[i], after, extra):
                        top = (event, state, top, None, 0)
                        depth += 1
                        state, placed = after, placed | bits[i]
                        remaining -= 1
                        _lift(event)
                        event = head.next
                        continue
                event = event.next
                continue
            if unknown_left:
                # A return: every ok call before it was tried; now the unknown operations.
                unknowns = _latest_first(head, event, required, kind, members, kind_placed)
                next_unknown = 0
                continue
        elif next_unknown < len(unknowns):
            i = unknowns[next_unknown]
            next_unknown += 1
            accepted, after = step(state, inputs[i], ANY)
            if accepted and _first_visit(seen, placed, after, extra | bits[i]):
                top = (calls[i], state, top, unknowns, next_unknown)
                depth += 1
                state, extra = after, extra | bits[i]
                unknown_left -= 1
                kind_placed[kind[i]] += 1
                _lift(calls[i])
                unknowns = None
                event = head.next
            continue
        # Nothing more to try here: this configuration leads nowhere; back up.
        if depth > best_depth:
            best_depth, best_top = depth, top
            earliest = _first_return(head)
            blocked = ops[earliest.index].id
            candidates = _calls_before(head, earliest, ops)
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
        event, state, top, unknowns, next_unknown = top
        depth -= 1
        i = event.index
        if required[i]:
            placed ^= bits[i]
            remaining += 1
        else:
            extra ^= bits[i]
            unknown_left += 1
            kind_placed[kind[i]] -= 1
        _unlift(event)
        # go on with what this configuration had left to try: the ok calls after this one,
        # or (`unknowns` restored) the unknown operations after this one
        event = event.next
    return PartitionResult(key, True, tuple(ops), _chain(top, ops), steps=steps)


def _first_visit(
    seen: dict[tuple[int, Any], list[int]], placed: int, state: Any, extra: int
) -> bool:
    """Record the configuration; False if it, or one that dominates it, was seen before."""
    config = (placed, state)
    extras = seen.get(config)
    if extras is None:
        seen[config] = [extra]
        return True
    if any(e | extra == extra for e in extras):
        return False
    # the sets it dominates can go: it prunes all that they would
    extras[:] = [e for e in extras if e | extra != e]
    extras.append(extra)
    return True


def _lift(call: _Event) -> None:
    """Take a call and its return out of the list."""
    ret = call.match
    assert ret is not None and call.prev is not None and call.next is not None
    call.prev.next = call.next
    call.next.prev = call.prev
    assert ret.prev is not None
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Event) -> None:
    """Put back what `_lift` took out: the return, then the call (lifts are undone in reverse)."""
    ret = call.match
    assert ret is not None and call.prev is not None and call.next is not None
    assert ret.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    call.next.prev = call


def _latest_first(
    head: _Event,
    stop: _Event,
    required: list[bool],
    kind: list[int],
    members: dict[int, list[int]],
    kind_placed: dict[int, int],
) -> list[int]:
    """The unknown operations to try before the return `stop`: one per input, the earliest
    called of it not placed, the inputs ordered by their latest call, latest first."""
    found = []
    event = head.next
    while event is not None and event is not stop:
        if event.is_call and not required[event.index]:
            found.append(event.index)
        event = event.next
    order = []
    done = set()
    for i in reversed(found):
        k = kind[i]
        if k not in done:
            done.add(k)
            order.append(members[k][kind_placed[k]])
    return order


def _first_return(head: _Event) -> _Event:
    event = head.next
    while event is not None and event.is_call:
        event = event.next
    assert event is not None, "an unplaced ok operation has its return in the list"
    return event


def _kind(kinds: dict[Any, int], input: tuple[Any, ...], index: int) -> int:
    """A number per distinct input (an unhashable one is its own kind, a negative number)."""
    try:
        return kinds.setdefault(input, len(kinds))
    except TypeError:
        return -1 - index


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
