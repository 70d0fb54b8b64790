"""Runs the cluster benchmarks: starts each system, runs the bench client process once per
(mode, payload, window), and gathers `{system: {mode: {payload: figures}}}`; measures smr's
failover; formats the side-by-side table and draws the plot.

Every figure dict has `ops_per_s`, `mib_per_s`, `p50_ms`, `p99_ms`, `max_ms` (under a window
of outstanding commands sized for throughput); the smallest payload's also has `w1_p50_ms`,
the p50 with one command outstanding (pysyncobj: in its unbatched configuration)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from smr.bench import etcd_ref, frames, pysyncobj_ref, zookeeper_ref
from smr.bench.stats import MIB, summarize

# "smr-tls": smr over tcp with mutual TLS on every link and client connection (`[tls]`, a local
# CA made for the run), to set beside smr over tcp without it
# "multipaxos": the built-in classic Multi-Paxos (`protocol = "multipaxos"`,
# smr.runtime.paxos_node) on the same transports, client port, state machine and log files
SYSTEMS = ("smr", "smr-tls", "multipaxos", "pysyncobj", "raw", "etcd", "zookeeper")
# systems whose group size `--members` sets (the others run 3 members)
SIZED_SYSTEMS = ("smr", "smr-tls", "multipaxos")
SUBMITS = ("many", "one")  # how the smr bench client refills its window: submit_many, or submit
# The external baselines: their own servers (Debian packages) and client libraries; one mode,
# their default durable one (each fsyncs before it answers).
BASELINES = {"etcd": etcd_ref, "zookeeper": zookeeper_ref}
BASELINE_MODE = "durable"
# A figure whose client process was this busy (CPU seconds per second, every thread) is bounded
# by the client, not by the system: one Python process, the GIL.
client_bound_share = 0.85
MODES = ("ordered", "durable")
RAW_MODES = ("tcp", "memcpy")  # the raw reference's "modes": the loopback stream, a copy
SIZES = (100, 1024, 65536, 1048576)
# Outstanding commands in a throughput run (`--window` sets it): pysyncobj batches per 0.1 s
# tick, so it needs thousands outstanding to reach its peak.
window_max = 4096
inflight_bytes_max = 16 << 20  # ... and at most this many payload bytes outstanding


# Progress of a long run: called with one line of text before each step (a workload, a kill),
# or None (the default: quiet). The CLI sets it when stderr is a terminal and --json is off.
progress: Callable[[str], None] | None = None


def _note(text: str) -> None:
    if progress is not None:
        progress(text)


def _warn(text: str) -> None:
    """A line on stderr, on a line of its own when a progress line is showing."""
    print(("\r\033[K" if progress is not None else "") + text, file=sys.stderr)


LEGEND = """\
ops/s, MiB/s       commands answered per second and their payload bytes, one client process
load p50/p99/max   ms from submit to answer with the throughput window of commands outstanding
                   (--window): latency under load, mostly queueing behind the other outstanding
                   commands, not what one command costs
w1 p50             ms from submit to answer with one command outstanding (the smallest payload
                   only): the latency of one command on an idle system
x pysyncobj        ops/s divided by pysyncobj's in the same mode and payload (its batched,
                   default configuration; its w1 p50 is from the unbatched one)
etcd, zookeeper    3 members each in their default durable configuration (fsync before the
                   answer), their own client protocol (gRPC, kazoo), mode "durable" only
% raw tcp          MiB/s as a percentage of the raw reference's: the same client and frames
                   against a loopback TCP echo, the ceiling for one connection
watch              (with --watches) events per second one watcher process received while a
                   writer process wrote with the window outstanding, and in the load columns ms
                   from a write's submission to its event's arrival at the watcher (w1 p50: the
                   same with one write outstanding)
