"""`smr bench compare`: the same workloads against smr, pysyncobj, the raw references
(loopback TCP stream, memory copy) and, with `--systems`, the external baselines etcd and
ZooKeeper in one run, side by side with ratios; `--json` prints
`{system: {mode: {payload: {ops_per_s, mib_per_s, p50_ms, p99_ms, ...}}}}`. It exits 1 after
its output when a baseline's members disagreed after the run."""

from __future__ import annotations

import json

import click

from smr.bench import pysyncobj_ref, run
from smr.cli.bench_options import (
    check_plot,
    exit_unless,
    finish_plot,
    parse_modes,
    parse_sizes,
    parse_systems,
    progress_shown,
    show_results,
    workload_options,
)


@click.command("compare")
@click.option(
    "--systems",
    default="smr,pysyncobj,raw",
    show_default=True,
    help="Comma-separated, from smr, smr-tls (smr over tcp with mutual TLS), multipaxos (the "
    "built-in classic Multi-Paxos), pysyncobj, raw, etcd, zookeeper (etcd and zookeeper: `make "
    "bench-deps` installs them).",
)
@click.option(
    "--members",
    type=click.IntRange(1, 15),
    default=3,
    show_default=True,
    help="Members per group, for smr, smr-tls and multipaxos (the others run 3).",
)
@workload_options
@click.option(
    "--reads",
    is_flag=True,
    help="Also reads at each level, at the smallest size: lin-read (smr linearizable, etcd's "
    "default Range, ZooKeeper sync+get) and seq-read (smr sequential, etcd serializable, "
    "ZooKeeper get).",
)
@click.option(
    "--watches",
    is_flag=True,
    help="Also a watch workload (smr and etcd): one watcher process on the key while a writer "
    "writes; its row gives the events/s the watcher received and ms from a write's submission "
    "to its event.",
)
def bench_compare(
    systems,
    transport,
    modes,
    sizes,
    duration_s,
    warmup_s,
    window,
    replies,
    submit,
    as_json,
    plot,
    reads,
    watches,
    members,
) -> None:
    """smr, pysyncobj, raw loopback, etcd and ZooKeeper side by side (3 replicas each, one
    client process)."""
    system_list = parse_systems(systems)
    why = run.missing_baseline(system_list)
    if why:
        raise click.ClickException(why)
    if "pysyncobj" in system_list and not pysyncobj_ref.available():
        raise click.ClickException(
            f"pysyncobj is not installed; install it with: {pysyncobj_ref.INSTALL_HINT}"
        )
    asked, plot = plot, check_plot(plot)
    with progress_shown(as_json):
        try:
            results, _ = run.compare(
                system_list,
                parse_modes(modes),
                parse_sizes(sizes),
                transport=transport,
                duration_s=duration_s,
                warmup_s=warmup_s,
                window=window,
                replies=replies,
                submit=submit,
                reads=reads,
                watches=watches,
                members=members,
            )
        except ValueError as error:  # a size some system cannot take, say
            raise click.ClickException(str(error)) from error
        except RuntimeError as error:  # a system that is not installed or did not start
            raise click.ClickException(str(error)) from error
    disagreed = run.disagreed(results)
    if as_json:
        click.echo(json.dumps(results))
        exit_unless(finish_plot(asked, plot, results) and not disagreed)
        return
    show_results(results, asked, plot, ok=not disagreed)
