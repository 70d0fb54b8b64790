"""Network partitions on loopback with iptables DROP rules, and their exact removal.

This module owns the firewall rules of a chaos run. Each member listens for its peers on its own
loopback address and port (127.0.0.2:p2, 127.0.0.3:p3, ...) and dials from its own address, so
cutting the link between two members is four rules in the OUTPUT chain (every loopback packet
passes it once): each direction of a connection to either member's peer port. The rules match the
members' addresses *and* peer ports, so nothing else on the machine (another cluster on the same
addresses, a client) is touched, and each carries a comment naming the run.

`Partitioner.heal()` deletes exactly the rules it added, one by one, and is called in a `finally`:
a run that fails, or is interrupted, leaves no rule behind. The command runner is injected, so a
test checks the rules and the cleanup without a firewall.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable

Runner = Callable[[list[str]], None]
CHAIN = "OUTPUT"
IPTABLES_TIMEOUT_S = 10.0  # one iptables call never blocks a run longer (the xtables lock)


class PartitionUnavailable(Exception):
    """Partitions cannot be made here; the message says why and what to do."""


def check_available() -> None:
    """Raise `PartitionUnavailable` unless iptables exists and this process is root."""
    if shutil.which("iptables") is None:
        raise PartitionUnavailable(
            "iptables is missing; install it (apt-get install iptables) or leave out "
            "--faults partition"
        )
    if os.geteuid() != 0:
        raise PartitionUnavailable(
            "partitions need root (iptables rules); run as root or leave out --faults partition"
        )


def run_iptables(args: list[str]) -> None:
    """The real runner: `iptables -w ARGS`, bounded in time; a failure raises with its message."""
    done = subprocess.run(
        ["iptables", "-w", "5", *args],
        capture_output=True,
        text=True,
        timeout=IPTABLES_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {done.stderr.strip()}")


def link_rules(a: tuple[str, int], b: tuple[str, int], comment: str) -> list[list[str]]:
    """The rule specifications (without -A/-D) that cut the peer link between members `a` and
    `b`, each given as (address, peer port): both directions of a connection to b's port and of
    one to a's."""
    rules = []
    for (src, _), (dst, dport) in ((a, b), (b, a)):
        # the dialer's packets to the listener, and the listener's answers
        rules.append(["-s", src, "-d", dst, "-p", "tcp", "--dport", str(dport)])
        rules.append(["-s", dst, "-d", src, "-p", "tcp", "--sport", str(dport)])
    return [[*r, "-m", "comment", "--comment", comment, "-j", "DROP"] for r in rules]


def cut_pairs(side: Iterable[int], members: Iterable[int]) -> list[tuple[int, int]]:
    """Every pair (one member of `side`, one of the rest), in order: the links a partition cuts."""
    inside = sorted(set(side))
    outside = sorted(set(members) - set(inside))
    return sorted((min(a, b), max(a, b)) for a in inside for b in outside)


class Partitioner:
    """Cuts and heals links between members given as {id: (address, peer port)}."""

    def __init__(
        self,
        addresses: dict[int, tuple[str, int]],
        *,
        run_id: str,
        runner: Runner = run_iptables,
    ) -> None:
        assert len({a for a, _ in addresses.values()}) == len(addresses), (
            "each member needs its own address for a per-pair rule"
        )
        self.addresses = dict(addresses)
        self.comment = f"smr-chaos:{run_id}"
        self._runner = runner
        self.installed: list[list[str]] = []  # rule specs in force, in the order added

    def isolate(self, side: Iterable[int]) -> list[tuple[int, int]]:
        """Cut every link between `side` and the other members; returns the pairs cut."""
        pairs = cut_pairs(side, self.addresses)
        for a, b in pairs:
            self.cut(a, b)
        return pairs

    def cut(self, a: int, b: int) -> None:
        for rule in link_rules(self.addresses[a], self.addresses[b], self.comment):
            # recorded before it is added: a rule that went in just before a failure (a
            # timeout) is still deleted by heal(), where deleting a missing one is harmless
            self.installed.append(rule)
            self._runner(["-I", CHAIN, *rule])

    def heal(self) -> list[str]:
        """Delete every rule this partitioner added, newest first; returns the errors of the ones
        that could not be deleted (already gone, say). Never raises: it runs in `finally`."""
        errors = []
        while self.installed:
            rule = self.installed.pop()
            try:
                self._runner(["-D", CHAIN, *rule])
            except Exception as e:
                errors.append(str(e))
        return errors
