"""TLS for member links and client ports: certificates, contexts, revocation, and a sans-I/O
session that the non-blocking loops feed.

This module owns what TLS means here. Every party has a certificate signed by the cluster's CA;
its subject's common name says who it is: `smr-member-<id>` for a member, anything else (by
convention `smr-client-<name>`) for a client. Both ends of every connection verify the other's
chain (mutual TLS, TLS 1.2 at least); a member link also checks that the common name is the
member the peer claims to be in the handshake that follows, and a client checks it reached the
member it dialed. Hostnames are not checked: members are named by id, not by DNS.

A certificate revocation list (`crl`, PEM, signed by the CA) refuses revoked certificates at the
handshake, and a member that sees the file change (`TlsEndpoint.refresh`, at most once a second)
rebuilds its contexts and closes the connections of certificates revoked since they connected.

`TlsSession` wraps `ssl.SSLObject` over memory BIOs: bytes received go in (`feed`), plaintext
comes out, and what the session has to send is taken with `take_output`, so the loops keep
their sockets, selectors and queues as they are. Errors are `TlsError`, whose message says what
went wrong in words (an unknown CA, an expired certificate, a plaintext peer).

Generating a local CA and certificates (`smr tls init|issue|revoke`, `smr cluster up --tls`) is
in `init_ca`, `issue` and `revoke`, using the `cryptography` package.
"""

from __future__ import annotations

import datetime
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

MEMBER_PREFIX = "smr-member-"
CLIENT_PREFIX = "smr-client-"
# Over TLS, clients are authenticated by their certificates, so they need not hold the cluster
# secret: the handshake inside TLS (ids and roles) is keyed with this public constant instead.
CLIENT_PORT_SECRET = b"smr client port: authenticated by tls certificates"
CRL_CHECK_INTERVAL_S = 1.0
_TLS_RECORD_HANDSHAKE = 0x16  # the first byte a TLS client sends


class TlsError(ConnectionError):
    """A TLS connection failed or was refused; the message says why."""


def member_name(member: int) -> str:
    return f"{MEMBER_PREFIX}{member}"


