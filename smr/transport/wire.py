"""The wire format of every TCP connection in the toolkit: frames and the authenticated handshake.

This module owns the bytes on a TCP stream, for member-to-member links (`smr.transport.tcp`) and
for the client protocol alike. It is sans-I/O except `connect`, a blocking helper for clients, and
`open_connection`, the same steps over asyncio streams (for `smr.aio`).

**TLS.** With a `[tls]` section the clients dial TLS first (`dial_settings` gives the context,
`smr.transport.tls` owns what it checks), check that the member's certificate names the member
dialed, and run the handshake below inside TLS, keyed with the public `CLIENT_PORT_SECRET`: the
certificates authenticate both ends. A blocking TLS connection is a `TlsSocket`, safe for one
reading and one writing thread at once. A failure is a `TlsError` that says which end refused
what (a member without TLS, a certificate refused as unknown, expired or revoked).

**Frames.** A header `<IB` (body length in bytes, kind byte) then the body. `FrameDecoder` turns
any split of the stream back into `(kind, body)` pairs and refuses a length above its
`frame_bytes_max` as soon as the header is read, before buffering any of the body. The kinds are
the protocol's (tcp defines `WRITE` and `DATA`; the client protocol its own).

**Handshake.** Before any frame, both ends send a hello at once, then a proof:

    hello = magic "SMRH" | version u8 | role u8 | id u64 | nonce (32 random bytes)   46 bytes
    proof = HMAC-SHA256(secret, label | dialer's hello | acceptor's hello)            32 bytes

where `label` is `b"smr-auth dialer"` or `b"smr-auth acceptor"` after the side that computes the
proof. Both nonces are fresh, so a recorded proof is useless on another connection (no replay);
the labels differ, so a proof an acceptor sends cannot be reflected back to it as a dialer's
(no reflection); the hellos carry each side's role and id, so neither can be altered in flight.
Each side sends its proof as soon as it has the other's hello and is `done` once the other's
proof checks out (`hmac.compare_digest`), so the exchange costs one round trip. A handshake is
exactly 78 bytes from each side: anything after them is `leftover` (the first frames), so a
handshake never buffers more than that. The secret appears in no message, repr or log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import socket
import ssl
import struct
import threading
from typing import TYPE_CHECKING

from smr.transport.tls import (
    CLIENT_PORT_SECRET,
    TlsConfig,
    TlsError,
    TlsSession,
    member_name,
)
from smr.transport.tls import describe as tls_words  # an ssl error in words

if TYPE_CHECKING:
    import asyncio

HEADER = struct.Struct("<IB")  # body length in bytes, kind

MAGIC = b"SMRH"
VERSION = 1
ROLES = ("member", "client")
_HELLO = struct.Struct("<4sBBQ32s")  # magic, version, role, id, nonce
HELLO_BYTES = _HELLO.size
PROOF_BYTES = hashlib.sha256().digest_size
HANDSHAKE_BYTES = HELLO_BYTES + PROOF_BYTES  # what each side sends and receives, exactly
_LABEL_DIALER = b"smr-auth dialer"
_LABEL_ACCEPTOR = b"smr-auth acceptor"
_ID_MAX = (1 << 64) - 1


class FrameError(Exception):
    """A peer sent bytes that are not a valid frame (or handshake); the connection must close."""


class AuthError(FrameError):
    """The peer failed the handshake: a bad magic or version, a wrong proof (a different cluster
    secret), or garbage."""


def encode_frame(kind: int, body: bytes) -> bytes:
    """One frame: the header, then `body`."""
    assert 0 <= kind <= 0xFF, f"frame kind {kind} is not a byte"
    return HEADER.pack(len(body), kind) + body


class FrameDecoder:
    """Incremental frame decoder: `feed` any piece of the stream, get the frames it completes.

    A frame whose body is at least `direct_bytes_min` and not yet complete gets a buffer of its
    final size at once, filled in place (by `feed`, or by the caller's `recv_into` on
    `body_window()` followed by `body_received(n)`), rather than a buffer grown piece by piece.
    """

    __slots__ = ("_body", "_buf", "_filled", "_kind", "direct_bytes_min", "frame_bytes_max")

    def __init__(self, frame_bytes_max: int, *, direct_bytes_min: int = 64 << 10):
        assert frame_bytes_max > 0 and direct_bytes_min > 0
        self.frame_bytes_max = frame_bytes_max
        self.direct_bytes_min = direct_bytes_min
        self._buf = bytearray()  # an incomplete header or small frame
        self._body: bytearray | None = None  # the body of an incomplete large frame
        self._filled = 0  # bytes of `_body` received
        self._kind = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an incomplete frame held (at most a header plus `frame_bytes_max`)."""
        return len(self._buf) + self._filled

    def body_window(self) -> memoryview | None:
        """Where the rest of an incomplete large frame's body goes (for `recv_into`), or None."""
        body = self._body
        return None if body is None else memoryview(body)[self._filled :]

    def body_received(self, n: int) -> list[tuple[int, bytes]]:
        """`n` bytes were written into `body_window()`: the frame, if that completed it."""
        body = self._body
        assert body is not None and 0 < n <= len(body) - self._filled
        self._filled += n
        if self._filled < len(body):
            return []
        self._body = None
        self._filled = 0
        return [(self._kind, bytes(body))]

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """The frames completed by `data`, in stream order. Raises `FrameError` for a length
        above `frame_bytes_max`; the decoder must not be fed again after that."""
        frames: list[tuple[int, bytes]] = []
        body = self._body
        if body is not None:
            take = min(len(body) - self._filled, len(data))
            body[self._filled : self._filled + take] = data[:take]
            frames = self.body_received(take) if take else []
            if self._body is not None or take == len(data):
                return frames
            data = memoryview(data)[take:]
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray | memoryview = buf
        else:
            src = data  # the common case: parse straight from the caller's bytes, copy the tail
        pos = 0
        end = len(src)
        hdr = HEADER.size
        unpack = HEADER.unpack_from
        limit = self.frame_bytes_max
        while end - pos >= hdr:
            length, kind = unpack(src, pos)
            if length > limit:
                raise FrameError(f"a frame of {length} bytes exceeds the {limit}-byte limit")
            stop = pos + hdr + length
            if stop > end:
                if length >= self.direct_bytes_min:
                    # a large frame: its own buffer, filled in place from here on
                    body = bytearray(length)
                    have = end - pos - hdr
                    body[:have] = src[pos + hdr : end]
                    self._body, self._filled, self._kind = body, have, kind
                    pos = end
                break
            frames.append((kind, bytes(src[pos + hdr : stop])))
            pos = stop
        if src is buf:
            del buf[:pos]
        elif pos < end:
            buf += src[pos:]
        return frames


