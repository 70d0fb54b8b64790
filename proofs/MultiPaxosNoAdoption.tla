------------------------- MODULE MultiPaxosNoAdoption -------------------------
(* Broken on purpose: a new leader ignores the accepted values its 1b report   *)
(* (no adoption, no no-ops) and treats every slot as free for its own client   *)
(* commands. A value chosen in ballot 0 is replaced in ballot 1 by a leader    *)
(* whose quorum includes an acceptor that accepted it. TLC must refute         *)
(* Inv_Agreement.                                                              *)
EXTENDS MultiPaxos

BecomeLeaderNoAdoption(p) ==
    /\ pbal[p] # NoBallot /\ ~leading[p]
    /\ \E Q \in SUBSET Procs :
         /\ Quorum(Q)
         /\ \A a \in Q : \E m \in OneBs(pbal[p], Q) : m.acc = a
    /\ plan' = [plan EXCEPT ![p] = [s \in Slots |-> Free]]
    /\ leading' = [leading EXCEPT ![p] = TRUE]
    /\ UNCHANGED <<promised, accepted, msgs, pbal, prop, lvars, requests>>

BrokenNext ==
    \/ ClientNext
    \/ \E p \in Procs :
         \/ Phase1a(p) \/ BecomeLeaderNoAdoption(p) \/ \E s \in Slots : Propose(p, s)
         \/ AcceptorNext(p) \/ LearnerNext(p) \/ Crash(p)
BrokenSpec == Init /\ [][BrokenNext]_vars
===============================================================================
