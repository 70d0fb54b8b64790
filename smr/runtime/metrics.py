"""Metrics: a small registry rendered in the Prometheus text format, and the member's `/metrics`.

This module owns two things, neither of which decides anything:

- `Registry`: counters, gauges and histograms (fixed buckets, in seconds) with labels, rendered by
  `Registry.render()` in the Prometheus text exposition format, version 0.0.4 (`# HELP` and
  `# TYPE` lines, label values escaped), with no dependency. Everything is bounded: the metric
  names are the fixed set a `Node` declares, and each family holds at most `series_max` label sets
  (the node's label sets are bounded by members x shards, so hitting it is our bug: an assertion).
  The hot path is one counter increment and one `Histogram.observe` (a bisect over the buckets and
  two additions) per answered command: no allocation.
- `MetricsServer`: a tiny HTTP/1.0 responder on the member's `metrics_port`. It runs on the node's
  loop thread, with no thread of its own: its sockets are watched by the node's transport
  (`Transport.watch`, as the client port's are), so a scrape reads the node's state where the loop
  owns it, between two passes. It answers `GET /metrics` with 200 and the rendering, any other
  path with 404, any other method with 405, and a malformed or oversized request (over
  `REQUEST_BYTES_MAX`, or not complete within `REQUEST_TIMEOUT_S`) with 400, then closes the
  connection. At most `connections_max` connections are open (the oldest is dropped for a new
  one); a bad request never reaches the node.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import math
import re
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from smr.transport.base import Transport

# Seconds: from a fast local commit (well under a millisecond) to a stalled one (a view change,
# a slow disk); the same buckets for the commit and the fsync latency.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
SERIES_MAX = 4096  # label sets per family
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def escape_label_value(value: str) -> str:
    """A label value inside double quotes: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP line's text: backslash and line feed escaped (a double quote stays as it is)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus reads it: integers without a fraction, +Inf, -Inf, NaN."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1 << 53:
        return str(int(value))
    return repr(value)


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Counter:
    """One series of a counter: only rises."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        assert amount >= 0, "a counter never decreases"
        self.value += amount

    def advance_to(self, total: float) -> None:
        """Follow a count kept elsewhere (a transport's): it only rises."""
        self.value = max(self.value, total)


class Gauge:
    """One series of a gauge: set to the current figure."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = value


class Histogram:
    """One series of a histogram with fixed upper bounds (`buckets`, increasing, +Inf implied).
    `counts[i]` holds the observations in bucket i alone; the rendering makes them cumulative."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above the highest bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le: less or equal)
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """An estimate of the q-quantile (0..1), interpolated linearly within its bucket as
        Prometheus's `histogram_quantile` does; None without observations. Above the highest
        bound: the highest bound."""
        assert 0.0 <= q <= 1.0
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        lower = 0.0
        for i, n in enumerate(self.counts):
            if i == len(self.buckets):
                return self.buckets[-1] if self.buckets else None
            upper = self.buckets[i]
            if n and seen + n >= rank:
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
            lower = upper
        return None  # unreachable: the counts add up to count


class Family:
    """A metric name, its help, its type and label names, and its series by label values."""

    __slots__ = ("buckets", "help", "kind", "labelnames", "name", "series", "series_max")

    def __init__(
        self,
        name: str,
        help: str,
        kind: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] = (),
        series_max: int = SERIES_MAX,
    ) -> None:
        assert _NAME.fullmatch(name), f"metric name {name!r}"
        assert kind in ("counter", "gauge", "histogram"), kind
        assert kind != "counter" or name.endswith("_total"), "counters end in _total"
        for label in labelnames:
            assert _LABEL.fullmatch(label) and not label.startswith("__"), f"label {label!r}"
            assert kind != "histogram" or label != "le", "le is the histogram's own label"
        assert len(set(labelnames)) == len(labelnames), "label names repeat"
        if kind == "histogram":
            assert buckets and list(buckets) == sorted(set(buckets)), "buckets must increase"
            assert not math.isinf(buckets[-1]), "+Inf is implied"
        self.name = name
        self.help = help
        self.kind = kind
        self.labelnames = labelnames
        self.buckets = buckets
        self.series: dict[tuple[str, ...], Any] = {}
        self.series_max = series_max

    def labels(self, *values: object) -> Any:
        """The series of these label values (made on first use): a Counter, Gauge or Histogram."""
        key = tuple(str(v) for v in values)
        s = self.series.get(key)
        if s is None:
            assert len(key) == len(self.labelnames), (
                f"{self.name}: labels {self.labelnames}, got {key}"
            )
            assert len(self.series) < self.series_max, f"{self.name}: over {self.series_max} series"
            if self.kind == "counter":
                s = Counter()
            elif self.kind == "gauge":
                s = Gauge()
            else:
                s = Histogram(self.buckets)
            self.series[key] = s
        return s

    def clear(self) -> None:
        """Forget every series (a gauge family refilled from the current state at each scrape,
        so that a shard or a queue that went away stops being reported)."""
        self.series.clear()

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        names = self.labelnames
        for values, s in self.series.items():
            if self.kind != "histogram":
                out.append(f"{self.name}{_labels_text(names, values)} {format_value(s.value)}")
                continue
            cumulative = 0
            for bound, n in zip((*s.buckets, math.inf), s.counts, strict=True):
                cumulative += n
                le = f'le="{format_value(bound)}"'
                out.append(f"{self.name}_bucket{_labels_text(names, values, le)} {cumulative}")
            labels = _labels_text(names, values)
            out.append(f"{self.name}_sum{labels} {format_value(s.sum)}")
            out.append(f"{self.name}_count{labels} {s.count}")


