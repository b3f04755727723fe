"""The JSON contract of ``ipop status --json`` and ``ipop ping --json`` (DESIGN.md §10, §12.10).

The daemon builds these frozen dataclasses from its state; the control socket carries them as
JSON objects; the CLI parses them back and only formats them. ``to_dict``/``from_dict`` and
``to_json``/``from_json`` round-trip exactly. Reading is strict, because scripts depend on the
shape: a missing field, an unknown field or a value of the wrong type raises :class:`ValueError`
naming the field (``peers[2].rtt_ms: must be a number or null, got str``). Floats must be finite
(JSON has no NaN), counts non-negative. Each field names its reader once, in its class;
:mod:`ipop.jsondoc` writes and reads every document from those declarations.

Document shape (``Status.to_dict()``)::

    {
      "self": {"node_id": "<40 hex>", "node_name": "alice", "vip": "100.64.1.1",
               "names": ["alice-laptop.ipop", "C064001001.ipop"], "nat": "cone",
               "uptime_s": 12.5, "endpoints": ["203.0.113.5:5800"], "routable": true},
      "peers": [{"node_id": "<40 hex>", "name": "bob", "vip": "100.64.1.2",
                 "path": "direct", "endpoint": "198.51.100.7:5800", "rtt_ms": 1.5,
                 "bytes_in": 1200, "bytes_out": 3400, "kinds": ["near", "shortcut"]}],
                 # a relayed peer adds "why" and "via": the relay's node id
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
import re
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from ipop.jsondoc import (
    Document,
    doc,
    read_bool,
    read_count,
    read_count_map,
    read_list,
    read_matching,
    read_number,
    read_one_of,
    read_opt_count,
    read_opt_number,
    read_opt_str,
    read_str,
    read_str_list,
)
from ipop.nat.kinds import NatKind

__all__ = [
    "PATH_KINDS",
    "DnsLatency",
    "DnsStatus",
    "LanHostStatus",
    "NetworkStatus",
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
_LAN_HOST_KINDS: Final[tuple[str, ...]] = ("dhcp", "static")

_NODE_ID_RE = re.compile(r"^[0-9a-f]{40}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# --- the readers of this contract's own value kinds (the plain ones are in ipop.jsondoc) ------


def _opt_nat(value: object, where: str) -> NatKind | None:
    """A NAT kind or null; the old spelling "open" reads as "none"."""
    text = read_opt_str(value, where)
    if text is None:
        return None
    try:
        return NatKind.parse(text)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


_node_id = read_matching(_NODE_ID_RE, "40 lowercase hex digits")
_path = read_one_of(PATH_KINDS)  # a PathKind
_mac = read_matching(_MAC_RE, "aa:bb:cc:dd:ee:ff (lowercase)")
_host_kind = read_one_of(_LAN_HOST_KINDS)


def _opt_path(value: object, where: str) -> PathKind | None:
    return None if value is None else cast(PathKind, _path(value, where))


def _loads(text: str | bytes) -> object:
    # json.JSONDecodeError is a ValueError already; NaN/Infinity are not JSON.
    def _no_constants(name: str) -> object:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=_no_constants)


def _dumps(obj: object) -> str:
    return json.dumps(obj, allow_nan=False)


# --- the documents ----------------------------------------------------------------------------
# Each field names its reader; ipop.jsondoc writes and reads them in this order.


@dataclass(frozen=True, slots=True)
class SelfStatus(Document):
    """This node as the daemon sees it."""

    WHERE = "self"

    # 40 lowercase hex digits (NodeId.hex())
    node_id: str = field(metadata=doc(_node_id))
    node_name: str = field(metadata=doc(read_str))
    # None until the address lease is won
    vip: str | None = field(metadata=doc(read_opt_str))
    # every DNS name that resolves to this node
    names: list[str] = field(metadata=doc(read_str_list))
    # None until NAT discovery has an answer (ipop.nat.kinds)
    nat: NatKind | None = field(metadata=doc(_opt_nat))
    uptime_s: float = field(metadata=doc(read_number))
    # "IPv4:PORT" this node believes peers can reach
    endpoints: list[str] = field(metadata=doc(read_str_list))
    # joined the ring: overlay routing to and from this node works
    routable: bool = field(metadata=doc(read_bool))
    # a node of no virtual network: it routes, relays and stores DHT records for the
    # overlay's networks, and never holds a vIP (left out of the JSON when false)
    overlay_only: bool = field(default=False, metadata=doc(read_bool, optional=True))


@dataclass(frozen=True, slots=True)
class NetworkStatus(Document):
    """One virtual network of a daemon that is a member of several (issue 17)."""

    WHERE = "network"

    network: str = field(metadata=doc(read_str))
    # None until the address lease in that network is won
    vip: str | None = field(metadata=doc(read_opt_str))
    # every DNS name that resolves to this node in that network
    names: list[str] = field(metadata=doc(read_str_list))
    suffix: str = field(metadata=doc(read_str))  # its DNS suffix
    tap: str = field(metadata=doc(read_str))  # its TAP's name


@dataclass(frozen=True, slots=True)
class PeerStatus(Document):
    """One peer the node has a link to or is routing to."""

    WHERE = "peer"

    node_id: str = field(metadata=doc(_node_id))
    name: str | None = field(metadata=doc(read_opt_str))
    vip: str | None = field(metadata=doc(read_opt_str))
    path: PathKind = field(metadata=doc(_path))
    # the underlay endpoint of a direct path; relay node for "relayed"
    endpoint: str | None = field(metadata=doc(read_opt_str))
    rtt_ms: float | None = field(metadata=doc(read_opt_number))  # None until measured
    bytes_in: int = field(metadata=doc(read_count))
    bytes_out: int = field(metadata=doc(read_count))
    # connection kinds in the overlay table, e.g. ["near", "shortcut"]
    kinds: list[str] = field(metadata=doc(read_str_list))
    # Why the path is not direct ("both sides symmetric NAT", ...); absent (None) when direct.
    why: str | None = field(default=None, metadata=doc(read_str, optional=True))
    # The relay's node id (40 hex) for "relayed"; absent (None) otherwise. ``endpoint`` says
    # "via <first 8 digits>" for a person; this is for the map and for scripts.
    via: str | None = field(default=None, metadata=doc(_node_id, optional=True))


@dataclass(frozen=True, slots=True)
class LanHostStatus(Document):
    """One plain host behind a router (router mode)."""

    WHERE = "lan_host"

    mac: str = field(metadata=doc(_mac))  # "aa:bb:cc:dd:ee:ff"
    vip: str = field(metadata=doc(read_str))
    names: list[str] = field(metadata=doc(read_str_list))
    kind: str = field(metadata=doc(_host_kind))  # "dhcp" | "static"
    # seconds left on the DHCP lease; None for a static host
    lease_s: float | None = field(metadata=doc(read_opt_number))


@dataclass(frozen=True, slots=True)
class DnsLatency(Document):
    """Query-to-reply times of the gateway's resolver, in milliseconds."""

    WHERE = "dns.latency_ms"

    p50: float | None = field(metadata=doc(read_opt_number))  # over the recent replies
    p99: float | None = field(metadata=doc(read_opt_number))  # None before the first
    # "le_<ms>" / "over_<ms>" -> replies in that bucket, since start
    buckets: dict[str, int] = field(metadata=doc(read_count_map))


