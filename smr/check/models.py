"""Sequential specifications the checker holds a history to: the `Model` contract and the models
of a register and of the example state machines (kv, counter, bank, queue).

A model is a deterministic sequential object: `init()` is its first state, `step(state, input,
output)` says whether `input` may have returned `output` in `state` and gives the next state.
States must be hashable (tuples, frozensets), because the search memoises the (set of
linearized operations, state) pairs it has seen. A model whose state is a product of independent
objects says which objects an input touches (`keys`), and the checker then checks each group of
objects that no operation connects as a history of its own (`partition`): linearizability is a
local property (Herlihy and Wing), so the whole is linearizable exactly when every part is.

The models mirror `smr.statemachines` operation for operation, outputs included (`KVStore.put`
returns the previous value, `Bank.transfer` the reason it refused), but do not import them:
`smr.check` depends only on the standard library, so it can judge histories of any system. The
tests drive the real state machines and the models side by side to keep the two in step.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from smr.check.history import Operation


class _Any:
    """The output of an operation whose outcome is unknown: every output matches it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()

State = Hashable
Input = tuple[Any, ...]


class ModelError(ValueError):
    """A history the model cannot judge: an operation it does not know, or the wrong arguments."""


class Model:
    """The contract of a sequential specification.

    Subclasses set `name` and `operations` (operation name -> number of arguments) and implement
    `init` and `apply` (deterministic models: the output and next state of an input) or `step`
    (the general form). `readonly` names operations that never change the state: an unknown one
    constrains nothing, so the checker drops it. `keys` enables per-key partitioning.
    """

    name: ClassVar[str] = "model"
    operations: ClassVar[Mapping[str, int]] = {}
    readonly: ClassVar[frozenset[str]] = frozenset()
    # operation -> why the model cannot check it (said instead of "unknown operation")
    unsupported: ClassVar[Mapping[str, str]] = {}

    def init(self) -> State:
        raise NotImplementedError

    def apply(self, state: State, input: Input) -> tuple[Any, State]:
        """The output `input` returns in `state` (`ANY`: any output is right) and the state
        after it."""
        raise NotImplementedError

    def step(self, state: State, input: Input, output: Any) -> tuple[bool, State]:
        """Whether `input` may return `output` in `state`, and the state after it. `output` is
        `ANY` for an operation whose outcome is unknown: it took effect, its output unseen."""
        expected, after = self.apply(state, input)
        return (output is ANY or expected is ANY or expected == output), after

    def keys(self, input: Input) -> Iterable[Hashable] | None:
        """The independent objects `input` reads or changes; None: all of them (the default,
        which checks the history in one piece)."""
        return None

    def partition(self, operations: Sequence[Operation]) -> list[tuple[Hashable, list[Operation]]]:
        """Sub-histories that can be checked apart, as `(label, operations)` pairs: the
        connected components of the objects the operations touch (`keys`). The label is the
        component's key, or a tuple of its keys, or None for the whole history."""
        parent: dict[Hashable, Hashable] = {}

        def root(key: Hashable) -> Hashable:
            while parent[key] != key:
                parent[key] = parent[parent[key]]  # path halving keeps the trees flat
                key = parent[key]
            return key

        touched: list[list[Hashable]] = []
        for op in operations:
            keys = self.keys(op.input)
            if keys is None:
                return [(None, list(operations))]
            keys = list(keys)
            touched.append(keys)
            for key in keys:
                parent.setdefault(key, key)
            for key in keys[1:]:
                parent[root(key)] = root(keys[0])
        parts: dict[Hashable, list[Operation]] = {}
        members: dict[Hashable, set[Hashable]] = {}
        loose: list[Operation] = []  # touches no object: a part of its own each
        for op, keys in zip(operations, touched, strict=True):
            if not keys:
                loose.append(op)
                continue
            r = root(keys[0])
            parts.setdefault(r, []).append(op)
            members.setdefault(r, set()).update(keys)
        result: list[tuple[Hashable, list[Operation]]] = []
        for r, ops in parts.items():
            names = sorted(members[r], key=repr)
            result.append((names[0] if len(names) == 1 else tuple(names), ops))
        result.extend((None, [op]) for op in loose)
        return result

    def describe(self, state: State) -> str:
        """The state as a report shows it."""
        return repr(state)

    def check_input(self, input: Input) -> None:
        """Raise `ModelError` unless the model knows `input`'s operation and arity."""
        name, args = input[0], input[1:]
        if name in self.unsupported:
            raise ModelError(
                f"the {self.name} model cannot check {name!r}: {self.unsupported[name]}"
            )
        arity = self.operations.get(name)
        if arity is None:
            known = ", ".join(sorted(self.operations))
            raise ModelError(f"the {self.name} model has no operation {name!r} (it has {known})")
        if len(args) != arity:
            raise ModelError(
                f"{name} takes {arity} argument{'s' if arity != 1 else ''} in the "
                f"{self.name} model, got {len(args)}: {args!r}"
            )


