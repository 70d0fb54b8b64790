---------------------------- MODULE Multicast ----------------------------
(***************************************************************************)
(* Ordered multicast in one epoch and one shard, with durable delivery:   *)
(* the table's per-shard columns (sent, received, seq, delivered,         *)
(* persisted), round-robin sequencing, null runs, the send window, the    *)
(* stability rule and the global persistence frontier.                    *)
(* Code: smr/core/multicast.py ShardStream (see proofs/README.md).        *)
(* Members are 0..N-1; the senders are 0..S-1 (rank = member id).        *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets

CONSTANTS N,        \* members of the shard
          S,        \* senders: members 0..S-1 (rank = member id)
          K,        \* data messages each sender submits
          W,        \* window_max: slots in a sender's ring
          DURABLE   \* TRUE: durable mode (log sync and the persisted column)

Members == 0 .. N-1
Ranks   == 0 .. S-1
Min(X)  == CHOOSE x \in X : \A y \in X : x <= y
Max(X)  == CHOOSE x \in X : \A y \in X : x >= y

VARIABLES
    sent,       \* sent[s]: indices s placed in its ring            (s{g}_sent)
    kind,       \* kind[s][i]: "data" or "null" for index i         (s{g}_slots)
    data,       \* data[s]: data messages s submitted so far        (ShardStream.queue)
    received,   \* received[m][s]: indices of s copied out by m     (s{g}_received)
    delivered,  \* delivered[m]: seq count delivered by m           (s{g}_delivered)
    dlog,       \* dlog[m]: the data messages m delivered, in order (Replica.deliver upcalls)
    ondisk,     \* ondisk[m]: seq count synced to m's log           (the driver's LogAppend sync)
    persisted   \* persisted[m]: seq count m reported persisted     (s{g}_persisted)

vars == <<sent, kind, data, received, delivered, dlog, ondisk, persisted>>

\* The contiguous prefix of the round-robin order that a received vector covers:
\* seq = m * S + j, m = min received, j the first rank at m (ShardStream._update_seq).
SeqCount(v) == LET mn == Min({v[k] : k \in Ranks})
               IN  mn * S + Min({k \in Ranks : v[k] = mn})
SenderOf(q) == q % S
IndexOf(q)  == q \div S

\* Stability: a sequence number below every member's seq (ShardStream.stable_count).
StableCount == Min({SeqCount(received[m]) : m \in Members})
\* The global persistence frontier (ShardStream.persisted_frontier).
Frontier == Min({persisted[m] : m \in Members})
\* The first index s may not place yet (ShardStream._window_end).
WindowEnd(s) == Min({received[m][s] : m \in Members}) + W

Init ==
    /\ sent = [s \in Ranks |-> 0]
    /\ kind = [s \in Ranks |-> <<>>]
    /\ data = [s \in Ranks |-> 0]
    /\ received = [m \in Members |-> [s \in Ranks |-> 0]]
    /\ delivered = [m \in Members |-> 0]
    /\ dlog = [m \in Members |-> <<>>]
    /\ ondisk = [m \in Members |-> 0]
    /\ persisted = [m \in Members |-> 0]

\* ShardStream.send, data branch: place the next queued message; own receipt is immediate.
SendData(s) ==
    /\ data[s] < K
    /\ sent[s] < WindowEnd(s)
    /\ data' = [data EXCEPT ![s] = @ + 1]
    /\ kind' = [kind EXCEPT ![s] = Append(@, "data")]
    /\ sent' = [sent EXCEPT ![s] = @ + 1]
    /\ received' = [received EXCEPT ![s][s] = sent[s] + 1]
    /\ UNCHANGED <<delivered, dlog, ondisk, persisted>>

\* ShardStream.send, null branch: an idle sender that sees another sender ahead
\* places one null run covering the gap (as far as the window allows).
SendNulls(s) ==
    LET hi  == Max({received[s][k] : k \in Ranks})
        top == Min({hi, WindowEnd(s)})
    IN /\ top > sent[s]
       /\ kind' = [kind EXCEPT ![s] = @ \o [i \in 1 .. (top - sent[s]) |-> "null"]]
       /\ sent' = [sent EXCEPT ![s] = top]
       /\ received' = [received EXCEPT ![s][s] = top]
       /\ UNCHANGED <<data, delivered, dlog, ondisk, persisted>>

\* ShardStream.receive: copy the next announced index of sender s out of its ring.
Receive(m, s) ==
    /\ m # s
    /\ received[m][s] < sent[s]
    /\ received' = [received EXCEPT ![m][s] = @ + 1]
    /\ UNCHANGED <<sent, kind, data, delivered, dlog, ondisk, persisted>>

