"""Block schedules of the RDMC data plane: who sends which block of a large message to whom, when.

This module owns the schedules as pure values (`Schedule`), built by `sequential`, `chain` and
`binomial` for `n >= 2` members (rank 0 is the message's sender, ranks 1.. the receivers in a
rotation of the shard's member list) and `k >= 1` blocks. A schedule is a list of steps; a step
is a set of transfers `(sender rank, receiver rank, block)` in which every member sends at most
one block and receives at most one, and sends only blocks it held before the step began. Every
receiver gets every block exactly once. The tests check these properties for every `n` and `k`.

    sequential  the sender sends every block to receiver 1, then every block to receiver 2, ...:
                k * (n - 1) steps; the sender's link carries everything.
    chain       a pipeline along the ranks, rank r relays block b to r + 1 at step b + r:
                k + n - 2 steps; every member sends each block at most once.
    binomial    the binomial pipeline (Ganesan and Seshadri; Derecho's RDMC): with `n = 2**l`
                the members form an l-dimensional hypercube and at step t every vertex exchanges
                with its neighbour across dimension `t mod l`, the sender injecting block
                `min(t, k - 1)`; a vertex sends the block its neighbour's position in the
                binomial tree of that block calls for. It ends in exactly k + l - 1 steps.
                Otherwise `2**l < n < 2**(l+1)`: the ranks `2**l + i` are twins of the vertices
                `i + 1`, and a twinned vertex is a pair of members that share its hypercube
                traffic (one sends the vertex's block, the other receives the incoming one) and
                forward to each other in the slots left free. Hypercube transfers a pair cannot
                make at their step (its member holding the block is busy) wait for the next.
                It ends in at most k + l + 1 = k + ceil(log2 n) steps (measured for n <= 32;
                the tests check n <= 20), one more than Derecho's closed form, bought with a
                much simpler construction.

There is no global step clock in the data plane: a member sends its transfers in step order, each
as soon as it holds the block (`Schedule.outgoing`). That keeps the relay tree and the per-link
order of the schedule; since a block sent at step t was received at a step before t, and every
member's sends are ordered by step, waiting never deadlocks (induction on the step).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

SCHEDULES = ("binomial", "chain", "sequential")
MEMBERS_MAX = 1 << 10
BLOCKS_MAX = 1 << 20


class Transfer(NamedTuple):
    step: int
    sender: int  # rank
    receiver: int  # rank
    block: int


class Schedule:
    """The transfers of one large message among `members` ranks, `blocks` blocks."""

    __slots__ = ("_in", "_out", "blocks", "members", "name", "steps")

    def __init__(self, name: str, members: int, blocks: int, steps: list[list[Transfer]]):
        self.name = name
        self.members = members
        self.blocks = blocks
        self.steps: tuple[tuple[Transfer, ...], ...] = tuple(tuple(s) for s in steps)
        out: list[list[tuple[int, int]]] = [[] for _ in range(members)]
        inc: list[list[tuple[int, int]]] = [[] for _ in range(members)]
        for step in self.steps:
            for t in step:
                out[t.sender].append((t.block, t.receiver))
                inc[t.receiver].append((t.block, t.sender))
        self._out = tuple(tuple(o) for o in out)
        self._in = tuple(tuple(i) for i in inc)

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    def outgoing(self, rank: int) -> tuple[tuple[int, int], ...]:
        """(block, receiver rank) that `rank` sends, in step order."""
        return self._out[rank]

    def incoming(self, rank: int) -> tuple[tuple[int, int], ...]:
        """(block, sender rank) that `rank` receives, in step order."""
        return self._in[rank]

    def send_at(self, rank: int, step: int) -> Transfer | None:
        return next((t for t in self.steps[step] if t.sender == rank), None)

    def receive_at(self, rank: int, step: int) -> Transfer | None:
        return next((t for t in self.steps[step] if t.receiver == rank), None)


def _check(members: int, blocks: int) -> None:
    if not 2 <= members <= MEMBERS_MAX:
        raise ValueError(f"a schedule needs 2..{MEMBERS_MAX} members, not {members}")
    if not 1 <= blocks <= BLOCKS_MAX:
        raise ValueError(f"a schedule needs 1..{BLOCKS_MAX} blocks, not {blocks}")


def sequential(members: int, blocks: int) -> Schedule:
    _check(members, blocks)
    steps = [
        [Transfer(r * blocks + b - blocks, 0, r, b)]
        for r in range(1, members)
        for b in range(blocks)
    ]
    return Schedule("sequential", members, blocks, steps)


def chain(members: int, blocks: int) -> Schedule:
    _check(members, blocks)
    steps = []
    for t in range(blocks + members - 2):
        steps.append(
            [Transfer(t, r, r + 1, t - r) for r in range(members - 1) if 0 <= t - r < blocks]
        )
    return Schedule("chain", members, blocks, steps)


def _hypercube_send(vertex: int, step: int, dims: int, blocks: int) -> tuple[int, int] | None:
    """The (neighbour, block) a vertex of the binomial pipeline sends at `step`, if any.

    The neighbour across dimension `step mod dims`, its bits rotated so that dimension comes
    first, tells where it sits in the binomial trees of the blocks in flight: the lowest set bit
    above the first names how many steps ago the block it lacks entered the hypercube."""
    d = step % dims
    neighbour = vertex ^ (1 << d)
    if neighbour == 0:
        return None  # nobody sends to the sender
    mask = (1 << dims) - 1
    rotated = ((neighbour | (neighbour << dims)) >> d) & mask
    if not rotated & 1:
        return (neighbour, step - dims) if step >= dims else None
    for i in range(1, dims):
        if rotated & (1 << i):
            return (neighbour, min(step + i - dims, blocks - 1)) if step + i >= dims else None
    return neighbour, min(step, blocks - 1)


def binomial(members: int, blocks: int) -> Schedule:
    _check(members, blocks)
    dims = members.bit_length() - 1
    cube = 1 << dims
    # the members of each vertex: itself, and its twin when there are more members than vertices
    vertex_of = list(range(cube)) + [i + 1 for i in range(members - cube)]
    group: list[list[int]] = [[v] for v in range(cube)]
    for rank in range(cube, members):
        group[vertex_of[rank]].append(rank)
    have = [bytearray(blocks) for _ in range(members)]
    have[0][:] = b"\x01" * blocks
    order: list[list[int]] = [[] for _ in range(members)]  # blocks in the order received
    forwarded = [0] * members  # position in the twin's `order` forwarded to me so far
    counts = [blocks] + [0] * (members - 1)
    backlog: list[tuple[int, int, int]] = []  # (to vertex, from vertex, block)
    steps: list[list[Transfer]] = []
    limit = 4 * (blocks + members) + 64
    while min(counts) < blocks:
        t = len(steps)
        assert t < limit, f"binomial schedule for {members} members, {blocks} blocks stalls"
        if t < blocks + dims - 1:
            for v in range(cube):
                x = _hypercube_send(v, t, dims, blocks)
                if x is not None:
                    backlog.append((x[0], v, x[1]))
        busy_send: set[int] = set()
        busy_recv: set[int] = set()
        planned: list[tuple[int, int, int, int]] = []
        waiting: list[tuple[int, int, int]] = []
        for to_v, from_v, b in backlog:
            if any(have[m][b] for m in group[to_v]):
                continue  # a twin got it meanwhile; the pair forwards it between themselves
            holders = [m for m in group[from_v] if have[m][b] and m not in busy_send]
            if not holders:
                waiting.append((to_v, from_v, b))
                continue
            src = min(holders, key=lambda m: (counts[m], m))
            busy_send.add(src)
            planned.append((src, to_v, from_v, b))
        transfers: list[Transfer] = []
        for src, to_v, from_v, b in planned:
            free = [m for m in group[to_v] if m not in busy_recv]
            if not free:
                busy_send.discard(src)
                waiting.append((to_v, from_v, b))
                continue
            # the twin that is not sending receives, so each member of a pair does one of each
            dst = min(free, key=lambda m: (m in busy_send, counts[m], m))
            busy_recv.add(dst)
            transfers.append(Transfer(t, src, dst, b))
        backlog = waiting
        for pair in group:
            if len(pair) != 2:
                continue
            for a, c in (pair, pair[::-1]):
                if a in busy_send or c in busy_recv:
                    continue
                seen = order[a]
                i = forwarded[c]
                while i < len(seen) and have[c][seen[i]]:
                    i += 1
                forwarded[c] = i
                if i < len(seen):
                    transfers.append(Transfer(t, a, c, seen[i]))
                    busy_send.add(a)
                    busy_recv.add(c)
                    break
        for tr in transfers:
            assert not have[tr.receiver][tr.block], "a block sent twice to one member"
            have[tr.receiver][tr.block] = 1
            order[tr.receiver].append(tr.block)
            counts[tr.receiver] += 1
        steps.append(transfers)
    return Schedule("binomial", members, blocks, steps)


@lru_cache(maxsize=64)
def schedule(name: str, members: int, blocks: int) -> Schedule:
    """The named schedule, cached: every large message of a shard reuses it."""
    if name == "binomial":
        return binomial(members, blocks)
    if name == "chain":
        return chain(members, blocks)
    if name == "sequential":
        return sequential(members, blocks)
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def step_bound(name: str, members: int, blocks: int) -> int:
    """The number of steps each schedule takes (binomial: at most, when n is no power of 2)."""
    if name == "sequential":
        return blocks * (members - 1)
    if name == "chain":
        return blocks + members - 2
    dims = (members - 1).bit_length()  # ceil(log2 n)
    return blocks + dims - 1 if members & (members - 1) == 0 else blocks + dims
