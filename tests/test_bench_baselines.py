"""The external baselines of `smr bench compare` (etcd, ZooKeeper): the command line, the one-line
error when one is not installed (a real PATH without it, no mocks), the agreement check and the
report lines on fake figures, and one short real run of each where `make bench-deps` installed
it. No timing is asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from smr.bench import etcd_ref, run, zookeeper_ref
from smr.cli.bench_options import parse_systems
from smr.cli.main import cli

SMR = Path(sys.executable).with_name("smr")


def test_systems_parse_the_baselines_and_refuse_unknown_ones():
    assert parse_systems("smr,etcd,zookeeper,pysyncobj,raw") == [
        "smr",
        "etcd",
        "zookeeper",
        "pysyncobj",
        "raw",
    ]
    result = CliRunner().invoke(cli, ["bench", "compare", "--systems", "raw,consul"])
    assert result.exit_code != 0
    assert "consul is not one of smr, smr-tls, multipaxos, pysyncobj, raw, etcd, zookeeper" in (
        result.output
    )


def test_default_systems_are_unchanged():
    from smr.cli.bench_compare import bench_compare as compare

    option = next(p for p in compare.params if p.name == "systems")
    assert option.default == "smr,pysyncobj,raw"


@pytest.mark.parametrize(
    "system, says",
    [("etcd", "etcd is not installed"), ("zookeeper", "ZooKeeper")],
)
def test_a_missing_baseline_is_one_line_with_the_way_to_install_it(tmp_path, system, says):
    # A real PATH without etcd, zkServer.sh or java (the command found by its full path); for
    # zookeeper, Debian's zkServer.sh may be installed outside PATH, then java is what's missing.
    env = {**os.environ, "PATH": str(tmp_path)}
    done = subprocess.run(
        [str(SMR), "bench", "compare", "--systems", f"raw,{system}", "--duration-s", "0.1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0] and "make bench-deps" in lines[0]
    assert "Traceback" not in done.stderr


def test_etcd_agreement_on_fake_answers():
    same = (120, 77, 1, 5)
    agreed, text = etcd_ref.agreement([same, same, same])
    assert agreed and text.startswith("all 3 at revision 120")
    agreed, text = etcd_ref.agreement([same, (119, 76, 1, 5), same])
    assert not agreed
    assert "member 2: revision 119, hash 76" in text
    assert etcd_ref.agreement([]) == (False, "no member answered")


def test_zookeeper_agreement_on_fake_answers():
    same = ("0x10000002a", 40, 100, 9)
    agreed, text = zookeeper_ref.agreement([same] * 3)
    assert agreed and "zxid 0x10000002a" in text
    agreed, text = zookeeper_ref.agreement([same, same, ("0x100000029", 39, 100, 8)])
    assert not agreed and "server 3: zxid 0x100000029, version 39" in text


def _fig(**extra):
    return {"ops_per_s": 1000.0, "mib_per_s": 0.1, "p50_ms": 1.0, "p99_ms": 2.0, **extra}


def test_a_disagreement_is_reported_loudly_and_fails_the_command_line():
    results = {
        "etcd": {"durable": {"100": _fig(settings=["--x=1"], agreed=True, agreement="all 3")}},
        "zookeeper": {"durable": {"100": _fig(settings=[], agreed=False, agreement="server 3")}},
    }
    text = run.format_baselines(results)
    assert "etcd non-default settings: --x=1" in text
    assert "etcd: the members agree after the run (all 3)" in text
    assert "zookeeper: THE MEMBERS DISAGREE after the run: server 3" in text
    assert run.disagreed(results) == ["zookeeper"]
    assert run.disagreed({"smr": {"ordered": {"100": _fig()}}}) == []


def test_client_bound_workloads_are_named():
    results = {
        "etcd": {
            "durable": {
                "100": _fig(client_cpu_us_per_op=900.0),  # 0.9 s of CPU per second
                "1024": _fig(client_cpu_us_per_op=100.0),
            }
        }
    }
    text = run.format_bounds(results)
    assert text == (
        "etcd durable 100 B: bounded by the client process (busy 90% of a core): "
        "the system may do more"
    )


def test_settings_name_what_1_mib_needs():
    assert any("jute.maxbuffer" in s for s in zookeeper_ref.settings(1 << 20))
    assert not any("jute.maxbuffer" in s for s in zookeeper_ref.settings(1024))
    assert not any("max-request-bytes" in s for s in etcd_ref.settings(1 << 20))
    assert any("--max-request-bytes=" in s for s in etcd_ref.settings(4 << 20))


def _real_run(system: str) -> dict:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "compare",
            "--systems",
            system,
            "--sizes",
            "100,1048576",
            "--duration-s",
            "0.3",
            "--warmup-s",
            "0.1",
            "--window",
            "16",
            "--reads",
            "--watches",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _check(results: dict, system: str) -> None:
    assert list(results) == [system]
    # reads at each level, beside smr's (`--reads`); a watch row where the system can watch
    # every change (`--watches`: etcd, not ZooKeeper's one-shot watches)
    watched = {"watch"} if system == "etcd" else set()
    assert set(results[system]) == {"durable", "lin-read", "seq-read", *watched}
    if watched:
        watch = results[system]["watch"]["100"]
        assert watch["count"] > 0 and watch["p50_ms"] > 0 and watch["writes_per_s"] > 0
        assert watch["w1_p50_ms"] > 0
        assert watch["missed"] == watch["repeats"] == watch["skips"] == 0, watch
    for level in ("lin-read", "seq-read"):
        read = results[system][level]["100"]
        assert read["count"] > 0 and read["w1_p50_ms"] > 0 and read["agreed"] is True
    sizes = results[system]["durable"]
    assert set(sizes) == {"100", "1048576"}
    for fig in sizes.values():
        assert fig["count"] > 0 and fig["agreed"] is True
        assert len(fig["member_cpu_us_per_op"]) == 3 and fig["client_cpu_us_per_op"] > 0
        for pid_text in fig["member_cpu_us_per_op"]:
            assert pid_text in ("1", "2", "3")
    assert sizes["100"]["w1_p50_ms"] > 0


@pytest.mark.cluster
@pytest.mark.skipif(
    etcd_ref.missing() is not None, reason=f"etcd cannot run here: {etcd_ref.missing()}"
)
def test_etcd_short_real_run():
    _check(_real_run("etcd"), "etcd")


@pytest.mark.cluster
@pytest.mark.skipif(
    zookeeper_ref.missing() is not None,
    reason=f"ZooKeeper cannot run here: {zookeeper_ref.missing()}",
)
def test_zookeeper_short_real_run():
    _check(_real_run("zookeeper"), "zookeeper")
