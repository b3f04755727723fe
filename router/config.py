"""The router's configuration: a node config (``ipop.config``) plus a ``[router]`` section.

Every key of ``deploy/ipop.example.toml`` means the same here (``[tap]`` is ignored: a router
has no TAP); ``deploy/router.example.toml`` documents the ``[router]`` keys:

* ``interface`` (required): the LAN interface (a Linux bridge or a NIC) the plain hosts are on;
* ``dhcp_lease_s`` (default 600, 60..86400): the DHCP lease handed to hosts; a host's DHT
  record is renewed while its DHCP lease is live and released after it lapses;
* ``static_hosts`` (default true): register hosts that configured a free virtual IP
  themselves (seen in their ARP or IP traffic);
* ``max_hosts`` (default 1024, 1..65536): hosts served at once; more are dropped and counted.
  It may not exceed what the router's certificate grants (``ipop-config node --router
  --max-hosts N``): replicas hold that many LAN hosts' records for this router, no more.

``[[service]]`` tables (top level, any number up to :data:`MAX_LAN_SERVICES`): services the
router publishes for its LAN hosts (``ipop.dht.publish``), each ``name`` (a service name,
``http``), ``port`` (1..65535), ``proto`` (``tcp``, default, or ``udp``), ``host`` (the LAN
host's DHCP hostname, ``printer``: published while a host of that name holds an address) and
``txt`` (a list of ``KEY=VALUE`` strings, default none). One (name, proto) per router.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from ipop.config import NodeConfig, parse_config, read_config_table
from ipop.dht.srv import PROTOS, ServiceValue, validate_service_name
from ipop.errors import ConfigError
from ipop.identity import NodeCertificate, validate_hostname

__all__ = [
    "MAX_LAN_SERVICES",
    "LanService",
    "RouterConfig",
    "RouterSection",
    "check_authority",
    "load_router_config",
    "parse_services",
]

_FIX = "see deploy/router.example.toml"
_KEYS = ("interface", "dhcp_lease_s", "static_hosts", "max_hosts")
_SERVICE_KEYS = ("name", "port", "proto", "host", "txt")
# Services one router publishes for its hosts: a few per LAN, well within its DHT quota.
MAX_LAN_SERVICES = 32


@dataclass(frozen=True, slots=True)
class LanService:
    """A ``[[service]]`` table: ``name``/``proto`` at ``port`` of the LAN host ``host``."""

    name: str
    port: int
    host: str
    proto: str = "tcp"
    txt: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterSection:
    interface: str
    dhcp_lease_s: int = 600
    static_hosts: bool = True
    max_hosts: int = 1024
    services: tuple[LanService, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterConfig:
    node: NodeConfig
    router: RouterSection


def _int(value: object, key: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"router.{key}", f"must be an integer {lo}..{hi}, got {value!r}", _FIX)
    return value


def parse_router_section(value: object) -> RouterSection:
    if not isinstance(value, dict):
        raise ConfigError("router", "is missing or not a table", 'add [router] interface = "br0"')
    unknown = sorted(set(value) - set(_KEYS))
    if unknown:
        raise ConfigError(f"router.{unknown[0]}", "is not a router key", _FIX)
    iface = value.get("interface")
    if not isinstance(iface, str) or not 0 < len(iface) <= 15 or "/" in iface:
        raise ConfigError("router.interface", f"must be an interface name, got {iface!r}", _FIX)
    static = value.get("static_hosts", True)
    if not isinstance(static, bool):
        raise ConfigError("router.static_hosts", "must be true or false", _FIX)
    return RouterSection(
        interface=iface,
        dhcp_lease_s=_int(value.get("dhcp_lease_s", 600), "dhcp_lease_s", 60, 86400),
        static_hosts=static,
        max_hosts=_int(value.get("max_hosts", 1024), "max_hosts", 1, 65536),
    )


def parse_services(value: object) -> tuple[LanService, ...]:
    """The ``[[service]]`` tables (module docstring); ConfigError naming the bad one."""
    fix = '[[service]] name = "http", port = 80, host = "printer" (see router.example.toml)'
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_LAN_SERVICES:
        raise ConfigError("service", f"must be at most {MAX_LAN_SERVICES} [[service]] tables", fix)
    out: list[LanService] = []
    for i, t in enumerate(value):
        where = f"service[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(where, "is not a table", fix)
        unknown = sorted(set(t) - set(_SERVICE_KEYS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "is not a service key", fix)
        name = t.get("name")
        why = validate_service_name(name) if isinstance(name, str) else "missing or not a string"
        if why is not None or not isinstance(name, str):
            raise ConfigError(f"{where}.name", str(why), fix)
        proto = t.get("proto", "tcp")
        if proto not in PROTOS:
            raise ConfigError(f"{where}.proto", f"must be one of {', '.join(PROTOS)}", fix)
        host = t.get("host")
        try:
            validate_hostname(host if isinstance(host, str) else "")
        except ConfigError:
            raise ConfigError(
                f"{where}.host", f"must be a LAN host's DHCP hostname, got {host!r}", fix
            ) from None
        port = t.get("port")
        txt = t.get("txt", [])
        if not isinstance(txt, list) or not all(isinstance(x, str) for x in txt):
            raise ConfigError(f"{where}.txt", "must be a list of KEY=VALUE strings", fix)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
            raise ConfigError(f"{where}.port", f"must be an integer 1..65535, got {port!r}", fix)
        try:
            ServiceValue(IPv4Address(0), port, tuple(txt)).encode()
        except ValueError as exc:
            raise ConfigError(f"{where}.txt", str(exc), fix) from None
        svc = LanService(name, port, str(host), str(proto), tuple(txt))
        if any((s.name, s.proto) == (svc.name, svc.proto) for s in out):
            raise ConfigError(f"{where}.name", f"{name}/{proto} is listed twice", fix)
        out.append(svc)
    return tuple(out)


def load_router_config(path: str | Path) -> RouterConfig:
    """Read ``path``: ``[router]`` and ``[[service]]`` here, the rest by
    :func:`ipop.config.parse_config`."""
    table = read_config_table(path)
    section = table.pop("router", None)
    services = table.pop("service", None)
    base_dir = Path(os.path.abspath(path)).parent
    node = parse_config(table, base_dir=base_dir, source=str(path))
    try:
        router = parse_router_section(section)
        router = dataclasses.replace(router, services=parse_services(services))
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.problem} in {path}", exc.fix) from None
    return RouterConfig(node=node, router=router)


def check_authority(router: RouterSection, cert: NodeCertificate) -> None:
    """ConfigError unless ``cert`` is a router certificate for at least ``max_hosts`` hosts.

    Why at start: replicas count a router's records against its certificate's quota, so a
    plain certificate would see each LAN host's address displace the router's own, and a
    larger ``max_hosts`` than granted would lose the oldest hosts' addresses the same way.
    """
    remake = "ipop-config node NETWORK NAME --router --max-hosts N --hostname H --force"
    if not cert.is_router:
        raise ConfigError("node_cert", "the bundle's certificate is not a router's", remake)
    if cert.hostname is None:
        raise ConfigError("node_cert", "a router certificate needs a hostname", remake)
    if router.max_hosts > cert.router_hosts:
        raise ConfigError(
            "router.max_hosts",
            f"{router.max_hosts} exceeds the {cert.router_hosts} the certificate grants",
            f"use max_hosts = {cert.router_hosts}, or a bundle with a larger --max-hosts",
        )
