"""A newcomer's mistakes in the configuration and the CLI get one clear line, not a traceback
and not a silently ignored setting."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from smr.cli.main import cli
from smr.runtime.config import ConfigError, parse, write_local

GOOD = {
    "cluster": {"name": "t", "secret_hex": "ab" * 16},
    "members": [
        {"id": 1, "port": 7001, "client_port": 7101},
        {"id": 2, "port": 7002, "client_port": 7102},
    ],
    "subgroups": [{"type": "smr.statemachines:KVStore", "mode": "durable"}],
}


def _copy() -> dict:
    return {k: (dict(v) if isinstance(v, dict) else [dict(x) for x in v]) for k, v in GOOD.items()}


@pytest.mark.parametrize(
    "section, key, meant",
    [
        ("cluster", "sync_polcy", "sync_policy"),
        ("cluster", "trasnport", "transport"),
        ("timeouts", "suspect_msec", "suspect_ms"),
        ("limits", "frame_byte_max", "frame_bytes_max"),
        ("members", "clientport", "client_port"),
        ("subgroups", "shard", "shards"),
        ("", "timeout", "timeouts"),
    ],
)
def test_a_misspelt_key_is_an_error_naming_it_and_the_key_meant(section, key, meant):
    raw = _copy()
    if section == "":
        raw[key] = {}
    elif isinstance(raw.get(section), list):
        raw[section][0][key] = 1
    else:
        raw.setdefault(section, {})[key] = "always"
    with pytest.raises(ConfigError) as e:
        parse(raw)
    assert repr(key) in str(e.value) and repr(meant) in str(e.value)
    assert "\n" not in str(e.value)


def test_an_unknown_key_with_no_close_match_lists_the_known_keys():
    raw = _copy()
    raw["cluster"]["colour"] = "blue"
    with pytest.raises(ConfigError, match=r"unknown key 'colour'.*sync_policy"):
        parse(raw)


def test_a_duplicate_port_names_the_port_and_the_members():
    raw = _copy()
    raw["members"][1]["client_port"] = 7001  # member 2's client port is member 1's port
    with pytest.raises(ConfigError) as e:
        parse(raw)
    message = str(e.value)
    assert "127.0.0.1:7001" in message
    assert "member 1 port" in message and "member 2 client_port" in message


def _config_with_type(tmp_path, type_name: str) -> str:
    path = write_local(str(tmp_path), nodes=1)
    with open(path) as f:
        text = f.read().replace("smr.statemachines:KVStore", type_name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_cluster_status_with_a_type_it_cannot_import_says_so_in_one_line(tmp_path):
    _config_with_type(tmp_path, "no_such_module_anywhere:Thing")
    result = CliRunner().invoke(cli, ["cluster", "status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, ConfigError)  # no traceback
    assert "cannot import 'no_such_module_anywhere'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_type_whose_module_raises_on_import_is_a_config_error(tmp_path, monkeypatch):
    (tmp_path / "broken_machine.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = _copy()
    raw["subgroups"] = [{"type": "broken_machine:Thing"}]
    with pytest.raises(ConfigError, match=r"importing 'broken_machine' failed.*half-written"):
        parse(raw)


def test_kv_against_a_cluster_with_no_kvstore_says_so_in_one_line(tmp_path):
    path = _config_with_type(tmp_path, "smr.statemachines:Counter")
    result = CliRunner().invoke(cli, ["kv", "--config", path, "get", "colour"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "no subgroup hosts KVStore" in result.stderr
    assert "smr.statemachines:Counter" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
