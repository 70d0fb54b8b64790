"""The Python client: connect to a running cluster and call a replicated type's operations.

This module owns the threaded client of `smr.runtime.protocol`: its connections, threads and
futures. What it decides (request ids and sequence numbers, what each answer does, which error a
failure gets, the failover order) is `smr.client_core`'s, shared with the asyncio client
(`smr.aio`), so the two behave alike.

    import smr
    from smr.statemachines import KVStore

    client = smr.connect("cluster.toml")          # any member; fails over to another
    kv = client.subgroup(KVStore)                 # shard 0 of the subgroup hosting KVStore
    kv.put("a", b"1")                             # a command: {member: result} of every replica
    kv.get("a")                                   # a query: the value, read at one member
    future = kv.submit("put", "b", b"2")          # pipelined: a future of {member: result}
    kv.query("get", "a", consistency="sequential")  # a future; a local read, read-your-writes
    client.close()

A command carries the client's random id and a sequence number; after a connection fails the
client reconnects to another member and sends its unanswered commands again with the same
numbers, and the replicas apply each one once (`smr.runtime.hosted`). Queries are read at the
member the client is connected to, at a consistency level: "linearizable" (the default) or
"sequential" (served locally), in both cases at or after the version of the client's last answered
command (read-your-writes across a failover). Commands that raised at the replicas raise
`CommandError`.

A command that fails says what the client knows of it: `NotAppliedError` when it certainly did not
enter the log (a member refused it before it could, or it was never sent), `OutcomeUnknownError`
when it was sent and no answer came (the connection was lost, or the call timed out): it may have
been applied, and a new call is a new command (a new sequence number), so read the state before
making it again. A query changes nothing, so its failures are `NotAppliedError`. Both are
`ClientError`s.

With a `[tls]` section in the configuration the client dials every member over TLS, presents a
certificate (the section's `client_cert`, or `tls_cert=` and `tls_key=`) and checks that each
member's certificate names the member dialed; the cluster secret is not needed. When every member
refuses the client at TLS (its certificate unknown, expired or revoked, members without TLS), the
dial fails at once with a `ClientError` that says why, rather than after `timeout_s`.

Members added at runtime (`smr cluster add`) need not be in the client's file: every status
answer lists the members' client addresses, the client asks the connected member for them every
`refresh_s`, and a member that shuts down (or is removed) tells its clients before it goes, so a
failover reaches members the file does not list, and skips those removed for good.
`client.remove_member(id)` removes a member through the connected one (`smr cluster remove`).
"""

from __future__ import annotations

import _thread
import concurrent.futures
import contextlib
import logging
import queue
import random
import socket
import threading
import time
from typing import Any

from smr.api import StateMachine
from smr.client_core import (
    REDIAL,
    REFRESH_S,
    REMOVE_TIMEOUT_S,
    WAKE,
    ClientCore,
    ClientError,
    NotAppliedError,
    OutcomeUnknownError,
    RequestTooLargeError,
    ShardOperations,
    check_consistency,
    members_of,
)
from smr.runtime import protocol
from smr.runtime.config import ClusterConfig, MemberConfig, load
from smr.runtime.hosted import CommandError
from smr.transport.tls import TlsError
from smr.transport.wire import FrameDecoder, FrameError, Stream, dial_settings
from smr.transport.wire import connect as wire_connect
from smr.watch import Watch

__all__ = [
    "Client",
    "ClientError",
    "CommandError",
    "Future",
    "NotAppliedError",
    "OutcomeUnknownError",
    "RequestTooLargeError",
    "connect",
]

_logger = logging.getLogger(__name__)
_REPLIES = {"all": protocol.REPLIES_ALL, "one": protocol.REPLIES_ONE}


