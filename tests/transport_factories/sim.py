"""The sim provider for the contract suite: every member on one `SimWorld` (seeded delays), whose
clock the suite moves with `elapse` while it waits, since a simulated poll never waits itself."""

from __future__ import annotations

import random

from smr.transport.base import Address, Transport, TransportConfig
from smr.transport.sim import SimTransport, SimWorld

NAME = "sim"
ORDERED_ACROSS_CHANNELS = True  # writes and sends to a peer share one simulated link
SEED = 20261206


def make(members: list[int], config: TransportConfig, tmp_path) -> dict[int, Transport]:
    del tmp_path  # nothing leaves the process
    world = SimWorld(random.Random(SEED))
    addresses = {m: Address("sim", m) for m in members}  # names only: nothing listens
    return {m: SimTransport(m, addresses, config, world=world) for m in members}


def restart(old: Transport) -> Transport:
    assert isinstance(old, SimTransport)
    return SimTransport(old.me, old.addresses, old.config, world=old.world)


def elapse(transports: dict[int, Transport], seconds: float) -> None:
    """What a round of real polls of `seconds` each would take: the world's clock moves on by
    `seconds` (arrivals and failure timers due by then become due to the next polls)."""
    worlds = {id(t.world): t.world for t in transports.values() if isinstance(t, SimTransport)}
    for world in worlds.values():
        world.advance_to(world.now_ns + round(seconds * 1e9))
