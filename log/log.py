"""The durable log of one stream (one shard at one member): segments, index, snapshots, metadata.

Directory layout (all in one directory, so one directory fsync covers every rename):
    <first version, 16 hex digits>.seg    segment being appended to, or sealed
    <first version>.segz                  sealed segment compressed with zstandard
    <version>.snap                        state machine snapshot taken at that version
    <name>.meta                           small named blob, replaced atomically
    *.tmp                                 an atomic replace cut short by a crash; removed on open

Thread safety: every public method takes one lock, so the group-commit thread and readers may
share a Log. Records appended but not yet flushed are not visible to reads.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import zstandard
from sortedcontainers import SortedDict

from smr.log import format as fmt
from smr.log.errors import LogCorruptionError, LogError, RecordNotFoundError, TrimmedError
from smr.log.format import NO_VERSION, Record
from smr.log.fs import AppendFile, FileSystem, OsFileSystem, join, write_atomic

SEGMENT_SUFFIX: Final = ".seg"
SEGMENT_ZSTD_SUFFIX: Final = ".segz"
SNAPSHOT_SUFFIX: Final = ".snap"
META_SUFFIX: Final = ".meta"
TMP_SUFFIX: Final = ".tmp"

META_SYNC_POLICY: Final = "log.sync_policy"
META_TRIMMED_BELOW: Final = "log.trimmed_below"
META_TRUNCATE_AFTER: Final = "log.truncate_after"

_META_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VERSION_NAME = re.compile(r"^[0-9a-f]{16}$")
_SYNC_POLICY = re.compile(r"^(batch|never|interval:[1-9][0-9]{0,6})$")


def check_sync_policy(policy: str) -> str:
    """Return the policy if it is `batch`, `never` or `interval:<ms>`; else raise ValueError."""
    if not _SYNC_POLICY.match(policy):
        raise ValueError(
            f"bad sync policy {policy!r}: use 'batch', 'interval:<ms>' (1..9999999) or 'never'"
        )
    return policy


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Limits and policies of one log. Sizes in bytes."""

    segment_bytes_max: int = 64 << 20
    record_bytes_max: int = 16 << 20
    # Appends beyond this are written to the segment (not fsynced) to bound memory.
    buffer_bytes_max: int = 16 << 20
    sync_policy: str = "batch"
    compress_sealed: bool = False
    compress_level: int = 3
    snapshots_keep_max: int = 2

    def __post_init__(self) -> None:
        check_sync_policy(self.sync_policy)
        if self.segment_bytes_max < fmt.SEGMENT_HEADER_BYTES + fmt.FRAME_OVERHEAD_BYTES:
            raise ValueError(f"segment_bytes_max {self.segment_bytes_max} is too small")
        if self.record_bytes_max <= 0 or self.buffer_bytes_max <= 0:
            raise ValueError("record_bytes_max and buffer_bytes_max must be positive")
        if self.snapshots_keep_max < 1:
            raise ValueError("snapshots_keep_max must be at least 1")


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TornTail:
    """A torn or corrupt tail that open() cut off the last segment."""

    path: str
    offset: int
    bytes_dropped: int
    what: str


@dataclass(slots=True)
class RecoveryReport:
    """What open() had to repair. Empty after a clean shutdown."""

    torn_tails: list[TornTail] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.torn_tails or self.removed_files or self.redone)

    def lines(self) -> list[str]:
        out = [
            f"truncated {t.path} at byte {t.offset} ({t.bytes_dropped} bytes dropped: {t.what})"
            for t in self.torn_tails
        ]
        out += [f"removed {p}" for p in self.removed_files]
        out += [f"redid {r}" for r in self.redone]
        return out


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    name: str
    first_version: int
    last_version: int
    records: int
    file_bytes: int
    body_bytes: int
    compressed: bool
    timestamp_ns_min: int
    timestamp_ns_max: int


