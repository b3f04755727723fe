"""What ``ipopd``'s metrics say, from its status snapshot: one pure function, no I/O, no clock.

:func:`render_metrics` turns the ``ipop status`` document (:class:`ipop.status.Status`, built
by :mod:`ipop.report`) and the few facts status does not carry (:class:`MetricsInput`: start
time, data path backend, DHT operations) into a Prometheus text page (:mod:`ipop.promtext`).
The served page is what :mod:`ipop.aio.localhttp` answers ``GET /metrics`` with.

Families (base units in names, counters end in ``_total``):

* ``ipop_node_info``, ``ipop_dataplane_backend_info`` (1, facts in labels),
  ``ipop_start_time_seconds``, ``ipop_uptime_seconds``, ``ipop_routable``;
* peers: ``ipop_peers{path}`` (all of them), then per peer (label ``peer``: its node id,
  ``name``: its hostname) ``ipop_peer_info{path,vip,endpoint}`` (the path kind: direct,
  relayed, overlay), ``ipop_peer_rtt_seconds`` (when known), ``ipop_peer_sent_bytes_total``,
  ``ipop_peer_received_bytes_total``. At most ``max_peers`` peers get series (most bytes
  first); ``ipop_metrics_peers_omitted`` counts the others, so a large overlay cannot blow
  up a scrape;
* ``ipop_drops_total{layer,reason}``: every drop status lists (``link.auth_failed`` is
  layer ``link``, reason ``auth_failed``);
* ``ipop_link_handshakes_total{event}``, ``ipop_relay_forwarded_total``,
  ``ipop_relay_forwarded_bytes_total`` (as a relay for others),
  ``ipop_dataplane_batches_total{source}`` and ``ipop_dataplane_packets_total{source}``
  (``udp``: datagrams read per batch, ``tap``: frames read per batch);
* ``ipop_dht_operations_total{op,outcome}``, ``ipop_dht_operation_duration_seconds{op}``;
* ``ipop_events_total{layer,event}``: every other counter status lists; ``ipop_crl_number``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from ipop.histogram import HistogramSnapshot
from ipop.promtext import Exposition
from ipop.status import PATH_KINDS, PeerStatus, Status

__all__ = ["MetricsInput", "render_metrics"]

# Status counters with a family of their own: name -> (family, label value).
_HANDSHAKES: Final[dict[str, str]] = {
    "link.link_up": "completed",
    "link.handshake_answered": "answered",
    "link.handshake_retransmitted": "retransmitted",
    "link.handshake_failed": "failed",
    "link.rekey_started": "rekeyed",
}
_BATCHES: Final[dict[str, str]] = {"vnet.udp_batches": "udp", "vnet.tap_batches": "tap"}
_PACKETS: Final[dict[str, str]] = {"vnet.udp_datagrams": "udp", "vnet.tap_frames": "tap"}
_RELAYED = "overlay.relayed"
_RELAYED_BYTES = "overlay.relayed_bytes"
_CRL_NUMBER = "crl.number"  # a gauge: the list in force, not a count of events
_OWN_FAMILY: Final = frozenset(
    {*_HANDSHAKES, *_BATCHES, *_PACKETS, _RELAYED, _RELAYED_BYTES, _CRL_NUMBER}
)


@dataclass(frozen=True, slots=True)
class MetricsInput:
    """One scrape's material: the status document and what status does not carry."""

    status: Status
    started_at: float  # UNIX time the daemon started
    backend: str  # ipop.link.fastpath.BACKEND: "native" or "python"
    max_peers: int = 256
    # (op, outcome) -> count; op -> durations (ipop.dht.opstats); empty before the DHT runs.
    dht_ops: Mapping[tuple[str, str], int] = field(default_factory=dict)
    dht_durations: Mapping[str, HistogramSnapshot] = field(default_factory=dict)
    # Drops of the parts outside status (the metrics server's own), "layer.reason" -> n.
    drops: Mapping[str, int] = field(default_factory=dict)


def render_metrics(m: MetricsInput) -> str:
    """The Prometheus text page (format 0.0.4) for ``m``."""
    st, me = m.status, m.status.self_
    out = Exposition()
    out.family("ipop_node_info", "gauge", "This node: its id, name, virtual IP and NAT kind.")
    out.sample(
        1,
        {
            "node_id": me.node_id,
            "node_name": me.node_name,
            "vip": me.vip or "",
            "nat": me.nat.value if me.nat is not None else "",
        },
    )
    out.family(
        "ipop_dataplane_backend_info", "gauge", "The data path's AEAD backend: native or python."
    )
    out.sample(1, {"backend": m.backend})
    out.family("ipop_start_time_seconds", "gauge", "When the daemon started (UNIX time).")
    out.sample(m.started_at)
    out.family("ipop_uptime_seconds", "gauge", "Seconds since the daemon started.")
    out.sample(me.uptime_s)
    out.family("ipop_routable", "gauge", "1 once this node has joined the ring.")
    out.sample(1 if me.routable else 0)
    _peers(out, st.peers, m.max_peers)
    drops = _split(st.drops)
    drops.update(_split(m.drops))
    out.family("ipop_drops_total", "counter", "Packets and messages dropped, by layer and reason.")
    out.samples(({"layer": layer, "reason": reason}, n) for (layer, reason), n in drops.items())
    _counters(out, st.counters)
    _dht(out, m)
    return out.text()


