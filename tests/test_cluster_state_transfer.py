"""State transfer on real member processes: the snapshot a rejoining member receives is stamped
with the version its provider's state machine was at, in the log lines, in the snapshot file and
for `smr log replay --upto`.

(Before the one executor, the node sent `StateTransfer.version`, which is 0 outside a restart: a
rejoined member's snapshot said version 0 and a replay up to an early version silently gave the
state of a later one.)
"""

from __future__ import annotations

import json
import os

import pytest

import smr
from smr.log import Log
from smr.runtime.cluster import LocalCluster
from smr.statemachines import KVStore

pytestmark = pytest.mark.cluster


def _lines(cluster: LocalCluster, member: int, event: str) -> list[dict]:
    out = []
    with open(cluster.log_path(member)) as f:
        for line in f:
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    out.append(record)
    return out


def _shard_log(data_dir: str, member: int) -> str:
    return os.path.join(data_dir, "data", f"member-{member}", "subgroup-0-shard-0")


@pytest.mark.parametrize("transport", ["tcp"])
def test_a_rejoined_members_snapshot_carries_its_providers_version(tmp_path, transport):
    with LocalCluster(3, data_dir=str(tmp_path), transport=transport, mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=1) as client:
            kv = client.subgroup(KVStore)
            for i in range(40):
                kv.put(f"k{i % 5}", b"%d" % i)
            cluster.kill(3)
            for i in range(40, 60):
                kv.put(f"k{i % 5}", b"%d" % i)
            cluster.restart(3)
            cluster.wait_ready([1, 2, 3])
            kv.put("last", b"x")
    sent = [r for m in (1, 2) for r in _lines(cluster, m, "state-sent") if r["to"] == 3]
    restored = _lines(cluster, 3, "state-restored")
    assert sent and restored, "member 3 did not rejoin by state transfer"
    version = restored[-1]["version"]
    assert version == sent[-1]["version"]
    assert version >> 32 >= 2, f"the snapshot is stamped {version:#x}, not a version of view 2"
    provider = sent[-1]["member"]
    with Log.open(_shard_log(str(tmp_path), provider)) as log:
        versions = set(log.versions())
    assert version in versions, "the provider never applied the version the snapshot claims"
    with Log.open(_shard_log(str(tmp_path), 3)) as log:
        snaps = log.snapshot_versions()
        assert snaps == [version]
        assert all(v > version for v in log.versions())
