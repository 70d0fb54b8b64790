"""The Multi-Paxos member runtime: one process per acceptor, driving `smr.core.multipaxos`.

This module owns a member of a cluster whose configuration says `protocol = "multipaxos"`: the
classic protocol beside the default (virtual synchrony), on the same transports, client port,
state machines and log files, so that `smr bench compare` isolates the protocol. The members are
the configuration's, fixed (proposers, acceptors and learners all; node index = rank of the id),
and one subgroup of one durable shard is replicated (`config._check_multipaxos`).

Each pass of the loop takes in what the transport's poll brought (peer messages, client
requests), ticks the core, then executes its `PaxosReady`:

1. `persist`: promises and votes go to the member's acceptor log (`smr.runtime.paxos_log`) and
   are fsynced once for the whole pass (group commit) **before** any message of that ready
   leaves: a 1b or a 2b announces a promise or a vote, which a restarted acceptor must keep;
2. `sends` through the transport's data channel;
3. `apply`: chosen values in slot order into the hosted state machine (`smr.runtime.hosted`:
   the client envelope makes a retried command apply once), answering the clients that wait at
   this member; a `Restore` replaces the state by a peer's snapshot;
4. `snapshot_wanted`: the state is snapshotted into the acceptor log, and the votes below it go.

Clients speak the same protocol as with the default (`smr.runtime.protocol`): a command goes to
the leader (a follower answers with a redirect to the member it believes leads, or asks to retry
shortly while no leader is known); it is answered with the leader's result once chosen and
applied there (version = slot + 1). A linearizable read is ordered through the log as a read
marker (a slot, no state change) and answered when the leader applies it; a sequential read is
answered from the member's applied state once it has applied the client's version. A leader
that loses its ballot fails what waits at it with a redirect: the client sends the same
(client, seq) again, and the hosted sessions answer a command chosen twice from the first
result. Status answers carry the members' addresses and the leader.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from smr.core.errors import UsageError
from smr.core.multipaxos import (
    VALUE_BYTES_MAX,
    Apply,
    PaxosConfig,
    PaxosNode,
    PaxosReady,
    Restore,
)
from smr.log import LogError
from smr.log.fs import FileSystem, OsFileSystem
from smr.runtime import protocol
from smr.runtime.clients import ClientServer
from smr.runtime.config import ClusterConfig
from smr.runtime.hosted import ENVELOPE, ENVELOPE_MAGIC, Hosted, wrap
from smr.runtime.node import EXIT_DISK, NodeExit, json_logger
from smr.runtime.paxos_log import AcceptorLog
from smr.transport.base import Address, Transport
from smr.transport.tls import CLIENT_PORT_SECRET

# A chosen value: a kind byte, then a command (the leader's clock, then the client envelope and
# the operation) or a read marker (the token of the read waiting at the leader that sent it).
VALUE_COMMAND = 1
VALUE_READ = 2
_TS = struct.Struct("<Q")
_TOKEN = struct.Struct("<Q")


def command_of(value: bytes) -> tuple[int, bytes] | None:
    """(timestamp ns, enveloped payload) of a chosen value that is a client's command; None for
    a read's token or a malformed value (which every member skips alike)."""
    if value[:1] == b"\x01" and len(value) >= 1 + _TS.size:
        return _TS.unpack_from(value, 1)[0], value[1 + _TS.size :]
    return None


INBOX_MAX = 100_000  # client requests queued for the loop
WAITING_MAX = 65_536  # commands and reads waiting for their slot at this member
REQUESTS_PER_PASS = 1024
SESSION_RESULTS_MAX = 8192  # the client's default window (4096) and room to spare
RETRY_MS = 20  # no leader known yet, or the leader's queue is full: try again after this
SWITCH_INTERVAL_S = 0.0005


