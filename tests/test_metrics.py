"""Metrics: the registry's Prometheus text rendering, parsed back; the member's `GET /metrics`
on a real cluster (tcp); the configuration of `metrics_port`."""

from __future__ import annotations

import math
import re
import socket
import time
import urllib.error
import urllib.request

import pytest

import smr
from smr.runtime.cluster import LocalCluster
from smr.runtime.config import ConfigError, load, parse
from smr.runtime.metrics import Histogram, Registry, respond_to
from smr.statemachines import KVStore

# -- a tiny parser of the text exposition format 0.0.4 -------------------------------------------

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            nxt = value[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_exposition(text: str) -> tuple[dict[str, tuple[str, str]], list]:
    """({family: (type, help)}, [(name, {label: value}, float)]); asserts the format's rules."""
    families: dict[str, list[str]] = {}
    samples = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help = line[7:].partition(" ")
            assert name not in families, f"{name}: HELP twice"
            families[name] = ["", help]
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert families[name][0] == "", f"{name}: TYPE twice"
            families[name][0] = kind
        else:
            m = _SAMPLE.fullmatch(line)
            assert m, f"not a sample line: {line!r}"
            name, labels_text, value = m.groups()
            labels = {}
            if labels_text:
                body = labels_text[1:-1]
                pos = 0
                while pos < len(body):
                    lm = _LABEL.match(body, pos)
                    assert lm, f"bad labels in {line!r}"
                    labels[lm.group(1)] = _unescape(lm.group(2))
                    pos = lm.end()
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            family = name if name in families else base
            assert family in families and families[family][0], f"{name} before its TYPE"
            samples.append((name, labels, float(value)))
    return {k: (v[0], v[1]) for k, v in families.items()}, samples


def _value(samples, name, **labels) -> float:
    found = [
        v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())
    ]
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0]


# -- the registry ---------------------------------------------------------------------------------


def test_the_rendering_parses_back_with_help_types_and_escaped_labels():
    r = Registry()
    c = r.counter("smr_things_total", 'Things counted.\nA "second" line, a \\ backslash.', ("k",))
    g = r.gauge("smr_level", "A level.")
    h = r.histogram("smr_wait_seconds", "Waits.", ("k",), buckets=(0.1, 1.0))
    awkward = 'a"b\\c\nd'
    c.labels(awkward).inc()
    c.labels(awkward).inc(2)
    c.labels("plain").inc()
    g.labels().set(2.5)
    for v in (0.05, 0.1, 0.5, 3.0):
        h.labels("x").observe(v)
    text = r.render()
    families, samples = parse_exposition(text)
    assert families["smr_things_total"] == (
        "counter",
        'Things counted.\\nA "second" line, a \\\\ backslash.',
    )
    assert families["smr_level"][0] == "gauge" and families["smr_wait_seconds"][0] == "histogram"
    assert _value(samples, "smr_things_total", k=awkward) == 3
    assert _value(samples, "smr_things_total", k="plain") == 1
    assert _value(samples, "smr_level") == 2.5
    # cumulative buckets; a value on a bound is in that bucket (le)
    assert _value(samples, "smr_wait_seconds_bucket", k="x", le="0.1") == 2
    assert _value(samples, "smr_wait_seconds_bucket", k="x", le="1") == 3
    assert _value(samples, "smr_wait_seconds_bucket", k="x", le="+Inf") == 4
    assert _value(samples, "smr_wait_seconds_count", k="x") == 4
    assert math.isclose(_value(samples, "smr_wait_seconds_sum", k="x"), 3.65)
    assert "\n\n" not in text and 'k="a\\"b\\\\c\\nd"' in text


def test_an_empty_family_still_has_its_help_and_type():
    r = Registry()
    r.gauge("smr_nothing", "Nothing yet.", ("x",))
    assert r.render() == "# HELP smr_nothing Nothing yet.\n# TYPE smr_nothing gauge\n"


def test_special_values_render_as_prometheus_reads_them():
    r = Registry()
    g = r.gauge("smr_v", "V.", ("k",))
    g.labels("inf").set(math.inf)
    g.labels("nan").set(math.nan)
    g.labels("big").set(1 << 40)
    _, samples = parse_exposition(r.render())
    assert _value(samples, "smr_v", k="inf") == math.inf
    assert math.isnan(_value(samples, "smr_v", k="nan"))
    assert _value(samples, "smr_v", k="big") == 1 << 40


