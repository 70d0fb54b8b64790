"""The member's client port: client connections, served on the node's loop thread.

This module owns the sockets of clients: the handshake (a client that does not prove the cluster
secret is disconnected), framing with a bound on every frame, decoding requests, and writing
responses. It never touches the replica: decoded requests go to `deliver(conn_id, request)` and
the node answers with `respond(conn_id, response)`. The sockets are watched by the node's
transport (`Transport.watch`), so a request reaches the replica and its answer the client with no
thread hand-off in between (a hand-off per direction cost a wake-up system call, a GIL switch and
a lock per command). Responses queue per connection and go out in one send per connection when the
node calls `flush()` after each pass of its loop (`broadcast` queues one response, nobody's
answer, to every client: what a member that shuts down tells them). A malformed, oversized or
unauthenticated client gets an error response where one can be framed and its connection closed;
the node goes on serving everyone else.

With TLS (`tls`, this member's `TlsEndpoint`) every connection is TLS first: a `TlsSession` per
connection takes the bytes received and gives the plaintext, and everything sent goes through
it, the handshake and the frames alike (inside TLS the handshake is keyed with the public
`CLIENT_PORT_SECRET`: certificates authenticate the clients). A connection whose TLS fails (a
plaintext client, a certificate of another CA, expired or revoked) is sent TLS's alert, closed
and counted (`stats["tls_failed"]`); any certificate the CA signed and did not revoke is
accepted, a member's too (tools on its host). Once a second at most (`flush`), the revocation
list is read again if it changed, and the connections of certificates revoked since they
connected are closed (`stats["revoked"]`). Without TLS nothing of this runs.
"""

from __future__ import annotations

import contextlib
import functools
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from smr.runtime import protocol
from smr.transport.base import Transport
from smr.transport.tls import TlsEndpoint, TlsError, TlsSession
from smr.transport.wire import FrameDecoder, FrameError, Handshake, encode_frame

HANDSHAKE_TIMEOUT_S = 5.0
# after refusing an oversized frame: how long the member reads and discards what the client is
# still sending (so the refusal reaches it rather than a reset) before closing anyway
DRAIN_TIMEOUT_S = 30.0
RECV_BYTES = 1 << 18  # one read: bounds the requests one pass of the loop decodes from a client


class _Conn:
    __slots__ = (
        "decoder",
        "draining_s",
        "handshake",
        "id",
        "opened_s",
        "out",
        "out_bytes",
        "peer",
        "ready",
        "sock",
        "tls",
        "writing",
    )

    def __init__(
        self,
        cid: int,
        sock: socket.socket,
        handshake: Handshake,
        frame_bytes_max: int,
        tls: TlsSession | None,
    ):
        self.id = cid
        self.sock = sock
        self.handshake: Handshake | None = handshake
        # TLS under everything (None: plaintext); the handshake's hello goes once it is done
        self.tls = tls
        self.decoder = FrameDecoder(frame_bytes_max)
        self.out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.ready: list[bytes] = []  # response frames of this pass, sent together by flush()
        self.opened_s = time.monotonic()
        self.peer = ""
        self.writing = False  # watched for writability: the socket's buffer was full
        # refused an oversized frame at this time (0.0: not): the error response goes out, then
        # a FIN, and what the client still sends is read and discarded until it closes
        self.draining_s = 0.0


