"""`smr chaos`: the schedule is a function of the seed, the firewall rules are exactly removed,
real runs under faults pass the checker, and a history with a stale read put in fails it."""

from __future__ import annotations

import os
import random

import pytest

from smr.chaos import disk as chaos_disk
from smr.chaos import netfilter, schedule
from smr.chaos.run import ChaosOptions, judge, run
from smr.chaos.workload import Keys
from smr.check import History, Operation

MEMBERS = (1, 2, 3)


def _plan(seed: int, faults=schedule.FAULTS, duration_s: float = 60.0):
    return schedule.plan(
        seed, faults=faults, members=MEMBERS, duration_s=duration_s, failure_timeout_s=1.0
    )


def test_the_schedule_is_a_pure_function_of_the_seed_and_options():
    assert _plan(7) == _plan(7)
    assert _plan(7) != _plan(8)
    # the order the faults are named in does not matter
    assert _plan(7, faults=("pause", "kill")) == _plan(7, faults=("kill", "pause"))
    steps = _plan(3, faults=("kill", "pause"), duration_s=20)
    assert {s.kind for s in steps} <= {"kill", "pause"}
    assert (
        sum(s.hold_s + s.quiet_s for s in steps[:-1])
        < 20
        <= sum(s.hold_s + s.quiet_s for s in steps)
    )
    for s in _plan(11):
        if s.kind == "pause":
            assert s.hold_s > 1.0, "a pause outlasts the failure timeout"
        if s.kind == "partition" and s.shape == "bridge":
            assert len(s.members) == 2  # the pair cut from each other
        elif s.kind == "partition":
            assert len(s.members) == 1 and s.shape in ("isolate", "split")
        if s.kind == "restart-all":
            assert s.members == MEMBERS
    # across seeds every member and every fault comes up
    many = [s for seed in range(20) for s in _plan(seed)]
    assert {s.kind for s in many} == set(schedule.FAULTS)
    assert {s.shape for s in many if s.kind == "partition"} == {"isolate", "split", "bridge"}
    assert {s.members[0] for s in many if s.kind == "kill"} == set(MEMBERS)


def test_parse_faults_names_the_known_ones():
    assert schedule.parse_faults("pause, kill,pause") == ("pause", "kill")
    with pytest.raises(ValueError, match="known: kill, pause, partition, restart-all"):
        schedule.parse_faults("kill,flood")


class FakeFirewall:
    """A runner that keeps the OUTPUT chain as a list, as iptables would."""

    def __init__(self) -> None:
        self.chain: list[tuple[str, ...]] = [("-s", "10.0.0.1", "-j", "ACCEPT")]  # not ours
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> None:
        self.calls.append(args)
        op, chain, *rule = args
        assert chain == "OUTPUT"
        if op == "-I":
            self.chain.insert(0, tuple(rule))
        elif op == "-D":
            if tuple(rule) not in self.chain:
                raise RuntimeError("iptables: Bad rule (does a matching rule exist?)")
            self.chain.remove(tuple(rule))
        else:
            raise AssertionError(op)


ADDRESSES = {1: ("127.0.0.2", 7001), 2: ("127.0.0.3", 7002), 3: ("127.0.0.4", 7003)}


def test_link_rules_cut_both_directions_of_both_peer_ports():
    rules = netfilter.link_rules(ADDRESSES[1], ADDRESSES[2], "smr-chaos:x")
    heads = [r[: r.index("-m", 6)] for r in rules]
    assert heads == [
        ["-s", "127.0.0.2", "-d", "127.0.0.3", "-p", "tcp", "--dport", "7002"],
        ["-s", "127.0.0.3", "-d", "127.0.0.2", "-p", "tcp", "--sport", "7002"],
        ["-s", "127.0.0.3", "-d", "127.0.0.2", "-p", "tcp", "--dport", "7001"],
        ["-s", "127.0.0.2", "-d", "127.0.0.3", "-p", "tcp", "--sport", "7001"],
    ]
    for r in rules:
        assert r[-6:] == ["-m", "comment", "--comment", "smr-chaos:x", "-j", "DROP"]


