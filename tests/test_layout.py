"""Group layout: deterministic allocation of a view's members to subgroups and shards."""

import pytest

from smr.core.errors import LayoutError
from smr.core.layout import SubgroupSpec, allocate


def test_even_shards_split_the_view_in_rank_order():
    (a, b) = allocate([5, 3, 9, 1, 7], [SubgroupSpec("kv", shards=2)])
    assert (a.members, b.members) == ((5, 3, 9), (1, 7))
    assert (a.index, b.index, a.shard, b.shard) == (0, 1, 0, 1)
    assert a.senders == a.members and a.mode == "ordered"


def test_flexible_shards_cap_their_size():
    shards = allocate(range(1, 8), [SubgroupSpec("kv", shards=2, min_size=2, max_size=3)])
    assert [s.members for s in shards] == [(1, 2, 3), (4, 5, 6)]


def test_several_subgroups_each_draw_from_the_view_with_global_indices():
    shards = allocate(
        [1, 2, 3], [SubgroupSpec("kv", mode="durable"), SubgroupSpec("c", mode="raw")]
    )
    assert [(s.index, s.subgroup, s.subgroup_name, s.mode) for s in shards] == [
        (0, 0, "kv", "durable"),
        (1, 1, "c", "raw"),
    ]


def test_explicit_members_and_designated_senders():
    spec = SubgroupSpec("bank", members=((4, 2), (1, 3)), senders=((2,), None))
    a, b = allocate([1, 2, 3, 4], [spec])
    assert (a.members, a.senders) == ((4, 2), (2,))
    assert (b.members, b.senders) == ((1, 3), (1, 3))


def test_allocation_is_deterministic():
    specs = [SubgroupSpec("a", shards=3, min_size=1), SubgroupSpec("b", members=((2, 4),))]
    assert allocate([1, 2, 3, 4, 5], specs) == allocate([1, 2, 3, 4, 5], specs)


@pytest.mark.parametrize(
    "view,spec,message",
    [
        ([1, 2, 3], SubgroupSpec("kv", shards=2, min_size=2), "needs 2 shard"),
        ([1, 2], SubgroupSpec("x", members=((1, 9),), min_size=2), r"missing \[9\]"),
        ([1, 2], SubgroupSpec("x", senders=((7,),)), "designated senders"),
    ],
)
def test_a_layout_the_view_cannot_provision_is_a_clear_error(view, spec, message):
    with pytest.raises(LayoutError, match=message):
        allocate(view, [spec])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mode": "fast"}, "unknown mode"),
        ({"shards": 2, "mode": ("ordered",)}, "1 modes for 2 shards"),
        ({"min_size": 3, "max_size": 2}, "max_size"),
        ({"members": ((1, 1),)}, "listed twice"),
    ],
)
def test_inconsistent_specs_are_rejected_at_declaration(kwargs, message):
    with pytest.raises(LayoutError, match=message):
        SubgroupSpec("x", **kwargs)


def test_two_subgroups_with_one_name_are_rejected():
    with pytest.raises(LayoutError, match="share a name"):
        allocate([1], [SubgroupSpec("x"), SubgroupSpec("x")])
