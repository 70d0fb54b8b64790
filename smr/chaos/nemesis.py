"""The nemesis: carries out a schedule's faults on a real cluster, one at a time.

This module owns doing the faults (SIGKILL and restart, SIGSTOP and SIGCONT, iptables cuts,
a restart of every member, a full disk, failing fsyncs) and undoing them: `heal_all()` resumes
every paused member, deletes every rule, frees every disk and starts every member that is not
running (a member whose disk failed exited), and is safe to call at any time (the
run calls it in `finally`). Each fault is recorded with when it began, when it was healed and
when the cluster was whole again, for the report's availability figures.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from smr.chaos.disk import DiskFaults
from smr.chaos.netfilter import Partitioner
from smr.chaos.schedule import (
    BRIDGE,
    DISK_FULL,
    FSYNC_ERROR,
    KILL,
    PARTITION,
    PAUSE,
    RESTART_ALL,
    Step,
)
from smr.runtime.cluster import ClusterError, LocalCluster


@dataclass
class FaultRecord:
    """A step as it happened; times are `time.monotonic_ns()`, as the history's."""

    step: Step
    start_ns: int
    healed_ns: int | None = None
    whole_ns: int | None = None  # None: the cluster was not whole again in time

    @property
    def recovery_s(self) -> float | None:
        if self.healed_ns is None or self.whole_ns is None:
            return None
        return (self.whole_ns - self.healed_ns) / 1e9


class Nemesis:
    def __init__(
        self,
        cluster: LocalCluster,
        partitioner: Partitioner | None,
        *,
        recover_timeout_s: float,
        echo: Callable[[str], None] = lambda line: None,
        disk: DiskFaults | None = None,
    ) -> None:
        self.cluster = cluster
        self.partitioner = partitioner
        self.disk = disk
        self.recover_timeout_s = recover_timeout_s
        self.echo = echo
        self.records: list[FaultRecord] = []
        self._paused: set[int] = set()
        self._t0 = time.monotonic()

    def run(self, steps: tuple[Step, ...], deadline: float) -> None:
        """Take steps until `deadline` (time.monotonic()); stop early if the cluster did not
        recover from one (the run fails then: there is no point in the next fault)."""
        for step in steps:
            if time.monotonic() + step.hold_s > deadline:
                break
            record = self.do(step)
            if record.whole_ns is None:
                break
            time.sleep(min(step.quiet_s, max(0.0, deadline - time.monotonic())))

    def do(self, step: Step) -> FaultRecord:
        self.echo(f"[{time.monotonic() - self._t0:6.1f} s] {step.describe()}")
        record = FaultRecord(step, time.monotonic_ns())
        self.records.append(record)
        c = self.cluster
        if step.kind == KILL:
            c.kill(step.members[0])
            time.sleep(step.hold_s)
        elif step.kind == PAUSE:
            self._paused.add(step.members[0])
            c.pause(step.members[0])
            time.sleep(step.hold_s)
        elif step.kind == PARTITION:
            assert self.partitioner is not None, "a partition step needs a partitioner"
            if step.shape == BRIDGE:
                self.partitioner.cut(*step.members)
            else:
                self.partitioner.isolate(step.members)
            time.sleep(step.hold_s)
        elif step.kind == RESTART_ALL:
            for m in sorted(c.pids):
                c.kill(m)
        elif step.kind in (DISK_FULL, FSYNC_ERROR):
            assert self.disk is not None, "a disk fault needs smr.chaos.disk"
            if step.kind == DISK_FULL:
                self.disk.fill(step.members[0])
            else:
                self.disk.fail_fsync(step.members[0])
            time.sleep(step.hold_s)
        else:
            raise AssertionError(f"unknown fault {step.kind!r}")
        self.heal_all()
        record.healed_ns = time.monotonic_ns()
        if self.wait_whole(self.recover_timeout_s):
            record.whole_ns = time.monotonic_ns()
            self.echo(f"         whole again after {record.recovery_s:.1f} s")
        else:
            self.echo(f"         NOT whole again within {self.recover_timeout_s:.0f} s")
        return record

    def heal_all(self) -> list[str]:
        """Undo every fault: resume, delete the rules, start what is not running. Returns the
        problems met (it never raises: it runs in `finally`)."""
        problems = []
        for m in sorted(self._paused):
            with contextlib.suppress(ClusterError):  # it exited while paused: started below
                self.cluster.signal(m, signal.SIGCONT)
        self._paused.clear()
        if self.partitioner is not None:
            problems += self.partitioner.heal()
        if self.disk is not None:
            problems += self.disk.heal()
        for m in self.cluster.config.founders:
            p = self.cluster.procs.get(m)
            if p is None or p.poll() is not None:
                try:
                    self.cluster.restart(m)
                except (ClusterError, OSError) as e:
                    problems.append(f"member {m}: {e}")
        return problems

    def wait_whole(self, timeout_s: float) -> bool:
        """Wait until every founder is active in one view; restart members that exit meanwhile
        (a member that halted as a minority may exit rather than rejoin)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.cluster.wait_ready(timeout_s=max(0.5, deadline - time.monotonic()))
                return True
            except ClusterError:
                self.heal_all()
                time.sleep(0.2)
        return False