def test_isolating_a_member_cuts_its_links_and_heal_removes_exactly_them():
    fw = FakeFirewall()
    p = netfilter.Partitioner(ADDRESSES, run_id="t", runner=fw)
    assert p.isolate([2]) == [(1, 2), (2, 3)]
    assert len(fw.chain) == 1 + 8
    ours = [r for r in fw.chain if "smr-chaos:t" in r]
    assert len(ours) == 8 and all(r[-1] == "DROP" for r in ours)
    # no rule between 1 and 3: they stay connected
    assert not any({"127.0.0.2", "127.0.0.4"} <= set(r) for r in ours)
    assert p.heal() == []
    assert fw.chain == [("-s", "10.0.0.1", "-j", "ACCEPT")]
    assert p.installed == [] and p.heal() == []  # a second heal does nothing


def test_heal_goes_on_past_a_rule_that_is_already_gone():
    fw = FakeFirewall()
    p = netfilter.Partitioner(ADDRESSES, run_id="t", runner=fw)
    p.isolate([1])
    fw.chain.remove(tuple(p.installed[3]))  # someone deleted one by hand
    errors = p.heal()
    assert len(errors) == 1 and "Bad rule" in errors[0]
    assert fw.chain == [("-s", "10.0.0.1", "-j", "ACCEPT")]


def test_a_rule_that_failed_to_go_in_is_still_deleted_on_heal():
    fw = FakeFirewall()

    def flaky(args: list[str]) -> None:
        fw(args)
        if args[0] == "-I" and len(fw.calls) == 3:
            raise RuntimeError("timed out after the rule went in")

    p = netfilter.Partitioner(ADDRESSES, run_id="t", runner=flaky)
    with pytest.raises(RuntimeError):
        p.isolate([3])
    p.heal()
    assert fw.chain == [("-s", "10.0.0.1", "-j", "ACCEPT")]


def _firewall_works() -> str | None:
    try:
        netfilter.check_available()
    except netfilter.PartitionUnavailable as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def kill_pause_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("chaos") / "out")
    options = ChaosOptions(
        seed=5, duration_s=20, faults=("kill", "pause"), ops_per_key=200, out=out
    )
    return run(options, echo=lambda line: None)


@pytest.mark.cluster
def test_a_real_run_with_kills_and_pauses_passes(kill_pause_run):
    result = kill_pause_run
    assert result.verdict.ok, result.verdict.problems
    assert {r.step.kind for r in result.records} == {"kill", "pause"}
    assert result.counts["ok"] > 100
    # what the survivors took while one member was paused was answered by the next view, not
    # when the paused member came back (the verdict fails otherwise)
    assert 0 < result.in_flight_s["pause"] < 2.0
    assert os.path.exists(os.path.join(result.kept, "history.jsonl"))
    assert os.path.exists(os.path.join(result.kept, "member-1.log"))
    # keys rotated, and every key ever used, retired ones too, was read back at the end
    called = {op.args[0] for op in result.history.operations if op.process != "final"}
    finals = {op.args[0] for op in result.history.operations if op.process == "final"}
    assert len(called) == result.keys_used > result.options.keys
    assert finals == called


@pytest.mark.cluster
def test_a_stale_read_put_into_a_recorded_history_fails_the_verdict(kill_pause_run):
    history = History.load(os.path.join(kill_pause_run.kept, "history.jsonl"))
    ops = history.operations
    final = next(op for op in ops if op.process == "final" and op.output is not None)
    written = [
        op
        for op in ops
        if op.status == "ok"
        and op.name == "put"
        and op.args[0] == final.args[0]
        and op.args[1] != final.output
    ]
    assert written, "the run wrote the key more than once"
    end = max(op.ret for op in ops if op.ret is not None)
    stale = Operation(
        len(ops), "tamper", "get", (final.args[0],), end + 1, end + 2, written[0].args[1], "ok"
    )
    assert judge(History(ops), None).ok
    verdict = judge(History([*ops, stale]), None)
    assert not verdict.ok and "NOT linearizable" in verdict.problems[0]


