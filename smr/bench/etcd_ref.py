"""etcd as an external baseline: three `etcd` members (Debian's etcd-server 3.4) on 127.0.0.1,
each with its own data directory, in etcd's default durable configuration (every write is in
the leader's and a quorum's WAL, fsynced, before it is answered), driven over etcd's own gRPC
API (`etcdserverpb.KV/Put`).

The client: etcd's protos as the `etcd3` package ships them (its `etcdrpc/*_pb2.py`), loaded
from their serialized file descriptors into a descriptor pool of our own and called with
`grpcio`. The `etcd3` package itself (0.12.0, its last release) cannot be imported with
protobuf >= 4 (its generated modules use the pre-4 descriptor API: "Descriptors cannot be
created directly"); the fallbacks it suggests are protobuf < 4 or the pure-Python protobuf,
both of which would make the client process the bound of every figure. Loading its descriptors
into a pool uses the same protos with protobuf's C (upb) implementation: the wire is etcd's.

Non-default settings (`settings()`, printed with the table): `--quota-backend-bytes` 8 GiB
(the default 2 GiB fills with 1 MiB puts: etcd keeps every revision of the key), and
`--max-request-bytes` only where a payload needs more than its default 1.5 MiB."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import shutil
import subprocess
import time
import zlib

from smr.bench import frames
from smr.bench.external import ExternalCluster

INSTALL_HINT = (
    "make bench-deps  (apt-get install etcd-server etcd-client, and "
    "pip install -e '.[baselines]': etcd3, grpcio, kazoo)"
)
KEY = b"bench/key"
QUOTA_BYTES = 8 << 30
MAX_REQUEST_DEFAULT = 1572864  # etcd 3.4's --max-request-bytes
REQUEST_SLACK = 64 << 10  # key, header and protobuf framing above the payload
PUT_TIMEOUT_S = 60.0


def missing() -> str | None:
    """Why etcd cannot run here (one line, with the way to install it), or None."""
    if shutil.which("etcd") is None:
        return f"etcd is not installed (no `etcd` on PATH); install it with: {INSTALL_HINT}"
    for module in ("grpc", "etcd3", "google.protobuf"):
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            return (
                f"etcd's client library is missing (Python module {module}); install it with: "
                f"{INSTALL_HINT}"
            )
    return None


def _serialized_descriptor(path: str) -> bytes:
    """The `serialized_pb=...` bytes of an old-style generated `_pb2.py`, read without
    importing it."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            value = node.value.args[0] if isinstance(node.value, ast.Call) else node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str | bytes):
                raw = value.value
                return raw.encode("latin1") if isinstance(raw, str) else raw
    raise RuntimeError(f"no serialized_pb in {path}")


_messages: dict | None = None


def messages() -> dict:
    """etcdserverpb message classes by name (PutRequest, StatusResponse, ...)."""
    global _messages
    if _messages is None:
        from google.protobuf import descriptor_pool, message_factory

        spec = importlib.util.find_spec("etcd3")
        if spec is None or spec.origin is None:
            raise RuntimeError(f"the etcd3 package is not installed: {INSTALL_HINT}")
        directory = os.path.join(os.path.dirname(spec.origin), "etcdrpc")
        pool = descriptor_pool.DescriptorPool()
        for name in ("kv", "auth", "rpc"):
            pool.AddSerializedFile(
                _serialized_descriptor(os.path.join(directory, f"{name}_pb2.py"))
            )
        _messages = {
            name: message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"etcdserverpb.{name}")
            )
            for name in (
                "PutRequest",
                "PutResponse",
                "RangeRequest",
                "RangeResponse",
                "StatusRequest",
                "StatusResponse",
                "HashKVRequest",
                "HashKVResponse",
                "WatchRequest",
                "WatchCreateRequest",
                "WatchResponse",
            )
        }
    return _messages


class Stub:
    """The few etcd RPCs the benchmark calls, on one gRPC channel to one member."""

    def __init__(self, endpoint: str) -> None:
        import grpc

        m = messages()
        self.channel = grpc.insecure_channel(
            endpoint,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )

        def rpc(path: str, request: str, response: str):
            return self.channel.unary_unary(
                path,
                request_serializer=m[request].SerializeToString,
                response_deserializer=m[response].FromString,
            )

        self.put = rpc("/etcdserverpb.KV/Put", "PutRequest", "PutResponse")
        self.range = rpc("/etcdserverpb.KV/Range", "RangeRequest", "RangeResponse")
        self.status = rpc("/etcdserverpb.Maintenance/Status", "StatusRequest", "StatusResponse")
        self.hash_kv = rpc("/etcdserverpb.Maintenance/HashKV", "HashKVRequest", "HashKVResponse")
        self.m = m

    def close(self) -> None:
        self.channel.close()


def etcd_submitter(endpoint: str, reads: str = ""):
    """The client process's side: `submit(payload)` puts it under KEY with `Put.future`
    (a grpc.Future: `add_done_callback`, `exception`). With `reads`, a Range of KEY instead
    (the payload is not sent): "linearizable" is etcd's default read (a read index through the
    leader), "sequential" a serializable one (served by the member from its own store)."""
    stub = Stub(endpoint)
    if reads:
        range_request = stub.m["RangeRequest"](key=KEY, serializable=reads == "sequential")

        def read(payload: bytes):
            return stub.range.future(range_request, timeout=PUT_TIMEOUT_S)

        return read, stub.close
    put_request = stub.m["PutRequest"]

    def submit(payload: bytes):
        return stub.put.future(put_request(key=KEY, value=payload), timeout=PUT_TIMEOUT_S)

    return submit, stub.close


