"""Real ipopd daemons in the namespace lab (root): join, names, DNS, DHCP, restart, bad input.

One module-scoped lab (public bootstrap, a public node, hosts behind port-restricted-cone,
restricted-cone and symmetric NATs, and one host whose TAP takes its address by DHCP) runs a
daemon per host; each test checks one capability with clients we did not write (``ping``,
``dig``, ``udhcpc``, ``dhclient``) or the ``ipop`` CLI.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from ipop.dht.names import c_name
from ipop.status import Status
from ipop.tools.lab import netns
from ipop.tools.lab.ipopnet import IPOP_PORT, IpopNet
from ipop.tools.lab.lab import Lab, cleanup_stale, process_prefix
from ipop.tools.lab.topology import Topology, topology_from_dict
from ipop.vnet.arp import VIRTUAL_MAC

from .running import ping_ok, running_net, start_daemons

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

SUBNET = IPv4Network("100.64.0.0/10")
GATEWAY = "100.64.0.1"
READY_S = 30.0


def _topology() -> Topology:
    return topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
                {"name": "pub2", "role": "public", "ip": "203.0.113.11"},
                {"name": "a", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "b", "role": "nat", "kind": "restricted-cone"},
                {"name": "c", "role": "nat", "kind": "symmetric"},
                {"name": "d", "role": "public", "ip": "203.0.113.12"},
            ]
        }
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with running_net(
        _topology(),
        tmp_path_factory.mktemp("ipopd"),
        prefix_tag="d",
        ready_s=READY_S,
        addressing={"d": "dhcp"},
    ) as ipop:
        yield ipop


def _status(net: IpopNet, host: str) -> Status:
    return net.status(host)


def _ping(net: IpopNet, src: str, target: str, tries: int = 3) -> str:
    return ping_ok(net, src, target, tries)


def _cli(net: IpopNet, host: str, *args: str, timeout: float = 20) -> tuple[int, str]:
    sock = str(net.files(host).socket)
    res = net.lab.exec(
        host,
        ["env", f"IPOP_SOCKET={sock}", sys.executable, "-m", "ipop.tools.cli", *args],
        timeout=timeout,
    )
    return res.returncode, res.stdout + res.stderr


def test_every_node_holds_a_distinct_address_and_its_names(net: IpopNet) -> None:
    vips = {}
    for h in net.lab.hosts:
        st = _status(net, h.name)
        assert st.self_.vip is not None
        vip = IPv4Address(st.self_.vip)
        assert vip in SUBNET and str(vip) != GATEWAY
        assert f"{c_name(vip)}.ipop" in st.self_.names
        assert f"{h.name}.ipop" in st.self_.names
        # Routable (near links on both sides) may follow the address by a few seconds.
        deadline = time.monotonic() + 20
        while not st.self_.routable and time.monotonic() < deadline:
            time.sleep(0.1)
            st = _status(net, h.name)
        assert st.self_.routable, h.name
        vips[h.name] = vip
    assert len(set(vips.values())) == len(vips)


def test_ping_by_c_name_and_by_hostname_across_nats(net: IpopNet) -> None:
    c_vip = IPv4Address(_status(net, "c").self_.vip or "")
    out = _ping(net, "a", f"{c_name(c_vip)}.ipop")
    assert re.search(rf"bytes from .*\b{re.escape(str(c_vip))}\b", out)
    b_vip = _status(net, "b").self_.vip
    out = _ping(net, "c", "b.ipop")
    assert re.search(rf"bytes from .*\b{re.escape(str(b_vip))}\b", out)


def test_a_guessed_path_carries_ip_on_the_fast_path(net: IpopNet) -> None:
    """a (port-restricted cone) and c (symmetric) find a direct path by port guessing, which
    runs on one of c's punching sockets; c's data plane takes those datagrams itself (the
    fast path) instead of leaving them to the slow path's events."""
    a_id = _status(net, "a").self_.node_id
    deadline = time.monotonic() + 20.0
    while True:
        _ping(net, "a", "c.ipop")
        peers = {p.node_id: p for p in _status(net, "c").peers}
        if a_id in peers and peers[a_id].path == "direct":
            break
        assert time.monotonic() < deadline, f"c's path to a: {peers.get(a_id)}"
    before = _status(net, "c").counters.get("vnet.punched_datagrams", 0)
    res = net.lab.exec("a", ["ping", "-c", "20", "-i", "0.05", "-q", "c.ipop"], timeout=20)
    assert res.returncode == 0, res.stdout + res.stderr
    after = _status(net, "c").counters.get("vnet.punched_datagrams", 0)
    assert after - before >= 20, (before, after)


