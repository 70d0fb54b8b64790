"""The one executor of a Ready: the order of its duties (smr.core.ready), the bookkeeping every
driver shares, and the type check that keeps it exhaustive over the kinds of output."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from smr.core.multicast import Completed, SubmitFailed
from smr.core.ready import Delivery, LogAppend, LogMeta, LogTruncate, Push, Ready, Send
from smr.core.replica import FrontierReached, RestoreState, StateTransfer
from smr.core.views import Halted, ViewInstalled
from smr.runtime.executor import Executor, StateVersionError

ME = 1


class Recorder:
    """A host that writes down what it was asked to do, in order; one state machine per shard
    that counts what it applied."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.versions: dict[tuple[int, int], int] = {}

    def __getattr__(self, name):  # every host method not defined below: recorded
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, *args))

    def apply(self, deliveries):
        out = []
        for d in deliveries:
            self.calls.append(("apply", d.version))
            self.versions[(d.subgroup, d.shard)] = d.version
            out.append(b"r%d" % d.version)
        return out

    def state_of(self, subgroup, shard):
        self.calls.append(("state_of", subgroup, shard))
        return self.versions.get((subgroup, shard), 0), b"snap"


class FakeReplica:
    def __init__(self) -> None:
        self.replies: list[tuple[int, bytes]] = []
        self.states: list[tuple] = []

    def reply_many(self, deliveries, results):
        for d, result in zip(deliveries, results, strict=True):
            if d.reply:
                self.replies.append((d.version, result))

    def send_state(self, to, subgroup, shard, version, data):
        self.states.append((to, subgroup, shard, version, data))


def _names(host: Recorder) -> list[str]:
    return [c[0] for c in host.calls]


def _view(joined=()) -> ViewInstalled:
    return ViewInstalled(2, (1, 2), 0, ((0, 0, (1, 2), "durable"),), tuple(joined), (3,))


def test_persist_comes_before_every_push_and_a_view_is_prepared_first():
    host = Recorder()
    d = Delivery(0, 0, 5, 1, 2, b"x")
    ready = Ready(
        persist=(LogAppend(0, 0, (d,)), LogMeta("view", b"v"), LogTruncate(0, 0, 3)),
        writes=(Push((2,), 0, b"w"),),
        sends=(Send(2, b"s"),),
        deliveries=(d,),
        events=(_view(),),
    )
    Executor(ME, host).execute(FakeReplica(), ready)
    assert _names(host) == [
        "prepare_view",
        "persist_append",
        "persist_meta",
        "persist_rewrite",
        "push",
        "send",
        "apply",
        "view_installed",
    ]


def test_a_sync_append_is_flushed_before_the_pushes():
    host = Recorder()
    d = Delivery(0, 0, 5, 1, 2, b"x")
    ready = Ready(persist=(LogAppend(0, 0, (d,), sync=True),), writes=(Push((2,), 0, b"w"),))
    Executor(ME, host).execute(FakeReplica(), ready)
    assert _names(host) == ["persist_append", "persist_flush", "push"]


def test_rule_a_a_ready_that_answers_applies_and_answers_before_it_pushes():
    host = Recorder()
    mine = Delivery(0, 0, 7, 1, ME, b"x")  # my command, sent without a reply map
    ready = Ready(
        writes=(Push((2,), 0, b"w"),),
        deliveries=(mine,),
        events=(Completed(4, 0, 0, 7, None),),
    )
    Executor(ME, host).execute(FakeReplica(), ready)
    assert _names(host) == ["apply", "answer", "flush_answers", "push"]
    answer = host.calls[1]
    assert answer[2] == {ME: b"r7"}  # my own result, kept by the executor until the answer


def test_results_go_back_to_the_replica_and_a_failure_is_answered_without_results():
    host = Recorder()
    replica = FakeReplica()
    ready = Ready(
        deliveries=(Delivery(0, 0, 8, 1, 2, b"x", reply=True),),
        events=(SubmitFailed(9, 0, 0, "window full"),),
    )
    Executor(ME, host).execute(replica, ready)
    assert replica.replies == [(8, b"r8")]
    assert host.calls[-1] == ("answer", SubmitFailed(9, 0, 0, "window full"), None)


def test_a_state_transfer_sends_the_version_the_machine_is_at_after_the_deliveries():
    host = Recorder()
    replica = FakeReplica()
    ready = Ready(
        deliveries=(Delivery(0, 0, (1 << 32) | 6, 1, 2, b"x"),),
        events=(StateTransfer(3, 0, 0, 0), _view(joined=(3,))),
    )
    Executor(ME, host).execute(replica, ready)
    assert replica.states == [(3, 0, 0, (1 << 32) | 6, b"snap")]
    # the shard's machine is dropped (view_installed) only after its state went out
    assert _names(host)[-3:] == ["state_of", "state_sent", "view_installed"]


def test_a_provider_at_another_version_than_planned_is_our_bug():
    host = Recorder()
    host.versions[(0, 0)] = 5
    with pytest.raises(StateVersionError, match="at version 0x9, but its state machine is at 0x5"):
        Executor(ME, host).execute(FakeReplica(), Ready(events=(StateTransfer(3, 0, 0, 9),)))


def test_every_other_event_reaches_the_host():
    host = Recorder()
    events = (RestoreState(0, 0, 4, b"s"), Halted("minority"), FrontierReached(3, 1))
    Executor(ME, host).execute(FakeReplica(), Ready(events=events))
    assert host.calls == [
        ("restore", events[0]),
        ("notify", events[1]),
        ("notify", events[2]),
    ]


def test_an_event_kind_the_executor_forgets_is_a_type_error(tmp_path):
    """The executor's `match` over `Ready.events` ends in `assert_never`; a missing case must
    fail `make typecheck`. Checked here on a copy of the pattern with one case left out."""
    pytest.importorskip("mypy")
    source = tmp_path / "forgets.py"
    source.write_text(
        textwrap.dedent(
            """
            from typing import assert_never
            from smr.core.ready import Event
            from smr.core.multicast import Completed, SubmitFailed
            from smr.core.replica import FrontierReached, RestoreState, StateTransfer
            from smr.core.views import Halted, ViewBlocked, ViewInstalled

            def handle(event: Event) -> None:
                match event:
                    case Completed() | SubmitFailed() | StateTransfer() | RestoreState():
                        pass
                    case ViewInstalled() | Halted() | ViewBlocked():
                        pass
                    case _:
                        assert_never(event)  # FrontierReached is not handled
            """
        )
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "mypy", "--follow-imports", "silent", "--no-incremental"]
    result = subprocess.run(
        [*command, str(source)],
        capture_output=True,
        text=True,
        cwd=repo,
        env={**os.environ, "MYPYPATH": repo},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FrontierReached" in result.stdout
