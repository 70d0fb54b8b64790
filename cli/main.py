"""The root `smr` command and its lazily imported subcommands.

This module owns the command tree. Subcommands live in their own modules and are imported only
when used, so `smr --version` and `smr sim` start fast and a missing optional extra (pyverbs,
pysyncobj) only matters to the command that needs it.
"""

from __future__ import annotations

import importlib
import os

import click

import smr

TRANSPORTS = ("auto", "shm", "tcp", "verbs")
TRANSPORT_ENV = "SMR_TRANSPORT"

# name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "sim": "smr.cli.sim_cmd:sim",
    "log": "smr.cli.log_cmd:log_group",
    "bench": "smr.cli.bench:bench",
    "demo": "smr.cli.demo_cmd:demo",
    "node": "smr.cli.node_cmd:node",
    "cluster": "smr.cli.cluster_cmd:cluster",
    "kv": "smr.cli.kv_cmd:kv",
    "chaos": "smr.cli.chaos_cmd:chaos",
    "check": "smr.cli.check_cmd:check",
    "tls": "smr.cli.tls_cmd:tls",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *SUBCOMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SUBCOMMANDS:
            module, attr = SUBCOMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(smr.__version__, prog_name="smr")
@click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default=None,
    help="The transport for every command that starts members (default: auto).",
)
def cli(transport: str | None) -> None:
    """smr-toolkit: strongly consistent state-machine replication, modelled on Derecho."""
    if transport is None:
        return
    if transport == "verbs":
        from smr.transport.base import TransportUnavailable
        from smr.transport.verbs import check_available

        try:
            check_available()
        except TransportUnavailable as e:
            click.echo(f"smr: {e}", err=True)
            raise SystemExit(2) from None
    # the subcommands' own --transport options default to it
    os.environ[TRANSPORT_ENV] = transport


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
