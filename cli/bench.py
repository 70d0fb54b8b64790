"""`smr bench`: benchmarks as commands. Figures and the exact commands go in docs/performance.md;
tests never assert timings."""

from __future__ import annotations

import importlib

import click

BENCHES = {
    "cluster": "smr.cli.bench_cluster:bench_cluster",
    "compare": "smr.cli.bench_compare:bench_compare",
    "core": "smr.cli.bench_core:bench_core",
    "log": "smr.cli.bench_log:bench_log",
    "rdmc": "smr.cli.bench_rdmc:bench_rdmc",
    "transport": "smr.cli.bench_transport:bench_transport",
}


class _LazyBench(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(BENCHES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in BENCHES:
            return None
        module, attr = BENCHES[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyBench)
def bench() -> None:
    """Measure the toolkit on this machine."""
