"""The user-facing API: `StateMachine`, its operation decorators, and how operations are encoded.

This module owns the contract between an application's replicated type and the toolkit:

* A user subclasses `StateMachine` and declares operations with `@command` (an ordered update,
  deterministic, applied at every replica of a shard in the same order) and `@query` (a read
  served locally by one member). Operations are collected when the class is created, each with a
  small integer id (declaration order, inherited first; an override keeps its id) and an
  argument type built from the method's annotations: a msgspec Struct per operation, so
  arguments are validated when an operation is encoded and again, identically, when it is
  decoded.
* A command may declare a keyword-only parameter `entry: Entry`: the dispatcher passes the
  entry's version (`(epoch << 32) | seq`) and the sender's hybrid-logical-clock timestamp.
  That is the only clock a state machine sees; callers never pass it.
* `snapshot() -> bytes` and `restore(bytes)` are the state-transfer and log-compaction hooks a
  user implements; `digest()` is the hex SHA-256 of the snapshot (so snapshots must be
  deterministic).
* Wire format (msgspec MessagePack): an operation is the array `[operation id, arguments...]`;
  a result is the plain MessagePack of the value (`encode_result` / `decode_result`).

What it does not own: replication. `Group`/client handles and reply maps live on top of the core
(`smr.group`, the runtime); `smr.core` never imports this module.

Misuse is a `StateMachineError` whose one-line message says what to change: `DeclarationError`
when the class is defined, `OperationError` when a call, an argument, a result or a payload is
wrong, `QueryMutationError` when a query changes state. A command that raises its own exception
is the application's business: it raises identically at every replica and the caller (the
runtime) decides what to answer. The module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union, get_type_hints

import msgspec
from msgspec.structs import astuple

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
    """A state machine class declares its operations wrongly (or lacks snapshot/restore)."""


class OperationError(StateMachineError, ValueError):
    """A call, an argument, a result or a payload does not fit the operation it names."""


class QueryMutationError(StateMachineError, RuntimeError):
    """A query changed the state of the machine it ran on."""


@dataclass(frozen=True, slots=True)
class Entry:
    """What a command learns about the ordered entry it is applied as: its version
    (`(epoch << 32) | seq`) and the sender's hybrid-logical-clock timestamp. Both are in the
    durable log, so replaying a log gives every command the same entry it had live (which is
    why the sender's id is not here: it is not logged, so replay could not reproduce it)."""

    version: int
    timestamp_ns: int


Kind = Literal["command", "query"]

# One encoder for every operation and result: msgspec encoders are reusable and thread-safe,
# and building one per call would dominate the cost of a small command.
_encoder = msgspec.msgpack.Encoder()
_encode = _encoder.encode
_decode_any = msgspec.msgpack.Decoder().decode
# Decoding untrusted bytes may fail as a DecodeError/ValidationError, but also as a
# UnicodeDecodeError (bad UTF-8 in a string), a RecursionError (deep nesting under `Any`), or
# whatever an argument type's own `__post_init__` raises. Only the decode call sits inside these
# `try` blocks, so catching `Exception` there hides no bug of ours and keeps the promise that a
# malformed payload is an `OperationError`.
_DECODE_ERRORS = (Exception,)
# ValueError covers a str with lone surrogates (UnicodeEncodeError).
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, msgspec.EncodeError)


