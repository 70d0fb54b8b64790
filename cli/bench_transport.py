"""`smr bench transport`: small table writes per second and MiB/s of large data messages between
two transports of one provider in one process (the runtime's pattern: do a batch, then poll).

It owns nothing but the measurement; figures and the command that made them go in
docs/transports.md. Both transports run on the calling thread, so the figures include the
reader's cost as well as the writer's.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import click

from smr.transport.base import Address, TransportConfig


class _Count:
    def __init__(self) -> None:
        self.last_word = -1
        self.data_bytes = 0
        self.data_n = 0
        self.up = 0

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        if offset == 0 and len(data) >= 8:
            self.last_word = int.from_bytes(data[:8], "little")

    def on_data(self, source: int, payload: bytes) -> None:
        self.data_bytes += len(payload)
        self.data_n += 1

    def on_link_up(self, peer: int) -> None:
        self.up += 1

    def on_peer_failed(self, peer: int) -> None:
        pass


def _make(provider: str, config: TransportConfig):
    if provider == "shm":
        from smr.transport.shm import ShmTransport

        addrs = {1: Address("localhost", 0), 2: Address("localhost", 0)}
        return ShmTransport(1, addrs, config), ShmTransport(2, addrs, config)
    if provider == "tcp":
        from smr.transport.tcp import TcpTransport

        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        addrs = {1: Address("127.0.0.1", ports[0]), 2: Address("127.0.0.1", ports[1])}
        return TcpTransport(1, addrs, config), TcpTransport(2, addrs, config)
    raise click.BadParameter(f"unknown provider {provider!r}", param_hint="--transport")


def _poll_until(ts, done, what: str, polls_max: int = 1_000_000) -> None:
    for _ in range(polls_max):
        if done():
            return
        for t in ts:
            t.poll(0.001)
    raise click.ClickException(f"bench: {what} did not happen in {polls_max} polls")


@click.command("transport")
@click.option("--transport", "provider", type=click.Choice(["shm", "tcp"]), default="shm")
@click.option("--writes", default=200_000, show_default=True, help="small writes to make")
@click.option("--write-bytes", default=64, show_default=True, help="bytes per write")
@click.option("--batch", default=100, show_default=True, help="writes between two polls")
@click.option("--messages", default=200, show_default=True, help="data messages to send")
@click.option("--message-bytes", default=1 << 20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object instead of text")
def bench_transport(
    provider: str,
    writes: int,
    write_bytes: int,
    batch: int,
    messages: int,
    message_bytes: int,
    as_json: bool,
) -> None:
    """Small writes/s and MiB/s of data messages between two transports in one process."""
    if write_bytes < 8 or write_bytes % 8 or batch < 1 or writes < 1 or messages < 1:
        raise click.BadParameter("write-bytes a multiple of 8 (>= 8), batch/writes/messages >= 1")
    config = TransportConfig(
        secret=b"bench-transport-secret", cluster=f"bench-{uuid.uuid4().hex[:8]}"
    )
    a, b = _make(provider, config)
    ha, hb = _Count(), _Count()
    try:
        a.start(ha)
        b.start(hb)
        row_bytes = max(4096, write_bytes)
        a.register(1, [1, 2], row_bytes)
        b.register(1, [1, 2], row_bytes)
        _poll_until((a, b), lambda: ha.up and hb.up, "the link up")
        body = bytearray(write_bytes)
        t0 = time.perf_counter()
        for i in range(writes):
            body[:8] = i.to_bytes(8, "little")
            a.write([2], 1, 0, bytes(body))
            if (i + 1) % batch == 0:
                a.poll(0)
                b.poll(0)
        _poll_until((a, b), lambda: hb.last_word == writes - 1, "the last write")
        writes_s = writes / (time.perf_counter() - t0)
        payload = bytes(message_bytes)
        t0 = time.perf_counter()
        for _ in range(messages):
            a.send(2, payload)
            a.poll(0)
            b.poll(0)
        _poll_until((a, b), lambda: hb.data_n == messages, "the last message")
        mib_s = messages * message_bytes / (1 << 20) / (time.perf_counter() - t0)
    finally:
        a.close()
        b.close()
    result = {
        "transport": provider,
        "writes_per_s": round(writes_s),
        "write_bytes": write_bytes,
        "batch": batch,
        "message_bytes": message_bytes,
        "mib_per_s": round(mib_s, 1),
    }
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"{provider}: {writes_s:,.0f} writes/s of {write_bytes} bytes "
            f"(poll every {batch}); {mib_s:,.1f} MiB/s of {message_bytes}-byte messages"
        )


if __name__ == "__main__":
    bench_transport()
