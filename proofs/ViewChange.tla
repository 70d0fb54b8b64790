---------------------------- MODULE ViewChange ----------------------------
(***************************************************************************)
(* The view change of one epoch, one shard whose members are all senders: *)
(* crashes, suspicion (true, and false within a budget: a partition looks  *)
(* like false suspicion), merging, wedging, halting in a minority, ballots *)
(* (leader rank + 1), propose (adopting the highest acknowledged proposal, *)
(* else survivors and the ragged trim), log-then-acknowledge, commit,      *)
(* learn, trim (deliver exactly to the trim) and install (after every      *)
(* unsuspected member persisted to the trim). The multicast before the    *)
(* wedge is kept (send, receive, stable delivery, log sync) so that the    *)
(* trim works on real `received` columns.                                 *)
(* Code: smr/core/views.py ViewChange, smr/core/multicast.py ShardStream. *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS N,         \* members of the view, 0..N-1 (one shard)
          S,         \* senders: members 0..S-1 (rank = member id)
          K,         \* messages each sender sends in the epoch
          MaxCrash,  \* crashes in the run
          MaxFalse,  \* false suspicions in the run (suspecting a live member)
          QUORUM     \* TRUE: the majority checks (partition safety); FALSE only in a broken variant

Members == 0 .. N-1
Ranks   == 0 .. S-1
Min(X) == CHOOSE x \in X : \A y \in X : x <= y
Max(X) == CHOOSE x \in X : \A y \in X : x >= y
Majority(X) == ~QUORUM \/ 2 * Cardinality(X) > N

\* A proposal: ballot, next view's members, per-sender ragged trim.
NoP == [bal |-> 0, mem |-> {}, trim |-> [k \in Ranks |-> 0]]

VARIABLES
    alive,      \* alive[m]: not crashed
    halted,     \* halted[m]: stopped (minority, or excluded)        (ViewChange._halt)
    susp,       \* susp[m]: members m suspects                       (suspected vector)
    wedged,     \* wedged[m]                                         (wedged column)
    ballot,     \* ballot[m]: ballot m follows                       (ballot column)
    followed,   \* followed[m]: every ballot m ever followed (history: what a lagging copy may show)
    prop,       \* prop[m]: m's proposal as leader                   (prop column)
    acks,       \* acks[m]: proposals m acknowledged (history of acked / acked_ballot)
    logged,     \* logged[m]: proposals in m's log                   (LogMeta view-proposal-e)
    decided,    \* decided[m]: the committed proposal m adopted      (decided / committed columns)
    committedP, \* history: every proposal some leader committed
    sent,       \* sent[s]                                           (s{g}_sent)
    received,   \* received[m][s]                                    (s{g}_received)
    delivered,  \* delivered[m]: seq count                           (s{g}_delivered)
    ondisk,     \* ondisk[m]: seq count synced (= persisted)          (s{g}_persisted)
    trimmed,    \* trimmed[m]                                        (ViewChange.trimmed)
    installed,  \* installed[m]: moved to the next view              (Replica.install_next)
    joinReq,    \* a join (or leave) request is relayed in some row  (joins / leaving columns)
    nCrash, nFalse

vars == <<alive, halted, susp, wedged, ballot, followed, prop, acks, logged, decided,
          committedP, sent, received, delivered, ondisk, trimmed, installed, joinReq, nCrash, nFalse>>

SeqCount(v) == LET mn == Min({v[k] : k \in Ranks})
               IN  mn * S + Min({k \in Ranks : v[k] = mn})
TrimCount(t) == SeqCount(t)                         \* views.py trim_count
Stable == Min({SeqCount(received[r]) : r \in Members})
Unsusp(m) == Members \ susp[m]
Leader(m) == Min(Unsusp(m))                         \* ViewChange.leader_row
Active(m) == alive[m] /\ ~halted[m] /\ ~installed[m]

Init ==
    /\ alive = [m \in Members |-> TRUE]
    /\ halted = [m \in Members |-> FALSE]
    /\ susp = [m \in Members |-> {}]
    /\ wedged = [m \in Members |-> FALSE]
    /\ ballot = [m \in Members |-> 0]
    /\ followed = [m \in Members |-> {}]
    /\ prop = [m \in Members |-> NoP]
    /\ acks = [m \in Members |-> {}]
    /\ logged = [m \in Members |-> {}]
    /\ decided = [m \in Members |-> NoP]
    /\ committedP = {}
    /\ sent = [s \in Ranks |-> 0]
    /\ received = [m \in Members |-> [s \in Ranks |-> 0]]
    /\ delivered = [m \in Members |-> 0]
    /\ ondisk = [m \in Members |-> 0]
    /\ trimmed = [m \in Members |-> FALSE]
    /\ installed = [m \in Members |-> FALSE]
    /\ joinReq = FALSE
    /\ nCrash = 0
    /\ nFalse = 0

VCvars == <<alive, halted, susp, wedged, ballot, followed, prop, acks, logged, decided,
            committedP, trimmed, installed, joinReq, nCrash, nFalse>>
MCvars == <<sent, received, delivered, ondisk>>

\* ---- multicast in the epoch (frozen by the wedge) --------------------------
Send(s) ==
    /\ Active(s) /\ ~wedged[s] /\ sent[s] < K
    /\ sent' = [sent EXCEPT ![s] = @ + 1]
    /\ received' = [received EXCEPT ![s][s] = @ + 1]
    /\ UNCHANGED <<delivered, ondisk>> /\ UNCHANGED VCvars

Receive(m, s) ==
    /\ Active(m) /\ ~wedged[m] /\ m # s /\ received[m][s] < sent[s]
    /\ received' = [received EXCEPT ![m][s] = @ + 1]
    /\ UNCHANGED <<sent, delivered, ondisk>> /\ UNCHANGED VCvars

Deliver(m) ==
    /\ Active(m) /\ ~wedged[m]
    /\ \E c \in (delivered[m] + 1) .. Stable :
         delivered' = [delivered EXCEPT ![m] = c]
    /\ UNCHANGED <<sent, received, ondisk>> /\ UNCHANGED VCvars

Sync(m) ==
    /\ alive[m] /\ ondisk[m] < delivered[m]
    /\ ondisk' = [ondisk EXCEPT ![m] = delivered[m]]
    /\ UNCHANGED <<sent, received, delivered>> /\ UNCHANGED VCvars

\* ---- failures and suspicion ------------------------------------------------
Crash(m) ==
    /\ alive[m] /\ nCrash < MaxCrash
    /\ alive' = [alive EXCEPT ![m] = FALSE]
    /\ nCrash' = nCrash + 1
    /\ UNCHANGED <<halted, susp, wedged, ballot, followed, prop, acks, logged, decided,
                   committedP, trimmed, installed, joinReq, nFalse>> /\ UNCHANGED MCvars

\* ViewChange.on_tick / suspect: a member suspects a peer whose heartbeat stopped; a live
\* peer may be suspected too (a partition, a slow link), within the budget MaxFalse.
Suspect(m, j) ==
    /\ Active(m) /\ j # m /\ j \notin susp[m]
    /\ alive[j] => nFalse < MaxFalse
    /\ susp' = [susp EXCEPT ![m] = @ \cup {j}]
    /\ nFalse' = IF alive[j] THEN nFalse + 1 ELSE nFalse
    /\ UNCHANGED <<alive, halted, wedged, ballot, followed, prop, acks, logged, decided,
                   committedP, trimmed, installed, joinReq, nCrash>> /\ UNCHANGED MCvars

\* ViewChange._merge: adopt r's suspicion of j, r unsuspected by m and not suspecting m
\* (the credibility timing of _credible only delays this: not modelled).
Merge(m, r, j) ==
    /\ Active(m) /\ r # m /\ r \notin susp[m] /\ m \notin susp[r]
    /\ j \in susp[r] /\ j \notin susp[m]
    /\ susp' = [susp EXCEPT ![m] = @ \cup {j}]
    /\ UNCHANGED <<alive, halted, wedged, ballot, followed, prop, acks, logged, decided,
                   committedP, trimmed, installed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

\* ViewChange.relay_join / leave: a join or leave request shows in a row; it changes the
\* view without anyone being suspected (joiners themselves are not modelled).
RelayJoin ==
    /\ ~joinReq
    /\ joinReq' = TRUE
    /\ UNCHANGED <<alive, halted, susp, wedged, ballot, followed, prop, acks, logged, decided,
                   committedP, trimmed, installed, nCrash, nFalse>> /\ UNCHANGED MCvars

\* ViewChange._wedge on change_needed (a suspicion, a join or a leave): freezes received and
\* seq (ShardStream checks replica.frozen).
Wedge(m) ==
    /\ Active(m) /\ ~wedged[m] /\ (susp[m] # {} \/ joinReq)
    /\ wedged' = [wedged EXCEPT ![m] = TRUE]
    /\ UNCHANGED <<alive, halted, susp, ballot, followed, prop, acks, logged, decided,
                   committedP, trimmed, installed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

\* ViewChange._halt_minority (partition safety).
HaltMinority(m) ==
    /\ Active(m) /\ QUORUM /\ ~Majority(Unsusp(m))
    /\ halted' = [halted EXCEPT ![m] = TRUE]
    /\ UNCHANGED <<alive, susp, wedged, ballot, followed, prop, acks, logged, decided,
                   committedP, trimmed, installed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

\* ---- ballots, propose, acknowledge, commit, learn ---------------------------
\* ViewChange._follow
Follow(m) ==
    /\ Active(m) /\ wedged[m] /\ ballot[m] < Leader(m) + 1
    /\ ballot' = [ballot EXCEPT ![m] = Leader(m) + 1]
    /\ followed' = [followed EXCEPT ![m] = @ \cup {Leader(m) + 1}]
    /\ UNCHANGED <<alive, halted, susp, wedged, prop, acks, logged, decided,
                   committedP, trimmed, installed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

\* What the leader of ballot b proposes, reading the rows `rows` (ViewChange._propose).
\* A copy of row r that shows ballot b shows exactly the acknowledgements r made before
\* following b (FIFO pushes; r acknowledges only its current ballot): those below b.
SeenAcks(rows, b) == UNION {{a \in acks[r] : a.bal < b} : r \in rows}
Proposal(rows, b) ==
    LET seen == SeenAcks(rows, b)
    IN IF seen # {}
       THEN LET a == CHOOSE a \in seen : \A x \in seen : x.bal <= a.bal
            IN [bal |-> b, mem |-> a.mem, trim |-> a.trim]
       ELSE [bal |-> b, mem |-> rows,
             trim |-> [k \in Ranks |-> Min({received[r][k] : r \in rows})]]

\* ViewChange._can_propose / _propose. `b \in followed[r]`: some copy of r's row showed b.
Propose(m) ==
    LET b == m + 1
        rows == Unsusp(m)
    IN /\ Active(m) /\ ballot[m] = b /\ decided[m] = NoP /\ prop[m].bal < b
       /\ Majority(rows)
       /\ \A r \in rows : wedged[r] /\ b \in followed[r]
       /\ LET P == Proposal(rows, b) IN
            /\ prop' = [prop EXCEPT ![m] = P]
            /\ logged' = [logged EXCEPT ![m] = @ \cup {P}]
            /\ acks' = [acks EXCEPT ![m] = @ \cup {P}]
       /\ UNCHANGED <<alive, halted, susp, wedged, ballot, followed, decided,
                      committedP, trimmed, installed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

\* ViewChange._can_ack / _ack: log the leader's proposal (synced LogMeta), then acknowledge.
CanAck(m) ==
    /\ Active(m) /\ ballot[m] # 0 /\ ballot[m] # m + 1
    /\ \A a \in acks[m] : a.bal < ballot[m]
    /\ prop[ballot[m] - 1].bal = ballot[m]
Ack(m) ==
    /\ CanAck(m)
    /\ LET P == prop[ballot[m] - 1] IN
         /\ logged' = [logged EXCEPT ![m] = @ \cup {P}]
         /\ acks' = [acks EXCEPT ![m] = @ \cup {P}]
    /\ UNCHANGED <<alive, halted, susp, wedged, ballot, followed, prop, decided,
                   committedP, trimmed, installed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

\* ViewChange._can_commit / _commit: every unsuspected member acknowledged ballot b.
Commit(m) ==
    LET b == m + 1
        rows == Unsusp(m)
    IN /\ Active(m) /\ ballot[m] = b /\ prop[m].bal = b /\ decided[m] = NoP
       /\ Majority(rows)
       /\ \A r \in rows : \E a \in acks[r] : a.bal = b
       /\ decided' = [decided EXCEPT ![m] = prop[m]]
       /\ committedP' = committedP \cup {prop[m]}
       /\ UNCHANGED <<alive, halted, susp, wedged, ballot, followed, prop, acks, logged,
                      trimmed, installed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

\* ViewChange._can_learn / _learn: adopt a committed row's decided proposal.
Learn(m) ==
    /\ Active(m) /\ decided[m] = NoP
    /\ \E r \in Members :
         /\ decided[r] # NoP
         /\ decided' = [decided EXCEPT ![m] = decided[r]]
    /\ UNCHANGED <<alive, halted, susp, wedged, ballot, followed, prop, acks, logged,
                   committedP, trimmed, installed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

\* ---- trim and install -------------------------------------------------------
\* ViewChange._trim: a member not in the decided view halts; the others deliver exactly to
\* the trim (ShardStream.deliver_upto).
Trim(m) ==
    /\ Active(m) /\ decided[m] # NoP /\ ~trimmed[m]
    /\ trimmed' = [trimmed EXCEPT ![m] = TRUE]
    /\ IF m \notin decided[m].mem
       THEN /\ halted' = [halted EXCEPT ![m] = TRUE]
            /\ UNCHANGED delivered
       ELSE /\ delivered' = [delivered EXCEPT ![m] = Max({@, TrimCount(decided[m].trim)})]
            /\ UNCHANGED halted
    /\ UNCHANGED <<alive, susp, wedged, ballot, followed, prop, acks, logged, decided,
                   committedP, installed, joinReq, nCrash, nFalse>>
    /\ UNCHANGED <<sent, received, ondisk>>

\* ViewChange._can_install / _install: every unsuspected shard member persisted to the trim.
CanInstall(m) ==
    /\ Active(m) /\ trimmed[m]
    /\ \A r \in Unsusp(m) : ondisk[r] >= TrimCount(decided[m].trim)
Install(m) ==
    /\ CanInstall(m)
    /\ installed' = [installed EXCEPT ![m] = TRUE]
    /\ UNCHANGED <<alive, halted, susp, wedged, ballot, followed, prop, acks, logged, decided,
                   committedP, trimmed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

MCNext ==
    \/ \E s \in Ranks : Send(s)
    \/ \E m \in Members, s \in Ranks : Receive(m, s)
    \/ \E m \in Members : Deliver(m) \/ Sync(m)
FaultNext ==
    \/ RelayJoin
    \/ \E m \in Members : Crash(m)
    \/ \E m, j \in Members : Suspect(m, j)
    \/ \E m, r, j \in Members : Merge(m, r, j)
VCNext(m) ==
    \/ Wedge(m) \/ HaltMinority(m) \/ Follow(m) \/ Propose(m) \/ Commit(m) \/ Learn(m)
    \/ Trim(m)

Next == MCNext \/ FaultNext \/ \E m \in Members : VCNext(m) \/ Ack(m) \/ Install(m)
Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
Same(p, q) == p.mem = q.mem /\ p.trim = q.trim
Decided == {decided[m] : m \in Members} \ {NoP}

\* At most one view per epoch: every committed or adopted proposal has the same members and trim.
Inv_OneViewPerEpoch == \A p, q \in committedP \cup Decided : Same(p, q)
\* Partition safety: a view is formed only by a majority of the old one, and a member
\* installs only a view it belongs to.
Inv_PartitionSafety ==
    /\ \A p \in committedP : 2 * Cardinality(p.mem) > N
    /\ \A m \in Members : installed[m] => m \in decided[m].mem
\* Virtual synchrony: members moving from v to v+1 together delivered the same entries in v
\* (in one total order, so the same count means the same entries).
Inv_VirtualSynchrony ==
    \A m1, m2 \in Members : installed[m1] /\ installed[m2] =>
        /\ Same(decided[m1], decided[m2])
        /\ delivered[m1] = delivered[m2]
\* Nobody, failed members included, delivered beyond a committed trim; every member of the
\* next view received everything the trim covers (the code's assertion in deliver_upto).
Inv_TrimAgreement ==
    \A p \in committedP :
        /\ \A m \in Members : delivered[m] <= TrimCount(p.trim)
        /\ \A m \in p.mem : TrimCount(p.trim) <= SeqCount(received[m])
\* Durability across view changes: what the persistence frontier passed is inside the trim,
\* and a member installs the next view only with the whole trim on its disk.
Inv_DurableAcrossViews ==
    /\ \A p \in committedP : Min({ondisk[m] : m \in Members}) <= TrimCount(p.trim)
    /\ \A m \in Members : installed[m] => ondisk[m] >= TrimCount(decided[m].trim)
\* The trim is logged before it is applied: a committed proposal is in the logs of a majority.
Inv_TrimLoggedBeforeApplied ==
    \A p \in committedP : 2 * Cardinality({r \in Members : \E x \in logged[r] : Same(x, p)}) > N
=============================================================================