@dataclass(frozen=True, slots=True)
class Operation:
    """One declared operation: its wire id, name, kind, the function it runs, and the msgspec
    types that check its arguments and its result."""

    id: int
    name: str
    kind: Kind
    function: Callable[..., Any]
    params: tuple[str, ...]  # argument names in wire order (the `entry` parameter excluded)
    types: tuple[Any, ...]  # their annotations
    wants_entry: bool
    returns: Any  # the return annotation (Any when absent)
    signature: inspect.Signature  # the caller's view: no `self`, no `entry`
    args_type: type[msgspec.Struct]  # array_like, tagged with `id`: `[id, arguments...]`
    fast_arity: int  # positional calls with exactly this many arguments skip binding; -1: never
    keyword_only: tuple[str, ...]  # the last params, passed by keyword when dispatched
    check_args: Callable[[bytes], Any]  # decode-validate an encoded call, as `apply` will
    decode_result: Callable[[bytes], Any]

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """`[id, arguments...]`, validated exactly as the receiving replica will decode it."""
        if kwargs or len(args) != self.fast_arity:
            args = self._bind(args, kwargs)
        try:
            payload = _encode(self.args_type(*args))
        except _ENCODE_ERRORS as e:
            raise OperationError(
                f"{self.name}: {self._culprit(args) or 'an argument'} cannot be encoded ({e})"
            ) from None
        try:
            self.check_args(payload)
        except _DECODE_ERRORS as e:
            raise OperationError(
                f"{self.name}: {self._culprit(args) or 'an argument'} has the wrong type ({e}); "
                f"the signature is {self.name}{self.signature}"
            ) from None
        return payload

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if "entry" in kwargs and self.kind == "command":
            raise OperationError(
                f"{self.name}: do not pass `entry`; the replica supplies it when it applies "
                "the command"
            )
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise OperationError(
                f"{self.name}: {e}; the signature is {self.name}{self.signature}"
            ) from None
        bound.apply_defaults()
        return tuple(bound.arguments[p] for p in self.params)

    def _culprit(self, args: tuple[Any, ...]) -> str | None:
        """Name the first argument that does not round-trip to its annotation (error path)."""
        for name, annotation, value in zip(self.params, self.types, args, strict=True):
            try:
                msgspec.msgpack.decode(_encode(value), type=annotation)
            except _DECODE_ERRORS:  # encoding or decoding: this argument is the culprit
                return f"argument {name!r} ({_type_name(annotation)}, got {type(value).__name__})"
        return None


