"""A member in its own process for the shm tests: `python shm_peer.py CLUSTER ME PEER MODE N`.

MODE `rows`: wait for the link to PEER, then write N whole rows into PEER's table of epoch 1,
each carrying a counter, bytes derived from it and a CRC of both (a torn row fails the CRC),
then send the data message b"done" and stay until PEER goes away.
MODE `idle`: link up and stay until killed or PEER goes away.
"""

from __future__ import annotations

import random
import struct
import sys
import zlib

from smr.transport.base import Address, TransportConfig
from smr.transport.shm import ShmTransport

ROW_BYTES = 512
SECRET = b"shm-test-secret!"


def make_row(counter: int) -> bytes:
    body = struct.pack("<Q", counter) + random.Random(counter).randbytes(ROW_BYTES - 16)
    return body + struct.pack("<Q", zlib.crc32(body))


def row_ok(row: bytes | bytearray) -> bool:
    return struct.unpack_from("<Q", row, ROW_BYTES - 8)[0] == zlib.crc32(row[: ROW_BYTES - 8])


class _Events:
    def __init__(self) -> None:
        self.up: set[int] = set()
        self.failed: set[int] = set()

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        pass

    def on_data(self, source: int, payload: bytes) -> None:
        pass

    def on_link_up(self, peer: int) -> None:
        self.up.add(peer)
        self.failed.discard(peer)

    def on_peer_failed(self, peer: int) -> None:
        self.failed.add(peer)


def main() -> None:
    cluster, me, peer, mode, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
    config = TransportConfig(secret=SECRET, cluster=cluster, peer_failed_after_s=0.2)
    t = ShmTransport(me, {me: Address("local", 0), peer: Address("local", 0)}, config)
    ev = _Events()
    t.start(ev)
    t.register(1, sorted((me, peer)), ROW_BYTES)
    while peer not in ev.up:
        t.poll(0.05)
    print("up", flush=True)
    if mode == "rows":
        for counter in range(1, int(n) + 1):
            t.write([peer], 1, 0, make_row(counter))
        t.send(peer, b"done")
    while peer not in ev.failed:
        t.poll(0.05)
    t.close()


if __name__ == "__main__":
    main()
