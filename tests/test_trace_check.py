"""Trace validation: simulator runs with crashes and partitions replay as behaviours of
ViewChange.tla (smr.sim.trace_check), and mutated traces are rejected at the mutated step."""

from __future__ import annotations

import copy
import io
import json

import pytest

from smr.sim import SimConfig, Simulation
from smr.sim.trace import Tracer
from smr.sim.trace_check import TraceError, check, seq_count

PROPOSALS = ("prop", "acked", "decided")
FAULTS = frozenset({"crash", "restart", "partition", "delay"})
RUNS = [(3, "kv", s) for s in (1, 2, 3)] + [(5, "bank", s) for s in (1, 2)] + [(3, "bytes", 4)]
TOTAL = FAULTS | {"total"}
# Seeds whose schedules hold the steps each test needs; the schedules changed when restarted
# members began finding running groups from their disks, and again when the workloads began
# to read (bank seed 3 then had no total failure, and bank seed 1's first boot with a log joined
# a running group, which is not modelled)
TOTAL_RUNS = [(3, "bank", 1), (3, "bank", 4), (5, "kv", 1), (5, "kv", 3)]


def trace(nodes: int, workload: str, seed: int, faults: frozenset[str] = FAULTS) -> list[dict]:
    buf = io.StringIO()
    config = SimConfig(nodes=nodes, seed=seed, faults=faults, workload=workload)
    sim = Simulation(config, tracer=Tracer(buf))
    if "total" not in faults:
        # at least one crash whatever the seed's own faults do (a member, not always the leader)
        sim.schedule(40_000_000 + 10_000_000 * seed, "crash", 1 + seed % nodes)
    result = sim.run()
    assert result.ok, result.violation
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def lines(events: list[dict]) -> list[str]:
    return [json.dumps(e) for e in events]


@pytest.fixture(scope="module")
def kv3() -> list[dict]:
    return trace(3, "kv", 2)


@pytest.mark.parametrize(("nodes", "workload", "seed"), RUNS)
def test_simulator_runs_validate(nodes: int, workload: str, seed: int) -> None:
    events = trace(nodes, workload, seed)
    checker = check(lines(events))
    assert any(e["ev"] == "crash" for e in events)
    # the run exercised the view change and the multicast, not just heartbeats
    for action in ("Crash", "Wedge", "Follow", "Propose", "Ack", "Commit", "Install", "Deliver"):
        assert checker.actions.get(action, 0) > 0, action


def test_tracer_off_by_default() -> None:
    sim = Simulation(SimConfig(nodes=3, seed=1))
    assert not any(isinstance(c, Tracer) for c in sim.checkers)


def test_delivery_before_stability_rejected(kv3: list[dict]) -> None:
    events = copy.deepcopy(kv3)
    # the first ordered delivery of epoch 1, moved before every receive of the epoch
    ordered = {s["g"] for s in events[1]["shards"] if s["mode"] != "raw"}
    i = next(
        i
        for i, e in enumerate(events)
        if e["ev"] == "row" and e["e"] == 1 and any(f"s{g}.delivered" in e["set"] for g in ordered)
    )
    row = events[i]
    g = next(g for g in ordered if f"s{g}.delivered" in row["set"])
    moved = {**row, "set": {f"s{g}.delivered": row["set"][f"s{g}.delivered"]}}
    del row["set"][f"s{g}.delivered"]
    first = next(j for j, e in enumerate(events) if e["ev"] == "row" and e["e"] == 1)
    events.insert(first + 1, moved)
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.line == first + 2 and err.value.action == "Deliver"
    assert "beyond the stable bound 0" in str(err.value)


def test_commit_without_majority_ack_rejected(kv3: list[dict]) -> None:
    events = copy.deepcopy(kv3)
    # every follower's acknowledgement of the first committed ballot disappears
    commit = next(i for i, e in enumerate(events) if e["ev"] == "row" and "committed" in e["set"])
    epoch = events[commit]["e"]
    b = events[commit]["set"]["committed"]
    leader = events[commit]["m"]
    for e in events[:commit]:
        ours = e["ev"] == "row" and e["e"] == epoch and e["m"] != leader
        if ours and e["set"].get("acked_ballot") == b:
            del e["set"]["acked_ballot"], e["set"]["acked"]
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.action == "Commit" and "has not acknowledged" in err.value.detail
    assert events[err.value.line - 1]["set"]["committed"] == b


