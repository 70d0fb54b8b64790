"""The cluster benchmark harness: its math on synthetic latencies, the windowed driver against
in-process fake systems, the frame protocol over a real socket pair, and the CLI for real with
the raw references (and pysyncobj if the `bench` extra is installed). No timing is asserted."""

import json
import os
import socket
import threading
import time
from concurrent.futures import Future

import pytest
from click.testing import CliRunner

from smr.bench import frames, member_ir, pysyncobj_ref, run
from smr.bench.harness import drive
from smr.bench.stats import MIB, percentile, summarize
from smr.cli.main import cli

FIGURES = {"ops_per_s", "mib_per_s", "p50_ms", "p99_ms"}


def test_percentiles_are_nearest_rank():
    samples = list(range(1, 101))  # 1..100
    assert percentile(samples, 50) == 50
    assert percentile(samples, 99) == 99
    assert percentile(samples, 100) == 100
    assert percentile([7], 50) == percentile([7], 99) == 7
    assert percentile([1, 2], 50) == 1 and percentile([1, 2], 51) == 2
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="percentile"):
        percentile([1], 0)


def test_summary_rates_and_latencies():
    # 1000 commands of 1 KiB in 0.5 s, latencies 1..1000 us, shuffled.
    latencies_ns = [((i * 7919) % 1000 + 1) * 1000 for i in range(1000)]
    figures = summarize(latencies_ns, 500_000_000, 1024)
    assert figures["count"] == 1000
    assert figures["ops_per_s"] == pytest.approx(2000)
    assert figures["mib_per_s"] == pytest.approx(2000 * 1024 / MIB)
    assert figures["p50_ms"] == pytest.approx(0.5)
    assert figures["p99_ms"] == pytest.approx(0.99)
    assert figures["max_ms"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="elapsed_ns"):
        summarize([1], 0, 1)


class _FakeSystem:
    """Completes each command from a worker thread in submission order, tracking how many
    were outstanding at once and what it received."""

    def __init__(self, fail_at: int | None = None):
        self.outstanding = self.outstanding_max = self.count = 0
        self.sizes = set()
        self.lock = threading.Lock()
        self.fail_at = fail_at
        self.queue = []
        self.wake = threading.Condition(self.lock)
        threading.Thread(target=self._complete, daemon=True).start()

    def submit(self, payload):
        future = Future()
        with self.lock:
            self.outstanding += 1
            self.outstanding_max = max(self.outstanding_max, self.outstanding)
            self.count += 1
            self.sizes.add(len(payload))
            self.queue.append((self.count, future))
            self.wake.notify()
        return future

    def _complete(self):
        while True:
            with self.lock:
                self.wake.wait_for(lambda: self.queue)
                n, future = self.queue.pop(0)
                self.outstanding -= 1
            if n == self.fail_at:
                future.set_exception(RuntimeError("replica lost"))
            else:
                future.set_result({1: n})


@pytest.mark.parametrize("window", [1, 8])
def test_drive_keeps_the_window_and_counts_what_it_measured(window):
    system = _FakeSystem()
    figures = drive(system.submit, 100, window, duration_s=10.0, warmup_s=0.0, count_max=500)
    assert figures["count"] == 500  # count_max measured commands, no warm-up
    assert system.count == 500
    assert system.outstanding_max <= window
    assert system.sizes == {100}
    assert figures["window"] == window and figures["payload_bytes"] == 100
    assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["mib_per_s"] == pytest.approx(figures["ops_per_s"] * 100 / MIB)


@pytest.mark.parametrize("window", [1, 64])
def test_drive_through_submit_many_refills_the_window_in_batches(window):
    system = _FakeSystem()
    calls = []

    def submit_many(payloads):
        calls.append(len(payloads))
        return [system.submit(p) for p in payloads]

    figures = drive(
        None, 100, window, duration_s=10.0, warmup_s=0.0, count_max=500, submit_many=submit_many
    )
    assert figures["count"] == 500 == system.count == sum(calls)
    assert system.outstanding_max <= window
    assert max(calls) <= window
    if window > 1:
        assert max(calls) > 1, "free slots are refilled together"


def test_drive_measures_one_command_when_the_warm_up_holds_every_slot_past_the_run():
    # a slow system: each command takes longer than warm-up and run together
    def submit(payload):
        future = Future()
        threading.Timer(0.15, future.set_result, ({1: None},)).start()
        return future

    figures = drive(submit, 100, 4, duration_s=0.05, warmup_s=0.05)
    assert figures["count"] >= 1
    assert figures["completed_total"] >= 5  # the four warm-up commands, then a measured one
    assert figures["p50_ms"] >= 100


