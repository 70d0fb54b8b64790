"""Linearizable reads: a read index confirmed through the table, with no log entry and no fsync.

This module owns a member's reads at the `linearizable` level (`Replica.read`), across the
epochs it lives through. The idea is etcd raft's ReadIndex, done with table counters instead of
a leader's heartbeat round:

1. **A round.** A read that arrives waits for the next round that starts after it: the member
   raises its `read_req` counter and pushes it. Reads that arrive while a round is out share the
   next one, so a burst of reads costs one round.
2. **Acknowledgements.** Every member that sees a peer's `read_req` above what it acknowledged,
   and is not wedged, copies it into its `read_ack` vector at the peer's rank and pushes it. Its
   counters of every earlier Ready were pushed before this write, and per-link FIFO delivers
   them first.
3. **Confirmation.** The round is confirmed once the member is not wedged and, in its copy of
   the table, a majority of the view and every member of each waiting read's shard acknowledged
   it and are not wedged. The read's index is then the shard's stable count as the member sees
   it.
4. **Answer.** Once the member holds the shard's state (a member new to the shard waits for its
   state transfer) and has delivered up to the index, and in a durable shard once every member
   persisted what it delivered (durable before visible: a total restart may cut away what is
   not), the read is `ReadConfirmed`: the driver runs the query against the state machine
   (after this Ready's deliveries).

Why it is linearizable. A command is answered only after it is stable, in truth, at every shard
member (received by all), and each member's `seq` counter showing it was pushed before the
answer. A member acknowledging a round that started after the read arrived therefore shows, in
the reader's copy, a `seq` at least that high, so the read index covers every command answered
before the read arrived; the state read may hold later ones too, which are concurrent with it.
And no other view can have answered anything by then: a next view needs a majority of this
view wedged, and a majority acknowledged unwedged after the read arrived (wedging is monotone).
A member that cannot confirm (wedged by a view change, partitioned from a majority, paused past
the failure timeout and resumed in a view the others left) fails the read after
`read_timeout_ns` with `ReadFailed`, a retriable error; it never answers from old data.

A view change ends the epoch's rounds: reads not answered are asked again in the next epoch's
first round; a member that halts fails them. Raw shards have no total order, so they refuse
linearizable reads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smr.core.errors import UsageError
from smr.core.predicates import Kind, Predicate
from smr.core.ready import Push
from smr.core.table import Column, counter, vector

if TYPE_CHECKING:
    from smr.core.replica import Replica


def columns(n: int) -> tuple[Column, ...]:
    return (
        counter("read_req", "the last read round this member started in this epoch"),
        vector("read_ack", n, "per member: the last of its read rounds this member acknowledged"),
    )


@dataclass(frozen=True, slots=True)
class ReadConfirmed:
    """Event: the read `ticket` of a shard may be answered now, from the state machine as it is
    after this Ready's deliveries (it holds everything answered before the read arrived)."""

    ticket: int
    subgroup: int
    shard: int


@dataclass(frozen=True, slots=True)
class ReadFailed:
    """Event: the read `ticket` could not be confirmed (`reason` says why); asking again, here
    or at another member, may succeed. Nothing was read."""

    ticket: int
    subgroup: int
    shard: int
    reason: str
    busy: bool = False  # too many reads wait here: ask this member again shortly


@dataclass(slots=True)
class _Read:
    ticket: int
    subgroup: int
    shard: int
    g: int  # the shard's index in the current epoch's layout
    deadline_ns: int
    index: int = -1  # the shard's stable count when the round confirmed it (-1: not yet)


