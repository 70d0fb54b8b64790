"""`KVStore`: string keys, bytes values, and a bounded per-key version history for reads at a
version (`get_at_version`), trimmed by a per-key bound and by the `trim_history` command."""

from __future__ import annotations

from bisect import bisect_right

import msgspec

from smr.api import Entry, StateMachine, command, query

# The snapshot: sorted items, sorted histories, sorted per-key floors, the trim point.
_State = tuple[
    list[tuple[str, bytes]],
    list[tuple[str, list[tuple[int, bytes | None]]]],
    list[tuple[str, int]],
    int,
]
_decode_state = msgspec.msgpack.Decoder(_State).decode


def _version(change: tuple[int, bytes | None]) -> int:
    return change[0]


class KVStore(StateMachine):
    """A replicated dictionary. Every change is recorded as `(version, value or None)` in its
    key's history, so `get_at_version` can answer what a key held once all entries up to a
    version were applied."""

    history_max = 64  # changes kept per key; older ones are trimmed (and reads before them fail)

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.history: dict[str, list[tuple[int, bytes | None]]] = {}
        # Reads at versions below these were trimmed away: per key by `history_max`, for every
        # key by `trim_history`.
        self.floors: dict[str, int] = {}
        self.trimmed_to = 0

    def _record(self, key: str, value: bytes | None, version: int) -> None:
        changes = self.history.setdefault(key, [])
        assert not changes or changes[-1][0] <= version, "entries are applied in version order"
        changes.append((version, value))
        if len(changes) > self.history_max:
            del changes[: len(changes) - self.history_max]
            self.floors[key] = changes[0][0]

    @command
    def put(self, key: str, value: bytes, *, entry: Entry) -> bytes | None:
        """Set `key`; returns the previous value (None if it was absent)."""
        previous = self.data.get(key)
        self.data[key] = value
        self._record(key, value, entry.version)
        return previous

    @command
    def delete(self, key: str, *, entry: Entry) -> bool:
        """Remove `key`; returns whether it was present."""
        if key not in self.data:
            return False
        del self.data[key]
        self._record(key, None, entry.version)
        return True

    @command
    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, *, entry: Entry
    ) -> bool:
        """Set `key` to `value` only if it holds `expected` (None: absent); returns whether
        it did."""
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

    @command
    def trim_history(self, version: int) -> int:
        """Forget the history that only reads before `version` need; returns how many
        changes were dropped. Reads at `version` and later still work."""
        if version <= self.trimmed_to:
            return 0
        self.trimmed_to = version
        dropped = 0
        for key in list(self.history):
            changes = self.history[key]
            # Keep the last change at or before `version`: it is the value at `version`.
            cut = bisect_right(changes, version, key=_version) - 1
            if cut > 0:
                del changes[:cut]
                dropped += cut
            if len(changes) == 1 and changes[0][1] is None and changes[0][0] <= version:
                # Absent since before the trim point: absence needs no record.
                del self.history[key]
                dropped += 1
            if self.floors.get(key, version + 1) <= version:
                del self.floors[key]  # `trimmed_to` now says as much
        return dropped

    @query
    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    @query
    def get_at_version(self, key: str, version: int) -> bytes | None:
        """The value `key` had once every entry up to `version` was applied (None: absent).
        Raises `LookupError` if that part of the history was trimmed."""
        floor = max(self.trimmed_to, self.floors.get(key, 0))
        if version < floor:
            raise LookupError(
                f"the history of {key!r} before version {floor:#x} was trimmed; read at a "
                "later version"
            )
        changes = self.history.get(key, ())
        i = bisect_right(changes, version, key=_version)
        return changes[i - 1][1] if i else None

    @query
    def keys(self) -> list[str]:
        """The present keys, sorted."""
        return sorted(self.data)

    @query
    def size(self) -> int:
        """How many keys are present."""
        return len(self.data)

    def snapshot(self) -> bytes:
        # Sorted, so equal states give equal bytes whatever order the dicts were filled in.
        return msgspec.msgpack.encode(
            (
                sorted(self.data.items()),
                sorted(self.history.items()),
                sorted(self.floors.items()),
                self.trimmed_to,
            )
        )

    def restore(self, data: bytes) -> None:
        items, history, floors, self.trimmed_to = _decode_state(data)
        self.data = dict(items)
        self.history = dict(history)
        self.floors = dict(floors)
