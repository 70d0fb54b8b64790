"""`smr cluster up|status|down`: a local cluster of member processes on this host.

`up` writes a configuration (with a fresh secret) into the data directory unless one is there,
starts the founders as `smr node` processes, waits until they form one view, and shows a status
table (`--watch` keeps refreshing it until Ctrl-C, which stops watching, not the cluster).
`status` asks every member (`--watch` follows it live): views, shards, and the headline metrics
(delivered and persisted versions, commit and fsync latencies); `down` stops the members `up`
started (SIGTERM, then SIGKILL).
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


def _version(v: int | None) -> str:
    return "-" if v is None else f"{v >> 32}:{v & 0xFFFFFFFF}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def render(rows: list[dict]) -> str:
    """The status table, then (for members that report metrics) one line per member and shard:
    delivered and persisted versions (epoch:seq), commands answered here, and the commit and
    fsync latencies at this member (p50/p99, ms, estimated from the histograms)."""
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
    metrics = [(s["member"], s["metrics"]) for s in rows if s.get("metrics")]
    if metrics:
        lines.append("")
        lines.append(
            f"{'member':>6}  {'shard':<7} {'delivered':>11} {'persisted':>11} {'answered':>9}"
            f"  {'commit p50/p99 ms':>17}  {'fsync p50/p99 ms':>16}  {'inbox':>6}  views"
        )
        for member, m in metrics:
            for x in m.get("shards", []):
                commit = f"{_ms(x['commit_p50_ms'])}/{_ms(x['commit_p99_ms'])}"
                fsync = f"{_ms(x['fsync_p50_ms'])}/{_ms(x['fsync_p99_ms'])}"
                lines.append(
                    f"{member:>6}  {str(x['subgroup']) + '/' + str(x['shard']):<7}"
                    f" {_version(x['delivered']):>11} {_version(x['persisted']):>11}"
                    f" {x['answered']:>9}  {commit:>17}  {fsync:>16}  {m['inbox']:>6}"
                    f"  {m['view_changes']}"
                )
    return "\n".join(lines)


def watch_status(config_path: str, interval_s: float) -> None:
    """Refresh the table until Ctrl-C (which stops watching, not the cluster)."""
    while True:
        try:
            time.sleep(interval_s)
            rows = status_rows(config_path)
            click.clear()
            click.echo(render(rows))
        except KeyboardInterrupt:
            break


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
@click.option(
    "--metrics/--no-metrics",
    default=False,
    help="Give each member a metrics_port (Prometheus GET /metrics) in a new configuration.",
)
@click.option(
    "--tls/--no-tls",
    default=False,
    help="A new configuration with mutual TLS: a local CA in DATA_DIR/tls, a certificate per "
    "member and one for clients (smr-client-admin); `smr tls` issues and revokes more.",
)
def up(
    nodes: int,
    transport: str,
    data_dir: str,
    mode: str,
    types: tuple[str, ...],
    watch: bool,
    metrics: bool,
    tls: bool,
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
            metrics=metrics,
            tls=tls,
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
    scrapes = [
        f"http://{m.host}:{m.metrics_port}/metrics"
        for m in cluster.config.members.values()
        if m.metrics_port is not None
    ]
    if scrapes:
        click.echo(f"metrics: {' '.join(scrapes)}")
    if cluster.config.tls is not None:
        tls_dir = os.path.dirname(cluster.config.tls.ca)
        click.echo(
            f"tls: CA and certificates in {tls_dir}; `smr tls issue {tls_dir} NAME` for a client"
        )
    if watch:
        watch_status(cluster.config_path, 1.0)


@cluster.command()
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
@click.option("--watch/--no-watch", default=False, help="Keep refreshing the table (Ctrl-C stops).")
@click.option(
    "--interval",
    "interval_s",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds between refreshes with --watch.",
)
def status(data_dir: str, watch: bool, interval_s: float) -> None:
    """Show every member's view and shards, and their headline metrics."""
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
    if watch:
        watch_status(config_path, interval_s)


@cluster.command()
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
def down(data_dir: str) -> None:
    """Stop the members `smr cluster up` started."""
    from smr.runtime.cluster import stop_from_pidfile

    stopped = stop_from_pidfile(data_dir)
    click.echo(f"stopped members {stopped}" if stopped else f"no running cluster in {data_dir}")
