"""The transport contract: what the node runtime needs from a provider (shm, tcp, verbs).

This module owns the interface every provider implements and the shared contract test suite
checks (`tests/test_transport_contract.py`, providers in `tests/transport_factories/`). The core
never sees a transport: the runtime takes a `Ready` from the replica and turns its `Push` writes
into `write` calls and its `Send` messages into `send` calls, and turns what the transport reports
back into replica inputs.

The promises a provider makes:

- **Registered table memory.** `register(epoch, members, row_bytes)` declares the table of an
  epoch before any write of that epoch is made or read; every member computes the same
  `row_bytes` for an epoch (the layout is deterministic). Providers with real one-sided writes
  (shm, verbs) allocate a region per epoch and may release epochs older than the previous one.
- **One-sided writes.** `write(targets, epoch, offset, data)` copies `data` into this member's row
  of each target's copy of the epoch's table, at `offset`. A write is applied whole (no reader
  sees part of it) and writes from one member to one target are applied in the order made
  (per-link FIFO). Writes to a target that is down are dropped: on reconnection the provider
  reports `on_link_up` and the replica writes its whole row again.
- **A data channel.** `send(target, payload)` delivers one message (large payloads, replies,
  join requests, state), whole and FIFO per link, up to `TransportConfig.frame_bytes_max`.
- **Failure reports.** `on_peer_failed(peer)` once a peer is unreachable for
  `peer_failed_after_s` (connection refused or reset and not re-established, process gone);
  `on_link_up(peer)` when a link is (re)established.
- **Wake-ups.** `poll(timeout_s)` blocks until something arrived, `wake()` was called (from any
  thread) or the timeout passed, and reports what arrived to the handler on the calling thread.
  An idle node neither spins nor sleeps on a short timer.
- **The driver's own sockets.** `watch(sock, callback, write=...)` has `poll` wait on a socket of
  the driver's too (the node's client port) and call `callback(mask)` on the polling thread, so
  clients and peers share one loop with no thread hand-off between a request and the replica;
  `unwatch(sock)` before the driver closes it.
- **Flushing.** `write` and `send` may queue and leave the sending to the next `poll` (tcp
  batches a Ready's frames into one system call); the runtime polls right after doing a Ready,
  so nothing waits longer than that.

A provider never raises from `write`/`send` because a peer is down; it raises `TransportError`
for its own misuse or set-up failures, and `TransportUnavailable` (one line, naming what would
work instead) when it cannot run on this machine at all.
"""

from __future__ import annotations

import contextlib
import selectors
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class TransportError(Exception):
    """A transport failed to set up or was misused."""


class TransportUnavailable(TransportError):
    """The provider cannot run here (no device, no library); the message is one line that says
    why and names the transports that will work."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where a member listens: a host (name or IP) and a TCP port (tcp, and the verbs
    bootstrap). Members of one host using shm need only distinct ids."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Shared settings; every bound carries its unit last."""

    secret: bytes  # the cluster secret: every connection is authenticated with it (HMAC)
    cluster: str = "smr"  # names shared-memory regions, so two clusters on a host do not mix
    frame_bytes_max: int = 64 << 20  # the largest data message (and table write) accepted
    connect_timeout_s: float = 2.0
    peer_failed_after_s: float = 1.0  # unreachable this long: report on_peer_failed
    reconnect_backoff_s: float = 0.05  # first retry delay; doubles up to peer_failed_after_s
    send_queue_bytes_max: int = 256 << 20  # bytes queued for one peer before writes are dropped
    # smr.transport.tls.TlsEndpoint: mutual TLS on tcp links (None: the HMAC handshake alone)
    tls: Any = None

    def __post_init__(self) -> None:
        assert len(self.secret) >= 16, "the cluster secret must be at least 16 bytes"
        assert self.frame_bytes_max > 0
        assert self.connect_timeout_s > 0 and self.peer_failed_after_s > 0
        assert self.reconnect_backoff_s > 0
        assert self.send_queue_bytes_max >= self.frame_bytes_max

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"TransportConfig(cluster={self.cluster!r}, secret=<{len(self.secret)} bytes>)"


