"""ipop.metrics and ipop.promtext: the Prometheus page from a hand-made status, read back with
the real prometheus_client parser (names, TYPE lines, escaping, the per-peer cap)."""

from __future__ import annotations

import math
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipop.dht.opstats import DhtOpStats
from ipop.histogram import Histogram
from ipop.metrics import MetricsInput, render_metrics
from ipop.nat.kinds import NatKind
from ipop.promtext import Exposition
from ipop.status import PeerStatus, SelfStatus, Status

ME = SelfStatus(
    node_id="ab" * 20,
    node_name="alice",
    vip="100.64.0.2",
    names=["alice.ipop"],
    nat=NatKind.CONE,
    uptime_s=12.5,
    endpoints=["203.0.113.5:5800"],
    routable=True,
)


def _peer(n: int, path: str = "direct", *, name: str | None = None, sent: int = 0) -> PeerStatus:
    return PeerStatus(
        node_id=f"{n:040x}",
        name=name if name is not None else f"p{n}",
        vip=f"100.64.1.{n % 250}",
        path=path,  # type: ignore[arg-type]
        endpoint="203.0.113.9:5800" if path == "direct" else None,
        rtt_ms=3.97 if path != "overlay" else None,
        bytes_in=n,
        bytes_out=sent,
        kinds=[],
    )


def _status(peers: list[PeerStatus], **kw: dict[str, int]) -> Status:
    return Status(
        self_=ME,
        peers=peers,
        drops=kw.get("drops", {"link.auth_failed": 3, "vnet.spoofed_source": 1}),
        counters=kw.get(
            "counters",
            {
                "link.link_up": 4,
                "link.handshake_failed": 1,
                "overlay.relayed": 7,
                "overlay.relayed_bytes": 9100,
                "vnet.udp_batches": 50,
                "vnet.udp_datagrams": 80,
                "vnet.tap_batches": 20,
                "vnet.tap_frames": 30,
                "node.shortcuts_made": 2,
                "crl.number": 5,
            },
        ),
    )


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    ]


def _page(peers: list[PeerStatus], **kw: object) -> str:
    return render_metrics(
        MetricsInput(status=_status(peers), started_at=1_800_000_000.0, backend="native", **kw)  # type: ignore[arg-type]
    )


def test_every_family_has_help_and_type_and_follows_the_naming_conventions() -> None:
    text = _page([_peer(1), _peer(2, "relayed"), _peer(3, "overlay")])
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert helps == list(types), "each family: HELP then TYPE, once"
    for name, kind in types.items():
        assert name.startswith("ipop_")
        assert name.endswith("_total") == (kind == "counter"), name
        assert not re.search(r"_(ms|milliseconds|kb|kilobytes)\b", name), name  # base units
    # Every sample belongs to the family declared right above it (contiguous families).
    current = None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif not line.startswith("#"):
            sample = re.split(r"[{ ]", line, maxsplit=1)[0]
            assert current is not None and sample.startswith(current), line
    families = _families(text)
    assert families["ipop_drops"].type == "counter"  # type: ignore[attr-defined]
    assert families["ipop_dht_operation_duration_seconds"].type == "histogram"  # type: ignore[attr-defined]


def test_peers_path_rtt_and_bytes() -> None:
    text = _page([_peer(1, sent=500), _peer(2, "relayed"), _peer(3, "overlay")])
    info = {s[0]["name"]: s[0] for s in _samples(text, "ipop_peer_info")}
    assert info["p1"]["path"] == "direct" and info["p1"]["endpoint"] == "203.0.113.9:5800"
    assert info["p2"]["path"] == "relayed" and info["p3"]["path"] == "overlay"
    assert info["p1"]["peer"] == f"{1:040x}"
    sent = {lab["name"]: v for lab, v in _samples(text, "ipop_peer_sent_bytes_total")}
    got = {lab["name"]: v for lab, v in _samples(text, "ipop_peer_received_bytes_total")}
    assert sent["p1"] == 500 and got["p3"] == 3
    rtt = {lab["name"]: v for lab, v in _samples(text, "ipop_peer_rtt_seconds")}
    assert rtt == {"p1": 0.00397, "p2": 0.00397}  # seconds; the overlay peer has none
    assert "} 0.00397\n" in text  # not 0.0039700000000000004
    by_path = {lab["path"]: v for lab, v in _samples(text, "ipop_peers")}
    assert by_path == {"direct": 1, "relayed": 1, "overlay": 1}


