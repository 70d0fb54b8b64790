"""The tcp provider for the contract suite: every member on loopback, on ports free at creation."""

from __future__ import annotations

import socket

from smr.transport.base import Address, Transport, TransportConfig
from smr.transport.tcp import TcpTransport

NAME = "tcp"
ORDERED_ACROSS_CHANNELS = True  # writes and sends to a peer share one connection


def free_ports(n: int) -> list[int]:
    """Ports no socket holds now (each bound to port 0 and released; held together so the
    kernel hands out distinct ones)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make(members: list[int], config: TransportConfig, tmp_path) -> dict[int, Transport]:
    del tmp_path  # tcp keeps nothing on disk
    addresses = {
        m: Address("127.0.0.1", p) for m, p in zip(members, free_ports(len(members)), strict=True)
    }
    return {m: TcpTransport(m, addresses, config) for m in members}


def restart(old: Transport) -> Transport:
    return TcpTransport(old.me, old.addresses, old.config)
