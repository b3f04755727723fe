"""``ipop status`` assembled from snapshots: pure functions, no I/O, no clock.

This module owns how the status document (:mod:`ipop.status`) is made from what the layers
report: the core's :class:`ipop.core.NodeSnapshot` (links, overlay connections, public view,
drops and counters per layer) and the daemon's :class:`LocalView` (its address and names, the
data plane's owner table, round trips from ``ipop ping``, netcheck's measured NAT, and the
drops and counters of the parts outside the core). It decides the words status uses: the NAT
kind (:func:`nat_kind`), why a path is relayed (:func:`why_relayed`), why a direct link may
be dead (:func:`why_silent`), why a peer has no link (:func:`why_no_link`).

The order of ``drops`` and ``counters`` is part of the JSON an operator diffs: core layers
first (link, overlay, stun, crl), then what :attr:`LocalView.drops` lists, in its order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TypeVar

from ipop import timing
from ipop.core import NodeSnapshot
from ipop.link.events import LinkInfo
from ipop.nat.kinds import NatKind
from ipop.nat.portguess import nat_flags
from ipop.nat.portguess import why_relayed as _punch_why
from ipop.status import DnsStatus, LanHostStatus, NetworkStatus, PeerStatus, SelfStatus, Status
from ipop.types import NodeId, RelayPath

_Key = TypeVar("_Key", bound=str)  # a drop reason: a str or a StrEnum member

__all__ = [
    "LocalView",
    "build_status",
    "nat_kind",
    "peer_statuses",
    "prefixed",
    "why_no_link",
    "why_relayed",
    "why_silent",
]


@dataclass(frozen=True, slots=True)
class LocalView:
    """What the daemon holds outside the core, read when status is asked for."""

    node_id: str  # 40 hex digits, from the bundle
    node_name: str
    uptime_s: float
    vip: IPv4Address | None = None  # None until the address lease is won
    names: tuple[str, ...] = ()
    # The data plane's vIP owners (peer -> packed vIP); None: no data plane yet, no peer rows.
    owners: Mapping[NodeId, bytes] | None = None
    # Linked peers' vIPs learned from their hostnames: peer -> (vIP, when learned).
    peer_vips: Mapping[NodeId, tuple[IPv4Address, float]] = field(default_factory=dict)
    # Overlay ping round trips from ``ipop ping``: peer -> (seconds, when measured).
    rtts: Mapping[NodeId, tuple[float, float]] = field(default_factory=dict)
    measured_nat: NatKind | None = None  # netcheck's answer, which beats peers' echoes
    # The other parts' drops and counters, already prefixed ("vnet.x"), in status order.
    drops: Sequence[Mapping[str, int]] = ()
    counters: Sequence[Mapping[str, int]] = ()
    lan_hosts: tuple[LanHostStatus, ...] = ()
    dns: DnsStatus | None = None
    overlay_only: bool = False  # a node of no network (ipop.aio.daemon)
    # A daemon in several networks: each (ipop.aio.member); empty for one network.
    networks: tuple[NetworkStatus, ...] = ()


def build_status(core: NodeSnapshot | None, local: LocalView, *, now: float) -> Status:
    """The ``ipop status`` document (``core`` None: the node has not started)."""
    me = SelfStatus(
        node_id=local.node_id,
        node_name=local.node_name,
        vip=str(local.vip) if local.vip is not None else None,
        names=list(local.names),
        nat=nat_kind(core, local.measured_nat),
        uptime_s=round(local.uptime_s, 3),
        endpoints=[f"{ep.host}:{ep.port}" for ep in core.endpoints] if core else [],
        routable=core.overlay.routable if core else False,
        overlay_only=local.overlay_only,
    )
    drops: Counter[str] = Counter()
    counters: Counter[str] = Counter()
    if core is not None:
        for layer, counts in core.drops.items():
            drops.update(prefixed(layer, counts))
        for layer, counts in core.counters.items():
            counters.update(prefixed(layer, counts))
        counters["crl.number"] = core.crl_number  # what an operator checks after a push
        if core.network_crl_number is not None:  # a shared overlay: our network's list
            counters["network_crl.number"] = core.network_crl_number
    for more in local.drops:
        drops.update(more)
    merged = dict(counters)
    for more in local.counters:
        merged.update(more)
    return Status(
        self_=me,
        peers=peer_statuses(core, local, now=now) if core is not None else [],
        drops=dict(drops),
        counters=merged,
        lan_hosts=list(local.lan_hosts),
        networks=list(local.networks),
        dns=local.dns,
    )


def prefixed(part: str, counts: Mapping[_Key, int]) -> dict[str, int]:
    """``counts`` under status's name for the part they belong to ("link.bad_mac")."""
    return {f"{part}.{k}": v for k, v in counts.items()}


