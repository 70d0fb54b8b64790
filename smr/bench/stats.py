"""Summary figures of one measured workload: nearest-rank percentiles of per-command latencies
and the rates they imply. Pure functions, so the math is tested on synthetic latencies."""

from __future__ import annotations

import math
from collections.abc import Sequence

MIB = 1 << 20


def percentile(sorted_ns: Sequence[int], p: float) -> int:
    """Nearest-rank percentile `p` (0 < p <= 100) of latencies already sorted ascending."""
    if not sorted_ns:
        raise ValueError("percentile of no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    rank = math.ceil(p / 100 * len(sorted_ns))
    return sorted_ns[rank - 1]


def summarize(latencies_ns: Sequence[int], elapsed_ns: int, payload_bytes: int) -> dict:
    """Figures of `len(latencies_ns)` commands of `payload_bytes` each completed in `elapsed_ns`:
    ops_per_s, mib_per_s, p50_ms, p99_ms, max_ms, count."""
    if elapsed_ns <= 0:
        raise ValueError(f"elapsed_ns must be positive, not {elapsed_ns}")
    if payload_bytes < 0:
        raise ValueError(f"payload_bytes must not be negative, not {payload_bytes}")
    ordered = sorted(latencies_ns)
    ops_per_s = len(ordered) / (elapsed_ns / 1e9)
    return {
        "count": len(ordered),
        "ops_per_s": ops_per_s,
        "mib_per_s": ops_per_s * payload_bytes / MIB,
        "p50_ms": percentile(ordered, 50) / 1e6,
        "p99_ms": percentile(ordered, 99) / 1e6,
        "max_ms": ordered[-1] / 1e6,
    }
