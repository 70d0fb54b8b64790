"""The sim provider (`smr/transport/sim.py`) beyond the shared contract: determinism, FIFO under
random delays, partitions and heals reported at the right simulated times, epochs, and the calls
a simulator uses to drive it (`next_event_ns`, `advance_to`, `ready_members`, `on_due`)."""

from __future__ import annotations

import heapq
import random

import pytest

from smr.sim.network import Network
from smr.transport.base import Address, TransportConfig, TransportError
from smr.transport.sim import SimTransport, SimWorld

MS = 1_000_000
FAILED_S = 0.05  # peer_failed_after_s
FAILED_NS = 50 * MS
ROW = 256


def _config() -> TransportConfig:
    return TransportConfig(secret=b"sim-transport-test-secret-0123", peer_failed_after_s=FAILED_S)


class Log:
    """A handler recording each report with the simulated time it was reported at."""

    def __init__(self, world: SimWorld, me: int):
        self.world = world
        self.me = me
        self.events: list[tuple] = []

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        self.events.append((self.world.now_ns, "write", source, epoch, offset, bytes(data)))

    def on_data(self, source: int, payload: bytes) -> None:
        self.events.append((self.world.now_ns, "data", source, bytes(payload)))

    def on_link_up(self, peer: int) -> None:
        self.events.append((self.world.now_ns, "up", peer))

    def on_peer_failed(self, peer: int) -> None:
        self.events.append((self.world.now_ns, "failed", peer))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[1] == kind]


class Sim:
    """A world, one started transport per member (epoch 1 registered), and a driver loop."""

    def __init__(self, members=(1, 2, 3), *, seed: int = 1, **network):
        self.world = SimWorld(network=Network(random.Random(seed), **network))
        self.addresses = {m: Address("sim", m) for m in members}
        self.t: dict[int, SimTransport] = {}
        self.h: dict[int, Log] = {}
        for m in members:
            self.start(m)

    def start(self, m: int) -> SimTransport:
        t = SimTransport(m, self.addresses, _config(), world=self.world)
        self.t[m] = t
        self.h[m] = Log(self.world, m)
        t.start(self.h[m])
        t.register(1, sorted(self.addresses), ROW)
        return t

    def run_until(self, end_ns: int) -> None:
        """Advance event by event up to `end_ns`, polling every member with something due."""
        world = self.world
        while True:
            t = world.next_event_ns()
            if t is None or t > end_ns:
                break
            world.advance_to(t)
            for m in world.ready_members():
                self.t[m].poll(0)
        world.advance_to(max(end_ns, world.now_ns))

    def run_for(self, ns: int) -> None:
        self.run_until(self.world.now_ns + ns)


def _workload(sim: Sim, rng: random.Random, rounds: int) -> None:
    """Writes and sends on every link, in rounds a random simulated time apart."""
    members = sorted(sim.t)
    for i in range(rounds):
        for s in members:
            others = [m for m in members if m != s]
            sim.t[s].write(others, 1, (i % 8) * 8, i.to_bytes(8, "little"))
            sim.t[s].send(rng.choice(others), b"%d:%d" % (s, i))
        sim.run_for(rng.randint(0, 300_000))


def _trace(seed: int) -> list[tuple]:
    sim = Sim(seed=seed, delay_ns_min=0, delay_ns_max=2 * MS, spike_probability=0.1)
    _workload(sim, random.Random(seed), 60)
    sim.run_for(50 * MS)
    return [(m, e) for m in sorted(sim.h) for e in sim.h[m].events]


def test_the_same_seed_gives_the_same_deliveries_at_the_same_times():
    one, two = _trace(7), _trace(7)
    assert one == two
    assert len([e for _, e in one if e[1] == "write"]) == 3 * 2 * 60
    other = _trace(8)
    assert [e[1:] for _, e in other if e[1] == "up"] == [e[1:] for _, e in one if e[1] == "up"]
    assert other != one, "a different seed should draw different delays"


