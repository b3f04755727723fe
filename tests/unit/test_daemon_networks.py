"""ipopd in two networks at once (issue 17, item 2): one UDP socket and one overlay node, a
TAP, an address, names and a data plane per network; bundles that do not share the overlay
and the key are refused with words; ``ipop status`` shows each network."""

from __future__ import annotations

import asyncio
import socket
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.aio.member import FIRST_SIDE_TABLE, check_same_overlay, route_tables
from ipop.bundle import Bundle, dump_bundle
from ipop.errors import ConfigError
from ipop.status import Status
from ipop.testing.identities import (
    make_bundle,
    make_network,
    member_bundles,
    overlay_only_bundle,
)
from ipop.testing.waiting import until
from ipop.tools import ipopd
from ipop.tools.cli_status import format_status
from ipop.types import Endpoint
from ipop.vnet.networks import network_tag

SUBNET = IPv4Network("100.64.0.0/16")  # both networks' range: they may overlap
NOW = time.time() - 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# The overlay: an overlay-only node (the bootstrap) and the daemon in two networks.
BOOT = Endpoint("127.0.0.1", _free_port())
OVERLAY_CA = make_network("shared", now=NOW)


def _bundles(**kw: object) -> list[Bundle]:
    return member_bundles(
        [("labnet", SUBNET), ("othernet", SUBNET)],
        "ab",
        overlay="shared",
        bootstrap=(BOOT,),
        now=NOW,
        hostname="ab",
        overlay_ca=OVERLAY_CA,
        **kw,  # type: ignore[arg-type]
    )


class FakeTap:
    """What the daemon uses of :class:`ipop.aio.tap.Tap`, over a socket pair (no device)."""

    def __init__(self, name: str, mtu: int) -> None:
        self.name, self.mtu = name, mtu
        self.ours, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.fd = self.ours.fileno()
        self.mac = b"\x02\x00\x00\x00\x00" + bytes([len(name)])
        self.vnet_hdr = False
        self.offload = False
        self.addresses: list[tuple[IPv4Address, IPv4Network, IPv4Address]] = []
        self.tables: list[int | None] = []

    async def configure(self) -> None:
        pass

    async def set_address(
        self, addr: IPv4Address, subnet: IPv4Network, gw: IPv4Address, *, table: int | None
    ) -> None:
        self.addresses.append((addr, subnet, gw))
        self.tables.append(table)

    def close(self) -> None:
        self.ours.close()
        self.kernel.close()


def test_bundles_of_another_overlay_key_or_network_twice_are_refused_with_words() -> None:
    first, second = _bundles()
    check_same_overlay(first, [("network[0].bundle", second)])  # the good case
    stranger = make_bundle(
        "othernet", "ab", subnet=SUBNET, bootstrap=(BOOT,), now=NOW, overlay="shared"
    )  # same overlay name, another overlay CA, another key
    with pytest.raises(ConfigError, match="of another CA") as err:
        check_same_overlay(first, [("network[0].bundle", stranger)])
    assert err.value.key == "network[0].bundle" and "--overlay" in err.value.fix
    other_key = _bundles()[1]  # the same overlay, another node key
    with pytest.raises(ConfigError, match="another node key") as err:
        check_same_overlay(first, [("network[0].bundle", other_key)])
    assert "--key" in err.value.fix
    with pytest.raises(ConfigError, match="again"):
        check_same_overlay(first, [("network[0].bundle", second), ("network[1].bundle", second)])
    overlay_only = make_bundle(
        "x", "ab", subnet=SUBNET, bootstrap=(BOOT,), now=NOW, overlay="shared", overlay_only=True
    )
    with pytest.raises(ConfigError, match="overlay-only"):
        check_same_overlay(first, [("network[0].bundle", overlay_only)])


