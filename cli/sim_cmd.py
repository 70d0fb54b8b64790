"""`smr sim`: run the deterministic simulator over a range of seeds and report failures.

For each failing seed it prints the invariant broken and the exact command that reproduces the
run; it ends with `N passed, M failed` and exits non-zero when any failed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from smr.core.multicast import MulticastConfig
from smr.core.rdmc import SCHEDULES
from smr.core.replica import CoreConfig
from smr.sim import BUGS, FAULTS, SimConfig, run_seed
from smr.sim.trace import Tracer
from smr.sim.workloads import WORKLOADS


def parse_seeds(text: str) -> list[int]:
    """`7`, `1-500`, or a comma-separated mix such as `1-10,42`."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a seed list like 1-500 or 3,7,9") from None
    if not seeds:
        raise click.BadParameter("no seeds given")
    return seeds


def percentile(values: list[int], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def parse_names(text: str, allowed: tuple[str, ...], what: str) -> frozenset[str]:
    names = frozenset(x.strip() for x in text.split(",") if x.strip())
    unknown = sorted(names - set(allowed))
    if unknown:
        raise click.BadParameter(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}"
        )
    return names


@click.command()
@click.option(
    "--nodes",
    default=3,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Members in the simulated group.",
)
@click.option(
    "--seeds", default="1-100", show_default=True, help="Seeds to run: 1-500, 7 or 1,5,9."
)
@click.option("--faults", default="", help=f"Comma-separated faults: {', '.join(FAULTS)}.")
@click.option(
    "--workload",
    type=click.Choice(WORKLOADS),
    default="frontier",
    show_default=True,
    help="What the members submit (frontier: the heartbeat protocol alone).",
)
@click.option(
    "--inject-bug", "bugs", default="", help="Break a rule on purpose to see the checkers catch it."
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=MulticastConfig().schedule,
    show_default=True,
    help="RDMC block schedule of large payloads.",
)
@click.option(
    "--block-bytes",
    type=click.IntRange(64, 1 << 30),
    default=MulticastConfig().block_bytes,
    show_default=True,
    help="RDMC block size (the bytes workload sends up to 5000-byte payloads).",
)
@click.option(
    "--protocol",
    type=click.Choice(["derecho", "multipaxos"]),
    default="derecho",
    show_default=True,
    help="multipaxos: the built-in classic Multi-Paxos members (smr.sim.paxos; faults crash, "
    "restart, partition, delay, total; bugs quorum-of-one, no-adoption; workloads kv, the "
    "default, and bank).",
)
@click.option("--verbose", "-v", is_flag=True, help="Print every seed's digest.")
@click.option(
    "--jobs",
    "-j",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Seeds run in parallel processes (results are printed in seed order).",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the specs' abstract events of every seed to this file (JSON lines); "
    "check it with `python -m smr.sim.trace_check FILE`.",
)
def sim(
    nodes: int,
    seeds: str,
    faults: str,
    workload: str,
    bugs: str,
    schedule: str,
    block_bytes: int,
    verbose: bool,
    jobs: int,
    trace_path: str | None,
    protocol: str,
) -> None:
    """Run the real core in the deterministic simulator, one run per seed."""
    seed_list = parse_seeds(seeds)
    if protocol == "multipaxos":
        _sim_multipaxos(nodes, seed_list, faults, bugs, workload, verbose, jobs, trace_path)
        return
    fault_set = parse_names(faults, FAULTS, "faults")
    bug_set = parse_names(bugs, BUGS, "bugs")
    core = CoreConfig(multicast=MulticastConfig(schedule=schedule, block_bytes=block_bytes))
    passed = failed = 0
    failover_ns: list[int] = []
    progress = _Progress(len(seed_list)) if _stderr_is_tty() else None
    if trace_path and jobs > 1:
        raise click.BadParameter(
            "--trace writes one file: run it with --jobs 1", param_hint="--jobs"
        )
    trace_file = open(trace_path, "w", encoding="utf-8") if trace_path else None  # noqa: SIM115
    configs = [
        SimConfig(
            nodes=nodes, seed=seed, faults=fault_set, bugs=bug_set, workload=workload, core=core
        )
        for seed in seed_list
    ]
    pool = None
    if jobs > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(jobs)
        outcomes = pool.imap(_outcome, configs)
    else:
        outcomes = (_outcome(c, trace_file) for c in configs)
    if progress is not None:
        progress.show(0, 0)
    for i, (config, outcome) in enumerate(zip(configs, outcomes, strict=True)):
        digest, steps, end_ns, view_change_ns, violation = outcome
        if progress is not None:
            progress.clear()  # a result line never lands after the progress text
        failover_ns.extend(view_change_ns)
        if _report(config, digest, steps, end_ns, violation, verbose):
            passed += 1
        else:
            failed += 1
        if progress is not None:
            progress.show(i + 1, failed)
    if pool is not None:
        pool.close()
        pool.join()
    if progress is not None:
        progress.clear()
    if trace_file is not None:
        trace_file.close()
    if failover_ns:
        click.echo(
            "crash to the next view (simulated): "
            f"p50 {percentile(failover_ns, 50) / 1e6:.1f} ms, "
            f"p99 {percentile(failover_ns, 99) / 1e6:.1f} ms, "
            f"max {max(failover_ns) / 1e6:.1f} ms over {len(failover_ns)} crashes"
        )
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        sys.exit(1)