def peer_statuses(core: NodeSnapshot, local: LocalView, *, now: float) -> list[PeerStatus]:
    """Every linked peer with its path, then the peers we exchange traffic with but hold no
    link to (they travel over the overlay)."""
    vips = local.owners
    if vips is None:
        return []
    kinds = {c.peer: c.kinds for c in core.overlay.connections}
    symmetric = nat_kind(core, local.measured_nat) is NatKind.SYMMETRIC
    rows = []
    for info in core.links:
        path = info.path
        vip = vips.get(info.peer)
        if vip is None and info.peer in local.peer_vips:
            vip = local.peer_vips[info.peer][0].packed
        relayed = isinstance(path, RelayPath)
        rows.append(
            PeerStatus(
                node_id=info.peer.hex(),
                name=info.hostname or info.name,
                vip=str(IPv4Address(vip)) if vip is not None else None,
                path="relayed" if relayed else "direct",
                endpoint=f"via {path.via.short()}" if isinstance(path, RelayPath) else str(path),
                rtt_ms=_rtt_ms(local.rtts.get(info.peer), info),
                bytes_in=info.bytes_in,
                bytes_out=info.bytes_out,
                kinds=sorted(k.name.lower() for k in kinds.get(info.peer, ())),
                why=(
                    why_relayed(core, info.peer, symmetric=symmetric)
                    if relayed
                    else why_silent(info, now)
                ),
                via=path.via.hex() if isinstance(path, RelayPath) else None,
            )
        )
    linked = {info.peer for info in core.links}
    for peer, vip in vips.items():
        if peer not in linked and peer != core.node_id:
            rows.append(
                PeerStatus(
                    node_id=peer.hex(),
                    name=None,
                    vip=str(IPv4Address(vip)),
                    path="overlay",
                    endpoint=None,
                    rtt_ms=_rtt_ms(local.rtts.get(peer), None),
                    bytes_in=0,
                    bytes_out=0,
                    kinds=[],
                    why=why_no_link(core.shortcuts.get(peer), now),
                )
            )
    return rows


def nat_kind(core: NodeSnapshot | None, measured: NatKind | None = None) -> NatKind | None:
    """What peers' echoes of our address say about the mapping (RFC 4787 §4.1).

    "none": peers see our own address; "cone": one public mapping for every peer
    (endpoint-independent); "symmetric": different mappings for different peers. None until
    a peer has told us. Filtering is not visible this way (``ipop netcheck``'s job), whose
    ``measured`` answer beats the guess.
    """
    if measured is not None:
        return measured
    if core is None:
        return None
    if core.public.host is None:
        return NatKind.NONE if core.overlay.routable else None
    return NatKind.SYMMETRIC if core.public.symmetric else NatKind.CONE


def why_relayed(core: NodeSnapshot, peer: NodeId, *, symmetric: bool) -> str:
    """Why a link to ``peer`` is still relayed, from both sides' NATs as far as known
    (``symmetric``: our side, netcheck's measurement when there is one)."""
    mine = nat_flags(symmetric, core.public.translated)
    return _punch_why(mine, core.peer_nat.get(peer))


def why_silent(info: LinkInfo, now: float) -> str | None:
    """Why a direct link may be dead although it still shows: a killed peer's link stays up
    until LINK_TIMEOUT_S of silence. None while the peer is heard as often as a live one is."""
    quiet = now - info.last_rx
    if quiet < timing.SILENT_PEER_S:
        return None
    return (
        f"nothing heard for {quiet:.0f} s (a live peer sends a keepalive every "
        f"{timing.KEEPALIVE_INTERVAL_S:.0f} s): it may be gone; the link closes after "
        f"{timing.LINK_TIMEOUT_S:.0f} s of silence"
    )


def why_no_link(last_used: float | None, now: float) -> str:
    """Why a peer we exchange traffic with has no link (``last_used``: the shortcut to it was
    last asked for by traffic then; None: no shortcut is held or forming)."""
    if last_used is None:
        return "no link: routed over the ring"
    idle = now - last_used
    if idle < timing.SHORTCUT_RETRY_S:
        return "no link yet: routed over the ring while a shortcut forms"
    # The shortcut is kept for SHORTCUT_IDLE_S after the last packet, but asked for only
    # while traffic flows: saying "forms" long after would be stale.
    return (
        f"no link: routed over the ring (no traffic for {idle:.0f} s; the next packet "
        "asks for a shortcut again)"
    )


def _rtt_ms(pinged: tuple[float, float] | None, info: LinkInfo | None) -> float | None:
    """The newest round trip we know: the link's last handshake or an overlay ping."""
    best = pinged
    if (
        info is not None
        and info.rtt_s is not None
        and (best is None or info.keys_established_at >= best[1])
    ):
        best = (info.rtt_s, info.keys_established_at)
    return None if best is None else round(best[0] * 1000, 3)
