"""The native table (`smr._native.Table`) against the reference (`smr.core.table.Table`).

The pure-Python table is the reference: these tests drive both with the same random sequences of
own-row writes, pushes, peer writes (bad ones too: rows and offsets out of range, non-monotone
values in strict mode, truncated and misaligned data) and reads, and compare every result, every
error type and message, and the whole table memory after every step. Then the simulator runs
seeds with the native table under the replica and must give the reference's digests.

Nothing here skips: when the extension did not build, every test fails and says so.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from native_ext import native  # every test below fails, saying why, if it did not build

from smr.core import replica as replica_module
from smr.core.errors import PeerProtocolError
from smr.core.table import (
    Column,
    ColumnKind,
    Layout,
    Table,
    Write,
    byte_slots,
    counter,
    flag,
    vector,
)
from smr.sim import SimConfig, run_seed

LAYOUT = Layout(
    (
        counter("seq_num"),
        flag("wedged"),
        vector("num_received", 3),
        byte_slots("slots", 37),
        counter("delivered_num"),
    )
)


def test_the_extension_is_built_and_importable():
    n = native()
    assert n.WORD_BYTES == 8 and n.ROW_ALIGN_BYTES == 64
    assert n.Table.__module__ == "smr._native"


def test_the_extension_is_not_older_than_its_sources():
    """An editable install does not rebuild the extension when native/ changes (`make
    native-check` does): testing a stale build would test other code than the sources."""
    built = Path(native().__file__)
    crate = Path(__file__).resolve().parents[1] / "native"
    sources = [*crate.glob("src/*.rs"), crate / "Cargo.toml", crate / "Cargo.lock"]
    newest = max(sources, key=lambda p: p.stat().st_mtime)
    assert built.stat().st_mtime >= newest.stat().st_mtime, (
        f"{built} is older than {newest}: `make native-check` (or "
        "`.venv/bin/python -m pip install --no-deps -e .`) rebuilds it"
    )


def test_attributes_are_the_reference_attributes():
    py = Table(LAYOUT, [10, 20, 30], 20, strict=True)
    nat = native().Table(LAYOUT, [10, 20, 30], 20, strict=True)
    for attr in ("members", "n_rows", "my_row", "row_bytes", "row_words", "strict"):
        assert getattr(nat, attr) == getattr(py, attr), attr
    assert nat.layout is LAYOUT
    assert bytes(nat.buf) == bytes(py.buf) and len(nat.buf) == 3 * LAYOUT.row_bytes
    assert nat.words.format == "q" and len(nat.words) == len(py.words)
    nat.strict = False
    assert nat.strict is False


def test_words_and_buf_are_views_of_the_native_memory():
    """Code that indexes `words` and `buf` directly (as multicast does) sees and makes the
    native table's values."""
    nat = native().Table(LAYOUT, [10, 20, 30], 20)
    i = nat.my_row * nat.row_words + LAYOUT["delivered_num"].word
    nat.words[i] = 41
    assert nat.get(1, "delivered_num") == 41
    nat.set("delivered_num", 42)
    assert nat.words[i] == 42
    base = nat.my_row * nat.row_bytes + LAYOUT["slots"].offset
    struct.pack_into("<q", nat.buf, base, 7)
    assert nat.bget(1, "slots", 0, 8) == struct.pack("<q", 7)
    assert nat.words is nat.words and nat.buf is nat.buf


def test_a_rust_panic_is_a_python_exception_not_an_abort():
    with pytest.raises(BaseException, match="deliberate panic") as e:
        native()._panic_for_test()
    assert type(e.value).__name__ == "PanicException"


def test_peer_input_of_any_size_and_type_is_a_peer_protocol_error():
    nat = native().Table(LAYOUT, [10, 20, 30], 20, strict=True)
    py = Table(LAYOUT, [10, 20, 30], 20, strict=True)
    good = struct.pack("<q", 3)
    for row, offset, data in [
        (2**70, 0, good),
        (-(2**70), 0, good),
        (0, 2**70, good),
        (0, -(2**70), good),
        (1, 2**70, good),  # my own row: that error comes first, as in the reference
        (0, 4, good),
        (0, LAYOUT.row_bytes - 4, good),
        (0, 0, bytes(LAYOUT.row_bytes + 1)),
    ]:
        with pytest.raises(PeerProtocolError) as a:
            nat.apply_write(row, offset, data)
        with pytest.raises(PeerProtocolError) as b:
            py.apply_write(row, offset, data)
        assert str(a.value) == str(b.value)
    for data in (bytearray(good), memoryview(good)):
        nat.apply_write(0, 0, data)
        py.apply_write(0, 0, data)
    assert bytes(nat.buf) == bytes(py.buf)