def command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Declare an ordered update. It must be deterministic: the same state, arguments and
    `entry` give the same result and new state at every replica (no clock, no randomness, no
    iteration over unordered sets that feeds the result)."""
    return _mark(function, "command")


def query(function: Callable[..., Any]) -> Callable[..., Any]:
    """Declare a read served by one member. It must not change the state."""
    return _mark(function, "query")


def _mark(function: Any, kind: Kind) -> Any:
    if isinstance(function, (staticmethod, classmethod, property)):
        raise DeclarationError(
            f"@{kind} decorates a plain method; remove @{type(function).__name__} (operations "
            "run on the instance)"
        )
    if not inspect.isfunction(function):
        raise DeclarationError(f"@{kind} decorates a method (a function), not {function!r}")
    if getattr(function, "_smr_kind", kind) != kind:
        raise DeclarationError(f"{function.__name__} is declared both a command and a query")
    function._smr_kind = kind  # type: ignore[attr-defined]
    return function


def _kind_of(value: Any) -> Kind | None:
    return getattr(value, "_smr_kind", None) if inspect.isfunction(value) else None


def _type_name(annotation: Any) -> str:
    return inspect.formatannotation(annotation)


def _custom_type(annotation: Any) -> type | None:
    """A class inside `annotation` that msgspec would only encode with hooks, or None.

    msgspec accepts such annotations when a decoder is built and fails only when a value is
    encoded, so we look for them at declaration time instead."""
    seen: set[int] = set()
    stack: list[Any] = [msgspec.inspect.type_info(annotation)]
    while stack:
        node = stack.pop()
        if isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, msgspec.inspect.Field):
            stack.append(node.type)
        elif isinstance(node, msgspec.inspect.CustomType):
            return node.cls
        elif isinstance(node, msgspec.inspect.Type) and id(node) not in seen:
            seen.add(id(node))
            stack.extend(getattr(node, f) for f in node.__struct_fields__)
    return None


def _operation(cls: type, op_id: int, name: str, function: Any, kind: Kind) -> Operation:
    where = f"{cls.__name__}.{name}"
    if name.startswith("_"):
        raise DeclarationError(f"{where}: an operation's name cannot start with '_'; rename it")
    if name in _RESERVED:
        raise DeclarationError(
            f"{where}: the name is reserved by StateMachine; rename the operation"
        )
    signature = inspect.signature(function)
    try:
        hints = get_type_hints(function)
    except Exception as e:
        raise DeclarationError(f"{where}: cannot resolve its annotations ({e})") from None
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise DeclarationError(f"{where}: an operation is a method; its first parameter is self")
    params: list[str] = []
    types: list[Any] = []
    wants_entry = False
    for p in parameters[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DeclarationError(
                f"{where}: *args and **kwargs cannot be encoded; name each argument"
            )
        if p.name == "entry":
            if kind != "command" or p.kind is not p.KEYWORD_ONLY:
                raise DeclarationError(
                    f"{where}: `entry` is reserved for commands, as a keyword-only parameter "
                    "(`*, entry: Entry`)"
                )
            if p.default is not p.empty:
                raise DeclarationError(f"{where}: `entry` is always supplied; drop its default")
            wants_entry = True
            continue
        if p.name not in hints:
            raise DeclarationError(
                f"{where}: annotate parameter {p.name!r} so its arguments can be encoded"
            )
        params.append(p.name)
        types.append(hints[p.name])
    returns = hints.get("return", Any)
    for what, annotation in [*(("an argument", t) for t in types), ("a return", returns)]:
        custom = _custom_type(annotation)
        if custom is not None:
            raise DeclarationError(
                f"{where}: {what} type msgspec cannot encode ({custom.__name__}); "
                + ("results travel between processes, so return" if what == "a return" else "use")
                + " builtins, msgspec Structs or dataclasses"
            )
    try:
        # Field names are positional placeholders: an operation's wire form is an array, so a
        # parameter may be called anything (even a name msgspec reserves for Struct fields).
        args_type = msgspec.defstruct(
            f"{cls.__name__}_{name}",
            [(f"a{i}", t) for i, t in enumerate(types)],
            array_like=True,
            tag=op_id,
            forbid_unknown_fields=True,  # an extra argument is a malformed payload
            frozen=True,
            gc=False,  # decoded arguments cannot form cycles; skip GC tracking on the hot path
        )
        check_args = msgspec.msgpack.Decoder(args_type).decode
    except (TypeError, ValueError) as e:
        raise DeclarationError(
            f"{where}: an argument type msgspec cannot encode ({e}); use builtins, "
            "msgspec Structs or dataclasses"
        ) from None
    try:
        decode_result = msgspec.msgpack.Decoder(returns).decode
    except (TypeError, ValueError) as e:
        raise DeclarationError(
            f"{where}: a return type msgspec cannot encode ({e}); results travel between "
            "processes, so return builtins, msgspec Structs or dataclasses"
        ) from None
    caller_view = signature.replace(
        parameters=[p for p in parameters[1:] if p.name != "entry"], return_annotation=returns
    )
    plain_positional = all(
        p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.POSITIONAL_ONLY
        for p in caller_view.parameters.values()
    )
    return Operation(
        id=op_id,
        name=name,
        kind=kind,
        function=function,
        params=tuple(params),
        types=tuple(types),
        wants_entry=wants_entry,
        returns=returns,
        signature=caller_view,
        args_type=args_type,
        fast_arity=len(params) if plain_positional else -1,
        keyword_only=tuple(
            p.name for p in caller_view.parameters.values() if p.kind is p.KEYWORD_ONLY
        ),
        check_args=check_args,
        decode_result=decode_result,
    )


class _Namespace(dict):
    """A class body that refuses to define an operation's name twice (Python would silently
    keep only the last definition, dropping an operation and shifting the ids after it)."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self and (_kind_of(self[key]) or _kind_of(value)) and self[key] is not value:
            raise DeclarationError(
                f"{self.get('__qualname__', '?')}.{key} is defined twice; give each operation "
                "its own name"
            )
        super().__setitem__(key, value)


class _StateMachineType(type):
    @classmethod
    def __prepare__(  # type: ignore[override]  # positional names, and a dict of our own
        mcs, name: str, bases: tuple[type, ...], **kwargs: Any
    ) -> dict[str, Any]:
        return _Namespace()


def _unavailable(kind: str, cls_name: str) -> Callable[[bytes], Any]:
    def decode(payload: bytes) -> Any:
        raise msgspec.ValidationError(f"{cls_name} declares no {kind}s")

    return decode


def _refuse_setattr(self: Any, name: str, value: Any) -> None:
    raise QueryMutationError(f"assigned self.{name}")


def _refuse_delattr(self: Any, name: str) -> None:
    raise QueryMutationError(f"deleted self.{name}")


