"""Group layout: how a view's members are divided into subgroups and shards.

This module owns allocation, a deterministic function of the view that every member computes
identically. A group hosts one subgroup per replicated type; each subgroup is split into shards;
each shard is its own ordered stream with its own members, senders and delivery mode.

Policies, per subgroup:
* even shards: `shards` shards drawn from the view, sizes as equal as possible, each at least
  `min_size` and at most `max_size` (flexible shards: any size in between; members past
  `shards * max_size` are not in the subgroup);
* explicit shards: `members` lists the member ids of each shard; absent members are dropped, and a
  shard left with fewer than `min_size` members cannot be provisioned.
Designated senders per shard (`senders`, default every member), and a delivery mode per shard
(`ordered`, `durable` or `raw`).

A layout the view cannot provision raises `LayoutError` with a message saying what is missing
(and, once views change, that blocks the view).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smr.core.errors import LayoutError

MODES = ("ordered", "durable", "raw")


@dataclass(frozen=True, slots=True)
class SubgroupSpec:
    """What the user declares for one replicated type."""

    name: str
    shards: int = 1
    min_size: int = 1
    max_size: int | None = None
    members: tuple[tuple[int, ...], ...] | None = None  # explicit member ids per shard
    senders: tuple[tuple[int, ...] | None, ...] | None = None  # designated senders per shard
    mode: str | tuple[str, ...] = "ordered"  # one mode, or one per shard

    def __post_init__(self) -> None:
        shard_count = len(self.members) if self.members is not None else self.shards
        if self.members is not None and self.shards not in (1, len(self.members)):
            raise LayoutError(
                f"subgroup {self.name}: shards={self.shards} but "
                f"{len(self.members)} explicit member lists"
            )
        if shard_count < 1:
            raise LayoutError(f"subgroup {self.name}: needs at least one shard")
        if self.min_size < 1:
            raise LayoutError(f"subgroup {self.name}: min_size must be at least 1")
        if self.max_size is not None and self.max_size < self.min_size:
            raise LayoutError(
                f"subgroup {self.name}: max_size {self.max_size} < min_size {self.min_size}"
            )
        modes = (self.mode,) * shard_count if isinstance(self.mode, str) else self.mode
        if len(modes) != shard_count:
            raise LayoutError(f"subgroup {self.name}: {len(modes)} modes for {shard_count} shards")
        for m in modes:
            if m not in MODES:
                raise LayoutError(
                    f"subgroup {self.name}: unknown mode {m!r}; choose from {', '.join(MODES)}"
                )
        if self.senders is not None and len(self.senders) != shard_count:
            raise LayoutError(
                f"subgroup {self.name}: {len(self.senders)} sender lists for {shard_count} shards"
            )
        if self.members is not None:
            for i, shard in enumerate(self.members):
                if len(set(shard)) != len(shard):
                    raise LayoutError(f"subgroup {self.name} shard {i}: a member is listed twice")

    @property
    def shard_count(self) -> int:
        return len(self.members) if self.members is not None else self.shards

    def mode_of(self, shard: int) -> str:
        return self.mode if isinstance(self.mode, str) else self.mode[shard]


@dataclass(frozen=True, slots=True)
class Shard:
    """One provisioned shard in a view: its global index, members and senders in rank order."""

    index: int  # global, over every subgroup's shards in declaration order
    subgroup: int
    subgroup_name: str
    shard: int  # within the subgroup
    members: tuple[int, ...]
    senders: tuple[int, ...]
    mode: str


def allocate(view_members: Sequence[int], specs: Sequence[SubgroupSpec]) -> tuple[Shard, ...]:
    """Provision every subgroup's shards from the view's members, in view (rank) order."""
    view = tuple(view_members)
    if len(set(view)) != len(view):
        raise LayoutError(f"the view lists a member twice: {view}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise LayoutError(f"two subgroups share a name: {names}")
    shards: list[Shard] = []
    for sg, spec in enumerate(specs):
        if spec.members is not None:
            groups: list[tuple[int, ...]] = [
                tuple(m for m in explicit if m in view) for explicit in spec.members
            ]
            for i, (g, explicit) in enumerate(zip(groups, spec.members, strict=True)):
                if len(g) < spec.min_size:
                    missing = sorted(set(explicit) - set(view))
                    raise LayoutError(
                        f"subgroup {spec.name} shard {i} needs {spec.min_size} members but only "
                        f"{len(g)} of {list(explicit)} are in the view (missing {missing})"
                    )
        else:
            groups = _even(view, spec)
        for i, members in enumerate(groups):
            senders = members
            designated = spec.senders[i] if spec.senders is not None else None
            if designated is not None:
                senders = tuple(m for m in members if m in designated)
                if not senders:
                    raise LayoutError(
                        f"subgroup {spec.name} shard {i}: none of its designated senders "
                        f"{list(designated)} is a member of the shard {list(members)}"
                    )
            shards.append(Shard(len(shards), sg, spec.name, i, members, senders, spec.mode_of(i)))
    return tuple(shards)


def _even(view: tuple[int, ...], spec: SubgroupSpec) -> list[tuple[int, ...]]:
    n = spec.shards
    need = n * spec.min_size
    if len(view) < need:
        raise LayoutError(
            f"subgroup {spec.name} needs {n} shard(s) of at least {spec.min_size} member(s) "
            f"({need} members) but the view has {len(view)}"
        )
    usable = len(view) if spec.max_size is None else min(len(view), n * spec.max_size)
    base, extra = divmod(usable, n)
    groups = []
    start = 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        groups.append(view[start : start + size])
        start += size
    return groups
