"""A client attached to a hung member (SIGSTOP: its connection stays open) gives it up once it
says nothing, even to a status request, for `silence_s` twice, and its commands are answered by
another member, applied once. Without it the client waited for the member to resume or for its
own timeout (docs/reliability.md, the pauses of `smr chaos`)."""

from __future__ import annotations

import asyncio

import pytest

import smr
import smr.aio
from smr.client_core import ClientCore, OutcomeUnknownError
from smr.runtime import protocol
from smr.runtime.cluster import LocalCluster
from smr.statemachines import KVStore

pytestmark = pytest.mark.cluster


def test_the_core_asks_a_silent_member_for_its_status_then_gives_it_up():
    import random

    core = ClientCore([1, 2, 3], rng=random.Random(1), frame_bytes_max=1 << 20, silence_s=1.0)
    conn = object()
    core.on_connected(conn, 2)
    assert core.check_silence(0.0) == ([], False)  # nothing outstanding: nothing to hear
    core.query("token", 0, 0, b"q", None)  # on the wire, unanswered
    assert core.check_silence(0.5) == ([], False)
    assert core.next_due() == pytest.approx(1.0)  # a second after it was last heard
    probe, give_up = core.check_silence(1.1)
    assert len(probe) == 1 and not give_up  # asked for its status
    # an answer to anything shows it is alive
    core.on_response(protocol.Response(probe[0][0], True), conn, 1.2)
    assert core.check_silence(2.0) == ([], False)
    probe, _ = core.check_silence(2.3)
    assert len(probe) == 1
    assert core.check_silence(3.2) == ([], False)
    assert core.check_silence(3.4)[1] is True and core.silences == 1


def _stop_and_put(cluster, put):
    cluster.pause(2)
    try:
        return put()
    finally:
        cluster.resume(2)


def test_a_threaded_client_leaves_a_hung_member_and_its_command_applies_once(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=2, timeout_s=8.0, silence_s=0.5) as client:
            kv = client.subgroup(KVStore)
            assert kv.put("a", b"1")
            assert client.member == 2
            results = _stop_and_put(cluster, lambda: kv.append("a", b"+"))
            assert client.member != 2 and client._core.silences == 1
            assert set(results.values()) == {2}  # b"1+": appended once
            assert kv.get("a") == b"1+"
        with smr.connect(cluster.config_path, member=1, timeout_s=3.0, silence_s=None) as client:
            kv = client.subgroup(KVStore)
            cluster.pause(1)
            try:  # without the check, a hung member's client waits for its timeout
                with pytest.raises(OutcomeUnknownError):
                    kv.put("b", b"2")
            finally:
                cluster.resume(1)


def test_an_asyncio_client_leaves_a_hung_member_too(tmp_path):
    async def main(cluster):
        async with smr.aio.connect(
            cluster.config_path, member=2, timeout_s=8.0, silence_s=0.5
        ) as client:
            kv = client.subgroup(KVStore)
            await kv.put("a", b"1")
            cluster.pause(2)
            try:
                results = await kv.append("a", b"+")
            finally:
                cluster.resume(2)
            assert client._core.silences == 1 and set(results.values()) == {2}
            assert await kv.get("a") == b"1+"

    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        asyncio.run(main(cluster))