def test_lone_packets_on_a_direct_path_take_the_lane(net: IpopNet) -> None:
    """pub2 and pub1 (both public: a direct path) ping each other: with the native data path,
    each request leaves pub2 from its lane's thread and reaches pub1's TAP from pub1's, and each
    reply the same way back (``lane.fast``, ``lane.delivered``); with
    ``IPOP_FASTPATH=python`` there is no lane and the pings go as before."""
    native = os.environ.get("IPOP_FASTPATH", "auto") != "python"
    deadline = time.monotonic() + 30.0
    while True:  # the routes follow the first packets (a direct path, a probed MTU)
        ok = net.lab.exec("pub2", ["ping", "-c", "1", "-W", "1", "pub1.ipop"], timeout=10)
        routes = [_status(net, h).counters.get("lane.routes", 0) for h in ("pub2", "pub1")]
        if ok.returncode == 0 and (not native or min(routes) >= 1):
            break
        assert time.monotonic() < deadline, (routes, ok.stdout + ok.stderr)
    keys = ("lane.fast", "lane.delivered")
    before = {h: [_status(net, h).counters.get(k, 0) for k in keys] for h in ("pub2", "pub1")}
    res = net.lab.exec("pub2", ["ping", "-c", "20", "-i", "0.05", "-q", "pub1.ipop"], timeout=20)
    assert res.returncode == 0, res.stdout + res.stderr
    for h in ("pub2", "pub1"):
        after = [_status(net, h).counters.get(k, 0) for k in keys]
        moved = [x - y for x, y in zip(after, before[h], strict=True)]
        if native:  # 20 requests out of pub2 and into pub1, 20 replies back: the lane's,
            # but those that come while Python holds an fd's baton (after the overlay's own
            # traffic went up) are Python's
            assert min(moved) >= 15, (h, before[h], after)
        else:
            assert "lane.fast" not in _status(net, h).counters


def test_dig_answers_c_names_hostnames_and_nxdomain(net: IpopNet) -> None:
    b_vip = _status(net, "b").self_.vip
    assert b_vip is not None

    def dig(*q: str) -> str:
        res = net.lab.exec("a", ["dig", f"@{GATEWAY}", "+time=2", "+tries=2", *q], timeout=15)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    assert dig("+short", "b.ipop").split() == [b_vip]
    assert dig("+short", f"{c_name(IPv4Address(b_vip))}.ipop").split() == [b_vip]
    assert "status: NXDOMAIN" in dig("nobody-here.ipop")
    aaaa = dig("b.ipop", "AAAA")
    assert "status: NOERROR" in aaaa and "ANSWER: 0" in aaaa


def _tap_tx(net: IpopNet, host: str) -> tuple[int, int]:
    """(queue length, frames dropped) of the host's TAP toward its daemon."""
    res = net.lab.exec(host, ["ip", "-j", "-s", "link", "show", "ipop0"], timeout=10)
    assert res.returncode == 0, res.stdout + res.stderr
    [link] = json.loads(res.stdout)
    return link["txqlen"], link["stats64"]["tx"]["dropped"]


