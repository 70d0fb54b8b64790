"""Options and parsing shared by `smr bench cluster` and `smr bench compare`."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import click

from smr.bench import run


def _csv(value: str, name: str, allowed: tuple[str, ...]) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        raise click.BadParameter(
            f"{', '.join(bad) or 'nothing'} is not one of {', '.join(allowed)}", param_hint=name
        )
    return items


def parse_modes(value: str) -> list[str]:
    return _csv(value, "--modes", run.MODES)


def parse_systems(value: str) -> list[str]:
    return _csv(value, "--systems", run.SYSTEMS)


def parse_sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of byte counts", param_hint="--sizes"
        ) from None
    if not sizes or any(not 1 <= s <= 16 << 20 for s in sizes):
        raise click.BadParameter("sizes must be between 1 and 16777216 bytes", param_hint="--sizes")
    return sorted(set(sizes))


def workload_options(command):
    """--transport, --modes, --sizes, --duration-s, --warmup-s, --window, --replies, --submit,
    --json, --plot."""
    for option in reversed(
        [
            click.option(
                "--transport",
                type=click.Choice(["shm", "tcp"]),
                default="shm",
                show_default=True,
                help="How the smr members talk.",
            ),
            click.option("--modes", default="ordered,durable", show_default=True),
            click.option(
                "--sizes",
                default=",".join(map(str, run.SIZES)),
                show_default=True,
                help="Payload bytes.",
            ),
            click.option(
                "--duration-s", default=3.0, show_default=True, help="Seconds per workload."
            ),
            click.option("--warmup-s", default=0.5, show_default=True),
            click.option(
                "--window",
                default=run.window_max,
                show_default=True,
                type=click.IntRange(1, 1 << 16),
                help="Outstanding commands for throughput (fewer for large payloads: at most "
                f"{run.inflight_bytes_max >> 20} MiB in flight).",
            ),
            click.option(
                "--replies",
                type=click.Choice(["all", "one"]),
                default="all",
                show_default=True,
                help="smr commands answered with every replica's result, or with the answering "
                "member's (as pysyncobj answers).",
            ),
            click.option(
                "--submit",
                type=click.Choice(run.SUBMITS),
                default="many",
                show_default=True,
                help="How the smr bench client refills its window: many commands per "
                "submit_many call (what a pipelined writer uses), or a submit call per command.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
            click.option(
                "--plot",
                type=click.Path(dir_okay=False),
                help="Write throughput against payload size (log-log) to this PNG (needs "
                "matplotlib; without it the run goes on, prints its table and exits 1).",
            ),
        ]
    ):
        command = option(command)
    return command


def check_plot(plot: str | None) -> str | None:
    """Before a run: the plot's path if it can be drawn; else None, after a warning (the run
    goes on and prints its table; `finish_plot` reports the missing plot at the end)."""
    if not plot:
        return None
    why = run.plot_unavailable()
    if why is None:
        return plot
    click.echo(f"warning: {why}; running without the plot", err=True)
    return None


def finish_plot(asked: str | None, plot: str | None, results: dict) -> bool:
    """Draw the plot if it can be; False (after one line on stderr) if it was asked for and not
    written, so the command exits non-zero after its table."""
    if not asked:
        return True
    if plot is None:
        click.echo(f"no plot written to {asked}: {run.plot_unavailable()}", err=True)
        return False
    try:
        run.plot(results, plot)
    except (RuntimeError, OSError) as error:
        click.echo(f"no plot written to {asked}: {error}", err=True)
        return False
    return True


def show_results(
    results: dict, asked: str | None, plot: str | None, extra: str = "", ok: bool = True
) -> None:
    """The table, its legend, the CPU figures, the workloads the client process bounded, the
    baselines' settings and agreement, and `extra` (bench cluster's failover), then the plot if
    one was asked for; exits 1 when it could not be drawn or `ok` is false."""
    click.echo(run.format_table(results))
    click.echo("\n" + run.LEGEND)
    for text in (
        run.format_cpu(results),
        run.format_bounds(results),
        run.format_baselines(results),
    ):
        if text:
            click.echo(text)
    if extra:
        click.echo(extra)
    plotted = finish_plot(asked, plot, results)
    if plotted and plot:
        click.echo(f"plot: {plot}")
    exit_unless(plotted and ok)


def exit_unless(ok: bool) -> None:
    if not ok:
        sys.exit(1)


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_shown(as_json: bool) -> Iterator[None]:
    """While a long run lasts, one progress line on stderr, rewritten before each step (which
    workload, how long so far), when stderr is a terminal; nothing with --json or when it is not
    (CI logs, pipes)."""
    if as_json or not _stderr_is_tty():
        yield
        return
    began = time.monotonic()
    steps = 0

    def show(text: str) -> None:
        nonlocal steps
        steps += 1
        elapsed = time.monotonic() - began
        click.echo(f"\r\033[K[{elapsed:4.0f} s, step {steps}] {text}", nl=False, err=True)

    run.progress = show
    try:
        yield
    finally:
        run.progress = None
        click.echo("\r\033[K", nl=False, err=True)