def test_drops_handshakes_relay_batches_backend_and_the_rest() -> None:
    text = _page([])
    drops = {(lab["layer"], lab["reason"]): v for lab, v in _samples(text, "ipop_drops_total")}
    assert drops == {("link", "auth_failed"): 3, ("vnet", "spoofed_source"): 1}
    hs = {lab["event"]: v for lab, v in _samples(text, "ipop_link_handshakes_total")}
    assert hs["completed"] == 4 and hs["failed"] == 1 and hs["answered"] == 0
    assert _samples(text, "ipop_relay_forwarded_bytes_total") == [({}, 9100)]
    assert _samples(text, "ipop_relay_forwarded_total") == [({}, 7)]
    batches = {lab["source"]: v for lab, v in _samples(text, "ipop_dataplane_batches_total")}
    assert batches == {"udp": 50, "tap": 20}
    assert _samples(text, "ipop_dataplane_backend_info") == [({"backend": "native"}, 1)]
    assert _samples(text, "ipop_crl_number") == [({}, 5)]
    events = {(lab["layer"], lab["event"]): v for lab, v in _samples(text, "ipop_events_total")}
    assert events == {("node", "shortcuts_made"): 2}  # the others have their own family
    assert _samples(text, "ipop_start_time_seconds") == [({}, 1_800_000_000.0)]
    (node,) = _samples(text, "ipop_node_info")
    assert node[0]["nat"] == "cone" and node[0]["vip"] == "100.64.0.2"


def test_label_values_and_help_are_escaped() -> None:
    nasty = 'a"b\\c\nd'
    text = _page([_peer(1, name=nasty)], drops={"metrics.bad_request": 2})
    (info,) = _samples(text, "ipop_peer_info")
    assert info[0]["name"] == nasty  # the parser undoes exactly our escaping
    assert 'name="a\\"b\\\\c\\nd"' in text
    assert len(text.splitlines()) == text.count("\n")  # no raw newline inside a line
    page = Exposition()
    page.family("x_total", "counter", "two\nlines \\ here")
    page.sample(1)
    assert "# HELP x_total two\\nlines \\\\ here" in page.text()
    (fam,) = text_string_to_metric_families(page.text())
    assert fam.documentation == "two\nlines \\ here"


def test_per_peer_series_are_capped_busiest_first_and_the_rest_counted() -> None:
    peers = [_peer(n) for n in range(1, 301)]  # bytes_in = n: the busiest have high n
    text = _page(peers, max_peers=10)
    shown = sorted(lab["name"] for lab, _ in _samples(text, "ipop_peer_info"))
    assert shown == sorted(f"p{n}" for n in range(291, 301))
    assert _samples(text, "ipop_metrics_peers_omitted") == [({}, 290)]
    assert len(_samples(text, "ipop_peer_sent_bytes_total")) == 10
    by_path = {lab["path"]: v for lab, v in _samples(text, "ipop_peers")}
    assert by_path["direct"] == 300  # the totals count everyone


def test_dht_operations_and_their_durations() -> None:
    ops = DhtOpStats()
    ops.record("get", "ok", 0.004)
    ops.record("get", "no", 0.3)
    ops.record("create", "ok", 1.2)
    text = _page([], dht_ops=dict(ops.counts), dht_durations=ops.durations())
    counts = {
        (lab["op"], lab["outcome"]): v for lab, v in _samples(text, "ipop_dht_operations_total")
    }
    assert counts == {("get", "ok"): 1, ("get", "no"): 1, ("create", "ok"): 1}
    buckets = {
        float(lab["le"]): v
        for lab, v in _samples(text, "ipop_dht_operation_duration_seconds_bucket")
        if lab["op"] == "get"
    }
    assert buckets[0.005] == 1 and buckets[0.25] == 1 and buckets[0.5] == 2
    assert buckets[math.inf] == 2
    (total,) = [
        v
        for lab, v in _samples(text, "ipop_dht_operation_duration_seconds_sum")
        if lab["op"] == "get"
    ]
    assert total == pytest.approx(0.304)
    with pytest.raises(ValueError):
        ops.record("scan", "ok", 1.0)


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    h = Histogram((1.0, 2.0))
    for v in (0.5, 1.0, 1.5, 3.0):
        h.observe(v)
    snap = h.snapshot()
    assert snap.cumulative == (2, 3) and snap.count == 4 and snap.total == 6.0
    with pytest.raises(ValueError):
        Histogram((2.0, 1.0))


def test_the_writer_refuses_what_scrapers_would_reject() -> None:
    page = Exposition()
    with pytest.raises(ValueError):
        page.family("ipop-bad", "gauge", "x")
    with pytest.raises(ValueError):
        page.family("ipop_count", "counter", "counters end in _total")
    page.family("ipop_x", "gauge", "x")
    with pytest.raises(ValueError):
        page.family("ipop_x", "gauge", "twice")
    with pytest.raises(ValueError):
        page.sample(1, {"bad-label": "v"})
    page.sample(math.inf)
    page.sample(math.nan, {"k": "v"})
    assert "ipop_x +Inf" in page.text() and 'ipop_x{k="v"} NaN' in page.text()
