"""What ipop-lab builds: the topology as frozen data, loaded from TOML and strictly validated.

This module owns the TOML format and every address-assignment default; it does no I/O beyond
reading the file. Format (every key but ``hosts[].name`` / ``role`` / ``kind`` is optional)::

    nat_backend = "iptables"               # or "nft": which tool writes the NAT rules

    [internet]
    subnet = "203.0.113.0/24"              # the bridge segment in the "inet" namespace
    subnet2 = "198.51.100.0/24"            # optional second segment, routed by "inet"

    [[hosts]]                              # the first public host is the bootstrap
    name = "pub1"                          # [a-z][a-z0-9-]*, at most 12 characters
    role = "public"                        # directly on the internet segment
    ip = "203.0.113.10"                    # default: .10, .11, ... of subnet
    extra_ips = ["203.0.113.20"]           # more addresses on the same interface

    [[hosts]]
    name = "a"
    role = "nat"                           # one LAN host behind its own NAT router
    kind = "port-restricted-cone"          # full-cone | restricted-cone | port-restricted-cone
                                           # | symmetric (ipop.nat.kinds; rules in natrules.py)
                                           # ("nat = ..." is the old spelling, still read)
    wan_ip = "203.0.113.101"               # router's public address; default .101, .102, ...
    lan = "198.18.1.0/24"                  # default 198.18.N.0/24, N = 1, 2, ... (next free)
    udp_timeout_s = 30                     # router's conntrack UDP timeout (mapping lifetime)

    [[hosts]]
    name = "a2"
    role = "nat"
    behind = "a"                           # shares a's NAT router: the next address of a's
                                           # LAN (.3, .4, ...); a's NAT must be
                                           # port-restricted-cone or symmetric (the cone
                                           # kinds forward inbound traffic to one host)

    bootstraps = 2                         # top level: the first N public hosts are bootstraps

Router clusters (optional): a host of ``[[hosts]]`` runs ``ipop-router`` instead of ``ipopd``
and serves a LAN bridge (``clan0`` in its namespace) of plain hosts, each in a namespace of
its own, that run only a real DHCP client::

    [[clusters]]
    router = "r1"                          # a [[hosts]] name (usually role = "nat")
    hosts = [{name = "p1", client = "udhcpc"}, {name = "p2", client = "dhclient"}]

``kind`` is the key the simulator's topology uses for a host's NAT kind too (there, ``nat``
names a shared NAT box); lab files written before it said ``nat = "<kind>"``, which still
loads (giving both is an error).

A public host's ``ip`` (a NAT router's ``wan_ip``) decides its segment: an address inside
``subnet2`` puts it there. ``.1`` of every segment belongs to the inet namespace (the gateway
between segments); ``.1`` of a LAN is the router and ``.2`` the LAN host (``.3``... the hosts
``behind`` it).

Large labs are generated, not written: :func:`ipop.tools.lab.generated.scaled_topology` makes
N ipopd hosts from a NAT mix (``none:0.2,port-restricted-cone:0.4,...``) with several hosts
per NAT where the kind allows it, two bootstraps and any number of router clusters;
:data:`ipop.tools.lab.generated.PRESETS` names a few.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from ipop.errors import ConfigError
from ipop.nat.kinds import NatKind
from ipop.tools.lab.natrules import NAT_KINDS

ROLES = ("public", "nat")
# NAT kinds that several LAN hosts can share: the cone kinds DNAT inbound traffic to one host.
SHAREABLE_NATS = (NatKind.PORT_RESTRICTED_CONE, NatKind.SYMMETRIC)
MIX_KINDS = (NatKind.NONE, *NAT_KINDS)
DHCP_CLIENTS = ("udhcpc", "dhclient")
BACKENDS = ("iptables", "nft")
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,11}")
# The project's address plan (rules: underlay 203.0.113.0/24 and 198.51.100.0/24, LANs in
# 198.18.0.0/15); anything else could collide with a real network on the machine.
UNDERLAY_RANGES = (IPv4Network("203.0.113.0/24"), IPv4Network("198.51.100.0/24"))
LAN_RANGE = IPv4Network("198.18.0.0/15")
DEFAULT_SUBNET = IPv4Network("203.0.113.0/24")
FIRST_PUBLIC_HOST = 10
FIRST_WAN_HOST = 101
MAX_UDP_TIMEOUT_S = 3600


@dataclass(frozen=True, slots=True)
class NatSpec:
    """The NAT router in front of one LAN host."""

    kind: NatKind
    wan_ip: IPv4Address
    lan: IPv4Network
    udp_timeout_s: int | None = None

    @property
    def router_ip(self) -> IPv4Address:
        return self.lan.network_address + 1

    @property
    def host_ip(self) -> IPv4Address:
        return self.lan.network_address + 2


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One end host: ``ip`` is its own interface address (public, or on its LAN).

    ``nat_owner`` names the host whose NAT router this one shares (None: its own, if any)."""

    name: str
    role: str
    ip: IPv4Address
    extra_ips: tuple[IPv4Address, ...] = ()
    nat: NatSpec | None = None
    nat_owner: str | None = None

    @property
    def public_ip(self) -> IPv4Address:
        """The address the internet sees this host as (its NAT router's, when behind one)."""
        return self.nat.wan_ip if self.nat is not None else self.ip


