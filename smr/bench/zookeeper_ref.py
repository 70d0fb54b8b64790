"""ZooKeeper as an external baseline: three servers (Debian's zookeeper 3.8) on 127.0.0.1, each
with its own data directory, in ZooKeeper's default durable configuration (`forceSync=yes`:
every transaction is in the leader's and a quorum's log, fsynced, before it is answered),
driven with kazoo's async API: `set_async` on one znode, with a window of outstanding sets on
one session connected to the leader (no forwarding hop).

Non-default settings (`settings()`, printed with the table): `jute.maxbuffer` raised on the
servers (Java system property) where a payload needs more than its default 1 MiB - 1 byte;
`admin.enableServer=false` (the AdminServer's HTTP port, 8080 by default, would be shared by
the three servers); the usual quorum settings of a 3-server zoo.cfg (`tickTime=2000`,
`initLimit=10`, `syncLimit=5`, as in Debian's example)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import zlib

from smr.bench import frames
from smr.bench.external import ExternalCluster

INSTALL_HINT = (
    "make bench-deps  (apt-get install zookeeper, and pip install -e '.[baselines]': "
    "etcd3, grpcio, kazoo)"
)
ZNODE = "/bench"
JUTE_DEFAULT = 0xFFFFF  # jute.maxbuffer's default: 1 MiB - 1
JUTE_SLACK = 1 << 20  # request header, path and framing above the payload, with room
DEBIAN_SCRIPT = "/usr/share/zookeeper/bin/zkServer.sh"  # Debian does not put it on PATH


def server_script() -> str | None:
    """zkServer.sh on PATH, else where Debian's zookeeper package installs it."""
    found = shutil.which("zkServer.sh")
    if found:
        return found
    return DEBIAN_SCRIPT if os.access(DEBIAN_SCRIPT, os.X_OK) else None


def missing() -> str | None:
    """Why ZooKeeper cannot run here (one line, with the way to install it), or None."""
    if server_script() is None:
        return (
            f"ZooKeeper is not installed (no zkServer.sh on PATH or at {DEBIAN_SCRIPT}); "
            f"install it with: {INSTALL_HINT}"
        )
    if shutil.which("java") is None:
        return f"ZooKeeper needs java, which is not on PATH; install it with: {INSTALL_HINT}"
    try:
        import kazoo  # noqa: F401
    except ImportError:
        return f"ZooKeeper's client library kazoo is missing; install it with: {INSTALL_HINT}"
    return None


def jute_maxbuffer(payload_max: int) -> int | None:
    """jute.maxbuffer for payloads of up to `payload_max` bytes, None where the default does."""
    need = payload_max + JUTE_SLACK
    return need if payload_max + 4096 > JUTE_DEFAULT else None


def settings(payload_max: int) -> list[str]:
    out = []
    jute = jute_maxbuffer(payload_max)
    if jute:
        out.append(f"-Djute.maxbuffer={jute} on the servers (default {JUTE_DEFAULT})")
    out.append("admin.enableServer=false (default true, on port 8080, one per machine)")
    return out


class _Result:
    """A kazoo IAsyncResult as the harness's future (`add_done_callback`, `exception`)."""

    __slots__ = ("_async",)

    def __init__(self, async_result) -> None:
        self._async = async_result

    def add_done_callback(self, fn) -> None:
        self._async.rawlink(lambda _: fn(self))

    def exception(self):
        return self._async.exception


def zookeeper_submitter(hosts: str, reads: str = ""):
    """The client process's side: `submit(payload)` is `set_async(ZNODE, payload)`. With
    `reads`, a `get_async(ZNODE)` instead (the payload is not sent), preceded for
    "linearizable" by a `sync_async(ZNODE)`: ZooKeeper's way to read the latest write (a
    session's requests are served in order, so the get comes after the sync)."""
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts, timeout=30.0)
    client.start(timeout=30.0)

    def submit(payload: bytes):
        return _Result(client.set_async(ZNODE, payload))

    def read(payload: bytes):
        if reads == "linearizable":
            client.sync_async(ZNODE)
        return _Result(client.get_async(ZNODE))

    if reads:
        submit = read

    def close() -> None:
        client.stop()
        client.close()

    return submit, close


