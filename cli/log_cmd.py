"""`smr log`: inspect, dump, verify, replay, snapshot and trim a log directory written by smr.log.

Every error a user can hit (missing directory, damaged file, bad option) is one line on stderr
and exit status 1; `verify` exits 1 when it finds damage. The commands question what looks
wrong rather than print a plausible answer:

- a directory that holds no log (a member's directory, a cluster's data directory) is refused,
  naming the logs inside it;
- `dump` and `replay` of a log whose last segment ends in a torn record show what they can, then
  warn what was dropped and exit 1 unless `--accept-torn-tail`;
- `replay` (and `dump`, to decode operations) with a state machine type whose operations the
  records do not decode as stops at the first such record: that type did not write this log;
- `trim` and `snapshot` that refuse change nothing on disk (no repair of a torn tail either).

The state machine type of a shard log under a cluster's data directory is found from the
cluster's `cluster.toml` when `--state-machine` is not given.

A Multi-Paxos acceptor log (`smr.runtime.paxos_log`, its `format` metadata says so) is shown as
what it holds: `inspect` the promise, the vote floor, the votes and the state snapshot, `dump`
one line per promise, accept (slot, ballot, value size), trim and state snapshot, `verify` the
checksums and then that every record decodes; `replay`, `snapshot` and `trim` refuse it (it
snapshots and trims itself).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import datetime
import importlib
import json
import os
import pprint
import re
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


SHARD_DIR = re.compile(r"^subgroup-(\d+)-shard-(\d+)$")
MEMBER_DIR = re.compile(r"^member-(\d+)$")
LOG_SUFFIXES = (".seg", ".segz", ".snap", ".meta")
ACCEPT_TORN = "--accept-torn-tail"


def _check_is_log(path: str) -> None:
    """Refuse a directory that is not a log, naming the logs it holds (a member's directory
    holds one per shard): an empty answer would look like an empty log."""
    if not os.path.isdir(path):
        return  # Log.open says it does not exist
    names = sorted(os.listdir(path))
    if any(n.endswith(LOG_SUFFIXES) for n in names):
        return
    shards = [n for n in names if SHARD_DIR.match(n) and os.path.isdir(os.path.join(path, n))]
    # a Multi-Paxos member's acceptor log (smr.runtime.paxos_log marks it with format.meta)
    acceptors = [n for n in names if os.path.isfile(os.path.join(path, n, "format.meta"))]
    if acceptors and not shards:
        raise click.ClickException(
            f"{path} is a member directory; its acceptor log is: {' '.join(acceptors)} "
            f"(for example: smr log inspect {os.path.join(path, acceptors[0])})"
        )
    if shards:
        raise click.ClickException(
            f"{path} is a member directory; its shard logs are: {' '.join(shards)} "
            f"(for example: smr log inspect {os.path.join(path, shards[0])})"
        )
    members = [n for n in names if MEMBER_DIR.match(n) and os.path.isdir(os.path.join(path, n))]
    if members:
        raise click.ClickException(
            f"{path} is a cluster's data directory; its member directories are: "
            f"{' '.join(members)}, each with a log per shard (for example: "
            f"{os.path.join(path, members[0], 'subgroup-0-shard-0')})"
        )
    raise click.ClickException(
        f"{path} holds no log (no segment, snapshot or metadata file); point at a shard's log "
        "directory, such as <data dir>/member-1/subgroup-0-shard-0"
    )


def _open(path: str, *, writable: bool = False) -> Log:
    _check_is_log(path)
    try:
        # read_only: inspecting a log must not repair (truncate) it behind the user's back.
        return Log.open(path, create=False, read_only=not writable)
    except (LogError, OSError) as e:
        raise click.ClickException(str(e)) from None


def _acceptor_marker(directory: str) -> bytes | None:
    """The format marker when `directory` is a Multi-Paxos acceptor log (of this format: a
    newer one is refused), else None."""
    from smr.runtime.paxos_log import check_format, is_acceptor_format, read_format

    if not os.path.isdir(directory):
        return None
    try:
        marker = read_format(directory)
        if not is_acceptor_format(marker):
            return None
        check_format(directory, marker)
    except (LogError, OSError) as e:
        raise click.ClickException(str(e)) from None
    return marker


def _refuse_acceptor(directory: str, command: str) -> None:
    if _acceptor_marker(directory) is not None:
        raise click.ClickException(
            f"{directory} is a Multi-Paxos acceptor log: `smr log {command}` works on shard "
            "logs (an acceptor log snapshots and trims itself); use smr log inspect, dump, "
            "verify or replay"
        )


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
    """A record's timestamp as ISO 8601 UTC, to the microsecond."""
    try:
        seconds, rest = divmod(ns, 1_000_000_000)
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).replace(
            microsecond=rest // 1000
        )
    except (OverflowError, OSError, ValueError):
        return f"{ns}ns"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- torn tails ------------------------------------------------------------------------------


