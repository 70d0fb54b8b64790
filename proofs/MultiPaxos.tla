------------------------------ MODULE MultiPaxos ------------------------------
(***************************************************************************)
(* Classic Multi-Paxos: the design the `multipaxos` protocol module of the *)
(* toolkit implements (issue 17). Processes 0..N-1 are each an acceptor    *)
(* and a learner, those in Proposers also a proposer. Ballot b = round * N *)
(* + id; a proposer uses only its own ballots.                             *)
(* Phase 1 (leader change): the proposer's own acceptor durably promises   *)
(* the new ballot, then 1a(b, from) goes to all, `from` = the proposer's   *)
(* commit point (its lowest unlearned slot). An acceptor promises a ballot *)
(* above its promise, durably, and answers 1b with its accepted (ballot,   *)
(* value) at every slot >= from. On 1b from a quorum the leader adopts,    *)
(* per slot, the value of the highest accepted ballot reported, puts a     *)
(* no-op in every unreported slot below the highest reported one, and may *)
(* put client commands in the slots above.                                 *)
(* Phase 2: 2a(b, slot, value), once per slot and ballot, only for slots   *)
(* in the window [commit point, commit point + W); the leader's acceptor   *)
(* accepts first; an acceptor accepts if b >= its promise, raises its      *)
(* promise to b, durably, then answers 2b. Chosen = 2b from a majority in  *)
(* one ballot. The leader learns a slot from the 2b of its ballot; the     *)
(* others catch up: they copy another's applied prefix (a commit index     *)
(* with the entries up to it, or a snapshot). Learners apply in slot order *)
(* only. Messages are a set never removed from (loss, duplication,         *)
(* reordering). A crash (and restart) loses the proposer's state and the   *)
(* learned slots above the applied prefix (the snapshot), never the        *)
(* acceptor's promise and accepts (on disk before the answer is sent).     *)
(* Code: smr/core/multipaxos.py (issue 17; mapping in README.md).        *)
(***************************************************************************)
EXTENDS Integers, FiniteSets, Sequences, TLC

CONSTANTS N,          \* processes 0..N-1: acceptors and learners
          Proposers,  \* the processes that may lead (a subset of 0..N-1)
          MaxBallot,  \* ballots 0..MaxBallot (b = round * N + p, p in Proposers): bounds dueling
          S,          \* slots 1..S
          W,          \* pipeline window: 2a only below lowest unlearned slot + W
          Commands,   \* client commands (model values)
          NoOp,       \* the no-op a leader puts in a gap
          NoVal,      \* "no value" (model value)
          Free,       \* plan: the slot may take a new client command (model value)
          CRASH,      \* TRUE: processes crash and restart (any number of times)
          QUORUM      \* TRUE: quorums are majorities; FALSE (broken): any one process

Procs    == 0 .. N-1
Slots    == 1 .. S
Values   == Commands \cup {NoOp}
Ballots  == {b \in 0 .. MaxBallot : b % N \in Proposers}
NoBallot == -1
Owner(b) == b % N
Min(X) == CHOOSE x \in X : \A y \in X : x <= y
Max(X) == CHOOSE x \in X : \A y \in X : x >= y

\* The protocol's quorum (the only place QUORUM is read) and the true majority that
\* defines "chosen" in the invariants.
Majority(Q) == 2 * Cardinality(Q) > N
Quorum(Q)   == IF QUORUM THEN Majority(Q) ELSE Q # {}

Vote   == [bal : Ballots \cup {NoBallot}, val : Values \cup {NoVal}]
NoVote == [bal |-> NoBallot, val |-> NoVal]

Messages ==
         [type : {"1a"}, bal : Ballots, from : 1 .. S + 1]
    \cup [type : {"1b"}, acc : Procs, bal : Ballots, votes : [Slots -> Vote]]
    \cup [type : {"2a"}, bal : Ballots, slot : Slots, val : Values]
    \cup [type : {"2b"}, acc : Procs, bal : Ballots, slot : Slots, val : Values]

VARIABLES
    promised,  \* promised[a]: highest ballot a promised (durable)
    accepted,  \* accepted[a][s]: a's accepted (bal, val) at slot s (durable)
    msgs,      \* every message ever sent
    pbal,      \* pbal[p]: p's current ballot, NoBallot when not proposing (volatile)
    leading,   \* leading[p]: phase 1 of pbal[p] is done (volatile)
    plan,      \* plan[p][s]: value phase 1 imposes at s (adopted or NoOp), or Free (volatile)
    prop,      \* prop[p][s]: value p sent in 2a at s in ballot pbal[p], or NoVal (volatile)
    learned,   \* learned[l][s]: value l knows is chosen at s, or NoVal
    applied,   \* applied[l]: the values l applied, slots 1..Len (its snapshot: kept on crash)
    requests   \* commands clients submitted

vars == <<promised, accepted, msgs, pbal, leading, plan, prop, learned, applied,
          requests>>
pvars == <<pbal, leading, plan, prop>>
lvars == <<learned, applied>>

Send(m) == msgs' = msgs \cup {m}
\* The commit point: the lowest slot l has not learned (S + 1 when all are).
FirstUnlearned(l) == Min({s \in Slots : learned[l][s] = NoVal} \cup {S + 1})
\* Applied in slot order only (as part of learning): the learned slots 1, 2, .. up to the first gap.
Prefix(f) == LET n == Min({s \in Slots : f[s] = NoVal} \cup {S + 1}) - 1
             IN [i \in 1 .. n |-> f[i]]

\* The smallest ballot of p above its acceptor's promise (NoBallot: none left).
NextBallot(p) ==
    LET B == {b \in Ballots : Owner(b) = p /\ b > promised[p]}
    IN IF B = {} THEN NoBallot ELSE Min(B)
\* What acceptor a reports in a 1b: its votes at slots >= from.
Report(a, from) == [s \in Slots |-> IF s >= from THEN accepted[a][s] ELSE NoVote]

Init ==
    /\ promised = [a \in Procs |-> NoBallot]
    /\ accepted = [a \in Procs |-> [s \in Slots |-> NoVote]]
    /\ msgs = {}
    /\ pbal = [p \in Procs |-> NoBallot]
    /\ leading = [p \in Procs |-> FALSE]
    /\ plan = [p \in Procs |-> [s \in Slots |-> Free]]
    /\ prop = [p \in Procs |-> [s \in Slots |-> NoVal]]
    /\ learned = [l \in Procs |-> [s \in Slots |-> NoVal]]
    /\ applied = [l \in Procs |-> <<>>]
    /\ requests = {}

\* ---- clients -----------------------------------------------------------------
Request(c) ==
    /\ c \notin requests
    /\ requests' = requests \cup {c}
    /\ UNCHANGED <<promised, accepted, msgs, pvars, lvars>>

\* ---- phase 1 -----------------------------------------------------------------
\* A proposer (on a timeout, or preempted) takes its next ballot. Its own acceptor
\* promises b durably first (so a restarted proposer never reuses a ballot), then 1a goes
\* out to all; the proposer's own 1b is part of that step.
Phase1a(p) ==
    LET b == NextBallot(p)
        from == FirstUnlearned(p)
    IN /\ p \in Proposers /\ b # NoBallot
       /\ promised' = [promised EXCEPT ![p] = b]
       /\ pbal' = [pbal EXCEPT ![p] = b]
       /\ leading' = [leading EXCEPT ![p] = FALSE]
       /\ plan' = [plan EXCEPT ![p] = [s \in Slots |-> Free]]
       /\ prop' = [prop EXCEPT ![p] = [s \in Slots |-> NoVal]]
       /\ msgs' = msgs \cup {[type |-> "1a", bal |-> b, from |-> from],
                             [type |-> "1b", acc |-> p, bal |-> b, votes |-> Report(p, from)]}
       /\ UNCHANGED <<accepted, lvars, requests>>

\* An acceptor promises a ballot above its promise (durably) and reports its votes.
Promise(a) ==
    \E m \in msgs :
        /\ m.type = "1a" /\ m.bal > promised[a]
        /\ promised' = [promised EXCEPT ![a] = m.bal]
        /\ Send([type |-> "1b", acc |-> a, bal |-> m.bal, votes |-> Report(a, m.from)])
        /\ UNCHANGED <<accepted, pvars, lvars, requests>>

\* The plan from the 1b of quorum Q: per slot, the value of the highest ballot reported;
\* a slot below the highest reported one with no vote gets a no-op; the rest are Free.
PlanFrom(R) ==
    LET Reported(s) == {m.votes[s] : m \in R} \ {NoVote}
        Top == {s \in Slots : Reported(s) # {}}
    IN [s \in Slots |->
          IF Reported(s) # {}
          THEN (CHOOSE v \in Reported(s) : \A x \in Reported(s) : x.bal <= v.bal).val
          ELSE IF \E t \in Top : t > s THEN NoOp ELSE Free]

OneBs(b, Q) == {m \in msgs : m.type = "1b" /\ m.bal = b /\ m.acc \in Q}

\* On 1b of its ballot from a quorum Q (any quorum whose 1b are in), p leads. Slots below the
\* 1a's `from` are ones p learned (it only learns more until it crashes): Propose skips them.
BecomeLeader(p) ==
    /\ pbal[p] # NoBallot /\ ~leading[p]
    /\ \E Q \in SUBSET Procs :
         /\ Quorum(Q)
         /\ \A a \in Q : \E m \in OneBs(pbal[p], Q) : m.acc = a
         /\ plan' = [plan EXCEPT ![p] = PlanFrom(OneBs(pbal[p], Q))]
    /\ leading' = [leading EXCEPT ![p] = TRUE]
    /\ UNCHANGED <<promised, accepted, msgs, pbal, prop, lvars, requests>>

\* ---- phase 2 -----------------------------------------------------------------
InWindow(p, s) == FirstUnlearned(p) <= s /\ s < FirstUnlearned(p) + W
\* Commands p already has in a slot (proposed in this ballot, or learned).
Used(p) == {prop[p][t] : t \in Slots} \cup {learned[p][t] : t \in Slots}

\* Send 2a(b, s, v) once per slot and ballot: the plan's value, else a new command. The
\* leader's own acceptor accepts it first (durably), unless it promised a higher ballot.
Propose(p, s) ==
    LET b == pbal[p] IN
    /\ leading[p] /\ InWindow(p, s)
    /\ learned[p][s] = NoVal /\ prop[p][s] = NoVal
    /\ \E v \in IF plan[p][s] # Free THEN {plan[p][s]} ELSE requests \ Used(p) :
         /\ prop' = [prop EXCEPT ![p][s] = v]
         /\ IF b >= promised[p]
            THEN /\ promised' = [promised EXCEPT ![p] = b]
                 /\ accepted' = [accepted EXCEPT ![p][s] = [bal |-> b, val |-> v]]
                 /\ msgs' = msgs \cup {[type |-> "2a", bal |-> b, slot |-> s, val |-> v],
                                       [type |-> "2b", acc |-> p, bal |-> b, slot |-> s, val |-> v]}
            ELSE /\ Send([type |-> "2a", bal |-> b, slot |-> s, val |-> v])
                 /\ UNCHANGED <<promised, accepted>>
    /\ UNCHANGED <<pbal, leading, plan, lvars, requests>>

\* An acceptor accepts a 2a at or above its promise, raises its promise, durably, answers 2b.
Accept(a) ==
    \E m \in msgs :
        /\ m.type = "2a" /\ m.bal >= promised[a]
        /\ accepted[a][m.slot] # [bal |-> m.bal, val |-> m.val]     \* (else a duplicate: no-op)
        /\ promised' = [promised EXCEPT ![a] = m.bal]
        /\ accepted' = [accepted EXCEPT ![a][m.slot] = [bal |-> m.bal, val |-> m.val]]
        /\ Send([type |-> "2b", acc |-> a, bal |-> m.bal, slot |-> m.slot, val |-> m.val])
        /\ UNCHANGED <<pvars, lvars, requests>>

\* ---- learning ----------------------------------------------------------------
TwoBs(b, s, v) == {a \in Procs : [type |-> "2b", acc |-> a, bal |-> b, slot |-> s, val |-> v]
                                  \in msgs}

\* The leader counts the 2b of its own ballot: 2b from a quorum for (s, v) = v chosen at s.
Learn(p, s) ==
    /\ leading[p] /\ learned[p][s] = NoVal
    /\ \E v \in Values :
         /\ Quorum(TwoBs(pbal[p], s, v))
         /\ learned' = [learned EXCEPT ![p][s] = v]
         /\ applied' = [applied EXCEPT ![p] = Prefix(learned'[p])]
    /\ UNCHANGED <<promised, accepted, msgs, pvars, requests>>

\* Catch-up: a lagging l takes k's applied prefix (the chosen entries, or a snapshot of
\* them when k trimmed its log), then applies what follows from its own learned slots.
CatchUp(l, k) ==
    /\ l # k /\ Len(applied[k]) > Len(applied[l])
    /\ learned' = [learned EXCEPT ![l] =
                     [s \in Slots |-> IF s <= Len(applied[k]) THEN applied[k][s] ELSE @[s]]]
    /\ applied' = [applied EXCEPT ![l] = Prefix(learned'[l])]
    /\ UNCHANGED <<promised, accepted, msgs, pvars, requests>>

