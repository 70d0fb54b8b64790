"""The wire format: frames decoded from any split of the stream, and the mutual handshake."""

from __future__ import annotations

import itertools
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.transport.wire import (
    HANDSHAKE_BYTES,
    HEADER,
    AuthError,
    FrameDecoder,
    FrameError,
    Handshake,
    connect,
    encode_frame,
)

SECRET = b"wire-test-secret-0123456789abcdef"
OTHER = b"another-secret-0123456789abcdefgh"

FRAMES = [(1, b""), (2, b"x"), (7, bytes(range(256)) * 40), (255, b"tail" * 3)]
STREAM = b"".join(encode_frame(k, b) for k, b in FRAMES)


def test_frames_decode_fed_whole_byte_by_byte_and_with_a_trailing_part():
    assert FrameDecoder(1 << 20).feed(STREAM) == FRAMES
    d = FrameDecoder(1 << 20)
    got = []
    for i in range(len(STREAM)):
        got += d.feed(STREAM[i : i + 1])
    assert got == FRAMES
    d = FrameDecoder(1 << 20)
    assert d.feed(STREAM + STREAM[:3]) == FRAMES
    assert d.buffered_bytes == 3
    assert d.feed(STREAM[3:]) == FRAMES


@given(
    st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12),
    st.sampled_from([1, 5, 300, 64 << 10]),
)
@settings(max_examples=300, deadline=None)
def test_frames_decode_from_any_split(cuts, direct_bytes_min):
    d = FrameDecoder(1 << 20, direct_bytes_min=direct_bytes_min)
    got = []
    points = [0, *sorted(cuts), len(STREAM)]
    for a, b in itertools.pairwise(points):
        got += d.feed(memoryview(STREAM)[a:b])
    assert got == FRAMES
    assert d.buffered_bytes == 0


@given(st.lists(st.integers(min_value=1, max_value=4000), max_size=30))
@settings(max_examples=200, deadline=None)
def test_a_large_body_can_be_received_in_place(reads):
    # what the tcp transport does: recv_into the body window while a large frame is incomplete
    d = FrameDecoder(1 << 20, direct_bytes_min=100)
    stream = memoryview(STREAM)
    got: list = []
    pos = 0
    sizes = iter(reads)
    while pos < len(stream):
        size = next(sizes, len(stream))
        window = d.body_window()
        if window is None:
            got += d.feed(stream[pos : pos + size])
            pos += min(size, len(stream) - pos)
        else:
            n = min(size, len(window), len(stream) - pos)
            window[:n] = stream[pos : pos + n]
            got += d.body_received(n)
            pos += n
    assert got == FRAMES


def test_an_oversized_length_is_refused_before_its_body_is_buffered():
    d = FrameDecoder(1000)
    assert d.feed(encode_frame(1, b"a" * 1000)) == [(1, b"a" * 1000)]
    with pytest.raises(FrameError, match="1001 bytes exceeds the 1000-byte limit"):
        d.feed(HEADER.pack(1001, 1))  # the header alone: no body was sent, none is awaited
    assert d.buffered_bytes < 1001


@given(st.lists(st.binary(max_size=40), max_size=8))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_to_frames_or_raise_frame_error(pieces):
    d = FrameDecoder(64)
    try:
        for piece in pieces:
            for kind, body in d.feed(piece):
                assert 0 <= kind <= 255 and len(body) <= 64
    except FrameError:
        pass
    assert d.buffered_bytes <= HEADER.size + 64 + 40  # never more than a frame and a piece


def _pair(server_secret=SECRET, client_secret=SECRET, client_role="member"):
    server = Handshake(server_secret, server=True, my_id=1, role="member")
    client = Handshake(client_secret, server=False, my_id=9, role=client_role)
    return server, client


def _run(server: Handshake, client: Handshake, after: bytes = b"") -> None:
    """Exchange messages as two sockets would, both hellos first."""
    to_server = client.initial()
    to_client = server.initial()
    while not (server.done and client.done):
        if to_server and not server.done:
            data, to_server = to_server + (after if len(to_server) else b""), b""
            to_client += server.feed(data)
        if to_client and not client.done:
            data, to_client = to_client, b""
            to_server += client.feed(data)


def test_the_handshake_authenticates_both_ends_and_keeps_what_follows():
    server, client = _pair(client_role="client")
    client_hello = client.initial()
    reply = server.feed(client_hello)  # the server's proof, sent before it checks the client
    assert len(reply) == HANDSHAKE_BYTES - len(client_hello)
    proof = client.feed(server.initial() + reply)
    assert client.done and client.peer_id == 1 and client.peer_role == "member"
    server.feed(proof + encode_frame(2, b"first frame"))
    assert server.done and server.peer_id == 9 and server.peer_role == "client"
    assert FrameDecoder(100).feed(server.leftover) == [(2, b"first frame")]