def _torn_warnings(log: Log, directory: str) -> list[str]:
    """What a read-only open found cut short, in words a user can act on; [] for a clean log."""
    lines = []
    last = log.last_version
    for t in log.recovery.torn_tails:
        end = f"version {last:#x}" if last >= 0 else "no record at all"
        lines.append(
            f"warning: {t.path} ends in a torn record ({t.what}): the {t.bytes_dropped} bytes "
            f"after byte {t.offset} are dropped, so this log ends at {end}; any record written "
            "after it is lost here" + _elsewhere(directory, last)
        )
    return lines


def _elsewhere(directory: str, last: int) -> str:
    """How many records after `last` the same shard's log at the other members holds, when
    `directory` sits in a cluster's data directory (member-N/subgroup-I-shard-J)."""
    shard = os.path.basename(os.path.normpath(directory))
    member_dir = os.path.dirname(os.path.abspath(directory))
    data_dir = os.path.dirname(member_dir)
    if not SHARD_DIR.match(shard) or not MEMBER_DIR.match(os.path.basename(member_dir)):
        return ""
    found = []
    for name in sorted(os.listdir(data_dir)):
        other = os.path.join(data_dir, name, shard)
        if name == os.path.basename(member_dir) or not MEMBER_DIR.match(name):
            continue
        if not os.path.isdir(other):
            continue
        try:
            theirs = Log.open(other, create=False, read_only=True)
        except (LogError, OSError):
            continue
        try:
            later = sum(1 for v in theirs.versions() if v > last)
        finally:
            theirs.close()
        if later:
            found.append(f"{name} holds {later} record(s) after it")
    return f" ({'; '.join(found)})" if found else ""


def _finish_torn(warnings: list[str], accept: bool) -> None:
    """After a command's output: the warnings, and exit 1 unless the user accepted them."""
    for line in warnings:
        click.echo(line, err=True)
    if warnings and not accept:
        click.echo(
            f"exiting with status 1 because the log is torn; pass {ACCEPT_TORN} to accept it",
            err=True,
        )
        sys.exit(1)


# -- state machine types ---------------------------------------------------------------------


def _cluster_type(directory: str) -> type | None:
    """The type a shard log's cluster hosts in that subgroup, from the cluster.toml above its
    data directory (None when the directory is not laid out by a cluster or it cannot tell)."""
    name = os.path.basename(os.path.normpath(directory))
    shard = SHARD_DIR.match(name)
    # a Multi-Paxos member's acceptor log (member-N/paxos) is of its one subgroup
    index = int(shard.group(1)) if shard is not None else 0 if name == "paxos" else None
    if index is None:
        return None
    data_dir = os.path.dirname(os.path.dirname(os.path.abspath(directory)))
    from smr.runtime.config import ConfigError, load

    for base in (os.path.dirname(data_dir), data_dir):
        path = os.path.join(base, "cluster.toml")
        if not os.path.exists(path):
            continue
        try:
            config = load(path)
        except ConfigError:
            return None
        if os.path.realpath(config.data_dir) != os.path.realpath(data_dir):
            continue
        return config.subgroups[index].machine if index < len(config.subgroups) else None
    return None


