"""The client's sans-I/O core (`smr.client_core`) driven by hand: no socket, thread or clock. Each
test makes requests, feeds the answers a member would send, and reads what the core hands back:
frames to send, tokens to complete, and an action (retry later, give up the connection)."""

from __future__ import annotations

import random

import pytest

from smr.client_core import (
    NOTHING,
    REDIAL,
    WAKE,
    ClientCore,
    ClientError,
    NotAppliedError,
    OutcomeUnknownError,
    RequestTooLargeError,
    check_consistency,
)
from smr.runtime import protocol
from smr.runtime.hosted import RESULT_ERROR, RESULT_OK, CommandError
from smr.statemachines import KVStore
from smr.transport.wire import FrameDecoder

NONE = RESULT_OK + KVStore.encode_result(None)


def _core(**kw) -> ClientCore:
    kw.setdefault("frame_bytes_max", 1 << 20)
    kw.setdefault("timeout_s", 5.0)
    members = kw.pop("members", (1, 2, 3))
    return ClientCore(members, rng=random.Random(7), **kw)


def _request(frame: bytes):
    ((kind, body),) = FrameDecoder(1 << 22).feed(frame)
    assert kind == protocol.FRAME_REQUEST
    return protocol.decode_request(body)


def _put(core: ClientCore, token, key: str = "k", value: bytes = b"v"):
    payload = KVStore.encode_command("put", key, value)
    return core.command(token, 0, 0, payload, KVStore, "put")


def _ok(rid: int, version: int = 7, members=(1, 2, 3)) -> protocol.Response:
    return protocol.Response(rid, True, version=version, results={m: NONE for m in members})


class Conn:
    """A stand-in for a driver's connection: the core only compares its identity."""


@pytest.fixture
def core() -> ClientCore:
    c = _core()
    c.on_connected(Conn(), 1)
    return c


# -- requests and answers --------------------------------------------------------------------------


def test_a_command_is_framed_with_the_client_id_and_a_new_seq_and_answered_decoded(core):
    rid, frame = _put(core, "t1")
    rid2, frame2 = _put(core, "t2")
    first, second = _request(frame), _request(frame2)
    assert first.client == second.client == core.client_id and core.client_id & 1
    assert (first.seq, second.seq) == (1, 2) and (first.id, second.id) == (rid, rid2)
    finished, action = core.on_response(_ok(rid, version=9), core.connection, 0.0)
    assert finished == [("t1", {1: None, 2: None, 3: None}, None)] and action == NOTHING
    assert core.last_version == {(0, 0): 9} and core.outstanding == 1
    # a second answer to the same request (a resend's) completes nothing
    assert core.on_response(_ok(rid), core.connection, 0.0) == ([], NOTHING)


def test_a_command_that_raised_at_the_replicas_completes_with_command_error(core):
    rid, _ = _put(core, "t")
    response = protocol.Response(rid, True, version=3, results={1: RESULT_ERROR + b"boom"})
    ((token, value, error),), _ = core.on_response(response, core.connection, 0.0)
    assert token == "t" and value is None and isinstance(error, CommandError)


def test_queries_read_your_writes_at_the_clients_consistency_level(core):
    rid, _ = _put(core, "t")
    core.on_response(_ok(rid, version=11), core.connection, 0.0)
    payload = KVStore.encode_query("get", "k")
    _, frame = core.query("q", 0, 0, payload, KVStore, "get")
    query = _request(frame)
    assert (query.min_version, query.consistency) == (11, protocol.READ_LINEARIZABLE)
    _, frame = core.query("q", 0, 0, payload, KVStore, "get", 3, protocol.READ_SEQUENTIAL)
    query = _request(frame)
    assert (query.min_version, query.consistency) == (3, "sequential")
    sequential = _core(consistency="sequential")
    sequential.on_connected(Conn(), 1)
    _, frame = sequential.query("q", 0, 0, payload, KVStore, "get")
    assert _request(frame).consistency == "sequential"
    answer = protocol.Response(query.id, True, version=11, value=RESULT_OK + b"\xc4\x01v")
    assert core.on_response(answer, core.connection, 0.0)[0] == [("q", b"v", None)]


def test_an_unknown_consistency_level_is_a_value_error_naming_the_levels(core):
    with pytest.raises(ValueError, match=r"'linearizable', 'sequential', not 'strong'"):
        check_consistency("strong")
    with pytest.raises(ValueError, match="consistency"):
        _core(consistency="eventual")
    with pytest.raises(ValueError, match="consistency"):
        core.query("q", 0, 0, b"", KVStore, "get", None, "strong")
    assert core.outstanding == 0