def test_delivery_past_the_trim_rejected(kv3: list[dict]) -> None:
    events = copy.deepcopy(kv3)
    # right after a member learns the decision, it delivers one past the trim
    i, view = next(
        (i, e)
        for i, e in enumerate(events)
        if e["ev"] == "row" and e["set"].get("decided") and e["e"] == 1
    )
    shards = next(e for e in events if e["ev"] == "view" and e["e"] == 1)["shards"]
    g = next(s["g"] for s in shards if s["mode"] != "raw" and view["m"] in s["members"])
    past = seq_count(view["set"]["decided"]["trims"][g]) + 1
    events.insert(i + 1, {"ev": "row", "m": view["m"], "e": 1, "set": {f"s{g}.delivered": past}})
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.line == i + 2 and err.value.action == "Trim"
    assert f"the trim is {past - 1}" in err.value.detail


def test_install_before_persistence_rejected() -> None:
    events = trace(5, "bank", 2)
    durable = {
        (e["e"], s["g"])
        for e in events
        if e["ev"] == "view"
        for s in e["shards"]
        if s["mode"] == "durable"
    }
    # drop the persisted raises of one member in the first epoch that installs a successor
    inst = next(e for e in events if e["ev"] == "install")
    epoch = inst["e"]
    gs = [g for (ep, g) in durable if ep == epoch]
    assert gs
    victim = next(
        e["m"]
        for e in events
        if e["ev"] == "row" and e["e"] == epoch and f"s{gs[0]}.persisted" in e["set"]
    )
    for e in events:
        if e["ev"] == "row" and e["e"] == epoch and e["m"] == victim:
            e["set"].pop(f"s{gs[0]}.persisted", None)
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.action in ("Install", "Inv_DurableAcrossViews")


def test_wedge_without_cause_rejected(kv3: list[dict]) -> None:
    events = copy.deepcopy(kv3)
    first = next(j for j, e in enumerate(events) if e["ev"] == "row" and e["e"] == 1)
    events.insert(first + 1, {"ev": "row", "m": events[first]["m"], "e": 1, "set": {"wedged": 1}})
    with pytest.raises(TraceError, match="Wedge not enabled"):
        check(lines(events))


def test_unknown_epoch_is_a_clear_error() -> None:
    with pytest.raises(TraceError, match="epoch 7 used before its view"):
        check([json.dumps({"ev": "row", "m": 1, "e": 7, "set": {"wedged": 1}})])


def test_proposal_with_a_wrong_trim_rejected(kv3: list[dict]) -> None:
    events = copy.deepcopy(kv3)
    # a leader's fresh proposal whose trim of an ordered shard is one above the minimum received
    i, row = next(
        (i, e)
        for i, e in enumerate(events)
        if e["ev"] == "row" and e["set"].get("prop") and e["set"]["prop"]["ballot"] == 1
    )
    for e in events[i:]:
        if e.get("e") != row["e"]:
            continue
        found = [e["p"]] if e["ev"] == "log" else [e.get("set", {}).get(n) for n in PROPOSALS]
        for p in found:
            if p:
                p["trims"][0][0] += 1
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.line == i + 1 and err.value.action == "Propose"
    assert "the minimum received" in err.value.detail


def test_tracing_does_not_change_the_run() -> None:
    config = SimConfig(nodes=3, seed=3, faults=FAULTS, workload="kv")
    plain = Simulation(config).run()
    traced = Simulation(config, tracer=Tracer(io.StringIO())).run()
    assert (traced.digest, traced.schedule_digest, traced.steps) == (
        plain.digest,
        plain.schedule_digest,
        plain.steps,
    )