def test_fifo_per_link_under_random_delays_writes_and_sends_together():
    sim = Sim((1, 2), seed=3, delay_ns_min=0, delay_ns_max=5 * MS, spike_probability=0.3)
    rng = random.Random(3)
    for i in range(500):
        sim.t[1].write([2], 1, 0, i.to_bytes(8, "little"))
        sim.t[1].send(2, b"%d" % i)
        if rng.random() < 0.2:
            sim.run_for(rng.randint(0, MS))
    sim.run_for(100 * MS)
    got = [e for e in sim.h[2].events if e[1] in ("write", "data")]
    assert len(got) == 1000
    expect = []
    for i in range(500):
        expect.append(("write", i.to_bytes(8, "little")))
        expect.append(("data", b"%d" % i))
    assert [(e[1], e[-1]) for e in got] == expect  # one order across both kinds
    times = [e[0] for e in got]
    assert times == sorted(times)
    # arrivals bunch (one never precedes the one before it on its link), but they vary
    assert len(set(times)) > 30, "the delays should vary"


def test_poll_never_waits_and_never_moves_the_clock():
    sim = Sim((1, 2))
    sim.run_for(MS)
    now = sim.world.now_ns
    sim.t[1].send(2, b"x")
    sim.t[2].poll(None)  # nothing has arrived yet: it returns at once
    sim.t[2].poll(10.0)
    assert sim.world.now_ns == now
    assert sim.h[2].of("data") == []
    arrival = sim.world.next_event_ns()
    assert arrival is not None and arrival > now
    sim.world.advance_to(arrival)
    assert sim.world.ready_members() == [2]
    sim.t[2].poll(0)
    assert [e[3] for e in sim.h[2].of("data")] == [b"x"]
    assert sim.world.next_event_ns() is None and sim.world.ready_members() == []


def test_start_reports_every_link_up_and_a_peer_never_started_fails_after_the_timeout():
    sim = Sim((1, 2))
    sim.addresses[3] = Address("sim", 3)
    late = SimTransport(4, {**sim.addresses, 4: Address("sim", 4)}, _config(), world=sim.world)
    sim.run_for(0)
    assert sim.h[1].of("up") == [(0, "up", 2)] and sim.h[2].of("up") == [(0, "up", 1)]
    sim.t[1].add_member(3, Address("sim", 3))  # known, never started
    sim.run_for(FAILED_NS + MS)
    assert sim.h[1].of("failed") == [(FAILED_NS, "failed", 3)]
    assert sim.h[2].of("failed") == []
    # a member that starts later is reported up by everyone running (as tcp reports a dial)
    sim.t[4], sim.h[4] = late, Log(sim.world, 4)
    late.start(sim.h[4])
    sim.run_for(0)
    assert sim.h[1].of("up")[-1][2] == 4 and sim.h[2].of("up")[-1][2] == 4
    assert sorted(e[2] for e in sim.h[4].of("up")) == [1, 2]