class Future:
    """The answer to one request, once it comes: the `concurrent.futures.Future` methods a
    caller uses (`result`, `exception`, `done`, `add_done_callback`, `cancel`), thread-safe.

    Not a `concurrent.futures.Future` because that one builds a `threading.Condition` (pure
    Python) per instance, which cost more than the rest of a small command's client side
    (docs/performance.md); this one holds a C lock and makes a second one only for a caller
    that waits before the answer is in. `as_concurrent()` gives a real one for
    `concurrent.futures.wait` or `asyncio.wrap_future`. A sent command cannot be called back:
    `cancel()` returns False."""

    __slots__ = ("_callbacks", "_done", "_error", "_lock", "_value", "_waiter")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Any] | None = None
        self._waiter: Any = None  # a held lock, released when the answer is in

    def set_result(self, value: Any) -> None:
        self._finish(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                return
            self._value, self._error, self._done = value, error, True
            callbacks, self._callbacks = self._callbacks, None
            waiter = self._waiter
        if waiter is not None:
            waiter.release()
        for fn in callbacks or ():
            self._run(fn)

    def _run(self, fn: Any) -> None:
        try:
            fn(self)
        except Exception:
            _logger.exception("a callback of %r raised", self)

    def add_done_callback(self, fn: Any) -> None:
        """Call fn(self) once the answer is in (at once, here, if it is already)."""
        with self._lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        self._run(fn)

    def _wait(self, timeout: float | None) -> None:
        if self._done:
            return
        with self._lock:
            if self._done:
                return
            if self._waiter is None:
                self._waiter = _thread.allocate_lock()
                self._waiter.acquire()
            waiter = self._waiter
        if not waiter.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise TimeoutError(f"no answer within {timeout} s")
        waiter.release()  # the next waiter passes too

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._error

    def done(self) -> bool:
        return self._done

    def running(self) -> bool:
        return not self._done

    def cancelled(self) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def as_concurrent(self) -> concurrent.futures.Future:
        """A `concurrent.futures.Future` that completes with this one."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def copy(done: Future) -> None:
            if done._error is not None:
                future.set_exception(done._error)
            else:
                future.set_result(done._value)

        self.add_done_callback(copy)
        return future

    def __repr__(self) -> str:
        state = "pending" if not self._done else "failed" if self._error else "done"
        return f"<smr.client.Future {state}>"


class Client:
    """A connection to a cluster, built by `smr.connect`: `subgroup(T)` gives the operations of
    a hosted type. Close it (or use it as a context manager) when done.

    The decisions (what each answer does, which error a failure gets, the failover order) are
    `smr.client_core.ClientCore`'s, shared with the asyncio client; this class runs them with a
    writer thread, a reader thread per connection and one lock around the core."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        member: int | None = None,
        timeout_s: float = 10.0,
        window_max: int = 4096,
        consistency: str = protocol.READ_LINEARIZABLE,
        silence_s: float | None = 1.0,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        refresh_s: float | None = REFRESH_S,
    ):
        self.config = config
        # the handshake's key and the TLS context (None: plaintext), per `connect`'s rules
        self._secret, self._tls = dial_settings(config.secret, config.tls, tls_cert, tls_key)
        self._core = ClientCore(
            list(config.members),
            rng=random.Random(),
            addresses={m: (c.host, c.client_port) for m, c in config.members.items()},
            refresh_s=refresh_s,
            frame_bytes_max=config.frame_bytes_max,
            timeout_s=timeout_s,
            window_max=window_max,
            consistency=consistency,
            preferred=member,
            config_path=config.path,
            silence_s=silence_s,
        )
        self._lock = threading.Lock()  # around every call of the core
        # room in the window: waited on only when it is full (a semaphore per request cost more
        # than the rest of a small command's client side)
        self._room = threading.Condition(self._lock)
        self._room_waiters = 0
        # frames for the writer thread, the only one that sends: what accumulates while it is
        # sending goes out in one send (one system call per command was the client's bound)
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, daemon=True, name="smr-client-writer")
        self._reader: threading.Thread | None = None
        sock, m = self._dial()
        with self._lock:
            self._attach_locked(sock, m)
        self._writer.start()

    # the core's settings, read and set here as before it existed
    @property
    def timeout_s(self) -> float:
        return self._core.timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self._core.timeout_s = value

    @property
    def window_max(self) -> int:
        return self._core.window_max

    @window_max.setter
    def window_max(self, value: int) -> None:
        self._core.window_max = value

    @property
    def frame_bytes_max(self) -> int:
        """The largest request body a member takes: the configuration's, lowered if a member
        refuses a smaller frame (its configuration differs)."""
        return self._core.frame_bytes_max

    @frame_bytes_max.setter
    def frame_bytes_max(self, value: int) -> None:
        self._core.frame_bytes_max = value

    @property
    def client_id(self) -> int:
        """The random id every command carries with its sequence number."""
        return self._core.client_id

    @property
    def consistency(self) -> str:
        """The read consistency level of queries that do not name one."""
        return self._core.consistency

    # -- connection -------------------------------------------------------------------------------

    def _dial(self, avoid: int | None = None) -> tuple[Stream, int]:
        """A new authenticated connection to some member (`avoid` not in the first round), trying
        for `timeout_s`. Called without the lock held but for the order of members: the rest
        touches nothing the other threads use."""
        core = self._core
        deadline = time.monotonic() + core.timeout_s
        errors = []
        while time.monotonic() < deadline and not core.closed:
            with self._lock:
                order = core.dial_order(avoid)
            refused = 0
            for m in order:
                address = core.address(m)
                if address is None:  # a member a redirect named, whose address no status gave
                    errors.append(f"member {m}: no address known")
                    continue
                try:
                    sock = wire_connect(
                        address[0],
                        address[1],
                        self._secret,
                        my_id=core.client_id & 0x7FFFFFFF,
                        role="client",
                        timeout_s=min(2.0, core.timeout_s),
                        tls=self._tls,
                        member=m,
                    )
                except TlsError as e:
                    errors.append(f"member {m}: {e}")
                    refused += 1
                    continue
                except (OSError, FrameError) as e:
                    errors.append(f"member {m}: {e}")
                    continue
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock, m
            if refused == len(order):
                # every member refused us at TLS: a certificate or configuration problem that
                # dialing again for timeout_s does not fix
                raise core.dial_error(errors, refused=True)
            avoid = None
            time.sleep(0.05)
        raise core.dial_error(errors)

    def _attach_locked(self, sock: Stream, member: int) -> bool:
        """Make `sock` current and send it every unanswered request; False if the client was
        closed meanwhile (`sock` is closed)."""
        sends = self._core.on_connected(sock, member)
        if sends is None:
            with contextlib.suppress(OSError):
                sock.close()
            return False
        self._reader = threading.Thread(
            target=self._read, args=(sock,), daemon=True, name=f"smr-client-{member}"
        )
        self._reader.start()
        for _, frame in sends:
            self._out.put(frame)
        self._out.put(b"")  # the writer recomputes its wait (the refresh of this member)
        return True

    @property
    def member(self) -> int | None:
        """The member this client is connected to."""
        return self._core.member

    def _read(self, sock: Stream) -> None:
        decoder = FrameDecoder(self.config.frame_bytes_max + 4096)
        try:
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    break
                # every answer of one receive under one lock: one per answer was a large part
                # of a small command's client side
                responses = [
                    protocol.decode_response(body)
                    for kind, body in decoder.feed(data)
                    if kind == protocol.FRAME_RESPONSE
                ]
                if responses:
                    self._on_responses(responses, sock)
        except (OSError, FrameError, ValueError):
            pass
        if not self._core.closed:
            self._failover(sock)

    def _failover(self, dead: Stream) -> None:
        """The connection `dead` broke (or was given up after a redirect): dial another member,
        without the lock, so that requests made meanwhile only wait in the core. Of the threads
        that see the same dead connection (its reader, a redirected response) only the first
        gets past the core's check and dials; the others return at once."""
        with self._lock:
            if not self._core.on_disconnected(dead):
                return
            avoid = self._core.member
            with contextlib.suppress(OSError):
                dead.close()
        self._redial(avoid)

    def _redial(self, avoid: int | None) -> None:
        try:
            sock, m = self._dial(avoid=avoid)
        except ClientError as e:
            with self._lock:
                finished = self._core.on_dial_failed(str(e))
                self._room.notify_all()
            _complete(finished)
            return
        with self._lock:
            self._attach_locked(sock, m)

    def _write(self) -> None:
        out = self._out
        core = self._core
        while True:
            with self._lock:  # a retry, or the silence check of the member (check_silence)
                due = core.next_due()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            try:
                frame = out.get(timeout=timeout)
            except queue.Empty:
                frame = b""
            if frame is None:
                return
            frames = [frame] if frame else []
            while not out.empty() and len(frames) < 4096:
                frame = out.get()
                if frame is None:
                    return
                frames.append(frame)
            silent = None
            if due is not None:
                with self._lock:
                    now = time.monotonic()
                    frames.extend(frame for _, frame in core.due(now))
                    probe, give_up = core.check_silence(now)
                    frames.extend(frame for _, frame in probe)
                    frames.extend(frame for _, frame in core.refresh(now))
                    if give_up:
                        silent = core.connection
            if silent is not None:
                # the member said nothing, even to a status request: it hangs (its connection
                # stays open); the unanswered requests go to another member
                threading.Thread(target=self._failover, args=(silent,), daemon=True).start()
            if not frames:
                continue
            sock = core.connection
            if sock is None:
                continue  # failing over: every unanswered request is sent again once connected
            # an OSError: the reader notices, fails over, and these are sent again
            with contextlib.suppress(OSError):
                sock.sendall(frames[0] if len(frames) == 1 else b"".join(frames))

    def _on_responses(self, responses: list[protocol.Response], sock: Stream) -> None:
        """Answers that came on `sock` (which may already have been replaced), in order."""
        finished: list[Any] = []
        wake = redial = False
        with self._lock:
            now = time.monotonic()
            on_response = self._core.on_response
            for response in responses:
                done, action = on_response(response, sock, now)
                if done:
                    finished += done
                wake = wake or action == WAKE
                redial = redial or action == REDIAL
            if finished and self._room_waiters:
                self._room.notify(len(finished))
        if wake:
            self._out.put(b"")  # the writer recomputes its wait
        if redial:
            threading.Thread(target=self._failover, args=(sock,), daemon=True).start()
        if finished:  # futures complete outside the lock: their callbacks may submit
            _complete(finished)

    def _wait_for_room_locked(self) -> bool:
        """With the lock held: wait up to `timeout_s` until the window has room or the client
        closed; False if it never did."""
        core = self._core
        if core.has_room():
            return True
        self._room_waiters += 1
        try:
            return self._room.wait_for(
                lambda: core.has_room() or core.closed, timeout=core.timeout_s
            )
        finally:
            self._room_waiters -= 1

    def _request(self, make: Any, *args: Any) -> Future:
        """A request made by the core's `make(future, *args)`, once the window has room."""
        core = self._core
        if core.closed:
            raise NotAppliedError("the client is closed")
        future: Future = Future()
        with self._lock:
            if not self._wait_for_room_locked():
                raise core.window_full_error()
            # closed while this call waited for the lock or for room: the core raises
            _, frame = make(future, *args)
            if frame is not None:
                self._out.put(frame)
            elif core.start_dial():
                # no connection, none being dialed (a dial failed): this request starts one
                threading.Thread(target=self._redial, args=(None,), daemon=True).start()
        return future

    def _call(self, future: Future, timeout_s: float | None = None) -> Any:
        """A blocking call: the answer of `future` within `timeout_s` (default: the client's),
        or the error saying what is known of the request. A request on no connection (refused
        as busy, or waiting for one) is withdrawn: not applied. One on the wire stays pending:
        its outcome is unknown."""
        timeout_s = self._core.timeout_s if timeout_s is None else timeout_s
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.done():  # the answer, or its error, came as the wait ended
                return future.result()
            with self._lock:
                rid = self._core.rid_of(future)
                finished = []
                if rid is not None:
                    finished = self._core.abandon(rid, f"no answer within {timeout_s} s")
                    if self._room_waiters:
                        self._room.notify()
            if not finished:  # the answer came meanwhile
                return future.result()
            _complete(finished)
            error = finished[0][2]
            assert error is not None, "a request given up has an error"
            raise error from None

    # -- the API ---------------------------------------------------------------------------------

    def subgroup(
        self,
        cls: type[StateMachine],
        shard: int = 0,
        *,
        replies: str = "all",
        consistency: str | None = None,
    ) -> SubgroupClient:
        """Operations of `cls` in `shard`. `replies="all"`: a command's answer maps every
        replica to its result; `"one"`: only the result of the member this client talks to, sent
        as soon as the mode's guarantee holds (one network hop and the reply frames saved).
        `consistency`: the read level of its queries (default: the client's)."""
        if replies not in _REPLIES:
            raise ValueError(f"replies must be 'all' or 'one', not {replies!r}")
        if consistency is not None:
            check_consistency(consistency)
        return SubgroupClient(
            self, cls, self.config.subgroup_index(cls), shard, _REPLIES[replies], consistency
        )

    def command(
        self,
        subgroup: int,
        shard: int,
        payload: bytes,
        cls: type[StateMachine],
        operation: str | None = None,
        replies: int = protocol.REPLIES_ALL,
    ) -> Future:
        # the sequence number is taken before waiting for room, as the call is made
        seq = self._core.next_seq()
        return self._request(
            self._core.command, subgroup, shard, payload, cls, operation, replies, seq
        )

    def commands(
        self,
        subgroup: int,
        shard: int,
        payloads: list[bytes],
        cls: type[StateMachine],
        operation: str | None = None,
        replies: int = protocol.REPLIES_ALL,
    ) -> list[Future]:
        """Many commands at once (`SubgroupClient.submit_many`), in order: a future each. The
        lock is taken once per window's worth, not per command, and their frames go to the
        writer as one. Nothing raises once the first is made: a command the window had no room
        for within `timeout_s`, or over the frame limit, fails its own future (not applied)."""
        core = self._core
        if core.closed:
            raise NotAppliedError("the client is closed")
        futures = [Future() for _ in payloads]
        # sequence numbers are taken as the call is made, before waiting for room
        seqs = [core.next_seq() for _ in payloads]
        failed: list[Any] = []
        dial = False
        i, n = 0, len(payloads)
        while i < n:
            with self._lock:
                if not self._wait_for_room_locked():
                    error = core.window_full_error()
                    failed += [(f, None, error) for f in futures[i:]]
                    break
                frames = []
                while i < n and (core.has_room() or core.closed):
                    try:
                        _, frame = core.command(
                            futures[i],
                            subgroup,
                            shard,
                            payloads[i],
                            cls,
                            operation,
                            replies,
                            seqs[i],
                        )
                    except NotAppliedError as e:  # closed meanwhile, or over the frame limit
                        failed.append((futures[i], None, e))
                    else:
                        if frame is not None:
                            frames.append(frame)
                        elif not dial:
                            dial = core.start_dial()
                    i += 1
                if frames:
                    self._out.put(frames[0] if len(frames) == 1 else b"".join(frames))
        if dial:  # no connection, none being dialed (a dial failed): these requests start one
            threading.Thread(target=self._redial, args=(None,), daemon=True).start()
        _complete(failed)  # outside the lock: callbacks may submit
        return futures

    def query(
        self,
        subgroup: int,
        shard: int,
        payload: bytes,
        cls: type[StateMachine],
        operation: str | None = None,
        min_version: int | None = None,
        consistency: str | None = None,
    ) -> Future:
        if consistency is not None:
            check_consistency(consistency)  # before waiting for room
        return self._request(
            self._core.query, subgroup, shard, payload, cls, operation, min_version, consistency
        )

    def status(self) -> dict[str, Any]:
        """The connected member's status: its view, shards and the views it went through."""
        status: dict[str, Any] = self._request(self._core.status).result(self._core.timeout_s)
        return status

    def views(self) -> list[tuple[int, tuple[int, ...]]]:
        """Views seen so far (epoch, members), as reported by the members this client asked."""
        with contextlib.suppress(ClientError, TimeoutError):
            self.status()
        with self._lock:
            return sorted(self._core.views)

    def members(self) -> dict[int, MemberConfig]:
        """Every member the connected member knows by address (those the configuration lists
        and those added at runtime, not those removed for good), by id."""
        status: dict[str, Any] = self._call(self._request(self._core.status, True))
        return members_of(status)

    def remove_member(self, member: int, *, timeout_s: float = REMOVE_TIMEOUT_S) -> dict[str, Any]:
        """Remove `member` from the group for good (a member of the view, or the id of one that
        failed and must never come back), through the connected member; return the view
        without it (`epoch`, `members`, `retired`) once it is installed. The member, if it
        runs, halts and exits, and its id is never let in again. Raises `ClientError` with the
        group's reason when it refuses (the view without it would have fewer live members than
        a majority of the current one; the id is not the cluster's): nothing changed; or when
        no such view came within `timeout_s`: the removal may still happen."""
        future = self._request(self._core.remove_member, member, int(timeout_s * 1000))
        # the member answers within timeout_s; the margin is the round trip and a failover
        view: dict[str, Any] = self._call(future, timeout_s + self._core.timeout_s)
        return view

    def close(self) -> None:
        """Disconnect; requests still unanswered fail: `OutcomeUnknownError` for a command that
        was sent, `NotAppliedError` for one that was not and for queries."""
        with self._lock:
            finished = self._core.close()
            self._room.notify_all()
            sock = self._core.connection
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._out.put(None)  # the writer stops
        _complete(finished)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _complete(finished: list[Any]) -> None:
    """Complete the futures the core says are done (outside the lock: callbacks may submit)."""
    for future, value, error in finished:
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


