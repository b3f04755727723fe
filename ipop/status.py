"""The JSON contract of ``ipop status --json`` and ``ipop ping --json`` (DESIGN.md §10, §12.10).

The daemon builds these frozen dataclasses from its state; the control socket carries them as
JSON objects; the CLI parses them back and only formats them. ``to_dict``/``from_dict`` and
``to_json``/``from_json`` round-trip exactly. Reading is strict, because scripts depend on the
shape: a missing field, an unknown field or a value of the wrong type raises :class:`ValueError`
naming the field (``peers[2].rtt_ms: must be a number or null, got str``). Floats must be finite
(JSON has no NaN), counts non-negative.

Document shape (``Status.to_dict()``)::

    {
      "self": {"node_id": "<40 hex>", "node_name": "alice", "vip": "100.64.1.1",
               "names": ["alice-laptop.ipop", "C064001001.ipop"], "nat": "cone",
               "uptime_s": 12.5, "endpoints": ["203.0.113.5:5800"], "routable": true},
      "peers": [{"node_id": "<40 hex>", "name": "bob", "vip": "100.64.1.2",
                 "path": "direct", "endpoint": "198.51.100.7:5800", "rtt_ms": 1.5,
                 "bytes_in": 1200, "bytes_out": 3400, "kinds": ["near", "shortcut"]}],
      "drops": {"bad_mac": 2},
      "counters": {"dht_get": 7},
      "lan_hosts": [{"mac": "02:00:00:00:00:01", "vip": "100.64.1.3",
                     "names": ["C064001003.ipop", "printer.ipop"], "kind": "dhcp",
                     "lease_s": 590.5}]
    }

``dns`` (the gateway's resolver; absent when DNS is off) is optional too::

    "dns": {"counters": {"queries": 1000, "lookups": 5, "merged": 995, "cache_hits": 0,
                         "retransmits": 0, "forwarded": 0, "in_flight": 0, "waiting": 0},
            "answers": {"noerror": 1000},              # replies sent, by rcode
            "drops": {"dns_too_many_waiters": 0},       # queries dropped or refused, by reason
            "latency_ms": {"p50": 4.2, "p99": 31.0,     # of the last 1024 replies; null: none
                           "buckets": {"le_1": 10, "le_2": 0, ..., "over_5000": 0}}}

``self.nat`` is a :class:`ipop.nat.kinds.NatKind` value or null (not known yet): netcheck's
measurement when there is one, else "none", "cone" or "symmetric" from peers' echoes of our
address. "open", the spelling of "none" before, still reads (as "none").

``lan_hosts`` (router mode: the plain hosts the router serves on its LAN) is optional: it is
written only when non-empty, and a document without it reads as an empty list, so a node's
status has exactly the four fields it always had. ``kind`` is "dhcp" or "static" (a host
that configured a free address itself); ``lease_s`` is the time left on its lease, null for
a static host.

A ping reply (``PingReply.to_dict()``)::

    {"seq": 1, "ok": true, "rtt_ms": 1.5, "path": "direct", "hops": 1}
    {"seq": 2, "ok": false, "rtt_ms": null, "path": null, "hops": null}    # timed out
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, cast

from ipop.nat.kinds import NatKind

__all__ = [
    "PATH_KINDS",
    "DnsLatency",
    "DnsStatus",
    "LanHostStatus",
    "PathKind",
    "PeerStatus",
    "PingReply",
    "SelfStatus",
    "Status",
]

PathKind = Literal["direct", "relayed", "overlay"]
# direct: a punched or reachable UDP path; relayed: a session through a relay node;
# overlay: no link yet, packets are greedily routed over the ring.
PATH_KINDS: Final[tuple[str, ...]] = ("direct", "relayed", "overlay")

_NODE_ID_RE = re.compile(r"^[0-9a-f]{40}$")


# --- strict field readers ---------------------------------------------------------------------


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _object(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be an object, got {_kind(value)}")
    return cast(Mapping[str, object], value)


def _exact_keys(obj: Mapping[str, object], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"{where}.{missing[0]}: is missing")
    unknown = sorted(set(obj) - set(keys))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: is not a known field")


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string, got {_kind(value)}")
    return value


def _opt_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string or null, got {_kind(value)}")
    return value


def _opt_nat(value: object, where: str) -> NatKind | None:
    """A NAT kind or null; the old spelling "open" reads as "none"."""
    text = _opt_str(value, where)
    if text is None:
        return None
    try:
        return NatKind.parse(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: must be true or false, got {_kind(value)}")
    return value


def _count(value: object, where: str) -> int:
    # bool is an int in Python; a count of `true` is a bug on the writing side.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: must be an integer, got {_kind(value)}")
    if value < 0:
        raise ValueError(f"{where}: must not be negative, got {value}")
    return value


def _opt_count(value: object, where: str) -> int | None:
    return None if value is None else _count(value, where)


def _number(value: object, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{where}: must be a number, got {_kind(value)}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: must be a finite number >= 0, got {value}")
    return float(value)


def _opt_number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{where}: must be a number or null, got {_kind(value)}")
    return _number(value, where)


def _str_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: must be a list of strings, got {_kind(value)}")
    return [_str(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _count_map(value: object, where: str) -> dict[str, int]:
    obj = _object(value, where)
    return {_str(k, where): _count(v, f"{where}.{k}") for k, v in obj.items()}


def _node_id(value: object, where: str) -> str:
    text = _str(value, where)
    if not _NODE_ID_RE.match(text):
        raise ValueError(f"{where}: must be 40 lowercase hex digits, got {text!r}")
    return text


def _path(value: object, where: str) -> PathKind:
    text = _str(value, where)
    if text not in PATH_KINDS:
        raise ValueError(f"{where}: must be one of {', '.join(PATH_KINDS)}, got {text!r}")
    return cast(PathKind, text)


def _opt_path(value: object, where: str) -> PathKind | None:
    return None if value is None else _path(value, where)


def _loads(text: str | bytes) -> object:
    # json.JSONDecodeError is a ValueError already; NaN/Infinity are not JSON.
    def _no_constants(name: str) -> object:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=_no_constants)


def _dumps(obj: object) -> str:
    return json.dumps(obj, allow_nan=False)


# --- the documents ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SelfStatus:
    """This node as the daemon sees it."""

    node_id: str  # 40 lowercase hex digits (NodeId.hex())
    node_name: str
    vip: str | None  # None until the address lease is won
    names: list[str]  # every DNS name that resolves to this node
    nat: NatKind | None  # None until NAT discovery has an answer (ipop.nat.kinds)
    uptime_s: float
    endpoints: list[str]  # "IPv4:PORT" this node believes peers can reach
    routable: bool  # joined the ring: overlay routing to and from this node works

    FIELDS: ClassVar[tuple[str, ...]] = (
        "node_id",
        "node_name",
        "vip",
        "names",
        "nat",
        "uptime_s",
        "endpoints",
        "routable",
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_name": self.node_name,
            "vip": self.vip,
            "names": list(self.names),
            "nat": self.nat,
            "uptime_s": self.uptime_s,
            "endpoints": list(self.endpoints),
            "routable": self.routable,
        }

    @classmethod
    def from_dict(cls, value: object, where: str = "self") -> SelfStatus:
        obj = _object(value, where)
        _exact_keys(obj, cls.FIELDS, where)
        return cls(
            node_id=_node_id(obj["node_id"], f"{where}.node_id"),
            node_name=_str(obj["node_name"], f"{where}.node_name"),
            vip=_opt_str(obj["vip"], f"{where}.vip"),
            names=_str_list(obj["names"], f"{where}.names"),
            nat=_opt_nat(obj["nat"], f"{where}.nat"),
            uptime_s=_number(obj["uptime_s"], f"{where}.uptime_s"),
            endpoints=_str_list(obj["endpoints"], f"{where}.endpoints"),
            routable=_bool(obj["routable"], f"{where}.routable"),
        )


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer the node has a link to or is routing to."""

    node_id: str
    name: str | None
    vip: str | None
    path: PathKind
    endpoint: str | None  # the underlay endpoint of a direct path; relay node for "relayed"
    rtt_ms: float | None  # None until measured
    bytes_in: int
    bytes_out: int
    kinds: list[str]  # connection kinds in the overlay table, e.g. ["near", "shortcut"]
    # Why the path is not direct ("both sides symmetric NAT", ...); absent (None) when direct.
    why: str | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "node_id",
        "name",
        "vip",
        "path",
        "endpoint",
        "rtt_ms",
        "bytes_in",
        "bytes_out",
        "kinds",
    )
    OPTIONAL: ClassVar[tuple[str, ...]] = ("why",)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "vip": self.vip,
            "path": self.path,
            "endpoint": self.endpoint,
            "rtt_ms": self.rtt_ms,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "kinds": list(self.kinds),
        } | ({"why": self.why} if self.why is not None else {})

    @classmethod
    def from_dict(cls, value: object, where: str = "peer") -> PeerStatus:
        obj = _object(value, where)
        _exact_keys(obj, cls.FIELDS + tuple(k for k in cls.OPTIONAL if k in obj), where)
        return cls(
            node_id=_node_id(obj["node_id"], f"{where}.node_id"),
            name=_opt_str(obj["name"], f"{where}.name"),
            vip=_opt_str(obj["vip"], f"{where}.vip"),
            path=_path(obj["path"], f"{where}.path"),
            endpoint=_opt_str(obj["endpoint"], f"{where}.endpoint"),
            rtt_ms=_opt_number(obj["rtt_ms"], f"{where}.rtt_ms"),
            bytes_in=_count(obj["bytes_in"], f"{where}.bytes_in"),
            bytes_out=_count(obj["bytes_out"], f"{where}.bytes_out"),
            kinds=_str_list(obj["kinds"], f"{where}.kinds"),
            why=_str(obj["why"], f"{where}.why") if "why" in obj else None,
        )


