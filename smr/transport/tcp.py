"""The tcp provider: the transport contract over one authenticated TCP connection per member pair.

This module owns member-to-member links across hosts: listening, dialing and redialing with
backoff, the handshake (`smr.transport.wire`), per-peer bounded send queues, and failure reports.
One-sided writes become `WRITE` frames applied by the receiving runtime; there is no registered
memory, so `register` only records the epoch.

Frames after the handshake (`wire.HEADER` then the body):

- `WRITE` (kind 1): `<QI` epoch, offset, then the written bytes. Reported as `on_write`.
- `DATA` (kind 2): the payload. Reported as `on_data`.

Both kinds share the connection, so writes and sends to one peer stay in the order made.

Links. The lower id dials the higher at once; the higher dials a lower one only after having had
no link to it for a grace period (the lower may not know its address yet: a joiner). If both
dials complete, both ends keep the connection dialed by the lower id and close the other; an
authenticated connection dialed by the peer replaces an older one dialed by it (the peer
restarted). Every connection that becomes a peer's link is reported with `on_link_up`, after
which the replica pushes its whole row again: anything queued on a replaced or reset connection
may have been lost. A peer with no link for `peer_failed_after_s` is reported once with
`on_peer_failed` (again after each later link loss); at once when, after its link broke, a dial
is refused (its host says nothing listens on its port: the process ended). A dial leaves from
the member's own configured host (port 0) when that is a specific address, so on one host each
member's links come from its own loopback address (127.0.0.2, 127.0.0.3, ...) and can be cut
off by address.

Writes and sends are queued per peer and go out at the next `poll` (the runtime polls right after
doing a `Ready`), or at once when a peer's queue passes `_FLUSH_BYTES`; one `sendmsg` carries
many frames. A queue past `send_queue_bytes_max` resets the link. A connection that fails the
handshake, says nothing for `connect_timeout_s`, or sends a malformed or oversized frame is
closed and counted in `stats`; it never stalls the others, since every socket is non-blocking.

TLS. With `TransportConfig.tls` (a `smr.transport.tls.TlsEndpoint`) every connection runs mutual
TLS first, the dialer as the client, and the handshake and frames above run inside it unchanged:
received bytes go through the connection's `TlsSession` before the handshake or the decoder, and
queued plaintext is encrypted at flush time, up to `_SEAL_BYTES` at once, so the ciphertext held
per connection stays about one batch and a queue's bytes (plaintext not yet encrypted plus
ciphertext not yet taken by the socket) keep to `send_queue_bytes_max`, give or take the record
overhead of one batch. Once the handshake proves the peer's member id, its certificate must name
that member (`check_member`), or the connection is closed (`auth_failed`). A failed TLS handshake
or a damaged record (another CA, an expired or revoked certificate, a plaintext peer) closes that
connection with TLS's reason (`tls_failed`), within `connect_timeout_s` like any handshake. At most
once a second the timers re-read the revocation list (an idle poll with a link up wakes for it),
and when it changed the connections of certificates it now revokes are closed (`revoked`).
Without TLS none of this runs: the plaintext path is the zero-copy one above.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Mapping, Sequence
from itertools import islice

from smr.transport.base import (
    Address,
    Handler,
    Transport,
    TransportConfig,
    TransportError,
    Watched,
)
from smr.transport.tls import CRL_CHECK_INTERVAL_S, TlsError, TlsSession, check_member
from smr.transport.wire import HEADER, FrameDecoder, FrameError, Handshake

KIND_WRITE = 1
KIND_DATA = 2
_WRITE_PREFIX = struct.Struct("<IBQI")  # frame header, then epoch and offset of a WRITE
_WRITE_BODY = struct.Struct("<QI")
_COPY_BYTES_MAX = 2048  # smaller written data is joined to its header (one iovec, not two)
_FLUSH_BYTES = 256 << 10  # a queue this large is flushed by write/send, not left for poll
_IOV_MAX = 512  # pieces per sendmsg (the kernel's IOV_MAX is 1024)
_RECV_BYTES = 256 << 10  # the preallocated receive buffer
_RECV_ROUNDS_MAX = 16  # reads of one socket per poll, so one busy peer cannot starve the rest
_PENDING_MAX = 64  # connections in their handshake at once; more are refused
_LISTEN_BACKLOG = 128
_RECENT_DROPS_MAX = 32
_REFUSED_MAX = 2  # a peer's dials refused in a row before they replace our link anyway
# plaintext encrypted at once with TLS: large enough for full 16 KiB records and few calls, small
# enough that the ciphertext a slow socket has not taken stays a small part of the queue bound
_SEAL_BYTES = 256 << 10

_DIALING, _HANDSHAKE, _UP = "dialing", "handshake", "up"


class _Conn:
    """One TCP connection: its handshake, decoder and send queue (and its TLS session)."""

    __slots__ = (
        "deadline",
        "decoder",
        "dialed_by",
        "events",
        "handshake",
        "out",
        "out_bytes",
        "peer",
        "sock",
        "state",
        "tls",
        "wire",
    )

    def __init__(self, sock: socket.socket, state: str, dialed_by: int | None, deadline: float):
        self.sock = sock
        self.state = state
        self.dialed_by = dialed_by  # who dialed: a member id (None: the peer, not yet known)
        self.deadline = deadline  # the handshake must be done by then
        self.peer: int | None = None
        self.handshake: Handshake | None = None
        self.decoder: FrameDecoder | None = None
        self.out: deque[bytes | memoryview] = deque()  # with TLS: plaintext, not yet encrypted
        self.out_bytes = 0  # bytes in `out` and `wire`
        self.events = 0
        self.tls: TlsSession | None = None  # with TLS, from the start of the connection
        self.wire: deque[bytes | memoryview] = deque()  # with TLS: ciphertext for the socket


class _Peer:
    """What we know of one other member: its address, its link, when to dial, what we reported."""

    __slots__ = (
        "address",
        "backoff_s",
        "conn",
        "dial",
        "dial_at",
        "down_since",
        "failed_reported",
        "id",
        "lost_link",
        "refused",
        "sent_bytes",
    )

    def __init__(self, member: int, address: Address | None, now: float, dial_at: float):
        self.id = member
        self.address = address
        self.conn: _Conn | None = None  # the link, once up
        self.dial: _Conn | None = None  # our outgoing connection while it is being set up
        self.down_since = now
        self.dial_at = dial_at  # when to dial next (if it has an address and is down)
        self.backoff_s = 0.0
        self.failed_reported = False
        self.refused = 0  # the peer's dials refused in a row while our link to it was up
        self.lost_link = False  # a link that was up broke, and none came up since
        self.sent_bytes = 0  # queued to its links since start, headers included


class TcpTransport(Transport):
    """The tcp provider (see the module docstring)."""

    name = "tcp"

    def __init__(
        self,
        me: int,
        addresses: Mapping[int, Address],
        config: TransportConfig,
        *,
        clock=time.monotonic,
    ):
        super().__init__(me, addresses, config)
        self._clock = clock
        self._handler: Handler | None = None
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._peers: dict[int, _Peer] = {}
        self._pending: set[_Conn] = set()  # connections not yet a peer's link
        self._dirty: set[_Conn] = set()  # links with queued bytes not yet tried
        self._recv_buf = bytearray(_RECV_BYTES)
        self._recv_view = memoryview(self._recv_buf)
        self._closed = False
        # the address our dials leave from: our own configured host's (set by start)
        self._source: tuple[int, tuple] | None = None
        self.epochs: dict[int, tuple[tuple[int, ...], int]] = {}
        # why the latest connections were closed, one line each, for a status page or a log
        self.recent_drops: deque[str] = deque(maxlen=_RECENT_DROPS_MAX)
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "accepted",
                "dialed",
                "dials_failed",
                "links_up",
                "links_lost",
                "replaced",
                "auth_failed",
                "bad_frames",
                "handshake_timeouts",
                "refused_busy",
                "queue_overflows",
                "dropped_down",
                "peer_failed",
                "tls_handshakes",
                "tls_failed",
                "revoked",
            ),
            0,
        )

    def __repr__(self) -> str:
        return f"TcpTransport(me={self.me}, peers={sorted(self._peers)}, {self.config!r})"

    # -- set-up ----------------------------------------------------------------------------

    def start(self, handler: Handler) -> None:
        if self._handler is not None or self._closed:
            raise TransportError("tcp transport: start() called twice or after close()")
        self._handler = handler
        addr = self.addresses[self.me]
        try:
            family, _, _, _, sockaddr = _resolve(addr.host, addr.port)
        except OSError as e:
            raise TransportError(
                f"tcp transport: member {self.me}'s host {addr.host!r} does not resolve: {e}"
            ) from None
        lst = socket.socket(family, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            lst.bind(sockaddr)
        except OSError as e:
            lst.close()
            raise TransportError(
                f"tcp transport: member {self.me} cannot listen on {addr.host}:{addr.port}: "
                f"{e.strerror or e}"
            ) from None
        lst.listen(_LISTEN_BACKLOG)
        lst.setblocking(False)
        self._listener = lst
        self._source = _source_address(family, sockaddr)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(lst, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        now = self._clock()
        for member, address in self.addresses.items():
            if member != self.me:
                self._peers[member] = self._new_peer(member, address, now)
        self._timers(now)

    def _new_peer(self, member: int, address: Address | None, now: float) -> _Peer:
        return _Peer(member, address, now, now + self._grace_s(member))

    def _grace_s(self, member: int) -> float:
        """How long a link to `member` stays down before we dial: the lower id dials at once,
        the higher waits for it (it only dials a lower one that does not know its address)."""
        if self.me < member:
            return 0.0
        cfg = self.config
        return min(cfg.peer_failed_after_s / 2, 4 * cfg.reconnect_backoff_s)

    def add_member(self, member: int, address: Address) -> None:
        super().add_member(member, address)
        if self._handler is None or member == self.me:
            return
        peer = self._peers.get(member)
        if peer is None:
            self._peers[member] = self._new_peer(member, address, self._clock())
        else:
            peer.address = address

    def register(self, epoch: int, members: Sequence[int], row_bytes: int) -> None:
        assert row_bytes > 0 and self.me in members, "register: I am not in this epoch's table"
        self.epochs[epoch] = (tuple(members), row_bytes)
        for old in [e for e in self.epochs if e < epoch - 1]:
            del self.epochs[old]

    # -- the hot path ----------------------------------------------------------------------

    def write(self, targets: Sequence[int], epoch: int, offset: int, data: bytes) -> None:
        size = len(data)
        if size > self.config.frame_bytes_max - _WRITE_BODY.size:
            raise TransportError(
                f"tcp transport: a write of {size} bytes exceeds frame_bytes_max "
                f"({self.config.frame_bytes_max})"
            )
        prefix = _WRITE_PREFIX.pack(_WRITE_BODY.size + size, KIND_WRITE, epoch, offset)
        if size <= _COPY_BYTES_MAX:
            self._enqueue(targets, (prefix + data,), len(prefix) + size)
        else:
            self._enqueue(targets, (prefix, data), len(prefix) + size)

    def send(self, target: int, payload: bytes) -> None:
        size = len(payload)
        if size > self.config.frame_bytes_max:
            raise TransportError(
                f"tcp transport: a message of {size} bytes exceeds frame_bytes_max "
                f"({self.config.frame_bytes_max})"
            )
        header = HEADER.pack(size, KIND_DATA)
        if size <= _COPY_BYTES_MAX:
            self._enqueue((target,), (header + payload,), len(header) + size)
        else:
            self._enqueue((target,), (header, payload), len(header) + size)

    def _enqueue(self, targets: Sequence[int], pieces: tuple[bytes, ...], size: int) -> None:
        if self._handler is None or self._closed:
            raise TransportError("tcp transport: write or send before start() or after close()")
        peers = self._peers
        limit = self.config.send_queue_bytes_max
        for t in targets:
            peer = peers.get(t)
            conn = peer.conn if peer is not None else None
            if conn is None:
                self.stats["dropped_down"] += 1  # on_link_up makes the replica resend
                continue
            if conn.out_bytes + size > limit:
                self.stats["queue_overflows"] += 1
                self._drop(conn, "send queue full")
                continue
            conn.out.extend(pieces)
            conn.out_bytes += size
            peer.sent_bytes += size
            if conn.out_bytes >= _FLUSH_BYTES:
                self._flush(conn)
            else:
                self._dirty.add(conn)

    def counters(self) -> Mapping[str, int]:
        return self.stats

    def sent_bytes(self) -> Mapping[int, int]:
        return {m: p.sent_bytes for m, p in self._peers.items()}

    def poll(self, timeout_s: float | None) -> None:
        if self._closed:
            return
        sel = self._sel
        if sel is None:
            raise TransportError("tcp transport: poll() before start()")
        self._flush_dirty()
        now = self._clock()
        next_timer = self._timers(now)
        if self._closed:
            return  # a handler closed the transport
        wait = timeout_s
        if next_timer is not None:
            until = max(0.0, next_timer - now)
            wait = until if wait is None else min(wait, until)
        events = sel.select(wait)
        for key, mask in events:
            if self._closed:
                return  # a handler closed the transport
            conn = key.data
            if isinstance(conn, Watched):
                conn.callback(mask)
                continue
            if conn is None:
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._drain_wake()
                continue
            if conn.sock.fileno() < 0:
                continue  # closed by an earlier event of this round
            if mask & selectors.EVENT_WRITE:
                if conn.state == _DIALING:
                    self._connected(conn)
                else:
                    self._flush(conn)
            if mask & selectors.EVENT_READ and conn.sock.fileno() >= 0:
                self._readable(conn)
        if self._closed:
            return  # a handler closed the transport
        self._flush_dirty()
        self._timers(self._clock())

    def wake(self) -> None:
        w = self._wake_w
        if w is None:
            return
        # a full pipe means a wake-up is already pending; an error, that close() ran meanwhile
        with contextlib.suppress(OSError):
            w.send(b"\0")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conns = set(self._pending)
        for peer in self._peers.values():
            for c in (peer.conn, peer.dial):
                if c is not None:
                    conns.add(c)
            peer.conn = peer.dial = None
        for c in conns:
            c.sock.close()
        self._pending.clear()
        self._dirty.clear()
        for s in (self._listener, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_w = None
        if self._sel is not None:
            self._sel.close()

    # -- sending ---------------------------------------------------------------------------

    def _flush_dirty(self) -> None:
        dirty = self._dirty
        while dirty:
            self._flush(dirty.pop())

    def _flush(self, conn: _Conn) -> None:
        if conn.tls is not None:
            self._flush_tls(conn, conn.tls)
            return
        self._dirty.discard(conn)
        out = conn.out
        while out:
            sent = self._send_some(conn, out)
            if sent < 0:
                return
            if sent == 0:
                break
        self._want_write(conn, bool(out))

    def _send_some(self, conn: _Conn, pieces: deque) -> int:
        """One `sendmsg` of the queue's first pieces, taking off what the socket took: the bytes
        sent, 0 when the socket is full, -1 when the connection failed (it is dropped)."""
        batch = [pieces[0]] if len(pieces) == 1 else list(islice(pieces, _IOV_MAX))
        try:
            sent = conn.sock.sendmsg(batch)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            self._drop(conn, f"send failed: {e.strerror or e}")
            return -1
        conn.out_bytes -= sent
        left = sent
        while left:
            head = pieces[0]
            if left >= len(head):
                left -= len(head)
                pieces.popleft()
            else:
                pieces[0] = memoryview(head)[left:]
                left = 0
        return sent

    def _flush_tls(self, conn: _Conn, session: TlsSession) -> None:
        """`_flush` through TLS: ciphertext already made goes first; then the queued plaintext
        is encrypted a batch at a time, each batch only once the socket took the one before."""
        self._dirty.discard(conn)
        out, wire = conn.out, conn.wire
        while wire or out:
            if not wire:
                try:
                    self._seal(conn, session)
                except TlsError as e:
                    self._tls_failed(conn, e)
                    return
            sent = self._send_some(conn, wire)
            if sent < 0:
                return
            if sent == 0:
                break
        self._want_write(conn, bool(wire or out))

    def _seal(self, conn: _Conn, session: TlsSession) -> None:
        """Encrypt up to `_SEAL_BYTES` of `conn.out` into `conn.wire`. Small pieces are joined
        first (one record for many frames, not one each); large ones go in as they are."""
        out = conn.out
        small: list[bytes | memoryview] = []
        taken = 0
        while out and taken < _SEAL_BYTES:
            piece = out[0]
            room = _SEAL_BYTES - taken
            if len(piece) > room:
                view = memoryview(piece)
                piece, out[0] = view[:room], view[room:]
            else:
                out.popleft()
            taken += len(piece)
            if len(piece) <= _COPY_BYTES_MAX:
                small.append(piece)
                continue
            if small:
                session.send(small[0] if len(small) == 1 else b"".join(small))
                small = []
            session.send(piece)
        if small:
            session.send(small[0] if len(small) == 1 else b"".join(small))
        sealed = session.take_output()
        conn.out_bytes += len(sealed) - taken
        if sealed:
            conn.wire.append(sealed)

    def _want_write(self, conn: _Conn, on: bool) -> None:
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        if conn.events != want:
            assert self._sel is not None
            self._sel.modify(conn.sock, want, conn)
            conn.events = want

    def _queue_raw(self, conn: _Conn, data: bytes) -> None:
        """Send handshake bytes (encrypted first with TLS: the handshake runs inside it)."""
        session = conn.tls
        if session is None:
            conn.out.append(data)
            conn.out_bytes += len(data)
        else:
            # nothing else is queued during the handshake, so this keeps the stream's order
            assert not conn.out, "handshake bytes behind queued frames"
            try:
                session.send(data)
            except TlsError as e:
                self._tls_failed(conn, e)
                return
            self._queue_wire(conn, session.take_output())
            return
        self._flush(conn)

    def _queue_wire(self, conn: _Conn, sealed: bytes) -> None:
        """Queue ciphertext (TLS's own records, or sealed handshake bytes) and send it."""
        if sealed:
            conn.wire.append(sealed)
            conn.out_bytes += len(sealed)
        self._flush(conn)

    def _tls_failed(self, conn: _Conn, error: TlsError) -> None:
        """Close a connection whose TLS failed, with TLS's reason; TLS's alert, if it has one,
        is sent first (best effort) so the peer can tell why too."""
        self.stats["tls_failed"] += 1
        session = conn.tls
        alert = session.take_output() if session is not None else b""
        if alert and not conn.wire and conn.sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                conn.sock.send(alert)
        self._drop(conn, str(error))

    # -- receiving -------------------------------------------------------------------------

    def _readable(self, conn: _Conn) -> None:
        if conn.tls is not None:
            self._readable_tls(conn, conn.tls)
            return
        sock = conn.sock
        view = self._recv_view
        for _ in range(_RECV_ROUNDS_MAX):
            decoder = conn.decoder
            window = decoder.body_window() if decoder is not None else None
            try:
                # the rest of a large frame goes straight into its own buffer
                n = sock.recv_into(self._recv_buf if window is None else window)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop(conn, f"receive failed: {e.strerror or e}")
                return
            if n == 0:
                self._drop(conn, "closed by the peer")
                return
            if window is not None:
                assert decoder is not None
                if not self._dispatch(conn, decoder.body_received(n)):
                    return
                continue
            data = view[:n]
            try:
                if conn.state == _HANDSHAKE:
                    if not self._handshake_bytes(conn, data):
                        return
                    continue
                assert conn.decoder is not None
                frames = conn.decoder.feed(data)
            except FrameError as e:
                self.stats["auth_failed" if conn.state == _HANDSHAKE else "bad_frames"] += 1
                self._drop(conn, str(e))
                return
            if not self._dispatch(conn, frames):
                return
            if n < len(self._recv_buf):
                return  # the socket is drained; skip the read that would say so

    def _readable_tls(self, conn: _Conn, session: TlsSession) -> None:
        """`_readable` through TLS: what arrives is decrypted, then handled as plaintext is
        (the handshake's bytes, then frames). No zero-copy body reads: TLS copies anyway."""
        sock = conn.sock
        buf = self._recv_buf
        view = self._recv_view
        for _ in range(_RECV_ROUNDS_MAX):
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop(conn, f"receive failed: {e.strerror or e}")
                return
            if n == 0:
                self._drop(conn, "closed by the peer")
                return
            was_done = session.done
            try:
                data = session.feed(view[:n])
            except TlsError as e:
                self._tls_failed(conn, e)
                return
            sealed = session.take_output()  # TLS's own answer: its handshake, a key update
            if sealed:
                self._queue_wire(conn, sealed)
                if conn.sock.fileno() < 0:
                    return
            if session.done and not was_done:
                self.stats["tls_handshakes"] += 1
                assert conn.handshake is not None, "the handshake waits for TLS"
                self._queue_raw(conn, conn.handshake.initial())
                if conn.sock.fileno() < 0:
                    return
            if data and not self._plaintext(conn, data):
                return
            if session.closed:
                self._drop(conn, "closed by the peer (TLS close_notify)")
                return
            if n < len(buf):
                return  # the socket is drained; skip the read that would say so

    def _plaintext(self, conn: _Conn, data: bytes) -> bool:
        """Handle decrypted bytes; True while the connection is still open."""
        try:
            if conn.state == _HANDSHAKE:
                return self._handshake_bytes(conn, data)
            assert conn.decoder is not None
            frames = conn.decoder.feed(data)
        except FrameError as e:
            self.stats["auth_failed" if conn.state == _HANDSHAKE else "bad_frames"] += 1
            self._drop(conn, str(e))
            return False
        return self._dispatch(conn, frames)

    def _dispatch(self, conn: _Conn, frames: list[tuple[int, bytes]]) -> bool:
        """Report frames to the handler; False when the connection was closed for a bad one."""
        handler = self._handler
        assert handler is not None and conn.peer is not None
        src = conn.peer
        body_min = _WRITE_BODY.size
        unpack = _WRITE_BODY.unpack_from
        for i, (kind, body) in enumerate(frames):
            try:
                if kind == KIND_WRITE and len(body) >= body_min:
                    epoch, offset = unpack(body)
                    handler.on_write(src, epoch, offset, body[body_min:])
                elif kind == KIND_DATA:
                    handler.on_data(src, body)
                else:
                    self.stats["bad_frames"] += 1
                    self._drop(conn, f"a malformed frame (kind {kind}, {len(body)} bytes)")
                    return False
            except BaseException as e:
                # The frames after this one were read but will not be reported: keeping the link
                # would silently skip them, so it is reset (the peer resends its row on link-up).
                if i + 1 < len(frames):
                    self._drop(conn, f"the handler raised {type(e).__name__}")
                raise
            if conn.sock.fileno() < 0:
                return False  # the handler's writes overflowed and reset this link
        return True

    def _handshake_bytes(self, conn: _Conn, data: bytes | memoryview) -> bool:
        """Feed the handshake; True when the connection is still open (and now up if done)."""
        hs = conn.handshake
        assert hs is not None
        reply = hs.feed(data)
        if reply:
            self._queue_raw(conn, reply)
            if conn.sock.fileno() < 0:
                return False
        if not hs.done:
            return True
        peer_id = hs.peer_id
        assert peer_id is not None
        if hs.peer_role != "member" or peer_id == self.me:
            self.stats["auth_failed"] += 1
            self._drop(conn, f"handshake from {hs.peer_role} {peer_id}, not another member")
            return False
        if conn.dialed_by == self.me and conn.peer != peer_id:
            self.stats["auth_failed"] += 1
            self._drop(conn, f"dialed member {conn.peer} but {peer_id} answered")
            return False
        session = conn.tls
        if session is not None:
            # the secret proves a member, the certificate which one: they must agree, or a
            # member's certificate (or key) would let its holder pose as any other member
            try:
                check_member(session.peer_name, peer_id)
            except TlsError as e:
                self.stats["auth_failed"] += 1
                self._drop(conn, str(e))
                return False
            tls = self.config.tls
            if session.peer_serial in tls.revoked:
                # revoked after this handshake's context was made (a list read meanwhile)
                self.stats["revoked"] += 1
                self._drop(conn, _revoked_reason(session))
                return False
        if conn.dialed_by is None:
            conn.dialed_by = peer_id
        conn.peer = peer_id
        return self._link_up(conn, hs.leftover)

    def _link_up(self, conn: _Conn, leftover: bytes) -> bool:
        peer_id = conn.peer
        assert peer_id is not None and conn.dialed_by is not None
        peer = self._peers.get(peer_id)
        if peer is None:  # a member not in our addresses (a joiner): accepted, never redialed
            peer = self._peers[peer_id] = self._new_peer(peer_id, None, self._clock())
        self._pending.discard(conn)
        if peer.dial is conn:
            peer.dial = None
        old = peer.conn
        if old is not None:
            # Keep the connection dialed by the lower id (both ends decide alike); between two
            # dialed by the peer, the newer wins (the peer restarted or lost the old one). The
            # higher id dials only when it has had no link for a while, so its dials refused
            # `_REFUSED_MAX` times in a row mean our link is a dead one it cannot see (its host
            # rebooted without closing it): then the new one wins too.
            keep_new = conn.dialed_by in (old.dialed_by, min(self.me, peer_id))
            if not keep_new and peer.refused < _REFUSED_MAX:
                peer.refused += 1
                self.stats["replaced"] += 1
                self._close_conn(conn)
                return False
            self.stats["replaced"] += 1
            peer.conn = None
            self._close_conn(old)
        conn.state = _UP
        conn.handshake = None
        conn.decoder = FrameDecoder(self.config.frame_bytes_max)
        peer.conn = conn
        peer.backoff_s = 0.0
        peer.failed_reported = False
        peer.lost_link = False
        peer.refused = 0
        if peer.dial is not None and conn.dialed_by == min(self.me, peer_id):
            # our own dial would lose to this link (kept by the same rule at both ends)
            self._pending.discard(peer.dial)
            self._close_conn(peer.dial)
            peer.dial = None
        self.stats["links_up"] += 1
        assert self._handler is not None
        self._handler.on_link_up(peer_id)
        if conn.sock.fileno() < 0:
            return False
        if leftover:
            try:
                frames = conn.decoder.feed(leftover)
            except FrameError as e:
                self.stats["bad_frames"] += 1
                self._drop(conn, str(e))
                return False
            return self._dispatch(conn, frames)
        return True

    def linked(self, peer: int) -> bool:
        p = self._peers.get(peer)
        return p is not None and p.conn is not None and p.conn.state == _UP

    # -- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(_LISTEN_BACKLOG):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of descriptors: the connection stays in the backlog
            if len(self._pending) >= _PENDING_MAX:
                self.stats["refused_busy"] += 1
                sock.close()
                continue
            self.stats["accepted"] += 1
            conn = self._new_conn(sock, _HANDSHAKE, None)
            hs = Handshake(self.config.secret, server=True, my_id=self.me, role="member")
            conn.handshake = hs
            tls = self.config.tls
            if tls is None:
                self._queue_raw(conn, conn.handshake.initial())
            else:
                # the dialer speaks first (its ClientHello); our hello goes inside TLS, later
                conn.tls = tls.session(server=True)

    def _new_conn(self, sock: socket.socket, state: str, dialed_by: int | None) -> _Conn:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _keepalive(sock, self.config.peer_failed_after_s)
        conn = _Conn(sock, state, dialed_by, self._clock() + self.config.connect_timeout_s)
        conn.events = selectors.EVENT_READ | selectors.EVENT_WRITE
        assert self._sel is not None
        self._sel.register(sock, conn.events, conn)
        self._pending.add(conn)
        return conn

    def _dial(self, peer: _Peer) -> None:
        assert peer.address is not None and peer.dial is None
        addr = peer.address
        self.stats["dialed"] += 1
        try:
            # an IP literal resolves at once; a host name is looked up here, blocking (name
            # lookups are expected to be local: /etc/hosts or a cache)
            family, _, _, _, sockaddr = _resolve(addr.host, addr.port)
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            self.stats["dials_failed"] += 1
            self.recent_drops.append(f"member {peer.id}: cannot dial {addr.host}: {e}")
            self._dial_failed(peer)
            return
        self._bind_source(sock, family, sockaddr, peer)
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            sock.close()
            self.stats["dials_failed"] += 1
            self._dial_failed(peer, err)
            return
        conn = self._new_conn(sock, _DIALING, self.me)
        conn.peer = peer.id
        peer.dial = conn

    def _bind_source(self, sock: socket.socket, family: int, sockaddr: tuple, peer: _Peer) -> None:
        """Dial from our own configured address, not whichever the kernel picks (127.0.0.1 for
        every member of one host): a peer then sees each member's traffic coming from its
        `host`, so one member can be cut off by address (a firewall rule, a test's partition).
        Only when our host is a specific address (the listener is bound to it, so it is local)
        of the peer's family and loopback-ness (a loopback source cannot reach another host)."""
        source = self._source
        if source is None or source[0] != family:
            return
        if ipaddress.ip_address(source[1][0]).is_loopback != _is_loopback(sockaddr[0]):
            return
        option = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", None)
        try:
            if option is not None:  # Linux: the port is chosen at connect, per destination,
                sock.setsockopt(socket.IPPROTO_IP, option, 1)  # so dials do not run out of ports
            sock.bind(source[1])
        except OSError as e:
            # the address went away (the listener still holds it, so unlikely): dial from
            # wherever the kernel picks rather than not at all
            self.recent_drops.append(
                f"member {peer.id}: cannot dial from {source[1][0]}: {e}; dialing unbound"
            )

    def _connected(self, conn: _Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            peer = self._peers.get(conn.peer) if conn.peer is not None else None
            if peer is not None and err == errno.ECONNREFUSED:
                self._refused_after_loss(peer)
            self._drop(conn, f"connect failed: {errno.errorcode.get(err, err)}")
            return
        conn.state = _HANDSHAKE
        conn.handshake = Handshake(self.config.secret, server=False, my_id=self.me, role="member")
        tls = self.config.tls
        if tls is None:
            self._queue_raw(conn, conn.handshake.initial())
            return
        try:
            conn.tls = tls.session(server=False)
        except TlsError as e:
            self._tls_failed(conn, e)
            return
        self._queue_wire(conn, conn.tls.take_output())  # the ClientHello

    def _refused_after_loss(self, peer: _Peer) -> None:
        """The peer's host answered that nothing listens on its port, after a link to it broke:
        its process ended (a host that is down or cut off does not answer at all). Report it at
        the next timers instead of after peer_failed_after_s, so the group suspects it now."""
        if peer.lost_link and not peer.failed_reported:
            peer.down_since = min(peer.down_since, self._clock() - self.config.peer_failed_after_s)

    def _dial_failed(self, peer: _Peer, err: int = 0) -> None:
        if err == errno.ECONNREFUSED:
            self._refused_after_loss(peer)
        base = self.config.reconnect_backoff_s
        peer.backoff_s = min(self.config.peer_failed_after_s, max(base, peer.backoff_s * 2))
        peer.dial_at = self._clock() + peer.backoff_s

    def _drop(self, conn: _Conn, why: str) -> None:
        """Close a connection; if it was a peer's link or our dial, the peer is down from now."""
        self.recent_drops.append(f"member {conn.peer if conn.peer is not None else '?'}: {why}")
        self._pending.discard(conn)
        self._dirty.discard(conn)
        peer = self._peers.get(conn.peer) if conn.peer is not None else None
        self._close_conn(conn)
        if peer is None:
            return
        if peer.conn is conn:
            peer.conn = None
            now = self._clock()
            peer.down_since = now
            peer.lost_link = True
            peer.refused = 0
            self.stats["links_lost"] += 1
            peer.backoff_s = self.config.reconnect_backoff_s
            peer.dial_at = now + max(self._grace_s(peer.id), peer.backoff_s)
        elif peer.dial is conn:
            peer.dial = None
            self.stats["dials_failed"] += 1
            self._dial_failed(peer)

    def _close_conn(self, conn: _Conn) -> None:
        self._pending.discard(conn)
        self._dirty.discard(conn)
        if conn.sock.fileno() >= 0:
            if self._sel is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(conn.sock)
            conn.sock.close()
        conn.out.clear()
        conn.wire.clear()
        conn.out_bytes = 0

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # -- timers ----------------------------------------------------------------------------

    def _timers(self, now: float) -> float | None:
        """Close revoked links, expire handshakes, report failed peers, dial; returns when the
        next timer is due."""
        cfg = self.config
        next_at: float | None = None
        tls = cfg.tls
        if tls is not None and tls.refresh():
            # first, so the peers whose links this closes get their timers below
            self._close_revoked(tls.revoked)
        for conn in [c for c in self._pending if c.deadline <= now]:
            self.stats["handshake_timeouts"] += 1
            self._drop(conn, "no handshake in time")
        for c in self._pending:
            next_at = c.deadline if next_at is None else min(next_at, c.deadline)
        assert self._handler is not None
        linked = False
        for peer in list(self._peers.values()):
            if peer.conn is not None:
                linked = True
                continue
            fail_at = peer.down_since + cfg.peer_failed_after_s
            if not peer.failed_reported:
                if now >= fail_at:
                    peer.failed_reported = True
                    self.stats["peer_failed"] += 1
                    self._handler.on_peer_failed(peer.id)
                    if self._closed:
                        return None  # the handler closed the transport
                else:
                    next_at = fail_at if next_at is None else min(next_at, fail_at)
            if peer.address is None or peer.dial is not None:
                continue
            if now >= peer.dial_at:
                self._dial(peer)
                if peer.dial is not None:
                    continue  # its handshake deadline is a pending connection's timer
            next_at = peer.dial_at if next_at is None else min(next_at, peer.dial_at)
        if linked and tls is not None and tls.crl is not None:
            # an idle link must still end soon after its certificate is revoked
            check_at = now + CRL_CHECK_INTERVAL_S
            next_at = check_at if next_at is None else min(next_at, check_at)
        return next_at

    def _close_revoked(self, revoked: frozenset[int]) -> None:
        """The revocation list changed: new handshakes already refuse what it revokes; the
        connections made before with such a certificate are closed now."""
        conns = list(self._pending)
        conns += [p.conn for p in self._peers.values() if p.conn is not None]
        for conn in conns:
            session = conn.tls
            if session is None or not session.done or conn.sock.fileno() < 0:
                continue
            if session.peer_serial in revoked:
                self.stats["revoked"] += 1
                self._drop(conn, _revoked_reason(session))


def _revoked_reason(session: TlsSession) -> str:
    serial = session.peer_serial
    return f"certificate revoked ({session.peer_name}, serial {serial or 0:x})"


def _keepalive(sock: socket.socket, idle_s: float) -> None:
    """Probe an idle link so one whose peer vanished without closing it (a host powered off)
    ends in seconds rather than hours; the replica's heartbeats notice first in the common case,
    but only the transport can close the link and redial."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, round(idle_s))
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3)):
        option = getattr(socket, name, None)
        if option is not None:  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _source_address(family: int, sockaddr: tuple) -> tuple[int, tuple] | None:
    """The address our dials bind to (port 0): the listener's, unless it is a wildcard
    (0.0.0.0 or ::, which names no one address) or not IP."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        ip = ipaddress.ip_address(sockaddr[0])
    except ValueError:
        return None
    if ip.is_unspecified:
        return None
    return family, (sockaddr[0], 0, *sockaddr[2:])


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(host: str, port: int) -> tuple:
    """The first stream address of `host:port` (family, type, proto, canonname, sockaddr)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no address for {host}")
    return infos[0]