def test_histogram_quantiles_interpolate_within_the_bucket():
    h = Histogram((0.001, 0.01, 0.1))
    assert h.quantile(0.5) is None
    for _ in range(100):
        h.observe(0.005)  # all in (0.001, 0.01]
    assert 0.001 < h.quantile(0.5) <= 0.01
    assert math.isclose(h.quantile(0.5), 0.0055)
    h.observe(100.0)  # above the highest bound: reported as the highest bound
    assert h.quantile(1.0) == 0.1


def test_families_are_checked_when_declared():
    r = Registry()
    with pytest.raises(AssertionError):
        r.counter("smr_things", "x")  # a counter ends in _total
    with pytest.raises(AssertionError):
        r.gauge("smr bad name", "x")
    with pytest.raises(AssertionError):
        r.histogram("smr_h_seconds", "x", ("le",))
    r.gauge("smr_once", "x")
    with pytest.raises(AssertionError):
        r.gauge("smr_once", "x")


def test_the_http_responder_answers_by_request():
    def render() -> str:
        return "# HELP a b\n# TYPE a gauge\na 1\n"

    ok = respond_to(b"GET /metrics HTTP/1.1\r\nHost: x", render)
    assert ok.startswith(b"HTTP/1.0 200 OK\r\n") and ok.endswith(b"a 1\n")
    assert b"version=0.0.4" in ok
    assert respond_to(b"GET /metrics?x=1 HTTP/1.0", render).startswith(b"HTTP/1.0 200")
    head = respond_to(b"HEAD /metrics HTTP/1.0", render)
    assert head.startswith(b"HTTP/1.0 200") and head.endswith(b"\r\n\r\n")
    assert respond_to(b"GET / HTTP/1.0", render).startswith(b"HTTP/1.0 404")
    assert respond_to(b"POST /metrics HTTP/1.0", render).startswith(b"HTTP/1.0 405")
    for bad in (b"", b"garbage", b"GET /metrics", b"GET  /metrics HTTP/1.0", b"\xff\xfe HTTP/9"):
        assert respond_to(bad, render).startswith(b"HTTP/1.0 400"), bad


# -- configuration --------------------------------------------------------------------------------

GOOD = {
    "cluster": {"name": "t", "secret_hex": "ab" * 16},
    "members": [
        {"id": 1, "port": 7001, "client_port": 7101, "metrics_port": 7201},
        {"id": 2, "port": 7002, "client_port": 7102},
    ],
    "subgroups": [{"type": "smr.statemachines:KVStore", "mode": "durable"}],
}


def test_metrics_port_is_optional_per_member():
    cfg = parse(GOOD)
    assert cfg.members[1].metrics_port == 7201 and cfg.members[2].metrics_port is None


@pytest.mark.parametrize(
    "member, message",
    [
        ({"metrics_port": 0}, r"cluster.toml \[\[members\]\] #1: metrics_port 0 is not a TCP port"),
        ({"metrics_port": 70000}, "metrics_port 70000 is not a TCP port"),
        ({"metrics_port": "7201"}, "'metrics_port' must be an integer"),
        ({"metrics_port": 7001}, "share a host:port.*member 1 metrics_port"),
        ({"metrics_prot": 7301}, "did you mean 'metrics_port'"),
    ],
)
def test_a_wrong_metrics_port_says_which_file_and_key(member, message):
    raw = {**GOOD, "members": [{"id": 1, "port": 7001, "client_port": 7101, **member}]}
    with pytest.raises(ConfigError, match=message):
        parse(raw, "cluster.toml")


# -- a real cluster -------------------------------------------------------------------------------


def _scrape(host: str, port: int) -> tuple[dict, list]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_exposition(r.read().decode())


