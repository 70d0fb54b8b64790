"""The client harness: drives one system through `submit(payload) -> future` with at most
`window` commands outstanding, discards a warm-up, and times every measured command with
`time.perf_counter_ns` from submit to completion."""

from __future__ import annotations

import queue
import struct
import time
from collections.abc import Callable
from typing import Any

from smr.bench.stats import summarize

STAMP = struct.Struct("<q")  # a stamped payload's first bytes: its submission time, ns
samples_max = 2_000_000  # latencies kept per run; a run stops submitting when it is reached
batch_max = 1024  # commands per submit_many call


def drive(
    submit: Callable[[bytes], Any] | None,
    payload_bytes: int,
    window: int,
    duration_s: float,
    warmup_s: float = 0.5,
    count_max: int = samples_max,
    timeout_s: float = 60.0,
    stamp: bool = False,
    submit_many: Callable[[list[bytes]], list[Any]] | None = None,
) -> dict:
    """Submit `payload_bytes`-byte commands for `warmup_s` + `duration_s` (or until `count_max`
    measured ones, and at least until one command is submitted after the warm-up) keeping at
    most `window` outstanding; returns `stats.summarize` figures of
    the commands submitted after the warm-up. `submit` returns anything with
    `add_done_callback(fn)` and `exception()` (a concurrent.futures.Future). With `stamp`, each
    payload starts with its submission time (`STAMP`, `time.perf_counter_ns`), for a watcher in
    another process to time the change's arrival (`smr.bench.watcher`). With `submit_many`
    (payloads -> futures), every slot free when the harness looks is refilled by one call of it
    (at most `batch_max` commands), as a pipelined writer of that client library does."""
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    if duration_s <= 0 or warmup_s < 0:
        raise ValueError("duration_s must be positive and warmup_s not negative")
    count_max = min(count_max, samples_max)
    payload = b"\x5a" * payload_bytes
    if stamp and payload_bytes < STAMP.size:
        raise ValueError(f"a stamped payload needs at least {STAMP.size} bytes")
    filler = payload[STAMP.size :]
    # One token per window slot. SimpleQueue is implemented in C: a Semaphore or Condition
    # (pure Python) cost more per command than the 100-byte round trip itself.
    tokens: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(window):
        tokens.put(None)
    latencies_ns: list[int] = []
    errors: list[BaseException] = []
    last_done_ns = 0
    completed = 0
    clock = time.perf_counter_ns
    cpu_start_s = time.process_time()

    def done(start_ns: int, measured: bool, future: Any) -> None:
        nonlocal last_done_ns, completed
        completed += 1
        end_ns = clock()
        error = future.exception()
        if error is not None:
            errors.append(error)
        elif measured:
            latencies_ns.append(end_ns - start_ns)
            last_done_ns = end_ns if end_ns > last_done_ns else last_done_ns
        tokens.put(None)

    begin_ns = clock()
    measure_from_ns = begin_ns + int(warmup_s * 1e9)
    stop_ns = measure_from_ns + int(duration_s * 1e9)
    submitted_measured = 0
    while not errors:
        try:
            tokens.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(
                f"no command completed within {timeout_s} s (window {window})"
            ) from None
        free = 1
        if submit_many is not None:
            while free < batch_max:
                try:
                    tokens.get_nowait()
                except queue.Empty:
                    break
                free += 1
        start_ns = clock()
        # A window that saw no submission (the warm-up's commands held every slot past its
        # end: a slow system, a short run) goes on to one measured command, not to no figures.
        if (start_ns >= stop_ns and submitted_measured) or submitted_measured >= count_max:
            for _ in range(free):
                tokens.put(None)
            break
        measured = start_ns >= measure_from_ns
        if measured and submitted_measured + free > count_max:
            for _ in range(submitted_measured + free - count_max):
                tokens.put(None)
            free = count_max - submitted_measured
        submitted_measured += free if measured else 0
        if stamp:
            payload = STAMP.pack(start_ns) + filler
        if submit_many is None:
            assert submit is not None, "drive needs submit or submit_many"
            futures = [submit(payload)]
        else:
            futures = submit_many([payload] * free)
        for future in futures:
            future.add_done_callback(lambda f, s=start_ns, m=measured: done(s, m, f))
    # Every slot's token back means nothing is outstanding.
    for returned in range(window):
        try:
            tokens.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(
                f"{window - returned} commands still outstanding after {timeout_s} s"
            ) from None
    if errors:
        raise RuntimeError(f"a command failed: {errors[0]!r}") from errors[0]
    if not latencies_ns:
        raise RuntimeError("no command completed after the warm-up; raise duration_s")
    result = summarize(latencies_ns, last_done_ns - measure_from_ns, payload_bytes)
    # the client process's CPU (every thread) per command, warm-up included: what the harness
    # and the system's client library cost, apart from the system's own processes
    cpu_us = (time.process_time() - cpu_start_s) * 1e6
    result.update(
        payload_bytes=payload_bytes,
        window=window,
        completed_total=completed,
        client_cpu_us_per_op=cpu_us / max(1, completed),
    )
    return result
