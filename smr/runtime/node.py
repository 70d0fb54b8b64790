"""The node runtime: one process per member, driving the sans-I/O core with real I/O.

This module owns the member's event loop and its I/O: it feeds the replica what the transport
reports (table writes, data messages, link changes), the clock, client requests and log
completions, and runs the one executor (`smr.runtime.executor`, the same code the simulator
runs) with itself as the host:

1. log requests: metadata (views, proposals with their ragged trims) is replaced and fsynced at
   once; appends of durable shards go to a `GroupCommitWriter` per shard (a background thread
   that batches fsyncs) whose completions come back through a queue and a transport wake-up as
   `Replica.on_persisted`;
2. table writes and data messages through the transport (each epoch's table registered when its
   view is installed);
3. deliveries applied to the hosted state machines (`smr.runtime.hosted`);
4. answers to clients, state transfer snapshots sent and restored, views logged, and a halt
   ends this incarnation (the member rejoins, or the process exits with the reason).

Membership. The member's contact card (`smr.runtime.roster`: its host and ports) goes to its
replica, so a member that no configuration lists joins with its addresses, and every view's
roster carries every member's card. The node keeps an address book, the configured members
and the roster's cards, applied on every view (and from the recovered roster on a restart): the
transport learns each new address (`Transport.add_member`), restarts and joins contact every
member in it, and status answers list it, so that clients fail over to members their own file
does not list. A `RemoveMember` request asks the core to remove a member for good
(`Replica.remove`) and is answered once a view whose roster retires it is installed. A member
removed for good (`Halted.removed`) never rejoins: it records why in its metadata log
(`REMOVED_META`), exits with `EXIT_REMOVED`, and refuses to start again with the same words.

Threads: the loop thread owns the replica, the state machines and the client port
(`smr.runtime.clients`, whose sockets the transport's poll watches); the group-commit writers run
on their own threads and talk to the loop only through a queue and `Transport.wake()`. The loop
sleeps in `Transport.poll` until something arrives or the core's next deadline (a heartbeat, a
timeout).

Logs are structured: one JSON object per line on stderr (`t`, the wall clock; `mono`, the
monotonic clock; `member`, `event`, fields; see `json_logger`). The cluster secret never appears
in them.

Metrics (`smr.runtime.metrics`): counters and histograms are updated where things happen (one
counter increment and one histogram observation per answered command; the group-commit writers
hand their fsync durations over through a queue, like their completions); gauges are read from
the loop's state at each scrape. With a `metrics_port`, a `MetricsServer` answers `GET /metrics`
from the transport's poll, on the loop thread, with no thread of its own.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from smr.core.errors import UsageError, WindowFullError
from smr.core.multicast import Completed, PeerMisbehaved, SubmitFailed
from smr.core.pending import native_wanted
from smr.core.reads import ReadConfirmed, ReadFailed
from smr.core.ready import (
    Delivery,
    LogAppend,
    LogMeta,
    LogSnapshot,
    LogTruncate,
    Push,
    Ready,
    Send,
)
from smr.core.replica import (
    ACTIVE,
    HALTED,
    JOINING,
    FrontierReached,
    Replica,
    RestoreState,
    StateTransfer,
)
from smr.core.restart import Recovered
from smr.core.views import Halted, RemovalRefused, Roster, ViewBlocked, ViewInstalled
from smr.log import (
    GroupCommitWriter,
    Log,
    LogConfig,
    LogCorruptionError,
    LogWriterError,
    Record,
)
from smr.log.fs import FileSystem, OsFileSystem
from smr.recovery import perform, recover_member, replay
from smr.runtime import protocol
from smr.runtime.clients import ClientServer
from smr.runtime.config import ClusterConfig, ConfigError, MemberConfig, with_member
from smr.runtime.executor import Executor
from smr.runtime.hosted import RESULT_ERROR, SNAPSHOT_FORMAT, Hosted, operation_of, wrap
from smr.runtime.metrics import MEMBER_STATUSES, MetricsServer, NodeMetrics
from smr.runtime.roster import CardError, decode_card, encode_card
from smr.runtime.watches import Watches
from smr.transport.base import Address, Transport
from smr.transport.tls import CLIENT_PORT_SECRET

QUERY_WAIT_S = 5.0  # a query for a version not applied yet waits at most this long
SWITCH_INTERVAL_S = 0.0002
SHARD_DIR = re.compile(r"subgroup-(\d+)-shard-(\d+)")
INBOX_MAX = 100_000  # client requests queued for the loop
FSYNCS_MAX = 4096  # fsync durations handed over by the writers between two passes (older dropped)
BUSY_RETRY_MS = 5  # a client whose command found the submit queue full sends it again after this
REMOVALS_WAITING_MAX = 256  # RemoveMember requests waiting for their view
REMOVE_WAIT_S_MAX = 600.0  # a RemoveMember waits at most this long for its view, whatever it asks
# this member's own metadata, beside the core's (`LogMeta` names): its contact card (so a member
# no configuration lists restarts without its addresses on the command line), and why it was
# removed for good (so that it never starts again)
CARD_META = "runtime-card"
REMOVED_META = "runtime-removed"


_VERSION = attrgetter("version")  # of a Delivery
_PAYLOAD = attrgetter("payload")


class NodeExit(Exception):
    """The node stops; `code` is the process exit status and the message says why."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


EXIT_HALTED = 3  # halted, and `rejoin` is off
EXIT_DISK = 4  # a log write or fsync failed
EXIT_REMOVED = 5  # removed from the group for good: never rejoins, never starts again


class MemberRemoved(NodeExit):
    """The group removed this member for good (`smr cluster remove`, `Client.remove_member`), or
    refused its join because its id was removed: whatever the `rejoin` setting it never asks to
    join again, and a later start with the same data directory stops at once with the same
    reason. Ids are never reused: a new member takes a new id."""

    def __init__(self, me: int, reason: str):
        super().__init__(
            f"member {me} stops for good: {reason}; its id is never let in again: start a new "
            "member with a new id (smr cluster add) instead",
            EXIT_REMOVED,
        )
        self.reason = reason


