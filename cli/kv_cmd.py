"""`smr kv put|get|delete|cas|watch`: the key-value store of a running cluster, from the shell.

Values are taken and shown as UTF-8 text (bytes that are not text are shown as a Python bytes
literal). A command prints every replica's result; a query prints the value.
"""

from __future__ import annotations

import sys

import click


def _kv(config_path: str):
    from smr.client import ClientError, connect
    from smr.runtime.config import ConfigError, load
    from smr.statemachines import KVStore

    try:
        config = load(config_path)
        config.subgroup_index(KVStore)  # a cluster that hosts no KVStore: say so before dialling
        client = connect(config, timeout_s=5.0)
    except (ClientError, ConfigError, OSError) as e:
        click.echo(f"smr kv: {e}", err=True)
        sys.exit(2)
    return client, client.subgroup(KVStore)


def _show(value: object) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return repr(value)
    return str(value)


def _run(config_path: str, call) -> None:
    from smr.client import ClientError, CommandError

    client, kv = _kv(config_path)
    try:
        result = call(kv)
    except (ClientError, CommandError, TimeoutError) as e:
        click.echo(f"smr kv: {e or type(e).__name__}", err=True)
        sys.exit(1)
    finally:
        client.close()
    if isinstance(result, dict):
        for member, value in result.items():
            click.echo(f"member {member}: {_show(value)}")
    else:
        click.echo(_show(result))


@click.group()
@click.option(
    "--config",
    "config_path",
    default="smr-cluster/cluster.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The cluster's configuration file.",
)
@click.pass_context
def kv(ctx: click.Context, config_path: str) -> None:
    """Use the KVStore of a running cluster."""
    ctx.obj = config_path


@kv.command()
@click.pass_obj
@click.argument("key")
@click.argument("value")
def put(config_path: str, key: str, value: str) -> None:
    """Set KEY to VALUE (prints each replica's previous value)."""
    _run(config_path, lambda kv: kv.put(key, value.encode()))


@kv.command()
@click.pass_obj
@click.argument("key")
@click.option(
    "--consistency",
    type=click.Choice(["linearizable", "sequential"]),
    default="linearizable",
    show_default=True,
    help="linearizable: confirmed through the table; sequential: the member's own state.",
)
def get(config_path: str, key: str, consistency: str) -> None:
    """Print KEY's value (empty line: no such key)."""
    _run(config_path, lambda kv: kv.query("get", key, consistency=consistency).result(10.0) or b"")


@kv.command()
@click.pass_obj
@click.argument("key")
def delete(config_path: str, key: str) -> None:
    """Delete KEY (prints whether each replica had it)."""
    _run(config_path, lambda kv: kv.delete(key))


@kv.command()
@click.pass_obj
@click.argument("key")
@click.argument("expected")
@click.argument("new")
def cas(config_path: str, key: str, expected: str, new: str) -> None:
    """Set KEY to NEW if it holds EXPECTED (use '' for absent)."""
    _run(
        config_path,
        lambda kv: kv.compare_and_set(key, expected.encode() if expected else None, new.encode()),
    )


@kv.command()
@click.pass_obj
@click.argument("prefix", default="")
@click.option(
    "--from-version",
    type=str,
    default="0",
    show_default=True,
    help="Start after this version (decimal or 0x hex): the last one a previous watch printed.",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N changes.")
def watch(config_path: str, prefix: str, from_version: str, count: int | None) -> None:
    """Print every change to keys starting with PREFIX, in order, as it is applied: its
    version, the operation, the key and its argument. Follows the cluster across failovers
    (Ctrl-C stops)."""
    from smr.client import ClientError
    from smr.watch import WatchTrimmedError

    try:
        start = int(from_version, 0)
    except ValueError:
        raise click.BadParameter(
            f"{from_version!r} is not a version", param_hint="--from-version"
        ) from None
    client, kv = _kv(config_path)
    shown = 0
    try:
        with kv.watch(from_version=start) as changes:
            for event in changes:
                key = event.args.get("key")
                if not isinstance(key, str) or not key.startswith(prefix):
                    continue
                rest = [_show(v) for name, v in event.args.items() if name != "key"]
                outcome = f"  ({event.error})" if event.error else ""
                click.echo(f"{event.version:#x} {event.operation} {key} {' '.join(rest)}{outcome}")
                shown += 1
                if count is not None and shown >= count:
                    break
    except WatchTrimmedError as e:
        click.echo(f"smr kv: {e}; watch again with --from-version {e.oldest:#x}", err=True)
        sys.exit(1)
    except ClientError as e:
        click.echo(f"smr kv: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
