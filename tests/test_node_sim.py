"""Member processes' code in simulated time: `smr.runtime.node.Node` itself, with a simulated
network, disk, group commit and clients (smr.sim.members), so what is simulated is what a member
process runs."""

from __future__ import annotations

from smr.runtime import protocol
from smr.runtime.config import load, write_local
from smr.runtime.hosted import decode_result
from smr.sim.members import SimMembers
from smr.statemachines import KVStore

MS = 1_000_000


def _put(members: SimMembers, member: int, client: int, seq: int, key: str, value: bytes):
    payload = KVStore.encode_command("put", key, value)
    conn = members.request(
        member,
        lambda rid: protocol.Command(rid, 0, 0, client, seq, payload, protocol.REPLIES_ALL),
    )
    members.run_until(lambda: members.answer(member, conn) is not None)
    return members.answer(member, conn)


def _cluster(tmp_path, seed: int) -> SimMembers:
    config = load(write_local(str(tmp_path), nodes=3, mode="durable", transport="tcp"))
    members = SimMembers(config, seed)
    members.run_until(lambda: all(n.replica.status == "active" for n in members.nodes.values()))
    return members


def test_three_simulated_nodes_answer_commands_with_every_replicas_result(tmp_path):
    members = _cluster(tmp_path, seed=7)
    first = _put(members, 1, client=11, seq=1, key="colour", value=b"blue")
    second = _put(members, 2, client=11, seq=2, key="colour", value=b"red")
    assert first.ok and second.ok and sorted(second.results) == [1, 2, 3]
    assert {decode_result(KVStore, r, "put") for r in second.results.values()} == {b"blue"}
    # durable: the entry is in every member's log on its simulated disk
    for node in members.nodes.values():
        assert [r.version for r in node.logs[(0, 0)]] == [first.version, second.version]


def test_a_crashed_simulated_node_is_left_out_of_the_next_view(tmp_path):
    members = _cluster(tmp_path, seed=3)
    assert _put(members, 1, client=5, seq=1, key="a", value=b"1").ok
    members.crash(3)
    members.run_until(lambda: all(3 not in n.replica.members for n in members.nodes.values()))
    answer = _put(members, 1, client=5, seq=2, key="b", value=b"2")
    assert answer.ok and sorted(answer.results) == [1, 2]
    views = [line for line in members.lines if line["event"] == "view"]
    assert views and views[-1]["members"] == [1, 2] and views[-1]["departed"] == [3]


def test_a_simulated_run_is_determined_by_its_seed(tmp_path):
    def run(seed: int) -> list:
        members = _cluster(tmp_path / str(seed) / str(len(seen)), seed)
        for i in range(5):
            _put(members, 1 + i % 3, client=9, seq=i + 1, key=f"k{i}", value=b"%d" % i)
        members.crash(2)
        members.run_for(400 * MS)
        return [(line["t_ns"], line["member"], line["event"]) for line in members.lines]

    seen: list = []
    seen.append(run(11))
    seen.append(run(11))
    assert seen[0] == seen[1]
    assert run(12) != seen[0]


def _read(members: SimMembers, member: int, key: str, consistency: str) -> protocol.Response:
    payload = KVStore.encode_query("get", key)
    conn = members.request(
        member, lambda rid: protocol.Query(rid, 0, 0, payload, consistency=consistency)
    )
    members.run_until(lambda: members.answer(member, conn) is not None)
    return members.answer(member, conn)


def test_a_node_confirms_linearizable_reads_and_refuses_them_when_cut_off(tmp_path):
    members = _cluster(tmp_path, seed=5)
    assert _put(members, 1, client=3, seq=1, key="k", value=b"v1").ok
    for consistency in (protocol.READ_LINEARIZABLE, protocol.READ_SEQUENTIAL):
        answer = _read(members, 3, "k", consistency)
        assert answer.ok and decode_result(KVStore, answer.value, "get") == b"v1"
    unknown = _read(members, 3, "k", "eventual")
    assert not unknown.ok and "unknown read consistency" in unknown.error
    # cut member 3 off: it cannot confirm it is still in the view, so it serves nothing old
    for other in (1, 2):
        members.world.set_link(3, other, False)
    refused = _read(members, 3, "k", protocol.READ_LINEARIZABLE)
    assert not refused.ok and refused.redirect
    assert "could not confirm" in refused.error or "halted" in refused.error
    # ... while the majority side goes on and reads what it wrote
    assert _put(members, 1, client=3, seq=2, key="k", value=b"v2").ok
    answer = _read(members, 2, "k", protocol.READ_LINEARIZABLE)
    assert answer.ok and decode_result(KVStore, answer.value, "get") == b"v2"
