"""Real ipopd daemons of a network on a shared overlay (root; issue 17, item 1).

``ipop-config overlay init shared`` and ``init labnet --overlay shared`` make every bundle
hold two certificates for the node's one key. The daemons link with the overlay ones and
claim addresses and names with the network ones; a node whose overlay certificate comes from
another CA of the same overlay name (its network certificate valid) never joins.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest

from ipop.bundle import Bundle, dump_bundle, load_bundle
from ipop.identity import NetworkCA, NodeIdentity
from ipop.tools.lab.ipopnet import IpopNet, NotReady
from ipop.tools.lab.topology import Topology, topology_from_dict

from .running import ping_ok, running_net

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

READY_S = 30.0


def _topology() -> Topology:
    return topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
                {"name": "a", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "b", "role": "nat", "kind": "symmetric"},
                {"name": "x", "role": "public", "ip": "203.0.113.12"},
            ]
        }
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with running_net(
        _topology(),
        tmp_path_factory.mktemp("ovl"),
        prefix_tag="o",
        ready_s=READY_S,
        hosts=["pub1", "a", "b"],
        overlay="shared",
    ) as ipop:
        yield ipop


def test_members_on_a_shared_overlay_join_name_and_ping(net: IpopNet) -> None:
    bundle = load_bundle(net.files("a").bundle)
    assert bundle.overlay == "shared" and bundle.network == "labnet"
    assert bundle.overlay_cert.node_id == bundle.node_id
    # Names come from DHT records signed with the network certificate.
    ping_ok(net, "a", "b.ipop")
    ping_ok(net, "b", "pub1.ipop")
    st = net.status("a")
    assert st.self_.vip is not None and IPv4Network("100.64.0.0/10").overlaps(
        IPv4Network(f"{st.self_.vip}/32")
    )
    assert {p.name for p in st.peers} >= {"pub1"}


def test_an_overlay_certificate_of_another_ca_never_joins(net: IpopNet) -> None:
    home = net.lab.workdir / "ca" / "labnet"
    network_ca = NetworkCA.load((home / "ca.key").read_bytes(), (home / "ca.crt").read_bytes())
    now = time.time()
    member = NodeIdentity.generate(network_ca, "x", now=now, hostname="x")
    rogue = NetworkCA.create("shared", now=now)  # the overlay's name, another key
    good = load_bundle(net.files("a").bundle)
    intruder = Bundle(
        network="labnet",
        subnet=good.subnet,
        bootstrap=good.bootstrap,
        node_name="x",
        hostname="x",
        ca_cert_pem=network_ca.cert_pem(),
        node_cert_pem=member.cert.pem(),
        node_key_pem=member.private_key_pem(),
        overlay="shared",
        overlay_ca_cert_pem=rogue.cert_pem(),
        overlay_cert_pem=member.certified_by(rogue, "x", now=now).cert.pem(),
    )
    net.files("x").bundle.write_text(dump_bundle(intruder))
    before = sum(v for k, v in net.status("pub1").drops.items() if "cert_bad_signature" in k)
    net.start("x")
    with pytest.raises(NotReady):
        net.wait_ready("x", timeout_s=10)
    after = sum(v for k, v in net.status("pub1").drops.items() if "cert_bad_signature" in k)
    assert after > before
    assert all(p.name != "x" for h in ("pub1", "a", "b") for p in net.status(h).peers)
