"""ipop.aio.local.LocalNetwork: a daemon composed with another local side instead of its TAP
(router mode's shape), with a recording fake side; no sockets, no TAP."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from ipaddress import IPv4Network
from pathlib import Path
from types import SimpleNamespace

from scapy.layers.l2 import ARP, Ether

from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.aio.dataplane import LocalSide
from ipop.aio.local import LocalNetwork
from ipop.status import DnsLatency, DnsStatus, LanHostStatus
from ipop.testing.identities import make_bundle
from ipop.types import Endpoint

SUBNET = IPv4Network("100.64.0.0/10")
BOOT = (Endpoint("203.0.113.10", 5800),)
HOST = LanHostStatus(
    mac="0a:00:00:00:00:01", vip="100.64.5.1", names=[], kind="static", lease_s=None
)
DNS = DnsStatus(
    counters={"queries": 1},
    answers={},
    drops={"dns_malformed": 2},
    latency_ms=DnsLatency(p50=None, p99=None, buckets={}),
)


class FakeSide:
    """A LocalNetwork that records what the daemon asks of it, in order."""

    def __init__(self, daemon: Daemon, log: list[str]) -> None:
        self.daemon = daemon
        self.log = log
        self.frames: list[bytes] = []

    async def open(self) -> tuple[int, LocalSide, str]:
        self.log.append("open")
        return 7, SimpleNamespace(), "lan9"  # type: ignore[return-value]

    def feed(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def drops(self) -> dict[str, int]:
        return {"arp.arp_short": 1, "router.lan_rate_limited": 3}

    def counters(self) -> dict[str, int]:
        return {"lan.csum_completed": 5}

    def dns_status(self) -> DnsStatus | None:
        return DNS

    def lan_hosts(self) -> list[LanHostStatus]:
        return [HOST]

    async def stop(self) -> None:
        self.log.append("stop")

    def close(self) -> None:
        self.log.append("close")


def _daemon(tmp_path: Path, log: list[str]) -> tuple[Daemon, FakeSide]:
    bundle = make_bundle("lab-net", "r1", subnet=SUBNET, bootstrap=BOOT, now=time.time())
    made: list[FakeSide] = []

    def side(d: Daemon) -> LocalNetwork:
        made.append(FakeSide(d, log))
        return made[-1]

    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    d = Daemon(bundle, settings, local=side)
    [fake] = made
    return d, fake


def test_the_side_is_built_once_with_the_daemon_and_opened_instead_of_a_tap(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    d, fake = _daemon(tmp_path, log)
    assert d.local is fake and fake.daemon is d
    fd, side, name = asyncio.run(d._open_local())
    assert (fd, name, log) == (7, "lan9", ["open"]) and side is not None
    assert d.tap is None


def test_status_shows_the_sides_drops_counters_dns_and_hosts_in_place_of_the_taps(
    tmp_path: Path,
) -> None:
    d, _ = _daemon(tmp_path, [])
    assert d.arp is None  # the side answers its own ARP: the daemon holds no responder
    d.dataplane = SimpleNamespace(  # type: ignore[assignment]
        drops=Counter({"no_such_vip": 1}),
        counters=Counter({"tap_writes": 9}),
        known_owners=dict,
        lane_stats=lambda: None,
    )
    view = d.local_view(now=time.time())
    assert list(view.drops) == [
        {"vnet.no_such_vip": 1},
        {"arp.arp_short": 1, "router.lan_rate_limited": 3},
        {"dns.dns_malformed": 2},
    ]
    assert list(view.counters) == [{"vnet.tap_writes": 9}, {"lan.csum_completed": 5}]
    assert view.lan_hosts == (HOST,) and view.dns is DNS and d.dns_status() is DNS


def test_a_daemon_without_a_side_keeps_its_taps_arp_and_no_hosts(tmp_path: Path) -> None:
    bundle = make_bundle("lab-net", "n1", subnet=SUBNET, bootstrap=BOOT, now=time.time())
    d = Daemon(bundle, DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path))
    assert d.arp is not None
    d.arp.drops["arp_not_for_us"] += 4
    view = d.local_view(now=time.time())
    assert list(view.drops) == [{"arp.arp_not_for_us": 4}]
    assert view.lan_hosts == () and view.dns is None and d.local is None


def test_shutdown_stops_the_side_first_and_closes_it_last(tmp_path: Path) -> None:
    log: list[str] = []
    d, _ = _daemon(tmp_path, log)

    class Plane:
        def close(self) -> None:
            log.append("dataplane.close")

    d.dataplane = Plane()  # type: ignore[assignment]
    asyncio.run(d._shutdown())
    assert log == ["stop", "dataplane.close", "close"]


def test_without_a_side_the_daemon_is_the_one_that_answers_arp_on_its_tap(
    tmp_path: Path,
) -> None:
    bundle = make_bundle("lab-net", "n1", subnet=SUBNET, bootstrap=BOOT, now=time.time())
    d = Daemon(bundle, DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path))
    fed: list[bytes] = []
    written: list[bytes] = []
    d.services = SimpleNamespace(feed=lambda frame, now: fed.append(frame) or True)  # type: ignore[assignment]
    d.dataplane = SimpleNamespace(write_frame=written.append)  # type: ignore[assignment]
    tap_mac = "52:54:00:12:34:56"
    arp = bytes(Ether(src=tap_mac) / ARP(hwsrc=tap_mac, psrc="100.64.1.2", pdst="100.64.1.3"))
    outside = bytes(Ether(src=tap_mac) / ARP(psrc="100.64.1.2", pdst="198.18.0.1"))
    assert d._local_frame(arp) and d._local_frame(outside)  # every ARP frame is consumed
    [reply] = written
    assert Ether(reply)[ARP].hwsrc == "02:1b:0a:00:00:01" and Ether(reply)[ARP].op == 2
    assert fed == []  # the services never see ARP
