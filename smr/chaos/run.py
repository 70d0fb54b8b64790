"""A chaos run from start to verdict: cluster, clients, nemesis, heal, checks, report.

This module owns the order of a run and its verdict:

1. start the members (each on its own loopback address, 127.0.0.2, .3, ...) and wait for the view;
2. start the clients, and after a warm-up take the schedule's steps until the duration is up;
3. heal everything (`finally`: no paused member, no firewall rule, no process outlives the run),
   stop the clients, wait for the cluster to be whole;
4. read every key linearizably into the history, so that a lost acknowledged write fails the check;
5. check the history for linearizability (kv model, per key), and that the members' copies of
   the keys agree;
6. report: the operations ok / failed / unknown, per fault the longest stretch without a
   successful operation, and the command line that reproduces the run. A failing run keeps its
   history, the members' logs and the checker's picture in a directory.

`judge()` is step 5 alone, on any history: a test feeds it a recorded history with a stale read
put in and sees the verdict fail.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smr.chaos import disk as chaos_disk
from smr.chaos import netfilter, schedule
from smr.chaos.nemesis import FaultRecord, Nemesis
from smr.chaos.workload import OPS_PER_KEY, Workload, final_reads, member_states
from smr.check import FAIL, OK, UNKNOWN, CheckResult, History, check, render_html
from smr.runtime.cluster import LocalCluster
from smr.runtime.config import load, write_local

TRANSPORTS = ("tcp", "shm")
RECOVER_TIMEOUT_S = 60.0  # after a fault healed, the cluster must be whole again within this
# a command in flight at a survivor when a member is paused is answered within the failure
# timeout (the next view) and this much more
IN_FLIGHT_SLACK_S = 1.0
CHECK_TIMEOUT_S = 300.0  # the linearizability search gives up (verdict: undecided) after this


@dataclass(frozen=True)
class ChaosOptions:
    seed: int = 1
    duration_s: float = 30.0
    clients: int = 5
    faults: tuple[str, ...] = (schedule.KILL, schedule.PAUSE)
    transport: str = "tcp"
    nodes: int = 3
    keys: int = 3
    ops_per_key: int = OPS_PER_KEY
    out: str | None = None

    def command_line(self) -> str:
        """The `smr chaos` command that runs this again: same seed, same schedule."""
        args = [
            "smr",
            "chaos",
            f"--seed={self.seed}",
            f"--duration-s={self.duration_s:g}",
            f"--clients={self.clients}",
            f"--faults={','.join(self.faults)}",
            f"--transport={self.transport}",
            f"--nodes={self.nodes}",
            f"--keys={self.keys}",
            f"--ops-per-key={self.ops_per_key}",
        ]
        return shlex.join(args)


@dataclass
class Verdict:
    ok: bool
    problems: list[str]
    check: CheckResult | None


@dataclass
class ChaosResult:
    options: ChaosOptions
    history: History
    records: list[FaultRecord]
    verdict: Verdict
    counts: dict[str, int]
    gaps_s: dict[str, float]  # per fault kind: the longest stretch without a successful op
    skipped: dict[str, str] = field(default_factory=dict)  # fault -> why it did not run
    # per fault kind: the longest wait, from the fault's start, of a command that was in flight
    # then at a member the fault did not strike, and was answered
    in_flight_s: dict[str, float] = field(default_factory=dict)
    kept: str | None = None  # the directory the run's evidence was kept in
    keys_used: int = 0  # keys rotate: how many the clients called operations on in all


def member_hosts(nodes: int) -> list[str]:
    assert 1 <= nodes <= 250
    return [f"127.0.0.{i + 2}" for i in range(nodes)]


def judge(
    history: History, states: dict[int, Any] | None, *, timeout_s: float = CHECK_TIMEOUT_S
) -> Verdict:
    """Is the history linearizable (kv model, per key), and do the members' copies agree?"""
    problems = []
    result = check(history, "kv", timeout_s=timeout_s)
    if result.outcome == "violation":
        problems.append(result.summary())
    elif result.outcome != "ok":
        problems.append(f"the check was undecided: {result.summary()}")
    if states is not None:
        shown = {m: s for m, s in states.items()}
        if any(isinstance(s, str) for s in shown.values()):
            problems += [f"member {m}: {s}" for m, s in shown.items() if isinstance(s, str)]
        elif len({repr(sorted(s.items())) for s in shown.values()}) != 1:
            lines = [f"  member {m}: {s}" for m, s in sorted(shown.items())]
            problems.append("the members' states differ:\n" + "\n".join(lines))
    return Verdict(not problems, problems, result)


def counts(history: History) -> dict[str, int]:
    c = {OK: 0, FAIL: 0, UNKNOWN: 0}
    for op in history:
        if op.process != "final":
            c[op.status] += 1
    return c


