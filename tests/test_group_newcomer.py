"""LocalGroup as a newcomer meets it: a command that rejects its input, and the README's snippet
run twice on the same data directory."""

from __future__ import annotations

import pytest

from smr import CommandError
from smr.api import Entry, StateMachine, command, query
from smr.group import LocalGroup
from smr.statemachines import KVStore


class Inventory(StateMachine):
    def __init__(self) -> None:
        self.stock: dict[str, int] = {}

    @command
    def receive(self, item: str, count: int, *, entry: Entry) -> int:
        if count <= 0:
            raise ValueError(f"count must be positive, not {count}")
        self.stock[item] = self.stock.get(item, 0) + count
        return self.stock[item]

    @query
    def count(self, item: str) -> int:
        if not item:
            raise KeyError("an empty item name")
        return self.stock.get(item, 0)

    def snapshot(self) -> bytes:
        import msgspec

        return msgspec.msgpack.encode(self.stock)

    def restore(self, data: bytes) -> None:
        import msgspec

        self.stock = msgspec.msgpack.decode(data)


def test_a_command_that_raises_is_a_command_error_and_the_group_goes_on():
    group = LocalGroup(members=3, types=[Inventory])
    inv = group.subgroup(Inventory)
    assert inv.receive("bolts", 10).result() == {1: 10, 2: 10, 3: 10}
    with pytest.raises(CommandError, match="count must be positive"):
        inv.receive("bolts", -1).result()
    assert inv.count("bolts") == 10  # queries work after it
    assert inv.receive("bolts", 5).result() == {1: 15, 2: 15, 3: 15}
    with pytest.raises(CommandError, match="empty item name"):
        inv.count("")
    assert group.subgroup(Inventory, member=3).count("bolts") == 15


@pytest.mark.parametrize("mode", ["durable", "ordered"])
def test_reopening_a_data_directory_resumes_from_it(tmp_path, mode):
    with LocalGroup(members=3, types=[Inventory], mode=mode, data_dir=str(tmp_path)) as group:
        inv = group.subgroup(Inventory)
        inv.receive("bolts", 10).result()
        first = inv.receive("nuts", 3).result()
    assert first == {1: 3, 2: 3, 3: 3}
    with LocalGroup(members=3, types=[Inventory], mode=mode, data_dir=str(tmp_path)) as group:
        inv = group.subgroup(Inventory, member=2)
        # durable shards come back with their state; ordered ones keep no log and start empty
        expected = 10 if mode == "durable" else 0
        assert inv.count("bolts") == expected
        assert inv.receive("bolts", 1).result() == {m: expected + 1 for m in (1, 2, 3)}
    with LocalGroup(members=3, types=[Inventory], mode=mode, data_dir=str(tmp_path)) as group:
        after = 11 if mode == "durable" else 0
        assert group.subgroup(Inventory, member=3).count("bolts") == after


def test_reopening_with_another_number_of_members_is_a_clear_error(tmp_path):
    from smr.core.errors import UsageError

    LocalGroup(members=3, types=[KVStore], mode="durable", data_dir=str(tmp_path)).close()
    with pytest.raises(UsageError, match=r"holds the logs of members \[1, 2, 3\]"):
        LocalGroup(members=2, types=[KVStore], mode="durable", data_dir=str(tmp_path))