class DiskFailed(NodeExit):
    """A write or fsync of this member's logs failed. The member stops at once and whatever the
    `rejoin` setting: a failed write or fsync is never retried, since what reached the disk is
    unknown (after an fsync error the kernel may drop the pages it could not write, and a retried
    fsync then succeeds over lost data). Nothing it had not reported durable was acknowledged:
    a durable command is answered only once every member of its shard persisted it. Restarted
    once the disk is fixed, the member recovers from what its disk holds and from its peers."""

    def __init__(self, me: int, what: str, error: BaseException):
        cause = error.__cause__ if isinstance(error, LogWriterError) and error.__cause__ else error
        super().__init__(
            f"member {me} stops: {what} failed ({cause!r}); a failed write or fsync is not "
            "retried. Fix the disk and start the member again: it recovers from its disk and "
            "its peers",
            EXIT_DISK,
        )


def json_logger(member: int, stream: Any = None) -> Callable[..., None]:
    """One JSON object per line: `t` (the wall clock, Unix seconds), `mono` (`time.monotonic()`
    in seconds: the clock a client's history is stamped with, comparable across the processes of
    one host, unlike `t`, which NTP may step), `member`, `event`, then the event's fields."""
    stream = stream or sys.stderr
    lock = threading.Lock()

    def log(event: str, **fields: Any) -> None:
        record = {
            "t": round(time.time(), 6),
            "mono": round(time.monotonic(), 6),
            "member": member,
            "event": event,
            **fields,
        }
        line = json.dumps(record, default=str)
        with lock:
            stream.write(line + "\n")
            stream.flush()

    return log


