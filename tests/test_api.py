"""The StateMachine API: declaration, encoding, dispatch, query guards and malformed payloads."""

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.api import (
    DeclarationError,
    Entry,
    OperationError,
    QueryMutationError,
    StateMachine,
    StateMachineError,
    command,
    query,
)
from smr.statemachines import KVStore


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int


class Register(StateMachine):
    def __init__(self):
        self.value = 0
        self.stamps = []

    @command
    def set(self, value: int, *, entry: Entry) -> int:
        """Set the value; returns the previous one."""
        previous, self.value = self.value, value
        self.stamps.append((entry.version, entry.timestamp_ns))
        return previous

    @command
    def add(self, delta: int = 1) -> int:
        self.value += delta
        return self.value

    @command
    def move(self, to: Point, *, scale: int = 1) -> Point:
        return Point(to.x * scale, to.y * scale)

    @command
    def scaled(self, by: int, *, offset: int = 0, entry: Entry) -> int:
        return self.value * by + offset + entry.version

    @query
    def get(self) -> int:
        return self.value

    @query
    def pair(self, name: str) -> tuple[str, int]:
        return (name, self.value)

    @query
    def sneaky(self) -> int:
        self.value += 1  # a query that assigns
        return self.value

    @query
    def sneaky_delete(self) -> int:
        del self.value
        return 0

    @query
    def sneaky_in_place(self) -> int:
        self.stamps.append((0, 0))  # mutates without assignment
        return 0

    @query
    def nested(self) -> int:
        return self.run_query(Register.encode_query("get"))

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode((self.value, self.stamps))

    def restore(self, data: bytes) -> None:
        self.value, stamps = msgspec.msgpack.decode(data)
        self.stamps = [tuple(s) for s in stamps]


class Register2(Register):
    @command
    def add(self, delta: int = 2) -> int:  # an override keeps its id
        self.value += 2 * delta
        return self.value

    @query
    def double(self) -> int:
        return 2 * self.value


def test_operations_have_stable_ids_in_declaration_order_inherited_first():
    assert [(op.id, op.name, op.kind) for op in Register.operations[:4]] == [
        (0, "set", "command"),
        (1, "add", "command"),
        (2, "move", "command"),
        (3, "scaled", "command"),
    ]
    assert [op.name for op in Register2.operations] == [
        *(op.name for op in Register.operations),
        "double",
    ]
    r = Register2()
    # A payload built from the base class reaches the override in the subclass.
    assert r.apply(Register.encode_command("add", 3), Entry(1, 1)) == 6
    assert Register.describe()[0] == {
        "id": 0,
        "name": "set",
        "kind": "command",
        "parameters": [{"name": "value", "type": "int"}],
        "returns": "int",
        "entry": True,
        "doc": "Set the value; returns the previous one.",
    }
    assert Register.describe()[1]["parameters"] == [
        {"name": "delta", "type": "int", "default": "1"}
    ]
    assert Register.operation("pair").kind == "query"
    with pytest.raises(OperationError, match="no operation 'nope'"):
        Register.operation("nope")


def test_commands_receive_their_entry_and_callers_never_pass_it():
    r = Register()
    assert r.apply(Register.encode_command("set", 5), Entry(7, 11)) == 0
    assert r.apply(Register.encode_command("set", value=6), Entry(8, 12)) == 5
    assert r.stamps == [(7, 11), (8, 12)]
    assert r.apply(Register.encode_command("add"), Entry(9, 13)) == 7  # the default travels
    assert r.run_query(Register.encode_query("get")) == 7
    with pytest.raises(OperationError, match="do not pass `entry`"):
        Register.encode_command("set", 5, entry=Entry(1, 1))


