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
``txt`` (a list of ``KEY=VALUE`` strings, default none). One (name, proto) per router. They
are checked by :func:`ipop.config.parse_services`, like a node's own ``[[service]]`` tables.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ipop.config import MAX_SERVICES, NodeConfig, ServiceConfig, parse_config, read_config_table
from ipop.config import parse_services as parse_node_services
from ipop.errors import ConfigError
from ipop.identity import NodeCertificate

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
MAX_LAN_SERVICES = MAX_SERVICES


# A router's [[service]] table: a node's, with ``host`` (the LAN host it publishes for) set.
LanService = ServiceConfig


@dataclass(frozen=True, slots=True)
class RouterSection:
    """The ``[router]`` section: the LAN interface, DHCP leases, hosts and services."""

    interface: str
    dhcp_lease_s: int = 600
    static_hosts: bool = True
    max_hosts: int = 1024
    services: tuple[LanService, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """A router's config: the node's own and its ``[router]`` section."""

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
    return parse_node_services(value, lan_hosts=True, example="router.example.toml")


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
