"""The asyncio client: the threaded client's operations, failover, exactly-once retries and read
consistency levels, on one event loop.

This module owns the asyncio side of the client: its streams, tasks, timers and futures. What it
decides is `smr.client_core`'s, the same core the threaded client (`smr.client`) drives, so the
two behave alike: a request refused as busy goes again after `retry_ms`, a redirect is followed a
bounded number of times, a broken connection fails over to another member and its unanswered
commands go again with the same (client id, seq), and a failure is a `NotAppliedError` or an
`OutcomeUnknownError` by what is known of it.

    import smr.aio
    from smr.statemachines import KVStore

    async with smr.aio.connect("cluster.toml") as client:  # or client = await smr.aio.connect()
        kv = client.subgroup(KVStore)
        await kv.put("a", b"1")                # {member: result} of every replica
        await kv.get("a")                      # the value (linearizable by default)
        call = kv.submit("put", "b", b"2")     # sent at once, awaited later: pipelining
        await asyncio.gather(*(kv.submit("put", f"k{i}", b"v") for i in range(1000)))
        await kv.query("get", "a", consistency="sequential")
        await client.status()

Every operation sends its request when it is called and returns a `Call`, an `asyncio.Future`;
awaiting it gives the answer. An operation called as a method (`kv.put(...)`) gives up after
`timeout_s` like the threaded client's blocking calls; `submit` and `query` wait as long as it
takes (use `asyncio.wait_for` or `asyncio.timeout`). With `window_max` requests outstanding a
call waits for room (at most `window_max` of them, each for up to `timeout_s`, then
`NotAppliedError`).

Cancellation never leaves a command half-known. Cancelling a `Call` (directly, or through
`wait_for`, a timeout or a cancelled task) withdraws a command that was not yet written to a
connection: it is not applied. One that was sent stays tracked: it may still be applied, and
`await client.outcome(call)` (or `client.outcome(seq)`, `seq` from `call.seq` or from
`OutcomeUnknownError.seq`) gives its outcome once known: the {member: result}, or
`NotAppliedError`, `OutcomeUnknownError` (the client gave up on it: no member reachable, or
closed), `CommandError`. The client keeps the outcomes of the last `window_max` commands whose
callers stopped waiting.

`kv.watch(from_version)` is the threaded `smr.watch` on the loop: `async for event in
kv.watch(0):` gets every command applied to the shard after that version, in order, each once,
across failovers (its own connection; `async with` closes it), or `WatchTrimmedError`.

With a `[tls]` section the connections are mutual TLS (asyncio's own), with the certificate and
the checks of `smr.connect`: `tls_cert=` and `tls_key=`, or the section's `client_cert`.

Members added at runtime are learnt and used as by `smr.connect` (every `refresh_s`, and from
every status answer); `await client.remove_member(id)` and `await client.members()` are the
threaded client's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import Callable, Generator
from typing import Any

from smr.api import StateMachine
from smr.client_core import (
    REDIAL,
    REFRESH_S,
    REMOVE_TIMEOUT_S,
    WAKE,
    ClientCore,
    ClientError,
    Finished,
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
from smr.transport.wire import (
    FrameDecoder,
    FrameError,
    close_writer,
    dial_settings,
    encode_frame,
    open_connection,
)
from smr.watch import RETRY_S, WatchEvent, WatchTrimmedError, take_events, watch_order

__all__ = [
    "Call",
    "Client",
    "ClientError",
    "CommandError",
    "NotAppliedError",
    "OutcomeUnknownError",
    "RequestTooLargeError",
    "SubgroupClient",
    "Watch",
    "WatchEvent",
    "WatchTrimmedError",
    "connect",
]

_REPLIES = {"all": protocol.REPLIES_ALL, "one": protocol.REPLIES_ONE}
_READ_BYTES_MAX = 1 << 20  # one read of a connection, and its stream's buffer
_DIAL_PAUSE_S = 0.05  # between rounds of dialing every member


class Call(asyncio.Future[Any]):
    """One request, sent: an `asyncio.Future` of its answer ({member: result} for a command, the
    value for a query). `seq` is a command's sequence number (None for a query): with it,
    `client.outcome(seq)` gives the outcome of a command whose call was cancelled or timed out.

    `cancel()` stops waiting, and never leaves the command half-known: a command not yet written
    to a connection is withdrawn (not applied); one that was sent stays tracked by the client."""

    __slots__ = ("_client", "_detached", "_rid", "_timer", "operation", "seq")

    def __init__(self, client: Client, seq: int | None, operation: str | None, loop: Any) -> None:
        super().__init__(loop=loop)
        self._client = client
        self._rid = 0  # the request's id once made (0: waiting for room in the window)
        self._timer: asyncio.TimerHandle | None = None  # a method call's timeout_s
        self._detached = False  # the caller stopped waiting: the outcome is the client's
        self.seq = seq
        self.operation = operation

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._client._on_cancelled(self)
        return True


class _Connection:
    """One authenticated connection to a member: its streams and its reader task."""

    __slots__ = ("member", "reader", "task", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, member: int):
        self.reader = reader
        self.writer = writer
        self.member = member
        self.task: asyncio.Task[None] | None = None

    def close(self) -> None:
        close_writer(self.writer)


class Client:
    """An asyncio connection to a cluster, made by `await smr.aio.connect(...)`:
    `subgroup(T)` gives the operations of a hosted type. Close it (`await client.close()`, or
    `async with`) when done. Use it from the event loop that made it."""

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
        # the handshake's key and the TLS context (None: plaintext), as in `smr.connect`
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
        self._loop = asyncio.get_running_loop()
        # frames made since the last flush, by request id: written together once per pass of the
        # loop (one system call for a gather of a thousand), and a request still here when it is
        # cancelled was never sent
        self._unflushed: dict[int, bytes] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._retry_at: float | None = None
        # calls waiting for room in the window, oldest first: (deadline, call, make, args);
        # at most window_max (waiting_max), each for up to timeout_s
        self._waiting: collections.deque[tuple[float, Call, Callable[..., Any], tuple]] = (
            collections.deque()
        )
        self._waiting_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # dials and readers: cancelled by close
        self._outcome_tasks: set[asyncio.Task[Any]] = set()  # outcome waits: they end by close

    async def _start(self) -> None:
        conn = await self._dial(None)
        sends = self._core.on_connected(conn, conn.member)
        assert sends == [], "nothing is pending before the first connection"
        conn.task = self._spawn(self._read(conn))
        self._schedule_retry()  # the refresh of this member's addresses

    # the core's settings and state, read here
    @property
    def timeout_s(self) -> float:
        return self._core.timeout_s

    @property
    def window_max(self) -> int:
        return self._core.window_max

    @property
    def frame_bytes_max(self) -> int:
        return self._core.frame_bytes_max

    @property
    def client_id(self) -> int:
        return self._core.client_id

    @property
    def consistency(self) -> str:
        """The read consistency level of queries that do not name one."""
        return self._core.consistency

    @property
    def member(self) -> int | None:
        """The member this client is connected to."""
        return self._core.member

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered (or waiting for room in the window)."""
        return self._core.outstanding + len(self._waiting)

    # -- connection -------------------------------------------------------------------------------

    def _spawn(self, coro: Any, tasks: set[asyncio.Task[Any]] | None = None) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        tasks = self._tasks if tasks is None else tasks
        tasks.add(task)  # a reference, so that it is not collected while it runs
        task.add_done_callback(tasks.discard)
        return task

    async def _dial(self, avoid: int | None) -> _Connection:
        """A new authenticated connection to some member (`avoid` not in the first round), trying
        for `timeout_s`."""
        core = self._core
        deadline = self._loop.time() + core.timeout_s
        errors: list[str] = []
        while self._loop.time() < deadline and not core.closed:
            order = core.dial_order(avoid)
            refused = 0
            for m in order:
                address = core.address(m)
                if address is None:  # a member a redirect named, whose address no status gave
                    errors.append(f"member {m}: no address known")
                    continue
                try:
                    reader, writer = await open_connection(
                        address[0],
                        address[1],
                        self._secret,
                        my_id=core.client_id & 0x7FFFFFFF,
                        role="client",
                        timeout_s=min(2.0, core.timeout_s),
                        limit=_READ_BYTES_MAX,
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
                if core.closed:
                    close_writer(writer)
                    break
                return _Connection(reader, writer, m)
            if refused == len(order):
                # every member refused us at TLS: a certificate or configuration problem that
                # dialing again for timeout_s does not fix
                raise core.dial_error(errors, refused=True)
            avoid = None
            await asyncio.sleep(_DIAL_PAUSE_S)
        raise core.dial_error(errors)

    async def _read(self, conn: _Connection) -> None:
        decoder = FrameDecoder(self.config.frame_bytes_max + 4096)
        decode = protocol.decode_response
        try:
            while True:
                data = await conn.reader.read(_READ_BYTES_MAX)
                if not data:
                    break
                for kind, body in decoder.feed(data):
                    if kind == protocol.FRAME_RESPONSE:
                        self._on_response(decode(body), conn)
        except (OSError, FrameError, ValueError):
            pass
        if not self._core.closed:
            self._failover(conn)

    def _failover(self, conn: _Connection) -> None:
        """`conn` broke, or is given up after a redirect: dial another member in a task, while
        requests made meanwhile wait in the core (sent once a connection is up)."""
        if not self._core.on_disconnected(conn):
            return  # an old connection, or one already given up
        conn.close()
        self._spawn(self._redial(self._core.member))

    async def _redial(self, avoid: int | None) -> None:
        try:
            conn = await self._dial(avoid)
        except ClientError as e:
            self._complete(self._core.on_dial_failed(str(e)))
            self._admit()
            return
        sends = self._core.on_connected(conn, conn.member)
        if sends is None:  # closed meanwhile
            conn.close()
            return
        conn.task = self._spawn(self._read(conn))
        for rid, frame in sends:
            self._write(rid, frame)
        self._schedule_retry()

    def _write(self, rid: int, frame: bytes) -> None:
        self._unflushed[rid] = frame
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        frames, self._unflushed = self._unflushed, {}
        conn = self._core.connection
        if conn is None or not frames or conn.writer.is_closing():
            return  # failing over: every unanswered request is sent again once connected
        # no drain: the window bounds what the transport buffers
        conn.writer.write(b"".join(frames.values()))
        self._schedule_retry()  # the silence check of the member, now that requests are out

    # -- answers ----------------------------------------------------------------------------------

    def _on_response(self, response: protocol.Response, conn: _Connection) -> None:
        finished, action = self._core.on_response(response, conn, self._loop.time())
        if finished:
            self._complete(finished)
            if self._waiting:
                self._admit()
        if action == WAKE:
            self._schedule_retry()
        elif action == REDIAL:
            self._failover(conn)

    def _complete(self, finished: list[Finished]) -> None:
        for future, value, error in finished:
            if type(future) is Call:
                timer = future._timer
                if timer is not None:
                    timer.cancel()
                    future._timer = None
            if future.done():  # cancelled, or timed out: its outcome is the client's now
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _schedule_retry(self) -> None:
        due = self._core.next_due()
        if due is None or (self._retry_at is not None and self._retry_at <= due):
            return
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        self._retry_at = due
        self._retry_handle = self._loop.call_at(due, self._send_due)

    def _send_due(self) -> None:
        self._retry_handle = self._retry_at = None
        now = self._loop.time()
        for rid, frame in self._core.due(now):
            self._write(rid, frame)
        probe, give_up = self._core.check_silence(now)
        for rid, frame in probe:
            self._write(rid, frame)
        for rid, frame in self._core.refresh(now):
            self._write(rid, frame)
        conn = self._core.connection
        if give_up and conn is not None:
            # the member said nothing, even to a status request: it hangs (its connection
            # stays open); the unanswered requests go to another member
            self._failover(conn)
        self._schedule_retry()

    # -- requests ---------------------------------------------------------------------------------

    def _request(
        self, seq: int | None, operation: str | None, make: Callable[..., Any], *args: Any
    ) -> Call:
        """A call of `make(call, *args)` (the core's command, query or status), made now if the
        window has room, else when it has."""
        core = self._core
        if core.closed:
            raise NotAppliedError("the client is closed")
        call = Call(self, seq, operation, self._loop)
        if self._waiting or not core.has_room():
            if len(self._waiting) >= core.window_max:  # waiting_max
                raise NotAppliedError(
                    f"{core.window_max} requests outstanding and as many waiting for room; "
                    "this one was not sent"
                )
            self._waiting.append((self._loop.time() + core.timeout_s, call, make, args))
            if self._waiting_handle is None:
                self._waiting_handle = self._loop.call_at(self._waiting[0][0], self._expire_waiting)
            return call
        self._made(call, make(call, *args))
        return call

    def _made(self, call: Call, made: tuple[int, bytes | None]) -> None:
        rid, frame = made
        call._rid = rid
        if frame is not None:
            self._write(rid, frame)
        elif self._core.start_dial():
            # no connection, none being dialed (a dial failed): this request starts one
            self._spawn(self._redial(None))

    def _admit(self) -> None:
        """Make the calls waiting for room, oldest first, while the window has it."""
        waiting, core = self._waiting, self._core
        while waiting and core.has_room() and not core.closed:
            _, call, make, args = waiting.popleft()
            try:
                self._made(call, make(call, *args))
            except ClientError as e:  # a request over the frame limit
                if call.seq is not None:
                    core.keep_outcome(call.seq, None, e)
                call.set_exception(e)
                continue
            if call._timer is not None:  # a method call: timeout_s for the answer from now on
                call._timer.cancel()
                call._timer = self._loop.call_later(core.timeout_s, self._expire, call)

    def _expire_waiting(self) -> None:
        self._waiting_handle = None
        now = self._loop.time()
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            _, call, _, _ = waiting.popleft()
            self._withdraw_waiting(call, self._core.window_full_error())
        if waiting:
            self._waiting_handle = self._loop.call_at(waiting[0][0], self._expire_waiting)

    def _withdraw_waiting(self, call: Call, error: ClientError) -> None:
        """A call that never left the queue for room fails (or was cancelled): not applied."""
        if call.seq is not None:
            self._core.keep_outcome(call.seq, None, error)
        if call._timer is not None:
            call._timer.cancel()
            call._timer = None
        if not call.done():
            call.set_exception(error)

    def _on_cancelled(self, call: Call) -> None:
        """`call` was cancelled: its request is given up (withdrawn if it was never written,
        else tracked for `outcome`)."""
        self._give_up(call, "cancelled")

    def _expire(self, call: Call) -> None:
        """A method call got no answer within timeout_s: it fails with what is known."""
        call._timer = None
        if not call.done():
            self._give_up(call, f"no answer within {self._core.timeout_s} s")

    def _give_up(self, call: Call, why: str) -> None:
        if call._detached:
            return
        call._detached = True
        if call._timer is not None:
            call._timer.cancel()
            call._timer = None
        if call._rid == 0:  # still waiting for room in the window
            for entry in self._waiting:
                if entry[1] is call:
                    self._waiting.remove(entry)
                    break
            self._withdraw_waiting(
                call, NotAppliedError(f"{why}; it was not sent (waiting for room in the window)")
            )
            return
        rid = call._rid
        finished = self._core.abandon(rid, why, sent=rid not in self._unflushed)
        if not self._core.is_pending(rid):
            self._unflushed.pop(rid, None)  # withdrawn: it must not be written after all
        self._complete(finished)  # the call's own error, unless it is cancelled
        if self._waiting:
            self._admit()

    def _method_call(self, call: Call) -> Call:
        """`call` as a method call (`kv.put(...)`): it fails after timeout_s without an answer,
        as the threaded client's blocking calls do (a command sent: `OutcomeUnknownError`)."""
        if not call.done():
            call._timer = self._loop.call_later(self._core.timeout_s, self._expire, call)
        return call

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
        replica to its result; `"one"`: only the result of the member this client talks to.
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
    ) -> Call:
        seq = self._core.next_seq()
        return self._request(
            seq,
            operation,
            self._core.command,
            subgroup,
            shard,
            payload,
            cls,
            operation,
            replies,
            seq,
        )

    def commands(
        self,
        subgroup: int,
        shard: int,
        payloads: list[bytes],
        cls: type[StateMachine],
        operation: str | None = None,
        replies: int = protocol.REPLIES_ALL,
    ) -> list[Call]:
        """Many commands at once (`SubgroupClient.submit_many`), in order: a call each. Their
        frames go out in one write, as every request made in one pass of the loop does. Only a
        closed client raises: a command over the frame limit, or with no room to wait for the
        window, fails its own call (not applied)."""
        if self._core.closed:
            raise NotAppliedError("the client is closed")
        calls = []
        for payload in payloads:
            try:
                calls.append(self.command(subgroup, shard, payload, cls, operation, replies))
            except NotAppliedError as e:  # over the frame limit, no room to wait, or closed
                failed = Call(self, None, operation, self._loop)
                failed.set_exception(e)
                calls.append(failed)
        return calls

    def query(
        self,
        subgroup: int,
        shard: int,
        payload: bytes,
        cls: type[StateMachine],
        operation: str | None = None,
        min_version: int | None = None,
        consistency: str | None = None,
    ) -> Call:
        if consistency is not None:
            check_consistency(consistency)
        return self._request(
            None,
            operation,
            self._core.query,
            subgroup,
            shard,
            payload,
            cls,
            operation,
            min_version,
            consistency,
        )

    async def status(self) -> dict[str, Any]:
        """The connected member's status: its view, shards and the views it went through.
        Raises TimeoutError after timeout_s without an answer."""
        call = self._request(None, None, self._core.status)
        status: dict[str, Any] = await asyncio.wait_for(call, self._core.timeout_s)
        return status

    async def views(self) -> list[tuple[int, tuple[int, ...]]]:
        """Views seen so far (epoch, members), as reported by the members this client asked."""
        with contextlib.suppress(ClientError, TimeoutError):
            await self.status()
        return sorted(self._core.views)

    async def members(self) -> dict[int, MemberConfig]:
        """Every member the connected member knows by address (configured, and added at
        runtime; not those removed for good), by id, as `smr.Client.members`."""
        call = self._request(None, None, self._core.status, True)
        status: dict[str, Any] = await asyncio.wait_for(call, self._core.timeout_s)
        return members_of(status)

    async def remove_member(
        self, member: int, *, timeout_s: float = REMOVE_TIMEOUT_S
    ) -> dict[str, Any]:
        """Remove `member` from the group for good, as `smr.Client.remove_member`: the view
        without it once installed, or `ClientError` with the group's reason (refused: nothing
        changed; no view within `timeout_s`: it may still happen)."""
        call = self._request(None, None, self._core.remove_member, member, int(timeout_s * 1000))
        view: dict[str, Any] = await asyncio.wait_for(call, timeout_s + self._core.timeout_s)
        return view

    def outcome(self, call: Call | int) -> asyncio.Future[Any]:
        """The outcome of a command this client made (its `Call`, or its `seq`), once known:
        a future of its {member: result}, or of `NotAppliedError`, `OutcomeUnknownError` (the
        client gave up on it), `CommandError`. For a command whose call was cancelled or timed
        out, this is how its outcome is learnt; for any other, it is the call's own answer.
        Raises ValueError for a query, or for a seq of which nothing is known (never made by
        this client, answered to a call that was not given up, or more than `window_max` given
        up commands ago)."""
        if isinstance(call, Call):
            if call.seq is None:
                raise ValueError("a query has no outcome to learn: it changes nothing")
            if not call.done():
                # its answer is the outcome, unless it is cancelled or times out first
                return self._spawn(self._outcome_after(call), self._outcome_tasks)
            if not call.cancelled() and not call._detached:
                return _settled(self._loop, call)
            seq = call.seq
        else:
            seq = call
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._core.watch(seq, future):
            return future
        kept = self._core.outcome(seq)
        if kept is None:
            raise ValueError(
                f"no outcome known of command {seq}: not made by this client, answered to its "
                f"call, or more than {self._core.outcomes_max} given-up commands ago"
            )
        value, error = kept
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
        return future

    async def _outcome_after(self, call: Call) -> Any:
        await asyncio.wait((call,))
        return await self.outcome(call)

    async def close(self) -> None:
        """Disconnect; requests still unanswered fail: `OutcomeUnknownError` for a command that
        was sent, `NotAppliedError` for one that was not and for queries (a given-up command's
        outcome, for `outcome`, likewise)."""
        core = self._core
        if core.closed:
            return
        finished = core.close()
        waiting, self._waiting = self._waiting, collections.deque()
        for _, call, _, _ in waiting:
            self._withdraw_waiting(
                call, NotAppliedError("the client was closed; it was not sent, so not applied")
            )
        self._complete(finished)
        for handle in (self._flush_handle, self._retry_handle, self._waiting_handle):
            if handle is not None:
                handle.cancel()
        self._unflushed.clear()
        conn = core.connection
        if conn is not None:
            conn.close()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if conn is not None:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _settled(loop: Any, call: Call) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = loop.create_future()
    error = call.exception()
    if error is None:
        future.set_result(call.result())
    else:
        future.set_exception(error)
    return future


