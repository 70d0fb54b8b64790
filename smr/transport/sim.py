"""The sim provider: the transport contract over the simulator's network, in simulated time.

This module owns a simulated member's endpoint (`SimTransport`) and the world its endpoints share
(`SimWorld`): the simulated clock, which members are running, the state of every link, and what
is in flight on it. A simulated member runs the same driver code as a member process (the node
runtime's loop calling `write`, `send` and `poll`), minus sockets and threads: nothing here starts
a thread, reads a clock or draws a random number of its own. Time is the world's `now_ns`, moved
only by its owner (`advance_to`); delays come from the `random.Random` the world is given.

The world reuses `smr.sim.network.Network` as it is: a directed link `a -> b` with a generation
(bumped on every break, so what was in flight on an old connection is dropped on arrival), seeded
delays, and FIFO by construction (an arrival never precedes the previous one on its link). Writes
and sends share a member pair's link, so they keep their mutual order, as tcp's do. The world
keeps the Network's link state equal to the *effective* state of each link, which is up when the
link is not cut (`set_link`) and both ends are running (attached by `start`, detached by
`close`). It therefore owns that state: drive partitions through `SimWorld.set_link`, never
`Network.set_up` directly.

Reports. Member `a` reports about peer `b` what happens to its outgoing link `a -> b`, the link
its own writes may have been lost on: `on_link_up(b)` whenever it comes (back) up (the replica
then writes its whole row again), `on_peer_failed(b)` once it has been down for
`peer_failed_after_s` of simulated time (from `start` for a peer never reached; again after each
later loss). A cut both ways is reported at both ends; a one-way cut `a -> b` only at `a`.
A member's peers are the members of its `addresses` (and `add_member`) and every member that was
running at some moment while it was (a joiner's links are reported as tcp reports an accepted
dial).

Delivery. `write` and `send` put a message on the link at once, with an arrival time from the
Network; it waits in the target's queue until the world's clock reaches that time and the target
polls. `poll` reports, in time order, everything due by `now_ns` (arrivals, and link reports)
and returns: it never sleeps or blocks, whatever its timeout. A message is checked against its
link when it is reported (`Network.arrive`): one whose link broke meanwhile is dropped, as bytes
on a reset connection are.

Epochs, as shm: `register` keeps each epoch's layout and releases those older than the previous
one. A write for a released epoch is dropped; for an epoch never registered (and not released),
`TransportError` (the driver's bug). A receiver drops writes for an epoch it released and reports
the others, registered or not (a joiner has not registered the epoch it is joining). Targets not
in the epoch's table are skipped (they hold no copy of it).

What is not simulated: bytes on a wire (a write is one message, applied whole: no torn rows, no
frames, no handshake, no partial reads), send queues and their bounds (`send_queue_bytes_max`),
and the immediate failure report that a refused connection gives tcp and shm (here a closed peer
is reported after `peer_failed_after_s`, like one cut off).

Driving it (the simulator harness, or a test): construct one `SimWorld`, then one `SimTransport`
per member with `world=`; repeatedly take `t = world.next_event_ns()` (or schedule from the
`on_due(time_ns, member)` callback), `world.advance_to(t)`, and poll each of
`world.ready_members()`. A crash is `close()` (a process's links end with it; a clean close is
the same to its peers); a restart is a new `SimTransport` for the same member and world.
"""

from __future__ import annotations

import heapq
import random
import selectors
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from smr.sim.network import Message, Network
from smr.transport.base import Address, Handler, Transport, TransportConfig, TransportError, Watched

_UP = "up"
_FAILED = "failed"
_MSG = "msg"

OnDue = Callable[[int, int], None]  # (time_ns, member): the member has something to poll then


class _Endpoint:
    """A running member's side of the world: its transport and what is due to it."""

    __slots__ = ("incarnation", "peers", "queue", "transport", "woken")

    def __init__(self, transport: SimTransport, incarnation: int):
        self.transport = transport
        self.incarnation = incarnation
        self.peers: set[int] = set()  # members whose links this endpoint reports
        # (time_ns, seq, kind, item): messages at their arrival time, link reports when due
        self.queue: list[tuple[int, int, str, Any]] = []
        self.woken = False


