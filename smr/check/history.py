"""Client histories: what a test harness saw, operation by operation.

This module owns the history model the checker reads (`Operation`: a process, a call, its
output, a status and the interval between call and return), the thread-safe recorder a harness
writes it with (`History.invoke` returns a `Handle`; `ok`, `fail` or `unknown` closes it), and
the JSON lines file a failing history is kept in.

An operation's status says what the client knows of it:

* `ok`: it returned, with its output;
* `fail`: it certainly did not take effect (smr's `NotAppliedError`); the checker drops it;
* `unknown`: it was sent and no answer came (`OutcomeUnknownError`, a timeout). It may have
  taken effect at any time after its call, or never, and its output says nothing; the checker
  treats its return as never (the operation stays concurrent with everything after its call).

An operation still open when the history is read (its handle never closed) counts as `unknown`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "fail", "unknown"]
OK: Status = "ok"
FAIL: Status = "fail"
UNKNOWN: Status = "unknown"
STATUSES: tuple[Status, ...] = (OK, FAIL, UNKNOWN)

Time = int | float


class HistoryError(ValueError):
    """A history that cannot be read or recorded as given (a bad file, a handle closed twice)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a history.

    `call` and `ret` are times in any one unit (the recorder uses `time.monotonic_ns()`); `ret`
    is when the client learnt the outcome (`ok`, `fail`) or gave up waiting (`unknown`), and
    None if it never did. `args` and `output` hold what the model reads: lists are kept as
    tuples so that a model can put them in its (hashable) state.
    """

    id: int
    process: Any
    name: str
    args: tuple[Any, ...]
    call: Time
    ret: Time | None
    output: Any = None
    status: Status = OK

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise HistoryError(
                f"operation {self.id}: status {self.status!r} is not one of {', '.join(STATUSES)}"
            )
        if self.status != UNKNOWN and self.ret is None:
            raise HistoryError(
                f"operation {self.id}: a {self.status} operation needs a return time"
            )
        if self.ret is not None and self.ret < self.call:
            raise HistoryError(
                f"operation {self.id}: returns at {self.ret}, before its call at {self.call}"
            )

    @property
    def input(self) -> tuple[Any, ...]:
        """What a model's `step` reads: `(name, *args)`."""
        return (self.name, *self.args)

    @property
    def end(self) -> float | int:
        """The end of the interval the operation may take effect in: its return, or infinity
        when its outcome is unknown."""
        if self.status == UNKNOWN or self.ret is None:
            return float("inf")
        return self.ret

    def describe(self) -> str:
        """`put('a', b'1') -> None`, as a timeline or a report shows it."""
        call = f"{self.name}({', '.join(map(repr, self.args))})"
        if self.status == OK:
            return f"{call} -> {self.output!r}"
        return f"{call} -> {self.status}"


def freeze(value: Any) -> Any:
    """Lists become tuples, recursively: what a JSON file or a client gives back as a list
    compares equal to the tuple a model computes, and can live in a model's hashable state."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return {freeze(k): freeze(v) for k, v in value.items()}
    return value


class Handle:
    """An open operation of a `History`: close it once with `ok`, `fail` or `unknown`."""

    __slots__ = ("_history", "_index")

    def __init__(self, history: History, index: int) -> None:
        self._history = history
        self._index = index

    @property
    def id(self) -> int:
        return self._index

    def ok(self, output: Any = None) -> None:
        """It returned `output`."""
        self._history._close(self._index, OK, freeze(output))

    def fail(self) -> None:
        """It certainly did not take effect (smr's `NotAppliedError`)."""
        self._history._close(self._index, FAIL, None)

    def unknown(self) -> None:
        """No answer: it may or may not have taken effect (`OutcomeUnknownError`, a timeout)."""
        self._history._close(self._index, UNKNOWN, None)


class History:
    """A recorder and container of operations, safe to use from many threads.

    ```python
    history = History()
    h = history.invoke("client-1", "put", "a", b"1")
    try:
        result = kv.put("a", b"1")
    except NotAppliedError:
        h.fail()
    except OutcomeUnknownError:
        h.unknown()
    else:
        h.ok(result)
    ```

    `clock` gives call and return times (`time.monotonic_ns` by default; a test may pass a
    fake). A history read from a file or built from `Operation`s (`History(operations)`) can be
    recorded into further.
    """

    def __init__(
        self,
        operations: Iterable[Operation] = (),
        *,
        clock: Callable[[], Time] = time.monotonic_ns,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # One mutable row per operation: [process, name, args, call, ret, output, status];
        # frozen into `Operation`s when read.
        self._rows: list[list[Any]] = []
        for op in operations:
            self._rows.append([op.process, op.name, op.args, op.call, op.ret, op.output, op.status])
        self._open: set[int] = set()

    def invoke(self, process: Any, name: str, *args: Any) -> Handle:
        """Record the call of `name(*args)` by `process` now; close the handle when it ends."""
        now = self._clock()
        with self._lock:
            index = len(self._rows)
            self._rows.append([process, name, freeze(args), now, None, None, UNKNOWN])
            self._open.add(index)
        return Handle(self, index)

    def _close(self, index: int, status: Status, output: Any) -> None:
        now = self._clock()
        with self._lock:
            if index not in self._open:
                raise HistoryError(f"operation {index} was already closed")
            self._open.discard(index)
            row = self._rows[index]
            row[4], row[5], row[6] = now, output, status

    @property
    def operations(self) -> list[Operation]:
        """A snapshot of every operation, in call order (open ones as `unknown`)."""
        with self._lock:
            rows = [list(row) for row in self._rows]
        return [Operation(i, *row) for i, row in enumerate(rows)]

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    # -- JSON lines ------------------------------------------------------------------------

    def dumps(self) -> str:
        """One JSON object per line: `{"process", "op", "args", "call", "return", "output",
        "status"}`; bytes are `{"$bytes": base64}`."""
        return "".join(
            json.dumps(
                {
                    "id": op.id,
                    "process": _to_json(op.process),
                    "op": op.name,
                    "args": _to_json(op.args),
                    "call": op.call,
                    "return": op.ret,
                    "output": _to_json(op.output),
                    "status": op.status,
                },
                separators=(",", ":"),
            )
            + "\n"
            for op in self.operations
        )

    def save(self, path: str | Path) -> None:
        """Write the history to `path` as JSON lines (`History.load` reads it back)."""
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @classmethod
    def loads(cls, text: str, *, source: str = "<string>") -> History:
        """Read a history from the text `dumps` writes; `source` names it in errors."""
        operations: list[Operation] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                operations.append(
                    Operation(
                        id=len(operations),
                        process=freeze(_from_json(record["process"])),
                        name=str(record["op"]),
                        args=freeze(_from_json(record.get("args", []))),
                        call=record["call"],
                        ret=record.get("return"),
                        output=freeze(_from_json(record.get("output"))),
                        status=record.get("status", OK),
                    )
                )
            except (ValueError, KeyError, TypeError) as e:
                why = f"missing field {e}" if isinstance(e, KeyError) else str(e)
                raise HistoryError(f"{source}:{lineno}: not an operation: {why}") from None
        return cls(operations)

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read a history written by `save` (or by anything that writes the same lines)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise HistoryError(f"cannot read the history {path}: {e}") from None
        return cls.loads(text, source=str(path))


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if value.keys() == {"$bytes"}:
            return base64.b64decode(value["$bytes"], validate=True)
        if value.keys() == {"$dict"}:
            return {freeze(_from_json(k)): _from_json(v) for k, v in value["$dict"]}
        raise ValueError(f"an object that is neither bytes nor a dict: {value!r}")
    return value