def test_struct_arguments_keyword_only_parameters_and_typed_results_round_trip():
    r = Register()
    r.value = 2
    assert r.apply(Register.encode_command("scaled", 3, offset=1), Entry(100, 1)) == 107
    assert r.apply(Register.encode_command("scaled", by=3), Entry(100, 1)) == 106
    r.value = 0
    result = r.apply(Register.encode_command("move", Point(1, 2), scale=3), Entry(1, 1))
    assert result == Point(3, 6)
    data = Register.encode_result(result)
    assert Register.decode_result(data, "move") == Point(3, 6)
    assert Register.decode_result(data) == {"x": 3, "y": 6}  # untyped: plain MessagePack
    pair = Register.encode_result(r.run_query(Register.encode_query("pair", "v")))
    assert Register.decode_result(pair, "pair") == ("v", 0)
    assert StateMachine.decode_result(StateMachine.encode_result({"a": [1, b"x"]})) == {
        "a": [1, b"x"]
    }


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: Register.encode_command("nope"), "has no command 'nope'"),
        (lambda: Register.encode_command("get"), "is a query, not a command"),
        (lambda: Register.encode_query("add"), "is a command, not a query"),
        (lambda: Register.encode_command("set", "five"), "argument 'value' \\(int, got str\\)"),
        (lambda: Register.encode_command("set", 1.5), "argument 'value'"),
        (lambda: Register.encode_command("move", (1, 2)), "argument 'to'"),
        (lambda: Register.encode_command("set"), "missing"),
        (lambda: Register.encode_command("add", 1, 2), "too many"),
        (lambda: Register.encode_command("add", delta=1, other=2), "unexpected keyword"),
        (lambda: Register.encode_command("move", Point(1, 2), 3), "too many"),  # keyword-only
        (lambda: Register.encode_command("set", object()), "cannot be encoded"),
        (lambda: Register.encode_command("set", 2**70), "cannot be encoded"),
        (lambda: Register.encode_query("pair", "\ud800"), "argument 'name'.*cannot be encoded"),
    ],
)
def test_call_errors_are_clear(call, message):
    with pytest.raises(OperationError, match=message):
        call()


def test_a_query_that_assigns_or_deletes_is_refused_always_and_in_place_changes_when_checking():
    r = Register()
    with pytest.raises(QueryMutationError, match=r"Register.sneaky is a query but assigned"):
        r.run_query(Register.encode_query("sneaky"))
    with pytest.raises(QueryMutationError, match=r"deleted self.value"):
        r.run_query(Register.encode_query("sneaky_delete"))
    assert type(r) is Register  # the guard is lifted after a refused query
    r.value = 4  # and assignment works again outside queries
    assert r.run_query(Register.encode_query("sneaky_in_place")) == 0  # not checked by default
    r.check_queries = True
    with pytest.raises(QueryMutationError, match="sneaky_in_place is a query but changed"):
        r.run_query(Register.encode_query("sneaky_in_place"))
    assert r.run_query(Register.encode_query("get")) == 4  # a clean query passes the check
    with pytest.raises(OperationError, match="inside a query"):
        r.run_query(Register.encode_query("nested"))


