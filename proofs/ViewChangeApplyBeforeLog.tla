----------------------- MODULE ViewChangeApplyBeforeLog -----------------------
(* Broken on purpose: a follower applies the ragged trim of the proposal it     *)
(* sees in its leader's row at once, before logging and acknowledging it (so    *)
(* before it is decided). When that leader fails, the successor, seeing no      *)
(* acknowledgement, computes another trim from other survivors. TLC must        *)
(* refute Inv_TrimAgreement (a member delivered beyond the decided trim).       *)
EXTENDS ViewChange

ApplyEarly(m) ==
    /\ CanAck(m)
    /\ delivered' = [delivered EXCEPT ![m] =
                        Max({@, TrimCount(prop[ballot[m] - 1].trim)})]
    /\ UNCHANGED <<sent, received, ondisk>> /\ UNCHANGED VCvars

BrokenNext == Next \/ \E m \in Members : ApplyEarly(m)
BrokenSpec == Init /\ [][BrokenNext]_vars
===============================================================================