class StateMachine(metaclass=_StateMachineType):
    """A replicated type. Subclass it, declare operations with `@command` and `@query`, and
    implement `snapshot` and `restore`.

    The replica calls `apply(payload, entry)` for every ordered command and
    `run_query(payload)` for local reads; clients build payloads with `encode_command` and
    `encode_query`, and results travel as `encode_result` / `decode_result`.
    """

    operations: ClassVar[tuple[Operation, ...]] = ()
    # Also compare digests around every query (the simulator and tests set it, on the class or
    # on one instance): it catches in-place changes that the assignment guard cannot see.
    check_queries: bool = False

    # Dispatch tables, rebuilt for every subclass (see `__init_subclass__`).
    _by_name: ClassVar[dict[str, Operation]] = {}
    # msgspec decoders' `decode` (bytes -> the operation's Struct); Any, since a Callable
    # class variable would be taken for a method when read through an instance
    _decode_command: ClassVar[Any]
    _decode_query: ClassVar[Any]
    _commands: ClassVar[dict[type, tuple[Callable[..., Any], bool, tuple[str, ...]]]] = {}
    _queries: ClassVar[dict[type, tuple[Callable[..., Any], str, tuple[str, ...]]]] = {}
    _guard_class: ClassVar[type]

    def __init_subclass__(cls, _guarding: type | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _guarding is not None:
            return  # the query guard of `_guarding` (below): shares its tables
        own = {name: value for name, value in cls.__dict__.items() if not name.startswith("__")}
        for name, value in own.items():
            inner = getattr(value, "__func__", None) or getattr(value, "fget", None)
            if _kind_of(inner):
                raise DeclarationError(
                    f"{cls.__name__}.{name}: an operation is a plain method; remove "
                    f"@{type(value).__name__}"
                )
            if name in _SEALED:
                raise DeclarationError(
                    f"{cls.__name__}.{name} is StateMachine's own; do not override it (rename "
                    "your method)"
                )
        ops = list(cls.operations)  # the first base's, by the MRO
        for base in cls.__bases__:
            theirs = [op.name for op in getattr(base, "operations", ())]
            if theirs != [op.name for op in ops[: len(theirs)]]:
                # Ids are positions: two bases with their own operations would both claim them.
                raise DeclarationError(
                    f"{cls.__name__}: bases {cls.__bases__[0].__name__} and {base.__name__} "
                    "both declare operations; inherit from one and compose the other"
                )
        by_name = {op.name: op for op in ops}
        for name, value in own.items():
            kind = _kind_of(value)
            inherited = by_name.get(name)
            if inherited is not None:
                # An override replaces the implementation and keeps the id, so replicas and
                # clients built from the base class still agree on the wire.
                if kind != inherited.kind:
                    raise DeclarationError(
                        f"{cls.__name__}.{name} overrides the {inherited.kind} {name!r}; "
                        f"decorate it with @{inherited.kind} (or choose another name)"
                    )
                ops[inherited.id] = _operation(cls, inherited.id, name, value, kind)
            elif kind is not None:
                ops.append(_operation(cls, len(ops), name, value, kind))
                by_name[name] = ops[-1]
        cls.operations = tuple(ops)
        cls._by_name = {op.name: op for op in ops}
        assert all(op.id == i for i, op in enumerate(ops)), "operation ids are their positions"
        commands = [op for op in ops if op.kind == "command"]
        queries = [op for op in ops if op.kind == "query"]
        cls._commands = {
            op.args_type: (op.function, op.wants_entry, op.keyword_only) for op in commands
        }
        cls._queries = {op.args_type: (op.function, op.name, op.keyword_only) for op in queries}
        # One decoder per kind over the union of its operations' tagged Structs: a single C
        # call reads the id, checks every argument and builds the Struct we dispatch on.
        cls._decode_command = _union_decoder(commands, "command", cls.__name__)
        cls._decode_query = _union_decoder(queries, "query", cls.__name__)
        # During a query the instance is switched to this subclass, which refuses attribute
        # assignment; commands thus pay nothing for the guard.
        meta: Any = type(cls)
        cls._guard_class = meta(
            cls.__name__,
            (cls,),
            {
                "__slots__": (),
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__setattr__": _refuse_setattr,
                "__delattr__": _refuse_delattr,
            },
            _guarding=cls,
        )

    # -- encoding -------------------------------------------------------------------------------

    @classmethod
    def operation(cls, name: str) -> Operation:
        """The operation called `name`, or `OperationError` listing the ones that exist."""
        op = cls._by_name.get(name)
        if op is None:
            known = ", ".join(op.name for op in cls.operations) or "none"
            raise OperationError(f"{cls.__name__} has no operation {name!r} (it has: {known})")
        return op

    @classmethod
    def _op(cls, name: str, kind: Kind) -> Operation:
        op = cls._by_name.get(name)
        if op is not None and op.kind == kind:
            return op
        if op is not None:
            raise OperationError(f"{cls.__name__}.{name} is a {op.kind}, not a {kind}")
        known = ", ".join(o.name for o in cls.operations if o.kind == kind) or "none"
        kinds = "commands" if kind == "command" else "queries"
        raise OperationError(f"{cls.__name__} has no {kind} {name!r} (its {kinds}: {known})")

    @classmethod
    def encode_command(cls, name: str, /, *args: Any, **kwargs: Any) -> bytes:
        """The payload of command `name` called with these arguments (never `entry`)."""
        return cls._op(name, "command").encode(args, kwargs)

    @classmethod
    def encode_query(cls, name: str, /, *args: Any, **kwargs: Any) -> bytes:
        """The payload of query `name` called with these arguments."""
        return cls._op(name, "query").encode(args, kwargs)

    @classmethod
    def decode_command(cls, payload: bytes | memoryview) -> tuple[str, dict[str, Any]]:
        """(operation name, {parameter: value}) of a command payload of this type (what
        `encode_command` made): for watches and `smr log dump`. `OperationError` if it is not
        one of this type's commands."""
        try:
            args = cls._decode_command(payload)
        except _DECODE_ERRORS as e:
            raise cls._malformed(payload, "command", e) from None
        for op in cls.operations:
            if op.kind == "command" and type(args) is op.args_type:
                return op.name, dict(zip(op.params, astuple(args), strict=True))
        raise OperationError(f"{cls.__name__}: a payload of no known command")  # pragma: no cover

    @staticmethod
    def encode_result(value: Any) -> bytes:
        """A result as bytes, to travel from the replica to the caller."""
        try:
            return _encode(value)
        except _ENCODE_ERRORS as e:
            raise OperationError(
                f"a result of type {type(value).__name__} cannot be encoded ({e}); return "
                "builtins, msgspec Structs or dataclasses"
            ) from None

    @classmethod
    def decode_result(cls, data: bytes, operation: str | None = None) -> Any:
        """A result from `encode_result`. Given the operation's name it is decoded to the
        operation's return annotation (bytes stay bytes, tuples and Structs come back as
        such); without one it is plain MessagePack (arrays become lists)."""
        decode = _decode_any if operation is None else cls.operation(operation).decode_result
        try:
            return decode(data)
        except _DECODE_ERRORS as e:
            what = f"{cls.__name__}.{operation}" if operation else "an operation"
            raise OperationError(f"a malformed result of {what} ({e})") from None

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """The operations for humans and the CLI: id, name, kind, parameters, return type,
        whether the command receives its `entry`, and the first line of its docstring."""
        described = []
        for op in cls.operations:
            parameters = []
            for name, annotation in zip(op.params, op.types, strict=True):
                p = op.signature.parameters[name]
                parameter: dict[str, Any] = {"name": name, "type": _type_name(annotation)}
                if p.default is not p.empty:
                    parameter["default"] = repr(p.default)
                parameters.append(parameter)
            doc = inspect.getdoc(op.function) or ""
            described.append(
                {
                    "id": op.id,
                    "name": op.name,
                    "kind": op.kind,
                    "parameters": parameters,
                    "returns": _type_name(op.returns),
                    "entry": op.wants_entry,
                    "doc": doc.splitlines()[0] if doc else "",
                }
            )
        return described

    # -- dispatch -------------------------------------------------------------------------------

    def apply(self, payload: bytes | memoryview, entry: Entry) -> Any:
        """Decode an ordered command, apply it with `entry`, and return its result.

        A malformed payload raises `OperationError` and leaves the state untouched."""
        try:
            args = self._decode_command(payload)
        except _DECODE_ERRORS as e:
            raise self._malformed(payload, "command", e) from None
        function, wants_entry, keyword_only = self._commands[type(args)]
        if keyword_only:
            return _call(
                self, function, astuple(args), keyword_only, entry if wants_entry else None
            )
        if wants_entry:
            return function(self, *astuple(args), entry=entry)
        return function(self, *astuple(args))

    def apply_at(self, payload: bytes | memoryview, version: int, timestamp_ns: int) -> Any:
        """`apply(payload, Entry(version, timestamp_ns))`, building the `Entry` only for an
        operation that takes one (the runtime's path: an `Entry` per command cost a quarter of a
        small command's apply)."""
        try:
            args = self._decode_command(payload)
        except _DECODE_ERRORS as e:
            raise self._malformed(payload, "command", e) from None
        function, wants_entry, keyword_only = self._commands[type(args)]
        entry = Entry(version, timestamp_ns) if wants_entry else None
        if keyword_only:
            return _call(self, function, astuple(args), keyword_only, entry)
        if entry is not None:
            return function(self, *astuple(args), entry=entry)
        return function(self, *astuple(args))

    def run_query(self, payload: bytes) -> Any:
        """Decode a query and run it on this member's state; return its result.

        Assigning or deleting an attribute of `self` during the query raises
        `QueryMutationError`; with `check_queries` set, so does any change to the digest.
        The guard switches this instance's class while the query runs, so the runtime must
        not apply a command to the same instance meanwhile (it must not anyway: the query
        would read a state half-way through a command)."""
        try:
            args = self._decode_query(payload)
        except _DECODE_ERRORS as e:
            raise self._malformed(payload, "query", e) from None
        function, name, keyword_only = self._queries[type(args)]
        cls = type(self)
        if cls._guard_class is cls:
            raise OperationError(f"{cls.__name__}.{name}: run_query was called inside a query")
        before = self.digest() if self.check_queries else None
        object.__setattr__(self, "__class__", cls._guard_class)
        try:
            if keyword_only:
                result = _call(self, function, astuple(args), keyword_only, None)
            else:
                result = function(self, *astuple(args))
        except QueryMutationError as e:
            raise QueryMutationError(
                f"{cls.__name__}.{name} is a query but {e}; queries must not change state "
                "(make it a @command)"
            ) from None
        finally:
            object.__setattr__(self, "__class__", cls)
        if before is not None and self.digest() != before:
            raise QueryMutationError(
                f"{cls.__name__}.{name} is a query but changed the state; make it a @command"
            )
        return result

    @classmethod
    def _malformed(
        cls, payload: bytes | memoryview, kind: Kind, error: Exception
    ) -> OperationError:
        """Say what is wrong with a payload that did not decode (error path only)."""
        try:
            raw = _decode_any(payload)
        except _DECODE_ERRORS:
            return OperationError(f"{cls.__name__}: a malformed {kind} payload ({error})")
        if not isinstance(raw, list) or not raw or type(raw[0]) is not int:
            return OperationError(
                f"{cls.__name__}: a {kind} payload is [operation id, arguments...], not {raw!r:.80}"
            )
        op_id = raw[0]
        if not 0 <= op_id < len(cls.operations):
            return OperationError(f"{cls.__name__}: no operation with id {op_id}")
        op = cls.operations[op_id]
        if op.kind != kind:
            return OperationError(f"{cls.__name__}.{op.name} is a {op.kind}, not a {kind}")
        return OperationError(f"{cls.__name__}.{op.name}: malformed arguments ({error})")

    # -- state ----------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as bytes, deterministic: equal states give equal bytes."""
        raise DeclarationError(
            f"{type(self).__name__} must implement snapshot() -> bytes and restore(data) to be "
            "replicated"
        )

    def restore(self, data: bytes) -> None:
        """Replace the state with one from `snapshot()`."""
        raise DeclarationError(
            f"{type(self).__name__} must implement restore(data: bytes) (and snapshot) to be "
            "replicated"
        )

    def digest(self) -> str:
        """The hex SHA-256 of the snapshot: replicas in the same state have the same digest."""
        return hashlib.sha256(self.snapshot()).hexdigest()


def _call(
    machine: StateMachine,
    function: Callable[..., Any],
    values: tuple[Any, ...],
    keyword_only: tuple[str, ...],
    entry: Entry | None,
) -> Any:
    """Call an operation with keyword-only parameters (the wire form is positional)."""
    split = len(values) - len(keyword_only)
    kwargs = dict(zip(keyword_only, values[split:], strict=True))
    if entry is not None:
        kwargs["entry"] = entry
    return function(machine, *values[:split], **kwargs)


def _union_decoder(ops: list[Operation], kind: str, cls_name: str) -> Callable[[bytes], Any]:
    if not ops:
        return _unavailable(kind, cls_name)
    union = ops[0].args_type if len(ops) == 1 else Union[tuple(op.args_type for op in ops)]  # noqa: UP007
    return msgspec.msgpack.Decoder(union).decode


# Every public name of StateMachine: an operation cannot take one. `_SEALED` are the ones a
# subclass must not override either (the dispatch and encoding machinery).
_RESERVED = frozenset(name for name in vars(StateMachine) if not name.startswith("_")) | {"entry"}
_SEALED = _RESERVED - {"snapshot", "restore", "digest", "check_queries", "entry"}
