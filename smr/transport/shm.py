"""The shared-memory transport: members of one host write straight into each other's tables.

This module owns the shm provider (`ShmTransport`) and the seqlock row protocol (`RowSlot`,
`region_bytes`, the region header codec) that the verbs provider reuses for its RDMA writes.

Files, all in `<root>/smr-<cluster>-u<uid>/` (a 0700 directory; every file is 0600, which is the
whole of the authentication: only the cluster's user can map a table or ring a doorbell):

- `t<target>-<inc>-e<epoch>.tbl`: the table of `epoch` as seen by `target` in its incarnation
  `inc` (a random 63-bit number drawn at `start`), mapped by the target and by every peer that
  writes into it. Peers write **directly** into their own row of it: a true one-sided write,
  no copy by the target's process and no message.
- `m<id>.bell`: a FIFO, the member's doorbell. A writer appends a 16-byte record `(source,
  epoch)` after writing; the reader blocks on it in `poll` and drains it whole.
- `m<id>.sock`: a UNIX stream listener: the data channel and the liveness signal.

Region layout (every offset a multiple of 64 so that no word straddles a cache line): a header
(`SMRTBL01`, epoch, row_bytes, the member list) and then one slot per member in list order. A
slot is a 128-byte row header and the row's bytes: word 0 is the row's sequence number, words
1..7 the byte ranges of the last seven writes, and word 8 (its own cache line) is `seen`, the
sequence number the reader last reported, written only by the reader.

Why no read is torn: the row is a seqlock with exactly one writer (the row's owner) and one
reader (the region's target). The writer makes the sequence odd, copies, records the range and
makes it even; the reader copies the row between two reads of the sequence and keeps the copy
only if both were the same even number. Each word is stored by one aligned 8-byte store
(`memoryview.cast("Q")` item assignment), and x86-64 keeps stores in program order and loads in
program order, so the reader either sees the whole write or retries. It spins at most
`spins_max` times; a row still busy is retried on the next poll, and a row busy for
`peer_failed_after_s` (its writer stopped or died in the middle of a write) is reported as a
failure of its writer. The reader reports the union of the ranges written since its last report
(or the whole row when more than seven writes happened): a snapshot of a row is exactly what a
FIFO sequence of whole writes produces, so per-link FIFO holds.

Why no ring is lost, and why rings coalesce: after a write the writer fences and reads `seen`; it
rings only when the reader had reported everything before this write (`seen` equals the
sequence before it), or on its first write through a fresh mapping. The reader stores `seen`,
fences and re-reads the sequence, and reads the row again if it moved. With a full fence on both
sides (a lock's atomic instruction; Python has no bare fence), at least one of them sees the
other's store: either the writer rings or the reader re-reads. So a busy writer rings once per
round trip of its reader, not once per write.

Why no write of an epoch is lost or mixed with the next: each (target, incarnation, epoch) has
its own region, created by whichever side comes first (the layout is deterministic, and the file
is published with `link`, so exactly one creation wins and a half-written header is never seen).
A writer in epoch e+1 writes a different file from the reader still in e. The reader scans a
source's epochs newest first and reports them oldest first, so everything the source wrote in e
before its first write in e+1 is reported before that write (FIFO across epochs). A target frees
its regions older than the previous epoch when it registers a new one; a writer unmaps them too.
A restarted member has a new incarnation and so new files: it can never read a stale region, and
it deletes every file of its id left by a dead incarnation (it knows the old one is dead because
it could not connect to its listener).

Failure reporting: a member connects to every peer's listener and exchanges a hello (id,
incarnation, pid). The connection breaks the moment the peer's process dies (the kernel closes
its sockets); the link is then down, writes and sends to it are dropped, reconnection is retried
with doubling backoff, and `on_peer_failed` is reported once it stays down for
`peer_failed_after_s` (also for a peer never reached since `start`), or at once when a peer whose
link was up broke it and nobody listens under its id any more: on one host that means its process
ended, so the group need not wait for the heartbeat timeout. A successful hello reports
`on_link_up` (the replica then rewrites its whole row).

The data channel is that stream connection (8-byte length, then the payload): the kernel gives
it bounded buffers, flow control and FIFO, which an SPSC ring in shared memory would have to
rebuild with a second doorbell in the other direction, and its EOF is the liveness signal.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import selectors
import socket
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smr.transport.base import (
    Address,
    Handler,
    Transport,
    TransportConfig,
    TransportError,
    Watched,
)

REGION_MAGIC = b"SMRTBL01"
HELLO_MAGIC = b"SMRSHM01"
LINE_BYTES = 64
WORD_BYTES = 8
# The row header: the writer's lines (seq, then the ranges of its last writes), then the reader's
# line (seen). 31 ranges: under load a member pushes several times between two reads of its
# peer, and past the ranges kept the reader must copy the whole row.
WRITER_HEADER_BYTES = 4 * LINE_BYTES
RANGES_MAX = WRITER_HEADER_BYTES // WORD_BYTES - 1
SEEN_WORD = WRITER_HEADER_BYTES // WORD_BYTES  # word index of `seen` in the row header
ROW_HEADER_BYTES = WRITER_HEADER_BYTES + LINE_BYTES
MERGE_GAP_BYTES = 256  # changed ranges closer than this are copied as one

_REGION_HEAD = struct.Struct("<8sQQQ")  # magic, epoch, row_bytes, members
_HELLO = struct.Struct("<8sqQq")  # magic, member, incarnation, pid
_RING = struct.Struct("<qq")  # source, epoch (a wake is source -1)
_LEN = struct.Struct("<Q")
_CLUSTER_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_SUN_PATH_MAX = 107


def align(n: int, to: int = LINE_BYTES) -> int:
    return (n + to - 1) // to * to


def slot_bytes(row_bytes: int) -> int:
    return ROW_HEADER_BYTES + align(row_bytes)


def header_bytes(n_members: int) -> int:
    return align(_REGION_HEAD.size + WORD_BYTES * n_members)


def region_bytes(n_members: int, row_bytes: int) -> int:
    """Bytes of a region holding `n_members` rows of `row_bytes` (deterministic per epoch)."""
    return header_bytes(n_members) + n_members * slot_bytes(row_bytes)


def encode_region_header(epoch: int, members: Sequence[int], row_bytes: int) -> bytes:
    head = _REGION_HEAD.pack(REGION_MAGIC, epoch, row_bytes, len(members))
    body = struct.pack(f"<{len(members)}q", *members)
    return (head + body).ljust(header_bytes(len(members)), b"\0")


def decode_region_header(buf: bytes | memoryview) -> tuple[int, tuple[int, ...], int]:
    """(epoch, members, row_bytes) of a region; TransportError if it is not one."""
    if len(buf) < _REGION_HEAD.size:
        raise TransportError("a table region shorter than its header")
    magic, epoch, row_bytes, n = _REGION_HEAD.unpack_from(buf, 0)
    if magic != REGION_MAGIC or not 0 < n <= 1 << 16:
        raise TransportError("a table region with a bad header")
    if len(buf) < region_bytes(n, row_bytes):
        raise TransportError("a table region shorter than its layout")
    members = struct.unpack_from(f"<{n}q", buf, _REGION_HEAD.size)
    return epoch, tuple(members), row_bytes


_fence_lock = threading.Lock()


def fence() -> None:
    """A full memory barrier: acquiring and releasing a lock runs a locked (atomic) instruction,
    which orders the stores before it against the loads after it (the seqlock's `seen`
    handshake needs store-load order, which plain x86 stores and loads do not give)."""
    _fence_lock.acquire()
    _fence_lock.release()


BUSY = object()  # a row read gave up: its writer is in the middle of a write


def read_row(slot: RowSlot, ranges: Any, spins_max: int) -> Any:
    """One read of a peer's row for a handler: its changed ranges apart when the handler takes
    them (`ranges`: its `on_write_ranges`), else their union."""
    if ranges is not None:
        return slot.read_ranges(slot.seen, spins_max)
    return slot.read(slot.seen, spins_max)


def report_row(handler: Any, ranges: Any, source: int, epoch: int, r: Any) -> int:
    """Hand a `read_row` result to the handler; returns the row's sequence number."""
    if ranges is not None:
        ranges(source, epoch, r[1])
    else:
        handler.on_write(source, epoch, r[1], r[2])
    return r[0]