-                  not measured in this run"""


def throughput_window(payload_bytes: int, window: int = window_max) -> int:
    """`window` outstanding commands, fewer for payloads that would exceed inflight_bytes_max."""
    return max(1, min(window, inflight_bytes_max // max(1, payload_bytes)))


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure(
    target: dict,
    payload_bytes: int,
    window: int,
    duration_s: float,
    warmup_s: float,
    pids: dict[int, int] | None = None,
    stamp: bool = False,
) -> dict:
    """One workload, measured by a separate bench client process. With `pids` (member ->
    process), the figures include each member's CPU per command (`member_cpu_us_per_op`, over
    the client's whole run, warm-up included). `stamp`: payloads carry their submission time
    (for `measure_watch`)."""
    mode = f" {target['mode']}" if target.get("mode") else ""
    _note(
        f"{target['system']}{mode}: {payload_bytes} B payloads, {window} outstanding, "
        f"{warmup_s + duration_s:g} s"
    )
    before = {m: process_cpu_s(p) for m, p in (pids or {}).items()}
    spec = {
        "target": target,
        "payload_bytes": payload_bytes,
        "window": window,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "stamp": stamp,
    }
    done = subprocess.run(
        [sys.executable, "-m", "smr.bench.client", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=duration_s + warmup_s + 180,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"bench client failed on {target['system']} {payload_bytes} B:\n{done.stderr[-2000:]}"
        )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if pids:
        ops = max(1, figures.get("completed_total", figures["count"]))
        per_op = {}
        for m, p in pids.items():
            after = process_cpu_s(p)
            if after is not None and before[m] is not None:
                per_op[str(m)] = round((after - before[m]) * 1e6 / ops, 2)
        figures["member_cpu_us_per_op"] = per_op
    return figures


def _workloads(
    target: dict, sizes, duration_s: float, warmup_s: float, window: int, pids=None
) -> dict:
    figures = {}
    for size in sizes:
        figures[str(size)] = measure(
            target, size, throughput_window(size, window), duration_s, warmup_s, pids
        )
    return figures


WATCH_SYSTEMS = ("smr", "etcd")  # ZooKeeper's watches are one-shot: no watcher sees every write
WATCH_START_TIMEOUT_S = 30.0


def measure_watch(
    target: dict, payload_bytes: int, window: int, duration_s: float, warmup_s: float
) -> dict:
    """A watcher process (`smr.bench.watcher`) on the key while a writer process writes
    stamped payloads with `window` outstanding. The figures are the watcher's: events per
    second it received of the writes measured (`ops_per_s`), and ms from a write's submission
    to the event's arrival (`p50_ms`, `p99_ms`, `max_ms`), with the writer's own rate and
    latency beside them (`writes_per_s`, `write_p50_ms`) and what the watch missed or repeated
    (`missed`: writes completed whose events never came, `repeats`, `skips`)."""
    import select

    _note(f"{target['system']} watch: one watcher, {payload_bytes} B writes, {window} outstanding")
    spec = {"target": target, "warmup_s": warmup_s}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "smr.bench.watcher", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None and watcher.stdin is not None
        ready, _, _ = select.select([watcher.stdout], [], [], WATCH_START_TIMEOUT_S)
        line = watcher.stdout.readline() if ready else ""
        if line.strip() != "ready":
            watcher.kill()
            _, err = watcher.communicate(timeout=10)
            raise RuntimeError(f"the {target['system']} watcher did not start:\n{err[-2000:]}")
        writes = measure(target, payload_bytes, window, duration_s, warmup_s, stamp=True)
        try:
            watcher.stdin.write(f"stop {writes['completed_total']}\n")
            watcher.stdin.flush()
        except OSError:
            pass  # it ended already: its status and stderr say why
        out, err = watcher.communicate(timeout=duration_s + warmup_s + 120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    if watcher.returncode != 0:
        raise RuntimeError(f"the {target['system']} watcher failed:\n{err[-2000:]}")
    figures = json.loads(out.strip().splitlines()[-1])
    figures.update(
        mib_per_s=figures["ops_per_s"] * payload_bytes / MIB,
        payload_bytes=payload_bytes,
        window=window,
        writes_per_s=writes["ops_per_s"],
        write_p50_ms=writes["p50_ms"],
        missed=max(0, writes["completed_total"] - figures["stamped_total"]),
    )
    if figures["missed"] or figures["repeats"] or figures["skips"]:
        _warn(
            f"{target['system']} watch: {figures['missed']} writes never seen, "
            f"{figures['repeats']} events repeated, {figures['skips']} revisions skipped"
        )
    return figures


def _add_watch(out: dict, target: dict, sizes, duration_s: float, warmup_s: float, window) -> None:
    size = max(min(sizes), 8)  # a stamp is 8 bytes
    figures = measure_watch(target, size, throughput_window(size, window), duration_s, warmup_s)
    # with one write outstanding: what a change costs to reach a watcher on an idle system
    figures["w1_p50_ms"] = measure_watch(target, size, 1, duration_s, warmup_s)["p50_ms"]
    out["watch"] = {str(size): figures}


def _add_w1(figures: dict, target: dict, sizes, duration_s: float, warmup_s: float) -> None:
    smallest = min(sizes)
    figures[str(smallest)]["w1_p50_ms"] = measure(target, smallest, 1, duration_s, warmup_s)[
        "p50_ms"
    ]


def raw_memcpy(payload_bytes: int, duration_s: float) -> dict:
    """MiB/s of a `bytearray` slice assignment from a `memoryview` (one memcpy per op)."""
    src = memoryview(bytearray(b"\x5a" * payload_bytes))
    dst = bytearray(payload_bytes)
    latencies_ns: list[int] = []
    clock = time.perf_counter_ns
    begin = clock()
    stop = begin + int(duration_s * 1e9)
    now = begin
    while now < stop and len(latencies_ns) < 2_000_000:
        start = now
        dst[:] = src
        now = clock()
        latencies_ns.append(now - start)
    figures = summarize(latencies_ns, now - begin, payload_bytes)
    figures.update(payload_bytes=payload_bytes, window=1)
    return figures


def run_raw(sizes, duration_s: float, warmup_s: float, window: int = window_max) -> dict:
    _note("raw: starting the loopback echo")
    port = frames.free_ports(1)[0]
    server = subprocess.Popen([sys.executable, "-m", "smr.bench.frames", "echo", str(port)])
    try:
        _wait_for_port(port)
        target = {"system": "raw", "port": port}
        tcp = _workloads(target, sizes, duration_s, warmup_s, window)
        _add_w1(tcp, target, sizes, duration_s, warmup_s)
    finally:
        server.kill()
        server.wait()
    memcpy = {str(size): raw_memcpy(size, min(duration_s, 1.0)) for size in sizes}
    return {"tcp": tcp, "memcpy": memcpy}


def _wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            frames.FrameClient("127.0.0.1", port, connect_timeout_s=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# pysyncobj 0.3.17 logs this when a follower is sent entries it has already applied (the leader
# resends under load) and truncates them: a warning of what could happen; the post-run check
# (`Replicas.agree`) says whether it did.
DIVERGED_WARNING = "state machine may have diverged"
DIVERGED_NOTE = (
    "pysyncobj's warning when a follower truncates entries it had already applied (resent "
    "under load), not a divergence: after the run every replica had the same count, bytes and "
    "checksum"
)


def run_pysyncobj(
    modes, sizes, duration_s: float, warmup_s: float, window: int = window_max
) -> dict:
    """Its default (batched) configuration for throughput, the unbatched one for `w1_p50_ms`;
    each on fresh replicas. What the replicas logged is kept under `warnings` per mode."""
    results = {}
    for mode in modes:
        for batched in (True, False):
            _note(f"pysyncobj {mode} {'batched' if batched else 'unbatched'}: starting 3 replicas")
            with tempfile.TemporaryDirectory(prefix="bench-pysyncobj-") as work:
                with pysyncobj_ref.Replicas(batched, work, durable=mode == "durable") as replicas:
                    target = {"system": "pysyncobj", "port": replicas.leader_serve_port}
                    if batched:
                        pids = {i + 1: p.pid for i, p in enumerate(replicas.procs)}
                        results[mode] = _workloads(
                            target, sizes, duration_s, warmup_s, window, pids
                        )
                    else:
                        _add_w1(results[mode], target, sizes, duration_s, warmup_s)
                    logged = replicas.warnings()
                    agreed, stats = replicas.agree()
                config = "batched" if batched else "unbatched"
                diverged = [line for line in logged if DIVERGED_WARNING in line]
                others = [line for line in logged if DIVERGED_WARNING not in line]
                if diverged and agreed:
                    _warn(
                        f"pysyncobj {mode} {config}: its replicas logged {len(diverged)} "
                        f'"{DIVERGED_WARNING}" lines: {DIVERGED_NOTE}'
                    )
                elif diverged:
                    others = logged
                if others:
                    _warn(
                        f"pysyncobj {mode} {config}: the replicas logged {len(others)} lines, "
                        f"e.g. {others[0]!r}"
                    )
                if not agreed:
                    _warn(
                        f"pysyncobj {mode} {config}: the replicas DIVERGED: (count, bytes, "
                        f"checksum) per replica {stats}"
                    )
    return results


def missing_baseline(systems) -> str | None:
    """Why one of the external baselines asked for cannot run (one line), or None."""
    for system in systems:
        module = BASELINES.get(system)
        why = module.missing() if module else None
        if why:
            return why
    return None


def run_baseline(
    system: str,
    sizes,
    duration_s: float,
    warmup_s: float,
    window: int = window_max,
    reads: bool = False,
    watches: bool = False,
) -> dict:
    """etcd or zookeeper: a fresh 3-member cluster in a temporary directory, the throughput
    workloads and the w1 run on it, then the members' agreement (`agreed`, `agreement` in
    every figure; a disagreement is also printed on stderr at once). Its non-default settings
    are in every figure's `settings`. With `reads`, also reads of the key at each level, as
    smr's (modes "lin-read" and "seq-read", at the smallest payload's row): etcd's default and
    serializable Range, ZooKeeper's sync+get and get. With `watches` (etcd), first the watch
    workload (`measure_watch`, mode "watch")."""
    module = BASELINES[system]
    payload_max = max(sizes)
    _note(f"{system}: starting 3 members")
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as work,
        module.Cluster(work, payload_max) as cluster,
    ):
        if system == "etcd":
            target = {"system": "etcd", "endpoint": cluster.leader_endpoint}
        else:
            target = {"system": "zookeeper", "hosts": cluster.leader_hosts}
        watched: dict = {}
        if watches and system in WATCH_SYSTEMS:
            _add_watch(watched, target, sizes, duration_s, warmup_s, window)
        figures = _workloads(target, sizes, duration_s, warmup_s, window, dict(cluster.pids))
        _add_w1(figures, target, sizes, duration_s, warmup_s)
        out = {BASELINE_MODE: figures, **watched}
        if reads:
            for level, name in (("linearizable", "lin-read"), ("sequential", "seq-read")):
                _note(f"{system} {name}: reads of the key")
                reader = {**target, "reads": level}
                pids = dict(cluster.pids)
                out[name] = _workloads(reader, [min(sizes)], duration_s, warmup_s, window, pids)
                _add_w1(out[name], reader, [min(sizes)], duration_s, warmup_s)
        _note(f"{system}: checking that the members agree")
        agreed, described = cluster.agree()
    if not agreed:
        _warn(f"{system}: THE MEMBERS DISAGREE after the run: {described}")
    for mode_figures in out.values():
        for fig in mode_figures.values():
            fig.update(settings=module.settings(payload_max), agreed=agreed, agreement=described)
    return out


def open_cluster(
    transport: str,
    mode: str,
    data_dir: str,
    tls: bool = False,
    protocol: str = "derecho",
    members: int = 3,
):
    """The smr cluster under test (the runtime's LocalCluster) of `members` members; `tls`:
    with a `[tls]` table and a local CA in `data_dir/tls`; `protocol`: the configuration's."""
    try:
        from smr.runtime.cluster import LocalCluster
    except ImportError as error:
        raise RuntimeError(
            f"the smr node runtime (smr.runtime.cluster.LocalCluster) is not available: {error}"
        ) from error
    from smr.statemachines import BlobLog

    return LocalCluster(
        nodes=members,
        transport=transport,
        mode=mode,
        types=[BlobLog],
        data_dir=data_dir,
        tls=tls,
        protocol=protocol,
    )


def run_smr(
    modes,
    sizes,
    transport: str,
    duration_s: float,
    warmup_s: float,
    failover_repetitions: int = 0,
    window: int = window_max,
    replies: str = "all",
    reads: bool = False,
    watches: bool = False,
    tls: bool = False,
    protocol: str = "derecho",
    members: int = 3,
    submit: str = "many",
) -> tuple[dict, dict | None]:
    """Figures per mode, and failover figures from the first mode if asked for (`tls`: the
    clusters use mutual TLS; `protocol`, `members`: see `open_cluster`). With `reads`,
    also queries at each consistency level (as modes "lin-read" and "seq-read", measured in
    the first mode's cluster after its commands, at the smallest payload's row). With
    `watches`, the watch workload first, in the first mode's fresh cluster (mode "watch")."""
    results, failover = {}, None
    for mode in modes:
        name = "smr" if protocol == "derecho" else protocol
        _note(f"{name} {mode}: starting {members} members" + (" with TLS" if tls else ""))
        with (
            tempfile.TemporaryDirectory(prefix=f"bench-{name}-{mode}-") as work,
            open_cluster(transport, mode, work, tls, protocol, members) as cluster,
        ):
            target = {
                "system": "smr",
                "config_path": str(cluster.config_path),
                "replies": replies,
                "submit": submit,
            }
            pids = dict(cluster.pids)
            if watches and "watch" not in results:
                _add_watch(results, target, sizes, duration_s, warmup_s, window)
                results["watch"][next(iter(results["watch"]))]["watched_mode"] = mode
            results[mode] = _workloads(target, sizes, duration_s, warmup_s, window, pids)
            _add_w1(results[mode], target, sizes, duration_s, warmup_s)
            for figures in results[mode].values():
                figures["replies"] = replies
                figures["submit"] = submit
            if reads and "lin-read" not in results:
                for level, name in (("linearizable", "lin-read"), ("sequential", "seq-read")):
                    _note(f"smr {name}: queries in the {mode} cluster")
                    reader = {**target, "reads": level}
                    results[name] = _workloads(
                        reader, [min(sizes)], duration_s, warmup_s, window, pids
                    )
                    _add_w1(results[name], reader, [min(sizes)], duration_s, warmup_s)
            if failover_repetitions and failover is None:
                failover = smr_failover(cluster, failover_repetitions)
    return results, failover


def smr_failover(cluster, repetitions: int, rejoin_timeout_s: float = 60.0) -> dict:
    """Time from SIGKILL of a member to the first command delivered in the next view, p50 over
    `repetitions` kills; the member is restarted (and rejoins) between repetitions."""
    import smr
    from smr.statemachines import BlobLog

    client = smr.connect(str(cluster.config_path))
    log = client.subgroup(BlobLog)
    samples_ms: list[float] = []
    try:
        for i in range(repetitions):
            victim = sorted(cluster.pids)[-1]
            _note(f"smr failover: kill {i + 1} of {repetitions} (member {victim})")
            samples_ms.append(_one_failover(cluster, client, log, victim, rejoin_timeout_s))
            cluster.restart(victim)
            deadline = time.monotonic() + rejoin_timeout_s
            while time.monotonic() < deadline:
                views = client.views()
                if views and victim in views[-1][1]:
                    break
                time.sleep(0.05)
            else:
                raise TimeoutError(f"member {victim} did not rejoin within {rejoin_timeout_s} s")
    finally:
        client.close()
    ordered = sorted(samples_ms)
    return {
        "repetitions": len(ordered),
        "p50_ms": ordered[(len(ordered) - 1) // 2],
        "max_ms": ordered[-1],
        "samples_ms": samples_ms,
    }


def _one_failover(cluster, client, log, victim, timeout_s: float) -> float:
    """A client keeps 8 100-byte appends outstanding and polls `client.views()` every
    millisecond. After the kill, the measurement ends at the first completion of a command
    submitted once a view without the victim was seen, answered without the victim (ms).
    Commands submitted earlier may have been delivered in the old epoch and answered at its end
    by the survivors, so they do not count; the figure is therefore an upper bound, by at most
    one command's latency and the poll period."""
    completions: list[tuple[int, int, frozenset]] = []  # (submitted, completed ns, who replied)
    stop = threading.Event()
    slots = threading.Semaphore(8)

    def submit() -> None:
        submitted_ns = time.perf_counter_ns()

        def done(future) -> None:
            if future.exception() is None:
                completed_ns = time.perf_counter_ns()
                completions.append((submitted_ns, completed_ns, frozenset(future.result())))
            slots.release()

        log.submit("append", b"\x5a" * 100).add_done_callback(done)

    def load() -> None:
        while not stop.is_set():
            if slots.acquire(timeout=0.1):
                submit()

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        time.sleep(0.5)
        views_before = len(client.views())
        kill_ns = time.perf_counter_ns()
        cluster.kill(victim)
        deadline = time.monotonic() + timeout_s
        view_seen_ns = None
        while time.monotonic() < deadline:
            if view_seen_ns is None and any(
                victim not in members for _, members in client.views()[views_before:]
            ):
                view_seen_ns = time.perf_counter_ns()
            if view_seen_ns is not None:
                after = [
                    completed
                    for submitted, completed, who in list(completions)
                    if submitted >= view_seen_ns and victim not in who
                ]
                if after:
                    return (min(after) - kill_ns) / 1e6
            time.sleep(0.001)
        raise TimeoutError(f"no command delivered without member {victim} within {timeout_s} s")
    finally:
        stop.set()
        loader.join()


def compare(
    systems,
    modes,
    sizes,
    transport: str = "shm",
    duration_s: float = 3.0,
    warmup_s: float = 0.5,
    failover_repetitions: int = 0,
    window: int = window_max,
    replies: str = "all",
    reads: bool = False,
    watches: bool = False,
    members: int = 3,
    submit: str = "many",
) -> tuple[dict, dict | None]:
    """`{system: {mode: {payload: figures}}}` for the systems asked for, and smr's failover.
    `members`: the group size of the systems that take one (`SIZED_SYSTEMS`; 3 for the rest,
    which are refused with another size).
    `replies`: smr commands answered with every replica's result ("all") or the answering
    member's ("one", what pysyncobj answers with). `submit`: the smr client refills the window
    through `submit_many` ("many") or a `submit` per command ("one")."""
    if window < 1:
        raise ValueError(f"window must be at least 1, not {window}")
    if submit not in SUBMITS:
        raise ValueError(f"submit must be one of {', '.join(SUBMITS)}, not {submit!r}")
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise ValueError(f"unknown systems {sorted(unknown)}: choose from {', '.join(SYSTEMS)}")
    if "pysyncobj" in systems and not pysyncobj_ref.available():
        raise RuntimeError(
            f"pysyncobj is not installed; install it with: {pysyncobj_ref.INSTALL_HINT}"
        )
    fixed = [s for s in systems if s not in SIZED_SYSTEMS and s != "raw"]
    if members != 3 and fixed:
        raise ValueError(
            f"--members {members}: {', '.join(fixed)} run 3 members only here; leave them out, "
            f"or compare {', '.join(SIZED_SYSTEMS)} at other sizes"
        )
    if members < 1:
        raise ValueError(f"members must be at least 1, not {members}")
    why = missing_baseline(systems)
    if why:
        raise RuntimeError(why)
    if {"smr", "smr-tls", "multipaxos"} & set(systems) and importlib.util.find_spec(
        "smr.runtime.cluster"
    ) is None:
        # Before any other system runs for minutes only to end in this error.
        raise RuntimeError(
            "the smr node runtime (smr.runtime.cluster.LocalCluster) is not available; "
            "leave smr out with --systems pysyncobj,raw"
        )
    results: dict = {}
    failover = None
    for system in systems:
        if system == "smr":
            results["smr"], failover = run_smr(
                modes,
                sizes,
                transport,
                duration_s,
                warmup_s,
                failover_repetitions,
                window,
                replies,
                reads,
                watches,
                members=members,
                submit=submit,
            )
        elif system == "multipaxos":
            # durable by construction (acceptors fsync before they answer); no watches
            results["multipaxos"], _ = run_smr(
                ["durable"],
                sizes,
                transport,
                duration_s,
                warmup_s,
                0,
                window,
                replies,
                reads,
                False,
                protocol="multipaxos",
                members=members,
                submit=submit,
            )
        elif system == "smr-tls":
            results["smr-tls"], _ = run_smr(
                modes,
                sizes,
                "tcp",
                duration_s,
                warmup_s,
                0,
                window,
                replies,
                reads,
                watches,
                tls=True,
                members=members,
                submit=submit,
            )
        elif system == "pysyncobj":
            results["pysyncobj"] = run_pysyncobj(modes, sizes, duration_s, warmup_s, window)
        elif system in BASELINES:
            results[system] = run_baseline(
                system, sizes, duration_s, warmup_s, window, reads, watches
            )
        else:
            results["raw"] = run_raw(sizes, duration_s, warmup_s, window)
    return results, failover


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if value >= 1 else f"{value:.3f}"


def format_table(results: dict) -> str:
    """One row per system, mode and payload; ratios against pysyncobj (same mode and payload,
    ops/s) and against raw loopback TCP (same payload, MiB/s) where those were measured.
    `LEGEND` explains the columns (printed under the table); latencies are in ms."""
    header = (
        f"{'system':<11}{'mode':<9}{'payload':>9}{'ops/s':>11}{'MiB/s':>10}{'load p50':>10}"
        f"{'load p99':>10}{'load max':>10}{'w1 p50':>9}{'x pysyncobj':>13}{'% raw tcp':>11}"
    )
    lines = [header, "-" * len(header)]
    raw_tcp = results.get("raw", {}).get("tcp", {})
    for system, modes in results.items():
        for mode, sizes in modes.items():
            for size, fig in sizes.items():
                ref = results.get("pysyncobj", {}).get(mode, {}).get(size)
                vs_pso = (
                    fig["ops_per_s"] / ref["ops_per_s"] if ref and system != "pysyncobj" else None
                )
                tcp = raw_tcp.get(size)
                vs_raw = (
                    100 * fig["mib_per_s"] / tcp["mib_per_s"] if tcp and system != "raw" else None
                )
                lines.append(
                    f"{system:<11}{mode:<9}{_size(int(size)):>9}{_fmt(fig['ops_per_s']):>11}"
                    f"{_fmt(fig['mib_per_s'], 2):>10}{_fmt(fig['p50_ms'], 2):>10}"
                    f"{_fmt(fig['p99_ms'], 2):>10}{_fmt(fig.get('max_ms'), 2):>10}"
                    f"{_fmt(fig.get('w1_p50_ms'), 2):>9}"
                    f"{_fmt(vs_pso):>13}{_fmt(vs_raw):>11}"
                )
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit, scale in (("MiB", MIB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def format_cpu(results: dict) -> str:
    """CPU microseconds per command of each replica process and of the client process, where
    measured: what bounds small commands on a machine with few cores."""
    lines = []
    for system, modes in results.items():
        for mode, sizes in modes.items():
            for size, fig in sizes.items():
                members = fig.get("member_cpu_us_per_op")
                client = fig.get("client_cpu_us_per_op")
                if not members and client is None:
                    continue
                parts = (
                    [f"replica {m} {us:.1f}" for m, us in sorted(members.items())]
                    if members
                    else []
                )
                if client is not None:
                    parts.append(f"client {client:.1f}")
                lines.append(
                    f"{system} {mode} {_size(int(size))}: CPU us per command: " + ", ".join(parts)
                )
    return "\n".join(lines)


def format_bounds(results: dict) -> str:
    """One line per workload whose client process was busy at least `client_bound_share` of a
    core: there the figure is what the client reached, the system may do more."""
    lines = []
    for system, modes in results.items():
        for mode, sizes in modes.items():
            for size, fig in sizes.items():
                client = fig.get("client_cpu_us_per_op")
                if client is None:
                    continue
                share = client * fig["ops_per_s"] / 1e6
                if share >= client_bound_share:
                    lines.append(
                        f"{system} {mode} {_size(int(size))}: bounded by the client process "
                        f"(busy {100 * share:.0f}% of a core): the system may do more"
                    )
    return "\n".join(lines)


def format_baselines(results: dict) -> str:
    """The external baselines' non-default settings and whether their members agreed."""
    lines = []
    for system in BASELINES:
        sizes = results.get(system, {}).get(BASELINE_MODE)
        if not sizes:
            continue
        fig = next(iter(sizes.values()))
        settings = fig.get("settings") or ["none"]
        lines.append(f"{system} non-default settings: " + "; ".join(settings))
        if fig.get("agreed"):
            lines.append(f"{system}: the members agree after the run ({fig.get('agreement')})")
        else:
            lines.append(f"{system}: THE MEMBERS DISAGREE after the run: {fig.get('agreement')}")
    return "\n".join(lines)


def disagreed(results: dict) -> list[str]:
    """The baselines whose members did not agree after the run."""
    return [
        system
        for system in BASELINES
        if any(
            fig.get("agreed") is False
            for fig in results.get(system, {}).get(BASELINE_MODE, {}).values()
        )
    ]


def format_failover(failover: dict) -> str:
    return (
        f"SIGKILL to first command delivered in the next view: p50 {failover['p50_ms']:.1f} ms, "
        f"max {failover['max_ms']:.1f} ms over {failover['repetitions']} kills"
    )


def plot_unavailable() -> str | None:
    """Why `plot` cannot draw (matplotlib is not installed), or None: asked before a run, so a
    long benchmark does not end in an error."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return f"--plot needs matplotlib, which is not installed: {pysyncobj_ref.INSTALL_HINT}"
    return None


def plot(results: dict, path: str) -> None:
    """Throughput (MiB/s) against payload size, log-log, one line per system and mode. Raises
    RuntimeError (matplotlib missing) or OSError (the file cannot be written)."""
    try:
        import matplotlib
    except ImportError as error:
        raise RuntimeError(f"--plot needs matplotlib: {pysyncobj_ref.INSTALL_HINT}") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system, modes in results.items():
        for mode, sizes in modes.items():
            xs = sorted(int(s) for s in sizes)
            ax.plot(
                xs, [sizes[str(x)]["mib_per_s"] for x in xs], marker="o", label=f"{system} {mode}"
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("payload (bytes)")
    ax.set_ylabel("throughput (MiB/s)")
    ax.set_title("Throughput against payload size (one client process, loopback)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