@dataclass(frozen=True, slots=True)
class DnsStatus(Document):
    """The gateway resolver's counters: queries, replies by rcode, drops by reason, latency."""

    WHERE = "dns"

    counters: dict[str, int] = field(metadata=doc(read_count_map))
    answers: dict[str, int] = field(metadata=doc(read_count_map))
    drops: dict[str, int] = field(metadata=doc(read_count_map))
    latency_ms: DnsLatency = field(metadata=doc(DnsLatency.from_dict))


@dataclass(frozen=True, slots=True)
class Status(Document):
    """Everything ``ipop status`` shows. ``self_`` is spelled ``"self"`` in JSON."""

    WHERE = "status"
    BARE = True  # errors name "peers[0].rtt_ms", not "status.peers[0].rtt_ms"

    self_: SelfStatus = field(metadata=doc(SelfStatus.from_dict, key="self"))
    peers: list[PeerStatus] = field(metadata=doc(read_list(PeerStatus.from_dict)))
    # packets/messages dropped, by reason
    drops: dict[str, int] = field(metadata=doc(read_count_map))
    # everything else the daemon counts (DHT ops, punches, ...)
    counters: dict[str, int] = field(metadata=doc(read_count_map))
    # router mode only
    lan_hosts: list[LanHostStatus] = field(
        default_factory=list,
        metadata=doc(read_list(LanHostStatus.from_dict), optional=True),
    )
    # None: the gateway's DNS is off
    dns: DnsStatus | None = field(default=None, metadata=doc(DnsStatus.from_dict, optional=True))
    # a daemon in several networks only: each of them, its first one (``self``'s) first
    networks: list[NetworkStatus] = field(
        default_factory=list,
        metadata=doc(read_list(NetworkStatus.from_dict), optional=True),
    )

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Status:
        return cls.from_dict(_loads(text))


@dataclass(frozen=True, slots=True)
class PingReply(Document):
    """The outcome of one overlay ping: ``ok`` False means no answer within the timeout."""

    WHERE = "ping"

    seq: int = field(metadata=doc(read_count))
    ok: bool = field(metadata=doc(read_bool))
    rtt_ms: float | None = field(default=None, metadata=doc(read_opt_number))
    # the path the reply came back on
    path: PathKind | None = field(default=None, metadata=doc(_opt_path))
    # overlay hops for "overlay"; 1 for direct, 2 for relayed
    hops: int | None = field(default=None, metadata=doc(read_opt_count))

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> PingReply:
        return cls.from_dict(_loads(text))