@dataclass(frozen=True, slots=True)
class LanHostStatus:
    """One plain host behind a router (router mode)."""

    mac: str  # "aa:bb:cc:dd:ee:ff"
    vip: str
    names: list[str]
    kind: str  # "dhcp" | "static"
    lease_s: float | None  # seconds left on the DHCP lease; None for a static host

    FIELDS: ClassVar[tuple[str, ...]] = ("mac", "vip", "names", "kind", "lease_s")
    KINDS: ClassVar[tuple[str, ...]] = ("dhcp", "static")
    _MAC_RE: ClassVar[re.Pattern[str]] = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mac": self.mac,
            "vip": self.vip,
            "names": list(self.names),
            "kind": self.kind,
            "lease_s": self.lease_s,
        }

    @classmethod
    def from_dict(cls, value: object, where: str = "lan_host") -> LanHostStatus:
        obj = _object(value, where)
        _exact_keys(obj, cls.FIELDS, where)
        mac = _str(obj["mac"], f"{where}.mac")
        if not cls._MAC_RE.match(mac):
            raise ValueError(f"{where}.mac: must be aa:bb:cc:dd:ee:ff (lowercase), got {mac!r}")
        kind = _str(obj["kind"], f"{where}.kind")
        if kind not in cls.KINDS:
            raise ValueError(f"{where}.kind: must be one of {', '.join(cls.KINDS)}, got {kind!r}")
        return cls(
            mac=mac,
            vip=_str(obj["vip"], f"{where}.vip"),
            names=_str_list(obj["names"], f"{where}.names"),
            kind=kind,
            lease_s=_opt_number(obj["lease_s"], f"{where}.lease_s"),
        )


