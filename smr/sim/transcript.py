"""Scripted protocol scenarios printed as transcripts: the readable counterpart of `smr sim`.

This module owns a small deterministic driver for golden transcript tests, in the style of etcd
raft's datadriven tests. A script is a list of commands; after each, the driver prints every
change to a member's own row of the table (view-change columns and shard counters, by name), every
delivery and every event. No randomness: links are FIFO queues that the script drains. Every
member's Readies are carried out by the one executor (`smr.runtime.executor.Executor`, with
`_Member` as its host), as in every other driver.

Commands:
    config install-grace=MS startup-grace=MS
                                before `group`: the views' grace periods (`ViewConfig`; 0 by
                                default, as in the simulator; the node runtime uses 1 s and more)
    group N [MODE[,MODE..]] [shards=K]
                                N members, one KVStore-like subgroup of opaque payloads; MODE is
                                `ordered` (the default) or `durable`, one for every shard or one
                                per shard (`ordered,durable`: two shards); `shards=K` splits the
                                view evenly into K shards (layout.py's even policy, in rank order)
    submit M TEXT [shard=K]     member M multicasts TEXT (in shard 0 unless told)
    tick MS                     time advances MS milliseconds at every running member
    tick-member N[,N..] MS      time advances MS milliseconds; only these members tick (the others
                                take the jump at their next tick: a process that did not run)
    deliver                     every link delivers what it holds now (one round)
    deliver A->B [N]            the link A->B delivers what it holds now (or its first N messages),
                                in FIFO order, each printed (`A->B: write heartbeat`, `A->B:
                                join-ok ...`); other links keep theirs
    drop A->B [N]               the link A->B loses what it holds now (or its first N messages),
                                each printed; the link stays up for what is sent later
    hold A->B / release A->B    the link A->B is slow: `deliver` and `stabilize` leave what it
                                holds there (`deliver A->B` still delivers it) / it is not
    links [M]                   what every link (or every link to member M) holds, in order
    state [M]                   every running member's (or member M's) state, per shard: the
                                payloads applied or restored, and the version it is at
    stabilize                   deliver until nothing moves (disks sync as they are asked)
    manual N                    member N's Readies are no longer taken after each input: they
                                wait for `process-ready N` (its inputs are still taken)
    auto N                      member N's Readies are taken after each input again (and now)
    process-ready N             member N takes ONE Ready and prints what it holds (persist
                                requests, writes by column name, sends by frame kind, deliveries,
                                events); the executor carries it out (printed as always) and the
                                replica is advanced
    sync-disk N                 member N's disk syncs what it was given (also a held disk)
    crash M                     member M stops; what it had queued is lost
    partition A,B|C,D           cut every link between the two sides (both ways)
    heal                        reconnect every link between running members
    hold-disk M / release-disk M    member M's disk stops / resumes syncing
    join M                      a new process M asks the running members to join, in turn
    restart M                   a crashed member starts again, without its disk, and asks to join
    leave M                     member M asks to leave the group cleanly
    crash-all                   every running member stops (a total failure)
    restart-from-log M          a crashed member restarts from its own log: what it synced (its
                                entries, snapshots and metadata) is read back and replayed, and it
                                restarts with `Replica.restarting`

Each member has a toy durable log per durable shard it wrote to: a shard's entries count once
synced (`stabilize` and `sync-disk` sync), and metadata, truncations and snapshots are durable at
once; a crash loses the rest. With one shard the output names no shard (the first transcripts'
format); with several, deliveries, state transfers and logs say which shard.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import deque
from typing import Any

from smr.core.codec import (
    FRAME,
    FRAME_BLOCK,
    FRAME_JOIN_OK,
    FRAME_JOIN_REQUEST,
    FRAME_KINDS,
    FRAME_LARGE,
    FRAME_REPLIES,
    FRAME_REPLY,
    FRAME_STATE,
)
from smr.core.layout import SubgroupSpec, allocate
from smr.core.multicast import (
    Completed,
    PeerMisbehaved,
    SubmitFailed,
)
from smr.core.reads import ReadConfirmed, ReadFailed
from smr.core.ready import (
    Delivery,
    LogAppend,
    LogMeta,
    LogSnapshot,
    LogTruncate,
    Push,
    Ready,
    Send,
)
from smr.core.replica import (
    ACTIVE,
    CoreConfig,
    FrontierReached,
    Replica,
    RestoreState,
    StateTransfer,
)
from smr.core.restart import (
    Acceptor,
    Recovered,
    decode_offer_meta,
    decode_view_meta,
)
from smr.core.views import Halted, Proposal, RemovalRefused, ViewBlocked, ViewInstalled
from smr.runtime.executor import Executor

MS = 1_000_000
WATCHED = ("suspected", "wedged", "ballot", "acked_ballot", "committed", "leaving", "joins_num")


class Transcript:
    def __init__(self) -> None:
        self.replicas: dict[int, Replica] = {}
        self.executors: dict[int, Executor] = {}
        self.running: set[int] = set()
        self.manual: set[int] = set()  # members whose Readies wait for `process-ready`
        self.links: dict[tuple[int, int], deque] = {}
        self.cut: set[tuple[int, int]] = set()
        self.held: set[tuple[int, int]] = set()  # slow links: delivered only when told
        self.held_disks: set[int] = set()
        self.unsynced: dict[int, list[LogAppend]] = {}
        self.states: dict[int, dict[int, list[bytes]]] = {}  # member -> shard -> delivered
        self.now_ns = 0
        self.layout: list[SubgroupSpec] = []
        self.config = CoreConfig()
        self.out: list[str] = []
        self._seen: dict[int, dict[str, Any]] = {}
        # member -> the toy durable log, per shard: synced entries (version, payload), snapshot;
        # and the member's metadata
        self.entries: dict[int, dict[int, list[tuple[int, bytes]]]] = {}
        self.snapshot: dict[int, dict[int, tuple[int, bytes]]] = {}
        self.meta: dict[int, dict[str, bytes]] = {}
        # member -> the shards it has a log of (a log exists once something was written to it)
        self.logs: dict[int, set[int]] = {}
        self.founders: tuple[int, ...] = ()
        self.applied: dict[int, dict[int, int]] = {}  # member -> shard -> version its state is at

    @property
    def multi(self) -> bool:
        """Several shards: the output names the shard."""
        return bool(self.layout) and self.layout[0].shard_count > 1

    # -- commands -------------------------------------------------------------------------------

    def run(self, line: str) -> list[str]:
        self.out = []
        words = line.split()
        getattr(self, "cmd_" + words[0].replace("-", "_"))(*words[1:])
        return self.out

    def cmd_config(self, *options: str) -> None:
        views = self.config.views
        for option in options:
            key, value = option.split("=", 1)
            field = {"install-grace": "install_grace_ns", "startup-grace": "startup_grace_ns"}[key]
            views = dataclasses.replace(views, **{field: int(value) * MS})
        self.config = dataclasses.replace(self.config, views=views)

    def cmd_group(self, n: str, mode: str = "ordered", *options: str) -> None:
        opts = dict(o.split("=", 1) for o in options)
        modes = tuple(mode.split(","))
        shards = int(opts.get("shards", len(modes)))
        if len(modes) == 1:
            spec = SubgroupSpec("kv", shards=shards, mode=modes[0])
        else:
            spec = SubgroupSpec("kv", shards=shards, mode=modes)
        self.layout = [spec]
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
        self.applied.setdefault(m, {})
        self.logs.setdefault(m, set())
        self._seen[m] = {}

    def cmd_submit(self, m: str, text: str, *options: str) -> None:
        opts = dict(o.split("=", 1) for o in options)
        self.replicas[int(m)].submit(0, int(opts.get("shard", 0)), text.encode())
        self._settle()

    def cmd_tick(self, ms: str) -> None:
        self.now_ns += int(ms) * MS
        for m in sorted(self.running):
            self.replicas[m].tick(self.now_ns)
        self._settle()

    def cmd_tick_member(self, members: str, ms: str) -> None:
        self.now_ns += int(ms) * MS
        for m in sorted(int(x) for x in members.split(",")):
            if m in self.running:
                self.replicas[m].tick(self.now_ns)
        self._settle()

    def cmd_deliver(self, link: str = "", n: str = "") -> None:
        if link:
            a, b = _link(link)
            self._deliver_link(a, b, int(n) if n else None)
        else:
            self._deliver_round()
        self._settle()

    def cmd_drop(self, link: str, n: str = "") -> None:
        a, b = _link(link)
        queue = self.links.get((a, b), deque())
        count = len(queue) if not n else min(int(n), len(queue))
        for _ in range(count):
            self.out.append(f"{a}->{b}: dropped {self._describe(a, queue.popleft())}")
        if not count:
            self.out.append(f"{a}->{b}: holds nothing")

    def cmd_hold(self, link: str) -> None:
        self.held.add(_link(link))

    def cmd_release(self, link: str) -> None:
        self.held.discard(_link(link))

    def cmd_links(self, to: str = "") -> None:
        for (a, b), queue in sorted(self.links.items()):
            if to and b != int(to):
                continue
            for item in queue:
                self.out.append(f"{a}->{b}: {self._describe(a, item)}")

    def cmd_state(self, m: str = "") -> None:
        for member in [int(m)] if m else sorted(self.running):
            if not self.states.get(member):
                self.out.append(f"{member}: no state")
            for sh, payloads in sorted(self.states[member].items()):
                shard = f" shard {sh}" if self.multi else ""
                at = _v(self.applied[member].get(sh, 0))
                items = " ".join(p.decode() for p in payloads) or "(empty)"
                self.out.append(f"{member}:{shard} state {items} (at {at})")

    def cmd_manual(self, m: str) -> None:
        self.manual.add(int(m))

    def cmd_auto(self, m: str) -> None:
        self.manual.discard(int(m))
        self._settle()

    def cmd_process_ready(self, m: str) -> None:
        member = int(m)
        replica = self.replicas[member]
        if member not in self.running or not replica.has_ready():
            self.out.append(f"{member}: no Ready")
            return
        ready = replica.ready()
        self.out.append(f"{member}: Ready")
        self.out.extend(f"  {line}" for line in self._describe_ready(member, ready))
        self.executors[member].execute(replica, ready)
        replica.advance(ready)
        self._report_row(member)
        self._check_halted(member)
        self._settle()

    def cmd_sync_disk(self, m: str) -> None:
        self._sync_disk(int(m))
        self._settle()

    def cmd_stabilize(self) -> None:
        for _ in range(10_000):
            self._settle()
            moved = self._deliver_round()
            self._sync_disks()
            self._settle()
            idle = not any(q for k, q in self.links.items() if k not in self.held) and not any(
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
        first = contacts[(self.now_ns // self.config.join_retry_ns) % len(contacts)]
        self.out.append(f"process {member} asks {first} to join")
        self._settle()

    def cmd_restart(self, m: str) -> None:
        member = int(m)
        # a new process without the old one's disk
        self.entries.pop(member, None)
        self.snapshot.pop(member, None)
        self.meta.pop(member, None)
        self.logs.pop(member, None)
        self.states[member] = {}
        self.applied[member] = {}
        self.cmd_join(m)

    def cmd_leave(self, m: str) -> None:
        self.replicas[int(m)].leave()
        self._settle()

    def cmd_crash_all(self) -> None:
        for m in sorted(self.running):
            self.cmd_crash(str(m))

    def cmd_restart_from_log(self, m: str) -> None:
        member = int(m)
        meta = self.meta.get(member, {})
        epoch, members = 1, self.founders
        awaiting: tuple[tuple[int, int], ...] = ()
        if "view" in meta:
            epoch, members, awaiting = decode_view_meta(meta["view"])
        prop = meta.get(f"view-proposal-{epoch}")
        acc = meta.get("restart-acceptor")
        offer_epoch, offerable = decode_offer_meta(meta["offer"]) if "offer" in meta else (0, ())
        shards = range(self.layout[0].shard_count)
        # the durable shards it held in its last view: a log it never wrote is the empty state
        held = {s.shard for s in allocate(members, self.layout) if member in s.members}
        held = {sh for sh in held if self.layout[0].mode_of(sh) == "durable"}
        logged: dict[tuple[int, int], int] = {}
        replayed: list[str] = []
        self.states[member] = {}
        self.applied[member] = {}
        for sh in shards:
            snap_version, snap = self.snapshot.get(member, {}).get(sh, (0, b""))
            entries = self.entries.get(member, {}).get(sh, [])
            state = [x for x in snap.split(b"|") if x] + [p for _, p in entries]
            last = max([snap_version] + [v for v, _ in entries])
            if sh in self.logs.get(member, set()):
                logged[(0, sh)] = last
            if sh in held or sh in self.logs.get(member, set()) or not self.multi:
                self.states[member][sh] = state
                self.applied[member][sh] = last
                replayed.append(
                    f"shard {sh}: {len(state)} entries replayed, last version {_v(last)}"
                )
        recovered = Recovered(
            epoch,
            tuple(members),
            tuple(awaiting),
            Proposal.decode(prop) if prop else None,
            logged,
            Acceptor.decode(acc) if acc else Acceptor(),
            offer_epoch,
            tuple(offerable),
        )
        contacts = [x for x in sorted(self.replicas) if x != member]
        replica = Replica.restarting(
            member, recovered, contacts, layout=self.layout, config=self.config
        )
        replica.tick(self.now_ns)
        self._add(member, replica)
        if self.multi:
            what = "; ".join(replayed) or "nothing replayed"
        else:
            state = self.states[member][0]
            what = f"{len(state)} entries replayed, last version {_v(self.applied[member][0])}"
        self.out.append(
            f"member {member} restarts from its log: view {epoch} {list(members)}, {what}"
        )
        self._settle()

    # -- the driver -----------------------------------------------------------------------------

    def _deliver_round(self) -> bool:
        moved = False
        for (a, b), queue in sorted(self.links.items()):
            if (a, b) in self.cut or b not in self.running:
                queue.clear()
                continue
            if (a, b) in self.held:
                continue
            items = list(queue)
            queue.clear()
            for item in items:
                moved = True
                self._input(a, b, item)
        return moved

    def _deliver_link(self, a: int, b: int, n: int | None) -> None:
        queue = self.links.get((a, b), deque())
        if (a, b) in self.cut or b not in self.running:
            queue.clear()
        count = len(queue) if n is None else min(n, len(queue))
        if not count:
            self.out.append(f"{a}->{b}: holds nothing")
        for _ in range(count):
            item = queue.popleft()
            self.out.append(f"{a}->{b}: {self._describe(a, item)}")
            self._input(a, b, item)

    def _input(self, a: int, b: int, item: tuple) -> None:
        kind, *body = item
        if kind == "w":
            self.replicas[b].on_write(a, *body)
        else:
            self.replicas[b].on_data(a, *body)

    def _sync_disks(self) -> None:
        for m in sorted(self.running - self.held_disks):
            self._sync_disk(m)

    def _sync_disk(self, m: int) -> None:
        pending, self.unsynced[m] = self.unsynced[m], []
        for req in pending:
            log = self.entries.setdefault(m, {}).setdefault(req.shard, [])
            log.extend((d.version, d.payload) for d in req.entries)
            self.replicas[m].on_persisted(req.subgroup, req.shard, req.entries[-1].version)

    def _settle(self) -> None:
        for m in sorted(self.running):
            replica = self.replicas[m]
            if m not in self.manual:
                self.executors[m].drain(replica)
                self._report_row(m)
            rs = replica._restart
            if rs is not None and rs.waiting and rs.waiting != self._seen[m].get("waiting"):
                self.out.append(f"{m}: leads the restart, waits: {rs.waiting}")
                self._seen[m]["waiting"] = rs.waiting
            self._check_halted(m)

    def _check_halted(self, m: int) -> None:
        replica = self.replicas[m]
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

    # -- describing what moves ------------------------------------------------------------------

    def _table_of(self, m: int, epoch: int) -> Any:
        """Member m's table of `epoch` (its current one, or the one it just left), if it has it."""
        replica = self.replicas[m]
        table = getattr(replica, "table", None)  # a joiner has none before it is admitted
        if table is not None and replica.epoch == epoch:
            return table
        prev = getattr(replica, "prev_table", None)
        if prev is not None and replica.epoch == epoch + 1:
            return prev
        return None

    def _columns(self, m: int, offset: int, data: bytes, epoch: int) -> str:
        """The columns of member m's row a write covers, by name (`shard1.ready` for s1_ready)."""
        table = self._table_of(m, epoch)
        if table is None:
            return f"bytes {offset}..{offset + len(data)}"
        if offset == 0 and len(data) == table.layout.row_bytes:
            return "whole row"
        names = [
            _column_name(p.column.name)
            for p in table.layout.placed.values()
            if p.offset < offset + len(data) and p.end > offset
        ]
        return " ".join(names)

    def _describe(self, a: int, item: tuple) -> str:
        kind, *body = item
        if kind == "w":
            offset, data, epoch = body
            return f"write {self._columns(a, offset, data, epoch)} (epoch {epoch})"
        return self._frame(body[0])

    def _frame(self, payload: bytes) -> str:
        kind, g, number, epoch = FRAME.unpack_from(payload)
        body = payload[FRAME.size :]
        name = FRAME_KINDS.get(kind, f"frame {kind}")
        if kind == FRAME_STATE:
            return f"state of shard {g} at {_v(number)} ({len(body)} bytes, epoch {epoch})"
        if kind == FRAME_JOIN_OK:
            words = struct.unpack(f"<{len(body) // 8}q", body)
            n = words[0]
            members = list(words[1 : 1 + n])
            rest = words[1 + n :]
            k = rest[0]
            awaiting = list(rest[2 : 1 + k])
            tail = rest[1 + k :]
            provides = list(tail[2 : 1 + tail[0]]) if tail else []
            text = f"join-ok view {epoch} {members}"
            if awaiting:
                text += f", awaits shards {awaiting}"
            if provides:
                text += f", provides shards {provides}"
            return text
        if kind == FRAME_JOIN_REQUEST:
            if not body:
                return name
            words = struct.unpack(f"<{len(body) // 8}q", body)
            held = ", ".join(
                f"shard {words[3 + 3 * i]} at {_v(words[4 + 3 * i])}" for i in range(words[1])
            )
            return f"{name}, last view {words[0]}, offers " + (held or "nothing")
        if kind in (FRAME_LARGE, FRAME_BLOCK, FRAME_REPLIES, FRAME_REPLY):
            return f"{name} (shard {g}, epoch {epoch})"
        return f"{name} (epoch {epoch})" if epoch else name

    def _describe_ready(self, m: int, ready: Ready) -> list[str]:
        lines = []
        for p in ready.persist:
            if isinstance(p, LogMeta):
                lines.append(f"persist {p.name}")
            elif isinstance(p, LogAppend):
                vs = [d.version for d in p.entries]
                span = f"{_v(vs[0])}..{_v(vs[-1])}" if vs else "nothing"
                lines.append(f"persist append shard {p.shard} {span}")
            elif isinstance(p, LogTruncate):
                lines.append(f"persist truncate shard {p.shard} after {_v(p.version)}")
            else:
                lines.append(f"persist snapshot shard {p.shard} at {_v(p.version)}")
        for w in ready.writes:
            cols = self._columns(m, w.offset, w.data, w.epoch)
            lines.append(f"write to {list(w.targets)}: {cols} (epoch {w.epoch})")
        for s in ready.sends:
            lines.append(f"send to {s.target}: {self._frame(s.payload)}")
        for d in ready.deliveries:
            lines.append(f"delivery {_delivery(d, self.multi)}")
        for e in ready.events:
            lines.append(f"event {_event(e)}")
        return lines


