"""``ipop status [--json]``: this node and its peers, as the daemon reports them.

The table has one row for this node (PATH ``self``) and one per peer; ``--json`` prints the
:class:`ipop.status.Status` document unchanged (the contract for scripts, DESIGN.md §10).
"""

from __future__ import annotations

import argparse
from typing import Any

from ipop.aio.control import ControlClient
from ipop.human import human_bytes, human_duration
from ipop.status import DnsStatus, PeerStatus, Status

HEADER = ("NODE", "VIP", "NAME", "PATH", "ENDPOINT", "RTT", "IN", "OUT")
# The first 8 hex digits tell nodes apart at a glance (NodeId.short()).
SHORT_ID = 8


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("status", help="this node and its peers")
    p.add_argument("--json", action="store_true", help="the status document as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: ControlClient) -> int:
    status = client.status()
    if args.json:
        print(status.to_json(indent=2))
    else:
        print("\n".join(format_status(status)))
    return 0


def _routing(routable: bool, *, joined: bool) -> str:
    if routable:
        return "routable"
    if joined:
        # A vIP means the ring answered our JOIN and the DHT works; routable waits until
        # links to both ring neighbours are up, which can take a few seconds more.
        return "joined; links to ring neighbours still forming"
    return "NOT routable (not joined to the ring yet)"


def _rtt(rtt_ms: float | None) -> str:
    return "-" if rtt_ms is None else f"{rtt_ms:.1f} ms"


def _peer_row(peer: PeerStatus) -> tuple[str, ...]:
    return (
        peer.node_id[:SHORT_ID],
        peer.vip or "-",
        peer.name or "-",
        peer.path,
        peer.endpoint or "-",
        _rtt(peer.rtt_ms),
        human_bytes(peer.bytes_in),
        human_bytes(peer.bytes_out),
    )


def format_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def format_dns(dns: DnsStatus) -> str:
    """One line: queries, replies by rcode, drops, latency (``dns: 1000 queries, ...``)."""
    answers = ", ".join(f"{k} {v}" for k, v in sorted(dns.answers.items(), key=lambda kv: -kv[1]))
    dropped = sum(dns.drops.values())
    lat = dns.latency_ms
    line = f"dns: {dns.counters.get('queries', 0)} queries ({answers or 'none answered'})"
    line += f", {dns.counters.get('merged', 0)} merged, {dropped} dropped"
    if lat.p50 is not None and lat.p99 is not None:
        line += f", p50 {lat.p50:.1f} ms, p99 {lat.p99:.1f} ms"
    return line


def format_status(status: Status) -> list[str]:
    me = status.self_
    rows: list[tuple[str, ...]] = [HEADER]
    rows.append(
        (
            me.node_id[:SHORT_ID],
            me.vip or "-",
            me.node_name,
            "self",
            me.endpoints[0] if me.endpoints else "-",
            "-",
            "-",
            "-",
        )
    )
    rows.extend(_peer_row(p) for p in sorted(status.peers, key=lambda p: (p.vip or "~", p.node_id)))
    lines = format_table(rows)
    facts = [
        f"up {human_duration(me.uptime_s)}",
        f"nat {me.nat or 'unknown'}",
        _routing(me.routable, joined=me.vip is not None),
    ]
    lines.append("")
    lines.append("; ".join(facts))
    if me.names:
        lines.append("names: " + ", ".join(me.names))
    if len(me.endpoints) > 1:
        lines.append("endpoints: " + ", ".join(me.endpoints))
    if not status.peers:
        lines.append("no peers yet")
    if me.overlay_only:
        lines.append(
            "overlay-only node: it routes, relays and stores DHT records for the networks on "
            "its overlay, and is a member of none (no virtual IP, no names)"
        )
    elif me.vip is None:
        # Why, not just "-": a lone first node waits here until a second node joins.
        lines.append(
            "no virtual IP yet: an address is claimed by a quorum of DHT replicas, so a node "
            "gets one once it is linked to at least one other node of its network"
        )
    if any(p.vip is None for p in status.peers):
        lines.append(
            "VIP '-': not known yet (learned from traffic with the peer, or from its "
            "hostname's record)"
        )
    for p in status.peers:
        if p.why:
            lines.append(f"{p.node_id[:SHORT_ID]} ({p.name or p.vip or '?'}) {p.path}: {p.why}")
    if status.networks:  # a daemon in several networks: each, its first (self's) first
        lines.append("")
        lines.append(f"networks ({len(status.networks)}):")
        nrows: list[tuple[str, ...]] = [("NETWORK", "TAP", "VIP", "SUFFIX", "NAMES")]
        for n in status.networks:
            nrows.append((n.network, n.tap, n.vip or "-", n.suffix, " ".join(n.names)))
        lines.extend(format_table(nrows))
    if status.lan_hosts:
        lines.append("")
        lines.append(f"LAN hosts ({len(status.lan_hosts)}):")
        hrows: list[tuple[str, ...]] = [("MAC", "VIP", "KIND", "LEASE", "NAMES")]
        for h in sorted(status.lan_hosts, key=lambda h: h.vip):
            lease = human_duration(h.lease_s) if h.lease_s is not None else "-"
            hrows.append((h.mac, h.vip, h.kind, lease, " ".join(h.names)))
        lines.extend(format_table(hrows))
    if status.dns is not None and status.dns.counters.get("queries", 0):
        lines.append(format_dns(status.dns))
    # Split DNS (ipop.aio.sysdns): only when ipopd tried; "off" and no resolved say nothing.
    if status.counters.get("dns.system_failed", 0):
        lines.append(
            "split DNS: registering with systemd-resolved failed (the daemon's log says why: "
            "event=dns_register_failed; README, Split DNS)"
        )
    elif status.counters.get("dns.system_registered", 0):
        lines.append("split DNS: names of this network are routed here by systemd-resolved")
    total_drops = sum(status.drops.values())
    if total_drops:
        top = sorted(status.drops.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        lines.append(f"drops: {total_drops} (" + ", ".join(f"{k} {v}" for k, v in top) + ")")
    return lines