class Reads:
    """A member's linearizable reads (one per replica, across epochs)."""

    __slots__ = ("_confirmed", "_inflight", "_round", "_waiting", "r", "reads_max", "timeout_ns")

    def __init__(self, replica: Replica, *, timeout_ns: int, reads_max: int):
        assert timeout_ns > 0 and reads_max >= 1
        self.r = replica
        self.timeout_ns = timeout_ns
        self.reads_max = reads_max
        self._waiting: deque[_Read] = deque()  # for a round that starts after they arrived
        self._inflight: list[_Read] = []  # in the round `_round`
        self._confirmed: list[_Read] = []  # waiting for delivery up to their index
        self._round = 0

    def __len__(self) -> int:
        return len(self._waiting) + len(self._inflight) + len(self._confirmed)

    # -- inputs (from the replica) ----------------------------------------------------------------

    def read(self, ticket: int, subgroup: int, shard: int) -> list[Any]:
        """A read arrived; returns a `ReadFailed` at once if it cannot be taken."""
        r = self.r
        st = r.stream(subgroup, shard)
        if st is None:
            raise UsageError(f"member {r.me} does not host subgroup {subgroup} shard {shard}")
        if st.mode == "raw":
            raise UsageError(
                f"subgroup {subgroup} shard {shard} is raw (no total order): read it sequentially"
            )
        if len(self) >= self.reads_max:
            return [
                ReadFailed(
                    ticket, subgroup, shard, f"{self.reads_max} reads are waiting", busy=True
                )
            ]
        self._waiting.append(_Read(ticket, subgroup, shard, st.g, r.now_ns + self.timeout_ns))
        return []

    def new_epoch(self) -> None:
        """The table is new: every unanswered read is asked again in the new epoch's first
        round (its shard may have moved, or be gone from this member)."""
        again = [*self._confirmed, *self._inflight, *self._waiting]
        self._confirmed, self._inflight, self._waiting = [], [], deque()
        self._round = 0
        r = self.r
        failed: list[Any] = []
        for rd in again:
            st = r.stream(rd.subgroup, rd.shard)
            if st is None:
                failed.append(
                    ReadFailed(rd.ticket, rd.subgroup, rd.shard, f"the shard left member {r.me}")
                )
                continue
            rd.g, rd.index = st.g, -1
            self._waiting.append(rd)
        r._events.extend(failed)

    def fail_all(self, reason: str) -> list[Any]:
        out = [
            ReadFailed(rd.ticket, rd.subgroup, rd.shard, reason)
            for rd in (*self._confirmed, *self._inflight, *self._waiting)
        ]
        self._confirmed, self._inflight, self._waiting = [], [], deque()
        return out

    def next_deadline_ns(self) -> int | None:
        # asked on every pass of the loop, where no read waits almost always
        t: int | None = None
        for q in (self._confirmed, self._inflight, self._waiting):
            if q and (t is None or q[0].deadline_ns < t):
                t = q[0].deadline_ns
        return t

    def expire(self, now_ns: int) -> list[Any]:
        """Fail the reads past their deadline (the member could not confirm them in time)."""
        if not len(self):
            return []
        out: list[Any] = []
        why = (
            f"member {self.r.me} could not confirm it is in the current view with a majority "
            f"in time (view {self.r.epoch})"
        )
        for queue in (self._confirmed, self._inflight):
            late = [rd for rd in queue if rd.deadline_ns <= now_ns]
            for rd in late:
                queue.remove(rd)
                out.append(ReadFailed(rd.ticket, rd.subgroup, rd.shard, why))
        while self._waiting and self._waiting[0].deadline_ns <= now_ns:
            rd = self._waiting.popleft()
            out.append(ReadFailed(rd.ticket, rd.subgroup, rd.shard, why))
        return out

    def start(self) -> list[Push]:
        """Start a round for the waiting reads if none is out; its pushes. The replica calls
        it before it evaluates, so the reads of one pass of the driver share a round."""
        if self._inflight or not self._waiting:
            return []
        r = self.r
        self._round += 1
        self._inflight = list(self._waiting)
        self._waiting.clear()
        r.table.set("read_req", self._round)
        return r.pushes(("read_req",))

    # -- predicates -----------------------------------------------------------------------------

    def predicates(self) -> tuple[Predicate[Replica], ...]:
        return (
            Predicate("read_ack", Kind.RECURRENT, self._ack_needed, self._ack),
            Predicate("read_confirm", Kind.RECURRENT, self._can_confirm, self._confirm),
            Predicate("read_answer", Kind.RECURRENT, self._can_answer, self._answer),
        )

    def _ack_needed(self, _: Any = None) -> bool:
        t = self.r.table
        words, rw, me = t.words, t.row_words, t.my_row
        req = t.layout["read_req"].word
        ack = me * rw + t.layout["read_ack"].word
        if words[self.r._wedged_index]:
            return False  # a wedged member vouches for no read: a next view may be forming
        return any(
            words[row * rw + req] > words[ack + row] for row in range(len(t.members)) if row != me
        )

    def _ack(self, _: Any = None) -> list[Any]:
        t = self.r.table
        me = t.my_row
        for row in range(len(t.members)):
            if row != me:
                asked = t.get(row, "read_req")
                if asked > t.vget(me, "read_ack", row):
                    t.vset("read_ack", row, asked)
        return self.r.pushes(("read_ack",))

    def _acked_rows(self) -> set[int]:
        t = self.r.table
        words, rw, me = t.words, t.row_words, t.my_row
        ack = t.layout["read_ack"].word + me
        wedged = t.layout["wedged"].word
        n = self._round
        return {
            row
            for row in range(len(t.members))
            if row == me or (words[row * rw + ack] >= n and not words[row * rw + wedged])
        }

    def _can_confirm(self, _: Any = None) -> bool:
        if not self._inflight or self.r.table.words[self.r._wedged_index]:
            return False
        acked = self._acked_rows()
        if 2 * len(acked) <= len(self.r.table.members):
            return False
        streams = self.r.streams
        return all(acked.issuperset(streams[rd.g].member_rows) for rd in self._inflight)

    def _confirm(self, _: Any = None) -> list[Any]:
        streams = self.r.streams
        for rd in self._inflight:
            rd.index = streams[rd.g].stable_count()
        self._confirmed.extend(self._inflight)
        self._inflight = []
        return self.start()

    def _can_answer(self, _: Any = None) -> bool:
        streams = self.r.streams
        return any(self._answerable(streams[rd.g], rd) for rd in self._confirmed)

    @staticmethod
    def _answerable(st: Any, rd: _Read) -> bool:
        # a member new to the shard counts this epoch's deliveries from 0 before its state
        # arrives: it answers nothing until it holds the state. A durable shard applies entries
        # when they are stable and answers them once every member persisted them; a read must
        # not show one before that either (a total failure may cut it away: kv seed 5 with
        # `total`), so it waits until the persistence frontier covers what was delivered
        delivered = st.delivered_count()
        if st.awaiting_state or delivered < rd.index:
            return False
        return st.mode != "durable" or st.persisted_frontier() >= delivered

    def _answer(self, _: Any = None) -> list[Any]:
        streams = self.r.streams
        out: list[Any] = []
        keep: list[_Read] = []
        for rd in self._confirmed:
            if self._answerable(streams[rd.g], rd):
                out.append(ReadConfirmed(rd.ticket, rd.subgroup, rd.shard))
            else:
                keep.append(rd)
        self._confirmed = keep
        return out
