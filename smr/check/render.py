"""The picture of a checked history: one self-contained HTML page (inline SVG and CSS, no script,
nothing fetched), one row per client, a bar per operation from its call to its return.

This module owns only the drawing. For a violation it draws the failing partition's operations
in colour over the others in grey, numbers those of the furthest linearization in the order
the search placed them, and marks the operation it could not place (red) and the ones that
could have come next (orange); a table beneath lists that linearization with the model's state
after each step. The horizontal axis is the order of the call and return times, not their
distances: only the order matters to linearizability, and it keeps short operations readable
next to a long pause.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from smr.check.history import FAIL, UNKNOWN, History, Operation, Time
from smr.check.search import CheckResult, PartitionResult

# At most this many operations are drawn: around a violation, the ones near it.
_DRAWN_MAX = 400
_TABLE_ROWS_MAX = 40  # the end of the furthest linearization, in the table
_LAST_PLACED = 12  # the tail of the furthest linearization that sets the window around it
# per distinct call or return time: wide enough for the bars' labels, within these bounds
_COLUMN_PX_MIN, _COLUMN_PX_MAX = 26, 90
_ROW_PX = 30
_BAR_PX = 20
_LABEL_PX = 110  # the process names on the left
_CHAR_PX = 6.6  # a character of the bar labels (11 px monospace), to decide what fits

_CSS = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h1.bad { color: #b00020; } h1.good { color: #1b5e20; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; }
.scroll { overflow-x: auto; border: 1px solid #ddd; }
svg text { font: 11px ui-monospace, monospace; dominant-baseline: middle; }
.proc { font-weight: bold; }
table { border-collapse: collapse; margin-top: 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; font: 12px ui-monospace, monospace;
         text-align: left; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; border-radius: 3px; }
"""

_FILL = {
    "placed": "#90caf9",  # in the furthest linearization
    "part": "#e3f2fd",  # of the failing partition, not placed
    "candidate": "#ffcc80",
    "blocked": "#ef9a9a",
    "other": "#eeeeee",
    "fail": "#ffffff",
}


def render_html(
    history: History | Iterable[Operation], result: CheckResult, path: str | Path
) -> Path:
    """Write the timeline of `history` with `result`'s verdict to `path`; returns the path."""
    operations = list(history.operations if isinstance(history, History) else history)
    failure = result.failure
    drawn, start = _window(operations, failure)
    page = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>smr check: {html.escape(result.outcome)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1 class='{'good' if result.ok else 'bad'}'>"
        f"{'Linearizable' if result.ok else 'Not linearizable' if failure else 'Undecided'}"
        f"</h1><pre>{html.escape(result.summary())}</pre>",
        _legend(failure),
        _timeline(drawn, operations, failure, start),
    ]
    if len(drawn) < len(operations):
        page.append(
            f"<p>{len(drawn)} of {len(operations)} operations drawn"
            f"{': the ones around the violation' if failure else ''}.</p>"
        )
    if failure is not None:
        page.append(_table(failure, {op.id: op for op in operations}))
    page.append("</body></html>")
    out = Path(path)
    out.write_text("\n".join(page), encoding="utf-8")
    return out


def _window(
    operations: list[Operation], failure: PartitionResult | None
) -> tuple[list[Operation], Time | None]:
    """The operations to draw, and the time the drawing starts at (None: the first call)."""
    if len(operations) <= _DRAWN_MAX:
        return operations, None
    if failure is None:
        return sorted(operations, key=lambda op: op.call)[:_DRAWN_MAX], None
    focus = {*failure.linearization[-_LAST_PLACED:], *failure.candidates}
    if failure.blocked is not None:
        focus.add(failure.blocked)
    part = {op.id for op in failure.operations}
    by_id = {op.id: op for op in operations}
    start = min(by_id[i].call for i in focus)
    stop = max(_last_seen(by_id[i]) for i in focus)
    # What the clients saw in the window; and the failing partition's unknown operations called
    # before it, which may take effect in it (those of other partitions cannot matter).
    near = [
        op
        for op in operations
        if op.call <= stop and (_last_seen(op) >= start or (op.id in part and op.end >= start))
    ]
    # the operations of the violation first, then the closest others in time
    near.sort(key=lambda op: (op.id not in focus, abs(op.call - start)))
    return sorted(near[:_DRAWN_MAX], key=lambda op: op.call), start


def _last_seen(op: Operation) -> Time:
    """When the client last knew of `op`: its return, or its call if it never returned."""
    return op.call if op.ret is None else op.ret


def _legend(failure: PartitionResult | None) -> str:
    if failure is None:
        return ""
    items = [
        ("placed", "in the furthest linearization (#order)"),
        ("blocked", "could not be placed"),
        ("candidate", "could have come next"),
        ("part", "same partition"),
        ("other", "other partitions"),
    ]
    return (
        "<p class='legend'>"
        + "".join(
            f"<span style='background:{_FILL[kind]}'>{html.escape(text)}</span>"
            for kind, text in items
        )
        + " dashed: outcome unknown (may take effect until the end); white: failed</p>"
    )