class RowSlot:
    """One row of a region: its seqlock header and its bytes, over shared memory.

    The writer side (`write`) is used only by the row's owner, the reader side (`read`,
    `mark_seen`) only by the region's target. The verbs provider runs `write` on a local shadow
    slot and copies the same words to the peer with RDMA writes in the same order."""

    __slots__ = ("data", "q", "row_bytes")

    def __init__(self, buf: memoryview, offset: int, row_bytes: int):
        assert offset % LINE_BYTES == 0
        self.q = buf[offset : offset + ROW_HEADER_BYTES].cast("Q")
        self.data = buf[offset + ROW_HEADER_BYTES : offset + ROW_HEADER_BYTES + row_bytes]
        self.row_bytes = row_bytes

    def release(self) -> None:
        self.q.release()
        self.data.release()

    @property
    def seq(self) -> int:
        return self.q[0]

    @property
    def seen(self) -> int:
        return self.q[SEEN_WORD]

    def write(self, offset: int, data: bytes | memoryview) -> int:
        """Apply a write whole under the seqlock; returns the sequence number before it."""
        end = offset + len(data)
        assert 0 <= offset <= end <= self.row_bytes, (offset, end, self.row_bytes)
        q = self.q
        before = q[0]
        if before & 1:  # a writer of an earlier incarnation died mid-write: finish its seqlock,
            before += 1  # and count its write as one of the whole row (its range is unknown)
            q[1 + (before // 2) % RANGES_MAX] = self.row_bytes << 32
        q[0] = before + 1
        self.data[offset:end] = data
        q[1 + ((before + 2) // 2) % RANGES_MAX] = offset | (end << 32)
        q[0] = before + 2
        return before

    def read(self, seen: int, spins_max: int) -> tuple[int, int, bytes] | object | None:
        """A consistent copy of what changed since sequence `seen`: (seq, offset, bytes), None
        when nothing changed, or BUSY when the writer held the row for `spins_max` tries."""
        return self._read(seen, spins_max, whole=True)

    def read_ranges(
        self, seen: int, spins_max: int
    ) -> tuple[int, list[tuple[int, bytes]]] | object | None:
        """Like `read`, but the changed ranges apart, in offset order (those closer than
        MERGE_GAP_BYTES as one): (seq, [(offset, bytes), ...]). A push of a ring slot and of
        the counters far from it copies those bytes, not everything between them."""
        return self._read(seen, spins_max, whole=False)

    def _read(self, seen: int, spins_max: int, *, whole: bool) -> Any:
        q = self.q
        for _ in range(spins_max):
            s1 = q[0]
            if s1 & 1:
                continue
            if s1 == seen:
                return None
            spans = self._spans(s1, seen)
            if whole:  # their union as one copy
                lo = min((lo for lo, _ in spans), default=0)
                hi = max((hi for _, hi in spans), default=0)
                data = bytes(self.data[lo:hi])
                if q[0] == s1:
                    return s1, lo, data
                continue
            merged: list[list[int]] = []
            for lo, hi in spans:
                if merged and lo <= merged[-1][1] + MERGE_GAP_BYTES:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            out = [(lo, bytes(self.data[lo:hi])) for lo, hi in merged if hi > lo]
            if q[0] == s1:
                return s1, out
        return BUSY

    def _spans(self, s1: int, seen: int) -> list[tuple[int, int]]:
        """The (offset, end) ranges written between `seen` and `s1`, sorted; the whole row when
        they are no longer all in the header or read torn (the caller's re-check then fails)."""
        q, row_bytes = self.q, self.row_bytes
        gap = s1 - seen
        if gap > 0 and gap % 2 == 0 and gap // 2 <= RANGES_MAX:
            last = s1 // 2
            spans = sorted(
                (r & 0xFFFFFFFF, r >> 32)
                for r in [q[1 + w % RANGES_MAX] for w in range(last - gap // 2 + 1, last + 1)]
            )
            if all(0 <= lo <= hi <= row_bytes for lo, hi in spans):
                return spans
        return [(0, row_bytes)]

    def mark_seen(self, seq: int) -> bool:
        """Publish that `seq` was reported; True when the row moved meanwhile (read again)."""
        self.q[SEEN_WORD] = seq
        fence()
        return self.q[0] != seq


class _Region:
    """A mapped table region (one file)."""

    def __init__(self, path: Path, fd: int, size: int):
        self.path = path
        self.mm = mmap.mmap(fd, size)
        self.buf = memoryview(self.mm)
        self.epoch, self.members, self.row_bytes = decode_region_header(self.buf)
        self.slots: dict[int, RowSlot] = {}

    def slot(self, member: int) -> RowSlot | None:
        s = self.slots.get(member)
        if s is None:
            if member not in self.members:
                return None
            i = self.members.index(member)
            off = header_bytes(len(self.members)) + i * slot_bytes(self.row_bytes)
            s = self.slots[member] = RowSlot(self.buf, off, self.row_bytes)
        return s

    def close(self) -> None:
        for s in self.slots.values():
            s.release()
        self.slots.clear()
        self.buf.release()
        self.mm.close()


def _open_region(path: Path) -> _Region | None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < _REGION_HEAD.size:
            raise TransportError(f"table region {path.name} is truncated")
        return _Region(path, fd, size)
    finally:
        os.close(fd)


def _create_or_open_region(
    path: Path, epoch: int, members: Sequence[int], row_bytes: int, tmp_tag: str
) -> _Region:
    """The region at `path`, created zeroed with the deterministic layout if absent. The new file
    is filled under a temporary name and published with `link`, which fails if another process
    published first: then that one is used."""
    region = _open_region(path)
    if region is None:
        tmp = path.with_name(f"{path.name}.{tmp_tag}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, region_bytes(len(members), row_bytes))
            os.pwrite(fd, encode_region_header(epoch, members, row_bytes), 0)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        region = _open_region(path)
        assert region is not None, path
    if (region.epoch, region.members, region.row_bytes) != (epoch, tuple(members), row_bytes):
        got = (region.epoch, region.members, region.row_bytes)
        region.close()
        raise TransportError(
            f"table region {path.name} has layout {got}, this member computed "
            f"{(epoch, tuple(members), row_bytes)}"
        )
    return region


DOWN, HELLO, UP = "down", "hello", "up"


class _Peer:
    """My outgoing side of one link: the connection I opened, my mappings of its regions."""

    def __init__(self, member: int, now: float, backoff_s: float):
        self.member = member
        self.state = DOWN
        self.sock: socket.socket | None = None
        self.inbuf = bytearray()
        self.inc = 0  # the peer's incarnation, known once its hello arrived
        self.dead_inc = 0  # the incarnation last seen up, until its tables are removed
        self.bell_fd = -1
        self.regions: dict[int, _Region] = {}
        self.slots: dict[int, RowSlot] = {}  # epoch -> my row in its region (hot-path cache)
        self.fresh: set[int] = set()  # epochs whose mapping has not rung yet
        self.owed: set[int] = set()  # epochs whose ring did not fit the FIFO: ring again
        self.out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.down_since = now
        self.next_try = now
        self.backoff_s = backoff_s
        self.failed_reported = False


class _Inbound:
    """A connection a peer opened to me: its data frames to me."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.member: int | None = None
        self.head = bytearray()
        self.body: bytearray | None = None
        self.got = 0


class ShmTransport(Transport):
    """Members on one host: tables in shared memory, FIFO doorbells, UNIX stream data links.

    `root` is where the cluster directory lives (default `/dev/shm`); `spins_max` bounds one
    seqlock read; `frames_per_poll_max` bounds the data frames taken from one link per poll so
    one busy sender cannot starve the others."""

    name = "shm"

    def __init__(
        self,
        me: int,
        addresses: Mapping[int, Address],
        config: TransportConfig,
        *,
        root: str | os.PathLike[str] = "/dev/shm",
        spins_max: int = 1000,
        frames_per_poll_max: int = 64,
        regions_max: int = 8,
    ):
        super().__init__(me, addresses, config)
        if not _CLUSTER_RE.fullmatch(config.cluster):
            raise TransportError(
                f"cluster name {config.cluster!r} must be 1-40 letters, digits, '_', '.' or '-'"
            )
        assert spins_max > 0 and frames_per_poll_max > 0 and regions_max >= 3
        self.dir = Path(root) / f"smr-{config.cluster}-u{os.getuid()}"
        self.spins_max = spins_max
        self.frames_per_poll_max = frames_per_poll_max
        self.regions_max = regions_max
        self.inc = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
        self.handler: Handler | None = None
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._bell_fd = -1
        self._wake_fd = -1
        self._peers: dict[int, _Peer] = {}
        self._inbound: set[_Inbound] = set()
        self._layouts: dict[int, tuple[tuple[int, ...], int]] = {}  # my registered epochs
        self._floor = 0  # epochs below this are released
        self._mine: dict[int, _Region] = {}  # my regions, by epoch
        self._rung: dict[int, set[int]] = {}  # source -> epochs to scan
        self._busy: dict[tuple[int, int], float] = {}  # (source, epoch) -> busy since
        self._busy_reported: set[int] = set()
        self._closed = False
        self._stats = {"writes": 0, "rings": 0, "rows_reported": 0, "frames_in": 0}
        for path in (self._bell_path(me), self._sock_path(me)):
            if len(os.fsencode(path)) > _SUN_PATH_MAX:
                raise TransportError(f"{path} is too long for a socket; use a shorter --cluster")

    # -- names ---------------------------------------------------------------------------------

    def _bell_path(self, member: int) -> str:
        return str(self.dir / f"m{member}.bell")

    def _sock_path(self, member: int) -> str:
        return str(self.dir / f"m{member}.sock")

    def _region_path(self, target: int, inc: int, epoch: int) -> Path:
        return self.dir / f"t{target}-{inc:x}-e{epoch}.tbl"

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, handler: Handler) -> None:
        assert self.handler is None, "started twice"
        self.handler = handler
        self._make_dir()
        self._claim_id()
        os.mkfifo(self._bell_path(self.me), 0o600)
        # O_RDWR: the reader never sees EOF and never blocks opening a FIFO with no writer
        self._bell_fd = os.open(self._bell_path(self.me), os.O_RDWR | os.O_NONBLOCK)
        self._wake_fd = os.open(self._bell_path(self.me), os.O_WRONLY | os.O_NONBLOCK)
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(self._sock_path(self.me))
        os.chmod(self._sock_path(self.me), 0o600)
        lst.listen(64)
        lst.setblocking(False)
        self._listener = lst
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._bell_fd, selectors.EVENT_READ, self._on_bell)
        self._sel.register(lst, selectors.EVENT_READ, self._on_accept)
        now = time.monotonic()
        for m in self.addresses:
            if m != self.me:
                self._peers[m] = _Peer(m, now, self.config.reconnect_backoff_s)
                self._try_connect(self._peers[m], now)

    def add_member(self, member: int, address: Address) -> None:
        super().add_member(member, address)
        if self.handler is not None and member != self.me and member not in self._peers:
            now = time.monotonic()
            self._peers[member] = _Peer(member, now, self.config.reconnect_backoff_s)
            self._try_connect(self._peers[member], now)

    def _make_dir(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
        except FileNotFoundError as e:
            raise TransportError(f"shm transport: {self.dir.parent} does not exist") from e
        st = self.dir.stat()
        if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
            raise TransportError(f"{self.dir} must be owned by this user with mode 0700")

    def _claim_id(self) -> None:
        """Refuse to run twice as one member; remove what a dead incarnation of me left."""
        sock_path = self._sock_path(self.me)
        if os.path.exists(sock_path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(sock_path)
            except OSError:
                pass  # nobody listens: a dead incarnation's file
            else:
                raise TransportError(
                    f"member {self.me} of cluster {self.config.cluster!r} is already running"
                )
            finally:
                probe.close()
        for p in self.dir.glob(f"t{self.me}-*"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        for path in (sock_path, self._bell_path(self.me)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sel is not None:
            self._sel.close()
        for p in self._peers.values():
            self._drop_link(p)
        for ib in self._inbound:
            ib.sock.close()
        self._inbound.clear()
        for r in self._mine.values():
            r.close()
        self._mine.clear()
        if self._listener is not None:
            self._listener.close()
        fds = (self._bell_fd, self._wake_fd)
        self._bell_fd = self._wake_fd = -1  # first, so a concurrent wake() writes nowhere
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        if self.handler is not None:
            for p in self.dir.glob(f"t{self.me}-{self.inc:x}-*"):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            for path in (self._sock_path(self.me), self._bell_path(self.me)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            with contextlib.suppress(OSError):
                self.dir.rmdir()  # only when no other member of the cluster is left

    # -- tables --------------------------------------------------------------------------------

    def register(self, epoch: int, members: Sequence[int], row_bytes: int) -> None:
        self._check_open()
        if self.me not in members:
            raise TransportError(f"member {self.me} is not in the table of epoch {epoch}")
        if row_bytes <= 0 or row_bytes % WORD_BYTES or row_bytes >= 1 << 32:
            raise TransportError(f"row_bytes {row_bytes} must be a positive multiple of 8")
        members = tuple(members)
        if len(set(members)) != len(members):
            raise TransportError(f"the table of epoch {epoch} lists a member twice")
        known = self._layouts.get(epoch)
        if known is not None and known != (members, row_bytes):
            raise TransportError(f"epoch {epoch} registered twice with different layouts")
        self._layouts[epoch] = (members, row_bytes)
        path = self._region_path(self.me, self.inc, epoch)
        old = self._mine.pop(epoch, None)
        if old is not None:
            old.close()
        self._mine[epoch] = _create_or_open_region(
            path, epoch, members, row_bytes, f"{self.me}-{self.inc:x}"
        )
        # a writer may have written before I mapped it: read every row once
        for m in members:
            if m != self.me:
                self._rung.setdefault(m, set()).add(epoch)
        floor = max(self._layouts) - 1
        if floor > self._floor:
            self._floor = floor
            self._release_below(floor)

    def _release_below(self, floor: int) -> None:
        for e in [e for e in self._layouts if e < floor]:
            del self._layouts[e]
        for e in [e for e in self._mine if e < floor]:
            r = self._mine.pop(e)
            r.close()
            with contextlib.suppress(FileNotFoundError):
                r.path.unlink()
        for p in self._peers.values():
            for e in [e for e in p.regions if e < floor]:
                p.slots.pop(e, None)
                p.regions.pop(e).close()
                p.fresh.discard(e)
                p.owed.discard(e)

    def write(self, targets: Sequence[int], epoch: int, offset: int, data: bytes) -> None:
        layout = self._layouts.get(epoch)
        if layout is None:
            if epoch < self._floor:
                return  # a table already released: nobody reads it any more
            raise TransportError(f"write for epoch {epoch}, which this member did not register")
        members, row_bytes = layout
        if offset < 0 or offset % WORD_BYTES or offset + len(data) > row_bytes:
            raise TransportError(
                f"write of {len(data)} bytes at offset {offset} does not fit a {row_bytes}-byte row"
            )
        acquire, release = _fence_lock.acquire, _fence_lock.release
        for t in targets:
            p = self._peers.get(t)
            if p is None or p.state is not UP:
                continue  # down: dropped; the replica rewrites its row on on_link_up
            slot = p.slots.get(epoch)
            if slot is None:
                slot = self._map_peer_region(p, epoch, members, row_bytes)
                if slot is None:
                    continue
            before = slot.write(offset, data)
            self._stats["writes"] += 1
            acquire()  # a full fence (see `fence`), inlined on the hot path
            release()
            if slot.q[SEEN_WORD] == before or epoch in p.fresh:
                p.fresh.discard(epoch)
                self._ring(p, epoch)

    def _map_peer_region(
        self, p: _Peer, epoch: int, members: tuple[int, ...], row_bytes: int
    ) -> RowSlot | None:
        if p.member not in members:
            return None  # not in this epoch's table: nothing to write into
        path = self._region_path(p.member, p.inc, epoch)
        region = _create_or_open_region(path, epoch, members, row_bytes, f"{self.me}-{self.inc:x}")
        p.regions[epoch] = region
        p.fresh.add(epoch)
        while len(p.regions) > self.regions_max:
            old = min(p.regions)
            p.slots.pop(old, None)
            p.regions.pop(old).close()
        slot = p.slots[epoch] = region.slot(self.me)
        return slot

    def _ring(self, p: _Peer, epoch: int) -> None:
        if p.bell_fd < 0:
            return
        try:
            os.write(p.bell_fd, _RING.pack(self.me, epoch))
            p.owed.discard(epoch)
            self._stats["rings"] += 1
        except BlockingIOError:
            p.owed.add(epoch)  # the FIFO is full of rings: ring again from poll
        except OSError:
            pass  # the reader is gone: the stream link reports it

    # -- data channel --------------------------------------------------------------------------

    def send(self, target: int, payload: bytes) -> None:
        if len(payload) > self.config.frame_bytes_max:
            raise TransportError(
                f"a {len(payload)}-byte message exceeds frame_bytes_max "
                f"({self.config.frame_bytes_max})"
            )
        p = self._peers.get(target)
        if p is None or p.state != UP:
            return
        if p.out_bytes + len(payload) + _LEN.size > self.config.send_queue_bytes_max:
            self._link_down(p, time.monotonic())  # too far behind: reset, resend on link-up
            return
        p.out.append(memoryview(_LEN.pack(len(payload))))
        p.out.append(memoryview(payload))
        p.out_bytes += len(payload) + _LEN.size
        self._flush(p)

    def _flush(self, p: _Peer) -> None:
        sock = p.sock
        assert sock is not None
        try:
            while p.out:
                head = p.out[0]
                n = sock.send(head)
                p.out_bytes -= n
                if n == len(head):
                    p.out.popleft()
                else:
                    p.out[0] = head[n:]
                    break
        except BlockingIOError:
            pass
        except OSError:
            self._link_down(p, time.monotonic())
            return
        assert self._sel is not None
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if p.out else 0)
        self._sel.modify(sock, want, (self._on_peer_sock, p))

    # -- links ---------------------------------------------------------------------------------

    def _try_connect(self, p: _Peer, now: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self._sock_path(p.member))
            sock.send(_HELLO.pack(HELLO_MAGIC, self.me, self.inc, os.getpid()))
        except OSError:
            sock.close()
            if p.dead_inc:
                # nobody listens under its id: that incarnation is dead, its tables are garbage
                for f in self.dir.glob(f"t{p.member}-{p.dead_inc:x}-*"):
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
                p.dead_inc = 0
                # On one host this is certain, not a guess: the kernel closed the link and the
                # listener of a process that ended. Report it at the next poll instead of after
                # peer_failed_after_s, so the group suspects it now (failover without waiting
                # for the heartbeat timeout). Not reported from here: this runs inside send().
                p.down_since = min(p.down_since, now - self.config.peer_failed_after_s)
            p.next_try = now + p.backoff_s
            p.backoff_s = min(p.backoff_s * 2, self.config.peer_failed_after_s)
            return
        p.sock = sock
        p.state = HELLO
        p.inbuf.clear()
        assert self._sel is not None
        self._sel.register(sock, selectors.EVENT_READ, (self._on_peer_sock, p))

    def _drop_link(self, p: _Peer) -> None:
        if p.sock is not None:
            if self._sel is not None and not self._closed:
                self._sel.unregister(p.sock)
            p.sock.close()
            p.sock = None
        if p.bell_fd >= 0:
            os.close(p.bell_fd)
            p.bell_fd = -1
        p.slots.clear()
        for r in p.regions.values():
            r.close()
        p.regions.clear()
        p.fresh.clear()
        p.owed.clear()
        p.out.clear()
        p.out_bytes = 0

    def _link_down(self, p: _Peer, now: float) -> None:
        if p.state == DOWN:
            return
        if p.state == UP:
            p.dead_inc = p.inc
        self._drop_link(p)
        p.state = DOWN
        p.down_since = now
        p.backoff_s = self.config.reconnect_backoff_s
        p.next_try = now
        self._try_connect(p, now)

    def _on_peer_sock(self, p: _Peer, mask: int) -> None:
        now = time.monotonic()
        if mask & selectors.EVENT_WRITE and p.state == UP:
            self._flush(p)
        if not mask & selectors.EVENT_READ or p.sock is None:
            return
        try:
            chunk = p.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk or p.state == UP:  # EOF (the peer is gone) or bytes it must not send
            self._link_down(p, now)
            return
        p.inbuf += chunk
        if len(p.inbuf) < _HELLO.size:
            return
        magic, member, inc, _pid = _HELLO.unpack_from(p.inbuf)
        if magic != HELLO_MAGIC or member != p.member:
            self._link_down(p, now)
            return
        try:
            p.bell_fd = os.open(self._bell_path(p.member), os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            self._link_down(p, now)
            return
        if p.dead_inc and p.dead_inc != inc:
            for f in self.dir.glob(f"t{p.member}-{p.dead_inc:x}-*"):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
        p.inc, p.state, p.dead_inc = inc, UP, 0
        self._busy_reported.discard(p.member)
        p.failed_reported = False
        assert self.handler is not None
        self.handler.on_link_up(p.member)

    def _on_accept(self, _mask: int) -> None:
        assert self._listener is not None and self._sel is not None
        for _ in range(64):
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            ib = _Inbound(sock)
            self._inbound.add(ib)
            self._sel.register(sock, selectors.EVENT_READ, (self._on_inbound, ib))

    def _close_inbound(self, ib: _Inbound) -> None:
        assert self._sel is not None
        self._sel.unregister(ib.sock)
        ib.sock.close()
        self._inbound.discard(ib)

    def _on_inbound(self, ib: _Inbound, _mask: int) -> None:
        assert self.handler is not None
        sock = ib.sock
        for _ in range(self.frames_per_poll_max):
            try:
                if ib.body is None:
                    need = (_HELLO.size if ib.member is None else _LEN.size) - len(ib.head)
                    chunk = sock.recv(need)
                    if not chunk:
                        self._close_inbound(ib)
                        return
                    ib.head += chunk
                    if len(chunk) < need:
                        continue
                    if ib.member is None:
                        magic, member, _inc, _pid = _HELLO.unpack(ib.head)
                        ib.head.clear()
                        if magic != HELLO_MAGIC:
                            self._close_inbound(ib)
                            return
                        ib.member = member
                        sock.send(_HELLO.pack(HELLO_MAGIC, self.me, self.inc, os.getpid()))
                        continue
                    (n,) = _LEN.unpack(ib.head)
                    ib.head.clear()
                    if n > self.config.frame_bytes_max:
                        self._close_inbound(ib)  # a peer bug: never buffer an unbounded frame
                        return
                    ib.body, ib.got = bytearray(n), 0
                if ib.got < len(ib.body):
                    k = sock.recv_into(memoryview(ib.body)[ib.got :])
                    if k == 0:
                        self._close_inbound(ib)
                        return
                    ib.got += k
                    if ib.got < len(ib.body):
                        continue
                body, ib.body = ib.body, None
                self._stats["frames_in"] += 1
                self.handler.on_data(ib.member, bytes(body))
            except BlockingIOError:
                return
            except OSError:
                self._close_inbound(ib)
                return

    # -- doorbell and scanning -----------------------------------------------------------------

    def _on_bell(self, _mask: int) -> None:
        for _ in range(64):
            try:
                chunk = os.read(self._bell_fd, 1 << 16)
            except BlockingIOError:
                return
            for i in range(0, len(chunk) - len(chunk) % _RING.size, _RING.size):
                source, epoch = _RING.unpack_from(chunk, i)
                if source != -1:  # a wake carries no row
                    self._rung.setdefault(source, set()).add(epoch)
            if len(chunk) < 1 << 16:
                return

    def _my_region(self, epoch: int) -> _Region | None:
        r = self._mine.get(epoch)
        if r is None and epoch >= self._floor:
            # a peer wrote an epoch I have not registered (I am joining, or behind)
            try:
                r = _open_region(self._region_path(self.me, self.inc, epoch))
            except TransportError:
                return None
            if r is None:
                return None
            self._mine[epoch] = r
            while len(self._mine) > self.regions_max:
                old = self._mine.pop(min(self._mine))
                old.close()
        return r

    def _scan(self, now: float) -> None:
        assert self.handler is not None
        ranges = getattr(self.handler, "on_write_ranges", None)
        rung, self._rung = self._rung, {}
        rung.pop(-1, None)
        for source, epoch in list(self._busy):
            rung.setdefault(source, set()).add(epoch)
        for _round in range(4):
            again: dict[int, set[int]] = {}
            for source, epochs in rung.items():
                got = []
                for epoch in sorted(epochs, reverse=True):  # newest first, reported oldest first
                    region = self._my_region(epoch)
                    slot = region.slot(source) if region is not None else None
                    if slot is None or source == self.me:
                        continue
                    r = read_row(slot, ranges, self.spins_max)
                    if r is BUSY:
                        self._busy.setdefault((source, epoch), now)
                        continue
                    self._busy.pop((source, epoch), None)
                    if r is not None:
                        got.append((epoch, slot, r))
                for epoch, slot, r in reversed(got):
                    seq = report_row(self.handler, ranges, source, epoch, r)
                    self._stats["rows_reported"] += 1
                    if slot.mark_seen(seq):
                        again.setdefault(source, set()).add(epoch)
            if not again:
                break
            rung = again
        else:
            for source, epochs in rung.items():
                self._rung.setdefault(source, set()).update(epochs)
        for (source, _epoch), since in self._busy.items():
            stuck = now - since >= self.config.peer_failed_after_s
            if stuck and source not in self._busy_reported:
                self._busy_reported.add(source)
                self.handler.on_peer_failed(source)

    # -- poll ----------------------------------------------------------------------------------

    def poll(self, timeout_s: float | None) -> None:
        self._check_open()
        assert self._sel is not None and self.handler is not None
        now = time.monotonic()
        wait = self._wait_s(now, timeout_s)
        for key, mask in self._sel.select(wait):
            fn = key.data
            if isinstance(fn, tuple):
                fn[0](fn[1], mask)
            elif isinstance(fn, Watched):
                fn.callback(mask)
            else:
                fn(mask)
        now = time.monotonic()
        self._scan(now)
        self._timers(now)

    def _wait_s(self, now: float, timeout_s: float | None) -> float | None:
        if self._rung and any(self._rung.values()):
            return 0
        deadline = None if timeout_s is None else now + max(timeout_s, 0)
        for p in self._peers.values():
            if p.owed:
                deadline = now + 0.001 if deadline is None else min(deadline, now + 0.001)
            if p.state == DOWN:
                t = p.next_try
                if not p.failed_reported:
                    t = min(t, p.down_since + self.config.peer_failed_after_s)
                deadline = t if deadline is None else min(deadline, t)
        if self._busy:
            deadline = now + 0.001 if deadline is None else min(deadline, now + 0.001)
        return None if deadline is None else max(0.0, deadline - now)

    def _timers(self, now: float) -> None:
        assert self.handler is not None
        for p in list(self._peers.values()):
            for epoch in list(p.owed):
                self._ring(p, epoch)
            if p.state != DOWN:
                continue
            if now >= p.next_try:
                self._try_connect(p, now)
            if (
                p.state == DOWN
                and not p.failed_reported
                and now - p.down_since >= self.config.peer_failed_after_s
            ):
                p.failed_reported = True
                self.handler.on_peer_failed(p.member)

    def wake(self) -> None:
        fd = self._wake_fd
        if fd < 0:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(fd, _RING.pack(-1, 0))

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("the shm transport is closed")
        if self.handler is None:
            raise TransportError("the shm transport is not started")

    # -- introspection for tests and benchmarks ------------------------------------------------

    def statistics(self) -> dict[str, int]:
        """Counters since start: writes made (per target), doorbell rings sent, row reports
        made to the handler, data frames received."""
        return dict(self._stats)

    def files(self) -> list[str]:
        """The files of this member's id in the cluster directory (tests check for leaks)."""
        if not self.dir.exists():
            return []
        return sorted(
            p.name
            for p in self.dir.iterdir()
            if p.name.startswith((f"t{self.me}-", f"m{self.me}."))
        )