def _state_machine_type(directory: str, spec: str | None) -> type | None:
    if spec is not None:
        return _load_class(spec)
    return _cluster_type(directory)


def _operations(cls: type) -> dict[type, Any] | None:
    """args Struct type -> Operation, for a StateMachine subclass (None for other classes)."""
    try:
        from smr.api import StateMachine
    except ImportError:
        return None
    if not (isinstance(cls, type) and issubclass(cls, StateMachine)):
        return None
    return {op.args_type: op for op in cls.operations if op.kind == "command"}


def _decode_operation(cls: type, payload: bytes) -> tuple[str, dict[str, Any]]:
    """(operation name, {argument: value}) of a command of `cls`; OperationError if the
    payload is not one (a record this type did not write)."""
    assert _operations(cls) is not None
    return cls.decode_command(payload)


def _not_this_type(cls: type, version: int, error: Exception) -> click.ClickException:
    return click.ClickException(
        f"record {version:#x} is not a {cls.__name__} command ({error}): this log was not "
        f"written by {cls.__module__}:{cls.__name__}; give --state-machine the type its shard "
        "hosts"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


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
    """Segments, version and time ranges, sizes, compression, snapshots and metadata (of an
    acceptor log: its promise, vote floor, votes and state snapshot too)."""
    marker = _acceptor_marker(directory)
    log = _open(directory)
    if marker is not None:
        _inspect_acceptor(log, directory, marker)
        return
    with _errors():
        click.echo(f"log {directory}")
        policy = log.meta_get("log.sync_policy")
        click.echo(f"  sync policy:   {policy.decode() if policy else '(not recorded)'}")
        click.echo(f"  records:       {len(log)}  (trimmed below {log.trimmed_below:#x})")
        _inspect_files(log, directory, timestamps=True)


def _inspect_acceptor(log: Log, directory: str, marker: bytes) -> None:
    from smr.core.multipaxos import NO_BALLOT
    from smr.runtime.paxos_log import iter_records, record_kind, replay

    with _errors():
        st = replay(log)
        kinds = {"promise": 0, "accept": 0, "trim": 0}
        for _, rec in iter_records(log):
            kinds[record_kind(rec)] += 1
        click.echo(f"acceptor log {directory}  (Multi-Paxos, {marker.decode()})")
        policy = log.meta_get("log.sync_policy")
        click.echo(f"  sync policy:   {policy.decode() if policy else '(not recorded)'}")
        promise = "none" if st.promised == NO_BALLOT else f"ballot {st.promised}"
        click.echo(f"  promise:       {promise}")
        click.echo(f"  vote floor:    slot {st.vote_floor}")
        if st.votes:
            values = [v for _, v in st.votes.values()]
            noops = sum(1 for v in values if v is None)
            size = sum(len(v) for v in values if v is not None)
            click.echo(
                f"  votes:         {len(st.votes)} at slots {min(st.votes)}..{max(st.votes)}  "
                f"({noops} no-ops, {size} value bytes)"
            )
        else:
            click.echo("  votes:         none")
        if st.state_version is not None:
            click.echo(
                f"  state:         snapshot at slot {st.state_slot} ({len(st.state)} bytes, "
                f"log version {st.state_version:#x})"
            )
        else:
            click.echo("  state:         no snapshot (nothing applied is saved)")
        click.echo(
            f"  records:       {len(log)}  (trimmed below {log.trimmed_below:#x}): "
            f"{kinds['promise']} promises, {kinds['accept']} accepts, {kinds['trim']} trims"
        )
        _inspect_files(log, directory, timestamps=False)


def _inspect_files(log: Log, directory: str, *, timestamps: bool) -> None:
    with _errors():
        segs = log.segments()
        if segs:
            file_bytes = sum(s.file_bytes for s in segs)
            body_bytes = sum(s.body_bytes for s in segs)
            packed = [s for s in segs if s.compressed]
            click.echo(f"  versions:      {segs[0].first_version:#x} .. {segs[-1].last_version:#x}")
            if timestamps:
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
        for line in _torn_warnings(log, directory):
            click.echo(f"  {line}")


def _record_fields(r: Record, cls: type | None, hosted: bool) -> dict[str, Any]:
    """A record's fields, its operation decoded when the type is known (`operation`: name and
    arguments), the client's envelope (`client`, `client_seq`) in a node runtime's log."""
    from smr.runtime.hosted import unwrap

    obj: dict[str, Any] = {
        "version": r.version,
        "epoch": r.version >> 32,
        "seq": r.version & 0xFFFFFFFF,
        "time": _fmt_ts(r.timestamp_ns),
        "timestamp_ns": r.timestamp_ns,
        "subgroup": r.subgroup,
        "shard": r.shard,
    }
    op = r.payload
    if hosted:
        client, client_seq, op = unwrap(r.payload)
        if client:
            obj["client"], obj["client_seq"] = client, client_seq
    if cls is not None:
        try:
            name, args = _decode_operation(cls, bytes(op))
        except Exception as e:
            raise _not_this_type(cls, r.version, e) from None
        obj["operation"] = {"name": name, "args": args}
    return obj


def _record_json(r: Record, cls: type | None = None, hosted: bool = False) -> str:
    obj = _record_fields(r, cls, hosted)
    if "operation" not in obj:
        try:
            obj["payload"] = r.payload.decode()
        except UnicodeDecodeError:
            obj["payload_b64"] = base64.b64encode(r.payload).decode()
    return json.dumps(_jsonable(obj))


def _record_text(r: Record, cls: type | None, hosted: bool) -> str:
    obj = _record_fields(r, cls, hosted)
    line = (
        f"{r.version:#018x} epoch={obj['epoch']} seq={obj['seq']} {obj['time']} "
        f"sg={r.subgroup} shard={r.shard}"
    )
    if "client" in obj:
        line += f" client={obj['client']:#x}/{obj['client_seq']}"
    if "operation" in obj:
        op = obj["operation"]
        args = ", ".join(f"{k}={v!r}" for k, v in op["args"].items())
        return f"{line} {op['name']}({args})"
    return f"{line} {len(r.payload)}B {r.payload[:40]!r}"


def _accept_torn_option(command):
    return click.option(
        ACCEPT_TORN,
        "accept_torn",
        is_flag=True,
        help="A last segment that ends in a torn record (a crash mid-write) is a warning, not "
        "an error (exit 0).",
    )(command)


def _state_machine_option(required_help: str):
    return click.option(
        "--state-machine",
        "sm_spec",
        default=None,
        metavar="MODULE:CLASS",
        help=required_help,
    )


@log_group.command("dump")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--from", "from_", help="First version (decimal or 0x hex).")
@click.option("--to", help="Last version (decimal or 0x hex).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
@_state_machine_option(
    "Decode each record as an operation of this type (name and arguments); default: the type "
    "the cluster's cluster.toml puts in this shard, else raw bytes."
)
@click.option("--raw", is_flag=True, help="Show payloads as bytes, without decoding them.")
@_accept_torn_option
def dump_cmd(
    directory: str,
    from_: str | None,
    to: str | None,
    as_json: bool,
    sm_spec: str | None,
    raw: bool,
    accept_torn: bool,
) -> None:
    """Print records in version order, times in UTC, operations decoded when the type is known.
    Stops at a record that is not an operation of the type (the wrong --state-machine). Of an
    acceptor log: its promises, accepts (slot, ballot, value size), trims and state snapshot."""
    from smr.runtime.hosted import SNAPSHOT_FORMAT

    if _acceptor_marker(directory) is not None:
        if sm_spec is not None:
            raise click.BadParameter(
                "an acceptor log holds Multi-Paxos votes, not a shard's operations",
                param_hint="--state-machine",
            )
        log = _open(directory)
        with _errors():
            for line in _acceptor_lines(log, _version(from_), _version(to), as_json):
                click.echo(line)
        _finish_torn(_torn_warnings(log, directory), accept_torn)
        return
    log = _open(directory)
    cls = None if raw else _state_machine_type(directory, sm_spec)
    if cls is not None and _operations(cls) is None:
        raise click.BadParameter(
            f"{sm_spec} is not a StateMachine subclass: dump decodes operations of one",
            param_hint="--state-machine",
        )
    hosted = log.meta_get(SNAPSHOT_FORMAT) == b"hosted"
    with _errors():
        lo = _version(from_)
        if lo is not None and lo < log.trimmed_below:
            lo = max(lo, log.trimmed_below)
        for r in log.iter(lo, _version(to)):
            click.echo(_record_json(r, cls, hosted) if as_json else _record_text(r, cls, hosted))
    _finish_torn(_torn_warnings(log, directory), accept_torn)


def _acceptor_lines(log: Log, lo: int | None, hi: int | None, as_json: bool) -> Iterator[str]:
    """One line per acceptor record and state snapshot between versions lo and hi, in
    version order."""
    from smr.core.multipaxos import AcceptRecord, PromiseRecord
    from smr.runtime.paxos_log import iter_records, read_state_snapshot

    def wanted(v: int) -> bool:
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    snap = read_state_snapshot(log)
    pending = [snap] if snap is not None and wanted(snap[0]) else []

    def snapshot_line(version: int, slot: int, state: bytes) -> str:
        if as_json:
            return json.dumps(
                {"version": version, "kind": "state", "slot": slot, "state_bytes": len(state)}
            )
        return f"{version:#018x} state    slot={slot} {len(state)}B (every slot below it applied)"

    for version, rec in iter_records(log):
        while pending and pending[0][0] < version:
            yield snapshot_line(*pending.pop())
        if not wanted(version):
            continue
        obj: dict[str, Any] = {"version": version}
        if isinstance(rec, PromiseRecord):
            obj.update(kind="promise", ballot=rec.ballot)
            text = f"promise  ballot={rec.ballot}"
        elif isinstance(rec, AcceptRecord):
            obj.update(kind="accept", slot=rec.slot, ballot=rec.ballot, noop=rec.value is None)
            if rec.value is None:
                text = f"accept   slot={rec.slot} ballot={rec.ballot} no-op"
            else:
                obj.update(value_bytes=len(rec.value), value=_jsonable(rec.value))
                text = (
                    f"accept   slot={rec.slot} ballot={rec.ballot} {len(rec.value)}B "
                    f"{rec.value[:40]!r}"
                )
        else:
            obj.update(kind="trim", slot=rec.slot)
            text = f"trim     slot={rec.slot} (the votes below it are gone)"
        yield json.dumps(obj) if as_json else f"{version:#018x} {text}"
    while pending:
        yield snapshot_line(*pending.pop())


def _verify_acceptor(log: Log) -> tuple[dict[str, int], Any]:
    """Decode every record and the state snapshot: the counts per kind and the state."""
    from smr.runtime.paxos_log import iter_records, record_kind, replay

    kinds = {"promise": 0, "accept": 0, "trim": 0}
    for _, rec in iter_records(log):
        kinds[record_kind(rec)] += 1
    return kinds, replay(log)


@log_group.command("verify")
@click.argument("directory", type=click.Path(file_okay=False))
def verify_cmd(directory: str) -> None:
    """Check every checksum, header and the version order; exit 1 on any damage. Of an
    acceptor log, also that every record decodes as a promise, accept or trim, and the state
    snapshot as one (and covers the vote floor)."""
    from smr.log import LogCorruptionError, Problem

    with _errors():
        if not os.path.isdir(directory):
            raise click.ClickException(f"log directory {directory} does not exist")
        _check_is_log(directory)
        marker = _acceptor_marker(directory)
        total = sum(
            os.path.getsize(os.path.join(directory, n))
            for n in os.listdir(directory)
            if n.endswith((".seg", ".segz"))
        )
        with _progress(total, "verifying") as update:
            result = verify(directory, on_progress=update)
    extra = ""
    if marker is not None and result.ok:
        log = _open(directory)
        try:
            kinds, st = _verify_acceptor(log)
        except LogCorruptionError as e:
            result.problems.append(Problem(e.path or directory, e.offset, e.what))
        except (LogError, OSError) as e:
            raise click.ClickException(str(e)) from None
        else:
            extra = (
                f" ({sum(kinds.values())} at or above the trim point: {kinds['promise']} "
                f"promises, {kinds['accept']} accepts, {kinds['trim']} trims; promise "
                f"{st.promised}, vote floor {st.vote_floor}, state at slot {st.state_slot})"
            )
        finally:
            log.close()
    for p in result.problems:
        click.echo(f"DAMAGED {p}", err=True)
    summary = (
        ("acceptor log: " if marker is not None else "")
        + f"{result.segments} segments, {result.records} records{extra}, "
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
        cls = getattr(module, attr)
    except AttributeError:
        raise click.ClickException(f"{module_name} has no attribute {attr}") from None
    if not isinstance(cls, type):
        raise click.ClickException(f"{spec} is not a class")
    return cls


class _Replayed:
    """A state machine rebuilt from a log: the instance, what the log's snapshots hold for it
    (`snapshot()`: Hosted's, with sessions, for a node runtime's log) and the recovery figures."""

    def __init__(self, sm: Any, snapshot: Callable[[], bytes], result: Any):
        self.sm = sm
        self.snapshot = snapshot
        self.result = result


def _replay(log: Log, directory: str, cls: type, upto: str | None) -> _Replayed:
    """Rebuild `cls` from the log, refusing records that are not operations of `cls` (a
    StateMachine subclass): a wrong type would otherwise record an error result per command,
    and the replay would look like a success."""
    try:
        from smr.api import Entry
    except ImportError as e:
        raise click.ClickException(f"smr.api is not available: {e}") from None
    from smr.runtime.hosted import SNAPSHOT_FORMAT, Hosted, unwrap

    try:
        sm = cls()
    except Exception as e:
        raise click.ClickException(f"{cls.__name__}() raised {type(e).__name__}: {e}") from None
    typed = _operations(cls) is not None

    def check(r: Record, op: bytes) -> None:
        if typed:
            try:
                _decode_operation(cls, bytes(op))
            except Exception as e:
                raise _not_this_type(cls, r.version, e) from None

    if log.meta_get(SNAPSHOT_FORMAT) == b"hosted":
        # a node runtime's log: snapshots carry client sessions, commands their envelopes
        hosted = Hosted(sm)
        restore, snapshot = hosted.restore, hosted.snapshot

        def apply(r: Record) -> None:
            check(r, unwrap(r.payload)[2])
            hosted.apply(r.payload, r.version, r.timestamp_ns)

    else:
        restore = sm.restore

        def snapshot() -> bytes:
            return sm.snapshot()

        def apply(r: Record) -> None:
            op = unwrap(r.payload)[2]
            check(r, op)
            try:
                sm.apply(op, Entry(version=r.version, timestamp_ns=r.timestamp_ns))
            except Exception as e:
                raise click.ClickException(
                    f"record {r.version:#x}: {cls.__name__}.apply raised "
                    f"{type(e).__name__}: {e}; is {cls.__name__} the type that wrote this log?"
                ) from None

    def guarded_restore(data: bytes) -> None:
        try:
            restore(data)
        except Exception as e:
            raise click.ClickException(
                f"the log's snapshot does not restore as {cls.__name__} "
                f"({type(e).__name__}: {e}); give --state-machine the type its shard hosts"
            ) from None

    with _errors():
        upto_v = _version(upto)
        n = len(log.versions())
        with _progress(n, "replaying") as update:
            res = recover(
                log, restore=guarded_restore, apply=apply, upto=upto_v, on_progress=update
            )
    return _Replayed(sm, snapshot, res)


def _parse_query(text: str) -> tuple[str, list[Any]]:
    """`NAME ARG ...`: each argument a Python literal (b'x', 3, 'a b') or else a plain word."""
    import shlex

    words = shlex.split(text)
    if not words:
        raise click.BadParameter("give a query as NAME ARG ...", param_hint="--query")
    args: list[Any] = []
    for word in words[1:]:
        try:
            args.append(ast.literal_eval(word))
        except (ValueError, SyntaxError):
            args.append(word)
    return words[0], args


def _state_text(sm: Any) -> str:
    """The state machine's attributes (its state), pretty printed."""
    state = {k: v for k, v in vars(sm).items() if not k.startswith("_")}
    return pprint.pformat(state, width=100, sort_dicts=True)


def _need_type(directory: str, sm_spec: str | None) -> type:
    cls = _state_machine_type(directory, sm_spec)
    if cls is None:
        raise click.UsageError(
            "give --state-machine MODULE:CLASS, the type this log's shard hosts (it cannot be "
            "found from a cluster.toml here)"
        )
    return cls


@log_group.command("replay")
@click.argument("directory", type=click.Path(file_okay=False))
@_state_machine_option(
    "MODULE:CLASS to rebuild (default: the type the cluster's cluster.toml puts in this shard)."
)
@click.option("--upto", help="Replay up to this version (decimal or 0x hex).")
@click.option("--show", is_flag=True, help="Print the rebuilt state (the state machine's fields).")
@click.option(
    "--query",
    "queries",
    multiple=True,
    metavar="'NAME ARG ...'",
    help="Run a query of the type on the rebuilt state and print its result, e.g. "
    "--query 'get colour' (arguments are Python literals or words; repeatable).",
)
@_accept_torn_option
def replay_cmd(
    directory: str,
    sm_spec: str | None,
    upto: str | None,
    show: bool,
    queries: tuple[str, ...],
    accept_torn: bool,
) -> None:
    """Rebuild a state machine: newest snapshot at or below --upto, then the records after it.
    Stops at a record that is not an operation of the type (the wrong --state-machine). Of a
    Multi-Paxos acceptor log: its state snapshot (its votes are not decisions)."""
    if _acceptor_marker(directory) is not None:
        if upto is not None:
            raise click.UsageError("--upto: an acceptor log is replayed to its state snapshot only")
        _replay_acceptor(directory, _need_type(directory, sm_spec), show, queries, accept_torn)
        return
    log = _open(directory)
    cls = _need_type(directory, sm_spec)
    replayed = _replay(log, directory, cls, upto)
    sm, res = replayed.sm, replayed.result
    snap = f"{res.snapshot_version:#x}" if res.snapshot_version >= 0 else "none"
    span = (
        f"{res.first_applied_version:#x}..{res.last_applied_version:#x}"
        if res.records_applied
        else "-"
    )
    click.echo(f"type: {cls.__module__}:{cls.__name__}")
    click.echo(f"snapshot: {snap}")
    click.echo(f"records applied: {res.records_applied} (versions {span})")
    _show_rebuilt(cls, sm, show, queries)
    _finish_torn(_torn_warnings(log, directory), accept_torn)


def _show_rebuilt(cls: type, sm: Any, show: bool, queries: tuple[str, ...]) -> None:
    """The rebuilt state's digest, its fields (`show`) and the results of `queries` on it."""
    click.echo(f"digest: {sm.digest()}")
    if show:
        click.echo("state:")
        click.echo(_state_text(sm))
    for text in queries:
        name, args = _parse_query(text)
        try:
            payload = cls.encode_query(name, *args)
            value = sm.run_query(payload)
        except Exception as e:
            raise click.ClickException(f"query {text!r}: {e}") from None
        click.echo(f"{text}: {value!r}")


def _replay_acceptor(
    directory: str, cls: type, show: bool, queries: tuple[str, ...], accept_torn: bool
) -> None:
    """An acceptor log holds the state of the slots its member applied (the state snapshot, with
    the client sessions) and the member's votes above it. A vote is not a decision (a value is
    chosen when a majority voted for it in one ballot; the member learns that from its peers),
    so the votes are counted, not applied."""
    from smr.runtime.hosted import Hosted
    from smr.runtime.paxos_log import replay

    log = _open(directory)
    with _errors():
        st = replay(log)
    hosted = Hosted(cls())
    if st.state:
        try:
            hosted.restore(st.state)
        except Exception as e:
            raise click.ClickException(
                f"the state snapshot of {directory} is not a {cls.__name__} state ({e}); give "
                "--state-machine the type its cluster hosts"
            ) from None
    click.echo(f"type: {cls.__module__}:{cls.__name__}")
    click.echo(
        f"state snapshot: slots below {st.state_slot} applied"
        if st.state_version is not None
        else "state snapshot: none yet (the member had saved no state): an empty state"
    )
    above = sorted(s for s in st.votes if s >= st.state_slot)
    click.echo(
        f"votes above it: {len(above)}"
        + (f" at slots {above[0]}..{above[-1]}" if above else "")
        + ", not applied: a vote is not a decision (the member learns what was chosen from "
        "its peers when it starts)"
    )
    _show_rebuilt(cls, hosted.machine, show, queries)
    _finish_torn(_torn_warnings(log, directory), accept_torn)


@log_group.command("snapshot")
@click.argument("directory", type=click.Path(file_okay=False))
@_state_machine_option(
    "MODULE:CLASS to rebuild (default: the type the cluster's cluster.toml puts in this shard)."
)
@_accept_torn_option
def snapshot_cmd(directory: str, sm_spec: str | None, accept_torn: bool) -> None:
    """Replay the log and save the state at its last version as a snapshot, so that `trim` can
    drop the records before it. Only on the log of a stopped member."""
    _refuse_acceptor(directory, "snapshot")
    log = _open(directory)
    torn = _torn_warnings(log, directory)
    if torn and not accept_torn:
        for line in torn:
            click.echo(line, err=True)
        raise click.ClickException(
            f"nothing saved: the log is torn; pass {ACCEPT_TORN} to repair it and save"
        )
    cls = _need_type(directory, sm_spec)
    replayed = _replay(log, directory, cls, None)
    res = replayed.result
    version = res.last_applied_version if res.records_applied else res.snapshot_version
    if version < 0:
        raise click.ClickException("nothing saved: the log holds no record to snapshot")
    data = replayed.snapshot()
    log.close()
    writable = _open(directory, writable=True)
    with _errors():
        for line in writable.recovery.lines():
            click.echo(f"repaired: {line}", err=True)
        writable.save_snapshot(version, data)
        writable.close()
    click.echo(f"saved a snapshot at {version:#x} ({len(data)} bytes) of {cls.__name__}")


@log_group.command("trim")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--below", required=True, help="Drop records below this version (<= newest snapshot)."
)
@_accept_torn_option
def trim_cmd(directory: str, below: str, accept_torn: bool) -> None:
    """Remove whole segments below a version (never beyond the newest snapshot). A refused
    trim changes nothing on disk."""
    v = _version(below)
    assert v is not None
    _refuse_acceptor(directory, "trim")
    # first read-only: a trim that is refused must not have repaired (changed) the directory
    log = _open(directory)
    with _errors():
        snapshots = log.snapshot_versions()
        needs_repair = log.recovery.lines()
        log.close()
    if not snapshots or v > snapshots[-1]:
        newest = f"the newest snapshot is {snapshots[-1]:#x}" if snapshots else "it has no snapshot"
        known = _cluster_type(directory)
        how = f"smr log snapshot {directory}" + (
            "" if known is not None else " --state-machine MODULE:CLASS"
        )
        raise click.ClickException(
            f"nothing trimmed: cannot trim below {v:#x}, {newest} (only records below a "
            f"snapshot may go); save one at the log's last version first with `{how}` (on a "
            "stopped member's log), then trim again"
        )
    if needs_repair and not accept_torn:
        raise click.ClickException(
            f"nothing trimmed: the log needs repair ({'; '.join(needs_repair)}); pass "
            f"{ACCEPT_TORN} to repair it and trim"
        )
    log = _open(directory, writable=True)
    with _errors():
        for line in log.recovery.lines():
            click.echo(f"repaired: {line}", err=True)
        removed = log.trim_below(v)
        log.close()
    click.echo(f"trimmed below {v:#x}: {removed} segment(s) removed")
