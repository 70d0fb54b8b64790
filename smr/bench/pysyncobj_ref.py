"""pysyncobj as a reference system: three `SyncObj` replicas of a BlobLog equivalent, each in a
process of its own on 127.0.0.1, each behind a frame server (`smr.bench.frames`) through which
the bench client calls `append` with a callback, the way a pysyncobj application calls it.

Configurations, both pysyncobj's own options:
* `batched`: the defaults (`appendEntriesUseBatch=True`: entries wait for the next
  `appendEntriesPeriod` tick, 0.1 s, and go out together) — its throughput configuration;
* `unbatched`: `appendEntriesUseBatch=False`, so each command is sent to the followers as soon
  as the leader takes it — its latency configuration.
"durable" runs give each replica a `journalFile`: pysyncobj's FileJournal writes every entry
into an mmap'd file as soon as it is received; pysyncobj 0.3.17 never calls msync or fsync on
it during operation (only when the journal is closed), so it survives a process crash but not
a power loss. pysyncobj offers no option to fsync per entry.

`python -m smr.bench.pysyncobj_ref RAFT_PORTS SERVE_PORT INDEX batched|unbatched JOURNAL|-`
runs one replica; `start_replicas` starts three and waits until they have a leader."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import crc32c

from smr.bench import frames

INSTALL_HINT = "pip install 'smr-toolkit[bench]'  (pysyncobj==0.3.17 and matplotlib)"


def available() -> bool:
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        return False
    return True


def _make_replica(self_port: int, other_ports: list[int], batched: bool, journal: str | None):
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class BlobLogRef(SyncObj):
        """What `smr.statemachines.BlobLog` keeps: a count, total bytes, a chained CRC-32C."""

        def __init__(self) -> None:
            conf = SyncObjConf(
                appendEntriesUseBatch=batched,
                journalFile=journal,
                # The same bound on memory as BlobLog: compact away the log of payloads.
                logCompactionMinEntries=5000,
                logCompactionMinTime=60,
            )
            super().__init__(
                f"127.0.0.1:{self_port}", [f"127.0.0.1:{p}" for p in other_ports], conf=conf
            )
            self.count = 0
            self.total_bytes = 0
            self.checksum = 0

        @replicated
        def append(self, data: bytes) -> int:
            self.count += 1
            self.total_bytes += len(data)
            self.checksum = crc32c.crc32c(data, value=self.checksum)
            return self.count

    return BlobLogRef()


def serve_replica(
    raft_ports: list[int], serve_port: int, index: int, batched: bool, journal: str | None
) -> None:
    """Run replica `index` of `raft_ports` and answer frames on `serve_port`: APPEND calls
    `append` with a callback that sends the reply; LEADER answers the leader's raft port (empty
    if none yet); READY answers b"1" once the replica has caught up with the leader."""
    replica = _make_replica(
        raft_ports[index], [p for i, p in enumerate(raft_ports) if i != index], batched, journal
    )
    server = frames.listen(serve_port)
    while True:
        conn, _ = server.accept()
        frames._tune(conn)
        threading.Thread(target=_serve_conn, args=(replica, conn), daemon=True).start()


def _serve_conn(replica, conn: socket.socket) -> None:
    send_lock = threading.Lock()

    def reply(request_id: int, kind: int, body: bytes) -> None:
        with send_lock, contextlib.suppress(OSError):
            frames.send_frame(conn, request_id, kind, body)

    reader = frames.FrameReader(conn)
    try:
        while (frame := reader.read()) is not None:
            request_id, kind, body = frame
            if kind == frames.APPEND:

                def done(result, error, request_id=request_id) -> None:
                    # pysyncobj calls back from its tick thread; error 0 is FAIL_REASON.SUCCESS.
                    if error == 0:
                        reply(request_id, frames.OK, str(result).encode())
                    else:
                        reply(request_id, frames.ERROR, f"pysyncobj error {error}".encode())

                replica.append(bytes(body), callback=done)
            elif kind == frames.LEADER:
                leader = replica._getLeader()
                port = str(leader.address).rsplit(":", 1)[1] if leader is not None else ""
                reply(request_id, frames.OK, port.encode())
            elif kind == frames.STATS:
                # Read from the tick thread's state without a lock: a torn read shows up as a
                # disagreement that the next poll (Replicas.agree) clears.
                stats = f"{replica.count},{replica.total_bytes},{replica.checksum}"
                reply(request_id, frames.OK, stats.encode())
            elif kind == frames.READY:
                reply(request_id, frames.OK, b"1" if replica.isReady() else b"0")
            else:
                reply(request_id, frames.ERROR, f"unknown request kind {kind}".encode())
    except OSError:
        pass
    conn.close()


class Replicas:
    """Three pysyncobj replica processes; `leader_serve_port` is where the client should send
    commands (the leader's frame server: no forwarding hop)."""

    def __init__(
        self, batched: bool, work_dir: str, durable: bool, start_timeout_s: float = 30.0
    ) -> None:
        if not available():
            raise RuntimeError(f"pysyncobj is not installed: {INSTALL_HINT}")
        ports = frames.free_ports(6)
        self.raft_ports, self.serve_ports = ports[:3], ports[3:]
        self.procs: list[subprocess.Popen] = []
        self.log_paths = [os.path.join(work_dir, f"replica-{i}.log") for i in range(3)]
        for i in range(3):
            journal = os.path.join(work_dir, f"journal-{i}") if durable else "-"
            # pysyncobj logs warnings to stdout/stderr; keep them out of the table.
            with open(self.log_paths[i], "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "smr.bench.pysyncobj_ref",
                            ",".join(map(str, self.raft_ports)),
                            str(self.serve_ports[i]),
                            str(i),
                            "batched" if batched else "unbatched",
                            journal,
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        self.leader_serve_port = self._wait_for_leader(start_timeout_s)

    def _wait_for_leader(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ready = []
                for port in self.serve_ports:
                    client = frames.FrameClient("127.0.0.1", port, connect_timeout_s=1.0)
                    try:
                        leader = client.request(frames.LEADER).result(timeout=2.0)
                        ready.append(client.request(frames.READY).result(timeout=2.0) == b"1")
                    finally:
                        client.close()
                if leader and all(ready):
                    return self.serve_ports[self.raft_ports.index(int(leader))]
            except OSError:
                pass
            time.sleep(0.2)
        self.close()
        raise TimeoutError(f"pysyncobj replicas had no leader within {timeout_s} s")

    def stats(self) -> list[tuple[int, int, int]]:
        """(count, total bytes, checksum) at each replica."""
        result = []
        for port in self.serve_ports:
            client = frames.FrameClient("127.0.0.1", port, connect_timeout_s=2.0)
            try:
                text = client.request(frames.STATS).result(timeout=5.0).decode()
            finally:
                client.close()
            count, total, checksum = (int(v) for v in text.split(","))
            result.append((count, total, checksum))
        return result

    def agree(self, timeout_s: float = 10.0) -> tuple[bool, list[tuple[int, int, int]]]:
        """Whether the replicas reach the same (count, bytes, checksum) once the load stopped:
        pysyncobj warns "state machine may have diverged" under load, and this checks it."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            if len(set(stats)) == 1 or time.monotonic() > deadline:
                return len(set(stats)) == 1, stats
            time.sleep(0.2)

    def warnings(self) -> list[str]:
        """What the replicas logged (pysyncobj prints its warnings)."""
        lines = []
        for path in self.log_paths:
            with open(path, errors="replace") as f:
                lines += [line.rstrip() for line in f if line.strip()]
        return lines

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[4] not in ("batched", "unbatched"):
        sys.exit(
            "usage: python -m smr.bench.pysyncobj_ref RAFT_PORTS SERVE_PORT INDEX "
            "batched|unbatched JOURNAL|-"
        )
    serve_replica(
        [int(p) for p in sys.argv[1].split(",")],
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4] == "batched",
        None if sys.argv[5] == "-" else sys.argv[5],
    )
