"""The shared state table (SST): fixed-layout rows, one per member, written only by their owner.

This module owns the table's memory layout and the rules for changing it:

* Columns are declared once, as data (`Column`), and laid out in a `Layout`: int64 counters, bool
  flags (stored as int64 0/1), fixed-length int64 vectors (one entry per sender, per shard, ...),
  and fixed-size byte slots. Every value starts on an 8-byte boundary so no value straddles a word,
  and rows are padded to a 64-byte cache line (Derecho's #148: counters that straddled a line tore).
* A member writes only its own row (`set`, `vset`, `bset`). `push(columns)` returns the byte ranges
  of its row to copy into every peer's copy of the table (one-sided write semantics: the peer's
  copy of *our* row at this offset becomes these bytes). `apply_write(row, offset, data)` is the
  receiving side.
* Columns are monotone within an epoch: counters never decrease, flags never go from true back to
  false. Own-row writes assert it; peer writes are checked when the table is `strict` (the simulator
  turns it on) and `_check()` verifies the whole table against what it saw at the previous check.

A table lives for one epoch; the next epoch builds a new one.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from smr.core.errors import PeerProtocolError

WORD_BYTES = 8
ROW_ALIGN_BYTES = 64


class ColumnKind(Enum):
    COUNTER = "counter"  # int64, monotone non-decreasing
    FLAG = "flag"  # int64 0/1, monotone false -> true
    VECTOR = "vector"  # `length` int64 entries, each monotone
    BYTES = "bytes"  # `length` raw bytes, not monotone (a ring of slots)


@dataclass(frozen=True, slots=True)
class Column:
    """A column declaration: what it holds and how it may change."""

    name: str
    kind: ColumnKind
    length: int = 1  # entries for VECTOR, bytes for BYTES, 1 otherwise
    doc: str = ""

    def __post_init__(self) -> None:
        assert self.name.isidentifier(), self.name
        assert self.length >= 1, (self.name, self.length)
        if self.kind in (ColumnKind.COUNTER, ColumnKind.FLAG):
            assert self.length == 1, (self.name, self.length)

    @property
    def monotone(self) -> bool:
        return self.kind is not ColumnKind.BYTES

    @property
    def size_bytes(self) -> int:
        if self.kind is ColumnKind.BYTES:
            return _align(self.length, WORD_BYTES)
        return self.length * WORD_BYTES


def counter(name: str, doc: str = "") -> Column:
    return Column(name, ColumnKind.COUNTER, 1, doc)


def flag(name: str, doc: str = "") -> Column:
    return Column(name, ColumnKind.FLAG, 1, doc)


def vector(name: str, length: int, doc: str = "") -> Column:
    return Column(name, ColumnKind.VECTOR, length, doc)


def byte_slots(name: str, size_bytes: int, doc: str = "") -> Column:
    return Column(name, ColumnKind.BYTES, size_bytes, doc)


@dataclass(frozen=True, slots=True)
class Placed:
    """A column placed in the row: its byte offset and first word index."""

    column: Column
    offset: int  # bytes from the start of the row
    word: int  # offset // 8, for int64 access
    end: int  # offset + size in bytes


@dataclass(frozen=True)
class Layout:
    """The fixed row layout, computed once from column declarations in declaration order."""

    columns: tuple[Column, ...]
    placed: dict[str, Placed] = field(init=False)
    row_bytes: int = field(init=False)
    monotone_words: list[int] = field(init=False)  # word indices of monotone values, ascending

    def __post_init__(self) -> None:
        placed: dict[str, Placed] = {}
        offset = 0
        for column in self.columns:
            assert column.name not in placed, f"column {column.name!r} declared twice"
            assert offset % WORD_BYTES == 0
            placed[column.name] = Placed(
                column, offset, offset // WORD_BYTES, offset + column.size_bytes
            )
            offset += column.size_bytes
        object.__setattr__(self, "placed", placed)
        object.__setattr__(self, "row_bytes", max(_align(offset, ROW_ALIGN_BYTES), ROW_ALIGN_BYTES))
        object.__setattr__(
            self,
            "monotone_words",
            [
                w
                for p in placed.values()
                if p.column.monotone
                for w in range(p.word, p.end // WORD_BYTES)
            ],
        )

    @property
    def row_words(self) -> int:
        return self.row_bytes // WORD_BYTES

    def __getitem__(self, name: str) -> Placed:
        return self.placed[name]

    def column_at(self, offset: int) -> Placed | None:
        for p in self.placed.values():
            if p.offset <= offset < p.end:
                return p
        return None

    def describe(self) -> list[str]:
        """One line per column: name, kind, offset and size (for docs and `smr` inspection)."""
        return [
            f"{p.column.name:<24} {p.column.kind.value:<8} @{p.offset:<6} {p.column.size_bytes}B"
            for p in self.placed.values()
        ]


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


class Write(NamedTuple):
    """A one-sided write of a byte range of the writer's own row into a peer's copy.

    `offset` is relative to the start of the row; the receiver knows the row from the link the
    write arrived on (the source member). A NamedTuple: one per push, and a frozen dataclass's
    `__init__` cost more than the copy.
    """

    offset: int
    data: bytes


class Table:
    """One member's copy of the shared state table for one epoch.

    `members` are the member ids in rank order; row i belongs to members[i].
    """

    __slots__ = (
        "_floor",
        "_get_flags",
        "_get_mono",
        "_mono",
        "buf",
        "layout",
        "members",
        "my_row",
        "n_rows",
        "row_bytes",
        "row_words",
        "strict",
        "words",
    )

    def __init__(self, layout: Layout, members: Sequence[int], me: int, *, strict: bool = False):
        assert len(members) >= 1
        assert len(set(members)) == len(members), f"duplicate members {members}"
        assert me in members, (me, members)
        self.layout = layout
        self.members = tuple(members)
        self.n_rows = len(members)
        self.my_row = self.members.index(me)
        self.row_bytes = layout.row_bytes
        self.row_words = layout.row_words
        self.buf = bytearray(self.row_bytes * self.n_rows)
        self.words = memoryview(self.buf).cast("q")
        self.strict = strict
        self._floor: tuple[int, ...] | None = None
        self._mono: list[tuple[int, int, Placed]] = []
        self._get_mono: Callable[[Any], Any] | None = None
        self._get_flags: Callable[[Any], Any] | None = None

    # -- reads (any row) ------------------------------------------------------------------------

    def get(self, row: int, name: str) -> int:
        return self.words[row * self.row_words + self.layout.placed[name].word]

    def vget(self, row: int, name: str, index: int) -> int:
        p = self.layout.placed[name]
        assert 0 <= index < p.column.length, (name, index)
        return self.words[row * self.row_words + p.word + index]

    def vrow(self, row: int, name: str) -> list[int]:
        p = self.layout.placed[name]
        start = row * self.row_words + p.word
        return list(self.words[start : start + p.column.length])

    def bget(self, row: int, name: str, start: int, end: int) -> bytes:
        p = self.layout.placed[name]
        assert 0 <= start <= end <= p.column.length, (name, start, end)
        base = row * self.row_bytes + p.offset
        return bytes(self.buf[base + start : base + end])

    def column_min(self, name: str, rows: Iterable[int] | None = None) -> int:
        """The minimum of a counter over `rows` (default: every row): the stability pattern."""
        w = self.layout.placed[name].word
        rw = self.row_words
        words = self.words
        rows = range(self.n_rows) if rows is None else rows
        return min(words[r * rw + w] for r in rows)

    def vcolumn_min(self, name: str, index: int, rows: Iterable[int] | None = None) -> int:
        w = self.layout.placed[name].word + index
        rw = self.row_words
        words = self.words
        rows = range(self.n_rows) if rows is None else rows
        return min(words[r * rw + w] for r in rows)

    def row_bytes_of(self, row: int) -> bytes:
        return bytes(self.buf[row * self.row_bytes : (row + 1) * self.row_bytes])

    # -- writes (own row only) ------------------------------------------------------------------

    def set(self, name: str, value: int) -> None:
        p = self.layout.placed[name]
        i = self.my_row * self.row_words + p.word
        old = self.words[i]
        assert value >= old, f"column {name} would decrease from {old} to {value}"
        assert p.column.kind is not ColumnKind.FLAG or value in (0, 1), (name, value)
        self.words[i] = value

    def vset(self, name: str, index: int, value: int) -> None:
        p = self.layout.placed[name]
        assert 0 <= index < p.column.length, (name, index)
        i = self.my_row * self.row_words + p.word + index
        old = self.words[i]
        assert value >= old, f"column {name}[{index}] would decrease from {old} to {value}"
        self.words[i] = value

    def bset(self, name: str, start: int, data: bytes | memoryview) -> None:
        p = self.layout.placed[name]
        assert p.column.kind is ColumnKind.BYTES, name
        end = start + len(data)
        assert 0 <= start <= end <= p.column.length, (name, start, end)
        base = self.my_row * self.row_bytes + p.offset
        self.buf[base + start : base + end] = data

    # -- one-sided writes -----------------------------------------------------------------------

    def push(self, names: Iterable[str]) -> tuple[Write, ...]:
        """The writes that copy these columns of my row into a peer's copy.

        Adjacent columns are merged into one write, so a push of a column group is one one-sided
        write, as in Derecho's `put(offset, size)`.
        """
        spans = sorted((self.layout.placed[n].offset, self.layout.placed[n].end) for n in names)
        return tuple(self._writes(spans))

    def push_bytes(self, name: str, start: int, end: int) -> Write:
        """A write of part of a byte-slot column (only the slots that changed), widened to whole
        words so every write stays word aligned."""
        p = self.layout.placed[name]
        assert 0 <= start < end <= p.column.length, (name, start, end)
        lo = p.offset + start - start % WORD_BYTES
        hi = min(p.offset + _align(end, WORD_BYTES), p.end)
        base = self.my_row * self.row_bytes
        return Write(lo, bytes(self.buf[base + lo : base + hi]))

    def push_row(self) -> Write:
        return Write(0, self.row_bytes_of(self.my_row))

    def _writes(self, spans: list[tuple[int, int]]) -> Iterable[Write]:
        base = self.my_row * self.row_bytes
        start = end = -1
        for s, e in spans:
            if s <= end:
                end = max(end, e)
                continue
            if start >= 0:
                yield Write(start, bytes(self.buf[base + start : base + end]))
            start, end = s, e
        if start >= 0:
            yield Write(start, bytes(self.buf[base + start : base + end]))

    def apply_write(self, row: int, offset: int, data: bytes | memoryview) -> None:
        """Apply a peer's one-sided write into its row of my copy (whole, as transports promise)."""
        if not 0 <= row < self.n_rows:
            raise PeerProtocolError(f"write for row {row}, the table has {self.n_rows} rows")
        if row == self.my_row:
            raise PeerProtocolError("a peer wrote into my own row")
        if offset < 0 or offset + len(data) > self.row_bytes or offset % WORD_BYTES:
            raise PeerProtocolError(
                f"write at offset {offset} of {len(data)} bytes "
                f"does not fit a {self.row_bytes}-byte row"
            )
        base = row * self.row_bytes + offset
        if self.strict:
            self._check_monotone_write(row, offset, data)
        self.buf[base : base + len(data)] = data

    def _check_monotone_write(self, row: int, offset: int, data: bytes | memoryview) -> None:
        new = memoryview(bytes(data) + bytes(-len(data) % WORD_BYTES)).cast("q")
        first = offset // WORD_BYTES
        mono = self.layout.monotone_words
        rw = row * self.row_words
        words = self.words
        for i in range(bisect_left(mono, first), bisect_left(mono, first + len(new))):
            w = mono[i]
            old, value = words[rw + w], new[w - first]
            if value < old:
                p = self.layout.column_at(w * WORD_BYTES)
                raise PeerProtocolError(
                    f"member {self.members[row]} moved {p.column.name if p else w} "
                    f"back from {old} to {value}"
                )

    # -- invariants -----------------------------------------------------------------------------

    def _check(self) -> None:
        """Verify the whole table: flags are 0/1; no monotone value fell since the last check."""
        if self._get_mono is None:
            mono = [
                (row * self.row_words + w, row, p)
                for row in range(self.n_rows)
                for p in self.layout.placed.values()
                if p.column.monotone
                for w in range(p.word, p.end // WORD_BYTES)
            ]
            self._mono = mono
            self._get_mono = operator.itemgetter(*[i for i, _, _ in mono])
            flags = [i for i, _, p in mono if p.column.kind is ColumnKind.FLAG]
            self._get_flags = operator.itemgetter(*flags) if flags else None
        values = self._get_mono(self.words)
        if not isinstance(values, tuple):
            values = (values,)
        if self._get_flags is not None:
            flags = self._get_flags(self.words)
            for value in flags if isinstance(flags, tuple) else (flags,):
                assert value in (0, 1), f"a flag holds {value}: " + self._which_flag()
        floor = self._floor
        if floor is not None and any(map(operator.lt, values, floor)):
            for (_, row, p), value, old in zip(self._mono, values, floor, strict=True):
                assert value >= old, (
                    f"{p.column.name} of member {self.members[row]} fell from {old} to {value}"
                )
        self._floor = values

    def _which_flag(self) -> str:
        for _, row, p in self._mono:
            if p.column.kind is ColumnKind.FLAG:
                value = self.get(row, p.column.name)
                if value not in (0, 1):
                    return f"flag {p.column.name} of row {row} is {value}"
        return "unknown flag"
