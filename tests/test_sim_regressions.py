"""Seeds that once failed, kept as regression tests (each comment says what broke)."""

import pytest

from smr.sim import SimConfig, run_seed

CASES = [
    # found when the simulator began to run the node runtime: a member's commands in two shards
    # with the same version waited for late results under one key, so one was never answered
    # (live.answered; tests/test_late_replies.py); and a survivor's late result that arrived
    # before its sender installed the next view was taken for a frame of an unknown type
    # (peer-protocol)
    (4, 2, "bytes", "crash,restart,partition,join,delay"),
    (5, 5, "kv", "crash,restart,partition,join,leave,delay,total"),
    # a view-change leader brought back two suspected members it had heard lately (one's last
    # writes were still in flight), but both had restarted from their disks meanwhile and dropped
    # the join acceptance (they were restarting, not joining); the providers had sent their state
    # away and the group blocked on the shard forever. A restarting member now takes the
    # acceptance as a group found running.
    (5, 44, "bank", "crash,delay,join,partition,restart"),
    # a member still waiting for a shard's state skips delivering the ragged trim (the state it
    # will get includes it), but counted its own messages below the trim as not delivered and
    # sent them again in the next epoch: the others delivered one twice (multicast.agreement)
    (5, 618, "kv", "crash,delay,join,partition,restart"),
    # a linearizable read of a durable shard showed an entry delivered but not yet persisted at
    # every member; a total failure then cut it away and a later read did not see it
    # (reads.linearizable). Reads of durable shards now wait for the persistence frontier.
    (5, 5, "kv", "crash,delay,join,partition,restart,total"),
    # a joiner confirmed a linearizable read before its state transfer arrived (its deliveries
    # of the new epoch counted from 0) and read the empty state (reads.linearizable)
    (5, 21, "kv", "crash,restart,partition,join,delay"),
    # an isolated member's first suspicion, pushed as the partition healed, made the majority
    # suspect a healthy member and the whole group halted (suspicions now need credibility)
    (3, 62, "frontier", "delay,partition"),
    (3, 47, "frontier", "delay,partition"),
    # members re-suspected at install members they had suspected in the previous view
    (5, 37, "frontier", "delay,partition,break,crash"),
    # the fault injector crashed a member of a view still being changed (majority lost)
    (5, 105, "frontier", "delay,partition,break,crash"),
    # a joiner's suspicion clock started at a stale time; a lost join acceptance
    (5, 16, "frontier", "delay,partition,crash,restart,join,leave"),
    (5, 42, "frontier", "delay,partition,crash,restart,join,leave"),
    # a member excluded by the decided view applied a trim above what it had received
    (5, 9, "bytes", "crash,restart,join,leave,delay,partition"),
    # a state transfer frame that arrived before the join acceptance was dropped, and the
    # member later started the shard from an empty state
    (5, 2, "bank", "crash,restart,partition,join,delay"),
    # a view-change leader outside a shard planned its state transfer from a stale ready flag
    # (pushed to the shard's members only) and blocked the view forever
    (5, 88, "kv", "crash,restart,partition,join,delay"),
    (5, 111, "kv", "crash,restart,partition,join,delay"),
    (5, 128, "bank", "crash,restart,partition,join,delay"),
    # the group lost its majority after a short partition (see docs/protocol.md, "Known
    # weaknesses"); it passes since the ready flags reach every member
    (5, 48, "bank", "crash,restart,partition,join,delay"),
    # a second total failure struck while the only members of a shard still waited for the state
    # the first restart planned: the restart waited forever for a holder among them (the state
    # was on the provider, outside the shard; now every member of the view is waited for)
    (5, 41, "kv", "crash,restart,partition,join,delay,total"),
    # acceptors had promised a later restart instance than any summary showed (nothing accepted
    # there); leaders kept preparing the lower one and were refused forever
    (5, 154, "bank", "crash,restart,partition,join,delay,total"),
    # a durable shard's only holder of state failed while a newcomer waited for its snapshot;
    # it came back as a joiner with its logs dropped and every next view was blocked ("shard 1
    # would lose its state"). A member restarting from its disk now offers the state its logs
    # hold, and the group takes it from there. (Restarted members now always start from their
    # disks, so these seeds' schedules changed; tests/test_sim_state_holder.py scripts the case.)
    (5, 30, "kv", "crash,delay,join,partition,restart,total"),
    (5, 149, "kv", "crash,delay,join,partition,restart,total"),
    (5, 109, "kv", "crash,delay,join,partition,restart,total"),
    (5, 139, "kv", "crash,delay,join,partition,restart,total"),
    (5, 162, "kv", "crash,delay,join,partition,restart,total"),
    (5, 74, "bank", "crash,restart,partition,join,leave,delay,total"),
    # seeds of random campaigns in which a joiner provided a lost shard's state from its log
    # (stats["state_from_joiner"] when they were added)
    (5, 26, "kv", "crash,restart,partition,join,delay"),
    (4, 80, "kv", "crash,restart,partition,join,delay,total"),
    # a member that left during view 7's change to view 8 (it logged the proposal, never
    # installed view 8) restarted from its disk after a total failure and led the restart: the
    # promises showed view 8 installed, with the same epoch and members as its proposal, so it
    # kept the proposal's trim bound and cut the bank's shard below what view 8 had persisted
    (5, 9, "bank", "crash,delay,join,leave,partition,restart,total"),
    # The liveness failures of the 2000-seed campaigns of 2026-12-01 (`smr sim --nodes 5 --seeds
    # 1-2000 --faults crash,restart,partition,join,delay`, kv and bank); none was a safety one.
    # The suspicion cascade: a member isolated for a hair under the timeout suspected, just after
    # the heal, the peers whose first writes had not arrived yet, and the majority (which heard
    # them fine) adopted it; every member ended up seeing half the view (4-node 290) or an ordered
    # shard's only holder was suspected and every next view was refused (bank 820, 1179, 1632).
    # Silent peers are now suspected together, and a peer heard again after a long silence
    # restarts the others' clocks (views.py, "Detect").
    (4, 290, "frontier", "delay,partition"),
    (5, 820, "bank", "crash,delay,join,partition,restart"),
    (5, 1179, "bank", "crash,delay,join,partition,restart"),
    (5, 1632, "bank", "crash,delay,join,partition,restart"),
    # every member halted after the faults stopped, and none restarted: a halted process now
    # restarts from its disk after faults stop too, as the node runtime does (`rejoin`)
    (5, 1023, "kv", "crash,delay,join,partition,restart"),
    # a durable shard's planned provider (a survivor, outside the shard in the new view) crashed
    # right after installing the view, before the newcomer had the state; it restarted from an
    # intact disk and its offer was not vouched for (only joiner providers were)
    (5, 308, "kv", "crash,delay,join,partition,restart"),
    # as above, but the provider's log of the shard was empty (nothing had been delivered in
    # it), so it offered nothing: a durable shard held with no log is offered at version 0
    (5, 777, "kv", "crash,delay,join,partition,restart"),
    # the fault injector flipped a byte on the disk of a durable shard's only holder (a newcomer
    # still waited for the state), so the state was gone and the group rightly stalled; a crash
    # no longer corrupts a disk that may hold the only copy (test_sim_state_holder scripts the
    # stall). With an intact disk, these then needed the provider's offer vouched for (308).
    (5, 454, "kv", "crash,delay,join,partition,restart"),
    (5, 874, "kv", "crash,delay,join,partition,restart"),
    # views blocked with joiners waiting for a shard's state; they pass with the fixes above
    # (659 needs both the injector's and the offer's; their schedules changed since)
    (5, 659, "kv", "crash,delay,join,partition,restart"),
    (5, 1997, "kv", "crash,delay,join,partition,restart"),
    # found by the campaign on those fixes: the side [1, 6] of a partition longer than the
    # timeout; 6 suspected the other side at once but pushed it in three writes, so 1, merging
    # one write at a time, saw a majority for a moment and proposed a view with 6 (which then
    # halted) as the partition healed; the majority acknowledged it and a later leader had to
    # adopt it, and every member halted. (Member 1, which had found that view's group running,
    # then asked to join forever while the others restarted and needed it for a majority: see
    # docs/protocol.md, "Known weaknesses".) Now a member's suspicions go out in one write.
    (5, 458, "bank", "crash,delay,join,partition,restart"),
    # a joiner sent back to the restart while its JOIN_OK was on the way left the view it had
    # just entered, and a shard it alone was to hold had no holder (a reverted attempt at the
    # weakness above)
    (5, 41, "bank", "crash,delay,join,partition,restart"),
    (5, 80, "bank", "crash,delay,join,partition,restart"),
    (5, 142, "bank", "crash,delay,join,partition,restart"),
    # a total restart decided a view in which member 5 alone held a durable shard, and 5 crashed
    # before installing it: the others could not go on without the shard's state, which 5's
    # log (and 4's) held exactly, but an offer counted only for a shard with a member waiting
    # for its state. A member whose offer shows it never installed the view now counts as one.
    # With that, the restarting joiners halted on each other's PREPAREs for good: a joiner now
    # halts only when the view it found running is what restarts.
    (5, 1061, "kv", "break,crash,delay,join,leave,partition,restart,total"),
    # The reconfigure campaign: removals asked for at two members at once (each checked alone)
    # would together have left 2 of 5 members of the view alive, with a crash not yet
    # suspected; a removal of a joiner being let in at the same time left a view that could
    # not hold a shard's state. Every next view was refused (ViewBlocked), for good. The
    # leader now declines the last asked for until the view works, and tells the askers.
    (5, 1565, "kv", "break,crash,delay,join,leave,partition,reconfigure,restart,total"),
    (5, 1884, "kv", "break,crash,delay,join,leave,partition,reconfigure,restart,total"),
]


