--------------------- MODULE MultiPaxosAcceptBelowPromise ---------------------
(* Broken on purpose: an acceptor accepts a 2a whatever its ballot, also below *)
(* the ballot it promised (its promise only rises). A leader of ballot 1 gets  *)
(* its value chosen; the leader of ballot 0, whose 1b quorum promised before,  *)
(* then gets another value accepted by a majority in ballot 0. TLC must refute *)
(* Inv_Agreement.                                                              *)
EXTENDS MultiPaxos

AcceptBelowPromise(a) ==
    \E m \in msgs :
        /\ m.type = "2a"
        /\ accepted[a][m.slot] # [bal |-> m.bal, val |-> m.val]
        /\ promised' = [promised EXCEPT ![a] = Max({@, m.bal})]
        /\ accepted' = [accepted EXCEPT ![a][m.slot] = [bal |-> m.bal, val |-> m.val]]
        /\ Send([type |-> "2b", acc |-> a, bal |-> m.bal, slot |-> m.slot, val |-> m.val])
        /\ UNCHANGED <<pvars, lvars, requests>>

BrokenNext ==
    \/ ClientNext
    \/ \E p \in Procs :
         \/ ProposerNext(p) \/ Promise(p) \/ AcceptBelowPromise(p) \/ LearnerNext(p)
         \/ Crash(p)
BrokenSpec == Init /\ [][BrokenNext]_vars
===============================================================================
