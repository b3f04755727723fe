"""A router's [[service]] tables: parsing (errors name the table and key) and LanServices."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from ipop.dht.publish import ServicePublisher
from ipop.dht.srv import ServiceValue
from ipop.errors import ConfigError
from ipop.router.config import LanService, load_router_config
from ipop.router.hosts import LanHost
from ipop.router.lanservices import LanServices
from ipop.testing.fake_dht import FakeDht
from ipop.types import NodeId

BASE = 'bundle = "b.toml"\nstate_dir = "state"\n[router]\ninterface = "br0"\n'


def _load(tmp_path: Path, text: str) -> tuple[LanService, ...]:
    p = tmp_path / "router.toml"
    p.write_text(BASE + text)
    return load_router_config(p).router.services


def test_service_tables_parse(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == ()
    got = _load(
        tmp_path,
        '[[service]]\nname = "http"\nport = 80\nhost = "printer"\ntxt = ["path=/"]\n'
        '[[service]]\nname = "syslog"\nport = 514\nproto = "udp"\nhost = "nas"\n',
    )
    assert got == (
        LanService("http", 80, "tcp", ("path=/",), host="printer"),
        LanService("syslog", 514, "udp", host="nas"),
    )


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('name = "HTTP"\nport = 80\nhost = "p"\n', "service[0].name"),
        ('port = 80\nhost = "p"\n', "service[0].name"),
        ('name = "http"\nport = 0\nhost = "p"\n', "service[0].port"),
        ('name = "http"\nport = "80"\nhost = "p"\n', "service[0].port"),
        ('name = "http"\nport = 80\nhost = "a.b"\n', "service[0].host"),
        ('name = "http"\nport = 80\n', "service[0].host"),
        ('name = "http"\nport = 80\nhost = "p"\nproto = "sctp"\n', "service[0].proto"),
        ('name = "http"\nport = 80\nhost = "p"\ntxt = ["x"]\n', "service[0].txt"),
        ('name = "http"\nport = 80\nhost = "p"\ncolour = 1\n', "service[0].colour"),
    ],
)
def test_bad_service_tables_name_the_key(tmp_path: Path, table: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "[[service]]\n" + table)
    assert err.value.key == key


def test_a_service_twice_is_refused(tmp_path: Path) -> None:
    one = '[[service]]\nname = "http"\nport = 80\nhost = "p"\n'
    with pytest.raises(ConfigError, match="twice"):
        _load(tmp_path, one + one)


def test_lan_services_follow_their_hosts() -> None:
    async def body() -> None:
        dht = FakeDht(NodeId(0x7))
        pub = ServicePublisher(dht, "lab-net", ttl=60)
        hosts: list[LanHost] = []
        lan = LanServices(
            [
                LanService("http", 80, txt=("path=/",), host="printer"),
                LanService("ssh", 22, host="nas"),
            ],
            hosts=lambda: hosts,
            publisher=lambda: pub,
            under="lab.ipop",
        )
        assert await lan.sync() == 0  # no host of either name yet
        p1 = IPv4Address("100.64.0.20")
        hosts.append(LanHost(b"\x02" * 6, p1, "dhcp", ["printer.lab.ipop"]))
        # A host named under another router, or deeper, is not ours.
        hosts.append(LanHost(b"\x03" * 6, p1 + 1, "dhcp", ["nas.other.ipop", "x.nas.lab.ipop"]))
        assert await lan.sync() == 1
        assert pub.published() == [("http", "tcp", ServiceValue(p1, 80, ("path=/",)))]
        assert await lan.sync() == 0  # nothing changed: no DHT write
        creates = dht.calls["create"]
        await lan.sync()
        assert dht.calls["create"] == creates
        # The host moves: the service follows; it leaves: the service is withdrawn.
        hosts[0] = LanHost(b"\x02" * 6, p1 + 5, "dhcp", ["printer.lab.ipop"])
        assert await lan.sync() == 1
        assert pub.published()[0][2].addr == p1 + 5
        hosts.pop(0)
        assert await lan.sync() == 1
        assert pub.published() == []
        assert not [k for k in dht.records if ":svc:" in k]

    asyncio.run(body())
