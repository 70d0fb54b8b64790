"""The on-disk format: records and their framing, segment headers, checksummed blobs.

Everything here is pure (bytes in, values out); docs/log-format.md is the prose version.

Frame (little-endian), one per record:

    u32 length        bytes of the body (24 + len(payload))
    u32 length_crc    CRC32C of the 4 length bytes
    u32 crc           CRC32C of length, length_crc and the body
    body: u64 version, i64 timestamp_ns, u32 subgroup, u32 shard, payload

`length_crc` lets recovery tell a torn tail (a frame whose authentic length runs past the end of the
file) from a flipped length byte (corruption), which a single CRC over the frame cannot.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import msgspec
from crc32c import crc32c

from smr.log.errors import LogCorruptionError

FORMAT_VERSION: Final = 1
VERSION_MAX: Final = (1 << 64) - 1
NO_VERSION: Final = -1

_PREFIX = struct.Struct("<II")
_CRC = struct.Struct("<I")
_BODY_HEAD = struct.Struct("<QqII")
FRAME_HEAD_BYTES: Final = _PREFIX.size + _CRC.size  # 12
BODY_HEAD_BYTES: Final = _BODY_HEAD.size  # 24
FRAME_OVERHEAD_BYTES: Final = FRAME_HEAD_BYTES + BODY_HEAD_BYTES

SEGMENT_MAGIC: Final = b"SMRLOGSG"
SEGMENT_FLAG_ZSTD: Final = 1
_SEGMENT_HEADER = struct.Struct("<8sHHQI")  # magic, format, flags, first_version, header crc
SEGMENT_HEADER_BYTES: Final = _SEGMENT_HEADER.size  # 24

BLOB_MAGIC: Final = b"SMRBLOB1"
_BLOB_HEADER = struct.Struct("<8sHHqQI")  # magic, format, kind, version, length, crc of all
BLOB_HEADER_BYTES: Final = _BLOB_HEADER.size
BLOB_KIND_SNAPSHOT: Final = 1
BLOB_KIND_META: Final = 2


class Record(msgspec.Struct, frozen=True, gc=False):
    """One entry of one log (one shard at one member). `version` is `(epoch << 32) | seq`.

    A msgspec Struct rather than a frozen dataclass: construction is about 10x cheaper, and the
    runtime builds one per delivered message.
    """

    version: int
    timestamp_ns: int
    subgroup: int
    shard: int
    payload: bytes


def make_version(epoch: int, seq: int) -> int:
    assert 0 <= epoch < (1 << 32) and 0 <= seq < (1 << 32)
    return (epoch << 32) | seq


def encode_record(
    record: Record,
    _pack_prefix=_PREFIX.pack,
    _pack_crc=_CRC.pack,
    _pack_head=_BODY_HEAD.pack,
    _length_crcs: dict[int, int] = {},  # noqa: B006 - cache: few distinct lengths in practice
) -> bytes:
    payload = record.payload
    length = BODY_HEAD_BYTES + len(payload)
    length_crc = _length_crcs.get(length)
    if length_crc is None:
        length_crc = crc32c(_CRC.pack(length))
        if len(_length_crcs) < 4096:
            _length_crcs[length] = length_crc
    prefix = _pack_prefix(length, length_crc)
    head = _pack_head(record.version, record.timestamp_ns, record.subgroup, record.shard)
    crc = crc32c(payload, crc32c(head, crc32c(prefix)))
    return b"".join((prefix, _pack_crc(crc), head, payload))


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """A frame that passed its checks, without copying its payload."""

    offset: int
    end: int
    version: int
    timestamp_ns: int
    subgroup: int
    shard: int


@dataclass(frozen=True, slots=True)
class FrameStop:
    """Why a scan stopped before the end of the buffer.

    `torn` means the bytes look like an interrupted append (an incomplete frame with an authentic
    length, or zeros to the end); anything else is corruption.
    """

    offset: int
    what: str
    torn: bool


def scan_frames(
    buf: bytes | bytearray | memoryview,
    start: int,
    end: int,
    *,
    record_bytes_max: int,
    after_version: int = NO_VERSION,
) -> tuple[list[FrameInfo], FrameStop | None]:
    """Check every frame in buf[start:end]; return the good ones and why it stopped, if it did.

    Versions must strictly increase from `after_version`. Cost: one CRC pass over the bytes.
    """
    view = memoryview(buf)
    frames: list[FrameInfo] = []
    pos = start
    last = after_version
    while pos < end:
        if end - pos < FRAME_HEAD_BYTES:
            return frames, FrameStop(pos, f"{end - pos} bytes, too short for a frame", torn=True)
        length, length_crc = _PREFIX.unpack_from(view, pos)
        if crc32c(view[pos : pos + 4]) != length_crc:
            if not any(view[pos:end]):
                return frames, FrameStop(pos, "zeros at the end", torn=True)
            return frames, FrameStop(pos, "frame length fails its checksum", torn=False)
        if length < BODY_HEAD_BYTES or length > BODY_HEAD_BYTES + record_bytes_max:
            return frames, FrameStop(pos, f"implausible frame length {length}", torn=False)
        frame_end = pos + FRAME_HEAD_BYTES + length
        if frame_end > end:
            return frames, FrameStop(
                pos, f"frame of {length} bytes runs past the end ({end - pos} left)", torn=True
            )
        (crc,) = _CRC.unpack_from(view, pos + 8)
        body_pos = pos + FRAME_HEAD_BYTES
        if crc32c(view[body_pos:frame_end], crc32c(view[pos : pos + 8])) != crc:
            return frames, FrameStop(pos, "record fails its CRC32C", torn=False)
        version, timestamp_ns, subgroup, shard = _BODY_HEAD.unpack_from(view, body_pos)
        if version <= last:
            return frames, FrameStop(
                pos, f"version {version:#x} does not increase (after {last:#x})", torn=False
            )
        frames.append(FrameInfo(pos, frame_end, version, timestamp_ns, subgroup, shard))
        last = version
        pos = frame_end
    return frames, None


def record_at(buf: bytes | bytearray | memoryview, info: FrameInfo) -> Record:
    payload = bytes(memoryview(buf)[info.offset + FRAME_OVERHEAD_BYTES : info.end])
    return Record(info.version, info.timestamp_ns, info.subgroup, info.shard, payload)


def decode_record(buf: bytes | bytearray | memoryview, offset: int, *, path: str | None) -> Record:
    """Decode and check the one frame at `offset`; raise LogCorruptionError if it is not valid."""
    frames, stop = scan_frames(
        buf, offset, len(buf), record_bytes_max=len(buf), after_version=NO_VERSION
    )
    if frames and frames[0].offset == offset:
        return record_at(buf, frames[0])
    assert stop is not None
    raise LogCorruptionError(path, stop.offset, stop.what)


class RecordDecoder:
    """Incremental decoder for a stream of frames (a segment body, a network copy of the log).

    `feed(data)` then `records()`; bytes of an incomplete frame are kept until more arrive. Bad
    input raises LogCorruptionError, and the decoder then refuses further input.
    """

    def __init__(self, *, record_bytes_max: int = 16 << 20, buffer_bytes_max: int = 64 << 20):
        assert buffer_bytes_max >= FRAME_OVERHEAD_BYTES + record_bytes_max
        self._buf = bytearray()
        self._consumed_bytes = 0
        self._last_version = NO_VERSION
        self._record_bytes_max = record_bytes_max
        self._buffer_bytes_max = buffer_bytes_max
        self._failed: LogCorruptionError | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._failed is not None:
            raise self._failed
        if len(self._buf) + len(data) > self._buffer_bytes_max:
            raise ValueError(
                "RecordDecoder buffer_bytes_max exceeded; call records() between feeds"
            )
        self._buf += data

    def records(self) -> list[Record]:
        if self._failed is not None:
            raise self._failed
        frames, stop = scan_frames(
            self._buf,
            0,
            len(self._buf),
            record_bytes_max=self._record_bytes_max,
            after_version=self._last_version,
        )
        out = [record_at(self._buf, f) for f in frames]
        used = frames[-1].end if frames else 0
        if frames:
            self._last_version = frames[-1].version
        # An incomplete frame (torn=True and not zeros) is just "need more bytes" for a stream.
        if stop is not None and not (stop.torn and stop.what != "zeros at the end"):
            self._failed = LogCorruptionError(None, self._consumed_bytes + stop.offset, stop.what)
            del self._buf[:used]
            self._consumed_bytes += used
            raise self._failed
        del self._buf[:used]
        self._consumed_bytes += used
        return out


def encode_segment_header(first_version: int, flags: int = 0) -> bytes:
    head = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, flags, first_version, 0)[:-4]
    return head + _CRC.pack(crc32c(head))


def decode_segment_header(buf: bytes, *, path: str) -> tuple[int, int]:
    """Return (first_version, flags); raise LogCorruptionError naming the file if bad."""
    if len(buf) < SEGMENT_HEADER_BYTES:
        raise LogCorruptionError(path, 0, f"segment header truncated ({len(buf)} bytes)")
    magic, fmt, flags, first_version, crc = _SEGMENT_HEADER.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        raise LogCorruptionError(path, 0, f"not a log segment (magic {magic!r})")
    if crc32c(buf[: SEGMENT_HEADER_BYTES - 4]) != crc:
        raise LogCorruptionError(path, 0, "segment header fails its CRC32C")
    if fmt != FORMAT_VERSION:
        raise LogCorruptionError(path, 8, f"unsupported segment format version {fmt}")
    if flags & ~SEGMENT_FLAG_ZSTD:
        raise LogCorruptionError(path, 10, f"unknown segment flags {flags:#x}")
    return first_version, flags


def encode_blob(kind: int, version: int, data: bytes) -> bytes:
    head = _BLOB_HEADER.pack(BLOB_MAGIC, FORMAT_VERSION, kind, version, len(data), 0)[:-4]
    return head + _CRC.pack(crc32c(data, crc32c(head))) + data


def decode_blob(buf: bytes, *, kind: int, path: str) -> tuple[int, bytes]:
    """Return (version, data) of a snapshot or metadata blob; raise LogCorruptionError if bad."""
    if len(buf) < BLOB_HEADER_BYTES:
        raise LogCorruptionError(path, 0, f"blob header truncated ({len(buf)} bytes)")
    magic, fmt, got_kind, version, length, crc = _BLOB_HEADER.unpack_from(buf, 0)
    if magic != BLOB_MAGIC:
        raise LogCorruptionError(path, 0, f"not a log blob (magic {magic!r})")
    if fmt != FORMAT_VERSION or got_kind != kind:
        raise LogCorruptionError(path, 8, f"unexpected blob format {fmt} kind {got_kind}")
    data = buf[BLOB_HEADER_BYTES:]
    if len(data) != length:
        raise LogCorruptionError(
            path, BLOB_HEADER_BYTES, f"blob holds {len(data)} bytes, header says {length}"
        )
    if crc32c(data, crc32c(buf[: BLOB_HEADER_BYTES - 4])) != crc:
        raise LogCorruptionError(path, BLOB_HEADER_BYTES - 4, "blob fails its CRC32C")
    return version, data
