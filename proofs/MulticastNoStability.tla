------------------------- MODULE MulticastNoStability -------------------------
(* Broken on purpose: a member delivers what it received itself (its own seq), *)
(* without waiting for every member to have received it. TLC must refute      *)
(* Inv_Stability.                                                              *)
EXTENDS Multicast

DeliverOnOwnReceipt(m) ==
    \E c \in (delivered[m] + 1) .. SeqCount(received[m]) :
        /\ dlog' = [dlog EXCEPT ![m] = @ \o DataIn(delivered[m], c)]
        /\ delivered' = [delivered EXCEPT ![m] = c]
        /\ UNCHANGED <<sent, kind, data, received, ondisk, persisted>>

BrokenNext ==
    \/ \E s \in Ranks : SendData(s) \/ SendNulls(s)
    \/ \E m \in Members, s \in Ranks : Receive(m, s)
    \/ \E m \in Members : DeliverOnOwnReceipt(m) \/ Sync(m) \/ ReportPersisted(m)

BrokenSpec == Init /\ [][BrokenNext]_vars
===============================================================================
