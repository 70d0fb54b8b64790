"""The runtime's pieces that need no processes: configuration, sessions, the client protocol."""

from __future__ import annotations

import msgspec
import pytest

from smr.api import Entry
from smr.runtime import protocol
from smr.runtime.config import ConfigError, load, parse, write_local
from smr.runtime.hosted import CommandError, Hosted, decode_result, unwrap, wrap
from smr.statemachines import KVStore

GOOD = {
    "cluster": {"name": "t", "secret_hex": "ab" * 16},
    "members": [
        {"id": 1, "port": 7001, "client_port": 7101},
        {"id": 2, "port": 7002, "client_port": 7102},
    ],
    "subgroups": [{"type": "smr.statemachines:KVStore", "mode": "durable"}],
}


def _with(**changes):
    raw = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in GOOD.items()}
    for path, value in changes.items():
        section, _, key = path.partition("__")
        if isinstance(raw[section], list):
            raw[section] = value
        elif value is None:
            raw[section].pop(key, None)
        else:
            raw[section][key] = value
    return raw


def test_a_good_configuration_parses():
    cfg = parse(GOOD)
    assert cfg.founders == (1, 2) and cfg.types == (KVStore,)
    assert cfg.layout[0].mode == "durable"
    assert cfg.core_config().views.suspect_timeout_ns == 100_000_000
    assert cfg.core_config().multicast.engine == "auto"
    assert parse(_with(cluster__engine="python")).core_config().multicast.engine == "python"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"cluster__secret_hex": None}, "set secret_file"),
        ({"cluster__secret_hex": "abcd"}, "at least 16 bytes"),
        ({"cluster__transport": "carrier-pigeon"}, "transport 'carrier-pigeon'"),
        ({"cluster__engine": "turbo"}, "engine 'turbo' is not one of auto, native, python"),
        ({"cluster__founders": [1, 9]}, "founder 9"),
        ({"members": [{"id": 1, "port": 70000, "client_port": 7101}]}, "port 70000"),
        (
            {
                "members": [
                    {"id": 1, "port": 1, "client_port": 2},
                    {"id": 1, "port": 3, "client_port": 4},
                ]
            },
            "listed twice",
        ),
        ({"members": [{"id": 1, "port": 5, "client_port": 5}]}, "share a host:port"),
        ({"subgroups": [{"type": "smr.statemachines:Nope"}]}, "not a StateMachine"),
        ({"subgroups": [{"type": "no.such.module:X"}]}, "cannot import"),
        ({"subgroups": [{"type": "smr.statemachines:KVStore", "mode": "fast"}]}, "mode"),
        ({"subgroups": []}, "no replicated type"),
    ],
)
def test_a_wrong_configuration_says_what_to_change(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse(_with(**changes), "cluster.toml")


def test_the_secret_never_shows_in_repr():
    cfg = parse(GOOD)
    assert "ab" * 16 not in repr(cfg) and "ab" * 16 not in repr(cfg.transport_config())


def test_write_local_writes_a_loadable_configuration(tmp_path):
    path = write_local(str(tmp_path), nodes=3, mode="ordered", transport="tcp")
    cfg = load(path)
    assert sorted(cfg.members) == [1, 2, 3] and cfg.transport == "tcp"
    assert len(cfg.secret) >= 16 and (tmp_path / "secret").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError, match="no such configuration file"):
        load(str(tmp_path / "missing.toml"))
    (tmp_path / "bad.toml").write_text("[cluster\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(tmp_path / "bad.toml"))


def test_a_retried_command_applies_once_and_gets_the_same_result():
    h = Hosted(KVStore())
    put = KVStore.encode_command("append", "k", b"x")
    first = h.apply(wrap(7, 1, put), 1, 0)
    again = h.apply(wrap(7, 1, put), 2, 0)
    assert first == again and h.applied == 1
    assert decode_result(KVStore, first) == 1
    h.apply(wrap(7, 2, put), 3, 0)
    assert h.machine.get("k") == b"xx"


def test_a_batch_applies_as_its_commands_one_at_a_time_and_names_its_retries():
    from smr.core.ready import Delivery

    put = KVStore.encode_command("append", "k", b"x")
    bad = b"\x92\x63\x00"  # a malformed command: an error at every replica
    payloads = [wrap(7, 1, put), wrap(7, 2, put), wrap(7, 1, put), put, wrap(8, 1, bad)]
    payloads += [wrap(7, 2, put), wrap(7, 3, put), wrap(7, 1, put), wrap(9, 1, put)]
    one, batch = Hosted(KVStore(), session_results_max=2), Hosted(KVStore(), session_results_max=2)
    alone = [one.apply(p, v, 10 * v) for v, p in enumerate(payloads, 1)]
    results, repeats = batch.apply_many(
        [Delivery(0, 0, v, 10 * v, 1, p, True) for v, p in enumerate(payloads, 1)]
    )
    # seq 1 again (answered), seq 2 again (answered), seq 1 once seq 3 pushed it out (too old)
    assert results == alone and repeats == [2, 5, 7]
    assert decode_result(KVStore, results[2]) == 1  # the first answer, not applied again
    for failed in (4, 7):
        with pytest.raises(CommandError):
            decode_result(KVStore, results[failed])
    assert (batch.applied, batch.version, batch.snapshot()) == (one.applied, 9, one.snapshot())


def test_sessions_travel_with_the_snapshot():
    h = Hosted(KVStore())
    put = KVStore.encode_command("append", "k", b"x")
    h.apply(wrap(7, 1, put), 1, 0)
    other = Hosted(KVStore())
    other.restore(h.snapshot())
    assert other.apply(wrap(7, 1, put), 2, 0) == h.apply(wrap(7, 1, put), 2, 0)
    assert other.machine.get("k") == b"x" and other.snapshot() == h.snapshot()


def test_sessions_are_bounded_and_evict_the_same_client_everywhere():
    a, b = Hosted(KVStore(), sessions_max=2), Hosted(KVStore(), sessions_max=2)
    put = KVStore.encode_command("put", "k", b"v")
    for v, client in enumerate([1, 2, 3, 1, 4], start=1):
        assert a.apply(wrap(client, v, put), v, 0) == b.apply(wrap(client, v, put), v, 0)
    assert len(a.sessions) == 2 and a.sessions.keys() == b.sessions.keys()


def test_an_old_forgotten_command_is_refused_not_applied_twice():
    h = Hosted(KVStore(), session_results_max=2)
    put = KVStore.encode_command("append", "k", b"x")
    for seq in (1, 2, 3):
        h.apply(wrap(5, seq, put), seq, 0)
    with pytest.raises(CommandError, match="too old"):
        decode_result(KVStore, h.apply(wrap(5, 1, put), 4, 0))
    assert h.machine.get("k") == b"xxx"


def test_a_forgotten_command_stays_refused_across_a_snapshot():
    h = Hosted(KVStore(), session_results_max=2)
    put = KVStore.encode_command("append", "k", b"x")
    for seq in (1, 2, 3, 4):
        h.apply(wrap(5, seq, put), seq, 0)
    other = Hosted(KVStore(), session_results_max=2)
    other.restore(h.snapshot())
    for replica in (h, other):
        for seq in (1, 2):
            with pytest.raises(CommandError, match="too old"):
                decode_result(KVStore, replica.apply(wrap(5, seq, put), 9, 0))
        assert decode_result(KVStore, replica.apply(wrap(5, 4, put), 9, 0)) == 4  # kept
    assert other.machine.get("k") == b"xxxx" and other.snapshot() == h.snapshot()


def test_a_snapshot_without_session_floors_restores_conservatively():
    # sessions were [client, version, results] before the floor was kept
    h = Hosted(KVStore())
    put = KVStore.encode_command("append", "k", b"x")
    h.apply(wrap(5, 7, put), 1, 0)
    state, version, sessions = msgspec.msgpack.decode(h.snapshot())
    old = msgspec.msgpack.encode([state, version, [s[:3] for s in sessions]])
    other = Hosted(KVStore())
    other.restore(old)
    with pytest.raises(CommandError, match="too old"):
        decode_result(KVStore, other.apply(wrap(5, 6, put), 2, 0))
    assert other.apply(wrap(5, 7, put), 2, 0) == h.apply(wrap(5, 7, put), 2, 0)


def test_a_command_that_raises_is_an_error_result_at_every_replica():
    h = Hosted(KVStore())
    with pytest.raises(CommandError):
        decode_result(KVStore, h.apply(wrap(1, 1, b"\x92\x63\x00"), 1, 0))


def test_entries_without_an_envelope_apply_as_they_are():
    put = KVStore.encode_command("put", "k", b"v")
    assert unwrap(put) == (0, 0, put)
    kv = KVStore()
    h = Hosted(kv)
    h.apply(put, 1, 0)
    assert kv.get("k") == b"v"
    assert kv.apply(put, Entry(2, 0)) == b"v"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\xff\xff",
        msgspec.msgpack.encode({"x": 1}),
        msgspec.msgpack.encode({"type": "command", "id": "no"}),
    ],
)
def test_malformed_requests_are_decode_errors(garbage):
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        protocol.decode_request(garbage)


def test_requests_round_trip():
    c = protocol.Command(1, 0, 0, 99, 3, b"op")
    assert protocol.decode_request(protocol.encode(c)) == c


@pytest.mark.parametrize(
    "args",
    [
        ["--transport", "verbs", "demo"],
        ["demo", "--transport", "verbs"],
        ["cluster", "up", "--transport", "verbs", "--data-dir", "{tmp}"],
    ],
)
def test_verbs_without_a_device_fails_in_one_clear_line(args, tmp_path):
    from click.testing import CliRunner

    from smr.cli.main import cli

    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "verbs transport unavailable" in lines[0]
    assert "shm" in lines[0] and "tcp" in lines[0]


def test_smr_node_with_verbs_fails_in_one_line(tmp_path):
    import subprocess
    import sys

    path = write_local(str(tmp_path), nodes=3)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "smr.runtime",
            "--config",
            path,
            "--id",
            "1",
            "--transport",
            "verbs",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("smr node: verbs transport unavailable")
