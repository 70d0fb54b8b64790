"""smr.log: durable segment files, index, group commit, snapshots, trim and crash recovery.

One `Log` holds one ordered stream (one shard at one member). The runtime performs the appends,
syncs, snapshots and trims the core asks for, and reports `durable_version` back to it. All I/O
goes through a `FileSystem` (`OsFileSystem` by default; the simulator passes a `FaultyDisk`).
This package never imports the core, the simulator, the runtime or the CLI.
"""

from smr.log.errors import (
    LogCorruptionError,
    LogError,
    LogWriterError,
    RecordNotFoundError,
    TrimmedError,
)
from smr.log.format import NO_VERSION, Record, RecordDecoder, encode_record, make_version
from smr.log.fs import AppendFile, FileSystem, OsFileSystem
from smr.log.group_commit import GroupCommitWriter
from smr.log.log import (
    Log,
    LogConfig,
    RecoveryReport,
    SegmentInfo,
    Snapshot,
    TornTail,
    check_sync_policy,
)
from smr.log.recovery import RecoverResult, recover
from smr.log.verify import Problem, VerifyResult, verify

__all__ = [
    "NO_VERSION",
    "AppendFile",
    "FileSystem",
    "GroupCommitWriter",
    "Log",
    "LogConfig",
    "LogCorruptionError",
    "LogError",
    "LogWriterError",
    "OsFileSystem",
    "Problem",
    "Record",
    "RecordDecoder",
    "RecordNotFoundError",
    "RecoverResult",
    "RecoveryReport",
    "SegmentInfo",
    "Snapshot",
    "TornTail",
    "TrimmedError",
    "VerifyResult",
    "check_sync_policy",
    "encode_record",
    "make_version",
    "recover",
    "verify",
]