class _Member:
    """The executor's host for one transcript member: a toy durable log (a shard's entries count
    once synced; metadata, truncations and snapshots at once), FIFO links the script drains, and
    a state per shard that is the list of payloads delivered. Everything it does is printed."""

    def __init__(self, t: Transcript, m: int):
        self.t = t
        self.m = m

    def _shard(self, shard: int) -> str:
        return f" shard {shard}" if self.t.multi else ""

    def prepare_view(self, event: ViewInstalled) -> None:
        pass

    def persist_meta(self, request: LogMeta) -> None:
        t, m = self.t, self.m
        t.meta.setdefault(m, {})[request.name] = request.data
        t.out.append(f"{m}: logs {request.name} (synced before its pushes)")

    def persist_append(self, request: LogAppend) -> None:
        self.t.unsynced[self.m].append(request)
        self.t.logs.setdefault(self.m, set()).add(request.shard)

    def persist_flush(self, subgroup: int, shard: int) -> None:
        self.t._sync_disks()

    def persist_rewrite(self, request: LogTruncate | LogSnapshot) -> None:
        t, m, sh = self.t, self.m, request.shard
        t.logs.setdefault(m, set()).add(sh)
        entries = t.entries.setdefault(m, {}).setdefault(sh, [])
        snapshots = t.snapshot.setdefault(m, {})
        log = "its log" if not t.multi else f"its shard {sh} log"
        if isinstance(request, LogTruncate):
            kept = [e for e in entries if e[0] <= request.version]
            dropped = len(entries) - len(kept)
            t.out.append(
                f"{m}: truncates {log} after {_v(request.version)} ({dropped} entries dropped)"
            )
            t.entries[m][sh] = kept
            if snapshots.get(sh, (0, b""))[0] > request.version:
                del snapshots[sh]
        else:
            t.entries[m][sh] = []
            snapshots[sh] = (request.version, request.data)
            t.out.append(f"{m}: replaces {log} by the snapshot at {_v(request.version)}")

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
            t.applied[m][d.shard] = d.version
            t.out.append(f"{m}: delivers {_delivery(d, t.multi)}")
        return [b"" for _ in deliveries]

    def state_of(self, subgroup: int, shard: int) -> tuple[int, bytes]:
        t, m = self.t, self.m
        if shard not in t.states[m]:
            return 0, b""
        return t.applied[m].get(shard, 0), b"|".join(t.states[m][shard])

    def state_sent(self, event: StateTransfer, version: int, size_bytes: int) -> None:
        what = "its state" if not self.t.multi else f"shard {event.shard}'s state"
        self.t.out.append(f"{self.m}: sends {what} to {event.to}")

    def restore(self, event: RestoreState) -> None:
        t, m = self.t, self.m
        what = "its state" if not t.multi else f"shard {event.shard}'s state"
        t.out.append(f"{m}: restores {what} ({len(event.data)} bytes)")
        t.states[m][event.shard] = [x for x in event.data.split(b"|") if x]
        t.applied[m][event.shard] = event.version

    def view_installed(self, e: ViewInstalled) -> None:
        t, m = self.t, self.m
        old = getattr(t.replicas[m], "prev_table", None)
        if old is not None and e.epoch > 1 and m not in e.joined:
            t._report_row(m, old, f"(end of view {e.epoch - 1}) ")
        if t.multi:
            # the state machines of shards this member left are dropped now
            mine = {sh for _, sh, _, _ in e.shards}
            for sh in [sh for sh in t.states[m] if sh not in mine]:
                del t.states[m][sh]
                t.applied[m].pop(sh, None)
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
        shards = ""
        if t.multi:
            shards = "; its shards: " + ", ".join(
                f"{sh} {list(members)}" for _, sh, members, _ in sorted(e.shards)
            )
        t.out.append(
            f"{m}: installs view {e.epoch} {list(e.members)}"
            + (f" ({', '.join(change)})" if change else "")
            + shards
        )
        t._seen[m] = {}

    def answer(self, event: Completed | SubmitFailed, results: dict[int, bytes] | None) -> None:
        if isinstance(event, Completed):
            self.t.out.append(f"{self.m}: answered, {_seq(event.version)}")

    def answer_read(self, event: ReadConfirmed | ReadFailed) -> None:
        if isinstance(event, ReadConfirmed):
            self.t.out.append(f"{self.m}: read {event.ticket} confirmed")
        else:
            self.t.out.append(f"{self.m}: read {event.ticket} failed: {event.reason}")

    def flush_answers(self) -> None:
        pass

    def notify(
        self, event: Halted | ViewBlocked | FrontierReached | PeerMisbehaved | RemovalRefused
    ) -> None:
        if isinstance(event, Halted):
            self.t.out.append(f"{self.m}: halts: {event.reason}")
        elif isinstance(event, ViewBlocked):
            self.t.out.append(f"{self.m}: view blocked: {event.reason}")
        elif isinstance(event, PeerMisbehaved):
            self.t.out.append(f"{self.m}: drops input from {event.peer}: {event.reason}")
        elif isinstance(event, RemovalRefused):
            self.t.out.append(f"{self.m}: removal refused: {event.reason}")


