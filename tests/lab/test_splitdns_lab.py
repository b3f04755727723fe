"""Split DNS without systemd-resolved (root): the README's dnsmasq setup, with real clients.

systemd-resolved cannot run here (no systemd as PID 1), so node ``a``'s namespace runs the
closest real resolver instead: dnsmasq on 127.0.0.1, with the configuration the README shows
(``*.ipop`` and the subnet's reverse zones to the node's gateway, every other name to the
system's resolver). The "system's resolver" is a second dnsmasq on ``pub1``'s underlay address
that knows one name, ``example.test``, and logs every query it gets. Both run in the
foreground under the lab (their PIDs recorded, stopped at teardown), each with its own config
and pid file; ``a``'s resolv.conf is per-namespace (/etc/netns/NS/resolv.conf, removed by the
lab). Checked with ``getent hosts``, ``host`` (forward and reverse) and ``ping NAME.ipop``;
and that neither side sees the other's names: the upstream never gets a ``.ipop`` query, the
gateway never gets ``example.test``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from ipop.dht.names import c_name
from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.topology import Topology, topology_from_dict

from .running import running_net, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (tools/run.sh)"),
]

READY_S = 30.0
UPSTREAM = "203.0.113.10"  # pub1's underlay address: the fake "system resolver"
EXAMPLE_IP = "198.51.100.77"


def _topology() -> Topology:
    return topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": UPSTREAM},
                {"name": "a", "role": "public", "ip": "203.0.113.11"},
                {"name": "b", "role": "nat", "kind": "port-restricted-cone"},
            ]
        }
    )


def _dnsmasq(net: IpopNet, host: str, name: str, lines: list[str]) -> str:
    """Start dnsmasq in ``host``'s namespace with ``lines`` as its whole config; its log path."""
    d = net.lab.host_dir(host)
    conf, log, pid = d / f"{name}.conf", d / f"{name}.log", d / f"{name}.pid"
    conf.write_text("\n".join([*lines, f"log-facility={log}", "log-queries", ""]))
    argv = ["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}", f"--pid-file={pid}"]
    net.lab.spawn(host, argv, log_path=d / f"{name}.out")
    assert wait_for(pid.exists, 5.0), (d / f"{name}.out").read_text()
    return str(log)


def split_dns_lines(gateway: IPv4Address, suffix: str, subnet: IPv4Network) -> list[str]:
    """The README's dnsmasq lines: the suffix and the subnet's reverse zones (dnsmasq splits a
    /10 into its 64 /16 zones itself) to the gateway; every other name as before."""
    return [f"server=/{suffix}/{gateway}", f"rev-server={subnet},{gateway}"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with running_net(
        _topology(), tmp_path_factory.mktemp("sdns"), prefix_tag="d", ready_s=READY_S
    ) as ipop:
        yield ipop


def _run(net: IpopNet, host: str, *argv: str) -> tuple[int, str]:
    res = net.lab.exec(host, list(argv), timeout=20)
    return res.returncode, res.stdout + res.stderr


def _gateway_queries(net: IpopNet, host: str) -> int:
    dns = net.status(host).dns
    assert dns is not None
    return dns.counters.get("queries", 0)


def test_dnsmasq_split_dns_resolves_ipop_names_and_leaves_the_rest(net: IpopNet) -> None:
    upstream_log = _dnsmasq(
        net,
        "pub1",
        "upstream",
        [
            "port=53",
            f"listen-address={UPSTREAM}",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            f"address=/example.test/{EXAMPLE_IP}",
        ],
    )
    # The resolvers the host had (here: the stand-in), kept apart from resolv.conf (README).
    had = net.lab.host_dir("a") / "resolv.dnsmasq"
    had.write_text(f"nameserver {UPSTREAM}\n")
    _dnsmasq(
        net,
        "a",
        "split",
        [
            *split_dns_lines(net.gateway, "ipop", net.subnet),
            f"resolv-file={had}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-hosts",
            # It reads resolv-file after dropping to "nobody", who cannot enter pytest's
            # private (0700) temp dir where the file is.
            "user=root",
        ],
    )
    net.lab.write_resolv_conf("a", "127.0.0.1")
    vip_b = IPv4Address(net.status("b").self_.vip or "0.0.0.0")
    cname = f"{c_name(vip_b)}.ipop"

    rc, out = _run(net, "a", "getent", "hosts", "b.ipop")
    print(f"$ getent hosts b.ipop\n{out}", file=sys.stderr)
    assert rc == 0 and out.split()[0] == str(vip_b), out
    rc, out = _run(net, "a", "getent", "hosts", cname)
    assert rc == 0 and out.split()[0] == str(vip_b), out
    rc, out = _run(net, "a", "host", "b.ipop")
    print(f"$ host b.ipop\n{out}", file=sys.stderr)
    assert rc == 0 and f"has address {vip_b}" in out, out
    rc, out = _run(net, "a", "host", str(vip_b))
    print(f"$ host {vip_b}\n{out}", file=sys.stderr)
    assert rc == 0 and "domain name pointer" in out and c_name(vip_b) in out, out
    rc, out = _run(net, "a", "ping", "-c", "1", "-W", "5", "b.ipop")
    print(f"$ ping -c 1 b.ipop\n{out}", file=sys.stderr)
    assert rc == 0 and f"({vip_b})" in out and "1 received" in out, out

    # Other names: answered by the system's resolver, never asked of the gateway.
    before = _gateway_queries(net, "a")
    rc, out = _run(net, "a", "getent", "hosts", "example.test")
    assert rc == 0 and out.split()[0] == EXAMPLE_IP, out
    rc, out = _run(net, "a", "host", "-t", "A", "www.example.test")
    print(f"$ host -t A www.example.test\n{out}", file=sys.stderr)
    assert rc == 0 and f"has address {EXAMPLE_IP}" in out, out
    assert _gateway_queries(net, "a") == before
    # ... and the system's resolver never saw an ipop name or a reverse query of the subnet.
    seen = Path(upstream_log).read_text()
    assert "example.test" in seen
    assert ".ipop" not in seen and "100.in-addr.arpa" not in seen, seen