def test_a_wrong_secret_fails_on_both_ends():
    server, client = _pair(client_secret=OTHER)
    reply = server.feed(client.initial())
    with pytest.raises(AuthError, match="different cluster secret"):
        client.feed(server.initial() + reply)
    server2, client2 = _pair(client_secret=OTHER)
    server2.feed(client2.initial())
    proof = client2.feed(server2.initial())
    with pytest.raises(AuthError, match="different cluster secret"):
        server2.feed(proof)
    assert server2.peer_id is None  # an unproven id is not reported


def test_garbage_and_a_wrong_version_are_refused_at_once():
    server, _ = _pair()
    with pytest.raises(AuthError, match="bad magic"):
        server.feed(b"G")  # the first wrong byte is enough
    server, client = _pair()
    hello = bytearray(client.initial())
    hello[4] = 99
    with pytest.raises(AuthError, match="version 99"):
        server.feed(bytes(hello))


def test_a_reflected_hello_or_proof_is_refused():
    server, _ = _pair()
    with pytest.raises(AuthError):
        server.feed(server.initial())  # its own hello echoed back
    # a proof made by an acceptor, sent back to another acceptor as if from a dialer
    a, b = _pair()
    b_hello = b.initial()
    a_proof = a.feed(b_hello)
    mirror = Handshake(SECRET, server=True, my_id=1, role="member")
    mirror.feed(a.initial())
    with pytest.raises(AuthError):
        mirror.feed(a_proof)


def test_a_recorded_handshake_cannot_be_replayed():
    server, client = _pair()
    reply = server.feed(client.initial())
    proof = client.feed(server.initial() + reply)
    fresh = Handshake(SECRET, server=True, my_id=1, role="member")
    fresh.feed(client.initial())  # the recorded hello, accepted as a hello
    with pytest.raises(AuthError):
        fresh.feed(proof)  # but the proof covered the old server nonce


def test_a_tampered_id_fails_the_proof():
    server, client = _pair()
    hello = bytearray(client.initial())
    hello[6] ^= 1  # the low byte of the id
    server.feed(bytes(hello))
    proof = client.feed(server.initial())
    with pytest.raises(AuthError):
        server.feed(proof)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_either_pending_or_refused(data):
    server, _ = _pair()
    try:
        server.feed(data)
    except AuthError:
        return
    assert not server.done


def test_the_secret_is_in_no_repr_or_error():
    server, client = _pair(client_secret=OTHER)
    texts = [repr(server), repr(client)]
    reply = server.feed(client.initial())
    try:
        client.feed(server.initial() + reply)
    except AuthError as e:
        texts.append(str(e))
    for secret in (SECRET, OTHER):
        for text in texts:
            assert secret.decode() not in text and secret.hex() not in text


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="role"):
        Handshake(SECRET, server=True, my_id=1, role="admin")
    with pytest.raises(ValueError, match="64-bit"):
        Handshake(SECRET, server=True, my_id=-1, role="member")


def _serve_once(secret: bytes, listener: socket.socket, silent: bool = False) -> threading.Thread:
    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            if silent:
                conn.recv(100)
                conn.recv(100)  # returns when the client gives up
                return
            hs = Handshake(secret, server=True, my_id=1, role="member")
            conn.sendall(hs.initial())
            try:
                while not hs.done:
                    data = conn.recv(4096)
                    if not data:
                        return
                    conn.sendall(hs.feed(data))
            except AuthError:
                return
            conn.sendall(encode_frame(2, b"welcome"))
            conn.recv(1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s
    s.close()


def test_connect_returns_a_socket_at_the_first_frame(listener):
    thread = _serve_once(SECRET, listener)
    sock = connect(
        "127.0.0.1", listener.getsockname()[1], SECRET, my_id=5, role="client", timeout_s=10
    )
    with sock:
        d = FrameDecoder(100)
        frames = []
        while not frames:
            frames = d.feed(sock.recv(100))
        assert frames == [(2, b"welcome")]
    thread.join(10)


def test_connect_with_a_wrong_secret_raises_auth_error(listener):
    _serve_once(SECRET, listener)
    with pytest.raises(AuthError):
        connect("127.0.0.1", listener.getsockname()[1], OTHER, my_id=5, role="client", timeout_s=10)


def test_connect_to_nothing_or_a_silent_server_raises_connection_error(listener):
    port = listener.getsockname()[1]
    _serve_once(SECRET, listener, silent=True)
    with pytest.raises(ConnectionError, match="did not complete the handshake"):
        connect("127.0.0.1", port, SECRET, my_id=5, role="client", timeout_s=0.2)
    listener.close()
    with pytest.raises(ConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
        connect("127.0.0.1", port, SECRET, my_id=5, role="client", timeout_s=2)
