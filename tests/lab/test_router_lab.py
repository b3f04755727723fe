"""Router mode in the namespace lab (root): real ipop-router, ipopd and DHCP clients.

Two clusters, each a router behind its own NAT serving a bridge of plain hosts that run only
``udhcpc`` or ``dhclient`` (q3 gets no client: it is configured by hand, as a static host),
and ordinary ipopd nodes on the internet and behind a NAT. Frames for the bad-input checks
are built with scapy (bytes only) and sent by a small raw-socket program in the namespace.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from ipop.dht.names import c_name
from ipop.status import Status
from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.topology import Topology, topology_from_dict

from .running import ping_ok, running_net

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, bridges")

SUBNET = IPv4Network("100.64.0.0/10")
GATEWAY = "100.64.0.1"
READY_S = 30.0
LEASE_TARGET_S = 2.0

# Sends the frames given in hex on an interface, then prints (hex) every ARP frame and every
# UDP frame to port 68 it receives within the wait: the test parses them with scapy.
RAW_PY = r"""
import socket, sys, time
ifname, wait = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((ifname, 3))
s.setsockopt(263, 23, 1)
for h in sys.argv[3:]:
    s.send(bytes.fromhex(h))
s.settimeout(0.05)
end = time.monotonic() + wait
while time.monotonic() < end:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    to_68 = f[12:14] == b"\x08\x00" and f[23] == 17 and f[36:38] == b"\x00\x44"
    if f[12:14] == b"\x08\x06" or to_68:
        print(f.hex(), flush=True)
