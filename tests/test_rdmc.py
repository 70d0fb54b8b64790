"""Properties of the RDMC block schedules (smr.core.rdmc), for every schedule, n and k."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smr.core.rdmc import SCHEDULES, schedule, step_bound


def check(s) -> None:
    n, k = s.members, s.blocks
    have = [set(range(k))] + [set() for _ in range(n - 1)]
    for i, step in enumerate(s.steps):
        senders = [t.sender for t in step]
        receivers = [t.receiver for t in step]
        assert len(set(senders)) == len(senders), f"a member sends twice in step {i}"
        assert len(set(receivers)) == len(receivers), f"a member receives twice in step {i}"
        for t in step:
            assert t.step == i
            assert t.block in have[t.sender], f"{t} relays a block its sender lacks"
            assert t.block not in have[t.receiver], f"{t} sends a block twice"
            assert t.receiver != 0, "nobody sends to the sender"
        for t in step:
            have[t.receiver].add(t.block)
    assert all(h == set(range(k)) for h in have), "a receiver misses a block"
    # the per-member views agree with the steps
    for r in range(n):
        assert sorted(b for b, _ in s.incoming(r)) == ([] if r == 0 else list(range(k)))
        assert len(s.outgoing(r)) == sum(1 for step in s.steps for t in step if t.sender == r)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SCHEDULES), st.integers(2, 20), st.integers(1, 70))
def test_every_receiver_gets_every_block_once_from_a_holder(name, n, k):
    s = schedule(name, n, k)
    check(s)
    if name == "binomial" and n & (n - 1):
        assert s.total_steps <= step_bound(name, n, k)
    else:
        assert s.total_steps == step_bound(name, n, k)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
@pytest.mark.parametrize("k", [1, 2, 3, 7, 64])
def test_binomial_takes_k_plus_log2_n_minus_1_steps_for_powers_of_two(n, k):
    assert schedule("binomial", n, k).total_steps == k + n.bit_length() - 2


@pytest.mark.parametrize("n", [3, 5, 6, 7, 9, 12, 15, 17, 31])
def test_binomial_beats_the_chain_for_long_messages(n):
    k = 256
    b = schedule("binomial", n, k)
    check(b)
    assert b.total_steps <= k + (n - 1).bit_length()
    chain_steps = schedule("chain", n, k).total_steps
    assert b.total_steps < chain_steps if n >= 6 else b.total_steps <= chain_steps + 1


def test_a_member_sends_at_most_one_block_per_step_and_the_sender_injects_every_step():
    s = schedule("binomial", 8, 10)
    assert [s.send_at(0, t).block for t in range(10)] == list(range(10))
    assert s.receive_at(0, 3) is None


@pytest.mark.parametrize("bad", [("binomial", 1, 4), ("chain", 4, 0), ("ring", 4, 4)])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        schedule(*bad)
