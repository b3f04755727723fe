"""Roaming with real daemons (root): a public host's underlay address changes under ipopd
while it pings a peer behind a port-restricted-cone NAT. Its address watcher notices
(netlink), the node re-advertises, the peer punches back: the pings resume within 2 s and the
pair is direct again, on the new address, with the same virtual IP.

Only the lab's own namespaces are touched (``ip addr`` inside the roamer's namespace).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.lab import HOST_IF
from ipop.tools.lab.topology import topology_from_dict

from .running import make_direct, outage_around, peer_path, running_net, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

READY_S = 30.0
OLD_IP, NEW_IP, GATEWAY = "203.0.113.20", "203.0.113.21", "203.0.113.1"
PING_EVERY_S = 0.1
PINGS = 100  # 10 s: 3 s before the roam, 7 s after


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    topo = topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
                {"name": "r", "role": "public", "ip": OLD_IP},
                {"name": "b", "role": "nat", "kind": "port-restricted-cone"},
            ]
        }
    )
    with running_net(
        topo, tmp_path_factory.mktemp("roam"), prefix_tag="roam", ready_s=READY_S
    ) as ipop:
        yield ipop


def test_pings_resume_within_2s_direct_after_the_address_changes(net: IpopNet) -> None:
    lab = net.lab
    r_vip, b_vip = make_direct(net, "r", "b")  # a direct path r <-> b first

    def roam() -> None:
        """The old address goes, a new one comes (as a DHCP change would do it)."""
        for argv in (
            ["ip", "addr", "flush", "dev", HOST_IF],
            ["ip", "addr", "add", f"{NEW_IP}/24", "dev", HOST_IF],
            ["ip", "route", "replace", "default", "via", GATEWAY],
        ):
            lab.exec("r", argv, timeout=5, check=True)

    # Pings flowing over the direct path first (a few answered), then the roam.
    outage_s, answered, text = outage_around(
        net, "r", b_vip, roam, every_s=PING_EVERY_S, pings=PINGS
    )
    assert answered, text
    print(f"roam outage {outage_s:.1f} s ({len(answered)} of {PINGS} answered)")
    assert outage_s <= 2.0, f"pings stopped for {outage_s:.1f} s"
    assert answered[-1] >= PINGS - 5, "pings did not resume to the end"
    # Direct again on both sides, at the new address, with the same virtual IPs.
    assert wait_for(lambda: peer_path(net, "b", r_vip)[0] == "direct", 5), net.status("b").peers
    path, endpoint = peer_path(net, "b", r_vip)
    assert endpoint is not None and endpoint.startswith(f"{NEW_IP}:"), (path, endpoint)
    assert net.status("r").self_.vip == r_vip and net.status("b").self_.vip == b_vip
    assert any(e.startswith(f"{NEW_IP}:") for e in net.status("r").self_.endpoints)
