"""The bench watcher process: `python -m smr.bench.watcher SPEC_JSON` watches the benchmark's
key (smr: shard 0 of the BlobLog; etcd: its one key) and measures every change it is told of.

Started before a writer workload whose payloads begin with the writer's `time.perf_counter_ns`
at submission (`harness.drive(..., stamp=True)`; the clock is CLOCK_MONOTONIC, the same in
every process of the host), it prints `ready` once its watch is in place, then takes events
until its standard input says `stop N` (the writer completed N writes), after which it waits up
to `drain_s` for the rest and prints one JSON line: the events received, the rate at which it
received those the writer submitted in its measured interval, the latency from each write's
submission to the event's arrival (its percentiles, as `stats.summarize` computes them), and
whether the watch skipped or repeated any version (smr versions, etcd revisions: both must
arrive strictly increasing, etcd's without a gap as the key is the only one written).

SPEC_JSON has `target` ({"system": "smr", "config_path": ...} or {"system": "etcd",
"endpoint": ...}), `warmup_s` (the writes submitted that long after the first are measured) and
optionally `drain_s`. Both watches start from now.
ZooKeeper is not here: its watches are one-shot triggers that name the znode, not the change,
so a watcher cannot be told of every write.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator

from smr.bench.harness import STAMP
from smr.bench.stats import summarize

DRAIN_S = 10.0


def smr_events(config_path: str) -> tuple[Iterator[tuple[int, bytes]], Callable[[], None]]:
    """(version, payload) of every append to shard 0 of the cluster's BlobLog from now on: from
    the version the member the client reached has applied (an earlier run's writes may be more
    than a member's watch history keeps)."""
    import smr
    from smr.statemachines import BlobLog

    client = smr.connect(config_path)
    now = [s["version"] for s in client.status()["shards"] if (s["subgroup"], s["shard"]) == (0, 0)]
    watch = client.subgroup(BlobLog).watch(from_version=now[0] if now else 0)

    def events() -> Iterator[tuple[int, bytes]]:
        for event in watch:
            if event.operation == "append":
                yield event.version, event.args["data"]

    def close() -> None:
        watch.close()
        client.close()

    return events(), close


def etcd_events(endpoint: str) -> tuple[Iterator[tuple[int, bytes]], Callable[[], None]]:
    """(mod revision, value) of every put of the benchmark's key from now on, over etcd's
    gRPC Watch stream."""
    import queue

    from smr.bench import etcd_ref

    stub = etcd_ref.Stub(endpoint)
    m = etcd_ref.messages()
    requests: queue.SimpleQueue = queue.SimpleQueue()
    requests.put(m["WatchRequest"](create_request=m["WatchCreateRequest"](key=etcd_ref.KEY)))
    stop = object()

    def outgoing() -> Iterator:
        while (r := requests.get()) is not stop:
            yield r

    call = stub.channel.stream_stream(
        "/etcdserverpb.Watch/Watch",
        request_serializer=m["WatchRequest"].SerializeToString,
        response_deserializer=m["WatchResponse"].FromString,
    )(outgoing())
    created = next(call)  # the watch is in place (from the next revision on) once etcd says so
    if not created.created:
        raise RuntimeError(f"etcd did not create the watch: {created}")

    def events() -> Iterator[tuple[int, bytes]]:
        import grpc

        try:
            for response in call:
                if response.canceled:
                    raise RuntimeError(f"etcd cancelled the watch: {response.cancel_reason}")
                for e in response.events:
                    yield e.kv.mod_revision, e.kv.value
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise

    def close() -> None:
        requests.put(stop)
        call.cancel()
        stub.close()

    return events(), close


def open_events(target: dict) -> tuple[Iterator[tuple[int, bytes]], Callable[[], None]]:
    if target.get("system") == "smr":
        return smr_events(target["config_path"])
    if target.get("system") == "etcd":
        return etcd_events(target["endpoint"])
    raise ValueError(f"no watch benchmark for {target.get('system')!r}: smr or etcd")


def run(spec: dict, commands: Iterator[str], out: Callable[[str], None]) -> dict:
    """Watch until `commands` yields `stop N` and N stamped events arrived (or `drain_s`
    passed after it); `out("ready")` once the watch is in place."""
    events, close = open_events(spec["target"])
    warmup_ns = int(float(spec.get("warmup_s", 0.5)) * 1e9)
    drain_s = float(spec.get("drain_s", DRAIN_S))
    clock = time.perf_counter_ns
    # writes stamped before the watcher started are an earlier run's, not this run's
    started_ns = clock()
    arrivals: list[tuple[int, int]] = []  # (stamp, arrival) of every stamped event
    state = {"expected": None, "deadline": None}
    versions = {"last": 0, "skips": 0, "repeats": 0, "events": 0}
    contiguous = spec["target"].get("system") == "etcd"

    def control() -> None:
        for line in commands:
            words = line.split()
            if words[:1] == ["stop"]:
                state["expected"] = int(words[1]) if len(words) > 1 else 0
                state["deadline"] = time.monotonic() + drain_s
                break
        else:
            state["expected"] = 0
            state["deadline"] = time.monotonic()

    def stopper() -> None:
        while state["deadline"] is None or (
            time.monotonic() < state["deadline"] and len(arrivals) < (state["expected"] or 0)
        ):
            time.sleep(0.02)
        close()

    iterator = iter(events)
    try:
        out("ready")
        threading.Thread(target=control, daemon=True).start()
        threading.Thread(target=stopper, daemon=True).start()
        for version, payload in iterator:
            now = clock()
            versions["events"] += 1
            if version <= versions["last"]:
                versions["repeats"] += 1
            elif contiguous and versions["last"] and version != versions["last"] + 1:
                versions["skips"] += 1
            versions["last"] = max(versions["last"], version)
            if len(payload) >= STAMP.size:
                (stamp,) = STAMP.unpack_from(payload)
                if started_ns <= stamp <= now:
                    arrivals.append((stamp, now))
    finally:
        close()
    if not arrivals:
        raise RuntimeError("the watcher received no stamped event")
    start_ns = min(s for s, _ in arrivals) + warmup_ns
    measured = [(s, a) for s, a in arrivals if s >= start_ns]
    if not measured:
        raise RuntimeError("no watched write was submitted after the warm-up; raise duration_s")
    elapsed_ns = max(a for _, a in measured) - min(a for _, a in measured)
    result = summarize([a - s for s, a in measured], max(1, elapsed_ns), 0)
    result.update(
        events_total=versions["events"],
        stamped_total=len(arrivals),
        expected_total=state["expected"],
        repeats=versions["repeats"],
        skips=versions["skips"],
    )
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m smr.bench.watcher SPEC_JSON", file=sys.stderr)
        return 2

    def out(line: str) -> None:
        print(line, flush=True)

    result = run(json.loads(argv[0]), iter(sys.stdin.readline, ""), out)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
