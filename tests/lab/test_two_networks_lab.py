"""Two virtual networks on one shared overlay of three overlay-only nodes (root; issue 17,
items 1-3), with real daemons and real clients.

The overlay ``shared`` has its own CA. Its three public nodes hold only overlay bundles
(``ipop-config overlay node``): they are the bootstraps, they route, relay and store both
networks' DHT records, and they hold no address. ``labnet`` (``a1``, ``a2``) and ``othernet``
(``b1``, ``b2``) are two networks on it with their own CAs and the same address range. Checked
with ``ping``, ``dig`` and ``tcpdump``:

- the members of each network find each other by name and ping each other;
- a member of one network resolves none of the other's names (a reverse lookup gives only the
  address's own computed C-name) and reaches none of its addresses;
- a modified daemon of the other network, told the victims' addresses, node ids and
  namespace, writes none of their keys, finds neither address in the records of theirs it
  holds as a replica (sealed), and gets none of its forged or spoofed IP onto their TAPs;
- the overlay-only nodes say so in ``ipop status``, hold links to members of both networks,
  and never see a member's ping payload on their wire (tcpdump), though they carry the
  networks' traffic and records;
- a network's revocation list pushed to one member reaches the other members over the
  overlay's links, and the overlay-only nodes carry it on.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipop.bundle import load_bundle
from ipop.dht.record import namespace_of
from ipop.tools.lab.hostile import MARKER
from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.topology import Topology

from .running import LISTENER, ping_ok, running_net, shared_overlay_topology, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

READY_S = 40.0
GATEWAY = "100.64.0.1"
OVERLAY_ONLY = ("ov1", "ov2", "ov3")
# Hosts of the second network; the rest of the members are in labnet. ``m`` runs the hostile
# build (ipop.tools.lab.hostile) against labnet's members, started by its test.
OTHERNET = {"b1": "othernet", "b2": "othernet", "m": "othernet"}
HONEST = ["ov1", "ov2", "ov3", "a1", "a2", "b1", "b2"]
ATTACK_S = 10.0
# ping -p fills the payload with this: what tcpdump on the overlay-only nodes must never see.
PATTERN = "5eed0ca7c0ffee5eed0ca7c0ffee0001"


def _topology() -> Topology:
    return shared_overlay_topology(
        OVERLAY_ONLY,
        {
            "a1": "port-restricted-cone",
            "a2": "symmetric",
            "b1": "port-restricted-cone",
            "b2": "symmetric",
            "m": "port-restricted-cone",
        },
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with running_net(
        _topology(),
        tmp_path_factory.mktemp("twonets"),
        prefix_tag="tn",
        ready_s=READY_S,
        overlay="shared",
        overlay_only=OVERLAY_ONLY,
        networks=OTHERNET,
        hosts=HONEST,
    ) as ipop:
        yield ipop


def _dig(net: IpopNet, host: str, *args: str) -> str:
    res = net.lab.exec(host, ["dig", f"@{GATEWAY}", "+tries=1", "+time=3", *args], timeout=10)
    return res.stdout


def test_the_bundles_are_what_the_roles_say(net: IpopNet) -> None:
    for name in OVERLAY_ONLY:
        b = load_bundle(net.files(name).bundle)
        assert not b.is_member and b.overlay == "shared"
    a1, b1 = load_bundle(net.files("a1").bundle), load_bundle(net.files("b1").bundle)
    assert (a1.network, b1.network) == ("labnet", "othernet")
    assert a1.subnet == b1.subnet  # ranges of different networks may overlap
    assert a1.trust is not None and b1.trust is not None
    assert a1.trust.fingerprint != b1.trust.fingerprint
    assert a1.overlay_trust.fingerprint == b1.overlay_trust.fingerprint


def test_members_of_each_network_ping_each_other_by_name(net: IpopNet) -> None:
    for src, dst in (("a1", "a2"), ("a2", "a1"), ("b1", "b2"), ("b2", "b1")):
        ping_ok(net, src, f"{dst}.ipop")


def test_overlay_only_nodes_hold_no_address_and_link_both_networks(net: IpopNet) -> None:
    for name in OVERLAY_ONLY:
        st = net.status(name)
        assert st.self_.overlay_only and st.self_.vip is None and not st.self_.names
    # Routable and linked are where the ring settles, not a given at any instant: on a quiet
    # machine the members are ready within 0.2 s, while a bootstrap that counted itself
    # routable alone learns of nodes between it and its neighbours and links them later.
    linked: set[str] = set()

    def settled() -> bool:
        linked.clear()
        statuses = [net.status(name) for name in OVERLAY_ONLY]
        for st in statuses:
            linked.update(p.name for p in st.peers)
        return all(st.self_.routable for st in statuses) and {"a1", "a2", "b1", "b2"} <= linked

    assert wait_for(settled, 20), (linked, [net.status(n).self_ for n in OVERLAY_ONLY])
    sock = f"IPOP_SOCKET={net.files('ov1').socket}"
    words = net.lab.exec(
        "ov1", ["env", sock, sys.executable, "-m", "ipop.tools.cli", "status"], timeout=20
    )
    assert "overlay-only node" in words.stdout + words.stderr


def test_a_member_neither_resolves_nor_reaches_the_other_network(net: IpopNet) -> None:
    b1_vip = net.status("b1").self_.vip
    a1_vip = net.status("a1").self_.vip
    assert b1_vip is not None and a1_vip is not None
    # Forward and reverse names of the other network: not ours to answer.
    for host, other, vip in (("a1", "b1", b1_vip), ("b1", "a1", a1_vip)):
        out = _dig(net, host, f"{other}.ipop", "A")
        assert "status: NXDOMAIN" in out, out
        # A reverse name is the address's own C-name (computed, no lookup: it tells nothing
        # the asker did not know); never the other network's hostname.
        out = _dig(net, host, "-x", vip)
        assert f"{other}.ipop" not in out, out
    # Its addresses lead nowhere: nobody in labnet holds b1's vIP.
    res = net.lab.exec("a1", ["ping", "-c", "3", "-i", "0.2", "-W", "1", b1_vip], timeout=10)
    assert res.returncode != 0 and " 0 received" in res.stdout, res.stdout
    # And a1's own network still works.
    ping_ok(net, "a1", "a2.ipop")


def _capture(net: IpopNet, host: str, pcap: Path) -> int:
    """Start tcpdump on every interface of ``host`` (UDP only, written as it comes); its PID."""
    argv = ["tcpdump", "-i", "any", "-U", "-w", str(pcap), "udp"]
    return net.lab.spawn(host, argv, log_path=pcap.with_suffix(".log")).pid


def test_the_overlay_only_nodes_carry_traffic_they_cannot_read(
    net: IpopNet, tmp_path: Path
) -> None:
    pcaps = {name: tmp_path / f"{name}.pcap" for name in OVERLAY_ONLY}
    pids = [_capture(net, name, pcap) for name, pcap in pcaps.items()]
    try:
        assert wait_for(lambda: all(p.exists() for p in pcaps.values()), 10), "tcpdump not up"
        relayed_before = _forwarded(net)
        for src, dst in (("a1", "a2"), ("b2", "b1")):
            vip = net.status(dst).self_.vip
            assert vip is not None
            argv = ["ping", "-c", "20", "-i", "0.05", "-W", "1", "-p", PATTERN, "-s", "200", vip]
            res = net.lab.exec(src, argv, timeout=20)
            assert " 0 received" not in res.stdout, res.stdout
        # A node on none of the pings' paths sees only its links' keepalives, which may not
        # fall in the pings' second: keep capturing until each has seen a datagram.
        assert wait_for(lambda: all(_captured(p) for p in pcaps.values()), 30), {
            k: p.stat().st_size for k, p in pcaps.items()
        }
    finally:
        for pid in pids:
            net.lab.stop_pid(pid)
    captured = {name: pcap.read_bytes() for name, pcap in pcaps.items()}
    # They did carry datagrams (links, the ring, DHT, maybe a relayed path) ...
    assert sum(len(data) for data in captured.values()) > 3000, {
        k: len(v) for k, v in captured.items()
    }
    # ... and never a member's inner packet in the clear.
    marker = bytes.fromhex(PATTERN)
    assert not any(marker in data for data in captured.values())
    print(
        "overlay-only captures (bytes):",
        {k: len(v) for k, v in captured.items()},
        "relay bytes forwarded before/after:",
        relayed_before,
        _forwarded(net),
    )


def _captured(pcap: Path) -> bool:
    """Whether tcpdump has written at least one packet after the file's 24-byte header."""
    return pcap.exists() and pcap.stat().st_size > 24 + 16 + 28


