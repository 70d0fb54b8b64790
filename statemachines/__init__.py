"""Example state machines, installed as `smr.statemachines`: a key-value store with history, a
counter, a bank with a conservation invariant, and a FIFO queue. Each shows the StateMachine API:
operations declared with `@command` and `@query`, deterministic snapshots."""

from smr.statemachines.bank import Bank
from smr.statemachines.counter import Counter
from smr.statemachines.kv import KVStore
from smr.statemachines.queue import Queue

__all__ = ["Bank", "Counter", "KVStore", "Queue"]
