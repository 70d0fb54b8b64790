"""Predicates: kinds, evaluation order, fixed point, and the bound on rounds."""

import pytest

from smr.core.predicates import Kind, Predicate, PredicateSet


class Box:
    def __init__(self):
        self.value = 0
        self.target = 0
        self.log = []


def test_recurrent_runs_to_a_fixed_point_in_declaration_order():
    def behind(b):
        return b.value < b.target

    def step(b):
        b.value += 1
        return [("stepped", b.value)]

    def note(b):
        b.log.append(b.value)

    preds = PredicateSet(
        [
            Predicate("step", Kind.RECURRENT, behind, step),
            Predicate("note", Kind.RECURRENT, lambda b: b.value > len(b.log), note),
        ]
    )
    box = Box()
    box.target = 3
    actions = preds.evaluate(box)
    assert actions == [("stepped", 1), ("stepped", 2), ("stepped", 3)]
    assert box.log == [1, 2, 3]  # note ran after step, once per round
    assert preds.evaluate(box) == []


def test_one_time_fires_once_and_transition_once_per_edge():
    box = Box()
    preds = PredicateSet(
        [
            Predicate("once", Kind.ONE_TIME, lambda b: b.value >= 1, lambda b: ["once"]),
            Predicate("edge", Kind.TRANSITION, lambda b: b.value % 2 == 1, lambda b: ["edge"]),
        ]
    )
    fired = []
    for v in [0, 1, 1, 2, 3, 3, 4]:
        box.value = v
        fired.append(preds.evaluate(box))
    assert fired == [[], ["once", "edge"], [], [], ["edge"], [], []]
    assert preds.fired_count == {"once": 1, "edge": 2}


def test_a_trigger_that_makes_no_progress_is_a_bug_caught_by_the_round_bound():
    preds = PredicateSet(
        [Predicate("stuck", Kind.RECURRENT, lambda b: True, lambda b: None)], rounds_max=5
    )
    with pytest.raises(AssertionError, match="fixed point in 5 rounds"):
        preds.evaluate(Box())


def test_duplicate_names_are_rejected():
    p = Predicate("x", Kind.RECURRENT, lambda b: False, lambda b: None)
    with pytest.raises(AssertionError):
        PredicateSet([p, p])


def test_a_trigger_that_raises_leaves_the_actions_of_those_before_it():
    def boom(_):
        raise ValueError("half-way")

    ps = PredicateSet(
        [
            Predicate("first", Kind.ONE_TIME, lambda c: True, lambda c: ["a"]),
            Predicate("second", Kind.ONE_TIME, lambda c: True, boom),
        ]
    )
    actions: list = []
    with pytest.raises(ValueError):
        ps.evaluate(None, actions)
    assert actions == ["a"]


def test_the_replicas_triggers_return_their_effects_and_write_nothing_themselves(monkeypatch):
    """Pushes, deliveries and installs come back from the triggers as values: while the replica's
    predicates evaluate, nothing lands in its outputs (view changes, joins and the ragged trim
    included, with every workload kind of shard)."""
    from smr.core.replica import Replica
    from smr.sim import SimConfig, run_seed

    evaluate = PredicateSet.evaluate
    calls = {"n": 0, "actions": 0}

    def checked(self, ctx, actions=None):
        if not isinstance(ctx, Replica):
            return evaluate(self, ctx, actions)
        before = (len(ctx._writes), len(ctx._deliveries), ctx.epoch)
        out = evaluate(self, ctx, actions)
        assert (len(ctx._writes), len(ctx._deliveries), ctx.epoch) == before
        calls["n"] += 1
        calls["actions"] += len(out)
        return out

    monkeypatch.setattr(PredicateSet, "evaluate", checked)
    faults = frozenset({"crash", "restart", "partition", "join", "delay"})
    changes = 0
    for workload, seed in (("kv", 3), ("bank", 5), ("bytes", 2)):
        result = run_seed(SimConfig(nodes=4, seed=seed, faults=faults, workload=workload))
        assert result.ok, (workload, seed, result.violation)
        changes += result.stats["crashes"] + result.stats["joins"]
    assert changes > 0 and calls["n"] > 1000 and calls["actions"] > 1000
