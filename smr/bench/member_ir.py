"""The members' own cost per command, apart from sockets and the client library: `python -m
smr.bench.member_ir --commands N` runs three simulated members (`smr.sim.members`: the code a
member process runs, `smr.runtime.node.Node`, on the simulated network and disk) and hands the
first of them N BlobLog appends of 100 bytes from one client, `--window` outstanding, until each
is answered with every replica's result. Run under `valgrind --tool=callgrind`, the process's
instructions, less those of a run of fewer commands, are what the three members spend per command
(the stream, the table, predicates, the executor, the hosted apply, replies, watches history,
the log in `durable` mode) plus the simulated network's small share: a count the machine's load
does not move, to compare two versions of the member's code (`sh native/callgrind_member.sh`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from smr.runtime import protocol
from smr.runtime.config import load, write_local
from smr.sim.members import SimMembers
from smr.statemachines import BlobLog

PAYLOAD = b"\x5a" * 100
CLIENT_ID = 7


def run(commands: int, window: int, mode: str, seed: int = 1) -> int:
    """Drive `commands` appends through member 1; returns how many were answered ok."""
    with tempfile.TemporaryDirectory() as directory:
        config = load(
            write_local(
                directory, nodes=3, types=("smr.statemachines:BlobLog",), mode=mode, transport="tcp"
            )
        )
        sim = SimMembers(config, seed)
        sim.run_until(lambda: all(n.replica.status == "active" for n in sim.nodes.values()))
        operation = BlobLog.encode_command("append", PAYLOAD)
        clients = sim.clients[1]
        conns: list[int] = []
        answered = ok = 0
        seq = 0
        while answered < commands:
            while seq < commands and seq - answered < window:
                seq += 1
                conns.append(
                    sim.request(
                        1,
                        lambda rid, s=seq: protocol.Command(
                            rid, 0, 0, CLIENT_ID, s, operation, protocol.REPLIES_ALL
                        ),
                    )
                )
            sim.step()
            while answered < len(conns) and conns[answered] in clients.responses:
                response = clients.responses.pop(conns[answered])[0]
                ok += response.ok and len(response.results) == 3
                answered += 1
        return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--mode", choices=("ordered", "durable"), default="ordered")
    args = parser.parse_args(argv)
    ok = run(args.commands, args.window, args.mode)
    print(f"{ok} of {args.commands} answered ok with 3 results")
    return 0 if ok == args.commands else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
