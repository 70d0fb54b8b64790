"""A request over the frame limit: a clear error at once (the client knows the limit), a clear
error from the member when the client's configuration allows more than the member's, and in
both cases the client's next request works. Real member processes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import smr
from smr.client import ClientError, RequestTooLargeError
from smr.runtime.cluster import LocalCluster
from smr.runtime.config import write_local
from smr.statemachines import KVStore

pytestmark = pytest.mark.cluster

LIMIT = 1 << 20  # the members' [limits] frame_bytes_max in these tests


@pytest.fixture
def cluster(tmp_path):
    path = write_local(str(tmp_path), nodes=3, transport="tcp", mode="ordered")
    with open(path, "a") as f:
        f.write(f"\n[limits]\nframe_bytes_max = {LIMIT}\n")
    with LocalCluster(3, data_dir=str(tmp_path), config_path=path) as c:
        c.wait_ready()
        yield c


def _rejections(cluster) -> int:
    return sum(Path(cluster.log_path(m)).read_text().count("client-rejected") for m in (1, 2, 3))


def test_a_request_over_the_limit_fails_at_once_and_the_next_one_works(cluster):
    with smr.connect(cluster.config_path, member=1) as client:
        kv = client.subgroup(KVStore)
        with pytest.raises(RequestTooLargeError) as e:
            kv.put("big", b"x" * (LIMIT + 1000))
        message = str(e.value)
        assert "frame_bytes_max" in message and f"{LIMIT:,}" in message
        with pytest.raises(RequestTooLargeError):
            kv.submit("put", "big", b"x" * (2 * LIMIT))  # pipelined: raised before sending too
        assert sorted(kv.put("small", b"v")) == [1, 2, 3]
        assert kv.get("small") == b"v"
        assert kv.get("big") is None
    assert _rejections(cluster) == 0  # nothing oversized was sent


def test_a_members_refusal_reaches_a_client_with_a_higher_limit(cluster):
    # a client whose configuration allows more than the members' (say, an older copy)
    config = dataclasses.replace(cluster.config, frame_bytes_max=8 * LIMIT)
    with smr.connect(config, member=2) as client:
        kv = client.subgroup(KVStore)
        with pytest.raises(ClientError) as e:
            kv.put("big", b"x" * (LIMIT + 1000))
        assert "frame limit" in str(e.value) and str(LIMIT) in str(e.value)
        assert sorted(kv.put("small", b"v")) == [1, 2, 3]  # the next request works
        # the client learnt the members' limit: the next oversized request fails before sending
        with pytest.raises(RequestTooLargeError):
            kv.put("big", b"x" * (LIMIT + 1000))
        assert kv.get("small") == b"v"
    assert _rejections(cluster) == 1  # refused once, never sent again


def test_an_answer_over_the_limit_is_an_error_saying_the_command_was_applied(cluster):
    value = b"x" * (LIMIT // 2)  # fits; three replicas' previous values in one answer do not
    with smr.connect(cluster.config_path, member=3) as client:
        kv = client.subgroup(KVStore)
        assert sorted(kv.put("k", value)) == [1, 2, 3]
        with pytest.raises(ClientError) as e:
            kv.put("k", b"new")  # answered with every replica's previous value: 3 x LIMIT / 2
        assert "was applied" in str(e.value) and "replies='one'" in str(e.value)
        assert kv.get("k") == b"new"  # read your writes: the applied command is seen
        one = client.subgroup(KVStore, replies="one")
        assert one.put("k", value) == {3: b"new"}
        assert list(one.put("k", b"v").values()) == [value]  # one replica's result fits
