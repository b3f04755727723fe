"""Routes over the ring that IP flows over are probed end to end (ipop.routes): the table of
probed routes is bounded, idle ones are forgotten, and any routed probe payload is answered,
taken or counted, never raised."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.core import NodeCore
from ipop.link.pmtu import PROBE_TAG
from ipop.overlay.events import Delivered
from ipop.overlay.messages import FLAG_EXACT, KIND_PMTU
from ipop.overlay.origin import OriginAuth
from ipop.routes import ROUTE_PROBED_MAX, ROUTED_IP_MTU
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.timing import ROUTE_PROBE_IDLE_S
from ipop.types import NodeId
from ipop.wire.header import DATA_MIN_BYTES

_CA = make_network("routes", now=SIM_EPOCH - 60)
_RNG = random.Random(0)  # seal nonces
_ID = make_identity(_CA, "a", now=SIM_EPOCH - 60)


def _core() -> NodeCore:
    core = NodeCore(_ID, rng=random.Random(1), bootstrap=[])
    core.start(now=SIM_EPOCH)
    return core


def test_the_routes_probed_are_bounded_and_idle_ones_forgotten() -> None:
    core = _core()
    now = SIM_EPOCH
    for i in range(ROUTE_PROBED_MAX + 5):
        assert core.send_ip(NodeId(i + 1), bytes(100), now=now) is None
        # Probes of every new route leave at once, up to its ceiling (a 1500-byte hop's).
        assert core.route_pmtu.wanted <= {NodeId(j + 1) for j in range(i + 1)}
    assert len(core.route_pmtu.wanted) == ROUTE_PROBED_MAX
    assert core.stats["route_probe_evicted"] == 5
    assert NodeId(1) not in core.route_pmtu.wanted  # the least recently used went first
    assert core.ip_mtu(NodeId(1)) == ROUTED_IP_MTU
    core.send_ip(NodeId(ROUTE_PROBED_MAX + 5), bytes(100), now=now + ROUTE_PROBE_IDLE_S / 2)
    core.handle_timer(now=now + ROUTE_PROBE_IDLE_S)
    assert core.route_pmtu.wanted == {NodeId(ROUTE_PROBED_MAX + 5)}
    core.handle_timer(now=now + 2 * ROUTE_PROBE_IDLE_S)
    assert not core.route_pmtu.wanted


def test_a_too_big_packet_for_a_route_is_refused_with_its_mtu() -> None:
    core = _core()
    dst = NodeId(7)
    assert core.send_ip(dst, bytes(ROUTED_IP_MTU + 1), now=SIM_EPOCH) == ROUTED_IP_MTU
    core.route_pmtu.limits[dst] = 900 + DATA_MIN_BYTES  # what the route's probes found
    assert core.ip_mtu(dst) == 900
    assert core.send_ip(dst, bytes(901), now=SIM_EPOCH) == 900
    assert core.send_ip(dst, bytes(900), now=SIM_EPOCH) is None
    assert core.stats["ip_too_big"] == 2


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=40), tagged=st.booleans())
def test_any_routed_probe_payload_is_answered_taken_or_counted(
    payload: bytes, tagged: bool
) -> None:
    core = _core()
    if tagged:
        payload = bytes([PROBE_TAG]) + payload
    before = core.stats["route_probes_answered"] + core.stats["bad_route_probe"]
    ev = Delivered(NodeId(9), core.local_id, KIND_PMTU, payload, hops=2, exact=True)
    core.routes.on_probe(ev, SIM_EPOCH)
    late = core.route_pmtu.stats["late_acks"]
    after = core.stats["route_probes_answered"] + core.stats["bad_route_probe"] + late
    assert after == before + 1


def test_a_route_probe_round_first_sends_the_probe_that_carries_our_certificate() -> None:
    """A route's far end may not know us yet (no link, nothing routed from us so far): only
    probes small enough to carry our certificate can be checked there. The round's smallest
    probe leaves first, so the larger, certless ones arrive after it taught the far end who
    we are. Largest first, every large probe was dropped as ``origin_unknown`` (seen in
    31-daemon cold starts: 7 per route) and the route measured 548 bytes for a minute."""
    core = _core()
    far = make_identity(_CA, "far", now=SIM_EPOCH - 60)
    sent: list[tuple[int, bytes, int | None]] = []

    def capture(dst: NodeId, kind: int, payload: bytes, **kw: object) -> bool:
        budget = kw.get("cert_budget")
        sent.append((kind, payload, budget if isinstance(budget, int) else None))
        return True

    core.overlay.send_routed = capture  # type: ignore[method-assign]
    core.send_ip(far.node_id, bytes(100), now=SIM_EPOCH)
    probes = [(payload, budget) for kind, payload, budget in sent if kind == KIND_PMTU]
    assert len(probes) > 2
    ours, theirs = (
        OriginAuth(_ID, random_bytes=_RNG.randbytes),
        OriginAuth(far, random_bytes=_RNG.randbytes),
    )
    verdicts = []
    for payload, budget in probes:
        msg = ours.routed(
            FLAG_EXACT, 64, KIND_PMTU, far.node_id, None, payload, now=SIM_EPOCH,
            cert_budget=budget,
        )  # fmt: skip
        verdicts.append(theirs.check(msg, now=SIM_EPOCH))
    assert verdicts == [None] * len(probes), verdicts
    assert not all(ours.routed(FLAG_EXACT, 64, KIND_PMTU, far.node_id, None, p, now=SIM_EPOCH).cert
                   for p, _ in probes)  # fmt: skip  # some probes do go without it
