"""Trace emission: the abstract events of a simulator run, as the TLA+ specs in proofs/ see them.

This module owns the `Tracer`, an observer the simulation runs only when one is passed
(`Simulation(config, tracer=Tracer(out))`, `smr sim --trace FILE`); without one the simulator
pays nothing. Per step it records, as JSON lines:

- `run`: one header per seed (config, command that reproduces it);
- `view`: the first time any member is seen in an epoch: its members and shards;
- `row`: the columns of a member's own row that changed, for the columns the specs model
  (`suspected`, `wedged`, `ballot`, `acked_ballot`, `committed`, `leaving`, `joins_num`, the
  proposals `prop` / `acked` / `decided`, and per shard `s{g}.received`, `s{g}.delivered`,
  `s{g}.persisted`, `s{g}.ready`);
- `log`: a view proposal written to the member's metadata log (synced before the acknowledgement
  is pushed: the spec's `logged`);
- `deliver`: one delivery (member, epoch, shard, seq, sender, nonce);
- `install`: a member moved from epoch `e` to `next`; `halt`, `crash`, `restart`;
- restart after total failure (`proofs/Restart.tla`): `boot`, a member restarting from its own
  disk with the summary it recovered (`last` view, the proposal logged in it, per durable shard
  the last `logged` version, the shards `awaiting` state, the restart acceptor's accepted
  decision); `rdecide`, the restart decision a member installs (`Replica.restart_decision`:
  instance, members, per-shard cuts, plans); `truncate` and `state`, a shard log cut at a
  version (`LogTruncate`) or replaced by received state (`LogSnapshot`); `resume`, the member
  entering the decided view (its `ViewInstalled`).

Within a step, a member's row change is recorded before the deliveries and installs of the same
`Ready` (deliveries happen in the predicate pass that raised `delivered`). A member's row is read
from its own table, which only it writes, so the row events of a member are exactly the history
of its row. `smr.sim.trace_check` replays these events against the specs' actions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any

from smr.core.codec import WORD
from smr.core.ready import LogMeta, LogSnapshot, LogTruncate, Ready
from smr.core.replica import HALTED
from smr.core.restart import Recovered, RestartDecision
from smr.core.views import Proposal, ViewInstalled
from smr.sim.harness import NONCE_BYTES, Checker, SimNode, Simulation

SEQ_BITS = 32
PROPOSAL_COLUMNS = ("prop", "acked", "decided")
COUNTER_COLUMNS = ("wedged", "ballot", "acked_ballot", "committed", "leaving", "joins_num")


def proposal_json(p: Proposal | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "ballot": p.ballot,
        "members": list(p.members),
        "joiners": list(p.joiners),
        "trims": [list(t) for t in p.trims],
    }


def decision_json(d: RestartDecision) -> dict[str, Any]:
    return {
        "instance": d.instance,
        "members": list(d.members),
        "cuts": [list(c) for c in d.cuts],
        "plans": [[provider, list(needy)] for provider, needy in d.plans],
    }


def recovered_json(r: Recovered) -> dict[str, Any]:
    a = r.acceptor
    accepted = None
    if a.accepted:
        accepted = decision_json(RestartDecision.decode(a.decision))
    return {
        "last": [r.epoch, list(r.members)],
        "prop": proposal_json(r.proposal),
        "logged": [[sg, sh, v] for (sg, sh), v in sorted(r.logged.items())],
        "awaiting": [list(k) for k in sorted(r.awaiting)],
        "acc": None if accepted is None else {"instance": a.instance, "decision": accepted},
    }


def _proposal_at(table: Any, row: int, name: str) -> Proposal | None:
    data = table.bget(row, name, 0, table.layout[name].column.length)
    if WORD.unpack_from(data)[0] == 0:
        return None
    return Proposal.decode(data)


@dataclass
class _Seen:
    """What the tracer last recorded of one member incarnation's row in one epoch."""

    incarnation: int
    table: Any
    epoch: int
    shards: tuple[Any, ...]  # the shards of the epoch this member belongs to
    row: dict[str, Any] = field(default_factory=dict)


