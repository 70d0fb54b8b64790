"""`smr bench log`: durable-append throughput of smr.log next to the raw figures of the same disk.

Four measurements in one run, in one directory (a temp dir under --dir):
- raw fsyncs/s: a 4 KiB write + fdatasync loop (what one durable append would cost alone);
- raw write MB/s: sequential 64 KiB writes with one fsync at the end;
- durable appends/s: 100-byte records through GroupCommitWriter with the `batch` policy, from a
  pipelined submitter: it submits --submit-records records at a time (the runtime submits each
  batch the core delivers at once) and never waits for durability, so up to queue_records_max
  records are in flight and group commit forms batches behind each fsync;
- 64 KiB record MB/s: the same with 64 KiB payloads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time

import click
import zstandard

from smr.log import GroupCommitWriter, Log, LogConfig, Record, encode_record
from smr.log.fs import OsFileSystem


def raw_fsyncs_per_s(directory: str, duration_s: float) -> float:
    fs = OsFileSystem()
    path = os.path.join(directory, "raw-fsync.bin")
    f = fs.create(path)
    block = os.urandom(4096)
    n = 0
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < duration_s:
            f.write(block)
            f.fsync()
            n += 1
    finally:
        f.close()
        os.remove(path)
    return n / (time.perf_counter() - start)


def raw_write_mb_per_s(directory: str, total_bytes: int) -> float:
    fs = OsFileSystem()
    path = os.path.join(directory, "raw-write.bin")
    f = fs.create(path)
    chunk = os.urandom(64 << 10)
    start = time.perf_counter()
    try:
        for _ in range(total_bytes // len(chunk)):
            f.write(chunk)
        f.fsync()
        elapsed = time.perf_counter() - start
    finally:
        f.close()
        os.remove(path)
    return total_bytes / elapsed / 1e6


def group_commit_run(
    directory: str,
    payload_bytes: int,
    duration_s: float,
    count_max: int,
    queue_records_max: int,
    submit_records: int,
) -> dict[str, float]:
    """Pipelined submitter for duration_s (or count_max records); returns rate figures."""
    path = os.path.join(directory, f"log-{payload_bytes}")
    log = Log.open(path, LogConfig(sync_policy="batch"))
    writer = GroupCommitWriter(
        log,
        None,
        queue_records_max=queue_records_max,
        queue_bytes_max=max(64 << 20, 4 * payload_bytes),
    )
    payload = os.urandom(payload_bytes)
    version = 0
    start = time.perf_counter()
    try:
        while version < count_max and time.perf_counter() - start < duration_s:
            now_ns = time.time_ns()
            batch = [
                Record(version + i, now_ns, 0, 0, payload) for i in range(1, submit_records + 1)
            ]
            writer.submit(batch)
            version += submit_records
        writer.flush()
        elapsed = time.perf_counter() - start
        stats = writer.statistics()
    finally:
        writer.close()
        log.close()
        shutil.rmtree(path, ignore_errors=True)
    return {
        "records": version,
        "elapsed_s": elapsed,
        "per_s": version / elapsed,
        "mb_per_s": version * payload_bytes / elapsed / 1e6,
        "fsyncs": stats["fsyncs"],
        "records_per_fsync": version / max(1, stats["fsyncs"]),
    }


def kv_frames(total_bytes: int, seed: int = 1) -> bytes:
    """Realistic KV command records, framed as in a segment body (for the compression figures)."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "user", "order", "cart", "item", "price", "status"]
    out: list[bytes] = []
    size = 0
    version, ts = 0, 1_700_000_000_000_000_000
    while size < total_bytes:
        key = f"user:{rng.randrange(100000):06d}:{rng.choice(words)}"
        op = rng.choice(["put", "put", "put", "get", "del"])
        cmd: dict[str, object] = {"op": op, "key": key}
        if op == "put":
            cmd["value"] = {
                "name": f"{rng.choice(words)}{rng.randrange(1000)}",
                "qty": rng.randrange(100),
                "price": round(rng.random() * 100, 2),
                "status": rng.choice(words),
            }
        version += rng.randrange(1, 4)
        ts += rng.randrange(1000, 50000)
        frame = encode_record(Record(version, ts, 0, 0, json.dumps(cmd).encode()))
        out.append(frame)
        size += len(frame)
    return b"".join(out)


