"""The clients of a chaos run: threads calling the KVStore, every call recorded in a History.

This module owns what the clients do and how each outcome is written down for the checker:
`ok` with the operation's result, `fail` for `NotAppliedError` (it certainly did not take
effect), `unknown` for `OutcomeUnknownError`, a timeout, or anything else (it may have). Every
value written is unique (`c3-17`), so a stale read, a lost write or a write applied twice shows
as a read of the wrong value.

After an `unknown` a client goes on under a new process name (`c3.1`): the unknown operation may
still take effect later, and a process's operations are meant not to overlap.

Keys rotate, as Jepsen's independent keys do: `keys` are live at once, and each is retired for a
fresh one (`k1` -> `k1.1` -> `k1.2`) after `ops_per_key` operations. An operation of unknown
outcome stays concurrent with everything after it on its key, so on a key that lived for a whole
long run the hundreds of timeouts of partitions and total restarts made the search undecidable;
a key that lives for a bounded number of operations keeps each key's history small.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import smr
from smr.check import History
from smr.client import ClientError, NotAppliedError, OutcomeUnknownError
from smr.statemachines import KVStore

OPS = ("put", "get", "compare_and_set")
THINK_S_MAX = 0.02  # a client waits up to this long between two calls (bounds the history)
CLIENT_TIMEOUT_S = 5.0
RECONNECT_S = 0.2


OPS_PER_KEY = 1000  # a key gets this many operations before a fresh one takes its place


def key_names(count: int) -> list[str]:
    return [f"k{i}" for i in range(count)]


class Keys:
    """The live keys and every key ever used; shared by the client threads."""

    def __init__(self, count: int, *, ops_per_key: int) -> None:
        assert count >= 1 and ops_per_key >= 0, (count, ops_per_key)
        self.ops_per_key = ops_per_key  # 0: keys never rotate
        self._generation = [0] * count
        self._ops = [0] * count
        self._used = key_names(count)
        self._lock = threading.Lock()

    @staticmethod
    def name(slot: int, generation: int) -> str:
        return f"k{slot}" + (f".{generation}" if generation else "")

    def pick(self, rng: random.Random) -> str:
        slot = rng.randrange(len(self._ops))
        with self._lock:
            if self.ops_per_key and self._ops[slot] >= self.ops_per_key:
                self._generation[slot] += 1
                self._ops[slot] = 0
                self._used.append(self.name(slot, self._generation[slot]))
            self._ops[slot] += 1
            return self.name(slot, self._generation[slot])

    def used(self) -> list[str]:
        """Every key an operation was called on, in the order they were first used."""
        with self._lock:
            return list(self._used)


def _one(results: Any) -> Any:
    """A command's answer is {member: result}; every replica must agree. A disagreement is a
    bug the checker would miss (it sees one value), so it is raised."""
    values = list(results.values())
    if any(v != values[0] for v in values[1:]):
        raise AssertionError(f"the replicas answered differently: {results!r}")
    return values[0]


class Workload:
    """`clients` threads over `keys` live keys, from `seed` (which op, key and value each one
    picks); a key is retired for a fresh one after `ops_per_key` operations (0: never)."""

    def __init__(
        self,
        config_path: str,
        history: History,
        *,
        clients: int,
        keys: int,
        seed: int,
        ops_per_key: int = OPS_PER_KEY,
    ) -> None:
        self.config_path = config_path
        self.history = history
        self.keys = Keys(keys, ops_per_key=ops_per_key)
        self.seed = seed
        self.clients = clients
        self.stop = threading.Event()
        self.divergent: list[str] = []  # replicas that answered one command differently
        # operation id -> the member its client was attached to when it was called
        self.member_of: dict[int, int | None] = {}
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True, name=f"chaos-client-{i}")
            for i in range(clients)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout_s: float) -> None:
        """Stop the clients; each returns within its call timeout."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))

    def _run(self, index: int) -> None:
        rng = random.Random(f"smr-chaos-client:{self.seed}:{index}")
        generation = 0
        written = 0
        seen: dict[str, bytes | None] = {}  # the last value this client saw per key
        client = None
        try:
            while not self.stop.is_set():
                if client is None:
                    try:
                        client = smr.connect(self.config_path, timeout_s=CLIENT_TIMEOUT_S)
                    except (ClientError, OSError, TimeoutError):
                        self.stop.wait(RECONNECT_S)
                        continue
                    kv = client.subgroup(KVStore, replies="one")
                process = f"c{index}" + (f".{generation}" if generation else "")
                op = rng.choice(OPS)
                key = self.keys.pick(rng)
                value = f"c{index}-{written}".encode()
                if op == "get":
                    args: tuple[Any, ...] = (key,)
                elif op == "put":
                    args = (key, value)
                    written += 1
                else:
                    args = (key, seen.get(key), value)
                    written += 1
                handle = self.history.invoke(process, op, *args)
                self.member_of[handle.id] = client.member
                try:
                    output = kv.get(key) if op == "get" else _one(getattr(kv, op)(*args))
                except NotAppliedError:
                    handle.fail()
                except AssertionError as e:
                    handle.unknown()
                    self.divergent.append(str(e))
                except (OutcomeUnknownError, TimeoutError, ClientError, OSError):
                    handle.unknown()
                    if op != "get":  # a read that got no answer changed nothing
                        generation += 1
                else:
                    handle.ok(output)
                    if op == "get":
                        seen[key] = output
                    elif op == "put" or output:
                        seen[key] = value
                self.stop.wait(rng.uniform(0, THINK_S_MAX))
        finally:
            if client is not None:
                client.close()


def final_reads(config_path: str, history: History, keys: list[str]) -> None:
    """Read every key linearizably once the cluster is whole, into the history: an acknowledged
    write that the cluster lost then makes the history fail the check."""
    with smr.connect(config_path, timeout_s=10.0) as client:
        kv = client.subgroup(KVStore)
        for key in keys:
            handle = history.invoke("final", "get", key)
            try:
                value = kv.get(key)
            except ClientError:
                handle.fail()
                raise
            handle.ok(value)


def member_states(config_path: str, members: list[int], keys: list[str]) -> dict[int, Any]:
    """Each member's own copy of the keys: a command through a client attached to that member
    (answered once every replica applied it), then sequential reads there, which are served from
    its local state at or after that command (read your writes)."""
    states: dict[int, Any] = {}
    for m in members:
        with smr.connect(config_path, member=m, timeout_s=10.0) as client:
            if client.member != m:
                states[m] = f"could not attach to member {m} (got {client.member})"
                continue
            kv = client.subgroup(KVStore, consistency="sequential")
            kv.put("chaos-barrier", f"m{m}".encode())
            states[m] = {k: kv.get(k) for k in keys}
            states[m]["<keys>"] = tuple(kv.keys())
            if client.member != m:  # it failed over meanwhile: what it read was someone else's
                states[m] = f"member {m} dropped the client during the read"
    return states