class ClientServer:
    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        me: int,
        deliver: Callable[[int, Any], None],
        *,
        frame_bytes_max: int,
        log: Callable[..., None],
        connections_max: int = 1024,
        out_bytes_max: int = 256 << 20,
        tls: TlsEndpoint | None = None,
    ):
        """`secret` keys the handshake (`CLIENT_PORT_SECRET` with TLS: the node passes it);
        `tls`: this member's certificate, CA and revocation list (None: plaintext clients)."""
        self._secret = secret
        self._tls = tls
        self._me = me
        self._deliver = deliver
        self._frame_bytes_max = frame_bytes_max
        self._log = log
        self.connections_max = connections_max
        self.out_bytes_max = out_bytes_max
        self._listener = socket.create_server((host, port), reuse_port=False, backlog=128)
        self._listener.setblocking(False)
        self._transport: Transport | None = None
        self._conns: dict[int, _Conn] = {}
        self._dirty: list[_Conn] = []  # connections with response frames waiting for flush()
        self._handshaking = 0
        self._draining = 0
        self._next_id = 1
        self.stats = {"accepted": 0, "rejected": 0, "requests": 0, "tls_failed": 0, "revoked": 0}

    def attach(self, transport: Transport) -> None:
        """Serve clients from `transport`'s poll (after its start)."""
        self._transport = transport
        transport.watch(self._listener, lambda _mask: self._accept())

    def respond(self, conn_id: int, response: protocol.Response) -> None:
        """Queue a response; it goes out at the next `flush()` (loop thread only)."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.draining_s:
            return  # the client went away (or is told to); it sends the request again elsewhere
        body = protocol.encode(response)
        if len(body) > self._frame_bytes_max:
            body = protocol.encode(self._too_large(response, len(body)))
        if not conn.ready:
            self._dirty.append(conn)
        conn.ready.append(encode_frame(protocol.FRAME_RESPONSE, body))

    def broadcast(self, response: protocol.Response) -> None:
        """Queue `response` (one nobody asked for: id 0) to every client past its handshake; it
        goes out at the next `flush()`."""
        for conn in list(self._conns.values()):
            if conn.handshake is None:
                self.respond(conn.id, response)

    def is_open(self, conn_id: int) -> bool:
        """Whether the connection is still there (a watch ends with its connection)."""
        conn = self._conns.get(conn_id)
        return conn is not None and not conn.draining_s

    def counters(self) -> dict[str, int]:
        """Connections accepted and rejected, requests, TLS refusals and revocations so far."""
        return self.stats

    def pending_bytes(self, conn_id: int) -> int:
        """Bytes queued for the connection and not yet taken by the client's socket."""
        conn = self._conns.get(conn_id)
        return 0 if conn is None else conn.out_bytes + sum(len(f) for f in conn.ready)

    def _too_large(self, response: protocol.Response, size: int) -> protocol.Response:
        """An answer the client would refuse unread (over the frame limit): an error it can
        raise instead, saying what happened (a command was applied; only its answer is lost)."""
        limit = self._frame_bytes_max
        if len(response.results) > 1:
            what = (
                f"the command was applied, but its answer ({size:,} bytes: every replica's "
                f"result) is over the frame limit of {limit:,} bytes ([limits] frame_bytes_max); "
                "ask for one replica's result (subgroup(..., replies='one')) or return less"
            )
        elif response.results:
            what = (
                f"the command was applied, but its result of {size:,} bytes is over the frame "
                f"limit of {limit:,} bytes ([limits] frame_bytes_max); return less"
            )
        else:
            what = (
                f"the answer of {size:,} bytes is over the frame limit of {limit:,} bytes "
                "([limits] frame_bytes_max); return less"
            )
        self._log("response-too-large", bytes=size, limit=limit)
        return protocol.Response(response.id, False, error=what, version=response.version)

    def flush(self) -> None:
        """Send the responses of this pass, one send per connection; expire silent handshakes;
        with TLS, close the connections of certificates revoked since they connected (the
        revocation list is looked at once a second at most)."""
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            frames, conn.ready = conn.ready, []
            if conn.id in self._conns and frames:
                self._queue(conn, frames[0] if len(frames) == 1 else b"".join(frames))
        if self._handshaking or self._draining:
            self._expire_handshakes()
        if self._tls is not None and self._tls.refresh():
            self._close_revoked(self._tls.revoked)

    def _close_revoked(self, revoked: frozenset[int]) -> None:
        """The revocation list changed: new handshakes already refuse what it revokes; the
        connections made before with such a certificate are closed now."""
        self._log("client-tls-crl", revoked=len(revoked))
        for conn in list(self._conns.values()):
            if conn.tls is not None and conn.tls.peer_serial in revoked:
                self._revoked(conn)

    def _revoked(self, conn: _Conn) -> None:
        assert conn.tls is not None and conn.tls.peer_serial is not None
        self.stats["revoked"] += 1
        self._log(
            "client-revoked",
            peer=conn.peer,
            name=conn.tls.peer_name,
            serial=f"{conn.tls.peer_serial:x}",
        )
        self._drop(conn, None)

    def stop(self) -> None:
        self.flush()
        for conn in list(self._conns.values()):
            self._drop(conn, None)
        if self._transport is not None:
            self._transport.unwatch(self._listener)
        self._listener.close()

    # -- events (the loop thread) ---------------------------------------------------------------

    def _on_event(self, conn: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self._read(conn)
        if mask & selectors.EVENT_WRITE and conn.id in self._conns:
            self._flush(conn)

    def _accept(self) -> None:
        assert self._transport is not None
        for _ in range(64):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._log("client-accept-failed", error=str(e))
                return
            if len(self._conns) >= self.connections_max:
                self.stats["rejected"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hs = Handshake(self._secret, server=True, my_id=self._me, role="member")
            session = None if self._tls is None else self._tls.session(server=True)
            conn = _Conn(self._next_id, sock, hs, self._frame_bytes_max, session)
            conn.peer = f"{addr[0]}:{addr[1]}"
            self._next_id += 1
            self._conns[conn.id] = conn
            self._handshaking += 1
            self._transport.watch(sock, functools.partial(self._on_event, conn))
            self.stats["accepted"] += 1
            if session is None:
                self._queue(conn, hs.initial())
            # with TLS the client speaks first (its ClientHello); the hello goes inside, later

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn, None)
            return
        if conn.draining_s:
            return  # the rest of a refused frame, or what followed it: discarded
        if conn.tls is not None:
            data = self._read_tls(conn, conn.tls, data)
            if not data:
                return
        try:
            if conn.handshake is not None:
                hs = conn.handshake
                reply = hs.feed(data)
                if reply:
                    self._queue(conn, reply)
                if not hs.done:
                    return
                if hs.peer_role != "client":
                    raise FrameError(f"a {hs.peer_role} connected to the client port")
                conn.handshake = None
                self._handshaking -= 1
                data = hs.leftover
                if not data:
                    return
            frames = conn.decoder.feed(data)
        except FrameError as e:
            if conn.handshake is None:  # after the handshake: a frame over the limit
                self._refuse_oversized(conn, str(e))
            else:
                self._drop(conn, str(e))
            return
        for kind, body in frames:
            if kind != protocol.FRAME_REQUEST:
                self._reject(conn, 0, f"unexpected frame kind {kind}")
                return
            try:
                request = protocol.decode_request(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                self._reject(conn, 0, f"malformed request: {e}")
                return
            self.stats["requests"] += 1
            self._deliver(conn.id, request)

    def _read_tls(self, conn: _Conn, session: TlsSession, data: bytes) -> bytes:
        """The plaintext `data` completes (b"": none yet, or the connection was closed)."""
        done = session.done
        try:
            data = session.feed(data)
        except TlsError as e:
            self.stats["tls_failed"] += 1
            self._log("client-tls-failed", peer=conn.peer, error=str(e)[:200])
            alert = session.take_output()
            if not alert:  # not TLS at all (a plaintext client): nothing to tell it in TLS
                self._drop(conn, None)
                return b""
            # TLS's alert tells the client why (its certificate unknown, expired, revoked); then
            # the end of stream, and what it still sends is discarded until it closes (closed
            # at once, a reset could overtake the alert), within the handshake's timeout
            conn.draining_s = time.monotonic()
            self._draining += 1
            self._queue(conn, alert, raw=True)
            return b""
        if session.closed:  # the client ended TLS: it sends nothing more and waits for the end
            self._drop(conn, None)
            return b""
        self._queue(conn, session.take_output(), raw=True)
        if not done and session.done and conn.id in self._conns:
            assert self._tls is not None and conn.handshake is not None, "the handshake waits"
            if session.peer_serial in self._tls.revoked:
                # its handshake began with the contexts of before the revocation list changed,
                # and `_close_revoked` ran before it finished: it would be served for good
                self._revoked(conn)
                return b""
            self._queue(conn, conn.handshake.initial())
        return data if conn.id in self._conns else b""

    def _reject(self, conn: _Conn, request_id: int, error: str) -> None:
        self.stats["rejected"] += 1
        self._log("client-rejected", peer=conn.peer, error=error[:200])
        frame = encode_frame(
            protocol.FRAME_RESPONSE,
            protocol.encode(protocol.Response(request_id, False, error=error[:500])),
        )
        self._queue(conn, frame)
        self._flush(conn)
        self._drop(conn, None)

    def _refuse_oversized(self, conn: _Conn, error: str) -> None:
        """Tell the client why (it cannot tell from a closed connection, and would send the same
        frame again on the next one), then close once it has stopped sending. Requests in the same
        read as the oversized frame are not answered: the client sends them again elsewhere."""
        self.stats["rejected"] += 1
        self._log("client-rejected", peer=conn.peer, error=error[:200])
        message = (
            f"{error}: a request larger than this member's frame limit ([limits] frame_bytes_max "
            f"= {self._frame_bytes_max}) was refused"
        )
        conn.draining_s = time.monotonic()
        self._draining += 1
        response = protocol.Response(0, False, error=message, frame_bytes_max=self._frame_bytes_max)
        self._queue(conn, encode_frame(protocol.FRAME_RESPONSE, protocol.encode(response)))

    def _drop(self, conn: _Conn, error: str | None) -> None:
        if error is not None:
            self.stats["rejected"] += 1
            self._log("client-rejected", peer=conn.peer, error=error[:200])
        if self._conns.pop(conn.id, None) is None:
            return
        if conn.handshake is not None:
            self._handshaking -= 1
        if conn.draining_s:
            self._draining -= 1
        if self._transport is not None:
            self._transport.unwatch(conn.sock)
        conn.sock.close()
        conn.ready.clear()

    def _queue(self, conn: _Conn, data: bytes, *, raw: bool = False) -> None:
        """Queue plaintext (encrypted here with TLS; `raw`: bytes as they go on the socket, TLS's
        own) and send what the socket takes."""
        if conn.tls is not None and not raw and data:
            conn.tls.send(data)
            data = conn.tls.take_output()
        if not data:
            return
        conn.out.append(memoryview(data))
        conn.out_bytes += len(data)
        if conn.out_bytes > self.out_bytes_max:
            self._drop(conn, "client does not read its responses")
            return
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out[0])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(conn, None)
                return
            conn.out_bytes -= sent
            if sent == len(conn.out[0]):
                conn.out.popleft()
            else:
                conn.out[0] = conn.out[0][sent:]
        writing = bool(conn.out)
        if conn.draining_s and not writing and conn.id in self._conns:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)  # the refusal is out: then the end of stream
        if writing != conn.writing and conn.id in self._conns and self._transport is not None:
            conn.writing = writing
            self._transport.watch(conn.sock, functools.partial(self._on_event, conn), write=writing)

    def _expire_handshakes(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if conn.handshake is not None and now - conn.opened_s > HANDSHAKE_TIMEOUT_S:
                self._drop(conn, "no handshake within the timeout")
            elif conn.draining_s and now - conn.draining_s > DRAIN_TIMEOUT_S:
                self._drop(conn, None)