def compression_figures(total_bytes: int = 16 << 20) -> list[dict[str, float]]:
    data = kv_frames(total_bytes)
    rows = []
    for level in (1, 3, 6):
        start = time.perf_counter()
        packed = zstandard.ZstdCompressor(level=level).compress(data)
        compress_s = time.perf_counter() - start
        start = time.perf_counter()
        zstandard.ZstdDecompressor().decompress(packed)
        decompress_s = time.perf_counter() - start
        rows.append(
            {
                "level": level,
                "ratio": round(len(data) / len(packed), 2),
                "compress_mb_per_s": round(len(data) / compress_s / 1e6),
                "decompress_mb_per_s": round(len(data) / decompress_s / 1e6),
            }
        )
    return rows


@click.command("log")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), help="Disk to measure.")
@click.option("--duration-s", default=3.0, show_default=True, help="Seconds per measurement.")
@click.option("--count-64k", default=4096, show_default=True, help="64 KiB records (max).")
@click.option("--queue-records-max", default=16384, show_default=True)
@click.option(
    "--submit-records", default=64, show_default=True, help="100 B records per submit call."
)
@click.option(
    "--compression", is_flag=True, help="Only measure zstd on realistic KV segment bodies."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_log(
    data_dir: str | None,
    duration_s: float,
    count_64k: int,
    queue_records_max: int,
    submit_records: int,
    compression: bool,
    as_json: bool,
) -> None:
    """Durable appends/s and MB/s through group commit, next to raw fsyncs/s and write MB/s."""
    if compression:
        rows = compression_figures()
        if as_json:
            click.echo(json.dumps({"compression": rows}))
        for row in rows if not as_json else []:
            click.echo(
                f"zstd level {row['level']}: ratio {row['ratio']}, compress "
                f"{row['compress_mb_per_s']} MB/s, decompress {row['decompress_mb_per_s']} MB/s"
            )
        return
    if data_dir is not None and not os.path.isdir(data_dir):
        raise click.ClickException(f"--dir {data_dir} is not a directory")
    work = tempfile.mkdtemp(prefix="smr-bench-log-", dir=data_dir)
    try:
        fsyncs = raw_fsyncs_per_s(work, duration_s)
        write_mb = raw_write_mb_per_s(work, count_64k * (64 << 10))
        small = group_commit_run(work, 100, duration_s, 10**9, queue_records_max, submit_records)
        # 64 KiB records are submitted one at a time: each is a big request on its own.
        large = group_commit_run(work, 64 << 10, duration_s * 10, count_64k, 1024, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "dir": work,
        "submit_records": submit_records,
        "durable_appends_per_s": round(small["per_s"]),
        "records_per_fsync_100b": round(small["records_per_fsync"], 1),
        "raw_fsyncs_per_s": round(fsyncs),
        "appends_vs_raw_fsyncs": round(small["per_s"] / fsyncs, 1),
        "record64k_mb_per_s": round(large["mb_per_s"], 1),
        "raw_write_mb_per_s": round(write_mb, 1),
        "record64k_vs_raw_write": round(large["mb_per_s"] / write_mb, 2),
        "records_per_fsync_64k": round(large["records_per_fsync"], 1),
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"disk: {work}")
    click.echo(f"{'measure':<42}{'figure':>14}")
    rows = [
        ("raw 4 KiB write+fsync /s", f"{result['raw_fsyncs_per_s']}"),
        ("durable 100 B appends /s (group commit)", f"{result['durable_appends_per_s']}"),
        ("  x raw fsync rate", f"{result['appends_vs_raw_fsyncs']}"),
        ("  records per fsync", f"{result['records_per_fsync_100b']}"),
        ("raw sequential write MB/s", f"{result['raw_write_mb_per_s']}"),
        ("durable 64 KiB records MB/s", f"{result['record64k_mb_per_s']}"),
        ("  fraction of raw write", f"{result['record64k_vs_raw_write']}"),
    ]
    for name, value in rows:
        click.echo(f"{name:<42}{value:>14}")
