"""Membership at runtime, from the runtime's side: members the configuration does not list join
with their addresses on the command line and get their state by transfer; a member removed for
good exits, never rejoins and refuses to start again; a removal that would leave fewer live
members than a majority is refused and changes nothing; `smr cluster add|remove|replace`; a
client finds members its file does not list. And the parts under them: contact cards, the
configuration's checks, the protocol's messages, the client core's address book, `LocalGroup`.

Process-level tests run real `smr node` processes over tcp on loopback, each bounded in time;
every process is ended by its PID (the `LocalCluster` context, or `stop_from_pidfile` for the
ones the CLI started)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time

import msgspec
import pytest
from click.testing import CliRunner

import smr
import smr.aio
from smr.cli.main import cli
from smr.client_core import ClientCore, ClientError, members_of
from smr.core.errors import UsageError
from smr.core.views import CARD_BYTES_MAX
from smr.group import LocalGroup
from smr.runtime import protocol
from smr.runtime.cluster import LocalCluster, load_added, local_config, stop_from_pidfile
from smr.runtime.config import (
    HOST_BYTES_MAX,
    ConfigError,
    MemberConfig,
    load,
    parse,
    with_member,
    write_local,
)
from smr.runtime.node import EXIT_REMOVED, removed_reason
from smr.runtime.roster import CARD_FORMAT, CardError, decode_card, encode_card
from smr.statemachines import KVStore
from smr.transport.wire import FrameDecoder

WAIT_S = 30.0  # how long a test waits for what should take well under a second


def _until(cond, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.05)


def _config():
    return parse(
        {
            "cluster": {"name": "t", "secret_hex": "ab" * 16},
            "members": [
                {"id": 1, "port": 7001, "client_port": 7101},
                {"id": 2, "port": 7002, "client_port": 7102},
            ],
            "subgroups": [{"type": "smr.statemachines:KVStore", "mode": "durable"}],
        }
    )


# -- contact cards --------------------------------------------------------------------------------


def test_a_card_holds_the_addresses_and_fits_the_core_limit():
    for member in (
        MemberConfig(7, "10.0.0.7", 7107, 7207),
        MemberConfig(8, "h" * HOST_BYTES_MAX, 65535, 65534, 65533),
        MemberConfig(9, "hôte.example", 1, 2, None),
    ):
        card = encode_card(member)
        assert card[0] == CARD_FORMAT and len(card) <= CARD_BYTES_MAX
        assert decode_card(member.id, card) == member


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "no contact card"),
        (b"\x02" + encode_card(MemberConfig(3, "h", 1, 2))[1:], "format 2"),
        (b"\x01\xc1", "not readable"),
        (b"\x01" + msgspec.msgpack.encode(["h", 1]), "not readable"),
        (b"\x01" + msgspec.msgpack.encode(["h", 1, 2, 3, 4]), "not readable"),
        (b"\x01" + msgspec.msgpack.encode(["h", "1", 2, None]), "not readable"),
        (b"\x01" + msgspec.msgpack.encode(["", 1, 2, None]), "no usable address"),
        (b"\x01" + msgspec.msgpack.encode(["h", 0, 2, None]), "no usable address"),
        (b"\x01" + msgspec.msgpack.encode(["h", 1, 70000, None]), "no usable address"),
        (b"\x01" + b"x" * CARD_BYTES_MAX, "more than 128"),
    ],
)
def test_a_bad_card_is_a_card_error_naming_the_member(data, says):
    with pytest.raises(CardError, match=says) as e:
        decode_card(3, data)
    assert "member 3" in str(e.value) and "\n" not in str(e.value)


def test_a_card_cut_anywhere_or_followed_by_garbage_is_refused():
    card = encode_card(MemberConfig(4, "192.168.1.4", 7104, 7204, 7304))
    for cut in range(len(card)):
        with pytest.raises(CardError):
            decode_card(4, card[:cut])
    with pytest.raises(CardError):
        decode_card(4, card + b"\x00")


def test_random_bytes_are_a_card_or_a_card_error_never_anything_else():
    rng = random.Random(19)
    for _ in range(3000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        if rng.random() < 0.5 and data:
            data = b"\x01" + data[1:]
        with contextlib.suppress(CardError):  # and nothing else
            decode_card(1, data)


# -- the configuration ----------------------------------------------------------------------------


def test_an_unlisted_member_is_added_with_its_addresses_checked_like_a_listed_one():
    config = _config()
    added = with_member(config, MemberConfig(5, "127.0.0.1", 7005, 7105))
    assert sorted(added.members) == [1, 2, 5] and sorted(config.members) == [1, 2]
    assert added.founders == config.founders  # a joiner, not a founder
    assert with_member(config, config.members[1]) is config  # listed, as listed
    with pytest.raises(ConfigError, match=r"member 1 is listed with other addresses: port 7009"):
        with_member(config, MemberConfig(1, "127.0.0.1", 7009, 7101))
    with pytest.raises(ConfigError, match=r"two ports share a host:port: 127\.0\.0\.1:7002"):
        with_member(config, MemberConfig(5, "127.0.0.1", 7002, 7105))
    with pytest.raises(ConfigError, match="client_port 0 is not a TCP port"):
        with_member(config, MemberConfig(5, "127.0.0.1", 7005, 0))
    with pytest.raises(ConfigError, match="id 0 must be a positive integer"):
        with_member(config, MemberConfig(0, "127.0.0.1", 7005, 7105))


def test_a_host_too_long_for_a_card_is_a_config_error():
    config = _config()
    long_host = "h" * (HOST_BYTES_MAX + 1)
    with pytest.raises(ConfigError, match=f"more than {HOST_BYTES_MAX}.*shorter name") as e:
        with_member(config, MemberConfig(5, long_host, 7005, 7105))
    assert "\n" not in str(e.value)
    raw = {
        "cluster": {"name": "t", "secret_hex": "ab" * 16},
        "members": [{"id": 1, "host": long_host, "port": 7001, "client_port": 7101}],
        "subgroups": [{"type": "smr.statemachines:KVStore"}],
    }
    with pytest.raises(ConfigError, match=r"\[\[members\]\] #1: host"):
        parse(raw)


def _write_config(tmp_path) -> str:
    return write_local(str(tmp_path), nodes=2, transport="tcp")


def test_smr_node_says_what_is_missing_for_an_unlisted_member(tmp_path):
    path = _write_config(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["node", "--config", path, "--id", "9"])
    assert result.exit_code == 2
    assert "member 9 is not listed" in result.output and "--client-port" in result.output
    result = runner.invoke(cli, ["node", "--config", path, "--id", "9", "--port", "7999"])
    assert result.exit_code == 2 and "give both --port and --client-port" in result.output
    result = runner.invoke(cli, ["node", "--config", path, "--id", "1", "--port", "1"])
    assert result.exit_code == 2 and "member 1 is listed with other addresses" in result.output


# -- the protocol and the client core -------------------------------------------------------------


def test_remove_member_and_a_brief_status_round_trip_and_old_statuses_still_decode():
    for request in (protocol.RemoveMember(3, 7, 1500), protocol.Status(4, True)):
        assert protocol.decode_request(protocol.encode(request)) == request
    old = msgspec.msgpack.encode({"type": "status", "id": 5})  # a client of an older version
    assert protocol.decode_request(old) == protocol.Status(5, False)


def _status(addresses, retired=()):
    return {
        "addresses": [
            {"id": m, "host": h, "port": 1, "client_port": p, "metrics_port": None}
            for m, (h, p) in addresses.items()
        ],
        "retired": list(retired),
    }


def test_the_client_core_learns_members_from_status_answers_and_skips_removed_ones():
    configured = {1: ("127.0.0.1", 7101), 2: ("127.0.0.1", 7102)}
    core = ClientCore([1, 2], rng=random.Random(3), frame_bytes_max=1 << 20, addresses=configured)
    conn = object()
    core.on_connected(conn, 1)
    rid, _ = core.status("token", brief=True)
    learnt = {**configured, 4: ("127.0.0.4", 7104)}
    answer = protocol.Response(rid, True, status=_status(learnt, retired=[2]))
    ((token, value, error),), _ = core.on_response(answer, conn, 0.0)
    assert token == "token" and error is None and sorted(members_of(value)) == [1, 2, 4]
    assert core.address(4) == ("127.0.0.4", 7104)
    assert sorted(core.members) == [1, 4] and 2 not in core.dial_order()
    # a member shutting down tells every client (id 0, unasked)
    core.on_response(protocol.Response(0, True, status=_status({5: ("h5", 7105)}, [1])), conn, 1)
    assert sorted(core.members) == [4, 5]
    # an answer of another shape teaches nothing and breaks nothing
    core.on_response(protocol.Response(0, True, status={"addresses": [{"id": "x"}]}), conn, 2)
    assert sorted(core.members) == [4, 5]


def test_when_every_member_known_was_removed_the_client_keeps_its_list_to_say_so():
    core = ClientCore([1], rng=random.Random(3), frame_bytes_max=1 << 20)
    core.on_connected(object(), 1)
    core.on_response(protocol.Response(0, True, status={"retired": [1]}), core.connection, 0)
    assert core.members == (1,) and core.retired == {1}


def test_the_client_core_asks_for_the_members_every_refresh_s():
    core = ClientCore([1], rng=random.Random(3), frame_bytes_max=1 << 20, refresh_s=5.0)
    assert core.next_due() is None and core.refresh(0.0) == []  # not connected
    core.on_connected(object(), 1)
    assert core.next_due() == 0.0
    assert core.refresh(10.0) == []  # the period starts
    assert core.next_due() == pytest.approx(15.0)
    assert core.refresh(14.0) == []
    ((rid, frame),) = core.refresh(15.0)
    ((_, body),) = FrameDecoder(1 << 20).feed(frame)
    request = protocol.decode_request(body)
    assert request == protocol.Status(rid, True) and not core.is_pending(rid)
    # a new connection starts a new period
    core.on_connected(object(), 1)
    assert core.next_due() == 0.0
    assert ClientCore([1], rng=random.Random(3), frame_bytes_max=1).next_due() is None


def test_a_refused_removal_is_a_client_error_with_the_members_reason():
    core = ClientCore([1, 2], rng=random.Random(3), frame_bytes_max=1 << 20)
    core.on_connected(object(), 1)
    rid, _ = core.remove_member("t", 2, 1000)
    why = "removing member 2 would leave 1 live members of the 2 in view 3, fewer than a majority"
    ((_, _, error),), _ = core.on_response(
        protocol.Response(rid, False, error=why), core.connection, 0.0
    )
    assert type(error) is ClientError and str(error) == why


# -- LocalGroup -----------------------------------------------------------------------------------


def test_a_local_group_adds_and_removes_members_and_resumes_without_the_removed(tmp_path):
    group = LocalGroup(members=3, types=[KVStore], mode="durable", data_dir=str(tmp_path))
    group.subgroup(KVStore).put("a", b"1").result()
    new = group.add_member()
    assert new == 4 and group.subgroup(KVStore, member=4).get("a") == b"1"  # its state came
    assert group.remove_member(1) == (2, 3, 4)
    with pytest.raises(UsageError, match="member 1 was removed already"):
        group.remove_member(1)
    assert sorted(group.subgroup(KVStore, member=2).put("b", b"2").result()) == [2, 3, 4]
    group.close()
    again = LocalGroup(members=3, types=[KVStore], mode="durable", data_dir=str(tmp_path))
    assert sorted(again.members) == [2, 3, 4]
    assert again.subgroup(KVStore, member=4).get("b") == b"2"
    assert again.add_member() == 5  # never an id a member had
    again.close()


def test_a_local_group_refuses_to_remove_below_a_majority():
    group = LocalGroup(members=2, types=[KVStore])
    with pytest.raises(UsageError, match="fewer than a majority"):
        group.remove_member(2)
    assert sorted(group.subgroup(KVStore).put("a", b"1").result()) == [1, 2]  # nothing changed


# -- processes ------------------------------------------------------------------------------------


def _lines(cluster: LocalCluster, member: int, event: str) -> list[dict]:
    with open(cluster.log_path(member)) as f:
        records = [json.loads(line) for line in f if line.startswith("{")]
    return [r for r in records if r["event"] == event]


@pytest.mark.cluster
def test_a_member_not_in_the_config_joins_with_state_and_restarts_from_its_card(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=1) as client:
            kv = client.subgroup(KVStore)
            for i in range(20):
                kv.put(f"k{i}", b"v%d" % i)
            new = cluster.add_member()
            assert new.id == 4 and 4 not in load(cluster.config_path).members
            cluster.wait_member(4)
            assert sorted(kv.put("after", b"x")) == [1, 2, 3, 4]  # it replies, like the others
            assert sorted(client.members()) == [1, 2, 3, 4]
        with smr.connect(cluster.config, member=4) as c4:
            assert c4.member == 4
            kv4 = c4.subgroup(KVStore)
            assert [kv4.get(f"k{i}") for i in range(20)] == [b"v%d" % i for i in range(20)]
        assert _lines(cluster, 4, "state-restored")  # by transfer, not by replay
        assert load_added(str(tmp_path))[4] == new  # a later command reaches it
        # killed, it restarts with `--config` and `--id` alone: its card is in its data dir
        cluster.kill(4)
        del cluster.added[4]
        cluster.restart(4)
        cluster.wait_member(4)
        with smr.connect(cluster.config, member=4) as c4:
            assert c4.subgroup(KVStore).get("after", consistency="sequential") == b"x"


@pytest.mark.cluster
def test_a_removed_member_exits_for_good_and_refuses_to_start_again(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=1) as client:
            kv = client.subgroup(KVStore)
            kv.put("a", b"1")
            view = client.remove_member(3, timeout_s=20)
            assert view["removed"] == 3 and view["members"] == [1, 2] and view["retired"] == [3]
            _until(lambda: cluster.procs[3].poll() is not None, "member 3 exiting")
            assert cluster.procs[3].returncode == EXIT_REMOVED
            (exit_line,) = _lines(cluster, 3, "exit")
            assert "stops for good" in exit_line["reason"] and "never let in" in exit_line["reason"]
            # rejoin = true does not bring it back; a restart refuses at once, with the reason
            assert removed_reason(cluster.config, 3) is not None
            started = time.monotonic()
            run = subprocess.run(
                [sys.executable, "-m", "smr.runtime", "--config", cluster.config_path, "--id", "3"],
                capture_output=True,
                text=True,
                timeout=WAIT_S,
            )
            assert run.returncode == EXIT_REMOVED and time.monotonic() - started < WAIT_S
            assert "member 3 stops for good" in run.stderr
            # a second removal is answered alike (a retry after a failover), and the group goes on
            assert client.remove_member(3)["retired"] == [3]
            assert sorted(kv.put("b", b"2")) == [1, 2]
            status = client.status()
            assert status["retired"] == [3] and 3 not in {a["id"] for a in status["addresses"]}
            with pytest.raises(ClientError, match="member 99 is not a member of this cluster"):
                client.remove_member(99)


@pytest.mark.cluster
def test_removing_below_a_majority_is_refused_and_changes_nothing(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=1) as client:
            kv = client.subgroup(KVStore)
            kv.put("a", b"1")
            cluster.kill(3)
            _until(lambda: client.status()["members"] == [1, 2], "the view without member 3")
            epoch = client.status()["epoch"]
            with pytest.raises(ClientError, match="fewer than a majority") as e:
                client.remove_member(2, timeout_s=10)
            assert "\n" not in str(e.value)
            status = client.status()
            assert (status["epoch"], status["members"], status["retired"]) == (epoch, [1, 2], [])
            assert sorted(kv.put("b", b"2")) == [1, 2]
            # through the CLI: the same refusal, a non-zero exit
            result = CliRunner().invoke(
                cli, ["cluster", "remove", "2", "--data-dir", str(tmp_path)]
            )
            assert result.exit_code == 1 and "fewer than a majority" in result.output
            assert client.status()["members"] == [1, 2]


@pytest.mark.cluster
def test_smr_cluster_add_and_replace_then_status_shows_the_members(tmp_path):
    data_dir = str(tmp_path)
    runner = CliRunner()
    try:
        with LocalCluster(3, data_dir=data_dir, transport="tcp", mode="durable") as cluster:
            cluster.wait_ready()
            with smr.connect(cluster.config_path, member=2) as client:
                client.subgroup(KVStore).put("a", b"1")
            result = runner.invoke(cli, ["cluster", "add", "--data-dir", data_dir])
            assert result.exit_code == 0, result.output
            assert "member 4 joined" in result.output
            result = runner.invoke(cli, ["cluster", "replace", "1", "--data-dir", data_dir])
            assert result.exit_code == 0, result.output
            assert (
                "member 5 joined" in result.output and "removed member 1 for good" in result.output
            )
            _until(lambda: cluster.procs[1].poll() is not None, "member 1 exiting")
            assert cluster.procs[1].returncode == EXIT_REMOVED
            result = runner.invoke(cli, ["cluster", "status", "--data-dir", data_dir])
            assert result.exit_code == 0, result.output
            rows = {line.split()[0]: line for line in result.output.splitlines()[1:6]}
            assert "removed" in rows["1"] and all("active" in rows[m] for m in "2345")
            # another host: the command to run there, nothing started
            result = runner.invoke(
                cli,
                ["cluster", "add", "--data-dir", data_dir, "--host", "192.0.2.9"],
            )
            assert result.exit_code == 2 and "needs --port and --client-port" in result.output
            result = runner.invoke(
                cli,
                [
                    "cluster", "add", "--data-dir", data_dir, "--host", "192.0.2.9",
                    "--port", "7001", "--client-port", "7002",
                ],
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            assert "--id 6 --host 192.0.2.9 --port 7001 --client-port 7002" in result.output
            with smr.connect(local_config(cluster.config_path), member=5) as c5:
                assert c5.subgroup(KVStore).get("a") == b"1"
    finally:
        stop_from_pidfile(data_dir)  # the members the CLI started, by their PIDs


def _take(watch, n: int) -> list:
    out = []
    for event in watch:
        out.append(event)
        if len(out) == n:
            break
    return out


@pytest.mark.cluster
def test_clients_fail_over_to_members_their_file_does_not_list(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        file_only = cluster.config_path  # lists members 1, 2 and 3 alone
        with smr.connect(file_only, member=1, refresh_s=None) as client:  # no refresh: answers
            kv = client.subgroup(KVStore)
            kv.put("a", b"1")
            watch = kv.watch(member=1)
            assert [e.args["key"] for e in _take(watch, 1)] == ["a"] and watch.member == 1
            for _ in range(2):
                cluster.wait_member(cluster.add_member().id)
            left = [1, 2, 3, 4, 5]
            for old in (1, 2, 3):
                cluster.remove_member(old, timeout_s=20)
                left.remove(old)
                # every member in the view without it before the next removal (one asked at
                # once may not yet see the others hold the shards' state in the new epoch)
                cluster.wait_ready(left)
            # every member the file lists is gone: the client goes on with 4 and 5, learnt from
            # the answers of the members it was connected to (the last words of a removed one)
            assert sorted(kv.put("b", b"2")) == [4, 5]
            assert client.member in (4, 5) and kv.get("a") == b"1"
            # the watch follows too: its member went, and it resumes at one its file lacks
            with watch:
                keys = [e.args["key"] for e in _take(watch, 1)]
            assert keys == ["b"] and watch.member in (4, 5)

        async def aio() -> bytes:
            # a new client whose file lists removed members alone reaches nobody (and says so);
            # with the members this directory added, it finds 4 and 5
            with pytest.raises(ClientError, match="no member of"):
                await smr.aio.connect(file_only, timeout_s=1)
            async with smr.aio.connect(local_config(file_only), timeout_s=10) as c:
                assert sorted(await c.members()) == [4, 5]
                return await c.subgroup(KVStore).get("b")

        assert asyncio.run(asyncio.wait_for(aio(), WAIT_S)) == b"2"


def test_the_added_members_file_is_read_back(tmp_path):
    assert load_added(str(tmp_path)) == {}
    (tmp_path / "cluster.added.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"cluster\.added\.json: not readable"):
        load_added(str(tmp_path))
    os.remove(tmp_path / "cluster.added.json")


@pytest.mark.cluster
def test_add_replace_and_remove_under_load_lose_no_acknowledged_write(tmp_path):
    import threading

    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        acked: dict[str, bytes] = {}
        unknown: list[str] = []
        stop = threading.Event()

        def writer(w: int) -> None:
            with smr.connect(cluster.config_path, timeout_s=20) as client:
                kv = client.subgroup(KVStore)
                i = 0
                while not stop.is_set():
                    key, value = f"w{w}-{i}", b"%d" % i
                    try:
                        kv.put(key, value)
                        acked[key] = value
                    except ClientError:
                        unknown.append(key)  # maybe applied: not checked either way
                    i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        try:
            _until(lambda: len(acked) >= 50, "writes before the changes")
            added = cluster.add_member()
            cluster.wait_member(added.id)
            n = len(acked)
            _until(lambda: len(acked) >= n + 50, "writes with the added member")
            new, view = cluster.replace_member(1)
            assert 1 not in view["members"] and new.id in view["members"]
            n = len(acked)
            _until(lambda: len(acked) >= n + 50, "writes after the replacement")
            view = cluster.remove_member(2)
            assert sorted(view["members"]) == sorted([3, added.id, new.id])
            n = len(acked)
            _until(lambda: len(acked) >= n + 50, "writes after the removal")
        finally:
            stop.set()
            for t in threads:
                t.join(WAIT_S)
        assert not any(t.is_alive() for t in threads)
        # every acknowledged write reads back, from each member of the final view alike
        final = sorted(view["members"])
        for m in final:
            with smr.connect(local_config(cluster.config_path), member=m, timeout_s=20) as c:
                kv = c.subgroup(KVStore)
                wrong = {k: v for k, v in acked.items() if kv.get(k) != v}
                assert not wrong, f"member {m} lost {len(wrong)} acknowledged writes"
        assert len(acked) >= 200 and len(unknown) < len(acked)


@pytest.mark.cluster
def test_a_member_asked_to_remove_itself_sends_the_client_to_the_others_for_the_view(tmp_path):
    with LocalCluster(3, data_dir=str(tmp_path), transport="tcp", mode="durable") as cluster:
        cluster.wait_ready()
        with smr.connect(cluster.config_path, member=3) as client:
            assert client.member == 3
            view = client.remove_member(3, timeout_s=20)
            assert view["members"] == [1, 2] and view["retired"] == [3]
            assert client.member in (1, 2)
        _until(lambda: cluster.procs[3].poll() is not None, "member 3 exiting")
        assert cluster.procs[3].returncode == EXIT_REMOVED
