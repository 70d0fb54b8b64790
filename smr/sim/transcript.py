"""Scripted protocol scenarios printed as transcripts: the readable counterpart of `smr sim`.

This module owns a small deterministic driver for golden transcript tests, in the style of etcd
raft's datadriven tests. A script is a list of commands; after each, the driver prints every
change to a member's own row of the table (view-change columns and shard counters, by name), every
delivery and every event. No randomness: links are FIFO queues that the script drains.

Commands:
    group N [durable|ordered]   N members, one KVStore-like subgroup of opaque payloads
    submit M TEXT               member M multicasts TEXT
    tick MS                     time advances MS milliseconds at every running member
    deliver                     every link delivers what it holds now (one round)
    stabilize                   deliver until nothing moves (disks sync as they are asked)
    crash M                     member M stops; what it had queued is lost
    partition A,B|C,D           cut every link between the two sides (both ways)
    heal                        reconnect every link between running members
    hold-disk M / release-disk M    member M's disk stops / resumes syncing
    join M                      a new process M asks member 1.. to join
    restart M                   a crashed member starts again and asks to join
    crash-all                   every running member stops (a total failure)
    restart-from-log M          a crashed member restarts from its own log: what it synced (its
                                entries, snapshot and metadata) is read back and replayed, and it
                                restarts with `Replica.restarting`

Each member has a toy durable log: a shard's entries count once synced (`stabilize` syncs), and
metadata, truncations and snapshots are durable at once; a crash loses the rest.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from smr.core.layout import SubgroupSpec
from smr.core.multicast import Completed, PeerMisbehaved, SubmitFailed
from smr.core.ready import Delivery, LogAppend, LogMeta, LogSnapshot, LogTruncate, Push, Send
from smr.core.replica import (
    ACTIVE,
    CoreConfig,
    FrontierReached,
    Replica,
    RestoreState,
    StateTransfer,
)
from smr.core.restart import Acceptor, Recovered, decode_view_meta
from smr.core.views import Halted, Proposal, ViewBlocked, ViewInstalled
from smr.runtime.executor import Executor

MS = 1_000_000
WATCHED = ("suspected", "wedged", "ballot", "acked_ballot", "committed", "leaving", "joins_num")


class Transcript:
    def __init__(self) -> None:
        self.replicas: dict[int, Replica] = {}
        self.executors: dict[int, Executor] = {}
        self.running: set[int] = set()
        self.links: dict[tuple[int, int], deque] = {}
        self.cut: set[tuple[int, int]] = set()
        self.held_disks: set[int] = set()
        self.unsynced: dict[int, list[LogAppend]] = {}
        self.states: dict[int, dict[int, list[bytes]]] = {}  # member -> shard -> delivered
        self.now_ns = 0
        self.layout: list[SubgroupSpec] = []
        self.config = CoreConfig()
        self.out: list[str] = []
        self._seen: dict[int, dict[str, Any]] = {}
        # member -> the toy durable log: synced entries (version, payload), snapshot, metadata
        self.entries: dict[int, list[tuple[int, bytes]]] = {}
        self.snapshot: dict[int, tuple[int, bytes]] = {}
        self.meta: dict[int, dict[str, bytes]] = {}
        self.founders: tuple[int, ...] = ()
        self.applied: dict[int, int] = {}  # member -> version its state is at

    # -- commands -------------------------------------------------------------------------------

    def run(self, line: str) -> list[str]:
        self.out = []
        words = line.split()
        getattr(self, "cmd_" + words[0].replace("-", "_"))(*words[1:])
        return self.out

    def cmd_group(self, n: str, mode: str = "ordered") -> None:
        self.layout = [SubgroupSpec("kv", mode=mode)]
        members = tuple(range(1, int(n) + 1))
        self.founders = members
        for m in members:
            self._add(m, Replica(m, members, layout=self.layout, config=self.config))
        self._settle()

    def _add(self, m: int, replica: Replica) -> None:
        self.replicas[m] = replica
        self.executors[m] = Executor(m, _Member(self, m))
        self.running.add(m)
        self.unsynced[m] = []
        self.states.setdefault(m, {})
        self._seen[m] = {}

    def cmd_submit(self, m: str, text: str) -> None:
        self.replicas[int(m)].submit(0, 0, text.encode())
        self._settle()

    def cmd_tick(self, ms: str) -> None:
        self.now_ns += int(ms) * MS
        for m in sorted(self.running):
            self.replicas[m].tick(self.now_ns)
        self._settle()

    def cmd_deliver(self) -> None:
        self._deliver_round()
        self._settle()

    def cmd_stabilize(self) -> None:
        for _ in range(10_000):
            self._settle()
            moved = self._deliver_round()
            self._sync_disks()
            self._settle()
            idle = not any(self.links.values()) and not any(
                self.unsynced[m] for m in self.running if m not in self.held_disks
            )
            if not moved and idle:
                return
        raise AssertionError("the group does not stabilize")

    def cmd_crash(self, m: str) -> None:
        member = int(m)
        self.running.discard(member)
        for key in list(self.links):
            if member in key:
                self.links[key].clear()
        self.unsynced[member] = []
        self.out.append(f"member {member} crashed")

    def cmd_partition(self, spec: str) -> None:
        left, right = ([int(x) for x in side.split(",")] for side in spec.split("|"))
        for a in left:
            for b in right:
                self.cut |= {(a, b), (b, a)}
                self.links.get((a, b), deque()).clear()
                self.links.get((b, a), deque()).clear()
        self.out.append(f"partition {left} | {right}")

    def cmd_heal(self) -> None:
        healed = sorted(self.cut)
        self.cut.clear()
        for a, b in healed:
            if a in self.running and b in self.running:
                self.replicas[a].on_link_up(b)
        self.out.append("healed")
        self._settle()

    def cmd_hold_disk(self, m: str) -> None:
        self.held_disks.add(int(m))

    def cmd_release_disk(self, m: str) -> None:
        self.held_disks.discard(int(m))

    def cmd_join(self, m: str) -> None:
        member = int(m)
        contacts = sorted(self.running)
        replica = Replica.joiner(member, contacts, layout=self.layout, config=self.config)
        replica.tick(self.now_ns)
        self._add(member, replica)
        self.out.append(f"process {member} asks {contacts[0]} to join")
        self._settle()

    def cmd_restart(self, m: str) -> None:
        self.cmd_join(m)

    def cmd_crash_all(self) -> None:
        for m in sorted(self.running):
            self.cmd_crash(str(m))

    def cmd_restart_from_log(self, m: str) -> None:
        member = int(m)
        meta = self.meta.get(member, {})
        epoch, members, awaiting = 1, self.founders, ()
        if "view" in meta:
            epoch, members, awaiting = decode_view_meta(meta["view"])
        prop = meta.get(f"view-proposal-{epoch}")
        acc = meta.get("restart-acceptor")
        snap_version, snap = self.snapshot.get(member, (0, b""))
        entries = self.entries.get(member, [])
        state = [x for x in snap.split(b"|") if x] + [p for _, p in entries]
        last = max([snap_version] + [v for v, _ in entries])
        recovered = Recovered(
            epoch,
            tuple(members),
            tuple(awaiting),
            Proposal.decode(prop) if prop else None,
            {(0, 0): last} if self.layout[0].mode == "durable" else {},
            Acceptor.decode(acc) if acc else Acceptor(),
        )
        self.states[member] = {0: state}
        self.applied[member] = last
        contacts = [x for x in sorted(self.replicas) if x != member]
        replica = Replica.restarting(
            member, recovered, contacts, layout=self.layout, config=self.config
        )
        replica.tick(self.now_ns)
        self._add(member, replica)
        self.out.append(
            f"member {member} restarts from its log: view {epoch} {list(members)}, "
            f"{len(state)} entries replayed, last version {last >> 32}:{last & 0xFFFFFFFF}"
        )
        self._settle()

    # -- the driver -----------------------------------------------------------------------------

    def _deliver_round(self) -> bool:
        moved = False
        for (a, b), queue in sorted(self.links.items()):
            if (a, b) in self.cut or b not in self.running:
                queue.clear()
                continue
            items = list(queue)
            queue.clear()
            for kind, *body in items:
                moved = True
                if kind == "w":
                    self.replicas[b].on_write(a, *body)
                else:
                    self.replicas[b].on_data(a, *body)
        return moved

    def _sync_disks(self) -> None:
        for m in sorted(self.running - self.held_disks):
            pending, self.unsynced[m] = self.unsynced[m], []
            for req in pending:
                self.entries.setdefault(m, []).extend((d.version, d.payload) for d in req.entries)
                self.replicas[m].on_persisted(req.subgroup, req.shard, req.entries[-1].version)

    def _settle(self) -> None:
        for m in sorted(self.running):
            replica = self.replicas[m]
            self.executors[m].drain(replica)
            self._report_row(m)
            rs = replica._restart
            if rs is not None and rs.waiting and rs.waiting != self._seen[m].get("waiting"):
                self.out.append(f"{m}: leads the restart, waits: {rs.waiting}")
                self._seen[m]["waiting"] = rs.waiting
            if replica.status != ACTIVE and m in self.running and replica.status == "halted":
                self.running.discard(m)

    def _report_row(self, m: int, table: Any = None, label: str = "") -> None:
        replica = self.replicas[m]
        if replica.status != ACTIVE and table is None:
            return
        t = table if table is not None else replica.table
        row = t.my_row
        now: dict[str, Any] = {}
        for name in WATCHED:
            if t.layout[name].column.length > 1:
                now[name] = t.vrow(row, name)
            else:
                now[name] = t.get(row, name)
        for name in ("prop", "acked", "decided"):
            data = t.bget(row, name, 0, t.layout[name].column.length)
            if data[:8] != bytes(8):
                p = Proposal.decode(data)
                now[name] = f"ballot {p.ballot} members {list(p.members)} trims {list(p.trims)}"
        for shard in replica.shards if table is None else ():
            if m in shard.members:
                for col in ("seq", "delivered", "persisted"):
                    now[f"shard{shard.index}.{col}"] = t.get(row, f"s{shard.index}_{col}")
        if table is not None:
            for name in [n for n in t.layout.placed if n.startswith("s") and n[1].isdigit()]:
                col = name.split("_", 1)[1]
                if col in ("seq", "delivered", "persisted"):
                    now[f"shard{name[1:].split('_')[0]}.{col}"] = t.get(row, name)
        seen = self._seen[m]
        changes = [
            f"{k}={v}"
            for k, v in now.items()
            if seen.get(k) != v and (k in seen or (any(v) if isinstance(v, list) else v))
        ]
        self._seen[m] = now
        if changes:
            self.out.append(f"{m}: {label}" + " ".join(changes))


class _Member:
    """The executor's host for one transcript member: a toy durable log (a shard's entries count
    once synced; metadata, truncations and snapshots at once), FIFO links the script drains, and
    a state that is the list of payloads delivered. Everything it does is printed."""

    def __init__(self, t: Transcript, m: int):
        self.t = t
        self.m = m

    def prepare_view(self, event: ViewInstalled) -> None:
        pass

    def persist_meta(self, request: LogMeta) -> None:
        t, m = self.t, self.m
        t.meta.setdefault(m, {})[request.name] = request.data
        t.out.append(f"{m}: logs {request.name} (synced before its pushes)")

    def persist_append(self, request: LogAppend) -> None:
        self.t.unsynced[self.m].append(request)

    def persist_flush(self, subgroup: int, shard: int) -> None:
        self.t._sync_disks()

    def persist_rewrite(self, request: LogTruncate | LogSnapshot) -> None:
        t, m = self.t, self.m
        if isinstance(request, LogTruncate):
            kept = [e for e in t.entries.get(m, []) if e[0] <= request.version]
            dropped = len(t.entries.get(m, [])) - len(kept)
            t.out.append(
                f"{m}: truncates its log after {_v(request.version)} ({dropped} entries dropped)"
            )
            t.entries[m] = kept
            if t.snapshot.get(m, (0, b""))[0] > request.version:
                del t.snapshot[m]
        else:
            t.entries[m] = []
            t.snapshot[m] = (request.version, request.data)
            t.out.append(f"{m}: replaces its log by the snapshot at {_v(request.version)}")

    def push(self, push: Push) -> None:
        t, m = self.t, self.m
        for target in push.targets:
            if (m, target) not in t.cut:
                t.links.setdefault((m, target), deque()).append(
                    ("w", push.offset, push.data, push.epoch)
                )

    def send(self, send: Send) -> None:
        t, m = self.t, self.m
        if (m, send.target) not in t.cut:
            t.links.setdefault((m, send.target), deque()).append(("d", send.payload))

    def apply(self, deliveries: tuple[Delivery, ...]) -> list[bytes]:
        t, m = self.t, self.m
        for d in deliveries:
            t.states[m].setdefault(d.shard, []).append(d.payload)
            t.applied[m] = d.version
            t.out.append(
                f"{m}: delivers {d.payload.decode()} (epoch {d.version >> 32}, "
                f"seq {d.version & 0xFFFFFFFF}, from {d.sender})"
            )
        return [b"" for _ in deliveries]

    def state_of(self, subgroup: int, shard: int) -> tuple[int, bytes]:
        t, m = self.t, self.m
        return t.applied.get(m, 0), b"|".join(t.states[m].get(0, []))

    def state_sent(self, event: StateTransfer, version: int, size_bytes: int) -> None:
        self.t.out.append(f"{self.m}: sends its state to {event.to}")

    def restore(self, event: RestoreState) -> None:
        t, m = self.t, self.m
        t.out.append(f"{m}: restores its state ({len(event.data)} bytes)")
        t.states[m][0] = [x for x in event.data.split(b"|") if x]
        t.applied[m] = event.version

    def view_installed(self, e: ViewInstalled) -> None:
        t, m = self.t, self.m
        old = getattr(t.replicas[m], "prev_table", None)
        if old is not None and e.epoch > 1 and m not in e.joined:
            t._report_row(m, old, f"(end of view {e.epoch - 1}) ")
        change = []
        if e.joined:
            change.append(f"joined {list(e.joined)}")
        if e.departed:
            change.append(f"departed {list(e.departed)}")
        d = t.replicas[m].restart_decision
        if d is not None and d.epoch == e.epoch:
            cuts = ", ".join(_v(v) for _, _, v in d.cuts)
            plans = "; ".join(f"{p} sends its state to {list(n)}" for p, n in d.plans if n)
            t.out.append(
                f"{m}: the restart decided view {d.epoch} {list(d.members)}, cut at "
                f"{cuts or 'nothing'}" + (f"; {plans}" if plans else "")
            )
        t.out.append(
            f"{m}: installs view {e.epoch} {list(e.members)}"
            + (f" ({', '.join(change)})" if change else "")
        )
        t._seen[m] = {}

    def answer(self, event: Completed | SubmitFailed, results: dict[int, bytes] | None) -> None:
        if isinstance(event, Completed):
            self.t.out.append(f"{self.m}: answered, {_seq(event.version)}")

    def flush_answers(self) -> None:
        pass

    def notify(self, event: Halted | ViewBlocked | FrontierReached | PeerMisbehaved) -> None:
        if isinstance(event, Halted):
            self.t.out.append(f"{self.m}: halts: {event.reason}")
        elif isinstance(event, ViewBlocked):
            self.t.out.append(f"{self.m}: view blocked: {event.reason}")
        elif isinstance(event, PeerMisbehaved):
            self.t.out.append(f"{self.m}: drops input from {event.peer}: {event.reason}")


def _v(version: int) -> str:
    return f"{version >> 32}:{version & 0xFFFFFFFF}"


def _seq(version: int) -> str:
    return f"seq {version & 0xFFFFFFFF} of epoch {version >> 32}"


def run_script(lines: list[str]) -> list[str]:
    """Run a script; return it with each command's output under it (the transcript)."""
    t = Transcript()
    out: list[str] = []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            out.append(line)
            continue
        out.append(f"> {line}")
        out.extend(t.run(line))
    return out
