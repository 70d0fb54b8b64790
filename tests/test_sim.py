"""The simulator: determinism per seed, faults, and checkers that catch a broken invariant."""

from click.testing import CliRunner

from smr.cli.main import cli
from smr.sim import SimConfig, run_seed

FAULTS = frozenset({"delay", "partition", "break"})


def test_same_seed_same_digest_and_schedule():
    a = run_seed(SimConfig(nodes=3, seed=11, faults=FAULTS))
    b = run_seed(SimConfig(nodes=3, seed=11, faults=FAULTS))
    assert a.ok and b.ok
    assert (a.digest, a.schedule_digest, a.steps) == (b.digest, b.schedule_digest, b.steps)


def test_different_seed_different_schedule():
    a = run_seed(SimConfig(nodes=3, seed=11, faults=FAULTS))
    b = run_seed(SimConfig(nodes=3, seed=12, faults=FAULTS))
    assert a.schedule_digest != b.schedule_digest


def test_faults_happen_and_the_protocol_survives_them():
    for seed in range(1, 31):
        r = run_seed(SimConfig(nodes=5, seed=seed, faults=FAULTS))
        assert r.ok, (seed, r.violation)
        assert r.stats["faults"] > 0


def test_a_counter_pushed_downward_is_caught_with_its_reproducing_command():
    result = CliRunner().invoke(
        cli, ["sim", "--nodes", "3", "--seeds", "4-5", "--inject-bug", "counter-down"]
    )
    assert result.exit_code == 1
    assert "seed 4: FAILED table.own-row" in result.output
    assert "the column went down" in result.output
    assert "reproduce this failure with: smr sim --nodes 3 --seeds 4 --inject-bug counter-down" in (
        result.output
    )
    assert result.output.rstrip().endswith("0 passed, 2 failed")


def test_cli_reports_passes():
    result = CliRunner().invoke(
        cli, ["sim", "--nodes", "3", "--seeds", "1-3", "--faults", "delay,partition"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "3 passed, 0 failed"


def test_crash_stop_keeps_safety():
    for seed in range(1, 11):
        r = run_seed(SimConfig(nodes=5, seed=seed, faults=frozenset({"crash", "partition"})))
        assert r.ok, (seed, r.violation)
