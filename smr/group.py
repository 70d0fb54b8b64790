"""An in-process group: N replicas of the real core in this process, driven to completion.

This module owns `LocalGroup`, the smallest way to use the toolkit: no processes, no network, a
deterministic in-memory transport with per-link FIFO delivery, and (optionally) real durable logs
in a directory. It is what a notebook, a test or a single-member group uses, and it shows the
user-facing shape of the API that the node runtime serves over the network:

    group = LocalGroup(members=3, types=[KVStore], mode="durable", data_dir="/tmp/kv")
    kv = group.subgroup(KVStore)
    handle = kv.put("a", b"1")       # an ordered command: a Handle
    handle.result()                  # {member: result} from every replica of the shard
    kv.get("a")                      # a query: linearizable, confirmed through the table

A command's `Handle` resolves when the shard's mode says it is done: once every member received
it (`ordered`) or persisted it (`durable`), with every replica's result, like Derecho's reply map.
A command that raised at the replicas raises `CommandError` from `result()`, as it does for a
remote client; the group goes on.

Each member runs the one executor of the core's output (`smr.runtime.executor`) with a `_Member`
as its host, so what a member does with a `Ready` here is what a member process does. With a
`data_dir`, each member keeps its logs where a member process would (`member-<id>/meta` and
`member-<id>/subgroup-<sg>-shard-<sh>`, readable by `smr log`), and a `LocalGroup` opened again on
the same directory resumes from them: every member restarts from its own logs, as after a total
failure, and the group agrees on the view to resume in.

Membership changes as in a cluster of processes: `add_member()` starts a replica with a fresh id
that joins and receives its shards' state by transfer, `remove_member(m)` removes one for good
(refused with `UsageError` when the view without it would have fewer live members than a
majority); a removed member's metadata says so, and it is not resumed.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from smr.api import OperationError, StateMachine
from smr.core.errors import UsageError
from smr.core.layout import SubgroupSpec
from smr.core.multicast import Completed, PeerMisbehaved, SubmitFailed
from smr.core.reads import ReadConfirmed, ReadFailed
from smr.core.ready import Delivery, LogAppend, LogMeta, LogSnapshot, LogTruncate, Push, Send
from smr.core.replica import (
    ACTIVE,
    HALTED,
    CoreConfig,
    FrontierReached,
    Replica,
    RestoreState,
    StateTransfer,
)
from smr.core.views import Halted, RemovalRefused, ViewBlocked, ViewInstalled
from smr.runtime.executor import Executor
from smr.runtime.hosted import SNAPSHOT_FORMAT, CommandError, Hosted, decode_result
from smr.runtime.protocol import READ_CONSISTENCIES, READ_LINEARIZABLE

STEPS_MAX = 1_000_000  # bound on the work one call may drive; a livelock is our bug
REMOVED_META = "runtime-removed"  # a member removed for good (as `smr.runtime.node` records it)
Key = tuple[int, int]

__all__ = ["CommandError", "Handle", "LocalGroup", "Subgroup"]


@dataclass
class Handle:
    """A submitted command. `result()` drives the group until it is answered."""

    group: LocalGroup
    member: int
    ticket: int
    machine: type[StateMachine]
    operation: str | None = None
    version: int | None = None
    raw: dict[int, bytes] | None = None  # every replica's result bytes, once answered
    error: str | None = None

    def done(self) -> bool:
        return self.raw is not None or self.error is not None

    @property
    def results(self) -> dict[int, Any] | None:
        """Every replica's decoded result once answered (None before); raises `CommandError`
        if the command raised at the replicas."""
        if self.raw is None:
            return None
        return {
            m: decode_result(self.machine, r, self.operation) for m, r in sorted(self.raw.items())
        }

    def result(self) -> dict[int, Any]:
        """Every replica's result, by member id, once the command met its shard's guarantee.
        Raises `CommandError` if the command raised at the replicas (the same error at each)
        and `UsageError` if it could not be multicast."""
        self.group.run_until(self.done)
        if self.error is not None:
            raise UsageError(self.error)
        results = self.results
        assert results is not None
        return results


class _Member:
    """One member of a `LocalGroup` and the executor's host for it: its state machines (in
    `Hosted`, so a command that raises is an error result, not an exception in the driver), its
    logs with a data directory, and links that the group drains."""

    def __init__(self, group: LocalGroup, me: int, replica: Replica):
        self.group = group
        self.me = me
        self.replica = replica
        self.hosted: dict[Key, Hosted] = {}
        self.logs: dict[Key, Any] = {}  # smr.log.Log, imported only with a data directory
        self.meta: Any = None
        self.persisted: dict[Key, int] = {}  # reported to the replica after the Ready
        self.halted = ""
        self.removed = False  # removed from the group for good: it halted, and never returns
        self.refused: dict[int, str] = {}  # member -> why the view change declined its removal
        self.executor = Executor(me, self)

    @property
    def machines(self) -> dict[Key, StateMachine]:
        return {key: h.machine for key, h in self.hosted.items()}

    def _dir(self) -> str | None:
        d = self.group.data_dir
        return None if d is None else os.path.join(d, f"member-{self.me}")

    def open_meta(self) -> Any:
        if self.meta is None and self._dir() is not None:
            from smr.log import Log

            self.meta = Log.open(os.path.join(self._dir() or "", "meta"))
        return self.meta

    def open_shard(self, key: Key, *, machine: bool = True) -> None:
        if machine and key not in self.hosted:
            self.hosted[key] = Hosted(self.group.types[key[0]]())
        if self.group.layout[key[0]].mode_of(key[1]) == "durable":
            self.open_log(key)

    def open_log(self, key: Key) -> Any:
        log = self.logs.get(key)
        if log is None and self._dir() is not None:
            from smr.log import Log

            log = Log.open(os.path.join(self._dir() or "", f"subgroup-{key[0]}-shard-{key[1]}"))
            if log.meta_get(SNAPSHOT_FORMAT) is None:
                log.meta_put(SNAPSHOT_FORMAT, b"hosted")  # `smr log replay` reads Hosted's
            self.logs[key] = log
        return log

    # -- the executor's host ----------------------------------------------------------------

    def prepare_view(self, event: ViewInstalled) -> None:
        for sg, sh, _, _ in event.shards:
            self.open_shard((sg, sh), machine=self.me not in event.joined)

    def persist_meta(self, request: LogMeta) -> None:
        meta = self.open_meta()
        if meta is not None:
            meta.meta_put(request.name, request.data)  # atomic and synced

    def persist_append(self, request: LogAppend) -> None:
        key = (request.subgroup, request.shard)
        log = self.logs.get(key)
        if log is not None:
            from smr.log import Record

            log.append(
                Record(d.version, d.timestamp_ns, d.subgroup, d.shard, d.payload)
                for d in request.entries
            )
            log.sync()  # one fsync per shard and Ready: durable before it is reported
        self.persisted[key] = request.entries[-1].version

    def persist_flush(self, subgroup: int, shard: int) -> None:
        pass  # every append is synced as it is made

    def persist_rewrite(self, request: LogTruncate | LogSnapshot) -> None:
        log = self.open_log((request.subgroup, request.shard))
        if log is not None:
            from smr.recovery import perform

            perform(log, request)

    def push(self, push: Push) -> None:
        for t in push.targets:
            self.group._link(self.me, t).append(("w", push.offset, push.data, push.epoch))

    def send(self, send: Send) -> None:
        self.group._link(self.me, send.target).append(("d", send.payload))

    def apply(self, deliveries: tuple[Delivery, ...]) -> list[bytes]:
        out = []
        for d in deliveries:
            h = self.hosted.get((d.subgroup, d.shard))
            if h is None:
                out.append(b"\x01shard not hosted here")
            else:
                out.extend(h.apply_many((d,))[0])
        return out

    def state_of(self, subgroup: int, shard: int) -> tuple[int, bytes]:
        h = self.hosted.get((subgroup, shard))
        return (0, b"") if h is None else (h.version, h.snapshot())

    def state_sent(self, event: StateTransfer, version: int, size_bytes: int) -> None:
        pass

    def restore(self, event: RestoreState) -> None:
        h = Hosted(self.group.types[event.subgroup]())
        if event.data:
            h.restore(event.data)
        self.hosted[(event.subgroup, event.shard)] = h

    def view_installed(self, event: ViewInstalled) -> None:
        mine = {(sg, sh) for sg, sh, _, _ in event.shards}
        for key in [k for k in self.hosted if k not in mine]:
            del self.hosted[key]

    def answer(self, event: Completed | SubmitFailed, results: dict[int, bytes] | None) -> None:
        handle = self.group._handles.pop((self.me, event.ticket), None)
        if handle is None:
            return
        if isinstance(event, Completed):
            handle.version = event.version
            handle.raw = dict(results or {})
        else:
            handle.error = event.reason

    def answer_read(self, event: ReadConfirmed | ReadFailed) -> None:
        read = self.group._reads.get((self.me, event.ticket))
        if read is None:
            return
        if type(event) is ReadFailed:
            read[1] = event
            return
        hosted = self.hosted.get((event.subgroup, event.shard))
        read[1] = event if hosted is None else hosted.query(read[0])

    def flush_answers(self) -> None:
        pass

    def notify(
        self, event: Halted | ViewBlocked | FrontierReached | PeerMisbehaved | RemovalRefused
    ) -> None:
        if isinstance(event, RemovalRefused):
            self.refused[event.member] = event.reason
        if isinstance(event, Halted):
            self.halted = event.reason
            if event.removed:
                self.removed = True
                meta = self.open_meta()
                if meta is not None:  # a reopened group does not resume it
                    meta.meta_put(REMOVED_META, event.reason.encode())

    def close(self) -> None:
        for log in [*self.logs.values(), self.meta]:
            if log is not None:
                log.close()
        self.logs.clear()
        self.meta = None


class LocalGroup:
    """`members` replicas hosting `types` (one subgroup each, `shards` shards, one `mode`).

    With `data_dir`, durable shards keep their logs there; a directory that already holds this
    group's logs is resumed from (each member restarts from its own logs)."""

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
        self.data_dir = data_dir
        self.config = config or CoreConfig()
        self.now_ns = 0
        self._links: dict[tuple[int, int], deque[tuple[Any, ...]]] = {}
        self._handles: dict[tuple[int, int], Handle] = {}
        # linearizable reads: (member, ticket) -> [payload, result bytes or the event failing it]
        self._reads: dict[tuple[int, int], list[Any]] = {}
        ids = tuple(range(1, members + 1))
        existing = self._existing_members()
        if existing and len(existing) != members:
            raise UsageError(
                f"{data_dir} holds the logs of members {sorted(existing)}; open it with "
                f"members={len(existing)}, or use another directory"
            )
        self.members: dict[int, _Member] = {}
        self._last_id = max(existing | self._removed_members() | set(ids))
        if existing:
            self._resume(tuple(sorted(existing)))
        else:
            for m in ids:
                member = _Member(self, m, Replica(m, ids, layout=self.layout, config=self.config))
                self.members[m] = member
                member.open_meta()
                for st in member.replica.streams.values():
                    member.open_shard((st.subgroup, st.shard_index))

    def _member_dirs(self) -> dict[int, str]:
        if self.data_dir is None or not os.path.isdir(self.data_dir):
            return {}
        found = {}
        for name in os.listdir(self.data_dir):
            meta = os.path.join(self.data_dir, name, "meta")
            if name.startswith("member-") and name[7:].isdigit() and os.path.isdir(meta):
                found[int(name[7:])] = meta
        return found

    def _existing_members(self) -> set[int]:
        """The members whose logs are in the data directory, but those removed for good."""
        removed = self._removed_members()
        return {m for m in self._member_dirs() if m not in removed}

    def _removed_members(self) -> set[int]:
        from smr.log import Log

        removed = set()
        for m, meta in self._member_dirs().items():
            with Log.open(meta) as log:
                if log.meta_get(REMOVED_META) is not None:
                    removed.add(m)
        return removed

    def _resume(self, ids: tuple[int, ...]) -> None:
        """Every member restarts from its own logs (`smr.recovery`), then the group agrees on
        the view to resume in, as after a total failure."""
        from smr.recovery import recover_member, replay

        for m in ids:
            # an empty replica until the logs are replayed and it can restart from them
            member = _Member(self, m, Replica(m, (), epoch=0))
            member.open_meta()
            assert self.data_dir is not None
            base = os.path.join(self.data_dir, f"member-{m}")
            for sg, spec in enumerate(self.layout):
                for sh in range(spec.shards):
                    if spec.mode_of(sh) == "durable" and os.path.isdir(
                        os.path.join(base, f"subgroup-{sg}-shard-{sh}")
                    ):
                        member.open_shard((sg, sh))
            for key, log in member.logs.items():
                replay(log, member.hosted[key].apply_record, member.hosted[key].restore)
            recovered = recover_member(m, member.meta, member.logs, ids)
            member.replica = Replica.restarting(
                m,
                recovered,
                [x for x in ids if x != m],
                layout=self.layout,
                config=self.config,
            )
            self.members[m] = member
        self.run_until(lambda: all(mb.replica.status == ACTIVE for mb in self.members.values()))

    def add_member(self) -> int:
        """A new member with a fresh id (never one a member had): it asks the members to let it
        join, and enters the next view with its shards' state by transfer. Returns its id once
        it is active and holds the state of every shard it hosts."""
        contacts = [m for m, mb in self.members.items() if mb.replica.status == ACTIVE]
        if not contacts:
            raise UsageError("no member of the group is active to let a new member join")
        self._last_id += 1
        new = self._last_id
        replica = Replica.joiner(new, contacts, layout=self.layout, config=self.config)
        member = self.members[new] = _Member(self, new, replica)
        member.open_meta()
        self.run_until(
            lambda: (
                replica.status == ACTIVE
                and all(not st.awaiting_state for st in replica.streams.values())
            )
        )
        return new

    def remove_member(self, member: int) -> tuple[int, ...]:
        """Remove `member` for good (it halts; its id is never let in again); return the members
        of the view without it. Raises `UsageError` when the group refuses: the view without it
        would have fewer live members than a majority, or it was removed already."""
        askers = [
            m for m, mb in self.members.items() if m != member and mb.replica.status == ACTIVE
        ]
        if not askers:
            raise UsageError(f"no other member of the group is active to remove member {member}")
        asker = self.members[askers[0]]
        replica = asker.replica
        asker.refused.pop(member, None)
        replica.remove(member)
        gone = self.members.get(member)  # None: an id out of the group, retired all the same
        self.run_until(
            lambda: (
                member in asker.refused
                or (
                    member in replica.roster.retired
                    and (gone is None or gone.replica.status == HALTED)
                )
            )
        )
        if member in asker.refused:
            raise UsageError(asker.refused.pop(member))
        if gone is not None:
            del self.members[member]
            gone.close()
        for key in [k for k in self._links if member in k]:
            del self._links[key]
        return replica.members

    def _link(self, a: int, b: int) -> deque[tuple[Any, ...]]:
        q = self._links.get((a, b))
        if q is None:
            q = self._links[(a, b)] = deque()
        return q

    def subgroup(
        self,
        cls: type[StateMachine],
        shard: int = 0,
        member: int = 1,
        *,
        consistency: str = READ_LINEARIZABLE,
    ) -> Subgroup:
        """Operations of `cls` in `shard`, submitted at (and queries read at) `member`. Queries
        are `linearizable` (confirmed through the table, as a remote client's are by default) or
        `sequential` (read at `member` once every command it took is answered)."""
        if cls not in self.types:
            raise UsageError(f"{cls.__name__} is not hosted by this group ({self.types})")
        if member not in self.members:
            raise UsageError(f"member {member} is not in this group ({sorted(self.members)})")
        if consistency not in READ_CONSISTENCIES:
            raise ValueError(
                f"consistency must be one of {', '.join(READ_CONSISTENCIES)}, not {consistency!r}"
            )
        return Subgroup(self, self.types.index(cls), shard, member, consistency)

    def submit(
        self, member: int, subgroup: int, shard: int, payload: bytes, operation: str | None = None
    ) -> Handle:
        replica = self.members[member].replica
        ticket = replica.submit(subgroup, shard, payload, reply=True)
        handle = Handle(self, member, ticket, self.types[subgroup], operation)
        self._handles[(member, ticket)] = handle
        return handle

    def read(self, member: int, subgroup: int, shard: int, payload: bytes) -> bytes:
        """A linearizable read at `member`: confirmed through the table (`smr.core.reads`),
        then run against its state machine. Raises `UsageError` if it cannot be confirmed."""
        ticket = self.members[member].replica.read(subgroup, shard)
        key = (member, ticket)
        self._reads[key] = read = [payload, None]
        try:
            self.run_until(lambda: read[1] is not None)
        finally:
            del self._reads[key]
        result = read[1]
        if not isinstance(result, bytes):
            why = result.reason if isinstance(result, ReadFailed) else "the shard left it"
            raise UsageError(f"member {member} could not read linearizably: {why}")
        return result

    def run_until(self, condition: Callable[[], bool] | None = None) -> None:
        """Deliver everything pending (FIFO per link) until `condition()` holds or all is quiet;
        when all is quiet and `condition` still fails, time moves on to the members' next
        timer (a restart's rounds)."""
        for _ in range(STEPS_MAX):
            if condition is not None and condition():
                return
            if not self._step():
                if condition is None or condition():
                    return
                if not self._tick():
                    raise UsageError("the group went quiet before the command was answered")
        raise AssertionError(f"no quiescence after {STEPS_MAX} steps")

    def _tick(self) -> bool:
        live = [mb for mb in self.members.values() if mb.replica.status != HALTED]
        if not live:
            return False
        self.now_ns = max(self.now_ns, min(mb.replica.next_tick_ns() for mb in live))
        for mb in live:
            if mb.replica.next_tick_ns() <= self.now_ns:
                mb.replica.tick(self.now_ns)
        return True

    def _step(self) -> bool:
        progressed = False
        for member in self.members.values():
            replica = member.replica
            if member.executor.drain(replica):
                progressed = True
            if member.persisted:
                persisted, member.persisted = member.persisted, {}
                for (sg, sh), version in persisted.items():
                    replica.on_persisted(sg, sh, version)
            if member.halted and not member.removed:
                raise UsageError(f"member {member.me} halted: {member.halted}")
        for (a, b), queue in self._links.items():
            if b not in self.members:  # removed: what was on its way to it is dropped
                queue.clear()
                continue
            target = self.members[b].replica
            while queue:
                progressed = True
                kind, *body = queue.popleft()
                if kind == "w":
                    target.on_write(a, *body)
                else:
                    target.on_data(a, *body)
        return progressed

    def close(self) -> None:
        """Close the members' logs (with a `data_dir`)."""
        for member in self.members.values():
            member.close()

    def __enter__(self) -> LocalGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subgroup:
    """Calls on one shard of a hosted type: commands return a `Handle`, queries a value."""

    def __init__(
        self,
        group: LocalGroup,
        subgroup: int,
        shard: int,
        member: int,
        consistency: str = READ_LINEARIZABLE,
    ):
        self._group = group
        self._cls = group.types[subgroup]
        self._subgroup = subgroup
        self._shard = shard
        self._member = member
        self._consistency = consistency

    def __getattr__(self, name: str) -> Any:
        op = self._cls._by_name.get(name)
        if op is None:
            raise AttributeError(f"{self._cls.__name__} has no operation {name!r}")

        def call(*args: Any, **kwargs: Any) -> Any:
            if op.kind == "command":
                payload = self._cls.encode_command(name, *args, **kwargs)
                return self._group.submit(self._member, self._subgroup, self._shard, payload, name)
            payload = self._cls.encode_query(name, *args, **kwargs)
            group = self._group
            if self._consistency == READ_LINEARIZABLE:
                if group.members[self._member].replica.stream(self._subgroup, self._shard) is None:
                    raise OperationError(f"member {self._member} does not host this shard")
                raw = group.read(self._member, self._subgroup, self._shard, payload)
                return decode_result(self._cls, raw, name)
            group.run_until()  # a query sees every answered command of this member
            hosted = group.members[self._member].hosted.get((self._subgroup, self._shard))
            if hosted is None:
                raise OperationError(f"member {self._member} does not host this shard")
            return decode_result(self._cls, hosted.query(payload), name)

        return call
