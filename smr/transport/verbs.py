"""The RDMA verbs transport (pyverbs): table rows written into peers' memory by the NIC.

This module owns the verbs provider (`VerbsTransport`), the availability checks
(`device_available`, `check_available`) and the lazy import of pyverbs (`load_pyverbs`). It is
the optional extra `smr-toolkit[rdma]`; pyverbs is never imported until a provider starts, and
any module object with pyverbs' layout can stand in for it (`pyverbs=`), which is how the tests
run it against `tests/fakes/pyverbs_fake.py` on machines without a device.

Set-up, per member: open the first device (or `device=`), a protection domain, one completion
queue with a completion channel (a helper thread blocks on the channel and `wake`s the poll, so
an idle member sleeps), and a TCP bootstrap listener at the member's `Address`. Each member dials
every peer; the connection is authenticated with the cluster secret (`smr.transport.wire`'s HMAC
handshake) and then carries small frames:

- `SETUP` (dialer -> acceptor, and back): QP number, LID and GID. The dialer's QP is its sender
  to that peer, the acceptor makes a QP for it, and both go to RTS: one RC queue pair per
  direction of each link;
- `REGION_REQ` / `REGION` (dialer asks, acceptor answers): the address and rkey of the
  acceptor's table of an epoch, registered as an MR with remote write access. The acceptor makes
  the region when it registers the epoch or when a writer first asks, whichever comes first (the
  layout is deterministic and checked);
- `DATA`: data-channel messages, whole and FIFO on the TCP stream (not over the QP: Python
  cannot keep up with posting receive buffers for large messages, and the stream is bounded by
  `send_queue_bytes_max` like tcp's).

Table writes use the shm row protocol (`smr.transport.shm.RowSlot`): the writer keeps a shadow
of its slot in the target's region (seqlock header and row), applies the write to it, copies the
odd sequence word, the changed bytes and the writer's header lines into a staging buffer
(registered, bounded by `staging_bytes`, reused once the NIC completed), and posts three RDMA
WRITEs on the
RC queue pair in order: the odd word, the bytes, and the header lines (even word and ranges) as an
RDMA WRITE WITH IMMEDIATE whose immediate value is the epoch (the doorbell: it completes a posted
receive at the target, which reads that row). An RC queue pair executes writes in order, so the
target sees the odd word before the bytes and the bytes before the even word: the reader's
seqlock check is the same as on shm and a row is never reported torn. Until the target's region
is known, writes go only to the shadow, and the whole slot is written once the `REGION` answer
arrives; no write is lost, and each epoch has its own region.

Failures: a failed completion (the peer's QP is gone, a protection error) or the bootstrap
connection closing takes the link down; it is re-dialled with doubling backoff, and
`on_peer_failed` is reported once it has been down `peer_failed_after_s`. `on_link_up` follows
each successful `SETUP` exchange.

Running with a real device: `pip install 'smr-toolkit[rdma]'` (pyverbs comes with rdma-core),
check `ibv_devices` lists the device and the port is ACTIVE, give every member an address on the
RDMA network for the bootstrap, and start with `--transport verbs` (`device=`, `port_num=`,
`gid_index=` choose the device port and GID; RoCE needs a GID index of a RoCE v2 address).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from smr.transport import wire
from smr.transport.base import (
    Address,
    Handler,
    Transport,
    TransportConfig,
    TransportError,
    TransportUnavailable,
    Watched,
)
from smr.transport.shm import (
    BUSY,
    ROW_HEADER_BYTES,
    WORD_BYTES,
    WRITER_HEADER_BYTES,
    RowSlot,
    align,
    encode_region_header,
    header_bytes,
    read_row,
    region_bytes,
    report_row,
    slot_bytes,
)

PYVERBS_MODULES = ("device", "pd", "mr", "cq", "qp", "wr", "addr", "enums", "pyverbs_error")
ALTERNATIVES = "use --transport shm (members on one host) or tcp"

SETUP, REGION_REQ, REGION, DATA = 1, 2, 3, 4
_SETUP = struct.Struct("<II16s")  # qp number, lid, gid (16 raw bytes)
_REGION_REQ = struct.Struct("<QQ")  # epoch, row_bytes; then the members as <q
_REGION = struct.Struct("<QQI")  # epoch, address, rkey
_IMM_EPOCH_MASK = 0xFFFFFFFF
_SIGNALED = 1 << 62  # wr_id tag of a staging chunk's last write


def load_pyverbs() -> Any:
    """The real pyverbs modules the provider uses, as one namespace (ImportError if missing)."""
    return SimpleNamespace(**{m: importlib.import_module(f"pyverbs.{m}") for m in PYVERBS_MODULES})


def _why_unavailable(pyverbs: Any = None) -> str | None:
    if pyverbs is None:
        try:
            pyverbs = load_pyverbs()
        except ImportError:
            return "pyverbs is not installed (pip install 'smr-toolkit[rdma]')"
        except Exception as e:  # a broken rdma-core install: say what it was
            return f"pyverbs failed to load ({type(e).__name__}: {e})"
    try:
        devices = pyverbs.device.get_device_list()
    except Exception as e:
        return f"no RDMA device found ({type(e).__name__}: {e})"
    if not devices:
        return "no RDMA device found"
    return None


def device_available(pyverbs: Any = None) -> bool:
    """True when pyverbs loads and lists at least one device. Never raises."""
    try:
        return _why_unavailable(pyverbs) is None
    except Exception:
        return False


def check_available(pyverbs: Any = None) -> None:
    """Raise `TransportUnavailable` with one line saying why verbs cannot run here."""
    why = _why_unavailable(pyverbs)
    if why is not None:
        line = " ".join(f"verbs transport unavailable: {why}; {ALTERNATIVES}".split())
        raise TransportUnavailable(line)


def _memory(address: int, length: int) -> memoryview:
    """A writable view of registered memory (an MR's `buf` is its address)."""
    return memoryview((ctypes.c_char * length).from_address(address)).cast("B")


class _RegionMR:
    """One of my tables: a region (the shm layout) in an MR peers may write."""

    def __init__(self, pv: Any, pd: Any, epoch: int, members: tuple[int, ...], row_bytes: int):
        e = pv.enums
        self.epoch, self.members, self.row_bytes = epoch, members, row_bytes
        size = region_bytes(len(members), row_bytes)
        self.mr = pv.mr.MR(pd, size, e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE)
        self.buf = _memory(self.mr.buf, size)
        self.buf[: header_bytes(len(members))] = encode_region_header(epoch, members, row_bytes)
        self.slots: dict[int, RowSlot] = {}

    def slot(self, member: int) -> RowSlot | None:
        s = self.slots.get(member)
        if s is None and member in self.members:
            off = header_bytes(len(self.members)) + self.members.index(member) * slot_bytes(
                self.row_bytes
            )
            s = self.slots[member] = RowSlot(self.buf, off, self.row_bytes)
        return s

    def close(self) -> None:
        for s in self.slots.values():
            s.release()
        self.buf.release()
        self.mr.close()


class _Shadow:
    """My slot in a peer's table of an epoch, kept locally in a registered buffer."""

    def __init__(self, pv: Any, pd: Any, members: tuple[int, ...], row_bytes: int, me: int):
        size = slot_bytes(row_bytes)
        self.mr = pv.mr.MR(pd, size, pv.enums.IBV_ACCESS_LOCAL_WRITE)
        self.buf = _memory(self.mr.buf, size)
        self.slot = RowSlot(self.buf, 0, row_bytes)
        self.offset = header_bytes(len(members)) + members.index(me) * slot_bytes(row_bytes)
        # The sequence starts at the clock, not 0: a link made again to the same table must
        # never repeat a sequence number the reader already marked seen.
        self.slot.q[0] = time.time_ns() & ~1
        self.remote: tuple[int, int] | None = None  # (slot address, rkey) once known
        self.requested = False

    def close(self) -> None:
        self.slot.release()
        self.buf.release()
        self.mr.close()


DOWN, HANDSHAKE, SETTING_UP, UP = "down", "handshake", "setting-up", "up"


class _Conn:
    """A bootstrap TCP connection and its frame state."""

    def __init__(self, sock: socket.socket, hs: wire.Handshake, frame_bytes_max: int):
        self.sock = sock
        self.hs = hs
        self.decoder = wire.FrameDecoder(frame_bytes_max + 64)
        self.out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.qp: Any = None


class _OutLink:
    """My side of the link to one peer: the connection I dialled, my QP to it, my shadows."""

    def __init__(self, member: int, now: float, backoff_s: float):
        self.member = member
        self.state = DOWN
        self.conn: _Conn | None = None
        self.shadows: dict[int, _Shadow] = {}
        self.regions: dict[int, tuple[int, int]] = {}  # epoch -> the peer's (address, rkey)
        self.stage_mr: Any = None
        self.stage: memoryview | None = None
        self.stage_tail = 0
        self.in_flight: deque[tuple[int, int, int]] = deque()  # (wr_id, start, end)
        self.down_since = now
        self.next_try = now
        self.backoff_s = backoff_s
        self.failed_reported = False


class VerbsTransport(Transport):
    """Members over RDMA: RC queue pairs, RDMA writes into registered tables, a TCP bootstrap.

    `pyverbs` is the pyverbs module namespace (default: the real one, imported at `start`);
    `staging_bytes` bounds the in-flight write staging buffer per peer; `recv_slots_max` bounds
    the receives posted per inbound QP (doorbells in flight from one peer)."""

    name = "verbs"

    def __init__(
        self,
        me: int,
        addresses: Mapping[int, Address],
        config: TransportConfig,
        *,
        pyverbs: Any = None,
        device: str | None = None,
        port_num: int = 1,
        gid_index: int = 0,
        staging_bytes: int = 4 << 20,
        recv_slots_max: int = 256,
        spins_max: int = 1000,
    ):
        super().__init__(me, addresses, config)
        assert staging_bytes >= 4096 and recv_slots_max > 0 and spins_max > 0
        self.pv = pyverbs
        self.device = device
        self.port_num = port_num
        self.gid_index = gid_index
        self.staging_bytes = staging_bytes
        self.recv_slots_max = recv_slots_max
        self.spins_max = spins_max
        self.handler: Handler | None = None
        self._links: dict[int, _OutLink] = {}
        self._inbound: dict[socket.socket, _Conn] = {}
        self._in_qps: dict[int, tuple[_Conn, int]] = {}  # qp number -> (conn, source)
        self._layouts: dict[int, tuple[tuple[int, ...], int]] = {}
        self._regions: dict[int, _RegionMR] = {}
        self._floor = 0
        self._rung: dict[int, set[int]] = {}
        self._busy: set[tuple[int, int]] = set()
        self._wr_ids = 0
        self._closed = False
        self._sel: selectors.BaseSelector | None = None
        self._stats = {"writes": 0, "rdma_writes": 0, "rows_reported": 0, "frames_in": 0}

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, handler: Handler) -> None:
        assert self.handler is None, "started twice"
        check_available(self.pv)
        pv = self.pv = self.pv if self.pv is not None else load_pyverbs()
        names = [d.name for d in pv.device.get_device_list()]
        want = self.device.encode() if self.device else names[0]
        if want not in names:
            raise TransportUnavailable(
                f"verbs transport unavailable: no RDMA device {self.device!r} "
                f"(found {', '.join(n.decode() for n in names)}); {ALTERNATIVES}"
            )
        try:
            self.ctx = pv.device.Context(name=want.decode())
            self.lid = self.ctx.query_port(self.port_num).lid
            self.gid = self.ctx.query_gid(self.port_num, self.gid_index)
            self.pd = pv.pd.PD(self.ctx)
            self.channel = pv.cq.CompChannel(self.ctx)
            self.cq = pv.cq.CQ(self.ctx, 8192, None, self.channel, 0)
            self.cq.req_notify()
        except pv.pyverbs_error.PyverbsError as e:
            raise TransportError(f"verbs set-up on {want.decode()} failed: {e}") from e
        self.handler = handler
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        addr = self.addresses[self.me]
        self._listener = socket.create_server((addr.host, addr.port), backlog=64)
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, ("accept", None))
        self._events = threading.Thread(target=self._wait_events, daemon=True, name="verbs-cq")
        self._events.start()
        now = time.monotonic()
        for m in self.addresses:
            if m != self.me:
                self._links[m] = _OutLink(m, now, self.config.reconnect_backoff_s)
                self._dial(self._links[m], now)

    def _wait_events(self) -> None:
        """Block on the completion channel; each event wakes the poll (which re-arms it)."""
        while not self._closed:
            try:
                self.channel.get_cq_event(self.cq)
                self.cq.ack_events(1)
            except Exception:
                return  # the channel was closed
            self.wake()

    def add_member(self, member: int, address: Address) -> None:
        super().add_member(member, address)
        if self.handler is not None and member != self.me and member not in self._links:
            now = time.monotonic()
            self._links[member] = _OutLink(member, now, self.config.reconnect_backoff_s)
            self._dial(self._links[member], now)

    def close(self) -> None:
        if self._closed or self.handler is None:
            self._closed = True
            return
        self._closed = True
        for link in self._links.values():
            self._drop(link)
        for conn in list(self._inbound.values()):
            self._close_inbound(conn)
        for r in self._regions.values():
            r.close()
        self._regions.clear()
        assert self._sel is not None
        self._sel.close()
        self._listener.close()
        self.channel.close()
        self._events.join(timeout=5)
        self._wake_r.close()
        self._wake_w.close()
        self.cq.close()
        self.pd.close()
        self.ctx.close()

    # -- queue pairs ---------------------------------------------------------------------------

    def _new_qp(self) -> Any:
        pv = self.pv
        cap = pv.qp.QPCap(max_send_wr=1024, max_recv_wr=self.recv_slots_max)
        init = pv.qp.QPInitAttr(
            qp_type=pv.enums.IBV_QPT_RC, scq=self.cq, rcq=self.cq, cap=cap, sq_sig_all=0
        )
        qp = pv.qp.QP(self.pd, init)
        attr = pv.qp.QPAttr(qp_state=pv.enums.IBV_QPS_INIT, port_num=self.port_num)
        attr.qp_access_flags = pv.enums.IBV_ACCESS_LOCAL_WRITE | pv.enums.IBV_ACCESS_REMOTE_WRITE
        qp.to_init(attr)
        return qp

    def _connect_qp(self, qp: Any, body: bytes) -> None:
        pv = self.pv
        qpn, lid, gid_raw = _SETUP.unpack(body)
        attr = pv.qp.QPAttr(qp_state=pv.enums.IBV_QPS_RTR, port_num=self.port_num)
        attr.dest_qp_num = qpn
        attr.path_mtu = pv.enums.IBV_MTU_1024
        attr.max_dest_rd_atomic = attr.max_rd_atomic = 1
        attr.min_rnr_timer = 12
        attr.timeout, attr.retry_cnt, attr.rnr_retry = 14, 7, 7  # rnr_retry 7: retry forever
        attr.qp_access_flags = pv.enums.IBV_ACCESS_LOCAL_WRITE | pv.enums.IBV_ACCESS_REMOTE_WRITE
        gid = pv.addr.GID(_gid_text(gid_raw))
        route = pv.addr.GlobalRoute(dgid=gid, sgid_index=self.gid_index)
        attr.ah_attr = pv.addr.AHAttr(gr=route, is_global=1, dlid=lid, port_num=self.port_num)
        qp.to_rts(attr)

    def _setup_body(self, qp: Any) -> bytes:
        return _SETUP.pack(qp.qp_num, self.lid, _gid_raw(self.gid))

    # -- bootstrap connections -----------------------------------------------------------------

    def _dial(self, link: _OutLink, now: float) -> None:
        address = self.addresses[link.member]
        try:
            sock = socket.create_connection(
                (address.host, address.port), timeout=self.config.connect_timeout_s
            )
        except OSError:
            link.next_try = now + link.backoff_s
            link.backoff_s = min(link.backoff_s * 2, self.config.peer_failed_after_s)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        hs = wire.Handshake(self.config.secret, server=False, my_id=self.me, role="member")
        conn = _Conn(sock, hs, self.config.frame_bytes_max)
        link.conn, link.state = conn, HANDSHAKE
        assert self._sel is not None
        self._sel.register(sock, selectors.EVENT_READ, ("out", link))
        self._queue(conn, hs.initial())

    def _queue(self, conn: _Conn, data: bytes) -> bool:
        if conn.out_bytes + len(data) > self.config.send_queue_bytes_max:
            return False
        conn.out.append(memoryview(data))
        conn.out_bytes += len(data)
        return self._flush(conn)

    def _flush(self, conn: _Conn) -> bool:
        try:
            while conn.out:
                n = conn.sock.send(conn.out[0])
                conn.out_bytes -= n
                if n == len(conn.out[0]):
                    conn.out.popleft()
                else:
                    conn.out[0] = conn.out[0][n:]
                    break
        except BlockingIOError:
            pass
        except OSError:
            return False
        assert self._sel is not None
        key = self._sel.get_key(conn.sock)
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if key.events != want:
            self._sel.modify(conn.sock, want, key.data)
        return True

    def _receive(self, conn: _Conn) -> list[tuple[int, bytes]] | None:
        """Frames that arrived on `conn`; None when it closed or broke the protocol."""
        try:
            data = conn.sock.recv(1 << 20)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not data:
            return None
        try:
            if not conn.hs.done:
                reply = conn.hs.feed(data)
                if reply and not self._queue(conn, reply):
                    return None
                if not conn.hs.done:
                    return []
                data = conn.hs.leftover
                if not conn.hs.server:
                    return [(0, b""), *conn.decoder.feed(data)]  # kind 0: handshake done
            return conn.decoder.feed(data)
        except wire.FrameError:
            return None

    def _on_out(self, link: _OutLink, mask: int, now: float) -> None:
        conn = link.conn
        assert conn is not None
        if mask & selectors.EVENT_WRITE and not self._flush(conn):
            self._link_down(link, now)
            return
        if not mask & selectors.EVENT_READ:
            return
        frames = self._receive(conn)
        if frames is None:
            self._link_down(link, now)
            return
        for kind, body in frames:
            if kind == 0:
                conn.qp = self._new_qp()
                link.state = SETTING_UP
                self._queue(conn, wire.encode_frame(SETUP, self._setup_body(conn.qp)))
            elif kind == SETUP and link.state == SETTING_UP:
                self._connect_qp(conn.qp, body)
                self._stage_init(link)
                link.state = UP
                link.failed_reported = False
                assert self.handler is not None
                self.handler.on_link_up(link.member)
            elif kind == REGION and link.state == UP:
                epoch, address, rkey = _REGION.unpack(body)
                link.regions[epoch] = (address, rkey)
                shadow = link.shadows.get(epoch)
                if shadow is not None:
                    shadow.remote = (address + shadow.offset, rkey)
                    if shadow.slot.seq:  # written before the address was known: push it all
                        self._post_row(link, epoch, shadow, 0, shadow.slot.row_bytes)
            else:
                self._link_down(link, now)  # a frame out of order: start the link again
                return

    def _on_accept(self) -> None:
        assert self._sel is not None
        for _ in range(64):
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hs = wire.Handshake(self.config.secret, server=True, my_id=self.me, role="member")
            conn = _Conn(sock, hs, self.config.frame_bytes_max)
            self._inbound[sock] = conn
            self._sel.register(sock, selectors.EVENT_READ, ("in", conn))
            self._queue(conn, hs.initial())

    def _close_inbound(self, conn: _Conn) -> None:
        if self._sel is not None and not self._closed:
            self._sel.unregister(conn.sock)
        elif self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(conn.sock)
        conn.sock.close()
        self._inbound.pop(conn.sock, None)
        if conn.qp is not None:
            self._in_qps.pop(conn.qp.qp_num, None)
            conn.qp.close()
            conn.qp = None

    def _on_in(self, conn: _Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE and not self._flush(conn):
            self._close_inbound(conn)
            return
        if not mask & selectors.EVENT_READ:
            return
        frames = self._receive(conn)
        if frames is None:
            self._close_inbound(conn)
            return
        assert self.handler is not None
        source = conn.hs.peer_id
        for kind, body in frames:
            if kind == DATA and conn.qp is not None:
                self._stats["frames_in"] += 1
                self.handler.on_data(source, body)
            elif kind == SETUP and conn.qp is None:
                qp = self._new_qp()
                self._connect_qp(qp, body)
                for _ in range(self.recv_slots_max):
                    qp.post_recv(self.pv.wr.RecvWR(wr_id=qp.qp_num, num_sge=0))
                conn.qp = qp
                self._in_qps[qp.qp_num] = (conn, source)
                self._queue(conn, wire.encode_frame(SETUP, self._setup_body(qp)))
                for region in self._regions.values():
                    self._announce(conn, region)
            elif kind == REGION_REQ and conn.qp is not None:
                epoch, row_bytes = _REGION_REQ.unpack_from(body)
                members = struct.unpack_from(f"<{(len(body) - 16) // 8}q", body, 16)
                region = self._region(epoch, tuple(members), row_bytes)
                if region is None:
                    continue  # a released epoch: the writer's shadow stays local
                self._announce(conn, region)
            else:
                self._close_inbound(conn)
                return

    def _announce(self, conn: _Conn, region: _RegionMR) -> None:
        """Tell a writer where my table of an epoch is (at link set-up, on register, on ask)."""
        body = _REGION.pack(region.epoch, region.mr.buf, region.mr.rkey)
        self._queue(conn, wire.encode_frame(REGION, body))

    # -- tables --------------------------------------------------------------------------------

    def _region(self, epoch: int, members: tuple[int, ...], row_bytes: int) -> _RegionMR | None:
        r = self._regions.get(epoch)
        if r is None:
            if epoch < self._floor or self.me not in members:
                return None
            r = self._regions[epoch] = _RegionMR(self.pv, self.pd, epoch, members, row_bytes)
        elif (r.members, r.row_bytes) != (members, row_bytes):
            raise TransportError(
                f"epoch {epoch}: a peer's table layout {(members, row_bytes)} differs from "
                f"this member's {(r.members, r.row_bytes)}"
            )
        return r

    def register(self, epoch: int, members: Sequence[int], row_bytes: int) -> None:
        self._check_open()
        members = tuple(members)
        if self.me not in members or len(set(members)) != len(members):
            raise TransportError(f"the table of epoch {epoch} must list {self.me} once")
        if row_bytes <= 0 or row_bytes % WORD_BYTES or row_bytes >= 1 << 32:
            raise TransportError(f"row_bytes {row_bytes} must be a positive multiple of 8")
        self._layouts[epoch] = (members, row_bytes)
        fresh = epoch not in self._regions
        region = self._region(epoch, members, row_bytes)
        if fresh and region is not None:
            for conn in self._inbound.values():
                if conn.qp is not None:
                    self._announce(conn, region)
        for m in members:
            if m != self.me:  # a writer may have written before I registered
                self._rung.setdefault(m, set()).add(epoch)
        floor = max(self._layouts) - 1
        if floor > self._floor:
            self._floor = floor
            for e in [e for e in self._layouts if e < floor]:
                del self._layouts[e]
            for e in [e for e in self._regions if e < floor]:
                self._regions.pop(e).close()
            for link in self._links.values():
                for e in [e for e in link.shadows if e < floor]:
                    link.shadows.pop(e).close()
                for e in [e for e in link.regions if e < floor]:
                    del link.regions[e]

    def write(self, targets: Sequence[int], epoch: int, offset: int, data: bytes) -> None:
        layout = self._layouts.get(epoch)
        if layout is None:
            if epoch < self._floor:
                return
            raise TransportError(f"write for epoch {epoch}, which this member did not register")
        members, row_bytes = layout
        if offset < 0 or offset % WORD_BYTES or offset + len(data) > row_bytes:
            raise TransportError(
                f"write of {len(data)} bytes at offset {offset} does not fit a {row_bytes}-byte row"
            )
        for t in targets:
            link = self._links.get(t)
            if link is None or link.state != UP or t not in members:
                continue
            shadow = link.shadows.get(epoch)
            if shadow is None:
                shadow = _Shadow(self.pv, self.pd, members, row_bytes, self.me)
                link.shadows[epoch] = shadow
                known = link.regions.get(epoch)
                if known is not None:
                    shadow.remote = (known[0] + shadow.offset, known[1])
            shadow.slot.write(offset, data)
            self._stats["writes"] += 1
            if shadow.remote is not None:
                self._post_row(link, epoch, shadow, offset, len(data))
            elif not shadow.requested:
                shadow.requested = True
                body = _REGION_REQ.pack(epoch, row_bytes) + struct.pack(
                    f"<{len(members)}q", *members
                )
                assert link.conn is not None
                if not self._queue(link.conn, wire.encode_frame(REGION_REQ, body)):
                    self._link_down(link, time.monotonic())

    def _stage_init(self, link: _OutLink) -> None:
        pv = self.pv
        link.stage_mr = pv.mr.MR(self.pd, self.staging_bytes, pv.enums.IBV_ACCESS_LOCAL_WRITE)
        link.stage = _memory(link.stage_mr.buf, self.staging_bytes)
        link.stage_tail = 0
        link.in_flight.clear()

    def _stage_alloc(self, link: _OutLink, n: int) -> int | None:
        """Start of `n` free bytes of the link's staging ring, or None when it is full."""
        size = self.staging_bytes
        if n > size:
            return None
        if not link.in_flight:
            link.stage_tail = 0
            return 0
        head, tail = link.in_flight[0][1], link.stage_tail
        if tail >= head:
            if tail + n <= size:
                return tail
            return 0 if n <= head else None
        return tail if tail + n <= head else None

    def _post_row(self, link: _OutLink, epoch: int, shadow: _Shadow, offset: int, n: int) -> None:
        """Copy the row's new state to the peer: the odd word, the bytes, then the header."""
        pv, e = self.pv, self.pv.enums
        assert shadow.remote is not None and link.stage is not None and link.conn is not None
        chunk = 8 + align(n, 8) + WRITER_HEADER_BYTES
        start = self._stage_alloc(link, chunk)
        if start is None:
            self._drain_cq()
            start = self._stage_alloc(link, chunk)
            if start is None:
                self._link_down(link, time.monotonic())  # the peer does not keep up: reset
                return
        seq = shadow.slot.seq
        stage, base = link.stage, link.stage_mr.buf
        stage[start : start + 8] = struct.pack("<Q", seq - 1)
        stage[start + 8 : start + 8 + n] = shadow.slot.data[offset : offset + n]
        head_at = start + 8 + align(n, 8)
        stage[head_at : head_at + WRITER_HEADER_BYTES] = shadow.buf[:WRITER_HEADER_BYTES]
        remote, rkey = shadow.remote
        lkey = link.stage_mr.lkey
        self._wr_ids = (self._wr_ids + 1) % _SIGNALED
        wr_id = self._wr_ids
        pieces = [(start, 8, remote, 0)]
        if n:
            pieces.append((start + 8, n, remote + ROW_HEADER_BYTES + offset, 0))
        pieces.append((head_at, WRITER_HEADER_BYTES, remote, 1))
        try:
            for at, length, dest, last in pieces:
                sge = pv.wr.SGE(base + at, length, lkey)
                opcode = e.IBV_WR_RDMA_WRITE_WITH_IMM if last else e.IBV_WR_RDMA_WRITE
                swr = pv.wr.SendWR(
                    wr_id=(wr_id | _SIGNALED) if last else wr_id,
                    opcode=opcode,
                    num_sge=1,
                    sg=[sge],
                    imm_data=socket.htonl(epoch & _IMM_EPOCH_MASK) if last else 0,
                    send_flags=e.IBV_SEND_SIGNALED if last else 0,
                )
                swr.set_wr_rdma(rkey, dest)
                link.conn.qp.post_send(swr)
                self._stats["rdma_writes"] += 1
        except pv.pyverbs_error.PyverbsError:
            self._link_down(link, time.monotonic())
            return
        link.in_flight.append((wr_id | _SIGNALED, start, start + chunk))
        link.stage_tail = start + chunk

    # -- data channel --------------------------------------------------------------------------

    def send(self, target: int, payload: bytes) -> None:
        if len(payload) > self.config.frame_bytes_max:
            raise TransportError(
                f"a {len(payload)}-byte message exceeds frame_bytes_max "
                f"({self.config.frame_bytes_max})"
            )
        link = self._links.get(target)
        if link is None or link.state != UP:
            return
        assert link.conn is not None
        if not self._queue(link.conn, wire.encode_frame(DATA, payload)):
            self._link_down(link, time.monotonic())

    # -- links up and down ---------------------------------------------------------------------

    def _drop(self, link: _OutLink) -> None:
        conn = link.conn
        if conn is not None:
            if self._sel is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(conn.sock)
            conn.sock.close()
            if conn.qp is not None:
                conn.qp.close()
            link.conn = None
        for s in link.shadows.values():
            s.close()
        link.shadows.clear()
        link.regions.clear()
        if link.stage is not None:
            link.stage.release()
            link.stage_mr.close()
            link.stage = link.stage_mr = None
        link.in_flight.clear()

    def _link_down(self, link: _OutLink, now: float) -> None:
        if link.state == DOWN:
            return
        self._drop(link)
        link.state = DOWN
        link.down_since = now
        link.backoff_s = self.config.reconnect_backoff_s
        link.next_try = now + link.backoff_s

    # -- poll ----------------------------------------------------------------------------------

    def _drain_cq(self) -> None:
        e = self.pv.enums
        by_qp = {lk.conn.qp.qp_num: lk for lk in self._links.values() if lk.conn and lk.conn.qp}
        for _ in range(64):
            n, wcs = self.cq.poll(64)
            for wc in wcs:
                if wc.opcode == e.IBV_WC_RECV_RDMA_WITH_IMM and wc.status == e.IBV_WC_SUCCESS:
                    got = self._in_qps.get(wc.qp_num)
                    if got is None:
                        continue
                    conn, source = got
                    imm = socket.ntohl(wc.imm_data) & _IMM_EPOCH_MASK
                    for epoch in self._regions:
                        if epoch & _IMM_EPOCH_MASK == imm:
                            self._rung.setdefault(source, set()).add(epoch)
                    conn.qp.post_recv(self.pv.wr.RecvWR(wr_id=wc.qp_num, num_sge=0))
                    continue
                link = by_qp.get(wc.qp_num)
                if link is None:
                    continue
                if wc.status != e.IBV_WC_SUCCESS:
                    self._link_down(link, time.monotonic())
                    by_qp.pop(wc.qp_num, None)
                    continue
                while link.in_flight and link.in_flight[0][0] != wc.wr_id:
                    link.in_flight.popleft()  # completions are in order: earlier ones are done
                if link.in_flight:
                    link.in_flight.popleft()
            if n < 64:
                return

    def _scan(self) -> None:
        assert self.handler is not None
        ranges = getattr(self.handler, "on_write_ranges", None)
        rung, self._rung = self._rung, {}
        for source, epoch in self._busy:
            rung.setdefault(source, set()).add(epoch)
        self._busy = set()
        for source, epochs in rung.items():
            got = []
            for epoch in sorted(epochs, reverse=True):  # newest first, reported oldest first
                region = self._regions.get(epoch)
                slot = region.slot(source) if region is not None else None
                if slot is None or source == self.me:
                    continue
                r = read_row(slot, ranges, self.spins_max)
                if r is BUSY:
                    self._busy.add((source, epoch))
                elif r is not None:
                    got.append((epoch, slot, r))
            for epoch, slot, r in reversed(got):
                seq = report_row(self.handler, ranges, source, epoch, r)
                self._stats["rows_reported"] += 1
                if slot.mark_seen(seq):
                    self._rung.setdefault(source, set()).add(epoch)

    def poll(self, timeout_s: float | None) -> None:
        self._check_open()
        assert self._sel is not None and self.handler is not None
        now = time.monotonic()
        wait = self._wait_s(now, timeout_s)
        for key, mask in self._sel.select(wait):
            if isinstance(key.data, Watched):
                key.data.callback(mask)
                continue
            what, obj = key.data
            if what == "wake":
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
            elif what == "accept":
                self._on_accept()
            elif what == "out":
                if obj.conn is not None and obj.conn.sock is key.fileobj:
                    self._on_out(obj, mask, time.monotonic())
            elif what == "in" and obj.sock in self._inbound:
                self._on_in(obj, mask)
        self._drain_cq()
        self.cq.req_notify()  # arm for the next completion, then take what came meanwhile
        self._drain_cq()
        self._scan()
        self._timers(time.monotonic())

    def _wait_s(self, now: float, timeout_s: float | None) -> float | None:
        if any(self._rung.values()):
            return 0
        deadline = None if timeout_s is None else now + max(timeout_s, 0)
        for link in self._links.values():
            if link.state == DOWN:
                t = link.next_try
                if not link.failed_reported:
                    t = min(t, link.down_since + self.config.peer_failed_after_s)
                deadline = t if deadline is None else min(deadline, t)
        if self._busy:
            deadline = now + 0.001 if deadline is None else min(deadline, now + 0.001)
        return None if deadline is None else max(0.0, deadline - now)

    def _timers(self, now: float) -> None:
        assert self.handler is not None
        for link in list(self._links.values()):
            if link.state != DOWN:
                continue
            if now >= link.next_try:
                self._dial(link, now)
            if (
                link.state == DOWN
                and not link.failed_reported
                and now - link.down_since >= self.config.peer_failed_after_s
            ):
                link.failed_reported = True
                self.handler.on_peer_failed(link.member)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"w")

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("the verbs transport is closed")
        if self.handler is None:
            raise TransportError("the verbs transport is not started")

    def statistics(self) -> dict[str, int]:
        """Counters since start: row writes made (per target), RDMA WRITEs posted, row reports
        made to the handler, data frames received."""
        return dict(self._stats)


def _gid_raw(gid: Any) -> bytes:
    text = getattr(gid, "gid", str(gid))
    raw = bytes.fromhex(text.replace(":", ""))
    return raw.rjust(16, b"\0")[:16]


def _gid_text(raw: bytes) -> str:
    h = raw.hex()
    return ":".join(h[i : i + 4] for i in range(0, 32, 4))
