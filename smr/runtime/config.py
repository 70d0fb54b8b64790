"""The cluster configuration: one TOML file every member and client reads.

This module owns parsing and validating it. A wrong configuration is a `ConfigError` whose one-line
message names the file, the key and what to change; nothing starts on a bad file. Example:

    [cluster]
    name = "demo"
    secret_file = "secret"          # relative to this file; 16+ bytes; or secret_hex = "..."
    transport = "auto"              # auto | shm | tcp | verbs
    data_dir = "data"               # each member keeps data_dir/member-<id>
    sync_policy = "batch"           # batch | always | interval:<seconds> (durable shards)
    founders = [1, 2, 3]            # the first view (default: every member listed)
    rejoin = true                   # after a halt (removed from the view, a minority), ask to
                                    # join again as a new incarnation instead of exiting
    engine = "auto"                 # auto | native | python: the streams' receive side
    protocol = "derecho"            # derecho (virtual synchrony, the default) | multipaxos
                                    # (classic Multi-Paxos: one subgroup of one durable shard,
                                    # every listed member a founder; smr.runtime.paxos_node)

    [timeouts]
    heartbeat_ms = 5
    suspect_ms = 100
    peer_failed_ms = 1000
    submit_ms = 5000

    [[members]]
    id = 1
    host = "127.0.0.1"
    port = 7101                     # member-to-member (tcp, verbs bootstrap)
    client_port = 7201              # clients (always tcp)
    metrics_port = 7301             # optional: Prometheus metrics, GET /metrics (off when absent)

    [[subgroups]]
    type = "smr.statemachines:KVStore"   # module:class of a StateMachine subclass
    shards = 1
    mode = "durable"                # ordered | durable | raw, or one per shard

    [tls]                           # optional: mutual TLS on tcp member links and client ports
    ca = "tls/ca.crt"               # the CA every certificate is signed by
    cert = "tls/smr-member-{id}.crt"  # each member's certificate and key; {id} is its id
    key = "tls/smr-member-{id}.key"
    crl = "tls/crl.pem"             # optional: revoked certificates, re-read when it changes
    client_cert = "tls/smr-client-admin.crt"  # optional: what clients and tools present
    client_key = "tls/smr-client-admin.key"

Members listed but not founders are spares: they join when started (`smr node`). A member need
not be listed at all: `smr node --id N --host H --port P --client-port C` starts one that joins
through the listed members, and its addresses reach the whole group with the view (its contact
card, `smr.runtime.roster`); `with_member` checks them like a listed member's. With `[tls]`, the
secret is optional (certificates authenticate every party; clients never need it).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from smr.api import StateMachine
from smr.core.layout import SubgroupSpec
from smr.core.multicast import MulticastConfig
from smr.core.pending import ENGINES
from smr.core.replica import CoreConfig
from smr.core.views import ViewConfig
from smr.transport.base import Address, TransportConfig
from smr.transport.tls import CLIENT_PORT_SECRET, TlsConfig

TRANSPORTS = ("auto", "shm", "tcp", "verbs")
PROTOCOLS = ("derecho", "multipaxos")
SECRET_BYTES_MIN = 16
STARTUP_GRACE_S = 10.0  # founders that have not started are suspected after this
INSTALL_GRACE_S = 1.0  # members that have not started a new view are suspected after this
# a member's host travels in its contact card (`smr.runtime.roster`, at most 128 bytes with the
# ports): this much always fits
HOST_BYTES_MAX = 115


class ConfigError(Exception):
    """The configuration is wrong; the message says where and what to change."""


@dataclass(frozen=True, slots=True)
class MemberConfig:
    id: int
    host: str
    port: int
    client_port: int
    metrics_port: int | None = None  # GET /metrics over HTTP; None: not served


@dataclass(frozen=True, slots=True)
class SubgroupConfig:
    type_name: str
    machine: type[StateMachine]
    spec: SubgroupSpec


@dataclass(frozen=True)
class ClusterConfig:
    path: str
    name: str
    secret: bytes = field(repr=False)
    transport: str
    data_dir: str
    sync_policy: str
    founders: tuple[int, ...]
    rejoin: bool
    members: dict[int, MemberConfig]
    subgroups: tuple[SubgroupConfig, ...]
    heartbeat_ms: float = 5.0
    suspect_ms: float = 100.0
    peer_failed_ms: float = 1000.0
    submit_ms: float = 5000.0
    engine: str = "auto"
    protocol: str = "derecho"
    tls: TlsConfig | None = None
    frame_bytes_max: int = 64 << 20
    slot_bytes: int = 1152
    window_max: int = 256
    # Set by code, not by the file: the simulator gives its own core timing and small segments
    # (so that rolling happens in its short runs).
    core: CoreConfig | None = None
    segment_bytes_max: int = 64 << 20

    def __repr__(self) -> str:  # the secret never reaches a log line
        return (
            f"ClusterConfig(path={self.path!r}, name={self.name!r}, members={list(self.members)})"
        )

    @property
    def types(self) -> tuple[type[StateMachine], ...]:
        return tuple(s.machine for s in self.subgroups)

    @property
    def layout(self) -> tuple[SubgroupSpec, ...]:
        return tuple(s.spec for s in self.subgroups)

    def member_dir(self, member: int) -> str:
        return os.path.join(self.data_dir, f"member-{member}")

    def core_config(self) -> CoreConfig:
        if self.core is not None:
            return self.core
        return CoreConfig(
            heartbeat_period_ns=int(self.heartbeat_ms * 1e6),
            multicast=MulticastConfig(
                window_max=self.window_max,
                slot_bytes=self.slot_bytes,
                submit_timeout_ns=int(self.submit_ms * 1e6),
                engine=self.engine,
            ),
            views=ViewConfig(
                suspect_timeout_ns=int(self.suspect_ms * 1e6),
                startup_grace_ns=int(STARTUP_GRACE_S * 1e9),
                install_grace_ns=int(INSTALL_GRACE_S * 1e9),
                forgive_own_pauses=True,
            ),
        )

    def transport_config(self, me: int | None = None) -> TransportConfig:
        """The member links' settings; `me` is the member whose TLS certificate they present
        (None: no TLS, as in the simulator)."""
        return TransportConfig(
            secret=self.secret,
            tls=self.tls.for_member(me) if self.tls is not None and me is not None else None,
            cluster=self.name,
            frame_bytes_max=self.frame_bytes_max,
            peer_failed_after_s=self.peer_failed_ms / 1000,
            send_queue_bytes_max=max(4 * self.frame_bytes_max, 256 << 20),
        )

    def addresses(self) -> dict[int, Address]:
        return {m.id: Address(m.host, m.port) for m in self.members.values()}

    def subgroup_index(self, machine: type[StateMachine] | str) -> int:
        for i, s in enumerate(self.subgroups):
            if s.machine is machine or s.machine.__name__ == machine or s.type_name == machine:
                return i
        names = ", ".join(s.type_name for s in self.subgroups)
        wanted = machine if isinstance(machine, str) else machine.__name__
        raise ConfigError(
            f"{self.path}: no subgroup hosts {wanted} (this cluster hosts {names}); add a "
            f"[[subgroups]] entry for it, or use the type the cluster hosts"
        )


# every key each section may hold: anything else is a mistake (a misspelt key would otherwise be
# ignored and its default used silently)
KEYS: dict[str, tuple[str, ...]] = {
    "": ("cluster", "timeouts", "limits", "members", "subgroups", "tls"),
    "cluster": (
        "name",
        "secret_file",
        "secret_hex",
        "transport",
        "data_dir",
        "sync_policy",
        "founders",
        "rejoin",
        "engine",
        "protocol",
    ),
    "timeouts": ("heartbeat_ms", "suspect_ms", "peer_failed_ms", "submit_ms"),
    "limits": ("frame_bytes_max", "slot_bytes", "window_max"),
    "members": ("id", "host", "port", "client_port", "metrics_port"),
    "subgroups": ("type", "shards", "mode", "min_size", "max_size"),
    "tls": ("ca", "cert", "key", "crl", "client_cert", "client_key"),
}


def _check_keys(table: dict[str, Any], section: str, where: str) -> None:
    """A key this section does not know is an error naming it and, if close, the key meant."""
    known = KEYS[section]
    for key in table:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(known)})"
        raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def _need(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{where}: {key!r} must be {_kind_name(kind)}, not {value!r}")
    return value


def _opt(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str):
    return _need(table, key, kind, where) if key in table else default


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {
            "int": "an integer",
            "str": "a string",
            "float": "a number",
            "list": "a list",
            "dict": "a table",
            "bool": "true or false",
        }.get(k.__name__, k.__name__)
        for k in kinds
    )


def load_machine(type_name: str, where: str) -> type[StateMachine]:
    """Import `module:Class` and check that it is a StateMachine."""
    module_name, _, attr = type_name.partition(":")
    if not attr:
        raise ConfigError(f"{where}: type {type_name!r} must be 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"{where}: cannot import {module_name!r}: {e} (is it installed, or on PYTHONPATH?)"
        ) from None
    except Exception as e:  # the module itself raised while importing: say so, in one line
        raise ConfigError(
            f"{where}: importing {module_name!r} failed: {type(e).__name__}: {e}"
        ) from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, StateMachine)):
        raise ConfigError(f"{where}: {type_name!r} is not a StateMachine subclass")
    return cls


def load(path: str) -> ClusterConfig:
    """Read and validate a cluster configuration file."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse(raw, path)