@dataclass(frozen=True, slots=True)
class DnsLatency:
    """Query-to-reply times of the gateway's resolver, in milliseconds."""

    p50: float | None  # over the recent replies; None before the first
    p99: float | None
    buckets: dict[str, int]  # "le_<ms>" / "over_<ms>" -> replies in that bucket, since start

    FIELDS: ClassVar[tuple[str, ...]] = ("p50", "p99", "buckets")

    def to_dict(self) -> dict[str, Any]:
        return {"p50": self.p50, "p99": self.p99, "buckets": dict(self.buckets)}

    @classmethod
    def from_dict(cls, value: object, where: str = "dns.latency_ms") -> DnsLatency:
        obj = _object(value, where)
        _exact_keys(obj, cls.FIELDS, where)
        return cls(
            p50=_opt_number(obj["p50"], f"{where}.p50"),
            p99=_opt_number(obj["p99"], f"{where}.p99"),
            buckets=_count_map(obj["buckets"], f"{where}.buckets"),
        )


@dataclass(frozen=True, slots=True)
class DnsStatus:
    """The gateway resolver's counters: queries, replies by rcode, drops by reason, latency."""

    counters: dict[str, int]
    answers: dict[str, int]
    drops: dict[str, int]
    latency_ms: DnsLatency

    FIELDS: ClassVar[tuple[str, ...]] = ("counters", "answers", "drops", "latency_ms")

    def to_dict(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "answers": dict(self.answers),
            "drops": dict(self.drops),
            "latency_ms": self.latency_ms.to_dict(),
        }

    @classmethod
    def from_dict(cls, value: object, where: str = "dns") -> DnsStatus:
        obj = _object(value, where)
        _exact_keys(obj, cls.FIELDS, where)
        return cls(
            counters=_count_map(obj["counters"], f"{where}.counters"),
            answers=_count_map(obj["answers"], f"{where}.answers"),
            drops=_count_map(obj["drops"], f"{where}.drops"),
            latency_ms=DnsLatency.from_dict(obj["latency_ms"], f"{where}.latency_ms"),
        )


