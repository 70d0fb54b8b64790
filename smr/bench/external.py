"""What the external baselines' cluster adapters share (smr.bench.etcd_ref, zookeeper_ref): three
server processes on loopback with a log file each, the agreement check once the load stopped,
and their shutdown."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from typing import Any


class ExternalCluster:
    """A subclass starts `procs` (logging to `log_paths`) and says how to read each member's
    state (`states`) and how to judge the states (`agreement`)."""

    procs: list[subprocess.Popen]
    log_paths: list[str]
    agreement: Callable[[list[tuple]], tuple[bool, str]]  # a staticmethod of the subclass

    def states(self) -> list[tuple]:
        raise NotImplementedError

    @property
    def pids(self) -> dict[int, int]:
        return {i + 1: p.pid for i, p in enumerate(self.procs)}

    def _log_tail(self) -> str:
        tails = []
        for path in self.log_paths:
            with contextlib.suppress(OSError), open(path, errors="replace") as f:
                tails.append(f.read()[-400:])
        return " | ".join(tails)

    def agree(self, timeout_s: float = 15.0) -> tuple[bool, str]:
        """Whether the members reach the same state once the load stopped (read again for up
        to `timeout_s` while they differ: one may still be applying), and what they hold."""
        deadline = time.monotonic() + timeout_s
        while True:
            agreed, described = self.agreement(self.states())
            if agreed or time.monotonic() > deadline:
                return agreed, described
            time.sleep(0.5)

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