def test_a_status_answer_records_the_views_it_reports(core):
    rid, _ = core.status("s")
    status = {"member": 1, "views": [[1, [1, 2, 3]], [2, [1, 2]]]}
    assert core.on_response(protocol.Response(rid, True, status=status), core.connection, 0)[0] == [
        ("s", status, None)
    ]
    assert core.views == [(1, (1, 2, 3)), (2, (1, 2))]


def test_the_window_bounds_outstanding_requests_and_the_frame_limit_their_size():
    core = _core(window_max=2, frame_bytes_max=1000)
    core.on_connected(Conn(), 1)
    with pytest.raises(RequestTooLargeError, match="frame_bytes_max"):
        _put(core, "big", value=b"x" * 2000)
    _put(core, "a")
    assert core.has_room()
    _put(core, "b")
    assert not core.has_room()
    with pytest.raises(NotAppliedError, match="2 requests outstanding"):
        _put(core, "c")


# -- back-pressure and redirects -------------------------------------------------------------------


def test_a_busy_refusal_sends_the_same_request_again_when_due(core):
    rid, frame = _put(core, "t")
    busy = protocol.Response(rid, False, error="busy", retry_ms=20)
    assert core.on_response(busy, core.connection, 100.0) == ([], WAKE)
    assert core.next_due() == pytest.approx(100.02) and core.retrying
    assert core.due(100.01) == []
    ((again_rid, again),) = core.due(100.02)
    assert again_rid == rid and _request(again) == _request(frame)  # same id, client and seq
    assert not core.retrying


def test_a_busy_query_is_retried_not_failed(core):
    # a member refuses a linearizable read it cannot confirm yet with retry_ms, as a busy one
    rid, _ = core.query("q", 0, 0, KVStore.encode_query("get", "k"), KVStore, "get")
    refused = protocol.Response(rid, False, error="read index not confirmed", retry_ms=5)
    assert core.on_response(refused, core.connection, 0.0) == ([], WAKE)
    assert [r for r, _ in core.due(1.0)] == [rid]


def test_busy_for_longer_than_timeout_s_is_not_applied(core):
    rid, _ = _put(core, "t")
    busy = protocol.Response(rid, False, error="busy", retry_ms=20)
    core.on_response(busy, core.connection, 0.0)
    core.due(1.0)
    ((token, _, error),), action = core.on_response(busy, core.connection, 6.0)
    assert token == "t" and action == NOTHING
    assert isinstance(error, NotAppliedError) and "busy for 6.0 s" in str(error)


def test_a_redirect_gives_up_the_connection_once_and_prefers_the_member_named(core):
    conn = core.connection
    a, _ = _put(core, "a")
    b, _ = core.query("b", 0, 0, b"", KVStore, "get")
    redirect = [2]
    first = protocol.Response(a, False, error="member 1 is joining", redirect=redirect)
    second = protocol.Response(b, False, error="member 1 is joining", redirect=redirect)
    assert core.on_response(first, conn, 0.0) == ([], REDIAL)
    assert core.on_response(second, conn, 0.0) == ([], NOTHING)  # one failover per connection
    assert core.preferred == 2 and core.dial_order(avoid=1)[0] == 2
    assert core.on_disconnected(conn) and not core.on_disconnected(conn)
    sends = core.on_connected(Conn(), 2)
    assert sorted(r for r, _ in sends) == [a, b]
    # the redirected command may have been taken by a member leaving the view: a refusal now
    # cannot say "not applied"
    refused = protocol.Response(a, False, error="the send window stayed full")
    ((_, _, error),), _ = core.on_response(refused, core.connection, 0.0)
    assert isinstance(error, OutcomeUnknownError) and error.seq == 1


def test_redirects_are_bounded_per_member_listed(core):
    rid, _ = core.query("q", 0, 0, b"", KVStore, "get")
    for _ in range(2 * 3):
        redirect = protocol.Response(rid, False, error="member 1 is restarting", redirect=[2])
        finished, _ = core.on_response(redirect, Conn(), 0.0)
        assert finished == []
    ((_, _, error),), _ = core.on_response(redirect, Conn(), 0.0)
    assert isinstance(error, NotAppliedError) and "(after 7 redirects)" in str(error)


def test_a_frame_refusal_fails_every_request_above_the_limit_and_lowers_it(core):
    big, _ = _put(core, "big", value=b"x" * 5000)
    small, _ = _put(core, "small")
    refusal = protocol.Response(0, False, error="frame over 2000 bytes", frame_bytes_max=2000)
    ((token, _, error),), _ = core.on_response(refusal, core.connection, 0.0)
    assert token == "big" and isinstance(error, RequestTooLargeError)
    assert core.frame_bytes_max == 2000 and core.outstanding == 1 and core.is_pending(small)
    assert not core.is_pending(big)


