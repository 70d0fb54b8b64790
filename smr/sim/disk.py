"""FaultyDisk: a deterministic in-memory filesystem for the simulator that loses, tears and rots.

Implements `smr.log.fs.FileSystem`. It tracks, for every file, the bytes that are durable (as of
its last fsync) and, for every directory, the entries that are durable (as of its last
`fsync_dir`). `crash(rng)` keeps only what is durable: every unsynced write is lost, except that
with `tear_writes` a random prefix of each file's unsynced bytes survives (the last write torn
part way, as a power cut does). Creates, renames and removes survive a crash only if the directory
was fsynced. `corrupt(path, offset)` flips a byte as a bad sector would. All randomness comes from
the `random.Random` passed in; there is no clock.
"""

from __future__ import annotations

import random

from smr.log.fs import AppendFile, parent


class _Inode:
    __slots__ = ("data", "durable")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""


class _Handle:
    __slots__ = ("_disk", "_epoch", "_inode", "_path")

    def __init__(self, disk: FaultyDisk, inode: _Inode, path: str) -> None:
        self._disk = disk
        self._inode = inode
        self._epoch = disk.crashes
        self._path = path

    def _check(self) -> None:
        if self._epoch != self._disk.crashes:
            raise OSError(f"{self._path}: file handle from before a crash")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._check()
        self._disk.writes += 1
        self._inode.data += data

    def fsync(self) -> None:
        self._check()
        self._disk.fsyncs += 1
        self._inode.durable = bytes(self._inode.data)

    def close(self) -> None:
        pass


class FaultyDisk:
    """See the module docstring. `tear_writes` chooses whether a crash may keep torn prefixes."""

    def __init__(self, *, tear_writes: bool = True) -> None:
        self.tear_writes = tear_writes
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = {"."}
        self.crashes = 0
        self.writes = 0
        self.fsyncs = 0

    # -- FileSystem
    def makedirs(self, path: str) -> None:
        # Directories are durable at once: the log creates its directory once, before any data.
        while path and path not in self._dirs:
            self._dirs.add(path)
            path = parent(path) if "/" in path else ""

    def exists(self, path: str) -> bool:
        return path in self._names or path in self._dirs

    def is_dir(self, path: str) -> bool:
        return path in self._dirs

    def listdir(self, path: str) -> list[str]:
        if path not in self._dirs:
            raise FileNotFoundError(path)
        # files and subdirectories, as os.listdir gives them
        names = {p.rpartition("/")[2] for p in self._names if parent(p) == path}
        names.update(d.rpartition("/")[2] for d in self._dirs if "/" in d and parent(d) == path)
        return sorted(names)

    def create(self, path: str) -> AppendFile:
        self._need_dir(path)
        inode = _Inode()
        self._names[path] = inode
        return _Handle(self, inode, path)

    def open_append(self, path: str) -> AppendFile:
        return _Handle(self, self._inode(path), path)

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        data = self._inode(path).data
        end = len(data) if size < 0 else offset + size
        return bytes(data[offset:end])

    def size(self, path: str) -> int:
        return len(self._inode(path).data)

    def truncate(self, path: str, size: int) -> None:
        inode = self._inode(path)
        del inode.data[size:]
        inode.durable = bytes(inode.data)

    def rename(self, src: str, dst: str) -> None:
        if src in self._dirs:
            self._rename_dir(src, dst)
            return
        self._need_dir(dst)
        self._names[dst] = self._names.pop(src) if src in self._names else self._inode(src)

    def _rename_dir(self, src: str, dst: str) -> None:
        """A directory and everything under it moves, replacing `dst` (durable at once, as
        directories are here)."""
        self._need_dir(dst)

        def under(p: str, top: str) -> bool:
            return p == top or p.startswith(top + "/")

        def moved(p: str) -> str:
            return dst + p[len(src) :]

        for table in (self._names, self._durable_names):
            for p in [p for p in table if under(p, dst)]:
                del table[p]
            for p in [p for p in table if under(p, src)]:
                table[moved(p)] = table.pop(p)
        self._dirs = {d for d in self._dirs if not under(d, dst)}
        self._dirs = {moved(d) if under(d, src) else d for d in self._dirs}

    def lose(self, path: str) -> None:
        """A fault: everything under `path` is gone (the device under it was replaced)."""

        def under(p: str) -> bool:
            return p == path or p.startswith(path + "/")

        for table in (self._names, self._durable_names):
            for p in [p for p in table if under(p)]:
                del table[p]
        self._dirs = {d for d in self._dirs if not under(d)}

    def remove(self, path: str) -> None:
        self._inode(path)
        del self._names[path]

    def fsync_dir(self, path: str) -> None:
        self.fsyncs += 1
        for p in [p for p in self._durable_names if parent(p) == path]:
            del self._durable_names[p]
        for p, inode in self._names.items():
            if parent(p) == path:
                self._durable_names[p] = inode

    # -- faults
    def crash(self, rng: random.Random) -> None:
        """Power cut: keep durable names and bytes; maybe a random prefix of unsynced bytes."""
        self.crashes += 1
        self._names = dict(self._durable_names)
        for path in sorted(self._names):
            inode = self._names[path]
            keep = inode.durable
            pending = bytes(inode.data)
            if self.tear_writes and pending.startswith(keep) and len(pending) > len(keep):
                keep = pending[: len(keep) + rng.randint(0, len(pending) - len(keep))]
            inode.data = bytearray(keep)
            inode.durable = keep

    def corrupt(self, path: str, offset: int) -> None:
        """Flip every bit of one byte, in memory and on 'disk' (a corrupt sector)."""
        inode = self._inode(path)
        assert 0 <= offset < len(inode.data), (path, offset)
        inode.data[offset] ^= 0xFF
        if offset < len(inode.durable):
            d = bytearray(inode.durable)
            d[offset] ^= 0xFF
            inode.durable = bytes(d)

    def durable_size(self, path: str) -> int:
        return len(self._inode(path).durable)

    def _inode(self, path: str) -> _Inode:
        try:
            return self._names[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def _need_dir(self, path: str) -> None:
        if parent(path) not in self._dirs:
            raise FileNotFoundError(parent(path))