def longest_gaps(history: History, records: list[FaultRecord], end_ns: int) -> dict[str, float]:
    """Per fault kind, the longest stretch with no successful operation from the start of one of
    its faults to the start of the next fault (or the end of the workload)."""
    done = sorted(op.ret for op in history if op.status == OK and op.process != "final")
    gaps: dict[str, float] = {}
    for i, r in enumerate(records):
        stop = records[i + 1].start_ns if i + 1 < len(records) else end_ns
        inside = [t for t in done if r.start_ns <= t <= stop]
        edges = [r.start_ns, *inside, stop]
        longest = max(b - a for a, b in itertools.pairwise(edges)) / 1e9
        gaps[r.step.kind] = max(gaps.get(r.step.kind, 0.0), longest)
    return gaps


def in_flight_waits(
    history: History, records: list[FaultRecord], member_of: dict[int, int | None]
) -> dict[str, float]:
    """Per fault kind, the longest wait for the answer of an operation at a member the fault did
    not strike, in flight when it began or called while it was in force, counted from the later
    of the two (one paused member must not hold up what the others take: the next view answers
    it)."""
    waits: dict[str, float] = {}
    ops = [op for op in history if op.status == OK and op.ret is not None]
    for r in records:
        if r.step.kind not in (schedule.PAUSE, schedule.KILL) or r.healed_ns is None:
            continue
        struck = set(r.step.members)
        for op in ops:
            if op.call < r.healed_ns and op.ret > r.start_ns and member_of.get(op.id) not in struck:
                wait = (op.ret - max(op.call, r.start_ns)) / 1e9
                waits[r.step.kind] = max(waits.get(r.step.kind, 0.0), wait)
    return waits


def _skip(
    faults: tuple[str, ...],
    skipped: dict[str, str],
    kind: str,
    why: str,
    echo: Callable[[str], None],
) -> tuple[str, ...]:
    """A fault that cannot run here: say why, note it for the report, run the others."""
    echo(f"smr chaos: {kind} faults cannot run: {why}; the others still run")
    skipped[kind] = why
    return tuple(f for f in faults if f != kind)


def run(options: ChaosOptions, *, echo: Callable[[str], None] = print) -> ChaosResult:
    if options.transport not in TRANSPORTS:
        raise ValueError(f"--transport must be one of {', '.join(TRANSPORTS)}")
    faults = options.faults
    skipped: dict[str, str] = {}
    if schedule.PARTITION in faults:
        why = None
        if options.transport != "tcp":
            why = f"the {options.transport} transport has no network to cut (use --transport tcp)"
        else:
            try:
                netfilter.check_available()
            except netfilter.PartitionUnavailable as e:
                why = str(e)
        if why is not None:
            faults = _skip(faults, skipped, schedule.PARTITION, why, echo)
    if schedule.DISK_FULL in faults:
        try:
            chaos_disk.check_full_available()
        except chaos_disk.DiskFaultUnavailable as e:
            faults = _skip(faults, skipped, schedule.DISK_FULL, str(e), echo)
    data_dir = tempfile.mkdtemp(prefix=f"smr-chaos-{options.seed}-")
    config_path = write_local(
        data_dir,
        nodes=options.nodes,
        mode="durable",
        transport=options.transport,
        hosts=member_hosts(options.nodes),
    )
    config = load(config_path)
    shim = None
    if schedule.FSYNC_ERROR in faults:
        try:
            shim = chaos_disk.build_shim(data_dir)
        except chaos_disk.DiskFaultUnavailable as e:
            faults = _skip(faults, skipped, schedule.FSYNC_ERROR, str(e), echo)
    disk = None
    dirs = {m: config.member_dir(m) for m in config.founders}
    if schedule.DISK_FULL in faults:
        try:
            disk = chaos_disk.DiskFaults(dirs, data_dir, full=True, shim=shim)
        except chaos_disk.DiskFaultUnavailable as e:  # a mount failed
            faults = _skip(faults, skipped, schedule.DISK_FULL, str(e), echo)
    if disk is None and shim is not None:
        disk = chaos_disk.DiskFaults(dirs, data_dir, full=False, shim=shim)
    failure_timeout_s = max(config.peer_failed_ms, config.suspect_ms) / 1000
    steps = (
        schedule.plan(
            options.seed,
            faults=faults,
            members=config.founders,
            duration_s=options.duration_s,
            failure_timeout_s=failure_timeout_s,
        )
        if faults
        else ()
    )
    partitioner = (
        netfilter.Partitioner(
            {m.id: (m.host, m.port) for m in config.members.values()},
            run_id=f"{os.getpid()}-{options.seed}",
        )
        if schedule.PARTITION in faults
        else None
    )
    history = History()
    problems: list[str] = []
    states: dict[int, Any] | None = None
    cluster = LocalCluster(
        options.nodes,
        data_dir=data_dir,
        config_path=config_path,
        member_env={m: disk.env(m) for m in config.founders} if disk is not None else None,
    )
    nemesis = Nemesis(
        cluster, partitioner, recover_timeout_s=RECOVER_TIMEOUT_S, echo=echo, disk=disk
    )
    workload = Workload(
        config_path,
        history,
        clients=options.clients,
        keys=options.keys,
        seed=options.seed,
        ops_per_key=options.ops_per_key,
    )
    echo(f"smr chaos: {options.command_line()}")
    echo(f"  members {', '.join(member_hosts(options.nodes))}; data in {data_dir}")
    end_ns = time.monotonic_ns()
    try:
        try:
            cluster.start()
            cluster.wait_ready(timeout_s=30.0)
            started = time.monotonic()
            workload.start()
            time.sleep(min(schedule.WARMUP_S, options.duration_s))
            nemesis.run(steps, started + options.duration_s)
            if any(r.whole_ns is None for r in nemesis.records):
                problems.append(
                    f"the cluster was not whole within {RECOVER_TIMEOUT_S:.0f} s of a heal"
                )
            time.sleep(max(0.0, started + options.duration_s - time.monotonic()))
        finally:
            problems += nemesis.heal_all()  # nothing paused, no rule left, whatever happened
            workload.join(timeout_s=30.0)
            end_ns = time.monotonic_ns()
        try:
            if not nemesis.wait_whole(RECOVER_TIMEOUT_S):
                problems.append(
                    f"the cluster was not whole within {RECOVER_TIMEOUT_S:.0f} s at the end"
                )
            else:
                keys = workload.keys.used()
                final_reads(config_path, history, keys)
                states = member_states(config_path, list(config.founders), keys)
        except Exception as e:
            problems.append(f"the final reads failed: {type(e).__name__}: {e}")
        finally:
            cluster.stop()
    except BaseException:
        cluster.stop()  # a run that raised leaves no member behind
        raise
    finally:
        if disk is not None:
            problems += disk.close()  # idempotent; unmounts once the members stopped
    problems += [f"replicas answered differently: {d}" for d in workload.divergent]
    in_flight = in_flight_waits(history, nemesis.records, workload.member_of)
    bound_s = failure_timeout_s + IN_FLIGHT_SLACK_S
    for kind, wait in sorted(in_flight.items()):
        if wait > bound_s:
            problems.append(
                f"a command in flight at a survivor when a {kind} struck was answered only "
                f"{wait:.2f} s later (more than the failure timeout and {IN_FLIGHT_SLACK_S} s)"
            )
    verdict = judge(history, states)
    verdict.problems[:0] = problems
    verdict.ok = verdict.ok and not problems
    result = ChaosResult(
        options=options,
        history=history,
        records=nemesis.records,
        verdict=verdict,
        counts=counts(history),
        gaps_s=longest_gaps(history, nemesis.records, end_ns),
        skipped=skipped,
        in_flight_s=in_flight,
        keys_used=len(workload.keys.used()),
    )
    if not verdict.ok or options.out:
        result.kept = keep(result, cluster, options.out or f"chaos-seed-{options.seed}")
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