def _timeline(
    drawn: list[Operation],
    operations: list[Operation],
    failure: PartitionResult | None,
    start: Time | None,
) -> str:
    # Times before the window's start all map to its left edge; those operations' labels
    # begin with an ellipsis.
    def clamp(t: Time) -> Time:
        return t if start is None or t >= start else start

    times = sorted({clamp(t) for op in drawn for t in (op.call, op.ret) if t is not None})
    column = {t: i for i, t in enumerate(times)}
    order = {op_id: n for n, op_id in enumerate(failure.linearization, 1)} if failure else {}
    labels = {op.id: _label(op, order, clipped=clamp(op.call) != op.call) for op in drawn}
    col_px: float = _COLUMN_PX_MIN
    for op in drawn:
        if op.ret is not None and op.status != UNKNOWN:
            span = max(column[clamp(op.ret)] - column[clamp(op.call)], 1)
            col_px = max(col_px, (len(labels[op.id]) * _CHAR_PX + 8) / span)
    col_px = min(col_px, _COLUMN_PX_MAX)
    right = _LABEL_PX + (len(times) + 1) * col_px  # where unknown outcomes run out
    drawn_ids = {op.id for op in drawn}
    processes: list[object] = []
    for op in sorted(operations, key=lambda op: op.call):
        if op.id in drawn_ids and op.process not in processes:
            processes.append(op.process)
    row = {p: i for i, p in enumerate(processes)}
    width, height = right + col_px, (len(processes) + 1) * _ROW_PX
    part = {op.id for op in failure.operations} if failure else set()
    svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>"]
    for p, i in row.items():
        y = (i + 0.5) * _ROW_PX + _ROW_PX / 2
        svg.append(f"<line x1='{_LABEL_PX}' x2='{width}' y1='{y}' y2='{y}' stroke='#f0f0f0'/>")
        svg.append(f"<text class='proc' x='6' y='{y}'>{html.escape(str(p))[:14]}</text>")
    for op in drawn:
        x0 = _LABEL_PX + column[clamp(op.call)] * col_px + col_px / 2
        unknown = op.status == UNKNOWN or op.ret is None
        if op.ret is None or op.status == UNKNOWN:
            x1 = right
        else:
            x1 = _LABEL_PX + column[clamp(op.ret)] * col_px + col_px / 2
        x1 = max(x1, x0 + 6)
        y = (row[op.process] + 0.5) * _ROW_PX + (_ROW_PX - _BAR_PX) / 2
        if failure is None:
            kind = "fail" if op.status == FAIL else "placed"
        elif op.status == FAIL:
            kind = "fail"
        elif op.id == failure.blocked:
            kind = "blocked"
        elif op.id in failure.candidates:
            kind = "candidate"
        elif op.id in order:
            kind = "placed"
        else:
            kind = "part" if op.id in part else "other"
        stroke = "#999" if kind == "other" else "#37474f"
        dash = " stroke-dasharray='4 3'" if unknown or op.status == FAIL else ""
        label = labels[op.id]
        tip = f"op {op.id}, {op.process}: {op.describe()} [{op.call} .. {op.ret}]"
        svg.append(
            f"<g><title>{html.escape(tip)}</title>"
            f"<rect x='{x0:.1f}' y='{y:.1f}' width='{x1 - x0:.1f}' height='{_BAR_PX}' rx='3' "
            f"fill='{_FILL[kind]}' stroke='{stroke}'{dash}/>"
        )
        fits = int((x1 - x0 - 6) / _CHAR_PX)
        if fits >= 3:
            text = label if len(label) <= fits else label[: fits - 1] + "…"
            fill = "#777" if kind == "other" else "#111"
            svg.append(
                f"<text x='{x0 + 3:.1f}' y='{y + _BAR_PX / 2:.1f}' fill='{fill}'>"
                f"{html.escape(text)}</text>"
            )
        svg.append("</g>")
    svg.append("</svg>")
    return "<div class='scroll'>" + "".join(svg) + "</div>"


def _label(op: Operation, order: dict[int, int], *, clipped: bool = False) -> str:
    """A bar's text: the operation, after its place in the furthest linearization if it has
    one, and after an ellipsis if it was called before the drawing starts."""
    text = f"#{order[op.id]} {op.describe()}" if op.id in order else op.describe()
    return f"… {text}" if clipped else text


def _table(failure: PartitionResult, by_id: dict[int, Operation]) -> str:
    where = "the whole history" if failure.key is None else f"key {failure.key!r}"
    rows = [
        f"<h2>The furthest linearization of {html.escape(where)}</h2>",
        "<table><tr><th>#</th><th>op</th><th>process</th><th>operation</th>"
        "<th>state after</th></tr>",
    ]
    steps = list(enumerate(zip(failure.linearization, failure.states, strict=True), 1))
    if len(steps) > _TABLE_ROWS_MAX:
        rows.append(
            f"<tr><td colspan='5'>... {len(steps) - _TABLE_ROWS_MAX} earlier steps</td></tr>"
        )
        steps = steps[-_TABLE_ROWS_MAX:]
    for n, (op_id, state) in steps:
        op = by_id[op_id]
        rows.append(
            f"<tr><td>{n}</td><td>{op_id}</td><td>{html.escape(str(op.process))}</td>"
            f"<td>{html.escape(op.describe())}</td><td>{html.escape(state)}</td></tr>"
        )
    if failure.blocked is not None:
        op = by_id[failure.blocked]
        rows.append(
            f"<tr style='background:{_FILL['blocked']}'><td>-</td><td>{op.id}</td>"
            f"<td>{html.escape(str(op.process))}</td><td>{html.escape(op.describe())}</td>"
            "<td>cannot be placed next</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)
