"""`smr node --config FILE --id N`: run one member of a cluster in this process.

It runs until SIGTERM or SIGINT (a clean shutdown: logs flushed, connections closed) or until the
member halts (it found itself in a minority or was removed from the view), and exits with 0 on a
clean shutdown, 3 on a halt, 4 on a failed disk, 5 when the group removed it for good (then it
never starts again: a later `smr node` for it says so and exits with 5 too), 2 on a
configuration or transport problem (one line on stderr).

A member the configuration does not list is started with its addresses, `--host`, `--port` and
`--client-port` (and `--metrics-port`): it asks the listed members to let it join, and the group
learns its addresses with the view (`smr.runtime.roster`). It keeps them in its data directory, so
that it restarts with `--config` and `--id` alone. A listed member takes no addresses, or its
listed ones.

With `protocol = "multipaxos"` in `[cluster]` the member runs the built-in classic Multi-Paxos
(`smr.runtime.paxos_node`) instead.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

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
@click.option(
    "--host",
    default=None,
    help="This member's address, for a member the configuration does not list "
    "[default: 127.0.0.1].",
)
@click.option("--port", type=int, default=None, help="Its member-to-member port (unlisted member).")
@click.option("--client-port", type=int, default=None, help="Its client port (unlisted member).")
@click.option(
    "--metrics-port", type=int, default=None, help="Its metrics port (optional; unlisted member)."
)
def node(
    config_path: str,
    member: int,
    transport: str | None,
    host: str | None,
    port: int | None,
    client_port: int | None,
    metrics_port: int | None,
) -> None:
    """Run one member of a cluster."""
    from smr.core.errors import UsageError
    from smr.runtime.config import ConfigError, load
    from smr.transport.base import TransportError

    try:
        config = load(config_path)
        if transport is not None:
            config = dataclasses.replace(config, transport=transport)
        config = _with_addresses(config, member, host, port, client_port, metrics_port)
        from smr.runtime.node import EXIT_REMOVED, Node, NodeExit

        n: Any
        if config.protocol == "multipaxos":
            from smr.runtime.paxos_node import PaxosMember

            n = PaxosMember(config, member)
        else:
            n = Node(config, member)
    except (ConfigError, TransportError, UsageError) as e:
        click.echo(f"smr node: {e}", err=True)
        sys.exit(2)
    except NodeExit as e:  # removed for good: it never starts again
        click.echo(f"smr node: {e}", err=True)
        sys.exit(e.code)
    except OSError as e:
        click.echo(f"smr node: cannot start member {member}: {e}", err=True)
        sys.exit(2)
    n.install_signal_handlers()
    try:
        code = n.run()
    except TransportError as e:  # a provider that cannot start here: one line, no traceback
        click.echo(f"smr node: {e}", err=True)
        sys.exit(2)
    if code == EXIT_REMOVED:
        click.echo(f"smr node: {n.exit_reason}", err=True)
    sys.exit(code)


def _with_addresses(
    config,
    member: int,
    host: str | None,
    port: int | None,
    client_port: int | None,
    metrics_port: int | None,
):
    """The configuration with `member` in it when its addresses are given (checked against the
    listed ones for a listed member); unchanged when none are (the node finds a listed member
    in the file, an unlisted one's card in its data directory)."""
    from smr.runtime.config import ConfigError, MemberConfig, with_member

    if host is None and port is None and client_port is None and metrics_port is None:
        return config
    listed = config.members.get(member)
    if listed is not None:
        given = MemberConfig(
            member,
            listed.host if host is None else host,
            listed.port if port is None else port,
            listed.client_port if client_port is None else client_port,
            listed.metrics_port if metrics_port is None else metrics_port,
        )
        return with_member(config, given)
    if port is None or client_port is None:
        raise ConfigError(
            f"member {member} is not listed in {config.path}: give both --port and --client-port "
            "(and --host, unless it is 127.0.0.1)"
        )
    return with_member(
        config, MemberConfig(member, host or "127.0.0.1", port, client_port, metrics_port)
    )