class Handler(Protocol):
    """What a transport reports, on the thread that calls `poll`.

    A handler may also define `on_write_ranges(source, epoch, ranges)`: the changed byte ranges
    `[(offset, bytes), ...]` of one consistent read of a peer's row, to be applied together
    (before anything reads the table). Providers that read rows from memory (shm, verbs) then
    copy only what changed; to a handler without it they report the ranges' union as one
    `on_write`, which is applied whole."""

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None: ...

    def on_data(self, source: int, payload: bytes) -> None: ...

    def on_link_up(self, peer: int) -> None: ...

    def on_peer_failed(self, peer: int) -> None: ...


class Watched:
    """Selector data of a socket the driver watches through `Transport.watch`: providers call
    `callback(mask)` from `poll` for it."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[int], None]):
        self.callback = callback


class Transport(ABC):
    """One member's endpoint. Construct, `start(handler)`, then `register` each epoch's table,
    `write`/`send` from the runtime thread, `poll` on it, `wake` from any thread, `close`."""

    name: str = "?"
    _sel: selectors.BaseSelector | None = None  # the provider's, from start() until close()

    def watch(self, sock: Any, callback: Callable[[int], None], *, write: bool = False) -> None:
        """Have `poll` wait for `sock` to be readable (and writable, with `write`) and call
        `callback(mask)` on the polling thread; called again, it changes the events."""
        if self._sel is None:
            raise TransportError(f"{self.name} transport: watch() before start() or after close()")
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        try:
            key = self._sel.get_key(sock)
        except KeyError:
            self._sel.register(sock, events, Watched(callback))
            return
        if key.events != events:
            self._sel.modify(sock, events, key.data)

    def unwatch(self, sock: Any) -> None:
        """Stop watching `sock` (before the driver closes it). Unknown sockets are ignored."""
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)

    def __init__(self, me: int, addresses: Mapping[int, Address], config: TransportConfig):
        assert me in addresses, f"member {me} has no address"
        self.me = me
        self.addresses = dict(addresses)
        self.config = config

    @abstractmethod
    def start(self, handler: Handler) -> None:
        """Listen and begin connecting to every other member in `addresses`."""

    def counters(self) -> Mapping[str, int]:
        """Event counts since start (links up and lost, refusals, ...), for the metrics; a
        provider that keeps none reports none."""
        return {}

    def sent_bytes(self) -> Mapping[int, int]:
        """Bytes queued to each peer since start (frames and their headers), for the metrics;
        a provider that does not count them reports none."""
        return {}

    def linked(self, peer: int) -> bool:
        """Whether a link to `peer` is up now, as far as this provider can tell (one that
        cannot says True): a hint for routing clients, never for the protocol's decisions."""
        return True

    def add_member(self, member: int, address: Address) -> None:
        """A member that joined after start (its address came with its join request)."""
        self.addresses[member] = address

    @abstractmethod
    def register(self, epoch: int, members: Sequence[int], row_bytes: int) -> None:
        """Declare the table of `epoch`: one row of `row_bytes` per member, in `members` order."""

    @abstractmethod
    def write(self, targets: Sequence[int], epoch: int, offset: int, data: bytes) -> None:
        """One-sided write of `data` at `offset` of my row in each target's table of `epoch`."""

    @abstractmethod
    def send(self, target: int, payload: bytes) -> None:
        """A data-channel message to `target`."""

    @abstractmethod
    def poll(self, timeout_s: float | None) -> None:
        """Wait for activity (or `wake`, or the timeout) and report it to the handler."""

    @abstractmethod
    def wake(self) -> None:
        """Make a concurrent or the next `poll` return promptly. Safe from any thread."""

    @abstractmethod
    def close(self) -> None:
        """Stop, close every connection and release registered memory. Idempotent."""
