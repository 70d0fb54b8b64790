"""The verbs transport against the in-repo pyverbs fake (this machine has no RDMA device), the
fake's own fidelity on misuse, and the one-line refusal when pyverbs or a device is missing."""

from __future__ import annotations

import importlib.util
import threading
from types import SimpleNamespace

import pytest
from fakes import pyverbs_fake as pv
from transport_factories.tcp import free_ports

from smr.transport.base import Address, TransportConfig, TransportError, TransportUnavailable
from smr.transport.verbs import VerbsTransport, check_available, device_available

SECRET = b"verbs-test-secret"


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int, bytes]] = []
        self.data: list[tuple[int, bytes]] = []
        self.up: list[int] = []
        self.failed: list[int] = []

    def on_write(self, source, epoch, offset, data):
        self.writes.append((source, epoch, offset, data))

    def on_data(self, source, payload):
        self.data.append((source, payload))

    def on_link_up(self, peer):
        self.up.append(peer)

    def on_peer_failed(self, peer):
        self.failed.append(peer)

    def image(self, source, epoch, row_bytes):
        row = bytearray(row_bytes)
        for s, e, off, data in self.writes:
            if (s, e) == (source, epoch):
                row[off : off + len(data)] = data
        return row


def pump(ts, done, rounds_max=3000):
    for _ in range(rounds_max):
        if done():
            return
        for t in ts.values():
            t.poll(0.01)
    assert done(), "condition not reached"


@pytest.fixture
def pair():
    members = (1, 2)
    addrs = {m: Address("127.0.0.1", p) for m, p in zip(members, free_ports(2), strict=True)}
    config = TransportConfig(secret=SECRET, peer_failed_after_s=0.1)
    ts = {m: VerbsTransport(m, addrs, config, pyverbs=pv) for m in members}
    hs = {m: Recorder() for m in members}
    for m in members:
        ts[m].start(hs[m])
        ts[m].register(1, list(members), 256)
    pump(ts, lambda: hs[1].up == [2] and hs[2].up == [1])
    yield ts, hs
    for t in ts.values():
        t.close()


# -- availability ------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("pyverbs") is not None, reason="pyverbs installed")
def test_without_pyverbs_check_available_says_so_in_one_line():
    assert device_available() is False
    with pytest.raises(TransportUnavailable) as info:
        check_available()
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("verbs transport unavailable: pyverbs is not installed")
    assert "smr-toolkit[rdma]" in msg and "--transport shm" in msg and "tcp" in msg


@pytest.mark.skipif(importlib.util.find_spec("pyverbs") is not None, reason="pyverbs installed")
def test_starting_without_pyverbs_raises_unavailable_before_touching_anything():
    t = VerbsTransport(1, {1: Address("127.0.0.1", 1)}, TransportConfig(secret=SECRET))
    with pytest.raises(TransportUnavailable, match="pyverbs is not installed"):
        t.start(Recorder())


def test_no_device_is_reported_and_device_available_never_raises(monkeypatch):
    monkeypatch.setattr(pv.FABRIC, "devices", [])
    assert device_available(pv) is False
    with pytest.raises(TransportUnavailable, match="no RDMA device found; use --transport shm"):
        check_available(pv)

    def broken():
        raise pv.PyverbsRDMAError("Failed to get devices list", 38)

    broken_pv = SimpleNamespace(device=SimpleNamespace(get_device_list=broken))
    assert device_available(broken_pv) is False
    with pytest.raises(TransportUnavailable, match="no RDMA device found"):
        check_available(broken_pv)
    assert device_available(object()) is False


def test_with_the_fake_device_verbs_is_available():
    assert device_available(pv) is True
    check_available(pv)


# -- the provider over the fake ----------------------------------------------------------------


def test_writes_land_whole_and_in_order_through_rdma(pair):
    ts, hs = pair
    for i in range(20):
        ts[1].write([2], 1, 8 * (i % 4), i.to_bytes(8, "little"))
    ts[1].write([2], 1, 248, b"lastword")
    pump(ts, lambda: hs[2].image(1, 1, 256)[248:] == b"lastword")
    row = hs[2].image(1, 1, 256)
    assert [int.from_bytes(row[8 * k : 8 * k + 8], "little") for k in range(4)] == [16, 17, 18, 19]
    assert ts[1].statistics()["rdma_writes"] == 3 * 21  # odd word, bytes, header with imm
    assert all(s == 1 and e == 1 for s, e, _, _ in hs[2].writes)


def test_a_write_before_the_peer_registered_its_epoch_is_not_lost(pair):
    ts, hs = pair
    ts[1].register(2, [1, 2], 512)
    ts[1].write([2], 2, 504, b"future!!")  # 2 has no table of epoch 2 yet: it is asked for
    ts[1].write([2], 2, 0, b"second..")
    pump(ts, lambda: hs[2].image(1, 2, 512)[:8] == b"second..")
    assert hs[2].image(1, 2, 512)[504:] == b"future!!"
    ts[2].register(2, [1, 2], 512)  # the layout the writer asked for is the same


def test_data_messages_arrive_whole_and_in_order(pair):
    ts, hs = pair
    big = bytes(range(256)) * 8192
    for payload in (b"a", big, b"", b"z"):
        ts[2].send(1, payload)
    pump(ts, lambda: len(hs[1].data) == 4)
    assert hs[1].data == [(2, b"a"), (2, big), (2, b""), (2, b"z")]


def test_wake_from_another_thread_ends_a_blocking_poll(pair):
    ts, _ = pair
    timer = threading.Timer(0.05, ts[1].wake)
    timer.start()
    ts[1].poll(None)
    timer.join()