def settings(payload_max: int) -> list[str]:
    """The non-default settings of a run whose largest payload is `payload_max` bytes."""
    out = [
        f"--quota-backend-bytes={QUOTA_BYTES} (default 2 GiB: every revision of the key is kept)"
    ]
    if payload_max + REQUEST_SLACK > MAX_REQUEST_DEFAULT:
        out.append(f"--max-request-bytes={payload_max + REQUEST_SLACK} (default 1.5 MiB)")
    return out


def agreement(states: list[tuple]) -> tuple[bool, str]:
    """Whether every member's (revision, hash, key count, value CRC) is the same, and what to
    print: a pure function of what the members answered, so tests give it fake answers."""
    if not states:
        return False, "no member answered"
    agreed = len(set(states)) == 1
    if agreed:
        s = states[0]
        return True, (
            f"all {len(states)} at revision {s[0]}, hash {s[1]}, keys {s[2]}, value crc {s[3]}"
        )
    described = "; ".join(
        f"member {i + 1}: revision {s[0]}, hash {s[1]}, keys {s[2]}, value crc {s[3]}"
        for i, s in enumerate(states)
    )
    return agreed, described


class Cluster(ExternalCluster):
    """Three etcd members on loopback; `leader_endpoint` is where the client sends puts."""

    agreement = staticmethod(agreement)

    def __init__(self, work_dir: str, payload_max: int, start_timeout_s: float = 30.0) -> None:
        why = missing()
        if why:
            raise RuntimeError(why)
        ports = frames.free_ports(6)
        self.client_ports, peer_ports = ports[:3], ports[3:]
        self.endpoints = [f"127.0.0.1:{p}" for p in self.client_ports]
        names = [f"m{i + 1}" for i in range(3)]
        initial = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports, strict=True)
        )
        extra = [f"--quota-backend-bytes={QUOTA_BYTES}"]
        if payload_max + REQUEST_SLACK > MAX_REQUEST_DEFAULT:
            extra.append(f"--max-request-bytes={payload_max + REQUEST_SLACK}")
        self.procs: list[subprocess.Popen] = []
        self.log_paths = []
        for i, name in enumerate(names):
            log_path = os.path.join(work_dir, f"{name}.log")
            self.log_paths.append(log_path)
            with open(log_path, "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [
                            "etcd",
                            f"--name={name}",
                            f"--data-dir={os.path.join(work_dir, name)}",
                            f"--listen-client-urls=http://127.0.0.1:{self.client_ports[i]}",
                            f"--advertise-client-urls=http://127.0.0.1:{self.client_ports[i]}",
                            f"--listen-peer-urls=http://127.0.0.1:{peer_ports[i]}",
                            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_ports[i]}",
                            f"--initial-cluster={initial}",
                            "--initial-cluster-state=new",
                            f"--initial-cluster-token=bench-{os.getpid()}-{peer_ports[0]}",
                            *extra,
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        self.stubs = [Stub(e) for e in self.endpoints]
        try:
            self.leader_endpoint = self._wait_healthy(start_timeout_s)
        except BaseException:
            self.close()
            raise

    def _wait_healthy(self, timeout_s: float) -> str:
        """Every member answers Status with the same leader, and a put through it is readable
        at every member."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"an etcd member exited: {self._log_tail()}")
            try:
                statuses = [s.status(s.m["StatusRequest"](), timeout=2.0) for s in self.stubs]
                leaders = {st.leader for st in statuses}
                ids = [st.header.member_id for st in statuses]
                if len(leaders) == 1 and 0 not in leaders and leaders <= set(ids):
                    leader = ids.index(leaders.pop())
                    put = self.stubs[leader].m["PutRequest"](key=KEY, value=b"")
                    self.stubs[leader].put(put, timeout=5.0)
                    return self.endpoints[leader]
                last = f"leaders {leaders}"
            except Exception as error:  # grpc.RpcError while members start
                last = repr(error)
            time.sleep(0.2)
        raise TimeoutError(f"etcd had no healthy leader within {timeout_s} s ({last[:200]})")

    def states(self) -> list[tuple[int, int, int, int]]:
        """(revision, HashKV at the common revision, keys, CRC-32 of the key's value) at each
        member, once their revisions
        settle (followers apply a moment after the leader answers)."""
        m = self.stubs[0].m
        deadline = time.monotonic() + 10.0
        while True:
            revisions = [
                s.status(m["StatusRequest"](), timeout=5.0).header.revision for s in self.stubs
            ]
            if len(set(revisions)) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        revision = min(revisions)
        out = []
        for stub in self.stubs:
            hashed = stub.hash_kv(m["HashKVRequest"](revision=revision), timeout=30.0)
            count = stub.range(
                m["RangeRequest"](key=b"\0", range_end=b"\0", count_only=True, serializable=True),
                timeout=10.0,
            )
            value = stub.range(m["RangeRequest"](key=KEY, serializable=True), timeout=10.0)
            crc = zlib.crc32(value.kvs[0].value) if value.kvs else -1
            out.append((hashed.header.revision, hashed.hash, count.count, crc))
        return out

    def close(self) -> None:
        for stub in getattr(self, "stubs", []):
            with contextlib.suppress(Exception):
                stub.close()
        super().close()
