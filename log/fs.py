"""The filesystem interface every byte of the log goes through, and its OS implementation.

The log never calls `open` or `os` directly, so the simulator can hand it a `FaultyDisk`
(`smr.sim.disk`) that loses unsynced writes, tears the tail and flips bytes. Paths are plain
strings joined with "/". Durability contract, which both implementations follow:
- bytes written through an `AppendFile` are durable after its `fsync()`;
- a create, rename or remove is durable after `fsync_dir()` of the parent directory;
- `truncate()` is durable when it returns.
"""

from __future__ import annotations

import os
from typing import Protocol


class AppendFile(Protocol):
    """A file opened for appending; writes go to its end."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def fsync(self) -> None: ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    """The operations the log needs; see the module docstring for the durability contract."""

    def makedirs(self, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]: ...

    def create(self, path: str) -> AppendFile:
        """Create (or empty) a file and open it for appending."""
        ...

    def open_append(self, path: str) -> AppendFile: ...

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes: ...

    def size(self, path: str) -> int: ...

    def truncate(self, path: str, size: int) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None: ...


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts if p)


def parent(path: str) -> str:
    head, _, _ = path.rpartition("/")
    return head or "."


class _OsAppendFile:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        # os.write may write less than asked (signals, pipes); loop so a short write never
        # leaves a hole that recovery would later call corruption.
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def fsync(self) -> None:
        # fdatasync is enough: the size change is data; timestamps are not needed for recovery.
        if hasattr(os, "fdatasync"):
            os.fdatasync(self._fd)
        else:  # pragma: no cover - macOS
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsFileSystem:
    """The real filesystem (the default)."""

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def create(self, path: str) -> AppendFile:
        return _OsAppendFile(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        )

    def open_append(self, path: str) -> AppendFile:
        return _OsAppendFile(os.open(path, os.O_WRONLY | os.O_APPEND))

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def truncate(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(fs: FileSystem, path: str, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new content.

    Temp file, fsync, rename, fsync the directory: the rename is only durable after the directory
    fsync, and only atomic if the data was durable before it.
    """
    tmp = path + ".tmp"
    f = fs.create(tmp)
    try:
        f.write(data)
        f.fsync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.fsync_dir(parent(path))