# -- the differential test ------------------------------------------------------------------------

NAMES = [f"c{i}" for i in range(6)]


@st.composite
def layouts(draw) -> Layout:
    n = draw(st.integers(1, 6))
    columns = []
    for name in NAMES[:n]:
        kind = draw(st.sampled_from(list(ColumnKind)))
        length = {
            ColumnKind.VECTOR: draw(st.integers(1, 4)),
            ColumnKind.BYTES: draw(st.integers(1, 40)),
        }.get(kind, 1)
        columns.append(Column(name, kind, length))
    if all(c.kind is ColumnKind.BYTES for c in columns):
        # the reference's _check() needs a monotone column (itemgetter() of nothing fails)
        columns.append(counter("extra"))
    return Layout(tuple(columns))


def values() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(-2, 40), st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**70])
    )


def peer_data(layout: Layout) -> st.SearchStrategy[bytes]:
    """Whole int64 words of small values (monotone or not), possibly truncated, or raw bytes."""
    words = st.lists(st.integers(-20, 40), min_size=1, max_size=4).map(
        lambda ws: b"".join(struct.pack("<q", w) for w in ws)
    )
    truncated = st.tuples(words, st.integers(0, 7)).map(lambda t: t[0][: len(t[0]) - t[1]])
    whole_row = st.lists(st.integers(-3, 40), max_size=layout.row_words + 1).map(
        lambda ws: b"".join(struct.pack("<q", w) for w in ws)
    )
    return st.one_of(words, words, truncated, whole_row, st.binary(max_size=layout.row_bytes + 9))


@st.composite
def scenarios(draw):
    layout = draw(layouts())
    members = draw(
        st.lists(st.integers(0, 50), min_size=1, max_size=4, unique=True).filter(
            lambda m: len(m) > 1 or draw(st.integers(0, 9)) == 0
        )
    )
    me = draw(st.sampled_from(members))
    strict = draw(st.sampled_from([True, True, False]))
    n = len(members)
    names = st.sampled_from([*layout.placed, "nope"])
    rows = st.integers(0, n - 1)
    peers = st.sampled_from([r for r in range(n) if r != members.index(me)] or [0])
    small = st.integers(-2, 45)
    offsets = st.one_of(
        st.integers(0, layout.row_words - 1).map(lambda w: w * 8),
        st.integers(-2, layout.row_words + 1).map(lambda w: w * 8),
        st.integers(-9, layout.row_bytes),
    )
    op = st.one_of(
        st.tuples(st.just("set"), names, values()),
        st.tuples(st.just("set"), names, st.integers(0, 40)),
        st.tuples(st.just("vset"), names, st.integers(-1, 4), values()),
        st.tuples(st.just("bset"), names, small, st.binary(max_size=12)),
        st.tuples(st.just("push"), st.lists(names, max_size=4)),
        st.tuples(st.just("push_bytes"), names, small, small),
        st.tuples(st.just("push_row")),
        st.tuples(st.just("apply_write"), st.integers(-1, n), offsets, peer_data(layout)),
        st.tuples(st.just("apply_write"), peers, offsets, peer_data(layout)),
        st.tuples(st.just("apply_write"), peers, offsets, peer_data(layout)),
        st.tuples(st.just("apply_write"), peers, offsets, peer_data(layout)),
        st.tuples(st.just("get"), st.integers(0, n), names),
        st.tuples(st.just("vget"), st.integers(0, n), names, st.integers(-1, 4)),
        st.tuples(st.just("vrow"), rows, names),
        st.tuples(st.just("bget"), rows, names, small, small),
        st.tuples(st.just("column_min"), names, st.one_of(st.none(), st.lists(rows, max_size=3))),
        st.tuples(st.just("vcolumn_min"), names, st.integers(0, 3), st.none() | st.lists(rows)),
        st.tuples(st.just("row_bytes_of"), rows),
        st.tuples(st.just("words"), st.integers(0, n * layout.row_words - 1), st.integers(-2, 9)),
        st.tuples(st.just("_check")),
    )
    return layout, members, me, strict, draw(st.lists(op, min_size=5, max_size=60))


def run(table: Any, op: tuple) -> tuple:
    """One operation's outcome: its result, or its error's type and message."""
    name, *args = op
    try:
        if name == "words":  # a direct write through the int64 view, as multicast's are
            i, delta = args
            table.words[i] = table.words[i] + delta
            return ("ok", None)
        return ("ok", getattr(table, name)(*args))
    except (PeerProtocolError, AssertionError, KeyError, ValueError) as e:
        return ("error", type(e), str(e))
    except IndexError as e:  # the reference's message is memoryview's: compare the type only
        return ("error", type(e))