\* ---- failures ----------------------------------------------------------------
\* Crash and restart: promise and accepts are on disk, the applied prefix is the snapshot;
\* the proposer's state and the learned slots above the snapshot are lost.
Crash(p) ==
    /\ CRASH
    /\ pbal[p] # NoBallot \/ \E s \in Slots : s > Len(applied[p]) /\ learned[p][s] # NoVal
    /\ pbal' = [pbal EXCEPT ![p] = NoBallot]
    /\ leading' = [leading EXCEPT ![p] = FALSE]
    /\ plan' = [plan EXCEPT ![p] = [s \in Slots |-> Free]]
    /\ prop' = [prop EXCEPT ![p] = [s \in Slots |-> NoVal]]
    /\ learned' = [learned EXCEPT ![p] =
                     [s \in Slots |-> IF s <= Len(applied[p]) THEN @[s] ELSE NoVal]]
    /\ UNCHANGED <<promised, accepted, msgs, applied, requests>>

ClientNext == \E c \in Commands : Request(c)
ProposerNext(p) == Phase1a(p) \/ BecomeLeader(p) \/ \E s \in Slots : Propose(p, s)
AcceptorNext(a) == Promise(a) \/ Accept(a)
LearnerNext(l) ==
    \/ \E s \in Slots : Learn(l, s)
    \/ \E k \in Procs : CatchUp(l, k)