def test_declaration_errors():
    with pytest.raises(DeclarationError, match="reserved"):

        class A(StateMachine):
            @command
            def snapshot(self) -> None: ...

    with pytest.raises(DeclarationError, match="StateMachine's own"):

        class A2(StateMachine):
            def apply(self, payload, entry): ...

    with pytest.raises(DeclarationError, match="annotate parameter 'x'"):

        class B(StateMachine):
            @command
            def put(self, x) -> None: ...

    with pytest.raises(DeclarationError, match=r"\*args"):

        class C(StateMachine):
            @command
            def put(self, *xs: int) -> None: ...

    with pytest.raises(DeclarationError, match=r"\*args and \*\*kwargs"):

        class C2(StateMachine):
            @command
            def put(self, **xs: int) -> None: ...

    with pytest.raises(DeclarationError, match="reserved for commands"):

        class D(StateMachine):
            @query
            def get(self, *, entry: Entry) -> None: ...

    with pytest.raises(DeclarationError, match="keyword-only"):

        class D2(StateMachine):
            @command
            def put(self, entry: Entry) -> None: ...

    with pytest.raises(DeclarationError, match="cannot start with '_'"):

        class E(StateMachine):
            @command
            def _hidden(self) -> None: ...

    with pytest.raises(DeclarationError, match="defined twice"):

        class F(StateMachine):
            @command
            def put(self) -> None: ...

            @command
            def put(self, x: int) -> None: ...  # noqa: F811

    with pytest.raises(DeclarationError, match="overrides the command 'add'; decorate"):

        class G(Register):
            def add(self, delta: int = 1) -> int: ...

    with pytest.raises(DeclarationError, match="overrides the query 'get'"):

        class H(Register):
            @command
            def get(self) -> int: ...

    with pytest.raises(DeclarationError, match="argument type msgspec cannot encode"):

        class I(StateMachine):  # noqa: E742
            @command
            def put(self, x: contextlib.ExitStack) -> None: ...

    with pytest.raises(
        DeclarationError, match=r"argument type msgspec cannot encode \(ExitStack\)"
    ):

        class I2(StateMachine):
            @command
            def put(self, x: dict[str, list[contextlib.ExitStack | None]]) -> None: ...

    with pytest.raises(DeclarationError, match="return type msgspec cannot encode"):

        class J(StateMachine):
            @query
            def get(self) -> contextlib.ExitStack: ...

    with pytest.raises(DeclarationError, match="remove @staticmethod"):

        class K(StateMachine):
            @staticmethod
            @command
            def put() -> None: ...

    class Other(StateMachine):
        @command
        def other(self) -> None: ...

    with pytest.raises(DeclarationError, match="Register and Other both declare operations"):

        class L(Register, Other):
            pass

    class Mixed(Register2, Register):  # a base and its own subclass agree on the ids
        pass

    assert Mixed.operations == Register2.operations

    with pytest.raises(DeclarationError, match="remove @staticmethod"):
        command(staticmethod(lambda: None))
    with pytest.raises(DeclarationError, match="not 5"):
        command(5)

    def both(self) -> None: ...

    with pytest.raises(DeclarationError, match="both a command and a query"):
        query(command(both))
    assert issubclass(DeclarationError, StateMachineError)


class Tree(msgspec.Struct):
    label: str
    children: list["Tree"] = []


def test_recursive_and_any_typed_arguments_are_accepted_and_deep_nesting_refused():
    class Forest(StateMachine):
        @command
        def plant(self, tree: Tree) -> int:
            return len(tree.children)

        @command
        def anything(self, x: Any) -> Any:
            return x

    f = Forest()
    assert f.apply(Forest.encode_command("plant", Tree("a", [Tree("b")])), Entry(1, 1)) == 1
    assert f.apply(Forest.encode_command("anything", [1, {"k": b"v"}]), Entry(2, 2)) == [
        1,
        {"k": b"v"},
    ]
    deep = b"\x92\x01" + b"\x91" * 100_000 + b"\xc0"  # [1, [[[...]]]] 100k levels deep
    with pytest.raises(OperationError, match="malformed command payload"):
        f.apply(deep, Entry(3, 3))


def test_snapshot_and_restore_are_required():
    class NoSnap(StateMachine):
        @command
        def x(self) -> None: ...

    with pytest.raises(DeclarationError, match="must implement snapshot"):
        NoSnap().digest()
    with pytest.raises(DeclarationError, match="must implement restore"):
        NoSnap().restore(b"")


def test_a_machine_without_queries_refuses_query_payloads():
    class OnlyCommands(StateMachine):
        @command
        def x(self) -> int:
            return 1

    m = OnlyCommands()
    assert m.apply(OnlyCommands.encode_command("x"), Entry(1, 1)) == 1
    with pytest.raises(OperationError, match="has no query 'y' \\(its queries: none\\)"):
        OnlyCommands.encode_query("y")
    with pytest.raises(OperationError, match="x is a command, not a query"):
        m.run_query(OnlyCommands.encode_command("x"))


