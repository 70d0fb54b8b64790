"""Disk faults on real member processes: a full file system, and fsync returning EIO.

This module owns the two disk faults of a chaos run and their removal:

* `disk-full`: each member's data directory is its own tmpfs (mounted before the members start,
  unmounted after they stop); the fault fills one member's tmpfs with a ballast file, so its next
  log write fails with ENOSPC; healing removes the ballast.
* `fsync-error`: every member runs with a small LD_PRELOAD library (compiled here from C with the
  system's compiler) whose `fsync` and `fdatasync` fail with EIO while a trigger file exists;
  the fault creates one member's trigger, healing deletes it. Writes still succeed: the classic
  case of data that reached the page cache and not the disk.

Either way the member must stop at once (exit status 4, `smr.runtime.node.DiskFailed`), and it
is started again once healed; nothing it acknowledged may be lost. `heal()` undoes every fault
and is safe to call at any time (the run calls it in `finally`); `close()` unmounts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess

TMPFS_SIZE = "256m"  # each member's data directory: the logs of a run fit many times over
TRIGGER_ENV = "SMR_FAULT_FSYNC_TRIGGER"

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failing(void) {
    const char *trigger = getenv("SMR_FAULT_FSYNC_TRIGGER");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (failing()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (failing()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"""


class DiskFaultUnavailable(Exception):
    """A disk fault cannot be made here; the message says why and what to do."""


def check_full_available() -> None:
    if os.geteuid() != 0:
        raise DiskFaultUnavailable(
            "a full disk needs root (each member's data directory is mounted as its own tmpfs); "
            "run as root or leave out --faults disk-full"
        )
    if shutil.which("mount") is None:
        raise DiskFaultUnavailable("mount is missing; leave out --faults disk-full")


def build_shim(directory: str) -> str:
    """Compile the fsync shim into `directory`; return the library's path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise DiskFaultUnavailable(
            "fsync errors need a C compiler to build their LD_PRELOAD shim (apt-get install gcc), "
            "or leave out --faults fsync-error"
        )
    source = os.path.join(directory, "fsync_shim.c")
    library = os.path.join(directory, "fsync_shim.so")
    with open(source, "w") as f:
        f.write(SHIM_C)
    done = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", library, source, "-ldl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise DiskFaultUnavailable(f"building the fsync shim failed: {done.stderr.strip()}")
    return library


class DiskFaults:
    """The disk faults of one run over members `dirs` (member -> data directory)."""

    def __init__(self, dirs: dict[int, str], scratch: str, *, full: bool, shim: str | None):
        """`full`: mount a tmpfs on every directory (`DiskFaultUnavailable` if one fails);
        `shim`: the fsync library of `build_shim`, or None (no fsync faults)."""
        self.dirs = dirs
        self.scratch = scratch
        self.mounted: list[str] = []
        self.ballasts: list[str] = []
        self.shim = shim
        if full:
            for d in dirs.values():
                self._mount(d)

    def _mount(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", path],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            self.close()
            raise DiskFaultUnavailable(f"mounting a tmpfs on {path}: {done.stderr.strip()}")
        self.mounted.append(path)

    def trigger(self, member: int) -> str:
        return os.path.join(self.scratch, f"fsync-fails-{member}")

    def env(self, member: int) -> dict[str, str]:
        """What member `member`'s process runs with (nothing without the fsync fault)."""
        if self.shim is None:
            return {}
        preload = " ".join(p for p in (self.shim, os.environ.get("LD_PRELOAD", "")) if p)
        return {"LD_PRELOAD": preload, TRIGGER_ENV: self.trigger(member)}

    def fill(self, member: int) -> None:
        """Fill member `member`'s file system: its next write fails with ENOSPC."""
        path = os.path.join(self.dirs[member], "chaos-ballast")
        self.ballasts.append(path)
        chunk = b"\0" * (1 << 20)
        # unbuffered: a buffered file keeps the tail of the last chunk and raises ENOSPC again
        # when it is closed (which stopped a 10-minute run with the full disk as the nemesis's
        # own error)
        with open(path, "wb", buffering=0) as f:
            try:
                while f.write(chunk):
                    pass
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise

    def fail_fsync(self, member: int) -> None:
        """From now on every fsync of member `member` fails with EIO."""
        with open(self.trigger(member), "w"):
            pass

    def heal(self) -> list[str]:
        """Remove every ballast and trigger. Returns the problems met (never raises)."""
        problems = []
        for path in self.ballasts:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                problems.append(f"removing {path}: {e}")
        self.ballasts.clear()
        for member in self.dirs:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.trigger(member))
        return problems

    def close(self) -> list[str]:
        """Heal, then unmount every tmpfs (the members must have stopped)."""
        problems = self.heal()
        for path in reversed(self.mounted):
            done = subprocess.run(
                ["umount", "-l", path], capture_output=True, text=True, timeout=30, check=False
            )
            if done.returncode != 0:
                problems.append(f"unmounting {path}: {done.stderr.strip()}")
        self.mounted.clear()
        return problems
