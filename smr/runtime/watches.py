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
from itertools import accumulate, repeat
from operator import add

from smr.runtime import protocol

HISTORY_MAX = 65536
HISTORY_BYTES_MAX = 64 << 20
WATCHERS_MAX = 1024
BATCH_BYTES_MAX = 1 << 20
BACKLOG_BYTES_MAX = 16 << 20
ENTRY_OVERHEAD_BYTES = 32  # counted per entry besides its operation and result


class _History:
    """The commands applied to one shard after `floor`, in version order: `versions[i]` and
    `entries[i]` = (version, payload, result), live from `head` on. `ends[i]` counts the bytes of
    every entry up to and including `i` (each its payload, its result and ENTRY_OVERHEAD_BYTES),
    from `base` before the first, so the bytes bound is a bisection and a batch is added by
    C-level list operations: nothing here runs per command in Python."""

    __slots__ = ("base", "ends", "entries", "floor", "head", "versions")

    def __init__(self, floor: int):
        self.floor = floor
        self.versions: list[int] = []
        self.entries: list[tuple[int, bytes, bytes]] = []
        self.ends: list[int] = []
        self.base = 0  # ends' count before entries[0] (what compaction cut off)
        self.head = 0  # entries before it were dropped; compacted away now and then

    @property
    def last(self) -> int:
        return self.versions[-1] if len(self.versions) > self.head else self.floor

    def _start(self, i: int) -> int:
        return self.ends[i - 1] if i else self.base

    @property
    def size_bytes(self) -> int:
        return self.ends[-1] - self._start(self.head) if self.ends else 0

    def extend(
        self,
        versions: list[int],
        payloads: list[bytes],
        results: list[bytes],
        *,
        max_n: int,
        max_b: int,
    ) -> None:
        if not versions:
            return
        assert versions[0] > self.last, f"version {versions[0]:#x} after {self.last:#x}"
        assert versions[-1] >= versions[0], "a batch's versions out of order"
        self.versions.extend(versions)
        self.entries.extend(zip(versions, payloads, results, strict=True))
        sizes = map(
            add, map(add, map(len, payloads), map(len, results)), repeat(ENTRY_OVERHEAD_BYTES)
        )
        total = accumulate(sizes, initial=self.ends[-1] if self.ends else self.base)
        next(total)
        self.ends.extend(total)
        n = len(self.versions)
        head = max(self.head, n - max_n)
        end = self.ends[-1]
        if end - self._start(head) > max_b:
            # drop through the first entry whose end leaves at most max_b; one always stays
            head = min(bisect.bisect_left(self.ends, end - max_b, lo=head) + 1, n - 1)
        if head > self.head:
            self.floor = self.versions[head - 1]
            self.head = head
        # what was dropped is still referenced until compaction: at most an eighth of the
        # history's bound, in entries or in bytes
        if (head > 1024 and head * 8 > n) or self._start(head) - self.base > max_b // 8:
            self.base = self._start(head)
            del self.versions[:head]
            del self.entries[:head]
            del self.ends[:head]
            self.head = 0

    def after(self, version: int, bytes_max: int) -> list[tuple[int, bytes, bytes]]:
        """The entries above `version`, oldest first, at most `bytes_max` bytes (at least one)."""
        i = bisect.bisect_right(self.versions, version, lo=self.head)
        if i == len(self.versions):
            return []
        # the last entry within bytes_max of what comes before entry i, and at least entry i
        j = bisect.bisect_right(self.ends, self._start(i) + bytes_max, lo=i)
        return self.entries[i : max(j, i + 1)]


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
        operation_of: Callable[[bytes], bytes | memoryview] = lambda p: p,
    ):
        """`operation_of(payload)`: a delivered entry's operation, what a watcher is sent (the
        node strips the client envelope: `smr.runtime.hosted.operation_of`)."""
        assert history_max >= 1 and history_bytes_max >= 1 and watchers_max >= 1
        self._respond = respond
        self._pending_bytes = pending_bytes or (lambda conn_id: 0)
        self._is_open = is_open or (lambda conn_id: True)
        self.history_max = history_max
        self.history_bytes_max = history_bytes_max
        self.watchers_max = watchers_max
        self.batch_bytes_max = batch_bytes_max
        self.backlog_bytes_max = backlog_bytes_max
        self._operation_of = operation_of
        self._history: dict[tuple[int, int], _History] = {}
        self._watchers: dict[tuple[int, int], _Watcher] = {}  # (conn, request id) -> watcher
        self.cut_off = 0  # watchers cut off for falling behind (a metric)

    # -- fed by the node --------------------------------------------------------------------------

    def reset(self, key: tuple[int, int], version: int) -> None:
        """The shard's state is now at `version`, from elsewhere than commands applied here (a
        replay, a state transfer, a fresh start): the history starts after it."""
        self._history[key] = _History(version)

    def applied(self, key: tuple[int, int], version: int, payload: bytes, result: bytes) -> None:
        """One command applied at `version` (`payload`: what was delivered, its operation is
        `operation_of(payload)`); `applied_many` is the same for a batch."""
        self.applied_many(key, [version], [payload], [result])

    def applied_many(
        self,
        key: tuple[int, int],
        versions: list[int],
        payloads: list[bytes],
        results: list[bytes],
    ) -> None:
        """Commands applied to shard `key`, in version order (a retry answered from a session
        left out by the caller: it changed nothing). The operation a watcher is sent is
        `operation_of(payload)`, taken when it is sent, so a command costs no view here."""
        if not versions:
            return
        h = self._history.get(key)
        if h is None:  # not reset first: serve only what comes after these commands
            self._history[key] = _History(versions[-1])
            return
        if versions[0] <= h.last:
            # applied again (replayed session results): already in order
            keep = bisect.bisect_right(versions, h.last)
            versions, payloads, results = versions[keep:], payloads[keep:], results[keep:]
        h.extend(versions, payloads, results, max_n=self.history_max, max_b=self.history_bytes_max)

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
            strip = self._operation_of
            batch = [(v, bytes(strip(payload)), result) for v, payload, result in events]
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
