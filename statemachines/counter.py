"""`Counter`: one integer. Additions commute, so it suits a `raw` shard too."""

from __future__ import annotations

import msgspec

from smr.api import StateMachine, command, query


class Counter(StateMachine):
    def __init__(self) -> None:
        self.count = 0

    @command
    def add(self, delta: int) -> int:
        """Add `delta` (may be negative); returns the new value."""
        self.count += delta
        return self.count

    @command
    def reset(self) -> int:
        """Set the counter to zero; returns the value it had."""
        previous, self.count = self.count, 0
        return previous

    @query
    def value(self) -> int:
        return self.count

    @query
    def get(self) -> int:
        """The same as `value` (the name `LocalGroup` callers used first)."""
        return self.count

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(self.count)

    def restore(self, data: bytes) -> None:
        self.count = msgspec.msgpack.decode(data, type=int)
