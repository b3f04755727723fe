"""The overlay node's settings (:class:`OverlayConfig`), checked when made.

What each one tunes is told where it is used (:mod:`ipop.overlay.node` and the modules it
owns); the defaults come from :mod:`ipop.timing`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipop import timing
from ipop.errors import ConfigError
from ipop.overlay.messages import MAX_ENDPOINTS, MAX_TTL
from ipop.types import Endpoint

__all__ = ["DEFAULT_TTL", "OverlayConfig"]

DEFAULT_TTL = 64


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    """The overlay's knobs: ring neighbours, far links, TTL and our own endpoints."""

    near_per_side: int = 3
    # Our own socket's endpoints (LAN side); public ones are learned from peers.
    local_endpoints: tuple[Endpoint, ...] = ()
    ttl: int = DEFAULT_TTL
    far_links: bool = True
    far_cap: int = 20
    # Far links chosen by the round trips we measured (ipop.overlay.proximity).
    proximity: bool = True
    # With proximity: fast peers swap the ids they hold links to, and routing may take a hop
    # to a peer that holds a link near the target (ipop.overlay.linkhints).
    link_hints: bool = True
    far_explore_s: float = timing.OVERLAY_FAR_EXPLORE_S
    far_explore_per_bucket: int = timing.OVERLAY_FAR_EXPLORE_PER_BUCKET
    far_explore_epoch_s: float = timing.OVERLAY_FAR_EXPLORE_EPOCH_S
    tick_s: float = timing.OVERLAY_TICK_S
    gossip_interval_s: float = timing.OVERLAY_GOSSIP_INTERVAL_S
    near_retry_s: float = timing.OVERLAY_NEAR_RETRY_S
    near_probe_s: float = timing.OVERLAY_NEAR_PROBE_S
    connect_timeout_s: float = timing.OVERLAY_CONNECT_TIMEOUT_S
    relay_after_s: float = timing.OVERLAY_RELAY_AFTER_S
    relay_yield_s: float = timing.OVERLAY_RELAY_YIELD_S
    ctm_timeout_s: float = timing.OVERLAY_CTM_TIMEOUT_S
    leaf_hold_s: float = timing.OVERLAY_LEAF_HOLD_S
    trim_grace_s: float = timing.OVERLAY_TRIM_GRACE_S
    relay_hold_s: float = timing.OVERLAY_RELAY_HOLD_S
    # Our relayed links' data runs ask their relay for a channel (ipop.overlay.channels); off,
    # all of it travels inside RELAY_FORWARD (as a relay we answer either way).
    relay_channels: bool = True
    bootstrap_retry_s: float = timing.OVERLAY_BOOTSTRAP_RETRY_S
    failed_backoff_s: float = timing.OVERLAY_FAILED_BACKOFF_S
    near_suspect_s: float = timing.OVERLAY_NEAR_SUSPECT_S
    near_dead_s: float = timing.OVERLAY_NEAR_DEAD_S
    # Silent next hops (ipop.overlay.suspect): their retransmission timeout's floor, cap and
    # value before any round trip was measured.
    hop_rto_min_s: float = timing.OVERLAY_HOP_RTO_MIN_S
    hop_rto_max_s: float = timing.OVERLAY_HOP_RTO_MAX_S
    hop_rto_initial_s: float = timing.OVERLAY_HOP_RTO_INITIAL_S
    # What a CONNECT_TO_ME may make us send (see ipop.overlay.ctm and timing.py).
    connect_back_max: int = timing.OVERLAY_CONNECT_BACK_MAX
    connect_back_timeout_s: float = timing.OVERLAY_CONNECT_BACK_TIMEOUT_S
    connect_back_inflight: int = timing.OVERLAY_CONNECT_BACK_INFLIGHT
    connect_back_ip_burst: int = timing.OVERLAY_CONNECT_BACK_IP_BURST
    connect_back_ip_refill_s: float = timing.OVERLAY_CONNECT_BACK_IP_REFILL_S
    ctm_burst: int = timing.OVERLAY_CTM_BURST
    ctm_refill_s: float = timing.OVERLAY_CTM_REFILL_S
    neighbours_reply_min_s: float = timing.OVERLAY_NEIGHBOURS_REPLY_MIN_S

    def __post_init__(self) -> None:
        if self.near_per_side < 1:
            raise ConfigError("overlay.near_per_side", f"{self.near_per_side} < 1", "use 2-4")
        if not 1 <= self.ttl <= MAX_TTL:
            raise ConfigError("overlay.ttl", f"{self.ttl} not in 1..{MAX_TTL}", "use 64")
        for name in (
            "tick_s",
            "gossip_interval_s",
            "near_retry_s",
            "near_probe_s",
            "connect_timeout_s",
            "relay_after_s",
            "relay_yield_s",
            "ctm_timeout_s",
            "leaf_hold_s",
            "trim_grace_s",
            "relay_hold_s",
            "bootstrap_retry_s",
            "failed_backoff_s",
            "near_suspect_s",
            "near_dead_s",
            "hop_rto_min_s",
            "hop_rto_max_s",
            "hop_rto_initial_s",
            "connect_back_timeout_s",
            "connect_back_ip_refill_s",
            "ctm_refill_s",
            "neighbours_reply_min_s",
            "far_explore_s",
            "far_explore_per_bucket",
            "far_explore_epoch_s",
            "connect_back_max",
            "connect_back_inflight",
            "connect_back_ip_burst",
            "ctm_burst",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"overlay.{name}", "must be positive")
        if self.near_dead_s <= self.near_suspect_s:
            raise ConfigError("overlay.near_dead_s", "must exceed near_suspect_s")
        if self.hop_rto_max_s < self.hop_rto_min_s:
            raise ConfigError("overlay.hop_rto_max_s", "must not be below hop_rto_min_s")
        if len(self.local_endpoints) > MAX_ENDPOINTS:
            raise ConfigError("overlay.local_endpoints", f"more than {MAX_ENDPOINTS}")
