"""ipopd's own ``[[service]]`` tables: parsing (errors name the table, key and fix), and the
daemon publishing them at its vIP once it holds one, at every start, withdrawn on stop."""

from __future__ import annotations

import asyncio
import time
import tomllib
from ipaddress import IPv4Network
from pathlib import Path
from types import SimpleNamespace

import pytest

from ipop.aio.commands import DaemonControl
from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.config import ServiceConfig, load_config, parse_config
from ipop.errors import ConfigError
from ipop.testing.fake_dht import FakeDht
from ipop.testing.identities import make_bundle
from ipop.types import Endpoint

SUBNET = IPv4Network("100.64.0.0/10")
BOOT = (Endpoint("203.0.113.10", 5800),)
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "ipop.example.toml"


def _parse(text: str) -> tuple[ServiceConfig, ...]:
    table = tomllib.loads('bundle = "b.toml"\n' + text)
    return parse_config(table, base_dir=Path("/etc/ipop"), source="node.toml").services


def test_service_tables_parse() -> None:
    assert _parse("") == ()
    got = _parse(
        '[[service]]\nname = "http"\nport = 8000\ntxt = ["path=/"]\n'
        '[[service]]\nname = "condor"\nport = 9618\nproto = "udp"\n'
    )
    assert got == (
        ServiceConfig("http", 8000, "tcp", ("path=/",)),
        ServiceConfig("condor", 9618, "udp"),
    )


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ('name = "HTTP"\nport = 80\n', "service[1].name", "not a service name"),
        ("port = 80\n", "service[1].name", "missing"),
        ('name = "http"\nport = 0\n', "service[1].port", "1..65535"),
        ('name = "http"\nport = true\n', "service[1].port", "1..65535"),
        ('name = "http"\nport = 80\nproto = "sctp"\n', "service[1].proto", "tcp, udp"),
        ('name = "http"\nport = 80\ntxt = ["x"]\n', "service[1].txt", "TXT"),
        ('name = "http"\nport = 80\ntxt = "a=b"\n', "service[1].txt", "KEY=VALUE"),
        # host is a router's key: a node publishes its own vIP only.
        ('name = "http"\nport = 80\nhost = "p"\n', "service[1].host", "not a service key"),
        ('name = "ssh"\nport = 22\n', "service[1].name", "listed twice"),
    ],
)
def test_bad_service_tables_name_the_table_key_and_fix(table: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        _parse('[[service]]\nname = "ssh"\nport = 22\n[[service]]\n' + table)
    assert err.value.key == key
    assert problem in err.value.problem and "node.toml" in err.value.problem
    assert "[[service]]" in err.value.fix and "ipop.example.toml" in err.value.fix


def test_service_must_be_tables() -> None:
    with pytest.raises(ConfigError) as err:
        _parse('service = "http"\n')
    assert err.value.key == "service"


def test_the_example_documents_a_service_table() -> None:
    text = EXAMPLE.read_text()
    assert load_config(EXAMPLE).services == ()  # commented out: none by default
    block = text[text.index("# [[service]]") :].split("\n\n")[0]
    example = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    assert _parse(example) == (ServiceConfig("http", 8000, "tcp", ("path=/",)),), example


def _daemon(tmp_path: Path, dht: FakeDht | None, services: tuple[ServiceConfig, ...]) -> Daemon:
    bundle = make_bundle("lab-net", "alice", subnet=SUBNET, bootstrap=BOOT, now=time.time())
    settings = DaemonSettings(
        listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path, lease_s=60.0, services=services
    )
    d = Daemon(bundle, settings)
    ready = asyncio.Event()
    ready.set()
    d.node = SimpleNamespace(  # type: ignore[assignment]
        node_id=bundle.node_id,
        dht=dht or FakeDht(bundle.node_id),
        dht_ready=ready,
        core=SimpleNamespace(link=SimpleNamespace(peers=lambda: [])),
        close=_nothing,
    )
    d.dataplane = SimpleNamespace(  # type: ignore[assignment]
        set_own_ip=lambda vip: None, known_owners=dict, close=lambda: None
    )
    return d


async def _nothing() -> None:
    return None


async def _until(cond: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def test_configured_services_are_published_at_start_listed_and_withdrawn_on_stop(
    tmp_path: Path,
) -> None:
    web = ServiceConfig("web", 8000, txt=("path=/",))

    async def body() -> None:
        d = _daemon(tmp_path, None, (web,))
        ctl = DaemonControl(d)
        dht = d.node.dht  # type: ignore[union-attr]
        await d._claim(None)
        assert d.vip is not None
        await _until(lambda: d.configured.published)
        [found] = await ctl.service_list("web", "tcp")
        assert (found["addr"], found["port"], found["txt"]) == (str(d.vip), 8000, ["path=/"])
        assert found["owner"] == d.bundle.node_id.to_bytes().hex()
        # Stopping withdraws it: no live instance is left for readers.
        await d._shutdown()
        assert await ctl.service_list("web", "tcp") == []
        # A restart (same state, same DHT) publishes it again: config, not state.
        d2 = _daemon(tmp_path, dht, (web,))
        await d2._claim(None)
        await _until(lambda: d2.configured.published)
        [again] = await DaemonControl(d2).service_list("web", "tcp")
        assert again["addr"] == str(d2.vip) and again["port"] == 8000
        await d2._shutdown()

    asyncio.run(body())