def keep(result: ChaosResult, cluster: LocalCluster, out: str) -> str:
    """Write the evidence of a run to `out`: history.jsonl, the members' logs, check.html."""
    os.makedirs(out, exist_ok=True)
    result.history.save(os.path.join(out, "history.jsonl"))
    for m in cluster.config.members:
        log = cluster.log_path(m)
        if os.path.exists(log):
            shutil.copy(log, os.path.join(out, os.path.basename(log)))
    if result.verdict.check is not None:
        render_html(result.history, result.verdict.check, os.path.join(out, "check.html"))
    with open(os.path.join(out, "report.txt"), "w") as f:
        f.write(report(result) + "\n")
    return out


def report(result: ChaosResult) -> str:
    c = result.counts
    lines = [
        f"operations: {c[OK]} ok, {c[FAIL]} failed, {c[UNKNOWN]} unknown "
        f"({sum(c.values())} in all, {result.options.clients} clients, "
        f"{result.options.keys} keys live at once, {result.keys_used} used)",
        f"faults: {len(result.records)}",
    ]
    for kind in schedule.FAULTS:
        records = [r for r in result.records if r.step.kind == kind]
        if kind in result.skipped:
            lines.append(f"  {kind:<12} not run: {result.skipped[kind]}")
        if not records:
            continue
        recoveries = [r.recovery_s for r in records if r.recovery_s is not None]
        in_flight = result.in_flight_s.get(kind)
        lines.append(
            f"  {kind:<12} x{len(records)}: longest stretch without a successful operation "
            f"{result.gaps_s.get(kind, 0.0):.2f} s; whole again after a heal in at most "
            f"{max(recoveries, default=float('nan')):.2f} s"
            + (
                f"; commands in flight at the others answered within {in_flight:.2f} s"
                if in_flight is not None
                else ""
            )
        )
    if result.verdict.check is not None:
        lines.append(f"check: {result.verdict.check.summary().splitlines()[0]}")
    if result.verdict.ok:
        lines.append("verdict: PASS")
    else:
        lines.append("verdict: FAIL")
        lines += [f"  {p}" for p in result.verdict.problems]
    if result.kept:
        lines.append(f"kept: {result.kept} (history.jsonl, member logs, check.html)")
    lines.append(f"reproduce: {result.options.command_line()}")
    return "\n".join(lines)
