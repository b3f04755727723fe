"""Hand-made status material for tests of ``ipop status`` (tests only): one up session's
:class:`ipop.link.events.LinkInfo` with the fields status shows, the rest fixed, and the one
sample :class:`ipop.status.Status` document the contract and CLI tests share."""

from __future__ import annotations

from ipop.link.events import LinkInfo
from ipop.nat.kinds import NatKind
from ipop.status import PeerStatus, SelfStatus, Status
from ipop.types import NodeId, Path

__all__ = ["A_ID", "B_ID", "C_ID", "link_info", "sample_status"]

# The node ids of the sample: alice (this node), bob (a direct peer), a nameless overlay peer.
A_ID = "a1" * 20
B_ID = "b2" * 20
C_ID = "c3" * 20


def sample_status() -> Status:
    """alice, up 1h02m behind a cone NAT, with bob on a direct path (1.5 ms, 2 KiB in, 100 B
    out) and a peer reached over the overlay only (no name, no VIP, no RTT yet); one drop."""
    return Status(
        self_=SelfStatus(
            node_id=A_ID,
            node_name="alice",
            vip="100.64.1.1",
            names=["alice-laptop.ipop", "C064001001.ipop"],
            nat=NatKind.CONE,
            uptime_s=3725.5,
            endpoints=["203.0.113.5:5800"],
            routable=True,
        ),
        peers=[
            PeerStatus(
                node_id=B_ID,
                name="bob",
                vip="100.64.1.2",
                path="direct",
                endpoint="198.51.100.7:5800",
                rtt_ms=1.5,
                bytes_in=2048,
                bytes_out=100,
                kinds=["near", "shortcut"],
            ),
            PeerStatus(
                node_id=C_ID,
                name=None,
                vip=None,
                path="overlay",
                endpoint=None,
                rtt_ms=None,
                bytes_in=0,
                bytes_out=0,
                kinds=[],
            ),
        ],
        drops={"bad_mac": 2},
        counters={"dht_get": 7},
    )


def link_info(
    peer: NodeId,
    path: Path,
    *,
    at: float,
    name: str = "cert-name",
    hostname: str | None = None,
    rtt_s: float | None = None,
    last_rx: float | None = None,
    keys_at: float | None = None,
    bytes_in: int = 0,
    bytes_out: int = 0,
) -> LinkInfo:
    """A session to ``peer`` over ``path`` up since ``at``; heard last at ``last_rx`` and keyed
    at ``keys_at`` (both default to ``at``)."""
    return LinkInfo(
        peer=peer,
        name=name,
        hostname=hostname,
        path=path,
        established_at=at,
        last_rx=at if last_rx is None else last_rx,
        last_tx=at,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        packets_in=0,
        packets_out=0,
        cipher="chacha20poly1305",
        observed=None,
        keys_established_at=at if keys_at is None else keys_at,
        rekeys=0,
        rtt_s=rtt_s,
    )