def four_letter(port: int, word: bytes = b"srvr", timeout_s: float = 2.0) -> str:
    """A four-letter-word answer (`srvr` is on ZooKeeper's default whitelist)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(word)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def srvr_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def agreement(states: list[tuple]) -> tuple[bool, str]:
    """Whether every server's (zxid, znode version, data length, data CRC) is the same, and
    what to print: a pure function of what the servers answered."""
    if not states:
        return False, "no server answered"
    agreed = len(set(states)) == 1
    if agreed:
        s = states[0]
        return True, f"all {len(states)} at zxid {s[0]}, version {s[1]}, {s[2]} bytes, crc {s[3]}"
    described = "; ".join(
        f"server {i + 1}: zxid {s[0]}, version {s[1]}, {s[2]} bytes, crc {s[3]}"
        for i, s in enumerate(states)
    )
    return agreed, described


class Cluster(ExternalCluster):
    """Three ZooKeeper servers on loopback; `leader_hosts` is the leader's client address."""

    agreement = staticmethod(agreement)

    def __init__(self, work_dir: str, payload_max: int, start_timeout_s: float = 60.0) -> None:
        why = missing()
        if why:
            raise RuntimeError(why)
        script = server_script()
        ports = frames.free_ports(9)
        self.client_ports = ports[:3]
        quorum, election = ports[3:6], ports[6:9]
        jute = jute_maxbuffer(payload_max)
        self.procs: list[subprocess.Popen] = []
        self.log_paths = []
        for i in range(3):
            data = os.path.join(work_dir, f"zk{i + 1}")
            os.makedirs(data)
            with open(os.path.join(data, "myid"), "w") as f:
                f.write(f"{i + 1}\n")
            config = os.path.join(work_dir, f"zoo{i + 1}.cfg")
            lines = [
                "tickTime=2000",
                "initLimit=10",
                "syncLimit=5",
                f"dataDir={data}",
                f"clientPort={self.client_ports[i]}",
                "clientPortAddress=127.0.0.1",
                "admin.enableServer=false",
            ] + [f"server.{j + 1}=127.0.0.1:{quorum[j]}:{election[j]}" for j in range(3)]
            with open(config, "w") as f:
                f.write("\n".join(lines) + "\n")
            env = dict(os.environ)
            env["ZOO_LOG_DIR"] = data
            env["JVMFLAGS"] = (
                env.get("JVMFLAGS", "") + (f" -Djute.maxbuffer={jute}" if jute else "")
            ).strip()
            log_path = os.path.join(work_dir, f"zk{i + 1}.out")
            self.log_paths.append(log_path)
            with open(log_path, "wb") as log:
                # start-foreground execs java: the process is the server (its CPU is measured)
                self.procs.append(
                    subprocess.Popen(
                        [script, "start-foreground", config],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                    )
                )
        try:
            self.leader_hosts = self._wait_healthy(start_timeout_s)
        except BaseException:
            self.close()
            raise

    def _modes(self) -> list[str]:
        return [srvr_fields(four_letter(p)).get("Mode", "") for p in self.client_ports]

    def _wait_healthy(self, timeout_s: float) -> str:
        """One leader, two followers (from `srvr`), and the znode created through the leader."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a ZooKeeper server exited: {self._log_tail()}")
            try:
                modes = self._modes()
                if sorted(modes) == ["follower", "follower", "leader"]:
                    hosts = f"127.0.0.1:{self.client_ports[modes.index('leader')]}"
                    from kazoo.client import KazooClient

                    client = KazooClient(hosts=hosts, timeout=10.0)
                    client.start(timeout=10.0)
                    try:
                        if not client.exists(ZNODE):
                            client.create(ZNODE, b"")
                    finally:
                        client.stop()
                        client.close()
                    return hosts
                last = f"modes {modes}"
            except Exception as error:  # refused connections while the JVMs start
                last = repr(error)
            time.sleep(0.3)
        raise TimeoutError(f"ZooKeeper had no leader within {timeout_s} s ({last[:200]})")

    def states(self) -> list[tuple]:
        """(zxid, znode version, data length, data CRC-32) at each server, read from a session
        of its own after a `sync`, once the zxids settle."""
        from kazoo.client import KazooClient

        deadline = time.monotonic() + 10.0
        while True:
            zxids = [srvr_fields(four_letter(p)).get("Zxid", "") for p in self.client_ports]
            if len(set(zxids)) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        out = []
        for port, zxid in zip(self.client_ports, zxids, strict=True):
            client = KazooClient(hosts=f"127.0.0.1:{port}", timeout=10.0, read_only=False)
            client.start(timeout=10.0)
            try:
                client.sync(ZNODE)
                data, stat = client.get(ZNODE)
            finally:
                client.stop()
                client.close()
            out.append((zxid, stat.version, len(data), zlib.crc32(data)))
        return out
