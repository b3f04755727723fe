"""One ipopd in two virtual networks at once (root; issue 17, item 2), with real daemons and
real clients.

Three overlay-only nodes (``ov1``..``ov3``: the bootstraps) carry the overlay ``shared``, as
the issue's target has it.
``labnet`` and ``othernet`` are two networks on it with their own CAs and the SAME address
range; ``a1`` is in labnet, ``b1`` in othernet, and ``ab`` in both: one key, one UDP socket,
a TAP per network (``ipop0`` for labnet, ``ipop1`` for othernet; the second network's routes
in a table of their own). Checked:

- ``ipop status --json`` on ``ab`` lists both networks, each with its address and names;
- ``ab`` pings ``a1`` and ``b1`` by name, each through its network's TAP (the name asked of
  that network's resolver on ``ab``'s own gateway), and ``a1`` and ``b1`` ping ``ab`` by name
  (each gets ``ab``'s address in its own network);
- ``a1`` still cannot reach ``b1``;
- tcpdump on ``ab``'s labnet TAP never sees othernet's traffic (and its othernet TAP does);
- with the two ranges apart and othernet's suffix ``other`` (a lab of its own), ``ab``
  reaches both networks' addresses with a plain ``ping``, no interface named (a range that
  overlaps none keeps the main table), and by name with its one resolv.conf: labnet's gateway
  answers othernet's names too, each from its own network, while ``a1`` (labnet only) gets
  none of them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from ipop.status import NetworkStatus
from ipop.tools.lab.ipopnet import IpopNet, tap_name
from ipop.tools.lab.topology import Topology

from .running import ping_ok, running_net, shared_overlay_topology, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

READY_S = 40.0
GATEWAY = "100.64.0.1"  # the same in both networks: their ranges are one
OVERLAY_ONLY = ("ov1", "ov2", "ov3")
HOSTS = [*OVERLAY_ONLY, "a1", "b1", "ab"]
# ping -p fills the payload with this: othernet's, which ab's labnet TAP must never see.
PATTERN = "0be5e7ed0ca7c0ffee0be5e7ed0ca7c0"
_A = re.compile(r"^(100\.\d+\.\d+\.\d+)$", re.MULTILINE)


def _topology() -> Topology:
    return shared_overlay_topology(
        OVERLAY_ONLY,
        {"a1": "port-restricted-cone", "b1": "port-restricted-cone", "ab": "port-restricted-cone"},
    )


def _networks_ready(net: IpopNet) -> bool:
    nets = net.status("ab").networks
    return len(nets) == 2 and all(n.vip is not None for n in nets)


@contextlib.contextmanager
def _multinet(
    workdir: Path,
    tag: str,
    subnets: dict[str, IPv4Network] | None = None,
    suffixes: dict[str, str] | None = None,
) -> Iterator[IpopNet]:
    """The lab above, running, once ab holds an address in both networks."""
    with running_net(
        _topology(),
        workdir,
        prefix_tag=tag,
        ready_s=READY_S,
        overlay="shared",
        overlay_only=OVERLAY_ONLY,
        networks={"b1": "othernet"},
        also={"ab": ("othernet",)},
        hosts=HOSTS,
        subnets=subnets,
        suffixes=suffixes,
    ) as ipop:
        assert wait_for(lambda: _networks_ready(ipop), READY_S), ipop.status("ab").networks
        yield ipop


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with _multinet(tmp_path_factory.mktemp("multinet"), "mn") as ipop:
        yield ipop


def _ab(net: IpopNet) -> dict[str, NetworkStatus]:
    return {n.network: n for n in net.status("ab").networks}


def _resolve_on_ab(net: IpopNet, network: str, name: str) -> str:
    """``name`` asked of ``network``'s resolver on ab's gateway: the query leaves from ab's
    address in that network, which routes it out of that network's TAP."""
    src = _ab(net)[network].vip
    assert src is not None
    argv = ["dig", "+short", "+tries=2", "+time=2", "-b", src, f"@{GATEWAY}", name, "A"]
    out = net.lab.exec("ab", argv, timeout=15).stdout
    found = _A.findall(out)
    assert found, f"{name} in {network} from {src}: {out!r}"
    return found[0]


def test_status_json_on_ab_lists_both_networks(net: IpopNet) -> None:
    nets = _ab(net)
    assert set(nets) == {"labnet", "othernet"}
    assert nets["labnet"].tap == tap_name(0) and nets["othernet"].tap == tap_name(1)
    assert nets["labnet"].vip == net.status("ab").self_.vip
    for n in nets.values():
        assert n.vip is not None and f"ab.{n.suffix}" in n.names, n
    sock = f"IPOP_SOCKET={net.files('ab').socket}"
    cli = ["env", sock, sys.executable, "-m", "ipop.tools.cli", "status", "--json"]
    out = net.lab.exec("ab", cli, timeout=20)
    assert '"networks"' in out.stdout and '"othernet"' in out.stdout, out.stdout + out.stderr


