"""`Queue`: a replicated FIFO queue of byte strings."""

from __future__ import annotations

from collections import deque

import msgspec

from smr.api import StateMachine, command, query

_decode_items = msgspec.msgpack.Decoder(list[bytes]).decode


class Queue(StateMachine):
    items_max = 1 << 20  # a full queue refuses enqueues rather than growing without bound

    def __init__(self) -> None:
        self.items: deque[bytes] = deque()

    @command
    def enqueue(self, item: bytes) -> int:
        """Add `item` at the tail; returns the new size, or 0 if the queue is full (then
        nothing changed)."""
        if len(self.items) >= self.items_max:
            return 0
        self.items.append(item)
        return len(self.items)

    @command
    def dequeue(self) -> bytes | None:
        """Remove and return the head (None if empty)."""
        return self.items.popleft() if self.items else None

    @query
    def peek(self) -> bytes | None:
        """The head without removing it (None if empty)."""
        return self.items[0] if self.items else None

    @query
    def size(self) -> int:
        return len(self.items)

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(list(self.items))

    def restore(self, data: bytes) -> None:
        self.items = deque(_decode_items(data))
