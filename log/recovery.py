"""Rebuild a state machine from a log: the newest usable snapshot, then replay of the rest.

Takes callables rather than a state machine type so that the log does not depend on `smr.api`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smr.log.format import NO_VERSION, Record
from smr.log.log import Log


@dataclass(frozen=True, slots=True)
class RecoverResult:
    snapshot_version: int  # NO_VERSION if replay started from the empty state
    records_applied: int
    first_applied_version: int
    last_applied_version: int


def recover(
    log: Log,
    state_machine: Any = None,
    *,
    restore: Callable[[bytes], None] | None = None,
    apply: Callable[[Record], None] | None = None,
    upto: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RecoverResult:
    """Restore the newest snapshot at or below `upto`, then apply every later record <= `upto`.

    Pass `restore` and `apply` callables, or a `state_machine` with `restore(data)` and
    `apply_record(record)` (duck typed). Raises TrimmedError if the records after the snapshot
    were trimmed (the log cannot rebuild that state).
    """
    if state_machine is not None:
        restore = restore or state_machine.restore
        apply = apply or state_machine.apply_record
    if restore is None or apply is None:
        raise TypeError("recover() needs restore and apply callables or a state_machine")
    snapshot = log.latest_snapshot(at_or_below=upto)
    start = 0
    snapshot_version = NO_VERSION
    if snapshot is not None:
        restore(snapshot.data)
        snapshot_version = snapshot.version
        start = snapshot.version + 1
    first = last = NO_VERSION
    n = 0
    # iter() raises TrimmedError if start is below the trim point, which is what we want: records
    # between the snapshot and the trim point are gone.
    for record in log.iter(start, upto):
        apply(record)
        if first == NO_VERSION:
            first = record.version
        last = record.version
        n += 1
        if on_progress is not None:
            on_progress(1)
    return RecoverResult(snapshot_version, n, first, last)