def test_a_partition_and_its_heal_are_reported_at_both_ends_at_the_right_times():
    sim = Sim()
    sim.run_for(MS)
    cut_at = sim.world.now_ns
    for a, b in ((1, 3), (2, 3)):
        assert sim.world.set_link(a, b, False) and sim.world.set_link(b, a, False)
    sim.t[1].write([2, 3], 1, 0, b"A" * 8)  # to 3: dropped; to 2: delivered
    sim.t[3].send(1, b"lost")
    sim.run_for(FAILED_NS - 1)
    assert all(sim.h[m].of("failed") == [] for m in sim.t), "reported before the timeout"
    sim.run_for(2)
    due = cut_at + FAILED_NS
    assert sim.h[1].of("failed") == [(due, "failed", 3)]
    assert sim.h[2].of("failed") == [(due, "failed", 3)]
    assert sorted(sim.h[3].of("failed")) == [(due, "failed", 1), (due, "failed", 2)]
    assert sim.h[3].of("write") == [] and sim.h[1].of("data") == []
    assert [e[5] for e in sim.h[2].of("write")] == [b"A" * 8]
    assert sim.t[1].stats["dropped_down"] == 1 and sim.t[3].stats["dropped_down"] == 1
    # heal: a link-up at each end of each healed link, at once; traffic flows again
    ups = {m: len(sim.h[m].of("up")) for m in sim.t}
    sim.run_for(10 * MS)
    healed_at = sim.world.now_ns
    for a, b in ((1, 3), (2, 3)):
        assert sim.world.set_link(a, b, True) and sim.world.set_link(b, a, True)
    assert sim.world.next_event_ns() == healed_at
    sim.run_for(0)
    assert sim.h[1].of("up")[ups[1] :] == [(healed_at, "up", 3)]
    assert sim.h[2].of("up")[ups[2] :] == [(healed_at, "up", 3)]
    assert sorted(sim.h[3].of("up")[ups[3] :]) == [(healed_at, "up", 1), (healed_at, "up", 2)]
    sim.t[3].send(1, b"back")
    sim.run_for(MS)
    assert [e[3] for e in sim.h[1].of("data")] == [b"back"]
    sim.run_for(10 * FAILED_NS)
    assert len(sim.h[1].of("failed")) == 1, "one report per loss"


def test_a_one_way_cut_is_reported_by_the_side_that_cannot_send():
    sim = Sim((1, 2))
    sim.run_for(MS)
    sim.world.set_link(1, 2, False)
    sim.t[2].send(1, b"still arrives")
    sim.t[1].send(2, b"lost")
    sim.run_for(2 * FAILED_NS)
    assert [e[2] for e in sim.h[1].of("failed")] == [2]
    assert sim.h[2].of("failed") == []
    assert [e[3] for e in sim.h[1].of("data")] == [b"still arrives"]
    assert sim.h[2].of("data") == []
    sim.world.set_link(1, 2, True)
    sim.run_for(0)
    assert sim.h[1].of("up")[-1][2] == 2 and len(sim.h[2].of("up")) == 1  # only 1 must resend


