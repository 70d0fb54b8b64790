"""`smr check history FILE --model M`: is a recorded client history linearizable?

Thin: reads the JSON lines file (`smr.check.History.save` writes it), runs `smr.check.check`,
prints the verdict and, with `--html`, draws the timeline. Exit status 0: linearizable;
1: a violation; 2: the file or the model could not be used, or the search hit `--timeout`.
"""

from __future__ import annotations

import sys

import click

from smr.check.models import MODELS


@click.group()
def check() -> None:
    """Check what clients saw."""


@check.command("history")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model",
    "model_name",
    type=click.Choice(sorted(MODELS)),
    required=True,
    help="The sequential specification: a register, or one of the example state machines.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write a timeline of the history, the violation marked, to this HTML file.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Give up after this many seconds (exit status 2) [default: no limit].",
)
@click.option(
    "--no-partition",
    is_flag=True,
    help="Search the history in one piece even where the model could split it by key.",
)
def history_cmd(
    file: str, model_name: str, html_path: str | None, timeout_s: float | None, no_partition: bool
) -> None:
    """Check the history in FILE (JSON lines, one operation each) for linearizability against
    --model; exits 1 on a violation."""
    from smr.check import History, HistoryError, ModelError, check, render_html

    try:
        history = History.load(file)
        result = check(history, model_name, partition=not no_partition, timeout_s=timeout_s)
    except (HistoryError, ModelError) as e:
        click.echo(f"smr check: {e}", err=True)
        sys.exit(2)
    click.echo(result.summary())
    if html_path is not None:
        try:
            render_html(history, result, html_path)
        except OSError as e:
            click.echo(f"smr check: cannot write {html_path}: {e}", err=True)
            sys.exit(2)
        click.echo(f"timeline: {html_path}")
    if result.outcome == "violation":
        sys.exit(1)
    if result.outcome == "unknown":
        sys.exit(2)
