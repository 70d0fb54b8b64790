"""`Counter`: one integer. Additions commute, so it suits a `raw` shard too."""

from __future__ import annotations

import msgspec

from smr.api import StateMachine, command, query


class Counter(StateMachine):
    def __init__(self) -> None:
        self.value = 0

    @command
    def add(self, delta: int) -> int:
        self.value += delta
        return self.value

    @command
    def reset(self) -> int:
        previous, self.value = self.value, 0
        return previous

    @query
    def get(self) -> int:
        return self.value

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(self.value)

    def restore(self, data: bytes) -> None:
        self.value = msgspec.msgpack.decode(data, type=int)
