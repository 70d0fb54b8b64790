------------------------------ MODULE Restart ------------------------------
(***************************************************************************)
(* Restart after total failure. Members 0..N-1 run view 1; a view change *)
(* excludes member N-1 (its log stays at view 1's ragged trim) and forms  *)
(* view 2 of the others: a leader proposes the trim T, members log the    *)
(* proposal (which tells them view 2 may exist), commit, deliver to T,    *)
(* install after everyone persisted T, then append in view 2. Any member *)
(* may crash at any time, keeping its log (everything on disk is synced). *)
(* When every member is down, members boot, each with its log and its     *)
(* last known view (installed, or logged as a proposal); each joins one  *)
(* restart leader. A leader whose joiners include a majority of the       *)
(* latest view any of them knows takes the longest of their logs as the  *)
(* agreed point, every joiner truncates to it or receives the suffix, and *)
(* the new view's epoch follows the latest known one.                     *)
(* Code: smr/core/restart.py, Replica.restarting (mapping in README.md).  *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS N,         \* members of view 1 (view 2 = all but N-1)
          L,         \* entries a log may hold
          MAJORITY,  \* TRUE: a restart needs a majority of the last view (FALSE: broken)
          LONGEST    \* TRUE: the agreed point is the longest log (FALSE: shortest, broken)

Members == 0 .. N-1
NONE == N                                  \* joined to no restart leader yet
V(e) == IF e = 1 THEN Members ELSE Members \ {N-1}
Min(X) == CHOOSE x \in X : \A y \in X : x <= y
Max(X) == CHOOSE x \in X : \A y \in X : x >= y

VARIABLES
    up,        \* up[m]: the process runs
    log,       \* log[m]: entries on m's disk (a prefix of the one total order)
    known,     \* known[m]: the latest view m knows (installed, or proposed and logged)
    inst,      \* inst[m]: the view m installed
    T,         \* view 1's ragged trim once proposed (NoTrim before)
    down,      \* total failure happened: the restart phase
    joined,    \* joined[m]: the restart leader m joined
    F,         \* history: the highest global persistence frontier reported before the failure
    views,     \* history: <<epoch, members>> of every view decided (before or at restart)
    rviews     \* history: <<epoch, members, agreed, leader>> of every restart view

vars == <<up, log, known, inst, T, down, joined, F, views, rviews>>
NoTrim == L + 1
Committed == T # NoTrim /\ \A m \in V(2) : known[m] = 2
\* The frontier members report: min over the view of what is persisted (in view 2, once
\* someone installed it, every member of V(2) persisted T first: CanInstall).
Frontier == IF \E m \in Members : inst[m] = 2
            THEN Min({log[m] : m \in V(2)})
            ELSE Min({log[m] : m \in Members})

Init ==
    /\ up = [m \in Members |-> TRUE]
    /\ log = [m \in Members |-> 0]
    /\ known = [m \in Members |-> 1]
    /\ inst = [m \in Members |-> 1]
    /\ T = NoTrim
    /\ down = FALSE
    /\ joined = [m \in Members |-> NONE]
    /\ F = 0
    /\ views = {<<1, Members>>}
    /\ rviews = {}

Report == F' = Max({F, Frontier'})          \* the frontier only grows; a stale read is lower

\* ---- before the failure ----------------------------------------------------
\* Deliver and persist the next entry in the installed view (frozen at the wedge in view 1).
Append(m) ==
    /\ ~down /\ up[m] /\ log[m] < L
    /\ IF inst[m] = 1 THEN T = NoTrim ELSE TRUE
    /\ log' = [log EXCEPT ![m] = @ + 1]
    /\ UNCHANGED <<up, known, inst, T, down, joined, views, rviews>>
    /\ Report

\* The view-change leader proposes the trim: at or above everything delivered (Inv_TrimAgreement).
ProposeTrim ==
    /\ ~down /\ T = NoTrim /\ up[0]
    /\ \E t \in Max({log[m] : m \in Members}) .. L : T' = t
    /\ UNCHANGED <<up, log, known, inst, down, joined, F, views, rviews>>

\* Log the proposal (LogMeta view-proposal-e, synced) and acknowledge: m now knows of view 2.
LogProposal(m) ==
    /\ ~down /\ up[m] /\ m \in V(2) /\ T # NoTrim /\ known[m] = 1
    /\ known' = [known EXCEPT ![m] = 2]
    /\ views' = IF \A r \in V(2) : known'[r] = 2 THEN views \cup {<<2, V(2)>>} ELSE views
    /\ UNCHANGED <<up, log, inst, T, down, joined, F, rviews>>

\* The trim: deliver (and persist) exactly to T, once committed.
Trim(m) ==
    /\ ~down /\ up[m] /\ m \in V(2) /\ Committed /\ log[m] < T
    /\ log' = [log EXCEPT ![m] = T]
    /\ UNCHANGED <<up, known, inst, T, down, joined, views, rviews>>
    /\ Report

Install(m) ==
    /\ ~down /\ up[m] /\ m \in V(2) /\ Committed /\ inst[m] = 1
    /\ \A r \in V(2) : log[r] >= T
    /\ inst' = [inst EXCEPT ![m] = 2]
    /\ UNCHANGED <<up, log, known, T, down, joined, views, rviews>>
    /\ Report

Crash(m) ==
    /\ ~down /\ up[m]
    /\ up' = [up EXCEPT ![m] = FALSE]
    /\ down' = \A r \in Members : ~up'[r]    \* the last one down: total failure
    /\ UNCHANGED <<log, known, inst, T, joined, F, views, rviews>>

\* ---- restart ----------------------------------------------------------------
Boot(m) ==
    /\ down /\ ~up[m]
    /\ up' = [up EXCEPT ![m] = TRUE]
    /\ UNCHANGED <<log, known, inst, T, down, joined, F, views, rviews>>

\* m joins restart leader l (itself, to lead): once, so two leaders never share a member.
Join(m, l) ==
    /\ down /\ up[m] /\ up[l] /\ joined[m] = NONE
    /\ (l = m \/ joined[l] = l)
    /\ joined' = [joined EXCEPT ![m] = l]
    /\ UNCHANGED <<up, log, known, inst, T, down, F, views, rviews>>

RQuorum(Q, e) == IF MAJORITY THEN 2 * Cardinality(Q \cap V(e)) > Cardinality(V(e))
                 ELSE Q \cap V(e) # {}
Agreed(Q) == IF LONGEST THEN Max({log[m] : m \in Q}) ELSE Min({log[m] : m \in Q})

RestartView(l) ==
    LET Q == {m \in Members : joined[m] = l}
        e == Max({known[m] : m \in Q})
    IN /\ down /\ joined[l] = l
       /\ ~\E v \in rviews : v[4] = l              \* l leads once
       /\ RQuorum(Q, e)
       /\ LET a == Agreed(Q) IN
            /\ log' = [m \in Members |-> IF m \in Q THEN a ELSE log[m]]
            /\ views' = views \cup {<<e + 1, Q>>}
            /\ rviews' = rviews \cup {<<e + 1, Q, a, l>>}
       /\ UNCHANGED <<up, known, inst, T, down, joined, F>>

Next ==
    \/ ProposeTrim
    \/ \E m \in Members : Append(m) \/ LogProposal(m) \/ Trim(m) \/ Install(m) \/ Crash(m)
    \/ \E m \in Members : Boot(m) \/ RestartView(m)
    \/ \E m, l \in Members : Join(m, l)
Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
\* Nothing at or below the old global persistence frontier is lost: every restart view's
\* agreed point covers it, and its members' logs hold it.
Inv_FrontierKept ==
    /\ \A v \in rviews : v[3] >= F
    /\ \A v \in rviews : \A m \in v[2] : log[m] >= F
\* At most one view per epoch, across the restart.
Inv_OneViewPerEpoch == \A v, w \in views : v[1] = w[1] => v[2] = w[2]
=============================================================================
