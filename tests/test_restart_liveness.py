"""A total restart that a member joins late, on real member processes.

Found by the 10-minute `smr chaos` runs (restart-all, and kill + pause): in a two-member view
whose members suspect each other (a pause), both halt, as partition safety says (one of two is
no majority), and rejoin: each restarts from its own logs. One of them first heard NEWER from
the other, still active for a moment, and turned to join it; then the other halted too. The
restart needs a majority of the last view, so the joiner's promise, and a joiner never gave one:
the cluster stayed down for good. A joiner that turned from a restart now restarts again when it
is asked for a promise (`Replica._on_restart_frame`).
"""

from __future__ import annotations

import time

import pytest

import smr
from smr.runtime.cluster import LocalCluster
from smr.statemachines import KVStore

pytestmark = pytest.mark.cluster


def test_both_members_of_a_two_member_view_halt_and_the_group_restarts_with_the_third(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=1) as client:
            kv = client.subgroup(KVStore)
            for i in range(20):
                kv.put("a", b"%d" % i)
        cluster.kill(3)
        time.sleep(1.5)  # the view is [1, 2]
        cluster.pause(2)
        time.sleep(0.6)  # 1 suspects 2: one of two, it halts; 2 halts once it runs again
        cluster.resume(2)
        time.sleep(1.0)
        cluster.restart(3)
        cluster.wait_ready([1, 2, 3], timeout_s=30)
        with smr.connect(cluster.config_path, member=3) as client:
            kv = client.subgroup(KVStore)
            assert kv.get("a") == b"19"  # nothing acknowledged was lost
            assert sorted(kv.put("a", b"after")) == [1, 2, 3]
