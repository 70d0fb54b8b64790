"""What a client of the cluster decides, sans-I/O: the part the threaded client (`smr.client`) and
the asyncio client (`smr.aio`) share, so that the two cannot drift.

This module owns the client side of `smr.runtime.protocol` short of its bytes in flight:

- the errors a request fails with, and which one it gets (`NotAppliedError`: certainly not
  applied; `OutcomeUnknownError`: sent and unanswered, it may have been; a plain `ClientError`:
  applied, its answer lost);
- the client's random id, its command sequence numbers (a retry after a failover carries the same
  pair and applies once, `smr.runtime.hosted`) and request ids;
- the table of outstanding requests (at most `window_max`) and what is known of each beyond "on
  the wire, unanswered": on no connection, doubtful (it was on a connection that broke, or was
  redirected), refused as busy since when, redirected how often;
- what each `Response` does: answer its request, schedule the same request again after
  `retry_ms` (back-pressure, for up to `timeout_s`), follow a `redirect` (at most
  `_REDIRECTS_PER_MEMBER_MAX` per member listed), fail every request above a member's
  `frame_bytes_max`;
- reads: the read-your-writes version of each shard (`last_version`) and the consistency level;
- the failover order of members, and the outcomes of commands whose caller stopped waiting;
- the members' client addresses: the configuration's, and those every status answer lists (a
  member added at runtime, which the client's file does not list), but the ids removed for good;
  with `refresh_s` the current member is asked for them now and then (a brief `Status`), so that
  a client fails over to members added since it started even when every member its file lists
  was removed.

`ClientCore` never touches a socket, a thread, a lock, a clock or a random source: a driver
calls it (under its lock, or from its one event loop), passes `now` from a monotonic clock and
an injected `random.Random`, and carries out what the methods return: frames to send (`Send`,
request id and bytes), futures to complete (`Finished`: the driver's token, the value or the
error; a token is whatever the driver waits on, opaque here), and on a response an action
(`WAKE`: a retry is due at `next_due()`; `REDIAL`: give up this connection and fail over).
A connection is an opaque object too: `on_connected(conn, member)` makes it current,
`on_disconnected(conn)` says whether the driver must dial again.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from smr.runtime import protocol
from smr.runtime.config import MemberConfig
from smr.runtime.hosted import decode_result
from smr.transport.wire import encode_frame

if TYPE_CHECKING:
    from smr.api import StateMachine

__all__ = [
    "NOTHING",
    "REDIAL",
    "WAKE",
    "ClientCore",
    "ClientError",
    "Finished",
    "NotAppliedError",
    "OutcomeUnknownError",
    "RequestTooLargeError",
    "Send",
    "check_consistency",
    "members_of",
]

REFRESH_S = 5.0  # how often the clients ask their member for the members' addresses
REMOVE_TIMEOUT_S = 30.0  # how long a `remove_member` waits for the view without the member
_REDIRECTS_PER_MEMBER_MAX = 2  # a request follows at most this many redirects per member listed
_FRAME_SLACK_BYTES = 4096  # a request's encoding beyond its payload is well below this

Finished = tuple[Any, Any, BaseException | None]  # (token, value, error): complete the token
Send = tuple[int, bytes]  # (request id, frame): write it on the current connection

# what `on_response` asks of the driver besides completing tokens
NOTHING = 0
WAKE = 1  # a request waits for a retry: the next one is due at `next_due()`
REDIAL = 2  # a redirect: give up this connection (`on_disconnected`) and dial the preferred member


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
    the state to find out before sending it again as a new command.

    `seq` is the command's sequence number: the asyncio client still learns the outcome of a
    command it gave up waiting for, `await client.outcome(error.seq)` (`smr.aio`)."""

    seq: int | None = None


class RequestTooLargeError(NotAppliedError):
    """A request is larger than the cluster's frame limit (`[limits] frame_bytes_max`): raised
    before it is sent, or when a member with a lower limit refused it."""


class Random(Protocol):
    """What the core draws at random (a `random.Random`, seeded in tests): the client id and
    the order in which members are tried."""

    def getrandbits(self, k: int, /) -> int: ...

    def shuffle(self, x: list[Any], /) -> None: ...


