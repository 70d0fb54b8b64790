"""LocalGroup: the in-process group and the Handle a command returns (Derecho's reply map)."""

import pytest

from smr.core.errors import UsageError
from smr.group import LocalGroup
from smr.log import Log
from smr.statemachines import Counter, KVStore


def test_a_command_resolves_to_every_replicas_result():
    g = LocalGroup(3, [KVStore])
    kv = g.subgroup(KVStore)
    first = kv.put("k", b"v1")
    second = kv.put("k", b"v2")
    assert first.result() == {1: None, 2: None, 3: None}
    assert second.result() == {1: b"v1", 2: b"v1", 3: b"v1"}
    assert second.version > first.version
    assert [g.subgroup(KVStore, member=m).get("k") for m in (1, 2, 3)] == [b"v2"] * 3


def test_durable_commands_are_on_every_members_log_when_answered(tmp_path):
    g = LocalGroup(3, [Counter], mode="durable", data_dir=str(tmp_path))
    handle = g.subgroup(Counter, member=2).add(5)
    assert handle.result() == {1: 5, 2: 5, 3: 5}
    g.close()
    for m in (1, 2, 3):
        log = Log.open(str(tmp_path / f"member-{m}" / "subgroup-0-shard-0"))
        assert [r.version for r in log.iter()] == [handle.version]
        log.close()


def test_a_single_member_group_works():
    g = LocalGroup(1, [Counter])
    c = g.subgroup(Counter)
    assert c.add(2).result() == {1: 2}
    assert c.get() == 2


def test_misuse_is_a_clear_error():
    g = LocalGroup(2, [Counter])
    with pytest.raises(UsageError, match="not hosted"):
        g.subgroup(KVStore)
    with pytest.raises(AttributeError, match="no operation 'nope'"):
        g.subgroup(Counter).nope()


def test_log_replay_rebuilds_the_live_replicas_state(tmp_path):
    from click.testing import CliRunner

    from smr.cli.main import cli

    g = LocalGroup(3, [KVStore], mode="durable", data_dir=str(tmp_path))
    kv = g.subgroup(KVStore)
    for i in range(40):
        kv.put(f"k{i % 7}", b"v%d" % i)
    kv.delete("k1").result()
    live = g.members[2].machines[(0, 0)].digest()
    g.close()
    result = CliRunner().invoke(
        cli,
        [
            "log",
            "replay",
            str(tmp_path / "member-2" / "subgroup-0-shard-0"),
            "--state-machine",
            "smr.statemachines:KVStore",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"digest: {live}" in result.output