def test_ab_pings_each_network_by_name_through_its_tap(net: IpopNet) -> None:
    for network, peer, index in (("labnet", "a1", 0), ("othernet", "b1", 1)):
        vip = _resolve_on_ab(net, network, f"{peer}.ipop")
        assert vip == net.status(peer).self_.vip
        ping_ok(net, "ab", vip, interface=tap_name(index))


def test_members_of_each_network_ping_ab_by_name(net: IpopNet) -> None:
    nets = _ab(net)
    for src, network in (("a1", "labnet"), ("b1", "othernet")):
        out = ping_ok(net, src, "ab.ipop")
        assert f"({nets[network].vip})" in out, out  # ab's address in the asker's network


def test_a1_still_cannot_reach_b1(net: IpopNet) -> None:
    b1_vip = net.status("b1").self_.vip
    assert b1_vip is not None
    res = net.lab.exec("a1", ["ping", "-c", "3", "-i", "0.2", "-W", "1", b1_vip], timeout=10)
    assert res.returncode != 0 and " 0 received" in res.stdout, res.stdout


def test_abs_labnet_tap_never_sees_othernet_traffic(net: IpopNet, tmp_path: Path) -> None:
    pcaps = {i: tmp_path / f"ab-{tap_name(i)}.pcap" for i in (0, 1)}
    pids = [
        net.lab.spawn(
            "ab", ["tcpdump", "-i", tap_name(i), "-U", "-w", str(p)], log_path=p.with_suffix(".log")
        ).pid
        for i, p in pcaps.items()
    ]
    try:
        assert wait_for(lambda: all(p.exists() for p in pcaps.values()), 10), "tcpdump not up"
        other_vip = _ab(net)["othernet"].vip
        assert other_vip is not None
        argv = ["ping", "-c", "10", "-i", "0.1", "-W", "1", "-p", PATTERN, "-s", "120", other_vip]
        res = net.lab.exec("b1", argv, timeout=20)
        assert " 0 received" not in res.stdout, res.stdout
    finally:
        for pid in pids:
            net.lab.stop_pid(pid)
    marker = bytes.fromhex(PATTERN)
    assert marker in pcaps[1].read_bytes()  # othernet's TAP carried it ...
    assert marker not in pcaps[0].read_bytes()  # ... labnet's never


def test_with_ranges_apart_ab_reaches_both_networks_with_a_plain_ping(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A host in two networks whose ranges do not overlap routes by destination alone, as a
    ZeroTier or tinc user in two networks expects: before, the second network's routes were
    only in a table of its own, and a ping that named no interface found no route there.

    Names too: ab's resolv.conf names labnet's gateway only (100.64.0.1), and before,
    ``b1.other`` got REFUSED there: only ``dig @100.65.0.1`` found it."""
    subnets = {"labnet": IPv4Network("100.64.0.0/16"), "othernet": IPv4Network("100.65.0.0/16")}
    suffixes = {"othernet": "other"}
    workdir = tmp_path_factory.mktemp("multinet-apart")
    with _multinet(workdir, "ma", subnets, suffixes) as apart:
        for peer, network in (("a1", "labnet"), ("b1", "othernet")):
            vip = apart.status(peer).self_.vip
            assert vip is not None and IPv4Network(f"{vip}/32").subnet_of(subnets[network])
            ping_ok(apart, "ab", vip)  # no -I: the kernel's main table finds the TAP
        b1_vip = apart.status("b1").self_.vip
        out = apart.lab.exec("ab", ["ip", "route", "get", str(b1_vip)], timeout=10).stdout
        assert f"dev {tap_name(1)}" in out, out
        # By name, with the system resolver (ping, getent) and BIND's host.
        for name, peer in (("b1.other", "b1"), ("a1.ipop", "a1")):
            out = ping_ok(apart, "ab", name)
            assert f"({apart.status(peer).self_.vip})" in out, out
        host = apart.lab.exec("ab", ["host", "-W", "3", "b1.other"], timeout=15)
        assert f"has address {b1_vip}" in host.stdout, host.stdout + host.stderr
        nets = {n.network: n for n in apart.status("ab").networks}
        out = ping_ok(apart, "b1", "ab.other")  # b1's own gateway, othernet's suffix
        assert f"({nets['othernet'].vip})" in out, out
        # a1 is in labnet only: its gateway knows no zone "other".
        res = apart.lab.exec("a1", ["getent", "hosts", "b1.other"], timeout=15)
        assert res.returncode != 0 and str(b1_vip) not in res.stdout, res.stdout