class SubgroupClient(ShardOperations):
    """Operations of one shard: every operation of the type is a method returning a `Call`
    (a command's {member: result}, a query's value) that fails after timeout_s without an
    answer; `submit` and `query` return one that waits as long as it takes."""

    def _wait(self, pending: Any) -> Any:
        return self._client._method_call(pending)

    def watch(self, from_version: int = 0, *, member: int | None = None) -> Watch:
        """Every command applied to this shard after `from_version`, in order, each once, as
        `smr.watch.WatchEvent`s, across failovers: `async for event in kv.watch(v):`. Its own
        connection; close it (`await watch.close()`, or `async with`) when done."""
        client = self._client
        return Watch(
            client,
            self._cls,
            self._subgroup,
            self._shard,
            from_version=from_version,
            member=client.member if member is None else member,
        )


class Watch:
    """`smr.watch.Watch` on the event loop: an async iterator of `WatchEvent`s. When its member
    goes away it asks another from the last version it handed out, so nothing is missed and
    nothing comes twice; `__anext__` raises `ClientError` after the client's `timeout_s` with no
    member to watch from, and `WatchTrimmedError` for a version the members no longer keep."""

    def __init__(
        self,
        client: Client,
        cls: type[StateMachine],
        subgroup: int,
        shard: int,
        *,
        from_version: int = 0,
        member: int | None = None,
    ):
        self._client = client
        self.cls = cls
        self.subgroup = subgroup
        self.shard = shard
        self.version = from_version  # the last version handed out (or started after)
        self.member: int | None = None  # the member watched now
        self.resumes = 0  # reconnections after the first
        self._prefer = member
        self._avoid: set[int] = set()
        self._rng = random.Random()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder: FrameDecoder | None = None
        self._frames: collections.deque[bytes] = collections.deque()
        self._events: collections.deque[WatchEvent] = collections.deque()
        self._closed = False
        self._rid = 0

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            await self._fill()
        event = self._events.popleft()
        self.version = event.version
        return event

    async def close(self) -> None:
        """End the watch: an iteration in progress ends."""
        self._closed = True
        self._drop()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            close_writer(writer)

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        timeout_s = self._client.timeout_s
        deadline = loop.time() + timeout_s
        while not self._events and not self._closed:
            if self._reader is None:
                why = await self._open()
                if why is not None:
                    if loop.time() > deadline:
                        raise ClientError(
                            f"no member to watch subgroup {self.subgroup} shard {self.shard} "
                            f"from for {timeout_s} s: {why}"
                        )
                    await asyncio.sleep(RETRY_S)
                continue
            try:
                await self._receive()
            except (OSError, FrameError) as e:
                if not self._closed:
                    self._lost(f"connection to member {self.member} lost: {e}")
            if self._reader is not None:
                deadline = loop.time() + timeout_s  # a member is there: wait on

    async def _open(self) -> str | None:
        """Connect to a member and start the watch there; None once it is in place, else why
        no member took it."""
        client = self._client
        why = "no member listed"
        addresses = client._core.client_addresses()
        for m in watch_order(list(addresses), self._avoid, self._prefer, self._rng):
            host, port = addresses[m]
            try:
                reader, writer = await open_connection(
                    host,
                    port,
                    client._secret,
                    my_id=self._rng.getrandbits(31) | 1,
                    role="client",
                    timeout_s=min(client.timeout_s, 5.0),
                    limit=_READ_BYTES_MAX,
                    tls=client._tls,
                    member=m,
                )
            except (OSError, FrameError) as e:
                why = str(e)
                self._avoid.add(m)
                continue
            self._rid += 1
            request = protocol.Watch(self._rid, self.subgroup, self.shard, self.version)
            self._reader, self._writer = reader, writer
            self._decoder = FrameDecoder(client.config.frame_bytes_max + 4096)
            self._frames.clear()
            try:
                writer.write(encode_frame(protocol.FRAME_REQUEST, protocol.encode(request)))
                first = await self._next_response()
            except (OSError, FrameError) as e:
                self._drop()
                why = f"member {m}: {e}"
                self._avoid.add(m)
                continue
            if first.ok:
                self.member = m
                self._prefer = None
                self._avoid.clear()
                take_events(self._events, self.version, self.cls, first)
                return None
            self._drop()
            if first.trimmed:
                raise WatchTrimmedError(first.error, first.trimmed)
            why = f"member {m}: {first.error}"
            self._avoid.add(m)
            if first.redirect:
                self._prefer = self._rng.choice(first.redirect)
        return why

    async def _next_response(self) -> protocol.Response:
        while not self._frames:
            reader, decoder = self._reader, self._decoder
            if reader is None or decoder is None:
                raise ConnectionError("the watch was closed")
            data = await reader.read(_READ_BYTES_MAX)
            if not data:
                raise ConnectionError("the member closed the connection")
            self._frames.extend(
                body for kind, body in decoder.feed(data) if kind == protocol.FRAME_RESPONSE
            )
        try:
            return protocol.decode_response(self._frames.popleft())
        except ValueError as e:
            raise FrameError(f"a malformed response: {e}") from None

    async def _receive(self) -> None:
        response = await self._next_response()
        if response.ok:
            take_events(self._events, self.version, self.cls, response)
            return
        if response.trimmed:
            await self.close()
            raise WatchTrimmedError(response.error, response.trimmed)
        if response.redirect:
            self._prefer = self._rng.choice(response.redirect)
        self._lost(f"member {self.member}: {response.error}")

    def _lost(self, why: str) -> None:
        self._drop()
        if self.member is not None:
            self._avoid.add(self.member)
        self.member = None
        self.resumes += 1