class Node:
    def __init__(
        self,
        config: ClusterConfig,
        me: int,
        *,
        transport: Transport | None = None,
        log: Callable[..., None] | None = None,
        fs: FileSystem | None = None,
        clock_ns: Callable[[], int] | None = None,
        clients: Any = None,
        writer: Callable[[Log, Callable[[int], None]], Any] | None = None,
        observe: Callable[[Ready], None] | None = None,
        strict: bool = False,
        replica_class: type[Replica] = Replica,
    ):
        """A member. Its I/O can be given, so that a simulated member runs this same code:
        `transport` (default: the configured provider), `fs` (the logs' file system), `clock_ns`
        (a monotonic clock in ns; default: the wall clock's), `clients` (the client port:
        `attach`, `respond`, `flush`, `stop`, `is_open`, `pending_bytes`), `writer` (what makes
        a shard log's appends durable and reports it: default a `GroupCommitWriter` thread).

        For the simulator: `observe` sees every `Ready` before the executor carries it out (its
        checkers), `strict` makes a peer's bad table write raise instead of being reported (every
        simulated peer runs the real core, so one is a bug), and `replica_class` is the core's
        class (`smr.sim.bugs` breaks a rule on purpose in a subclass).

        A member `config` does not list starts from the contact card it kept in its data
        directory (a restart); without one it is a `UsageError` (give its addresses:
        `with_member`). A member removed for good raises `MemberRemoved` at once."""
        self.me = me
        self.dir = config.member_dir(me)
        self.fs: FileSystem = fs or OsFileSystem()
        card, removed = self._own_meta(config)
        if removed is not None:
            raise MemberRemoved(me, removed)
        if me not in config.members:
            if card is None:
                raise UsageError(
                    f"member {me} is not listed in {config.path} and has no contact card in "
                    f"{self.dir}: give its addresses (smr node --id {me} --host H --port P "
                    "--client-port C)"
                )
            try:
                config = with_member(config, decode_card(me, card))
            except (CardError, ConfigError) as e:
                raise UsageError(f"{self.dir}: the member's own card: {e}") from None
        self.config = config
        self.log = log or json_logger(me)
        self._clock_base_ns = time.time_ns() - time.monotonic_ns()
        self._clock_ns = clock_ns
        self._writer = writer or GroupCommitWriter
        self.observe = observe
        self._strict = strict
        self._replica_class = replica_class
        self.recovered: Recovered | None = None  # what the last restart found on this disk
        self._stopping = False
        self.exit_reason = ""
        self.hosted: dict[tuple[int, int], Hosted] = {}
        self.logs: dict[tuple[int, int], Log] = {}
        self.writers: dict[tuple[int, int], GroupCommitWriter] = {}
        self.meta: Log | None = None
        self.views: list[tuple[int, tuple[int, ...]]] = []
        self._registered: set[int] = set()
        self._inbox: deque[tuple[int, Any]] = deque()  # client requests, taken by the loop
        self._persisted: deque[tuple[tuple[int, int], int]] = deque()
        self._log_failures: deque[tuple[tuple[int, int], BaseException]] = deque(maxlen=16)
        # ticket -> (connection, request id, taken at (ns), the shard's metrics)
        self._pending: dict[int, tuple[int, int, int, Any]] = {}
        self.metrics = NodeMetrics()
        self._fsyncs: deque[tuple[tuple[int, int], float]] = deque(maxlen=FSYNCS_MAX)
        self._queries: list[tuple[float, int, protocol.Query]] = []  # waiting for a version
        self._reads: dict[int, tuple[int, protocol.Query]] = {}  # linearizable: ticket -> query
        self._start_ns = self.now_ns()
        self.rejoin_after_halt = config.rejoin
        self.rejoins = 0
        # the address book: every member known by address, the configured ones and the roster's
        # cards (a member's own card wins over the file), and the ids removed for good
        self.book: dict[int, MemberConfig] = dict(config.members)
        self.retired: set[int] = set()
        self.card = encode_card(config.members[me])
        self._links_known = False  # the transport exists: learnt addresses go to it
        self._removed: str | None = None  # why this member was removed for good
        # member -> RemoveMember requests waiting for the view that retires it:
        # (deadline (s), connection, request id)
        self._removals: dict[int, list[tuple[float, int, int]]] = {}
        self.executor = Executor(me, self)
        self.watches = Watches(
            lambda conn_id, response: self.clients.respond(conn_id, response),
            operation_of=operation_of,
            pending_bytes=lambda conn_id: self.clients.pending_bytes(conn_id),
            is_open=lambda conn_id: self.clients.is_open(conn_id),
        )
        self._watchable = {
            (sg, sh): s.spec.mode_of(sh) != "raw"
            for sg, s in enumerate(config.subgroups)
            for sh in range(s.spec.shards)
        }
        self.replica = self._make_replica()
        if transport is None:
            from smr.transport.auto import make_transport

            addresses = {m: Address(c.host, c.port) for m, c in self.book.items()}
            transport, why = make_transport(
                config.transport, me, addresses, config.transport_config(me)
            )
            self.log("transport", choice=why)
        self.transport = transport
        for m, c in self.book.items():
            if m != me and m not in config.members:  # learnt from a recovered roster
                transport.add_member(m, Address(c.host, c.port))
        self._links_known = True
        member = config.members[me]
        # with TLS, certificates authenticate the clients: the handshake inside TLS is keyed
        # with a public constant, so that a client needs no cluster secret
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
        self.metrics_server: MetricsServer | None = None
        if member.metrics_port is not None:
            try:
                self.metrics_server = MetricsServer(
                    member.host, member.metrics_port, self.render_metrics, log=self.log
                )
            except OSError as e:
                self.clients.stop()
                raise OSError(
                    e.errno, f"metrics_port {member.host}:{member.metrics_port}: {e.strerror}"
                ) from None

    # -- start-up -------------------------------------------------------------------------------

    def _engine(self) -> str:
        """Which receive side the streams run (`MulticastConfig.engine`, `SMR_NATIVE`)."""
        return "native" if native_wanted(self.config.core_config().multicast.engine) else "python"

    def _own_meta(self, config: ClusterConfig) -> tuple[bytes | None, str | None]:
        """This member's card and why it was removed for good (None: never), as its metadata log
        keeps them; (None, None) before its first start. Read before anything else starts."""
        path = os.path.join(self.dir, "meta")
        if not self.fs.exists(path):
            return None, None
        try:
            meta = Log.open(path, LogConfig(sync_policy=config.sync_policy), fs=self.fs)
        except LogCorruptionError:
            return None, None  # the start reports it and moves the logs aside
        try:
            removed = meta.meta_get(REMOVED_META)
            return meta.meta_get(CARD_META), None if removed is None else removed.decode()
        finally:
            meta.close()

    def _keep_card(self) -> None:
        """Keep this member's card in its metadata log (a restart of a member no configuration
        lists needs no addresses on its command line)."""
        assert self.meta is not None
        if self.meta.meta_get(CARD_META) != self.card:
            self.persist_meta(LogMeta(CARD_META, self.card))

    def _learn_roster(self, roster: Roster) -> None:
        """Add the roster's cards to the address book (and their addresses to the transport),
        and its retired ids to those never let in again. A card this runtime cannot read is
        reported and skipped."""
        learnt = []
        for m, card in roster.cards:
            try:
                member = decode_card(m, card)
            except CardError as e:
                self.log("card-unreadable", peer=m, error=str(e))
                continue
            if self.book.get(m) != member:
                self.book[m] = member
                learnt.append(m)
                if self._links_known and m != self.me:
                    self.transport.add_member(m, Address(member.host, member.port))
        if learnt:
            self.log("members-learnt", members=learnt)
        self.retired.update(roster.retired)

    def _others(self) -> list[int]:
        """Every other member known by address and not removed: whom to contact or point to."""
        return [m for m in sorted(self.book) if m != self.me and m not in self.retired]

    def _make_replica(self) -> Replica:
        replica = self._make_replica_of_role()
        self._keep_card()
        return replica

    def _make_replica_of_role(self) -> Replica:
        """A founder's first start, a restart from this member's own logs (after a crash, or after
        the whole group went down), or a joiner's start."""
        cfg = self.config
        fs = self.fs
        meta_path = os.path.join(self.dir, "meta")
        if fs.exists(meta_path):
            try:
                replica = self._restarting()
            except LogCorruptionError as e:
                # a damaged log is reported, never trusted: this member joins afresh (its files
                # are kept aside for `smr log verify`)
                self.log("log-corrupt", error=str(e), then="joining with state transfer")
                self._close_logs()
                self.hosted.clear()
                self.logs.clear()
                self.writers.clear()
                self._move_aside()
            else:
                if replica is not None:
                    return replica
        elif fs.exists(self.dir) and fs.listdir(self.dir):
            self._move_aside()
        fs.makedirs(self.dir)
        if self.meta is None:
            self.meta = self._open(meta_path)
        if self.me in cfg.founders and not fs.exists(self.dir + ".previous"):
            replica = self._replica_class(
                self.me,
                cfg.founders,
                layout=cfg.layout,
                config=cfg.core_config(),
                strict=self._strict,
                card=self.card,
            )
            self.log("start", role="founder", members=list(cfg.founders), engine=self._engine())
            self.views.append((replica.epoch, replica.members))
            self._open_shards([(st.subgroup, st.shard_index) for st in replica.streams.values()])
            return replica
        return self._joiner()

    def _restarting(self) -> Replica | None:
        """Recover from this member's logs (`smr.recovery`): replay every shard log into its
        state machine, then let the core find the group (and join it) or agree with the other
        restarted members on the view to resume in. None: nothing to restart from."""
        cfg = self.config
        self.meta = self._open(os.path.join(self.dir, "meta"))
        if self.meta.meta_get("view") is None and self.me not in cfg.founders:
            return None  # a spare that never got into a view: it joins
        for name in self.fs.listdir(self.dir):
            m = SHARD_DIR.fullmatch(name)
            if m is not None:
                key = (int(m.group(1)), int(m.group(2)))
                if key[0] < len(cfg.subgroups):
                    self._open_log(key)
        recovered = self.recovered = recover_member(self.me, self.meta, self.logs, cfg.founders)
        # the members of the last view may all be gone: contact every member ever known
        self._learn_roster(recovered.roster)
        for key, log in self.logs.items():
            h = self.hosted[key] = Hosted(cfg.subgroups[key[0]].machine())
            version = replay(log, h.apply_record, h.restore)
            self.watches.reset(key, version)  # watches resume after what the log replayed
            self.log("replayed", shard=list(key), version=version, records=len(log))
        contacts = self._others()
        self.log(
            "start",
            role="restarting",
            epoch=recovered.epoch,
            members=list(recovered.members),
            engine=self._engine(),
        )
        return self._replica_class.restarting(
            self.me,
            recovered,
            contacts,
            layout=cfg.layout,
            config=cfg.core_config(),
            strict=self._strict,
            card=self.card,
        )

    def _move_aside(self) -> None:
        # one generation of old files is kept for `smr log` inspection
        old = self.dir + ".previous"
        fs = self.fs
        if isinstance(fs, OsFileSystem):
            shutil.rmtree(old, ignore_errors=True)
            os.rename(self.dir, old)
        else:  # the simulator's disk: a directory's rename replaces the destination
            fs.rename(self.dir, old)
        fs.makedirs(self.dir)
        self.meta = None

    def _joiner(self) -> Replica:
        cfg = self.config
        contacts = self._others()
        if not contacts:
            raise UsageError(
                f"member {self.me} has no member to ask to join: {cfg.path} lists no other "
                "member that was not removed"
            )
        self.log("start", role="joiner", contacts=contacts, engine=self._engine())
        return self._replica_class.joiner(
            self.me,
            contacts,
            layout=cfg.layout,
            config=cfg.core_config(),
            strict=self._strict,
            card=self.card,
        )

    def _rejoin(self) -> None:
        """After a halt: this incarnation is over (its state may be stale); a new one starts
        from this member's own logs, like a restarted process: the core finds the group running
        and joins it (its logs are dropped on admission, unless they hold the state of a shard
        the group lost, which it then provides), or restarts with the others."""
        self._close_logs()
        self.hosted.clear()
        self.logs.clear()
        self.writers.clear()
        self._persisted.clear()
        others = self._others()
        for conn_id, request_id, _, _ in self._pending.values():
            # the command may or may not have been delivered: the client sends it again to
            # another member with the same (client, seq), and the replicas apply it once
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request_id,
                    False,
                    error=f"member {self.me} left the view; retry elsewhere",
                    redirect=others,
                ),
            )
        self._pending.clear()
        self._fail_reads(f"member {self.me} left the view; read elsewhere", others)
        self.watches.fail_all(f"member {self.me} left the view; watch elsewhere", others)
        self._fail_removals(f"member {self.me} left the view; ask another member", others)
        self.executor.reset()
        self.meta = None
        self.replica = self._make_replica()
        self.rejoins += 1

    def _close_logs(self) -> None:
        for writer in self.writers.values():
            try:
                writer.close()
            except Exception as e:
                self.log("log-close-failed", error=str(e))
        for log in [*self.logs.values(), self.meta]:
            if log is not None:
                try:
                    log.close()
                except OSError as e:  # a failed disk: nothing more can be kept
                    self.log("log-close-failed", error=str(e))

    def _log_config(self) -> LogConfig:
        return LogConfig(
            sync_policy=self.config.sync_policy, segment_bytes_max=self.config.segment_bytes_max
        )

    def _open(self, path: str) -> Log:
        return Log.open(path, self._log_config(), fs=self.fs)

    def _open_shards(self, keys: list[tuple[int, int]]) -> None:
        for key in keys:
            if key not in self.hosted:
                self.hosted[key] = Hosted(self.config.subgroups[key[0]].machine())
                self.watches.reset(key, 0)
            if self.config.subgroups[key[0]].spec.mode_of(key[1]) == "durable":
                self._open_log(key)

    def _open_log(self, key: tuple[int, int]) -> Log:
        log = self.logs.get(key)
        if log is None:
            path = os.path.join(self.dir, f"subgroup-{key[0]}-shard-{key[1]}")
            log = self._open(path)
            if log.meta_get(SNAPSHOT_FORMAT) is None:
                # `smr log replay` reads snapshots and envelopes the way Hosted writes them
                log.meta_put(SNAPSHOT_FORMAT, b"hosted")
            self.logs[key] = log
            on_durable = functools.partial(self._on_durable, key)
            if self._writer is GroupCommitWriter:  # ours: it reports fsync times and failures
                self.writers[key] = GroupCommitWriter(
                    log,
                    on_durable,
                    on_fsync=functools.partial(self._on_fsync, key),
                    on_error=functools.partial(self._on_log_failed, key),
                )
            else:
                self.writers[key] = self._writer(log, on_durable)
        return log

    def _on_durable(self, key: tuple[int, int], version: int) -> None:
        self._persisted.append((key, version))  # a writer thread: hand over to the loop
        self.transport.wake()

    def _on_log_failed(self, key: tuple[int, int], error: BaseException) -> None:
        self._log_failures.append((key, error))  # a writer thread: the loop stops at once
        self.transport.wake()

    def _on_fsync(self, key: tuple[int, int], seconds: float) -> None:
        # a writer thread: the loop observes it (an _on_durable that wakes it follows)
        self._fsyncs.append((key, seconds))

    # -- the loop -------------------------------------------------------------------------------

    def now_ns(self) -> int:
        if self._clock_ns is not None:
            return self._clock_ns()
        return self._clock_base_ns + time.monotonic_ns()

    def _now_s(self) -> float:
        return self.now_ns() / 1e9

    def start(self) -> None:
        """Start the transport and the client port (`run` does it; a simulator calls it, then
        `step` whenever something is due)."""
        self.transport.start(self)
        self._register_epoch()
        self.clients.attach(self.transport)
        if self.metrics_server is not None:
            self.metrics_server.attach(self.transport)
        member = self.config.members[self.me]
        self.log("listening", clients=member.client_port, metrics=member.metrics_port)

    def run(self) -> int:
        """Run until stopped (SIGTERM/SIGINT or `stop()`) or halted; return the exit status."""
        # The loop shares the interpreter with the client-port and group-commit threads; with
        # the default 5 ms switch interval every hand-over between them could cost up to 5 ms.
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
            self._shutdown()
        return code

    def stop(self) -> None:
        """Ask the loop to finish (any thread, a signal handler)."""
        self._stopping = True
        self.transport.wake()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def step(self) -> None:
        """One pass of the loop: wait for input (at most until the core's next deadline), take
        it in, execute what the core asks for, answer clients. Raises `NodeExit` to stop."""
        replica = self.replica
        wait_s = max(0.0, (replica.next_tick_ns() - self.now_ns()) / 1e9)
        if self._inbox or self._persisted:
            wait_s = 0.0
        # everything this pass takes in (the poll's writes and frames, the tick, log
        # completions, client requests) is evaluated once, on leaving the block
        with replica.batched():
            self.transport.poll(min(wait_s, 1.0))
            now_ns = self.now_ns()
            if now_ns >= replica.next_tick_ns():
                # only when a heartbeat or a deadline is due: a busy node wakes far more often
                # than that
                replica.tick(now_ns)
            while self._persisted:
                (sg, sh), version = self._persisted.popleft()
                replica.on_persisted(sg, sh, version)
            self._take_requests()
        if self._log_failures:
            (sg, sh), error = self._log_failures[0]
            raise DiskFailed(self.me, f"the log of subgroup {sg} shard {sh}", error)
        self._drain()
        if self._queries:
            self._answer_waiting_queries()
        if self._removals:
            self._expire_removals()
        if len(self.watches):
            self.watches.pump()
        self.clients.flush()  # the responses of this pass, one send per client
        while self._fsyncs:
            key, seconds = self._fsyncs.popleft()
            self.metrics.shard(key).fsync.observe(seconds)
        if self.metrics_server is not None and self.metrics_server.open:
            self.metrics_server.expire()

    def _take_requests(self) -> None:
        budget = 256  # requests per pass: heartbeats and the table keep moving under load
        while self._inbox and budget:
            budget -= 1
            conn_id, request = self._inbox.popleft()
            try:
                self._handle_request(conn_id, request)
            except Exception as e:  # a bug answering one client stops only that
                self.log("request-failed", error=repr(e), traceback=traceback.format_exc())
                self.clients.respond(
                    conn_id, protocol.Response(request.id, False, error=f"internal error: {e!r}")
                )

    def _drain(self) -> None:
        replica = self.replica
        self.executor.drain(replica, self.observe)
        if replica.status == HALTED:
            if self._removed is not None:
                raise MemberRemoved(self.me, self._removed)
            if not self.rejoin_after_halt:
                raise NodeExit(f"member {self.me} halted: {replica.halt_reason}", EXIT_HALTED)
            self.log("halted", reason=replica.halt_reason, then="rejoining")
            self._rejoin()

    def _register_epoch(self) -> None:
        r = self.replica
        if r.status in (ACTIVE,) and r.epoch not in self._registered:
            self.transport.register(r.epoch, r.members, r.table.row_words * 8)
            self._registered.add(r.epoch)

    # -- the executor's host (smr.runtime.executor): real logs, the transport, hosted machines --

    def prepare_view(self, event: ViewInstalled) -> None:
        mine = [(sg, sh) for sg, sh, _, _ in event.shards]
        if self.me in event.joined:
            # state arrives (RestoreState) before any delivery; only the logs are opened now
            self._open_logs_only(mine)
        else:
            self._open_shards(mine)
        self._register_epoch()

    def persist_meta(self, request: LogMeta) -> None:
        assert self.meta is not None
        try:
            self.meta.meta_put(request.name, request.data)  # atomic and fsynced
        except (OSError, LogWriterError) as e:
            raise DiskFailed(self.me, f"writing {request.name!r} to the metadata log", e) from e

    def persist_append(self, request: LogAppend) -> None:
        writer = self.writers.get((request.subgroup, request.shard))
        if writer is not None:
            records = [
                Record(d.version, d.timestamp_ns, d.subgroup, d.shard, d.payload)
                for d in request.entries
            ]
            try:
                writer.submit(records)
            except (OSError, LogWriterError) as e:
                where = f"the log of subgroup {request.subgroup} shard {request.shard}"
                raise DiskFailed(self.me, where, e) from e

    def persist_flush(self, subgroup: int, shard: int) -> None:
        writer = self.writers.get((subgroup, shard))
        if writer is not None:
            try:
                writer.flush()
            except (OSError, LogWriterError) as e:
                raise DiskFailed(self.me, f"the log of subgroup {subgroup} shard {shard}", e) from e

    def persist_rewrite(self, request: LogTruncate | LogSnapshot) -> None:
        key = (request.subgroup, request.shard)
        try:
            self._open_log(key)
            self.writers[key].flush()  # nothing queued may land after the cut
            perform(self.logs[key], request)  # durable when it returns
        except (OSError, LogWriterError) as e:
            raise DiskFailed(
                self.me, f"rewriting the log of subgroup {key[0]} shard {key[1]}", e
            ) from e

    def push(self, push: Push) -> None:
        self.transport.write(push.targets, push.epoch, push.offset, push.data)

    def send(self, send: Send) -> None:
        self.transport.send(send.target, send.payload)

    def apply(self, deliveries: tuple[Delivery, ...]) -> list[bytes]:
        hosted = self.hosted
        results: list[bytes] = []
        n = len(deliveries)
        i = 0
        while i < n:
            # a run of one shard's deliveries (a batch is mostly one run): one hosted call each
            first = deliveries[i]
            sg, sh = first.subgroup, first.shard
            j = i + 1
            while j < n and deliveries[j].shard == sh and deliveries[j].subgroup == sg:
                j += 1
            run = deliveries[i:j] if i or j < n else deliveries
            i = j
            key = (sg, sh)
            h = hosted.get(key)
            if h is None:
                results.extend([RESULT_ERROR + b"shard not hosted here"] * len(run))
                continue
            out, repeats = h.apply_many(run)
            results.extend(out)
            if self._watchable.get(key):
                # what a watcher sees: each command and its result; a retry answered from the
                # session table changed nothing and is not shown
                shown = run
                if repeats:
                    skip = set(repeats)
                    shown = tuple(d for p, d in enumerate(run) if p not in skip)
                    out = [r for p, r in enumerate(out) if p not in skip]
                self.watches.applied_many(
                    key, list(map(_VERSION, shown)), list(map(_PAYLOAD, shown)), out
                )
        return results

    def state_of(self, subgroup: int, shard: int) -> tuple[int, bytes]:
        h = self.hosted.get((subgroup, shard))
        return (0, b"") if h is None else (h.version, h.snapshot())

    def state_sent(self, event: StateTransfer, version: int, size_bytes: int) -> None:
        self.log(
            "state-sent",
            to=event.to,
            shard=[event.subgroup, event.shard],
            version=version,
            bytes=size_bytes,
        )

    def restore(self, event: RestoreState) -> None:
        key = (event.subgroup, event.shard)
        h = Hosted(self.config.subgroups[event.subgroup].machine())
        if event.data:
            h.restore(event.data)
        self.hosted[key] = h
        self.watches.reset(key, event.version)
        self.log("state-restored", shard=list(key), version=event.version, bytes=len(event.data))

    def view_installed(self, event: ViewInstalled) -> None:
        self.views.append((event.epoch, event.members))
        self.metrics.view_changes.labels().inc()
        self.log(
            "view",
            epoch=event.epoch,
            members=list(event.members),
            rank=event.rank,
            joined=list(event.joined),
            departed=list(event.departed),
            shards=[[sg, sh, list(m), mode] for sg, sh, m, mode in event.shards],
            retired=list(event.roster.retired),
        )
        self._learn_roster(event.roster)
        if self._removals:
            for member in [m for m in self._removals if m in self.retired]:
                for _, conn_id, request_id in self._removals.pop(member):
                    self.clients.respond(conn_id, self._removed_answer(request_id, member))
        mine = {(sg, sh) for sg, sh, _, _ in event.shards}
        for key in [k for k in self.hosted if k not in mine]:
            del self.hosted[key]  # a shard that moved on without this member (state provided)
            self.watches.drop(key, self._not_here(key), self._hosts_of(key))

    def answer(self, event: Completed | SubmitFailed, results: dict[int, bytes] | None) -> None:
        waiter = self._pending.pop(event.ticket, None)
        if waiter is None:
            return
        conn_id, request_id, taken_ns, shard_metrics = waiter
        if type(event) is Completed:
            shard_metrics.answered.inc()
            shard_metrics.commit.observe((self.now_ns() - taken_ns) / 1e9)
            response = protocol.Response(
                request_id, True, version=event.version, results=results or {}
            )
        else:
            assert isinstance(event, SubmitFailed)
            shard_metrics.failed.inc()
            response = protocol.Response(request_id, False, error=event.reason)
        self.clients.respond(conn_id, response)

    def answer_read(self, event: ReadConfirmed | ReadFailed) -> None:
        waiter = self._reads.pop(event.ticket, None)
        if waiter is None:
            return
        conn_id, q = waiter
        key = (q.subgroup, q.shard)
        h = self.hosted.get(key) if type(event) is ReadConfirmed else None
        if h is not None:
            response = protocol.Response(q.id, True, version=h.version, value=h.query(q.payload))
        elif type(event) is ReadFailed and event.busy:
            response = protocol.Response(q.id, False, error=event.reason, retry_ms=BUSY_RETRY_MS)
        else:
            # not confirmed here (a view change, a partition, a pause): nothing old is served;
            # another member of the shard may confirm it
            reason = event.reason if type(event) is ReadFailed else self._not_here(key)
            response = protocol.Response(q.id, False, error=reason, redirect=self._hosts_of(key))
        self.clients.respond(conn_id, response)

    def _fail_reads(self, error: str, redirect: list[int]) -> None:
        for conn_id, q in self._reads.values():
            self.clients.respond(
                conn_id, protocol.Response(q.id, False, error=error, redirect=redirect)
            )
        self._reads.clear()

    def flush_answers(self) -> None:
        self.clients.flush()

    def notify(
        self, event: Halted | ViewBlocked | FrontierReached | PeerMisbehaved | RemovalRefused
    ) -> None:
        if type(event) is Halted:
            self.log("halt", reason=event.reason, removed=event.removed)
            if event.removed:
                # for good: recorded first, so that no later start of this member asks to join
                self._removed = event.reason
                self.persist_meta(LogMeta(REMOVED_META, event.reason.encode()))
                self.retired.add(self.me)
                # it halted before the view without it: the others answer with that view (a
                # RemoveMember of a retired member succeeds at once)
                for _, conn_id, request_id in self._removals.pop(self.me, []):
                    self.clients.respond(
                        conn_id,
                        protocol.Response(
                            request_id,
                            False,
                            error=f"member {self.me} was removed; the view without it is at the "
                            "others",
                            redirect=self._others(),
                        ),
                    )
        elif type(event) is ViewBlocked:
            self.log("view-blocked", epoch=event.epoch, reason=event.reason)
        elif type(event) is PeerMisbehaved:
            self.log("peer-protocol-error", peer=event.peer, epoch=event.epoch, error=event.reason)
        elif type(event) is RemovalRefused:
            self.log("removal-refused", peer=event.member, epoch=event.epoch, reason=event.reason)
            for _, conn_id, request_id in self._removals.pop(event.member, []):
                self.clients.respond(
                    conn_id, protocol.Response(request_id, False, error=event.reason)
                )

    def _open_logs_only(self, keys: list[tuple[int, int]]) -> None:
        hosted = dict(self.hosted)
        self._open_shards(keys)
        for key in keys:
            if key not in hosted:
                self.hosted.pop(key, None)

    # -- client requests --------------------------------------------------------------------------

    def _on_request(self, conn_id: int, request: Any) -> None:
        # from the transport's poll: handled after it, at most a budget per pass
        if len(self._inbox) >= INBOX_MAX:
            self.clients.respond(
                conn_id,
                protocol.Response(request.id, False, error="busy", retry_ms=BUSY_RETRY_MS),
            )
            return
        self._inbox.append((conn_id, request))

    def _handle_request(self, conn_id: int, request: Any) -> None:
        # requests are what protocol.decode_request makes, of exactly its types: the command first
        kind = type(request)
        if kind is not protocol.Command:
            if kind is protocol.Status:
                status = self.brief_status() if request.brief else self.status()
                self.clients.respond(conn_id, protocol.Response(request.id, True, status=status))
                return
            if kind is protocol.RemoveMember:
                self._remove(conn_id, request)
                return
        key = (request.subgroup, request.shard)
        replica = self.replica
        if replica.status != ACTIVE or key not in self.hosted or replica.stream(*key) is None:
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request.id, False, error=self._not_here(key), redirect=self._hosts_of(key)
                ),
            )
            return
        if kind is protocol.Watch:
            if not self._watchable.get(key):
                self.clients.respond(
                    conn_id,
                    protocol.Response(
                        request.id,
                        False,
                        error=f"subgroup {key[0]} shard {key[1]} is raw (not totally ordered): "
                        "it has no order of commands to watch",
                    ),
                )
            else:
                self.watches.add(conn_id, request)
            return
        if kind is protocol.Command:
            try:
                ticket = replica.submit(
                    request.subgroup,
                    request.shard,
                    wrap(request.client, request.seq, request.payload),
                    reply=request.replies == protocol.REPLIES_ALL,
                )
            except WindowFullError as e:
                # back-pressure, not a failure: the client keeps the command and sends it again
                self.clients.respond(
                    conn_id,
                    protocol.Response(request.id, False, error=str(e), retry_ms=BUSY_RETRY_MS),
                )
                return
            except UsageError as e:
                self.clients.respond(conn_id, protocol.Response(request.id, False, error=str(e)))
                return
            self._pending[ticket] = (conn_id, request.id, self.now_ns(), self.metrics.shard(key))
        elif request.consistency == protocol.READ_LINEARIZABLE:
            try:
                ticket = replica.read(request.subgroup, request.shard)
            except UsageError as e:
                self.clients.respond(conn_id, protocol.Response(request.id, False, error=str(e)))
                return
            self._reads[ticket] = (conn_id, request)
        elif request.consistency == protocol.READ_SEQUENTIAL:
            self._query(conn_id, request, self._now_s() + QUERY_WAIT_S)
        else:
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request.id,
                    False,
                    error=f"unknown read consistency {request.consistency!r} "
                    f"(known: {', '.join(protocol.READ_CONSISTENCIES)})",
                ),
            )

    # -- membership -------------------------------------------------------------------------------

    def _remove(self, conn_id: int, request: protocol.RemoveMember) -> None:
        """Ask the core to remove `request.member` for good; answered by `view_installed` once a
        view retires it (or at once when it is retired already: a client that sends the request
        again after a failover is told it is done), refused with the core's reason."""
        member = request.member
        if member in self.retired:
            self.clients.respond(conn_id, self._removed_answer(request.id, member))
            return
        replica = self.replica
        if replica.status != ACTIVE:
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request.id,
                    False,
                    error=f"member {self.me} is {replica.status}: ask another member",
                    redirect=self._others(),
                ),
            )
            return
        # an id this member never heard of is a mistake (a typo would retire an unused id)
        heard = {*self.book, *replica.members, *(m for _, view in self.views for m in view)}
        if member not in heard:
            known = ", ".join(str(m) for m in sorted(heard))
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request.id,
                    False,
                    error=f"member {member} is not a member of this cluster (its members: "
                    f"{known}); nothing changed",
                ),
            )
            return
        if sum(map(len, self._removals.values())) >= REMOVALS_WAITING_MAX:
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request.id,
                    False,
                    error=f"{REMOVALS_WAITING_MAX} removals are waiting for their view here; "
                    "ask again later",
                ),
            )
            return
        try:
            replica.remove(member)
        except UsageError as e:  # refused: below a majority, not active, ...; nothing changed
            self.clients.respond(conn_id, protocol.Response(request.id, False, error=str(e)))
            return
        self.log("remove-asked", peer=member, connection=conn_id)
        wait_s = min(max(request.wait_ms, 0) / 1000, REMOVE_WAIT_S_MAX)
        self._removals.setdefault(member, []).append((self._now_s() + wait_s, conn_id, request.id))

    def _removed_answer(self, request_id: int, member: int) -> protocol.Response:
        """The answer to a RemoveMember of `member`, retired now: the view as it stands here."""
        r = self.replica
        return protocol.Response(
            request_id,
            True,
            status={
                "removed": member,
                "member": self.me,
                "epoch": r.epoch,
                "members": list(r.members) if r.status == ACTIVE else [],
                "retired": sorted(self.retired),
            },
        )

    def _expire_removals(self) -> None:
        now = self._now_s()
        for member, waiting in list(self._removals.items()):
            late = [w for w in waiting if w[0] < now]
            if not late:
                continue
            for _, conn_id, request_id in late:
                self.clients.respond(
                    conn_id,
                    protocol.Response(
                        request_id,
                        False,
                        error=f"no view without member {member} was installed in time; the "
                        "removal may still happen: see the cluster's status, and ask again",
                    ),
                )
            waiting[:] = [w for w in waiting if w[0] >= now]
            if not waiting:
                del self._removals[member]

    def _fail_removals(self, error: str, redirect: list[int]) -> None:
        for waiting in self._removals.values():
            for _, conn_id, request_id in waiting:
                self.clients.respond(
                    conn_id, protocol.Response(request_id, False, error=error, redirect=redirect)
                )
        self._removals.clear()

    def _query(self, conn_id: int, q: protocol.Query, deadline_s: float) -> None:
        h = self.hosted[(q.subgroup, q.shard)]
        if h.version >= q.min_version:
            self.clients.respond(
                conn_id, protocol.Response(q.id, True, version=h.version, value=h.query(q.payload))
            )
        else:
            self._queries.append((deadline_s, conn_id, q))

    def _answer_waiting_queries(self) -> None:
        waiting, self._queries = self._queries, []
        now = self._now_s()
        for deadline_s, conn_id, q in waiting:
            key = (q.subgroup, q.shard)
            h = self.hosted.get(key)
            if h is None:
                # the shard left this member while the query waited (it halted and rejoins, or
                # the shard moved): the client reads it at a member that hosts it
                self.clients.respond(
                    conn_id,
                    protocol.Response(
                        q.id, False, error=self._not_here(key), redirect=self._hosts_of(key)
                    ),
                )
            elif now > deadline_s:
                self.clients.respond(
                    conn_id,
                    protocol.Response(
                        q.id, False, error=f"version {q.min_version:#x} not reached here in time"
                    ),
                )
            else:
                self._query(conn_id, q, deadline_s)

    def _not_here(self, key: tuple[int, int]) -> str:
        if self.replica.status == JOINING:
            return f"member {self.me} is joining the group"
        if self.replica.status != ACTIVE:
            return f"member {self.me} is {self.replica.status}"
        return f"member {self.me} does not host subgroup {key[0]} shard {key[1]}"

    def _hosts_of(self, key: tuple[int, int]) -> list[int]:
        if self.replica.status != ACTIVE:
            # joining, restarting or halted: any other member may know better
            return self._others()
        for shard in self.replica.shards:
            if (shard.subgroup, shard.shard) == key:
                return [m for m in shard.members if m != self.me]
        return []

    def collect_metrics(self) -> None:
        """Refill the gauges from the loop's state (at each scrape and status; loop thread)."""
        m = self.metrics
        r = self.replica
        m.epoch.labels().set(r.epoch)
        m.members.labels().set(len(r.members) if r.status == ACTIVE else 0)
        for name in MEMBER_STATUSES:
            m.status.labels(name).set(1 if r.status == name else 0)
        m.view_changes.labels()  # reported from 0
        for family in (m.delivered, m.persisted, m.queue_depth, m.queue_max):
            family.clear()  # a shard that left this member stops being reported
        depth, bound = m.queue_depth.labels, m.queue_max.labels
        depth("inbox", "", "").set(len(self._inbox))
        bound("inbox", "", "").set(INBOX_MAX)
        depth("pending", "", "").set(len(self._pending))
        depth("queries", "", "").set(len(self._queries))
        depth("reads", "", "").set(len(self._reads))
        for peer, sent in self.transport.sent_bytes().items():
            m.link_bytes.labels(peer).advance_to(sent)
        for event, count in self.transport.counters().items():
            m.transport_events.labels(event).advance_to(count)
        for event, count in self.clients.counters().items():
            m.client_events.labels(event).advance_to(count)
        for (sg, sh), h in sorted(self.hosted.items()):
            m.delivered.labels(sg, sh).set(h.version)
            m.shard((sg, sh))  # answered/failed and the histograms reported from 0
            writer = self.writers.get((sg, sh))
            if writer is not None:
                m.persisted.labels(sg, sh).set(max(0, writer.durable_version))
                stats = getattr(writer, "statistics", None)
                if stats is not None:
                    depth("log", sg, sh).set(stats()["queued_records"])
                    bound("log", sg, sh).set(writer.queue_records_max)
            st = r.stream(sg, sh) if r.status == ACTIVE else None
            if st is not None:
                depth("submit", sg, sh).set(len(st.queue))
                bound("submit", sg, sh).set(st.config.submit_queue_max)

    def render_metrics(self) -> str:
        """The Prometheus text exposition of this member (`GET /metrics`)."""
        self.collect_metrics()
        return self.metrics.registry.render()

    def metrics_summary(self) -> dict[str, Any]:
        """The headline figures for `smr cluster status`: latencies in milliseconds (None
        before any observation), versions as numbers."""
        self.collect_metrics()
        m = self.metrics

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        shards = []
        for (sg, sh), sm in sorted(m.shards().items()):
            delivered = m.delivered.series.get((str(sg), str(sh)))
            persisted = m.persisted.series.get((str(sg), str(sh)))
            shards.append(
                {
                    "subgroup": sg,
                    "shard": sh,
                    "delivered": int(delivered.value) if delivered is not None else None,
                    "persisted": int(persisted.value) if persisted is not None else None,
                    "answered": int(sm.answered.value),
                    "failed": int(sm.failed.value),
                    "commit_p50_ms": ms(sm.commit.quantile(0.5)),
                    "commit_p99_ms": ms(sm.commit.quantile(0.99)),
                    "fsync_p50_ms": ms(sm.fsync.quantile(0.5)),
                    "fsync_p99_ms": ms(sm.fsync.quantile(0.99)),
                }
            )
        return {
            "view_changes": int(m.view_changes.labels().value),
            "inbox": len(self._inbox),
            "inbox_max": INBOX_MAX,
            "pending": len(self._pending),
            "shards": shards,
            "metrics_port": self.config.members[self.me].metrics_port,
        }

    def status(self) -> dict[str, Any]:
        r = self.replica
        shards = []
        for (sg, sh), h in sorted(self.hosted.items()):
            st = r.stream(sg, sh) if r.status == ACTIVE else None
            shards.append(
                {
                    "subgroup": sg,
                    "shard": sh,
                    "type": self.config.subgroups[sg].machine.__name__,
                    "mode": st.mode if st is not None else "?",
                    "version": h.version,
                    "applied": h.applied,
                    "members": list(st.shard.members) if st is not None else [],
                    # it holds the shard's state (a joiner: once the transfer is done)
                    "ready": st is not None and not st.awaiting_state,
                }
            )
        return {
            **self.brief_status(),
            "pid": os.getpid(),
            "views": [[e, list(m)] for e, m in self.views],
            "shards": shards,
            "uptime_s": round((self.now_ns() - self._start_ns) / 1e9, 3),
            "metrics": self.metrics_summary(),
        }

    def brief_status(self) -> dict[str, Any]:
        """Who this member is, its view, and every member it knows by address (`addresses`: the
        configured ones and those the roster added, but the `retired`), for clients that fail
        over beyond their own configuration file (`Status(brief=True)`: what they ask)."""
        r = self.replica
        return {
            "member": self.me,
            "status": r.status,
            "epoch": r.epoch,
            "members": list(r.members) if r.status == ACTIVE else [],
            "addresses": [
                {
                    "id": m.id,
                    "host": m.host,
                    "port": m.port,
                    "client_port": m.client_port,
                    "metrics_port": m.metrics_port,
                }
                for _, m in sorted(self.book.items())
                if m.id not in self.retired
            ],
            "retired": sorted(self.retired),
        }

    # -- transport handler (called from poll, on the loop thread) ----------------------------------

    # A peer's bad input never raises here: the replica drops it, suspects the peer and says so
    # with a PeerMisbehaved event (logged by `notify`).

    def on_write(self, source: int, epoch: int, offset: int, data: bytes) -> None:
        self.replica.on_write(source, offset, data, epoch)

    def on_write_ranges(self, source: int, epoch: int, ranges: list[tuple[int, bytes]]) -> None:
        # within the poll's batched block: the ranges are applied together, evaluated once
        for offset, data in ranges:
            self.replica.on_write(source, offset, data, epoch)

    def on_data(self, source: int, payload: bytes) -> None:
        self.replica.on_data(source, payload)

    def on_link_up(self, peer: int) -> None:
        self.replica.on_link_up(peer)

    def on_peer_failed(self, peer: int) -> None:
        self.log("peer-failed", peer=peer)
        self.replica.on_peer_failed(peer)

    # -- shutdown ---------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        others = self._others()
        self._fail_removals(f"member {self.me} is shutting down", others)
        broadcast = getattr(self.clients, "broadcast", None)
        if broadcast is not None:
            # every client learns the members it may fail over to, those its file may not list
            broadcast(protocol.Response(0, True, status=self.brief_status()))
        for conn_id, request_id, _, _ in self._pending.values():
            self.clients.respond(
                conn_id,
                protocol.Response(
                    request_id,
                    False,
                    error=f"member {self.me} is shutting down",
                    redirect=others,
                ),
            )
        self._pending.clear()
        self._fail_reads(f"member {self.me} is shutting down", others)
        self.watches.fail_all(f"member {self.me} is shutting down", others)
        try:
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self.clients.stop()
        finally:
            self._close_logs()
            self.transport.close()
        self.log("stopped", reason=self.exit_reason or "stopped")


def removed_reason(config: ClusterConfig, member: int) -> str | None:
    """Why `member` was removed from the group for good, as its metadata log says (None: it
    was not, or it never started). For a member that is not running (the log is opened)."""
    path = os.path.join(config.member_dir(member), "meta")
    if not os.path.exists(path):
        return None
    try:
        with Log.open(path, LogConfig(sync_policy=config.sync_policy)) as meta:
            removed = meta.meta_get(REMOVED_META)
    except (LogCorruptionError, OSError):
        return None
    return None if removed is None else removed.decode()


def main(config_path: str, me: int) -> int:
    from smr.runtime.config import load

    config = load(config_path)
    node = Node(config, me)
    node.install_signal_handlers()
    return node.run()