def _raw_request(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.cluster
def test_every_member_serves_its_metrics(tmp_path):
    puts = 50
    with LocalCluster(
        3, data_dir=str(tmp_path), transport="tcp", mode="durable", metrics=True
    ) as cluster:
        cluster.wait_ready()
        config = load(cluster.config_path)
        with smr.connect(cluster.config_path, member=1) as client:
            kv = client.subgroup(KVStore)
            for i in range(puts):
                kv.put(f"k{i}", b"v%d" % i)
            status = client.status()
        assert status["metrics"]["shards"][0]["answered"] >= puts
        assert status["metrics"]["shards"][0]["commit_p99_ms"] is not None
        addresses = {m: (c.host, c.metrics_port) for m, c in config.members.items()}

        deadline = time.monotonic() + 10
        while True:  # the other members apply the last puts a moment later
            scraped = {m: _scrape(*a) for m, a in addresses.items()}
            delivered = {
                m: _value(s, "smr_shard_delivered_version", subgroup="0", shard="0")
                for m, (_, s) in scraped.items()
            }
            if len(set(delivered.values())) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(set(delivered.values())) == 1, delivered
        for m, (families, samples) in scraped.items():
            assert families["smr_commit_latency_seconds"][0] == "histogram"
            assert families["smr_commands_answered_total"][0] == "counter"
            epoch = _value(samples, "smr_view_epoch")
            assert epoch == status["epoch"]
            assert _value(samples, "smr_view_members") == 3
            assert _value(samples, "smr_member_status", status="active") == 1
            assert _value(samples, "smr_member_status", status="halted") == 0
            assert delivered[m] > 0 and int(delivered[m]) >> 32 == epoch
            persisted = _value(samples, "smr_shard_persisted_version", subgroup="0", shard="0")
            assert 0 < persisted <= delivered[m]
            assert _value(samples, "smr_queue_max", queue="inbox") > 0
            assert _value(samples, "smr_queue_depth", queue="submit", subgroup="0", shard="0") >= 0
            assert _value(samples, "smr_view_changes_total") >= 0
            fsyncs = _value(samples, "smr_fsync_latency_seconds_count", subgroup="0", shard="0")
            assert fsyncs > 0  # batch policy: every member fsyncs its log
            # tcp links: bytes to each peer, and the links' and the client port's events
            for peer in set(addresses) - {m}:
                assert _value(samples, "smr_link_sent_bytes_total", peer=str(peer)) > 0
            assert _value(samples, "smr_transport_events_total", event="links_up") >= 2
            assert families["smr_client_port_events_total"][0] == "counter"
        _, samples1 = scraped[1]
        count = _value(samples1, "smr_commit_latency_seconds_count", subgroup="0", shard="0")
        assert count >= puts
        assert _value(samples1, "smr_commands_answered_total", subgroup="0", shard="0") >= puts
        assert _value(samples1, "smr_client_port_events_total", event="requests") >= puts
        inf = _value(
            samples1, "smr_commit_latency_seconds_bucket", subgroup="0", shard="0", le="+Inf"
        )
        assert inf == count

        # a malformed request gets 400, other paths 404; the member keeps serving
        host, port = addresses[2]
        assert _raw_request(host, port, b"\x00\x01garbage\r\n\r\n").startswith(b"HTTP/1.0 400")
        assert _raw_request(host, port, b"x" * 20000).startswith(b"HTTP/1.0 400")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://{host}:{port}/nope", timeout=10)
        assert e.value.code == 404
        half = socket.create_connection((host, port), timeout=10)  # never finishes its request
        half.sendall(b"GET /metr")
        _scrape(host, port)
        with smr.connect(cluster.config_path, member=2) as client:
            client.subgroup(KVStore).put("after", b"1")
        half.close()
        _scrape(host, port)


def test_cluster_status_shows_the_headline_metrics():
    from smr.cli.cluster_cmd import render

    shard = {"type": "KVStore", "shard": 0, "mode": "durable", "version": (2 << 32) | 7}
    shard["applied"] = 7
    metrics = {
        "view_changes": 1,
        "inbox": 0,
        "inbox_max": 100_000,
        "pending": 0,
        "metrics_port": 7301,
        "shards": [
            {
                "subgroup": 0,
                "shard": 0,
                "delivered": (2 << 32) | 7,
                "persisted": (2 << 32) | 6,
                "answered": 5,
                "failed": 0,
                "commit_p50_ms": 0.41,
                "commit_p99_ms": 2.5,
                "fsync_p50_ms": None,
                "fsync_p99_ms": None,
            }
        ],
    }
    rows = [
        {
            "member": 1,
            "pid": 10,
            "status": "active",
            "epoch": 2,
            "members": [1, 2],
            "shards": [shard],
            "metrics": metrics,
        },
        {"member": 2, "status": "down"},
    ]
    text = render(rows)
    assert "commit p50/p99 ms" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("1  0/0"))
    assert "2:7" in line and "2:6" in line and "0.41/2.50" in line and "-/-" in line
