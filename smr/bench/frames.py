"""A length-prefixed request/reply protocol over TCP: the wire both the pysyncobj replicas and
the raw loopback reference speak to the bench client, so the client side is the same code.

A frame is `<length u32><request id u64><kind u8>` then `length` body bytes. Requests of kind
`APPEND` carry a payload; a reply repeats the request id with kind `OK` or `ERROR` and a body.
`python -m smr.bench.frames echo PORT` serves the raw reference: every request is answered at
once with an empty OK body, so what it measures is the loopback stream and nothing else."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct("<IQB")
APPEND, LEADER, READY, STATS = 0, 1, 2, 3  # request kinds
OK, ERROR = 0, 1  # reply kinds
frame_bytes_max = 64 << 20  # a longer frame is a protocol error, not an allocation
pending_max = 1 << 16  # outstanding requests per client connection
socket_buffer_bytes = 4 << 20


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, socket_buffer_bytes)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, socket_buffer_bytes)


def _read_exact(sock: socket.socket, view: memoryview) -> bool:
    """Fill `view`; False if the peer closed first."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


class FrameReader:
    """Reads frames from one socket. Small frames are parsed out of one buffered `recv` many at
    a time (pipelined requests cost one system call, not two each); a body larger than the
    buffer is read straight into a buffer of its own, replaced rather than resized so a view
    handed out earlier stays valid until it is dropped."""

    buffer_bytes = 256 << 10

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(self.buffer_bytes)
        self.start = self.end = 0  # unparsed bytes are buffer[start:end]
        self.large = bytearray(0)

    def buffered(self) -> bool:
        """Whether a whole frame is already buffered (the next `read` makes no system call)."""
        available = self.end - self.start
        if available < HEADER.size:
            return False
        length = HEADER.unpack_from(self.buffer, self.start)[0]
        return available >= HEADER.size + length

    def _fill(self, need: int) -> bool:
        """At least `need` unparsed bytes buffered (need <= buffer_bytes); False at EOF."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.start and len(self.buffer) - self.start < need:
            remaining = self.end - self.start
            self.buffer[:remaining] = self.buffer[self.start : self.end]
            self.start, self.end = 0, remaining
        view = memoryview(self.buffer)
        while self.end - self.start < need:
            n = self.sock.recv_into(view[self.end :])
            if n == 0:
                return False
            self.end += n
        return True

    def read(self) -> tuple[int, int, memoryview] | None:
        """The next frame as (request id, kind, body view), or None at EOF. The view is
        valid until the next call."""
        if not self._fill(HEADER.size):
            return None
        length, request_id, kind = HEADER.unpack_from(self.buffer, self.start)
        if length > frame_bytes_max:
            raise ValueError(f"frame of {length} bytes exceeds frame_bytes_max {frame_bytes_max}")
        self.start += HEADER.size
        if HEADER.size + length <= self.buffer_bytes:
            if not self._fill(length):
                return None
            body = memoryview(self.buffer)[self.start : self.start + length]
            self.start += length
            return request_id, kind, body
        if len(self.large) < length:
            self.large = bytearray(length)
        body = memoryview(self.large)[:length]
        have = min(self.end - self.start, length)
        body[:have] = memoryview(self.buffer)[self.start : self.start + have]
        self.start += have
        if not _read_exact(self.sock, body[have:]):
            return None
        return request_id, kind, body


def send_frame(sock: socket.socket, request_id: int, kind: int, body: bytes = b"") -> None:
    # One sendall for small frames (one segment with TCP_NODELAY); two for large ones, so a
    # 1 MiB payload is not copied to prepend 13 bytes.
    head = HEADER.pack(len(body), request_id, kind)
    if len(body) <= 4096:
        sock.sendall(head + body)
    else:
        sock.sendall(head)
        sock.sendall(body)


class Reply:
    """The future of one reply: what the harness needs of a concurrent.futures.Future
    (`add_done_callback`, `exception`, `result`) without the Condition each of those creates,
    which costs more than a 100-byte loopback round trip."""

    __slots__ = ("_callbacks", "_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: bytes | None = None
        self._error: BaseException | None = None
        self._callbacks: list = []

    def _take_and_run(self) -> None:
        # list.pop is atomic under the GIL: of the reader finishing the reply and the caller
        # adding its callback at the same moment, exactly one takes it and runs it.
        try:
            callback = self._callbacks.pop()
        except IndexError:
            return
        callback(self)

    def _finish(self, value: bytes | None, error: BaseException | None) -> None:
        self._value, self._error = value, error
        self._done = True  # before taking the callback: see add_done_callback
        self._take_and_run()

    def add_done_callback(self, fn) -> None:
        """Run fn(self) once the reply is in (at once if it already is); one callback."""
        assert not self._callbacks, "one callback per reply"
        self._callbacks.append(fn)
        if self._done:
            self._take_and_run()

    def exception(self) -> BaseException | None:
        return self._error

    def result(self, timeout: float = 10.0) -> bytes | None:
        """Wait (polling: this is for control requests, not measured ones)."""
        deadline = time.monotonic() + timeout
        while not self._done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply within {timeout} s")
            time.sleep(0.001)
        if self._error is not None:
            raise self._error
        return self._value


class FrameClient:
    """Requests over one connection; `request` returns a `Reply` of the reply body (an OK
    reply) or of a RuntimeError (an ERROR reply or a lost connection)."""

    def __init__(self, host: str, port: int, connect_timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        self.sock.settimeout(None)
        _tune(self.sock)
        self._send_lock = threading.Lock()
        self._pending: dict[int, Reply] = {}
        self._next_id = 0
        self._reader = threading.Thread(target=self._read_replies, daemon=True)
        self._reader.start()

    def request(self, kind: int, body: bytes = b"") -> Reply:
        future = Reply()
        with self._send_lock:
            if len(self._pending) >= pending_max:
                raise RuntimeError(f"more than pending_max={pending_max} requests outstanding")
            self._next_id += 1
            self._pending[self._next_id] = future
            send_frame(self.sock, self._next_id, kind, body)
        return future

    def _read_replies(self) -> None:
        reader = FrameReader(self.sock)
        reason = "connection closed with the request outstanding"
        try:
            while (frame := reader.read()) is not None:
                request_id, kind, body = frame
                future = self._pending.pop(request_id)
                if kind == OK:
                    future._finish(bytes(body), None)
                else:
                    future._finish(None, RuntimeError(bytes(body).decode(errors="replace")))
        except Exception as error:  # any failure here must fail the waiters, not hang them
            reason = f"reply reader failed: {error!r}"
        for future in list(self._pending.values()):
            future._finish(None, RuntimeError(reason))
        self._pending.clear()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(timeout=5)


def listen(port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)
    return server


def serve_echo(port: int) -> None:
    """The raw reference: acknowledge every request at once, one connection at a time."""
    server = listen(port)
    while True:
        conn, _ = server.accept()
        _tune(conn)
        reader = FrameReader(conn)
        replies = bytearray()
        try:
            while (frame := reader.read()) is not None:
                replies += HEADER.pack(0, frame[0], OK)
                if not reader.buffered():  # one send for every request one recv brought
                    conn.sendall(replies)
                    replies.clear()
        except OSError:
            pass
        conn.close()


def free_ports(count: int) -> list[int]:
    """Ports the kernel had free a moment ago (bound together, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "echo":
        sys.exit("usage: python -m smr.bench.frames echo PORT")
    serve_echo(int(sys.argv[2]))
