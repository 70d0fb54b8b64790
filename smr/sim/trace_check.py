"""Trace validation: replay a simulator trace (`smr.sim.trace`) against the actions of the specs.

This module owns the Python replay of `proofs/ViewChange.tla` (and the multicast actions it keeps
from `proofs/Multicast.tla`). Each epoch of a trace is one instance of the spec, and each shard
of it (ordered or durable; raw shards are not modelled) is checked with the spec's per-shard
actions: the shard's members are the spec's `Members`, its senders the spec's ranks. The abstract
state is the refinement mapping of `proofs/README.md`: a member's row columns are the spec's
variables, and the history variables (`followed`, `acks`, `logged`, `committedP`) are derived
from the row history.

For every `row` event the checker finds the spec action each changed column corresponds to and
checks that the action is enabled in the abstract state before applying it. The code may take
several spec steps in one trace step (a receive of several indices, a batch delivery, wedge and
follow in one predicate pass), so changes are applied in the spec's causal order: suspicion,
join/leave requests, receive/send, stable delivery, wedge, follow, propose, acknowledge,
commit/learn, the trim's delivery, sync. Every spec invariant is checked after every event.
The first action that is not enabled, or invariant that fails, raises `TraceError` naming the
trace line, the action and why.

Restart after total failure is replayed against `proofs/Restart.tla`: `TotalFailure` (no member
active any more: every one crashed or halted), `Boot` (a member restarting from its disk after a
total failure, with the summary it recovered, which must be the last view it entered and at
least what it persisted; one that boots while a group runs joins it, and joiners are not modelled),
`RestartView` (the decision: promisers that include a majority of the latest view any of them
knows, installed or proposed and logged in that epoch, and per durable shard a cut equal to the
longest log among them), `Truncate` (a log cut exactly at the decided cut, or dropped by a member
that joins instead), `StateTransfer` (state received at the cut), and `Resume` (entering epoch
latest known + 1, never an epoch already used). Across the restart it checks Inv_FrontierKept
(no cut and no decided member's log falls below a global persistence frontier observed before),
Inv_OneViewPerEpoch (views, committed proposals and restart decisions agree per epoch) and
Inv_SameSequence (a member's durable deliveries continue its state's version: after a resume,
from exactly the cut).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


class TraceError(Exception):
    """A trace step that the spec does not allow. `line` is the 1-based line of the trace."""

    def __init__(self, line: int, action: str, detail: str):
        what = "" if action == "Parse" else f"{action} not enabled: "
        super().__init__(f"line {line}: {what}{detail}")
        self.line = line
        self.action = action
        self.detail = detail


def seq_count(v: list[int]) -> int:
    """Spec SeqCount (views.trim_count): the round-robin prefix every index of which is covered."""
    mn = min(v)
    return mn * len(v) + v.index(mn)


def _same(p: dict, q: dict) -> bool:
    return p["members"] == q["members"] and p["trims"] == q["trims"]


@dataclass
class Shard:
    g: int
    key: tuple[int, int]
    members: list[int]
    senders: list[int]
    mode: str


@dataclass
class Epoch:
    """The abstract state of one epoch: the spec's variables for every member row."""

    e: int
    members: list[int]
    shards: dict[int, Shard]
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    followed: dict[int, set[int]] = field(default_factory=dict)
    acks: dict[int, list[dict]] = field(default_factory=dict)
    logged: dict[int, list[dict]] = field(default_factory=dict)
    committed: list[dict] = field(default_factory=list)
    dead: set[int] = field(default_factory=set)
    halted: set[int] = field(default_factory=set)
    installed: set[int] = field(default_factory=set)
    last_seq: dict[tuple[int, int], int] = field(default_factory=dict)

    def row(self, m: int) -> dict[str, Any]:
        r = self.rows.get(m)
        if r is None:
            r = {
                "suspected": [],
                "wedged": 0,
                "ballot": 0,
                "acked_ballot": 0,
                "committed": 0,
                "leaving": 0,
                "joins_num": 0,
                "prop": None,
                "acked": None,
                "decided": None,
            }
            for s in self.shards.values():
                if m in s.members:
                    r[f"s{s.g}.received"] = [0] * len(s.senders)
                    for col in ("delivered", "persisted", "ready"):
                        r[f"s{s.g}.{col}"] = 0
            self.rows[m] = r
        return r

    def index(self, m: int) -> int:
        return self.members.index(m)

    def unsusp(self, m: int) -> list[int]:
        sus = set(self.row(m)["suspected"])
        return [x for x in self.members if x not in sus]

    def majority(self, rows: list[int]) -> bool:
        return 2 * len(rows) > len(self.members)

    def stable(self, s: Shard) -> int:
        return min(seq_count(self.row(r)[f"s{s.g}.received"]) for r in s.members)