def test_a_burst_of_1000_queries_over_5_cold_names_is_answered(net: IpopNet) -> None:
    """Was 144 SERVFAIL of 1,000: identical lookups were not merged and 256 overflowed.
    Then p99 90-125 ms, and a few queries of each burst dropped by the TAP's queue (1,000
    frames) and answered only after the client's retry, a second later."""
    # pub2 has asked its gateway for no name yet: every record starts cold (its status
    # counts exactly 5 lookups afterwards, one per name).
    names = [f"{h}.ipop" for h in ("pub1", "a", "b", "c", "d")]
    qlen, dropped = _tap_tx(net, "pub2")
    assert qlen >= 2 * 1000  # room for the whole burst and then some
    res = net.lab.exec(
        "pub2",
        [sys.executable, "-m", "ipop.tools.bench.dns_burst", "--json", "--count", "1000", *names],
        timeout=30,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    got = json.loads(res.stdout)
    print("dns burst:", got)
    assert got["answered"] == 1000 and got["ok"] == 1000, got
    assert got["rcodes"] == {"NOERROR": 1000}, got
    # Resends also follow lookups slower than the client's 1 s retry (a loaded machine, a
    # ring still forming): the TAP's own drop counter says whether it dropped queries.
    assert _tap_tx(net, "pub2")[1] == dropped, got
    # The target is p99 <= 100 ms; the bound here leaves room for a loaded CI machine.
    assert got["p99_ms"] is not None and got["p99_ms"] <= 1000, got
    dns = _status(net, "pub2").dns
    assert dns is not None
    c = dns.counters
    # One lookup per name; every other query waited for it or, once it ended, hit the cache.
    assert c["lookups"] == 5 and c.get("merged", 0) + c.get("cache_hits", 0) >= 995, c
    assert dns.answers.get("servfail", 0) == 0 and dns.drops == {}
    assert dns.latency_ms.p99 is not None


def test_the_gateways_neighbour_entry_is_permanent(net: IpopNet) -> None:
    """A burst at a loaded moment lost every query (3 tries, UdpSndbufErrors and IpOutDiscards
    in the host, nothing on the TAP): after a quiet minute the kernel had to ask for the
    gateway's MAC again and held the queries in its small unresolved queue meanwhile."""
    res = net.lab.exec("pub2", ["ip", "-j", "neigh", "show", "dev", "ipop0", GATEWAY], timeout=10)
    assert res.returncode == 0, res.stdout + res.stderr
    entries = json.loads(res.stdout)
    assert [(e["lladdr"], e["state"]) for e in entries] == [
        (VIRTUAL_MAC.hex(":"), ["PERMANENT"])
    ], entries


def test_host_nslookup_getent_and_dig_with_the_documented_resolv_conf(net: IpopNet) -> None:
    """deploy/ipop.example.toml: with no upstream, "point the system resolver at both" (the
    gateway first, then the usual server). host and nslookup took the gateway's RA=0 answers
    as "try the next server" and failed; dig +tcp and dig ANY hung (TCP was not answered)."""
    b_vip = _status(net, "b").self_.vip
    assert b_vip is not None
    b_c = f"{c_name(IPv4Address(b_vip))}.ipop"
    resolv = Path(f"/etc/netns/{net.lab.host('c').ns}/resolv.conf")
    saved = resolv.read_text()
    assert saved.split() == ["nameserver", GATEWAY]
    # The usual server stands for the host's own resolver: here nothing listens there, so
    # a tool that moves on to it fails.
    resolv.write_text(f"nameserver {GATEWAY}\nnameserver 127.0.0.1\n")

    def run(*argv: str) -> str:
        res = net.lab.exec("c", list(argv), timeout=20)
        assert res.returncode == 0, f"{argv}: {res.stdout}{res.stderr}"
        return res.stdout

    try:
        assert f"b.ipop has address {b_vip}" in run("host", "-W", "2", "b.ipop")
        assert f"domain name pointer {b_c}." in run("host", "-W", "2", b_vip)
        out = run("nslookup", "-timeout=2", "b.ipop")
        assert re.search(rf"Name:\s+b\.ipop\s+Address: {re.escape(b_vip)}", out), out
        assert f"name = {b_c}." in run("nslookup", "-timeout=2", b_vip)
        assert run("getent", "hosts", "b.ipop").split() == [b_vip, "b.ipop"]
        assert run("getent", "hosts", b_c).split()[0] == b_vip
        dig = ("dig", f"@{GATEWAY}", "+time=2", "+tries=1")
        assert run(*dig, "+tcp", "+short", "b.ipop").split() == [b_vip]
        assert run(*dig, "+tcp", "+short", "-x", b_vip).split() == [f"{b_c}."]
        out = run(*dig, "ANY", "b.ipop")
        assert "status: NOERROR" in out and re.search(rf"\bA\s+{re.escape(b_vip)}", out), out
        out = run(*dig, "+tcp", "ANY", "b.ipop")
        assert "status: NOERROR" in out, out
    finally:
        resolv.write_text(saved)
    dns = _status(net, "c").dns
    assert dns is not None and dns.counters["tcp_queries"] >= 3, dns


def test_status_json_has_the_contract_fields(net: IpopNet) -> None:
    code, out = _cli(net, "a", "status", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert set(doc) >= {"self", "peers", "drops", "counters"}
    assert set(doc["self"]) >= {"node_id", "vip", "names", "nat", "uptime_s", "routable"}
    assert doc["peers"], "a node with no peers is not on the overlay"
    for p in doc["peers"]:
        assert set(p) >= {
            "node_id",
            "vip",
            "name",
            "path",
            "endpoint",
            "rtt_ms",
            "bytes_in",
            "bytes_out",
        }
        assert p["path"] in ("direct", "relayed", "overlay")


def test_ipop_ping_and_resolve_cli(net: IpopNet) -> None:
    code, out = _cli(net, "b", "ping", "pub2.ipop", "-c", "2")
    assert code == 0, out
    assert re.search(r"(direct|relayed|overlay)", out)
    code, out = _cli(net, "b", "resolve", "c.ipop")
    assert code == 0 and out.strip() == _status(net, "c").self_.vip


def test_dhcp_clients_configure_the_tap(net: IpopNet, tmp_path: Path) -> None:
    vip = _status(net, "d").self_.vip
    assert vip is not None
    lab = net.lab

    def tap_addrs() -> list[str]:
        res = lab.exec("d", ["ip", "-4", "-o", "addr", "show", "dev", "ipop0"], timeout=5)
        return re.findall(r"inet ([0-9.]+)/", res.stdout)

    assert tap_addrs() == []  # addressing = "dhcp": the daemon leaves the TAP to the client
    # A client script that only sets the address: nothing touches the namespace's resolv.conf.
    script = tmp_path / "dhcp-script.sh"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1$reason" in\n'
        "  bound*|renew*|BOUND*|RENEW*|REBOOT*)\n"
        '    ip addr flush dev "$interface"\n'
        '    ip addr add "${ip:-$new_ip_address}/${mask:-$new_subnet_mask}" dev "$interface" ;;\n'
        "esac\nexit 0\n"
    )
    script.chmod(0o755)
    res = lab.exec(
        "d",
        ["udhcpc", "-i", "ipop0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", str(script)],
        timeout=30,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert tap_addrs() == [vip]
    lab.exec("d", ["ip", "addr", "flush", "dev", "ipop0"], timeout=5)
    res = lab.exec(
        "d",
        [
            "dhclient",
            "-1",
            "-v",
            "-sf",
            str(script),
            "-lf",
            str(tmp_path / "leases"),
            "-pf",
            str(tmp_path / "dhclient.pid"),
            "ipop0",
        ],
        timeout=40,
    )
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert tap_addrs() == [vip]
    finally:
        pid = tmp_path / "dhclient.pid"
        if pid.exists():  # dhclient stays to renew: end it (our own process, by its PID)
            lab.exec("d", ["kill", pid.read_text().strip()], timeout=5)
    _ping(net, "d", "a.ipop")


def test_garbage_flood_is_counted_and_the_node_keeps_routing(net: IpopNet) -> None:
    pub1 = net.lab.host("pub1")
    before = sum(_status(net, "pub1").drops.values())
    flood = (
        "import os, socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for i in range(100000):\n"
        "    n = 1 + i % 200\n"
        f"    s.sendto(os.urandom(n), ('{pub1.ip}', 5800))\n"
    )
    res = net.lab.exec("pub2", [sys.executable, "-c", flood], timeout=120)
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 20
    after = before
    while time.monotonic() < deadline:
        after = sum(_status(net, "pub1").drops.values())
        if after - before >= 50000:
            break
        time.sleep(0.2)
    # Most of them are counted (the socket buffer may overflow under the flood: kernel drops).
    assert after - before >= 50000, (before, after)
    _ping(net, "a", "pub1.ipop")
    _ping(net, "pub1", "c.ipop")


def test_restart_keeps_the_address(net: IpopNet) -> None:
    before = _status(net, "b").self_.vip
    net.stop("b")
    assert not any(p.alive() for p in net.lab.processes if p.host == "b")
    net.start("b")
    st = net.wait_ready("b", timeout_s=READY_S)
    assert st.self_.vip == before
    # a may still hold the session b lost in the restart until b's join re-keys it (or a's
    # silent-peer re-handshake does, at the latest SILENT_PEER_S later): allow for that.
    _ping(net, "a", "b.ipop", tries=12)


def test_a_restart_after_the_bootstrap_is_gone_rejoins_through_remembered_peers(
    net: IpopNet,
) -> None:
    # Runs after the others: the bootstrap stays down for the rest of the module.
    boot = net.lab.bootstrap
    net.stop(boot)
    net.stop("b")
    saved = json.loads((net.files("b").state_dir / "peers.json").read_text())
    assert set(saved["peers"]) - {f"{boot.ip}:{IPOP_PORT}"}, saved  # peers besides the bootstrap
    net.start("b")
    st = net.wait_ready("b", timeout_s=READY_S)
    assert st.self_.vip is not None and st.peers
    _ping(net, "b", "pub2.ipop", tries=12)
    _ping(net, "a", "b.ipop", tries=12)
    started = re.findall(r"event=started .* remembered=(\d+)", net.files("b").log.read_text())
    assert int(started[-1]) >= 1, started


def test_teardown_leaves_no_namespace_or_process(tmp_path: Path) -> None:
    topo = topology_from_dict(
        {
            "hosts": [
                {"name": "p", "role": "public", "ip": "203.0.113.10"},
                {"name": "q", "role": "nat", "kind": "port-restricted-cone"},
            ]
        }
    )
    prefix = process_prefix("t")
    lab = Lab(topo, workdir=tmp_path / "lab", prefix=prefix)
    try:
        lab.up()
        start_daemons(lab, ready_s=READY_S)
        pids = [p.pid for p in lab.processes]
        assert len(pids) == 2
    finally:
        lab.down()
    assert netns.list_ns(prefix) == []
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    cleanup_stale(prefix)
