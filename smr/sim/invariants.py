"""Invariant checkers for the simulator, run after every simulated step.

This module owns the checks. Each raises `Violation(invariant, detail)`; the harness stops the run
and reports it with the reproducing command.

The table:
* `table.monotone`: no monotone column of any copy of a table ever decreases (`Table._check`).
* `table.own-row`: a member only pushes bytes of its own row, exactly as they are.
* `table.applied`: a write that arrives for the receiver's epoch is applied whole; once the run is
  quiet, every member's copy of a peer's row (in the same epoch) equals that peer's own row.

The first protocol (`heartbeat_frontier`):
* `frontier.stable`: a member reports the frontier reached `k` in an epoch only when every member
  still in that epoch really has its counter at `k` or more.
* `frontier.live`: once faults stop, every live member keeps seeing the frontier rise.

Ordered multicast (the simulator's nonce envelope tells every submission apart):
* `multicast.agreement`: two members that delivered the same version of a shard delivered the
  same message; each member's versions of a shard only grow (total order, no duplication).
* `multicast.creation`: every delivered message was submitted, by the sender it names, to that
  shard.
* `multicast.fifo`: a member delivers a sender's messages in the order the sender submitted them.
* `multicast.stability`: outside a view change's ragged trim, a message is delivered only once
  every member of its shard received it.
* `multicast.answered`: a submitter is answered in `ordered` mode only after every member
  received it, in `durable` mode only after every member persisted it.
* `multicast.frontier`: a member's view of a shard's global persistence frontier never falls and
  is never above any member's own `persisted` count.
* `state.digest`: members that delivered up to the same version have the same state.
* `workload`: the workload's own invariant (the bank conserves money).

Views:
* `view.unique`: never two views with the same epoch and different members.
* `view.synchrony`: members that go from view v to v+1 together delivered the same messages in v.
* `view.durability`: everything at or below a shard's global persistence frontier in view v is
  delivered by every member that goes on to v+1 (nothing persisted is lost).

Restart after total failure:
* `restart.durability`: a restart decision's cut of every durable shard is at or above every
  version any member saw below the shard's global persistence frontier before it, and is a
  version the group delivered; the state a member resumes with (replayed from its log, or
  restored from the provider's snapshot) equals the state every member had at that version
  (`state.digest`, which also runs for restarting members), and later deliveries continue the
  same sequence (`multicast.agreement`).

Reads:
* `reads.linearizable`: a linearizable read confirmed at a member reads a state at a version at
  or above that of every command answered, and every read confirmed, anywhere, in an earlier
  step than the one the read was issued in (the writes are totally ordered, so this is
  linearizability of the reads). An ordered shard keeps its state in memory only, so once no
  live member holds it (a total failure) only what was answered since counts.

State transfer:
* `transfer.durability`: a member restores a durable shard's state (from a provider, a restart's
  provider, or a joiner providing it from its own log) at a version at or above every version
  delivered below the shard's global persistence frontier in an earlier view (for workloads with
  a state machine: without one the driver sends no state and no version).

Liveness, checked at the end of the fault-free phase:
* `live.view`: every live member is in the same view, and that view is exactly the live members.
* `live.answered`: every submission a live member made is answered, and members of a shard end
  in the same state.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

from smr.core.multicast import SEQ_MAX, Completed
from smr.core.ready import Ready
from smr.core.replica import ACTIVE, FrontierReached, RestoreState
from smr.core.views import Roster, ViewInstalled
from smr.runtime import protocol
from smr.sim.harness import NONCE_BYTES, Checker, SimNode, Simulation, Violation

MS = 1_000_000


class TableMonotone(Checker):
    name = "table.monotone"

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        targets = sim.live_nodes() if node is None else [node]
        for n in targets:
            if not n.active:
                continue
            try:
                n.replica.table._check()
            except AssertionError as e:
                raise Violation(self.name, f"at member {n.id}: {e}") from None


class TableOwnRow(Checker):
    """Pushed bytes are the member's own row: the last push of each byte in a `Ready` equals the
    row as it stands, and an earlier push of a monotone word is never above its current value
    (a protocol may push a column, raise it and push again in one step)."""

    name = "table.own-row"

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        replica = node.replica
        if replica.status != ACTIVE:
            return
        table = replica.table
        row = table.row_bytes_of(table.my_row)
        words = memoryview(row).cast("q")
        covered: set[int] = set()
        for push in reversed(ready.writes):
            if node.id in push.targets:
                raise Violation(self.name, f"member {node.id} pushed a write to itself")
            if push.epoch != replica.epoch:
                continue  # the last writes of the epoch that just ended
            data = memoryview(push.data + bytes(-len(push.data) % 8)).cast("q")
            first = push.offset // 8
            for i, value in enumerate(data):
                w = first + i
                if w not in covered:
                    covered.add(w)
                    if value != words[w]:
                        raise Violation(
                            self.name,
                            f"member {node.id} pushed word {w} of its row as {value}, "
                            f"but its row holds {words[w]}",
                        )
                else:
                    placed = table.layout.column_at(w * 8)
                    if placed is not None and placed.column.monotone and value > words[w]:
                        raise Violation(
                            self.name,
                            f"member {node.id} pushed {placed.column.name} = {value}, above "
                            f"the {words[w]} its row now holds: the column went down",
                        )


class TableApplied(Checker):
    name = "table.applied"

    def after_write(
        self, sim: Simulation, node: SimNode, source: int, offset: int, data: bytes, epoch: int
    ) -> None:
        replica = node.replica
        if epoch != replica.epoch or replica.status != ACTIVE:
            return  # kept for a later epoch, or dropped as one that is over
        table = replica.table
        row = table.row_bytes_of(table.members.index(source))
        if row[offset : offset + len(data)] != data:
            raise Violation(self.name, f"write from {source} at {offset} not applied at {node.id}")

    def at_end(self, sim: Simulation) -> None:
        for (a, b), link in sim.network.links.items():
            if a not in sim.nodes or b not in sim.nodes:
                continue  # a spare id no process has used
            na, nb = sim.nodes[a], sim.nodes[b]
            if not (link.up and na.active and nb.active) or link.in_flight:
                continue
            ra, rb = na.replica, nb.replica
            if ra.epoch != rb.epoch or a not in rb.members:
                continue
            ta, tb = ra.table, rb.table
            own, copy = ta.row_bytes_of(ta.my_row), tb.row_bytes_of(tb.members.index(a))
            # a shard's columns are pushed to the shard's members only
            shown = {f"s{sh.index}_" for sh in ra.shards if b in sh.members}
            for placed in ta.layout.placed.values():
                name = placed.column.name
                prefix = name[: name.index("_") + 1] if "_" in name else ""
                if name[0] == "s" and name[1].isdigit() and prefix not in shown:
                    continue
                if own[placed.offset : placed.end] != copy[placed.offset : placed.end]:
                    raise Violation(
                        self.name,
                        f"after the run, member {b}'s copy of member {a}'s {name} is stale",
                    )


class FrontierStable(Checker):
    name = "frontier.stable"

    def __init__(self) -> None:
        self.last: dict[tuple[int, int], int] = {}
        self.last_ns: dict[int, int] = {}

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        for event in ready.events:
            if not isinstance(event, FrontierReached):
                continue
            key = (node.id, event.epoch)
            prev = self.last.get(key, 0)
            if event.value <= prev:
                raise Violation(
                    self.name, f"member {node.id} frontier went {prev} -> {event.value}"
                )
            self.last[key] = event.value
            self.last_ns[node.id] = sim.now_ns
            for m in node.replica.members:
                other = sim.nodes[m]
                if not other.active or other.replica.epoch != event.epoch:
                    continue
                t = other.replica.table
                own = t.get(t.my_row, "heartbeat")
                if own < event.value:
                    raise Violation(
                        self.name,
                        f"member {node.id} reported frontier {event.value} while member {m}'s "
                        f"counter was {own}",
                    )

    def at_end(self, sim: Simulation) -> None:
        quiet_ns = sim.config.liveness_ns // 4
        for n in sim.live_nodes():
            last = self.last_ns.get(n.id, -1)
            if sim.now_ns - last > quiet_ns:
                raise Violation(
                    "frontier.live",
                    f"member {n.id} saw no frontier rise in the last {quiet_ns / MS:.0f} ms of "
                    "the fault-free phase",
                )


class Multicast(Checker):
    name = "multicast"

    def attach(self, sim: Simulation) -> None:
        self.by_version: dict[tuple[tuple[int, int], int], bytes] = {}
        self.last_version: dict[tuple[int, int, tuple[int, int]], int] = {}
        self.seen: dict[tuple[int, int], set[bytes]] = defaultdict(set)
        self.fifo: dict[tuple, int] = {}
        self.frontier: dict[tuple[int, int, int], int] = defaultdict(int)
        self.digests: dict[tuple[tuple[int, int], int], tuple[int, str]] = {}

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        inc = (node.id, node.incarnation)
        for d in ready.deliveries:
            key = (d.subgroup, d.shard)
            nonce = d.payload[:NONCE_BYTES]
            sub = sim.nonces.get(nonce)
            if sub is None or sub.member != d.sender or sub.key != key:
                raise Violation(
                    "multicast.creation",
                    f"member {node.id} delivered in shard {key} a message from {d.sender} "
                    "that was not submitted there by that member",
                )
            if nonce in self.seen[inc]:
                raise Violation(
                    "multicast.agreement",
                    f"member {node.id} delivered submission {sub.index} of {d.sender} twice",
                )
            self.seen[inc].add(nonce)
            fkey = (inc, sub.member, sub.incarnation, key)
            if self.fifo.get(fkey, -1) >= sub.index:
                raise Violation(
                    "multicast.fifo",
                    f"member {node.id} delivered submission {sub.index} of member {d.sender} "
                    f"to shard {key} after its submission {self.fifo[fkey]}",
                )
            self.fifo[fkey] = sub.index
            st = node.replica.stream(*key)
            raw = st is not None and st.mode == "raw"
            if raw:
                continue
            vkey = (node.id, node.incarnation, key)
            if self.last_version.get(vkey, -1) >= d.version:
                raise Violation(
                    "multicast.agreement",
                    f"member {node.id} delivered version {d.version:#x} of shard {key} after "
                    f"version {self.last_version[vkey]:#x}",
                )
            self.last_version[vkey] = d.version
            other = self.by_version.setdefault((key, d.version), nonce)
            if other != nonce:
                raise Violation(
                    "multicast.agreement",
                    f"member {node.id} delivered version {d.version:#x} of shard {key} as "
                    "another message than another member did",
                )
            if st is not None and not node.replica.frozen and d.version >> 32 == node.replica.epoch:
                seq = d.version & SEQ_MAX
                for m in st.shard.members:
                    peer = sim.nodes[m]
                    if not peer.active or peer.replica.epoch != node.replica.epoch:
                        continue
                    ps = peer.replica.streams.get(st.g)
                    if ps is not None and ps._mine(ps.w_seq) <= seq:
                        raise Violation(
                            "multicast.stability",
                            f"member {node.id} delivered seq {seq} of shard {key} before member "
                            f"{m} received it",
                        )
        for event in ready.events:
            if not isinstance(event, Completed) or event.version >> 32 != node.replica.epoch:
                continue  # answered at a view change: the survivors' guarantee, checked there
            st = node.replica.stream(event.subgroup, event.shard)
            if st is None or st.mode == "raw":
                continue
            seq = event.version & SEQ_MAX
            word = st.w_persisted if st.mode == "durable" else st.w_seq
            did = "persisted" if st.mode == "durable" else "received"
            decided = node.replica.vc.decided
            for m in st.shard.members:
                if decided is not None and m not in decided.members:
                    continue  # answered after the ragged trim: the next view's members have it
                peer = sim.nodes[m]
                if not peer.active or peer.replica.epoch != node.replica.epoch:
                    continue
                ps = peer.replica.streams[st.g]
                if ps._mine(word) <= seq:
                    raise Violation(
                        "multicast.answered",
                        f"member {node.id} was answered for seq {seq} of {st.mode} shard "
                        f"{st.g} before member {m} {did} it",
                    )

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        if node is None or not node.alive:
            return
        replica = node.replica
        for g, st in replica.streams.items() if node.active else ():
            if st.mode != "durable":
                continue
            f = st.persisted_frontier()
            fkey = (node.id, replica.epoch, g)
            if f < self.frontier[fkey]:
                raise Violation(
                    "multicast.frontier",
                    f"member {node.id}'s frontier of shard {g} fell from {self.frontier[fkey]} "
                    f"to {f}",
                )
            self.frontier[fkey] = f
            for m in st.shard.members:
                peer = sim.nodes[m]
                if not peer.active or peer.replica.epoch != replica.epoch:
                    continue
                ps = peer.replica.streams[g]
                if f > ps._mine(ps.w_persisted):
                    raise Violation(
                        "multicast.frontier",
                        f"member {node.id} sees shard {g}'s frontier at {f}, above member {m}'s "
                        "own persisted count",
                    )
        for (key, version), digest in node.digests.items():
            seen = self.digests.get((key, version))
            if seen is None:
                self.digests[(key, version)] = (node.id, digest)
            elif seen[1] != digest:
                raise Violation(
                    "state.digest",
                    f"members {seen[0]} and {node.id} have different state in shard {key} at "
                    f"version {version:#x}",
                )
            machine = node.machines.get(key)
            if machine is not None:
                problem = sim.workload.check_machine(key[0], machine)
                if problem:
                    raise Violation("workload", f"member {node.id}, shard {key}: {problem}")
        node.digests.clear()

    def at_end(self, sim: Simulation) -> None:
        for node in sim.live_nodes():
            if node.open_tickets:
                ticket, key = next(iter(node.open_tickets.items()))
                raise Violation(
                    "live.answered",
                    f"member {node.id}'s submission {ticket} to shard {key} was never answered "
                    "after faults stopped",
                )
        finals: dict[tuple[int, int], tuple[int, str]] = {}
        for node in sim.live_nodes():
            for key, machine in node.machines.items():
                st = node.replica.stream(*key)
                if st is not None and st.mode == "raw" and sim.stats["views"]:
                    # raw delivery is on receipt: a message a failed sender got to some members
                    # only stays delivered there (no ordering, no trim), so states may differ
                    continue
                digest = machine.digest()
                if key in finals and finals[key][1] != digest:
                    raise Violation(
                        "live.answered",
                        f"members {finals[key][0]} and {node.id} end in different states in "
                        f"shard {key}",
                    )
                finals[key] = (node.id, digest)


class Views(Checker):
    name = "views"

    def attach(self, sim: Simulation) -> None:
        self.views: dict[int, tuple[int, ...]] = {1: sim.members}
        self.rosters: dict[int, Roster] = {}
        self.retired_in: dict[int, int] = {}  # id -> the first view whose roster retired it
        # (member, incarnation, epoch) -> (subgroup, shard) -> versions delivered in that epoch
        self.delivered: dict[tuple[int, int, int], dict[tuple[int, int], list[int]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.final: dict[tuple[int, tuple[int, int]], tuple[int, list[int]]] = {}
        self.frontier_version: dict[tuple[int, tuple[int, int]], int] = {}
        self.any_delivered: dict[tuple[int, tuple[int, int]], set[int]] = defaultdict(set)
        # (member, incarnation, epoch) -> shards it was in, and those it still waited state for
        self.shards_of: dict[tuple[int, int, int], set[tuple[int, int]]] = {}
        self.stateless: dict[tuple[int, int, int], set[tuple[int, int]]] = defaultdict(set)
        for node in sim.nodes.values():
            self.shards_of[(node.id, 0, 1)] = {
                (st.subgroup, st.shard_index) for st in node.replica.streams.values()
            }

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        for d in ready.deliveries:
            st = node.replica.stream(d.subgroup, d.shard)
            if st is not None and st.mode == "raw":
                continue
            self.delivered[(node.id, node.incarnation, d.version >> 32)][
                (d.subgroup, d.shard)
            ].append(d.version)
            self.any_delivered[(d.version >> 32, (d.subgroup, d.shard))].add(d.version)
        for event in ready.events:
            if isinstance(event, ViewInstalled):
                self._installed(sim, node, event)

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        if node is None or not node.active:
            return
        self.stateless[(node.id, node.incarnation, node.replica.epoch)] = {
            (st.subgroup, st.shard_index)
            for st in node.replica.streams.values()
            if st.awaiting_state
        }
        for st in node.replica.streams.values():
            if st.mode != "durable":
                continue
            count = st.persisted_frontier()
            if count:
                key = (node.replica.epoch, (st.subgroup, st.shard_index))
                self.frontier_version[key] = max(self.frontier_version.get(key, 0), count)

    def _installed(self, sim: Simulation, node: SimNode, event: ViewInstalled) -> None:
        known = self.views.setdefault(event.epoch, event.members)
        if known != event.members:
            raise Violation(
                "view.unique",
                f"member {node.id} installed view {event.epoch} as {list(event.members)}; "
                f"another member installed it as {list(known)}",
            )
        roster = self.rosters.setdefault(event.epoch, event.roster)
        if roster != event.roster:
            raise Violation(
                "view.unique",
                f"member {node.id} installed view {event.epoch} with roster {event.roster}; "
                f"another member with {roster}",
            )
        for m in event.roster.retired:
            self.retired_in[m] = min(self.retired_in.get(m, event.epoch), event.epoch)
        back = [m for m in event.members if self.retired_in.get(m, event.epoch) < event.epoch]
        if back:
            raise Violation(
                "view.retired",
                f"view {event.epoch} has members {back}, removed for good in view "
                f"{self.retired_in[back[0]]}",
            )
        self.shards_of[(node.id, node.incarnation, event.epoch)] = {
            (sg, sh) for sg, sh, _, _ in event.shards
        }
        if node.id in event.joined:
            return
        old = event.epoch - 1
        inc = (node.id, node.incarnation)
        mine = self.delivered.get((*inc, old), {})
        # a member still waiting for a shard's state delivered nothing of it, by design
        keys = self.shards_of.get((*inc, old), set()) - self.stateless.get((*inc, old), set())
        for key in sorted(keys):
            versions = mine.get(key, [])
            first = self.final.setdefault((old, key), (node.id, list(versions)))
            if first[1] != versions:
                raise Violation(
                    "view.synchrony",
                    f"members {first[0]} and {node.id} both went from view {old} to "
                    f"{event.epoch} but delivered {len(first[1])} and {len(versions)} messages "
                    f"of shard {key} in view {old}",
                )
            count = self.frontier_version.get((old, key), 0)
            persisted = {v for v in self.any_delivered[(old, key)] if v & SEQ_MAX < count}
            missing = persisted - set(versions)
            if missing:
                raise Violation(
                    "view.durability",
                    f"member {node.id} went on to view {event.epoch} without version "
                    f"{min(missing):#x} of shard {key}, below the persistence frontier {count}",
                )

    def at_end(self, sim: Simulation) -> None:
        live = sim.live_nodes()
        if not live:
            raise Violation("live.view", "no member is alive at the end of the run")
        epochs = {n.replica.epoch for n in live}
        if len(epochs) != 1:
            raise Violation(
                "live.view",
                "after faults stopped, live members are in different views: "
                + ", ".join(f"{n.id}@{n.replica.epoch}" for n in live),
            )
        members = set(live[0].replica.members)
        ids = {n.id for n in live}
        if members != ids:
            raise Violation(
                "live.view",
                f"after faults stopped, the view is {sorted(members)} but the live members are "
                f"{sorted(ids)}",
            )


class RestartDurability(Checker):
    name = "restart.durability"

    def attach(self, sim: Simulation) -> None:
        self.frontier: dict[tuple[int, tuple[int, int]], int] = {}  # (epoch, key) -> seq count
        self.delivered: dict[tuple[int, tuple[int, int]], set[int]] = defaultdict(set)
        self.checked: set[int] = set()
        self.durable: set[tuple[int, int]] = set()

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        if node is None or not node.active:
            return
        for st in node.replica.streams.values():
            if st.mode != "durable":
                continue
            key = (st.subgroup, st.shard_index)
            self.durable.add(key)
            fkey = (node.replica.epoch, key)
            count = st.persisted_frontier()
            if count > self.frontier.get(fkey, 0):
                self.frontier[fkey] = count

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        for d in ready.deliveries:
            st = node.replica.stream(d.subgroup, d.shard)
            if st is not None and st.mode == "durable":
                self.delivered[(d.version >> 32, (d.subgroup, d.shard))].add(d.version)
        for event in ready.events:
            if isinstance(event, RestoreState):
                self._check_restored(sim, node, event)
        decision = node.replica.restart_decision
        if decision is None or decision.epoch in self.checked:
            return
        if any(isinstance(e, ViewInstalled) and e.epoch == decision.epoch for e in ready.events):
            self.checked.add(decision.epoch)
            self._check(decision)

    def _durable_before(self, key: tuple[int, int], epoch: int) -> int:
        """The highest version of `key` delivered below a global persistence frontier in an
        epoch before `epoch` (0 if none)."""
        durable = 0
        for (e, k), versions in self.delivered.items():
            if k != key or e >= epoch:
                continue
            count = self.frontier.get((e, k), 0)
            for v in versions:
                if v & SEQ_MAX < count and v > durable:
                    durable = v
        return durable

    def _check_restored(self, sim: Simulation, node: SimNode, event: RestoreState) -> None:
        key = (event.subgroup, event.shard)
        if key not in self.durable:
            return
        durable = self._durable_before(key, node.replica.epoch)
        if event.version < durable:
            raise Violation(
                "transfer.durability",
                f"member {node.id} restored shard {key} at {event.version:#x} in view "
                f"{node.replica.epoch}, below version {durable:#x}, which was at or below the "
                "global persistence frontier",
            )

    def _check(self, decision) -> None:
        for key in sorted(self.durable):
            durable = self._durable_before(key, decision.epoch)
            cut = decision.cut(key)
            if cut < durable:
                raise Violation(
                    self.name,
                    f"the restart into view {decision.epoch} cut shard {key} at {cut:#x}, below "
                    f"version {durable:#x}, which was at or below the global persistence frontier",
                )
            if cut and cut not in self.delivered.get((cut >> 32, key), ()):
                raise Violation(
                    self.name,
                    f"the restart into view {decision.epoch} cut shard {key} at {cut:#x}, a "
                    "version no member delivered",
                )


class Reads(Checker):
    name = "reads.linearizable"

    def attach(self, sim: Simulation) -> None:
        # per shard, the steps in which answers were given and the highest version answered by
        # then (steps only grow, so both lists are sorted)
        self.steps: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        self.highest: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        # per shard kept in memory only: how many times every live copy of its state was lost
        self.lost: dict[tuple[int, int], int] = {}
        self.held: dict[tuple[int, int], bool] = {}

    def _history(self, node: SimNode, subgroup: int, shard: int) -> tuple[Any, ...]:
        key = (subgroup, shard)
        st = node.replica.stream(subgroup, shard)
        if st is not None and st.mode == "durable":
            return (subgroup, shard, 0)
        self.held.setdefault(key, True)
        return (subgroup, shard, self.lost.setdefault(key, 0))

    def after_step(self, sim: Simulation, node: SimNode | None) -> None:
        for key, was in self.held.items():
            held = False
            for n in sim.nodes.values():
                st = n.replica.stream(*key) if n.active else None
                if st is not None and not st.awaiting_state:
                    held = True
                    break
            if was and not held:
                self.lost[key] += 1
            self.held[key] = held

    def _answered(self, key: tuple[Any, ...], step: int, version: int) -> None:
        steps, highest = self.steps[key], self.highest[key]
        top = max(version, highest[-1]) if highest else version
        if steps and steps[-1] == step:
            highest[-1] = top
        else:
            steps.append(step)
            highest.append(top)

    def _answered_before(self, key: tuple[Any, ...], step: int) -> int:
        i = bisect.bisect_left(self.steps[key], step)
        return self.highest[key][i - 1] if i else 0

    def after_ready(self, sim: Simulation, node: SimNode, ready: Ready) -> None:
        for event in ready.events:
            if type(event) is Completed:
                history = self._history(node, event.subgroup, event.shard)
                self._answered(history, sim.steps, event.version)

    def after_answer(
        self, sim: Simulation, node: SimNode, request: Any, response: protocol.Response
    ) -> None:
        if not isinstance(request, protocol.Query) or not response.ok:
            return
        key = (request.subgroup, request.shard)
        issued = node.open_reads.get(request.id)
        assert issued is not None, f"member {node.id} answered a read never issued"
        history = self._history(node, *key)
        required = self._answered_before(history, issued[0])
        if response.version < required:
            raise Violation(
                self.name,
                f"member {node.id} answered a read of shard {key} at version "
                f"{response.version:#x}, below {required:#x}, answered before the read began",
            )
        sim.stats["reads_confirmed"] += 1
        self._answered(history, sim.steps, response.version)


def default_checkers() -> list[Checker]:
    return [
        TableMonotone(),
        TableOwnRow(),
        TableApplied(),
        FrontierStable(),
        Multicast(),
        Views(),
        RestartDurability(),
        Reads(),
    ]
