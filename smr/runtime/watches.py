"""Watches: a client follows every command applied to a shard, in order, from a version on.

This module owns, per hosted ordered or durable shard, the recent history of applied commands
(version, operation, result), and the watchers of this member's client port with where each is
(its cursor: the last version sent). The node runtime feeds it every applied command, tells it
when a shard's state was replaced (a restart's replay, a state transfer: history before that is
not here) or left, and pumps it once per loop pass; it answers through the client port.

The versions are the group's: every member applies the same command at the same version, so a
watch that loses its member resumes at another from the last version it saw, and gets the rest
with nothing missed and nothing twice. A member serves a watch from version V only if its history
holds everything applied after V (`floor <= V`); otherwise it refuses with `trimmed` = its floor,
and the client has to read the state anew and watch from there. A member behind V sends nothing
until it has applied past V.

Bounds: the history keeps at most `history_max` commands and `history_bytes_max` bytes per shard
(the oldest go first, raising the floor); at most `watchers_max` watchers; one response carries
at most `batch_bytes_max` bytes of events; a watcher whose connection has more than
`backlog_bytes_max` bytes not yet sent is cut off with an error saying where to resume, so a slow
watcher never holds up the member or the group.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from smr.runtime import protocol

HISTORY_MAX = 65536
HISTORY_BYTES_MAX = 64 << 20
WATCHERS_MAX = 1024
BATCH_BYTES_MAX = 1 << 20
BACKLOG_BYTES_MAX = 16 << 20
ENTRY_OVERHEAD_BYTES = 32  # counted per entry besides its operation and result


class _History:
    """The commands applied to one shard after `floor`, in version order."""

    __slots__ = ("bytes", "entries", "floor", "head", "versions")

    def __init__(self, floor: int):
        self.floor = floor
        self.versions: list[int] = []
        self.entries: list[tuple[int, bytes | memoryview, bytes]] = []
        self.head = 0  # entries before it were dropped (compacted away now and then)
        self.bytes = 0

    @property
    def last(self) -> int:
        return self.versions[-1] if len(self.versions) > self.head else self.floor

    def add(
        self, version: int, operation: bytes | memoryview, result: bytes, *, max_n: int, max_b: int
    ) -> None:
        assert version > self.last, f"version {version:#x} after {self.last:#x}"
        self.versions.append(version)
        self.entries.append((version, operation, result))
        self.bytes += len(operation) + len(result) + ENTRY_OVERHEAD_BYTES
        while len(self.versions) - self.head > max_n or (
            self.bytes > max_b and len(self.versions) - self.head > 1
        ):
            v, op, res = self.entries[self.head]
            self.entries[self.head] = (v, b"", b"")
            self.bytes -= len(op) + len(res) + ENTRY_OVERHEAD_BYTES
            self.floor = v
            self.head += 1
        if self.head > 1024 and self.head * 2 > len(self.versions):
            del self.versions[: self.head]
            del self.entries[: self.head]
            self.head = 0

    def after(self, version: int, bytes_max: int) -> list[tuple[int, bytes | memoryview, bytes]]:
        """The entries above `version`, oldest first, at most `bytes_max` bytes (at least one)."""
        i = bisect.bisect_right(self.versions, version, lo=self.head)
        out: list[tuple[int, bytes | memoryview, bytes]] = []
        size = 0
        for entry in self.entries[i:]:
            size += len(entry[1]) + len(entry[2]) + ENTRY_OVERHEAD_BYTES
            if out and size > bytes_max:
                break
            out.append(entry)
        return out


@dataclass(slots=True)
class _Watcher:
    conn_id: int
    request_id: int
    key: tuple[int, int]
    cursor: int  # the last version sent (or asked to start after)


class Watches:
    def __init__(
        self,
        respond: Callable[[int, protocol.Response], None],
        *,
        pending_bytes: Callable[[int], int] | None = None,
        is_open: Callable[[int], bool] | None = None,
        history_max: int = HISTORY_MAX,
        history_bytes_max: int = HISTORY_BYTES_MAX,
        watchers_max: int = WATCHERS_MAX,
        batch_bytes_max: int = BATCH_BYTES_MAX,
        backlog_bytes_max: int = BACKLOG_BYTES_MAX,
    ):
        assert history_max >= 1 and history_bytes_max >= 1 and watchers_max >= 1
        self._respond = respond
        self._pending_bytes = pending_bytes or (lambda conn_id: 0)
        self._is_open = is_open or (lambda conn_id: True)
        self.history_max = history_max
        self.history_bytes_max = history_bytes_max
        self.watchers_max = watchers_max
        self.batch_bytes_max = batch_bytes_max
        self.backlog_bytes_max = backlog_bytes_max
        self._history: dict[tuple[int, int], _History] = {}
        self._watchers: dict[tuple[int, int], _Watcher] = {}  # (conn, request id) -> watcher
        self.cut_off = 0  # watchers cut off for falling behind (a metric)

    # -- fed by the node --------------------------------------------------------------------------

    def reset(self, key: tuple[int, int], version: int) -> None:
        """The shard's state is now at `version`, from elsewhere than commands applied here (a
        replay, a state transfer, a fresh start): the history starts after it."""
        self._history[key] = _History(version)

    def applied(
        self, key: tuple[int, int], version: int, operation: bytes | memoryview, result: bytes
    ) -> None:
        h = self._history.get(key)
        if h is None:  # not reset first: serve only what comes after this command
            h = self._history[key] = _History(version)
            return
        if version <= h.last:
            return  # a command applied again (a replayed session result): already in order
        h.add(version, operation, result, max_n=self.history_max, max_b=self.history_bytes_max)

    def drop(self, key: tuple[int, int], error: str, redirect: list[int]) -> None:
        """This member no longer hosts the shard: its watchers go elsewhere."""
        self._history.pop(key, None)
        for wid, w in list(self._watchers.items()):
            if w.key == key:
                self._end(wid, w, error, redirect)

    def fail_all(self, error: str, redirect: list[int]) -> None:
        """This member stops serving (it halts, rejoins or shuts down)."""
        for wid, w in list(self._watchers.items()):
            self._end(wid, w, error, redirect)
        self._history.clear()

    # -- requests ---------------------------------------------------------------------------------

    def add(self, conn_id: int, request: protocol.Watch) -> None:
        key = (request.subgroup, request.shard)
        h = self._history.get(key)
        if h is None:
            h = self._history[key] = _History(0)
        if request.from_version < h.floor:
            self._respond(
                conn_id,
                protocol.Response(
                    request.id,
                    False,
                    error=f"versions up to {h.floor:#x} of subgroup {key[0]} shard {key[1]} are "
                    f"no longer kept here (asked from {request.from_version:#x}): read the "
                    f"state and watch from its version",
                    trimmed=h.floor,
                ),
            )
            return
        if len(self._watchers) >= self.watchers_max:
            self._respond(
                conn_id,
                protocol.Response(
                    request.id, False, error=f"busy: {self.watchers_max} watchers", retry_ms=100
                ),
            )
            return
        self._watchers[(conn_id, request.id)] = _Watcher(
            conn_id, request.id, key, request.from_version
        )
        # an empty first answer: the watch is in place (a client waits for it before it reports
        # the watch started)
        self._respond(conn_id, protocol.Response(request.id, True, version=request.from_version))

    def pump(self) -> None:
        """Send every watcher what was applied since its cursor (once per loop pass)."""
        for wid, w in list(self._watchers.items()):
            if not self._is_open(w.conn_id):
                del self._watchers[wid]
                continue
            h = self._history.get(w.key)
            if h is None or h.last <= w.cursor:
                continue
            if self._pending_bytes(w.conn_id) > self.backlog_bytes_max:
                self.cut_off += 1
                self._end(
                    wid,
                    w,
                    f"watch cut off: more than {self.backlog_bytes_max:,} bytes of it not yet "
                    f"read by the client; watch again from version {w.cursor:#x}",
                    [],
                )
                continue
            events = h.after(w.cursor, self.batch_bytes_max)
            if not events:
                continue
            w.cursor = events[-1][0]
            batch = [(v, bytes(op), result) for v, op, result in events]
            self._respond(
                w.conn_id, protocol.Response(w.request_id, True, version=w.cursor, events=batch)
            )

    def _end(self, wid: tuple[int, int], w: _Watcher, error: str, redirect: list[int]) -> None:
        del self._watchers[wid]
        self._respond(
            w.conn_id,
            protocol.Response(
                w.request_id, False, version=w.cursor, error=error, redirect=redirect
            ),
        )

    def __len__(self) -> int:
        return len(self._watchers)
