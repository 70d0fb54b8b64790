------------------------- MODULE ViewChangeNoAdoption -------------------------
(* Broken on purpose: a new leader ignores the proposals its followers already  *)
(* acknowledged and always proposes its own survivors and trim (no leader       *)
(* failover adoption, Derecho's #126). A leader commits and fails before the    *)
(* others learn it; its successor commits something else. TLC must refute       *)
(* Inv_OneViewPerEpoch.                                                         *)
EXTENDS ViewChange

ProposeFresh(m) ==
    LET b == m + 1
        rows == Unsusp(m)
        P == [bal |-> b, mem |-> rows,
              trim |-> [k \in Ranks |-> Min({received[r][k] : r \in rows})]]
    IN /\ Active(m) /\ ballot[m] = b /\ decided[m] = NoP /\ prop[m].bal < b
       /\ Majority(rows)
       /\ \A r \in rows : wedged[r] /\ b \in followed[r]
       /\ prop' = [prop EXCEPT ![m] = P]
       /\ logged' = [logged EXCEPT ![m] = @ \cup {P}]
       /\ acks' = [acks EXCEPT ![m] = @ \cup {P}]
       /\ UNCHANGED <<alive, halted, susp, wedged, ballot, followed, decided,
                      committedP, trimmed, installed, joinReq, nCrash, nFalse>>
       /\ UNCHANGED MCvars

BrokenNext ==
    \/ MCNext \/ FaultNext
    \/ \E m \in Members :
         \/ Wedge(m) \/ HaltMinority(m) \/ Follow(m) \/ ProposeFresh(m) \/ Commit(m)
         \/ Learn(m) \/ Trim(m) \/ Ack(m) \/ Install(m)
BrokenSpec == Init /\ [][BrokenNext]_vars
===============================================================================
