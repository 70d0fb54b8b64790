"""The built-in classic Multi-Paxos as a cluster protocol (`protocol = "multipaxos"`): real member
processes over tcp on loopback, the same client API, the configuration's checks.

Process-level tests are bounded in time and end every process by its PID (`LocalCluster`)."""

from __future__ import annotations

import time

import pytest

import smr
from smr.client_core import ClientError
from smr.runtime.cluster import LocalCluster
from smr.runtime.config import ConfigError, parse
from smr.statemachines import KVStore

WAIT_S = 30.0


def _until(cond, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.05)


def _raw(**cluster):
    return {
        "cluster": {"name": "t", "secret_hex": "ab" * 16, "protocol": "multipaxos", **cluster},
        "members": [
            {"id": 1, "port": 7001, "client_port": 7101},
            {"id": 2, "port": 7002, "client_port": 7102},
            {"id": 3, "port": 7003, "client_port": 7103},
        ],
        "subgroups": [{"type": "smr.statemachines:KVStore", "mode": "durable"}],
    }


def test_the_configuration_says_what_multipaxos_cannot_do():
    assert parse(_raw()).protocol == "multipaxos"
    raw = _raw()
    raw["subgroups"][0]["shards"] = 2
    with pytest.raises(ConfigError, match="replicates one log"):
        parse(raw)
    raw = _raw()
    raw["subgroups"][0]["mode"] = "ordered"
    with pytest.raises(ConfigError, match='mode = "durable"'):
        parse(raw)
    with pytest.raises(ConfigError, match="fixed membership"):
        parse(_raw(founders=[1, 2]))
    raw = _raw()
    raw["members"][0]["metrics_port"] = 7201
    with pytest.raises(ConfigError, match="serve no metrics"):
        parse(raw)
    with pytest.raises(ConfigError, match="protocol 'raft' is not one of derecho, multipaxos"):
        parse(_raw(protocol="raft"))


def _leader(cluster) -> int | None:
    """The leader every member names, or None while they do not yet agree (a member that has
    not heard from the new leader names none)."""
    named = set()
    for member in (1, 2, 3):
        with smr.connect(cluster.config_path, member=member, timeout_s=10) as c:
            named.add(c.status()["leader"])
    return named.pop() if len(named) == 1 else None


@pytest.mark.cluster
def test_a_multipaxos_cluster_serves_the_same_client_api_and_survives_its_leaders_death(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", protocol="multipaxos") as cluster:
        cluster.wait_ready()
        agreed: list[int] = []
        _until(lambda: agreed.append(_leader(cluster)) or agreed[-1] is not None, "a leader")
        leader = agreed[-1]
        follower = next(m for m in (1, 2, 3) if m != leader)
        with smr.connect(cluster.config_path, member=follower, timeout_s=20) as client:
            kv = client.subgroup(KVStore)
            for i in range(50):
                assert kv.put(f"k{i}", b"v%d" % i) == {leader: None}  # followers redirect
            assert client.member == leader
            assert kv.get("k7") == b"v7"  # linearizable: ordered through the log
            assert kv.get("k8", consistency="sequential") == b"v8"
            with pytest.raises(ClientError, match="fixed by the configuration"):
                client.remove_member(follower)
            cluster.kill(leader)
            # the others elect a leader and go on; what was acknowledged is there
            assert list(kv.put("after", b"x")) != [leader]
            assert [kv.get(f"k{i}") for i in range(50)] == [b"v%d" % i for i in range(50)]
            cluster.restart(leader)
            # the restarted acceptor catches up with what was chosen without it
            with smr.connect(cluster.config_path, member=leader, timeout_s=20) as again:
                kv2 = again.subgroup(KVStore)
                _until(
                    lambda: kv2.get("after", consistency="sequential") == b"x",
                    "the restarted member catching up",
                )


@pytest.mark.cluster
def test_a_multipaxos_cluster_comes_back_whole_after_every_member_stopped(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", protocol="multipaxos") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, timeout_s=20) as client:
            kv = client.subgroup(KVStore)
            for i in range(30):
                kv.put(f"k{i}", b"v%d" % i)
        for m in (1, 2, 3):
            cluster.kill(m)  # SIGKILL: what was acknowledged is in a majority's votes
        cluster.start()
        cluster.wait_ready()
        with smr.connect(cluster.config_path, timeout_s=20) as client:
            kv = client.subgroup(KVStore)
            assert [kv.get(f"k{i}") for i in range(30)] == [b"v%d" % i for i in range(30)]
