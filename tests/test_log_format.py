"""Framing: the decoder fed whole, byte by byte, with trailing garbage and random corruption."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.log import LogCorruptionError, Record, RecordDecoder, encode_record, make_version
from smr.log.format import scan_frames

RECORDS = [Record(make_version(1, i * 2), 1_000 + i, 0, 3, bytes([i]) * (i * 7)) for i in range(30)]
STREAM = b"".join(encode_record(r) for r in RECORDS)


def test_fed_whole():
    d = RecordDecoder()
    d.feed(STREAM)
    assert d.records() == RECORDS
    assert d.pending_bytes == 0


def test_fed_byte_by_byte():
    d = RecordDecoder()
    out = []
    for i in range(len(STREAM)):
        d.feed(STREAM[i : i + 1])
        out += d.records()
    assert out == RECORDS


def test_trailing_garbage_is_an_error_not_a_record():
    d = RecordDecoder()
    d.feed(STREAM + b"\x01" * 40)
    with pytest.raises(LogCorruptionError, match=f"byte {len(STREAM)}"):
        d.records()
    with pytest.raises(LogCorruptionError):
        d.feed(b"more")


def test_incomplete_tail_waits_for_more():
    d = RecordDecoder()
    d.feed(STREAM[:-3])
    assert d.records() == RECORDS[:-1]
    d.feed(STREAM[-3:])
    assert d.records() == RECORDS[-1:]


def test_versions_must_increase():
    d = RecordDecoder()
    d.feed(encode_record(RECORDS[5]) + encode_record(RECORDS[2]))
    with pytest.raises(LogCorruptionError, match="does not increase"):
        d.records()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(STREAM) - 1), st.integers(1, 255), st.integers(1, 50))
def test_corruption_is_accepted_or_a_clear_error(offset, xor, chunk):
    damaged = bytearray(STREAM)
    damaged[offset] ^= xor
    d = RecordDecoder()
    out = []
    try:
        for i in range(0, len(damaged), chunk):
            d.feed(damaged[i : i + chunk])
            out += d.records()
    except LogCorruptionError:
        pass
    # Whatever was returned is genuine: a checksum failure never yields a record.
    assert out == RECORDS[: len(out)]
    assert len(out) < len(RECORDS) or d.pending_bytes == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data):
    d = RecordDecoder()
    d.feed(data)
    try:
        for r in d.records():
            assert encode_record(r) in data
    except LogCorruptionError:
        pass


def test_torn_frame_vs_flipped_length():
    frame = encode_record(RECORDS[3])
    _, stop = scan_frames(frame[:-1], 0, len(frame) - 1, record_bytes_max=1 << 20)
    assert stop is not None and stop.torn
    bad = bytearray(frame)
    bad[0] ^= 0x40  # an authentic-looking but longer length: caught by length_crc
    _, stop = scan_frames(bad, 0, len(bad), record_bytes_max=1 << 20)
    assert stop is not None and not stop.torn
    rng = random.Random(5)
    for _ in range(50):
        b = bytearray(frame)
        b[rng.randrange(12, len(b))] ^= 1 + rng.randrange(255)
        frames, stop = scan_frames(b, 0, len(b), record_bytes_max=1 << 20)
        assert frames == [] and stop is not None and not stop.torn
