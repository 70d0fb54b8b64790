"""A member restarted on a damaged log (a flipped byte, a torn tail, a missing segment) never
serves from it: it reports the damage and gets the shard's state from its peers, and nothing
acknowledged is lost. Real member processes; the damage is done while the member is down."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import pytest

import smr
from smr.runtime.cluster import LocalCluster
from smr.statemachines import KVStore

pytestmark = pytest.mark.cluster


def _segments(data_dir: str, member: int) -> list[str]:
    shard = os.path.join(data_dir, "data", f"member-{member}", "subgroup-0-shard-0")
    return sorted(glob.glob(os.path.join(shard, "*.seg")))


def _flip(path: str) -> None:
    with open(path, "r+b") as f:
        size = os.path.getsize(path)
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0x40]))


def _tear(path: str) -> None:
    os.truncate(path, os.path.getsize(path) - 5)


def _remove(path: str) -> None:
    os.remove(path)


@pytest.mark.parametrize("damage", [_flip, _tear, _remove], ids=["flipped", "torn", "missing"])
def test_a_member_on_a_damaged_log_recovers_from_its_peers_and_loses_nothing(tmp_path, damage):
    data_dir = str(tmp_path)
    with LocalCluster(3, data_dir=data_dir, transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=1) as client:
            kv = client.subgroup(KVStore)
            for i in range(60):
                assert sorted(kv.put(f"k{i % 10}", b"v%d" % i)) == [1, 2, 3]
            cluster.kill(3)
            segments = _segments(data_dir, 3)
            assert segments, "member 3 logged the shard"
            damage(segments[-1])
            for i in range(60, 80):  # the group goes on meanwhile
                kv.put(f"k{i % 10}", b"v%d" % i)
            cluster.restart(3)
            cluster.wait_ready([1, 2, 3])
            assert sorted(kv.put("after", b"x")) == [1, 2, 3]
        with smr.connect(cluster.config_path, member=3) as client3:
            kv3 = client3.subgroup(KVStore)
            for k in range(10):
                assert kv3.get(f"k{k}", consistency="sequential") == b"v%d" % (70 + k)
    lines = [
        json.loads(line)
        for line in Path(cluster.log_path(3)).read_text().splitlines()
        if line.startswith("{")
    ]
    if damage is _flip:
        # a flipped byte is reported, never trusted: the log is kept aside for `smr log verify`
        assert any(line["event"] == "log-corrupt" for line in lines)
        assert os.path.isdir(os.path.join(data_dir, "data", "member-3.previous"))
    # whatever the damage, member 3 got the shard's state from a peer after its restart
    restored = [line for line in lines if line["event"] == "state-restored"]
    assert restored and restored[-1]["version"] > 0
