"""Mutual TLS on the members' client ports and in the clients, on real member processes.

A cluster with `[tls]` (`LocalCluster(tls=True)`: a local CA, a certificate per member and the
client certificate `smr-client-admin`) serves the threaded and the asyncio client over TLS, and
refuses at once, saying why, a certificate of another CA, an expired one, a revoked one (closing
the connections it had), a plaintext client, and a member that presents another member's
certificate; a TLS client of a cluster without TLS is told so. The member links may run plain tcp
or TLS: nothing here depends on which.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import threading
import time

import pytest

import smr
import smr.aio
from smr.client import ClientError
from smr.runtime.cluster import LocalCluster
from smr.runtime.config import ClusterConfig, load
from smr.statemachines import KVStore
from smr.transport import tls, wire
from smr.transport.tls import CLIENT_PORT_SECRET, TlsEndpoint, TlsError

pytestmark = pytest.mark.cluster

WAIT_S = 30.0  # how long a test waits for what should happen within a second or two
QUICK_S = 10.0  # a refusal comes at once: well within this, far below the clients' timeout_s
TIMEOUT_S = 30.0  # the clients' timeout_s where a test shows that a refusal does not wait for it


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tls-cluster"))
    with LocalCluster(3, data_dir=data_dir, transport="tcp", mode="durable", tls=True) as c:
        c.wait_ready(timeout_s=60)
        yield c


def tls_dir(cluster: LocalCluster) -> str:
    return os.path.join(cluster.data_dir, "tls")


def variant(cluster: LocalCluster, name: str, text: str) -> str:
    """A copy of the cluster's configuration, changed as `text`, next to it (its relative paths
    still hold)."""
    path = os.path.join(cluster.data_dir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def config_text(cluster: LocalCluster) -> str:
    with open(cluster.config_path) as f:
        return f.read()


def with_client_port(text: str, config: ClusterConfig, member: int, port: int) -> str:
    old = f"client_port = {config.members[member].client_port}\n"
    assert text.count(old) == 1
    return text.replace(old, f"client_port = {port}\n")


def client_context(cluster: LocalCluster, cert: str, key: str) -> TlsEndpoint:
    assert cluster.config.tls is not None
    return TlsEndpoint(cluster.config.tls.ca, cert, key, cluster.config.tls.crl)


def dial(cluster: LocalCluster, member: int, endpoint: TlsEndpoint) -> wire.Stream:
    m = cluster.config.members[member]
    return wire.connect(
        m.host,
        m.client_port,
        CLIENT_PORT_SECRET,
        my_id=7,
        role="client",
        timeout_s=5.0,
        tls=endpoint.client_context,
        member=member,
    )


def refused(call, *, timeout_s: float = QUICK_S) -> str:
    """The message of the ClientError `call()` raises, which it must raise within timeout_s."""
    start = time.monotonic()
    with pytest.raises(ClientError) as info:
        call()
    assert time.monotonic() - start < timeout_s, f"the refusal took too long: {info.value}"
    return str(info.value)


def member_log(cluster: LocalCluster, member: int) -> str:
    with open(cluster.log_path(member)) as f:
        return f.read()


def test_the_threaded_and_the_asyncio_client_and_a_watch_work_over_tls(cluster):
    with smr.connect(cluster.config_path) as client:
        kv = client.subgroup(KVStore)
        assert sorted(kv.put("a", b"1")) == [1, 2, 3]
        assert kv.get("a") == b"1"
        # pipelined: the client's reader and writer threads use the TLS connection at once
        futures = [kv.submit("put", f"k{i}", b"v" * (i % 300)) for i in range(500)]
        for f in futures:
            assert sorted(f.result(timeout=WAIT_S)) == [1, 2, 3]
        assert kv.get("k499") == b"v" * (499 % 300)
        with kv.watch(from_version=0) as watch:
            first = next(watch)
            assert first.operation == "put" and first.args["key"] == "a"

    async def main() -> None:
        async with smr.aio.connect(cluster.config_path) as client:
            kv = client.subgroup(KVStore)
            assert sorted(await kv.put("b", b"2")) == [1, 2, 3]
            assert await kv.get("b") == b"2"
            assert await kv.get("a") == b"1"
            results = await asyncio.gather(*(kv.submit("put", f"j{i}", b"w") for i in range(300)))
            assert all(sorted(r) == [1, 2, 3] for r in results)

    asyncio.run(main())


def test_a_certificate_that_names_a_member_is_a_valid_client_certificate_too(cluster):
    # tools on a member's host may present the member's own certificate
    cert = os.path.join(tls_dir(cluster), "smr-member-2.crt")
    key = os.path.join(tls_dir(cluster), "smr-member-2.key")
    with smr.connect(cluster.config_path, tls_cert=cert, tls_key=key) as client:
        kv = client.subgroup(KVStore)
        assert sorted(kv.put("tool", b"1")) == [1, 2, 3]


def test_a_certificate_of_another_ca_is_refused_at_once_saying_why(cluster, tmp_path):
    other = str(tmp_path / "other-ca")
    tls.init_ca(other)
    cert, key = tls.issue(other, "smr-client-eve")
    why = refused(
        lambda: smr.connect(
            cluster.config_path, tls_cert=cert, tls_key=key, timeout_s=TIMEOUT_S
        ).close()
    )
    assert "refused the connection" in why and "does not trust our certificate" in why, why

    async def main() -> None:
        async with smr.aio.connect(
            cluster.config_path, tls_cert=cert, tls_key=key, timeout_s=TIMEOUT_S
        ):
            pass

    why = refused(lambda: asyncio.run(main()))
    assert "does not trust our certificate" in why, why
    with pytest.raises(TlsError, match="does not trust our certificate"):
        dial(cluster, 1, client_context(cluster, cert, key))
    assert "not signed by this cluster's CA" in member_log(cluster, 1)
    with smr.connect(cluster.config_path) as client:  # everyone else is served
        assert client.subgroup(KVStore).get("a") == b"1"


def test_an_expired_client_certificate_is_refused_at_once_saying_why(cluster):
    cert, key = tls.issue(tls_dir(cluster), "smr-client-old", days=-1)
    why = refused(
        lambda: smr.connect(
            cluster.config_path, tls_cert=cert, tls_key=key, timeout_s=TIMEOUT_S
        ).close()
    )
    assert "expired" in why, why

    async def main() -> None:
        async with smr.aio.connect(
            cluster.config_path, tls_cert=cert, tls_key=key, timeout_s=TIMEOUT_S
        ):
            pass

    assert "expired" in refused(lambda: asyncio.run(main()))


def test_a_plaintext_client_on_a_tls_port_hears_why_at_once_and_others_are_served(cluster):
    text = config_text(cluster)
    plain = variant(cluster, "plaintext.toml", text[: text.index("[tls]")])
    config = load(plain)
    assert config.tls is None
    m = config.members[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="a TLS port"):
        wire.connect(m.host, m.client_port, config.secret, my_id=7, role="client", timeout_s=20)
    assert time.monotonic() - start < QUICK_S  # closed at once, not left to time out

    async def aio_dial() -> None:
        await wire.open_connection(
            m.host, m.client_port, config.secret, my_id=7, role="client", timeout_s=20
        )

    with pytest.raises(ConnectionError, match="a TLS port"):
        asyncio.run(aio_dial())
    # smr.connect keeps dialing for timeout_s (a member may be restarting), then says why
    why = refused(lambda: smr.connect(plain, timeout_s=2.0), timeout_s=2.0 + QUICK_S)
    assert "a TLS port" in why, why
    with smr.connect(cluster.config_path, member=1) as client:
        assert sorted(client.subgroup(KVStore).put("after-plaintext", b"1")) == [1, 2, 3]
    assert "a plaintext client on a TLS port" in member_log(cluster, 1)


def test_a_member_that_presents_another_members_certificate_is_refused(cluster):
    # a configuration whose member 1 and 2 have each other's client ports: "member 1" answers
    # with member 2's certificate
    config = cluster.config
    text = config_text(cluster)
    port1, port2 = config.members[1].client_port, config.members[2].client_port
    text = with_client_port(text, config, 1, 0)
    text = with_client_port(text, config, 2, port1).replace(
        "client_port = 0\n", f"client_port = {port2}\n"
    )
    swapped = load(variant(cluster, "swapped.toml", text))
    assert swapped.members[1].client_port == port2
    secret, context = wire.dial_settings(swapped.secret, swapped.tls)
    with pytest.raises(TlsError, match=r"certificate for 'smr-member-2', not member 1's"):
        wire.connect(
            "127.0.0.1", port2, secret, my_id=7, role="client", timeout_s=5, tls=context, member=1
        )
    with smr.connect(swapped, member=3, timeout_s=TIMEOUT_S) as client:
        assert client.member == 3  # member 3 is what it says


def test_a_tls_client_of_a_cluster_without_tls_is_told_so(cluster, tmp_path):
    with LocalCluster(1, data_dir=str(tmp_path / "plain"), transport="tcp") as plain:
        plain.wait_ready(timeout_s=60)
        text = config_text(plain)
        assert "[tls]" not in text
        # the TLS cluster's [tls] section, its paths made absolute, on the plaintext cluster
        section = config_text(cluster)
        section = section[section.index("[tls]") :].replace('"tls/', f'"{tls_dir(cluster)}/')
        path = variant(plain, "tls-on-plain.toml", text + "\n" + section)
        why = refused(lambda: smr.connect(path, timeout_s=TIMEOUT_S).close())
        assert "does not use TLS" in why, why

        async def main() -> None:
            async with smr.aio.connect(path, timeout_s=TIMEOUT_S):
                pass

        assert "does not use TLS" in refused(lambda: asyncio.run(main()))
        # a certificate for a cluster without [tls] is a mistake said at once
        admin = os.path.join(tls_dir(cluster), "smr-client-admin")
        with pytest.raises(ValueError, match=r"no \[tls\] section"):
            smr.connect(plain.config_path, tls_cert=admin + ".crt", tls_key=admin + ".key")
        with smr.connect(plain.config_path) as client:  # and it serves plaintext clients
            assert client.subgroup(KVStore).put("x", b"1") == {1: None}


def test_a_tls_cluster_needs_a_client_certificate(cluster):
    text = config_text(cluster)
    text = re.sub(r"client_(cert|key) = .*\n", "", text)
    config = load(variant(cluster, "no-client-cert.toml", text))
    assert config.tls is not None and config.tls.client_cert is None
    with pytest.raises(TlsError, match="a client needs a certificate"):
        smr.connect(config)


def test_revoking_a_connected_client_closes_its_connections_and_keeps_it_out(cluster):
    directory = tls_dir(cluster)
    cert, key = tls.issue(directory, "smr-client-bob")
    bob = client_context(cluster, cert, key)
    with (
        smr.connect(cluster.config_path) as admin,
        smr.connect(cluster.config_path, tls_cert=cert, tls_key=key, timeout_s=5.0) as client,
    ):
        kv, admin_kv = client.subgroup(KVStore), admin.subgroup(KVStore)
        assert sorted(kv.put("bob", b"1")) == [1, 2, 3]
        raw = dial(cluster, 1, bob)  # a connection of bob's, idle
        tls.revoke(directory, "smr-client-bob")
        start = time.monotonic()
        raw.settimeout(WAIT_S)
        try:
            assert raw.recv(1 << 16) == b"", "the member closes the connection"
        except ConnectionResetError:
            pass
        finally:
            raw.close()
        assert time.monotonic() - start < WAIT_S
        # the client's own connection is closed too; it fails over, and no member takes it
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                kv.put("bob", b"2")
            except ClientError as e:
                assert "revoked" in str(e), e
                break
            assert time.monotonic() < deadline, "bob's client was still served"
            time.sleep(0.05)
        for member in (1, 2, 3):
            with pytest.raises(TlsError, match="revoked"):
                dial(cluster, member, bob)
        why = refused(
            lambda: smr.connect(
                cluster.config_path, tls_cert=cert, tls_key=key, timeout_s=TIMEOUT_S
            ).close()
        )
        assert "revoked" in why, why
        assert sorted(admin_kv.put("admin", b"still")) == [1, 2, 3]  # admin's connection stays
    assert any('"event": "client-revoked"' in member_log(cluster, m) for m in (1, 2, 3))


class Tap:
    """A TCP proxy to `target` that records what passes each way."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.up = bytearray()  # client to member
        self.down = bytearray()  # member to client
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            member = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, member, self.up), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(member, client, self.down), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        try:
            while data := src.recv(1 << 16):
                with self.lock:
                    record += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def test_what_crosses_the_wire_is_not_plaintext(cluster):
    config = cluster.config
    m = config.members[1]
    tap = Tap((m.host, m.client_port))
    try:
        path = variant(
            cluster, "tapped.toml", with_client_port(config_text(cluster), config, 1, tap.port)
        )
        key, value = "tapped-key-3f9a", b"a value nobody on the path may read 7c21"
        with smr.connect(path, member=1) as client:
            assert client.member == 1
            kv = client.subgroup(KVStore)
            kv.put(key, value)
            assert kv.get(key) == value
        with tap.lock:
            up, down = bytes(tap.up), bytes(tap.down)
    finally:
        tap.close()
    assert up and down
    assert up[0] == 0x16 and down[0] == 0x16  # TLS handshake records, both ways
    for seen in (up, down):
        assert key.encode() not in seen and value not in seen
        assert wire.MAGIC not in seen  # even the handshake inside TLS is not visible


def test_a_client_that_ends_tls_in_order_is_let_go_at_once(cluster):
    # asyncio's orderly TLS close waits for the member's answer (or the end of the connection):
    # the member closes on the client's close_notify rather than leave it waiting for 30 s
    config = cluster.config
    m = config.members[2]
    secret, context = wire.dial_settings(config.secret, config.tls)

    async def main() -> float:
        _, writer = await wire.open_connection(
            m.host, m.client_port, secret, my_id=7, role="client", timeout_s=5, tls=context
        )
        start = time.monotonic()
        writer.close()
        await writer.wait_closed()
        return time.monotonic() - start

    assert asyncio.run(main()) < QUICK_S
