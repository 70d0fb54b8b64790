"""`smr cluster up|status|down`: a local cluster of member processes on this host.

`up` writes a configuration (with a fresh secret) into the data directory unless one is there,
starts the founders as `smr node` processes, waits until they form one view, and shows a status
table (`--watch` keeps refreshing it until Ctrl-C, which stops watching, not the cluster).
`status` asks every member; `down` stops the members `up` started (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import sys
import time

import click

DEFAULT_DIR = "smr-cluster"


def status_rows(config_path: str) -> list[dict]:
    from smr.client import ClientError, connect
    from smr.runtime.config import load

    config = load(config_path)
    rows = []
    for m in sorted(config.members):
        try:
            with connect(config, member=m, timeout_s=1.0) as c:
                s = c.status() if c.member == m else None
        except (ClientError, TimeoutError, OSError):
            s = None
        rows.append(s or {"member": m, "status": "down"})
    return rows


def render(rows: list[dict]) -> str:
    lines = [f"{'member':>6}  {'pid':>7}  {'status':<8} {'epoch':>5}  {'view':<14} shards"]
    for s in rows:
        shards = ", ".join(
            f"{x['type']}/{x['shard']} {x['mode']} at {x['version'] >> 32}:"
            f"{x['version'] & 0xFFFFFFFF} ({x['applied']} applied)"
            for x in s.get("shards", [])
        )
        lines.append(
            f"{s['member']:>6}  {s.get('pid', '-'):>7}  {s['status']:<8} {s.get('epoch', '-'):>5}"
            f"  {s.get('members', '-')!s:<14} {shards}"
        )
    return "\n".join(lines)


@click.group()
def cluster() -> None:
    """Run a local cluster of member processes."""


@cluster.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 32))
@click.option(
    "--transport",
    envvar="SMR_TRANSPORT",
    type=click.Choice(["auto", "shm", "tcp", "verbs"]),
    default="auto",
    show_default=True,
)
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
@click.option(
    "--mode", type=click.Choice(["ordered", "durable", "raw"]), default="durable", show_default=True
)
@click.option(
    "--type",
    "types",
    multiple=True,
    default=["smr.statemachines:KVStore"],
    show_default=True,
    help="module:Class of a hosted StateMachine (repeatable).",
)
@click.option("--watch/--no-watch", default=False, help="Keep refreshing the status table.")
def up(
    nodes: int, transport: str, data_dir: str, mode: str, types: tuple[str, ...], watch: bool
) -> None:
    """Start a local cluster and wait until it forms."""
    from smr.runtime.cluster import ClusterError, LocalCluster
    from smr.runtime.config import ConfigError
    from smr.transport.base import TransportError

    config_path = os.path.join(data_dir, "cluster.toml")
    if os.path.exists(os.path.join(data_dir, "cluster.pids")):
        click.echo(
            f"a cluster is already up in {data_dir}; `smr cluster down --data-dir "
            f"{data_dir}` first",
            err=True,
        )
        sys.exit(2)
    try:
        if transport == "verbs":
            from smr.transport.verbs import check_available

            check_available()
        cluster = LocalCluster(
            nodes,
            data_dir=data_dir,
            transport=transport,
            mode=mode,
            types=types,
            config_path=config_path if os.path.exists(config_path) else None,
        )
        cluster.start()
        click.echo(f"started {len(cluster.pids)} members from {cluster.config_path}")
        cluster.wait_ready(timeout_s=30)
    except (ClusterError, ConfigError, TransportError) as e:
        click.echo(f"smr cluster up: {e}", err=True)
        from smr.runtime.cluster import stop_from_pidfile

        stop_from_pidfile(data_dir)
        sys.exit(2)
    click.echo(render(status_rows(cluster.config_path)))
    click.echo(f"clients: smr kv --config {cluster.config_path} put KEY VALUE")
    while watch:
        try:
            time.sleep(1)
            click.clear()
            click.echo(render(status_rows(cluster.config_path)))
        except KeyboardInterrupt:
            break


@cluster.command()
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
def status(data_dir: str) -> None:
    """Show every member's view and shards."""
    config_path = os.path.join(data_dir, "cluster.toml")
    if not os.path.exists(config_path):
        click.echo(f"no cluster in {data_dir} (no cluster.toml)", err=True)
        sys.exit(2)
    from smr.runtime.config import ConfigError

    try:
        rows = status_rows(config_path)
    except ConfigError as e:
        click.echo(f"smr cluster status: {e}", err=True)
        sys.exit(2)
    click.echo(render(rows))


@cluster.command()
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
def down(data_dir: str) -> None:
    """Stop the members `smr cluster up` started."""
    from smr.runtime.cluster import stop_from_pidfile

    stopped = stop_from_pidfile(data_dir)
    click.echo(f"stopped members {stopped}" if stopped else f"no running cluster in {data_dir}")
