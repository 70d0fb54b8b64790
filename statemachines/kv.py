"""`KVStore`: string keys, bytes values, and a bounded per-key history for reads at a version."""

from __future__ import annotations

import msgspec

from smr.api import Entry, StateMachine, command, query


class KVStore(StateMachine):
    history_max = 64  # versions kept per key for get_at_version; older ones are trimmed

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.history: dict[str, list[tuple[int, bytes | None]]] = {}

    def _record(self, key: str, value: bytes | None, version: int) -> None:
        h = self.history.setdefault(key, [])
        h.append((version, value))
        if len(h) > self.history_max:
            del h[: len(h) - self.history_max]

    @command
    def put(self, key: str, value: bytes, *, entry: Entry) -> bytes | None:
        """Set `key`; returns the previous value."""
        previous = self.data.get(key)
        self.data[key] = value
        self._record(key, value, entry.version)
        return previous

    @command
    def delete(self, key: str, *, entry: Entry) -> bool:
        if key not in self.data:
            return False
        del self.data[key]
        self._record(key, None, entry.version)
        return True

    @command
    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, *, entry: Entry
    ) -> bool:
        """Set `key` to `value` only if it holds `expected` (None: absent)."""
        if self.data.get(key) != expected:
            return False
        self.data[key] = value
        self._record(key, value, entry.version)
        return True

    @command
    def append(self, key: str, suffix: bytes, *, entry: Entry) -> int:
        """Append to the value (absent counts as empty); returns the new length."""
        value = self.data.get(key, b"") + suffix
        self.data[key] = value
        self._record(key, value, entry.version)
        return len(value)

    @query
    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    @query
    def get_at_version(self, key: str, version: int) -> bytes | None:
        """The value `key` had once every entry up to `version` was applied. Raises
        `LookupError` if that version is older than the kept history."""
        h = self.history.get(key, [])
        result = None
        for v, value in h:
            if v > version:
                break
            result = value
        if h and len(h) == self.history_max and version < h[0][0]:
            raise LookupError(f"history of {key!r} starts at version {h[0][0]:#x}")
        return result

    @query
    def keys(self) -> list[str]:
        return sorted(self.data)

    @query
    def size(self) -> int:
        return len(self.data)

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(
            (sorted(self.data.items()), sorted((k, v) for k, v in self.history.items()))
        )

    def restore(self, data: bytes) -> None:
        items, history = msgspec.msgpack.decode(data)
        self.data = {k: v for k, v in items}
        self.history = {k: [(v, x) for v, x in h] for k, h in history}