@dataclass(frozen=True, slots=True)
class PlainHostSpec:
    """A plain host on a router's LAN: no ipop software, only a DHCP client."""

    name: str
    client: str  # one of DHCP_CLIENTS


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    router: str
    hosts: tuple[PlainHostSpec, ...]


@dataclass(frozen=True, slots=True)
class Topology:
    hosts: tuple[HostSpec, ...]
    subnet: IPv4Network = DEFAULT_SUBNET
    subnet2: IPv4Network | None = None
    nat_backend: str = "iptables"
    clusters: tuple[ClusterSpec, ...] = ()
    bootstraps: int = 1

    def cluster_of_router(self, name: str) -> ClusterSpec | None:
        return next((c for c in self.clusters if c.router == name), None)

    @property
    def bootstrap(self) -> HostSpec:
        return next(h for h in self.hosts if h.role == "public")

    @property
    def bootstrap_names(self) -> tuple[str, ...]:
        """The first ``bootstraps`` public hosts (fewer if there are fewer)."""
        return tuple(h.name for h in self.hosts if h.role == "public")[: self.bootstraps]

    def sharing(self, owner: str) -> tuple[HostSpec, ...]:
        """The hosts behind ``owner``'s NAT router besides ``owner`` itself."""
        return tuple(h for h in self.hosts if h.nat_owner == owner)

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def segment_of(self, ip: IPv4Address) -> IPv4Network:
        """The internet segment an underlay address sits on."""
        if self.subnet2 is not None and ip in self.subnet2:
            return self.subnet2
        return self.subnet

    def to_dict(self) -> dict[str, Any]:
        """The TOML-shaped dict with every default filled in; ``topology_from_dict`` inverts it."""
        inet: dict[str, Any] = {"subnet": str(self.subnet)}
        if self.subnet2 is not None:
            inet["subnet2"] = str(self.subnet2)
        hosts: list[dict[str, Any]] = []
        for h in self.hosts:
            d: dict[str, Any] = {"name": h.name, "role": h.role}
            if h.nat_owner is not None:
                d["behind"] = h.nat_owner
            elif h.nat is None:
                d["ip"] = str(h.ip)
                if h.extra_ips:
                    d["extra_ips"] = [str(a) for a in h.extra_ips]
            else:
                d.update(kind=h.nat.kind, wan_ip=str(h.nat.wan_ip), lan=str(h.nat.lan))
                if h.nat.udp_timeout_s is not None:
                    d["udp_timeout_s"] = h.nat.udp_timeout_s
            hosts.append(d)
        out: dict[str, Any] = {"nat_backend": self.nat_backend, "internet": inet, "hosts": hosts}
        if self.bootstraps != 1:
            out["bootstraps"] = self.bootstraps
        if self.clusters:
            out["clusters"] = [
                {
                    "router": c.router,
                    "hosts": [{"name": p.name, "client": p.client} for p in c.hosts],
                }
                for c in self.clusters
            ]
        return out