def _forwarded(net: IpopNet) -> int:
    total = 0
    for name in OVERLAY_ONLY:
        counters = net.status(name).counters
        total += sum(v for k, v in counters.items() if "relay" in k and "bytes" in k)
    return total


def test_a_member_of_the_other_network_injects_nothing(net: IpopNet) -> None:
    """``m`` (othernet) knows labnet's namespace and a1's and a2's vIPs and node ids from
    outside its own DHT. It reads and writes their name and ip keys in labnet's namespace,
    forges IP between them in their names, and sends them IP over its own links: replicas
    refuse the writes (its certificate is not labnet CA's) and show it none of the records
    (it is no member), the records it holds itself as a replica (eight nodes, eight
    replicas) show it neither address (sealed, ipop.dht.seal), and no marker reaches their
    TAPs."""
    lab = net.lab
    victims = ("a1", "a2")
    bundle = load_bundle(net.files("a1").bundle)
    assert bundle.trust is not None
    foreign = []
    counts: dict[str, Path] = {}
    for h in victims:
        me = net.status(h).self_
        assert me.vip is not None
        foreign += ["--foreign", f"{h}={me.vip}@{me.node_id}"]
        counts[h] = lab.workdir / f"marker-{h}.txt"
        argv = [sys.executable, "-c", LISTENER, me.vip, str(ATTACK_S + 20), MARKER.decode()]
        lab.spawn(h, [*argv, str(counts[h])], log_path=lab.workdir / f"listener-{h}.log")
    report = lab.workdir / "cross-report.json"
    m = net.files("m")
    hostile = [
        sys.executable, "-m", "ipop.tools.lab.hostile", "--config", str(m.config),
        "--victims", "", *foreign, "--foreign-namespace", namespace_of(bundle.trust),
        "--duration", str(ATTACK_S), "--report", str(report),
    ]  # fmt: skip
    lab.spawn("m", hostile, log_path=m.log)
    assert wait_for(report.exists, 90 + ATTACK_S), m.log.read_text()[-3000:]
    sent = json.loads(report.read_text())
    assert sent["done"], sent
    s = sent["sent"]
    assert s["dht_foreign_name_hijack_refused"] == len(victims), s
    assert s["dht_foreign_vip_hijack_refused"] == len(victims), s
    assert not any(k.endswith("_accepted") and k.startswith("dht_foreign") for k in s), s
    # Reads: found only where m is itself a replica of the key (its own copy, "_held").
    for what in ("name", "vip"):
        reads = {k: v for k, v in s.items() if k.startswith(f"dht_foreign_{what}_read_")}
        assert sum(reads.values()) == len(victims), s
        assert f"dht_foreign_{what}_read_found" not in reads, s
    assert s["forged_routed_ip"] > 0, s
    # A replica outside labnet holds labnet's records and can read no address in them.
    assert s["dht_foreign_records_held"] > 0, s
    assert s["dht_foreign_records_readable"] == 0, s
    # Names and addresses are labnet's still, and nothing forged reached a TAP.
    a2_vip = net.status("a2").self_.vip
    res = lab.exec("a1", ["dig", "+short", f"@{GATEWAY}", "a2.ipop"], timeout=10)
    assert res.stdout.strip() == a2_vip, res.stdout
    assert wait_for(lambda: all(p.exists() for p in counts.values()), ATTACK_S + 30)
    assert {h: int(p.read_text()) for h, p in counts.items()} == {h: 0 for h in victims}
    ping_ok(net, "a1", "a2.ipop")
    # The victims refused it themselves, and counted why (forged origins, foreign sources).
    refused = {
        h: {k: v for k, v in net.status(h).drops.items() if k.split(".")[0] in ("vnet", "overlay")}
        for h in victims
    }
    print(f"cross-network attack: sent {s}; victims' drops {refused}")
    assert any(
        v for d in refused.values() for k, v in d.items() if "origin" in k or "inner_src" in k
    ), refused


def test_a_networks_crl_pushed_to_one_member_reaches_the_others(net: IpopNet) -> None:
    """Last in the module: it revokes ``m``. othernet's CRL, pushed to b1 only, is in force
    at b2 within seconds (b2 counts it in ``network_crl.number``), and the overlay-only nodes
    hold it too; labnet's members and the overlay's own list are untouched."""
    pem = net.revoke("othernet", "m")
    number = net.client("b1").crl_push(pem)
    assert number >= 1

    def spread() -> bool:
        return net.status("b2").counters.get("network_crl.number") == number

    assert wait_for(spread, 30), net.status("b2").counters
    for h in ("a1", "a2"):
        assert net.status(h).counters.get("network_crl.number") == 0
    for h in (*OVERLAY_ONLY, "b1", "b2"):
        counters = net.status(h).counters
        assert counters.get("crl.number") == 0, (h, counters)  # the overlay's list: none
    carried = [
        net.status(h).counters.get("network_crl.network_crl_installed", 0) for h in OVERLAY_ONLY
    ]
    print(f"othernet's CRL {number}: b2 has it; overlay-only nodes installed {carried}")
    assert any(carried), carried
