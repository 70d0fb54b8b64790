"""An in-process group: N replicas of the real core in this process, driven to completion.

This module owns `LocalGroup`, the smallest way to use the toolkit: no processes, no network, a
deterministic in-memory transport with per-link FIFO delivery, and (optionally) real durable logs
in a directory. It is what a notebook, a test or a single-member group uses, and it shows the
user-facing shape of the API that the node runtime serves over the network:

    group = LocalGroup(members=3, types=[KVStore], mode="durable", data_dir="/tmp/kv")
    kv = group.subgroup(KVStore)
    handle = kv.put("a", b"1")       # an ordered command: a Handle
    handle.result()                  # {member: result} from every replica of the shard
    kv.get("a")                      # a query, served by one member

A command's `Handle` resolves when the shard's mode says it is done: once every member received
it (`ordered`) or persisted it (`durable`), with every replica's result, like Derecho's reply map.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from smr.api import Entry, OperationError, StateMachine
from smr.core.errors import UsageError
from smr.core.layout import SubgroupSpec
from smr.core.multicast import Completed, SubmitFailed
from smr.core.ready import LogAppend
from smr.core.replica import CoreConfig, Replica

STEPS_MAX = 1_000_000  # bound on the work one call may drive; a livelock is our bug


@dataclass
class Handle:
    """A submitted command. `result()` drives the group until it is answered."""

    group: LocalGroup
    member: int
    ticket: int
    machine: type[StateMachine]
    version: int | None = None
    results: dict[int, Any] | None = None
    error: str | None = None

    def done(self) -> bool:
        return self.results is not None or self.error is not None

    def result(self) -> dict[int, Any]:
        """Every replica's result, by member id, once the command met its shard's guarantee."""
        self.group.run_until(self.done)
        if self.error is not None:
            raise UsageError(self.error)
        assert self.results is not None
        return self.results


@dataclass
class _Member:
    replica: Replica
    machines: dict[tuple[int, int], StateMachine] = field(default_factory=dict)
    logs: dict[tuple[int, int], Any] = field(default_factory=dict)


class LocalGroup:
    """`members` replicas hosting `types` (one subgroup each, `shards` shards, one `mode`)."""

    def __init__(
        self,
        members: int = 3,
        types: Sequence[type[StateMachine]] = (),
        *,
        shards: int = 1,
        mode: str = "ordered",
        data_dir: str | None = None,
        config: CoreConfig | None = None,
    ):
        if members < 1:
            raise UsageError("a group needs at least one member")
        self.types = tuple(types)
        self.layout = [SubgroupSpec(t.__name__, shards=shards, mode=mode) for t in self.types]
        ids = tuple(range(1, members + 1))
        self.members = {m: _Member(Replica(m, ids, layout=self.layout, config=config)) for m in ids}
        self.data_dir = data_dir
        self.now_ns = 0
        self._links: dict[tuple[int, int], deque] = {}
        self._handles: dict[tuple[int, int], Handle] = {}
        for m, member in self.members.items():
            for st in member.replica.streams.values():
                key = (st.subgroup, st.shard_index)
                member.machines[key] = self.types[st.subgroup]()
                if data_dir is not None and st.mode == "durable":
                    from smr.log import Log

                    path = os.path.join(data_dir, f"member-{m}", f"sg{key[0]}-shard{key[1]}")
                    member.logs[key] = Log.open(path)

    def subgroup(self, cls: type[StateMachine], shard: int = 0, member: int = 1) -> Subgroup:
        """Operations of `cls` in `shard`, submitted at (and queries read at) `member`."""
        if cls not in self.types:
            raise UsageError(f"{cls.__name__} is not hosted by this group ({self.types})")
        return Subgroup(self, self.types.index(cls), shard, member)

    def submit(self, member: int, subgroup: int, shard: int, payload: bytes) -> Handle:
        replica = self.members[member].replica
        ticket = replica.submit(subgroup, shard, payload, reply=True)
        handle = Handle(self, member, ticket, self.types[subgroup])
        self._handles[(member, ticket)] = handle
        return handle

    def run_until(self, condition: Any = None) -> None:
        """Deliver everything pending (FIFO per link) until `condition()` holds or all is quiet."""
        for _ in range(STEPS_MAX):
            if condition is not None and condition():
                return
            if not self._step():
                if condition is None or condition():
                    return
                raise UsageError("the group went quiet before the command was answered")
        raise AssertionError(f"no quiescence after {STEPS_MAX} steps")

    def _step(self) -> bool:
        progressed = False
        for m, member in self.members.items():
            replica = member.replica
            while replica.has_ready():
                progressed = True
                self._execute(m, member, replica.ready())
        for (a, b), queue in self._links.items():
            while queue:
                progressed = True
                kind, *body = queue.popleft()
                target = self.members[b].replica
                if kind == "w":
                    target.on_write(a, *body)
                else:
                    target.on_data(a, *body)
        return progressed

    def _execute(self, m: int, member: _Member, ready: Any) -> None:
        replica = member.replica
        durable: dict[tuple[int, int], int] = {}
        for request in ready.persist:
            if isinstance(request, LogAppend) and request.entries:
                key = (request.subgroup, request.shard)
                log = member.logs.get(key)
                if log is not None:
                    from smr.log import Record

                    log.append(
                        Record(d.version, d.timestamp_ns, d.subgroup, d.shard, d.payload)
                        for d in request.entries
                    )
                durable[key] = request.entries[-1].version
        for key, log in member.logs.items():
            if key in durable:
                log.sync()  # durable before it is reported (and before the pushes below)
        for push in ready.writes:
            for t in push.targets:
                self._links.setdefault((m, t), deque()).append(
                    ("w", push.offset, push.data, push.epoch)
                )
        for send in ready.sends:
            self._links.setdefault((m, send.target), deque()).append(("d", send.payload))
        for d in ready.deliveries:
            machine = member.machines[(d.subgroup, d.shard)]
            result = machine.apply(d.payload, Entry(d.version, d.timestamp_ns))
            if d.reply:
                replica.reply(d, machine.encode_result(result))
        for event in ready.events:
            handle = self._handles.get((m, getattr(event, "ticket", -1)))
            if handle is None:
                continue
            if isinstance(event, Completed):
                handle.version = event.version
                handle.results = {
                    k: StateMachine.decode_result(v) for k, v in (event.results or {}).items()
                }
            elif isinstance(event, SubmitFailed):
                handle.error = event.reason
        replica.advance(ready)
        for (sg, sh), version in durable.items():
            replica.on_persisted(sg, sh, version)

    def close(self) -> None:
        """Close the members' logs (with a `data_dir`)."""
        for member in self.members.values():
            for log in member.logs.values():
                log.close()


class Subgroup:
    """Calls on one shard of a hosted type: commands return a `Handle`, queries a value."""

    def __init__(self, group: LocalGroup, subgroup: int, shard: int, member: int):
        self._group = group
        self._cls = group.types[subgroup]
        self._subgroup = subgroup
        self._shard = shard
        self._member = member

    def __getattr__(self, name: str) -> Any:
        op = self._cls._by_name.get(name)
        if op is None:
            raise AttributeError(f"{self._cls.__name__} has no operation {name!r}")

        def call(*args: Any, **kwargs: Any) -> Any:
            if op.kind == "command":
                payload = self._cls.encode_command(name, *args, **kwargs)
                return self._group.submit(self._member, self._subgroup, self._shard, payload)
            self._group.run_until()  # a query sees every answered command of this member
            machine = self._group.members[self._member].machines.get((self._subgroup, self._shard))
            if machine is None:
                raise OperationError(f"member {self._member} does not host this shard")
            return machine.run_query(self._cls.encode_query(name, *args, **kwargs))

        return call