class Registry:
    """The metric families of one process, in declaration order."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def _add(self, family: Family) -> Family:
        assert family.name not in self.families, f"{family.name} declared twice"
        self.families[family.name] = family
        return family

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Family:
        return self._add(Family(name, help, "counter", labels))

    def gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Family:
        return self._add(Family(name, help, "gauge", labels))

    def histogram(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = LATENCY_BUCKETS_S,
    ) -> Family:
        return self._add(Family(name, help, "histogram", labels, buckets))

    def render(self) -> str:
        """The text exposition format 0.0.4: every family, its HELP and TYPE lines, its samples."""
        out: list[str] = []
        for family in self.families.values():
            family.render(out)
        return "\n".join(out) + "\n"


# -- the member's metrics -------------------------------------------------------------------------

MEMBER_STATUSES = ("active", "joining", "restarting", "halted")
SHARD_LABELS = ("subgroup", "shard")


class ShardMetrics:
    """The series one shard updates as it goes (the rest is read at each scrape)."""

    __slots__ = ("answered", "commit", "failed", "fsync")

    def __init__(self, m: NodeMetrics, subgroup: int, shard: int) -> None:
        self.answered: Counter = m.answered.labels(subgroup, shard)
        self.failed: Counter = m.failed.labels(subgroup, shard)
        self.commit: Histogram = m.commit.labels(subgroup, shard)
        self.fsync: Histogram = m.fsync.labels(subgroup, shard)


class NodeMetrics:
    """Every metric a member exports: a fixed set of names (docs/cluster.md, "Metrics").
    Counters and histograms are updated where things happen; gauges are refilled from the node's
    state by `Node.collect_metrics` at each scrape."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.epoch = r.gauge("smr_view_epoch", "The epoch of the view this member is in.")
        self.members = r.gauge(
            "smr_view_members", "Members of this member's current view (0 while not active)."
        )
        self.status = r.gauge(
            "smr_member_status", "1 for this member's status, 0 for the others.", ("status",)
        )
        self.view_changes = r.counter(
            "smr_view_changes_total", "Views this member installed after its first one."
        )
        self.delivered = r.gauge(
            "smr_shard_delivered_version",
            "The version ((epoch << 32) | seq) of the last command applied here, per shard.",
            SHARD_LABELS,
        )
        self.persisted = r.gauge(
            "smr_shard_persisted_version",
            "The highest version durable in this member's log, per durable shard.",
            SHARD_LABELS,
        )
        self.answered = r.counter(
            "smr_commands_answered_total",
            "Commands this member took from clients and answered as committed, per shard.",
            SHARD_LABELS,
        )
        self.failed = r.counter(
            "smr_commands_failed_total",
            "Commands this member took from clients and answered as failed, per shard.",
            SHARD_LABELS,
        )
        self.commit = r.histogram(
            "smr_commit_latency_seconds",
            "From taking a client's command to answering it committed, at this member.",
            SHARD_LABELS,
        )
        self.fsync = r.histogram(
            "smr_fsync_latency_seconds",
            "One fsync of a durable shard's log by its group-commit writer.",
            SHARD_LABELS,
        )
        self.queue_depth = r.gauge(
            "smr_queue_depth",
            "Entries in one of this member's queues (inbox, pending, queries, reads, and per "
            "shard submit and log).",
            ("queue", *SHARD_LABELS),
        )
        self.queue_max = r.gauge(
            "smr_queue_max",
            "The bound of a queue of smr_queue_depth (queues without one are not listed).",
            ("queue", *SHARD_LABELS),
        )
        self.link_bytes = r.counter(
            "smr_link_sent_bytes_total",
            "Bytes this member queued to each peer's link (tcp: frames with their headers).",
            ("peer",),
        )
        self.transport_events = r.counter(
            "smr_transport_events_total",
            "Events of this member's links: links_up, links_lost, auth_failed, tls_failed, "
            "revoked, queue_overflows, ... (tcp).",
            ("event",),
        )
        self.client_events = r.counter(
            "smr_client_port_events_total",
            "Events of this member's client port: accepted, rejected, requests, tls_failed, "
            "revoked.",
            ("event",),
        )
        self._shards: dict[tuple[int, int], ShardMetrics] = {}

    def shard(self, key: tuple[int, int]) -> ShardMetrics:
        s = self._shards.get(key)
        if s is None:
            s = self._shards[key] = ShardMetrics(self, key[0], key[1])
        return s

    def shards(self) -> dict[tuple[int, int], ShardMetrics]:
        return self._shards