# A keyed state: a tuple of (key, value) pairs sorted by key, hashable and equal for equal maps.
Items = tuple[tuple[Any, Any], ...]


def _lookup(items: Items, key: Any, default: Any = None) -> Any:
    for k, v in items:
        if k == key:
            return v
    return default


def _assign(items: Items, key: Any, value: Any, *, absent: Any = None) -> Items:
    """`items` with `key` set to `value` (removed when `value is absent`)."""
    rest = [(k, v) for k, v in items if k != key]
    if value is not absent:
        rest.append((key, value))
        rest.sort(key=lambda kv: repr(kv[0]))  # repr: keys of mixed types still sort
    return tuple(rest)


def _describe_items(items: Items) -> str:
    return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in items) + "}"


class RegisterModel(Model):
    """One register, None at first: `read() -> value`, `write(value)` (its output is not
    checked), `cas(expected, value) -> bool` (set only if it holds `expected`)."""

    name = "register"
    operations = {"read": 0, "write": 1, "cas": 2}
    readonly = frozenset({"read"})

    def init(self) -> State:
        return None

    def apply(self, state: State, input: Input) -> tuple[Any, State]:
        match input:
            case ("read",):
                return state, state
            case ("write", value):
                return ANY, value
            case ("cas", expected, value):
                return (True, value) if state == expected else (False, state)
        raise ModelError(f"the register model has no operation {input!r}")


class KVModel(Model):
    """`smr.statemachines.KVStore` as its clients see it. Every key is an independent register,
    so a history is checked key by key unless it has `keys()` or `size()` (which read every key).

    `put(key, value) -> previous value or None`, `delete(key) -> whether it was present`,
    `compare_and_set(key, expected, value) -> bool` (expected None: absent),
    `append(key, suffix) -> new length`, `get(key) -> value or None`, `keys() -> sorted keys`,
    `size() -> count`, `trim_history(version)` (changes no value; its output is not checked).
    """

    name = "kv"
    operations = {
        "put": 2,
        "delete": 1,
        "compare_and_set": 3,
        "append": 2,
        "get": 1,
        "keys": 0,
        "size": 0,
        "trim_history": 1,
    }
    readonly = frozenset({"get", "keys", "size", "trim_history"})
    unsupported = {
        "get_at_version": "its answer depends on the entry versions the replicas assigned, "
        "which a client history does not hold; leave these reads out of the history",
    }

    def init(self) -> State:
        return ()

    def keys(self, input: Input) -> Iterable[Hashable] | None:
        if input[0] in ("keys", "size"):
            return None
        if input[0] == "trim_history":
            return ()
        return (input[1],)

    def apply(self, state: State, input: Input) -> tuple[Any, State]:
        items: Items = state  # type: ignore[assignment]
        match input:
            case ("get", key):
                return _lookup(items, key), items
            case ("put", key, value):
                return _lookup(items, key), _assign(items, key, value)
            case ("delete", key):
                present = _lookup(items, key) is not None
                return present, _assign(items, key, None) if present else items
            case ("compare_and_set", key, expected, value):
                if _lookup(items, key) != expected:
                    return False, items
                return True, _assign(items, key, value)
            case ("append", key, suffix):
                value = _lookup(items, key, b"") + suffix
                return len(value), _assign(items, key, value)
            case ("keys",):
                return tuple(sorted(k for k, _ in items)), items
            case ("size",):
                return len(items), items
            case ("trim_history", _):
                return ANY, items
        raise ModelError(f"the kv model has no operation {input!r}")

    def describe(self, state: State) -> str:
        return _describe_items(state)  # type: ignore[arg-type]


class CounterModel(Model):
    """`smr.statemachines.Counter`: `add(delta) -> new value`, `reset() -> previous value`,
    `value()` and `get() -> value`. One object, so no partitioning."""

    name = "counter"
    operations = {"add": 1, "reset": 0, "value": 0, "get": 0}
    readonly = frozenset({"value", "get"})

    def init(self) -> State:
        return 0

    def apply(self, state: State, input: Input) -> tuple[Any, State]:
        count: int = state  # type: ignore[assignment]
        match input:
            case ("add", delta):
                return count + delta, count + delta
            case ("reset",):
                return count, 0
            case ("value",) | ("get",):
                return count, count
        raise ModelError(f"the counter model has no operation {input!r}")


