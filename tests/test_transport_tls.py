"""Mutual TLS on tcp member links: members of one CA link and exchange writes and data (and the
wire carries no plaintext); another CA's certificate, a certificate naming another member, an
expired certificate and a plaintext peer are refused and counted while good links keep working;
a damaged record resets only its link; revoking a certificate closes its link within seconds."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time

import pytest
from test_transport_tcp import Recorder
from transport_factories.tcp import free_ports

from smr.transport.base import Address, TransportConfig
from smr.transport.tcp import TcpTransport
from smr.transport.tls import TlsEndpoint, init_ca, issue, member_name, revoke

SECRET = b"tls-test-secret-0123456789abcdef"
POLL_S = 0.02
WAIT_S = 30.0  # generous: the machine may be busy; every wait ends as soon as its condition holds
RESEND_S = 1.0
# the revocation list is read at most once a second: its links close in seconds, not a timeout
REVOKED_WITHIN_S = 10.0
MARKER = b"PLAINTEXT-MARKER " * 64


def _ca(directory: str, members=(1, 2, 3)) -> str:
    init_ca(directory)
    for m in members:
        issue(directory, member_name(m))
    return directory


def _endpoint(directory: str, name: str) -> TlsEndpoint:
    """`name`'s certificate from the CA in `directory`, trusting that CA and its revocations."""
    return TlsEndpoint(
        os.path.join(directory, "ca.crt"),
        os.path.join(directory, f"{name}.crt"),
        os.path.join(directory, f"{name}.key"),
        os.path.join(directory, "crl.pem"),
    )


def _config(tls: TlsEndpoint | None, **kw) -> TransportConfig:
    base = dict(
        secret=SECRET,
        tls=tls,
        frame_bytes_max=8 << 20,
        connect_timeout_s=5.0,
        peer_failed_after_s=0.5,
        reconnect_backoff_s=0.05,
    )
    base.update(kw)
    return TransportConfig(**base)