Next ==
    \/ ClientNext
    \/ \E p \in Procs : ProposerNext(p) \/ AcceptorNext(p) \/ LearnerNext(p) \/ Crash(p)
Spec == Init /\ [][Next]_vars

Symmetry == Permutations(Commands)

-----------------------------------------------------------------------------
\* Chosen: a majority sent 2b for v at s in one ballot (from the history of accepts), as
\* the set of <<slot, value>> pairs chosen so far.
ChosenSet ==
    LET B2 == {m \in msgs : m.type = "2b"}
        Same(m) == {n \in B2 : n.bal = m.bal /\ n.slot = m.slot /\ n.val = m.val}
    IN {<<m.slot, m.val>> : m \in {m \in B2 : Majority({n.acc : n \in Same(m)})}}

TypeOK ==
    /\ promised \in [Procs -> Ballots \cup {NoBallot}]
    /\ accepted \in [Procs -> [Slots -> Vote]]
    /\ msgs \subseteq Messages
    /\ pbal \in [Procs -> Ballots \cup {NoBallot}]
    /\ leading \in [Procs -> BOOLEAN]
    /\ plan \in [Procs -> [Slots -> Values \cup {Free}]]
    /\ prop \in [Procs -> [Slots -> Values \cup {NoVal}]]
    /\ learned \in [Procs -> [Slots -> Values \cup {NoVal}]]
    /\ \A l \in Procs : applied[l] \in Seq(Values) /\ Len(applied[l]) <= S
    /\ requests \subseteq Commands
    /\ \A a \in Procs, s \in Slots : accepted[a][s].bal <= promised[a]

\* At most one value is chosen per slot.
Inv_Agreement == \A x, y \in ChosenSet : x[1] = y[1] => x[2] = y[2]
\* What a learner learned or applied at a slot was chosen there.
Inv_LearnedChosen ==
    LET C == ChosenSet IN
    \A l \in Procs :
        /\ \A s \in Slots : learned[l][s] # NoVal => <<s, learned[l][s]>> \in C
        /\ \A i \in 1 .. Len(applied[l]) : applied[l][i] = learned[l][i]
\* Applied sequences are prefixes of one another.
Inv_AppliedPrefix ==
    \A l, k \in Procs :
        LET n == Min({Len(applied[l]), Len(applied[k])})
        IN SubSeq(applied[l], 1, n) = SubSeq(applied[k], 1, n)
\* A chosen command was submitted by a client (no-ops aside).
Inv_Validity == \A x \in ChosenSet : x[2] # NoOp => x[2] \in requests
=============================================================================
