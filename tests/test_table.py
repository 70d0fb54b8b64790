"""The shared state table: layout, own-row writes, pushes, peer writes and monotonicity."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.core.errors import PeerProtocolError
from smr.core.table import Layout, Table, byte_slots, counter, flag, vector

LAYOUT = Layout(
    (
        counter("seq_num"),
        flag("wedged"),
        vector("num_received", 3),
        byte_slots("slots", 37),  # an odd size: the next column must still be word aligned
        counter("delivered_num"),
    )
)


def pair():
    a = Table(LAYOUT, [10, 20, 30], 10, strict=True)
    b = Table(LAYOUT, [10, 20, 30], 20, strict=True)
    return a, b


def test_layout_is_word_aligned_and_cache_line_padded():
    for placed in LAYOUT.placed.values():
        assert placed.offset % 8 == 0
    assert LAYOUT["delivered_num"].offset == LAYOUT["slots"].offset + 40
    assert LAYOUT.row_bytes % 64 == 0
    assert LAYOUT.row_bytes >= LAYOUT["delivered_num"].end


def test_push_copies_own_row_into_peer_copy():
    a, b = pair()
    a.set("seq_num", 7)
    a.vset("num_received", 2, 4)
    a.bset("slots", 3, b"hello")
    for w in a.push(["seq_num", "num_received", "slots"]):
        b.apply_write(a.my_row, w.offset, w.data)
    assert b.get(0, "seq_num") == 7
    assert b.vrow(0, "num_received") == [0, 0, 4]
    assert b.bget(0, "slots", 3, 8) == b"hello"
    assert b.get(1, "seq_num") == 0  # b's own row is untouched


def test_adjacent_columns_are_merged_into_one_write():
    a, _ = pair()
    writes = a.push(["seq_num", "wedged", "num_received"])
    assert len(writes) == 1
    assert writes[0].offset == 0 and len(writes[0].data) == 8 * 5
    assert len(a.push(["seq_num", "delivered_num"])) == 2


def test_push_bytes_sends_only_the_changed_slot_range():
    a, b = pair()
    a.bset("slots", 10, b"xyz")
    w = a.push_bytes("slots", 10, 13)
    assert w.offset % 8 == 0 and len(w.data) == 8  # widened to the word holding bytes 10..12
    b.apply_write(0, w.offset, w.data)
    assert b.bget(0, "slots", 10, 13) == b"xyz"


def test_own_counters_and_flags_never_go_back():
    a, _ = pair()
    a.set("seq_num", 5)
    with pytest.raises(AssertionError, match="decrease"):
        a.set("seq_num", 4)
    a.set("wedged", 1)
    with pytest.raises(AssertionError):
        a.set("wedged", 0)
    a.vset("num_received", 1, 3)
    with pytest.raises(AssertionError):
        a.vset("num_received", 1, 2)


def test_strict_table_rejects_a_peer_moving_a_counter_back():
    a, b = pair()
    a.set("seq_num", 9)
    (w,) = a.push(["seq_num"])
    b.apply_write(0, w.offset, w.data)
    with pytest.raises(PeerProtocolError, match="back from 9 to 2"):
        b.apply_write(0, w.offset, (2).to_bytes(8, "little", signed=True))


@pytest.mark.parametrize(
    "row,offset,size",
    [(1, 0, 8), (3, 0, 8), (-1, 0, 8), (0, -8, 8), (0, 4, 8), (0, LAYOUT.row_bytes - 8, 16)],
)
def test_bad_peer_writes_are_peer_protocol_errors(row, offset, size):
    _, b = pair()  # b is row 1
    with pytest.raises(PeerProtocolError):
        b.apply_write(row, offset, bytes(size))


def test_check_catches_a_value_that_fell_behind_the_tables_back():
    a, _ = pair()
    a.set("delivered_num", 8)
    a._check()
    word = a.layout["delivered_num"].word
    a.words[word] = 3  # memory corrupted or a bug that bypassed set()
    with pytest.raises(AssertionError, match="fell from 8 to 3"):
        a._check()


def test_check_catches_a_flag_that_is_not_boolean():
    a, _ = pair()
    a.words[a.layout["wedged"].word] = 2
    with pytest.raises(AssertionError, match="flag wedged"):
        a._check()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["seq_num", "delivered_num", "num_received", "wedged"]),
            st.integers(0, 5),
            st.integers(0, 2),
        ),
        max_size=40,
    )
)
def test_fifo_pushes_leave_the_peer_copy_equal_to_the_owner_row(steps):
    a, b = pair()
    for name, raise_by, index in steps:
        if name == "num_received":
            a.vset(name, index, a.vget(0, name, index) + raise_by)
        elif name == "wedged":
            a.set(name, 1)
        else:
            a.set(name, a.get(0, name) + raise_by)
        for w in a.push([name]):
            b.apply_write(0, w.offset, w.data)
        b._check()
    assert b.row_bytes_of(0) == a.row_bytes_of(0)
