"""Example state machines, installed as `smr.statemachines`.

This package owns the examples that show the StateMachine API in use and that the simulator,
the demo and the tests replicate:

* `KVStore`: string keys, bytes values, a bounded per-key history for `get_at_version`;
* `Counter`: one integer (its additions commute, so it also suits a `raw` shard);
* `Bank`: accounts and transfers that refuse cleanly, with a conservation invariant;
* `Queue`: a FIFO of byte strings;
* `BlobLog`: appends that keep only a count, a byte total and a running checksum (benchmarks).

Each declares its operations with `@command` / `@query` and has a deterministic snapshot
(sorted, so equal states give equal digests whatever their history).
"""

from smr.statemachines.bank import Bank
from smr.statemachines.blob import BlobLog
from smr.statemachines.counter import Counter
from smr.statemachines.kv import KVStore
from smr.statemachines.queue import Queue

__all__ = ["Bank", "BlobLog", "Counter", "KVStore", "Queue"]
