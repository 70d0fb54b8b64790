"""`smr cluster up|status|down|add|remove|replace`: a local cluster of member processes on this
host, and its membership at runtime.

`up` writes a configuration (with a fresh secret) into the data directory unless one is there,
starts the founders as `smr node` processes, waits until they form one view, and shows a status
table (`--watch` keeps refreshing it until Ctrl-C, which stops watching, not the cluster).
`status` asks every member (`--watch` follows it live): views, shards, and the headline metrics
(delivered and persisted versions, commit and fsync latencies); `down` stops the members `up`
started (SIGTERM, then SIGKILL).

`add` starts a new member (a fresh id and free ports unless given) that the configuration does
not list: it joins with state transfer and the group learns its addresses with the view; for a
member on another host it prints the `smr node` line to run there. `remove ID` removes a member
for good, through the client port of another member (refused, with the reason and a non-zero
exit, when the view without it would have fewer live members than a majority); `replace OLD`
adds a member, waits until it serves, then removes OLD. The members a directory added are kept
in its `cluster.added.json`, and the group's own address book (every status answer) names the
rest, so `status` shows them all.
"""

from __future__ import annotations

import os
import sys
import time

import click

DEFAULT_DIR = "smr-cluster"


def status_rows(config_path: str, data_dir: str | None = None) -> list[dict]:
    """Every member's status: those the configuration lists, those `smr cluster add` added
    (`data_dir`), and those the members' own status answers name (added elsewhere); a member
    removed for good is a row saying so."""
    from smr.client import ClientError, connect
    from smr.client_core import members_of
    from smr.runtime.cluster import local_config
    from smr.runtime.config import ConfigError, with_member

    config = local_config(config_path, data_dir)
    asked: dict[int, dict] = {}
    retired: set[int] = set()
    todo = sorted(config.members)
    while todo:  # at most every member the answers name, each asked once
        m = todo.pop(0)
        if m in asked:
            continue
        try:
            with connect(config, member=m, timeout_s=1.0) as c:
                s = c.status() if c.member == m else None
        except (ClientError, TimeoutError, OSError):
            s = None
        asked[m] = s or {"member": m, "status": "down"}
        if s is None:
            continue
        retired.update(s.get("retired", []))
        for learnt in members_of(s).values():
            if learnt.id not in config.members:
                try:
                    config = with_member(config, learnt)
                except ConfigError:
                    continue  # an address this file gives another member: not reachable here
                todo.append(learnt.id)
    for m in retired:
        if m in asked and asked[m]["status"] == "down":
            asked[m] = {"member": m, "status": "removed"}
    return [asked[m] for m in sorted(asked)]


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
@click.option(
    "--protocol",
    type=click.Choice(["derecho", "multipaxos"]),
    default="derecho",
    show_default=True,
    help="In a new configuration: multipaxos runs the built-in classic Multi-Paxos (one "
    "durable shard, fixed members).",
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
    protocol: str,
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
            protocol=protocol,
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


def _local_cluster(data_dir: str, command: str):
    """The local cluster of `data_dir` (its cluster.toml and the members added to it)."""
    from smr.runtime.cluster import LocalCluster
    from smr.runtime.config import ConfigError

    config_path = os.path.join(data_dir, "cluster.toml")
    if not os.path.exists(config_path):
        click.echo(f"smr cluster {command}: no cluster in {data_dir} (no cluster.toml)", err=True)
        sys.exit(2)
    try:
        return LocalCluster(data_dir=data_dir, config_path=config_path)
    except ConfigError as e:
        click.echo(f"smr cluster {command}: {e}", err=True)
        sys.exit(2)


def _start_member(
    cluster,
    command: str,
    member: int | None,
    host: str,
    port: int | None,
    client_port: int | None,
    metrics_port: int | None,
    timeout_s: float,
):
    """Add a member: started here and waited for (a local host), or the `smr node` line to run
    on its host (None returned)."""
    from smr.runtime.cluster import ClusterError, node_addresses
    from smr.runtime.config import ConfigError, MemberConfig, with_member
    from smr.transport.auto import is_local

    new = None
    try:
        if not is_local(host):
            if port is None or client_port is None:
                raise ConfigError(
                    f"a member on another host ({host}) needs --port and --client-port: the "
                    "ports it will listen on there"
                )
            remote = MemberConfig(
                member if member is not None else cluster.fresh_id(),
                host,
                port,
                client_port,
                metrics_port,
            )
            with_member(cluster.config, remote)  # its id and addresses are free
            line = " ".join(
                [
                    "smr node --config",
                    cluster.config_path,
                    "--id",
                    str(remote.id),
                    *node_addresses(remote),
                ]
            )
            click.echo(f"on {host}, with a copy of {cluster.config_path} and its secret, run:")
            click.echo(f"  {line}")
            if cluster.config.transport in ("auto", "shm"):
                click.echo(
                    f"note: transport is {cluster.config.transport!r}; members on several hosts "
                    'need transport = "tcp" in every member\'s configuration'
                )
            return None
        new = cluster.add_member(
            member, host=host, port=port, client_port=client_port, metrics_port=metrics_port
        )
        click.echo(
            f"started member {new.id} at {new.host} (port {new.port}, client port "
            f"{new.client_port}); log: {cluster.log_path(new.id)}"
        )
        cluster.wait_member(new.id, timeout_s)
        return new
    except (ConfigError, ClusterError) as e:
        click.echo(f"smr cluster {command}: {e}", err=True)
        if new is not None:
            cluster.discard_member(new.id)  # it did not join: no process left behind
        sys.exit(2)


_ADDRESS_OPTIONS = (
    click.option(
        "--id",
        "member",
        type=int,
        default=None,
        help="The new member's id [default: one no member ever had].",
    ),
    click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="Its address; another host's: print the command to run there.",
    ),
    click.option(
        "--port", type=int, default=None, help="Its member-to-member port [default: a free one]."
    ),
    click.option(
        "--client-port", type=int, default=None, help="Its client port [default: a free one]."
    ),
    click.option(
        "--metrics-port",
        type=int,
        default=None,
        help="Its metrics port [default: a free one if the others have one].",
    ),
    click.option(
        "--timeout",
        "timeout_s",
        default=60.0,
        show_default=True,
        type=click.FloatRange(1, 3600),
        help="Seconds to wait for it to join with its state.",
    ),
)


