"""The client-process side of every system: `open_submitter(target)` returns
`(submit, close)` where `submit(payload)` returns a future-like object (`add_done_callback`,
`exception`), and `open_pipelined(target)` the form that submits many payloads in one call
(smr's `submit_many`). Everything system-specific the client process does is here;
`smr_submitter` and `open_pipelined` are the functions to adjust if the smr client API differs
from the one they were written against."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smr.bench import frames

Submitter = tuple[Callable[[bytes], Any], Callable[[], None]]
Pipelined = tuple[Callable[[list[bytes]], list[Any]], Callable[[], None]]


def smr_submitter(config_path: str, replies: str = "all", reads: str = "") -> Submitter:
    """Append to shard 0 of the cluster's BlobLog through the smr client:
    `smr.connect(config).subgroup(BlobLog, replies=replies).submit("append", data)`; with
    `reads` ("linearizable" or "sequential"), query its stats at that level instead (the payload
    is not sent)."""
    import smr
    from smr.statemachines import BlobLog

    client = smr.connect(config_path)
    log = client.subgroup(BlobLog, replies=replies)
    if reads:
        return (lambda payload: log.query("stats", consistency=reads)), client.close
    return (lambda payload: log.submit("append", payload)), client.close


def open_pipelined(target: dict) -> Pipelined:
    """`(submit_many, close)` for `target`: `submit_many(payloads)` appends them all through
    one call of the client library's pipelined form and returns a future each. Only smr's client
    has one (`SubgroupClient.submit_many`); its commands only."""
    if target.get("system") != "smr" or target.get("reads"):
        raise ValueError("only smr's commands have a pipelined submit (submit_many)")
    import smr
    from smr.statemachines import BlobLog

    client = smr.connect(target["config_path"])
    log = client.subgroup(BlobLog, replies=target.get("replies", "all"))
    return (lambda payloads: log.submit_many("append", [(p,) for p in payloads])), client.close


def frame_submitter(port: int) -> Submitter:
    """pysyncobj replicas and the raw echo server both answer APPEND frames."""
    client = frames.FrameClient("127.0.0.1", port)
    return (lambda payload: client.request(frames.APPEND, payload)), client.close


def open_submitter(target: dict) -> Submitter:
    """`target` is {"system": "smr", "config_path": ...}, {"system": "pysyncobj"|"raw",
    "port": ...}, {"system": "etcd", "endpoint": ...} or {"system": "zookeeper", "hosts": ...}."""
    system = target.get("system")
    if system == "smr":
        return smr_submitter(
            target["config_path"], target.get("replies", "all"), target.get("reads", "")
        )
    if system in ("pysyncobj", "raw"):
        return frame_submitter(int(target["port"]))
    if system == "etcd":
        from smr.bench import etcd_ref

        return etcd_ref.etcd_submitter(target["endpoint"], target.get("reads", ""))
    if system == "zookeeper":
        from smr.bench import zookeeper_ref

        return zookeeper_ref.zookeeper_submitter(target["hosts"], target.get("reads", ""))
    raise ValueError(f"unknown system {system!r}: expected smr, pysyncobj, raw, etcd or zookeeper")
