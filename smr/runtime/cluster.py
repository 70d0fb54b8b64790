"""A local cluster: member processes on this host, for `smr cluster`, `smr demo`, benchmarks and
process-level tests.

This module owns starting, signalling and stopping `smr node` processes from one configuration
file, and the `cluster.pids` file that lets another command (`smr cluster status|down`) find them.
Each member writes its structured log to `<data dir>/member-<id>.log`.

    with LocalCluster(nodes=3, transport="tcp", mode="durable", data_dir=d) as cluster:
        client = smr.connect(cluster.config_path)
        cluster.kill(3); cluster.restart(3)

Leaving the `with` block stops every member (SIGTERM, then SIGKILL after a grace period), so no
process outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from smr.runtime.config import ClusterConfig, load, write_local

STOP_GRACE_S = 5.0


class ClusterError(Exception):
    """A member did not start, or the cluster did not form in time."""


class LocalCluster:
    def __init__(
        self,
        nodes: int = 3,
        *,
        data_dir: str,
        transport: str = "auto",
        mode: str = "durable",
        types: tuple[str, ...] | list[Any] = ("smr.statemachines:KVStore",),
        timeouts: dict[str, float] | None = None,
        config_path: str | None = None,
        spares: int = 0,
        metrics: bool = False,
        member_env: dict[int, dict[str, str]] | None = None,
        tls: bool = False,
    ):
        """`member_env`: extra environment variables of a member's process (`smr chaos` runs
        its fsync-fault shim this way). `tls`: a local CA and certificates in `data_dir/tls`
        and a `[tls]` section (mutual TLS on the member links and client ports; clients present
        `smr-client-admin`, the configuration's `client_cert`)."""
        if transport == "verbs":
            from smr.transport.verbs import check_available

            check_available()  # TransportUnavailable: one line, before any process starts
        self.data_dir = os.path.abspath(data_dir)
        names = tuple(t if isinstance(t, str) else f"{t.__module__}:{t.__name__}" for t in types)
        if config_path is None:
            config_path = write_local(
                self.data_dir,
                nodes=nodes,
                types=names,
                mode=mode,
                transport=transport,
                timeouts=timeouts,
                spares=spares,
                metrics=metrics,
                tls=tls,
            )
        self.config_path = config_path
        self.config: ClusterConfig = load(config_path)
        self.procs: dict[int, subprocess.Popen] = {}
        self.member_env = member_env or {}

    @property
    def pids(self) -> dict[int, int]:
        return {m: p.pid for m, p in self.procs.items() if p.poll() is None}

    def log_path(self, member: int) -> str:
        return os.path.join(self.data_dir, f"member-{member}.log")

    def start(self, members: list[int] | None = None) -> None:
        for m in members or list(self.config.founders):
            self._spawn(m)
        self._write_pids()

    def _spawn(self, member: int) -> None:
        old = self.procs.get(member)
        if old is not None and old.poll() is None:
            raise ClusterError(f"member {member} is already running (pid {old.pid})")
        with open(self.log_path(member), "ab") as out:
            self.procs[member] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "smr.runtime",
                    "--config",
                    self.config_path,
                    "--id",
                    str(member),
                ],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **self.member_env.get(member, {})},
            )

    def _write_pids(self) -> None:
        path = os.path.join(self.data_dir, "cluster.pids")
        with open(path + ".tmp", "w") as f:
            json.dump({str(m): pid for m, pid in self.pids.items()}, f)
        os.replace(path + ".tmp", path)

    def wait_ready(self, members: list[int] | None = None, timeout_s: float = 30.0) -> dict:
        """Wait until every one of `members` (default: the founders) is active in one view that
        contains them all; return that member's status."""
        from smr.client import ClientError, connect

        want = set(members or self.config.founders)
        deadline = time.monotonic() + timeout_s
        last: Any = "no answer"
        while time.monotonic() < deadline:
            for m, p in self.procs.items():
                if m in want and p.poll() is not None:
                    raise ClusterError(
                        f"member {m} exited with status {p.returncode}; see {self.log_path(m)}"
                    )
            try:
                statuses = []
                for m in sorted(want):
                    with connect(self.config, member=m, timeout_s=2.0) as c:
                        if c.member != m:
                            break
                        statuses.append(c.status())
                else:
                    epochs = {(s["epoch"], tuple(s["members"])) for s in statuses}
                    if (
                        all(s["status"] == "active" for s in statuses)
                        and len(epochs) == 1
                        and want <= set(statuses[0]["members"])
                    ):
                        return statuses[0]
                    last = [(s["member"], s["status"], s["epoch"]) for s in statuses]
            except (ClientError, TimeoutError, OSError) as e:
                last = str(e)
            time.sleep(0.1)
        raise ClusterError(f"the cluster did not form within {timeout_s} s: {last}")

    def signal(self, member: int, sig: int) -> None:
        p = self.procs.get(member)
        if p is None or p.poll() is not None:
            raise ClusterError(f"member {member} is not running")
        os.kill(p.pid, sig)

    def kill(self, member: int) -> None:
        """SIGKILL: the member stops at once, without flushing anything."""
        self.signal(member, signal.SIGKILL)
        self.procs[member].wait()
        self._write_pids()

    def pause(self, member: int) -> None:
        self.signal(member, signal.SIGSTOP)

    def resume(self, member: int) -> None:
        self.signal(member, signal.SIGCONT)

    def restart(self, member: int) -> None:
        """Start a member again (after a kill or a halt): it rejoins with state transfer."""
        p = self.procs.get(member)
        if p is not None and p.poll() is None:
            raise ClusterError(f"member {member} is still running")
        self._spawn(member)
        self._write_pids()

    def stop(self, members: list[int] | None = None) -> dict[int, int]:
        """SIGTERM (a clean shutdown), then SIGKILL after a grace period; return exit codes."""
        targets = {m: p for m, p in self.procs.items() if members is None or m in members}
        for p in targets.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)  # a paused member must be able to exit
                    p.terminate()
                except ProcessLookupError:
                    pass
        codes = {}
        deadline = time.monotonic() + STOP_GRACE_S
        for m, p in targets.items():
            try:
                codes[m] = p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[m] = p.wait()
        self._write_pids()
        return codes

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_from_pidfile(data_dir: str) -> list[int]:
    """`smr cluster down`: stop the members a previous `smr cluster up` started."""
    path = os.path.join(data_dir, "cluster.pids")
    try:
        with open(path) as f:
            pids = {int(m): pid for m, pid in json.load(f).items()}
    except FileNotFoundError:
        return []
    stopped = []
    for m, pid in pids.items():
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
            stopped.append(m)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + STOP_GRACE_S
    for pid in pids.values():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    os.remove(path)
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True
