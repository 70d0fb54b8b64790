"""`Queue`: a replicated FIFO queue of byte strings."""

from __future__ import annotations

from collections import deque

import msgspec

from smr.api import StateMachine, command, query


class Queue(StateMachine):
    def __init__(self) -> None:
        self.items: deque[bytes] = deque()

    @command
    def enqueue(self, item: bytes) -> int:
        self.items.append(item)
        return len(self.items)

    @command
    def dequeue(self) -> bytes | None:
        return self.items.popleft() if self.items else None

    @query
    def peek(self) -> bytes | None:
        return self.items[0] if self.items else None

    @query
    def size(self) -> int:
        return len(self.items)

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(list(self.items))

    def restore(self, data: bytes) -> None:
        self.items = deque(msgspec.msgpack.decode(data, type=list[bytes]))