def _link(spec: str) -> tuple[int, int]:
    a, b = spec.split("->")
    return int(a), int(b)


def _column_name(name: str) -> str:
    if name.startswith("s") and name[1:2].isdigit():
        g, col = name[1:].split("_", 1)
        return f"shard{g}.{col}"
    return name


def _delivery(d: Delivery, multi: bool) -> str:
    shard = f"shard {d.shard}, " if multi else ""
    return (
        f"{d.payload.decode()} ({shard}epoch {d.version >> 32}, "
        f"seq {d.version & 0xFFFFFFFF}, from {d.sender})"
    )


def _event(e: Any) -> str:
    if isinstance(e, ViewInstalled):
        return f"ViewInstalled view {e.epoch} {list(e.members)}"
    if isinstance(e, StateTransfer):
        return f"StateTransfer shard {e.shard} to {e.to}" + (
            f" at {_v(e.version)}" if e.version else ""
        )
    if isinstance(e, RestoreState):
        return f"RestoreState shard {e.shard} at {_v(e.version)} ({len(e.data)} bytes)"
    if isinstance(e, Completed):
        return f"Completed {_seq(e.version)}"
    if isinstance(e, SubmitFailed):
        return f"SubmitFailed: {e.reason}"
    if isinstance(e, ViewBlocked):
        return f"ViewBlocked: {e.reason}"
    if isinstance(e, Halted):
        return f"Halted: {e.reason}"
    if isinstance(e, FrontierReached):
        return f"FrontierReached {e.value}"
    if isinstance(e, PeerMisbehaved):
        return f"PeerMisbehaved {e.peer}: {e.reason}"
    return type(e).__name__


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
