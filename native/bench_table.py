"""The reference table (smr.core.table.Table) against the native one (smr._native.Table), per
operation of the hot path, on the table layout of `smr bench core` (one shard, 3 members).

    .venv/bin/python native/bench_table.py               # ns per operation, best of 5
    .venv/bin/python native/bench_table.py --core        # + `smr bench core`'s replay on each table
    .venv/bin/python native/bench_table.py --only OP --impl py|native -n N
                                                         # one operation N times (for callgrind)
    .venv/bin/python native/bench_table.py --replay py|native|none --messages M
                                                         # one bench-core replay (for callgrind)

Timings on this machine move by 20-30% from run to run; the instruction counts of
`valgrind --tool=callgrind` (native/README.md) do not.
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any

from smr import _native
from smr.core.layout import SubgroupSpec
from smr.core.replica import CoreConfig, Replica
from smr.core.table import Table

# the layout of `smr bench core` (smr/cli/bench_core.py), without importing the CLI (click)
LAYOUT = [SubgroupSpec("bench", mode="ordered", senders=((2, 3),))]
MEMBERS = (1, 2, 3)
CORE = Replica(1, MEMBERS, layout=LAYOUT, config=CoreConfig())
L = CORE.table.layout


def counters() -> tuple[str, ...]:
    return tuple(n for n in L.placed if n.startswith("s0_") and n != "s0_slots")


def tables(impl: str) -> tuple[Any, Any]:
    """(me = member 1 in strict mode, a peer = member 2) built from the same layout."""
    cls = Table if impl == "py" else _native.Table
    return cls(L, MEMBERS, 1, strict=True), cls(L, MEMBERS, 2)


def ops(impl: str) -> dict[str, tuple[str, dict[str, Any]]]:
    t, peer = tables(impl)
    names = counters()
    for k, n in enumerate(names):
        if L[n].column.kind.value == "vector":
            peer.vset(n, 0, 5)
        elif L[n].column.kind.value == "counter":
            peer.set(n, 5 + k)
    counters_write = peer.push(names)[0]
    slot_bytes = CoreConfig().multicast.slot_bytes
    slots_write = peer.push_bytes("s0_slots", 0, 10 * slot_bytes)
    i = t.my_row * t.row_words + L["s0_seq"].word
    env = {
        "t": t,
        "names": names,
        "cw": counters_write,
        "sw": slots_write,
        "i": i,
        "words": t.words,
        "sb": 10 * slot_bytes,
        "it": iter(range(1 << 62)),
    }
    return {
        "get": ("t.get(0, 's0_seq')", env),
        "vget": ("t.vget(0, 's0_received', 1)", env),
        "set": ("t.set('s0_seq', next(it))", env),
        "vset": ("t.vset('s0_received', 1, next(it))", env),
        "words[i] read (multicast's way)": ("words[i]", env),
        "words[i] write (multicast's way)": ("words[i] = words[i] + 1", env),
        "push(7 counters)": ("t.push(names)", env),
        "push_bytes(10 slots)": ("t.push_bytes('s0_slots', 0, sb)", env),
        "apply_write(counters, strict)": ("t.apply_write(1, cw.offset, cw.data)", env),
        "apply_write(10 slots, strict)": ("t.apply_write(1, sw.offset, sw.data)", env),
        "_check()": ("t._check()", env),
    }


def bench(number: int) -> None:
    print(f"{'operation':<34} {'python ns':>10} {'native ns':>10} {'ratio':>6}")
    py_ops, nat_ops = ops("py"), ops("native")
    for name in py_ops:
        best = []
        for impl_ops in (py_ops, nat_ops):
            stmt, env = impl_ops[name]
            times = timeit.repeat(stmt, globals=env, number=number, repeat=5)
            best.append(min(times) / number * 1e9)
        print(f"{name:<34} {best[0]:>10.0f} {best[1]:>10.0f} {best[0] / best[1]:>6.2f}")


def bench_core(messages: int) -> None:
    """`smr bench core`'s timed replay (apply each write, evaluate the predicates, produce the
    Ready) with the replica on each table."""
    from smr.cli.bench_core import record, replay
    from smr.core import replica as replica_module
    from smr.core.multicast import MulticastConfig

    # as `smr bench core` configures it
    config = CoreConfig(
        multicast=MulticastConfig(window_max=256, slot_bytes=256, submit_queue_max=messages)
    )
    inbox = record(messages, 100, config)
    for impl, cls in (("python", Table), ("native", _native.Table)):
        replica_module.Table = cls
        try:
            best = min(replay(inbox, config)[1] for _ in range(3))
        finally:
            replica_module.Table = Table
        print(f"bench core replay on the {impl} table: {messages / best:,.0f} messages/s")


def replay_once(impl: str, messages: int, engine: str = "python") -> None:
    """Record on the reference, then (unless impl is "none": the baseline) one replay on the
    chosen table, with the streams' receive side of `engine` (smr.core.pending): for callgrind,
    the difference of two runs is the replay's instructions."""
    from smr.cli.bench_core import record, replay
    from smr.core import replica as replica_module
    from smr.core.multicast import MulticastConfig

    def config(engine: str) -> CoreConfig:
        return CoreConfig(
            multicast=MulticastConfig(
                window_max=256, slot_bytes=256, submit_queue_max=messages, engine=engine
            )
        )

    inbox = record(messages, 100, config("python"))
    if impl != "none":
        replica_module.Table = Table if impl == "py" else _native.Table
        delivered, _ = replay(inbox, config(engine))
        assert delivered == messages, delivered


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only")
    ap.add_argument("--impl", default="native")
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--core", action="store_true")
    ap.add_argument("--replay", choices=["py", "native", "none"])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--engine", choices=["python", "native"], default="python")
    args = ap.parse_args()
    if args.replay:
        replay_once(args.replay, args.messages, args.engine)
        return
    if args.only:
        stmt, env = ops(args.impl)[args.only]
        timeit.Timer(stmt, globals=env).timeit(number=args.n)
        return
    bench(args.n)
    if args.core:
        bench_core(args.messages)


if __name__ == "__main__":
    main()