def check_consistency(consistency: str) -> str:
    """`consistency` if it is a read consistency level the protocol knows, else ValueError."""
    if consistency not in protocol.READ_CONSISTENCIES:
        allowed = ", ".join(repr(c) for c in protocol.READ_CONSISTENCIES)
        raise ValueError(f"consistency must be one of {allowed}, not {consistency!r}")
    return consistency


def _frame(request: Any) -> bytes:
    return encode_frame(protocol.FRAME_REQUEST, protocol.encode(request))


def _unknown(request: protocol.Command, message: str) -> OutcomeUnknownError:
    error = OutcomeUnknownError(message)
    error.seq = request.seq
    return error


class ClientCore:
    """One client's requests and what is known of them, sans-I/O (see the module docstring).

    Not thread-safe: a threaded driver calls it under one lock. Requests are made with
    `command`, `query` and `status` (after `has_room()`), answered with `on_response`, resent by
    `on_connected` and `due`, given up with `abandon`, failed with `on_dial_failed` and `close`.
    """

    def __init__(
        self,
        members: Sequence[int],
        *,
        rng: Random,
        addresses: Mapping[int, tuple[str, int]] | None = None,
        refresh_s: float | None = None,
        frame_bytes_max: int,
        timeout_s: float = 10.0,
        window_max: int = 4096,
        consistency: str = protocol.READ_LINEARIZABLE,
        preferred: int | None = None,
        config_path: str = "the configuration",
        outcomes_max: int | None = None,
        silence_s: float | None = 1.0,
    ):
        """`silence_s`: a member that says nothing this long while requests are outstanding is
        asked for its status, and given up (the requests go to another member, applied once)
        if it says nothing for as long again: a hung process (SIGSTOP, a stalled host) keeps
        its connections open. None: wait for `timeout_s`.

        `addresses`: each member's client address (host, client_port), as the configuration
        lists them; the core adds those status answers list (`address`). `refresh_s`: how often
        the connected member is asked for them (None: never; they are still learnt from every
        status answer)."""
        assert members, "a cluster has at least one member"
        assert silence_s is None or silence_s > 0
        assert refresh_s is None or refresh_s > 0
        if window_max < 1:
            raise ValueError(f"window_max must be at least 1, not {window_max}")
        # the members to dial: those the configuration lists and those status answers listed,
        # but the ids removed for good (`_saw_status`)
        self.members = tuple(members)
        self._known: set[int] = set(members)
        self._addresses: dict[int, tuple[str, int]] = dict(addresses or {})
        self.retired: set[int] = set()
        self.refresh_s = refresh_s
        self._refreshed_at: float | None = None  # the current member last asked for addresses
        self.config_path = config_path
        self.timeout_s = timeout_s
        self.window_max = window_max
        self.consistency = check_consistency(consistency)
        # the largest request body a member takes: the configuration's, lowered if a member
        # refuses a smaller frame (its configuration differs)
        self.frame_bytes_max = frame_bytes_max
        self._rng = rng
        self.client_id = rng.getrandbits(63) | 1
        self._seqs = itertools.count(1)
        self._ids = itertools.count(1)
        # the driver's current connection (opaque), the member it reaches, the one to try first
        self.connection: Any = None
        self.member: int | None = None
        self.preferred = preferred
        self.dialing = False  # the driver is dialing: the only dial; requests meanwhile wait
        self.closed = False
        self._redirected: Any = None  # the last connection given up for a redirect
        # request id -> (request, token, state machine class, operation name); token None: the
        # caller stopped waiting (`abandon`), the outcome is kept in _outcomes when it comes
        self._pending: dict[int, tuple[Any, Any, Any, str | None]] = {}
        # What is known of a pending request beyond "on the wire, unanswered" (the common case,
        # which costs nothing): ids on no connection (made while none was up, or refused as busy
        # and waiting to go again), ids that may have been applied (on a connection that broke,
        # or redirected: a member that left the view redirects commands it had taken), and per
        # id when busy answers began and how many redirects it followed.
        self._unsent: set[int] = set()
        self._doubtful: set[int] = set()
        self._busy_since: dict[int, float] = {}
        self._redirects: dict[int, int] = {}
        self._redirects_max = _REDIRECTS_PER_MEMBER_MAX * len(self.members)
        self._retry: list[tuple[float, int]] = []  # (due, request id), sorted: refused as busy
        # outcomes of commands whose caller stopped waiting (seq -> (value, error)), the oldest
        # dropped past outcomes_max; and tokens waiting for a pending request's outcome
        self.outcomes_max = window_max if outcomes_max is None else outcomes_max
        self._outcomes: OrderedDict[int, tuple[Any, BaseException | None]] = OrderedDict()
        self._watchers: dict[int, list[Any]] = {}
        self.last_version: dict[tuple[int, int], int] = {}  # (subgroup, shard) -> version
        self.views: list[tuple[int, tuple[int, ...]]] = []  # (epoch, members) seen in statuses
        self.silence_s = silence_s
        self._heard_at: float | None = None  # when the current member last said something
        self._probed_at: float | None = None  # when it was asked for its status, unanswered
        self.silences = 0  # members given up for their silence (a figure for tests and logs)

    # -- connection -------------------------------------------------------------------------------

    def client_addresses(self) -> dict[int, tuple[str, int]]:
        """Every member this client may dial, with its client address (a watch dials them)."""
        out = {}
        for m in self.members:
            a = self._addresses.get(m)
            if a is not None:
                out[m] = a
        return out

    def address(self, member: int) -> tuple[str, int] | None:
        """Where `member` takes clients (host, client_port): as its own status said, else as
        the configuration lists it; None if neither knows it."""
        return self._addresses.get(member)

    def dial_order(self, avoid: int | None = None) -> list[int]:
        """The members to try, in order, for one round of dialing: the preferred one (the
        `member` asked for, or where a redirect pointed) first, the others shuffled so that
        clients spread; `avoid` (the member just lost) not at all unless it is the only one."""
        members = list(self.members)
        self._rng.shuffle(members)
        if self.preferred in members:
            members.remove(self.preferred)
            members.insert(0, self.preferred)
        if avoid in members and len(members) > 1:
            members.remove(avoid)
        return members

    def dial_error(self, errors: Sequence[str], *, refused: bool = False) -> ClientError:
        """The error of a dial that gave up (`errors`: one line per failed attempt). `refused`:
        it gave up at once because every member it tried refused the client at TLS (a
        certificate unknown, expired or revoked, a member without TLS: dialing again for
        `timeout_s` would not change that)."""
        if self.closed:
            return ClientError("the client was closed")
        detail = "; ".join(errors[-len(self.members) :]) or "closed"
        if refused:
            return ClientError(
                f"the members of {self.config_path} refused the connection: {detail}"
            )
        return ClientError(f"no member of {self.config_path} answered: {detail}")

    def on_connected(self, conn: Any, member: int) -> list[Send] | None:
        """A dial succeeded: `conn` to `member` is current. Returns what to send on it, every
        unanswered request again (same client id and seq: applied once) but those waiting for a
        retry, which go when due so that each is on the wire once; None if the client was
        closed meanwhile (close `conn`)."""
        self.dialing = False
        if self.closed:
            return None
        self.connection, self.member = conn, member
        self._heard_at = self._probed_at = None
        self._refreshed_at = None
        waiting = {rid for _, rid in self._retry}
        sends = []
        for rid, entry in self._pending.items():
            if rid not in waiting:
                sends.append((rid, _frame(entry[0])))
                self._unsent.discard(rid)
        return sends

    def on_disconnected(self, conn: Any) -> bool:
        """`conn` broke (or is given up after a redirect). True: it was the current connection;
        the driver closes it and dials again (`dialing` is set, `member` is the one to avoid).
        False: an old connection, or another caller saw this one break first: nothing to do."""
        if conn is not self.connection or self.closed:
            return False
        self.connection = None
        # what was on the dead connection may have been applied there: from now on only an
        # answer tells
        self._doubtful.update(rid for rid in self._pending if rid not in self._unsent)
        assert not self.dialing, "a connection was up while another was being dialed"
        self.dialing = True
        return True

    def start_dial(self) -> bool:
        """A request was made with no connection up: True if none is being dialed either (a
        dial failed before), so the driver must dial now (`dialing` is set)."""
        if self.connection is not None or self.dialing or self.closed:
            return False
        self.dialing = True
        return True

    def on_dial_failed(self, why: str) -> list[Finished]:
        """The dial gave up (`why`, from `dial_error`): every pending request fails."""
        self.dialing = False
        return self._fail_all(why)

    def close(self, why: str = "the client was closed") -> list[Finished]:
        """The client closes: every pending request fails, and no request is made after."""
        self.closed = True
        return self._fail_all(why)

    # -- requests ---------------------------------------------------------------------------------

    def has_room(self) -> bool:
        """Fewer than `window_max` requests are outstanding: one more may be made."""
        return len(self._pending) < self.window_max

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def window_full_error(self) -> NotAppliedError:
        """The error of a request that waited `timeout_s` for room in the window."""
        return NotAppliedError(
            f"{self.window_max} requests outstanding for {self.timeout_s} s; this one was not sent"
        )

    def next_seq(self) -> int:
        """A new command sequence number (a driver takes one before it waits for room)."""
        return next(self._seqs)

    def command(
        self,
        token: Any,
        subgroup: int,
        shard: int,
        payload: bytes,
        cls: Any,
        operation: str | None = None,
        replies: int = protocol.REPLIES_ALL,
        seq: int | None = None,
    ) -> Send | tuple[int, None]:
        """A command, pending: (request id, frame to send now, or None when no connection is
        up: then `start_dial`). Its answer completes `token` with {member: result}. Raises
        `NotAppliedError` when the client is closed or the window full, `RequestTooLargeError`
        above the frame limit."""
        self._check_open()
        request = protocol.Command(
            next(self._ids),
            subgroup,
            shard,
            self.client_id,
            next(self._seqs) if seq is None else seq,
            payload,
            replies,
        )
        return self._add(request, token, cls, operation)

    def query(
        self,
        token: Any,
        subgroup: int,
        shard: int,
        payload: bytes,
        cls: Any,
        operation: str | None = None,
        min_version: int | None = None,
        consistency: str | None = None,
    ) -> Send | tuple[int, None]:
        """A query at `consistency` (default: the client's) and at or after `min_version`
        (default: the version of the client's last answered command in the shard: read your
        writes); as `command` otherwise. Its answer completes `token` with the value."""
        self._check_open()
        consistency = self.consistency if consistency is None else check_consistency(consistency)
        if min_version is None:
            min_version = self.last_version.get((subgroup, shard), 0)
        request = protocol.Query(
            next(self._ids), subgroup, shard, payload, min_version, consistency
        )
        return self._add(request, token, cls, operation)

    def status(self, token: Any, brief: bool = False) -> Send | tuple[int, None]:
        """A status request; its answer completes `token` with the member's status (`brief`:
        its view and the members' addresses only)."""
        self._check_open()
        return self._add(protocol.Status(next(self._ids), brief), token, None, None)

    def remove_member(self, token: Any, member: int, wait_ms: int) -> Send | tuple[int, None]:
        """Ask the group to remove `member` for good; the answer completes `token` with the view
        without it (`removed`, `epoch`, `members`, `retired`), or fails it with a `ClientError`
        saying why (refused: nothing changed; no view within `wait_ms`: it may still happen)."""
        self._check_open()
        return self._add(protocol.RemoveMember(next(self._ids), member, wait_ms), token, None, None)

    def _check_open(self) -> None:
        if self.closed:
            raise NotAppliedError("the client is closed")
        if len(self._pending) >= self.window_max:
            raise self.window_full_error()

    def _add(self, request: Any, token: Any, cls: Any, operation: str | None) -> Any:
        body = protocol.encode(request)
        if len(body) > self.frame_bytes_max:
            # a member would refuse the frame unread: say so now, not after a timeout
            raise RequestTooLargeError(
                f"a request of {len(body):,} bytes is over the cluster's frame limit of "
                f"{self.frame_bytes_max:,} bytes ([limits] frame_bytes_max in "
                f"{self.config_path}); send less per request, or raise the limit in the "
                "configuration of every member and client"
            )
        rid = request.id
        self._pending[rid] = (request, token, cls, operation)
        if self.connection is not None:
            return rid, encode_frame(protocol.FRAME_REQUEST, body)
        # no connection: sent once one is up (a dial after a failed one starts here)
        self._unsent.add(rid)
        return rid, None

    def is_pending(self, rid: int) -> bool:
        return rid in self._pending

    def rid_of(self, token: Any) -> int | None:
        """The id of the pending request `token` waits for (a scan: for give-ups only)."""
        return next((rid for rid, e in self._pending.items() if e[1] is token), None)

    def abandon(self, rid: int, why: str, *, sent: bool = True) -> list[Finished]:
        """The caller stopped waiting for request `rid` (`why`: its call timed out, or it was
        cancelled); `sent=False` says the driver never wrote it on the current connection.
        A request that was never on the wire is withdrawn: not applied. A command that was
        stays pending, its outcome kept for `outcome(seq)` when it comes; a query is dropped
        (it changes nothing). Returns the token's error (first) and any watchers' outcomes;
        empty if `rid` is not pending (its answer came)."""
        entry = self._pending.get(rid)
        if entry is None:
            return []
        request, token = entry[0], entry[1]
        unsent = rid in self._unsent
        if (unsent or not sent) and rid not in self._doubtful:
            self._drop(rid)
            how = "refused as busy, or no connection" if unsent else "not yet written"
            error: ClientError = NotAppliedError(f"{why}; it was not sent ({how})")
            if type(request) is protocol.Command:
                self.keep_outcome(request.seq, None, error)  # the caller stopped waiting
            return self._finish(rid, request, token, None, error)
        if type(request) is not protocol.Command:
            self._drop(rid)
            self._doubtful.discard(rid)
            return self._finish(
                rid, request, token, None, NotAppliedError(f"{why} from member {self.member}")
            )
        self._pending[rid] = (request, None, entry[2], entry[3])  # its outcome: kept
        error = _unknown(
            request,
            f"{why} from member {self.member}: the command was sent, and may or may not have "
            "been applied",
        )
        return [] if token is None else [(token, None, error)]

    def _drop(self, rid: int) -> None:
        del self._pending[rid]
        if self._retry:
            self._retry = [(t, r) for t, r in self._retry if r != rid]
        self._unsent.discard(rid)
        self._busy_since.pop(rid, None)
        self._redirects.pop(rid, None)

    # -- outcomes of commands whose caller stopped waiting ----------------------------------------

    def watch(self, seq: int, token: Any) -> bool:
        """Complete `token` with the outcome of pending command `seq` when it comes. False if no
        such command is pending (see `outcome`). A scan of the window: not for the hot path."""
        for rid, entry in self._pending.items():
            request = entry[0]
            if type(request) is protocol.Command and request.seq == seq:
                self._watchers.setdefault(rid, []).append(token)
                return True
        return False

    def outcome(self, seq: int) -> tuple[Any, BaseException | None] | None:
        """The kept outcome (value, error) of command `seq`, which its caller stopped waiting
        for; None if none is kept (still pending, never made, answered to its caller, or one
        of more than `outcomes_max` since)."""
        return self._outcomes.get(seq)

    def keep_outcome(self, seq: int, value: Any, error: BaseException | None) -> None:
        """Keep the outcome of command `seq` (one the driver withdrew before making it)."""
        self._outcomes[seq] = (value, error)
        self._outcomes.move_to_end(seq)
        while len(self._outcomes) > self.outcomes_max:
            self._outcomes.popitem(last=False)

    def _finish(
        self, rid: int, request: Any, token: Any, value: Any, error: BaseException | None
    ) -> list[Finished]:
        """What completes once request `rid` (already out of _pending) has its outcome: its
        token, unless its caller stopped waiting (then the outcome is kept), and its watchers."""
        finished: list[Finished] = []
        if token is not None:
            finished.append((token, value, error))
        else:
            assert type(request) is protocol.Command, "only a command outlives its caller"
            self.keep_outcome(request.seq, value, error)
        if self._watchers:
            for watcher in self._watchers.pop(rid, ()):
                finished.append((watcher, value, error))
        return finished

    # -- answers ----------------------------------------------------------------------------------

    def on_response(
        self, response: protocol.Response, conn: Any, now: float
    ) -> tuple[list[Finished], int]:
        """An answer that came on `conn` (which may no longer be current): what completes, and
        `NOTHING`, `WAKE` or `REDIAL` (see the module docstring)."""
        if conn is self.connection:
            self._heard_at, self._probed_at = now, None
        rid = response.id
        entry = self._pending.get(rid)
        if entry is None:  # a late or second answer (a resend's), or a refused frame
            if response.frame_bytes_max and not response.ok:
                return self._on_frame_refused(response), NOTHING
            if response.status:  # a probe's, a refresh's, or a shutting-down member's
                self._saw_status(response.status)
            return [], NOTHING
        request = entry[0]
        why = response.error
        if not response.ok:
            if response.retry_ms:
                # back-pressure (the member's submit queue or inbox was full): the same request,
                # later, until it has been refused for timeout_s. A refused read, too: the member
                # could not serve it yet (a linearizable read without its confirmation)
                since = self._busy_since.setdefault(rid, now)
                if now - since <= self.timeout_s:
                    bisect.insort(self._retry, (now + response.retry_ms / 1000, rid))
                    self._unsent.add(rid)  # refused: on no connection until sent again
                    return [], WAKE
                why = (
                    f"member {self.member} refused it as busy for {now - since:.1f} s "
                    f"({response.error})"
                )
            elif response.redirect:
                # this member does not host the shard (or is joining, restarting, leaving):
                # try one that does, a bounded number of times. A command is doubtful from now
                # on: a member that left the view redirects the commands it had taken
                count = self._redirects.get(rid, 0) + 1
                if type(request) is protocol.Command:
                    self._doubtful.add(rid)
                if count <= self._redirects_max:
                    self._redirects[rid] = count
                    self.preferred = response.redirect[0]
                    if conn is self.connection and conn is not self._redirected:
                        # one failover per connection, not one per request redirected on it
                        self._redirected = conn
                        return [], REDIAL
                    return [], NOTHING
                why = f"{response.error} (after {count} redirects)"
        del self._pending[rid]
        if self._busy_since or self._redirects or self._unsent:
            self._busy_since.pop(rid, None)
            self._redirects.pop(rid, None)
            self._unsent.discard(rid)
        doubtful = False
        if self._doubtful and rid in self._doubtful:
            self._doubtful.discard(rid)
            doubtful = True
        token, cls, operation = entry[1], entry[2], entry[3]
        value: Any = None
        error: BaseException | None = None
        kind = type(request)
        if response.ok:
            try:
                if kind is protocol.Command:
                    key = (request.subgroup, request.shard)
                    self.last_version[key] = max(self.last_version.get(key, 0), response.version)
                    value = {
                        m: decode_result(cls, r, operation)
                        for m, r in sorted(response.results.items())
                    }
                elif kind is protocol.Query:
                    value = decode_result(cls, response.value, operation)
                else:
                    value = response.status
                    self._saw_status(value)
            except Exception as e:  # CommandError, or a result the type cannot decode
                value, error = None, e
        elif response.version and kind is protocol.Command:
            # applied, its answer lost (too large to send): later reads still see it
            key = (request.subgroup, request.shard)
            self.last_version[key] = max(self.last_version.get(key, 0), response.version)
            error = ClientError(response.error)
        elif doubtful and kind is protocol.Command:
            # refused here, but it may have been applied through an earlier connection
            error = _unknown(
                request,
                f"{why}; the command was sent before to a member whose connection was lost or "
                "which redirected it: it may or may not have been applied",
            )
        elif kind is protocol.RemoveMember:
            # refused (nothing changed), or no view in time (it may still happen): the message
            # says which
            error = ClientError(why)
        else:
            error = NotAppliedError(why)
        return self._finish(rid, request, token, value, error), NOTHING

    def _on_frame_refused(self, response: protocol.Response) -> list[Finished]:
        """A member refused a frame above its `frame_bytes_max` (its body, with the request id,
        unread): fail every pending request above that limit, so that none is sent again on the
        next connection, and fail later ones before they are sent."""
        limit = response.frame_bytes_max
        self.frame_bytes_max = min(self.frame_bytes_max, limit)
        finished: list[Finished] = []
        for rid, (request, token, _, _) in list(self._pending.items()):
            payload = getattr(request, "payload", b"")
            if len(payload) + _FRAME_SLACK_BYTES > limit and len(protocol.encode(request)) > limit:
                self._drop(rid)
                error: ClientError = RequestTooLargeError(f"member {self.member}: {response.error}")
                if rid in self._doubtful and type(request) is protocol.Command:
                    error = _unknown(
                        request,
                        f"{error}; it was sent before to a member whose connection was lost: "
                        "it may or may not have been applied",
                    )
                self._doubtful.discard(rid)
                finished += self._finish(rid, request, token, None, error)
        return finished

    def _fail_all(self, why: str) -> list[Finished]:
        """Every pending request fails, with what is known of each: a query, or a command never
        sent and never doubtful, was not applied; any other command may have been."""
        pending, self._pending = self._pending, {}
        finished: list[Finished] = []
        for rid, (request, token, _, _) in pending.items():
            sent = rid not in self._unsent or rid in self._doubtful
            error: ClientError
            if type(request) is not protocol.Command:
                error = NotAppliedError(why)
            elif not sent:
                error = NotAppliedError(f"{why}; the command was not sent, so it was not applied")
            else:
                error = _unknown(
                    request,
                    f"{why}; the command was sent and not answered: it may or may not have "
                    "been applied",
                )
            finished += self._finish(rid, request, token, None, error)
        self._unsent.clear()
        self._doubtful.clear()
        self._retry.clear()
        self._busy_since.clear()
        self._redirects.clear()
        self._watchers.clear()
        return finished

    def _saw_status(self, status: Any) -> None:
        for epoch, members in status.get("views", []):
            view = (epoch, tuple(members))
            if view not in self.views:
                self.views.append(view)
        addresses, retired = status.get("addresses"), status.get("retired")
        if addresses is None and retired is None:
            return  # a member of an older version
        try:
            learnt = {
                int(a["id"]): (str(a["host"]), int(a["client_port"])) for a in addresses or ()
            }
            gone = {int(m) for m in retired or ()}
        except (TypeError, KeyError, ValueError):
            return  # not what this client reads: nothing learnt
        self._addresses.update(learnt)
        self._known.update(learnt)
        self.retired |= gone
        dialable = sorted(
            m for m in self._known - self.retired if not self._addresses or m in self._addresses
        )
        if dialable:  # else every member known was removed: the dial says so
            self.members = tuple(dialable)

    # -- retries ----------------------------------------------------------------------------------

    @property
    def retrying(self) -> bool:
        """Some request waits to be sent again (refused as busy)."""
        return bool(self._retry)

    def next_due(self) -> float | None:
        """When the next retry, silence check or refresh is due (the driver's clock), or None."""
        due = self._retry[0][0] if self._retry else None
        if self.silence_s is not None and self.connection is not None and self._pending:
            since = self._probed_at if self._probed_at is not None else self._heard_at
            check = 0.0 if since is None else since + self.silence_s
            due = check if due is None else min(due, check)
        if self.refresh_s is not None and self.connection is not None:
            since = self._refreshed_at
            check = 0.0 if since is None else since + self.refresh_s
            due = check if due is None else min(due, check)
        return due

    def refresh(self, now: float) -> list[Send]:
        """Every `refresh_s` while connected (the period starting at the first call after a
        connection): a brief status request to send, whose answer teaches the client the
        members' addresses (not pending: nothing waits for it)."""
        if self.refresh_s is None or self.connection is None:
            return []
        if self._refreshed_at is None:
            self._refreshed_at = now
            return []
        if now - self._refreshed_at < self.refresh_s:
            return []
        self._refreshed_at = now
        rid = next(self._ids)
        return [(rid, _frame(protocol.Status(rid, True)))]

    def check_silence(self, now: float) -> tuple[list[Send], bool]:
        """Is the current member silent while requests are outstanding? Returns a status
        request to send (asking it to show it is alive) and whether to give it up (then the
        driver fails over, as after a broken connection)."""
        if self.silence_s is None or self.connection is None:
            return [], False
        if not any(rid not in self._unsent for rid in self._pending):
            self._heard_at, self._probed_at = now, None  # idle: nothing to hear about
            return [], False
        if self._heard_at is None:
            self._heard_at = now
        if self._probed_at is None:
            if now - self._heard_at < self.silence_s:
                return [], False
            self._probed_at = now
            rid = next(self._ids)  # not pending: its answer only shows the member is alive
            return [(rid, _frame(protocol.Status(rid)))], False
        if now - self._probed_at < self.silence_s:
            return [], False
        self.silences += 1
        return [], True

    def due(self, now: float) -> list[Send]:
        """The requests whose retry is due: send them now (on no connection, they stay unsent
        and go with `on_connected`)."""
        retry = self._retry
        if not retry or retry[0][0] > now:
            return []
        k = bisect.bisect_right(retry, now, key=lambda tr: tr[0])
        taken, self._retry = retry[:k], retry[k:]
        if self.connection is None:
            return []
        sends = []
        for _, rid in taken:
            entry = self._pending.get(rid)
            if entry is not None:
                self._unsent.discard(rid)  # on the wire from now on
                sends.append((rid, _frame(entry[0])))
        return sends


