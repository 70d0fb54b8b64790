"""`smr bench rdmc`: the RDMC data plane measured in process, without a network.

Two parts. The schedules (smr.core.rdmc), counted: for each schedule, message size and group
size, the steps a transfer takes and the bytes the sender and the busiest member send (a step
is one block time on every link at once, so steps x block time is the transfer time when links
are the bottleneck). The core, timed: a group of replicas in one process multicasts large
messages through the real data plane (blocks framed, placed in preallocated buffers, relayed by
the schedule, completion through the table), and every frame is handed over in memory; the
figure is blocks/s and bytes/s of core work summed over all members, from which the per-block
overhead `o` follows. With a link of `link_bytes_per_s`, a message of S bytes in blocks of B
takes about (S / B + log2 n - 1) * (o + B / link) seconds along the binomial pipeline, which is
least at B = sqrt(S * o * link / (log2 n - 1)); that is how the default `block_bytes` is chosen.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque

import click

from smr.core.layout import SubgroupSpec
from smr.core.multicast import MulticastConfig
from smr.core.rdmc import SCHEDULES, schedule
from smr.core.replica import CoreConfig, Replica

MIB = 1 << 20
MODEL_BLOCKS = (16 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20)


def schedule_figures(sizes: list[int], members: list[int], block_bytes: int) -> list[dict]:
    rows = []
    for size in sizes:
        blocks = -(-size // block_bytes)
        for n in members:
            for name in SCHEDULES:
                s = schedule(name, n, blocks)
                sent = [len(s.outgoing(r)) * block_bytes for r in range(n)]
                rows.append(
                    {
                        "schedule": name,
                        "message_bytes": size,
                        "members": n,
                        "blocks": blocks,
                        "steps": s.total_steps,
                        "sender_bytes": sent[0],
                        "busiest_bytes": max(sent),
                        "total_bytes": sum(sent),
                    }
                )
    return rows


def model_s(size: int, members: int, block: int, overhead_s: float, link: float) -> float:
    """Binomial pipeline time: steps x (per-block overhead + block time on the link)."""
    steps = -(-size // block) + max(math.ceil(math.log2(members)) - 1, 0)
    return steps * (overhead_s + block / link)


def run_core(
    members: int, name: str, message_bytes: int, messages: int, block_bytes: int
) -> dict[str, float]:
    """Multicast `messages` large messages from member 1 through the real core, in memory."""
    ids = list(range(1, members + 1))
    config = CoreConfig(
        multicast=MulticastConfig(
            block_bytes=block_bytes, schedule=name, large_bytes_max=max(message_bytes, 1 << 20)
        )
    )
    layout = [SubgroupSpec("bench", senders=((1,),))]
    rs = {m: Replica(m, ids, layout=layout, config=config) for m in ids}
    payload = bytes(range(256)) * (message_bytes // 256) + bytes(message_bytes % 256)
    frames: deque = deque()
    blocks = delivered = 0
    schedule(name, members, -(-message_bytes // block_bytes))  # built once per size; not timed
    start = time.process_time()
    for _ in range(messages):
        rs[1].submit(0, 0, payload)
    busy = True
    while busy:
        busy = False
        for m, r in rs.items():
            if r.has_ready():
                busy = True
                ready = r.ready()
                r.advance(ready)
                delivered += len(ready.deliveries)
                for push in ready.writes:
                    for t in push.targets:
                        frames.append((t, True, m, push.offset, push.data))
                for send in ready.sends:
                    frames.append((send.target, False, m, 0, send.payload))
        while frames:
            busy = True
            t, write, m, offset, data = frames.popleft()
            if write:
                rs[t].on_write(m, offset, data)
            else:
                blocks += 1
                rs[t].on_data(m, data)
    seconds = time.process_time() - start
    assert delivered == messages * members, (delivered, messages, members)
    return {
        "members": members,
        "schedule": name,
        "block_bytes": block_bytes,
        "message_bytes": message_bytes,
        "messages": messages,
        "blocks": blocks,
        "seconds": round(seconds, 4),
        "blocks_per_s": round(blocks / seconds),
        "block_mb_per_s": round(blocks * block_bytes / seconds / 1e6, 1),
    }


@click.command("rdmc")
@click.option("--members", default="3-8", show_default=True, help="Group sizes, a range a-b.")
@click.option("--block-bytes", default=MulticastConfig().block_bytes, show_default=True)
@click.option("--core-members", default=4, show_default=True, help="Group size of the core run.")
@click.option(
    "--core-blocks",
    default="4096,16384,65536,262144,1048576",
    show_default=True,
    help="Block sizes of the core run (two or more split the per-block overhead from the "
    "per-byte cost).",
)
@click.option("--core-message-bytes", default=4 * MIB, show_default=True)
@click.option("--core-messages", default=4, show_default=True)
@click.option("--link-gbit", default=10.0, show_default=True, help="Link speed for the model.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_rdmc(
    members: str,
    block_bytes: int,
    core_members: int,
    core_blocks: str,
    core_message_bytes: int,
    core_messages: int,
    link_gbit: float,
    as_json: bool,
) -> None:
    """RDMC schedules (steps, bytes per member) and the core's per-block cost."""
    try:
        lo, hi = (int(x) for x in members.split("-"))
        group = list(range(lo, hi + 1))
        assert 2 <= lo <= hi
        block_list = sorted({int(x) for x in core_blocks.split(",")})
        assert block_list[0] > 0
    except (ValueError, AssertionError):
        raise click.BadParameter(
            "--members a-b with 2 <= a <= b, --core-blocks n,n,... (positive byte counts)"
        ) from None
    sched = schedule_figures([MIB, 16 * MIB], group, block_bytes)
    core = [
        run_core(core_members, "binomial", core_message_bytes, core_messages, b) for b in block_list
    ]
    # per-block overhead: the fixed part of a block's cost, from the two smallest block sizes;
    # with one size the two parts cannot be told apart: the whole block time is the overhead (an
    # upper bound) and the per-byte cost is unknown
    per_byte: float | None
    if len(core) >= 2:
        a, b = core[0], core[1]
        ta, tb = 1 / a["blocks_per_s"], 1 / b["blocks_per_s"]
        per_byte = max((tb - ta) / (b["block_bytes"] - a["block_bytes"]), 0.0)
        overhead_s = max(ta - per_byte * a["block_bytes"], 0.0)
    else:
        per_byte, overhead_s = None, 1 / core[0]["blocks_per_s"]
    link = link_gbit * 1e9 / 8
    model = []
    for size in (MIB, 16 * MIB):
        for n in (4, 8):
            steps_extra = max(math.log2(n) - 1, 1)
            best = math.sqrt(size * overhead_s * link / steps_extra)
            at = {b: round(model_s(size, n, b, overhead_s, link) * 1e3, 2) for b in MODEL_BLOCKS}
            model.append(
                {"message_bytes": size, "members": n, "best_block_bytes": round(best), "ms": at}
            )
    result = {
        "schedules": sched,
        "core": core,
        "per_block_overhead_us": round(overhead_s * 1e6, 2),
        "per_byte_ns": None if per_byte is None else round(per_byte * 1e9, 3),
        "model_link_gbit": link_gbit,
        "model": model,
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"schedules, blocks of {block_bytes} B (steps; MiB sent by sender / busiest / all)")
    for r in sched:
        click.echo(
            f"  {r['message_bytes'] // MIB:>2} MiB n={r['members']} {r['schedule']:<10} "
            f"{r['blocks']:>4} blocks {r['steps']:>5} steps  "
            f"{r['sender_bytes'] / MIB:7.1f} / {r['busiest_bytes'] / MIB:6.1f} / "
            f"{r['total_bytes'] / MIB:7.1f}"
        )
    click.echo(
        f"core, {core_members} members, binomial, {core_messages} x "
        f"{core_message_bytes / MIB:g} MiB messages"
    )
    for r in core:
        click.echo(
            f"  block {r['block_bytes']:>8} B: {r['blocks']:>6} blocks in {r['seconds']:.3f} s, "
            f"{r['blocks_per_s']:,} blocks/s, {r['block_mb_per_s']} MB/s"
        )
    if per_byte is None:
        click.echo(
            f"per-block time {result['per_block_overhead_us']} us (one block size: the overhead "
            "is at most this; give two sizes to --core-blocks to split it from the per-byte cost)"
        )
    else:
        click.echo(
            f"per-block overhead {result['per_block_overhead_us']} us, "
            f"{result['per_byte_ns']} ns per byte"
        )
    for m in model:
        click.echo(
            f"  model at {link_gbit:g} Gbit/s: {m['message_bytes'] // MIB} MiB to "
            f"{m['members']} members, best block ~{m['best_block_bytes']:,} B; ms by block: "
            + ", ".join(f"{b >> 10} KiB {t}" for b, t in m["ms"].items())
        )
