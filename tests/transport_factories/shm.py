"""The shm provider for the contract suite: every member on this host, in a cluster directory of
its own under /dev/shm (a fresh cluster name per call, so parallel runs never share files)."""

from __future__ import annotations

import dataclasses
import uuid

from smr.transport.base import Address, Transport, TransportConfig
from smr.transport.shm import ShmTransport

NAME = "shm"


def make(members: list[int], config: TransportConfig, tmp_path) -> dict[int, Transport]:
    del tmp_path  # the tables live in /dev/shm; close() removes them
    config = dataclasses.replace(config, cluster=f"c-{uuid.uuid4().hex[:12]}")
    addresses = {m: Address("localhost", 0) for m in members}  # shm needs only distinct ids
    return {m: ShmTransport(m, addresses, config) for m in members}


def restart(old: Transport) -> Transport:
    return ShmTransport(old.me, old.addresses, old.config)
