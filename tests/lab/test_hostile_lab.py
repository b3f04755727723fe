"""An insider's modified ipopd against real daemons (root): issue 13's attacks, end to end.

Host ``m`` runs :mod:`ipop.tools.lab.hostile` (the real daemon with one valid certificate, plus the
attacks) against honest ``ipopd``s on ``pub1``, ``pub2`` and ``a``/``b``/``c`` behind three NAT
kinds. ``v`` runs nothing: it is the third party the attacker asks everyone to connect to. What
is checked with things we did not write: UDP listeners on the victims' vIPs count forged packets
that got through the TAP and the kernel, ``ping`` by name, ``dig`` against the node's resolver,
and the kernel's own receive counter on ``v``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from ipop.tools.lab.hostile import MARKER
from ipop.tools.lab.ipopnet import IPOP_PORT, IpopNet
from ipop.tools.lab.topology import topology_from_dict

from .running import LISTENER, running_net

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

HONEST = ["pub1", "pub2", "a", "b", "c"]
VICTIMS = ["a", "b", "c", "pub2"]
ATTACK_S = 15.0
REFLECT = "203.0.113.14"
# Bytes the kernel counts at ``v`` while CONNECT_TO_MEs and GOs name it: a few handshakes at
# most (before the fix: every CTM's 8 endpoints retried for 20 s, GOs 3,000 knocks each).
REFLECT_PACKETS_MAX = 200


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    topo = topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
                {"name": "pub2", "role": "public", "ip": "203.0.113.11"},
                {"name": "a", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "b", "role": "nat", "kind": "restricted-cone"},
                {"name": "c", "role": "nat", "kind": "symmetric"},
                {"name": "m", "role": "public", "ip": "203.0.113.13"},
                {"name": "v", "role": "public", "ip": REFLECT},
            ]
        }
    )
    with running_net(
        topo, tmp_path_factory.mktemp("hostile"), prefix_tag="x", ready_s=30, hosts=HONEST
    ) as ipop:
        yield ipop


def _ping(net: IpopNet, src: str, name: str) -> bool:
    for _ in range(3):
        res = net.lab.exec(src, ["ping", "-c", "1", "-W", "2", f"{name}.ipop"], timeout=10)
        if res.returncode == 0:
            return True
    return False


def _rx_packets(net: IpopNet, host: str) -> int:
    res = net.lab.exec(host, ["cat", "/sys/class/net/eth0/statistics/rx_packets"], timeout=5)
    return int(res.stdout.strip())


def test_a_hostile_member_forges_nothing_hijacks_nothing_and_reflects_little(
    net: IpopNet,
) -> None:
    lab = net.lab
    vips = {h: IPv4Address(net.status(h).self_.vip or "") for h in HONEST}
    counts: dict[str, Path] = {}
    for h in VICTIMS:
        counts[h] = lab.workdir / f"marker-{h}.txt"
        argv = [sys.executable, "-c", LISTENER, str(vips[h]), str(ATTACK_S + 20), MARKER.decode()]
        lab.spawn(h, [*argv, str(counts[h])], log_path=lab.workdir / f"listener-{h}.log")
    rx_before = _rx_packets(net, "v")
    report = lab.workdir / "hostile-report.json"
    m = net.files("m")
    lab.write_resolv_conf("m", net.gateway)
    underlay = ",".join(f"203.0.113.{i}:{IPOP_PORT}" for i in (10, 11))
    hostile = [
        sys.executable, "-m", "ipop.tools.lab.hostile", "--config", str(m.config),
        "--victims", ",".join(VICTIMS), "--duration", str(ATTACK_S),
        "--reflect", f"{REFLECT}:9", "--underlay", underlay, "--report", str(report),
    ]  # fmt: skip
    lab.spawn("m", hostile, log_path=m.log)
    # Honest pairs keep pinging by name while the attack runs.
    deadline = time.monotonic() + 60 + ATTACK_S
    failed = []
    pairs = [("a", "c"), ("c", "b"), ("b", "pub2"), ("pub1", "a"), ("pub2", "c")]
    while not report.exists() and time.monotonic() < deadline:
        for src, dst in pairs:
            if not _ping(net, src, dst):
                failed.append((src, dst))
    assert report.exists(), m.log.read_text()[-3000:]
    sent = json.loads(report.read_text())
    assert sent["done"], sent
    assert failed == []
    s = sent["sent"]
    # The attack really ran: it found its victims and sent every kind of forgery.
    assert s["victims_found"] == len(VICTIMS)
    assert s["forged_routed_ip"] > 0 and s["eclipse_plants"] > 0 and s["ctm_reflect"] > 0
    # Nothing hijacked: every name still resolves to its owner, from every honest node.
    for reader in HONEST:
        for h in VICTIMS:
            res = lab.exec(reader, ["dig", "+short", f"@{net.gateway}", f"{h}.ipop"], timeout=10)
            assert res.stdout.strip() == str(vips[h]), (reader, h, res.stdout)
    for h in HONEST:
        assert IPv4Address(net.status(h).self_.vip or "") == vips[h]
    # No forged packet reached a victim's TAP (the listeners end on their own).
    end = time.monotonic() + ATTACK_S + 30
    while not all(p.exists() for p in counts.values()) and time.monotonic() < end:
        time.sleep(0.2)
    assert {h: int(p.read_text()) for h, p in counts.items()} == {h: 0 for h in VICTIMS}
    # The third party named in every CTM and GO saw almost nothing.
    reflected = _rx_packets(net, "v") - rx_before
    print(f"hostile: sent {s}; the third party received {reflected} packets")
    assert reflected <= REFLECT_PACKETS_MAX
