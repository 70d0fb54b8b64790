"""Read-only check of a whole log directory: every header, every record checksum, the order of
versions (the index), every snapshot and metadata blob. Finds all problems, repairs none."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import zstandard

from smr.log import format as fmt
from smr.log.errors import LogCorruptionError
from smr.log.format import NO_VERSION
from smr.log.fs import FileSystem, OsFileSystem, join
from smr.log.log import (
    META_SUFFIX,
    SEGMENT_SUFFIX,
    SEGMENT_ZSTD_SUFFIX,
    SNAPSHOT_SUFFIX,
    LogConfig,
)


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    offset: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}: byte {self.offset}: {self.what}"


@dataclass(slots=True)
class VerifyResult:
    problems: list[Problem] = field(default_factory=list)
    segments: int = 0
    records: int = 0
    snapshots: int = 0
    metas: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    path: str,
    *,
    fs: FileSystem | None = None,
    config: LogConfig | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Check everything under `path`; `on_progress(bytes)` is called per segment."""
    fs = fs if fs is not None else OsFileSystem()
    config = config if config is not None else LogConfig()
    result = VerifyResult()
    names = fs.listdir(path)
    segs = sorted(n for n in names if n.endswith(SEGMENT_SUFFIX) or n.endswith(SEGMENT_ZSTD_SUFFIX))
    last = NO_VERSION
    for i, name in enumerate(segs):
        p = join(path, name)
        data = fs.read(p)
        result.segments += 1
        try:
            first, flags = fmt.decode_segment_header(data[: fmt.SEGMENT_HEADER_BYTES], path=p)
            if f"{first:016x}" != name.split(".")[0]:
                raise LogCorruptionError(p, 0, f"header first version {first:#x} != file name")
            if flags & fmt.SEGMENT_FLAG_ZSTD:
                try:
                    body = zstandard.ZstdDecompressor().decompress(data[fmt.SEGMENT_HEADER_BYTES :])
                except zstandard.ZstdError as e:
                    raise LogCorruptionError(
                        p, fmt.SEGMENT_HEADER_BYTES, f"zstd body does not decompress: {e}"
                    ) from None
                data = data[: fmt.SEGMENT_HEADER_BYTES] + body
        except LogCorruptionError as e:
            result.problems.append(Problem(p, e.offset, e.what))
            continue
        frames, stop = fmt.scan_frames(
            data,
            fmt.SEGMENT_HEADER_BYTES,
            len(data),
            record_bytes_max=config.record_bytes_max,
            after_version=last,
        )
        result.records += len(frames)
        if frames and frames[0].version != first:
            result.problems.append(
                Problem(p, frames[0].offset, f"first record {frames[0].version:#x} != file name")
            )
        if stop is not None:
            what = stop.what
            if stop.torn and i == len(segs) - 1:
                what += " (a torn tail: opening the log truncates it)"
            result.problems.append(Problem(p, stop.offset, what))
        if frames:
            last = frames[-1].version
        if on_progress is not None:
            on_progress(len(data))
    for name in names:
        p = join(path, name)
        kind = None
        if name.endswith(SNAPSHOT_SUFFIX):
            kind, result.snapshots = fmt.BLOB_KIND_SNAPSHOT, result.snapshots + 1
        elif name.endswith(META_SUFFIX):
            kind, result.metas = fmt.BLOB_KIND_META, result.metas + 1
        if kind is None:
            continue
        try:
            fmt.decode_blob(fs.read(p), kind=kind, path=p)
        except LogCorruptionError as e:
            result.problems.append(Problem(p, e.offset, e.what))
    return result