def test_out_of_bounds_and_unregistered_writes_are_refused(pair):
    ts, _ = pair
    with pytest.raises(TransportError, match="does not fit"):
        ts[1].write([2], 1, 256, b"x" * 8)
    with pytest.raises(TransportError, match="does not fit"):
        ts[1].write([2], 1, 3, b"x" * 8)
    with pytest.raises(TransportError, match="did not register"):
        ts[1].write([2], 9, 0, b"x" * 8)


def test_a_closed_peer_is_reported_failed_and_writes_to_it_do_not_raise(pair):
    ts, hs = pair
    ts[2].close()
    pump({1: ts[1]}, lambda: hs[1].failed == [2])
    ts[1].write([2], 1, 0, b"dropped!")
    ts[1].send(2, b"dropped")


def test_a_completion_error_takes_the_link_down_and_it_comes_back(pair):
    ts, hs = pair
    ts[1].write([2], 1, 0, b"first...")
    pump(ts, lambda: hs[2].image(1, 1, 256)[:8] == b"first...")
    # the peer's QP breaks (as a NIC reset would): the next write completes with an error
    for qp in list(pv.FABRIC.qps.values()):
        if qp.attr.send_cq is ts[2].cq:
            qp.qp_state = pv.E.IBV_QPS_ERR
    ts[1].write([2], 1, 0, b"lost....")
    pump(ts, lambda: hs[1].up == [2, 2])  # re-dialled and set up again
    ts[1].write([2], 1, 0, b"again...")
    pump(ts, lambda: hs[2].image(1, 1, 256)[:8] == b"again...")


# -- the fake behaves like pyverbs on misuse ---------------------------------------------------


def _fake_pair():
    ctx = pv.device.Context(name="fake_mlx5_0")
    pd = pv.pd.PD(ctx)
    cq = pv.cq.CQ(ctx, 64, None, None, 0)
    init = pv.qp.QPInitAttr(qp_type=pv.E.IBV_QPT_RC, scq=cq, rcq=cq, cap=pv.qp.QPCap())
    a, b = pv.qp.QP(pd, init), pv.qp.QP(pd, init)
    local = pv.mr.MR(pd, 64, pv.E.IBV_ACCESS_LOCAL_WRITE)
    remote = pv.mr.MR(pd, 64, pv.E.IBV_ACCESS_LOCAL_WRITE | pv.E.IBV_ACCESS_REMOTE_WRITE)
    return ctx, pd, cq, a, b, local, remote


def _connect(a, b):
    for x, y in ((a, b), (b, a)):
        attr = pv.qp.QPAttr(qp_state=pv.E.IBV_QPS_INIT)
        attr.qp_access_flags = pv.E.IBV_ACCESS_REMOTE_WRITE
        x.to_init(attr)
        attr.dest_qp_num = y.qp_num
        attr.ah_attr = pv.addr.AHAttr(dlid=1)
        x.to_rts(attr)


def _write(qp, local, rkey, addr, n=8):
    wr = pv.wr.SendWR(
        opcode=pv.E.IBV_WR_RDMA_WRITE, num_sge=1, sg=[pv.wr.SGE(local.buf, n, local.lkey)]
    )
    wr.set_wr_rdma(rkey, addr)
    qp.post_send(wr)


def test_fake_refuses_posting_before_rts_and_faults_a_bad_rkey_or_range():
    _, _, cq, a, b, local, remote = _fake_pair()
    with pytest.raises(pv.PyverbsRDMAError):
        _write(a, local, remote.rkey, remote.buf)  # still in RESET
    _connect(a, b)
    local.write(b"12345678", 8)
    _write(a, local, remote.rkey, remote.buf + 8)
    assert remote.read(8, 8) == b"12345678"
    assert cq.poll(1)[1][0].status == pv.E.IBV_WC_SUCCESS
    _write(a, local, remote.rkey, remote.buf + 60)  # 4 bytes past the end of the MR
    assert cq.poll(1)[1][0].status == pv.E.IBV_WC_REM_ACCESS_ERR
    assert a.qp_state == pv.E.IBV_QPS_ERR
    _write(a, local, remote.rkey, remote.buf)  # an errored QP flushes what is posted
    assert cq.poll(1)[1][0].status == pv.E.IBV_WC_WR_FLUSH_ERR
    _, _, cq2, c, d, local2, remote2 = _fake_pair()
    _connect(c, d)
    _write(c, local2, remote2.rkey + 999, remote2.buf)  # a wrong rkey
    assert cq2.poll(1)[1][0].status == pv.E.IBV_WC_REM_ACCESS_ERR


def test_fake_write_with_imm_waits_for_a_posted_receive():
    _, _, cq, a, b, local, remote = _fake_pair()
    _connect(a, b)
    wr = pv.wr.SendWR(
        opcode=pv.E.IBV_WR_RDMA_WRITE_WITH_IMM,
        num_sge=1,
        sg=[pv.wr.SGE(local.buf, 8, local.lkey)],
        imm_data=7,
    )
    wr.set_wr_rdma(remote.rkey, remote.buf)
    a.post_send(wr)
    _, wcs = cq.poll(4)
    assert [w.opcode for w in wcs] == [pv.E.IBV_WC_RDMA_WRITE]  # no receive posted yet
    b.post_recv(pv.wr.RecvWR(wr_id=5))
    _, wcs = cq.poll(4)
    assert [(w.opcode, w.imm_data, w.wr_id) for w in wcs] == [
        (pv.E.IBV_WC_RECV_RDMA_WITH_IMM, 7, 5)
    ]