class _Connecting:
    """What `connect` returns: awaited, the connected `Client`; or an async context manager
    that closes it at the end of the block."""

    __slots__ = ("_client", "_kwargs")

    def __init__(self, **kwargs: Any):
        self._kwargs = kwargs
        self._client: Client | None = None

    async def _connect(self) -> Client:
        kwargs = dict(self._kwargs)
        config = kwargs.pop("config")
        if isinstance(config, str):
            config = load(config)
        client = Client(config, **kwargs)
        await client._start()
        return client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._connect().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._connect()
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        assert self._client is not None
        await self._client.close()


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
) -> _Connecting:
    """An asyncio client of the cluster described by `config` (a path or a loaded
    configuration): `client = await smr.aio.connect(...)`, or `async with smr.aio.connect(...)
    as client:`. At most `window_max` requests are outstanding; queries read at `consistency`
    ("linearizable", the default, or "sequential") unless they name their own level. Raises
    ValueError for an unknown level, `ClientError` (when awaited) if no member answers within
    `timeout_s`. A member silent for `silence_s` while requests are outstanding is asked for its
    status and given up after as long again (None: wait for `timeout_s`), as in `smr.connect`;
    `refresh_s` as there too (how often the members' addresses are asked for).

    With a `[tls]` section in the configuration the connections are mutual TLS, as in
    `smr.connect`: the client presents `tls_cert` with its key `tls_key` (default: the section's
    `client_cert` and `client_key`) and checks each member's certificate. When awaited, raises
    `smr.transport.tls.TlsError` when no certificate is configured or given or it cannot be
    loaded, ValueError for `tls_cert` or `tls_key` with a configuration without `[tls]`, and
    `ClientError` at once when every member refuses the certificate or does not use TLS."""
    check_consistency(consistency)
    return _Connecting(
        config=config,
        member=member,
        timeout_s=timeout_s,
        window_max=window_max,
        consistency=consistency,
        silence_s=silence_s,
        tls_cert=tls_cert,
        tls_key=tls_key,
        refresh_s=refresh_s,
    )