def _sim_multipaxos(
    nodes: int,
    seed_list: list[int],
    faults: str,
    bugs: str,
    workload: str,
    verbose: bool,
    jobs: int,
    trace_path: str | None,
) -> None:
    from smr.sim.paxos import PAXOS_BUGS, PAXOS_FAULTS, PAXOS_WORKLOADS, PaxosSimConfig

    if trace_path:
        raise click.BadParameter("--protocol multipaxos writes no trace: leave out --trace")
    workload = "kv" if workload == "frontier" else workload  # its default: KV writes
    if workload not in PAXOS_WORKLOADS:
        raise click.BadParameter(
            f"--protocol multipaxos runs the {' and '.join(PAXOS_WORKLOADS)} workloads, not "
            f"{workload!r}",
            param_hint="--workload",
        )
    fault_set = parse_names(faults, PAXOS_FAULTS, "multipaxos faults")
    bug_set = parse_names(bugs, PAXOS_BUGS, "multipaxos bugs")
    configs = [
        PaxosSimConfig(nodes=nodes, seed=seed, faults=fault_set, bugs=bug_set, workload=workload)
        for seed in seed_list
    ]
    pool = None
    if jobs > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(jobs)
        outcomes = pool.imap(_paxos_outcome, configs)
    else:
        outcomes = (_paxos_outcome(c) for c in configs)
    passed = failed = 0
    for config, (digest, steps, end_ns, violation) in zip(configs, outcomes, strict=True):
        if _report(config, digest, steps, end_ns, violation, verbose):
            passed += 1
        else:
            failed += 1
    if pool is not None:
        pool.close()
        pool.join()
    click.echo(f"{passed} passed, {failed} failed")
    if failed:
        sys.exit(1)


def _report(
    config: Any, digest: str, steps: int, end_ns: int, violation: Any, verbose: bool
) -> bool:
    """Print one seed's result (a failure always, with the command that reproduces it); True
    when it passed."""
    if violation is None:
        if verbose:
            click.echo(f"seed {config.seed}: ok digest={digest} steps={steps}")
        return True
    click.echo(f"seed {config.seed}: FAILED {violation[0]}: {violation[1]}")
    click.echo(f"  at {end_ns / 1e6:.3f} ms simulated, after {steps} steps")
    click.echo(f"  you can reproduce this failure with: {config.command()}")
    return False


def _paxos_outcome(config: Any) -> tuple:
    from smr.sim.paxos import run_paxos_seed

    result = run_paxos_seed(config)
    v = result.violation
    return (
        result.digest,
        result.steps,
        result.end_ns,
        None if v is None else (v.invariant, v.detail),
    )


def _outcome(config: SimConfig, trace_file: Any = None) -> tuple:
    """One seed's result as plain values (it may cross a process boundary)."""
    result = run_seed(config, tracer=Tracer(trace_file) if trace_file is not None else None)
    v = result.violation
    violation = None if v is None else (v.invariant, v.detail)
    return result.digest, result.steps, result.end_ns, list(result.view_change_ns), violation


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


class _Progress:
    """One line on stderr, rewritten after every seed: seeds done, failures, time so far and an
    estimate of the rest. Only on a terminal: CI logs and pipes get the results alone."""

    def __init__(self, total: int):
        self.total = total
        self.began = time.monotonic()

    def show(self, done: int, failed: int) -> None:
        elapsed = time.monotonic() - self.began
        left = f", about {elapsed / done * (self.total - done):.0f} s left" if done else ""
        click.echo(
            f"\r\033[K{done}/{self.total} seeds, {failed} failed, {elapsed:.0f} s{left}",
            nl=False,
            err=True,
        )

    def clear(self) -> None:
        click.echo("\r\033[K", nl=False, err=True)