@dataclass(frozen=True, slots=True)
class Status:
    """Everything ``ipop status`` shows. ``self_`` is spelled ``"self"`` in JSON."""

    self_: SelfStatus
    peers: list[PeerStatus]
    drops: dict[str, int]  # packets/messages dropped, by reason
    counters: dict[str, int]  # everything else the daemon counts (DHT ops, punches, ...)
    lan_hosts: list[LanHostStatus] = field(default_factory=list)  # router mode only
    dns: DnsStatus | None = None  # None: the gateway's DNS is off

    FIELDS: ClassVar[tuple[str, ...]] = ("self", "peers", "drops", "counters")
    OPTIONAL: ClassVar[tuple[str, ...]] = ("lan_hosts", "dns")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "self": self.self_.to_dict(),
            "peers": [p.to_dict() for p in self.peers],
            "drops": dict(self.drops),
            "counters": dict(self.counters),
        }
        if self.lan_hosts:
            out["lan_hosts"] = [h.to_dict() for h in self.lan_hosts]
        if self.dns is not None:
            out["dns"] = self.dns.to_dict()
        return out

    @classmethod
    def from_dict(cls, value: object) -> Status:
        obj = _object(value, "status")
        present = tuple(k for k in cls.OPTIONAL if k in obj)
        _exact_keys(obj, cls.FIELDS + present, "status")
        peers = obj["peers"]
        if not isinstance(peers, list):
            raise ValueError(f"peers: must be a list, got {_kind(peers)}")
        hosts = obj.get("lan_hosts", [])
        if not isinstance(hosts, list):
            raise ValueError(f"lan_hosts: must be a list, got {_kind(hosts)}")
        return cls(
            self_=SelfStatus.from_dict(obj["self"], "self"),
            peers=[PeerStatus.from_dict(p, f"peers[{i}]") for i, p in enumerate(peers)],
            drops=_count_map(obj["drops"], "drops"),
            counters=_count_map(obj["counters"], "counters"),
            lan_hosts=[LanHostStatus.from_dict(h, f"lan_hosts[{i}]") for i, h in enumerate(hosts)],
            dns=DnsStatus.from_dict(obj["dns"]) if "dns" in obj else None,
        )

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Status:
        return cls.from_dict(_loads(text))


@dataclass(frozen=True, slots=True)
class PingReply:
    """The outcome of one overlay ping: ``ok`` False means no answer within the timeout."""

    seq: int
    ok: bool
    rtt_ms: float | None = None
    path: PathKind | None = None  # the path the reply came back on
    hops: int | None = None  # overlay hops for "overlay"; 1 for direct, 2 for relayed

    FIELDS: ClassVar[tuple[str, ...]] = ("seq", "ok", "rtt_ms", "path", "hops")

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ok": self.ok,
            "rtt_ms": self.rtt_ms,
            "path": self.path,
            "hops": self.hops,
        }

    @classmethod
    def from_dict(cls, value: object, where: str = "ping") -> PingReply:
        obj = _object(value, where)
        _exact_keys(obj, cls.FIELDS, where)
        return cls(
            seq=_count(obj["seq"], f"{where}.seq"),
            ok=_bool(obj["ok"], f"{where}.ok"),
            rtt_ms=_opt_number(obj["rtt_ms"], f"{where}.rtt_ms"),
            path=_opt_path(obj["path"], f"{where}.path"),
            hops=_opt_count(obj["hops"], f"{where}.hops"),
        )

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> PingReply:
        return cls.from_dict(_loads(text))