def parse(raw: dict[str, Any], path: str = "<config>") -> ClusterConfig:
    base = os.path.dirname(os.path.abspath(path)) if path != "<config>" else os.getcwd()
    _check_keys(raw, "", path)
    cluster = _need(raw, "cluster", dict, path)
    where = f"{path} [cluster]"
    _check_keys(cluster, "cluster", where)
    name = _opt(cluster, "name", str, "smr", where)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}: name {name!r} may hold only letters, digits, - and _")
    tls = _tls(raw, base, path)
    secret = _secret(cluster, base, where, tls is not None)
    transport = _opt(cluster, "transport", str, "auto", where)
    if transport not in TRANSPORTS:
        raise ConfigError(f"{where}: transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    data_dir = os.path.join(base, _opt(cluster, "data_dir", str, "data", where))
    sync_policy = _opt(cluster, "sync_policy", str, "batch", where)
    from smr.log import check_sync_policy

    try:
        check_sync_policy(sync_policy)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None

    members: dict[int, MemberConfig] = {}
    listed = _need(raw, "members", list, path)
    for i, m in enumerate(listed):
        w = f"{path} [[members]] #{i + 1}"
        if not isinstance(m, dict):
            raise ConfigError(f"{w}: must be a table")
        _check_keys(m, "members", w)
        mid = _need(m, "id", int, w)
        if mid in members:
            raise ConfigError(f"{w}: member id {mid} is listed twice")
        member = MemberConfig(
            mid,
            _opt(m, "host", str, "127.0.0.1", w),
            _need(m, "port", int, w),
            _need(m, "client_port", int, w),
            _opt(m, "metrics_port", int, None, w),
        )
        check_member(member, w)
        members[mid] = member
    if not members:
        raise ConfigError(f"{path}: [[members]] lists no member")
    _check_ports_shared(members, path)
    founders = tuple(_opt(cluster, "founders", list, sorted(members), where))
    rejoin = _opt(cluster, "rejoin", bool, True, where)
    engine = _opt(cluster, "engine", str, "auto", where)
    if engine not in ENGINES:
        raise ConfigError(f"{where}: engine {engine!r} is not one of {', '.join(ENGINES)}")
    for f in founders:
        if f not in members:
            raise ConfigError(f"{where}: founder {f!r} is not a listed member")
    if not founders or len(set(founders)) != len(founders):
        raise ConfigError(f"{where}: founders must list distinct members")
    protocol = _opt(cluster, "protocol", str, "derecho", where)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")

    subgroups = []
    for i, s in enumerate(_need(raw, "subgroups", list, path)):
        w = f"{path} [[subgroups]] #{i + 1}"
        if not isinstance(s, dict):
            raise ConfigError(f"{w}: must be a table")
        _check_keys(s, "subgroups", w)
        type_name = _need(s, "type", str, w)
        machine = load_machine(type_name, w)
        mode = _opt(s, "mode", (str, list), "ordered", w)
        try:
            spec = SubgroupSpec(
                machine.__name__,
                shards=_opt(s, "shards", int, 1, w),
                min_size=_opt(s, "min_size", int, 1, w),
                max_size=_opt(s, "max_size", int, None, w),
                mode=mode if isinstance(mode, str) else tuple(mode),
            )
        except Exception as e:  # LayoutError and friends: say where
            raise ConfigError(f"{w}: {e}") from None
        subgroups.append(SubgroupConfig(type_name, machine, spec))
    if not subgroups:
        raise ConfigError(f"{path}: [[subgroups]] declares no replicated type")
    if len({s.machine for s in subgroups}) != len(subgroups):
        raise ConfigError(f"{path}: a type is declared in two subgroups")
    if protocol == "multipaxos":
        _check_multipaxos(subgroups, members, founders, where)

    timeouts = _opt(raw, "timeouts", dict, {}, path)
    w = f"{path} [timeouts]"
    _check_keys(timeouts, "timeouts", w)
    values = {}
    for key, default in (
        ("heartbeat_ms", 5.0),
        ("suspect_ms", 100.0),
        ("peer_failed_ms", 1000.0),
        ("submit_ms", 5000.0),
    ):
        v = float(_opt(timeouts, key, (int, float), default, w))
        if v <= 0:
            raise ConfigError(f"{w}: {key} must be positive")
        values[key] = v
    if values["suspect_ms"] < 4 * values["heartbeat_ms"]:
        raise ConfigError(f"{w}: suspect_ms must be at least 4 heartbeats (heartbeat_ms * 4)")
    limits = _opt(raw, "limits", dict, {}, path)
    w = f"{path} [limits]"
    _check_keys(limits, "limits", w)
    frame_bytes_max = _opt(limits, "frame_bytes_max", int, 64 << 20, w)
    slot_bytes = _opt(limits, "slot_bytes", int, 1152, w)
    window_max = _opt(limits, "window_max", int, 256, w)
    if frame_bytes_max < 4096:
        raise ConfigError(f"{w}: frame_bytes_max must be at least 4096")
    if slot_bytes < 64 or slot_bytes % 8:
        raise ConfigError(f"{w}: slot_bytes must be a multiple of 8, at least 64")
    if not 2 <= window_max <= 1 << 15:
        raise ConfigError(f"{w}: window_max must be between 2 and 32768")
    return ClusterConfig(
        path=os.path.abspath(path) if path != "<config>" else path,
        name=name,
        secret=secret,
        transport=transport,
        data_dir=data_dir,
        sync_policy=sync_policy,
        founders=founders,
        rejoin=rejoin,
        engine=engine,
        protocol=protocol,
        tls=tls,
        members=members,
        subgroups=tuple(subgroups),
        frame_bytes_max=frame_bytes_max,
        slot_bytes=slot_bytes,
        window_max=window_max,
        heartbeat_ms=values["heartbeat_ms"],
        suspect_ms=values["suspect_ms"],
        peer_failed_ms=values["peer_failed_ms"],
        submit_ms=values["submit_ms"],
    )


def _check_multipaxos(
    subgroups: list[SubgroupConfig],
    members: dict[int, MemberConfig],
    founders: tuple[int, ...],
    where: str,
) -> None:
    """Classic Multi-Paxos replicates one log among a fixed set of acceptors."""
    spec = subgroups[0].spec if len(subgroups) == 1 else None
    if spec is None or spec.shards != 1 or (spec.members is not None and len(spec.members) != 1):
        raise ConfigError(
            f"{where}: protocol multipaxos replicates one log: declare one [[subgroups]] entry "
            "with shards = 1"
        )
    if spec.mode_of(0) != "durable":
        raise ConfigError(
            f"{where}: protocol multipaxos is durable by construction (acceptors log before "
            'they answer): give the subgroup mode = "durable"'
        )
    if set(founders) != set(members):
        raise ConfigError(
            f"{where}: protocol multipaxos has a fixed membership: make every listed member a "
            "founder (no spares)"
        )
    served = [m.id for m in members.values() if m.metrics_port is not None]
    if served:
        raise ConfigError(
            f"{where}: protocol multipaxos members serve no metrics yet: leave metrics_port out "
            f"(members {served})"
        )


def check_member(m: MemberConfig, where: str) -> None:
    """One member's id, host and ports are usable (`where` begins the error message)."""
    if not 0 < m.id < 1 << 31:
        raise ConfigError(f"{where}: id {m.id} must be a positive integer below 2**31")
    for key, port in (("port", m.port), ("client_port", m.client_port)):
        if not 0 < port < 65536:
            raise ConfigError(f"{where}: {key} {port} is not a TCP port")
    if m.metrics_port is not None and not 0 < m.metrics_port < 65536:
        raise ConfigError(
            f"{where}: metrics_port {m.metrics_port} is not a TCP port (1-65535; leave it out to "
            "serve no metrics)"
        )
    if not m.host:
        raise ConfigError(f"{where}: host is empty; give the address peers and clients reach")
    host_bytes = len(m.host.encode())
    if host_bytes > HOST_BYTES_MAX:
        raise ConfigError(
            f"{where}: host {m.host[:40]!r}... is {host_bytes} bytes, more than {HOST_BYTES_MAX} "
            "(a member's addresses travel with the view): give a shorter name or an IP address"
        )


def _check_ports_shared(members: dict[int, MemberConfig], path: str) -> None:
    users: dict[tuple[str, int], list[str]] = {}
    for m in members.values():
        for key, port in (
            ("port", m.port),
            ("client_port", m.client_port),
            ("metrics_port", m.metrics_port),
        ):
            if port is not None:
                users.setdefault((m.host, port), []).append(f"member {m.id} {key}")
    for (host, port), which in users.items():
        if len(which) > 1:
            raise ConfigError(
                f"{path}: two ports share a host:port: {host}:{port} is {' and '.join(which)}; "
                "give each its own port"
            )


def with_member(config: ClusterConfig, member: MemberConfig) -> ClusterConfig:
    """`config` with `member`, one it does not list (`smr node --id N --host H --port P
    --client-port C`), checked like a listed one. A listed member is accepted with its listed
    addresses only: other ones are a `ConfigError` saying which differ."""
    listed = config.members.get(member.id)
    if listed is not None:
        if listed == member:
            return config
        differ = [
            f"{key} {getattr(member, key)} (listed: {getattr(listed, key)})"
            for key in ("host", "port", "client_port", "metrics_port")
            if getattr(member, key) != getattr(listed, key)
        ]
        raise ConfigError(
            f"{config.path}: member {member.id} is listed with other addresses: "
            f"{', '.join(differ)}; start it without --host/--port/--client-port/--metrics-port, "
            "or with the listed ones"
        )
    check_member(member, f"member {member.id}")
    members = {**config.members, member.id: member}
    _check_ports_shared(members, f"member {member.id}")
    return dataclasses.replace(config, members=members)


def _tls(raw: dict[str, Any], base: str, path: str) -> TlsConfig | None:
    if "tls" not in raw:
        return None
    where = f"{path} [tls]"
    table = _need(raw, "tls", dict, path)
    _check_keys(table, "tls", where)

    def file(key: str, needed: bool) -> str | None:
        value = _need(table, key, str, where) if needed else _opt(table, key, str, None, where)
        if value is None:
            return None
        full = os.path.join(base, value)
        # a member's own files are checked when it starts (`{id}`); the shared ones here
        if "{id}" not in full and not os.path.isfile(full):
            raise ConfigError(f"{where}: {key} {value!r}: no such file")
        return full

    ca, cert, key = file("ca", True), file("cert", True), file("key", True)
    assert ca is not None and cert is not None and key is not None
    client_cert, client_key = file("client_cert", False), file("client_key", False)
    if (client_cert is None) != (client_key is None):
        raise ConfigError(f"{where}: set both client_cert and client_key, or neither")
    return TlsConfig(ca, cert, key, file("crl", False), client_cert, client_key)


def _secret(cluster: dict[str, Any], base: str, where: str, tls: bool = False) -> bytes:
    if tls and "secret_hex" not in cluster and "secret_file" not in cluster:
        # certificates authenticate every party: the handshake inside TLS is keyed with a
        # public constant, so that the secret's absence is no weaker than its presence
        return CLIENT_PORT_SECRET
    if "secret_hex" in cluster:
        try:
            secret = bytes.fromhex(_need(cluster, "secret_hex", str, where))
        except ValueError:
            raise ConfigError(f"{where}: secret_hex is not hexadecimal") from None
    elif "secret_file" in cluster:
        secret_path = os.path.join(base, _need(cluster, "secret_file", str, where))
        try:
            with open(secret_path, "rb") as f:
                secret = f.read().strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read secret_file: {e.strerror}") from None
    else:
        raise ConfigError(f"{where}: set secret_file (or secret_hex): the cluster secret")
    if len(secret) < SECRET_BYTES_MIN:
        raise ConfigError(f"{where}: the secret must be at least {SECRET_BYTES_MIN} bytes")
    return secret


def write_local(
    directory: str,
    *,
    nodes: int,
    types: tuple[str, ...] = ("smr.statemachines:KVStore",),
    mode: str = "durable",
    transport: str = "auto",
    base_port: int = 0,
    shards: int = 1,
    timeouts: dict[str, float] | None = None,
    spares: int = 0,
    metrics: bool = False,
    hosts: list[str] | None = None,
    tls: bool = False,
    protocol: str = "derecho",
) -> str:
    """Write a configuration (and a fresh random secret) for a cluster on this host; return its
    path. `base_port` 0 picks free ports; `metrics` gives each member a `metrics_port` too.
    `hosts`: each member's address, in id order (default 127.0.0.1 for all; `smr chaos` puts
    each on its own loopback address so that a firewall rule can cut one pair). `tls`: a local
    CA in `directory/tls` with a certificate per member and one for clients (`smr-client-admin`),
    and the `[tls]` section that uses them."""
    if hosts is not None and len(hosts) != nodes + spares:
        raise ValueError(f"{len(hosts)} hosts for {nodes + spares} members")
    os.makedirs(directory, exist_ok=True)
    secret_path = os.path.join(directory, "secret")
    if not os.path.exists(secret_path):
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex())
    per = 3 if metrics else 2  # ports per member
    ports = (
        _free_ports(per * (nodes + spares))
        if base_port == 0
        else [base_port + i for i in range(per * (nodes + spares))]
    )
    name = "c" + os.urandom(4).hex()
    lines = [
        "[cluster]",
        f'name = "{name}"',
        'secret_file = "secret"',
        f'transport = "{transport}"',
        'data_dir = "data"',
        *([f'protocol = "{protocol}"'] if protocol != "derecho" else []),
        f"founders = {list(range(1, nodes + 1))}",
        "",
    ]
    if timeouts:
        lines.append("[timeouts]")
        lines.extend(f"{k} = {v}" for k, v in timeouts.items())
        lines.append("")
    for i in range(nodes + spares):
        lines += [
            "[[members]]",
            f"id = {i + 1}",
            f'host = "{hosts[i] if hosts else "127.0.0.1"}"',
            f"port = {ports[per * i]}",
            f"client_port = {ports[per * i + 1]}",
            *([f"metrics_port = {ports[per * i + 2]}"] if metrics else []),
            "",
        ]
    for t in types:
        lines += ["[[subgroups]]", f'type = "{t}"', f"shards = {shards}", f'mode = "{mode}"', ""]
    if tls:
        from smr.transport import tls as tlsgen

        tls_dir = os.path.join(directory, "tls")
        tlsgen.init_ca(tls_dir)
        for i in range(nodes + spares):
            tlsgen.issue(tls_dir, tlsgen.member_name(i + 1))
        tlsgen.issue(tls_dir, tlsgen.CLIENT_PREFIX + "admin")
        lines += [
            "[tls]",
            'ca = "tls/ca.crt"',
            'cert = "tls/smr-member-{id}.crt"',
            'key = "tls/smr-member-{id}.key"',
            'crl = "tls/crl.pem"',
            'client_cert = "tls/smr-client-admin.crt"',
            'client_key = "tls/smr-client-admin.key"',
            "",
        ]
    path = os.path.join(directory, "cluster.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    load(path)  # what we wrote must be valid
    return path


def _free_ports(count: int) -> list[int]:
    import socket

    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports
