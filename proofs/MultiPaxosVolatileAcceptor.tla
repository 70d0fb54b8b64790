---------------------- MODULE MultiPaxosVolatileAcceptor ----------------------
(* Broken on purpose: an acceptor answers 1b and 2b before its promise and     *)
(* accepts are on disk, so a crash loses them. A value chosen by acceptors     *)
(* {0, 1} in ballot 0 is forgotten by 1 when it restarts; the leader of        *)
(* ballot 1 hears from {1, 2}, sees nothing accepted, and gets its own command *)
(* chosen. TLC must refute Inv_Agreement.                                      *)
EXTENDS MultiPaxos

CrashForgetting(p) ==
    /\ CRASH
    /\ pbal' = [pbal EXCEPT ![p] = NoBallot]
    /\ leading' = [leading EXCEPT ![p] = FALSE]
    /\ plan' = [plan EXCEPT ![p] = [s \in Slots |-> Free]]
    /\ prop' = [prop EXCEPT ![p] = [s \in Slots |-> NoVal]]
    /\ learned' = [learned EXCEPT ![p] =
                     [s \in Slots |-> IF s <= Len(applied[p]) THEN @[s] ELSE NoVal]]
    /\ promised' = [promised EXCEPT ![p] = NoBallot]
    /\ accepted' = [accepted EXCEPT ![p] = [s \in Slots |-> NoVote]]
    /\ UNCHANGED <<msgs, applied, requests>>

BrokenNext ==
    \/ ClientNext
    \/ \E p \in Procs :
         ProposerNext(p) \/ AcceptorNext(p) \/ LearnerNext(p) \/ CrashForgetting(p)
BrokenSpec == Init /\ [][BrokenNext]_vars
===============================================================================
