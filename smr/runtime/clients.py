"""The member's client port: accepts client connections on a thread of its own.

This module owns the sockets of clients: the handshake (a client that does not prove the cluster
secret is disconnected), framing with a bound on every frame, decoding requests, and writing
responses. It never touches the replica: decoded requests go to `deliver(conn_id, request)` (the
node queues them and wakes its loop), and the node answers with `respond(conn_id, response)` from
its own thread. A malformed, oversized or unauthenticated client gets an error response where
one can be framed and its connection closed; the node goes on serving everyone else.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from smr.runtime import protocol
from smr.transport.wire import FrameDecoder, FrameError, Handshake, encode_frame

HANDSHAKE_TIMEOUT_S = 5.0


class _Conn:
    __slots__ = ("decoder", "handshake", "id", "opened_s", "out", "out_bytes", "peer", "sock")

    def __init__(self, cid: int, sock: socket.socket, handshake: Handshake, frame_bytes_max: int):
        self.id = cid
        self.sock = sock
        self.handshake: Handshake | None = handshake
        self.decoder = FrameDecoder(frame_bytes_max)
        self.out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.opened_s = time.monotonic()
        self.peer = ""


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
    ):
        self._secret = secret
        self._me = me
        self._deliver = deliver
        self._frame_bytes_max = frame_bytes_max
        self._log = log
        self.connections_max = connections_max
        self.out_bytes_max = out_bytes_max
        self._sel = selectors.DefaultSelector()
        self._listener = socket.create_server((host, port), reuse_port=False, backlog=128)
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[int, _Conn] = {}
        self._next_id = 1
        self._responses: deque[tuple[int, bytes | None]] = deque()
        self._lock = threading.Lock()
        self._stopping = False
        self.stats = {"accepted": 0, "rejected": 0, "requests": 0}
        self._thread = threading.Thread(target=self._run, name="clients", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def respond(self, conn_id: int, response: protocol.Response) -> None:
        """Queue a response (any thread)."""
        frame = encode_frame(protocol.FRAME_RESPONSE, protocol.encode(response))
        with self._lock:
            idle = not self._responses  # else a wake-up is on its way already
            self._responses.append((conn_id, frame))
        if idle:
            self._wake()

    def close_connection(self, conn_id: int) -> None:
        with self._lock:
            self._responses.append((conn_id, None))
        self._wake()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(timeout=5)
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    def _wake(self) -> None:
        # BlockingIOError: a wake-up is already pending; OSError: we are closing
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            for key, events in self._sel.select(timeout=1.0):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                else:
                    conn = key.data
                    if events & selectors.EVENT_READ:
                        self._read(conn)
                    if events & selectors.EVENT_WRITE and conn.id in self._conns:
                        self._flush(conn)
            self._take_responses()
            self._expire_handshakes()

    def _accept(self) -> None:
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
            conn = _Conn(self._next_id, sock, hs, self._frame_bytes_max)
            conn.peer = f"{addr[0]}:{addr[1]}"
            self._next_id += 1
            self._conns[conn.id] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self.stats["accepted"] += 1
            self._queue(conn, hs.initial())

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn, None)
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
                data = hs.leftover
                if not data:
                    return
            frames = conn.decoder.feed(data)
        except FrameError as e:
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

    def _drop(self, conn: _Conn, error: str | None) -> None:
        if error is not None:
            self.stats["rejected"] += 1
            self._log("client-rejected", peer=conn.peer, error=error[:200])
        if self._conns.pop(conn.id, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()

    def _queue(self, conn: _Conn, data: bytes) -> None:
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
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if conn.id in self._conns:
            self._sel.modify(conn.sock, want, conn)

    def _take_responses(self) -> None:
        with self._lock:
            taken, self._responses = self._responses, deque()
        # one send per connection for everything answered since the last pass
        batches: dict[int, list[bytes]] = {}
        closing: list[int] = []
        for conn_id, frame in taken:
            if frame is None:
                closing.append(conn_id)
            else:
                batches.setdefault(conn_id, []).append(frame)
        for conn_id, frames in batches.items():
            conn = self._conns.get(conn_id)
            if conn is not None:
                self._queue(conn, frames[0] if len(frames) == 1 else b"".join(frames))
        for conn_id in closing:
            conn = self._conns.get(conn_id)
            if conn is not None:
                self._flush(conn)
                self._drop(conn, None)

    def _expire_handshakes(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if conn.handshake is not None and now - conn.opened_s > HANDSHAKE_TIMEOUT_S:
                self._drop(conn, "no handshake within the timeout")
