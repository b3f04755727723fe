"""ipop.router.daemon against hostile LAN hosts: the real RouterLan's LAN handlers, driven with
frames built by scapy, over a FakeDht and a fake data plane (no sockets, no root).

What a LAN host must not be able to do: stop the router (a failure in its handling, a race of
two claims, a DISCOVER flood past max_hosts), make it do unbounded DHT work (ARP floods, static
claims from random sources), or take an address the router keeps for someone else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether

import ipop.router.claims as rc
import ipop.router.daemon as rd
from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.bundle import Bundle
from ipop.dhcp_dns.dhcp import parse_dhcp
from ipop.dht.names import c_name
from ipop.dht.record import ip_key, name_key
from ipop.errors import LocalProtocolError
from ipop.router.config import RouterSection
from ipop.router.daemon import RouterLan, _LanSide, router_daemon
from ipop.router.hosts import LanHost, mac_str
from ipop.router.lan import CsumDrop
from ipop.testing.fake_dht import FakeDht
from ipop.testing.identities import make_bundle
from ipop.tools.ipopd import run_daemon
from ipop.types import Endpoint, NodeId
from ipop.vnet.packet import parse_udp_frame

NOW = 1_800_000_000.0
SUBNET = IPv4Network("100.64.0.0/10")
OWN_MAC = bytes.fromhex("020000000001")
M1 = bytes.fromhex("0a0000000001")
M2 = bytes.fromhex("0a0000000002")
V1 = IPv4Address("100.64.5.1")
V2 = IPv4Address("100.64.5.2")
OTHER = NodeId(12345)


def _bundle(**router: Any) -> Bundle:
    import time

    return make_bundle(
        "lab-net",
        "router1",
        subnet=SUBNET,
        bootstrap=(Endpoint("203.0.113.10", 5800),),
        now=time.time(),
        **router,
    )


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return _bundle()


class FakeNode:
    def __init__(self, node_id: NodeId) -> None:
        self.node_id = node_id
        self.dht = FakeDht(node_id)
        self.dht_ready = asyncio.Event()
        self.dht_ready.set()
        # What the daemon hands the core from the owner records it looks up.
        self.core = SimpleNamespace(learn_certificate=lambda node, der, now: True)

    async def close(self) -> None:
        pass


class FakeDataPlane:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.local: set[IPv4Address] = set()
        self.owners: dict[bytes, NodeId] = {}  # fresh DHT answers its packet checks hold

    def live_owner(self, addr: bytes) -> NodeId | None:
        return self.owners.get(addr)

    def write_frame(self, frame: bytes) -> None:
        self.written.append(frame)

    def add_local_ip(self, vip: IPv4Address) -> None:
        self.local.add(vip)

    def remove_local_ip(self, vip: IPv4Address) -> None:
        self.local.discard(vip)

    def set_own_ip(self, vip: IPv4Address) -> None:
        pass

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _router(bundle: Bundle, state: Path, **section: Any) -> RouterLan:
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=state, lease_s=600.0)
    d = router_daemon(bundle, settings, RouterSection(interface="lan0", **section))
    r = d.local
    assert isinstance(r, RouterLan) and r.daemon is d
    r.clock = Clock()
    return r


class FakeLanSocket:
    def __init__(self, ifname: str, *, mtu: int) -> None:
        self.name, self.fd, self.mac = ifname, -1, OWN_MAC
        self.drops: Counter[CsumDrop] = Counter()
        self.counters: Counter[str] = Counter()
        self.frames: list[bytes] = []

    def read_into(self, buf: bytearray) -> int:
        frame = self.frames.pop(0)
        buf[: len(frame)] = frame
        return len(frame)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _fake_lan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rd, "LanSocket", FakeLanSocket)
    monkeypatch.setattr(rc, "EXPIRY_CHECK_S", 0.005)


async def _start(r: RouterLan, *, ready: bool = True) -> FakeNode:
    """What Daemon._start does, with fakes for the node, data plane and LAN socket."""
    node = FakeNode(r.daemon.bundle.node_id)
    if not ready:
        node.dht_ready.clear()
    r.daemon.node = node  # type: ignore[assignment]
    r.daemon.dataplane = FakeDataPlane()  # type: ignore[assignment]
    await r.daemon._open_local()
    return node


def _run(bundle: Bundle, state: Path, body: Callable[[RouterLan], Awaitable[None]], **kw: Any):
    async def main() -> None:
        r = _router(bundle, state, **kw)
        try:
            await body(r)
        finally:
            await r.daemon._shutdown()

    asyncio.run(main())


async def until(cond: Callable[[], bool], deadline_s: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.001)


async def settle(r: RouterLan) -> None:
    """Until every task the router spawned has ended, but its expiry loop."""
    await until(lambda: len(r.tasks) <= 1)


async def _started_with_static_host(r: RouterLan, mac: bytes, vip: IPv4Address) -> FakeNode:
    """Started, with ``mac`` bound to ``vip`` as a static host (its first frame claimed it)."""
    node = await _start(r)
    _LanSide(r).admit(memoryview(_ip_frame(mac, vip)))
    await settle(r)
    return node


def _running(r: RouterLan) -> bool:
    return not r.daemon._stop.is_set() and getattr(r.daemon, "failure", None) is None


def _ip_frame(mac: bytes, src: IPv4Address, dst: str = "100.70.0.9") -> bytes:
    return bytes(Ether(src=mac_str(mac), dst=mac_str(OWN_MAC)) / IP(src=str(src), dst=dst) / ICMP())


def _discover(mac: bytes, requested: IPv4Address | None = None) -> bytes:
    opts: list[Any] = [("message-type", "discover")]
    if requested is not None:
        opts.append(("requested_addr", str(requested)))
    return bytes(
        Ether(src=mac_str(mac), dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, chaddr=mac + bytes(10), xid=7)
        / DHCP(options=[*opts, "end"])
    )


def _request(mac: bytes, vip: IPv4Address) -> bytes:
    return bytes(
        Ether(src=mac_str(mac), dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(op=1, chaddr=mac + bytes(10), xid=7)
        / DHCP(
            options=[
                ("message-type", "request"),
                ("requested_addr", str(vip)),
                ("server_id", "100.64.0.1"),
                "end",
            ]
        )
    )


def _arp_request(mac: bytes, spa: IPv4Address, tpa: IPv4Address) -> bytes:
    return bytes(
        Ether(src=mac_str(mac), dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=mac_str(mac), psrc=str(spa), pdst=str(tpa))
    )


def _offers_to(r: RouterLan, mac: bytes) -> list[IPv4Address]:
    out = []
    for frame in r.dataplane.written:  # type: ignore[union-attr]
        try:
            msg = parse_dhcp(parse_udp_frame(frame).payload)
        except Exception:
            continue
        if msg.mac == mac and msg.message_type == 2:
            out.append(msg.yiaddr)
    return out


def _random_mac(rng: random.Random) -> bytes:
    return bytes([0x0A]) + rng.randbytes(5)


# --- the LAN socket ------------------------------------------------------------------------------


def test_the_lan_side_reads_through_the_lan_socket_and_its_counts_show(
    bundle: Bundle, tmp_path: Path
) -> None:
    async def body(r: RouterLan) -> None:
        await _start(r)
        lan = r.lan
        assert isinstance(lan, FakeLanSocket)
        frame = _ip_frame(M1, V1)
        lan.frames.append(frame)
        buf = bytearray(2048)
        assert _LanSide(r).read_into(buf) == len(frame) and bytes(buf[: len(frame)]) == frame
        lan.drops[CsumDrop.FRAGMENT] += 2
        lan.counters["csum_completed"] += 5
        assert r.drops()["lan.csum_fragment"] == 2
        assert r.counters()["lan.csum_completed"] == 5

    _run(bundle, tmp_path, body)


# --- one host's failure never stops the router --------------------------------------------------


def test_two_macs_claiming_one_address_at_once(bundle: Bundle, tmp_path: Path) -> None:
    async def body(r: RouterLan) -> None:
        await _start(r)
        side = _LanSide(r)
        assert not side.admit(memoryview(_ip_frame(M1, V1)))
        assert not side.admit(memoryview(_ip_frame(M2, V1)))
        await settle(r)
        assert _running(r)
        held = r.hosts.by_ip(V1)
        assert held is not None and held.mac == M1 and r.hosts.by_mac(M2) is None
        assert r.rdrops["lan_addr_taken"] == 1
        assert side.admit(memoryview(_ip_frame(M1, V1)))
        assert not side.admit(memoryview(_ip_frame(M2, V1)))  # M2's traffic stays out
        assert r.hosts.drops["lan_spoofed_src"] == 1

    _run(bundle, tmp_path, body)


def test_a_dhcp_request_and_a_static_claim_of_one_address_at_once(
    bundle: Bundle, tmp_path: Path
) -> None:
    async def body(r: RouterLan) -> None:
        await _start(r)
        r.feed(_discover(M1, requested=V1))
        _LanSide(r).admit(memoryview(_ip_frame(M2, V1)))
        await settle(r)
        assert _running(r)
        h1, h2 = r.hosts.by_mac(M1), r.hosts.by_mac(M2)
        assert h1 is not None and h2 is not None and h1.vip != h2.vip
        assert V1 in (h1.vip, h2.vip)

    _run(bundle, tmp_path, body)


def test_a_discover_flood_past_max_hosts_is_refused_and_counted(
    bundle: Bundle, tmp_path: Path
) -> None:
    rng = random.Random(1)

    async def body(r: RouterLan) -> None:
        node = await _start(r)
        for _ in range(40):
            r.feed(_discover(_random_mac(rng)))
        await settle(r)
        assert _running(r)
        assert len(r.hosts) == 4
        assert r.rdrops["host_table_full"] == 36
        creates = node.dht.calls["create"]
        assert creates <= 8  # DHT work for the admitted ones only
        # An honest host still gets an address: the oldest unrequested offer makes room.
        r.feed(_discover(M1))
        await settle(r)
        [offer] = _offers_to(r, M1)
        r.feed(_request(M1, offer))
        assert r.hosts.by_mac(M1) is not None and r.rdrops["offer_evicted"] == 1
        saved = json.loads((tmp_path / "lan_hosts.json").read_text())["hosts"]
        assert [row["mac"] for row in saved] == [mac_str(M1)]  # offers never reach the disk
        # The flood's offers are never REQUESTed: they are given back soon; M1 keeps its lease.
        r.clock.now += rc.OFFER_HOLD_S + rc.EXPIRY_GRACE_S + 1  # type: ignore[attr-defined]
        await until(lambda: len(r.hosts) == 1)
        assert r.hosts.by_mac(M1) is not None and _running(r)

    _run(bundle, tmp_path, body, max_hosts=4)


def test_one_hosts_failure_is_counted_logged_once_and_forgotten(
    bundle: Bundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(r: RouterLan) -> None:
        await _start(r)
        assert r.dhcp is not None
        assign = r.dhcp.assign

        def broken(mac: bytes | str, ip: IPv4Address, **kw: Any) -> None:
            if mac == M1:
                raise RuntimeError("bug in one host's handling")
            assign(mac, ip, **kw)

        r.dhcp.assign = broken  # type: ignore[method-assign]
        r.feed(_discover(M1))
        r.feed(_discover(M2))
        await settle(r)
        r.clock.now += 11  # type: ignore[attr-defined]  # past the DHCP server's retry stamp
        r.feed(_discover(M1))
        await settle(r)
        assert _running(r)
        assert r.rdrops["host_failed_alloc"] == 2
        assert r.hosts.by_mac(M1) is None and M1 not in r.claims._leases and not r.claims._busy
        assert r.hosts.by_mac(M2) is not None and _offers_to(r, M2)

    with caplog.at_level(logging.ERROR, logger="ipop-router"):
        _run(bundle, tmp_path, body)
    failures = [rec for rec in caplog.records if "event=host_failed" in rec.getMessage()]
    assert len(failures) == 1 and mac_str(M1) in failures[0].getMessage()


def test_a_fatal_error_makes_the_router_exit_non_zero(
    bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def start(self: Daemon) -> None:
        assert isinstance(self.local, RouterLan)
        node = await _start(self.local)
        node.dht_ready.clear()  # no vIP claim in this test

        def broken() -> list[Any]:
            raise RuntimeError("the host table is broken")

        self.local.hosts.hosts = broken  # type: ignore[method-assign]

    monkeypatch.setattr(Daemon, "_start", start)
    r = _router(bundle, tmp_path)
    assert run_daemon("ipop-router", r.daemon, tmp_path / "ctl.sock") == 1


# --- bounded work --------------------------------------------------------------------------------


def test_an_arp_flood_for_random_addresses_makes_bounded_lookups(
    bundle: Bundle, tmp_path: Path
) -> None:
    rng = random.Random(2)

    def random_vip() -> IPv4Address:
        return IPv4Address(int(SUBNET.network_address) + 2 + rng.randrange(1 << 20))

    async def body(r: RouterLan) -> None:
        node = await _start(r)
        # One host asking for 2,000 addresses: its per-MAC budget.
        for _ in range(2000):
            r.feed(_arp_request(M1, V1, random_vip()))
        await settle(r)
        assert node.dht.calls["get"] == rd.LOOKUP_BURST_PER_MAC
        # 2,000 hosts (random MACs) asking: the LAN-wide budget.
        for _ in range(2000):
            r.feed(_arp_request(_random_mac(rng), V1, random_vip()))
        await settle(r)
        assert node.dht.calls["get"] <= rd.LOOKUP_BURST
        refused = sum(
            r.rdrops[k] for k in ("arp_rate_limited", "lan_rate_limited", "arp_lookups_busy")
        )
        assert refused == 4000 - node.dht.calls["get"]
        # Ten seconds later: at most the rate's worth more.
        r.clock.now += 10  # type: ignore[attr-defined]
        for _ in range(2000):
            r.feed(_arp_request(_random_mac(rng), V1, random_vip()))
        await settle(r)
        assert node.dht.calls["get"] <= rd.LOOKUP_BURST + 10 * rd.LOOKUP_RATE
        assert _running(r)

    _run(bundle, tmp_path, body, static_hosts=False)


def test_arp_answers_are_cached_and_one_lookup_runs_per_address(
    bundle: Bundle, tmp_path: Path
) -> None:
    remote = IPv4Address("100.64.9.9")

    async def body(r: RouterLan) -> None:
        node = await _start(r)
        node.dht.hold(ip_key(r.namespace, remote), OTHER)
        node.dht.gate.clear()
        for i in range(10):
            r.feed(_arp_request(bytes([0x0A, 0, 0, 0, 1, i]), V1, remote))
        node.dht.gate.set()
        await settle(r)
        assert node.dht.calls["get"] == 1
        assert len(r.dataplane.written) == 4  # type: ignore[union-attr]  # max_waiters
        assert r.rdrops["arp_waiters_full"] == 6
        r.feed(_arp_request(M1, V1, remote))  # from the cache
        assert node.dht.calls["get"] == 1 and len(r.dataplane.written) == 5  # type: ignore[union-attr]

    _run(bundle, tmp_path, body, static_hosts=False)


def test_an_arp_for_an_address_the_data_plane_holds_an_answer_for_is_answered_at_once(
    bundle: Bundle, tmp_path: Path
) -> None:
    """A LAN host's reply to a remote sender: the data plane checked that sender's address a
    moment ago, so its ARP waits on no DHT get (which, slow, cost the first replies)."""
    remote = IPv4Address("100.64.9.9")

    async def body(r: RouterLan) -> None:
        node = await _start(r)
        node.dht.gate.clear()  # a DHT get would not end
        r.dataplane.owners[remote.packed] = OTHER  # type: ignore[union-attr]
        r.feed(_arp_request(M1, V1, remote))
        assert node.dht.calls["get"] == 0
        (reply,) = r.dataplane.written  # type: ignore[union-attr]
        assert ARP(reply[14:]).psrc == str(remote) and ARP(reply[14:]).op == 2
        node.dht.gate.set()

    _run(bundle, tmp_path, body, static_hosts=False)


def test_a_failed_arp_lookup_is_not_remembered_as_absent(bundle: Bundle, tmp_path: Path) -> None:
    remote = IPv4Address("100.64.9.9")

    async def body(r: RouterLan) -> None:
        node = await _start(r)
        node.dht.hold(ip_key(r.namespace, remote), OTHER)
        real_get = node.dht.get

        async def failing_get(key: str) -> Any:
            raise TimeoutError("the DHT did not answer")

        node.dht.get = failing_get  # type: ignore[method-assign]
        r.feed(_arp_request(M1, V1, remote))
        await settle(r)
        assert r.rdrops["arp_lookup_failed"] == 1 and not r.dataplane.written  # type: ignore[union-attr]
        node.dht.get = real_get  # type: ignore[method-assign]
        r.clock.now += 1.0  # type: ignore[attr-defined]  # the host's next ARP
        r.feed(_arp_request(M1, V1, remote))
        await settle(r)
        assert node.dht.calls["get"] == 1  # asked again: not a cached "absent"
        assert len(r.dataplane.written) == 1  # type: ignore[union-attr]

    _run(bundle, tmp_path, body, static_hosts=False)


def test_static_claims_from_random_sources_are_bounded(bundle: Bundle, tmp_path: Path) -> None:
    rng = random.Random(3)

    async def body(r: RouterLan) -> None:
        node = await _start(r)
        node.dht.gate.clear()  # the DHT is slow: claims pile up in flight
        side = _LanSide(r)
        for _ in range(1000):
            vip = IPv4Address(int(SUBNET.network_address) + 2 + rng.randrange(1 << 20))
            side.admit(memoryview(_ip_frame(_random_mac(rng), vip)))
        for _ in range(20):  # one MAC cycling through source addresses
            vip = IPv4Address(int(SUBNET.network_address) + 2 + rng.randrange(1 << 20))
            side.admit(memoryview(_ip_frame(M2, vip)))
        await asyncio.sleep(0)
        assert node.dht.calls["create"] == rc.MAX_CLAIMS
        assert r.rdrops["claims_busy"] > 900
        node.dht.gate.set()
        await settle(r)
        assert len(r.hosts) == rc.MAX_CLAIMS and _running(r)

    _run(bundle, tmp_path, body)


# --- a LAN host cannot take another's address ----------------------------------------------------


def test_a_saved_hosts_address_cannot_be_taken_before_it_is_restored(
    bundle: Bundle, tmp_path: Path
) -> None:
    (tmp_path / "lan_hosts.json").write_text(
        json.dumps(
            {"network": "lab-net", "hosts": [{"mac": mac_str(M1), "vip": str(V1), "kind": "dhcp"}]}
        )
    )

    async def body(r: RouterLan) -> None:
        node = await _start(r, ready=False)
        node.dht.hold(ip_key(r.namespace, V1), r.daemon.bundle.node_id, M1)  # ours, from before
        node.dht_ready.set()
        side = _LanSide(r)
        assert not side.admit(memoryview(_ip_frame(M2, V1)))  # M2 spoofs M1's address
        await settle(r)
        await until(lambda: r.hosts.by_mac(M1) is not None)
        assert _running(r)
        held = r.hosts.by_ip(V1)
        assert held is not None and held.mac == M1 and r.hosts.by_mac(M2) is None
        assert r.rdrops["lan_addr_taken"] == 1
        assert not side.admit(memoryview(_ip_frame(M2, V1)))
        assert _running(r)

    _run(bundle, tmp_path, body)


def test_the_routers_own_address_cannot_be_taken_by_a_lan_host(
    bundle: Bundle, tmp_path: Path
) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"vip": str(V2), "network": "lab-net"}))

    async def body(r: RouterLan) -> None:
        node = await _start(r)
        node.dht.hold(ip_key(r.namespace, V2), r.daemon.bundle.node_id)  # ours, before our claim
        r.feed(_arp_request(M2, V2, IPv4Address("100.64.0.1")))
        _LanSide(r).admit(memoryview(_ip_frame(M2, V2)))
        await settle(r)
        assert r.hosts.by_ip(V2) is None and r.rdrops["lan_addr_taken"] == 2
        assert node.dht.calls["create"] == 0

    _run(bundle, tmp_path, body)


def test_a_host_spoofing_a_bound_hosts_address_is_dropped_and_counted(
    bundle: Bundle, tmp_path: Path
) -> None:
    async def body(r: RouterLan) -> None:
        node = await _start(r)
        side = _LanSide(r)
        side.admit(memoryview(_ip_frame(M1, V1)))
        await settle(r)
        assert side.admit(memoryview(_ip_frame(M1, V1)))
        creates = node.dht.calls["create"]
        for _ in range(3):
            assert not side.admit(memoryview(_ip_frame(M2, V1)))
        r.feed(_arp_request(M2, V1, V2))
        assert r.hosts.drops["lan_spoofed_src"] == 3 and r.rdrops["lan_addr_taken"] == 4
        assert node.dht.calls["create"] == creates  # no DHT work for a spoofer
        # A known host sending from another address is dropped too.
        assert not side.admit(memoryview(_ip_frame(M1, V2)))
        assert r.rdrops["lan_wrong_src"] == 1

    _run(bundle, tmp_path, body)


def test_drop_reasons_are_one_checked_list(bundle: Bundle, tmp_path: Path) -> None:
    r = _router(bundle, tmp_path)
    with pytest.raises(LocalProtocolError):
        r.count_drop("no_such_reason")
    assert "host_failed_alloc" in rd.DROP_REASONS and "arp_rate_limited" in rd.DROP_REASONS


def test_a_host_whose_address_another_node_took_is_forgotten(
    bundle: Bundle, tmp_path: Path
) -> None:
    async def body(r: RouterLan) -> None:
        node = await _started_with_static_host(r, M1, V1)
        assert r.hosts.by_mac(M1) is not None
        node.dht.hold(ip_key(r.namespace, V1), OTHER)  # say, after a partition healed
        [lease] = r.claims._leases[M1]
        assert await lease.dht.renew(lease.key, lease.ttl) is False
        lease.on_lost()  # what the lease calls when its renewal finds another owner
        assert r.hosts.by_mac(M1) is None and V1 not in r.dataplane.local  # type: ignore[union-attr]
        assert r.rdrops["host_lease_lost"] == 1
        assert not _LanSide(r).admit(memoryview(_ip_frame(M1, V1)))  # no longer ours to send

    _run(bundle, tmp_path, body)


def test_a_lan_hosts_taken_name_is_a_warning_naming_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    rb = _bundle(hostname="r1", router_hosts=4)
    r = _router(rb, tmp_path)
    dht = FakeDht(rb.node_id)
    dht.hold(name_key(r.namespace, "laptop.r1"), OTHER, V2.packed)
    r.daemon.node = SimpleNamespace(identity=rb.identity(now=time.time()), dht=dht)  # type: ignore[assignment]
    host = LanHost(M1, V1, "dhcp")
    with caplog.at_level(logging.WARNING, logger="ipop-router"):
        asyncio.run(r.claims._register_hostname(host, "laptop"))
    assert r.rdrops["hostname_taken"] == 1
    (line,) = [rec.getMessage() for rec in caplog.records if "host_name_taken" in rec.getMessage()]
    assert "name=laptop.r1.ipop" in line and "give the host another hostname" in line
    assert c_name(V1) in line


# --- HostClaims (router.claims) -------------------------------------------------------------------


def test_forgetting_a_host_leaves_no_trace_and_gives_its_address_back(
    bundle: Bundle, tmp_path: Path
) -> None:
    async def body(r: RouterLan) -> None:
        node = await _started_with_static_host(r, M1, V1)
        assert r.hosts.by_mac(M1) is not None and V1 in r.dataplane.local  # type: ignore[union-attr]
        r.claims._reserved[V2.packed] = M1  # say, a second claim of M1's in flight
        r.claims.forget(M1)
        await settle(r)
        assert r.hosts.by_mac(M1) is None and V1 not in r.dataplane.local  # type: ignore[union-attr]
        assert M1 not in r.claims._leases and not r.claims._reserved
        assert ip_key(r.namespace, V1) not in node.dht.records  # released, not left to lapse
        assert r.claims._free_here(V1, M2) and r.claims._free_here(V2, M2)

    _run(bundle, tmp_path, body)


def test_stopping_the_claims_leaves_the_records_to_lapse(bundle: Bundle, tmp_path: Path) -> None:
    async def body(r: RouterLan) -> None:
        node = await _started_with_static_host(r, M1, V1)
        renews = node.dht.calls["renew"]
        await r.claims.stop()
        assert ip_key(r.namespace, V1) in node.dht.records  # a restart within the lease keeps it
        assert node.dht.calls["delete"] == 0 and node.dht.calls["renew"] == renews
        saved = json.loads((tmp_path / "lan_hosts.json").read_text())["hosts"]
        assert [(row["mac"], row["vip"]) for row in saved] == [(mac_str(M1), str(V1))]

    _run(bundle, tmp_path, body)


def test_a_router_without_a_name_domain_counts_a_checked_reason(
    bundle: Bundle, tmp_path: Path
) -> None:
    import time

    r = _router(bundle, tmp_path)  # no hostname in its certificate: no names for its hosts
    r.daemon.node = SimpleNamespace(  # type: ignore[assignment]
        identity=bundle.identity(now=time.time()), dht=FakeDht(bundle.node_id)
    )
    r.claims._naming.add(M1)
    asyncio.run(r.claims._register_hostname(LanHost(M1, V1, "dhcp"), "laptop"))
    assert r.rdrops["no_name_authority"] == 1 and set(r.rdrops) <= rd.DROP_REASONS
    assert M1 not in r.claims._naming  # the table of names in flight keeps no such MAC
