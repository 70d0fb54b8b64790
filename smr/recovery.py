"""Restarting a member from its own logs: the driver-side half of `smr.core.restart`.

This module owns what every driver (the simulator, the node runtime) does with a member's logs
around `Replica.restarting`, so both do it the same way:

* `recover_member(me, meta, shard_logs, initial_members)` reads the metadata log (the last
  installed view and which shard logs hold no state, the last view proposal of that epoch, the
  restart acceptor state, the logs it offers a running group) and each durable shard log's last
  version, and returns the
  `Recovered` summary the core takes.
* `replay(log, apply, restore)` brings a fresh state machine to the log's last version: the
  latest snapshot, then every record above it, in order. It returns that version, which must
  equal `last_logged(log)` (the version `Recovered.logged` reports).
* `perform(log, request)` carries out a `LogTruncate` or `LogSnapshot` request of `Ready.persist`.

It takes opened `smr.log.Log` objects; opening them (and their file system) is the driver's
business. Only the core and the log are imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from smr.core.ready import LogSnapshot, LogTruncate
from smr.core.restart import (
    Acceptor,
    Recovered,
    decode_offer_meta,
    decode_view_meta,
    decode_view_roster,
)
from smr.core.views import Proposal, Roster
from smr.log import Log, Record

Key = tuple[int, int]


def last_logged(log: Log) -> int:
    """The last version the log holds: its last record, or its latest snapshot if that is newer;
    0 for an empty log."""
    snaps = log.snapshot_versions()
    return max(0, log.last_version, snaps[-1] if snaps else 0)


def recover_member(
    me: int,
    meta: Log | None,
    shard_logs: Mapping[Key, Log],
    initial_members: Sequence[int],
) -> Recovered:
    """The restart summary of member `me`. Without a logged view the member is still in the
    founding view (`initial_members`, epoch 1), whose shards all start from the empty state."""
    epoch, members = 1, tuple(initial_members)
    awaiting: tuple[Key, ...] = ()
    proposal = None
    acceptor = Acceptor()
    offer_epoch = 0
    offerable: tuple[Key, ...] = ()
    roster = Roster()
    if meta is not None:
        data = meta.meta_get("view")
        if data is not None:
            epoch, members, awaiting = decode_view_meta(data)
            roster = decode_view_roster(data)
        prop = meta.meta_get(f"view-proposal-{epoch}")
        if prop is not None:
            proposal = Proposal.decode(prop)
        acc = meta.meta_get("restart-acceptor")
        if acc is not None:
            acceptor = Acceptor.decode(acc)
        offer = meta.meta_get("offer")
        if offer:
            offer_epoch, offerable = decode_offer_meta(offer)
    if not members:
        raise ValueError(f"member {me} has no view to restart from")
    logged = {key: last_logged(log) for key, log in shard_logs.items()}
    return Recovered(
        epoch,
        tuple(members),
        tuple(awaiting),
        proposal,
        logged,
        acceptor,
        offer_epoch,
        offerable,
        roster,
    )


def replay(log: Log, apply: Callable[[Record], None], restore: Callable[[bytes], None]) -> int:
    """Restore the latest snapshot (if any), then apply every record above it in order. Returns
    the version the state machine is at (0 if the log is empty)."""
    snap = log.latest_snapshot()
    version = 0
    start = None
    if snap is not None:
        restore(snap.data)
        version = snap.version
        start = snap.version + 1
    for record in log.iter(from_version=start) if log.last_version > version else ():
        apply(record)
        version = record.version
    assert version == last_logged(log), (version, last_logged(log))
    return version


def perform(log: Log, request: LogTruncate | LogSnapshot) -> None:
    """Carry out a truncation or a snapshot replacement of `Ready.persist` on this shard's log
    (both durable when this returns)."""
    if isinstance(request, LogTruncate):
        log.truncate_after(request.version)
        return
    log.truncate_after(0)
    log.save_snapshot(request.version, request.data)