\* The data messages with sequence numbers in [from, to), in sequence order.
DataIn(from, to) ==
    LET RECURSIVE F(_)
        F(q) == IF q >= to THEN <<>>
                ELSE IF kind[SenderOf(q)][IndexOf(q) + 1] = "data"
                     THEN <<<<SenderOf(q), IndexOf(q)>>>> \o F(q + 1)
                     ELSE F(q + 1)
    IN F(from)

\* The bound a member may deliver to. A member reads copies of the others' rows, which lag
\* but never run ahead (columns only grow): any bound up to the true minimum covers them.
DeliverBound(m) == StableCount

\* ShardStream.deliver / _deliver_to: every newly stable message, in sequence order.
Deliver(m) ==
    \E c \in (delivered[m] + 1) .. DeliverBound(m) :
        /\ c <= SeqCount(received[m])          \* (the code asserts this: pending holds them)
        /\ dlog' = [dlog EXCEPT ![m] = @ \o DataIn(delivered[m], c)]
        /\ delivered' = [delivered EXCEPT ![m] = c]
        /\ UNCHANGED <<sent, kind, data, received, ondisk, persisted>>

\* The driver syncs the log entries handed over by LogAppend (durable mode).
Sync(m) ==
    /\ DURABLE
    /\ ondisk[m] < delivered[m]
    /\ ondisk' = [ondisk EXCEPT ![m] = delivered[m]]
    /\ UNCHANGED <<sent, kind, data, received, delivered, dlog, persisted>>

\* What a member reports as persisted (ShardStream.on_persisted / _advance_persisted).
PersistBound(m) == ondisk[m]

ReportPersisted(m) ==
    /\ DURABLE
    /\ persisted[m] < PersistBound(m)
    /\ persisted' = [persisted EXCEPT ![m] = PersistBound(m)]
    /\ UNCHANGED <<sent, kind, data, received, delivered, dlog, ondisk>>

Next ==
    \/ \E s \in Ranks : SendData(s) \/ SendNulls(s)
    \/ \E m \in Members, s \in Ranks : Receive(m, s)
    \/ \E m \in Members : Deliver(m) \/ Sync(m) \/ ReportPersisted(m)

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
TypeOK ==
    /\ \A s \in Ranks : sent[s] = Len(kind[s]) /\ sent[s] <= S * K /\ data[s] <= K
    /\ \A m \in Members : \A s \in Ranks : received[m][s] <= sent[s]
    /\ \A m \in Members : persisted[m] <= ondisk[m]

Entries(m) == {dlog[m][i] : i \in DOMAIN dlog[m]}
IsPrefix(a, b) == Len(a) <= Len(b) /\ \A i \in DOMAIN a : a[i] = b[i]

\* Total order (and agreement): any two members' delivery sequences are one a prefix of the other.
Inv_TotalOrder == \A m1, m2 \in Members : IsPrefix(dlog[m1], dlog[m2]) \/ IsPrefix(dlog[m2], dlog[m1])
\* Per-sender FIFO: a sender's messages are delivered in the order it sent them.
Inv_FIFO == \A m \in Members : \A i, j \in DOMAIN dlog[m] :
               (i < j /\ dlog[m][i][1] = dlog[m][j][1]) => dlog[m][i][2] < dlog[m][j][2]
\* No duplication.
Inv_NoDuplication == \A m \in Members : Cardinality(Entries(m)) = Len(dlog[m])
\* No creation: only data messages a sender placed are delivered.
Inv_NoCreation == \A m \in Members : \A e \in Entries(m) :
                     e[2] < sent[e[1]] /\ kind[e[1]][e[2] + 1] = "data"
\* Stability: nothing is delivered before every member received it.
Inv_Stability == \A m \in Members : \A e \in Entries(m) :
                     \A m2 \in Members : e[2] < received[m2][e[1]]
\* Durable delivery: a version at or below the global persistence frontier is on disk
\* at every member (and delivered there).
Inv_FrontierOnDisk == \A m \in Members : Frontier <= ondisk[m] /\ ondisk[m] <= delivered[m]
\* The frontier never passes what every member delivered (answered-only-when-guaranteed).
Inv_FrontierDelivered == Frontier <= Min({delivered[m] : m \in Members})

\* Every member eventually delivers and persists everything (checked as a property only
\* with fairness; not part of `make proofs`).
=============================================================================