def test_results_that_do_not_encode_or_decode_are_operation_errors():
    with pytest.raises(OperationError, match="result of type object cannot be encoded"):
        StateMachine.encode_result(object())
    with pytest.raises(OperationError, match=r"malformed result of Register.get"):
        Register.decode_result(Register.encode_result("text"), "get")
    with pytest.raises(OperationError, match="malformed result"):
        StateMachine.decode_result(b"\xc1")


def test_malformed_payloads_say_what_is_wrong_and_leave_the_state_alone():
    r = Register()
    before = r.digest()
    cases = [
        (b"\xc1", "malformed command payload"),
        (msgspec.msgpack.encode({"op": 1}), "is \\[operation id, arguments...\\]"),
        (msgspec.msgpack.encode([]), "is \\[operation id, arguments...\\]"),
        (msgspec.msgpack.encode([99, 1]), "no operation with id 99"),
        (Register.encode_query("get"), "Register.get is a query, not a command"),
        (msgspec.msgpack.encode([0, "x"]), "Register.set: malformed arguments"),
        (msgspec.msgpack.encode([0, 1, 2]), "Register.set: malformed arguments"),  # extra
        (Register.encode_command("set", 1) + b"\x00", "malformed command payload"),
    ]
    for payload, message in cases:
        with pytest.raises(OperationError, match=message):
            r.apply(payload, Entry(1, 1))
    assert r.digest() == before
    with pytest.raises(OperationError, match=r"Register.set is a command, not a query"):
        r.run_query(Register.encode_command("set", 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_payloads_are_applied_or_refused_with_operation_error(payload):
    kv = KVStore()
    with contextlib.suppress(OperationError):
        kv.apply(payload, Entry(1, 1))
    with contextlib.suppress(OperationError):
        kv.run_query(payload)


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=4)
    | st.binary(max_size=4)
    | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(-2, 12), st.lists(_msgpack_values, max_size=4))
def test_well_formed_msgpack_with_wrong_shapes_is_refused_with_operation_error(op_id, args):
    # Random bytes rarely get past the first byte; these reach the id and argument checks.
    payload = msgspec.msgpack.encode([op_id, *args])
    for machine in (KVStore(), Register()):
        with contextlib.suppress(OperationError):
            machine.apply(payload, Entry(1, 1))
        # Register's sneaky queries refuse themselves: that is not a payload error.
        with contextlib.suppress(OperationError, QueryMutationError):
            machine.run_query(payload)


@settings(max_examples=200, deadline=None)
@given(_msgpack_values, _msgpack_values)
def test_whatever_encodes_is_applied(key, value):
    # Encoding validates exactly as decoding does: a payload a client could build is never
    # refused by a replica.
    try:
        payload = KVStore.encode_command("put", key, value)
    except OperationError:
        return
    assert KVStore().apply(payload, Entry(1, 1)) is None


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["put", "append"]), st.text(max_size=8), st.binary(max_size=16))
def test_encode_decode_round_trip_and_truncation_is_refused(op, key, value):
    payload = KVStore.encode_command(op, key, value)
    kv = KVStore()
    kv.apply(payload, Entry(1, 1))
    assert kv.run_query(KVStore.encode_query("get", key)) == value
    for cut in range(len(payload)):
        with pytest.raises(OperationError):
            KVStore().apply(payload[:cut], Entry(1, 1))
    with pytest.raises(OperationError):
        KVStore().apply(payload + b"\x00", Entry(1, 1))


def test_apply_at_is_apply_with_the_entry_built_only_where_wanted():
    calls = [
        ("set", (5,), {}),
        ("add", (2,), {}),
        ("move", (Point(1, 2),), {"scale": 3}),
        ("scaled", (2,), {"offset": 1}),
    ]
    a, b = Register(), Register()
    for version, (name, args, kwargs) in enumerate(calls, start=7):
        payload = Register.encode_command(name, *args, **kwargs)
        assert a.apply(payload, Entry(version, 100 + version)) == b.apply_at(
            payload, version, 100 + version
        )
    assert a.stamps == b.stamps == [(7, 107)] and a.value == b.value
    with pytest.raises(OperationError):
        b.apply_at(b"\xc1", 1, 1)