"""

# Prints 1 if the interface leaves TX checksums to the NIC (ETHTOOL_GTXCSUM via SIOCETHTOOL).
TX_CSUM_PY = r"""
import array, fcntl, socket, struct, sys
buf = array.array("B", struct.pack("II", 0x16, 0))
ifr = struct.pack("16sQ", sys.argv[1].encode(), buf.buffer_info()[0])
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)
print(struct.unpack("II", buf.tobytes())[1])
"""
# A TCP server for one connection: reads to EOF, answers the SHA-256 of what it got and the
# bytes reversed (an upload and a download of the same size), exits; gives up after argv[2] s.
TCP_SERVER_PY = r"""
import hashlib, socket, sys
s = socket.create_server(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
c, _ = s.accept()
c.settimeout(float(sys.argv[2]))
data = bytearray()
while chunk := c.recv(65536):
    data += chunk
c.sendall(hashlib.sha256(data).digest() + bytes(data[::-1]))
c.close()
"""
# Its client: connects (retrying while the server starts), sends argv[3] random bytes, checks
# the answer, prints "ok".
TCP_CLIENT_PY = r"""
import hashlib, os, socket, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
end = time.monotonic() + 10
while True:
    try:
        c = socket.create_connection((host, port), timeout=10)
        break
    except OSError:
        if time.monotonic() > end:
            raise
        time.sleep(0.1)
data = os.urandom(size)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
got = bytearray()
while chunk := c.recv(65536):
    got += chunk
assert got[:32] == hashlib.sha256(data).digest(), "upload corrupted"
assert bytes(got[32:]) == data[::-1], f"download: {len(got) - 32} of {size} bytes, or corrupted"
print("ok")
"""
TCP_PORT = 18080
# A UDP receiver: binds argv[1], prints "ready", then one line per datagram ("<length>
# <sha256>") until it has argv[2] of them or argv[3] s pass. Its buffer holds a whole burst.
UDP_RECEIVER_PY = r"""
import hashlib, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE: the lab runs as root
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
want, end = int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while want and time.monotonic() < end:
    s.settimeout(max(end - time.monotonic(), 0.01))
    try:
        d = s.recv(65535)
    except socket.timeout:
        break
    print(len(d), hashlib.sha256(d).hexdigest(), flush=True)
    want -= 1
"""
# Sends argv[5] batches of argv[4] bytes (batch k: SHAKE-256 of "uso<k>") to argv[1]:argv[2],
# back to back, each in one sendto with UDP_SEGMENT (UDP GSO, as QUIC stacks do): the kernel
# hands each on as one batch of argv[3]-byte datagrams.
UDP_GSO_SENDER_PY = r"""
import hashlib, socket, sys
host, port, size, total, batches = sys.argv[1], *map(int, sys.argv[2:6])
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.setsockopt(socket.SOL_UDP, 103, size)
for k in range(batches):
    c.sendto(hashlib.shake_256(b"uso%d" % k).digest(total), (host, port))
"""
UDP_PORT = 18443


def _topology() -> Topology:
    return topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
                {"name": "pub2", "role": "public", "ip": "203.0.113.11"},
                {"name": "a", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "r1", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "r2", "role": "nat", "kind": "restricted-cone"},
            ],
            "clusters": [
                {
                    "router": "r1",
                    "hosts": [
                        {"name": "p1", "client": "udhcpc"},
                        {"name": "p2", "client": "dhclient"},
                        {"name": "p3", "client": "udhcpc"},
                    ],
                },
                {
                    "router": "r2",
                    "hosts": [
                        {"name": "q1", "client": "dhclient"},
                        {"name": "q2", "client": "udhcpc"},
                        {"name": "q3", "client": "udhcpc"},  # configured statically instead
                    ],
                },
            ],
        }
    )


DHCP_HOSTS = ("p1", "p2", "p3", "q1", "q2")
# A LAN host's name lives under its router's: <host>.<router hostname> (ipop.dht.policy).
ROUTER_OF = {"p1": "r1", "p2": "r1", "p3": "r1", "q1": "r2", "q2": "r2", "q3": "r2"}


def _fqdn(name: str) -> str:
    """The DNS name of a lab host: a node's hostname, or a LAN host's under its router."""
    return f"{name}.{ROUTER_OF[name]}.ipop" if name in ROUTER_OF else f"{name}.ipop"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with running_net(
        _topology(), tmp_path_factory.mktemp("router"), prefix_tag="r", ready_s=READY_S
    ) as ipop:
        yield ipop


@pytest.fixture(scope="module")
def leases(net: IpopNet) -> dict[str, tuple[IPv4Address, float]]:
    """Start the real DHCP clients; host → (address, seconds from client start to lease)."""
    for name in DHCP_HOSTS:
        net.start_plain(name)
    return {name: net.wait_lease(name, timeout_s=10.0) for name in DHCP_HOSTS}


def _router_status(net: IpopNet, router: str, *, named: tuple[str, ...] = ()) -> Status:
    """The router's status once every host in ``named`` is listed with its hostname."""
    deadline = time.monotonic() + 10.0
    while True:
        st = net.status(router)
        names = {n for h in st.lan_hosts for n in h.names}
        if all(_fqdn(n) in names for n in named) or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def _ping(net: IpopNet, src: str, target: str, tries: int = 4) -> str:
    return ping_ok(net, src, target, tries, timeout_s=15.0)


def _ping_fails(net: IpopNet, src: str, target: str) -> bool:
    res = net.lab.exec(src, ["ping", "-c", "1", "-W", "1", target], timeout=15)
    return res.returncode != 0


def _raw(net: IpopNet, host: str, frames: list[bytes], wait_s: float) -> list[Ether]:
    res = net.lab.exec(
        host,
        [sys.executable, "-c", RAW_PY, "eth0", str(wait_s), *(f.hex() for f in frames)],
        timeout=wait_s + 10,
        check=True,
    )
    return [Ether(bytes.fromhex(line)) for line in res.stdout.split()]


def _mac(net: IpopNet, host: str) -> str:
    out = net.lab.exec(host, ["cat", "/sys/class/net/eth0/address"], timeout=5).stdout
    return out.strip()


def _router_mac(net: IpopNet, router: str) -> str:
    out = net.lab.exec(router, ["cat", "/sys/class/net/clan0/address"], timeout=5).stdout
    return out.strip()


def _vip(net: IpopNet, host: str) -> IPv4Address:
    vip = net.status(host).self_.vip
    assert vip is not None
    return IPv4Address(vip)


def test_plain_hosts_get_leases_fast_and_the_router_lists_them(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    vips = [addr for addr, _ in leases.values()]
    assert len(set(vips)) == len(vips)
    for name, (addr, took) in leases.items():
        assert addr in SUBNET and str(addr) != GATEWAY
        assert took <= LEASE_TARGET_S, f"{name} got its lease after {took:.2f} s"
    for router, hosts in (("r1", ("p1", "p2", "p3")), ("r2", ("q1", "q2"))):
        st = _router_status(net, router, named=hosts)
        rows = {h.vip: h for h in st.lan_hosts}
        for name in hosts:
            addr = leases[name][0]
            row = rows[str(addr)]
            assert row.mac == _mac(net, name)
            assert row.kind == "dhcp"
            assert f"{c_name(addr)}.ipop" in row.names and _fqdn(name) in row.names
            assert row.lease_s is not None and 0 < row.lease_s <= 120
    # The CLI shows them too.
    res = net.lab.exec(
        "r1",
        [
            "env",
            f"IPOP_SOCKET={net.files('r1').socket}",
            sys.executable,
            "-m",
            "ipop.tools.cli",
            "status",
        ],
        timeout=20,
    )
    assert "LAN hosts (3)" in res.stdout and _mac(net, "p2") in res.stdout


def test_plain_hosts_ping_nodes_and_the_other_cluster_by_name_and_back(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    _router_status(net, "r1", named=("p1", "p2", "p3"))
    _router_status(net, "r2", named=("q1", "q2"))
    pairs = [
        ("p1", _fqdn("a")),
        ("p2", _fqdn("pub2")),
        ("a", _fqdn("p1")),
        ("pub1", _fqdn("p2")),
        ("p3", _fqdn("q1")),
        ("q1", _fqdn("p3")),
        ("q2", _fqdn("pub1")),
        ("a", _fqdn("q2")),
    ]
    for src, target in pairs:
        out = _ping(net, src, target)
        assert "1 received" in out
    q2 = leases["q2"][0]
    out = _ping(net, "p1", f"{c_name(q2)}.ipop")
    assert re.search(rf"bytes from .*\b{re.escape(str(q2))}\b", out)


def test_a_router_answers_pings_to_its_own_name(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    """``ping r1.ipop`` from a node, from the other cluster's LAN host and from one of its own
    LAN hosts: the router's own vIP has no stack behind it, so its data plane answers echo
    requests itself (before, none came back)."""
    before = net.status("r1").counters.get("vnet.own_echo_answered", 0)
    for src in ("a", "q1", "p1"):  # a node, the other cluster's host, its own LAN's host
        out = _ping(net, src, _fqdn("r1"))
        assert re.search(rf"bytes from .*\b{re.escape(str(_vip(net, 'r1')))}\b", out), out
    assert net.status("r1").counters.get("vnet.own_echo_answered", 0) >= before + 3


def test_lan_to_lan_traffic_stays_on_the_lan(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    _ping(net, "p1", str(leases["p2"][0]))
    neigh = net.lab.exec("p1", ["ip", "neigh", "show", str(leases["p2"][0])], timeout=5).stdout
    assert _mac(net, "p2") in neigh and _router_mac(net, "r1") not in neigh


def test_a_host_that_leaves_checksums_to_its_nic_gets_dns_and_tcp(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    """p1's veth keeps TX checksum offload on (the kernel's default, as in VMs and
    containers): its UDP and TCP leave with the checksum unfinished, and the router must
    finish it (ipop.router.lan) before answering (DNS) or forwarding (TCP) them."""
    res = net.lab.exec("p1", [sys.executable, "-c", TX_CSUM_PY, "eth0"], timeout=10, check=True)
    assert res.stdout.strip() == "1", "the lab turned TX checksum offload off again"
    _router_status(net, "r1", named=("p1",))
    a_vip = str(_vip(net, "a"))
    res = net.lab.exec(
        "p1", ["dig", "+short", "+time=2", "+tries=2", f"@{GATEWAY}", _fqdn("a")], timeout=15
    )
    assert res.stdout.split() == [a_vip], res.stdout + res.stderr
    # 300 kB each way (by address: this part does not depend on the DNS one).
    server = net.lab.spawn(
        "a",
        [sys.executable, "-c", TCP_SERVER_PY, str(TCP_PORT), "20"],
        log_path=net.lab.workdir / "tcp-server.log",
    )
    try:
        res = net.lab.exec(
            "p1",
            [sys.executable, "-c", TCP_CLIENT_PY, a_vip, str(TCP_PORT), "300000"],
            timeout=30,
        )
        assert res.stdout.strip() == "ok", res.stdout + res.stderr
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    counters = net.status("r1").counters
    assert counters.get("lan.csum_completed", 0) > 0, counters
    # The upload reached the router in the kernel's batches (TSO on a veth: up to 64 kB),
    # cut back into segments rather than sealed whole (IP fragments on the underlay).
    assert counters.get("lan.gso_split", 0) > 0, counters


def _udp_gso_to_a(net: IpopNet, size: int, total: int, batches: int) -> tuple[list[str], int]:
    """p1 sends ``batches`` UDP GSO batches of ``total`` bytes in ``size``-byte datagrams to
    ``a`` across the VN: the datagrams ``a`` got (sorted "<length> <sha256>" lines, as
    expected by :func:`_udp_gso_expected`), and how many batches r1 cut meanwhile."""
    a_vip = str(_vip(net, "a"))
    _ping(net, "p1", a_vip)  # the router knows a's owner: nothing is held for a lookup
    want = batches * -(-total // size)
    log = net.lab.workdir / f"udp-receiver-{batches}.log"
    receiver = net.lab.spawn(
        "a", [sys.executable, "-c", UDP_RECEIVER_PY, str(UDP_PORT), str(want), "10"], log_path=log
    )
    try:
        deadline = time.monotonic() + 10.0
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and receiver.poll() is None, "no UDP receiver"
            time.sleep(0.02)
        before = net.status("r1").counters.get("lan.uso_split", 0)
        argv = [a_vip, str(UDP_PORT), str(size), str(total), str(batches)]
        net.lab.exec("p1", [sys.executable, "-c", UDP_GSO_SENDER_PY, *argv], timeout=10, check=True)
        assert receiver.wait(timeout=15) == 0
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    cut = net.status("r1").counters.get("lan.uso_split", 0) - before
    return sorted(line for line in log.read_text().split("\n")[1:] if line), cut


def _udp_gso_expected(size: int, total: int, batches: int) -> list[str]:
    """The datagrams p1 meant to send (the order is not the point: sorted)."""
    lines = []
    for k in range(batches):
        payload = hashlib.shake_256(b"uso%d" % k).digest(total)
        for at in range(0, total, size):
            d = payload[at : at + size]
            lines.append(f"{len(d)} {hashlib.sha256(d).hexdigest()}")
    return sorted(lines)


def test_a_hosts_udp_gso_batch_arrives_as_every_datagram(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    """Issue 14, finding 6: p1 (offload on, as the kernel sets a veth) sends 23,500 bytes in
    one ``sendto`` with ``UDP_SEGMENT`` 1200: its kernel hands the router one 23.5 kB batch.
    The router must cut it into the 20 datagrams p1 meant (19 of 1200 bytes, one of 700), as
    a NIC would, and ``a`` across the VN gets every one of them intact."""
    expected = _udp_gso_expected(1200, 23_500, 1)
    assert len(expected) == 20
    got, cut = _udp_gso_to_a(net, 1200, 23_500, 1)
    assert got == expected
    assert cut == 1  # it did come as one batch
    assert net.status("r1").counters.get("lan.lan_oversize", 0) == 0


def test_a_burst_of_udp_gso_batches_arrives_whole(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    """20 batches back to back (480 kB, 400 datagrams), as a QUIC sender's burst: the kernel
    charges each batch whole to the router's packet socket, whose default buffer (~200 kB)
    held 8-10 of them; the rest were lost before the router read a byte."""
    got, cut = _udp_gso_to_a(net, 1200, 24_000, 20)
    assert got == _udp_gso_expected(1200, 24_000, 20)
    assert cut == 20


def _arp_request(src_mac: str, spa: str, tpa: str) -> bytes:
    return bytes(
        Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=src_mac, psrc=spa, pdst=tpa)
    )


def _arp_replies(frames: list[Ether], tpa: str, mac: str) -> list[Ether]:
    return [
        f for f in frames if ARP in f and f[ARP].op == 2 and f[ARP].psrc == tpa and f.src == mac
    ]


def test_arp_is_answered_only_for_live_remote_addresses(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    me, spa = _mac(net, "p1"), str(leases["p1"][0])
    rmac = _router_mac(net, "r1")
    live = str(_vip(net, "a"))
    other_cluster = str(leases["q1"][0])
    free = "100.99.251.7"
    lan = str(leases["p2"][0])
    got = _raw(net, "p1", [_arp_request(me, spa, t) for t in (live, other_cluster)], 2.0)
    assert _arp_replies(got, live, rmac) and _arp_replies(got, other_cluster, rmac)
    got = _raw(net, "p1", [_arp_request(me, spa, free), _arp_request(me, spa, lan)], 1.5)
    assert not _arp_replies(got, free, rmac)
    assert not _arp_replies(got, lan, rmac)  # the LAN host answers for itself
    assert _arp_replies(got, lan, _mac(net, "p2"))
    assert net.status("r1").drops.get("router.arp_not_live", 0) >= 1


def test_malformed_dhcp_and_arp_frames_are_dropped_and_counted(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    me = _mac(net, "p3")
    before = net.status("r1").drops
    short_arp = bytes(Ether(src=me, dst="ff:ff:ff:ff:ff:ff", type=0x0806)) + b"\x00\x01\x08\x00"
    bad_arp = bytes(
        Ether(src=me, dst="ff:ff:ff:ff:ff:ff")
        / ARP(hwtype=6, hwlen=6, psrc="100.64.9.9", pdst=GATEWAY)
    )
    udp = Ether(src=me, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
    no_magic = bytes(udp / UDP(sport=68, dport=67) / (b"\x01\x01\x06\x00" + bytes(300)))
    bad_opts = bytes(
        udp / UDP(sport=68, dport=67) / BOOTP(chaddr=bytes(16)) / b"c\x82Sc\x35\x05\x01"
    )
    _raw(net, "p3", [short_arp, bad_arp, no_magic, bad_opts], 0.5)
    deadline = time.monotonic() + 5
    while True:
        after = net.status("r1").drops

        def grew(key: str, a: dict[str, int] = after) -> bool:
            return a.get(key, 0) > before.get(key, 0)

        arp_ok = grew("arp.arp_short") and grew("arp.arp_bad_format")
        dhcp_keys = [k for k in after if k.startswith("dhcp.dhcp_") and "awaiting" not in k]
        dhcp_ok = sum(after[k] for k in dhcp_keys) >= sum(before.get(k, 0) for k in dhcp_keys) + 2
        if (arp_ok and dhcp_ok) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert arp_ok, after
    assert dhcp_ok, after
    _ping(net, "p3", "a.ipop")  # the router still serves


def test_a_dhcp_request_for_an_address_held_elsewhere_is_refused(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    taken = str(_vip(net, "a"))
    fake = "0a:11:22:33:44:55"
    req = bytes(
        Ether(src=fake, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=bytes.fromhex(fake.replace(":", "")) + bytes(10), xid=0x1234)
        / DHCP(options=[("message-type", "request"), ("requested_addr", taken), "end"])
    )
    naks: list[Ether] = []
    for _ in range(3):
        got = _raw(net, "p3", [req], 1.5)
        naks = [f for f in got if DHCP in f and ("message-type", 6) in f[DHCP].options]
        if naks:
            break
    assert naks and naks[0][BOOTP].xid == 0x1234
    rows = {h.mac: h for h in net.status("r1").lan_hosts}
    assert fake in rows and rows[fake].vip != taken


def test_static_hosts_are_registered_and_conflicts_refused(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    a_vip = str(_vip(net, "a"))
    lab = net.lab
    lab.write_resolv_conf("q3", GATEWAY)
    # Claims a's address: refused, its traffic goes nowhere.
    lab.exec("q3", ["ip", "addr", "add", f"{a_vip}/10", "dev", "eth0"], timeout=5, check=True)
    assert _ping_fails(net, "q3", "pub1.ipop")
    assert _ping_fails(net, "q3", "pub1.ipop")
    drops = net.status("r2").drops
    assert drops.get("router.static_refused", 0) >= 1
    assert _mac(net, "q3") not in {h.mac for h in net.status("r2").lan_hosts}
    # A free address: registered under the router's identity, reachable both ways.
    free = "100.99.77.55"
    lab.exec("q3", ["ip", "addr", "flush", "dev", "eth0"], timeout=5, check=True)
    lab.exec("q3", ["ip", "addr", "add", f"{free}/10", "dev", "eth0"], timeout=5, check=True)
    _ping(net, "q3", "pub1.ipop", tries=6)
    rows = {h.mac: h for h in net.status("r2").lan_hosts}
    row = rows[_mac(net, "q3")]
    assert row.vip == free and row.kind == "static" and row.lease_s is None
    assert f"{c_name(IPv4Address(free))}.ipop" in row.names
    _ping(net, "a", f"{c_name(IPv4Address(free))}.ipop")


def test_a_hostile_lan_host_cannot_stop_or_flood_the_router(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    """p3 sends a DISCOVER flood past max_hosts (random MACs), an ARP flood for random
    addresses and p1's address as its source: r1 keeps serving, and counts all of it."""
    rng = random.Random(13)
    me, spa, victim = _mac(net, "p3"), str(leases["p3"][0]), str(leases["p1"][0])
    bcast = "ff:ff:ff:ff:ff:ff"
    discovers = []
    for i in range(1100):  # max_hosts is 1024, the DHCP server's pending table as many
        mac = bytes([0x0A]) + rng.randbytes(5)
        discovers.append(
            bytes(
                Ether(src=":".join(f"{b:02x}" for b in mac), dst=bcast)
                / IP(src="0.0.0.0", dst="255.255.255.255")
                / UDP(sport=68, dport=67)
                / BOOTP(chaddr=mac + bytes(10), xid=i)
                / DHCP(options=[("message-type", "discover"), "end"])
            )
        )
    arps = [
        _arp_request(
            me, spa, str(IPv4Address(int(SUBNET.network_address) + rng.randrange(2, 1 << 21)))
        )
        for _ in range(200)
    ]
    spoof = bytes(
        Ether(src=me, dst=_router_mac(net, "r1")) / IP(src=victim, dst=str(_vip(net, "a"))) / UDP()
    )
    before = net.status("r1").drops
    # In bursts of a few hundred: one burst of all would overflow the router's socket buffer.
    _raw(net, "p3", [spoof, spoof, *arps], 0.2)
    for i in range(0, len(discovers), 250):
        _raw(net, "p3", discovers[i : i + 250], 0.2)
    deadline = time.monotonic() + 10
    while True:
        st = net.status("r1")  # answers: the router runs
        grew = {k: st.drops.get(k, 0) - before.get(k, 0) for k in st.drops}
        refused = grew.get("router.claims_busy", 0) + grew.get("router.host_table_full", 0)
        arp_capped = grew.get("router.lan_rate_limited", 0) + grew.get("router.arp_rate_limited", 0)
        if (refused and arp_capped and grew.get("lan.lan_spoofed_src", 0) >= 2) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.1)
    assert refused > 0 and arp_capped > 0, {k: v for k, v in grew.items() if v}
    spoofs = (grew.get("lan.lan_spoofed_src", 0), grew.get("router.lan_wrong_src", 0))
    assert spoofs[0] >= 2 and spoofs[1] >= 2, {k: v for k, v in grew.items() if v}
    rows = {h.mac: h for h in st.lan_hosts}
    assert rows[_mac(net, "p1")].vip == victim  # p1 keeps its address
    for src in ("p1", "p2", "p3"):
        _ping(net, src, "a.ipop", tries=6)
    # A few claims at a time, not one per random MAC; and the router still runs.
    assert len(net.status("r1").lan_hosts) <= 100


def test_router_restart_keeps_the_hosts_addresses(
    net: IpopNet, leases: dict[str, tuple[IPv4Address, float]]
) -> None:
    lab = net.lab
    _router_status(net, "r1", named=("p1", "p2", "p3"))
    net.stop("r1")
    net.start("r1")
    net.wait_ready("r1", timeout_s=READY_S)
    st = _router_status(net, "r1", named=("p1", "p2", "p3"))
    rows = {h.mac: h for h in st.lan_hosts}
    for name in ("p1", "p2", "p3"):
        assert rows[_mac(net, name)].vip == str(leases[name][0])
    # udhcpc renews on SIGUSR1: the restarted router ACKs the same address.
    udhcpc = [p for p in lab.processes if p.host == "p1"]
    assert udhcpc
    os.kill(udhcpc[0].pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    log = lab.host_dir("p1") / "dhcp.log"
    while "lease of" not in log.read_text().split("SIGUSR1")[-1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert net.plain_address("p1") == leases["p1"][0]
    for src, target in (("p1", "a.ipop"), ("a", _fqdn("p2")), ("q1", _fqdn("p3"))):
        _ping(net, src, target, tries=6)
