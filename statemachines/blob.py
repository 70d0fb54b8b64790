"""`BlobLog`: an append-only log that keeps only its summary (count, total bytes and a running
CRC-32C of every payload in order), so benchmarks can append 1 MiB commands for minutes without
the replicas' memory growing. Replicas that applied the same appends in the same order have the
same summary; the checksum is the cheap order-sensitive witness of that."""

from __future__ import annotations

import crc32c
import msgspec

from smr.api import StateMachine, command, query

_decode_state = msgspec.msgpack.Decoder(tuple[int, int, int]).decode


class BlobLog(StateMachine):
    def __init__(self) -> None:
        self.count = 0
        self.total_bytes = 0
        self.checksum = 0

    @command
    def append(self, data: bytes) -> int:
        """Append one payload; returns how many payloads were appended so far."""
        self.count += 1
        self.total_bytes += len(data)
        # Chained: the checksum covers the payloads and their order, not just their multiset.
        self.checksum = crc32c.crc32c(data, value=self.checksum)
        return self.count

    @query
    def stats(self) -> tuple[int, int, int]:
        """(count, total bytes, running CRC-32C of the payloads in append order)."""
        return (self.count, self.total_bytes, self.checksum)

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode((self.count, self.total_bytes, self.checksum))

    def restore(self, data: bytes) -> None:
        self.count, self.total_bytes, self.checksum = _decode_state(data)
