"""Group commit: a background thread that turns many small submits into one write and one fsync.

The runtime submits the records the core asked to persist; the thread takes everything queued
since its last fsync, appends it, syncs once, and reports the highest durable version through
`on_durable` (the core's `persisted_num`). The sync policy comes from the log's config:
- `batch`: fsync every batch (nothing acknowledged is ever lost);
- `interval:<ms>`: write every batch, fsync at most every <ms>; `on_durable` only after the fsync,
  so what a crash loses was never reported durable, but callers wait up to <ms>;
- `never`: write without fsync and report written as durable (benchmarks only).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from smr.log.errors import LogWriterError
from smr.log.format import NO_VERSION, Record
from smr.log.log import Log


def parse_sync_policy(policy: str) -> tuple[str, float]:
    """Return (kind, interval in seconds) of a checked policy string."""
    if policy.startswith("interval:"):
        return "interval", int(policy.split(":", 1)[1]) / 1000.0
    assert policy in ("batch", "never"), policy
    return policy, 0.0


class GroupCommitWriter:
    """Runs `log` on a background thread; see the module docstring.

    `submit` blocks while the queue is full (`queue_records_max`, `queue_bytes_max`); a failure of
    the thread (or of `on_durable`) is raised as LogWriterError by the next `submit`, `flush` or
    `close`, and nothing more is written after it: a failed write or fsync is never retried (after
    an fsync error the kernel may have dropped the dirty pages it could not write, and a second
    fsync can then succeed over lost data, as PostgreSQL learned in 2018).
    """

    def __init__(
        self,
        log: Log,
        on_durable: Callable[[int], None] | None = None,
        *,
        queue_records_max: int = 65536,
        queue_bytes_max: int = 64 << 20,
        batch_records_max: int = 65536,
        clock: Callable[[], float] = time.monotonic,
        on_fsync: Callable[[float], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """`on_fsync(seconds)`, if given, is called on the writer's thread after each fsync
        with how long it took (by `clock`): the runtime's fsync latency metric. `on_error(e)`,
        if given, is called on the writer's thread once, when it fails: an owner that waits for
        `on_durable` would otherwise learn of it only at its next call."""
        assert queue_records_max > 0 and queue_bytes_max > 0 and batch_records_max > 0
        self.log = log
        self._on_durable = on_durable
        self._on_fsync = on_fsync
        self._on_error = on_error
        self._kind, self._interval_s = parse_sync_policy(log.config.sync_policy)
        self.queue_records_max = queue_records_max
        self.queue_bytes_max = queue_bytes_max
        self.batch_records_max = batch_records_max
        self._clock = clock
        self._cond = threading.Condition()
        # Whole submits, not records: one deque operation per submit, not per record.
        self._queue: deque[tuple[Sequence[Record], int]] = deque()  # (records, payload bytes)
        self._queue_records = 0
        self._queue_bytes = 0
        self._submitted_version = log.last_version
        self._durable_version = log.durable_version
        self._closing = False
        self._flush_requested = False  # an interval policy fsyncs early for flush()/close()
        self._error: BaseException | None = None
        self._stats_batches = 0
        self._stats_records = 0
        self._stats_fsyncs = 0
        self._thread = threading.Thread(
            target=self._run, name=f"group-commit {log.path}", daemon=True
        )
        self._thread.start()

    @property
    def durable_version(self) -> int:
        return self._durable_version

    def statistics(self) -> dict[str, int]:
        with self._cond:
            return {
                "batches": self._stats_batches,
                "records": self._stats_records,
                "fsyncs": self._stats_fsyncs,
                "queued_records": self._queue_records,
                "queued_bytes": self._queue_bytes,
                "durable_version": self._durable_version,
            }

    def submit(self, records: Sequence[Record], timeout_s: float | None = None) -> None:
        """Queue records for the log (versions strictly increasing across all submits).

        Blocks while the queue is full; raises TimeoutError after `timeout_s`, LogWriterError if
        the writer failed, ValueError on a version that does not increase.
        """
        if not records:
            return
        size = sum(len(r.payload) for r in records)
        deadline = None if timeout_s is None else self._clock() + timeout_s
        with self._cond:
            self._raise_if_failed()
            if self._closing:
                raise LogWriterError("submit after close()")
            # An oversized submit is admitted into an empty queue so it cannot wait forever.
            while self._queue and (
                self._queue_records + len(records) > self.queue_records_max
                or self._queue_bytes + size > self.queue_bytes_max
            ):
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("group-commit queue full")
                self._cond.wait(remaining)
                self._raise_if_failed()
            last = self._submitted_version
            for r in records:
                if r.version <= last:
                    raise ValueError(f"version {r.version:#x} must be above {last:#x}")
                last = r.version
            self._queue.append((list(records), size))
            self._queue_records += len(records)
            self._queue_bytes += size
            self._submitted_version = last
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until everything submitted so far is durable (per the policy); return it."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        with self._cond:
            target = self._submitted_version
            self._flush_requested = True
            self._cond.notify_all()
            while self._durable_version < target:
                self._raise_if_failed()
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("group-commit flush timed out")
                self._cond.wait(remaining)
            self._raise_if_failed()
            return self._durable_version

    def close(self) -> None:
        """Make everything submitted durable, stop the thread; raise LogWriterError on failure."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            self._raise_if_failed()

    def __enter__(self) -> GroupCommitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise LogWriterError(f"group-commit writer failed: {self._error!r}") from self._error

    def _run(self) -> None:
        log = self.log
        last_fsync = self._clock()
        written = log.last_version
        try:
            while True:
                with self._cond:
                    while (
                        not self._queue
                        and not self._closing
                        and not self._interval_due(written, last_fsync)
                    ):
                        timeout = None
                        if self._kind == "interval" and written > self._durable_version:
                            timeout = max(0.0, last_fsync + self._interval_s - self._clock())
                        self._cond.wait(timeout)
                    batch: list[Record] = []
                    while self._queue and (
                        not batch or len(batch) + len(self._queue[0][0]) <= self.batch_records_max
                    ):
                        records, size = self._queue.popleft()
                        batch += records
                        self._queue_records -= len(records)
                        self._queue_bytes -= size
                    closing = self._closing and not self._queue
                    flush_requested = self._flush_requested
                    self._flush_requested = False
                    self._cond.notify_all()  # room in the queue for blocked submitters
                if batch:
                    log.append(batch)
                    written = batch[-1].version
                if self._kind == "batch" or (
                    self._kind == "interval"
                    and (closing or flush_requested or self._interval_due(written, last_fsync))
                ):
                    if written > self._durable_version:
                        started = self._clock()
                        durable = log.sync()
                        last_fsync = self._clock()
                        if self._on_fsync is not None:
                            self._on_fsync(last_fsync - started)
                        self._report(durable, fsynced=True, records=len(batch))
                elif self._kind == "never":
                    self._report(log.flush(), fsynced=False, records=len(batch))
                else:
                    log.flush()
                    self._count(len(batch))
                if closing:
                    if written > self._durable_version:
                        self._report(log.sync(), fsynced=True, records=0)
                    return
        except BaseException as e:  # surfaced to the caller, never swallowed
            with self._cond:
                self._error = e
                self._cond.notify_all()
            if self._on_error is not None:
                self._on_error(e)

    def _interval_due(self, written: int, last_fsync: float) -> bool:
        return (
            self._kind == "interval"
            and written > self._durable_version
            and self._clock() - last_fsync >= self._interval_s
        )

    def _count(self, records: int) -> None:
        with self._cond:
            if records:
                self._stats_batches += 1
                self._stats_records += records

    def _report(self, version: int, *, fsynced: bool, records: int) -> None:
        self._count(records)
        with self._cond:
            if fsynced:
                self._stats_fsyncs += 1
            if version == NO_VERSION or version <= self._durable_version:
                return
            assert version > self._durable_version, "durable frontier only rises"
            self._durable_version = version
            self._cond.notify_all()
        if self._on_durable is not None:
            # Outside the lock: the callback may call submit().
            self._on_durable(version)
