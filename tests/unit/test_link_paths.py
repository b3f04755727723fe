"""ipop.link.paths: every branch of path choice (better_path) and roaming (should_roam)."""

from __future__ import annotations

import pytest

from ipop import timing
from ipop.link.paths import PathQuality, Roam, better_path, should_roam
from ipop.types import Endpoint, NodeId, RelayPath, SocketPath

INF = float("inf")
NOW = 100.0
PUBLIC = Endpoint("203.0.113.7", 41000)
PUBLIC_REBOUND = Endpoint("203.0.113.7", 52000)
LAN = Endpoint("198.18.0.7", 5800)
PUNCHED = SocketPath(3, Endpoint("203.0.113.7", 60000))
RELAY = RelayPath(NodeId(5), NodeId(9))
OTHER_RELAY = RelayPath(NodeId(6), NodeId(9))


def _better(
    current: PathQuality,
    offered: PathQuality,
    *,
    heard: float = NOW,
    roamed_at: float = -INF,
) -> bool:
    return better_path(current, offered, NOW, heard=heard, roamed_at=roamed_at)


# --- better_path: a relay offered -----------------------------------------------------------


def test_relay_never_replaces_a_working_direct_path() -> None:
    working = PathQuality(PUBLIC, 0.05, NOW - 0.1)
    assert not _better(working, PathQuality(RELAY, 0.01, NOW), heard=NOW - 0.1)
    # Just under the takeover silence: still working.
    heard = NOW - timing.RELAY_TAKEOVER_SILENT_S + 0.01
    assert not _better(working, PathQuality(RELAY, 0.01, NOW), heard=heard)


def test_relay_replaces_a_silent_direct_path() -> None:
    # Nothing from the peer for timing.RELAY_TAKEOVER_SILENT_S: its punching socket died with it.
    current = PathQuality(PUNCHED, 0.05, NOW - timing.RELAY_TAKEOVER_SILENT_S)
    heard = NOW - timing.RELAY_TAKEOVER_SILENT_S
    assert _better(current, PathQuality(RELAY, INF, NOW), heard=heard)


def test_relay_replaces_a_direct_path_silent_since_we_roamed() -> None:
    current = PathQuality(PUBLIC, 0.05, NOW - 0.5)
    offered = PathQuality(RELAY, INF, NOW)
    assert _better(current, offered, heard=NOW - 0.5, roamed_at=NOW - 0.4)
    # Heard after the roam: the direct path still works from our new address.
    assert not _better(current, offered, heard=NOW - 0.3, roamed_at=NOW - 0.4)


def test_relay_replaces_a_direct_path_the_peer_left() -> None:
    # path_rx == -inf: the peer said (peer_moved) it is no longer there.
    left = PathQuality(PUBLIC, 0.05, -INF)
    assert _better(left, PathQuality(RELAY, INF, NOW), heard=NOW - 0.1)


def test_relay_replaces_a_relay() -> None:
    current = PathQuality(RELAY, 0.05, NOW - 0.1)
    assert _better(current, PathQuality(OTHER_RELAY, INF, NOW), heard=NOW - 0.1)


# --- better_path: a direct path offered -----------------------------------------------------


def test_direct_always_replaces_a_relay() -> None:
    current = PathQuality(RELAY, 0.01, NOW - 0.01)
    assert _better(current, PathQuality(PUBLIC, 0.5, NOW))
    assert _better(current, PathQuality(PUNCHED, INF, NOW))


def test_direct_replaces_a_silent_direct_path() -> None:
    silent = PathQuality(PUBLIC, 0.01, NOW - timing.PATH_SILENT_S)
    assert _better(silent, PathQuality(LAN, 0.5, NOW))
    live = PathQuality(PUBLIC, 0.01, NOW - timing.PATH_SILENT_S + 0.01)
    assert not _better(live, PathQuality(LAN, 0.5, NOW))


def test_direct_replaces_a_path_never_measured() -> None:
    # We answered the handshake of the current path: no round trip to compare with.
    unmeasured = PathQuality(PUBLIC, INF, NOW - 0.01)
    assert _better(unmeasured, PathQuality(LAN, 0.5, NOW))


def test_direct_replaces_a_path_the_peer_left() -> None:
    left = PathQuality(PUBLIC, 0.01, -INF)
    assert _better(left, PathQuality(PUBLIC_REBOUND, 0.5, NOW))


@pytest.mark.parametrize(
    ("offered_rtt", "moves"),
    [
        (0.5, True),  # twice as fast
        (0.69, True),  # just under the ratio
        (timing.PATH_SWITCH_RATIO, False),  # at the ratio: strictly faster needed
        (0.9, False),  # near-equal paths do not flap on every rekey
        (2.0, False),
        (INF, False),  # we answered it: unmeasured never wins on speed
    ],
)
def test_hysteresis_ratio_between_live_direct_paths(offered_rtt: float, moves: bool) -> None:
    current = PathQuality(PUBLIC, 1.0, NOW - 0.01)
    assert _better(current, PathQuality(PUNCHED, offered_rtt, NOW)) is moves


def test_lan_path_is_kept_when_peers_share_a_lan() -> None:
    lan = PathQuality(LAN, 0.002, NOW - 0.01)
    # The public path (hairpinned through the NAT) completes a handshake later: kept on LAN.
    assert not _better(lan, PathQuality(PUBLIC, 0.02, NOW))
    # The other way round, the LAN path takes over the public one.
    public = PathQuality(PUBLIC, 0.02, NOW - 0.01)
    assert _better(public, PathQuality(LAN, 0.002, NOW))


# --- should_roam ----------------------------------------------------------------------------


def test_roam_same_address_new_port_is_a_rebinding_at_once() -> None:
    live = PathQuality(PUBLIC, 0.05, NOW - 0.01)
    assert should_roam(live, PUBLIC_REBOUND, NOW) is Roam.REBOUND


def test_roam_to_another_address_held_while_current_delivers() -> None:
    live = PathQuality(PUBLIC, 0.05, NOW - timing.PATH_SILENT_S + 0.01)
    assert should_roam(live, LAN, NOW) is Roam.HOLD
    # A punching socket toward the same address is another path, not a rebinding.
    assert should_roam(live, PUNCHED, NOW) is Roam.HOLD


def test_roam_to_another_address_once_current_is_silent() -> None:
    silent = PathQuality(PUBLIC, 0.05, NOW - timing.PATH_SILENT_S)
    assert should_roam(silent, LAN, NOW) is Roam.MOVE
    left = PathQuality(PUBLIC, 0.05, -INF)
    assert should_roam(left, PUNCHED, NOW) is Roam.MOVE


def test_roam_follows_a_relay_only_once_direct_is_silent() -> None:
    live = PathQuality(PUBLIC, 0.05, NOW - timing.PATH_SILENT_S + 0.01)
    assert should_roam(live, RELAY, NOW) is Roam.STAY
    silent = PathQuality(PUBLIC, 0.05, NOW - timing.PATH_SILENT_S)
    assert should_roam(silent, RELAY, NOW) is Roam.FOLLOW_RELAY


def test_roam_never_leaves_a_relay_on_data() -> None:
    # Relay -> direct, and relay -> relay, are the overlay's decisions (set_path).
    relayed = PathQuality(RELAY, 0.05, -INF)
    assert should_roam(relayed, PUBLIC, NOW) is Roam.STAY
    assert should_roam(relayed, OTHER_RELAY, NOW) is Roam.STAY