def default_topology() -> Topology:
    """pub1 (bootstrap) and pub2 on the internet; a, b, c behind three different NATs.

    Public hosts serve STUN (``[stun] serve``); pub1 has a second address, so that its ipopd
    also serves CHANGE-REQUEST (``ipop netcheck``).
    """
    return topology_from_dict(
        {
            "hosts": [
                {
                    "name": "pub1",
                    "role": "public",
                    "ip": "203.0.113.10",
                    "extra_ips": ["203.0.113.20"],
                },
                {"name": "pub2", "role": "public", "ip": "203.0.113.11"},
                {"name": "a", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "b", "role": "nat", "kind": "restricted-cone"},
                {"name": "c", "role": "nat", "kind": "symmetric"},
            ]
        }
    )


# Router clusters added by with_router_clusters: router name, NAT kind, plain hosts.
DEMO_CLUSTERS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("r1", "port-restricted-cone", (("p1", "udhcpc"), ("p2", "dhclient"), ("p3", "udhcpc"))),
    ("r2", "symmetric", (("q1", "dhclient"), ("q2", "udhcpc"))),
)


def with_router_clusters(topology: Topology, count: int = 2) -> Topology:
    """``topology`` plus ``count`` router clusters, unless it has clusters already: ``r1``
    (behind a port-restricted cone; plain hosts p1-p3 on udhcpc, dhclient, udhcpc), ``r2``
    (behind a symmetric NAT; q1 on dhclient, q2 on udhcpc), then r3... with two hosts each."""
    if topology.clusters or count <= 0:
        return topology
    data = topology.to_dict()
    data["clusters"] = []
    for i in range(count):
        if i < len(DEMO_CLUSTERS):
            router, kind, plain = DEMO_CLUSTERS[i]
        else:
            router, kind = f"r{i + 1}", "port-restricted-cone"
            plain = ((f"r{i + 1}a", "udhcpc"), (f"r{i + 1}b", "dhclient"))
        data["hosts"].append({"name": router, "role": "nat", "kind": kind})
        data["clusters"].append(
            {"router": router, "hosts": [{"name": n, "client": c} for n, c in plain]}
        )
    return topology_from_dict(data)


def load_topology(path: Path) -> Topology:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(str(path), f"cannot read topology: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML: {e}") from e
    return topology_from_dict(data)


# ---------------------------------------------------------------- validation


def _check_keys(d: dict[str, Any], where: str, allowed: set[str]) -> None:
    for k in d:
        if k not in allowed:
            key = f"{where}.{k}" if where else k
            raise ConfigError(key, "unknown key", f"allowed here: {', '.join(sorted(allowed))}")


def _nat_kind(h: dict[str, Any], where: str) -> NatKind:
    """A NAT host's ``kind`` (or ``nat``, the old spelling of the key); errors name the key."""
    if "kind" in h and "nat" in h:
        raise ConfigError(f"{where}.nat", "given with kind", "nat is the old name of kind")
    key = "kind" if "kind" in h or "nat" not in h else "nat"
    if key not in h:
        raise ConfigError(f"{where}.kind", "missing", f"use one of {', '.join(NAT_KINDS)}")
    text = _str(h, key, where)
    if text not in NAT_KINDS:
        raise ConfigError(
            f"{where}.{key}", f"unknown NAT kind {text!r}", f"use one of {', '.join(NAT_KINDS)}"
        )
    return NatKind(text)


