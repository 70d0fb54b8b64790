"""Shared test helpers: a hand-driven in-memory network of replicas."""

from __future__ import annotations

from collections import deque

import pytest

from smr.core.replica import Replica


class Net:
    """Replicas wired by FIFO links that a test can hold (nothing delivered) and release.

    Durable appends are reported persisted at once unless the member's disk is held.
    """

    def __init__(self, replicas: dict[int, Replica]):
        self.r = replicas
        self.links: dict[tuple[int, int], deque] = {}
        self.held: set[tuple[int, int]] = set()
        self.disk_held: set[int] = set()
        self.unsynced: dict[int, list] = {m: [] for m in replicas}
        self.deliveries: dict[int, list] = {m: [] for m in replicas}
        self.events: dict[int, list] = {m: [] for m in replicas}
        self.results: dict[int, bytes] = {}
        self.batch_writes = False  # deliver a link's queued writes with one on_writes call
        self.batched = False  # deliver everything queued on a link inside Replica.batched()

    def hold(self, a: int, b: int) -> None:
        self.held.add((a, b))

    def release(self, a: int, b: int) -> None:
        self.held.discard((a, b))

    def sync_disk(self, m: int) -> None:
        for req in self.unsynced[m]:
            self.r[m].on_persisted(req.subgroup, req.shard, req.entries[-1].version)
        self.unsynced[m].clear()

    def _take(self, m: int) -> bool:
        r = self.r[m]
        if not r.has_ready():
            return False
        ready = r.ready()
        r.advance(ready)
        self.deliveries[m].extend(ready.deliveries)
        self.events[m].extend(ready.events)
        for push in ready.writes:
            for t in push.targets:
                self.links.setdefault((m, t), deque()).append(("w", push.offset, push.data))
        for send in ready.sends:
            self.links.setdefault((m, send.target), deque()).append(("d", send.payload))
        for req in ready.persist:
            self.unsynced[m].append(req)
        for d in ready.deliveries:
            if d.reply:
                r.reply(d, b"r%d:" % m + d.payload[:4])
        if m not in self.disk_held:
            self.sync_disk(m)
        return True

    def run(self, steps_max: int = 100_000) -> None:
        for _ in range(steps_max):
            progressed = any([self._take(m) for m in self.r])
            for (a, b), q in self.links.items():
                if (a, b) in self.held or not q:
                    continue
                progressed = True
                if self.batched:
                    with self.r[b].batched():
                        while q:
                            item = q.popleft()
                            if item[0] == "w":
                                self.r[b].on_write(a, item[1], item[2])
                            else:
                                self.r[b].on_data(a, item[1])
                    continue
                batch: list = []
                while q:
                    item = q.popleft()
                    if item[0] == "w" and self.batch_writes:
                        batch.append((a, self.r[b].epoch, item[1], item[2]))
                        continue
                    if batch:
                        self.r[b].on_writes(batch)
                        batch = []
                    if item[0] == "w":
                        self.r[b].on_write(a, item[1], item[2])
                    else:
                        self.r[b].on_data(a, item[1])
                if batch:
                    self.r[b].on_writes(batch)
            if not progressed:
                return
        raise AssertionError("the network did not settle")


@pytest.fixture
def make_net():
    def make(members, **kwargs) -> Net:
        return Net({m: Replica(m, members, **kwargs) for m in members})

    return make
