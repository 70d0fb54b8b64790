"""`smr bench core`: messages per second through one replica's receive-and-deliver path.

Setup: a 3-member shard in `ordered` mode whose senders are members 2 and 3; member 1 only
receives. A recording run drives all three replicas in process (each sender submits its whole
load at once, so the window fills and every push carries a batch of slots). Every one-sided write
member 1 received is recorded in order; then a fresh member 1 is fed exactly those writes and
timed: applying each write to its table, evaluating the predicates (receive, stability, delivery),
and producing its `Ready` (deliveries and pushes). That is the path a real member runs per input,
minus the transport.
"""

from __future__ import annotations

import json
import platform
import time

import click

from smr.core.layout import SubgroupSpec
from smr.core.multicast import MulticastConfig
from smr.core.pending import native_wanted
from smr.core.replica import CoreConfig, Replica

LAYOUT = [SubgroupSpec("bench", mode="ordered", senders=((2, 3),))]
MEMBERS = (1, 2, 3)


def _replicas(config: CoreConfig) -> dict[int, Replica]:
    return {m: Replica(m, MEMBERS, layout=LAYOUT, config=config) for m in MEMBERS}


def record(messages: int, payload_bytes: int, config: CoreConfig) -> list[tuple[int, int, bytes]]:
    """Run the whole group once; return the writes member 1 received, in order."""
    rs = _replicas(config)
    payload = bytes(payload_bytes)
    for m in (2, 3):
        for _ in range(messages // 2):
            rs[m].submit(0, 0, payload)
    inbox: list[tuple[int, int, bytes]] = []
    busy = True
    while busy:
        busy = False
        for m, r in rs.items():
            if not r.has_ready():
                continue
            busy = True
            ready = r.ready()
            r.advance(ready)
            for push in ready.writes:
                for t in push.targets:
                    if t == 1:
                        inbox.append((m, push.offset, push.data))
                    rs[t].on_write(m, push.offset, push.data)
    return inbox


def replay(inbox: list[tuple[int, int, bytes]], config: CoreConfig) -> tuple[int, float]:
    r = Replica(1, MEMBERS, layout=LAYOUT, config=config)
    delivered = 0
    on_write, ready, advance = r.on_write, r.ready, r.advance
    start = time.perf_counter()
    for source, offset, data in inbox:
        on_write(source, offset, data)
        rd = ready()
        delivered += len(rd.deliveries)
        advance(rd)
    return delivered, time.perf_counter() - start


@click.command("core")
@click.option("--messages", default=200_000, show_default=True, help="Messages multicast.")
@click.option("--payload-bytes", default=100, show_default=True)
@click.option("--window", default=256, show_default=True, help="Send window (messages).")
@click.option("--repeat", default=3, show_default=True, help="Timed replays; the best is kept.")
@click.option(
    "--engine",
    type=click.Choice(["auto", "native", "python", "both"]),
    default="both",
    show_default=True,
    help="The streams' receive side: native (smr._native), the pure-Python reference, auto "
    "(native unless SMR_NATIVE=0), or both, side by side in one run.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (keyed by engine for both)."
)
def bench_core(
    messages: int, payload_bytes: int, window: int, repeat: int, engine: str, as_json: bool
) -> None:
    """Messages/s through one replica's receive-and-deliver path (3-member shard, batching on)."""
    engines = ["python", "native"] if engine == "both" else [engine]
    results = [_run(messages, payload_bytes, window, repeat, e) for e in engines]
    if as_json:
        keyed = {r["engine"]: r for r in results}
        click.echo(json.dumps(keyed if engine == "both" else results[0]))
        return
    click.echo(f"receive-and-deliver at one member of a 3-member shard, {payload_bytes} B payloads")
    for result in results:
        click.echo(
            f"  {result['engine']:>6}: {result['messages']} messages in {result['seconds']:.3f} s: "
            f"{result['messages_per_s']:,} messages/s"
        )
    if len(results) == 2:
        ratio = results[1]["messages_per_s"] / results[0]["messages_per_s"]
        click.echo(f"  native / python: {ratio:.2f}")
    result = results[0]
    click.echo(
        f"  {result['writes_applied']} one-sided writes applied, {result['messages_per_write']} "
        "messages per write (batching)"
    )


def _run(messages: int, payload_bytes: int, window: int, repeat: int, engine: str) -> dict:
    slot = max(256, (payload_bytes + 24 + 7) // 8 * 8)

    def config(engine: str) -> CoreConfig:
        return CoreConfig(
            multicast=MulticastConfig(
                window_max=window, slot_bytes=slot, submit_queue_max=messages, engine=engine
            )
        )

    inbox = record(messages, payload_bytes, config("python"))  # the same writes for either
    runs = [replay(inbox, config(engine)) for _ in range(repeat)]
    delivered, seconds = min(runs, key=lambda x: x[1])
    assert delivered == messages // 2 * 2, (delivered, messages)
    return {
        "engine": "native" if native_wanted(engine) else "python",
        "messages_per_s": round(delivered / seconds),
        "messages": delivered,
        "payload_bytes": payload_bytes,
        "writes_applied": len(inbox),
        "messages_per_write": round(delivered / len(inbox), 2),
        "seconds": round(seconds, 4),
        "window": window,
        "slot_bytes": slot,
        "python": platform.python_version(),
    }