class SimWorld:
    """The shared simulated world: clock, running members, links, and what is in flight.

    `rng` (or a ready `network`, for a harness that shares its own) supplies every delay. The
    owner moves time with `advance_to`; `on_due(time_ns, member)`, if given, is called whenever
    a member gets something due at `time_ns` (an arrival, a link report, a failure timer, a
    `wake`), so an owner with its own event heap can schedule the member's poll then. It may
    turn out to be nothing (a message whose link broke on the way, a timer whose link came
    back): that poll reports nothing. Everything is deterministic: the same calls in the same
    order give the same deliveries at the same times.
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        network: Network | None = None,
        on_due: OnDue | None = None,
        start_ns: int = 0,
    ):
        assert (rng is None) != (network is None), "give the world an rng or a network"
        assert start_ns >= 0
        if network is None:
            assert rng is not None
            network = Network(rng)
        self.network = network
        self.on_due = on_due
        self._now_ns = start_ns
        self._seq = 0
        self._incarnations = 0
        self._endpoints: dict[int, _Endpoint] = {}  # running members
        self._cut: set[tuple[int, int]] = set()  # (a, b) while set_link says it is down
        self._state: dict[tuple[int, int], bool] = {}  # effective state of every known link
        self._episode: dict[tuple[int, int], int] = {}  # bumped on every change of state
        # (due_ns, seq, member, peer, incarnation, episode): peer-failure reports to check
        self._timers: list[tuple[int, int, int, int, int, int]] = []

    # -- the clock ----------------------------------------------------------------------------

    @property
    def now_ns(self) -> int:
        return self._now_ns

    def advance_to(self, now_ns: int) -> None:
        """Move the clock to `now_ns` (never back): failure timers due by then fire, in order,
        and what arrives by then becomes due to its target's next poll."""
        assert now_ns >= self._now_ns, f"time goes back: {now_ns} < {self._now_ns}"
        timers = self._timers
        while timers and timers[0][0] <= now_ns:
            timer = heapq.heappop(timers)
            due, _, member, peer, _, _ = timer
            self._now_ns = due
            if self._live(timer):  # on_due was told when the timer was set
                self._push(self._endpoints[member], member, due, _FAILED, peer, told=True)
        self._now_ns = now_ns

    def _live(self, timer: tuple[int, int, int, int, int, int]) -> bool:
        """Whether a failure timer still stands: its member's same incarnation is running and
        the link has stayed down since the timer was set."""
        _, _, member, peer, incarnation, episode = timer
        ep = self._endpoints.get(member)
        return (
            ep is not None
            and ep.incarnation == incarnation
            and self._episode.get((member, peer)) == episode
        )

    def next_event_ns(self) -> int | None:
        """When something next happens: `now_ns` if a member has something to poll now, else
        the earliest arrival or failure timer, else None (the world is idle)."""
        now = self._now_ns
        best: int | None = None
        for ep in self._endpoints.values():
            if ep.woken:
                return now
            if ep.queue:
                t = ep.queue[0][0]
                if t <= now:
                    return now
                best = t if best is None else min(best, t)
        timers = self._timers
        while timers and not self._live(timers[0]):
            heapq.heappop(timers)  # the link came back or its member stopped: nothing to do
        if timers:
            t = timers[0][0]
            best = t if best is None else min(best, t)
        return best

    def has_due(self, member: int) -> bool:
        """Whether running member `member` has something to poll now (or was woken)."""
        ep = self._endpoints.get(member)
        return ep is not None and (ep.woken or bool(ep.queue and ep.queue[0][0] <= self._now_ns))

    def ready_members(self) -> list[int]:
        """The running members with something due by `now_ns` (or woken), in id order: poll
        each of them."""
        now = self._now_ns
        return [
            m
            for m, ep in sorted(self._endpoints.items())
            if ep.woken or (ep.queue and ep.queue[0][0] <= now)
        ]

    # -- links ----------------------------------------------------------------------------------

    def set_link(self, a: int, b: int, up: bool) -> bool:
        """Cut (`up=False`) or heal the directed link `a -> b` (a partition is both directions
        of each pair across it; a break both directions of one pair). True if the link's
        effective state changed (it is also down while either end is not running)."""
        if up:
            self._cut.discard((a, b))
        else:
            self._cut.add((a, b))
        if (a, b) not in self._state:
            return False  # not known yet: applies when it becomes known
        return self._refresh(a, b)

    def is_up(self, a: int, b: int) -> bool:
        """Whether `a -> b` carries messages now."""
        return self._state.get((a, b), False)

    def running(self) -> list[int]:
        return sorted(self._endpoints)

    # -- used by SimTransport ---------------------------------------------------------------------

    def _attach(self, transport: SimTransport) -> None:
        me = transport.me
        if me in self._endpoints:
            raise TransportError(f"sim transport: member {me} is already running in this world")
        self._incarnations += 1
        ep = self._endpoints[me] = _Endpoint(transport, self._incarnations)
        ep.peers = {m for m in transport.addresses if m != me} | {
            m for m in self._endpoints if m != me
        }
        for peer in sorted(ep.peers):
            self._refresh(me, peer, fresh=True)
        for other in sorted(self._endpoints):
            if other != me:
                self._endpoints[other].peers.add(me)
                self._refresh(other, me)

    def _detach(self, member: int) -> None:
        ep = self._endpoints.pop(member)
        for peer in sorted(ep.peers):
            self._refresh(member, peer)
        for other in sorted(self._endpoints):
            if member in self._endpoints[other].peers:
                self._refresh(other, member)
        # what was on its way to the member is lost with it (keeps the links' counters right)
        for _, _, kind, item in sorted(ep.queue):
            if kind == _MSG:
                self.network.arrive(item)
        ep.queue.clear()

    def _add_peer(self, member: int, peer: int) -> None:
        ep = self._endpoints.get(member)
        if ep is None or peer == member or peer in ep.peers:
            return
        ep.peers.add(peer)
        self._refresh(member, peer, fresh=True)

    def _refresh(self, a: int, b: int, *, fresh: bool = False) -> bool:
        """Recompute the effective state of `a -> b`; report a change to `a`. With `fresh`
        (`a` just started, or just learnt of `b`), a link found down starts its failure timer
        now even if it was down before."""
        key = (a, b)
        up = key not in self._cut and a in self._endpoints and b in self._endpoints
        old = self._state.get(key)
        changed = old is not up
        if not changed and not fresh:
            return False
        if changed:
            self._state[key] = up
            self.network.set_up(a, b, up)
        episode = self._episode[key] = self._episode.get(key, 0) + 1
        ep = self._endpoints.get(a)
        if ep is None:
            return changed
        if up:
            if changed:
                self._push(ep, a, self._now_ns, _UP, b)
        else:
            due = self._now_ns + ep.transport.peer_failed_ns
            self._seq += 1
            heapq.heappush(self._timers, (due, self._seq, a, b, ep.incarnation, episode))
            if self.on_due is not None:
                self.on_due(due, a)
        return changed

    def _transmit(self, source: int, target: int, kind: str, body: tuple) -> bool:
        """Put a message on `source -> target`; False if it is lost (the link is down)."""
        key = (source, target)
        if key not in self._state:
            return False  # not a member this world has heard of
        network = self.network
        message = Message(source, target, kind, network.generation(source, target), body)
        arrival = network.transit(self._now_ns, message)
        if arrival is None:
            return False
        self._push(self._endpoints[target], target, arrival, _MSG, message)
        return True

    def _push(
        self, ep: _Endpoint, member: int, time_ns: int, kind: str, item: Any, *, told: bool = False
    ) -> None:
        self._seq += 1
        heapq.heappush(ep.queue, (time_ns, self._seq, kind, item))
        if self.on_due is not None and not told:
            self.on_due(time_ns, member)

    def _woken(self, member: int) -> None:
        ep = self._endpoints.get(member)
        if ep is not None and not ep.woken:
            ep.woken = True
            if self.on_due is not None:
                self.on_due(self._now_ns, member)