def test_drive_reports_a_failed_command():
    system = _FakeSystem(fail_at=3)
    with pytest.raises(RuntimeError, match="replica lost"):
        drive(system.submit, 10, 2, duration_s=10.0, warmup_s=0.0, count_max=50)


def test_drive_refuses_bad_parameters():
    with pytest.raises(ValueError, match="window"):
        drive(lambda p: None, 10, 0, duration_s=1.0)
    with pytest.raises(ValueError, match="duration_s"):
        drive(lambda p: None, 10, 1, duration_s=0.0)


def test_frames_round_trip_pipelined_small_and_large_bodies():
    a, b = socket.socketpair()
    reader = frames.FrameReader(b)
    bodies = [b"x" * 100, b"", b"y" * (1 << 20), b"z" * 7]
    sender = threading.Thread(
        target=lambda: [frames.send_frame(a, i, frames.APPEND, x) for i, x in enumerate(bodies)]
    )
    sender.start()
    for i, body in enumerate(bodies):
        request_id, kind, view = reader.read()
        assert (request_id, kind, bytes(view)) == (i, frames.APPEND, body)
    sender.join()
    a.close()
    assert reader.read() is None  # EOF
    b.close()


def test_reply_runs_its_callback_exactly_once_however_the_race_falls():
    calls = []
    for finish_first in (True, False):
        reply = frames.Reply()
        if finish_first:
            reply._finish(b"ok", None)
        reply.add_done_callback(lambda r: calls.append(r.result()))
        if not finish_first:
            reply._finish(b"ok", None)
    assert calls == [b"ok", b"ok"]


def test_echo_server_and_client_over_loopback():
    server = frames.listen(0)
    port = server.getsockname()[1]
    server.close()
    thread = threading.Thread(target=frames.serve_echo, args=(port,), daemon=True)
    thread.start()
    run._wait_for_port(port)
    client = frames.FrameClient("127.0.0.1", port)
    replies = [client.request(frames.APPEND, b"p" * n) for n in (1, 1000, 300_000)]
    assert [r.result(timeout=10) for r in replies] == [b"", b"", b""]
    client.close()


