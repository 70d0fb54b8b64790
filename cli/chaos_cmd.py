"""`smr chaos`: a real cluster, concurrent clients and a nemesis; the history checked.

This module owns the command's options and its exit status (0: the run passed; 1: it did not,
and its evidence was kept; 2: a usage error). The run itself is `smr.chaos.run`'s.
"""

from __future__ import annotations

import click

from smr.chaos import run as chaos_run
from smr.chaos import schedule
from smr.chaos.workload import OPS_PER_KEY


@click.command()
@click.option("--seed", type=int, default=1, show_default=True, help="Picks the fault schedule.")
@click.option("--duration-s", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option("--clients", type=click.IntRange(1, 64), default=5, show_default=True)
@click.option(
    "--faults",
    default="kill,pause,partition,restart-all",
    show_default=True,
    help=f"Comma-separated, of: {', '.join(schedule.FAULTS)}.",
)
@click.option(
    "--transport",
    type=click.Choice(chaos_run.TRANSPORTS),
    default="tcp",
    show_default=True,
    help="shm has no network: no partitions.",
)
@click.option("--nodes", type=click.IntRange(3, 9), default=3, show_default=True)
@click.option(
    "--keys",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="How many keys the clients use at once.",
)
@click.option(
    "--ops-per-key",
    type=click.IntRange(min=0),
    default=OPS_PER_KEY,
    show_default=True,
    help="A key is retired for a fresh one after this many operations (0: never), so each "
    "key's history stays small enough to check.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the history, member logs and check.html here (a failing run keeps them in "
    "chaos-seed-SEED by default).",
)
def chaos(
    seed: int,
    duration_s: float,
    clients: int,
    faults: str,
    transport: str,
    nodes: int,
    keys: int,
    ops_per_key: int,
    out: str | None,
) -> None:
    """Run a real cluster under faults and check what its clients saw for linearizability."""
    try:
        names = schedule.parse_faults(faults)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--faults") from None
    options = chaos_run.ChaosOptions(
        seed=seed,
        duration_s=duration_s,
        clients=clients,
        faults=names,
        transport=transport,
        nodes=nodes,
        keys=keys,
        ops_per_key=ops_per_key,
        out=out,
    )
    result = chaos_run.run(options, echo=click.echo)
    click.echo(chaos_run.report(result))
    raise SystemExit(0 if result.verdict.ok else 1)
