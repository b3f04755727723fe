"""Metrics of real daemons (root): ``[metrics] listen`` on every node, scraped with real ``curl``
inside a node's namespace and read with the real ``prometheus_client`` parser.

A public bootstrap, a public node, a node behind a port-restricted cone NAT, two behind
symmetric NATs (their link stays relayed) and a router (``ipop-router``, which serves the same
page). After pings, the scrape names the peer with its path and its bytes, the bytes grow with
more pings, a relayed peer shows as relayed and its relay counts the bytes it relayed.
The endpoint answers on the namespace's loopback only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipop.tools.lab.ipopnet import METRICS_LISTEN, IpopNet
from ipop.tools.lab.topology import Topology, topology_from_dict

from .running import running_net, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

URL = f"http://{METRICS_LISTEN}/metrics"
# The daemons that may relay between c1 and c2.
RELAYS = ("pub1", "pub2", "a", "r1")


def _topology() -> Topology:
    return topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
                {"name": "pub2", "role": "public", "ip": "203.0.113.11"},
                {"name": "a", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "c1", "role": "nat", "kind": "symmetric"},
                {"name": "c2", "role": "nat", "kind": "symmetric"},
                {"name": "r1", "role": "nat", "kind": "port-restricted-cone"},
            ],
            "clusters": [{"router": "r1", "hosts": [{"name": "p1", "client": "udhcpc"}]}],
        }
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with running_net(
        _topology(), tmp_path_factory.mktemp("metrics"), prefix_tag="m", ready_s=30.0, metrics=True
    ) as ipop:
        yield ipop


def _scrape(net: IpopNet, host: str) -> str:
    res = net.lab.exec(host, ["curl", "-sS", "--max-time", "5", URL], timeout=10)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _peer(text: str, name: str) -> tuple[str | None, float, float]:
    """The peer ``name``'s path (ipop_peer_info), bytes sent and received; (None, 0, 0) when
    the page does not show it."""
    path, sent, received = None, 0.0, 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("name") != name:
                continue
            if s.name == "ipop_peer_info":
                path = s.labels["path"]
            elif s.name == "ipop_peer_sent_bytes_total":
                sent = s.value
            elif s.name == "ipop_peer_received_bytes_total":
                received = s.value
    return path, sent, received


def _routable_scrape(net: IpopNet, host: str) -> str:
    """A scrape of ``host`` once it says it is routable (which may follow the vIP by a few
    seconds: the daemons count as ready once they hold their address)."""
    page = [""]

    def routable() -> bool:
        page[0] = _scrape(net, host)
        return "\nipop_routable 1\n" in page[0]

    assert wait_for(routable, 20), page[0]
    return page[0]


def _ping(net: IpopNet, src: str, dst: str, count: int) -> None:
    res = net.lab.exec(
        src, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", f"{dst}.ipop"], timeout=30
    )
    assert " 0% packet loss" in res.stdout or res.returncode == 0, res.stdout + res.stderr


def test_a_scrape_names_the_peer_with_its_path_and_bytes_that_grow(net: IpopNet) -> None:
    _ping(net, "a", "pub2", 5)
    seen: list[tuple[str | None, float, float]] = []

    def shown() -> bool:
        seen.append(_peer(_scrape(net, "a"), "pub2"))
        path, sent, received = seen[-1]
        return path == "direct" and sent > 0 and received > 0

    assert wait_for(shown, 15), seen[-3:]
    first = seen[-1]
    _ping(net, "a", "pub2", 10)

    def grew() -> bool:
        # The page is rendered at most once a second: poll until the new bytes show.
        seen.append(_peer(_scrape(net, "a"), "pub2"))
        return seen[-1][1] > first[1] and seen[-1][2] > first[2]

    assert wait_for(grew, 10), (first, seen[-1])
    # pub2 sees a too, over the same kind of path.
    assert wait_for(lambda: _peer(_scrape(net, "pub2"), "a")[0] == "direct", 10)


def test_a_scrape_carries_the_node_dht_handshakes_and_backend(net: IpopNet) -> None:
    text = _routable_scrape(net, "a")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    (node,) = fams["ipop_node_info"].samples
    assert node.labels["node_name"] == "a" and node.labels["vip"].startswith("100.")
    assert fams["ipop_dataplane_backend_info"].samples[0].labels["backend"] in ("native", "python")
    assert fams["ipop_routable"].samples[0].value == 1
    ops = {
        (s.labels["op"], s.labels["outcome"]): s.value for s in fams["ipop_dht_operations"].samples
    }
    assert ops.get(("create", "ok"), 0) >= 1, ops  # the vIP claim
    handshakes = {s.labels["event"]: s.value for s in fams["ipop_link_handshakes"].samples}
    assert handshakes["completed"] >= 1
    batches = {s.labels["source"]: s.value for s in fams["ipop_dataplane_batches"].samples}
    assert batches["udp"] > 0
    durations = [
        s for s in fams["ipop_dht_operation_duration_seconds"].samples if s.name.endswith("_count")
    ]
    assert sum(s.value for s in durations) == sum(ops.values())


def test_the_endpoint_is_on_loopback_only_and_refuses_other_requests(net: IpopNet) -> None:
    pub1 = net.lab.host("pub1")
    res = net.lab.exec(
        "pub2",
        ["curl", "-sS", "--max-time", "3", f"http://{pub1.ip}:9580/metrics"],
        timeout=10,
    )
    assert res.returncode != 0  # nothing listens on the underlay address
    codes = []
    for argv in (["-X", "POST", URL], [URL.replace("/metrics", "/")]):
        res = net.lab.exec(
            "pub1", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *argv], timeout=10
        )
        codes.append(res.stdout)
    assert codes == ["405", "404"]
    drops = {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(_scrape(net, "pub1"))
        for s in f.samples
        if s.name == "ipop_drops_total" and s.labels["layer"] == "metrics"
    }
    assert drops.get("method_not_allowed", 0) >= 1 and drops.get("not_found", 0) >= 1


def test_a_relayed_peer_shows_as_relayed_and_the_relay_counts_its_bytes(net: IpopNet) -> None:
    """... and the pings cross it on a relay channel (ipop.overlay.channels): the relay passed
    datagrams on unopened, and c2 opened them end to end."""

    def forwarded(host: str) -> float:
        return sum(
            s.value
            for f in text_string_to_metric_families(_scrape(net, host))
            for s in f.samples
            if s.name == "ipop_relay_forwarded_bytes_total"
        )

    def event(host: str, name: str) -> float:
        return sum(
            s.value
            for f in text_string_to_metric_families(_scrape(net, host))
            for s in f.samples
            if s.name == "ipop_events_total"
            and s.labels.get("layer") == "overlay"
            and s.labels.get("event") == name
        )

    seen: list[object] = []

    def relayed_and_counted() -> bool:
        # Pings first: the relayed link may have come up after the last ones went (routed
        # over the ring meanwhile), and its relay has forwarded nothing yet.
        net.lab.exec("c1", ["ping", "-c", "2", "-i", "0.2", "-W", "1", "c2.ipop"], timeout=10)
        if _peer(_scrape(net, "c1"), "c2")[0] != "relayed":
            return False
        c2 = next(p for p in net.status("c1").peers if p.name == "c2")
        seen[:] = [c2]
        if c2.path != "relayed" or c2.via is None:
            return False
        # The relay is any node linked directly to both ends (a public one, or one that port
        # guessing joined to both symmetric sides): the one c1 names counts the bytes.
        relay = next(h for h in RELAYS if net.status(h).self_.node_id == c2.via)
        seen.append(relay)
        return (
            forwarded(relay) > 0
            and event(relay, "relay_channel_forwarded") > 0
            and event("c2", "relay_channel_received") > 0
        )

    assert wait_for(relayed_and_counted, 30), (seen, _scrape(net, "c1"))


def test_the_router_serves_its_metrics_too(net: IpopNet) -> None:
    fams = {f.name: f for f in text_string_to_metric_families(_routable_scrape(net, "r1"))}
    (node,) = fams["ipop_node_info"].samples
    assert node.labels["node_name"] == "r1" and fams["ipop_routable"].samples[0].value == 1