def _passes(nodes: int, seed: int, workload: str, faults: str) -> None:
    config = SimConfig(
        nodes=nodes, seed=seed, workload=workload, faults=frozenset(faults.split(","))
    )
    result = run_seed(config)
    assert result.ok, f"{result.violation}; reproduce with: {config.command()}"


@pytest.mark.parametrize("nodes,seed,workload,faults", CASES)
def test_regression_seed(nodes, seed, workload, faults):
    _passes(nodes, seed, workload, faults)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="open: a joiner's offer whose log reaches into the epoch is refused even when a member "
    "waited for the shard's state throughout (docs/protocol.md, known weaknesses)",
)
def test_a_holder_that_restarts_as_a_joiner_after_logging_into_the_epoch_unblocks_the_group():
    # found by the kv campaign of 2026-12-08 (pre-existing since c56f5da changed the schedules):
    # view 5 gives durable shard 1 to (4, 5); 4 waits for its state, 5 crashes before providing
    # it and comes back as a joiner whose log of the shard ends at version 5 << 32 (inside epoch
    # 5), so `offer_mask` does not vouch for it and every next view is refused (`ViewBlocked`)
    _passes(5, 527, "kv", "break,crash,delay,join,leave,partition,restart,total")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="open: a shard's state with no live holder blocks every next view "
    "(docs/protocol.md, known weaknesses)",
)
@pytest.mark.parametrize("seed", [160, 497])
def test_bank_with_leaves_and_total_failures_keeps_a_holder_of_every_shard(seed):
    # found by the bank campaign of 2026-12-08 with leave and total among the faults (failing at
    # 7cbcc39 too): the view change refuses every next view, "subgroup KVStore shard 1 would
    # lose its state: no survivor of [...] holds it", while the members that could hold it wait
    # to join
    _passes(5, seed, "bank", "crash,delay,join,leave,partition,restart,total")