# -- the HTTP responder ---------------------------------------------------------------------------

REQUEST_BYTES_MAX = 8192  # a request line and headers; a scrape sends a few hundred bytes
REQUEST_TIMEOUT_S = 5.0  # a connection that has not sent its whole request by then gets a 400
RECV_BYTES = 4096
_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (\S{1,2048}) HTTP/1\.[01]")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class _HttpConn:
    __slots__ = ("inbox", "opened_s", "out", "sock")

    def __init__(self, sock: socket.socket, now_s: float) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.out: memoryview | None = None  # the response, once there is one
        self.opened_s = now_s


def http_response(code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.0 {code} {_REASONS[code]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def respond_to(request: bytes, render: Callable[[], str]) -> bytes:
    """The whole response to one complete request head (request line and headers)."""
    line = request.split(b"\n", 1)[0].rstrip(b"\r")
    m = _REQUEST_LINE.fullmatch(line)
    if m is None:
        return http_response(400, b"malformed request\n")
    method, target = m.group(1), m.group(2)
    if method not in (b"GET", b"HEAD"):
        return http_response(405, b"only GET\n")
    path = target.split(b"?", 1)[0]
    if path != b"/metrics":
        return http_response(404, b"not found: the metrics are at /metrics\n")
    response = http_response(200, render().encode("utf-8"), CONTENT_TYPE)
    if method == b"HEAD":
        response = response[: response.index(b"\r\n\r\n") + 4]
    return response


class MetricsServer:
    """`GET /metrics` on `host:port`, served from the transport's poll (see the module docstring).
    `render()` is called on the loop thread for each scrape."""

    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[], str],
        *,
        log: Callable[..., None],
        connections_max: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render = render
        self._log = log
        self._clock = clock
        self.connections_max = connections_max
        self._listener = socket.create_server((host, port), reuse_port=False, backlog=16)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._transport: Transport | None = None
        self._conns: dict[int, _HttpConn] = {}  # by file descriptor, oldest first
        self.stats = {"scrapes": 0, "bad_requests": 0, "dropped": 0}

    def attach(self, transport: Transport) -> None:
        self._transport = transport
        transport.watch(self._listener, lambda _mask: self._accept())

    @property
    def open(self) -> int:
        return len(self._conns)

    def expire(self) -> None:
        """Answer 400 to connections whose request is late (called by the loop while any is
        open; the loop wakes at least once a second)."""
        if not self._conns:
            return
        now = self._clock()
        for conn in list(self._conns.values()):
            if conn.out is None and now - conn.opened_s > REQUEST_TIMEOUT_S:
                self._answer(conn, http_response(400, b"request not complete in time\n"))

    def stop(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        if self._transport is not None:
            self._transport.unwatch(self._listener)
        self._listener.close()

    def _accept(self) -> None:
        assert self._transport is not None
        for _ in range(16):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._log("metrics-accept-failed", error=str(e))
                return
            if len(self._conns) >= self.connections_max:
                self.stats["dropped"] += 1
                self._close(next(iter(self._conns.values())))  # the oldest makes room
            sock.setblocking(False)
            conn = _HttpConn(sock, self._clock())
            self._conns[sock.fileno()] = conn
            self._transport.watch(sock, functools.partial(self._on_event, conn))

    def _on_event(self, conn: _HttpConn, mask: int) -> None:
        if conn.out is not None:
            if mask & selectors.EVENT_WRITE:
                self._send(conn)
            elif mask & selectors.EVENT_READ:
                self._discard(conn)
            return
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.inbox += data
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbox.find(b"\n\n")
        if end < 0:
            if len(conn.inbox) > REQUEST_BYTES_MAX:
                self._answer(conn, http_response(400, b"request too large\n"))
            return
        if end > REQUEST_BYTES_MAX:
            self._answer(conn, http_response(400, b"request too large\n"))
            return
        head = bytes(conn.inbox[:end])
        try:
            response = respond_to(head, self._render)
        except Exception as e:  # a bug rendering: this scrape fails, the node goes on
            self._log("metrics-render-failed", error=repr(e))
            response = http_response(400, b"cannot render the metrics\n")
        self._answer(conn, response)

    def _answer(self, conn: _HttpConn, response: bytes) -> None:
        if response.startswith(b"HTTP/1.0 200"):
            self.stats["scrapes"] += 1
        elif response.startswith(b"HTTP/1.0 400"):
            self.stats["bad_requests"] += 1
        conn.inbox = bytearray()
        conn.out = memoryview(response)
        self._send(conn)

    def _send(self, conn: _HttpConn) -> None:
        assert conn.out is not None
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn)
                return
            conn.out = conn.out[sent:]
        if conn.out:
            assert self._transport is not None
            self._transport.watch(conn.sock, functools.partial(self._on_event, conn), write=True)
            return
        # all sent: HTTP/1.0, one request per connection. The request was read whole, so
        # nothing unread turns the close into a reset that would lose the response.
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        self._close(conn)

    def _discard(self, conn: _HttpConn) -> None:
        with contextlib.suppress(OSError):
            conn.sock.recv(RECV_BYTES)

    def _close(self, conn: _HttpConn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0 and self._conns.get(fd) is conn:
            del self._conns[fd]
            if self._transport is not None:
                self._transport.unwatch(conn.sock)
        conn.sock.close()
