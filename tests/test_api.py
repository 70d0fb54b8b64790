"""The StateMachine API: declaration, encoding, dispatch, query guards and malformed payloads."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.api import (
    DeclarationError,
    Entry,
    OperationError,
    QueryMutationError,
    StateMachine,
    command,
    query,
)
from smr.statemachines import KVStore


class Register(StateMachine):
    def __init__(self):
        self.value = 0
        self.stamps = []

    @command
    def set(self, value: int, *, entry: Entry) -> int:
        previous, self.value = self.value, value
        self.stamps.append((entry.version, entry.timestamp_ns))
        return previous

    @command
    def add(self, delta: int = 1) -> int:
        self.value += delta
        return self.value

    @query
    def get(self) -> int:
        return self.value

    @query
    def sneaky(self) -> int:
        self.value += 1  # a query that mutates
        return self.value

    @query
    def sneaky_in_place(self) -> int:
        self.stamps.append(1)  # mutates without assignment
        return 0

    def snapshot(self) -> bytes:
        return repr((self.value, self.stamps)).encode()


def test_operations_have_stable_ids_in_declaration_order():
    assert [(op.id, op.name, op.kind) for op in Register.operations[:3]] == [
        (0, "set", "command"),
        (1, "add", "command"),
        (2, "get", "query"),
    ]
    assert Register.describe()[0] == {"name": "set", "kind": "command", "parameters": ["value"]}


def test_commands_receive_their_entry_and_callers_never_pass_it():
    r = Register()
    assert r.apply(Register.encode_command("set", 5), Entry(7, 11)) == 0
    assert r.stamps == [(7, 11)]
    assert r.apply(Register.encode_command("add"), Entry(8, 12)) == 6
    assert r.run_query(Register.encode_query("get")) == 6
    with pytest.raises(OperationError, match="entry"):
        Register.encode_command("set", 5, entry=Entry(1, 1))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: Register.encode_command("nope"), "no command 'nope'"),
        (lambda: Register.encode_command("get"), "is a query"),
        (lambda: Register.encode_query("add"), "is a command"),
        (lambda: Register.encode_command("set", "five"), "wrong type"),
        (lambda: Register.encode_command("set"), "missing"),
        (lambda: Register.encode_command("add", 1, 2), "too many"),
    ],
)
def test_call_errors_are_clear(call, message):
    with pytest.raises(OperationError, match=message):
        call()


def test_a_query_that_assigns_is_refused_always_and_in_place_changes_when_checking():
    r = Register()
    with pytest.raises(QueryMutationError, match="assigned"):
        r.run_query(Register.encode_query("sneaky"))
    assert r.run_query(Register.encode_query("sneaky_in_place")) == 0  # not checked by default
    r.check_queries = True
    with pytest.raises(QueryMutationError, match="changed the state"):
        r.run_query(Register.encode_query("sneaky_in_place"))


def test_declaration_errors():
    with pytest.raises(DeclarationError, match="reserved"):

        class A(StateMachine):
            @command
            def apply(self, x: int) -> None: ...

    with pytest.raises(DeclarationError, match="annotate"):

        class B(StateMachine):
            @command
            def put(self, x) -> None: ...

    with pytest.raises(DeclarationError, match=r"\*args"):

        class C(StateMachine):
            @command
            def put(self, *xs: int) -> None: ...

    with pytest.raises(DeclarationError, match="keyword-only"):

        class D(StateMachine):
            @query
            def get(self, *, entry: Entry) -> None: ...

    with pytest.raises(DeclarationError, match="decorates a function"):
        command(5)


def test_snapshot_is_required():
    class NoSnap(StateMachine):
        @command
        def x(self) -> None: ...

    with pytest.raises(NotImplementedError, match="snapshot"):
        NoSnap().digest()


def test_results_round_trip():
    assert StateMachine.decode_result(StateMachine.encode_result({"a": [1, b"x"]})) == {
        "a": [1, b"x"]
    }
    with pytest.raises(OperationError, match="cannot be encoded"):
        StateMachine.encode_result(object())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_payloads_are_applied_or_refused_with_operation_error(payload):
    kv = KVStore()
    with contextlib.suppress(OperationError):
        kv.apply(payload, Entry(1, 1))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["put", "append"]), st.text(max_size=8), st.binary(max_size=16))
def test_encode_decode_round_trip_byte_by_byte_truncation_is_refused(op, key, value):
    payload = KVStore.encode_command(op, key, value)
    kv = KVStore()
    kv.apply(payload, Entry(1, 1))
    for cut in range(len(payload)):
        with pytest.raises(OperationError):
            KVStore().apply(payload[:cut], Entry(1, 1))
    with pytest.raises(OperationError):
        KVStore().apply(payload + b"\x00", Entry(1, 1))
