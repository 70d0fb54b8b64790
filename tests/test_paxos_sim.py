"""The Multi-Paxos simulator (`smr.sim.paxos`): the member runtime itself under faults, with
agreement, durability, replay, exactly-once results and liveness checked on the kv and bank
workloads, and broken variants and tampered states it must catch."""

import pytest

from smr.sim.paxos import PaxosSimConfig, PaxosSimulation, PaxosViolation, run_paxos_seed

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


@pytest.mark.parametrize("seed", [1, 2])
def test_the_bank_keeps_its_balances_and_every_result_under_faults(seed):
    result = run_paxos_seed(PaxosSimConfig(seed=seed, faults=ALL, workload="bank"))
    assert result.ok, result.violation
    assert result.stats["acked"] == result.stats["commands"] > 300
    assert result.stats["crashes"] > 0


def _finished_bank() -> PaxosSimulation:
    sim = PaxosSimulation(
        PaxosSimConfig(seed=3, faults=frozenset({"crash", "restart"}), workload="bank")
    )
    assert sim.run().ok
    return sim


def _violation(sim: PaxosSimulation) -> str:
    with pytest.raises(PaxosViolation) as caught:
        sim._check_end()
    return caught.value.invariant


def test_the_bank_checkers_catch_a_wrong_result_a_broken_balance_and_a_diverged_state():
    sim = _finished_bank()
    key = next(k for k, r in sim.results.items() if r)
    sim.results[key] = sim.results[key][:1] + b"\xc0"  # the client was told something else
    assert _violation(sim) == "paxos.exactly_once"

    sim = _finished_bank()
    bank = sim.members[2].proc.hosted.machine
    name = next(iter(bank.accounts))
    bank.accounts[name] += 1  # money out of nowhere
    assert _violation(sim) == "bank.conservation"

    sim = _finished_bank()
    bank = sim.members[1].proc.hosted.machine
    bank.accounts[name] += 1
    bank.deposited += 1  # a deposit no slot holds: balanced, but not what was chosen
    assert _violation(sim) == "paxos.replay"
