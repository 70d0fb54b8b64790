"""The benchmark and simulator commands as a newcomer meets them: a missing plotting library or a
single block size does not end a run in a traceback, the table explains its columns, the
reference system's alarming log lines are explained, and long runs show progress on a terminal
only. The workloads themselves are faked here (tests never time anything)."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from smr.bench import pysyncobj_ref, run
from smr.cli.main import cli

FIGURES = {
    "ops_per_s": 1000.0,
    "mib_per_s": 0.1,
    "p50_ms": 12.0,
    "p99_ms": 20.0,
    "max_ms": 30.0,
}


def _fake_compare(calls: list):
    def compare(systems, modes, sizes, **kwargs):
        calls.append(systems)
        run._note("smr ordered: 100 B payloads")  # what a real run reports before each step
        results = {
            "smr": {"ordered": {"100": {**FIGURES, "w1_p50_ms": 0.9}}},
            "pysyncobj": {"ordered": {"100": dict(FIGURES, ops_per_s=500.0)}},
            "raw": {"tcp": {"100": dict(FIGURES, mib_per_s=1.0)}},
        }
        return results, None

    return compare


@pytest.fixture
def fake_runs(monkeypatch):
    calls: list = []
    monkeypatch.setattr(run, "compare", _fake_compare(calls))
    return calls


def test_plot_without_matplotlib_warns_first_and_still_prints_the_table(
    fake_runs, monkeypatch, tmp_path
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    png = tmp_path / "plot.png"
    result = CliRunner().invoke(
        cli, ["bench", "cluster", "--modes", "ordered", "--kills", "0", "--plot", str(png)]
    )
    assert not isinstance(result.exception, RuntimeError), result.exception  # no traceback
    assert result.exit_code == 1  # the plot asked for was not written
    assert "ops/s" in result.stdout and "smr" in result.stdout  # the table anyway
    assert fake_runs  # the benchmark ran
    assert "needs matplotlib" in result.stderr and "running without the plot" in result.stderr
    assert not png.exists()


def test_plot_with_matplotlib_is_written(fake_runs, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "plot.png"
    result = CliRunner().invoke(cli, ["bench", "compare", "--modes", "ordered", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.exists() and f"plot: {png}" in result.stdout


def test_bench_rdmc_with_one_block_size_gives_the_block_time():
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "rdmc",
            "--members",
            "3-3",
            "--core-blocks",
            "65536",
            "--core-message-bytes",
            "262144",
            "--core-messages",
            "1",
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.output
    assert "per-block time" in result.stdout and "give two sizes" in result.stdout


def test_bench_rdmc_json_with_one_block_size_has_no_per_byte_figure():
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "rdmc",
            "--members",
            "3-3",
            "--core-blocks",
            "65536,65536",
            "--core-message-bytes",
            "262144",
            "--core-messages",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["per_byte_ns"] is None and figures["per_block_overhead_us"] > 0


def test_the_table_labels_latency_under_load_and_has_a_legend(fake_runs):
    result = CliRunner().invoke(cli, ["bench", "compare", "--modes", "ordered"])
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    assert "load p50" in header and "w1 p50" in header
    legend = result.stdout.split(header, 1)[1]
    for column in ("load p50", "w1 p50", "x pysyncobj", "% raw tcp"):
        assert f"\n{column}" in legend, column  # each column explained at the start of a line
    assert "queueing" in legend and "one command outstanding" in legend


def test_progress_shows_on_a_terminal_only(fake_runs, monkeypatch):
    import smr.cli.bench_options as options

    monkeypatch.setattr(options, "_stderr_is_tty", lambda: True)
    shown = CliRunner().invoke(cli, ["bench", "compare", "--modes", "ordered"])
    assert "smr ordered: 100 B payloads" in shown.stderr
    assert "smr ordered: 100 B payloads" not in shown.stdout
    quiet_json = CliRunner().invoke(cli, ["bench", "compare", "--modes", "ordered", "--json"])
    assert quiet_json.stderr == ""
    json.loads(quiet_json.stdout)
    monkeypatch.setattr(options, "_stderr_is_tty", lambda: False)
    quiet_ci = CliRunner().invoke(cli, ["bench", "compare", "--modes", "ordered"])
    assert quiet_ci.stderr == ""
    assert run.progress is None  # nothing left behind


class _FakeReplicas:
    def __init__(self, batched, work, durable):
        self.leader_serve_port = 1
        self.procs = []

    def warnings(self):
        return [
            "truncating already-applied log entries 12..40, "
            "state machine may have diverged from other cluster members"
        ] * 3

    def agree(self):
        return True, [(10, 1000, 7)] * 3

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_pysyncobj_divergence_warnings_are_explained_when_the_replicas_agree(monkeypatch, capsys):
    monkeypatch.setattr(pysyncobj_ref, "Replicas", _FakeReplicas)
    monkeypatch.setattr(
        run, "_workloads", lambda target, sizes, *a, **k: {str(s): dict(FIGURES) for s in sizes}
    )
    monkeypatch.setattr(run, "_add_w1", lambda figures, *a, **k: None)
    run.run_pysyncobj(["ordered"], [100], 0.1, 0.0)
    err = capsys.readouterr().err
    assert "not a divergence" in err and "same count, bytes and checksum" in err


def test_sim_shows_progress_on_a_terminal_and_nothing_otherwise(monkeypatch):
    import smr.cli.sim_cmd as sim_cmd

    monkeypatch.setattr(sim_cmd, "_stderr_is_tty", lambda: True)
    shown = CliRunner().invoke(cli, ["sim", "--nodes", "3", "--seeds", "1-3"])
    assert shown.exit_code == 0, shown.output
    assert "3/3 seeds, 0 failed" in shown.stderr
    assert "3 passed, 0 failed" in shown.stdout
    monkeypatch.setattr(sim_cmd, "_stderr_is_tty", lambda: False)
    quiet = CliRunner().invoke(cli, ["sim", "--nodes", "3", "--seeds", "1-3"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