def _invoke(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


def test_compare_json_with_raw_has_the_issue_shape(tmp_path):
    plot = tmp_path / "out" / "raw.png"
    result = _invoke(
        [
            "bench",
            "compare",
            "--systems",
            "raw",
            "--sizes",
            "100,65536",
            "--duration-s",
            "0.2",
            "--warmup-s",
            "0.05",
            "--window",
            "16",
            "--json",
            "--plot",
            str(plot),
        ]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"raw"}
    assert set(data["raw"]) == {"tcp", "memcpy"}
    for figures_by_size in data["raw"].values():
        assert set(figures_by_size) == {"100", "65536"}
        for figures in figures_by_size.values():
            assert set(figures) >= FIGURES
            assert figures["ops_per_s"] > 0 and figures["p50_ms"] <= figures["p99_ms"]
    assert "w1_p50_ms" in data["raw"]["tcp"]["100"]  # the one-outstanding ping-pong
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_table_with_raw():
    result = _invoke(
        [
            "bench",
            "compare",
            "--systems",
            "raw",
            "--sizes",
            "1024",
            "--duration-s",
            "0.2",
            "--warmup-s",
            "0.05",
            "--window",
            "4",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["system", "mode", "payload"]
    assert any(line.startswith("raw") and "1 KiB" in line for line in lines)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--systems", "raw,consul"], "consul is not one of"),
        (["--systems", "raw", "--modes", "fast"], "fast is not one of"),
        (["--systems", "raw", "--sizes", "100,big"], "comma-separated"),
        (["--systems", "raw", "--sizes", "0"], "between 1 and"),
    ],
)
def test_compare_refuses_bad_input_clearly(args, message):
    result = CliRunner().invoke(cli, ["bench", "compare", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_plot_draws_every_system_and_mode(tmp_path):
    fake = {"size": {"ops_per_s": 1.0, "mib_per_s": 1.0, "p50_ms": 1.0, "p99_ms": 1.0}}
    results = {
        "smr": {"ordered": {"100": fake["size"], "1024": fake["size"]}},
        "pysyncobj": {"durable": {"100": fake["size"]}},
    }
    path = tmp_path / "p.png"
    run.plot(results, str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(
    not pysyncobj_ref.available(),
    reason="pysyncobj is not installed: pip install 'smr-toolkit[bench]'",
)
@pytest.mark.parametrize("mode", ["ordered", "durable"])
def test_pysyncobj_adapter_tiny_run(mode):
    results = run.run_pysyncobj([mode], [100], duration_s=0.3, warmup_s=0.1, window=8)
    figures = results[mode]["100"]
    assert figures["count"] > 0 and set(figures) >= FIGURES
    assert figures["w1_p50_ms"] > 0


def test_compare_says_how_to_install_pysyncobj_when_missing(monkeypatch):
    monkeypatch.setattr(pysyncobj_ref, "available", lambda: False)
    result = CliRunner().invoke(cli, ["bench", "compare", "--systems", "pysyncobj"])
    assert result.exit_code != 0
    assert "pip install 'smr-toolkit[bench]'" in result.output


@pytest.mark.skipif(
    not pysyncobj_ref.available(),
    reason="pysyncobj is not installed: pip install 'smr-toolkit[bench]'",
)
def test_pysyncobj_replicas_apply_every_command_and_agree(tmp_path):
    with pysyncobj_ref.Replicas(True, str(tmp_path), durable=True) as replicas:
        target = {"system": "pysyncobj", "port": replicas.leader_serve_port}
        figures = run.measure(target, 300, 16, duration_s=0.3, warmup_s=0.0)
        agreed, stats = replicas.agree()
    assert agreed, stats
    count, total_bytes, _ = stats[0]
    assert count >= figures["count"] and total_bytes == 300 * count
    assert all((tmp_path / f"journal-{i}").exists() for i in range(3))  # "durable": a journal


class _FakeGroup:
    """Stands in for the smr runtime's cluster and client (not written yet) to drive
    `run.smr_failover`: after a kill, commands are answered by the survivors only, and a
    new view without the victim appears after `view_delay` completions."""

    def __init__(self, view_delay=20):
        self.pids = {1: 101, 2: 102, 3: 103}
        self.config_path = "fake.toml"
        self.members = [1, 2, 3]
        self.view_list = [(1, [1, 2, 3])]
        self.view_delay = view_delay
        self.after_kill = None
        self.killed, self.restarted, self.closed = [], [], False
        self.lock = threading.Lock()
        self.gaps_ms = []  # per kill: from the kill to the next view's appearance

    # the cluster
    def kill(self, member):
        with self.lock:
            self.killed.append(member)
            self.members = [m for m in self.members if m != member]
            self.after_kill = 0
            self.kill_ns = time.perf_counter_ns()

    def restart(self, member):
        with self.lock:
            self.restarted.append(member)
            self.members = sorted([*self.members, member])
            self.view_list.append((self.view_list[-1][0] + 1, list(self.members)))

    # the client
    def subgroup(self, cls):
        return self

    def submit(self, op, data):
        future = Future()

        def answer():
            with self.lock:
                if self.after_kill is not None:
                    self.after_kill += 1
                    if self.after_kill == self.view_delay:
                        self.view_list.append((self.view_list[-1][0] + 1, list(self.members)))
                        self.gaps_ms.append((time.perf_counter_ns() - self.kill_ns) / 1e6)
                result = dict.fromkeys(self.members, 1)
            future.set_result(result)

        threading.Timer(0.001, answer).start()
        return future

    def views(self):
        with self.lock:
            return list(self.view_list)

    def close(self):
        self.closed = True


def test_failover_measures_kill_to_first_delivery_in_the_next_view(monkeypatch):
    import smr

    group = _FakeGroup()
    monkeypatch.setattr(smr, "connect", lambda config: group, raising=False)
    figures = run.smr_failover(group, repetitions=2, rejoin_timeout_s=20)
    assert group.killed == group.restarted == [3, 3] and group.closed
    assert figures["repetitions"] == 2 and len(figures["samples_ms"]) == 2
    assert 0 < figures["p50_ms"] <= figures["max_ms"]
    # Completions before the new view (the survivors answering the old epoch) do not count.
    for sample_ms, gap_ms in zip(figures["samples_ms"], group.gaps_ms, strict=True):
        assert sample_ms >= gap_ms


def test_compare_refuses_smr_up_front_when_the_runtime_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "smr.runtime.cluster" else real(name, *a),
    )
    result = CliRunner().invoke(cli, ["bench", "compare", "--systems", "raw,smr"])
    assert result.exit_code != 0
    assert "--systems pysyncobj,raw" in result.output


def test_cpu_per_command_is_read_and_printed_per_process():
    assert run.process_cpu_s(os.getpid()) > 0
    assert run.process_cpu_s(2**22 + 12345) is None  # no such process
    results = {
        "smr": {
            "ordered": {
                "100": {
                    "member_cpu_us_per_op": {"1": 8.25, "2": 15.0},
                    "client_cpu_us_per_op": 11.5,
                }
            }
        },
        "raw": {"memcpy": {"100": {"ops_per_s": 1.0}}},
    }
    assert run.format_cpu(results) == (
        "smr ordered 100 B: CPU us per command: replica 1 8.2, replica 2 15.0, client 11.5"
    )


@pytest.mark.cluster
def test_smr_reads_are_measured_at_both_consistency_levels():
    results, _ = run.run_smr(["ordered"], [100], "tcp", 0.3, 0.1, window=64, reads=True)
    for level in ("lin-read", "seq-read"):
        figures = results[level]["100"]
        assert figures["ops_per_s"] > 0 and figures["w1_p50_ms"] > 0, (level, figures)
    assert run.format_table({"smr": results}).count("-read") == 2


@pytest.mark.cluster
def test_smr_watch_sees_every_write_with_its_latency():
    results, _ = run.run_smr(["durable"], [100], "tcp", 0.5, 0.2, window=64, watches=True)
    watch = results["watch"]["100"]
    assert watch["count"] > 0 and watch["p50_ms"] > 0 and watch["writes_per_s"] > 0, watch
    assert watch["missed"] == watch["repeats"] == 0, watch
    assert watch["stamped_total"] == watch["expected_total"] and watch["w1_p50_ms"] > 0
    assert "watch" in run.format_table({"smr": results})


@pytest.mark.cluster
def test_smr_over_tls_is_measured_as_a_system_of_its_own():
    results, _ = run.compare(
        ["smr-tls"], ["durable"], [100], duration_s=0.3, warmup_s=0.1, window=64
    )
    figures = results["smr-tls"]["durable"]["100"]
    assert figures["ops_per_s"] > 0 and figures["w1_p50_ms"] > 0, figures
    assert "smr-tls" in run.format_table(results)


def test_the_watcher_counts_repeats_and_skips(monkeypatch):
    from smr.bench import harness, watcher

    before = harness.STAMP.pack(time.perf_counter_ns())  # an earlier run's write: not counted

    def changes():
        yield 1, before
        for version in (2, 3, 3, 5, 6):  # 3 twice, 4 skipped
            stamp = time.perf_counter_ns()
            time.sleep(0.002)  # on its way to the watcher
            yield version, harness.STAMP.pack(stamp)

    monkeypatch.setattr(watcher, "open_events", lambda target: (changes(), lambda: None))
    seen = []
    result = watcher.run(
        {"target": {"system": "etcd"}, "warmup_s": 0}, iter(["stop 5\n"]), seen.append
    )
    assert seen == ["ready"]
    assert (result["events_total"], result["repeats"], result["skips"]) == (6, 1, 1)
    assert result["stamped_total"] == 5 and result["p50_ms"] >= 2.0


def test_bench_core_runs_both_engines_side_by_side():
    """`smr bench core` replays the same recorded writes on the pure-Python and the native
    receive side; each delivers every message."""
    args = ["bench", "core", "--messages", "2000", "--repeat", "1"]
    out = json.loads(_invoke([*args, "--json"]).output)
    assert set(out) == {"python", "native"}
    for engine, r in out.items():
        assert r["engine"] == engine and r["messages"] == 2000 and r["messages_per_s"] > 0
        assert r["writes_applied"] == out["python"]["writes_applied"]
    assert "native / python:" in _invoke(args).output
    one = json.loads(_invoke([*args, "--engine", "python", "--json"]).output)
    assert one["engine"] == "python"


@pytest.mark.cluster
def test_the_built_in_multipaxos_gets_its_own_row_at_the_group_size_asked_for():
    results, _ = run.compare(
        ["multipaxos"],
        ["durable"],
        [100],
        transport="tcp",
        duration_s=0.3,
        warmup_s=0.1,
        window=64,
        members=5,
    )
    figures = results["multipaxos"]["durable"]["100"]
    assert figures["ops_per_s"] > 0 and figures["w1_p50_ms"] > 0, figures
    assert "multipaxos" in run.format_table(results)


def test_a_group_size_a_baseline_cannot_take_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="etcd run 3 members only"):
        run.compare(["smr", "etcd"], ["durable"], [100], members=5)


@pytest.mark.parametrize("mode", ["ordered", "durable"])
def test_member_ir_answers_each_command_with_every_replicas_result(mode, capsys):
    # the instruction count of native/callgrind_member.sh is only worth comparing while the run
    # it counts does the whole job: every command answered, by all three members
    assert member_ir.main(["--commands", "40", "--window", "8", "--mode", mode]) == 0
    assert "40 of 40 answered ok with 3 results" in capsys.readouterr().out
