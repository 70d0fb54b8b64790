-------------------- MODULE ViewChangeInstallBeforePersist --------------------
(* Broken on purpose: a member installs the next view as soon as it applied the *)
(* trim, without waiting until every unsuspected member persisted that far.     *)
(* TLC must refute Inv_DurableAcrossViews.                                      *)
EXTENDS ViewChange

InstallEarly(m) ==
    /\ Active(m) /\ trimmed[m]
    /\ installed' = [installed EXCEPT ![m] = TRUE]
    /\ UNCHANGED <<alive, halted, susp, wedged, ballot, followed, prop, acks, logged, decided,
                   committedP, trimmed, joinReq, nCrash, nFalse>> /\ UNCHANGED MCvars

BrokenNext ==
    MCNext \/ FaultNext \/ \E m \in Members : VCNext(m) \/ Ack(m) \/ InstallEarly(m)
BrokenSpec == Init /\ [][BrokenNext]_vars
===============================================================================
