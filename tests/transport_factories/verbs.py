"""The verbs provider for the contract suite, over the in-repo pyverbs fake (this machine has no
RDMA device): the provider's real code with QPs connected inside the test process, and the
bootstrap on loopback TCP."""

from __future__ import annotations

from fakes import pyverbs_fake

from smr.transport.base import Address, Transport, TransportConfig
from smr.transport.verbs import VerbsTransport

from .tcp import free_ports

NAME = "verbs"


def make(members: list[int], config: TransportConfig, tmp_path) -> dict[int, Transport]:
    del tmp_path
    ports = free_ports(len(members))
    addresses = {m: Address("127.0.0.1", p) for m, p in zip(members, ports, strict=True)}
    return {m: VerbsTransport(m, addresses, config, pyverbs=pyverbs_fake) for m in members}


def restart(old: Transport) -> Transport:
    return VerbsTransport(old.me, old.addresses, old.config, pyverbs=pyverbs_fake)