class Tracer(Checker):
    """Writes the abstract events of a run to `out` (a text stream), one JSON object a line."""

    name = "tracer"

    def __init__(self, out: IO[str]):
        self.out = out
        self.events = 0
        self._seen: dict[int, _Seen] = {}
        self._alive: dict[int, tuple[bool, int]] = {}
        self._views: set[int] = set()
        self._halted: set[tuple[int, int]] = set()  # (member, incarnation)
        self._booted: set[tuple[int, int]] = set()  # (member, incarnation) restarted from disk
        self._resumed: set[tuple[int, int]] = set()  # (member, incarnation) resumed by decision
        self._sim: Simulation | None = None

    # -- emission -------------------------------------------------------------------------------

    def _emit(self, ev: str, **fields: Any) -> None:
        assert self._sim is not None
        record = {"ev": ev, "i": self._sim.steps, "t": self._sim.now_ns, **fields}
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.events += 1

    def _row_of(self, seen: _Seen, me: int) -> dict[str, Any]:
        t = seen.table
        r = t.members.index(me)
        row: dict[str, Any] = {
            "suspected": [t.members[j] for j in range(t.n_rows) if t.vget(r, "suspected", j)],
        }
        for name in COUNTER_COLUMNS:
            row[name] = t.get(r, name)
        for name in PROPOSAL_COLUMNS:
            row[name] = proposal_json(_proposal_at(t, r, name))
        base = r * t.row_words
        for s in seen.shards:
            w = t.layout[f"s{s.index}_received"].word
            row[f"s{s.index}.received"] = [t.words[base + w + k] for k in range(len(s.senders))]
            for col in ("delivered", "persisted", "ready"):
                row[f"s{s.index}.{col}"] = t.get(r, f"s{s.index}_{col}")
        return row

    def _flush(self, member: int, seen: _Seen) -> None:
        row = self._row_of(seen, member)
        changed = {k: v for k, v in row.items() if seen.row.get(k) != v}
        if changed:
            self._emit("row", m=member, e=seen.epoch, set=changed)
            seen.row.update(changed)

    def _view(self, replica: Any) -> None:
        if replica.epoch in self._views:
            return
        self._views.add(replica.epoch)
        shards = [
            {
                "g": s.index,
                "sg": s.subgroup,
                "sh": s.shard,
                "members": list(s.members),
                "senders": list(s.senders),
                "mode": s.mode,
            }
            for s in replica.shards
        ]
        self._emit("view", e=replica.epoch, members=list(replica.members), shards=shards)

    def _observe(self, node: SimNode) -> None:
        """Record the changes of `node`'s row since it was last observed (in its old epoch's
        table first, if it installed a new one meanwhile)."""
        replica = node.replica
        seen = self._seen.get(node.id)
        if seen is not None and seen.incarnation == node.incarnation and seen.table is not None:
            if seen.table is not getattr(replica, "table", None):
                self._flush(node.id, seen)
                seen = None
        elif seen is not None:
            seen = None  # a new incarnation: the old one's rows stay as they were
        if seen is None:
            if replica.epoch == 0 or getattr(replica, "table", None) is None:
                return  # a joiner not yet in a view
            self._view(replica)
            mine = tuple(s for s in replica.shards if node.id in s.members)
            seen = _Seen(node.incarnation, replica.table, replica.epoch, mine)
            seen.row = {
                "suspected": [],
                **dict.fromkeys(COUNTER_COLUMNS, 0),
                **dict.fromkeys(PROPOSAL_COLUMNS),
            }
            for s in mine:
                seen.row[f"s{s.index}.received"] = [0] * len(s.senders)
                for col in ("delivered", "persisted", "ready"):
                    seen.row[f"s{s.index}.{col}"] = 0
            self._seen[node.id] = seen
        self._flush(node.id, seen)

    def _faults(self, sim: Simulation) -> None:
        for m, node in sim.nodes.items():
            halted = node.alive and node.replica.status == HALTED
            if halted and (m, node.incarnation) not in self._halted:
                self._halted.add((m, node.incarnation))
                self._emit("halt", m=m, reason=node.replica.halt_reason or "")
            before = self._alive.get(m)
            now = (node.alive, node.incarnation)
            if before == now:
                continue
            self._alive[m] = now
            if before is None:
                continue
            if before[0] and not node.alive:
                self._emit("crash", m=m)
            elif now[1] != before[1] and (m, now[1]) not in self._booted:
                self._emit("restart", m=m, incarnation=now[1])

    # -- Checker hooks --------------------------------------------------------------------------

    def attach(self, sim: Simulation) -> None:
        self._sim = sim
        c = sim.config
        self._emit(
            "run",
            seed=c.seed,
            nodes=c.nodes,
            faults=sorted(c.faults),
            workload=c.workload,
            command=c.command(),
        )
        for node in sim.nodes.values():
            self._alive[node.id] = (node.alive, node.incarnation)
            self._observe(node)

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        # the proposal is logged (synced) before the acknowledgement that announces it
        for request in ready.persist:
            if isinstance(request, LogMeta) and request.name.startswith("view-proposal-"):
                epoch = int(request.name.rsplit("-", 1)[1])
                p = proposal_json(Proposal.decode(request.data))
                self._emit("log", m=node.id, e=epoch, p=p)
        installs = [e for e in ready.events if isinstance(e, ViewInstalled)]
        d = getattr(node.replica, "restart_decision", None)
        resume = None
        me = (node.id, node.incarnation)
        if d is not None and me not in self._resumed and any(e.epoch == d.epoch for e in installs):
            self._resumed.add(me)
            resume = d.epoch
            self._emit("rdecide", m=node.id, d=decision_json(d))
        for request in ready.persist:
            if isinstance(request, LogTruncate):
                self._emit(
                    "truncate", m=node.id, sg=request.subgroup, sh=request.shard, v=request.version
                )
            elif isinstance(request, LogSnapshot):
                self._emit(
                    "state", m=node.id, sg=request.subgroup, sh=request.shard, v=request.version
                )
        member_of: int | None = None  # the epoch this incarnation leaves by installing
        if installs:
            # the row of the epoch just left, as it ended (install_next built the new table)
            seen = self._seen.get(node.id)
            if seen is not None and seen.incarnation == node.incarnation:
                self._flush(node.id, seen)
                member_of = seen.epoch
        else:
            self._observe(node)
        for d in ready.deliveries:
            self._emit(
                "deliver",
                m=node.id,
                e=d.version >> SEQ_BITS,
                sg=d.subgroup,
                sh=d.shard,
                seq=d.version & ((1 << SEQ_BITS) - 1),
                sender=d.sender,
                nonce=bytes(d.payload[:NONCE_BYTES]).hex(),
            )
        for e in installs:
            if e.epoch == resume:
                self._emit("resume", m=node.id, next=e.epoch, members=list(e.members))
            elif member_of == e.epoch - 1:
                self._emit("install", m=node.id, e=member_of, next=e.epoch, members=list(e.members))
            else:  # a joiner (or a restarted member) enters: it had no row in the old epoch
                self._emit("join", m=node.id, e=e.epoch - 1, next=e.epoch, members=list(e.members))
            self._observe(node)
        self._faults(sim)

    def after_recover(self, sim: Simulation, node: SimNode, recovered: Recovered) -> None:
        self._booted.add((node.id, node.incarnation))
        self._emit("boot", m=node.id, incarnation=node.incarnation, **recovered_json(recovered))

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        self._faults(sim)
        if node is not None and node.alive:
            self._observe(node)