class Checker:
    """Replays events one at a time; `check(lines)` replays a whole trace."""

    def __init__(self) -> None:
        self.line = 0
        self.runs = 0
        self.actions: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """A new run (seed): a new behaviour from the spec's Init."""
        self.epochs: dict[int, Epoch] = {}
        self.order: dict[tuple[int, int, int], tuple[int, str]] = {}
        self.steps = 0
        # restart after total failure (proofs/Restart.tla)
        self.running: set[int] = set()  # members running in a view (not crashed, halted, booting)
        self.down = False  # a total failure happened and no member resumed yet
        self.boots: dict[int, dict] = {}  # member -> the summary it booted with (this failure)
        # boots while a group ran, by members that have not entered a view or crashed since
        self.early_boots: dict[int, dict] = {}
        self.entered: dict[int, int] = {}  # member -> the last epoch it entered
        self.views: dict[int, list[int]] = {}  # epoch -> members, from every source
        # durable shard -> the highest persistence frontier seen: (epoch, shard index, count)
        self.frontier: dict[tuple[int, int], tuple[int, int, int]] = {}
        self.seqs: dict[tuple[int, int], list[int]] = {}  # (epoch, g) -> delivered seqs, in order
        self.at: dict[tuple[int, tuple[int, int]], int] = {}  # (member, shard) -> state version
        self.rdecisions: dict[int, tuple[dict, int]] = {}  # instance -> (decision, latest known)
        self.resuming: dict[int, dict] = {}  # member -> the decision it installs
        # (member, shard) -> (epoch resumed in, cut): its state there must start at the cut
        self.cut_due: dict[tuple[int, tuple[int, int]], tuple[int, int]] = {}

    # -- helpers --------------------------------------------------------------------------------

    def fail(self, action: str, detail: str) -> None:
        raise TraceError(self.line, action, detail)

    def took(self, action: str) -> None:
        self.actions[action] = self.actions.get(action, 0) + 1

    def epoch(self, e: int) -> Epoch:
        ep = self.epochs.get(e)
        if ep is None:
            self.fail("Init", f"epoch {e} used before its view was announced")
        assert ep is not None
        return ep

    def active(self, ep: Epoch, m: int, action: str) -> None:
        if m in ep.dead:
            self.fail(action, f"member {m} crashed in epoch {ep.e}")
        if m in ep.halted:
            self.fail(action, f"member {m} halted in epoch {ep.e}")
        if m in ep.installed:
            self.fail(action, f"member {m} already left epoch {ep.e}")

    # -- events ---------------------------------------------------------------------------------

    def feed(self, ev: dict[str, Any]) -> None:
        self.steps += 1
        kind = ev["ev"]
        if kind == "run":
            self.reset()
            self.runs += 1
            return
        handler = getattr(self, "_" + kind, None)
        if handler is None:
            self.fail("Next", f"unknown event {kind!r}")
        handler(ev)
        if "e" in ev and ev["e"] in self.epochs:
            self.invariants(self.epochs[ev["e"]])

    def claim(self, e: int, members: list[int], action: str) -> None:
        """Inv_OneViewPerEpoch across restarts: every source names the same view for epoch e."""
        have = self.views.setdefault(e, list(members))
        if have != list(members):
            self.fail(action, f"epoch {e} is already view {have}, not {list(members)}")

    def _view(self, ev: dict) -> None:
        if ev["e"] in self.epochs:
            self.fail("Init", f"epoch {ev['e']} announced twice")
        shards = {
            s["g"]: Shard(s["g"], (s["sg"], s["sh"]), s["members"], s["senders"], s["mode"])
            for s in ev["shards"]
        }
        self.claim(ev["e"], ev["members"], "Inv_OneViewPerEpoch")
        if not self.epochs:  # the founding view: every member runs in it
            self.running = set(ev["members"])
            for m in ev["members"]:
                self.entered[m] = ev["e"]
        self.epochs[ev["e"]] = Epoch(ev["e"], list(ev["members"]), shards)

    def _stopped(self, m: int) -> None:
        self.running.discard(m)
        for key in [k for k in self.cut_due if k[0] == m]:
            del self.cut_due[key]
        if not self.running and not self.down:
            self.down = True  # Restart.tla Crash of the last member up: the restart phase
            self.boots = {}
            self.took("TotalFailure")
            # A member that booted while a group still ran and has waited since (nobody
            # admitted it, and then the group stopped) has not written its disk since: its boot
            # is this phase's Boot.
            early, self.early_boots = self.early_boots, {}
            for boot in early.values():
                self._boot(boot)

    def _crash(self, ev: dict) -> None:
        for ep in self.epochs.values():
            if ev["m"] in ep.members and ev["m"] not in ep.installed:
                ep.dead.add(ev["m"])
        self.resuming.pop(ev["m"], None)
        self.early_boots.pop(ev["m"], None)
        self._stopped(ev["m"])
        self.took("Crash")

    def _restart(self, ev: dict) -> None:
        # a new incarnation with a fresh directory: it joins a later view (joiners not modelled)
        for key in [k for k in self.at if k[0] == ev["m"]]:
            del self.at[key]
        self.took("Restart")

    def _halt(self, ev: dict) -> None:
        for ep in self.epochs.values():
            if ev["m"] in ep.members and ev["m"] not in ep.installed | ep.dead:
                ep.halted.add(ev["m"])
        self._stopped(ev["m"])
        self.took("HaltMinority/Trim(excluded)")

    # -- restart after total failure (proofs/Restart.tla) ----------------------------------------

    def _boot(self, ev: dict) -> None:
        m = ev["m"]
        if not self.down or self.running:
            # A process that restarts from its disk while a group runs finds it (the group
            # answers NEWER) and joins it, offering what its logs hold; joiners are not modelled
            # (its logs are dropped on admission, or provide a lost shard's state: checked by
            # the simulator's invariants, not here).
            self.early_boots[m] = ev
            self._restart(ev)
            return
        e, members = ev["last"]
        if e != self.entered.get(m, e) or self.views.get(e, members) != members:
            self.fail(
                "Boot",
                f"member {m} recovered view {e} {members}; it last entered epoch "
                f"{self.entered.get(m)} ({self.views.get(self.entered.get(m, e))})",
            )
        ep = self.epochs.get(e)
        if ev["prop"] is not None and (ep is None or ev["prop"] not in ep.logged.get(m, [])):
            self.fail("Boot", f"member {m} recovered a proposal of epoch {e} it never logged")
        logged = {(sg, sh): v for sg, sh, v in ev["logged"]}
        if ep is not None:
            for sh in ep.shards.values():
                if sh.mode != "durable" or m not in sh.members:
                    continue
                p = self.last_version(e, sh.g, ep.row(m)[f"s{sh.g}.persisted"])
                if logged.get(sh.key, 0) < p:
                    self.fail(
                        "Boot",
                        f"member {m} recovered shard {sh.key} at {logged.get(sh.key, 0)}, below "
                        f"the {p} it persisted in epoch {e}",
                    )
        for key in [k for k in self.at if k[0] == m]:
            del self.at[key]
        for key, v in logged.items():
            self.at[(m, key)] = v
        self.boots[m] = ev
        self.resuming.pop(m, None)
        self.took("Boot")

    def instance(self, q: list[int]) -> tuple[int, list[int], dict[tuple[int, int], int]]:
        """The latest view any booted member in q knows (installed, or proposed and logged in
        that epoch; or a later restart decision one of them accepted), and the versions that
        may survive per durable shard (the ragged trim of such a proposal)."""
        sums = [self.boots[m] for m in q]
        top = max(b["last"][0] for b in sums)
        members = next(b["last"][1] for b in sums if b["last"][0] == top)
        bounds: dict[tuple[int, int], int] = {}
        props = [b["prop"] for b in sums if b["last"][0] == top and b["prop"] is not None]
        e = top
        if props:
            best = max(props, key=lambda p: p["ballot"])
            e, members = top + 1, best["members"]
            ep = self.epochs.get(top)
            if ep is not None:
                for sh in ep.shards.values():
                    if sh.g < len(best["trims"]):
                        bounds[sh.key] = (top << 32) + seq_count(best["trims"][sh.g]) - 1
        later = [b["acc"] for b in sums if b["acc"] is not None and b["acc"]["instance"] > e]
        if later:
            d = max(later, key=lambda a: a["instance"])["decision"]
            e, members = d["instance"] + 1, d["members"]
            bounds = {(sg, sh): v for sg, sh, v in d["cuts"]}
        return e, list(members), bounds

    def _rdecide(self, ev: dict) -> None:
        m, d = ev["m"], ev["d"]
        if m not in self.boots:
            self.fail("RestartView", f"member {m} installs a restart decision without booting")
        if m not in d["members"]:
            self.fail("RestartView", f"member {m} installs a decision without it: {d['members']}")
        seen = self.rdecisions.get(d["instance"])
        if seen is not None:
            if seen[0] != d:
                self.fail("RestartView", f"instance {d['instance']}: {seen[0]} and {d}")
            self.resuming[m] = d
            return
        q = list(d["members"])
        missing = [r for r in q if r not in self.boots]
        if missing:
            self.fail("RestartView", f"members {missing} of the decision never booted")
        e, view, bounds = self.instance(q)
        have = [r for r in q if r in view]
        if 2 * len(have) <= len(view):
            self.fail(
                "RestartView",
                f"decided by {q}: {have} is no majority of view {e} {view}, the latest known",
            )
        longest: dict[tuple[int, int], int] = {}
        for r in q:
            b = self.boots[r]
            stale = {tuple(k) for k in b["awaiting"]}
            for sg, sh, v in b["logged"]:
                ok = (sg, sh) not in stale and v <= bounds.get((sg, sh), v)
                longest[(sg, sh)] = max(longest.get((sg, sh), 0), v if ok else 0)
        cuts = {(sg, sh): v for sg, sh, v in d["cuts"]}
        for key in sorted(set(cuts) | set(longest) | set(self.frontier)):
            if cuts.get(key, 0) != longest.get(key, 0):
                self.fail(
                    "RestartView",
                    f"the cut of shard {key} is {cuts.get(key, 0)}; the longest log among "
                    f"{q} ends at {longest.get(key, 0)}",
                )
            if cuts.get(key, 0) < self.frontier_version(key):
                self.fail(
                    "Inv_FrontierKept",
                    f"the cut {cuts.get(key, 0)} of shard {key} is below the persistence "
                    f"frontier {self.frontier_version(key)} observed before the failure",
                )
        self.rdecisions[d["instance"]] = (d, e)
        self.resuming[m] = d
        self.took("RestartView")

    def _truncate(self, ev: dict) -> None:
        m, key, v = ev["m"], (ev["sg"], ev["sh"]), ev["v"]
        d = self.resuming.get(m)
        if d is None:
            if v != 0:  # a restarting member that joins a running group drops its logs
                self.fail("Truncate", f"member {m} truncates shard {key} to {v} with no decision")
        else:
            cut = {(sg, sh): c for sg, sh, c in d["cuts"]}.get(key, 0)
            if v != cut:
                self.fail("Truncate", f"member {m} truncates shard {key} to {v}, the cut is {cut}")
            if v < self.frontier_version(key):
                self.fail("Inv_FrontierKept", f"member {m}'s log of {key} cut below the frontier")
        if self.at.get((m, key), 0) < v:
            self.fail("Truncate", f"member {m} truncates shard {key} to {v} above its log")
        self.at[(m, key)] = v
        self.took("Truncate")

    def _state(self, ev: dict) -> None:
        m, key, v = ev["m"], (ev["sg"], ev["sh"]), ev["v"]
        due = self.due(m, key)
        if due is not None and v != due:
            self.fail("StateTransfer", f"member {m} received shard {key} at {v}, the cut is {due}")
        self.at[(m, key)] = v
        self.took("StateTransfer")

    def last_version(self, e: int, g: int, count: int) -> int:
        """The last message delivered below sequence number `count` of shard g in epoch e, as a
        version (0 if none): what a persisted count of `count` means for a log."""
        seqs = self.seqs.get((e, g), [])
        k = bisect.bisect_left(seqs, count)
        return (e << 32) | seqs[k - 1] if k else 0

    def frontier_version(self, key: tuple[int, int]) -> int:
        e, g, f = self.frontier.get(key, (0, 0, 0))
        return self.last_version(e, g, f) if f else 0

    def due(self, m: int, key: tuple[int, int]) -> int | None:
        """The cut m's state of `key` must be at, while m is in the epoch it resumed in."""
        due = self.cut_due.get((m, key))
        return due[1] if due is not None and self.entered.get(m) == due[0] else None

    def _resume(self, ev: dict) -> None:
        m, e = ev["m"], ev["next"]
        d = self.resuming.pop(m, None)
        if d is None:
            self.fail("Resume", f"member {m} resumes in epoch {e} with no restart decision")
        assert d is not None
        used = self.views.get(e)
        if (used is not None and used != ev["members"]) or (
            e in self.epochs and self.rdecisions.get(e - 1, (None,))[0] != d
        ):
            self.fail("Resume", f"member {m} resumes in epoch {e}, already used by view {used}")
        known = self.rdecisions[d["instance"]][1]
        if e != known + 1 or e != d["instance"] + 1 or ev["members"] != d["members"]:
            self.fail(
                "Resume",
                f"member {m} resumes in epoch {e} {ev['members']}; the latest known view is "
                f"{known}, the decision {d['instance']} + 1 {d['members']}",
            )
        self.claim(e, ev["members"], "Inv_OneViewPerEpoch")
        cuts = {(sg, sh): c for sg, sh, c in d["cuts"]}
        for key, c in cuts.items():
            self.cut_due[(m, key)] = (e, c)
        self.entered[m] = e
        self.running.add(m)
        self.early_boots.pop(m, None)
        self.down = False
        self.took("Resume")

    def _log(self, ev: dict) -> None:
        ep = self.epoch(ev["e"])
        ep.logged.setdefault(ev["m"], []).append(ev["p"])

    def _deliver(self, ev: dict) -> None:
        ep = self.epoch(ev["e"])
        m = ev["m"]
        s = next((x for x in ep.shards.values() if x.key == (ev["sg"], ev["sh"])), None)
        if s is None:
            self.fail(
                "Deliver", f"member {m} delivered in shard {ev['sg']}/{ev['sh']}, not in view"
            )
        assert s is not None
        if s.mode == "raw":
            return
        seq = ev["seq"]
        delivered = ep.row(m)[f"s{s.g}.delivered"]
        last = ep.last_seq.get((m, s.g), -1)
        if not last < seq < delivered:
            self.fail(
                "Deliver",
                f"member {m} delivered seq {seq} of shard {s.g} in epoch {ep.e}, outside the "
                f"range ({last}, {delivered}) its delivered column allows",
            )
        ep.last_seq[(m, s.g)] = seq
        if s.mode == "durable":
            version = (ep.e << 32) | seq
            due, at = self.due(m, s.key), self.at.get((m, s.key))
            if due is not None and (at or 0) != due:  # no log: the empty state, version 0
                self.fail(
                    "Inv_SameSequence",
                    f"member {m} delivers {version} of shard {s.key} in epoch {ep.e} with its "
                    f"state at {at}, not at the restart's cut {due}",
                )
            if at is not None and version <= at:
                self.fail(
                    "Inv_SameSequence",
                    f"member {m} delivers {version} of shard {s.key}, its state is at {at}",
                )
            self.cut_due.pop((m, s.key), None)
            self.at[(m, s.key)] = version
        if ev["sender"] != s.senders[seq % len(s.senders)]:
            self.fail("Deliver", f"seq {seq} delivered as from {ev['sender']}: not its sender")
        key = (ep.e, s.g, seq)
        entry = (ev["sender"], ev["nonce"])
        if key not in self.order:
            self.seqs.setdefault((ep.e, s.g), []).append(seq)  # first deliveries come in order
        if self.order.setdefault(key, entry) != entry:
            self.fail(
                "Deliver", f"member {m} delivered {entry} at {key}, another {self.order[key]}"
            )

    def _join(self, ev: dict) -> None:
        ep = self.epochs.get(ev["e"])
        if ep is not None:
            decided = [r["decided"] for r in ep.rows.values() if r["decided"] is not None]
            if not any(ev["m"] in p["joiners"] and p["members"] == ev["members"] for p in decided):
                self.fail("Join", f"member {ev['m']} joins epoch {ev['next']}: no decision has it")
        self.entered[ev["m"]] = ev["next"]
        self.running.add(ev["m"])
        self.early_boots.pop(ev["m"], None)
        self.took("Join")  # joiners and state transfer are not modelled beyond this

    def _install(self, ev: dict) -> None:
        ep = self.epoch(ev["e"])
        m = ev["m"]
        self.active(ep, m, "Install")
        p = ep.row(m)["decided"]
        if p is None:
            self.fail("Install", f"member {m} installs epoch {ev['next']} without a decision")
        assert p is not None
        if list(ev["members"]) != p["members"] or m not in p["members"]:
            self.fail("Install", f"member {m} installs {ev['members']}, decided {p['members']}")
        joiner = m in p["joiners"]
        sus = set(ep.row(m)["suspected"])
        for s in ep.shards.values():
            if s.mode == "raw" or m not in s.members or joiner:
                continue
            need = seq_count(p["trims"][s.g])
            if ep.row(m)[f"s{s.g}.delivered"] < need:
                self.fail(
                    "Install", f"member {m} has not delivered to the trim {need} of shard {s.g}"
                )
            if s.mode != "durable":
                continue
            for r in s.members:
                if r not in p["members"] or (r != m and r in sus):
                    continue
                row = ep.row(r)
                if row[f"s{s.g}.ready"] and row[f"s{s.g}.persisted"] < need:
                    self.fail(
                        "Install",
                        f"member {m} installs epoch {ev['next']} while member {r} persisted "
                        f"{row[f's{s.g}.persisted']} < trim {need} of shard {s.g}",
                    )
        ep.installed.add(m)
        self.claim(ev["next"], ev["members"], "Inv_OneViewPerEpoch")
        self.entered[m] = ev["next"]
        self.took("Install")

    def _row(self, ev: dict) -> None:
        ep = self.epoch(ev["e"])
        m = ev["m"]
        if m not in ep.members:
            self.fail("Next", f"member {m} writes a row in epoch {ep.e}, not its member")
        self.active(ep, m, "Next")
        new = ev["set"]
        row = ep.row(m)
        me = ep.index(m)
        if "suspected" in new:
            if not set(row["suspected"]) <= set(new["suspected"]):
                self.fail("Suspect", f"member {m} withdrew a suspicion")
            row["suspected"] = list(new["suspected"])
            self.took("Suspect/Merge")
        for col in ("leaving", "joins_num"):
            if col in new:
                if new[col] < row[col]:
                    self.fail("RelayJoin", f"member {m}'s {col} decreased")
                row[col] = new[col]
                self.took("RelayJoin")
        shards = [s for s in ep.shards.values() if m in s.members and s.mode != "raw"]
        for s in ep.shards.values():
            if m in s.members and f"s{s.g}.ready" in new:
                row[f"s{s.g}.ready"] = new[f"s{s.g}.ready"]
        for s in ep.shards.values():
            col = f"s{s.g}.received"
            if m not in s.members or col not in new:
                continue
            old, got = row[col], new[col]
            for k, (a, b) in enumerate(zip(old, got, strict=True)):
                if b == a:
                    continue
                action = "Send" if s.senders[k] == m else "Receive"
                if b < a:
                    self.fail(action, f"member {m}'s received[{k}] of shard {s.g} decreased")
                if row["wedged"]:
                    self.fail(action, f"member {m} is wedged (received frozen) in shard {s.g}")
                if action == "Receive":
                    sent = ep.row(s.senders[k])[col][k]
                    if b > sent:
                        self.fail(
                            action,
                            f"member {m} received {b} messages of sender {s.senders[k]} in "
                            f"shard {s.g}, which sent {sent}",
                        )
                self.took(action)
            row[col] = list(got)
        later: list[Shard] = []
        for s in shards:
            col = f"s{s.g}.delivered"
            if col not in new:
                continue
            c = new[col]
            if c < row[col]:
                self.fail("Deliver", f"member {m}'s delivered of shard {s.g} decreased")
            if not row["wedged"] and c <= ep.stable(s):
                row[col] = c
                self.took("Deliver")
            else:
                later.append(s)  # only the trim may deliver this (checked after the decision)
        if "wedged" in new and new["wedged"] != row["wedged"]:
            if not new["wedged"]:
                self.fail("Wedge", f"member {m} unwedged")
            joins = any(ep.row(r)["joins_num"] or ep.row(r)["leaving"] for r in ep.members)
            if not row["suspected"] and not joins:
                self.fail("Wedge", f"member {m} wedged with no suspicion, join or leave")
            row["wedged"] = 1
            self.took("Wedge")
        if "ballot" in new and new["ballot"] != row["ballot"]:
            b = new["ballot"]
            leader = ep.index(ep.unsusp(m)[0]) if ep.unsusp(m) else -1
            if not row["wedged"] or b <= row["ballot"] or b != leader + 1:
                self.fail(
                    "Follow",
                    f"member {m} follows ballot {b} (wedged {row['wedged']}, ballot "
                    f"{row['ballot']}, leader rank + 1 = {leader + 1})",
                )
            row["ballot"] = b
            ep.followed.setdefault(m, set()).add(b)
            self.took("Follow")
        if "prop" in new and new["prop"] != row["prop"]:
            self.propose(ep, m, me, new["prop"])
            row["prop"] = new["prop"]
            self.took("Propose")
        if "acked" in new or "acked_ballot" in new:
            p = new.get("acked", row["acked"])
            b = new.get("acked_ballot", row["acked_ballot"])
            if p is None or p["ballot"] != b:
                self.fail("Ack", f"member {m}'s acked proposal and acked_ballot {b} disagree")
            self.ack(ep, m, me, p)
            row["acked"], row["acked_ballot"] = p, b
            ep.acks.setdefault(m, []).append(p)
            self.took("Ack")
        if "decided" in new or "committed" in new:
            p = new.get("decided", row["decided"])
            if row["decided"] is not None:
                if p is None or not _same(p, row["decided"]):
                    self.fail("Learn", f"member {m} changed its decision")
            else:
                self.decide(ep, m, me, p)
            row["decided"] = p
            row["committed"] = new.get("committed", row["committed"])
        for s in later:
            col = f"s{s.g}.delivered"
            c = new[col]
            p = row["decided"]
            if p is None or m not in p["members"]:
                self.fail(
                    "Deliver",
                    f"member {m} delivered {c} in shard {s.g}: beyond the stable bound "
                    f"{ep.stable(s)}" + (" while wedged" if row["wedged"] else "") + ", no trim",
                )
            need = seq_count(p["trims"][s.g])
            if c != need:
                self.fail("Trim", f"member {m} delivered {c} in shard {s.g}; the trim is {need}")
            have = seq_count(row[f"s{s.g}.received"])
            if c > have:
                self.fail("Trim", f"member {m} delivers to the trim {c} having received {have}")
            row[col] = c
            self.took("Trim")
        for s in shards:
            col = f"s{s.g}.persisted"
            if col in new and new[col] != row[col]:
                if new[col] < row[col] or new[col] > row[f"s{s.g}.delivered"]:
                    self.fail(
                        "Sync",
                        f"member {m} persisted {new[col]} of shard {s.g}, delivered "
                        f"{row[f's{s.g}.delivered']}",
                    )
                row[col] = new[col]
                if s.mode == "durable":
                    # the global persistence frontier (a count of sequence numbers, some of
                    # them null messages; made a version once the deliveries are replayed)
                    f = min(ep.row(r)[col] for r in s.members)
                    if (ep.e, f) > self.frontier.get(s.key, (0, 0, 0))[::2]:
                        self.frontier[s.key] = (ep.e, s.g, f)
                self.took("Sync")

    def propose(self, ep: Epoch, m: int, me: int, p: dict | None) -> None:
        b = me + 1
        row = ep.row(m)
        rows = ep.unsusp(m)
        if p is None or p["ballot"] != b or row["ballot"] != b:
            self.fail("Propose", f"member {m} proposes {p} not as leader of ballot {b}")
        assert p is not None
        if row["decided"] is not None or not ep.majority(rows):
            self.fail("Propose", f"member {m}: decided already, or no majority in {rows}")
        for r in rows:
            if not ep.row(r)["wedged"] or b not in ep.followed.get(r, set()):
                self.fail("Propose", f"member {r} is not wedged and following ballot {b}")
        seen = [a for r in rows for a in ep.acks.get(r, []) if a["ballot"] < b]
        if seen:
            top = max(seen, key=lambda a: a["ballot"])
            if not _same(top, p):
                self.fail("Propose", f"ballot {b} does not adopt the acknowledged {top}")
            return
        survivors = [r for r in rows if not ep.row(r)["leaving"]]
        if p["members"][: len(survivors)] != survivors:
            self.fail("Propose", f"ballot {b} proposes {p['members']}, survivors {survivors}")
        for s in ep.shards.values():
            alive = [r for r in s.members if r in rows] or s.members
            trim = [
                min(ep.row(r)[f"s{s.g}.received"][k] for r in alive) for k in range(len(s.senders))
            ]
            if p["trims"][s.g] != trim:
                self.fail(
                    "Propose",
                    f"ballot {b}'s trim of shard {s.g} is {p['trims'][s.g]}, "
                    f"the minimum received over {alive} is {trim}",
                )

    def ack(self, ep: Epoch, m: int, me: int, p: dict) -> None:
        row = ep.row(m)
        b = row["ballot"]
        if not any(x == p for x in ep.logged.get(m, [])):
            self.fail("Ack", f"member {m} acknowledges ballot {p['ballot']} before logging it")
        if b == me + 1:  # the leader's own acknowledgement, part of Propose
            if p != row["prop"]:
                self.fail("Propose", f"leader {m} acknowledges {p}, not its proposal")
            return
        if b == 0 or any(a["ballot"] >= b for a in ep.acks.get(m, [])):
            self.fail("Ack", f"member {m} (ballot {b}) already acknowledged ballot {b}")
        leader = ep.members[b - 1]
        if ep.row(leader)["prop"] != p or p["ballot"] != b:
            self.fail(
                "Ack",
                f"member {m} acknowledges {p}; leader {leader} proposed "
                f"{ep.row(leader)['prop']} at ballot {b}",
            )

    def decide(self, ep: Epoch, m: int, me: int, p: dict | None) -> None:
        if p is None:
            self.fail("Commit", f"member {m} committed without a proposal")
        assert p is not None
        row = ep.row(m)
        b = me + 1
        if (
            row["ballot"] == b
            and row["prop"] is not None
            and row["prop"]["ballot"] == b
            and (p == row["prop"])
        ):
            rows = ep.unsusp(m)
            if not ep.majority(rows):
                self.fail("Commit", f"leader {m} commits ballot {b} with no majority in {rows}")
            for r in rows:
                if not any(a["ballot"] == b for a in ep.acks.get(r, [])):
                    self.fail(
                        "Commit",
                        f"leader {m} commits ballot {b}: member {r} has not acknowledged it",
                    )
            ep.committed.append(p)
            self.claim(ep.e + 1, p["members"], "Inv_OneViewPerEpoch")
            self.took("Commit")
            return
        if not any(
            r != m and ep.row(r)["decided"] is not None and _same(ep.row(r)["decided"], p)
            for r in ep.members
        ):
            self.fail("Learn", f"member {m} learns {p}, which no other row shows decided")
        self.took("Learn")

    # -- the spec's invariants ------------------------------------------------------------------

    def invariants(self, ep: Epoch) -> None:
        decided = [r["decided"] for r in ep.rows.values() if r["decided"] is not None]
        every = ep.committed + decided
        for p in every:
            if not _same(p, every[0]):
                self.fail("Inv_OneViewPerEpoch", f"epoch {ep.e}: {every[0]} and {p}")
        n = len(ep.members)
        for p in ep.committed:
            loggers = [r for r in ep.members if any(_same(x, p) for x in ep.logged.get(r, []))]
            if 2 * len(loggers) <= n:
                self.fail("Inv_TrimLoggedBeforeApplied", f"{p} logged only by {loggers}")
            for s in ep.shards.values():
                if s.mode == "raw":
                    continue
                need = seq_count(p["trims"][s.g])
                for r in s.members:
                    if ep.row(r)[f"s{s.g}.delivered"] > need:
                        self.fail("Inv_TrimAgreement", f"member {r} delivered past trim {need}")
                    survivor = r in p["members"] and r not in p["joiners"]
                    if survivor and seq_count(ep.row(r)[f"s{s.g}.received"]) < need:
                        self.fail("Inv_TrimAgreement", f"member {r} lacks trim {need}")
                frontier = min(ep.row(r)[f"s{s.g}.persisted"] for r in s.members)
                if s.mode == "durable" and frontier > need:
                    self.fail("Inv_DurableAcrossViews", f"frontier above trim {need}")
        for s in ep.shards.values():
            if s.mode == "raw":
                continue
            counts = {
                ep.row(m)[f"s{s.g}.delivered"]
                for m in ep.installed
                if m in s.members and m not in (ep.row(m)["decided"] or {}).get("joiners", [])
            }
            if len(counts) > 1:
                self.fail("Inv_VirtualSynchrony", f"installed members delivered {counts}")


def read_trace(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            ev = json.loads(text)
        except json.JSONDecodeError as e:
            raise TraceError(i, "Parse", f"not a JSON object: {e}") from None
        if not isinstance(ev, dict) or "ev" not in ev:
            raise TraceError(i, "Parse", "a trace record is a JSON object with an `ev` field")
        yield i, ev


def check(lines: Iterable[str]) -> Checker:
    """Replay a trace (JSON lines, one or more runs); raise `TraceError` at the first step the
    spec does not allow. Returns the checker, whose `actions` counts the spec actions taken."""
    c = Checker()
    for i, ev in read_trace(lines):
        c.line = i
        try:
            c.feed(ev)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise TraceError(i, "Parse", f"a malformed {ev['ev']!r} record ({e!r})") from None
    return c


def main(argv: list[str] | None = None) -> int:
    """`python -m smr.sim.trace_check FILE...`: validate traces written by `smr sim --trace`."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m smr.sim.trace_check TRACE.jsonl ...", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            try:
                c = check(f)
            except TraceError as e:
                failed += 1
                print(f"{path}: REJECTED {e}")
                continue
        taken = sum(c.actions.values())
        print(f"{path}: ok, {c.runs} runs, {taken} spec actions")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
