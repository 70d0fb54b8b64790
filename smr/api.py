"""The user-facing API: `StateMachine`, its operation decorators, and how commands are encoded.

This module owns the contract between an application's replicated type and the toolkit:

* A user subclasses `StateMachine` and declares operations with `@command` (an ordered update,
  deterministic, applied at every replica of a shard in the same order) and `@query` (a read
  served locally by one member). Operations are collected when the class is created, each with a
  small integer id (declaration order, inherited first) and an argument type built from the
  method's annotations, so arguments are validated when a command is encoded and again when it
  is decoded.
* A command may declare a keyword-only parameter `entry: Entry`: the dispatcher passes the
  entry's version (`(epoch << 32) | seq`) and the sender's hybrid-logical-clock timestamp. That
  is the only clock a state machine sees.
* `snapshot() -> bytes` and `restore(bytes)` are the state transfer and log-compaction hooks;
  `digest()` is the hex SHA-256 of the snapshot (so snapshots must be deterministic).
* Encoding is msgspec MessagePack: a command is `[operation id, [arguments...]]`.

Misuse is a `StateMachineError` with a message that says what to change: `DeclarationError` when
the class is defined, `OperationError` when a call or a payload is wrong, `QueryMutationError`
when a query changes state. The module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, get_type_hints

import msgspec

__all__ = [
    "DeclarationError",
    "Entry",
    "Operation",
    "OperationError",
    "QueryMutationError",
    "StateMachine",
    "StateMachineError",
    "command",
    "query",
]


class StateMachineError(Exception):
    """Base of the errors this module raises on purpose."""


class DeclarationError(StateMachineError, TypeError):
    """A state machine class declares its operations wrongly."""


class OperationError(StateMachineError, ValueError):
    """A call, an argument or a payload does not fit the operation it names."""


class QueryMutationError(StateMachineError, RuntimeError):
    """A query changed the state of the machine it ran on."""


@dataclass(frozen=True, slots=True)
class Entry:
    """What a command learns about the ordered entry it is applied as: its version and the
    sender's hybrid-logical-clock timestamp. Both are in the durable log, so replaying a log gives
    every command the same entry it had live (which is why the sender's id is not here)."""

    version: int
    timestamp_ns: int


RESERVED = frozenset(
    {
        "apply",
        "run_query",
        "snapshot",
        "restore",
        "digest",
        "encode_command",
        "encode_query",
        "encode_result",
        "decode_result",
        "describe",
        "operations",
        "check_queries",
    }
)

_encoder = msgspec.msgpack.Encoder()
_decode_call = msgspec.msgpack.Decoder(tuple[int, list[Any]]).decode
_decode_any = msgspec.msgpack.Decoder().decode


@dataclass(frozen=True)
class Operation:
    """One declared operation: its id, name, kind and how its arguments are checked."""

    id: int
    name: str
    kind: str  # "command" | "query"
    function: Callable[..., Any]
    params: tuple[str, ...]
    wants_entry: bool
    args_type: Any  # a msgspec-checkable tuple type of the positional arguments
    signature: inspect.Signature

    def bind(self, args: tuple, kwargs: dict) -> list[Any]:
        try:
            bound = self.signature.bind(None, *args, **kwargs)
        except TypeError as e:
            raise OperationError(f"{self.name}: {e}") from None
        bound.apply_defaults()
        values = [bound.arguments[p] for p in self.params]
        try:
            msgspec.convert(values, self.args_type, strict=True)
        except msgspec.ValidationError as e:
            raise OperationError(f"{self.name}: an argument has the wrong type ({e})") from None
        return values


def command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Declare an ordered update. It must be deterministic: same state and arguments, same
    result and new state, at every replica."""
    return _mark(function, "command")


def query(function: Callable[..., Any]) -> Callable[..., Any]:
    """Declare a read served by one member. It must not change the state."""
    return _mark(function, "query")


def _mark(function: Any, kind: str) -> Any:
    if not inspect.isfunction(function):
        raise DeclarationError(f"@{kind} decorates a function, not {function!r}")
    if getattr(function, "_smr_kind", None) not in (None, kind):
        raise DeclarationError(f"{function.__name__} is declared both a command and a query")
    function._smr_kind = kind
    return function


def _operation(cls: type, op_id: int, name: str, function: Any, kind: str) -> Operation:
    if name in RESERVED or name.startswith("_"):
        raise DeclarationError(
            f"{cls.__name__}.{name}: the name is reserved by StateMachine; rename the operation"
        )
    signature = inspect.signature(function)
    try:
        hints = get_type_hints(function)
    except Exception as e:
        raise DeclarationError(f"{cls.__name__}.{name}: cannot resolve annotations ({e})") from None
    params: list[str] = []
    types: list[Any] = []
    wants_entry = False
    for i, p in enumerate(signature.parameters.values()):
        if i == 0:
            continue  # self
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DeclarationError(
                f"{cls.__name__}.{name}: *args and **kwargs cannot be replicated; name each "
                "argument"
            )
        if p.name == "entry":
            if kind != "command" or p.kind is not p.KEYWORD_ONLY:
                raise DeclarationError(
                    f"{cls.__name__}.{name}: `entry` is a keyword-only parameter of commands"
                )
            wants_entry = True
            continue
        if p.name not in hints:
            raise DeclarationError(
                f"{cls.__name__}.{name}: annotate parameter {p.name!r} so it can be encoded"
            )
        params.append(p.name)
        types.append(hints[p.name])
    call_signature = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name != "entry"]
    )
    args_type = tuple.__class_getitem__(tuple(types)) if types else tuple[()]
    return Operation(
        op_id, name, kind, function, tuple(params), wants_entry, args_type, call_signature
    )


class StateMachine:
    """Subclass me, declare operations with `@command` and `@query`, and implement
    `snapshot` and `restore`."""

    operations: ClassVar[tuple[Operation, ...]] = ()
    _by_name: ClassVar[dict[str, Operation]] = {}
    check_queries: bool = False  # also compare digests around every query (tests, simulator)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inherited = list(cls.operations)
        names = {op.name for op in inherited}
        ops = inherited
        for name, value in cls.__dict__.items():
            kind = getattr(value, "_smr_kind", None)
            if kind is None:
                continue
            if name in names:
                raise DeclarationError(
                    f"{cls.__name__}.{name}: an inherited operation has this name; an "
                    "operation's id must not change, so give the new one another name"
                )
            ops.append(_operation(cls, len(ops), name, value, kind))
            names.add(name)
        cls.operations = tuple(ops)
        cls._by_name = {op.name: op for op in ops}

    # -- encoding -------------------------------------------------------------------------------

    @classmethod
    def _op(cls, name: str, kind: str) -> Operation:
        op = cls._by_name.get(name)
        if op is None:
            known = ", ".join(o.name for o in cls.operations if o.kind == kind) or "none"
            raise OperationError(f"{cls.__name__} has no {kind} {name!r} (its {kind}s: {known})")
        if op.kind != kind:
            raise OperationError(f"{cls.__name__}.{name} is a {op.kind}, not a {kind}")
        return op

    @classmethod
    def encode_command(cls, name: str, /, *args: Any, **kwargs: Any) -> bytes:
        op = cls._op(name, "command")
        return cls._encode(op, op.bind(args, kwargs))

    @classmethod
    def encode_query(cls, name: str, /, *args: Any, **kwargs: Any) -> bytes:
        op = cls._op(name, "query")
        return cls._encode(op, op.bind(args, kwargs))

    @staticmethod
    def _encode(op: Operation, values: list[Any]) -> bytes:
        try:
            return _encoder.encode((op.id, values))
        except (TypeError, msgspec.EncodeError) as e:
            raise OperationError(f"{op.name}: arguments cannot be encoded ({e})") from None

    @classmethod
    def _decode(cls, payload: bytes, kind: str) -> tuple[Operation, list[Any]]:
        try:
            op_id, values = _decode_call(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise OperationError(f"{cls.__name__}: a malformed {kind} payload ({e})") from None
        if not 0 <= op_id < len(cls.operations):
            raise OperationError(f"{cls.__name__}: no operation with id {op_id}")
        op = cls.operations[op_id]
        if op.kind != kind:
            raise OperationError(f"{cls.__name__}.{op.name} is a {op.kind}, not a {kind}")
        try:
            values = list(msgspec.convert(values, op.args_type, strict=True))
        except msgspec.ValidationError as e:
            raise OperationError(
                f"{op.name}: a decoded argument has the wrong type ({e})"
            ) from None
        return op, values

    @staticmethod
    def encode_result(value: Any) -> bytes:
        try:
            return _encoder.encode(value)
        except (TypeError, msgspec.EncodeError) as e:
            raise OperationError(f"a result that cannot be encoded: {e}") from None

    @staticmethod
    def decode_result(data: bytes) -> Any:
        try:
            return _decode_any(data)
        except msgspec.DecodeError as e:
            raise OperationError(f"a malformed result ({e})") from None

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        return [
            {"name": op.name, "kind": op.kind, "parameters": list(op.params)}
            for op in cls.operations
        ]

    # -- dispatch -------------------------------------------------------------------------------

    def apply(self, payload: bytes, entry: Entry) -> Any:
        """Decode an ordered command and apply it; return its result."""
        op, values = self._decode(payload, "command")
        if op.wants_entry:
            return op.function(self, *values, entry=entry)
        return op.function(self, *values)

    def run_query(self, payload: bytes) -> Any:
        """Decode a query and run it on this member's state; return its result."""
        op, values = self._decode(payload, "query")
        before = self.digest() if self.check_queries else None
        object.__setattr__(self, "_smr_in_query", True)  # refuse attribute assignment meanwhile
        try:
            result = op.function(self, *values)
        finally:
            object.__setattr__(self, "_smr_in_query", False)
        if before is not None and self.digest() != before:
            raise QueryMutationError(
                f"{type(self).__name__}.{op.name} is a query but changed the state; make it a "
                "@command"
            )
        return result

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_smr_in_query"):
            raise QueryMutationError(
                f"a query assigned {type(self).__name__}.{name}; queries must not change state"
            )
        object.__setattr__(self, name, value)

    # -- state ----------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        raise NotImplementedError(
            f"{type(self).__name__} must implement snapshot() -> bytes (and restore)"
        )

    def restore(self, data: bytes) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement restore(bytes)")

    def digest(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()
