"""`smr log` through click's CliRunner."""

import json
import sys
import types

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smr.cli.log_cmd import log_group
from smr.log import Log, LogConfig, Record


def make_log(path, n=60, snapshot=None):
    log = Log.open(str(path), LogConfig(segment_bytes_max=500, sync_policy="interval:7"))
    log.append([Record(v, 1000 + v, 0, 1, f"add {v}".encode()) for v in range(1, n + 1)])
    log.sync()
    if snapshot is not None:
        log.save_snapshot(snapshot, str(sum(range(1, snapshot + 1))).encode())
    log.meta_put("view", b"view 3: members 0,1,2")
    log.close()


def run(*args):
    return CliRunner().invoke(log_group, [str(a) for a in args])


def test_inspect(tmp_path):
    make_log(tmp_path, snapshot=20)
    r = run("inspect", tmp_path)
    assert r.exit_code == 0, r.output
    assert "interval:7" in r.output and "view 3: members" in r.output
    assert "0x14" in r.output  # the snapshot
    assert "records:       60" in r.output
    assert ".seg" in r.output


def test_dump_text_and_json(tmp_path):
    make_log(tmp_path)
    r = run("dump", tmp_path, "--from", "5", "--to", "0x7", "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["version"] for row in rows] == [5, 6, 7]
    assert rows[0]["payload"] == "add 5" and rows[0]["timestamp_ns"] == 1005
    r = run("dump", tmp_path, "--to", "2")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 2


def test_missing_dir_is_one_line(tmp_path):
    for cmd in ("inspect", "dump", "verify"):
        r = run(cmd, tmp_path / "absent")
        assert r.exit_code == 1
        assert "does not exist" in r.output and "Traceback" not in r.output


def test_verify_ok(tmp_path):
    make_log(tmp_path)
    r = run("verify", tmp_path)
    assert r.exit_code == 0 and r.output.startswith("ok:")


def _segment_bytes(tmp_path):
    return [(p, p.read_bytes()) for p in sorted(tmp_path.glob("*.seg"))]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.floats(0, 1), st.integers(1, 255))
def test_verify_catches_a_flipped_byte_anywhere(tmp_path_factory, where, xor):
    d = tmp_path_factory.mktemp("log")
    make_log(d)
    segs = _segment_bytes(d)
    total = sum(len(b) for _, b in segs)
    at = int(where * (total - 1))
    for path, data in segs:
        if at < len(data):
            b = bytearray(data)
            b[at] ^= xor
            path.write_bytes(bytes(b))
            break
        at -= len(data)
    r = run("verify", d)
    assert r.exit_code == 1
    assert "DAMAGED" in r.output and path.name in r.output


def test_dump_of_damaged_log_is_one_line(tmp_path):
    make_log(tmp_path)
    path, data = _segment_bytes(tmp_path)[0]
    b = bytearray(data)
    b[40] ^= 1
    path.write_bytes(bytes(b))
    r = run("dump", tmp_path)
    assert r.exit_code == 1 and path.name in r.output and "Traceback" not in r.output


class Adder:
    def __init__(self):
        self.total = 0

    def restore(self, data):
        self.total = int(data)

    def apply(self, payload, entry):
        assert entry.version == int(payload.split()[1])
        self.total += int(payload.split()[1])

    def digest(self):
        return f"total={self.total}"


@pytest.fixture
def fake_api(monkeypatch):
    mod = types.ModuleType("adder_sm")
    mod.Adder = Adder
    monkeypatch.setitem(sys.modules, "adder_sm", mod)


def test_replay(tmp_path, fake_api):
    make_log(tmp_path, snapshot=20)
    r = run("replay", tmp_path, "--state-machine", "adder_sm:Adder")
    assert r.exit_code == 0, r.output
    assert f"total={sum(range(1, 61))}" in r.output
    assert "records applied: 40" in r.output and "0x15..0x3c" in r.output
    r = run("replay", tmp_path, "--state-machine", "adder_sm:Adder", "--upto", "10")
    assert f"total={sum(range(1, 11))}" in r.output and "snapshot: none" in r.output
    r = run("replay", tmp_path, "--state-machine", "nope_module:X")
    assert r.exit_code == 1 and "cannot import" in r.output


def test_trim(tmp_path):
    make_log(tmp_path, snapshot=40)
    before = len(list(tmp_path.glob("*.seg")))
    r = run("trim", tmp_path, "--below", "41")
    assert r.exit_code == 1 and "snapshot" in r.output
    r = run("trim", tmp_path, "--below", "40")
    assert r.exit_code == 0, r.output
    assert len(list(tmp_path.glob("*.seg"))) < before
    r = run("dump", tmp_path, "--json")
    assert json.loads(r.output.splitlines()[0])["version"] == 40


def test_inspect_does_not_repair(tmp_path):
    make_log(tmp_path)
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    seg.write_bytes(seg.read_bytes()[:-3])
    size = seg.stat().st_size
    r = run("inspect", tmp_path)
    assert r.exit_code == 0 and "needs repair" in r.output
    assert seg.stat().st_size == size
    assert run("verify", tmp_path).exit_code == 1


def test_bench_log_smoke(tmp_path):
    from smr.cli.bench_log import bench_log

    r = CliRunner().invoke(
        bench_log, ["--dir", str(tmp_path), "--duration-s", "0.05", "--count-64k", "8", "--json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    for key in (
        "durable_appends_per_s",
        "raw_fsyncs_per_s",
        "record64k_mb_per_s",
        "raw_write_mb_per_s",
    ):
        assert out[key] > 0
    assert list(tmp_path.iterdir()) == []  # the temp dir is cleaned up
