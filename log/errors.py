"""Errors of the durable log: what a user or the runtime can hit, each with a one-line message."""

from __future__ import annotations


class LogError(Exception):
    """Base class of every error the log raises on purpose."""


class LogCorruptionError(LogError):
    """Bytes on disk fail a check: names the file, the byte offset and what is wrong.

    Raised for damage that a crash cannot explain (a bad record followed by valid data, a bad sealed
    segment, a bad header); a torn tail of the last segment is repaired instead and reported in
    `RecoveryReport`.
    """

    def __init__(self, path: str | None, offset: int, what: str) -> None:
        self.path = path
        self.offset = offset
        self.what = what
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}byte {offset}: {what}")


class TrimmedError(LogError, LookupError):
    """A read asked for a version that `trim_below` removed."""

    def __init__(self, version: int, trimmed_below: int) -> None:
        self.version = version
        self.trimmed_below = trimmed_below
        super().__init__(
            f"version {version:#x} was trimmed (the log starts at {trimmed_below:#x}); "
            "restore from the newest snapshot instead"
        )


class RecordNotFoundError(LogError, LookupError):
    """A read asked for a version that was never appended (versions are not contiguous)."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(f"no record with version {version:#x} in the log")


class LogWriterError(LogError):
    """The group-commit thread failed; the cause is chained. Nothing after it was made durable."""