class Handshake:
    """One end of the mutual HMAC-SHA256 handshake, sans-I/O.

    Send `initial()` first, pass everything received to `feed` and send what it returns, until
    `done`; then `peer_id` and `peer_role` say who the peer proved to be and `leftover` holds
    the bytes received after the handshake (the start of the frame stream). `server` is the
    accepting side of the connection. Before `done`, `peer_id` is only what the peer claims.
    """

    __slots__ = (
        "_dialer_hello",
        "_hello",
        "_inbox",
        "_peer_hello",
        "_secret",
        "done",
        "leftover",
        "my_id",
        "peer_id",
        "peer_role",
        "role",
        "server",
    )

    def __init__(self, secret: bytes, *, server: bool, my_id: int, role: str):
        if role not in ROLES:
            raise ValueError(f"handshake role {role!r}: expected one of {', '.join(ROLES)}")
        if not 0 <= my_id <= _ID_MAX:
            raise ValueError(f"handshake id {my_id} is not an unsigned 64-bit integer")
        assert len(secret) >= 16, "the cluster secret must be at least 16 bytes"
        self._secret = bytes(secret)
        self.server = server
        self.my_id = my_id
        self.role = role
        self._hello = _HELLO.pack(MAGIC, VERSION, ROLES.index(role), my_id, secrets.token_bytes(32))
        self._inbox = bytearray()
        self._peer_hello: bytes | None = None
        self.done = False
        self.peer_id: int | None = None
        self.peer_role: str | None = None
        self.leftover = b""

    def __repr__(self) -> str:
        side = "acceptor" if self.server else "dialer"
        state = f"peer={self.peer_role}:{self.peer_id}" if self.done else "pending"
        return f"Handshake({side}, {self.role}:{self.my_id}, {state})"

    @property
    def bytes_needed(self) -> int:
        """How many more bytes the handshake consumes (a blocking reader reads exactly these,
        so nothing after the handshake is read by it)."""
        return 0 if self.done else HANDSHAKE_BYTES - len(self._inbox)

    def initial(self) -> bytes:
        """The hello, to send as soon as the connection is up (both sides send one)."""
        return self._hello

    def _proof(self, label: bytes) -> bytes:
        assert self._peer_hello is not None
        if self.server:
            dialer, acceptor = self._peer_hello, self._hello
        else:
            dialer, acceptor = self._hello, self._peer_hello
        return hmac.new(self._secret, label + dialer + acceptor, hashlib.sha256).digest()

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Consume received bytes; returns the bytes to send in reply (possibly empty). Raises
        `AuthError` once the peer is proven not to hold the secret or not to speak this
        protocol; the connection must then be closed."""
        if self.done:
            raise AuthError("handshake: fed after it was done (use `leftover`)")
        take = self.bytes_needed
        self._inbox += data[:take]
        extra = bytes(data[take:])
        inbox = self._inbox
        reply = b""
        if self._peer_hello is None:
            # reject garbage at its first bytes rather than after a whole hello
            head = bytes(inbox[: len(MAGIC)])
            if head != MAGIC[: len(head)]:
                raise AuthError("handshake: not an smr peer (bad magic)")
            if len(inbox) < HELLO_BYTES:
                return reply
            _, version, role, peer_id, _ = _HELLO.unpack_from(inbox)
            if version != VERSION:
                raise AuthError(f"handshake: protocol version {version}, expected {VERSION}")
            if role >= len(ROLES):
                raise AuthError(f"handshake: unknown role {role}")
            self._peer_hello = bytes(inbox[:HELLO_BYTES])
            if self._peer_hello == self._hello:
                raise AuthError("handshake: the peer echoed our own hello")
            self.peer_id = peer_id
            self.peer_role = ROLES[role]
            reply = self._proof(_LABEL_ACCEPTOR if self.server else _LABEL_DIALER)
        if len(inbox) < HANDSHAKE_BYTES:
            return reply
        expected = self._proof(_LABEL_DIALER if self.server else _LABEL_ACCEPTOR)
        if not hmac.compare_digest(expected, bytes(inbox[HELLO_BYTES:HANDSHAKE_BYTES])):
            self.peer_id = self.peer_role = None
            raise AuthError("handshake: wrong proof from the peer (a different cluster secret?)")
        self.done = True
        self.leftover = extra
        self._inbox = bytearray()
        return reply


# -- dialing: the clients' side ----------------------------------------------------------------

RECV_BYTES = 1 << 18  # one read of a TLS connection's socket


def dial_settings(
    secret: bytes,
    tls: TlsConfig | None,
    cert: str | None = None,
    key: str | None = None,
) -> tuple[bytes, ssl.SSLContext | None]:
    """What a client dials with: the secret its handshake is keyed with, and a TLS context or
    None. With `[tls]` (`tls`), the client's certificate (`cert` and `key`, else the section's
    `client_cert` and `client_key`) authenticates it, and the handshake inside TLS is keyed with
    the public `CLIENT_PORT_SECRET` (clients need not hold the cluster secret). Raises `TlsError`
    when no certificate is configured or given or one cannot be loaded, and ValueError for a
    certificate given to a cluster without `[tls]` (its members would not ask for it)."""
    if tls is None:
        if cert is not None or key is not None:
            raise ValueError(
                "a client certificate was given (tls_cert, tls_key) but the cluster's "
                "configuration has no [tls] section: its members do not use TLS"
            )
        return secret, None
    return CLIENT_PORT_SECRET, tls.for_client(cert, key).client_context


class TlsSocket:
    """A connected blocking socket carrying TLS: what `connect` returns when given a context.
    One thread may read (`recv`) while another writes (`sendall`), as the threaded client's
    do; an `ssl.SSLSocket` would not allow it safely (OpenSSL forbids reading and writing one
    connection at the same time, and CPython does both without a lock). Here the TLS state, a
    `TlsSession` over memory buffers, is touched only under a lock that is never held while
    waiting on the socket; what the session produces is queued in the order it was produced
    and sent by one sender at a time (the send lock, always taken before the session's)."""

    __slots__ = ("_lock", "_out", "_plain", "_send_lock", "_session", "sock")

    def __init__(self, sock: socket.socket, session: TlsSession, plaintext: bytes = b""):
        self.sock = sock
        self._session = session
        self._lock = threading.Lock()  # the session: its SSL object and memory buffers
        self._send_lock = threading.Lock()  # the socket's sending side
        self._out: list[bytes] = []  # ciphertext to send, in the order the session made it
        self._plain = bytearray(plaintext)  # decrypted and not yet returned (the reader's)

    @property
    def peer_name(self) -> str | None:
        """The common name of the peer's certificate."""
        return self._session.peer_name

    def recv(self, size: int) -> bytes:
        """At most `size` bytes of plaintext, b"" at the end of the stream. Raises `TlsError`
        for an alert of the peer (it refused our certificate, say) or a damaged record, and
        `TimeoutError` after the socket's timeout (no byte is lost: read again)."""
        plain = self._plain
        while not plain:
            data = self.sock.recv(RECV_BYTES)
            if not data:
                return b""
            with self._lock:
                plain += self._session.feed(data)
                out = self._session.take_output()
                if out:
                    self._out.append(out)
            if out:  # rare: a key update answered, an alert
                self._send_queued()
        if len(plain) <= size:
            data = bytes(plain)
            plain.clear()
            return data
        data = bytes(plain[:size])
        del plain[:size]
        return data

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_lock:
            with self._lock:
                self._session.send(memoryview(data))
                self._out.append(self._session.take_output())
                out, self._out = self._out, []
            self.sock.sendall(out[0] if len(out) == 1 else b"".join(out))

    def _send_queued(self) -> None:
        with self._send_lock:
            with self._lock:
                out, self._out = self._out, []
            if out:
                self.sock.sendall(b"".join(out))

    def settimeout(self, timeout_s: float | None) -> None:
        self.sock.settimeout(timeout_s)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


Stream = socket.socket | TlsSocket  # what `connect` returns


def connect(
    host: str,
    port: int,
    secret: bytes,
    *,
    my_id: int,
    role: str,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
    member: int | None = None,
) -> Stream:
    """A blocking, authenticated connection to `host:port` (for clients and tools), returned
    in blocking mode with `timeout_s` set, positioned at the first frame. With `tls` (a client
    context: `dial_settings`, `TlsEndpoint.client_context`) the connection is TLS first (a
    `TlsSocket`), the certificate of the peer must name `member` when one is given, and the
    handshake runs inside. Raises `AuthError` if the peer fails the handshake, `TlsError` if TLS
    fails (the message says why: the member does not use TLS, refused this client's certificate,
    presented another member's), `ConnectionError` if it cannot be reached."""
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as e:
        raise ConnectionError(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
    sock: Stream = raw
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = _tls_dial(raw, tls, where, member)
        hs = Handshake(secret, server=False, my_id=my_id, role=role)
        sock.sendall(hs.initial())
        received = False
        while not hs.done:
            # read exactly what the handshake needs, so no frame byte is consumed here
            try:
                data = sock.recv(hs.bytes_needed)
            except TlsError as e:
                # TLS's own handshake is done at our end; the member checks our certificate
                # after it, and says with an alert that it refused it
                raise TlsError(f"{where} refused the TLS connection: {e}") from None
            if not data:
                raise _closed(where, role, hs, tls is not None, received)
            received = True
            reply = hs.feed(data)
            if reply:
                sock.sendall(reply)
    except (ConnectionError, FrameError):
        raw.close()
        raise
    except TimeoutError:
        raw.close()
        why = f"{host}:{port} did not complete the handshake in {timeout_s}s"
        raise ConnectionError(why) from None
    except OSError as e:
        raw.close()
        raise ConnectionError(f"connection to {host}:{port} failed: {e.strerror or e}") from None
    return sock


def _tls_dial(
    raw: socket.socket, context: ssl.SSLContext, where: str, member: int | None
) -> TlsSocket:
    """TLS's handshake on the blocking socket `raw`, then the member's name checked."""
    session = TlsSession(context, server=False)
    raw.sendall(session.take_output())  # the ClientHello
    plain = b""
    first = True
    while not session.done:
        data = raw.recv(RECV_BYTES)
        if not data:
            raise ConnectionError(f"{where} closed the connection during the TLS handshake")
        if first and MAGIC.startswith(data[: len(MAGIC)]):
            raise _not_tls(where)  # its plaintext hello, sent on accepting: no TLS there
        first = False
        try:
            plain = session.feed(data)
        except TlsError as e:
            alert = session.take_output()  # why we end it, for the member's log
            if alert:
                with contextlib.suppress(OSError):
                    raw.sendall(alert)
            raise TlsError(f"{where}: {e}") from None
        out = session.take_output()
        if out:
            raw.sendall(out)
    _check_member(session.peer_name, where, member)
    return TlsSocket(raw, session, plain)


def _check_member(name: str | None, where: str, member: int | None) -> None:
    """The certificate of the member dialed must be that member's (any CA-signed one would
    pass TLS's own checks: a client's, another member's)."""
    if member is not None and name != member_name(member):
        raise TlsError(
            f"{where} presented a certificate for {name!r}, not member {member}'s "
            f"({member_name(member)!r}): the configuration's [[members]] do not match the "
            "members' certificates"
        )


def _not_tls(where: str) -> TlsError:
    return TlsError(
        f"{where} does not use TLS: the client's configuration has a [tls] section and the "
        "member's has not (or this is not its client port); use the configuration the members run"
    )


def _tls_failed(where: str, error: ssl.SSLError) -> TlsError:
    """An `ssl` error of asyncio's TLS (the blocking path gets `TlsSession`'s words)."""
    if error.reason == "WRONG_VERSION_NUMBER":
        return _not_tls(where)
    return TlsError(f"{where}: TLS failed: {tls_words(error)}")


def _closed(
    where: str, role: str, hs: Handshake, tls: bool, received: bool
) -> ConnectionError | AuthError:
    """The peer closed the connection before the handshake completed: the likeliest reason."""
    if hs.peer_id is not None:
        # the peer had our proof and closed: it found it wrong (or refuses our role or id)
        return AuthError(
            f"{where} refused the handshake "
            f"(a different cluster secret, or it does not accept this {role})"
        )
    if received:
        return ConnectionError(f"{where} closed the connection during the handshake")
    if tls:
        # a member that refuses a client's certificate says so with an alert; without one
        return ConnectionError(
            f"{where} closed the connection right after the TLS handshake (did it refuse this "
            "client's certificate? its log says)"
        )
    # a member without TLS sends its hello first, at once: one that sends nothing and closes
    # on ours most likely reads TLS on this port
    return ConnectionError(
        f"{where} closed the connection before its handshake: a TLS port? (a member with [tls] "
        "in its configuration takes TLS clients only: the client's configuration needs the "
        "section too)"
    )


async def open_connection(
    host: str,
    port: int,
    secret: bytes,
    *,
    my_id: int,
    role: str,
    timeout_s: float,
    limit: int = 1 << 20,
    tls: ssl.SSLContext | None = None,
    member: int | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """`connect` over asyncio streams: an authenticated connection to `host:port`, the streams
    positioned at the first frame (`limit`: the reader's buffer). With `tls`, asyncio's TLS
    carries the streams, and `member` is checked as `connect` does. Raises `AuthError` if the
    peer fails the handshake, `TlsError` if TLS fails, `ConnectionError` if it cannot be reached
    or does not finish the handshake within `timeout_s`."""
    import asyncio  # here: the members, which import this module, never need it

    where = f"{host}:{port}"
    hs = Handshake(secret, server=False, my_id=my_id, role=role)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            try:
                reader, writer = await asyncio.open_connection(host, port, limit=limit, ssl=tls)
            except ssl.SSLError as e:
                raise _tls_failed(where, e) from None
            except OSError as e:
                raise ConnectionError(
                    f"cannot connect to {host}:{port}: {e.strerror or e}"
                ) from None
            if tls is not None:
                _check_member(_common_name(writer.get_extra_info("peercert")), where, member)
            writer.write(hs.initial())
            received = False
            while not hs.done:
                # read at most what the handshake needs: no frame byte is consumed here
                try:
                    data = await reader.read(hs.bytes_needed)
                except ssl.SSLError as e:  # the member refused our certificate (see `connect`)
                    raise TlsError(
                        f"{where} refused the TLS connection: TLS failed: {tls_words(e)}"
                    ) from None
                if not data:
                    raise _closed(where, role, hs, tls is not None, received)
                received = True
                reply = hs.feed(data)
                if reply:
                    writer.write(reply)
    except (ConnectionError, FrameError):
        if writer is not None:
            close_writer(writer)
        raise
    except TimeoutError:
        if writer is not None:
            close_writer(writer)
        why = f"{host}:{port} did not complete the handshake in {timeout_s}s"
        raise ConnectionError(why) from None
    except OSError as e:
        if writer is not None:
            close_writer(writer)
        raise ConnectionError(f"connection to {host}:{port} failed: {e.strerror or e}") from None
    except BaseException:  # cancelled: no half-open connection is left behind
        if writer is not None:
            close_writer(writer)
        raise
    return reader, writer


def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close an asyncio connection at once. A TLS one is aborted: asyncio's orderly TLS close
    waits up to 30 s for the peer's close_notify, which a member does not send (the frames end
    where they end; nothing is lost that a close_notify would protect)."""
    if writer.get_extra_info("sslcontext") is not None:
        writer.transport.abort()
    else:
        writer.close()


def _common_name(cert: dict | None) -> str | None:
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
