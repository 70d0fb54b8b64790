"""Watching a shard: every command applied to it, in order, each once, across failovers.

This module owns the client side of `protocol.Watch` (the member side is
`smr.runtime.watches`). A `Watch` holds its own connection to one member and iterates over
`WatchEvent`s: the command's version, its operation and arguments (decoded with the shard's
`StateMachine` type), and its result. The versions are the group's, the same at every member,
so when the member goes away (a crash, a restart, a view change that moves the shard, a member
that stops serving) the watch reconnects to another and asks again from the last version it
handed out: nothing is missed and nothing comes twice. A version the members no longer keep is
`WatchTrimmedError` (read the state anew, then watch from its version).

    import smr
    from smr.statemachines import KVStore

    with smr.connect("cluster.toml") as client:
        with client.subgroup(KVStore).watch(from_version=0) as watch:
            for event in watch:                 # blocks; ends when the watch is closed
                print(event.version, event.operation, event.args, event.result)

`next(watch)` raises `ClientError` after `timeout_s` with no member to watch from, and a watch
whose client reads too slowly is cut off by the member and resumes by itself.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from smr.api import StateMachine
from smr.client_core import ClientError, NotAppliedError
from smr.runtime import protocol
from smr.runtime.config import ClusterConfig
from smr.runtime.hosted import CommandError, decode_result
from smr.transport.wire import (
    FrameDecoder,
    FrameError,
    Stream,
    connect,
    dial_settings,
    encode_frame,
)

RETRY_S = 0.05  # between attempts to find a member to watch from


class WatchTrimmedError(NotAppliedError):
    """The members no longer keep the versions asked for: `oldest` is the first version a watch
    can start after. Read the state (a query) and watch from its version."""

    def __init__(self, message: str, oldest: int):
        super().__init__(message)
        self.oldest = oldest


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One command applied to the shard: at `version`, `operation` with `args` (by name), and
    its `result` (`error` holds the message when the command raised, the same at every replica;
    `result` is None then)."""

    version: int
    operation: str
    args: dict[str, Any]
    result: Any
    error: str | None = None


