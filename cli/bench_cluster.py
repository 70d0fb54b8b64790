"""`smr bench cluster`: three smr members as processes on this host, driven by a separate
client process: throughput and latency per mode and payload, and the time from SIGKILL of a
member to the first command delivered in the next view."""

from __future__ import annotations

import json

import click

from smr.bench import run
from smr.cli.bench_options import (
    check_plot,
    exit_unless,
    finish_plot,
    parse_modes,
    parse_sizes,
    progress_shown,
    show_results,
    workload_options,
)


@click.command("cluster")
@workload_options
@click.option(
    "--kills",
    default=5,
    show_default=True,
    type=click.IntRange(0, 100),
    help="SIGKILL repetitions for the failover figure (0: skip).",
)
@click.option(
    "--reads",
    is_flag=True,
    help="Also queries, linearizable (lin-read) and sequential (seq-read), at the smallest size.",
)
def bench_cluster(
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
    kills,
    reads,
) -> None:
    """Throughput (commands/s, MiB/s), latency (p50, p99, max) and failover of 3 local members."""
    asked, plot = plot, check_plot(plot)
    with progress_shown(as_json):
        try:
            results, failover = run.compare(
                ["smr"],
                parse_modes(modes),
                parse_sizes(sizes),
                transport=transport,
                duration_s=duration_s,
                warmup_s=warmup_s,
                failover_repetitions=kills,
                window=window,
                replies=replies,
                submit=submit,
                reads=reads,
            )
        except RuntimeError as error:  # a system that is not installed or did not start
            raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps({**results, "failover": failover}))
        exit_unless(finish_plot(asked, plot, results))
        return
    show_results(results, asked, plot, run.format_failover(failover) if failover else "")