def test_an_applied_command_whose_answer_was_lost_is_a_plain_client_error(core):
    rid, _ = _put(core, "t")
    lost = protocol.Response(rid, False, version=9, error="applied, but its answer ...")
    ((_, _, error),), _ = core.on_response(lost, core.connection, 0.0)
    assert type(error) is ClientError and core.last_version[(0, 0)] == 9


# -- failover and giving up ------------------------------------------------------------------------


def test_a_broken_connection_resends_unanswered_commands_with_their_seq(core):
    old = core.connection
    rid, frame = _put(core, "t")
    assert core.on_disconnected(old) and core.dialing and core.connection is None
    assert core.dial_order(avoid=core.member) and 1 not in core.dial_order(avoid=1)
    late, _ = _put(core, "late")  # made while dialing: waits, unsent
    sends = core.on_connected(Conn(), 2)
    assert not core.dialing and core.member == 2
    assert [r for r, _ in sends] == [rid, late] and sends[0][1] == frame
    # an answer on the old connection still counts
    assert core.on_response(_ok(rid), old, 0.0)[0][0][0] == "t"


def test_a_failed_dial_says_what_is_known_of_each_request(core):
    _put(core, "sent")
    core.query("q", 0, 0, b"", KVStore, "get")
    core.on_disconnected(core.connection)
    _put(core, "unsent")
    failed = {t: e for t, _, e in core.on_dial_failed("no member answered")}
    assert isinstance(failed["sent"], OutcomeUnknownError) and failed["sent"].seq == 1
    assert isinstance(failed["q"], NotAppliedError)
    assert type(failed["unsent"]) is NotAppliedError and "not sent" in str(failed["unsent"])
    assert core.outstanding == 0 and not core.dialing
    assert core.start_dial() and core.dialing  # the next request dials again


def test_close_fails_everything_and_refuses_new_requests(core):
    _put(core, "t")
    ((token, _, error),) = core.close()
    assert token == "t" and isinstance(error, OutcomeUnknownError) and "closed" in str(error)
    with pytest.raises(NotAppliedError, match="closed"):
        _put(core, "u")
    assert core.dial_error([]).args == ("the client was closed",)


def test_a_request_given_up_before_it_was_sent_is_withdrawn_and_not_applied(core):
    rid, _ = _put(core, "t")
    ((token, _, error),) = core.abandon(rid, "cancelled", sent=False)
    assert token == "t" and isinstance(error, NotAppliedError) and "not yet written" in str(error)
    assert not core.is_pending(rid) and core.has_room()
    assert core.outcome(1) == (None, error)  # seq 1: its outcome is kept


def test_a_command_given_up_after_it_was_sent_stays_tracked_until_its_outcome_is_known(core):
    rid, _ = _put(core, "t")
    ((token, _, error),) = core.abandon(rid, "no answer within 5 s")
    assert token == "t" and isinstance(error, OutcomeUnknownError) and error.seq == 1
    assert core.is_pending(rid) and core.outcome(1) is None
    assert core.watch(1, "watcher") and not core.watch(99, "nobody")
    finished, _ = core.on_response(_ok(rid), core.connection, 0.0)
    assert finished == [("watcher", {1: None, 2: None, 3: None}, None)]  # not the given-up token
    assert core.outcome(1) == ({1: None, 2: None, 3: None}, None)
    # a query given up is dropped: it changes nothing
    q, _ = core.query("q", 0, 0, b"", KVStore, "get")
    ((_, _, error),) = core.abandon(q, "cancelled")
    assert isinstance(error, NotAppliedError) and not core.is_pending(q)
    assert core.abandon(q, "again") == []


def test_kept_outcomes_are_bounded():
    core = _core(outcomes_max=3)
    for seq in range(1, 6):
        core.keep_outcome(seq, seq, None)
    assert [core.outcome(s) for s in range(1, 6)] == [None, None, (3, None), (4, None), (5, None)]


def test_the_failover_order_puts_the_preferred_member_first_and_is_seeded():
    a, b = _core(preferred=3), _core(preferred=3)
    assert a.client_id == b.client_id  # the same seed: the same draws
    orders = [a.dial_order() for _ in range(5)]
    assert all(o[0] == 3 and sorted(o) == [1, 2, 3] for o in orders)
    assert orders == [b.dial_order() for _ in range(5)]
    assert _core(members=(4,)).dial_order(avoid=4) == [4]  # the only member is tried anyway
