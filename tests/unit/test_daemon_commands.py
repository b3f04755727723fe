"""ipop.aio.commands: the control socket's commands on a daemon (a FakeDht, no sockets)."""

from __future__ import annotations

import asyncio
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ipop.aio.commands import DaemonControl
from ipop.aio.control import CommandFailed
from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.dht.policy import MAX_USER_KEY
from ipop.dht.publish import ServicePublisher
from ipop.dht.record import MAX_VALUE_BYTES, ip_key, user_key
from ipop.testing.fake_dht import FakeDht
from ipop.testing.identities import make_bundle
from ipop.types import Endpoint, NodeId

SUBNET = IPv4Network("100.64.0.0/10")
BOB = NodeId(0xB0B)
BOB_VIP = IPv4Address("100.64.0.7")


def _daemon(tmp_path: Path, *, joined: bool = True) -> tuple[Daemon, FakeDht]:
    bundle = make_bundle(
        "lab-net",
        "alice",
        subnet=SUBNET,
        bootstrap=(Endpoint("203.0.113.10", 5800),),
        now=time.time(),
    )
    d = Daemon(bundle, DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path))
    dht = FakeDht(bundle.node_id)
    ready = asyncio.Event()
    if joined:
        ready.set()

    async def ping(peer: NodeId, *, timeout_s: float) -> Any:
        if peer != BOB:
            raise TimeoutError
        return SimpleNamespace(rtt_s=0.0125, hops=0)

    d.node = SimpleNamespace(  # type: ignore[assignment]
        node_id=bundle.node_id,
        dht=dht,
        dht_ready=ready,
        ping=ping,
        core=SimpleNamespace(link=SimpleNamespace(peers=lambda: []), learned=[]),
    )
    # What the daemon hands the core from the records it looks up (NodeCore.learn_certificate).
    d.node.core.learn_certificate = lambda node, der, now: d.node.core.learned.append((node, der))
    return d, dht


def test_user_keys_live_in_their_own_namespace(tmp_path: Path) -> None:
    d, dht = _daemon(tmp_path)
    ctl = DaemonControl(d)

    async def body() -> None:
        assert await ctl.dht_put("k", "v", 60)
        assert await ctl.dht_get("k") == "v"
        assert await ctl.dht_get("other") is None

    asyncio.run(body())
    assert list(dht.records) == [user_key(d.namespace, "k")]


def test_a_user_key_cannot_reach_an_address_record(tmp_path: Path) -> None:
    d, dht = _daemon(tmp_path)
    key = ip_key(d.namespace, BOB_VIP)
    dht.hold(key, BOB, b"bob")
    assert asyncio.run(DaemonControl(d).dht_get(key)) is None  # <ns>:user:<ns>:ip:...


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("k", "x" * (MAX_VALUE_BYTES + 1), "bytes"),
        ("", "v", "printable ASCII"),
        ("k" * (MAX_USER_KEY + 1), "v", "printable ASCII"),
        ("k\n", "v", "printable ASCII"),
        ("~k", "v", "sealed records"),
    ],
)
def test_a_bad_put_is_refused_with_its_reason(
    tmp_path: Path, key: str, value: str, why: str
) -> None:
    d, dht = _daemon(tmp_path)
    with pytest.raises(CommandFailed, match=why):
        asyncio.run(DaemonControl(d).dht_put(key, value, 60))
    assert dht.calls["create"] == 0


def test_dht_commands_wait_for_the_join(tmp_path: Path) -> None:
    d, _ = _daemon(tmp_path, joined=False)
    with pytest.raises(CommandFailed, match="not joined"):
        asyncio.run(DaemonControl(d).dht_get("k"))
    with pytest.raises(CommandFailed, match="not joined"):
        asyncio.run(DaemonControl(d).dht_put("k", "v", 60))


def test_ping_resolves_looks_up_the_owner_and_remembers_the_round_trip(tmp_path: Path) -> None:
    d, dht = _daemon(tmp_path)
    dht.hold(ip_key(d.namespace, BOB_VIP), BOB)
    reply = asyncio.run(DaemonControl(d).ping(str(BOB_VIP), 3, 1.0))
    assert (reply.seq, reply.ok, reply.rtt_ms, reply.hops, reply.path) == (
        3,
        True,
        12.5,
        1,
        "overlay",
    )
    assert d.rtts[BOB][0] == 0.0125
    # The owner's certificate went with the answer: our routed messages to it are sealed.
    assert d.node.core.learned == [(BOB, b"")]  # (the fake DHT's records carry none)


def test_ping_of_ourselves_is_zero_hops_and_of_nobody_a_refusal(tmp_path: Path) -> None:
    d, dht = _daemon(tmp_path)
    me = IPv4Address("100.64.0.1")
    dht.hold(ip_key(d.namespace, me), d.bundle.node_id)
    ctl = DaemonControl(d)
    reply = asyncio.run(ctl.ping(str(me), 1, 1.0))
    assert (reply.ok, reply.rtt_ms, reply.hops, reply.path) == (True, 0.0, 0, "direct")
    with pytest.raises(CommandFailed, match="no node holds"):
        asyncio.run(ctl.ping("100.64.0.99", 1, 1.0))
    with pytest.raises(CommandFailed, match="cannot resolve"):
        asyncio.run(ctl.ping("198.51.100.1", 1, 1.0))  # outside the subnet: never resolved


def test_a_ping_without_an_answer_is_not_ok(tmp_path: Path) -> None:
    d, dht = _daemon(tmp_path)
    other = NodeId(0xCA201)
    dht.hold(ip_key(d.namespace, BOB_VIP), other)
    reply = asyncio.run(DaemonControl(d).ping(str(BOB_VIP), 2, 0.1))
    assert (reply.seq, reply.ok) == (2, False) and other not in d.rtts


def test_services_publish_list_withdraw(tmp_path: Path) -> None:
    d, dht = _daemon(tmp_path)
    ctl = DaemonControl(d)

    async def body() -> None:
        with pytest.raises(CommandFailed, match="no address yet"):
            await ctl.service_publish("http", 80, "tcp", [])
        d.vip = IPv4Address("100.64.0.9")
        dht.hold(ip_key(d.namespace, d.vip), dht.node_id)
        d.publisher = ServicePublisher(dht, d.namespace, ttl=60)
        got = await ctl.service_publish("http", 8000, "tcp", ["path=/"])
        assert got["addr"] == "100.64.0.9" and got["port"] == 8000 and 0 <= got["slot"] < 16
        with pytest.raises(CommandFailed, match="not a service name"):
            await ctl.service_publish("Not_A_Name", 1, "tcp", [])
        with pytest.raises(CommandFailed, match="TXT"):
            await ctl.service_publish("web", 1, "tcp", ["no-equals-sign"])
        [ours] = await ctl.service_list("", "")
        assert ours == {
            "name": "http",
            "proto": "tcp",
            "addr": "100.64.0.9",
            "port": 8000,
            "txt": ["path=/"],
        }
        [found] = await ctl.service_list("http", "")
        assert found["owner"] == dht.node_id.to_bytes().hex() and found["port"] == 8000
        assert await ctl.service_list("http", "udp") == []
        assert await ctl.service_withdraw("http", "tcp")
        assert await ctl.service_list("http", "") == []
        assert not await ctl.service_withdraw("http", "tcp")

    asyncio.run(body())
