"""`smr log`: inspect, dump, verify, replay and trim a log directory written by smr.log.

Every error a user can hit (missing directory, damaged file, bad option) is one line on stderr
and exit status 1; `verify` exits 1 when it finds damage.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from smr.log import (
    Log,
    LogError,
    Record,
    recover,
    verify,
)


def _version(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        v = int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a version (decimal or 0x hex)") from None
    if v < 0:
        raise click.BadParameter("versions are not negative")
    return v


def _open(path: str, *, writable: bool = False) -> Log:
    try:
        # read_only: inspecting a log must not repair (truncate) it behind the user's back.
        return Log.open(path, create=False, read_only=not writable)
    except (LogError, OSError) as e:
        raise click.ClickException(str(e)) from None


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (LogError, OSError) as e:
        raise click.ClickException(str(e)) from None


@contextlib.contextmanager
def _progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when stderr is a terminal; otherwise silent."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


def _fmt_ts(ns: int) -> str:
    return f"{ns}"


def _show_meta(data: bytes) -> str:
    try:
        text = data.decode()
        if text.isprintable() and len(text) <= 80:
            return text
    except UnicodeDecodeError:
        pass
    return f"<{len(data)} bytes>"


@click.group("log")
def log_group() -> None:
    """Inspect, verify, replay and trim durable logs."""


@log_group.command("inspect")
@click.argument("directory", type=click.Path(file_okay=False))
def inspect_cmd(directory: str) -> None:
    """Segments, version and time ranges, sizes, compression, snapshots and metadata."""
    log = _open(directory)
    with _errors():
        segs = log.segments()
        click.echo(f"log {directory}")
        policy = log.meta_get("log.sync_policy")
        click.echo(f"  sync policy:   {policy.decode() if policy else '(not recorded)'}")
        click.echo(f"  records:       {len(log)}  (trimmed below {log.trimmed_below:#x})")
        if segs:
            file_bytes = sum(s.file_bytes for s in segs)
            body_bytes = sum(s.body_bytes for s in segs)
            packed = [s for s in segs if s.compressed]
            click.echo(f"  versions:      {segs[0].first_version:#x} .. {segs[-1].last_version:#x}")
            click.echo(
                f"  timestamps:    {min(s.timestamp_ns_min for s in segs)} .. "
                f"{max(s.timestamp_ns_max for s in segs)} ns"
            )
            click.echo(f"  bytes on disk: {file_bytes}  (records {body_bytes})")
            if packed:
                ratio = sum(s.body_bytes for s in packed) / max(
                    1, sum(s.file_bytes for s in packed)
                )
                click.echo(f"  compression:   {len(packed)} zstd segments, ratio {ratio:.2f}")
            else:
                click.echo("  compression:   none")
        click.echo(f"  segments:      {len(segs)}")
        for s in segs:
            click.echo(
                f"    {s.name}  {s.records:>8} records  {s.first_version:#x}..{s.last_version:#x}  "
                f"{s.file_bytes:>10} B" + ("  zstd" if s.compressed else "")
            )
        snaps = log.snapshot_versions()
        click.echo(f"  snapshots:     {', '.join(f'{v:#x}' for v in snaps) or 'none'}")
        click.echo("  metadata:")
        for name in log.meta_names():
            click.echo(f"    {name} = {_show_meta(log.meta_get(name) or b'')}")
        for line in log.recovery.lines():
            click.echo(f"  needs repair:  {line}")


def _record_json(r: Record) -> str:
    obj: dict[str, Any] = {
        "version": r.version,
        "epoch": r.version >> 32,
        "seq": r.version & 0xFFFFFFFF,
        "timestamp_ns": r.timestamp_ns,
        "subgroup": r.subgroup,
        "shard": r.shard,
    }
    try:
        obj["payload"] = r.payload.decode()
    except UnicodeDecodeError:
        obj["payload_b64"] = base64.b64encode(r.payload).decode()
    return json.dumps(obj)


@log_group.command("dump")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--from", "from_", help="First version (decimal or 0x hex).")
@click.option("--to", help="Last version (decimal or 0x hex).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
def dump_cmd(directory: str, from_: str | None, to: str | None, as_json: bool) -> None:
    """Print records in version order."""
    log = _open(directory)
    with _errors():
        lo = _version(from_)
        if lo is not None and lo < log.trimmed_below:
            lo = max(lo, log.trimmed_below)
        for r in log.iter(lo, _version(to)):
            if as_json:
                click.echo(_record_json(r))
            else:
                click.echo(
                    f"{r.version:#018x} epoch={r.version >> 32} seq={r.version & 0xFFFFFFFF} "
                    f"ts={_fmt_ts(r.timestamp_ns)} sg={r.subgroup} shard={r.shard} "
                    f"{len(r.payload)}B {r.payload[:40]!r}"
                )


@log_group.command("verify")
@click.argument("directory", type=click.Path(file_okay=False))
def verify_cmd(directory: str) -> None:
    """Check every checksum, header and the version order; exit 1 on any damage."""
    with _errors():
        if not os.path.isdir(directory):
            raise click.ClickException(f"log directory {directory} does not exist")
        total = sum(
            os.path.getsize(os.path.join(directory, n))
            for n in os.listdir(directory)
            if n.endswith((".seg", ".segz"))
        )
        with _progress(total, "verifying") as update:
            result = verify(directory, on_progress=update)
    for p in result.problems:
        click.echo(f"DAMAGED {p}", err=True)
    summary = (
        f"{result.segments} segments, {result.records} records, "
        f"{result.snapshots} snapshots, {result.metas} metadata blobs"
    )
    if not result.ok:
        click.echo(f"verify failed: {len(result.problems)} problem(s) in {summary}", err=True)
        sys.exit(1)
    click.echo(f"ok: {summary}")


def _load_class(spec: str) -> type:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{spec!r}: use MODULE:CLASS", param_hint="--state-machine")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise click.ClickException(f"cannot import {module_name}: {e}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise click.ClickException(f"{module_name} has no attribute {attr}") from None


@log_group.command("replay")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--state-machine", "sm_spec", required=True, help="MODULE:CLASS to instantiate.")
@click.option("--upto", help="Replay up to this version (decimal or 0x hex).")
def replay_cmd(directory: str, sm_spec: str, upto: str | None) -> None:
    """Rebuild a state machine: newest snapshot at or below --upto, then the records after it."""
    cls = _load_class(sm_spec)
    try:
        from smr.api import Entry
    except ImportError as e:
        raise click.ClickException(f"smr.api is not available: {e}") from None
    from smr.runtime.hosted import SNAPSHOT_FORMAT, Hosted, unwrap

    log = _open(directory)
    sm = cls()
    if log.meta_get(SNAPSHOT_FORMAT) == b"hosted":
        # a node runtime's log: snapshots carry client sessions, commands their envelopes
        hosted = Hosted(sm)
        restore, apply = (
            hosted.restore,
            lambda r: hosted.apply(r.payload, r.version, r.timestamp_ns),
        )
    else:
        restore = sm.restore
        apply = lambda r: sm.apply(  # noqa: E731
            unwrap(r.payload)[2], Entry(version=r.version, timestamp_ns=r.timestamp_ns)
        )
    with _errors():
        upto_v = _version(upto)
        n = len(log.versions())
        with _progress(n, "replaying") as update:
            res = recover(log, restore=restore, apply=apply, upto=upto_v, on_progress=update)
    snap = f"{res.snapshot_version:#x}" if res.snapshot_version >= 0 else "none"
    span = (
        f"{res.first_applied_version:#x}..{res.last_applied_version:#x}"
        if res.records_applied
        else "-"
    )
    click.echo(f"snapshot: {snap}")
    click.echo(f"records applied: {res.records_applied} (versions {span})")
    click.echo(f"digest: {sm.digest()}")


@log_group.command("trim")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--below", required=True, help="Drop records below this version (<= newest snapshot)."
)
def trim_cmd(directory: str, below: str) -> None:
    """Remove whole segments below a version (never beyond the newest snapshot)."""
    v = _version(below)
    assert v is not None
    log = _open(directory, writable=True)
    with _errors():
        for line in log.recovery.lines():
            click.echo(f"repaired: {line}", err=True)
        removed = log.trim_below(v)
        log.close()
    click.echo(f"trimmed below {v:#x}: {removed} segment(s) removed")