class SubgroupClient(ShardOperations):
    """Operations of one shard: `submit` and `query` return a `Future` (a command's {member:
    result}, a query's value); an operation called by name blocks for its answer."""

    def _wait(self, pending: Any) -> Any:
        return self._client._call(pending)

    def watch(self, from_version: int = 0, *, member: int | None = None) -> Watch:
        """Every command applied to this shard after `from_version`, in order, each once, as
        `smr.watch.WatchEvent`s, across failovers (`smr.watch`). Its own connection; close it
        (or use it as a context manager) when done."""
        client = self._client
        return Watch(
            client.config,
            self._cls,
            self._subgroup,
            self._shard,
            from_version=from_version,
            member=client.member if member is None else member,
            timeout_s=client.timeout_s,
            dial=(client._secret, client._tls),
            addresses=client._core.client_addresses,
        )


def connect(
    config: str | ClusterConfig,
    *,
    member: int | None = None,
    timeout_s: float = 10.0,
    window_max: int = 4096,
    consistency: str = protocol.READ_LINEARIZABLE,
    silence_s: float | None = 1.0,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    refresh_s: float | None = REFRESH_S,
) -> Client:
    """A client of the cluster described by `config` (a path or a loaded configuration), with at
    most `window_max` requests outstanding, reading at `consistency` ("linearizable", the
    default, or "sequential") unless a query names its own level. Raises ValueError for an
    unknown level. A member silent for `silence_s` while requests are outstanding is asked for
    its status, and given up after as long again (a hung member keeps its connection open);
    None waits for `timeout_s`. Every `refresh_s` the connected member is asked for the
    members' addresses, so that a failover reaches members added since (None: only what
    status answers say).

    When the configuration has a `[tls]` section, every connection is mutual TLS: the client
    presents the certificate `tls_cert` with its key `tls_key` (paths; default: the section's
    `client_cert` and `client_key`), signed by the cluster's CA, and checks that each member
    presents its own (`smr-member-<id>`); certificates authenticate the client, so the cluster
    secret is not used. Raises `smr.transport.tls.TlsError` (a `ConnectionError`) when no
    certificate is configured or given or it cannot be loaded, ValueError for `tls_cert` or
    `tls_key` given with a configuration without `[tls]`, and `ClientError` at once when every
    member refuses the certificate (another CA, expired, revoked) or does not use TLS."""
    check_consistency(consistency)
    if isinstance(config, str):
        config = load(config)
    return Client(
        config,
        member=member,
        timeout_s=timeout_s,
        window_max=window_max,
        consistency=consistency,
        silence_s=silence_s,
        tls_cert=tls_cert,
        tls_key=tls_key,
        refresh_s=refresh_s,
    )
