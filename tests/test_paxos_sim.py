"""The Multi-Paxos simulator (`smr.sim.paxos`): the member runtime itself under faults, with
agreement, durability and liveness checked, and broken variants it must catch."""

import pytest

from smr.sim.paxos import PaxosSimConfig, run_paxos_seed

ALL = frozenset({"crash", "restart", "partition", "delay", "total"})


@pytest.mark.parametrize("nodes,seed", [(3, 1), (3, 2), (5, 3)])
def test_members_agree_and_keep_every_acknowledged_write_under_faults(nodes, seed):
    result = run_paxos_seed(PaxosSimConfig(nodes=nodes, seed=seed, faults=ALL))
    assert result.ok, result.violation
    assert result.stats["acked"] == result.stats["commands"] > 1000
    assert result.stats["crashes"] > 0 and result.stats["redirects"] > 0


def test_a_run_is_determined_by_its_seed():
    a = run_paxos_seed(PaxosSimConfig(seed=4, faults=ALL))
    b = run_paxos_seed(PaxosSimConfig(seed=4, faults=ALL))
    assert a.digest == b.digest and a.steps == b.steps
    assert run_paxos_seed(PaxosSimConfig(seed=5, faults=ALL)).digest != a.digest


@pytest.mark.parametrize("bug", ["quorum-of-one", "no-adoption"])
def test_the_checkers_catch_a_broken_protocol(bug):
    caught = [
        run_paxos_seed(PaxosSimConfig(seed=s, faults=ALL, bugs=frozenset({bug}))).violation
        for s in (1, 2, 3)
    ]
    assert any(v is not None and v.invariant == "paxos.agreement" for v in caught), caught