class Watch:
    def __init__(
        self,
        config: ClusterConfig,
        cls: type[StateMachine],
        subgroup: int,
        shard: int,
        *,
        from_version: int = 0,
        member: int | None = None,
        timeout_s: float = 10.0,
        dial: tuple[bytes, ssl.SSLContext | None] | None = None,
        addresses: Callable[[], Mapping[int, tuple[str, int]]] | None = None,
    ):
        """`dial`: the handshake's secret and the TLS context to connect with (the client's;
        default: the configuration's, `smr.transport.wire.dial_settings`). `addresses`: the
        members to watch from and their client addresses, asked at each reconnection (a
        client's, which include members added at runtime; default: the configuration's)."""
        self.config = config
        self._addresses = addresses or (
            lambda: {m: (c.host, c.client_port) for m, c in config.members.items()}
        )
        self._secret, self._tls = dial_settings(config.secret, config.tls) if dial is None else dial
        self.cls = cls
        self.subgroup = subgroup
        self.shard = shard
        self.version = from_version  # the last version handed out (or started after)
        self.timeout_s = timeout_s
        self.member: int | None = None  # the member watched now
        self.resumes = 0  # reconnections after the first
        self._prefer = member
        self._sock: Stream | None = None
        self._decoder: FrameDecoder | None = None
        self._events: deque[WatchEvent] = deque()
        self._frames: deque[bytes] = deque()  # responses read and not yet taken
        self._closed = threading.Event()
        self._rid = 0
        self._avoid: set[int] = set()
        self._rng = random.Random()

    # -- the iterator -----------------------------------------------------------------------------

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        while not self._events:
            if self._closed.is_set():
                raise StopIteration
            self._fill()
        event = self._events.popleft()
        self.version = event.version
        return event

    def close(self) -> None:
        """End the watch (from any thread: an iteration in progress ends)."""
        self._closed.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the connection ---------------------------------------------------------------------------

    def _fill(self) -> None:
        """Wait for the next events (reconnecting as needed, within `timeout_s` of no member)."""
        deadline = time.monotonic() + self.timeout_s
        while not self._events and not self._closed.is_set():
            if self._sock is None:
                why = self._open()
                if why is not None:
                    if time.monotonic() > deadline:
                        raise ClientError(
                            f"no member to watch subgroup {self.subgroup} shard {self.shard} "
                            f"from for {self.timeout_s} s: {why}"
                        )
                    time.sleep(RETRY_S)
                continue
            try:
                self._receive()
            except (OSError, FrameError) as e:
                self._lost(f"connection to member {self.member} lost: {e}")
            if self._sock is not None:
                deadline = time.monotonic() + self.timeout_s  # a member is there: wait on

    def _open(self) -> str | None:
        """Connect to a member and start the watch there; None once it is in place, else why
        no member took it."""
        why = "no member listed"
        addresses = self._addresses()
        for m in watch_order(list(addresses), self._avoid, self._prefer, self._rng):
            host, port = addresses[m]
            try:
                sock = connect(
                    host,
                    port,
                    self._secret,
                    my_id=self._rng.getrandbits(63) | 1,
                    role="client",
                    timeout_s=min(self.timeout_s, 5.0),
                    tls=self._tls,
                    member=m,
                )
            except (ConnectionError, FrameError) as e:
                why = str(e)
                self._avoid.add(m)
                continue
            self._rid += 1
            request = protocol.Watch(self._rid, self.subgroup, self.shard, self.version)
            decoder = FrameDecoder(self.config.frame_bytes_max + 4096)
            self._frames.clear()
            try:
                sock.sendall(encode_frame(protocol.FRAME_REQUEST, protocol.encode(request)))
                first = self._next_response(sock, decoder)
            except (OSError, FrameError) as e:
                sock.close()
                why = f"member {m}: {e}"
                self._avoid.add(m)
                continue
            if first.ok:
                self._sock, self._decoder, self.member = sock, decoder, m
                self._prefer = None
                self._avoid.clear()
                sock.settimeout(0.5)  # so that close() and the deadline are noticed
                return None
            sock.close()
            if first.trimmed:
                raise WatchTrimmedError(first.error, first.trimmed)
            why = f"member {m}: {first.error}"
            self._avoid.add(m)
            if first.redirect:
                self._prefer = self._rng.choice(first.redirect)
        return why

    def _next_response(self, sock: Stream, decoder: FrameDecoder) -> protocol.Response:
        pending = self._frames
        while not pending:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the member closed the connection")
            pending.extend(
                body for kind, body in decoder.feed(data) if kind == protocol.FRAME_RESPONSE
            )
        try:
            return protocol.decode_response(pending.popleft())
        except ValueError as e:
            raise FrameError(f"a malformed response: {e}") from None

    def _receive(self) -> None:
        sock, decoder = self._sock, self._decoder
        assert sock is not None and decoder is not None
        try:
            response = self._next_response(sock, decoder)
        except TimeoutError:
            return
        if response.ok:
            take_events(self._events, self.version, self.cls, response)
            return
        if response.trimmed:
            self.close()
            raise WatchTrimmedError(response.error, response.trimmed)
        if response.redirect:
            self._prefer = self._rng.choice(response.redirect)
        self._lost(f"member {self.member}: {response.error}")

    def _lost(self, why: str) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self.member is not None:
            self._avoid.add(self.member)
        self.member = None
        self.resumes += 1
        # events already received stay queued; what the next member sends again is skipped


def take_events(
    events: deque[WatchEvent], version: int, cls: type[StateMachine], response: protocol.Response
) -> None:
    """Queue a watch response's events after the last one queued (or handed out: `version`),
    each once: a member resumed from an older version sends some again. Shared with `smr.aio`."""
    for v, operation, result in response.events:
        last = events[-1].version if events else version
        if v <= last:
            continue
        events.append(decode_event(cls, v, operation, result))


def watch_order(
    members: list[int], avoid: set[int], prefer: int | None, rng: random.Random
) -> list[int]:
    """The members to try, in order: the preferred one first, then the others not avoided (all
    of them again, `avoid` cleared, once every one was), shuffled. Shared with `smr.aio`."""
    order = [m for m in members if m not in avoid]
    if not order:
        avoid.clear()
        order = list(members)
    rng.shuffle(order)
    if prefer in order:
        order.remove(prefer)
        order.insert(0, prefer)
    return order


def decode_event(
    cls: type[StateMachine], version: int, operation: bytes, result: bytes
) -> WatchEvent:
    """One event of a watch response, decoded with the shard's type."""
    name, args = cls.decode_command(operation)
    try:
        value, error = decode_result(cls, result, name), None
    except CommandError as e:
        value, error = None, str(e)
    return WatchEvent(version, name, args, value, error)
