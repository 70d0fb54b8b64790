"""The client protocol: what a client and a member say to each other over TCP.

This module owns the messages. A connection starts with the mutual HMAC handshake of
`smr.transport.wire` (role "client", the cluster secret), then carries frames (`wire.encode_frame`)
of kind `FRAME_REQUEST` from the client and `FRAME_RESPONSE` from the member, each body one
MessagePack message below. Requests carry an id the response repeats; responses may come out of
order (a query answers before an earlier command is stable).

- `Command`: an ordered update of one shard (the operation encoded by `StateMachine
  .encode_command`), with the client's id and sequence number so that a retry after a failover
  applies once. Answered when the shard's mode says it is done (stable, or persisted everywhere)
  with every replica's result (`results`: member -> result bytes of `smr.runtime.hosted`), or
  with the answering member's result alone when `replies` is `REPLIES_ONE` (the guarantee of the
  mode is the same: every member received it, or persisted it).
- `Query`: a read of one shard at a `consistency` level. `READ_LINEARIZABLE` (what clients ask
  by default): the member answers once it has confirmed through the table that it is still in
  the current view with a majority behind it and has applied everything committed when the read
  arrived (a read index), and refuses with a retriable error when it cannot. `READ_SEQUENTIAL`:
  served locally once this member has applied `min_version` (0: now), the client's
  read-your-writes.
- `Status`: the member's view, status and shards, and every member it knows by address
  (`addresses`: `id`, `host`, `port`, `client_port`, `metrics_port`; the configured members and
  those a view's roster added, but the `retired` ones): a client learns from it the members its
  own configuration file does not list. `brief`: only that and the view (`Node.brief_status`),
  what a client asks now and then. A member that shuts down sends every client one unasked
  response with id 0 and a brief status, for the same reason.
- `RemoveMember`: remove `member` from the group for good (`Replica.remove`): answered once a
  view whose roster retires it is installed (`status`: `removed`, `epoch`, `members`,
  `retired`), at once if it is retired already (so that a retry after a failover is answered
  alike), refused with the reason when the core refuses (the view without it would have fewer
  live members than a majority, this member is not active: then with `redirect`) or no view
  came within `wait_ms`. A removed id is never let in again.
- `Watch`: every command applied to one shard (ordered or durable) after `from_version`, in
  order, each once: answered by a stream of responses with the request's id, each holding
  `events` (`[version, operation, result]`: the command's payload without the client envelope,
  and its result bytes of `smr.runtime.hosted`), until the member cannot go on (it is leaving
  the shard, restarting, stopping, or the watcher fell too far behind: `ok` false, with
  `redirect`); a watch resumes anywhere from the last version it saw. `from_version` below what
  the member still keeps is refused with `trimmed` set to the oldest version it can resume
  after.

A refused request says what the client should do: `redirect` names members to try instead (this
one does not host the shard, is joining, left the view or is stopping), `retry_ms` asks it to send
the same request here again after that long (the shard's submit queue is full: back-pressure).
A request frame above the member's `frame_bytes_max` is answered with id 0 (its body, which holds
the id, was never read) and `frame_bytes_max` set to the limit; the member then closes the
connection once the client has sent the rest. The client fails its requests above that limit
with the error and sends the others again on a new connection.
"""

from __future__ import annotations

import msgspec

FRAME_REQUEST = 1
FRAME_RESPONSE = 2


REPLIES_ALL = 0  # a command is answered with every replica's result (the reply map)
REPLIES_ONE = 1  # with the result of the member that took it: no reply frames, one hop less


class Command(msgspec.Struct, tag="command", frozen=True):
    id: int
    subgroup: int
    shard: int
    client: int
    seq: int
    payload: bytes
    replies: int = REPLIES_ALL


READ_LINEARIZABLE = "linearizable"
READ_SEQUENTIAL = "sequential"
READ_CONSISTENCIES = (READ_LINEARIZABLE, READ_SEQUENTIAL)


class Query(msgspec.Struct, tag="query", frozen=True):
    id: int
    subgroup: int
    shard: int
    payload: bytes
    min_version: int = 0
    consistency: str = READ_LINEARIZABLE


class Status(msgspec.Struct, tag="status", frozen=True):
    id: int
    brief: bool = False  # only the view and the members' addresses (`Node.brief_status`)


class RemoveMember(msgspec.Struct, tag="remove_member", frozen=True):
    id: int
    member: int
    wait_ms: int = 30_000  # for the view that retires it; the member caps it


class Watch(msgspec.Struct, tag="watch", frozen=True):
    id: int
    subgroup: int
    shard: int
    from_version: int = 0


Request = Command | Query | Status | Watch | RemoveMember


class Response(msgspec.Struct, frozen=True):
    id: int
    ok: bool
    error: str = ""
    version: int = 0
    results: dict[int, bytes] = {}  # command: member -> result
    value: bytes = b""  # query: the result
    status: dict[str, object] = {}  # status: see Node.status()
    redirect: list[int] = []  # members that host the shard, when this one does not
    retry_ms: int = 0  # busy: the same member takes the request again after this long
    # a frame above this member's limit (id 0: its body, with the request id, was not read):
    # the client fails its requests larger than this, and then the connection closes
    frame_bytes_max: int = 0
    # watch: [version, operation, result] of commands applied, in order
    events: list[tuple[int, bytes, bytes]] = []
    # watch refused: the versions up to here are no longer kept by this member (resume after it)
    trimmed: int = 0


_request_decoder = msgspec.msgpack.Decoder(Request)
_response_decoder = msgspec.msgpack.Decoder(Response)
encode = msgspec.msgpack.encode


def decode_request(body: bytes) -> Command | Query | Status | Watch | RemoveMember:
    """Raises `msgspec.ValidationError`/`DecodeError` on a malformed request."""
    return _request_decoder.decode(body)


def decode_response(body: bytes) -> Response:
    return _response_decoder.decode(body)
