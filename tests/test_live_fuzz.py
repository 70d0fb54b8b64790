"""Bad input on live processes: hypothesis throws bytes at the client port and the peer port of
a running member (garbage before the handshake, wrong and replayed handshakes, authenticated
clients sending malformed, truncated and oversized frames). After every example each member is
still running, and between examples a proper client's writes keep being answered by all three;
at the end every acknowledged write is there at every member.

`SMR_FUZZ_EXAMPLES=2000 pytest tests/test_live_fuzz.py` runs longer (docs/reliability.md); the
default keeps `make test` short.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smr
from smr.runtime import protocol
from smr.runtime.cluster import LocalCluster
from smr.statemachines import KVStore
from smr.transport.wire import HELLO_BYTES, MAGIC, AuthError, Handshake, connect, encode_frame

pytestmark = pytest.mark.cluster

EXAMPLES = int(os.environ.get("SMR_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


class Target:
    def __init__(self, cluster: LocalCluster):
        self.cluster = cluster
        self.client = smr.connect(cluster.config_path, member=1)
        self.kv = self.client.subgroup(KVStore)
        self.acked: dict[str, bytes] = {}
        self.n = 0

    def alive(self) -> None:
        for m, p in self.cluster.procs.items():
            assert p.poll() is None, f"member {m} exited with {p.returncode}"

    def still_serves(self) -> None:
        self.alive()
        self.n += 1
        key, value = f"k{self.n % 17}", b"v%d" % self.n
        assert sorted(self.kv.put(key, value)) == [1, 2, 3]
        self.acked[key] = value


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("fuzz"))
    with LocalCluster(3, data_dir=data_dir, transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        t = Target(cluster)
        try:
            yield t
        finally:
            t.client.close()


def _send(address: tuple[str, int], data: bytes, *, read_s: float = 0.05) -> None:
    with socket.create_connection(address, timeout=5) as s:
        try:
            s.sendall(data)
            s.settimeout(read_s)
            while s.recv(65536):  # whatever it says before it closes or goes quiet
                pass
        except (TimeoutError, ConnectionError, OSError):
            pass


def _address(target: Target, port_kind: str) -> tuple[str, int]:
    member = target.cluster.config.members[2]
    return member.host, getattr(member, port_kind)


hellos = st.builds(
    lambda version, role, ident, nonce, tail: (
        MAGIC + struct.pack("<BBQ", version, role, ident) + nonce + tail
    ),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, (1 << 64) - 1),
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=64),
)
noise = st.one_of(st.binary(max_size=2048), hellos, st.builds(lambda h: h[:-1], hellos))


@FUZZ
@given(port_kind=st.sampled_from(["client_port", "port"]), data=noise)
def test_bytes_before_the_handshake_are_refused_and_the_member_goes_on(target, port_kind, data):
    _send(_address(target, port_kind), data)
    target.alive()


def test_the_cluster_serves_after_the_unauthenticated_fuzz(target):
    target.still_serves()


def test_replayed_and_echoed_handshakes_are_refused(target):
    secret = target.cluster.config.secret
    for port_kind, role in (("client_port", "client"), ("port", "member")):
        address = _address(target, port_kind)
        # a real dialer's hello and proof, recorded, then replayed on a new connection: the
        # member's fresh nonce makes the old proof wrong
        recorded = b""
        with socket.create_connection(address, timeout=5) as s:
            hs = Handshake(secret, server=False, my_id=41, role=role)
            recorded += hs.initial()
            s.sendall(hs.initial())
            while not hs.done:
                data = s.recv(hs.bytes_needed)
                assert data, "the member closed a proper handshake"
                reply = hs.feed(data)
                if reply:
                    recorded += reply
                    s.sendall(reply)
        with socket.create_connection(address, timeout=5) as s:
            s.sendall(recorded)
            s.settimeout(5)
            got = b""
            while chunk := s.recv(4096):
                got += chunk
            assert len(got) <= HELLO_BYTES + 32  # its hello and proof at most, then the close
        # the member's own hello sent back to it
        with socket.create_connection(address, timeout=5) as s:
            theirs = s.recv(HELLO_BYTES)
            s.sendall(theirs)
            s.settimeout(5)
            while s.recv(4096):
                pass
        with pytest.raises((AuthError, ConnectionError)):
            connect(*address, b"not-the-secret-0123456789", my_id=41, role=role, timeout_s=5)
    target.still_serves()


requests = st.one_of(
    st.builds(
        protocol.Command,
        st.integers(0, 1 << 40),
        st.integers(-3, 3),
        st.integers(-3, 3),
        st.integers(0, 1 << 63),
        st.integers(0, 1 << 63),
        st.binary(max_size=256),
        st.integers(-1, 3),
    ).map(protocol.encode),
    st.builds(
        protocol.Query,
        st.integers(0, 1 << 40),
        st.integers(-3, 3),
        st.integers(-3, 3),
        st.binary(max_size=64),
        st.integers(-(1 << 62), 1 << 62),
        st.sampled_from(["linearizable", "sequential", "", "sideways"]),
    ).map(protocol.encode),
    st.binary(max_size=512),
)
frames = st.one_of(
    st.builds(lambda body: encode_frame(protocol.FRAME_REQUEST, body), requests),
    st.builds(encode_frame, st.integers(0, 255), st.binary(max_size=256)),
    st.builds(lambda body: encode_frame(protocol.FRAME_REQUEST, body)[:-1], requests),
    st.builds(
        lambda size, kind: struct.pack("<IB", size, kind),
        st.sampled_from([0, 1, (64 << 20) + 1, 0xFFFFFFFF]),
        st.integers(0, 255),
    ),
)


@FUZZ
@given(stream=st.lists(frames, min_size=1, max_size=6))
def test_an_authenticated_clients_bad_frames_never_hurt_the_member(target, stream):
    member = target.cluster.config.members[2]
    try:
        s = connect(
            member.host,
            member.client_port,
            target.cluster.config.secret,
            my_id=1000 + target.n,
            role="client",
            timeout_s=5,
        )
    except ConnectionError:
        pytest.fail("member 2 refused a proper client")
    with s:
        try:
            s.sendall(b"".join(stream))
            s.settimeout(0.1)
            while s.recv(65536):
                pass
        except (TimeoutError, ConnectionError, OSError):
            pass
    target.alive()


def test_every_acknowledged_write_is_at_every_member_after_the_fuzz(target):
    for _ in range(5):
        target.still_serves()
    for m in (1, 2, 3):
        with smr.connect(target.cluster.config_path, member=m) as client:
            kv = client.subgroup(KVStore)
            for key, value in target.acked.items():
                assert kv.get(key) == value, (m, key)
