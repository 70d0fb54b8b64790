"""Findings of "Linearizable reads, and real member processes under faults" on the client side:
queries follow redirects like commands; a failed command says whether it was certainly not
applied or its outcome is unknown; a reconnect does not hold up the client's other requests; and
member log lines carry the monotonic clock beside the wall clock. Fake members speak the client
protocol (what a restarting or joining member answers); the log lines come from the node's own
logger."""

from __future__ import annotations

import io
import json
import time

from smr.runtime.node import json_logger

# -- the log lines --------------------------------------------------------------------------------


def test_every_member_log_line_carries_the_monotonic_clock_beside_the_wall_clock():
    stream = io.StringIO()
    log = json_logger(3, stream)
    before = time.monotonic()
    log("start", role="founder")
    log("view", epoch=1, members=[1, 2, 3])
    after = time.monotonic()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in records] == ["start", "view"]
    for r in records:
        assert r["member"] == 3 and isinstance(r["t"], float) and isinstance(r["mono"], float)
        # the process's time.monotonic(), the clock a client's history is stamped with
        assert before - 1e-6 <= r["mono"] <= after + 1e-6
    assert records[0]["mono"] <= records[1]["mono"]
