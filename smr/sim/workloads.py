"""Simulator workloads: what the simulated members submit, and the state machines they apply it to.

This module owns the workloads behind `smr sim --workload`. A workload declares the group layout
(several subgroups and shards, mixing delivery modes), generates submissions from the run's seeded
generator, names the `StateMachine` type each subgroup hosts (the simulated members are node
runtimes, which host them as a member process does) and what a read asks, and adds its own
invariant (the bank's conservation).

* `frontier`: no multicast, only the heartbeat-frontier protocol (the foundation's first protocol).
* `bytes`: opaque payloads of random sizes (some larger than a slot, so they take the data plane)
  in an ordered, a durable and a raw shard, appended to a `BlobLog`.
* `kv`: `KVStore` in two shards (ordered and durable) and a `Counter` in a raw shard.
* `bank`: `Bank` transfers in a durable shard with designated senders, plus a `KVStore` shard.
* `counter`: `Counter` in an ordered shard and a raw shard.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from smr.api import StateMachine
from smr.core.layout import SubgroupSpec

WORKLOADS = ("frontier", "bytes", "kv", "bank", "counter")


@dataclass(frozen=True, slots=True)
class Op:
    subgroup: int
    shard: int
    payload: bytes
    reply: bool


class Workload:
    name = "frontier"
    submits = False
    reads = 0.0  # the share of a member's requests that are linearizable reads

    def __init__(self, nodes: int):
        self.nodes = nodes

    def layout(self) -> list[SubgroupSpec]:
        return []

    def machine_types(self) -> list[type[StateMachine]]:
        """The state machine type of each subgroup of `layout()`, in order."""
        return []

    def next_op(self, rng: random.Random, member: int, shards: list[tuple[int, int]]) -> Op | None:
        return None

    def read_op(self, rng: random.Random, subgroup: int) -> bytes:
        """The query payload of a read of a shard of `subgroup`."""
        raise NotImplementedError(f"the {self.name} workload does not read")

    def check_machine(self, subgroup: int, machine: Any) -> str | None:
        """A workload invariant over one machine's state; a message if it does not hold."""
        return None


