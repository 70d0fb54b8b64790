"""Shared test helpers: a hand-driven in-memory network of replicas."""

from __future__ import annotations

from collections import deque

import pytest

from smr.core.replica import Replica
from smr.runtime.executor import Executor


class Net:
    """Replicas wired by FIFO links that a test can hold (nothing delivered) and release. A
    write carries its epoch, as every transport's does.

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
        self.executors: dict[int, Executor] = {}

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
        executor = self.executors.get(m)
        if executor is None:
            executor = self.executors[m] = Executor(m, _NetMember(self, m))

        def observe(ready) -> None:
            self.deliveries[m].extend(ready.deliveries)
            self.events[m].extend(ready.events)

        executor.drain(r, observe)
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
                                self.r[b].on_write(a, item[1], item[2], item[3])
                            else:
                                self.r[b].on_data(a, item[1])
                    continue
                batch: list = []
                while q:
                    item = q.popleft()
                    if item[0] == "w" and self.batch_writes:
                        batch.append((a, item[3], item[1], item[2]))
                        continue
                    if batch:
                        self.r[b].on_writes(batch)
                        batch = []
                    if item[0] == "w":
                        self.r[b].on_write(a, item[1], item[2], item[3])
                    else:
                        self.r[b].on_data(a, item[1])
                if batch:
                    self.r[b].on_writes(batch)
            if not progressed:
                return
        raise AssertionError("the network did not settle")


class _NetMember:
    """The executor's host for one member of a `Net`: appends wait for `sync_disk`, the rest of
    the log is not kept, a delivery's result is `r<member>:` and its payload's first bytes, and
    a state machine is only the version it is at."""

    def __init__(self, net: Net, m: int):
        self.net = net
        self.m = m
        self.versions: dict[tuple[int, int], int] = {}
        self.reads: dict[int, tuple[object, int]] = {}  # ticket -> (event, version read at)

    def prepare_view(self, event) -> None:
        pass

    def persist_meta(self, request) -> None:
        pass

    def persist_append(self, request) -> None:
        self.net.unsynced[self.m].append(request)

    def persist_flush(self, subgroup, shard) -> None:
        self.net.sync_disk(self.m)

    def persist_rewrite(self, request) -> None:
        pass

    def push(self, push) -> None:
        for t in push.targets:
            self.net.links.setdefault((self.m, t), deque()).append(
                ("w", push.offset, push.data, push.epoch)
            )

    def send(self, send) -> None:
        self.net.links.setdefault((self.m, send.target), deque()).append(("d", send.payload))

    def apply(self, deliveries) -> list[bytes]:
        for d in deliveries:
            self.versions[(d.subgroup, d.shard)] = d.version
        return [b"r%d:" % self.m + d.payload[:4] for d in deliveries]

    def state_of(self, subgroup, shard) -> tuple[int, bytes]:
        return self.versions.get((subgroup, shard), 0), b""

    def state_sent(self, event, version, size_bytes) -> None:
        pass

    def restore(self, event) -> None:
        self.versions[(event.subgroup, event.shard)] = event.version

    def view_installed(self, event) -> None:
        pass

    def answer(self, event, results) -> None:
        pass

    def answer_read(self, event) -> None:
        self.reads[event.ticket] = (event, self.versions.get((event.subgroup, event.shard), 0))

    def flush_answers(self) -> None:
        pass

    def notify(self, event) -> None:
        pass


def dropped(replica: Replica) -> list:
    """The PeerMisbehaved events of a replica driven by hand: its next Ready, advanced."""
    from smr.core.multicast import PeerMisbehaved

    ready = replica.ready()
    replica.advance(ready)
    return [e for e in ready.events if isinstance(e, PeerMisbehaved)]


@pytest.fixture
def make_net():
    def make(members, **kwargs) -> Net:
        return Net({m: Replica(m, members, **kwargs) for m in members})

    return make
