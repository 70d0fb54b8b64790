"""`smr log` questions what it should: the wrong directory, the wrong state machine type, a torn
log; it decodes what it shows; a refused command changes nothing on disk. The logs are laid out
as a cluster's members write them (data/member-N/subgroup-I-shard-J, next to cluster.toml)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from smr.cli.main import cli
from smr.log import Log, LogConfig, Record
from smr.runtime.config import write_local
from smr.runtime.hosted import SNAPSHOT_FORMAT, wrap
from smr.statemachines import KVStore

CLIENT = 0x1234
TS_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123457Z
RECORDS = 20


def _write_shard(path: Path, records: int = RECORDS) -> None:
    log = Log.open(str(path), LogConfig(segment_bytes_max=1 << 20))
    log.meta_put(SNAPSHOT_FORMAT, b"hosted")
    log.append(
        [
            Record(
                (1 << 32) + i,
                TS_NS + i,
                0,
                0,
                wrap(CLIENT, i, KVStore.encode_command("put", f"k{i}", b"v%d" % i)),
            )
            for i in range(1, records + 1)
        ]
    )
    log.sync()
    log.close()


@pytest.fixture
def cluster_dir(tmp_path) -> Path:
    """A stopped cluster's directory: cluster.toml (KVStore in subgroup 0) and two members'
    logs of shard 0, the same records at both."""
    write_local(str(tmp_path), nodes=2)
    for m in (1, 2):
        _write_shard(tmp_path / "data" / f"member-{m}" / "subgroup-0-shard-0")
        (tmp_path / "data" / f"member-{m}" / "meta").mkdir()
    return tmp_path


def _shard(cluster_dir: Path, member: int = 1) -> Path:
    return cluster_dir / "data" / f"member-{member}" / "subgroup-0-shard-0"


def smr_log(*args) -> object:
    return CliRunner().invoke(cli, ["log", *map(str, args)])


def _tear(shard: Path, records_lost: int) -> None:
    """Cut the last segment inside a record, `records_lost` records from the end (a crash)."""
    seg = sorted(shard.glob("*.seg"))[-1]
    data = seg.read_bytes()
    record_bytes = (len(data) - 64) // RECORDS  # equal-sized records, roughly
    seg.write_bytes(data[: len(data) - records_lost * record_bytes + 8])


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("command", ["inspect", "dump", "verify"])
def test_a_member_directory_is_refused_naming_its_shard_logs(cluster_dir, command):
    member = cluster_dir / "data" / "member-1"
    _write_shard(member / "subgroup-1-shard-0", records=2)
    r = smr_log(command, member)
    assert r.exit_code != 0
    assert "is a member directory; its shard logs are: subgroup-0-shard-0 subgroup-1-shard-0" in (
        r.output
    )
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_a_data_directory_is_refused_naming_its_members(cluster_dir):
    r = smr_log("dump", cluster_dir / "data")
    assert r.exit_code != 0 and "member-1 member-2" in r.output


def test_replay_with_the_wrong_state_machine_is_an_error(cluster_dir):
    r = smr_log("replay", _shard(cluster_dir), "--state-machine", "smr.statemachines:Counter")
    assert r.exit_code != 0
    assert "is not a Counter command" in r.output and "--state-machine" in r.output
    assert "digest" not in r.output


def test_dump_decodes_operations_and_shows_utc_times(cluster_dir):
    r = smr_log("dump", _shard(cluster_dir), "--to", str((1 << 32) + 2))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) == 2
    assert "put(key='k1', value=b'v1')" in lines[0]  # the type from cluster.toml
    assert "2023-11-14T22:13:20.123456Z" in lines[0]
    assert f"client={CLIENT:#x}/1" in lines[0]
    r = smr_log(
        "dump", _shard(cluster_dir), "--json", "--state-machine", "smr.statemachines:KVStore"
    )
    row = json.loads(r.output.splitlines()[0])
    assert row["operation"] == {"name": "put", "args": {"key": "k1", "value": "v1"}}
    assert row["time"] == "2023-11-14T22:13:20.123456Z" and row["timestamp_ns"] == TS_NS + 1


def test_dump_with_the_wrong_state_machine_is_an_error(cluster_dir):
    r = smr_log("dump", _shard(cluster_dir), "--state-machine", "smr.statemachines:Counter")
    assert r.exit_code != 0 and "is not a Counter command" in r.output


def test_replay_shows_the_state_and_answers_queries(cluster_dir):
    r = smr_log("replay", _shard(cluster_dir), "--show", "--query", "get k3", "--query", "get x")
    assert r.exit_code == 0, r.output
    assert "state:" in r.output and "'k20': b'v20'" in r.output
    assert "get k3: b'v3'" in r.output and "get x: None" in r.output


@pytest.mark.parametrize("command", ["dump", "replay"])
def test_a_torn_log_is_a_warning_of_what_was_dropped_and_an_error(cluster_dir, command):
    shard = _shard(cluster_dir)
    _tear(shard, records_lost=16)
    r = smr_log(command, shard)
    assert r.exit_code == 1
    assert "ends in a torn record" in r.stderr and "bytes after byte" in r.stderr
    assert "this log ends at version 0x100000004" in r.stderr
    assert "member-2 holds 16 record(s) after it" in r.stderr
    assert "--accept-torn-tail" in r.stderr
    accepted = smr_log(command, shard, "--accept-torn-tail")
    assert accepted.exit_code == 0 and "ends in a torn record" in accepted.stderr
    assert "--accept-torn-tail to accept" not in accepted.stderr


def test_a_refused_trim_says_how_to_save_a_snapshot_and_changes_nothing(cluster_dir):
    shard = _shard(cluster_dir)
    _tear(shard, records_lost=2)
    before = _files(shard)
    r = smr_log("trim", shard, "--below", str((1 << 32) + 5))
    assert r.exit_code == 1
    assert f"smr log snapshot {shard}" in r.output
    assert _files(shard) == before  # not even the torn tail was repaired


def test_snapshot_then_trim_keeps_the_state(cluster_dir):
    shard = _shard(cluster_dir)
    r = smr_log("snapshot", shard)
    assert r.exit_code == 0, r.output
    assert f"saved a snapshot at {(1 << 32) + RECORDS:#x}" in r.output
    r = smr_log("trim", shard, "--below", str((1 << 32) + RECORDS))
    assert r.exit_code == 0, r.output
    r = smr_log("replay", shard, "--query", "get k7")
    assert r.exit_code == 0 and "get k7: b'v7'" in r.output


def test_a_trim_of_a_torn_log_is_refused_unless_accepted(cluster_dir):
    shard = _shard(cluster_dir)
    assert smr_log("snapshot", shard).exit_code == 0
    _tear(shard, records_lost=2)
    before = _files(shard)
    r = smr_log("trim", shard, "--below", str((1 << 32) + 5))
    assert r.exit_code == 1 and "needs repair" in r.output
    assert _files(shard) == before
    r = smr_log("trim", shard, "--below", str((1 << 32) + 5), "--accept-torn-tail")
    assert r.exit_code == 0 and "repaired" in r.stderr


def test_a_directory_without_a_log_is_refused(tmp_path):
    os.mkdir(tmp_path / "empty")
    r = smr_log("inspect", tmp_path / "empty")
    assert r.exit_code != 0 and "holds no log" in r.output


def test_dump_raw_shows_the_bytes(cluster_dir):
    r = smr_log("dump", _shard(cluster_dir), "--raw", "--to", str((1 << 32) + 1))
    assert r.exit_code == 0, r.output
    assert "put(" not in r.output and "B b'" in r.output
