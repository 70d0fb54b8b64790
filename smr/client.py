"""The Python client: connect to a running cluster and call a replicated type's operations.

This module owns the client side of `smr.runtime.protocol`:

    import smr
    from smr.statemachines import KVStore

    client = smr.connect("cluster.toml")          # any member; fails over to another
    kv = client.subgroup(KVStore)                 # shard 0 of the subgroup hosting KVStore
    kv.put("a", b"1")                             # a command: {member: result} of every replica
    kv.get("a")                                   # a query: the value, read at one member
    future = kv.submit("put", "b", b"2")          # pipelined: a concurrent.futures.Future
    client.close()

A command carries the client's random id and a sequence number; after a connection fails the
client reconnects to another member and sends its unanswered commands again with the same
numbers, and the replicas apply each one once (`smr.runtime.hosted`). Queries are served by the
member the client is connected to, at or after the version of the client's last answered command
(read-your-writes across a failover). Commands that raised at the replicas raise `CommandError`.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

from smr.api import StateMachine
from smr.runtime import protocol
from smr.runtime.config import ClusterConfig, load
from smr.runtime.hosted import CommandError, decode_result
from smr.transport.wire import FrameDecoder, FrameError, encode_frame
from smr.transport.wire import connect as wire_connect

__all__ = ["Client", "ClientError", "CommandError", "connect"]


class ClientError(Exception):
    """The cluster could not be reached or refused the request."""


class Client:
    def __init__(
        self,
        config: ClusterConfig,
        *,
        member: int | None = None,
        timeout_s: float = 10.0,
        window_max: int = 256,
    ):
        self.config = config
        self.timeout_s = timeout_s
        self.window_max = window_max
        self.client_id = random.getrandbits(63) | 1
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._window = threading.BoundedSemaphore(window_max)
        # request id -> (request, future, decode)
        self._pending: dict[int, tuple[Any, Future, Any]] = {}
        self._sock: socket.socket | None = None
        self._member: int | None = None
        self._preferred = member
        self._closed = False
        self._last_version: dict[tuple[int, int], int] = {}
        self._views: list[tuple[int, tuple[int, ...]]] = []
        self._reader: threading.Thread | None = None
        self._connect()

    # -- connection -------------------------------------------------------------------------------

    def _candidates(self) -> list[int]:
        members = list(self.config.members)
        random.shuffle(members)
        if self._preferred in members:
            members.remove(self._preferred)
            members.insert(0, self._preferred)
        return members

    def _connect(self, avoid: int | None = None) -> None:
        deadline = time.monotonic() + self.timeout_s
        errors = []
        while time.monotonic() < deadline and not self._closed:
            for m in self._candidates():
                if m == avoid and len(self.config.members) > 1:
                    continue
                cfg = self.config.members[m]
                try:
                    sock = wire_connect(
                        cfg.host,
                        cfg.client_port,
                        self.config.secret,
                        my_id=self.client_id & 0x7FFFFFFF,
                        role="client",
                        timeout_s=min(2.0, self.timeout_s),
                    )
                except (OSError, FrameError) as e:
                    errors.append(f"member {m}: {e}")
                    continue
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sock, self._member = sock, m
                self._reader = threading.Thread(
                    target=self._read, args=(sock,), daemon=True, name=f"smr-client-{m}"
                )
                self._reader.start()
                return
            avoid = None
            time.sleep(0.05)
        detail = "; ".join(errors[-len(self.config.members) :]) or "closed"
        raise ClientError(f"no member of {self.config.path} answered: {detail}")

    @property
    def member(self) -> int | None:
        """The member this client is connected to."""
        return self._member

    def _read(self, sock: socket.socket) -> None:
        decoder = FrameDecoder(self.config.frame_bytes_max + 4096)
        try:
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    break
                for kind, body in decoder.feed(data):
                    if kind == protocol.FRAME_RESPONSE:
                        self._on_response(protocol.decode_response(body))
        except (OSError, FrameError, ValueError):
            pass
        if not self._closed and sock is self._sock:
            self._failover(sock)

    def _failover(self, dead: socket.socket) -> None:
        with self._lock:
            if dead is not self._sock:
                return
            old = self._member
            self._sock = None
            with contextlib.suppress(OSError):
                dead.close()
            try:
                self._connect(avoid=old)
            except ClientError as e:
                for _, future, _ in self._pending.values():
                    if not future.done():
                        future.set_exception(e)
                self._pending.clear()
                return
            # unanswered requests again, with the same (client, seq): applied once
            for request, _, _ in list(self._pending.values()):
                self._send_locked(request)

    def _send_locked(self, request: Any) -> None:
        frame = encode_frame(protocol.FRAME_REQUEST, protocol.encode(request))
        try:
            assert self._sock is not None
            self._sock.sendall(frame)
        except OSError:
            pass  # the reader notices and fails over, then sends it again

    def _on_response(self, response: protocol.Response) -> None:
        with self._lock:
            entry = self._pending.get(response.id)
            if entry is None:
                return
            request, future, decode = entry
            if not response.ok and response.redirect and isinstance(request, protocol.Command):
                # this member does not host the shard (or is joining): try one that does
                self._preferred = response.redirect[0]
                sock = self._sock
                threading.Thread(target=self._failover, args=(sock,), daemon=True).start()
                return
            del self._pending[response.id]
        self._window.release()
        if not response.ok:
            future.set_exception(ClientError(response.error))
            return
        try:
            future.set_result(decode(response))
        except Exception as e:
            future.set_exception(e)

    def _request(self, make: Any, decode: Any) -> Future:
        if self._closed:
            raise ClientError("the client is closed")
        if not self._window.acquire(timeout=self.timeout_s):
            raise ClientError(f"{self.window_max} requests outstanding for {self.timeout_s} s")
        future: Future = Future()
        with self._lock:
            request = make(next(self._ids))
            self._pending[request.id] = (request, future, decode)
            if self._sock is not None:
                self._send_locked(request)
        return future

    # -- the API ---------------------------------------------------------------------------------

    def subgroup(self, cls: type[StateMachine], shard: int = 0) -> SubgroupClient:
        return SubgroupClient(self, cls, self.config.subgroup_index(cls), shard)

    def command(
        self,
        subgroup: int,
        shard: int,
        payload: bytes,
        cls: type[StateMachine],
        operation: str | None = None,
    ) -> Future:
        seq = next(self._seq)
        key = (subgroup, shard)

        def decode(response: protocol.Response) -> dict[int, Any]:
            self._last_version[key] = max(self._last_version.get(key, 0), response.version)
            return {
                m: decode_result(cls, r, operation) for m, r in sorted(response.results.items())
            }

        return self._request(
            lambda rid: protocol.Command(rid, subgroup, shard, self.client_id, seq, payload), decode
        )

    def query(
        self,
        subgroup: int,
        shard: int,
        payload: bytes,
        cls: type[StateMachine],
        operation: str | None = None,
        min_version: int | None = None,
    ) -> Future:
        if min_version is None:
            min_version = self._last_version.get((subgroup, shard), 0)
        return self._request(
            lambda rid: protocol.Query(rid, subgroup, shard, payload, min_version),
            lambda response: decode_result(cls, response.value, operation),
        )

    def status(self) -> dict[str, Any]:
        """The connected member's status: its view, shards and the views it went through."""
        status = self._request(protocol.Status, lambda r: r.status).result(self.timeout_s)
        for epoch, members in status.get("views", []):
            if (epoch, tuple(members)) not in self._views:
                self._views.append((epoch, tuple(members)))
        return status

    def views(self) -> list[tuple[int, tuple[int, ...]]]:
        """Views seen so far (epoch, members), as reported by the members this client asked."""
        with contextlib.suppress(ClientError, TimeoutError):
            self.status()
        return sorted(self._views)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.close()
            for _, future, _ in self._pending.values():
                if not future.done():
                    future.set_exception(ClientError("the client was closed"))
            self._pending.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SubgroupClient:
    """Operations of one shard: commands return every replica's result, queries a value."""

    def __init__(self, client: Client, cls: type[StateMachine], subgroup: int, shard: int):
        self._client = client
        self._cls = cls
        self._subgroup = subgroup
        self._shard = shard

    def submit(self, operation: str, /, *args: Any, **kwargs: Any) -> Future:
        """Send a command without waiting: a Future of {member: result}."""
        payload = self._cls.encode_command(operation, *args, **kwargs)
        return self._client.command(self._subgroup, self._shard, payload, self._cls, operation)

    def query(
        self, operation: str, /, *args: Any, min_version: int | None = None, **kwargs: Any
    ) -> Future:
        payload = self._cls.encode_query(operation, *args, **kwargs)
        return self._client.query(
            self._subgroup, self._shard, payload, self._cls, operation, min_version
        )

    def __getattr__(self, name: str) -> Any:
        op = self._cls._by_name.get(name)
        if op is None:
            raise AttributeError(f"{self._cls.__name__} has no operation {name!r}")
        timeout_s = self._client.timeout_s

        def call(*args: Any, **kwargs: Any) -> Any:
            if op.kind == "command":
                return self.submit(name, *args, **kwargs).result(timeout_s)
            return self.query(name, *args, **kwargs).result(timeout_s)

        return call


def connect(
    config: str | ClusterConfig, *, member: int | None = None, timeout_s: float = 10.0
) -> Client:
    """A client of the cluster described by `config` (a path or a loaded configuration)."""
    if isinstance(config, str):
        config = load(config)
    return Client(config, member=member, timeout_s=timeout_s)