def _address_options(f):
    for option in reversed(_ADDRESS_OPTIONS):
        f = option(f)
    return f


@cluster.command()
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
@_address_options
def add(
    data_dir: str,
    member: int | None,
    host: str,
    port: int | None,
    client_port: int | None,
    metrics_port: int | None,
    timeout_s: float,
) -> None:
    """Add a member that joins with state transfer (the configuration need not list it)."""
    cluster = _local_cluster(data_dir, "add")
    new = _start_member(cluster, "add", member, host, port, client_port, metrics_port, timeout_s)
    if new is not None:
        click.echo(f"member {new.id} joined")
        click.echo(render(status_rows(cluster.config_path, cluster.data_dir)))


def _remove(cluster, member: int, timeout_s: float, command: str) -> dict:
    from smr.client import ClientError

    try:
        view = cluster.remove_member(member, timeout_s=timeout_s)
    except (ClientError, TimeoutError) as e:
        click.echo(f"smr cluster {command}: member {member} not removed: {e}", err=True)
        sys.exit(1)
    click.echo(
        f"removed member {member} for good: view {view['epoch']} is {view['members']} "
        f"(removed ids, never let in again: {view['retired']})"
    )
    return view


@cluster.command()
@click.argument("member", type=int)
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
@click.option(
    "--timeout",
    "timeout_s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(1, 600),
    help="Seconds to wait for the view without it.",
)
def remove(member: int, data_dir: str, timeout_s: float) -> None:
    """Remove member MEMBER for good (refused below a majority; its id is never reused)."""
    cluster = _local_cluster(data_dir, "remove")
    _remove(cluster, member, timeout_s, "remove")


@cluster.command()
@click.argument("old", type=int)
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
@_address_options
def replace(
    old: int,
    data_dir: str,
    member: int | None,
    host: str,
    port: int | None,
    client_port: int | None,
    metrics_port: int | None,
    timeout_s: float,
) -> None:
    """Replace member OLD: add a new member, wait until it serves, then remove OLD."""
    cluster = _local_cluster(data_dir, "replace")
    if not _is_local_host(host):
        click.echo(
            "smr cluster replace: a member on another host is started there: `smr cluster add "
            "--host ...` prints how, then `smr cluster remove OLD` once it joined",
            err=True,
        )
        sys.exit(2)
    new = _start_member(
        cluster, "replace", member, host, port, client_port, metrics_port, timeout_s
    )
    assert new is not None
    click.echo(f"member {new.id} joined")
    _remove(cluster, old, timeout_s, "replace")
    click.echo(render(status_rows(cluster.config_path, cluster.data_dir)))


def _is_local_host(host: str) -> bool:
    from smr.transport.auto import is_local

    return is_local(host)


@cluster.command()
@click.option("--data-dir", default=DEFAULT_DIR, show_default=True, type=click.Path())
def down(data_dir: str) -> None:
    """Stop the members `smr cluster up` started."""
    from smr.runtime.cluster import stop_from_pidfile

    stopped = stop_from_pidfile(data_dir)
    click.echo(f"stopped members {stopped}" if stopped else f"no running cluster in {data_dir}")