class _Segment:
    __slots__ = (
        "body_bytes",
        "compressed",
        "file_bytes",
        "first_version",
        "last_version",
        "path",
        "records",
        "timestamp_ns_max",
        "timestamp_ns_min",
    )

    def __init__(self, path: str, first_version: int, compressed: bool) -> None:
        self.path = path
        self.first_version = first_version
        self.compressed = compressed
        self.file_bytes = fmt.SEGMENT_HEADER_BYTES
        # Offsets in the index are into header + body (decompressed for .segz).
        self.body_bytes = 0
        self.records = 0
        self.last_version = NO_VERSION
        self.timestamp_ns_min = 0
        self.timestamp_ns_max = 0

    @property
    def end_offset(self) -> int:
        return fmt.SEGMENT_HEADER_BYTES + self.body_bytes


def segment_name(first_version: int, compressed: bool = False) -> str:
    return f"{first_version:016x}" + (SEGMENT_ZSTD_SUFFIX if compressed else SEGMENT_SUFFIX)


class Log:
    """One append-only stream of records with strictly increasing versions.

    Use `Log.open(path)`. Writes: `append` buffers, `flush` writes, `sync` writes and fsyncs once
    and returns the highest durable version. `recovery` says what open() repaired.
    """

    def __init__(
        self, fs: FileSystem, path: str, config: LogConfig, read_only: bool, _token: object
    ) -> None:
        assert _token is _OPEN_TOKEN, "use Log.open()"
        self.fs = fs
        self.path = path
        self.config = config
        self.read_only = read_only
        self.recovery = RecoveryReport()
        self._lock = threading.RLock()
        self._segments: SortedDict = SortedDict()  # first_version -> _Segment
        self._index: SortedDict = SortedDict()  # version -> offset in its segment
        # Running maximum of timestamps in index order: monotone even if clocks are not, so a
        # bisect finds the first record with timestamp >= t.
        self._ts_runmax: list[int] = []
        self._buffer: list[tuple[int, int, bytes]] = []  # (version, timestamp_ns, frame)
        self._buffer_bytes = 0
        self._last_version = NO_VERSION  # highest appended, buffered or not
        self._written_version = NO_VERSION
        self._durable_version = NO_VERSION
        self._trimmed_below = 0
        self._snapshot_versions: list[int] = []
        self._meta: dict[str, bytes] = {}
        self._active: AppendFile | None = None
        self._unsynced = False
        self._zcache: tuple[int, bytes] | None = None  # (first_version, decompressed segment)
        self._closed = False

    # ------------------------------------------------------------------ open and recovery

    @classmethod
    def open(
        cls,
        path: str,
        config: LogConfig | None = None,
        *,
        fs: FileSystem | None = None,
        create: bool = True,
        read_only: bool = False,
    ) -> Log:
        """Open (or create) the log in directory `path`, repairing a torn tail unless read_only.

        Raises LogError if the directory is missing and not `create`, LogCorruptionError for
        damage a crash cannot explain.
        """
        fs = fs if fs is not None else OsFileSystem()
        config = config if config is not None else LogConfig()
        path = path.rstrip("/") or "/"
        if not fs.is_dir(path):
            if fs.exists(path):
                raise LogError(f"{path} is not a directory")
            if not create or read_only:
                raise LogError(f"log directory {path} does not exist")
            fs.makedirs(path)
        log = cls(fs, path, config, read_only, _OPEN_TOKEN)
        log._load()
        if not read_only and log._meta.get(META_SYNC_POLICY) != config.sync_policy.encode():
            log.meta_put(META_SYNC_POLICY, config.sync_policy.encode())
        log._check()
        return log

    def _p(self, name: str) -> str:
        return join(self.path, name)

    def _load(self) -> None:
        fs = self.fs
        names = fs.listdir(self.path)
        dir_dirty = False
        for name in names:
            if name.endswith(TMP_SUFFIX) and not self.read_only:
                fs.remove(self._p(name))
                self.recovery.removed_files.append(self._p(name))
                dir_dirty = True
        for name in names:
            if name.endswith(META_SUFFIX):
                key = name[: -len(META_SUFFIX)]
                _, data = fmt.decode_blob(
                    fs.read(self._p(name)), kind=fmt.BLOB_KIND_META, path=self._p(name)
                )
                self._meta[key] = data
            elif name.endswith(SNAPSHOT_SUFFIX) and _VERSION_NAME.match(name[:-5]):
                self._snapshot_versions.append(int(name[:-5], 16))
        self._snapshot_versions.sort()
        if META_TRIMMED_BELOW in self._meta:
            self._trimmed_below = int.from_bytes(self._meta[META_TRIMMED_BELOW], "little")

        plain = {
            int(n[:-4], 16)
            for n in names
            if n.endswith(SEGMENT_SUFFIX) and _VERSION_NAME.match(n[:-4])
        }
        packed = {
            int(n[:-5], 16)
            for n in names
            if n.endswith(SEGMENT_ZSTD_SUFFIX) and _VERSION_NAME.match(n[:-5])
        }
        for v in sorted(plain & packed):
            # The .segz is complete (it was renamed in after an fsync); the .seg is the original
            # a crash kept, or a truncation's rewrite that a pending intent will redo.
            p = self._p(segment_name(v))
            if not self.read_only:
                fs.remove(p)
                self.recovery.removed_files.append(p)
                dir_dirty = True
            plain.discard(v)
        firsts = sorted([(v, False) for v in plain] + [(v, True) for v in packed])
        last_version = NO_VERSION
        for i, (first, compressed) in enumerate(firsts):
            is_last = i == len(firsts) - 1
            seg = _Segment(self._p(segment_name(first, compressed)), first, compressed)
            data = fs.read(seg.path)
            frames, stop = self._scan_segment(seg, data, last_version)
            if stop is not None:
                if is_last and stop.torn and not compressed:
                    dropped = len(data) - stop.offset
                    self.recovery.torn_tails.append(
                        TornTail(seg.path, stop.offset, dropped, stop.what)
                    )
                    if not self.read_only:
                        fs.truncate(seg.path, stop.offset)
                else:
                    raise LogCorruptionError(seg.path, stop.offset, stop.what)
            if not frames:
                if not is_last:
                    raise LogCorruptionError(
                        seg.path, fmt.SEGMENT_HEADER_BYTES, "sealed segment holds no records"
                    )
                # A segment created just before a crash, none of whose records were synced.
                if not self.read_only:
                    fs.remove(seg.path)
                    self.recovery.removed_files.append(seg.path)
                    dir_dirty = True
                continue
            if frames[0].version != first:
                raise LogCorruptionError(
                    seg.path,
                    frames[0].offset,
                    f"first record has version {frames[0].version:#x}, the name says {first:#x}",
                )
            self._segments[first] = seg
            seg.file_bytes = len(data) if stop is None or compressed else stop.offset
            for f in frames:
                self._add_to_index(seg, f)
            last_version = frames[-1].version
        if dir_dirty:
            fs.fsync_dir(self.path)
        self._last_version = self._written_version = self._durable_version = last_version
        if META_TRUNCATE_AFTER in self._meta:
            version = int.from_bytes(self._meta[META_TRUNCATE_AFTER], "little", signed=True)
            self.recovery.redone.append(f"truncate_after({version:#x})")
            if not self.read_only:
                self._truncate_after_locked(version)
            else:
                self._drop_index_after(version)
        if self._trimmed_below and not self.read_only:
            removed = self._remove_trimmed_segments()
            if removed:
                self.recovery.redone.append(f"trim_below({self._trimmed_below:#x})")

    def _scan_segment(
        self, seg: _Segment, data: bytes, after_version: int
    ) -> tuple[list[fmt.FrameInfo], fmt.FrameStop | None]:
        first, flags = fmt.decode_segment_header(data[: fmt.SEGMENT_HEADER_BYTES], path=seg.path)
        if first != seg.first_version:
            raise LogCorruptionError(
                seg.path,
                0,
                f"header says first version {first:#x}, the name says {seg.first_version:#x}",
            )
        if bool(flags & fmt.SEGMENT_FLAG_ZSTD) != seg.compressed:
            raise LogCorruptionError(seg.path, 10, "compression flag does not match the file name")
        if seg.compressed:
            data = self._decompress(seg, data)
        return fmt.scan_frames(
            data,
            fmt.SEGMENT_HEADER_BYTES,
            len(data),
            record_bytes_max=self.config.record_bytes_max,
            after_version=after_version,
        )

    def _decompress(self, seg: _Segment, data: bytes) -> bytes:
        try:
            body = zstandard.ZstdDecompressor().decompress(data[fmt.SEGMENT_HEADER_BYTES :])
        except zstandard.ZstdError as e:
            raise LogCorruptionError(
                seg.path, fmt.SEGMENT_HEADER_BYTES, f"zstd body does not decompress: {e}"
            ) from None
        return data[: fmt.SEGMENT_HEADER_BYTES] + body

    def _add_to_index(self, seg: _Segment, f: fmt.FrameInfo) -> None:
        if seg.records == 0:
            seg.timestamp_ns_min = seg.timestamp_ns_max = f.timestamp_ns
        else:
            seg.timestamp_ns_min = min(seg.timestamp_ns_min, f.timestamp_ns)
            seg.timestamp_ns_max = max(seg.timestamp_ns_max, f.timestamp_ns)
        seg.records += 1
        seg.last_version = f.version
        seg.body_bytes = f.end - fmt.SEGMENT_HEADER_BYTES
        if f.version < self._trimmed_below:
            return
        self._index[f.version] = f.offset
        prev = self._ts_runmax[-1] if self._ts_runmax else f.timestamp_ns
        self._ts_runmax.append(max(prev, f.timestamp_ns))

    # ------------------------------------------------------------------ writing

    @property
    def last_version(self) -> int:
        """Highest version appended (buffered or written), or NO_VERSION (-1)."""
        return self._last_version

    @property
    def written_version(self) -> int:
        return self._written_version

    @property
    def durable_version(self) -> int:
        """Highest version known to be on disk (fsynced), or NO_VERSION (-1)."""
        return self._durable_version

    @property
    def trimmed_below(self) -> int:
        return self._trimmed_below

    def append(self, records: Iterable[Record]) -> int:
        """Buffer records (versions strictly increasing); return the last version appended.

        Nothing is durable until `sync()`.
        """
        with self._lock:
            self._check_writable()
            last = self._last_version
            limit = self.config.record_bytes_max
            encode = fmt.encode_record
            for r in records:
                if not (last < r.version <= fmt.VERSION_MAX):
                    raise ValueError(
                        f"version {r.version:#x} must be above the last one, {last:#x}"
                    )
                if len(r.payload) > limit:
                    raise ValueError(
                        f"payload of {len(r.payload)} bytes exceeds record_bytes_max {limit}"
                    )
                frame = encode(r)
                self._buffer.append((r.version, r.timestamp_ns, frame))
                self._buffer_bytes += len(frame)
                last = r.version
                self._last_version = last
                if self._buffer_bytes >= self.config.buffer_bytes_max:
                    self._flush_locked()
            return last

    def flush(self) -> int:
        """Write buffered records to the segment files without fsync; return the written version."""
        with self._lock:
            self._check_writable()
            self._flush_locked()
            return self._written_version

    def sync(self) -> int:
        """Write buffered records and fsync once; return the highest durable version."""
        with self._lock:
            self._check_writable()
            self._flush_locked()
            if self._unsynced:
                assert self._active is not None
                self._active.fsync()
                self._unsynced = False
            self._durable_version = self._written_version
            return self._durable_version

    def _flush_locked(self) -> None:
        if not self._buffer:
            return
        seg_max = self.config.segment_bytes_max
        seg = self._segments.peekitem(-1)[1] if self._segments else None
        chunk: list[bytes] = []
        offsets: list[int] = []
        pos = seg.end_offset if seg is not None else 0
        start = 0
        for i, (version, _, frame) in enumerate(self._buffer):
            if (
                seg is None
                or seg.compressed
                or (seg.records + len(chunk) > 0 and pos + len(frame) > seg_max)
            ):
                if seg is not None and chunk:
                    self._write_chunk(seg, chunk, offsets, start, pos)
                if seg is not None:
                    self._seal(seg)
                seg = self._create_segment(version)
                chunk, offsets, start = [], [], i
                pos = seg.end_offset
            chunk.append(frame)
            offsets.append(pos)
            pos += len(frame)
        assert seg is not None
        if chunk:
            self._write_chunk(seg, chunk, offsets, start, pos)
        self._buffer.clear()
        self._buffer_bytes = 0

    def _write_chunk(
        self, seg: _Segment, chunk: list[bytes], offsets: list[int], start: int, end: int
    ) -> None:
        """Write frames buffer[start:start+len(chunk)] at `offsets` of `seg`, then index them."""
        if self._active is None:
            self._active = self.fs.open_append(seg.path)
        # One write per batch: the unit a crash may tear.
        self._active.write(b"".join(chunk))
        self._unsynced = True
        assert seg.end_offset == offsets[0]
        seg.file_bytes += end - offsets[0]
        entries = self._buffer[start : start + len(chunk)]
        timestamps = [e[1] for e in entries]
        if seg.records == 0:
            seg.timestamp_ns_min, seg.timestamp_ns_max = min(timestamps), max(timestamps)
        else:
            seg.timestamp_ns_min = min(seg.timestamp_ns_min, *timestamps)
            seg.timestamp_ns_max = max(seg.timestamp_ns_max, *timestamps)
        seg.records += len(chunk)
        seg.last_version = entries[-1][0]
        seg.body_bytes = end - fmt.SEGMENT_HEADER_BYTES
        # The hot loop of group commit: locals, no per-record objects beyond the index entry.
        index = self._index
        runmax = self._ts_runmax
        high = runmax[-1] if runmax else timestamps[0]
        trimmed_below = self._trimmed_below
        for (version, ts, _), offset in zip(entries, offsets, strict=True):
            if version < trimmed_below:
                continue
            index[version] = offset
            if ts > high:
                high = ts
            runmax.append(high)
        self._written_version = seg.last_version

    def _create_segment(self, first_version: int) -> _Segment:
        seg = _Segment(self._p(segment_name(first_version)), first_version, compressed=False)
        # The header goes in through an atomic replace, so a segment file always has a whole one.
        write_atomic(self.fs, seg.path, fmt.encode_segment_header(first_version))
        self._segments[first_version] = seg
        return seg

    def _seal(self, seg: _Segment) -> None:
        """Make a full segment durable before the next one exists, so only the last can be torn."""
        if self._active is not None:
            if self._unsynced:
                self._active.fsync()
                self._unsynced = False
            self._active.close()
            self._active = None
        self._durable_version = max(self._durable_version, seg.last_version)
        if self.config.compress_sealed and not seg.compressed:
            self._compress(seg)

    def _compress(self, seg: _Segment) -> None:
        data = self.fs.read(seg.path)
        body = zstandard.ZstdCompressor(
            level=self.config.compress_level, write_checksum=True, write_content_size=True
        ).compress(data[fmt.SEGMENT_HEADER_BYTES :])
        packed = self._p(segment_name(seg.first_version, compressed=True))
        write_atomic(
            self.fs,
            packed,
            fmt.encode_segment_header(seg.first_version, fmt.SEGMENT_FLAG_ZSTD) + body,
        )
        self.fs.remove(seg.path)
        self.fs.fsync_dir(self.path)
        seg.path = packed
        seg.compressed = True
        seg.file_bytes = fmt.SEGMENT_HEADER_BYTES + len(body)

    def compress_sealed_segments(self) -> int:
        """Compress every sealed plain segment (off the hot path); return how many."""
        with self._lock:
            self._check_writable()
            sealed = [s for s in self._segments.values()[:-1] if not s.compressed]
            for seg in sealed:
                self._compress(seg)
            return len(sealed)

    # ------------------------------------------------------------------ reading

    def _segment_for(self, version: int) -> _Segment:
        i = self._segments.bisect_right(version) - 1
        assert i >= 0
        return self._segments.peekitem(i)[1]

    def _segment_data(self, seg: _Segment) -> bytes:
        if not seg.compressed:
            return self.fs.read(seg.path, 0, seg.end_offset)
        if self._zcache is not None and self._zcache[0] == seg.first_version:
            return self._zcache[1]
        data = self._decompress(seg, self.fs.read(seg.path))
        self._zcache = (seg.first_version, data)
        return data

    def _check_readable(self, version: int) -> None:
        if version < self._trimmed_below:
            raise TrimmedError(version, self._trimmed_below)

    def read(self, version: int) -> Record:
        """The record with exactly this version; TrimmedError or RecordNotFoundError otherwise."""
        with self._lock:
            self._check_open()
            self._check_readable(version)
            offset = self._index.get(version)
            if offset is None:
                raise RecordNotFoundError(version)
            seg = self._segment_for(version)
            if seg.compressed:
                data, at = self._segment_data(seg), offset
            else:
                head = self.fs.read(seg.path, offset, fmt.FRAME_HEAD_BYTES)
                length = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
                data, at = self.fs.read(seg.path, offset, fmt.FRAME_HEAD_BYTES + length), 0
            record = fmt.decode_record(data, at, path=seg.path)
            if record.version != version:
                raise LogCorruptionError(
                    seg.path,
                    offset,
                    f"index says {version:#x}, the record says {record.version:#x}",
                )
            return record

    def iter(
        self, from_version: int | None = None, to_version: int | None = None
    ) -> Iterator[Record]:
        """Records with from_version <= version <= to_version, in order, each checked.

        Asking for trimmed versions raises TrimmedError; from_version=None starts at the oldest.
        """
        with self._lock:
            self._check_open()
            if from_version is not None:
                self._check_readable(from_version)
            lo = from_version if from_version is not None else self._trimmed_below
            hi = to_version if to_version is not None else fmt.VERSION_MAX
            versions = list(self._index.irange(lo, hi))
        # Read segment by segment outside the lock per record; the lock is retaken per segment.
        i = 0
        while i < len(versions):
            with self._lock:
                seg = self._segment_for(versions[i])
                data = self._segment_data(seg)
                start = self._index.get(versions[i])
                if start is None:  # trimmed or truncated meanwhile
                    self._check_readable(versions[i])
                    raise RecordNotFoundError(versions[i])
            frames, stop = fmt.scan_frames(
                data,
                start,
                len(data),
                record_bytes_max=self.config.record_bytes_max,
                after_version=versions[i] - 1,
            )
            got = 0
            for f in frames:
                if i >= len(versions) or f.version != versions[i]:
                    break
                yield fmt.record_at(data, f)
                i += 1
                got += 1
            if got == 0:
                where = stop.offset if stop is not None else start
                what = stop.what if stop is not None else "record missing from its segment"
                raise LogCorruptionError(seg.path, where, what)

    def __iter__(self) -> Iterator[Record]:
        return self.iter()

    def first_at_or_after_time(self, timestamp_ns: int) -> Record | None:
        """The first record (in log order) whose timestamp is >= timestamp_ns, or None."""
        with self._lock:
            self._check_open()
            i = _bisect_left(self._ts_runmax, timestamp_ns)
            if i >= len(self._ts_runmax):
                return None
            return self.read(self._index.peekitem(i)[0])

    def iter_from_time(self, timestamp_ns: int) -> Iterator[Record]:
        first = self.first_at_or_after_time(timestamp_ns)
        if first is None:
            return iter(())
        return self.iter(first.version)

    def versions(self) -> list[int]:
        with self._lock:
            return list(self._index.keys())

    def __len__(self) -> int:
        return len(self._index)

    def segments(self) -> list[SegmentInfo]:
        with self._lock:
            return [
                SegmentInfo(
                    s.path.rpartition("/")[2],
                    s.first_version,
                    s.last_version,
                    s.records,
                    s.file_bytes,
                    s.body_bytes,
                    s.compressed,
                    s.timestamp_ns_min,
                    s.timestamp_ns_max,
                )
                for s in self._segments.values()
            ]

    # ------------------------------------------------------------------ snapshots and trim

    def save_snapshot(self, version: int, data: bytes) -> None:
        """Store a snapshot of the state after applying every record <= version (atomic)."""
        with self._lock:
            self._check_writable()
            assert 0 <= version <= fmt.VERSION_MAX
            write_atomic(
                self.fs,
                self._p(f"{version:016x}{SNAPSHOT_SUFFIX}"),
                fmt.encode_blob(fmt.BLOB_KIND_SNAPSHOT, version, data),
            )
            if version not in self._snapshot_versions:
                self._snapshot_versions.append(version)
                self._snapshot_versions.sort()
            old = self._snapshot_versions[: -self.config.snapshots_keep_max]
            for v in old:
                self.fs.remove(self._p(f"{v:016x}{SNAPSHOT_SUFFIX}"))
            if old:
                del self._snapshot_versions[: len(old)]
                self.fs.fsync_dir(self.path)

    def snapshot_versions(self) -> list[int]:
        with self._lock:
            return list(self._snapshot_versions)

    def latest_snapshot(self, at_or_below: int | None = None) -> Snapshot | None:
        """The newest snapshot (optionally the newest at or below a version), checked, or None."""
        with self._lock:
            self._check_open()
            candidates = [
                v for v in self._snapshot_versions if at_or_below is None or v <= at_or_below
            ]
            if not candidates:
                return None
            path = self._p(f"{candidates[-1]:016x}{SNAPSHOT_SUFFIX}")
            version, data = fmt.decode_blob(
                self.fs.read(path), kind=fmt.BLOB_KIND_SNAPSHOT, path=path
            )
            if version != candidates[-1]:
                raise LogCorruptionError(
                    path,
                    12,
                    f"snapshot says version {version:#x}, the name says {candidates[-1]:#x}",
                )
            return Snapshot(version, data)

    def trim_below(self, version: int) -> int:
        """Drop every record below `version`; whole segments go. Return how many segments went.

        Only below the newest snapshot: `version` may not exceed its version, so the state the
        trimmed records built is never lost.
        """
        with self._lock:
            self._check_writable()
            newest = self._snapshot_versions[-1] if self._snapshot_versions else None
            if newest is None or version > newest:
                raise LogError(
                    f"cannot trim below {version:#x}: the newest snapshot is "
                    + (f"{newest:#x}" if newest is not None else "missing")
                    + "; save a snapshot first"
                )
            if version <= self._trimmed_below:
                return 0
            # The watermark is durable before any file goes, so a crash in between is redone.
            self.meta_put(META_TRIMMED_BELOW, version.to_bytes(8, "little"))
            self._trimmed_below = version
            n = 0
            while self._index and self._index.peekitem(0)[0] < version:
                self._index.popitem(0)
                n += 1
            del self._ts_runmax[:n]
            return self._remove_trimmed_segments()

    def _remove_trimmed_segments(self) -> int:
        firsts = list(self._segments.keys())
        removable = [f for f, nxt in itertools.pairwise(firsts) if nxt <= self._trimmed_below]
        for f in removable:
            seg = self._segments.pop(f)
            self.fs.remove(seg.path)
        if removable:
            self.fs.fsync_dir(self.path)
            self._zcache = None
        return len(removable)

    def truncate_after(self, version: int) -> None:
        """Drop every record newer than `version` (buffered or on disk) and newer snapshots."""
        with self._lock:
            self._check_writable()
            self._flush_locked()
            if self._unsynced and self._active is not None:
                self._active.fsync()
                self._unsynced = False
            self._durable_version = self._written_version
            if version >= self._last_version:
                return
            kept = [v for v in self._snapshot_versions if self._trimmed_below - 1 <= v <= version]
            if self._trimmed_below > 0 and not kept:
                # The snapshot the trim relied on is newer than `version` and would go with the
                # records; the state below the trim point could not be rebuilt.
                raise LogError(
                    f"cannot truncate after {version:#x}: the log is trimmed below "
                    f"{self._trimmed_below:#x}"
                )
            # An intent first: a crash half way through is finished on the next open, so records
            # above `version` never come back.
            self.meta_put(META_TRUNCATE_AFTER, version.to_bytes(8, "little", signed=True))
            self._truncate_after_locked(version)
            self.meta_remove(META_TRUNCATE_AFTER)

    def _drop_index_after(self, version: int) -> int:
        n = 0
        while self._index and self._index.peekitem(-1)[0] > version:
            self._index.popitem(-1)
            n += 1
        if n:
            del self._ts_runmax[-n:]
        return n

    def _truncate_after_locked(self, version: int) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
        self._zcache = None
        self._drop_index_after(version)
        dir_dirty = False
        for first in reversed(list(self._segments.keys())):
            if first <= version:
                break
            seg = self._segments.pop(first)
            self.fs.remove(seg.path)
            dir_dirty = True
        if dir_dirty:
            self.fs.fsync_dir(self.path)
        if self._segments:
            seg = self._segments.peekitem(-1)[1]
            data = self._segment_data(seg)
            frames, stop = fmt.scan_frames(
                data,
                fmt.SEGMENT_HEADER_BYTES,
                seg.end_offset,
                record_bytes_max=self.config.record_bytes_max,
            )
            if stop is not None:
                raise LogCorruptionError(seg.path, stop.offset, stop.what)
            keep = [f for f in frames if f.version <= version]
            assert keep, "a segment named at or below version keeps its first record"
            cut = keep[-1].end
            if seg.compressed:
                plain = self._p(segment_name(seg.first_version))
                write_atomic(
                    self.fs,
                    plain,
                    fmt.encode_segment_header(seg.first_version)
                    + data[fmt.SEGMENT_HEADER_BYTES : cut],
                )
                self.fs.remove(seg.path)
                self.fs.fsync_dir(self.path)
                seg.path, seg.compressed = plain, False
            elif cut < self.fs.size(seg.path):
                self.fs.truncate(seg.path, cut)
            seg.file_bytes = cut
            seg.records = len(keep)
            seg.body_bytes = cut - fmt.SEGMENT_HEADER_BYTES
            seg.last_version = keep[-1].version
            seg.timestamp_ns_min = min(f.timestamp_ns for f in keep)
            seg.timestamp_ns_max = max(f.timestamp_ns for f in keep)
        last = self._segments.peekitem(-1)[1].last_version if self._segments else NO_VERSION
        self._buffer = [b for b in self._buffer if b[0] <= version]
        self._buffer_bytes = sum(len(b[2]) for b in self._buffer)
        self._last_version = self._written_version = last
        self._durable_version = (
            min(self._durable_version, last) if self._durable_version != NO_VERSION else last
        )
        newer = [v for v in self._snapshot_versions if v > version]
        for v in newer:
            self.fs.remove(self._p(f"{v:016x}{SNAPSHOT_SUFFIX}"))
            self._snapshot_versions.remove(v)
        if newer:
            self.fs.fsync_dir(self.path)

    # ------------------------------------------------------------------ metadata

    def meta_put(self, name: str, data: bytes) -> None:
        """Replace the named blob atomically (temp file, fsync, rename, fsync directory)."""
        with self._lock:
            self._check_writable()
            _check_meta_name(name)
            write_atomic(
                self.fs,
                self._p(name + META_SUFFIX),
                fmt.encode_blob(fmt.BLOB_KIND_META, 0, bytes(data)),
            )
            self._meta[name] = bytes(data)

    def meta_get(self, name: str) -> bytes | None:
        with self._lock:
            _check_meta_name(name)
            return self._meta.get(name)

    def meta_remove(self, name: str) -> None:
        with self._lock:
            self._check_writable()
            _check_meta_name(name)
            if self._meta.pop(name, None) is not None:
                self.fs.remove(self._p(name + META_SUFFIX))
                self.fs.fsync_dir(self.path)

    def meta_names(self) -> list[str]:
        with self._lock:
            return sorted(self._meta)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Sync what was appended, then release the file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if not self.read_only:
                    self.sync()
            finally:
                if self._active is not None:
                    self._active.close()
                    self._active = None
                self._closed = True

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(f"log {self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise LogError(f"log {self.path} was opened read-only")

    def _check(self) -> None:
        """O(n) check of every invariant of the in-memory state (tests call it after each step)."""
        with self._lock:
            assert len(self._ts_runmax) == len(self._index)
            assert all(a <= b for a, b in zip(self._ts_runmax, self._ts_runmax[1:], strict=False))
            prev_last = NO_VERSION
            for first, seg in self._segments.items():
                assert seg.first_version == first
                assert seg.records > 0 and first <= seg.last_version
                assert first > prev_last
                prev_last = seg.last_version
            if self._index:
                assert self._index.peekitem(0)[0] >= self._trimmed_below
                assert self._index.peekitem(-1)[0] <= prev_last
            assert self._durable_version <= self._written_version <= self._last_version
            assert self._snapshot_versions == sorted(set(self._snapshot_versions))


_OPEN_TOKEN: Final = object()


def _check_meta_name(name: str) -> None:
    if not _META_NAME.match(name):
        raise ValueError(f"bad metadata name {name!r}: use 1 to 64 of [A-Za-z0-9_.-]")


def _bisect_left(xs: list[int], x: int) -> int:
    lo, hi = 0, len(xs)
    while lo < hi:
        mid = (lo + hi) // 2
        if xs[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo
