"""A durable shard whose only holder of state fails during a state transfer (docs/protocol.md,
"View change", step 8): the group must get the state back from that holder's disk when it
restarts, and must stay blocked (safely) when that disk is gone."""

from smr.core.views import ViewBlocked, ViewInstalled
from smr.log import Log
from smr.sim import SimConfig, invariants
from smr.sim.harness import LOG_CONFIG, MS, Checker, Simulation


class CutOffProvider(Checker):
    """Member 5 crashes at 40 ms; view 2 is [1, 2, 3, 4] and shard (0, 1) of the kv layout is
    [3, 4]: 4 holds its state, 3 is new to it and waits. As 4 installs view 2 it is cut off
    (its state frame is lost) and crashes; it restarts from its disk 60 ms later. With `wipe`
    its disk is gone by then (it restarts as a newcomer, with nothing to offer)."""

    def __init__(self, wipe: bool):
        self.wipe = wipe
        self.cut = False
        self.wiped = False

    def after_ready(self, sim, node, ready):
        if self.cut or node.id != 4:
            return
        if any(isinstance(e, ViewInstalled) and e.epoch == 2 for e in ready.events):
            self.cut = True
            shard = next(s for s in node.replica.shards if (s.subgroup, s.shard) == (0, 1))
            assert shard.members == (3, 4)
            for m in sim.nodes:
                if m != 4:
                    sim._set_link(4, m, False)
            sim.schedule(sim.now_ns + 1, "crash", 4)
            sim.schedule(sim.now_ns + 60 * MS, "restart", 4)

    def after_step(self, sim, node):
        n4 = sim.nodes[4]
        if self.wipe and self.cut and not n4.alive and not self.wiped:
            # The disk is replaced: nothing of the member's directory is left. A founder on an
            # empty disk would found view 1 again (docs/protocol.md, "Known weaknesses"); the
            # operator starts it as a newcomer, which a `.previous` directory tells the Node.
            self.wiped = True
            member_dir = sim.cluster.member_dir(4)
            n4.disk.lose(member_dir)
            n4.disk.makedirs(member_dir + ".previous")
            n4.appended, n4.synced = {}, {}


def _run(wipe: bool):
    sim = Simulation(
        SimConfig(nodes=5, seed=7, workload="kv"),
        checkers=[*invariants.default_checkers(), CutOffProvider(wipe)],
    )
    sim.schedule(40 * MS, "crash", 5)
    result = sim.run()
    blocked = [e for n in sim.nodes.values() for _, e in n.events if isinstance(e, ViewBlocked)]
    return sim, result, blocked


def test_the_only_holder_restarting_from_its_disk_provides_the_lost_state():
    sim, result, blocked = _run(wipe=False)
    assert result.ok, result.violation
    # the group was blocked on the shard, then the restarted holder provided it as a joiner
    assert any("shard 1 would lose its state" in e.reason for e in blocked)
    assert result.stats.get("state_from_joiner") == 1
    assert any("joiner 4 provides shard (0, 1)" in text for _, text in sim.timeline)


def test_without_the_holders_disk_the_group_stays_blocked_and_safe():
    _, result, blocked = _run(wipe=True)
    # nothing else holds the state: no view may go on without it, and nothing is made up
    assert result.violation is not None and result.violation.invariant == "frontier.live"
    assert any("shard 1 would lose its state" in e.reason for e in blocked)
    assert not result.stats.get("state_from_joiner")


class LyingDisk(CutOffProvider):
    """As above, but 4's disk loses all but the first entry of the shard while it is down, though
    it had synced them (a disk that lies): the state it would provide misses acknowledged
    entries, which the checkers must catch."""

    def __init__(self):
        super().__init__(wipe=False)
        self.lied = False

    def after_step(self, sim, node):
        n4 = sim.nodes[4]
        if self.cut and not n4.alive and not self.lied:
            self.lied = True
            log = Log.open(sim._shard_dir(n4, (0, 1)), LOG_CONFIG, fs=n4.disk)
            first = log.versions()[0]
            log.truncate_after(first)
            log.close()
            n4.appended[(0, 1)] = [first]
            n4.synced[(0, 1)] = first


def test_a_provided_state_missing_acknowledged_entries_is_caught():
    sim = Simulation(
        SimConfig(nodes=5, seed=7, workload="kv"),
        checkers=[*invariants.default_checkers(), LyingDisk()],
    )
    sim.schedule(40 * MS, "crash", 5)
    result = sim.run()
    assert result.violation is not None
    assert result.violation.invariant == "transfer.durability", result.violation