def out_of_reference_scope(layout: Layout, op: tuple) -> bool:
    """Inputs where the reference misbehaves and the native table is stricter on purpose:
    vset/vget/vcolumn_min/vrow on a byte column index past the column (the reference indexes
    by byte count and reads or writes the words that follow, the next row's too), and
    vcolumn_min checks no index at all (it reads whatever column follows)."""
    name = op[0]
    if name == "vcolumn_min":
        p = layout.placed.get(op[1])
        if p is not None and not 0 <= op[2] < p.column.length:
            return True
    if name in ("vset", "vget", "vrow", "vcolumn_min"):
        column = op[2] if name in ("vget", "vrow") else op[1]
        p = layout.placed.get(column)
        return p is not None and p.column.kind is ColumnKind.BYTES
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_native_and_reference_agree_on_every_operation(scenario):
    layout, members, me, strict, ops = scenario
    py = Table(layout, members, me, strict=strict)
    nat = native().Table(layout, members, me, strict=strict)
    for step, op in enumerate(ops):
        if out_of_reference_scope(layout, op):
            continue
        a, b = run(py, op), run(nat, op)
        assert a == b, f"step {step}: {op}: reference {a}, native {b}"
        what = a[1].__name__ if a[0] == "error" else "ok"
        if what == "PeerProtocolError" and " back from " in a[2]:
            what += " (monotone)"
        event(f"{op[0]}: {what}")  # --hypothesis-show-statistics shows the mix
        assert bytes(py.buf) == bytes(nat.buf), f"step {step}: {op}: the tables differ"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["seq_num", "wedged", "delivered_num"]), st.integers(0, 5)),
        max_size=30,
    ),
    st.lists(st.integers(0, 2), max_size=30),
)
def test_pushes_applied_at_peers_agree(sets, vsets):
    """A sender's pushes, applied at a reference and a native receiver (strict), give the same
    tables, and the receivers' copy of the sender's row is the sender's row."""
    sender = native().Table(LAYOUT, [10, 20, 30], 10)
    py = Table(LAYOUT, [10, 20, 30], 20, strict=True)
    nat = native().Table(LAYOUT, [10, 20, 30], 20, strict=True)
    for (name, delta), k in zip(sets, vsets + [0] * len(sets), strict=False):
        value = sender.get(0, name) + delta
        if name == "wedged":
            value = min(value, 1)
        sender.set(name, value)
        sender.vset("num_received", k, sender.vget(0, "num_received", k) + delta)
        sender.bset("slots", k, bytes([delta]) * 5)
        for w in (*sender.push([name, "num_received"]), sender.push_bytes("slots", k, k + 5)):
            assert isinstance(w, Write)
            py.apply_write(0, w.offset, w.data)
            nat.apply_write(0, w.offset, w.data)
        assert bytes(py.buf) == bytes(nat.buf)
        py._check()
        nat._check()
    assert nat.row_bytes_of(0) == sender.row_bytes_of(0) == py.row_bytes_of(0)


def test_check_on_a_layout_without_monotone_columns():
    """The native _check() accepts a table of byte slots only (the reference's raises TypeError
    there: it builds an itemgetter of no items)."""
    layout = Layout((byte_slots("ring", 16),))
    nat = native().Table(layout, [1, 2], 1, strict=True)
    nat.apply_write(1, 0, b"\xff" * 16)
    nat._check()
    nat._check()


# -- the simulator on the native table ------------------------------------------------------------

SIM_FAULTS = frozenset({"delay", "partition", "crash", "restart", "join"})


@pytest.mark.parametrize(
    "nodes, seed, workload, faults",
    [
        (3, 1, "frontier", SIM_FAULTS),
        (3, 2, "frontier", SIM_FAULTS),
        (5, 3, "kv", frozenset({"delay", "crash", "restart", "join", "leave"})),
        (5, 4, "bank", frozenset({"delay", "partition", "total"})),
        (3, 5, "bytes", frozenset({"delay", "crash", "restart"})),
    ],
)
def test_the_simulator_on_the_native_table_gives_the_reference_digests(
    monkeypatch, nodes, seed, workload, faults
):
    """The replica runs unchanged on the native table (its multicast indexes `words` and `buf`
    directly; the invariant checkers call `_check()` after every step): the same seed gives the
    same deliveries and the same schedule as on the reference."""
    config = SimConfig(nodes=nodes, seed=seed, workload=workload, faults=faults)
    reference = run_seed(config)
    monkeypatch.setattr(replica_module, "Table", native().Table)
    on_native = run_seed(config)
    assert reference.ok and on_native.ok, (reference.violation, on_native.violation)
    assert (on_native.digest, on_native.schedule_digest, on_native.steps) == (
        reference.digest,
        reference.schedule_digest,
        reference.steps,
    )
