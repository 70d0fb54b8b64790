"""The Python client: connect to a running cluster and call a replicated type's operations.

This module owns the client side of `smr.runtime.protocol`:

    import smr
    from smr.statemachines import KVStore

    client = smr.connect("cluster.toml")          # any member; fails over to another
    kv = client.subgroup(KVStore)                 # shard 0 of the subgroup hosting KVStore
    kv.put("a", b"1")                             # a command: {member: result} of every replica
    kv.get("a")                                   # a query: the value, read at one member
    future = kv.submit("put", "b", b"2")          # pipelined: a future of {member: result}
    client.close()

A command carries the client's random id and a sequence number; after a connection fails the
client reconnects to another member and sends its unanswered commands again with the same
numbers, and the replicas apply each one once (`smr.runtime.hosted`). Queries are served by the
member the client is connected to, at or after the version of the client's last answered command
(read-your-writes across a failover). Commands that raised at the replicas raise `CommandError`.

A command that fails says what the client knows of it: `NotAppliedError` when it certainly did not
enter the log (a member refused it before it could, or it was never sent), `OutcomeUnknownError`
when it was sent and no answer came (the connection was lost, or the call timed out): it may have
been applied, and a new call is a new command (a new sequence number), so read the state before
making it again. A query changes nothing, so its failures are `NotAppliedError`. Both are
`ClientError`s.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import contextlib
import itertools
import logging
import queue
import random
import socket
import threading
import time
from typing import Any

from smr.api import StateMachine
from smr.runtime import protocol
from smr.runtime.config import ClusterConfig, load
from smr.runtime.hosted import CommandError, decode_result
from smr.transport.wire import FrameDecoder, FrameError, encode_frame
from smr.transport.wire import connect as wire_connect

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
_REDIRECTS_PER_MEMBER_MAX = 2  # a request follows at most this many redirects per member listed


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


class ClientError(Exception):
    """The cluster could not be reached or refused the request. A command's failure is one of
    the two subclasses when the client can tell (`NotAppliedError`, `OutcomeUnknownError`); a
    plain `ClientError` for a command says it was applied and only its answer was lost."""


class NotAppliedError(ClientError):
    """The request certainly had no effect: a member refused it before it could enter the log
    (it does not host the shard, its send window stayed full, the frame is too large, ...) or it
    was never sent. Sending it again is safe. Every failed query raises this one."""


class OutcomeUnknownError(ClientError):
    """A command was sent and no answer came (the connection was lost and no other member took
    it, the client was closed, or the call timed out): it may or may not have been applied. Read
    the state to find out before sending it again as a new command."""


class RequestTooLargeError(NotAppliedError):
    """A request is larger than the cluster's frame limit (`[limits] frame_bytes_max`): raised
    before it is sent, or when a member with a lower limit refused it."""


class Client:
    """A connection to a cluster, built by `smr.connect`: `subgroup(T)` gives the operations of
    a hosted type. Close it (or use it as a context manager) when done."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        member: int | None = None,
        timeout_s: float = 10.0,
        window_max: int = 4096,
    ):
        self.config = config
        self.timeout_s = timeout_s
        self.window_max = window_max
        # the largest request body a member takes: the configuration's, lowered if a member
        # refuses a smaller frame (its configuration differs)
        self.frame_bytes_max = config.frame_bytes_max
        self.client_id = random.getrandbits(63) | 1
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        # room in the window: waited on only when it is full (a semaphore per request cost more
        # than the rest of a small command's client side)
        self._room = threading.Condition(self._lock)
        self._room_waiters = 0
        # request id -> (request, future, decode)
        self._pending: dict[int, tuple[Any, Future, Any]] = {}
        # What the client knows of a pending request beyond "on the wire, unanswered" (the common
        # case, which costs nothing): ids on no connection (made while none was up, or refused as
        # busy and waiting to go again), ids that may have been applied (on a connection that
        # broke, or redirected: a member that left the view redirects commands it had taken), and
        # per id when busy answers began and how many redirects it followed. Under the lock.
        self._unsent: set[int] = set()
        self._doubtful: set[int] = set()
        self._busy_since: dict[int, float] = {}
        self._redirects: dict[int, int] = {}
        self._redirects_max = _REDIRECTS_PER_MEMBER_MAX * max(1, len(config.members))
        # frames for the writer thread, the only one that sends: what accumulates while it is
        # sending goes out in one send (one system call per command was the client's bound)
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._retry: list[tuple[float, Any]] = []  # (due, request): refused as busy, sent again
        self._writer = threading.Thread(target=self._write, daemon=True, name="smr-client-writer")
        self._sock: socket.socket | None = None
        self._member: int | None = None
        # a thread is dialing (with the lock released): the only one; requests meanwhile wait
        # in _pending and are sent once it connects
        self._dialing = False
        self._redirected: socket.socket | None = None  # the last connection left for a redirect
        self._preferred = member
        self._closed = False
        self._last_version: dict[tuple[int, int], int] = {}
        self._views: list[tuple[int, tuple[int, ...]]] = []
        self._reader: threading.Thread | None = None
        sock, m = self._dial()
        with self._lock:
            self._attach_locked(sock, m)
        self._writer.start()

    # -- connection -------------------------------------------------------------------------------

    def _candidates(self) -> list[int]:
        members = list(self.config.members)
        random.shuffle(members)
        if self._preferred in members:
            members.remove(self._preferred)
            members.insert(0, self._preferred)
        return members

    def _dial(self, avoid: int | None = None) -> tuple[socket.socket, int]:
        """A new authenticated connection to some member (`avoid` not in the first round), trying
        for `timeout_s`.
        Called without the lock: it touches nothing the other threads use."""
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
                return sock, m
            avoid = None
            time.sleep(0.05)
        if self._closed:
            raise ClientError("the client was closed")
        detail = "; ".join(errors[-len(self.config.members) :]) or "closed"
        raise ClientError(f"no member of {self.config.path} answered: {detail}")

    def _attach_locked(self, sock: socket.socket, member: int) -> None:
        self._sock, self._member = sock, member
        self._reader = threading.Thread(
            target=self._read, args=(sock,), daemon=True, name=f"smr-client-{member}"
        )
        self._reader.start()

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
                        self._on_response(protocol.decode_response(body), sock)
        except (OSError, FrameError, ValueError):
            pass
        if not self._closed and sock is self._sock:
            self._failover(sock)

    def _failover(self, dead: socket.socket) -> None:
        """The connection `dead` broke (or was given up after a redirect): dial another member,
        without the lock, so that requests made meanwhile only wait in _pending. Of the threads
        that see the same dead connection (its reader, redirected responses) only the first
        gets past the check and dials; the others return at once."""
        with self._lock:
            if dead is not self._sock:
                return
            avoid = self._member
            self._sock = None
            with contextlib.suppress(OSError):
                dead.close()
            # what was on the dead connection may have been applied there: from now on only an
            # answer tells
            self._doubtful.update(rid for rid in self._pending if rid not in self._unsent)
            assert not self._dialing, "a connection was up while another was being dialed"
            self._dialing = True
        self._redial(avoid)

    def _redial(self, avoid: int | None) -> None:
        try:
            sock, m = self._dial(avoid=avoid)
        except ClientError as e:
            with self._lock:
                self._dialing = False
                failed = self._take_all_locked()
            for rid, request, future in failed:
                future.set_exception(self._failure(rid, request, str(e)))
            return
        with self._lock:
            self._dialing = False
            if self._closed:
                with contextlib.suppress(OSError):
                    sock.close()
                return
            self._attach_locked(sock, m)
            # unanswered requests again, with the same (client, seq): applied once; those
            # refused as busy go when due, so that each is on the wire once
            waiting = {r.id for _, r in self._retry}
            for rid, (request, _, _) in self._pending.items():
                if rid not in waiting:
                    self._send_locked(request)
                    self._unsent.discard(rid)

    def _take_all_locked(self) -> list[tuple[int, Any, Future]]:
        """Every pending request, taken out (to be failed outside the lock, with what is known
        of each still in _unsent and _doubtful until `_failure` has read it)."""
        taken = [(rid, request, future) for rid, (request, future, _) in self._pending.items()]
        self._pending.clear()
        self._retry.clear()
        self._busy_since.clear()
        self._redirects.clear()
        self._room.notify_all()
        return taken

    def _failure(self, rid: int, request: Any, why: str) -> ClientError:
        """The error a request taken out of _pending unanswered fails with, given why and what
        the client knows of it: a query, or a command never sent and never doubtful, was not
        applied; any other command may have been."""
        with self._lock:
            sent = rid not in self._unsent or rid in self._doubtful
            self._unsent.discard(rid)
            self._doubtful.discard(rid)
        if not isinstance(request, protocol.Command):
            return NotAppliedError(why)
        if not sent:
            return NotAppliedError(f"{why}; the command was not sent, so it was not applied")
        return OutcomeUnknownError(
            f"{why}; the command was sent and not answered: it may or may not have been applied"
        )

    def _send_locked(self, request: Any) -> None:
        self._out.put(encode_frame(protocol.FRAME_REQUEST, protocol.encode(request)))

    def _write(self) -> None:
        out = self._out
        while True:
            timeout = None
            if self._retry:
                timeout = max(0.0, self._retry[0][0] - time.monotonic())
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
            if self._retry:
                frames.extend(self._due_retries())
            if not frames:
                continue
            sock = self._sock
            if sock is None:
                continue  # failing over: every unanswered request is sent again once connected
            # an OSError: the reader notices, fails over, and these are sent again
            with contextlib.suppress(OSError):
                sock.sendall(frames[0] if len(frames) == 1 else b"".join(frames))

    def _due_retries(self) -> list[bytes]:
        now = time.monotonic()
        with self._lock:
            due = [r for t, r in self._retry if t <= now and r.id in self._pending]
            self._retry = [(t, r) for t, r in self._retry if t > now]
            for r in due:
                self._unsent.discard(r.id)  # on the wire from now on
            return [encode_frame(protocol.FRAME_REQUEST, protocol.encode(r)) for r in due]

    def _on_response(self, response: protocol.Response, sock: socket.socket) -> None:
        """An answer that came on `sock` (which may already have been replaced)."""
        refused: list[tuple[int, Any, Future]] = []
        with self._lock:
            entry = self._pending.get(response.id)
            if entry is None:
                if response.frame_bytes_max and not response.ok:
                    refused = self._refused_locked(response)
            else:
                request, future, decode = entry
                rid = response.id
                why = response.error
                if not response.ok and response.retry_ms and isinstance(request, protocol.Command):
                    # back-pressure: the member's submit queue was full; same request, later,
                    # until it has been refused for timeout_s
                    now = time.monotonic()
                    since = self._busy_since.setdefault(rid, now)
                    if now - since <= self.timeout_s:
                        self._retry.append((now + response.retry_ms / 1000, request))
                        self._retry.sort(key=lambda tr: tr[0])
                        self._unsent.add(rid)  # refused: on no connection until sent again
                        self._out.put(b"")  # the writer recomputes its wait
                        return
                    why = (
                        f"member {self._member} refused it as busy for {now - since:.1f} s "
                        f"({response.error})"
                    )
                elif not response.ok and response.redirect:
                    # this member does not host the shard (or is joining, restarting, leaving):
                    # try one that does, a bounded number of times. A command is doubtful from
                    # now on: a member that left the view redirects the commands it had taken
                    count = self._redirects.get(rid, 0) + 1
                    if isinstance(request, protocol.Command):
                        self._doubtful.add(rid)
                    if count <= self._redirects_max:
                        self._redirects[rid] = count
                        self._preferred = response.redirect[0]
                        if self._redirected is not sock:  # one thread per connection, not per
                            self._redirected = sock  # request redirected on it
                            threading.Thread(
                                target=self._failover, args=(sock,), daemon=True
                            ).start()
                        return
                    why = f"{response.error} (after {count} redirects)"
                del self._pending[rid]
                if self._room_waiters:
                    self._room.notify()
                if self._busy_since or self._redirects or self._unsent:
                    self._busy_since.pop(rid, None)
                    self._redirects.pop(rid, None)
                    self._unsent.discard(rid)
                if response.ok and self._doubtful:
                    self._doubtful.discard(rid)
        if entry is None:  # futures complete outside the lock: their callbacks may submit
            for rid, request, waiting in refused:
                error: ClientError = RequestTooLargeError(
                    f"member {self._member}: {response.error}"
                )
                with self._lock:
                    doubtful = rid in self._doubtful
                    self._doubtful.discard(rid)
                if doubtful and isinstance(request, protocol.Command):
                    error = OutcomeUnknownError(
                        f"{error}; it was sent before to a member whose connection was lost: "
                        "it may or may not have been applied"
                    )
                waiting.set_exception(error)
            return
        if not response.ok:
            if response.version and isinstance(request, protocol.Command):
                # applied, its answer lost (too large to send): later reads still see it
                key = (request.subgroup, request.shard)
                self._last_version[key] = max(self._last_version.get(key, 0), response.version)
                with self._lock:
                    self._doubtful.discard(rid)
                future.set_exception(ClientError(response.error))
                return
            future.set_exception(self._refusal(rid, request, why))
            return
        try:
            future.set_result(decode(response))
        except Exception as e:
            future.set_exception(e)

    def _refusal(self, rid: int, request: Any, why: str) -> ClientError:
        """A member's refusal: the request did not enter its log, so it was not applied, unless
        it is a command that may have been applied through an earlier connection."""
        with self._lock:
            doubtful = rid in self._doubtful
            self._doubtful.discard(rid)
        if not doubtful or not isinstance(request, protocol.Command):
            return NotAppliedError(why)
        return OutcomeUnknownError(
            f"{why}; the command was sent before to a member whose connection was lost or "
            "which redirected it: it may or may not have been applied"
        )

    def _refused_locked(self, response: protocol.Response) -> list[tuple[int, Any, Future]]:
        """A member refused a frame above its `frame_bytes_max` (its body, with the request id,
        unread): take out every pending request above that limit, so that none is sent again
        on the next connection, and fail later ones before they are sent."""
        limit = response.frame_bytes_max
        self.frame_bytes_max = min(self.frame_bytes_max, limit)
        refused = []
        for rid, (request, future, _) in list(self._pending.items()):
            payload = getattr(request, "payload", b"")
            if len(payload) + 4096 > limit and len(protocol.encode(request)) > limit:
                del self._pending[rid]
                self._unsent.discard(rid)
                self._busy_since.pop(rid, None)
                self._redirects.pop(rid, None)
                refused.append((rid, request, future))
        if refused and self._room_waiters:
            self._room.notify_all()
        return refused

    def _request(self, make: Any, decode: Any) -> Future:
        if self._closed:
            raise NotAppliedError("the client is closed")
        future: Future = Future()
        with self._lock:
            if len(self._pending) >= self.window_max:
                self._room_waiters += 1
                try:
                    room = self._room.wait_for(
                        lambda: len(self._pending) < self.window_max or self._closed,
                        timeout=self.timeout_s,
                    )
                finally:
                    self._room_waiters -= 1
                if not room:
                    raise NotAppliedError(
                        f"{self.window_max} requests outstanding for {self.timeout_s} s; "
                        "this one was not sent"
                    )
            if self._closed:  # closed while this call waited for the lock or for room
                raise NotAppliedError("the client is closed")
            request = make(next(self._ids))
            body = protocol.encode(request)
            if len(body) > self.frame_bytes_max:
                # a member would refuse the frame unread: say so now, not after a timeout
                raise RequestTooLargeError(
                    f"a request of {len(body):,} bytes is over the cluster's frame limit of "
                    f"{self.frame_bytes_max:,} bytes ([limits] frame_bytes_max in "
                    f"{self.config.path}); send less per request, or raise the limit in the "
                    "configuration of every member and client"
                )
            self._pending[request.id] = (request, future, decode)
            if self._sock is not None:
                self._out.put(encode_frame(protocol.FRAME_REQUEST, body))
            else:
                # no connection: sent once one is up (a dial after a failed one starts here)
                self._unsent.add(request.id)
                if not self._dialing and not self._closed:
                    self._dialing = True
                    threading.Thread(target=self._redial, args=(None,), daemon=True).start()
        return future

    def _give_up(self, future: Future, timeout_s: float) -> ClientError | None:
        """A blocking call's answer did not come within timeout_s. A request on no connection
        (refused as busy, or waiting for one) is withdrawn: not applied. One on the wire stays
        pending (its answer may still come, to its future): its outcome is unknown. None: the
        answer came meanwhile."""
        why = f"no answer within {timeout_s} s"
        with self._lock:
            rid = next((r for r, (_, f, _) in self._pending.items() if f is future), None)
            if rid is None:
                return None
            request = self._pending[rid][0]
            if rid not in self._unsent or rid in self._doubtful:
                if isinstance(request, protocol.Command):
                    return OutcomeUnknownError(
                        f"{why} from member {self._member}: the command was sent, and may or "
                        "may not have been applied"
                    )
                return NotAppliedError(f"{why} from member {self._member}")
            del self._pending[rid]
            self._retry = [(t, r) for t, r in self._retry if r.id != rid]
            self._unsent.discard(rid)
            self._busy_since.pop(rid, None)
            self._redirects.pop(rid, None)
            if self._room_waiters:
                self._room.notify()
        error = NotAppliedError(f"{why}; it was not sent (refused as busy, or no connection)")
        future.set_exception(error)
        return error

    def _call(self, future: Future) -> Any:
        """A blocking call: the answer of `future` within timeout_s, or the error saying what
        is known of the request."""
        try:
            return future.result(self.timeout_s)
        except TimeoutError:
            if future.done():  # the answer, or its error, came as the wait ended
                return future.result()
            error = self._give_up(future, self.timeout_s)
            if error is None:
                return future.result()
            raise error from None

    # -- the API ---------------------------------------------------------------------------------

    def subgroup(
        self, cls: type[StateMachine], shard: int = 0, *, replies: str = "all"
    ) -> SubgroupClient:
        """Operations of `cls` in `shard`. `replies="all"`: a command's answer maps every
        replica to its result; `"one"`: only the result of the member this client talks to, sent
        as soon as the mode's guarantee holds (one network hop and the reply frames saved)."""
        if replies not in _REPLIES:
            raise ValueError(f"replies must be 'all' or 'one', not {replies!r}")
        return SubgroupClient(self, cls, self.config.subgroup_index(cls), shard, _REPLIES[replies])

    def command(
        self,
        subgroup: int,
        shard: int,
        payload: bytes,
        cls: type[StateMachine],
        operation: str | None = None,
        replies: int = protocol.REPLIES_ALL,
    ) -> Future:
        seq = next(self._seq)
        key = (subgroup, shard)

        def decode(response: protocol.Response) -> dict[int, Any]:
            self._last_version[key] = max(self._last_version.get(key, 0), response.version)
            return {
                m: decode_result(cls, r, operation) for m, r in sorted(response.results.items())
            }

        return self._request(
            lambda rid: protocol.Command(
                rid, subgroup, shard, self.client_id, seq, payload, replies
            ),
            decode,
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
        """Disconnect; requests still unanswered fail: `OutcomeUnknownError` for a command that
        was sent, `NotAppliedError` for one that was not and for queries."""
        self._closed = True
        self._out.put(None)  # the writer stops
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.close()
            failed = self._take_all_locked()
        for rid, request, future in failed:
            future.set_exception(self._failure(rid, request, "the client was closed"))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SubgroupClient:
    """Operations of one shard: commands return every replica's result, queries a value."""

    def __init__(
        self,
        client: Client,
        cls: type[StateMachine],
        subgroup: int,
        shard: int,
        replies: int = protocol.REPLIES_ALL,
    ):
        self._client = client
        self._cls = cls
        self._subgroup = subgroup
        self._shard = shard
        self._replies = replies

    def submit(self, operation: str, /, *args: Any, **kwargs: Any) -> Future:
        """Send a command without waiting: a Future of {member: result}."""
        payload = self._cls.encode_command(operation, *args, **kwargs)
        return self._client.command(
            self._subgroup, self._shard, payload, self._cls, operation, self._replies
        )

    def query(
        self, operation: str, /, *args: Any, min_version: int | None = None, **kwargs: Any
    ) -> Future:
        """Send a query without waiting: a Future of its value, read at the connected member at
        or after `min_version` (default: the version of this client's last answered command)."""
        payload = self._cls.encode_query(operation, *args, **kwargs)
        return self._client.query(
            self._subgroup, self._shard, payload, self._cls, operation, min_version
        )

    def __getattr__(self, name: str) -> Any:
        op = self._cls._by_name.get(name)
        if op is None:
            raise AttributeError(f"{self._cls.__name__} has no operation {name!r}")
        client = self._client

        def call(*args: Any, **kwargs: Any) -> Any:
            if op.kind == "command":
                return client._call(self.submit(name, *args, **kwargs))
            return client._call(self.query(name, *args, **kwargs))

        return call


def connect(
    config: str | ClusterConfig,
    *,
    member: int | None = None,
    timeout_s: float = 10.0,
    window_max: int = 4096,
) -> Client:
    """A client of the cluster described by `config` (a path or a loaded configuration), with at
    most `window_max` requests outstanding."""
    if isinstance(config, str):
        config = load(config)
    return Client(config, member=member, timeout_s=timeout_s, window_max=window_max)