def _str(d: dict[str, Any], key: str, where: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise ConfigError(f"{where}.{key}", f"must be a string, not {type(v).__name__}")
    return v


def _network(v: object, key: str) -> IPv4Network:
    if not isinstance(v, str):
        raise ConfigError(key, "must be a string like '203.0.113.0/24'")
    try:
        return IPv4Network(v)
    except ValueError as e:
        raise ConfigError(key, f"not an IPv4 network: {e}") from e


def _address(v: object, key: str) -> IPv4Address:
    if not isinstance(v, str):
        raise ConfigError(key, "must be a string like '203.0.113.10'")
    try:
        return IPv4Address(v)
    except ipaddress.AddressValueError as e:
        raise ConfigError(key, f"not an IPv4 address: {e}") from e


def _underlay(v: object, key: str) -> IPv4Network:
    net = _network(v, key)
    if not any(net.subnet_of(r) for r in UNDERLAY_RANGES):
        raise ConfigError(
            key,
            f"{net} is outside the lab's underlay ranges",
            "use a subnet of " + " or ".join(str(r) for r in UNDERLAY_RANGES),
        )
    if net.prefixlen > 28:
        raise ConfigError(key, "segment too small", "use a prefix length of at most /28")
    return net


class _Allocator:
    """Hands out underlay addresses and LANs, refusing duplicates."""

    def __init__(self, segments: list[IPv4Network]) -> None:
        self.segments = segments
        self.used: set[IPv4Address] = {s.network_address + 1 for s in segments}
        self.lans: list[IPv4Network] = []

    def claim(self, ip: IPv4Address, key: str) -> IPv4Address:
        seg = next((s for s in self.segments if ip in s), None)
        if seg is None:
            raise ConfigError(
                key,
                f"{ip} is on no internet segment",
                "use an address in " + " or ".join(map(str, self.segments)),
            )
        if ip in (seg.network_address, seg.broadcast_address):
            raise ConfigError(key, f"{ip} is the network or broadcast address of {seg}")
        if ip in self.used:
            raise ConfigError(
                key,
                f"{ip} is already taken",
                ".1 belongs to the inet namespace; every address once",
            )
        self.used.add(ip)
        return ip

    def next_free(self, start: int, key: str) -> IPv4Address:
        seg = self.segments[0]
        for i in range(start, seg.num_addresses - 1):
            ip = seg.network_address + i
            if ip not in self.used:
                self.used.add(ip)
                return ip
        raise ConfigError(key, f"no free address left in {seg}")

    def next_lan(self, start: int, key: str) -> IPv4Network:
        """The first /24 of 198.18.0.0/15 from number ``start`` on that no LAN overlaps."""
        for lan in list(LAN_RANGE.subnets(new_prefix=24))[start:]:
            if not any(lan.overlaps(other) for other in self.lans):
                self.lans.append(lan)
                return lan
        raise ConfigError(key, f"no free /24 left in {LAN_RANGE}")

    def claim_lan(self, lan: IPv4Network, key: str) -> IPv4Network:
        if not lan.subnet_of(LAN_RANGE):
            raise ConfigError(key, f"{lan} is outside {LAN_RANGE}", "use 198.18.N.0/24")
        if lan.prefixlen > 30:
            raise ConfigError(key, "LAN too small", "use a prefix length of at most /30")
        for other in self.lans:
            if lan.overlaps(other):
                raise ConfigError(key, f"{lan} overlaps {other}")
        self.lans.append(lan)
        return lan


def topology_from_dict(data: dict[str, Any]) -> Topology:
    """Validate a TOML-shaped dict; every error names its key (``hosts[2].nat``)."""
    _check_keys(data, "", {"nat_backend", "internet", "hosts", "clusters", "bootstraps"})
    bootstraps = data.get("bootstraps", 1)
    if not isinstance(bootstraps, int) or isinstance(bootstraps, bool) or bootstraps < 1:
        raise ConfigError("bootstraps", f"bad value {bootstraps!r}", "a positive integer")
    backend = data.get("nat_backend", "iptables")
    if backend not in BACKENDS:
        raise ConfigError(
            "nat_backend", f"unknown backend {backend!r}", f"use one of {', '.join(BACKENDS)}"
        )
    inet = data.get("internet", {})
    if not isinstance(inet, dict):
        raise ConfigError("internet", "must be a table")
    _check_keys(inet, "internet", {"subnet", "subnet2"})
    subnet = _underlay(inet.get("subnet", str(DEFAULT_SUBNET)), "internet.subnet")
    subnet2 = _underlay(inet["subnet2"], "internet.subnet2") if "subnet2" in inet else None
    if subnet2 is not None and subnet2.overlaps(subnet):
        raise ConfigError("internet.subnet2", f"{subnet2} overlaps internet.subnet {subnet}")
    alloc = _Allocator([subnet] if subnet2 is None else [subnet, subnet2])

    raw_hosts = data.get("hosts")
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise ConfigError("hosts", "missing or empty", "add [[hosts]] tables")
    # Explicit addresses first, so automatic ones never take an address named later.
    for i, h in enumerate(raw_hosts):
        if not isinstance(h, dict):
            raise ConfigError(f"hosts[{i}]", "must be a table")
        for key in ("ip", "wan_ip"):
            if key in h:
                alloc.claim(_address(h[key], f"hosts[{i}].{key}"), f"hosts[{i}].{key}")
        for j, extra in enumerate(
            h.get("extra_ips", []) if isinstance(h.get("extra_ips"), list) else []
        ):
            alloc.claim(_address(extra, f"hosts[{i}].extra_ips[{j}]"), f"hosts[{i}].extra_ips[{j}]")
        if "lan" in h:
            alloc.claim_lan(_network(h["lan"], f"hosts[{i}].lan"), f"hosts[{i}].lan")

    hosts: list[HostSpec] = []
    names: set[str] = set()
    by_name: dict[str, HostSpec] = {}
    nat_index = 0
    for i, h in enumerate(raw_hosts):
        where = f"hosts[{i}]"
        for req in ("name", "role"):
            if req not in h:
                raise ConfigError(f"{where}.{req}", "missing")
        name = _str(h, "name", where)
        if not NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{where}.name",
                f"bad host name {name!r}",
                "use [a-z][a-z0-9-]*, at most 12 characters",
            )
        if name in names:
            raise ConfigError(f"{where}.name", f"duplicate host name {name!r}")
        names.add(name)
        role = _str(h, "role", where)
        if role not in ROLES:
            raise ConfigError(
                f"{where}.role", f"unknown role {role!r}", f"use one of {', '.join(ROLES)}"
            )
        if role == "public":
            _check_keys(h, where, {"name", "role", "ip", "extra_ips"})
            ip = (
                IPv4Address(h["ip"])
                if "ip" in h
                else alloc.next_free(FIRST_PUBLIC_HOST, f"{where}.ip")
            )
            extras = h.get("extra_ips", [])
            if not isinstance(extras, list):
                raise ConfigError(f"{where}.extra_ips", "must be a list of addresses")
            hosts.append(HostSpec(name, role, ip, tuple(IPv4Address(e) for e in extras)))
            by_name[name] = hosts[-1]
            continue
        if "behind" in h:
            _check_keys(h, where, {"name", "role", "behind"})
            spec = _behind(h, where, by_name, hosts)
            hosts.append(spec)
            by_name[name] = spec
            continue
        _check_keys(h, where, {"name", "role", "kind", "nat", "wan_ip", "lan", "udp_timeout_s"})
        nat_index += 1
        kind = _nat_kind(h, where)
        wan = (
            IPv4Address(h["wan_ip"])
            if "wan_ip" in h
            else alloc.next_free(FIRST_WAN_HOST, f"{where}.wan_ip")
        )
        # An explicit LAN was claimed in the first pass; automatic ones take the next free /24.
        lan = IPv4Network(h["lan"]) if "lan" in h else alloc.next_lan(nat_index, f"{where}.lan")
        timeout = h.get("udp_timeout_s")
        if timeout is not None and (
            not isinstance(timeout, int)
            or isinstance(timeout, bool)
            or not 1 <= timeout <= MAX_UDP_TIMEOUT_S
        ):
            raise ConfigError(
                f"{where}.udp_timeout_s",
                f"bad value {timeout!r}",
                f"an integer number of seconds, 1..{MAX_UDP_TIMEOUT_S}",
            )
        nat = NatSpec(kind, wan, lan, timeout)
        hosts.append(HostSpec(name, role, nat.host_ip, (), nat))
        by_name[name] = hosts[-1]

    if not any(h.role == "public" for h in hosts):
        raise ConfigError("hosts", "no public host", "the first public host is the bootstrap")
    clusters = _clusters(data.get("clusters", []), names)
    for c in clusters:
        if by_name[c.router].nat_owner is not None or any(h.nat_owner == c.router for h in hosts):
            raise ConfigError(
                "clusters", f"router {c.router!r} shares a NAT", "give a cluster router its own"
            )
    return Topology(tuple(hosts), subnet, subnet2, backend, clusters, bootstraps)