# The replies of `smr.statemachines.bank`, repeated here since smr.check imports no state machine.
BANK_OK = "ok"
BANK_UNKNOWN_ACCOUNT = "unknown account"
BANK_ACCOUNT_EXISTS = "account exists"
BANK_NOT_POSITIVE = "amount must be positive"
BANK_INSUFFICIENT_FUNDS = "insufficient funds"


class BankModel(Model):
    """`smr.statemachines.Bank`: `open_account(name)`, `deposit(name, amount)`,
    `withdraw(name, amount)`, `transfer(source, target, amount)`, each `-> "ok"` or the reason it
    refused (and changed nothing); `balance(name) -> int or None`, `total() -> int`. Accounts
    that no transfer connects are checked apart; `total()` reads them all."""

    name = "bank"
    operations = {
        "open_account": 1,
        "deposit": 2,
        "withdraw": 2,
        "transfer": 3,
        "balance": 1,
        "total": 0,
    }
    readonly = frozenset({"balance", "total"})

    def init(self) -> State:
        return ()

    def keys(self, input: Input) -> Iterable[Hashable] | None:
        match input:
            case ("total",):
                return None
            case ("transfer", source, target, _):
                return (source, target)
        return (input[1],)

    def apply(self, state: State, input: Input) -> tuple[Any, State]:
        accounts: Items = state  # type: ignore[assignment]
        match input:
            case ("open_account", name):
                if _lookup(accounts, name) is not None:
                    return BANK_ACCOUNT_EXISTS, accounts
                return BANK_OK, _assign(accounts, name, 0)
            case ("deposit", name, amount):
                balance = _lookup(accounts, name)
                if balance is None:
                    return BANK_UNKNOWN_ACCOUNT, accounts
                if amount <= 0:
                    return BANK_NOT_POSITIVE, accounts
                return BANK_OK, _assign(accounts, name, balance + amount)
            case ("withdraw", name, amount):
                balance = _lookup(accounts, name)
                if balance is None:
                    return BANK_UNKNOWN_ACCOUNT, accounts
                if amount <= 0:
                    return BANK_NOT_POSITIVE, accounts
                if balance < amount:
                    return BANK_INSUFFICIENT_FUNDS, accounts
                return BANK_OK, _assign(accounts, name, balance - amount)
            case ("transfer", source, target, amount):
                have, other = _lookup(accounts, source), _lookup(accounts, target)
                if have is None or other is None:
                    return BANK_UNKNOWN_ACCOUNT, accounts
                if amount <= 0:
                    return BANK_NOT_POSITIVE, accounts
                if have < amount:
                    return BANK_INSUFFICIENT_FUNDS, accounts
                after = _assign(accounts, source, have - amount)
                # the same account is allowed: read the target after the withdrawal
                return BANK_OK, _assign(after, target, _lookup(after, target) + amount)
            case ("balance", name):
                return _lookup(accounts, name), accounts
            case ("total",):
                return sum(b for _, b in accounts), accounts
        raise ModelError(f"the bank model has no operation {input!r}")

    def describe(self, state: State) -> str:
        return _describe_items(state)  # type: ignore[arg-type]


class QueueModel(Model):
    """`smr.statemachines.Queue`: `enqueue(item) -> new size` (0 when full: then nothing
    changed), `dequeue() -> head or None`, `peek() -> head or None`, `size() -> length`."""

    name = "queue"
    operations = {"enqueue": 1, "dequeue": 0, "peek": 0, "size": 0}
    readonly = frozenset({"peek", "size"})
    items_max = 1 << 20  # `Queue.items_max`

    def init(self) -> State:
        return ()

    def apply(self, state: State, input: Input) -> tuple[Any, State]:
        items: tuple[Any, ...] = state  # type: ignore[assignment]
        match input:
            case ("enqueue", item):
                if len(items) >= self.items_max:
                    return 0, items
                return len(items) + 1, (*items, item)
            case ("dequeue",):
                return (items[0], items[1:]) if items else (None, items)
            case ("peek",):
                return (items[0] if items else None), items
            case ("size",):
                return len(items), items
        raise ModelError(f"the queue model has no operation {input!r}")


MODELS: dict[str, type[Model]] = {
    m.name: m for m in (RegisterModel, KVModel, CounterModel, BankModel, QueueModel)
}


def model_named(name: str) -> Model:
    """A model by its name (`register`, `kv`, `counter`, `bank`, `queue`)."""
    try:
        return MODELS[name]()
    except KeyError:
        raise ModelError(f"no model {name!r} (there are {', '.join(sorted(MODELS))})") from None
