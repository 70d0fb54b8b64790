"""TLS settings: the `[tls]` table, the local CA commands, and the TLS session on its own."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from smr.cli.main import cli
from smr.runtime.config import ConfigError, load, write_local
from smr.transport import tls
from smr.transport.auto import make_transport


def _pair(client: tls.TlsEndpoint, server: tls.TlsEndpoint) -> tuple[tls.TlsSession, ...]:
    """Run a TLS handshake in memory; the errors are each side's own."""
    c, s = client.session(server=False), server.session(server=True)
    for _ in range(10):
        if out := c.take_output():
            s.feed(out)
        if out := s.take_output():
            c.feed(out)
        if c.done and s.done:
            return c, s
    raise AssertionError("the handshake did not finish")


@pytest.fixture
def ca(tmp_path):
    d = str(tmp_path / "ca")
    tls.init_ca(d)
    for name in ("smr-member-1", "smr-member-2", "smr-client-bob"):
        tls.issue(d, name)
    return d


def _endpoint(d: str, name: str, crl: bool = True) -> tls.TlsEndpoint:
    return tls.TlsEndpoint(
        f"{d}/ca.crt", f"{d}/{name}.crt", f"{d}/{name}.key", f"{d}/crl.pem" if crl else None
    )


def test_sessions_carry_bytes_both_ways_and_name_their_peers(ca):
    c, s = _pair(_endpoint(ca, "smr-client-bob"), _endpoint(ca, "smr-member-1"))
    assert (c.peer_name, s.peer_name) == ("smr-member-1", "smr-client-bob")
    c.send(b"hello")
    wire = c.take_output()
    assert b"hello" not in wire and s.feed(wire) == b"hello"
    big = os.urandom(3 << 20)
    s.send(big)
    assert c.feed(s.take_output()) == big
    tls.check_member(c.peer_name, 1)
    with pytest.raises(tls.TlsError, match="claims to be member 2 but its certificate names"):
        tls.check_member(c.peer_name, 2)


def test_another_ca_an_expired_or_revoked_certificate_and_plaintext_are_refused(ca, tmp_path):
    other = str(tmp_path / "other")
    tls.init_ca(other)
    tls.issue(other, "smr-member-1")
    member = _endpoint(ca, "smr-member-2")
    with pytest.raises(tls.TlsError, match="not signed by this cluster's CA"):
        _pair(_endpoint(other, "smr-member-1", crl=False), member)
    tls.issue(ca, "smr-client-old", days=-1)
    with pytest.raises(tls.TlsError, match="expired"):
        _pair(_endpoint(ca, "smr-client-old"), member)
    bob = _endpoint(ca, "smr-client-bob")
    _pair(bob, member)
    serial = tls.revoke(ca, "smr-client-bob")
    assert member.refresh(now_s=1e9) and serial in member.revoked
    assert not member.refresh(now_s=1e9)  # once a second at most
    with pytest.raises(tls.TlsError, match="revoked"):
        _pair(bob, member)
    with pytest.raises(tls.TlsError, match="does not speak TLS"):
        member.session(server=True).feed(b"\x00\x00\x00\x10plaintext hello")


def test_a_cluster_with_tls_needs_no_secret_and_checks_its_files(tmp_path):
    path = write_local(str(tmp_path), nodes=3, tls=True)
    config = load(path)
    assert config.tls is not None and config.tls.client_cert is not None
    assert config.transport_config(2).tls.cert.endswith("smr-member-2.crt")
    assert config.transport_config().tls is None  # the simulator's: no member, no TLS
    with open(path) as f:
        text = f.read().replace('secret_file = "secret"\n', "")
    with open(path, "w") as f:
        f.write(text)
    assert load(path).secret == tls.CLIENT_PORT_SECRET
    with open(path, "w") as f:
        f.write(text.replace('ca = "tls/ca.crt"', 'ca = "tls/nope.crt"'))
    with pytest.raises(ConfigError, match=r"\[tls\]: ca 'tls/nope.crt': no such file"):
        load(path)
    with open(path, "w") as f:
        f.write(text.replace('client_key = "tls/smr-client-admin.key"\n', ""))
    with pytest.raises(ConfigError, match="both client_cert and client_key"):
        load(path)
    with open(path, "w") as f:
        f.write(text.replace('crl = "tls/crl.pem"', 'crl = "tls/crl.pem"\nciphers = "x"'))
    with pytest.raises(ConfigError, match="ciphers"):
        load(path)


def test_auto_is_tcp_with_tls(tmp_path):
    config = load(write_local(str(tmp_path), nodes=3, tls=True))
    transport, why = make_transport("auto", 1, config.addresses(), config.transport_config(1))
    assert transport.name == "tcp" and "TLS" in why
    transport.close()


def test_a_client_without_a_certificate_is_told_what_to_give(tmp_path):
    config = load(write_local(str(tmp_path), nodes=3, tls=True))
    bare = tls.TlsConfig(config.tls.ca, config.tls.cert, config.tls.key)
    with pytest.raises(tls.TlsError, match="a client needs a certificate"):
        bare.for_client()


def test_the_tls_commands_make_issue_and_revoke(tmp_path):
    d = str(tmp_path / "t")
    run = CliRunner().invoke
    r = run(cli, ["tls", "init", d, "--members", "2", "--client", "bob"])
    assert r.exit_code == 0, r.output
    assert sorted(f for f in os.listdir(d) if f.endswith(".crt")) == [
        "ca.crt",
        "smr-client-bob.crt",
        "smr-member-1.crt",
        "smr-member-2.crt",
    ]
    assert oct(os.stat(f"{d}/smr-client-bob.key").st_mode & 0o777) == "0o600"
    assert run(cli, ["tls", "issue", d, "3", "--member"]).exit_code == 0
    assert os.path.exists(f"{d}/smr-member-3.crt")
    r = run(cli, ["tls", "revoke", d, "bob"])
    assert r.exit_code == 0 and "revoked smr-client-bob" in r.output
    assert len(tls.revoked_serials(f"{d}/crl.pem")) == 1
    r = run(cli, ["tls", "revoke", d, "nobody"])
    assert r.exit_code == 2 and "smr-client-nobody.crt" in r.output
    r = run(cli, ["tls", "issue", str(tmp_path / "none"), "x"])
    assert r.exit_code == 2 and "smr tls init" in r.output
