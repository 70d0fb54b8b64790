"""The simulated network: per-link FIFO links with seeded delays, partitions, breaks and heals.

This module owns message transit between simulated members. A link is one direction (a -> b).
Messages on a link arrive in the order sent (per-link FIFO, as every transport promises) after a
delay drawn from the run's seeded generator. A link that goes down drops everything in flight and
everything sent while it is down (a one-sided write to an unreachable peer fails); when it comes
back up the simulator tells both ends (`Replica.on_link_up`) so they resynchronise their rows.
Each link counts what it carried, so the invariant "every write pushed while the link is up is
applied" can be checked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Link:
    up: bool = True
    generation: int = 0  # bumped on every break, so in-flight messages of an old connection drop
    last_arrival_ns: int = 0
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    source: int
    target: int
    kind: str  # "write" | "data"
    generation: int
    body: tuple


@dataclass
class Network:
    rng: random.Random
    delay_ns_min: int = 20_000
    delay_ns_max: int = 200_000
    spike_probability: float = 0.0
    spike_ns_max: int = 5_000_000
    links: dict[tuple[int, int], Link] = field(default_factory=dict)

    def link(self, a: int, b: int) -> Link:
        key = (a, b)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = Link()
        return link

    def transit(self, now_ns: int, message: Message) -> int | None:
        """Register a message on its link; return its arrival time, or None if it is lost."""
        link = self.link(message.source, message.target)
        link.sent += 1
        if not link.up:
            link.dropped += 1
            return None
        delay = self.rng.randint(self.delay_ns_min, self.delay_ns_max)
        if self.spike_probability and self.rng.random() < self.spike_probability:
            delay += self.rng.randint(0, self.spike_ns_max)
        arrival = max(now_ns + delay, link.last_arrival_ns)  # FIFO: never overtake
        link.last_arrival_ns = arrival
        link.in_flight += 1
        return arrival

    def arrive(self, message: Message) -> bool:
        """The message reached the end of its link: True if it is to be applied."""
        link = self.link(message.source, message.target)
        link.in_flight -= 1
        if not link.up or link.generation != message.generation:
            link.dropped += 1
            return False
        link.delivered += 1
        return True

    def generation(self, a: int, b: int) -> int:
        return self.link(a, b).generation

    def set_up(self, a: int, b: int, up: bool) -> bool:
        """Change a link's state; True if it changed."""
        link = self.link(a, b)
        if link.up == up:
            return False
        link.up = up
        if not up:
            link.generation += 1
        return True
