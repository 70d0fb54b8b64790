"""`auto`: which provider is picked for the machine and the membership, and why."""

from __future__ import annotations

import sys
import types

import pytest

from smr.transport.auto import choose, is_local, make_transport
from smr.transport.base import Address, Transport, TransportConfig, TransportError
from smr.transport.base import TransportUnavailable as Unavailable
from smr.transport.tcp import TcpTransport

LOCAL = {1: Address("127.0.0.1", 7001), 2: Address("localhost", 7002)}
MIXED = {1: Address("127.0.0.1", 7001), 2: Address("192.0.2.7", 7002)}  # TEST-NET-1: not here
CONFIG = TransportConfig(secret=b"auto-test-secret-0123456789abcd")


def _fake(name: str, *, device: bool | None = None, unavailable: bool = False):
    module = types.ModuleType(f"smr.transport.{name}")

    class Fake(Transport):
        def __init__(self, me, addresses, config):
            if unavailable:
                raise Unavailable(f"{name} cannot run here; use tcp")
            super().__init__(me, addresses, config)

        start = register = write = send = poll = wake = close = lambda *a: None

    Fake.name = name
    module.Fake = Fake
    if device is not None:
        module.device_available = lambda: device
    return module


def test_is_local():
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1")
    assert not is_local("192.0.2.7")
    assert not is_local("no-such-host.invalid")


def test_a_named_transport_is_taken_as_asked(monkeypatch):
    cls, why = choose("tcp", 1, MIXED)
    assert cls is TcpTransport and why == "transport: tcp (asked for)"
    with pytest.raises(TransportError, match="unknown transport 'udp'"):
        choose("udp", 1, MIXED)
    with pytest.raises(TransportError, match="member 3 has no address"):
        choose("tcp", 3, MIXED)
    monkeypatch.setitem(sys.modules, "smr.transport.verbs", None)  # pyverbs-less: import fails
    with pytest.raises(Unavailable, match="use tcp"):
        choose("verbs", 1, MIXED)


def test_auto_picks_shm_when_everyone_is_here_and_tcp_otherwise(monkeypatch):
    monkeypatch.setitem(sys.modules, "smr.transport.verbs", _fake("verbs", device=False))
    monkeypatch.setitem(sys.modules, "smr.transport.shm", _fake("shm"))
    cls, why = choose("auto", 1, LOCAL)
    assert cls.name == "shm" and why == "transport: shm (every member is on this host)"
    cls, why = choose("auto", 1, MIXED)
    assert cls is TcpTransport and "192.0.2.7 is another host" in why


def test_auto_picks_verbs_when_a_device_is_there(monkeypatch):
    monkeypatch.setitem(sys.modules, "smr.transport.verbs", _fake("verbs", device=True))
    cls, why = choose("auto", 1, MIXED)
    assert cls.name == "verbs" and "RDMA device" in why
    # a verbs module without device_available() counts as no device
    monkeypatch.setitem(sys.modules, "smr.transport.verbs", _fake("verbs"))
    assert choose("auto", 1, MIXED)[0] is TcpTransport


def test_make_transport_falls_back_to_tcp_when_the_auto_pick_cannot_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "smr.transport.verbs", None)
    monkeypatch.setitem(sys.modules, "smr.transport.shm", _fake("shm", unavailable=True))
    t, why = make_transport("auto", 1, LOCAL, CONFIG)
    assert isinstance(t, TcpTransport) and why.startswith("transport: tcp (shm is unavailable")
    with pytest.raises(Unavailable):
        make_transport("shm", 1, LOCAL, CONFIG)  # asked for by name: no silent substitute
