"""Choosing a transport: `auto` picks verbs, shm or tcp for the machine and the membership.

This module owns the choice and nothing else: it imports providers lazily (a node using tcp never
imports pyverbs or the shared-memory code) and says in one line which provider was picked and why,
for the node to print at start.

`auto` picks verbs when `smr.transport.verbs.device_available()` says an RDMA device is usable,
else shm when every member's address is an address of this host (loopback, or one a socket can
bind to here), else tcp. An auto-picked provider that turns out unusable (`TransportUnavailable`
when constructed) falls back to tcp, which runs anywhere.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
from collections.abc import Mapping

from smr.transport.base import (
    Address,
    Transport,
    TransportConfig,
    TransportError,
    TransportUnavailable,
)

NAMES = ("auto", "shm", "tcp", "verbs")
_MODULES = {"shm": "smr.transport.shm", "tcp": "smr.transport.tcp", "verbs": "smr.transport.verbs"}


def provider(name: str) -> type[Transport]:
    """The provider class called `name`, imported now. Raises `TransportUnavailable` if its
    module or class is missing (for example verbs without pyverbs)."""
    if name not in _MODULES:
        raise TransportError(f"unknown transport {name!r}: choose one of {', '.join(NAMES)}")
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as e:
        raise TransportUnavailable(f"transport {name} cannot load ({e}); use tcp") from None
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Transport)
            and value is not Transport
            and getattr(value, "name", None) == name
        ):
            return value
    raise TransportUnavailable(f"transport {name}: {_MODULES[name]} defines no provider; use tcp")


def _verbs_device() -> bool:
    try:
        module = importlib.import_module(_MODULES["verbs"])
        return bool(module.device_available())
    except (ImportError, AttributeError):
        return False


def is_local(host: str) -> bool:
    """Whether `host` names this machine: a loopback address, or an address of one of its
    interfaces (a socket can bind to it). A name that does not resolve is not local."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    if not infos:
        return False
    for family, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if ip.is_loopback:
            continue
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((sockaddr[0], 0))
        except OSError:
            return False
    return True


def choose(name: str, me: int, addresses: Mapping[int, Address]) -> tuple[type[Transport], str]:
    """The provider class for `name` (one of `NAMES`) and one line saying which and why."""
    if name not in NAMES:
        raise TransportError(f"unknown transport {name!r}: choose one of {', '.join(NAMES)}")
    if me not in addresses:
        raise TransportError(f"member {me} has no address")
    if name != "auto":
        return provider(name), f"transport: {name} (asked for)"
    if _verbs_device():
        try:
            return provider("verbs"), "transport: verbs (an RDMA device is available)"
        except TransportUnavailable:
            pass
    remote = sorted({a.host for a in addresses.values() if not is_local(a.host)})
    if not remote:
        try:
            return provider("shm"), "transport: shm (every member is on this host)"
        except TransportUnavailable as e:
            return provider("tcp"), f"transport: tcp (every member is on this host, but {e})"
    return provider("tcp"), f"transport: tcp (no RDMA device; {remote[0]} is another host)"


def make_transport(
    name: str, me: int, addresses: Mapping[int, Address], config: TransportConfig
) -> tuple[Transport, str]:
    """A constructed (not started) transport for `name`, and the line saying which and why.
    With TLS, `auto` is tcp: TLS protects tcp links, and a user who asked for it expects every
    link to have it (shm would be chosen on one host, verbs where a device is)."""
    if name == "auto" and config.tls is not None:
        return provider("tcp")(me, addresses, config), "transport: tcp (the cluster uses TLS)"
    cls, why = choose(name, me, addresses)
    try:
        return cls(me, addresses, config), why
    except TransportUnavailable as e:
        if name != "auto" or cls.name == "tcp":
            raise
        tcp = provider("tcp")
        return tcp(me, addresses, config), f"transport: tcp ({cls.name} is unavailable: {e})"