def _behind(
    h: dict[str, Any], where: str, by_name: dict[str, HostSpec], hosts: list[HostSpec]
) -> HostSpec:
    """A host sharing an earlier host's NAT router: the next free address of that LAN."""
    owner_name = _str(h, "behind", where)
    owner = by_name.get(owner_name)
    if owner is None or owner.nat is None or owner.nat_owner is not None:
        raise ConfigError(
            f"{where}.behind",
            f"{owner_name!r} is not an earlier host with a NAT of its own",
            "name a role = 'nat' host listed before this one",
        )
    if owner.nat.kind not in SHAREABLE_NATS:
        raise ConfigError(
            f"{where}.behind",
            f"a {owner.nat.kind} NAT serves one host",
            f"share only {' or '.join(SHAREABLE_NATS)} NATs",
        )
    taken = 1 + sum(1 for o in hosts if o.nat_owner == owner_name)
    ip = owner.nat.host_ip + taken
    if ip >= owner.nat.lan.broadcast_address:
        raise ConfigError(f"{where}.behind", f"no address left on {owner.nat.lan}")
    return HostSpec(_str(h, "name", where), "nat", ip, (), owner.nat, owner_name)


def _clusters(raw: object, names: set[str]) -> tuple[ClusterSpec, ...]:
    if not isinstance(raw, list):
        raise ConfigError("clusters", "must be a list of tables")
    out: list[ClusterSpec] = []
    routers: set[str] = set()
    for i, c in enumerate(raw):
        where = f"clusters[{i}]"
        if not isinstance(c, dict):
            raise ConfigError(where, "must be a table")
        _check_keys(c, where, {"router", "hosts"})
        if "router" not in c:
            raise ConfigError(f"{where}.router", "missing")
        router = _str(c, "router", where)
        if router not in names:
            raise ConfigError(f"{where}.router", f"no host {router!r}", "name a [[hosts]] entry")
        if router in routers:
            raise ConfigError(f"{where}.router", f"{router!r} already routes a cluster")
        routers.add(router)
        raw_hosts = c.get("hosts")
        if not isinstance(raw_hosts, list) or not raw_hosts:
            raise ConfigError(f"{where}.hosts", "missing or empty")
        plain: list[PlainHostSpec] = []
        for j, p in enumerate(raw_hosts):
            pw = f"{where}.hosts[{j}]"
            if not isinstance(p, dict) or "name" not in p:
                raise ConfigError(pw, "must be a table with a name")
            _check_keys(p, pw, {"name", "client"})
            name = _str(p, "name", pw)
            if not NAME_RE.fullmatch(name) or name in names:
                raise ConfigError(f"{pw}.name", f"bad or duplicate host name {name!r}")
            names.add(name)
            client = p.get("client", "udhcpc")
            if client not in DHCP_CLIENTS:
                raise ConfigError(
                    f"{pw}.client", f"unknown client {client!r}", f"use {', '.join(DHCP_CLIENTS)}"
                )
            plain.append(PlainHostSpec(name, str(client)))
        out.append(ClusterSpec(router, tuple(plain)))
    return tuple(out)
