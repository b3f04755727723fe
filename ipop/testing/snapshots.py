"""Hand-made status material for tests of ``ipop status`` (tests only): one up session's
:class:`ipop.link.events.LinkInfo` with the fields status shows, the rest fixed."""

from __future__ import annotations

from ipop.link.events import LinkInfo
from ipop.types import NodeId, Path

__all__ = ["link_info"]


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