def test_a_daemon_in_two_networks_serves_each_on_its_own_tap(tmp_path: Path) -> None:
    first, second = _bundles()
    settings = DaemonSettings(
        listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path / "ab", tap_name="ipop-lab"
    )
    taps: dict[str, FakeTap] = {}

    def open_tap(name: str, mtu: int) -> FakeTap:
        taps[name] = FakeTap(name, mtu)
        return taps[name]

    d = Daemon(
        first,
        settings,
        networks=[(second, "ipop-other")],
        open_tap=open_tap,  # type: ignore[arg-type]
    )
    (side,) = d.sides
    assert side.name == "othernet" and side.tap_name == "ipop-other"

    # Both networks remember one address (the ranges overlap): the second must take another.
    for folder in (tmp_path / "ab", tmp_path / "ab" / "networks" / "othernet"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "state.json").write_text('{"vip": "100.64.0.77", "network": "x"}\n')
    boot = Daemon(
        overlay_only_bundle(OVERLAY_CA, "o1", bootstrap=(BOOT,), now=NOW),
        DaemonSettings(listen=BOOT, state_dir=tmp_path / "o1"),
    )

    async def go() -> None:
        booting = asyncio.create_task(boot.run())
        runner = asyncio.create_task(d.run())
        try:
            assert await until(lambda: d.vip is not None and side.vip is not None, 30)
            # One node, one socket; a TAP per network, each with its own address.
            assert d.vip == IPv4Address("100.64.0.77") and side.vip != d.vip
            assert set(taps) == {"ipop-lab", "ipop-other"}
            assert taps["ipop-lab"].addresses[0][0] == d.vip
            assert taps["ipop-other"].addresses[0][0] == side.vip
            # The first network's routes in the main table, the other's in a table of its own.
            assert taps["ipop-lab"].tables == [None] and taps["ipop-other"].tables == [201]
            assert d.dataplane is not None and side.dataplane is not None
            assert side.dataplane.udp is d.dataplane.udp and not side.dataplane.primary
            # Each plane sends tagged with its network; the demux knows both.
            ca_keys = [b.trust.public_key_raw for b in (first, second) if b.trust is not None]
            assert d.dataplane.demux.tags == [network_tag(k) for k in ca_keys]
            assert side.dataplane._send_tag == network_tag(ca_keys[1])
            # Each network's state file, so that a restart gets each address back.
            assert (tmp_path / "ab" / "state.json").exists()
            assert (tmp_path / "ab" / "networks" / "othernet" / "state.json").exists()
            # Names: ours per network, resolved in that network only.
            assert await d.resolve("ab") == d.vip
            assert "ab.ipop" in d.names
            assert await side.resolve(side.names[0]) == side.vip
            # Status shows each network; its JSON reads back.
            st = d.status()
            assert [n.network for n in st.networks] == ["labnet", "othernet"]
            assert [n.tap for n in st.networks] == ["ipop-lab", "ipop-other"]
            assert st.networks[1].vip == str(side.vip) and st.self_.vip == str(d.vip)
            assert Status.from_json(st.to_json()) == st
            # The replica's store in status: both networks' records are held here.
            assert st.counters["dht.store_records"] >= 2, st.counters
            assert st.counters["dht.store_evicted"] == 0
            # and its RPCs: the bootstrap answered this daemon's join, claims and names
            assert boot.status().counters["dht.rpc_requests_served"] > 0, st.counters
            text = "\n".join(format_status(st))
            assert "networks (2):" in text and "othernet  ipop-other  " + str(side.vip) in text
        finally:
            d.stop()
            await runner
            boot.stop()
            await booting

    asyncio.run(asyncio.wait_for(go(), 60))
    assert all(t.ours.fileno() == -1 for t in taps.values())  # closed at stop


def test_a_one_network_daemons_status_json_has_no_networks_key(tmp_path: Path) -> None:
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    st = Daemon(_bundles()[0], settings).status()
    assert st.networks == [] and '"networks"' not in st.to_json()


def test_ipopd_refuses_a_network_of_another_overlay_naming_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _bundles()
    stranger = make_bundle(
        "othernet", "ab", subnet=SUBNET, bootstrap=(BOOT,), now=NOW, overlay="shared"
    )
    (tmp_path / "lab.bundle.toml").write_text(dump_bundle(first))
    (tmp_path / "other.bundle.toml").write_text(dump_bundle(stranger))
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        'bundle = "lab.bundle.toml"\n'
        f'state_dir = "{tmp_path}"\n'
        '[[network]]\nbundle = "other.bundle.toml"\ntap = "ipop-other"\n'
    )
    assert ipopd.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "network[0].bundle" in err and "another CA" in err and "--overlay" in err


def test_a_further_network_keeps_the_main_table_unless_its_range_overlaps() -> None:
    """A plain ``ping`` to an address of a second network with a range of its own must find
    that network's TAP (its routes in the main table); only a range that overlaps an earlier
    network's goes to a table of its own, reached by its rules."""
    first = IPv4Network("100.64.0.0/16")
    assert route_tables(first, [IPv4Network("100.65.0.0/16")]) == [None]
    assert route_tables(first, [IPv4Network("100.64.0.0/10")]) == [FIRST_SIDE_TABLE]
    others = [IPv4Network("100.65.0.0/16"), IPv4Network("100.65.128.0/17")]
    assert route_tables(first, others) == [None, FIRST_SIDE_TABLE + 1]
