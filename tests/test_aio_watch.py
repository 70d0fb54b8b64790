"""The asyncio client's watch: every command once, in order, across a SIGKILL of its member;
a trimmed version refused; close ends an iteration in progress."""

from __future__ import annotations

import asyncio

import pytest

import smr.aio
from smr.runtime.cluster import LocalCluster
from smr.statemachines import KVStore
from smr.watch import WatchTrimmedError

pytestmark = pytest.mark.cluster


def test_an_async_watch_sees_every_put_once_in_order_across_a_sigkill(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()

        async def main() -> tuple[list, list, int, int | None]:
            async with smr.aio.connect(cluster.config_path, member=1) as client:
                kv = client.subgroup(KVStore)
                seen: list = []
                watch = kv.watch(from_version=0, member=2)

                async def collect() -> None:
                    async for event in watch:
                        seen.append(event)

                reader = asyncio.create_task(collect())
                written = []
                for i in range(60):
                    value = b"v%d" % i
                    await kv.put(f"k{i % 5}", value)
                    written.append(value)
                    if i == 30:
                        for _ in range(100):  # the watch is in place at member 2
                            if watch.member == 2:
                                break
                            await asyncio.sleep(0.05)
                        assert watch.member == 2
                        cluster.kill(2)  # the watched member: the watch moves on by itself
                await kv.delete("k0")
                written.append(None)
                for _ in range(200):
                    if len(seen) >= len(written):
                        break
                    await asyncio.sleep(0.05)
                await watch.close()
                await asyncio.wait_for(reader, 5)  # close ends the iteration
                return seen, written, watch.resumes, watch.member

        seen, written, resumes, member = asyncio.run(main())
        assert resumes >= 1 and member != 2
        assert [e.args.get("value") for e in seen] == written  # every command, once, in order
        versions = [e.version for e in seen]
        assert versions == sorted(set(versions))
        assert seen[-1].operation == "delete" and seen[-1].result is True


def test_an_async_watch_from_a_version_no_longer_kept_is_trimmed(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path) as client:
            kv = client.subgroup(KVStore)
            for i in range(5):
                kv.put("a", b"%d" % i)
        cluster.stop()
        cluster.start()  # a total restart: the watch history starts again after it
        cluster.wait_ready()

        async def main() -> tuple[int, object]:
            async with smr.aio.connect(cluster.config_path) as client:
                kv = client.subgroup(KVStore)
                with pytest.raises(WatchTrimmedError) as trimmed:
                    async with kv.watch(from_version=0) as w:
                        await w.__anext__()
                oldest = trimmed.value.oldest
                async with kv.watch(from_version=oldest) as w:
                    await kv.put("a", b"after")
                    event = await asyncio.wait_for(w.__anext__(), 10)
                return oldest, event

        oldest, event = asyncio.run(main())
        assert oldest > 0
        assert event.args == {"key": "a", "value": b"after"} and event.result == b"4"
