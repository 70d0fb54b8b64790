"""`smr demo`: the main job. A real cluster of processes, a workload, a crash and a rejoin.

It starts a local cluster of three member processes replicating a KVStore in `durable` mode,
drives a client workload with a progress bar, SIGKILLs one member mid-run (the view change is
visible: the group goes on without it), restarts it (it rejoins with state transfer), then prints
throughput, latency percentiles, the views the group went through, a check that every replica
answered every command identically, and an inspection of one member's log. Every process it
started is stopped before it returns.

`smr demo --simulated` tells the same story in the deterministic simulator instead.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future

import click

from smr.core.views import ViewInstalled
from smr.sim import SimConfig, Simulation

MS = 1_000_000


@click.command()
@click.option("--commands", default=6000, show_default=True, type=click.IntRange(100, 10**7))
@click.option(
    "--transport",
    envvar="SMR_TRANSPORT",
    type=click.Choice(["auto", "shm", "tcp", "verbs"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--window",
    default=64,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Commands the client keeps outstanding.",
)
@click.option("--keep", is_flag=True, help="Keep the data directory (printed) afterwards.")
@click.option("--simulated", is_flag=True, help="Run the story in the simulator instead.")
@click.option("--seed", default=42, show_default=True, help="The simulation seed (--simulated).")
def demo(
    commands: int, transport: str, window: int, keep: bool, simulated: bool, seed: int
) -> None:
    """Replicate a key-value store over 3 processes, kill and restart one, and report."""
    if simulated:
        simulated_demo(seed, 3)
        return
    data_dir = tempfile.mkdtemp(prefix="smr-demo-")
    try:
        code = run_demo(data_dir, commands, transport, window)
    finally:
        if keep:
            click.echo(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    sys.exit(code)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def run_demo(data_dir: str, commands: int, transport: str, window: int) -> int:
    from smr.client import connect
    from smr.runtime.cluster import ClusterError, LocalCluster
    from smr.statemachines import KVStore
    from smr.transport.base import TransportError

    victim = 3
    try:
        cluster = LocalCluster(3, data_dir=data_dir, transport=transport, mode="durable")
    except TransportError as e:
        click.echo(f"smr demo: {e}", err=True)
        return 2
    click.echo(f"Starting 3 members (smr node processes) in {data_dir}")
    with cluster:
        try:
            status = cluster.wait_ready(timeout_s=30)
        except ClusterError as e:
            click.echo(f"smr demo: {e}", err=True)
            return 1
        pids = cluster.pids
        click.echo(
            f"view {status['epoch']}: members {status['members']} "
            f"(pids {', '.join(str(pids[m]) for m in sorted(pids))}), "
            f"transport: {_transport_line(cluster, 1)}"
        )
        client = connect(cluster.config_path, member=1)
        kv = client.subgroup(KVStore)
        latencies_ms: list[float] = []
        mismatched = 0
        failed = 0
        in_flight: list[tuple[float, Future]] = []
        kill_at, restart_at = commands // 3, 2 * commands // 3
        killed_s = rejoined_s = 0.0
        started = time.perf_counter()
        click.echo(
            f"A client submits {commands} puts to a durable KVStore ({window} in flight);"
            f" member {victim} is killed after {kill_at} and restarted after {restart_at}."
        )
        with click.progressbar(length=commands, label="commands", width=30) as bar:
            for i in range(commands):
                if i == kill_at:
                    cluster.kill(victim)
                    killed_s = time.time()
                    bar.label = f"member {victim} killed"
                if i == restart_at:
                    cluster.restart(victim)
                    rejoined_s = time.time()
                    bar.label = f"member {victim} rejoining"
                in_flight.append(
                    (time.perf_counter(), kv.submit("put", f"key-{i % 500}", b"value-%d" % i))
                )
                while len(in_flight) >= window:
                    mismatched, failed = _settle(in_flight.pop(0), latencies_ms, mismatched, failed)
                bar.update(1)
            while in_flight:
                mismatched, failed = _settle(in_flight.pop(0), latencies_ms, mismatched, failed)
        elapsed = time.perf_counter() - started
        try:
            cluster.wait_ready([1, 2, victim], timeout_s=20)
            rejoin = f"member {victim} is back in the view"
        except ClusterError as e:
            rejoin = f"member {victim} did not rejoin: {e}"
        # one more command, answered by every member including the one that came back
        final = kv.put("demo", b"done")
        digests = {m: _digest(cluster, m) for m in sorted(cluster.config.founders)}
        views = client.views()
        client.close()
    ok = failed == 0 and mismatched == 0 and len(set(digests.values())) == 1
    click.echo("")
    click.echo(
        f"{commands} commands in {elapsed:.2f} s: {commands / elapsed:,.0f} commands/s; "
        f"latency p50 {_pct(latencies_ms, 50):.2f} ms, p99 {_pct(latencies_ms, 99):.2f} ms,"
        f" max {max(latencies_ms, default=0):.2f} ms"
    )
    click.echo(f"failed commands: {failed}; reply maps with differing results: {mismatched}")
    for error, count in sorted(ERRORS.items(), key=lambda x: -x[1])[:5]:
        click.echo(f"  {count} failed with: {error}")
    click.echo("views the group went through:")
    for epoch, members in views:
        click.echo(f"  epoch {epoch}: members {list(members)}")
    for what, at_s, key in (("killed", killed_s, "departed"), ("restarted", rejoined_s, "joined")):
        view = _view_after(cluster, 1, at_s, key, victim)
        if view is not None:
            click.echo(
                f"member {victim} {what}: view {view[0]} installed {1000 * (view[1] - at_s):.0f} ms"
                f" later at member 1"
            )
    click.echo(f"{rejoin}; last command answered by members {sorted(final)}")
    click.echo(
        "state digests after the run: "
        + ", ".join(f"member {m} {d[:12]}" for m, d in digests.items())
    )
    click.echo("")
    _inspect(os.path.join(data_dir, "data", "member-1", "subgroup-0-shard-0"))
    click.echo("")
    click.echo("every member agrees" if ok else "MEMBERS DISAGREE OR COMMANDS FAILED")
    return 0 if ok else 1


ERRORS: dict[str, int] = {}  # failed commands by error, for the report


def _settle(item, latencies_ms, mismatched, failed):
    t0, future = item
    try:
        results = future.result(timeout=30)
    except Exception as e:  # counted and reported
        error = str(e) or type(e).__name__
        ERRORS[error] = ERRORS.get(error, 0) + 1
        return mismatched, failed + 1
    latencies_ms.append((time.perf_counter() - t0) * 1000)
    if len(set(results.values())) != 1:
        mismatched += 1
    return mismatched, failed


def _digest(cluster, member: int) -> str:
    """A digest of the KVStore as `member` serves it, once that member is active (under load a
    member may be rejoining; it is given up to 30 s)."""
    import hashlib

    from smr.client import ClientError, connect
    from smr.statemachines import KVStore

    deadline = time.monotonic() + 30
    while True:
        try:
            with connect(cluster.config_path, member=member, timeout_s=5) as c:
                if c.member != member:
                    raise ClientError(f"member {member} does not answer")
                kv = c.subgroup(KVStore)
                h = hashlib.sha256()
                keys = kv.keys()  # a query of the replicated KVStore, not a dict
                for k in keys:
                    h.update(k.encode() + b"=" + (kv.get(k) or b"") + b";")
                return h.hexdigest()
        except (ClientError, TimeoutError) as e:
            if time.monotonic() > deadline:
                return f"unavailable ({e})"
            time.sleep(0.2)


def _view_after(cluster, member: int, at_s: float, key: str, victim: int):
    """(epoch, wall time) of the first view after `at_s` whose `key` lists `victim`, from the
    member's structured log."""
    import json

    try:
        with open(cluster.log_path(member)) as f:
            for line in f:
                record = json.loads(line)
                if (
                    record.get("event") == "view"
                    and record["t"] >= at_s
                    and victim in record.get(key, [])
                ):
                    return record["epoch"], record["t"]
    except (OSError, ValueError):
        pass
    return None