def _peers(out: Exposition, peers: list[PeerStatus], cap: int) -> None:
    out.family("ipop_peers", "gauge", "Peers by path kind (direct, relayed, overlay).")
    for kind in PATH_KINDS:
        out.sample(sum(1 for p in peers if p.path == kind), {"path": kind})
    # The busiest peers keep their series; ties by node id, so a page is stable.
    shown = sorted(peers, key=lambda p: (-(p.bytes_in + p.bytes_out), p.node_id))[:cap]
    out.family(
        "ipop_metrics_peers_omitted",
        "gauge",
        "Peers left out of the per-peer series (metrics.max_peers).",
    )
    out.sample(len(peers) - len(shown))
    out.family(
        "ipop_peer_info",
        "gauge",
        "A peer's path: direct, relayed (endpoint names the relay) or overlay (no link).",
    )
    for p in shown:
        out.sample(
            1,
            {
                **_who(p),
                "path": p.path,
                "vip": p.vip or "",
                "endpoint": p.endpoint or "",
            },
        )
    out.family("ipop_peer_rtt_seconds", "gauge", "A peer's last measured round trip.")
    # Status keeps microseconds (ms to 3 places): so do the seconds, without float noise.
    out.samples((_who(p), round(p.rtt_ms / 1000, 6)) for p in shown if p.rtt_ms is not None)
    out.family("ipop_peer_sent_bytes_total", "counter", "Bytes sent to a peer on its link.")
    out.samples((_who(p), p.bytes_out) for p in shown)
    out.family(
        "ipop_peer_received_bytes_total", "counter", "Bytes received from a peer on its link."
    )
    out.samples((_who(p), p.bytes_in) for p in shown)


def _who(p: PeerStatus) -> dict[str, str]:
    return {"peer": p.node_id, "name": p.name or ""}


def _split(counts: Mapping[str, int]) -> dict[tuple[str, str], int]:
    """``{"link.bad_mac": 2}`` -> ``{("link", "bad_mac"): 2}``; a name without a layer has
    layer ""."""
    out: dict[tuple[str, str], int] = {}
    for key, n in counts.items():
        layer, sep, name = key.partition(".")
        if not sep:
            layer, name = "", key
        out[layer, name] = out.get((layer, name), 0) + n
    return out


def _counters(out: Exposition, counters: Mapping[str, int]) -> None:
    out.family(
        "ipop_link_handshakes_total",
        "counter",
        "Link handshakes: completed (a link came up), answered, retransmitted, failed, rekeyed.",
    )
    out.samples(({"event": ev}, counters.get(key, 0)) for key, ev in _HANDSHAKES.items())
    out.family(
        "ipop_relay_forwarded_total", "counter", "Datagrams this node relayed between two peers."
    )
    out.sample(counters.get(_RELAYED, 0))
    out.family(
        "ipop_relay_forwarded_bytes_total", "counter", "Bytes this node relayed between two peers."
    )
    out.sample(counters.get(_RELAYED_BYTES, 0))
    out.family(
        "ipop_dataplane_batches_total",
        "counter",
        "Batches the data plane read: udp (datagrams), tap (frames).",
    )
    out.samples(({"source": src}, counters.get(key, 0)) for key, src in _BATCHES.items())
    out.family(
        "ipop_dataplane_packets_total",
        "counter",
        "Packets in those batches: udp datagrams, tap frames.",
    )
    out.samples(({"source": src}, counters.get(key, 0)) for key, src in _PACKETS.items())
    out.family("ipop_crl_number", "gauge", "The revocation list in force (0: none).")
    out.sample(counters.get(_CRL_NUMBER, 0))
    rest = {k: v for k, v in counters.items() if k not in _OWN_FAMILY}
    out.family("ipop_events_total", "counter", "Every other event ipop status counts.")
    out.samples(({"layer": layer, "event": ev}, n) for (layer, ev), n in _split(rest).items())


def _dht(out: Exposition, m: MetricsInput) -> None:
    out.family(
        "ipop_dht_operations_total",
        "counter",
        "DHT operations by outcome: ok (found or acknowledged), no, error.",
    )
    out.samples(({"op": op, "outcome": oc}, n) for (op, oc), n in m.dht_ops.items())
    out.family("ipop_dht_operation_duration_seconds", "histogram", "How long DHT operations took.")
    for op, snap in m.dht_durations.items():
        out.histogram(snap, {"op": op})