def members_of(status: dict[str, Any]) -> dict[int, MemberConfig]:
    """The members a status answer lists by address (`Node.brief_status`), by id."""
    return {
        a["id"]: MemberConfig(
            a["id"], a["host"], a["port"], a["client_port"], a.get("metrics_port")
        )
        for a in status.get("addresses", [])
    }


class ShardOperations:
    """The operations of one shard as methods, for both clients: `submit` and `query` encode
    the operation and hand it to the client (a threaded `Future`, an asyncio `Call`); calling
    an operation by its name waits for its answer, the way the client's `_wait` does."""

    def __init__(
        self,
        client: Any,
        cls: type[StateMachine],
        subgroup: int,
        shard: int,
        replies: int = protocol.REPLIES_ALL,
        consistency: str | None = None,
    ):
        self._client = client
        self._cls = cls
        self._subgroup = subgroup
        self._shard = shard
        self._replies = replies
        self._consistency = consistency

    def _wait(self, pending: Any) -> Any:
        raise NotImplementedError

    def submit(self, operation: str, /, *args: Any, **kwargs: Any) -> Any:
        """Send a command without waiting: its {member: result} once answered."""
        payload = self._cls.encode_command(operation, *args, **kwargs)
        return self._client.command(
            self._subgroup, self._shard, payload, self._cls, operation, self._replies
        )

    def submit_many(self, operation: str, arguments: Iterable[Sequence[Any]], /) -> list[Any]:
        """Send one command of `operation` per argument tuple in `arguments`, in order, without
        waiting: a list of what `submit` returns, one per command. For a pipelined writer this
        costs less per command than a loop of `submit` (one lock and one frame hand-off per
        window's worth); every argument is encoded before anything is sent, so a bad one raises
        `OperationError` and sends none. Once they are made, a command that cannot be sent fails
        its own entry (`NotAppliedError`), never the call."""
        encode = self._cls.encode_command
        payloads = []
        for args in arguments:
            if not isinstance(args, (tuple, list)):
                raise TypeError(
                    f"submit_many takes a tuple of arguments per command, not {type(args).__name__}"
                    f" (for one argument: [(x,), (y,)])"
                )
            payloads.append(encode(operation, *args))
        return self._client.commands(
            self._subgroup, self._shard, payloads, self._cls, operation, self._replies
        )

    def query(
        self,
        operation: str,
        /,
        *args: Any,
        consistency: str | None = None,
        min_version: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send a query without waiting: its value, read at the connected member at
        `consistency` ("linearizable" or "sequential"; default: the subgroup client's, else the
        client's) and at or after `min_version` (default: the version of this client's last
        answered command in the shard: read your writes)."""
        payload = self._cls.encode_query(operation, *args, **kwargs)
        return self._client.query(
            self._subgroup,
            self._shard,
            payload,
            self._cls,
            operation,
            min_version,
            self._consistency if consistency is None else consistency,
        )

    def __getattr__(self, name: str) -> Any:
        op = self._cls._by_name.get(name)
        if op is None:
            raise AttributeError(f"{self._cls.__name__} has no operation {name!r}")

        def call(*args: Any, **kwargs: Any) -> Any:
            if op.kind == "command":
                return self._wait(self.submit(name, *args, **kwargs))
            return self._wait(self.query(name, *args, **kwargs))

        return call
