"""An in-process fake of the pyverbs subset the verbs transport uses, for machines without RDMA.

It follows pyverbs' module layout (`device`, `pd`, `mr`, `cq`, `qp`, `wr`, `addr`, `enums`,
`pyverbs_error`, each a namespace here), class names and call signatures, so
`VerbsTransport(..., pyverbs=pyverbs_fake)` runs the provider's real code. The fabric is this
process: a QP reaches its peer by `dest_qp_num` in a process-wide table. Memory is real (an MR is
a ctypes buffer at the address `MR.buf`), an RDMA WRITE copies bytes into the target MR, and a
WRITE WITH IMMEDIATE consumes a posted receive at the target and completes it there.

Misuse fails as on hardware: posting to a QP that is not in RTS raises `PyverbsRDMAError`
(EINVAL); a write with a wrong rkey, outside the target MR or into an MR without remote write
access completes with `IBV_WC_REM_ACCESS_ERR` and moves both QPs to the error state, after which
every posted request completes with `IBV_WC_WR_FLUSH_ERR`; a target QP that is gone completes
with `IBV_WC_RETRY_EXC_ERR`; a WRITE WITH IMM with no posted receive waits (RNR retry) until
one is posted. `FABRIC.devices` can be emptied to model a machine with pyverbs but no device.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import threading
from collections import deque
from types import SimpleNamespace

# -- enums (values as in libibverbs' verbs.h) --------------------------------------------------

enums = SimpleNamespace(
    IBV_QPT_RC=2,
    IBV_QPS_RESET=0,
    IBV_QPS_INIT=1,
    IBV_QPS_RTR=2,
    IBV_QPS_RTS=3,
    IBV_QPS_ERR=6,
    IBV_MTU_1024=3,
    IBV_WR_RDMA_WRITE=0,
    IBV_WR_RDMA_WRITE_WITH_IMM=1,
    IBV_WR_SEND=2,
    IBV_SEND_SIGNALED=2,
    IBV_ACCESS_LOCAL_WRITE=1,
    IBV_ACCESS_REMOTE_WRITE=2,
    IBV_ACCESS_REMOTE_READ=4,
    IBV_WC_SUCCESS=0,
    IBV_WC_WR_FLUSH_ERR=5,
    IBV_WC_REM_ACCESS_ERR=10,
    IBV_WC_RETRY_EXC_ERR=12,
    IBV_WC_RDMA_WRITE=1,
    IBV_WC_RECV_RDMA_WITH_IMM=129,
    IBV_WC_WITH_IMM=2,
)
E = enums


class PyverbsError(Exception):
    pass


class PyverbsRDMAError(PyverbsError):
    def __init__(self, msg: str, error_code: int = -1):
        super().__init__(f"{msg}. Errno: {error_code}")
        self.error_code = error_code


class PyverbsUserError(PyverbsError):
    pass


pyverbs_error = SimpleNamespace(
    PyverbsError=PyverbsError, PyverbsRDMAError=PyverbsRDMAError, PyverbsUserError=PyverbsUserError
)


class _Fabric:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.devices = [b"fake_mlx5_0"]
        self.qps: dict[int, QP] = {}
        self.mrs: dict[int, MR] = {}  # rkey -> MR
        self.numbers = itertools.count(0x100)


FABRIC = _Fabric()


# -- device ------------------------------------------------------------------------------------


class Device:
    def __init__(self, name: bytes):
        self.name = name


def get_device_list() -> list[Device]:
    return [Device(n) for n in FABRIC.devices]


class GID:
    def __init__(self, val: str | None = None):
        self.gid = val or "fe80:0000:0000:0000:0000:0000:0000:0001"


class PortAttr:
    def __init__(self, lid: int):
        self.lid = lid
        self.state = 4  # IBV_PORT_ACTIVE


class Context:
    def __init__(self, name: str | bytes = "", **kwargs):
        want = name.encode() if isinstance(name, str) else name
        if want not in FABRIC.devices:
            raise PyverbsRDMAError(f"Failed to open device {name}", errno.ENODEV)
        self.name = want
        self.closed = False

    def query_port(self, port_num: int = 1) -> PortAttr:
        if port_num != 1:
            raise PyverbsRDMAError(f"Failed to query port {port_num}", errno.EINVAL)
        return PortAttr(lid=1)

    def query_gid(self, port_num: int, index: int) -> GID:
        return GID()

    def close(self) -> None:
        self.closed = True


device = SimpleNamespace(get_device_list=get_device_list, Context=Context, Device=Device)


# -- pd, mr ------------------------------------------------------------------------------------


class PD:
    def __init__(self, context: Context):
        self.ctx = context

    def close(self) -> None:
        pass


class MR:
    def __init__(self, pd: PD, length: int, access: int):
        if length <= 0:
            raise PyverbsRDMAError("Failed to register a MR", errno.EINVAL)
        self.pd = pd
        self.length = length
        self.access = access
        self._mem = ctypes.create_string_buffer(length)
        self.buf = ctypes.addressof(self._mem)
        with FABRIC.lock:
            self.lkey = self.rkey = next(FABRIC.numbers)
            FABRIC.mrs[self.rkey] = self

    def write(self, data: bytes, length: int, offset: int = 0) -> None:
        if offset + length > self.length:
            raise PyverbsUserError("write beyond the MR")
        ctypes.memmove(self.buf + offset, bytes(data[:length]), length)

    def read(self, length: int, offset: int) -> bytes:
        if offset + length > self.length:
            raise PyverbsUserError("read beyond the MR")
        return ctypes.string_at(self.buf + offset, length)

    def close(self) -> None:
        with FABRIC.lock:
            FABRIC.mrs.pop(self.rkey, None)


pd = SimpleNamespace(PD=PD)
mr = SimpleNamespace(MR=MR)


# -- cq ----------------------------------------------------------------------------------------


class WC:
    def __init__(self, wr_id=0, status=0, opcode=0, byte_len=0, qp_num=0, imm_data=0, wc_flags=0):
        self.wr_id = wr_id
        self.status = status
        self.opcode = opcode
        self.byte_len = byte_len
        self.qp_num = qp_num
        self.imm_data = imm_data
        self.wc_flags = wc_flags
        self.vendor_err = 0


class CompChannel:
    def __init__(self, context: Context):
        self.cond = threading.Condition(FABRIC.lock)
        self.events: deque[CQ] = deque()
        self.closed = False

    def get_cq_event(self, expected_cq: CQ) -> None:
        with self.cond:
            while not self.events and not self.closed:
                self.cond.wait()
            if self.closed:
                raise PyverbsRDMAError("Failed to get CQ event", errno.EBADF)
            self.events.popleft()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class CQ:
    def __init__(self, context: Context, cqe: int, cq_context=None, channel=None, comp_vector=0):
        self.cqe = cqe
        self.channel = channel
        self.wcs: deque[WC] = deque()
        self.armed = False
        self.unacked = 0

    def _push(self, wc: WC) -> None:
        with FABRIC.lock:
            if len(self.wcs) >= self.cqe:
                raise PyverbsRDMAError("CQ overrun", errno.ENOSPC)
            self.wcs.append(wc)
            if self.armed and self.channel is not None:
                self.armed = False
                self.unacked += 1
                self.channel.events.append(self)
                self.channel.cond.notify_all()

    def poll(self, num_entries: int = 1) -> tuple[int, list[WC]]:
        with FABRIC.lock:
            out = [self.wcs.popleft() for _ in range(min(num_entries, len(self.wcs)))]
        return len(out), out

    def req_notify(self, solicited_only: bool = False) -> None:
        with FABRIC.lock:
            self.armed = True
            if self.wcs and self.channel is not None:  # an event for what is already queued
                self.armed = False
                self.unacked += 1
                self.channel.events.append(self)
                self.channel.cond.notify_all()

    def ack_events(self, num_events: int) -> None:
        self.unacked -= num_events

    def close(self) -> None:
        pass


cq = SimpleNamespace(CQ=CQ, CompChannel=CompChannel, WC=WC)


# -- addr, wr ----------------------------------------------------------------------------------


class GlobalRoute:
    def __init__(self, dgid: GID | None = None, flow_label=0, sgid_index=0, hop_limit=1):
        self.dgid = dgid
        self.sgid_index = sgid_index


class AHAttr:
    def __init__(self, gr: GlobalRoute | None = None, is_global=0, dlid=0, sl=0, port_num=1):
        self.gr = gr
        self.is_global = is_global
        self.dlid = dlid
        self.port_num = port_num


addr = SimpleNamespace(AHAttr=AHAttr, GlobalRoute=GlobalRoute, GID=GID)


class SGE:
    def __init__(self, addr: int, length: int, lkey: int):
        self.addr = addr
        self.length = length
        self.lkey = lkey


class SendWR:
    def __init__(self, wr_id=0, opcode=E.IBV_WR_SEND, num_sge=0, imm_data=0, sg=None,
                 send_flags=E.IBV_SEND_SIGNALED, next_wr=None):  # fmt: skip
        self.wr_id = wr_id
        self.opcode = opcode
        self.num_sge = num_sge
        self.imm_data = imm_data
        self.sg = list(sg or [])
        self.send_flags = send_flags
        self.rkey = 0
        self.remote_addr = 0

    def set_wr_rdma(self, rkey: int, addr: int) -> None:
        self.rkey = rkey
        self.remote_addr = addr


class RecvWR:
    def __init__(self, wr_id=0, num_sge=0, sg=None, next_wr=None):
        self.wr_id = wr_id
        self.num_sge = num_sge
        self.sg = list(sg or [])


wr = SimpleNamespace(SGE=SGE, SendWR=SendWR, RecvWR=RecvWR)


# -- qp ----------------------------------------------------------------------------------------


class QPCap:
    def __init__(self, max_send_wr=1, max_recv_wr=10, max_send_sge=1, max_recv_sge=1,
                 max_inline_data=0):  # fmt: skip
        self.max_send_wr = max_send_wr
        self.max_recv_wr = max_recv_wr
        self.max_send_sge = max_send_sge
        self.max_recv_sge = max_recv_sge
        self.max_inline_data = max_inline_data


class QPInitAttr:
    def __init__(self, qp_type=4, qp_context=None, scq=None, rcq=None, srq=None, cap=None,
                 sq_sig_all=1):  # fmt: skip
        self.qp_type = qp_type
        self.send_cq = scq
        self.recv_cq = rcq
        self.cap = cap or QPCap()
        self.sq_sig_all = sq_sig_all


class QPAttr:
    def __init__(self, qp_state=E.IBV_QPS_INIT, cur_qp_state=E.IBV_QPS_RESET, port_num=1,
                 **kwargs):  # fmt: skip
        self.qp_state = qp_state
        self.cur_qp_state = cur_qp_state
        self.port_num = port_num
        self.dest_qp_num = 0
        self.path_mtu = E.IBV_MTU_1024
        self.rq_psn = self.sq_psn = 0
        self.qp_access_flags = 0
        self.max_rd_atomic = self.max_dest_rd_atomic = 1
        self.min_rnr_timer = self.timeout = self.retry_cnt = self.rnr_retry = 0
        self.ah_attr = None
        for k, v in kwargs.items():
            setattr(self, k, v)


class QP:
    def __init__(self, creator: PD, init_attr: QPInitAttr, qp_attr: QPAttr | None = None):
        if init_attr.qp_type != E.IBV_QPT_RC:
            raise PyverbsUserError("the fake supports RC QPs only")
        self.pd = creator
        self.attr = init_attr
        self.qp_state = E.IBV_QPS_RESET
        self.dest = 0
        self.access = 0
        self.recvs: deque[RecvWR] = deque()
        self.rnr: deque[tuple[SendWR, bytes]] = deque()  # writes with imm awaiting a receive
        self.sends_in_flight = 0
        with FABRIC.lock:
            self.qp_num = next(FABRIC.numbers)
            FABRIC.qps[self.qp_num] = self

    def to_init(self, qp_attr: QPAttr) -> None:
        self.access = qp_attr.qp_access_flags
        self.qp_state = E.IBV_QPS_INIT

    def to_rtr(self, qp_attr: QPAttr) -> None:
        if self.qp_state != E.IBV_QPS_INIT:
            self.to_init(qp_attr)
        if qp_attr.ah_attr is None or not qp_attr.dest_qp_num:
            raise PyverbsRDMAError("Failed to modify QP state to RTR", errno.EINVAL)
        self.dest = qp_attr.dest_qp_num
        self.qp_state = E.IBV_QPS_RTR

    def to_rts(self, qp_attr: QPAttr) -> None:
        if self.qp_state != E.IBV_QPS_RTR:
            self.to_rtr(qp_attr)
        self.qp_state = E.IBV_QPS_RTS

    def post_recv(self, recv_wr: RecvWR, bad_wr=None) -> None:
        with FABRIC.lock:
            if self.qp_state == E.IBV_QPS_RESET:
                raise PyverbsRDMAError("Failed to post recv", errno.EINVAL)
            if len(self.recvs) >= self.attr.cap.max_recv_wr:
                raise PyverbsRDMAError("Failed to post recv", errno.ENOMEM)
            self.recvs.append(recv_wr)
            while self.rnr and self.recvs:  # the sender was retrying for want of a receive
                send_wr, _ = self.rnr.popleft()
                self._deliver_imm(send_wr)

    def post_send(self, send_wr: SendWR, bad_wr=None) -> None:
        with FABRIC.lock:
            if self.qp_state not in (E.IBV_QPS_RTS, E.IBV_QPS_ERR):
                raise PyverbsRDMAError("Failed to post send", errno.EINVAL)
            if len(send_wr.sg) != send_wr.num_sge:
                raise PyverbsUserError("num_sge does not match the SGE list")
            scq = self.attr.send_cq
            if self.qp_state == E.IBV_QPS_ERR:
                scq._push(WC(send_wr.wr_id, E.IBV_WC_WR_FLUSH_ERR, qp_num=self.qp_num))
                return
            status = self._execute(send_wr)
            if status != E.IBV_WC_SUCCESS:
                self.qp_state = E.IBV_QPS_ERR
            if send_wr.send_flags & E.IBV_SEND_SIGNALED or self.attr.sq_sig_all:
                n = sum(s.length for s in send_wr.sg)
                scq._push(WC(send_wr.wr_id, status, E.IBV_WC_RDMA_WRITE, n, self.qp_num))

    def _execute(self, send_wr: SendWR) -> int:
        if send_wr.opcode not in (E.IBV_WR_RDMA_WRITE, E.IBV_WR_RDMA_WRITE_WITH_IMM):
            raise PyverbsUserError("the fake supports RDMA WRITE (with or without IMM) only")
        peer = FABRIC.qps.get(self.dest)
        if peer is None or peer.qp_state not in (E.IBV_QPS_RTR, E.IBV_QPS_RTS):
            return E.IBV_WC_RETRY_EXC_ERR
        data = bytearray()
        for s in send_wr.sg:
            src = FABRIC.mrs.get(s.lkey)
            if src is None or not src.buf <= s.addr <= s.addr + s.length <= src.buf + src.length:
                return E.IBV_WC_REM_ACCESS_ERR  # a local protection error, reported alike
            data += ctypes.string_at(s.addr, s.length)
        target = FABRIC.mrs.get(send_wr.rkey)
        end = send_wr.remote_addr + len(data)
        if (
            target is None
            or not target.access & E.IBV_ACCESS_REMOTE_WRITE
            or not peer.access & E.IBV_ACCESS_REMOTE_WRITE
            or not target.buf <= send_wr.remote_addr <= end <= target.buf + target.length
        ):
            peer.qp_state = E.IBV_QPS_ERR
            return E.IBV_WC_REM_ACCESS_ERR
        ctypes.memmove(send_wr.remote_addr, bytes(data), len(data))
        if send_wr.opcode == E.IBV_WR_RDMA_WRITE_WITH_IMM:
            if peer.recvs:
                peer._deliver_imm(send_wr)
            else:
                peer.rnr.append((send_wr, b""))
        return E.IBV_WC_SUCCESS

    def _deliver_imm(self, send_wr: SendWR) -> None:
        rwr = self.recvs.popleft()
        wc = WC(rwr.wr_id, E.IBV_WC_SUCCESS, E.IBV_WC_RECV_RDMA_WITH_IMM, 0, self.qp_num,
                send_wr.imm_data, E.IBV_WC_WITH_IMM)  # fmt: skip
        self.attr.recv_cq._push(wc)

    def close(self) -> None:
        with FABRIC.lock:
            FABRIC.qps.pop(self.qp_num, None)
            self.qp_state = E.IBV_QPS_RESET


qp = SimpleNamespace(QP=QP, QPCap=QPCap, QPInitAttr=QPInitAttr, QPAttr=QPAttr)