class SimTransport(Transport):
    """One simulated member's endpoint (see the module docstring). `addresses` only name the
    members (their hosts and ports are not used); `world` is the shared `SimWorld`."""

    name = "sim"

    def __init__(
        self,
        me: int,
        addresses: Mapping[int, Address],
        config: TransportConfig,
        *,
        world: SimWorld,
    ):
        super().__init__(me, addresses, config)
        self.world = world
        self.peer_failed_ns = round(config.peer_failed_after_s * 1e9)
        self._handler: Handler | None = None
        self._ep: _Endpoint | None = None
        self._closed = False
        self._layouts: dict[int, tuple[tuple[int, ...], int]] = {}  # my registered epochs
        self._floor = 0  # epochs below this are released
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "writes",
                "sends",
                "delivered_writes",
                "delivered_data",
                "dropped_down",
                "dropped_released",
                "links_up",
                "peer_failed",
            ),
            0,
        )

    def __repr__(self) -> str:
        return f"SimTransport(me={self.me}, {self.config!r})"

    # -- set-up ---------------------------------------------------------------------------------

    def start(self, handler: Handler) -> None:
        if self._handler is not None or self._closed:
            raise TransportError("sim transport: start() called twice or after close()")
        self._handler = handler
        self.world._attach(self)
        self._ep = self.world._endpoints[self.me]

    def add_member(self, member: int, address: Address) -> None:
        super().add_member(member, address)
        if self._ep is not None and not self._closed:
            self.world._add_peer(self.me, member)

    @property
    def epochs(self) -> dict[int, tuple[tuple[int, ...], int]]:
        """The registered epochs not yet released: epoch -> (members, row_bytes)."""
        return dict(self._layouts)

    def register(self, epoch: int, members: Sequence[int], row_bytes: int) -> None:
        self._check_open()
        members = tuple(members)
        if self.me not in members:
            raise TransportError(f"sim transport: member {self.me} is not in epoch {epoch}")
        if row_bytes <= 0 or len(set(members)) != len(members):
            raise TransportError(
                f"sim transport: epoch {epoch}: bad table ({row_bytes} bytes, members {members})"
            )
        known = self._layouts.get(epoch)
        if known is not None and known != (members, row_bytes):
            raise TransportError(f"sim transport: epoch {epoch} registered with another layout")
        if epoch < self._floor:
            return  # already released: nobody reads it any more
        self._layouts[epoch] = (members, row_bytes)
        floor = max(self._layouts) - 1
        if floor > self._floor:
            self._floor = floor
            for e in [e for e in self._layouts if e < floor]:
                del self._layouts[e]

    # -- writes and sends -----------------------------------------------------------------------

    def write(self, targets: Sequence[int], epoch: int, offset: int, data: bytes) -> None:
        self._check_open()
        layout = self._layouts.get(epoch)
        if layout is None:
            if epoch < self._floor:
                self.stats["dropped_released"] += 1
                return  # a released table: nobody reads it any more
            raise TransportError(f"sim transport: write for epoch {epoch}, never registered")
        members, row_bytes = layout
        size = len(data)
        if size > self.config.frame_bytes_max:
            raise TransportError(
                f"sim transport: a write of {size} bytes exceeds frame_bytes_max "
                f"({self.config.frame_bytes_max})"
            )
        if offset < 0 or offset + size > row_bytes:
            raise TransportError(
                f"sim transport: a write of {size} bytes at {offset} does not fit a "
                f"{row_bytes}-byte row"
            )
        body = (offset, bytes(data), epoch)  # a copy: the caller's buffer changes later
        transmit = self.world._transmit
        for t in targets:
            if t == self.me or t not in members:
                continue  # no copy of this table there
            self.stats["writes"] += 1
            if not transmit(self.me, t, "write", body):
                self.stats["dropped_down"] += 1  # on_link_up makes the replica rewrite its row

    def send(self, target: int, payload: bytes) -> None:
        self._check_open()
        size = len(payload)
        if size > self.config.frame_bytes_max:
            raise TransportError(
                f"sim transport: a message of {size} bytes exceeds frame_bytes_max "
                f"({self.config.frame_bytes_max})"
            )
        self.stats["sends"] += 1
        if target == self.me or not self.world._transmit(
            self.me, target, "data", (bytes(payload),)
        ):
            self.stats["dropped_down"] += 1

    # -- poll, wake, close ----------------------------------------------------------------------

    def poll(self, timeout_s: float | None) -> None:
        """Report everything due by the world's clock, oldest first, and return. Never waits:
        `timeout_s` is ignored (the simulator moves the clock, not the poll)."""
        del timeout_s
        if self._closed:
            return
        ep, handler = self._ep, self._handler
        if ep is None or handler is None:
            raise TransportError("sim transport: poll() before start()")
        ep.woken = False
        if self._sel is not None and self._sel.get_map():
            for key, mask in self._sel.select(0):
                if isinstance(key.data, Watched):
                    key.data.callback(mask)
                if self._closed:
                    return  # a callback closed the transport
        # what is due when the poll begins: what a report's handler makes due (a restarted
        # peer's link report) waits for the next poll, so one poll is bounded
        queue, now = ep.queue, self.world.now_ns
        due = []
        while queue and queue[0][0] <= now:
            due.append(heapq.heappop(queue))
        i = 0
        try:
            while i < len(due):
                _, _, kind, item = due[i]
                i += 1
                self._report(handler, kind, item)
                if self._closed:
                    return  # the handler closed the transport
        finally:
            rest = due[i:]
            if rest and self._closed:
                arrive = self.world.network.arrive
                for _, _, kind, item in rest:
                    if kind == _MSG:
                        arrive(item)  # lost with the endpoint (keeps the counters right)
            else:
                for entry in rest:  # the handler raised: the rest is reported next poll
                    heapq.heappush(queue, entry)

    def _report(self, handler: Handler, kind: str, item: Any) -> None:
        if kind == _MSG:
            if not self.world.network.arrive(item):
                return  # its link broke on the way
            if item.kind == "write":
                offset, data, epoch = item.body
                if epoch < self._floor:
                    self.stats["dropped_released"] += 1
                    return
                self.stats["delivered_writes"] += 1
                handler.on_write(item.source, epoch, offset, data)
            else:
                self.stats["delivered_data"] += 1
                handler.on_data(item.source, item.body[0])
        elif kind == _UP:
            self.stats["links_up"] += 1
            handler.on_link_up(item)
        else:
            self.stats["peer_failed"] += 1
            handler.on_peer_failed(item)

    def linked(self, peer: int) -> bool:
        return self.world.is_up(self.me, peer)

    def wake(self) -> None:
        """Mark this member as having something to do now (`world.ready_members()` lists it;
        `on_due` is told). In a simulation every call is on the simulation's thread; from
        another thread it only sets a flag, which the next poll clears."""
        if self._ep is not None and not self._closed:
            self.world._woken(self.me)

    def watch(self, sock: Any, callback: Callable[[int], None], *, write: bool = False) -> None:
        """Kept for the contract: `poll` checks watched sockets without waiting (`select` with
        a zero timeout). A simulated member should watch none (the simulator's clients are
        calls, not sockets): real sockets are outside the simulation's determinism."""
        if self._handler is None or self._closed:
            raise TransportError("sim transport: watch() before start() or after close()")
        if self._sel is None:
            self._sel = selectors.DefaultSelector()  # only when watched: no fd per member
        super().watch(sock, callback, write=write)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ep is not None:
            self.world._detach(self.me)
            self._ep = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None

    def _check_open(self) -> None:
        if self._handler is None or self._closed:
            raise TransportError("sim transport: used before start() or after close()")
