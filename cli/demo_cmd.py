"""`smr demo`: the main job, shown in plain words.

Until the process runtime lands, the demo runs a replicated key-value store on a group of three
members in the deterministic simulator (the real protocol core, a simulated network with delays,
a faulty disk), crashes a member in the middle of the run, restarts it, and tells what happened:
the views the group went through, the commands each member applied, and that every member ended
in the same state.
"""

from __future__ import annotations

import click

from smr.core.views import ViewInstalled
from smr.sim import SimConfig, Simulation

MS = 1_000_000


@click.command()
@click.option("--seed", default=42, show_default=True, help="The simulation seed.")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(3, 9))
def demo(seed: int, nodes: int) -> None:
    """Replicate a key-value store, crash and restart a member, and narrate it."""
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
    click.echo("deterministic simulator: the real protocol core, a network with random delays, a")
    click.echo("disk that loses what was not synced. Every member submits puts, deletes and")
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