class PaxosMember:
    """One member process of a Multi-Paxos cluster (see the module docstring)."""

    def __init__(
        self,
        config: ClusterConfig,
        me: int,
        *,
        transport: Transport | None = None,
        log: Callable[..., None] | None = None,
        fs: FileSystem | None = None,
        clock_ns: Callable[[], int] | None = None,
        wall_ns: Callable[[], int] | None = None,
        clients: Any = None,
        observe: Callable[[int, bytes | None], None] | None = None,
        paxos_class: type[PaxosNode] = PaxosNode,
    ):
        """For the simulator (`smr.sim.paxos`): `transport`, `fs`, `clock_ns` (the monotonic
        clock), `wall_ns` (the time a leader stamps on a command) and `clients` (the client
        port) replace the real ones, and `observe(slot, value)` sees every chosen value as it
        is applied (its checkers); `paxos_class` is the core's class (the simulator breaks a
        rule on purpose in a subclass, to see its checkers catch it)."""
        if config.protocol != "multipaxos":
            raise UsageError(f"{config.path}: protocol is {config.protocol}, not multipaxos")
        if me not in config.members:
            raise UsageError(f"member {me} is not listed in {config.path}")
        self.config = config
        self.me = me
        self.log = log or json_logger(me)
        self.fs = fs or OsFileSystem()
        self._clock_ns = clock_ns or time.monotonic_ns
        self._wall_ns = wall_ns or time.time_ns
        self._observe = observe
        self.ids = tuple(sorted(config.members))
        self.rank = {m: i for i, m in enumerate(self.ids)}
        self.dir = config.member_dir(me)
        self.fs.makedirs(self.dir)
        self.acceptor = AcceptorLog.open(
            os.path.join(self.dir, "paxos"),
            fs=self.fs,
            sync_policy=config.sync_policy,
            segment_bytes_max=config.segment_bytes_max,
        )
        recovered = self.acceptor.recovered()
        subgroup = config.subgroups[0]
        # A client's pipelined commands may be chosen out of their order around a leader change
        # (those failed at the old leader come back after later ones): the sessions keep as
        # many results per client as a client keeps outstanding, so a late one is still told
        # from a retry (the same at every member: it is part of the replicated state)
        self.hosted = Hosted(subgroup.machine(), session_results_max=SESSION_RESULTS_MAX)
        if recovered.snapshot:
            self.hosted.restore(recovered.snapshot)
        self.paxos = paxos_class(
            self.rank[me],
            PaxosConfig(
                n=len(self.ids),
                window_max=min(config.window_max, 4096),
                # as etcd's defaults go (heartbeat 100 ms, election 1 s): a member that stalls
                # on an fsync or a busy core must not start a duel for the ballot
                election_timeout_ns=int(config.peer_failed_ms * 1e6),
                election_stagger_ns=int(config.suspect_ms * 1e6),
                heartbeat_ns=int(config.suspect_ms / 4 * 1e6),
                # a snapshot (the state and its client sessions, fsynced) every 16384 commands
                # or 64 MiB of them: at 1024 they cost a fifth of a member's time
                chosen_retained_max=16_384,
                check_scans=False,  # the O(1) invariants only: the scans cost O(slots) per input
            ),
            recovered,
        )
        self.log(
            "start",
            role="multipaxos",
            members=list(self.ids),
            promised=recovered.promised,
            votes=len(recovered.votes),
            applied_slots=recovered.apply_next,
        )
        if transport is None:
            from smr.transport.auto import make_transport

            addresses = {m: Address(c.host, c.port) for m, c in config.members.items()}
            transport, why = make_transport(
                config.transport, me, addresses, config.transport_config(me)
            )
            self.log("transport", choice=why)
        self.transport = transport
        member = config.members[me]
        self.clients = clients or ClientServer(
            member.host,
            member.client_port,
            config.secret if config.tls is None else CLIENT_PORT_SECRET,
            me,
            self._on_request,
            frame_bytes_max=config.frame_bytes_max,
            log=self.log,
            tls=None if config.tls is None else config.tls.for_member(me),
        )
        self._inbox: deque[tuple[int, Any]] = deque()
        # (client, seq) -> (connection, request id) of commands waiting here for their slot
        self._commands: dict[tuple[int, int], tuple[int, int]] = {}
        # read token -> (connection, request id, query payload)
        self._reads: dict[int, tuple[int, int, bytes]] = {}
        self._next_token = 1
        # values taken from clients, in order, not yet in the core's queue (it is full); with
        # `_commands` and `_reads` at most WAITING_MAX
        self._backlog: deque[bytes] = deque()
        self._leading = False
        self._failed: set[int] = set()  # peers the transport reported failed, until relinked
        self._stopping = False
        self.exit_reason = ""

    # -- the transport's handler --------------------------------------------------------------

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        pass  # Multi-Paxos uses the data channel only

    def on_data(self, source: int, payload: bytes) -> None:
        peer = self.rank.get(source)
        if peer is None or peer == self.paxos.id:
            self.log("peer-unknown", peer=source)
            return
        self.paxos.on_message(peer, bytes(payload))

    def on_link_up(self, peer: int) -> None:
        self._failed.discard(peer)  # (the protocol itself retransmits on its heartbeat)

    def on_peer_failed(self, peer: int) -> None:
        # the protocol replaces a silent leader on its election timeout; meanwhile clients are
        # not sent to it
        self._failed.add(peer)

    # -- the loop -----------------------------------------------------------------------------

    def _on_request(self, conn_id: int, request: Any) -> None:
        if len(self._inbox) >= INBOX_MAX:
            self.clients.respond(
                conn_id,
                protocol.Response(request.id, False, error="member busy", retry_ms=RETRY_MS),
            )
            return
        self._inbox.append((conn_id, request))

    def start(self) -> None:
        self.transport.start(self)
        self.clients.attach(self.transport)
        self.log("listening", client_port=self.config.members[self.me].client_port)

    def run(self) -> int:
        """Run until stopped (SIGTERM/SIGINT or `stop()`); return the exit status."""
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.start()
        code = 0
        try:
            while not self._stopping:
                self.step()
        except NodeExit as e:
            self.exit_reason = str(e)
            self.log("exit", reason=str(e))
            code = e.code
        finally:
            self.clients.stop()
            self.transport.close()
            self.acceptor.close()
            self.log("stopped", reason=self.exit_reason or "stopped")
        return code

    def stop(self) -> None:
        self._stopping = True
        self.transport.wake()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def step(self) -> None:
        """One pass: poll (peer messages and client requests), tick, take requests, then carry
        out what the core asks for until it asks for nothing."""
        wait_s = 0.0 if self._inbox else self.paxos.config.heartbeat_ns / 4e9
        self.transport.poll(wait_s)
        self.paxos.tick(self._clock_ns())
        self._take_requests()
        self._feed()
        self._drain()
        if self._backlog and self.paxos.leading:
            self._feed()  # slots chosen in this pass made room in the leader's queue
            self._drain()
        if self._leading and not self.paxos.leading:
            self._lost_leadership()
        self._leading = self.paxos.leading
        self.clients.flush()

    def _feed(self) -> None:
        """Move what waits here into the core's queue, in arrival order, while it takes them
        (a client's pipelined commands keep their order: a retry after a full queue would
        reach the hosted sessions after later ones, too old to tell)."""
        backlog, paxos = self._backlog, self.paxos
        while backlog and paxos.submit(backlog[0]):
            backlog.popleft()

    def _drain(self) -> None:
        paxos = self.paxos
        while True:
            ready = paxos.ready()
            if ready:
                self._execute(ready)
            paxos.advance(ready)  # (an empty one too: no input may come before it)
            if ready.snapshot_wanted is not None:
                self._snapshot(ready.snapshot_wanted)  # an input: only after the advance
            if not ready:
                return

    def _execute(self, ready: PaxosReady) -> None:
        if ready.persist:
            try:
                self.acceptor.persist(ready.persist)
            except (OSError, LogError) as e:
                # what reached the disk is unknown: never answer from it
                raise NodeExit(f"member {self.me}: the acceptor log failed: {e}", EXIT_DISK) from e
        for peer, data in ready.sends:
            self.transport.send(self.ids[peer], data)
        for item in ready.apply:
            if type(item) is Apply:
                self._apply(item.slot, item.value)
            else:
                assert isinstance(item, Restore)
                self.hosted.restore(item.state)
                self.log("restored", slot=item.slot, bytes=len(item.state))
        for peer, why in ready.misbehaved:
            self.log("peer-misbehaved", peer=self.ids[peer], reason=why)

    def _snapshot(self, wanted: int) -> None:
        """The core keeps too many chosen values: the state (every slot below `slot` applied,
        as far as this member applied, at or past `wanted`) goes to the acceptor log, durably,
        and the core may then trim its votes below it."""
        slot = self.paxos.apply_next  # what the hosted state holds: everything applied so far
        assert slot >= wanted, (slot, wanted)
        state = self.hosted.snapshot()
        try:
            self.acceptor.save_state(slot, state)
        except (OSError, LogError) as e:
            raise NodeExit(f"member {self.me}: the acceptor log failed: {e}", EXIT_DISK) from e
        self.paxos.snapshot_taken(slot, state)

    def _apply(self, slot: int, value: bytes | None) -> None:
        if self._observe is not None:
            self._observe(slot, value)
        if value is None:
            return  # a no-op filling a gap
        kind = value[:1]
        version = slot + 1
        command = command_of(value)
        if command is not None:
            ts, payload = command
            result = self.hosted.apply(payload, version, ts)
            if self._commands and len(payload) >= ENVELOPE.size and payload[0] == ENVELOPE_MAGIC:
                _, client, seq = ENVELOPE.unpack_from(payload)
                waiting = self._commands.pop((client, seq), None)
                if waiting is not None:
                    conn_id, request_id = waiting
                    self.clients.respond(
                        conn_id,
                        protocol.Response(
                            request_id, True, version=version, results={self.me: result}
                        ),
                    )
        elif kind == b"\x02" and len(value) == 1 + _TOKEN.size:
            (token,) = _TOKEN.unpack_from(value, 1)
            read = self._reads.pop(token, None)
            if read is not None:
                conn_id, request_id, query = read
                self.clients.respond(
                    conn_id,
                    protocol.Response(
                        request_id,
                        True,
                        version=self.hosted.version,
                        value=self.hosted.query(query),
                    ),
                )
        else:
            # chosen by the group, so skipped alike at every member
            self.log("value-malformed", slot=slot, bytes=len(value))

    def _lost_leadership(self) -> None:
        """The ballot went to another proposer: what waited here may never be chosen in this
        ballot. The clients send it again to the new leader (a command chosen after all is
        answered there from the hosted sessions)."""
        leader = self._leader()
        redirect = [leader] if leader is not None and leader != self.me else []
        why = f"member {self.me} is no longer the multipaxos leader"
        for conn_id, request_id in self._commands.values():
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request_id, False, error=why, redirect=redirect, retry_ms=RETRY_MS
                ),
            )
        for conn_id, request_id, _ in self._reads.values():
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request_id, False, error=why, redirect=redirect, retry_ms=RETRY_MS
                ),
            )
        self._commands.clear()
        self._reads.clear()
        self._backlog.clear()
        self.log("leadership-lost", leader=leader)

    # -- client requests -----------------------------------------------------------------------

    def _leader(self) -> int | None:
        """The leader heard from lately (two heartbeats): clients are sent there; a leader not
        heard from since may be gone, and they wait for the election instead."""
        hint = self.paxos.leader_heard(2 * self.paxos.config.heartbeat_ns)
        if hint is None:
            return None
        leader = self.ids[hint]
        if leader != self.me and (leader in self._failed or not self.transport.linked(leader)):
            return None  # its link broke (a killed process): the election comes first
        return leader

    def _take_requests(self) -> None:
        budget = REQUESTS_PER_PASS
        while self._inbox and budget:
            budget -= 1
            conn_id, request = self._inbox.popleft()
            try:
                self._handle(conn_id, request)
            except Exception as e:  # a bug answering one client stops only that
                self.log("request-failed", error=repr(e), traceback=traceback.format_exc())
                self.clients.respond(
                    conn_id, protocol.Response(request.id, False, error=f"internal error: {e!r}")
                )

    def _not_leader(self, request: Any) -> protocol.Response:
        leader = self._leader()
        if leader is None:
            return protocol.Response(
                request.id,
                False,
                error=f"member {self.me}: no multipaxos leader is known yet",
                retry_ms=RETRY_MS,
            )
        return protocol.Response(
            request.id,
            False,
            error=f"member {self.me} is not the multipaxos leader (member {leader} is)",
            redirect=[leader],
        )

    def _handle(self, conn_id: int, request: Any) -> None:
        respond = self.clients.respond
        if isinstance(request, protocol.Status):
            respond(conn_id, protocol.Response(request.id, True, status=self.status()))
            return
        if isinstance(request, protocol.RemoveMember | protocol.Watch):
            what = "removing a member" if isinstance(request, protocol.RemoveMember) else "watches"
            respond(
                conn_id,
                protocol.Response(
                    request.id,
                    False,
                    error=f"protocol multipaxos does not support {what}: its membership is "
                    "fixed by the configuration",
                ),
            )
            return
        if (request.subgroup, request.shard) != (0, 0):
            respond(
                conn_id,
                protocol.Response(
                    request.id,
                    False,
                    error=f"protocol multipaxos replicates subgroup 0 shard 0 only, not "
                    f"subgroup {request.subgroup} shard {request.shard}",
                ),
            )
            return
        if isinstance(request, protocol.Query):
            self._query(conn_id, request)
            return
        assert isinstance(request, protocol.Command)
        if not self.paxos.leading:
            respond(conn_id, self._not_leader(request))
            return
        key = (request.client, request.seq)
        if key in self._commands or len(self._commands) + len(self._reads) >= WAITING_MAX:
            respond(
                conn_id,
                protocol.Response(request.id, False, error="member busy", retry_ms=RETRY_MS),
            )
            return
        value = (
            b"\x01" + _TS.pack(self._wall_ns()) + wrap(request.client, request.seq, request.payload)
        )
        if len(value) > VALUE_BYTES_MAX:
            respond(
                conn_id,
                protocol.Response(
                    request.id,
                    False,
                    error=f"a command of {len(request.payload)} bytes: protocol multipaxos takes "
                    f"values of at most {VALUE_BYTES_MAX} bytes with their headers",
                ),
            )
            return
        self._backlog.append(value)
        self._commands[key] = (conn_id, request.id)

    def _query(self, conn_id: int, request: protocol.Query) -> None:
        respond = self.clients.respond
        if request.consistency == protocol.READ_SEQUENTIAL:
            if self.hosted.version < request.min_version:
                respond(
                    conn_id,
                    protocol.Response(
                        request.id,
                        False,
                        error=f"member {self.me} has not applied version "
                        f"{request.min_version:#x} yet",
                        retry_ms=RETRY_MS,
                    ),
                )
                return
            value = self.hosted.query(request.payload)
            respond(
                conn_id,
                protocol.Response(request.id, True, version=self.hosted.version, value=value),
            )
            return
        if not self.paxos.leading:
            respond(conn_id, self._not_leader(request))
            return
        if len(self._commands) + len(self._reads) >= WAITING_MAX:
            respond(
                conn_id,
                protocol.Response(request.id, False, error="member busy", retry_ms=RETRY_MS),
            )
            return
        token = self._next_token
        self._next_token += 1
        self._backlog.append(b"\x02" + _TOKEN.pack(token))
        self._reads[token] = (conn_id, request.id, bytes(request.payload))

    def status(self) -> dict[str, Any]:
        subgroup = self.config.subgroups[0]
        return {
            "member": self.me,
            "protocol": "multipaxos",
            "status": "active",
            "role": "leader" if self.paxos.leading else "follower",
            "leader": self._leader(),
            "epoch": 1,  # the membership never changes
            "members": list(self.ids),
            "ballot": self.paxos.ballot,
            "promised": self.paxos.promised,
            "applied_slots": self.paxos.apply_next,
            "pid": os.getpid(),
            "shards": [
                {
                    "subgroup": 0,
                    "shard": 0,
                    "type": subgroup.machine.__name__,
                    "mode": "durable",
                    "version": self.hosted.version,
                    "applied": self.hosted.applied,
                    "members": list(self.ids),
                    "ready": True,
                }
            ],
            "addresses": [
                {
                    "id": m.id,
                    "host": m.host,
                    "port": m.port,
                    "client_port": m.client_port,
                    "metrics_port": m.metrics_port,
                }
                for m in sorted(self.config.members.values(), key=lambda m: m.id)
            ],
            "retired": [],
            "views": [[1, list(self.ids)]],
        }