def test_malformed_trace_is_a_clear_error() -> None:
    with pytest.raises(TraceError, match="line 2: not a JSON object"):
        check([json.dumps({"ev": "run"}), "{oops"])
    with pytest.raises(TraceError, match=r"line 1: a malformed 'view' record"):
        check([json.dumps({"ev": "view", "e": 1})])


# -- restart after total failure (proofs/Restart.tla) --------------------------------------------


@pytest.fixture(scope="module")
def bank3_total() -> list[dict]:
    return trace(
        3, "bank", 5, TOTAL
    )  # (seed 2 lost its restart when members began keeping their card)


@pytest.mark.parametrize(("nodes", "workload", "seed"), TOTAL_RUNS)
def test_runs_with_total_failures_validate(nodes: int, workload: str, seed: int) -> None:
    events = trace(nodes, workload, seed, TOTAL)
    checker = check(lines(events))
    for action in ("TotalFailure", "Boot", "RestartView", "Resume", "Install", "Deliver"):
        assert checker.actions.get(action, 0) > 0, action
    # the group resumed from what was logged, not from nothing
    cuts = [c[2] for e in events if e["ev"] == "rdecide" for c in e["d"]["cuts"]]
    assert any(cuts)


def _first(events: list[dict], kind: str, pred=lambda e: True) -> int:
    return next(i for i, e in enumerate(events) if e["ev"] == kind and pred(e))


def test_restart_decided_by_a_minority_rejected(bank3_total: list[dict]) -> None:
    events = copy.deepcopy(bank3_total)
    i = _first(events, "rdecide")
    d = events[i]["d"]
    d["members"] = [events[i]["m"]]  # one promiser of a three-member view
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.line == i + 1 and err.value.action == "RestartView"
    assert "is no majority of view" in err.value.detail


def test_restart_cut_below_the_longest_log_rejected(bank3_total: list[dict]) -> None:
    events = copy.deepcopy(bank3_total)
    i = _first(events, "rdecide", lambda e: any(c[2] for c in e["d"]["cuts"]))
    cut = next(c for c in events[i]["d"]["cuts"] if c[2])
    longest = cut[2]
    cut[2] -= 1
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.line == i + 1 and err.value.action == "RestartView"
    assert f"the longest log among {events[i]['d']['members']} ends at {longest}" in str(err.value)


def test_resume_in_a_used_epoch_rejected(bank3_total: list[dict]) -> None:
    events = copy.deepcopy(bank3_total)
    i = _first(events, "resume")
    events[i]["next"] -= 1  # the epoch the group was last in, before the failure
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.line == i + 1 and err.value.action == "Resume"
    assert "already used" in err.value.detail


def test_truncation_below_the_cut_rejected(bank3_total: list[dict]) -> None:
    events = copy.deepcopy(bank3_total)
    i = _first(events, "rdecide", lambda e: any(c[2] for c in e["d"]["cuts"]))
    m = events[i]["m"]
    sg, sh, cut = next(c for c in events[i]["d"]["cuts"] if c[2])
    events.insert(i + 1, {"ev": "truncate", "m": m, "sg": sg, "sh": sh, "v": cut - 1})
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.line == i + 2 and err.value.action == "Truncate"
    assert f"the cut is {cut}" in err.value.detail


def test_boot_that_lost_a_persisted_entry_rejected(bank3_total: list[dict]) -> None:
    events = copy.deepcopy(bank3_total)
    i = _first(events, "boot", lambda e: any(v for _, _, v in e["logged"]))
    for entry in events[i]["logged"]:
        entry[2] = 0
    with pytest.raises(TraceError) as err:
        check(lines(events))
    assert err.value.line == i + 1 and err.value.action == "Boot"
    assert "below the" in err.value.detail


def test_tracing_with_total_failures_does_not_change_the_run() -> None:
    config = SimConfig(nodes=3, seed=1, faults=TOTAL, workload="bank")
    plain = Simulation(config).run()
    traced = Simulation(config, tracer=Tracer(io.StringIO())).run()
    assert (traced.digest, traced.schedule_digest, traced.steps) == (
        plain.digest,
        plain.schedule_digest,
        plain.steps,
    )