@pytest.mark.cluster
@pytest.mark.skipif(_firewall_works() is not None, reason=f"no partitions: {_firewall_works()}")
def test_a_real_run_with_partitions_and_a_total_restart_passes(tmp_path):
    options = ChaosOptions(
        seed=2, duration_s=25, faults=("partition", "restart-all", "kill"), out=str(tmp_path)
    )
    result = run(options, echo=lambda line: None)
    assert result.verdict.ok, result.verdict.problems
    assert "partition" in {r.step.kind for r in result.records}
    out = os.popen("iptables -S OUTPUT").read()
    assert "smr-chaos" not in out, "a rule outlived the run"


def test_keys_rotate_after_their_operations_and_every_used_key_is_remembered():
    keys = Keys(2, ops_per_key=3)
    rng = random.Random(1)
    picked = [keys.pick(rng) for _ in range(20)]
    assert {picked.count(k) for k in set(picked)} <= {1, 2, 3}
    assert sorted(set(picked)) == sorted(keys.used())
    assert keys.used()[:2] == ["k0", "k1"] and "k0.1" in keys.used()
    for k in keys.used():  # a slot's keys follow one another: none is live again once retired
        slot, _, gen = k.partition(".")
        if gen:
            older = Keys.name(int(slot[1:]), int(gen) - 1)
            assert picked.index(older) < picked.index(k)
            assert max(i for i, p in enumerate(picked) if p == older) < picked.index(k)


def test_keys_that_never_rotate():
    keys = Keys(3, ops_per_key=0)
    rng = random.Random(2)
    assert {keys.pick(rng) for _ in range(500)} == {"k0", "k1", "k2"} == set(keys.used())


def test_judge_sees_members_that_disagree():
    ops = [Operation(0, "c0", "put", ("k0", b"a"), 1, 2, None, "ok")]
    assert judge(History(ops), {1: {"k0": b"a"}, 2: {"k0": b"a"}}).ok
    verdict = judge(History(ops), {1: {"k0": b"a"}, 2: {"k0": None}})
    assert not verdict.ok and "differ" in verdict.problems[0]


def _disks_work() -> str | None:
    try:
        chaos_disk.check_full_available()
    except chaos_disk.DiskFaultUnavailable as e:
        return str(e)
    return None


@pytest.mark.cluster
@pytest.mark.skipif(_disks_work() is not None, reason=f"no disk faults: {_disks_work()}")
def test_a_real_run_with_a_full_disk_and_failing_fsyncs_passes(tmp_path):
    # seed 6 draws a full disk first, then a kill and failing fsyncs
    options = ChaosOptions(
        seed=6,
        duration_s=20,
        faults=("disk-full", "fsync-error", "kill", "restart-all"),
        out=str(tmp_path / "out"),
    )
    result = run(options, echo=lambda line: None)
    assert result.verdict.ok, result.verdict.problems
    kinds = {r.step.kind for r in result.records}
    assert {"disk-full", "fsync-error"} <= kinds, kinds
    # each disk fault made its member stop with the disk's error, not hang or retry
    exits = []
    for name in os.listdir(result.kept):
        if name.startswith("member-") and name.endswith(".log"):
            with open(os.path.join(result.kept, name)) as f:
                exits += [line for line in f if '"event": "exit"' in line]
    assert any("No space left on device" in line for line in exits)
    assert any("Input/output error" in line for line in exits)
    assert "smr-chaos" not in os.popen("mount").read(), "a tmpfs outlived the run"
