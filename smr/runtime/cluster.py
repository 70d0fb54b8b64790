"""A local cluster: member processes on this host, for `smr cluster`, `smr demo`, benchmarks and
process-level tests.

This module owns starting, signalling and stopping `smr node` processes from one configuration
file, and the `cluster.pids` file that lets another command (`smr cluster status|down`) find them.
Each member writes its structured log to `<data dir>/member-<id>.log`.

Members added at runtime (`add_member`, `smr cluster add`) are not written into the
configuration: each starts with its addresses on its command line and the group learns them
with the view. This module keeps them in `cluster.added.json` beside the pids, so that a later
command on the same directory (`smr cluster status|remove|add`) reaches them even when every
member the file lists was removed. `remove_member` and `replace_member` go through a client.

    with LocalCluster(nodes=3, transport="tcp", mode="durable", data_dir=d) as cluster:
        client = smr.connect(cluster.config_path)
        cluster.kill(3); cluster.restart(3)

Leaving the `with` block stops every member (SIGTERM, then SIGKILL after a grace period), so no
process outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from smr.runtime.config import (
    ClusterConfig,
    ConfigError,
    MemberConfig,
    _free_ports,
    load,
    with_member,
    write_local,
)

STOP_GRACE_S = 5.0
ADDED_FILE = "cluster.added.json"  # members added at runtime: id -> their addresses
_MEMBER_DIR = re.compile(r"member-(\d+)(?:\.previous)?")


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
        protocol: str = "derecho",
    ):
        """`member_env`: extra environment variables of a member's process (`smr chaos` runs
        its fsync-fault shim this way). `tls`: a local CA and certificates in `data_dir/tls`
        and a `[tls]` section (mutual TLS on the member links and client ports; clients present
        `smr-client-admin`, the configuration's `client_cert`). `protocol`: "multipaxos" runs the
        built-in classic Multi-Paxos (`smr.runtime.paxos_node`) instead of the default."""
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
                protocol=protocol,
            )
        self.config_path = config_path
        self.config: ClusterConfig = load(config_path)
        # members added at runtime (not in the file): started with their addresses
        self.added: dict[int, MemberConfig] = load_added(self.data_dir)
        for m in self.added.values():
            self.config = with_member(self.config, m)
        self.procs: dict[int, subprocess.Popen] = {}
        self.member_env = member_env or {}
        self._started: list[int] = []  # what the last `start` started

    @property
    def pids(self) -> dict[int, int]:
        return {m: p.pid for m, p in self.procs.items() if p.poll() is None}

    def log_path(self, member: int) -> str:
        return os.path.join(self.data_dir, f"member-{member}.log")

    def start(self, members: list[int] | None = None) -> None:
        """Start `members` (default: `startable()`)."""
        self._started = members or self.startable()
        for m in self._started:
            self._spawn(m)
        self._write_pids()

    def startable(self) -> list[int]:
        """The members a start brings up: the founders and the members added at runtime, but
        those removed for good (their metadata says so: they would refuse to start)."""
        from smr.runtime.node import removed_reason

        members = sorted({*self.config.founders, *self.added})
        return [m for m in members if removed_reason(self.config, m) is None]

    def _spawn(self, member: int) -> None:
        old = self.procs.get(member)
        if old is not None and old.poll() is None:
            raise ClusterError(f"member {member} is already running (pid {old.pid})")
        command = [
            sys.executable,
            "-m",
            "smr.runtime",
            "--config",
            self.config_path,
            "--id",
            str(member),
        ]
        added = self.added.get(member)
        if added is not None:
            command += node_addresses(added)
        with open(self.log_path(member), "ab") as out:
            self.procs[member] = subprocess.Popen(
                command,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **self.member_env.get(member, {})},
            )

    def _write_pids(self) -> None:
        path = os.path.join(self.data_dir, "cluster.pids")
        # members another command started (`smr cluster up`, then `add`) stay listed while
        # they run
        others = {m: pid for m, pid in _read_pids(self.data_dir).items() if m not in self.procs}
        pids = {**{m: pid for m, pid in others.items() if _alive(pid)}, **self.pids}
        with open(path + ".tmp", "w") as f:
            json.dump({str(m): pid for m, pid in sorted(pids.items())}, f)
        os.replace(path + ".tmp", path)

    # -- membership at runtime --------------------------------------------------------------------

    def fresh_id(self) -> int:
        """An id no member ever had here: above every id the file lists, this directory added,
        a running member knows (removed ones included) or a data directory holds."""
        used = set(self.config.members) | set(self.added)
        status = self._any_status()
        if status is not None:
            used |= {a["id"] for a in status.get("addresses", [])}
            used |= set(status.get("retired", [])) | set(status.get("members", []))
        if os.path.isdir(self.config.data_dir):
            for name in os.listdir(self.config.data_dir):
                found = _MEMBER_DIR.fullmatch(name)
                if found is not None:
                    used.add(int(found.group(1)))
        return max(used) + 1

    def _any_status(self) -> dict | None:
        from smr.client import ClientError, connect

        try:
            with connect(self.config, timeout_s=2.0) as c:
                return c.status()
        except (ClientError, TimeoutError, OSError):
            return None

    def add_member(
        self,
        member: int | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        client_port: int | None = None,
        metrics_port: int | None = None,
    ) -> MemberConfig:
        """Start a member the configuration does not list (`smr node --id N --host H --port P
        --client-port C`): it joins the running group, which learns its addresses with the
        view, and receives its shards' state by transfer. `member` None: a fresh id
        (`fresh_id`); ports None: free ones on this host (a metrics port too when the listed
        members have one). Returns its addresses; `wait_member` waits until it serves. Raises
        `ConfigError` for an id or address already taken."""
        if member is None:
            member = self.fresh_id()
        elif member in self.config.members:
            raise ConfigError(
                f"member {member} is already a member of {self.config_path}: give a new id "
                "(ids are never reused), or none to pick one"
            )
        wants_metrics = metrics_port is None and any(
            m.metrics_port is not None for m in self.config.members.values()
        )
        free = iter(_free_ports(3))
        added = MemberConfig(
            member,
            host,
            port if port is not None else next(free),
            client_port if client_port is not None else next(free),
            next(free) if wants_metrics else metrics_port,
        )
        config = with_member(self.config, added)
        if config.tls is not None:
            self._issue_certificate(config, member)
        self.config = config
        self.added[member] = added
        self._save_added()
        self._spawn(member)
        self._write_pids()
        return added

    def discard_member(self, member: int) -> None:
        """Stop a member `add_member` started and forget it (it did not join in time)."""
        if member in self.procs:
            self.stop([member])
        if self.added.pop(member, None) is not None:
            self._save_added()

    def _issue_certificate(self, config: ClusterConfig, member: int) -> None:
        """A certificate for a new member of a cluster whose CA is in its directory (`smr
        cluster up --tls`); elsewhere the operator issues it (`smr tls issue`)."""
        from smr.transport import tls as tlsgen

        assert config.tls is not None
        cert = config.tls.cert.replace("{id}", str(member))
        tls_dir = os.path.dirname(config.tls.ca)
        if not os.path.exists(cert) and os.path.exists(os.path.join(tls_dir, "ca.key")):
            tlsgen.issue(tls_dir, tlsgen.member_name(member))

    def wait_member(self, member: int, timeout_s: float = 30.0) -> dict:
        """Wait until `member` is active in a view that holds it and has the state of every
        shard it hosts (a joiner's transfer is done); return its status."""
        from smr.client import ClientError, connect

        deadline = time.monotonic() + timeout_s
        last: Any = "no answer"
        while time.monotonic() < deadline:
            p = self.procs.get(member)
            if p is not None and p.poll() is not None:
                raise ClusterError(
                    f"member {member} exited with status {p.returncode}; see "
                    f"{self.log_path(member)}"
                )
            try:
                with connect(self.config, member=member, timeout_s=2.0) as c:
                    if c.member == member:
                        s = c.status()
                        if (
                            s["status"] == "active"
                            and member in s["members"]
                            and all(x.get("ready", True) for x in s["shards"])
                        ):
                            return s
                        last = (s["status"], s["epoch"], s["members"])
            except (ClientError, TimeoutError, OSError) as e:
                last = str(e)
            time.sleep(0.1)
        raise ClusterError(f"member {member} did not join within {timeout_s} s: {last}")

    def remove_member(self, member: int, timeout_s: float = 30.0) -> dict:
        """Remove `member` from the group for good, through another member; return the view
        without it. If this cluster started it, wait for its process to exit. Raises
        `smr.ClientError` with the group's reason when refused (nothing changed)."""
        from smr.client import connect

        status = self._any_status() or {}
        view = status.get("members") or sorted(self.config.members)
        # through a member that stays (the removed one halts before the view without it)
        others = [m for m in view if m != member]
        with connect(self.config, member=others[0] if others else None) as c:
            view = c.remove_member(member, timeout_s=timeout_s)
        p = self.procs.get(member)
        if p is not None:
            # it exits once it hears (`stop` ends it if it has not by then)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=STOP_GRACE_S)
            self._write_pids()
        if self.added.pop(member, None) is not None:
            self._save_added()
        return view

    def replace_member(self, old: int, timeout_s: float = 30.0, **addresses: Any) -> tuple:
        """Add a member (`add_member(**addresses)`), wait until it serves, then remove `old`;
        return (the new member's addresses, the view without `old`)."""
        new = self.add_member(**addresses)
        self.wait_member(new.id, timeout_s)
        return new, self.remove_member(old, timeout_s)

    def _save_added(self) -> None:
        path = os.path.join(self.data_dir, ADDED_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(
                {
                    str(m): {
                        "host": a.host,
                        "port": a.port,
                        "client_port": a.client_port,
                        "metrics_port": a.metrics_port,
                    }
                    for m, a in sorted(self.added.items())
                },
                f,
            )
        os.replace(path + ".tmp", path)

    def wait_ready(self, members: list[int] | None = None, timeout_s: float = 30.0) -> dict:
        """Wait until every one of `members` (default: those `start` started) is active in one
        view that contains them all; return that member's status."""
        from smr.client import ClientError, connect

        # (not startable(): it reads the metadata of members that run)
        want = set(members or self._started or self.config.founders)
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


def node_addresses(member: MemberConfig) -> list[str]:
    """The `smr node` options that give an unlisted member its addresses."""
    options = [
        "--host",
        member.host,
        "--port",
        str(member.port),
        "--client-port",
        str(member.client_port),
    ]
    if member.metrics_port is not None:
        options += ["--metrics-port", str(member.metrics_port)]
    return options


def load_added(data_dir: str) -> dict[int, MemberConfig]:
    """The members added at runtime to the local cluster in `data_dir` (`ADDED_FILE`)."""
    try:
        with open(os.path.join(data_dir, ADDED_FILE)) as f:
            raw = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{os.path.join(data_dir, ADDED_FILE)}: not readable: {e}") from None
    return {
        int(m): MemberConfig(int(m), a["host"], a["port"], a["client_port"], a.get("metrics_port"))
        for m, a in raw.items()
    }


def local_config(config_path: str, data_dir: str | None = None) -> ClusterConfig:
    """A local cluster's configuration with the members added at runtime (`ADDED_FILE` in
    `data_dir`, default: the configuration's directory)."""
    config = load(config_path)
    for m in load_added(data_dir or os.path.dirname(os.path.abspath(config_path))).values():
        config = with_member(config, m)
    return config


def _read_pids(data_dir: str) -> dict[int, int]:
    try:
        with open(os.path.join(data_dir, "cluster.pids")) as f:
            return {int(m): pid for m, pid in json.load(f).items()}
    except (FileNotFoundError, ValueError):
        return {}


def stop_from_pidfile(data_dir: str) -> list[int]:
    """`smr cluster down`: stop the members a previous `smr cluster up` started."""
    path = os.path.join(data_dir, "cluster.pids")
    if not os.path.exists(path):
        return []
    pids = _read_pids(data_dir)
    stopped = []
    for m, pid in pids.items():
        if not _alive(pid):
            continue  # exited already (a member removed for good, say): not stopped here
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