def member_of(name: str | None) -> int | None:
    """The member id a certificate's common name stands for, or None (a client)."""
    if name is None or not name.startswith(MEMBER_PREFIX):
        return None
    rest = name[len(MEMBER_PREFIX) :]
    return int(rest) if rest.isdigit() else None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The `[tls]` section of a cluster configuration, paths made absolute. `cert` and `key`
    are a member's, with `{id}` standing for its id; `client_cert` and `client_key` are what a
    client or tool reading this configuration presents (optional: `smr.connect` can be given
    its own)."""

    ca: str
    cert: str
    key: str
    crl: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def for_member(self, member: int) -> TlsEndpoint:
        return TlsEndpoint(
            self.ca,
            self.cert.replace("{id}", str(member)),
            self.key.replace("{id}", str(member)),
            self.crl,
        )

    def for_client(self, cert: str | None = None, key: str | None = None) -> TlsEndpoint:
        cert, key = cert or self.client_cert, key or self.client_key
        if cert is None or key is None:
            raise TlsError(
                "this cluster uses TLS: a client needs a certificate (client_cert and client_key "
                "in [tls], or tls_cert= and tls_key= when connecting; `smr tls issue` makes one)"
            )
        return TlsEndpoint(self.ca, cert, key, self.crl)


class TlsEndpoint:
    """One party's TLS settings: its certificate and key, the CA, the revocation list, and
    the contexts made from them (rebuilt when the revocation list changes)."""

    def __init__(self, ca: str, cert: str, key: str, crl: str | None = None):
        self.ca, self.cert, self.key, self.crl = ca, cert, key, crl
        self._crl_stamp: tuple[int, int] | None = None
        self._checked_at = 0.0
        self.revoked: frozenset[int] = frozenset()
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self._build()

    def __repr__(self) -> str:
        return f"TlsEndpoint(cert={self.cert!r}, ca={self.ca!r}, crl={self.crl!r})"

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        ctx = ssl.SSLContext(
            ssl.PROTOCOL_TLS_SERVER
            if purpose is ssl.Purpose.CLIENT_AUTH
            else ssl.PROTOCOL_TLS_CLIENT
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False  # members are named by id: the common name is checked instead
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot load the CA certificate {self.ca}: {describe(e)}") from None
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(
                f"cannot load the certificate {self.cert} with its key {self.key}: {describe(e)}"
            ) from None
        if self.crl is not None:
            try:
                ctx.load_verify_locations(cafile=self.crl)
            except (OSError, ssl.SSLError) as e:
                raise TlsError(
                    f"cannot load the revocation list {self.crl}: {describe(e)}"
                ) from None
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return ctx

    def _build(self) -> None:
        if self.crl is not None:
            self._crl_stamp = _stamp(self.crl)
            self.revoked = revoked_serials(self.crl)
        self._server = self._context(ssl.Purpose.CLIENT_AUTH)
        self._client = self._context(ssl.Purpose.SERVER_AUTH)

    def refresh(self, now_s: float | None = None) -> bool:
        """Re-read the revocation list if it changed (checked at most once a second); True when
        it did: the caller then closes connections whose `peer_serial` is in `revoked`. A list
        that cannot be read or parsed now keeps the last one (and says nothing until it can)."""
        if self.crl is None:
            return False
        now_s = time.monotonic() if now_s is None else now_s
        if now_s - self._checked_at < CRL_CHECK_INTERVAL_S:
            return False
        self._checked_at = now_s
        try:
            stamp = _stamp(self.crl)
        except OSError:
            return False
        if stamp == self._crl_stamp:
            return False
        try:
            self._build()
        except (TlsError, ValueError):
            return False
        return True

    @property
    def server_context(self) -> ssl.SSLContext:
        assert self._server is not None
        return self._server

    @property
    def client_context(self) -> ssl.SSLContext:
        assert self._client is not None
        return self._client

    def session(self, *, server: bool) -> TlsSession:
        return TlsSession(self.server_context if server else self.client_context, server=server)


class TlsSession:
    """One TLS connection, sans-I/O: `feed` what the socket received and get the plaintext;
    `send` plaintext; `take_output` what must go out on the socket (after each call of either).
    `done` once the handshake completed; then `peer_name` and `peer_serial` say who the peer's
    certificate names. `closed` once the peer ended TLS (close_notify)."""

    __slots__ = (
        "_fed",
        "_in",
        "_obj",
        "_out",
        "closed",
        "done",
        "peer_name",
        "peer_serial",
        "server",
    )

    def __init__(self, context: ssl.SSLContext, *, server: bool):
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server)
        self.server = server
        self._fed = False
        self.done = False
        self.closed = False  # the peer sent close_notify: it sends nothing more
        self.peer_name: str | None = None
        self.peer_serial: int | None = None
        if not server:
            self._handshake()  # the ClientHello

    def _handshake(self) -> None:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLError as e:
            raise TlsError(f"TLS handshake failed: {describe(e)}") from None
        self.done = True
        cert = self._obj.getpeercert()
        assert cert, "the peer's certificate is required and verified"
        subject: Any = cert.get("subject", ())
        for rdn in subject:
            for key, value in rdn:
                if key == "commonName":
                    self.peer_name = str(value)
        self.peer_serial = int(str(cert["serialNumber"]), 16)

    def feed(self, data: bytes | memoryview) -> bytes:
        """Bytes received from the socket; returns the plaintext they complete (may be empty).
        Raises `TlsError` for a failed handshake or a damaged record."""
        if self.server and not self._fed and data:
            self._fed = True
            if data[0] != _TLS_RECORD_HANDSHAKE:
                raise TlsError("the peer does not speak TLS (a plaintext client on a TLS port?)")
        self._in.write(bytes(data))
        if not self.done:
            self._handshake()
            if not self.done:
                return b""
        chunks = []
        while True:
            try:
                chunk = self._obj.read(1 << 18)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            except ssl.SSLError as e:
                raise TlsError(f"TLS failed: {describe(e)}") from None
            if not chunk:  # what SSLObject.read gives after the peer's close_notify
                self.closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes | memoryview) -> None:
        """Encrypt plaintext; it goes out with the next `take_output`. Only once `done`."""
        assert self.done, "TLS data before the handshake completed"
        view = memoryview(data)
        while view:
            try:
                n = self._obj.write(view)
            except ssl.SSLError as e:
                raise TlsError(f"TLS failed: {describe(e)}") from None
            view = view[n:]

    def take_output(self) -> bytes:
        return self._out.read() if self._out.pending else b""


def check_member(session_name: str | None, claimed: int) -> None:
    """A member link: the certificate must name the member the handshake claims."""
    if member_of(session_name) != claimed:
        raise TlsError(
            f"the peer claims to be member {claimed} but its certificate names "
            f"{session_name!r}, not {member_name(claimed)!r}"
        )


def describe(e: BaseException) -> str:
    """An ssl (or OS) error in words: what a user can act on."""
    if isinstance(e, ssl.SSLCertVerificationError):
        if e.verify_code in (
            2,
            7,
            19,
            20,
            21,
        ):  # no issuer here, or a signature that does not match
            return "the certificate is not signed by this cluster's CA"
        return e.verify_message or str(e)
    if isinstance(e, ssl.SSLError):
        reason = e.reason or ""
        words = {
            "WRONG_VERSION_NUMBER": "the peer does not speak TLS (a plaintext port?)",
            "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust our certificate (another CA)",
            "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer finds our certificate expired",
            "SSLV3_ALERT_CERTIFICATE_REVOKED": "the peer finds our certificate revoked",
            "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer presented no certificate",
            "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer wants a certificate we did not present",
            "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
        }
        if reason in words:
            return words[reason]
        return reason.lower().replace("_", " ") if reason else str(e)
    return getattr(e, "strerror", None) or str(e)


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


# -- generating certificates ---------------------------------------------------------------------


def revoked_serials(crl_path: str) -> frozenset[int]:
    """The serial numbers a PEM revocation list revokes. Raises `TlsError` if it is unreadable."""
    from cryptography import x509

    try:
        with open(crl_path, "rb") as f:
            crl = x509.load_pem_x509_crl(f.read())
    except (OSError, ValueError) as e:
        raise TlsError(f"cannot read the revocation list {crl_path}: {describe(e)}") from None
    return frozenset(r.serial_number for r in crl)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_ca(directory: str, *, days: int = 3650) -> None:
    """A new local CA in `directory` (`ca.crt`, `ca.key`, and an empty `crl.pem`); an existing
    one is kept."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(directory, exist_ok=True)
    if os.path.exists(os.path.join(directory, "ca.crt")):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    # a name of its own: OpenSSL finds an issuer by name, and two local CAs must not look alike
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"smr local CA {os.urandom(4).hex()}")]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(os.path.join(directory, "ca.key"), _key_pem(key))
    with open(os.path.join(directory, "ca.crt"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    _write_crl(directory, [])


def _load_ca(directory: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        with open(os.path.join(directory, "ca.crt"), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(os.path.join(directory, "ca.key"), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError as e:
        raise TlsError(
            f"no CA in {directory}: {e.strerror} (make one with `smr tls init {directory}`)"
        ) from None
    return cert, key


def issue(
    directory: str,
    name: str,
    *,
    days: float = 365,
    not_before: datetime.datetime | None = None,
) -> tuple[str, str]:
    """A certificate and key signed by the CA in `directory` for `name` (a member's
    `smr-member-<id>` or a client's common name): writes `<name>.crt` and `<name>.key` there and
    returns their paths. `days` may be negative (an expired certificate, for tests)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"a certificate name {name!r}: letters, digits, - and _")
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (_now() - datetime.timedelta(minutes=5))
    end = _now() + datetime.timedelta(days=days)
    if end <= start:
        start = end - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_path = os.path.join(directory, f"{name}.key")
    cert_path = os.path.join(directory, f"{name}.crt")
    _write_private(key_path, _key_pem(key))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def revoke(directory: str, name: str) -> int:
    """Add the certificate `<name>.crt` in `directory` to the CA's revocation list (`crl.pem`,
    rewritten atomically); returns its serial number. Members re-read the list within a second
    and close that certificate's connections."""
    from cryptography import x509

    path = os.path.join(directory, f"{name}.crt")
    try:
        with open(path, "rb") as f:
            serial = x509.load_pem_x509_certificate(f.read()).serial_number
    except OSError as e:
        raise TlsError(f"cannot read {path}: {e.strerror}") from None
    crl = os.path.join(directory, "crl.pem")
    known = sorted(revoked_serials(crl)) if os.path.exists(crl) else []
    if serial not in known:
        known.append(serial)
    _write_crl(directory, known)
    return serial


def _write_crl(directory: str, serials: list[int]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca_cert, ca_key = _load_ca(directory)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=3650))
    )
    for s in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(s).revocation_date(now).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    path = os.path.join(directory, "crl.pem")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.PEM))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