def _transport_line(cluster, member: int) -> str:
    import json

    try:
        with open(cluster.log_path(member)) as f:
            for line in f:
                record = json.loads(line)
                if record.get("event") == "transport":
                    return record["choice"].removeprefix("transport: ")
    except (OSError, ValueError):
        pass
    return cluster.config.transport


def _inspect(path: str) -> None:
    from smr.cli.log_cmd import inspect_cmd

    click.echo(f"member 1's log (smr log inspect {path}):")
    inspect_cmd.callback(path)


def simulated_demo(seed: int, nodes: int) -> None:
    """The same story in the deterministic simulator (`smr demo --simulated`)."""
    config = SimConfig(
        nodes=nodes,
        seed=seed,
        workload="kv",
        faults=frozenset({"delay"}),
        safety_ns=300 * MS,
        liveness_ns=400 * MS,
    )
    sim = Simulation(config)
    victim = nodes
    sim.schedule(120 * MS, "crash", victim)
    sim.schedule(260 * MS, "restart", victim)
    click.echo(f"A group of {nodes} members replicates a KVStore (and a Counter) in the")
    click.echo("deterministic simulator: each member is the code `smr node` runs, on a network")
    click.echo("with random delays and a disk that loses what was not synced. Every member's")
    click.echo("clients send puts, deletes and")
    click.echo(f"compare-and-sets; member {victim} crashes at 120 ms and restarts at 260 ms.")
    click.echo("")
    result = sim.run()
    lines = list(sim.timeline)
    for t, e in sim.nodes[1].events:
        if isinstance(e, ViewInstalled) and e.epoch > 1:
            lines.append((t, f"member 1 now sees view {e.epoch}: {list(e.members)}"))
    for t, text in sorted(lines, key=lambda x: x[0]):
        click.echo(f"  {t / MS:8.1f} ms  {text}")
    click.echo("")
    submitted = len(sim.nonces)
    click.echo(f"{submitted} commands submitted; what each member applied:")
    for m, node in sorted(sim.nodes.items()):
        kv = node.machines.get((0, 0))
        state = f"KVStore digest {kv.digest()[:16]}, keys {kv.keys()}" if kv else "no KVStore"
        click.echo(f"  member {m}: {len(node.deliveries)} deliveries; {state}")
    if sim.view_change_ns:
        click.echo(
            f"failover: {sim.view_change_ns[0] / MS:.1f} ms (simulated) from the crash "
            "to a view without the crashed member"
        )
    click.echo(
        f"{result.steps} steps, {result.stats['writes']} one-sided writes, "
        f"{result.stats['views']} view installations"
    )
    if result.ok:
        click.echo(
            "every invariant (total order, durability, virtual synchrony, state digests) "
            f"held after every step; run digest {result.digest}"
        )
    else:
        click.echo(f"INVARIANT BROKEN: {result.violation}")
        click.echo(f"reproduce with: {config.command()}")
        raise SystemExit(1)
