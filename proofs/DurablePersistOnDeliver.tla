----------------------- MODULE DurablePersistOnDeliver -----------------------
(* Broken on purpose: a member raises `persisted` when it delivers (hands the  *)
(* entries to the log), not when the driver reports them synced. TLC must      *)
(* refute Inv_FrontierOnDisk.                                                  *)
EXTENDS Multicast

ReportOnDeliver(m) ==
    /\ DURABLE
    /\ persisted[m] < delivered[m]
    /\ persisted' = [persisted EXCEPT ![m] = delivered[m]]
    /\ UNCHANGED <<sent, kind, data, received, delivered, dlog, ondisk>>

BrokenNext ==
    \/ \E s \in Ranks : SendData(s) \/ SendNulls(s)
    \/ \E m \in Members, s \in Ranks : Receive(m, s)
    \/ \E m \in Members : Deliver(m) \/ Sync(m) \/ ReportOnDeliver(m)

BrokenSpec == Init /\ [][BrokenNext]_vars
===============================================================================