class Group:
    """Transports on loopback, one per member, polled round-robin by `until`."""

    def __init__(self, configs: dict[int, TransportConfig], addresses=None):
        ports = free_ports(len(configs))
        self.addresses = {m: Address("127.0.0.1", p) for m, p in zip(configs, ports, strict=True)}
        views = addresses(self.addresses) if addresses else {}
        self.t = {
            m: TcpTransport(m, views.get(m, self.addresses), cfg) for m, cfg in configs.items()
        }
        self.h = {m: Recorder() for m in configs}
        for m, t in self.t.items():
            t.start(self.h[m])

    def poll(self) -> None:
        for t in self.t.values():
            t.poll(POLL_S)

    def until(self, cond, what: str, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
            self.poll()

    def linked(self, a: int, b: int) -> bool:
        return b in self.h[a].up and a in self.h[b].up

    def serving(self, a: int, b: int, tag: bytes) -> None:
        """A message each way between `a` and `b`: their link works. Sent again now and then:
        a message on a connection that a late dial replaces may be lost (the contract's
        on_link_up makes a replica resend; this is the test's resend)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            self.t[a].send(b, tag)
            self.t[b].send(a, tag)
            resend_at = time.monotonic() + RESEND_S
            while time.monotonic() < resend_at:
                if (a, tag) in self.h[b].data and (b, tag) in self.h[a].data:
                    return
                self.poll()
            assert time.monotonic() < deadline, f"no traffic between {a} and {b}"

    def drops(self, m: int) -> str:
        return "\n".join(self.t[m].recent_drops)

    def close(self) -> None:
        for t in self.t.values():
            t.close()


@pytest.fixture
def group():
    made: list[Group] = []

    def make(configs, addresses=None) -> Group:
        g = Group(configs, addresses)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


class Proxy:
    """Forwards every connection made to `port` on to `target_port`, recording the bytes each
    way; `corrupt()` flips the last byte of the next piece it forwards from the dialer."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.forward = bytearray()  # dialer to target
        self.backward = bytearray()  # target to dialer
        self.openings: list[bytes] = []  # the first bytes of each connection, from the dialer
        self.corrupted = 0
        self._corrupt = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def corrupt(self) -> None:
        self._corrupt.set()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        fresh: set[socket.socket] = set()
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                if key.data is None:
                    try:
                        a, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    try:
                        b = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                    except OSError:
                        a.close()  # the target is not listening yet: the dialer will retry
                        continue
                    a.settimeout(10)  # sends wait for the reader (polled by the test) to drain
                    sel.register(a, selectors.EVENT_READ, (b, True))
                    sel.register(b, selectors.EVENT_READ, (a, False))
                    fresh.add(a)
                    continue
                src = key.fileobj
                dst, forward = key.data
                assert isinstance(src, socket.socket)
                if src.fileno() < 0:
                    continue  # closed with its other end earlier in this round
                try:
                    chunk = src.recv(1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    for s in (src, dst):
                        sel.unregister(s)
                        s.close()
                    fresh.discard(src)
                    fresh.discard(dst)
                    continue
                if forward:
                    if src in fresh:
                        fresh.discard(src)
                        self.openings.append(chunk)
                    if self._corrupt.is_set():
                        self._corrupt.clear()
                        chunk = chunk[:-1] + bytes([chunk[-1] ^ 0x55])
                        self.corrupted += 1
                    self.forward += chunk
                else:
                    self.backward += chunk
                with contextlib.suppress(OSError):  # the other end is gone: its read says so
                    dst.sendall(chunk)
        sel.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.listener.close()


@pytest.fixture
def proxies():
    made: list[Proxy] = []

    def make(target_port: int) -> Proxy:
        p = Proxy(target_port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _through_proxy(group, proxies, configs):
    """Members 1 and 2, member 1 dialing 2 through a recording proxy. Member 2 is not told
    member 1's address (as a joiner), so it never dials around the proxy."""
    proxy: list[Proxy] = []

    def views(real):
        proxy.append(proxies(real[2].port))
        return {1: {1: real[1], 2: Address("127.0.0.1", proxy[0].port)}, 2: {2: real[2]}}

    g = group(configs, views)
    return g, proxy[0]


# -- the good path ------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext-control"])
def test_members_exchange_writes_and_data_both_ways_and_the_wire_shows_no_plaintext(
    tmp_path, group, proxies, tls
):
    d = _ca(str(tmp_path / "ca"))
    configs = {m: _config(_endpoint(d, member_name(m)) if tls else None) for m in (1, 2)}
    g, proxy = _through_proxy(group, proxies, configs)
    g.until(lambda: g.linked(1, 2), "the link up")
    big = os.urandom(3 << 20)  # several MiB: many records, partial sends, a body read in pieces
    g.t[1].write([2], 5, 8, MARKER)
    g.t[2].write([1], 5, 16, MARKER)
    for a, b in ((1, 2), (2, 1)):
        g.t[a].send(b, MARKER)
        g.t[a].send(b, big)
        g.t[a].send(b, b"after %d" % a)
    g.until(lambda: len(g.h[1].data) == 3 and len(g.h[2].data) == 3, "every message")
    for a, b in ((1, 2), (2, 1)):
        assert g.h[b].data == [(a, MARKER), (a, big), (a, b"after %d" % a)]
    assert g.h[2].writes == [(1, 5, 8, MARKER)] and g.h[1].writes == [(2, 5, 16, MARKER)]
    assert proxy.openings, "member 1's link did not go through the proxy"
    wire = (bytes(proxy.forward), bytes(proxy.backward))
    if tls:
        for m in (1, 2):
            assert g.t[m].stats["tls_handshakes"] >= 1 and g.t[m].stats["tls_failed"] == 0
        assert all(o[:2] == b"\x16\x03" for o in proxy.openings)  # a TLS handshake record
        for stream in wire:
            assert MARKER[:32] not in stream and b"SMRH" not in stream
            assert big[:64] not in stream
    else:  # the check above sees plaintext when there is some
        assert all(o.startswith(b"SMRH") for o in proxy.openings)
        assert all(MARKER[:32] in stream for stream in wire)
        assert g.t[1].stats["tls_handshakes"] == 0


def test_three_members_link_pairwise_over_tls(tmp_path, group):
    d = _ca(str(tmp_path / "ca"))
    g = group({m: _config(_endpoint(d, member_name(m))) for m in (1, 2, 3)})
    g.until(lambda: all(g.linked(a, b) for a, b in ((1, 2), (1, 3), (2, 3))), "every link up")
    for a, b in ((1, 2), (1, 3), (2, 3)):
        g.serving(a, b, b"%d and %d" % (a, b))
    for m in (1, 2, 3):
        assert g.t[m].stats["tls_handshakes"] >= 2
        assert g.t[m].stats["tls_failed"] == 0 and g.t[m].stats["auth_failed"] == 0


# -- refusals -----------------------------------------------------------------------------------


def test_a_certificate_of_another_ca_never_links_while_a_good_member_does(tmp_path, group):
    d = _ca(str(tmp_path / "ca"), members=(1, 2))
    other = _ca(str(tmp_path / "other"), members=(3,))  # another cluster's CA, same names
    configs = {m: _config(_endpoint(d, member_name(m))) for m in (1, 2)}
    configs[3] = _config(_endpoint(other, member_name(3)))
    g = group(configs)
    # 1 and 2 dial 3 (the lower id dials at once) and 3 dials them (after its grace period):
    # every attempt fails TLS, on each good member, again and again
    g.until(
        lambda: (
            g.linked(1, 2)
            and g.t[1].stats["tls_failed"] >= 2
            and g.t[2].stats["tls_failed"] >= 2
            and g.t[3].stats["tls_failed"] >= 1  # member 3 refuses them likewise
        ),
        "the link 1-2 up and member 3 refused",
    )
    g.serving(1, 2, b"despite member 3")
    assert "the certificate is not signed by this cluster's CA" in g.drops(1)
    assert g.h[3].up == [] and 3 not in g.h[1].up and 3 not in g.h[2].up
    g.until(lambda: 3 in g.h[1].failed and 3 in g.h[2].failed, "member 3 reported failed")


def test_a_certificate_for_another_member_is_refused(tmp_path, group):
    d = _ca(str(tmp_path / "ca"))
    configs = {
        1: _config(_endpoint(d, member_name(1))),
        2: _config(_endpoint(d, member_name(3))),  # member 2 presents member 3's certificate
        3: _config(_endpoint(d, member_name(3))),
    }
    g = group(configs)
    g.until(
        lambda: (
            g.linked(1, 3) and g.t[1].stats["auth_failed"] >= 2 and g.t[3].stats["auth_failed"] >= 1
        ),
        "the link 1-3 up and member 2 refused by both",
    )
    g.serving(1, 3, b"the real member 3")
    assert "claims to be member 2 but its certificate names 'smr-member-3'" in g.drops(1)
    assert 2 not in g.h[1].up and 2 not in g.h[3].up  # TLS passed, the name did not
    assert g.t[1].stats["tls_failed"] == 0


def test_an_expired_certificate_is_refused(tmp_path, group):
    d = _ca(str(tmp_path / "ca"))
    issue(d, member_name(2), days=-1)  # member 2's certificate ended yesterday
    g = group({m: _config(_endpoint(d, member_name(m))) for m in (1, 2, 3)})
    g.until(
        lambda: g.linked(1, 3) and g.t[1].stats["tls_failed"] >= 2,
        "the link 1-3 up and member 2 refused",
    )
    g.serving(1, 3, b"without member 2")
    assert "expired" in g.drops(1)
    assert 2 not in g.h[1].up and 2 not in g.h[3].up and g.h[2].up == []


def test_plaintext_and_tls_members_refuse_each_other_and_both_keep_their_links(tmp_path, group):
    d = _ca(str(tmp_path / "ca"))
    tls_members, plain_members = (1, 3), (2, 4)
    configs = {m: _config(_endpoint(d, member_name(m))) for m in tls_members}
    configs |= {m: _config(None) for m in plain_members}
    g = group(dict(sorted(configs.items())))

    def refused_both_ways() -> bool:
        return (
            # plaintext 2 dialed TLS 3: 3 saw a plaintext hello where a ClientHello belongs
            "a plaintext client on a TLS port" in g.drops(3)
            # TLS 1 dialed plaintext 2: 2 saw a ClientHello where its handshake belongs, and
            # 1 a plaintext hello where TLS belongs
            and "handshake: not an smr peer (bad magic)" in g.drops(2)
            and "the peer does not speak TLS (a plaintext port?)" in g.drops(1)
            and g.t[4].stats["auth_failed"] >= 1  # 1 and 3 dialed 4 too
        )

    g.until(lambda: g.linked(1, 3) and g.linked(2, 4) and refused_both_ways(), "the refusals")
    g.serving(1, 3, b"over tls")
    g.serving(2, 4, b"in plaintext")
    for m in tls_members:
        assert g.t[m].stats["tls_failed"] >= 1
        assert set(g.h[m].up) == {4 - m}
    for m in plain_members:
        assert g.t[m].stats["auth_failed"] >= 1 and g.t[m].stats["tls_handshakes"] == 0
        assert set(g.h[m].up) == {6 - m}


def test_a_stalled_tls_handshake_times_out_while_the_link_serves(tmp_path, group):
    d = _ca(str(tmp_path / "ca"))
    g = group({m: _config(_endpoint(d, member_name(m)), connect_timeout_s=1.0) for m in (1, 2)})
    g.until(lambda: g.linked(1, 2), "the link up")
    hello = _endpoint(d, member_name(2)).session(server=False).take_output()
    stalled = socket.create_connection(("127.0.0.1", g.addresses[1].port), timeout=10)
    try:
        stalled.sendall(hello[:100])  # a ClientHello cut short: TLS waits for the rest
        g.serving(1, 2, b"while one stalls")
        g.until(lambda: g.t[1].stats["handshake_timeouts"] == 1, "the stalled one timing out")
        assert g.t[1].stats["tls_failed"] == 0
        g.serving(1, 2, b"after it")
    finally:
        stalled.close()


# -- faults on a link that is up ----------------------------------------------------------------


def test_a_damaged_record_resets_only_its_link(tmp_path, group, proxies):
    d = _ca(str(tmp_path / "ca"))
    g, proxy = _through_proxy(
        group, proxies, {m: _config(_endpoint(d, member_name(m))) for m in (1, 2)}
    )
    g.until(lambda: g.linked(1, 2), "the link up")
    g.serving(1, 2, b"before")
    proxy.corrupt()
    sent = 0
    # keep sending: the damaged record is refused once whole (nothing after it is delivered)
    while g.t[2].stats["tls_failed"] == 0:
        assert sent < WAIT_S / POLL_S, "the damaged record was never refused"
        g.t[1].send(2, b"%d" % sent)
        sent += 1
        g.poll()
    assert proxy.corrupted == 1
    assert "TLS failed" in g.drops(2)
    g.until(lambda: g.h[1].up.count(2) == 2 and g.h[2].up.count(1) == 2, "the link up again")
    g.serving(1, 2, b"after")


def test_a_full_send_queue_resets_a_tls_link_which_comes_back(tmp_path, group):
    d = _ca(str(tmp_path / "ca"))
    limit_bytes = 1 << 20
    configs = {
        m: _config(
            _endpoint(d, member_name(m)),
            frame_bytes_max=64 << 10,
            send_queue_bytes_max=limit_bytes,
        )
        for m in (1, 2)
    }
    g = group(configs)
    g.until(lambda: g.linked(1, 2), "the link up")
    ups = g.h[1].up.count(2)
    chunk = b"z" * (60 << 10)
    for _ in range(2000):  # member 2 does not poll: the kernel's buffers fill, then the queue
        g.t[1].send(2, chunk)
        g.t[1].poll(0)  # member 1 flushes what the socket takes, through TLS
        if g.t[1].stats["queue_overflows"]:
            break
    assert g.t[1].stats["queue_overflows"] == 1
    g.until(lambda: g.h[1].up.count(2) > ups, "the link up again")
    g.serving(1, 2, b"after the reset")


def test_revoking_a_certificate_closes_its_link_within_seconds(tmp_path, group):
    d = _ca(str(tmp_path / "ca"))
    g = group({m: _config(_endpoint(d, member_name(m))) for m in (1, 2, 3)})
    g.until(lambda: all(g.linked(a, b) for a, b in ((1, 2), (1, 3), (2, 3))), "every link up")
    g.serving(1, 2, b"before")
    ups = {m: g.h[m].up.count(2) for m in (1, 3)}
    revoke(d, member_name(2))
    g.until(
        lambda: g.t[1].stats["revoked"] >= 1 and g.t[3].stats["revoked"] >= 1,
        "member 2's links closed",
        timeout_s=REVOKED_WITHIN_S,
    )
    for m in (1, 3):
        assert "certificate revoked (smr-member-2" in g.drops(m)
    # member 2 keeps dialing (and being dialed): refused at the handshake now, so it is
    # reported failed and never links again
    g.until(
        lambda: (
            2 in g.h[1].failed
            and 2 in g.h[3].failed
            and g.t[1].stats["tls_failed"] >= 1
            and g.t[3].stats["tls_failed"] >= 1
        ),
        "member 2 refused and reported failed",
    )
    assert {m: g.h[m].up.count(2) for m in (1, 3)} == ups
    assert g.t[2].stats["revoked"] == 0  # its peers' certificates stand
    g.serving(1, 3, b"after the revocation")
