"""A member's tcp links leave from its own configured address: on one host, members on 127.0.0.2
and 127.0.0.3 (Linux routes all of 127.0.0.0/8 to loopback) are told apart by the source of their
connections, so a test can cut one member off by address. Real sockets, two real transports."""

from __future__ import annotations

import socket
import sys

import pytest

from smr.transport.base import Address, TransportConfig
from smr.transport.tcp import TcpTransport

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="127.0.0.2 and 127.0.0.3 are loopback on Linux"
)

SECRET = b"tcp-source-secret-0123456789abcd"
POLL_S = 0.02
POLLS_MAX = 500


class Recorder:
    def __init__(self) -> None:
        self.up: list[int] = []
        self.data: list[tuple[int, bytes]] = []

    def on_write(self, source, epoch, offset, data):
        pass

    def on_data(self, source, payload):
        self.data.append((source, bytes(payload)))

    def on_link_up(self, peer):
        self.up.append(peer)

    def on_peer_failed(self, peer):
        pass


def _config() -> TransportConfig:
    return TransportConfig(
        secret=SECRET,
        frame_bytes_max=1 << 20,
        connect_timeout_s=2.0,
        peer_failed_after_s=5.0,
        reconnect_backoff_s=0.02,
    )


def _listener(host: str) -> socket.socket:
    s = socket.socket()
    s.bind((host, 0))
    s.listen(8)
    return s


def test_a_members_dial_comes_from_its_configured_host():
    # member 1 (the lower id) dials member 2 at once; member 2 is a plain socket here, which
    # sees where the connection comes from
    peer = _listener("127.0.0.3")
    peer.settimeout(10)
    me = _listener("127.0.0.2")  # a free port on 127.0.0.2, handed to the transport
    port = me.getsockname()[1]
    me.close()
    addresses = {1: Address("127.0.0.2", port), 2: Address("127.0.0.3", peer.getsockname()[1])}
    t = TcpTransport(1, addresses, _config())
    t.start(Recorder())
    try:
        t.poll(0)
        conn, source = peer.accept()
        conn.close()
        assert source[0] == "127.0.0.2"
    finally:
        t.close()
        peer.close()


def test_two_members_on_their_own_loopback_addresses_link_and_talk_both_ways():
    ports = []
    for host in ("127.0.0.2", "127.0.0.3"):
        s = _listener(host)
        ports.append(s.getsockname()[1])
        s.close()
    addresses = {1: Address("127.0.0.2", ports[0]), 2: Address("127.0.0.3", ports[1])}
    h = {1: Recorder(), 2: Recorder()}
    t = {m: TcpTransport(m, addresses, _config()) for m in (1, 2)}
    for m in (1, 2):
        t[m].start(h[m])
    try:
        for _ in range(POLLS_MAX):
            if h[1].up and h[2].up:
                break
            for x in t.values():
                x.poll(POLL_S)
        assert h[1].up == [2] and h[2].up == [1]
        t[1].send(2, b"from 1")
        t[2].send(1, b"from 2")
        for _ in range(POLLS_MAX):
            if h[1].data and h[2].data:
                break
            for x in t.values():
                x.poll(POLL_S)
        assert h[2].data == [(1, b"from 1")] and h[1].data == [(2, b"from 2")]
    finally:
        for x in t.values():
            x.close()


def test_a_member_on_a_wildcard_address_still_dials():
    # 0.0.0.0 listens everywhere and names no source: the kernel picks one, as before
    peer = _listener("127.0.0.1")
    peer.settimeout(10)
    me = _listener("127.0.0.1")
    port = me.getsockname()[1]
    me.close()
    addresses = {1: Address("0.0.0.0", port), 2: Address("127.0.0.1", peer.getsockname()[1])}
    t = TcpTransport(1, addresses, _config())
    t.start(Recorder())
    try:
        t.poll(0)
        conn, source = peer.accept()
        conn.close()
        assert source[0] == "127.0.0.1"
    finally:
        t.close()
        peer.close()
