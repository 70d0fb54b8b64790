"""The nemesis's plan: which fault, on whom, for how long, in what order.

This module owns the schedule of a chaos run, and only that: a pure function of the seed and the
options (`plan`), so that the one command line a report prints reproduces the same faults in the
same order. Nothing here touches a process or a clock; `smr.chaos.nemesis` carries the steps out.

A step holds its fault for `hold_s`, then heals it; the run waits until the cluster is whole again
(the time that takes is measured, not planned) and stays quiet for `quiet_s` before the next step.
The steps run one at a time, so at most one fault is in force: a majority is always meant to be
reachable once a fault heals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KILL = "kill"
PAUSE = "pause"
PARTITION = "partition"
RESTART_ALL = "restart-all"
DISK_FULL = "disk-full"  # a member's file system fills up (smr.chaos.disk)
FSYNC_ERROR = "fsync-error"  # a member's fsyncs fail with EIO (smr.chaos.disk)
FAULTS: tuple[str, ...] = (KILL, PAUSE, PARTITION, RESTART_ALL, DISK_FULL, FSYNC_ERROR)

# partition shapes: one member cut from every other one; a minority cut from the majority (with
# three members the minority is one member, the same cut as `isolate`, reached another way); a
# bridge: the link between two members cut, everyone else still seeing both (not transitive)
ISOLATE = "isolate"
SPLIT = "split"
BRIDGE = "bridge"

WARMUP_S = 2.0  # clients run this long before the first fault
STEPS_MAX = 1000  # a plan never has more steps than this, whatever the duration


@dataclass(frozen=True, slots=True)
class Step:
    """One fault: `kind`; `members` it acts on (for a partition: the side cut off, the rest is the
    other side); how long it is held; how long the run stays quiet after it healed."""

    kind: str
    members: tuple[int, ...]
    hold_s: float
    quiet_s: float
    shape: str = ""  # partitions only: ISOLATE, SPLIT or BRIDGE

    def describe(self) -> str:
        who = ",".join(map(str, self.members))
        if self.kind == PARTITION and self.shape == BRIDGE:
            return f"partition (bridge: {who} cut from each other) for {self.hold_s:.1f} s"
        if self.kind == PARTITION:
            return f"partition ({self.shape} {who}) for {self.hold_s:.1f} s"
        if self.kind == RESTART_ALL:
            return "restart every member at once"
        if self.kind == DISK_FULL:
            return f"fill member {who}'s disk for {self.hold_s:.1f} s"
        if self.kind == FSYNC_ERROR:
            return f"fail member {who}'s fsyncs (EIO) for {self.hold_s:.1f} s"
        return f"{self.kind} member {who} for {self.hold_s:.1f} s"


def parse_faults(text: str) -> tuple[str, ...]:
    """`kill,pause` -> ("kill", "pause"); an unknown name is a ValueError naming the known ones."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for n in names:
        if n not in FAULTS:
            raise ValueError(f"unknown fault {n!r}; known: {', '.join(FAULTS)}")
    if not names:
        raise ValueError(f"no faults named; known: {', '.join(FAULTS)}")
    return names


def plan(
    seed: int,
    *,
    faults: tuple[str, ...],
    members: tuple[int, ...],
    duration_s: float,
    failure_timeout_s: float,
) -> tuple[Step, ...]:
    """The steps of a run of `duration_s` with these `faults` over `members`, from `seed`.

    There are more steps than a run usually gets through (recovery takes time the plan cannot
    know); the run stops taking steps when its duration is up. A pause is held past
    `failure_timeout_s`, so the paused member is removed from the view and has to rejoin.
    """
    assert faults and all(f in FAULTS for f in faults), faults
    assert len(members) >= 3, "a fault on one member needs a majority left"
    assert duration_s > 0 and failure_timeout_s > 0
    rng = random.Random(f"smr-chaos:{seed}")  # str seeds hash the same on every platform
    kinds = sorted(faults)  # the option's order must not change the plan
    steps: list[Step] = []
    budget_s = 0.0
    while budget_s < duration_s and len(steps) < STEPS_MAX:
        kind = rng.choice(kinds)
        quiet_s = round(rng.uniform(1.0, 2.5), 3)
        shape = ""
        if kind in (KILL, DISK_FULL, FSYNC_ERROR):
            who: tuple[int, ...] = (rng.choice(members),)
            hold_s = rng.uniform(0.5, 3.0)
        elif kind == PAUSE:
            who = (rng.choice(members),)
            hold_s = failure_timeout_s * rng.uniform(1.5, 3.0)
        elif kind == PARTITION:
            shape = rng.choice((ISOLATE, SPLIT, BRIDGE))
            minority_max = (len(members) - 1) // 2
            size = 2 if shape == BRIDGE else 1 if shape == ISOLATE else rng.randint(1, minority_max)
            who = tuple(sorted(rng.sample(members, size)))
            hold_s = failure_timeout_s * rng.uniform(1.5, 4.0)
        else:
            who = members
            hold_s = 0.0
        step = Step(kind, who, round(hold_s, 3), quiet_s, shape)
        steps.append(step)
        budget_s += step.hold_s + step.quiet_s
    return tuple(steps)