def test_a_short_break_drops_what_was_in_flight_and_reports_only_the_link_up():
    sim = Sim((1, 2), delay_ns_min=MS, delay_ns_max=MS)
    sim.run_for(MS)
    sim.t[1].send(2, b"in flight")
    sim.run_for(MS // 2)
    sim.world.set_link(1, 2, False)
    sim.world.set_link(2, 1, False)
    sim.run_for(FAILED_NS // 2)
    sim.world.set_link(1, 2, True)
    sim.world.set_link(2, 1, True)
    sim.t[1].send(2, b"after")
    sim.run_for(10 * MS)
    assert [e[3] for e in sim.h[2].of("data")] == [b"after"]
    assert sim.h[1].of("failed") == [] and sim.h[2].of("failed") == []
    assert len(sim.h[1].of("up")) == 2 and len(sim.h[2].of("up")) == 2
    link = sim.world.network.links[1, 2]
    assert (link.delivered, link.dropped, link.in_flight) == (1, 1, 0)


def test_a_link_healed_after_the_failure_was_due_reports_both_in_order():
    """The member polls late: it still hears the failure (it happened) before the link-up."""
    sim = Sim((1, 2))
    sim.world.set_link(1, 2, False)
    sim.world.advance_to(FAILED_NS + MS)  # nobody polls meanwhile
    sim.world.set_link(1, 2, True)
    sim.t[1].poll(0)
    assert [e[1:] for e in sim.h[1].events] == [("up", 2), ("failed", 2), ("up", 2)]
    assert {e[0] for e in sim.h[1].events} == {FAILED_NS + MS}  # reported when polled


def test_a_closed_member_is_failed_after_the_timeout_and_a_restart_links_again():
    sim = Sim((1, 2))
    sim.t[2].send(1, b"in flight from 2")
    sim.t[1].send(2, b"lost with 2")
    sim.t[2].close()
    sim.t[2].close()
    assert sim.world.running() == [1]
    sim.run_for(2 * FAILED_NS)
    assert sim.h[1].of("failed") == [(FAILED_NS, "failed", 2)]
    assert sim.h[1].of("data") == []  # lost with its link, as in a crash
    with pytest.raises(TransportError):
        sim.t[2].send(1, b"after close")
    again = sim.start(2)
    with pytest.raises(TransportError, match="already running"):
        SimTransport(2, sim.addresses, _config(), world=sim.world).start(Log(sim.world, 2))
    again.send(1, b"I am back")
    sim.run_for(MS)
    assert sim.h[1].of("up")[-1] == (2 * FAILED_NS, "up", 2)
    assert [e[2] for e in sim.h[2].of("up")] == [1]
    assert sim.h[1].of("data")[-1][3] == b"I am back"
    assert all(link.in_flight == 0 for link in sim.world.network.links.values())


def test_writes_to_an_old_epoch_are_dropped_at_both_ends():
    sim = Sim((1, 2), delay_ns_min=MS, delay_ns_max=MS)
    sim.run_for(0)
    members = [1, 2]
    sim.t[1].write([2], 1, 0, b"e1-first")
    for e in (2, 3):  # registering epoch 3 releases epoch 1 (older than the previous one)
        sim.t[1].register(e, members, ROW)
    assert sorted(sim.t[1].epochs) == [2, 3]
    sim.t[1].write([2], 1, 0, b"e1-late!")  # the writer released it: dropped
    assert sim.t[1].stats["dropped_released"] == 1
    sim.t[1].write([2], 2, 0, b"e2-kept!")
    with pytest.raises(TransportError, match="never registered"):
        sim.t[1].write([2], 4, 0, b"too soon")
    # the receiver registers epoch 3 before the writes arrive: epoch 1's is dropped, 2's kept
    for e in (2, 3):
        sim.t[2].register(e, members, ROW)
    sim.run_for(2 * MS)
    assert [(e[3], e[5]) for e in sim.h[2].of("write")] == [(2, b"e2-kept!")]
    assert sim.t[2].stats["dropped_released"] == 1
    sim.t[1].register(1, members, ROW)  # registering a released epoch again changes nothing
    sim.t[1].write([2], 1, 0, b"e1-again")
    assert sim.t[1].stats["dropped_released"] == 2


def test_a_write_for_an_epoch_the_receiver_has_not_registered_is_reported():
    sim = Sim((1, 2))
    sim.t[1].register(2, [1, 2], ROW)
    sim.t[1].write([2], 2, 8, b"joining!")
    sim.t[1].write([2, 3], 1, 0, b"no row at 3")  # 3 is not in epoch 1: skipped
    sim.run_for(MS)
    assert [(e[3], e[4], e[5]) for e in sim.h[2].of("write")] == [
        (2, 8, b"joining!"),
        (1, 0, b"no row at 3"),
    ]


def test_bounds_and_misuse_raise():
    sim = Sim((1, 2))
    t = sim.t[1]
    limit = t.config.frame_bytes_max
    with pytest.raises(TransportError, match="frame_bytes_max"):
        t.send(2, bytes(limit + 1))
    with pytest.raises(TransportError, match="does not fit"):
        t.write([2], 1, ROW - 4, b"12345678")
    with pytest.raises(TransportError, match="another layout"):
        t.register(1, [1, 2], ROW * 2)
    with pytest.raises(TransportError, match="not in epoch"):
        t.register(5, [2], ROW)
    fresh = SimTransport(1, sim.addresses, _config(), world=sim.world)
    with pytest.raises(TransportError):
        fresh.poll(0)
    with pytest.raises(TransportError):
        fresh.write([2], 1, 0, b"x")
    t.send(2, bytes(limit))  # the largest message is accepted


def test_the_written_bytes_are_copied_when_written():
    sim = Sim((1, 2))
    row = bytearray(b"before!!")
    sim.t[1].write([2], 1, 0, memoryview(row))
    row[:] = b"after!!!"
    sim.run_for(MS)
    assert sim.h[2].of("write")[0][5] == b"before!!"


def test_wake_marks_the_member_ready_now():
    dues: list[tuple[int, int]] = []
    world = SimWorld(random.Random(1), on_due=lambda t, m: dues.append((t, m)))
    addresses = {1: Address("sim", 1)}
    t = SimTransport(1, addresses, _config(), world=world)
    t.start(Log(world, 1))
    world.advance_to(5 * MS)
    assert world.next_event_ns() is None
    dues.clear()
    t.wake()
    t.wake()
    assert world.ready_members() == [1] and world.next_event_ns() == 5 * MS
    assert dues == [(5 * MS, 1)]
    t.poll(0)
    assert world.ready_members() == [] and world.next_event_ns() is None


def test_a_handler_that_raises_leaves_the_rest_for_the_next_poll():
    sim = Sim((1, 2), delay_ns_min=MS, delay_ns_max=MS)
    sim.run_for(0)
    for i in range(3):
        sim.t[1].send(2, b"%d" % i)
    sim.world.advance_to(2 * MS)
    h = sim.h[2]
    original = h.on_data

    def once(source: int, payload: bytes) -> None:
        original(source, payload)
        if payload == b"0":
            raise RuntimeError("the handler's bug")

    h.on_data = once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        sim.t[2].poll(0)
    assert sim.world.ready_members() == [2]
    sim.t[2].poll(0)
    assert [e[3] for e in h.of("data")] == [b"0", b"1", b"2"]


def test_an_owner_with_its_own_event_heap_drives_it_through_on_due():
    """The harness's way: `on_due` schedules a poll in the owner's heap; the deliveries are
    the same as a loop over `next_event_ns`."""

    def run(with_heap: bool) -> list:
        heap: list[tuple[int, int, int]] = []
        seq = [0]

        def on_due(time_ns: int, member: int) -> None:
            seq[0] += 1
            heapq.heappush(heap, (time_ns, seq[0], member))

        network = Network(random.Random(11), delay_ns_max=3 * MS, spike_probability=0.1)
        world = SimWorld(network=network, on_due=on_due if with_heap else None)
        addresses = {m: Address("sim", m) for m in (1, 2, 3)}
        ts = {m: SimTransport(m, addresses, _config(), world=world) for m in addresses}
        logs = {m: Log(world, m) for m in addresses}
        for m, t in ts.items():
            t.start(logs[m])
            t.register(1, [1, 2, 3], ROW)
        for i in range(40):
            for m, t in ts.items():
                t.write([x for x in ts if x != m], 1, 0, b"%07d" % i + b"\n")
        world.set_link(1, 2, False)
        if with_heap:
            while heap:
                time_ns, _, member = heapq.heappop(heap)
                world.advance_to(time_ns)
                if member in world.ready_members():
                    ts[member].poll(0)
        else:
            while (t_next := world.next_event_ns()) is not None:
                world.advance_to(t_next)
                for m in world.ready_members():
                    ts[m].poll(0)
        return [logs[m].events for m in sorted(logs)]

    heap_run, loop_run = run(True), run(False)
    assert heap_run == loop_run
    assert [e[1:] for e in heap_run[0] if e[1] == "failed"] == [("failed", 2)]


class _Host:
    """The executor's host for a core replica over a SimTransport (what the node runtime does
    with a real one, minus logs: the shards here are `ordered`)."""

    def __init__(self, transport: SimTransport, replica_of):
        self.transport = transport
        self.replica_of = replica_of
        self.delivered: list[tuple[int, bytes]] = []
        self.views: list[tuple[int, tuple[int, ...]]] = []

    def register(self) -> None:
        r = self.replica_of()
        self.transport.register(r.epoch, r.members, r.table.row_words * 8)

    def prepare_view(self, event) -> None:
        self.register()

    def push(self, push) -> None:
        self.transport.write(push.targets, push.epoch, push.offset, push.data)

    def send(self, send) -> None:
        self.transport.send(send.target, send.payload)

    def apply(self, deliveries) -> list[bytes]:
        self.delivered.extend((d.version, bytes(d.payload)) for d in deliveries)
        return [b"" for _ in deliveries]

    def view_installed(self, event) -> None:
        self.views.append((event.epoch, tuple(event.members)))

    def state_of(self, subgroup: int, shard: int) -> tuple[int, bytes]:
        return 0, b""

    def __getattr__(self, name: str):
        if name.startswith(("persist_", "restore", "answer", "flush_", "notify", "state_sent")):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


class _Member:
    """The transport's handler: reports become replica inputs, as `smr.runtime.node` does."""

    def __init__(self, replica):
        self.replica = replica

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        self.replica.on_write(source, offset, data, epoch)

    def on_data(self, source: int, payload: bytes) -> None:
        self.replica.on_data(source, payload)

    def on_link_up(self, peer: int) -> None:
        self.replica.on_link_up(peer)

    def on_peer_failed(self, peer: int) -> None:
        self.replica.on_peer_failed(peer)


def test_the_real_core_over_sim_transports_delivers_in_one_order_and_survives_a_crash():
    """A plug-in check for the simulator's next step: three core replicas driven only through
    SimTransport (poll, tick, drain), one of them crashed (closed) mid-run."""
    from smr.core.layout import SubgroupSpec
    from smr.core.replica import Replica
    from smr.runtime.executor import Executor

    layout = [SubgroupSpec("ordered", mode="ordered")]
    members = (1, 2, 3)
    world = SimWorld(network=Network(random.Random(5), delay_ns_max=MS, spike_probability=0.05))
    addresses = {m: Address("sim", m) for m in members}
    replicas = {m: Replica(m, members, layout=layout) for m in members}
    ts = {m: SimTransport(m, addresses, _config(), world=world) for m in members}
    hosts = {m: _Host(ts[m], lambda m=m: replicas[m]) for m in members}
    executors = {m: Executor(m, hosts[m]) for m in members}
    for m in members:
        ts[m].start(_Member(replicas[m]))
        hosts[m].register()
    live = set(members)

    def run_until(end_ns: int) -> None:
        while True:
            ticks = [replicas[m].next_tick_ns() for m in live]
            at = min([t for t in (world.next_event_ns(), *ticks) if t is not None])
            at = max(at, world.now_ns)
            if at > end_ns:
                break
            world.advance_to(at)
            polled = set(world.ready_members()) & live
            for m in sorted(live):
                if m in polled:
                    ts[m].poll(0)
                if replicas[m].next_tick_ns() <= at:
                    replicas[m].tick(at)
                executors[m].drain(replicas[m])
        world.advance_to(end_ns)

    n = 0
    for step in range(1, 11):
        for m in sorted(live):
            n += 1
            replicas[m].submit(0, 0, b"m%d-%d" % (m, n))
            executors[m].drain(replicas[m])
        run_until(step * 5 * MS)
        if step == 4:
            ts[3].close()  # member 3 crashes
            live.discard(3)
    run_until(world.now_ns + 300 * MS)
    assert hosts[1].views and hosts[1].views[-1][1] == (1, 2), hosts[1].views
    assert hosts[2].views[-1] == hosts[1].views[-1]
    assert hosts[1].delivered == hosts[2].delivered
    assert len(hosts[1].delivered) >= 2 * 6 + 3 * 4 - 3  # what the survivors sent, at least
    got3 = hosts[3].delivered
    assert got3 == hosts[1].delivered[: len(got3)], "the crashed member saw a prefix"