def _shards_for(nodes: int) -> int:
    return max(1, nodes // 2)


class BytesWorkload(Workload):
    name = "bytes"
    submits = True

    def layout(self) -> list[SubgroupSpec]:
        return [
            SubgroupSpec("ordered", mode="ordered"),
            SubgroupSpec("durable", mode="durable"),
            SubgroupSpec("raw", mode="raw"),
        ]

    def machine_types(self) -> list[type[StateMachine]]:
        from smr.statemachines import BlobLog

        return [_checked(BlobLog)] * 3

    def next_op(self, rng: random.Random, member: int, shards: list[tuple[int, int]]) -> Op | None:
        from smr.statemachines import BlobLog

        sg, sh = rng.choice(shards)
        size = rng.choice((0, 1, 10, 100, 200, 1000, 5000))
        payload = BlobLog.encode_command("append", rng.randbytes(size))
        return Op(sg, sh, payload, rng.random() < 0.3)


def _checked(cls: type[StateMachine]) -> type[StateMachine]:
    """`cls` with `check_queries` on: a query that changes the state's digest raises."""
    return type(cls.__name__, (cls,), {"check_queries": True, "__module__": cls.__module__})


class _MachineWorkload(Workload):
    submits = True
    classes: tuple[str, ...] = ()

    def __init__(self, nodes: int):
        super().__init__(nodes)
        from smr import statemachines

        self.types = [getattr(statemachines, name) for name in self.classes]
        self._checked = [_checked(t) for t in self.types]

    def machine_types(self) -> list[type[StateMachine]]:
        return list(self._checked)


class KVWorkload(_MachineWorkload):
    name = "kv"
    classes = ("KVStore", "Counter")
    reads = 0.3
    KEYS = ("a", "b", "c", "d", "e")

    def layout(self) -> list[SubgroupSpec]:
        n = _shards_for(self.nodes)
        modes = tuple("durable" if i % 2 else "ordered" for i in range(n))
        return [
            SubgroupSpec("KVStore", shards=n, min_size=1, mode=modes),
            SubgroupSpec("Counter", mode="raw"),
        ]

    def next_op(self, rng: random.Random, member: int, shards: list[tuple[int, int]]) -> Op | None:
        sg, sh = rng.choice(shards)
        if sg == 1:
            return Op(sg, sh, self.types[1].encode_command("add", rng.randint(-5, 5)), False)
        kv = self.types[0]
        key = rng.choice(self.KEYS)
        r = rng.random()
        if r < 0.5:
            payload = kv.encode_command("put", key, rng.randbytes(rng.choice((1, 8, 64, 600))))
        elif r < 0.65:
            payload = kv.encode_command("delete", key)
        elif r < 0.85:
            payload = kv.encode_command("compare_and_set", key, None, b"new")
        else:
            payload = kv.encode_command("append", key, b"+")
        return Op(sg, sh, payload, rng.random() < 0.5)

    def read_op(self, rng: random.Random, subgroup: int) -> bytes:
        if subgroup == 1:
            return self.types[1].encode_query("value")
        return self.types[0].encode_query("get", rng.choice(self.KEYS))


class BankWorkload(_MachineWorkload):
    name = "bank"
    classes = ("Bank", "KVStore")
    reads = 0.2
    ACCOUNTS = ("alice", "bob", "carol", "dave")
    TELLERS = (1, 2, 3)

    def layout(self) -> list[SubgroupSpec]:
        # The bank's transfers come from designated tellers (the first three members).
        return [
            SubgroupSpec("Bank", mode="durable", senders=(self.TELLERS,)),
            SubgroupSpec("KVStore", shards=_shards_for(self.nodes), mode="ordered"),
        ]

    def next_op(self, rng: random.Random, member: int, shards: list[tuple[int, int]]) -> Op | None:
        sg, sh = rng.choice(shards)
        if sg == 1:
            kv = self.types[1]
            return Op(sg, sh, kv.encode_command("put", rng.choice("xyz"), b"v"), False)
        if member not in self.TELLERS:
            return None
        bank = self.types[0]
        a, b = rng.sample(self.ACCOUNTS, 2)
        r = rng.random()
        if r < 0.15:
            payload = bank.encode_command("open_account", a)
        elif r < 0.35:
            payload = bank.encode_command("deposit", a, rng.randint(1, 100))
        elif r < 0.45:
            payload = bank.encode_command("withdraw", a, rng.randint(1, 100))
        else:
            payload = bank.encode_command("transfer", a, b, rng.randint(1, 150))
        return Op(sg, sh, payload, True)

    def read_op(self, rng: random.Random, subgroup: int) -> bytes:
        if subgroup == 1:
            return self.types[1].encode_query("get", rng.choice("xyz"))
        return self.types[0].encode_query("total")

    def check_machine(self, subgroup: int, machine: Any) -> str | None:
        if subgroup == 0 and not machine.check_conservation():
            return "the bank's total is not deposits minus withdrawals"
        return None


class CounterWorkload(_MachineWorkload):
    name = "counter"
    classes = ("Counter", "Counter")

    def layout(self) -> list[SubgroupSpec]:
        return [SubgroupSpec("Counter", mode="ordered"), SubgroupSpec("Tally", mode="raw")]

    def next_op(self, rng: random.Random, member: int, shards: list[tuple[int, int]]) -> Op | None:
        sg, sh = rng.choice(shards)
        return Op(sg, sh, self.types[sg].encode_command("add", rng.randint(1, 9)), sg == 0)


def make_workload(name: str, nodes: int) -> Workload:
    cls = {
        "frontier": Workload,
        "bytes": BytesWorkload,
        "kv": KVWorkload,
        "bank": BankWorkload,
        "counter": CounterWorkload,
    }[name]
    return cls(nodes)
