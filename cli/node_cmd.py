"""`smr node --config FILE --id N`: run one member of a cluster in this process.

It runs until SIGTERM or SIGINT (a clean shutdown: logs flushed, connections closed) or until the
member halts (it found itself in a minority or was removed from the view), and exits with 0 on a
clean shutdown, 3 on a halt, 2 on a configuration or transport problem (one line on stderr).
"""

from __future__ import annotations

import dataclasses
import sys

import click


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The cluster's TOML configuration.",
)
@click.option("--id", "member", required=True, type=int, help="This member's id.")
@click.option(
    "--transport",
    envvar="SMR_TRANSPORT",
    type=click.Choice(["auto", "shm", "tcp", "verbs"]),
    default=None,
    help="Override the configuration's transport.",
)
def node(config_path: str, member: int, transport: str | None) -> None:
    """Run one member of a cluster."""
    from smr.core.errors import UsageError
    from smr.runtime.config import ConfigError, load
    from smr.transport.base import TransportError

    try:
        config = load(config_path)
        if transport is not None:
            config = dataclasses.replace(config, transport=transport)
        from smr.runtime.node import Node

        n = Node(config, member)
    except (ConfigError, TransportError, UsageError) as e:
        click.echo(f"smr node: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        click.echo(f"smr node: cannot start member {member}: {e}", err=True)
        sys.exit(2)
    n.install_signal_handlers()
    try:
        code = n.run()
    except TransportError as e:  # a provider that cannot start here: one line, no traceback
        click.echo(f"smr node: {e}", err=True)
        sys.exit(2)
    sys.exit(code)
