"""The daemon's own settings: ``ipopd --config node.toml`` (DESIGN.md §10).

This file says how *this machine* runs its node; what makes it a member of a network (CA,
certificate, key, bootstrap list) is the bundle, read separately by
:func:`ipop.bundle.load_bundle` from the path this file names. Every key, its default and its
meaning is documented in ``deploy/ipop.example.toml``::

    bundle = "node.bundle.toml"        # required; relative to this file
    state_dir = "/var/lib/ipop"        # relative paths: relative to this file
    listen = "0.0.0.0:5800"
    hostname = "alice-laptop"          # optional; must equal the certificate's hostname
    log_level = "warning"              # error | warning | info | debug
    [tap]
    name = "ipop0"                     # at most 15 characters (Linux IFNAMSIZ - 1)
    addressing = "static"              # static | dhcp
    mtu = 0                            # 0 = 1400 (paths probed per peer), else 576..9000
    [control]
    socket = "/run/ipop/ipopd.sock"
    [dns]
    enabled = true
    upstream = []                      # ["IPv4:PORT", ...]
    system = "auto"                    # auto | resolved | off: split DNS with the host resolver
    [dht]
    lease_s = 3600                     # at least 60
    [stun]
    servers = []                       # ["IPv4:PORT", ...] for `ipop netcheck`
    serve = false                      # answer STUN (bootstrap / reference nodes only)
    alternate = "auto"                 # auto | off | IPv4: second address for CHANGE-REQUEST
    alt_port = 0                       # 0 = listen port + 1
    [identity]
    crl = "/etc/ipop/lab-net.crl.pem"   # optional: a newer revocation list than the bundle's
    [metrics]
    listen = "127.0.0.1:9580"          # optional: Prometheus text on GET /metrics; absent: off
    allow_remote = false               # true: listen may be a non-loopback address
    max_peers = 256                    # per-peer series at most (1..4096)
    [web]
    listen = "127.0.0.1:9581"          # optional: status page, map.svg, status.json; absent: off
    allow_remote = false               # true: listen may be a non-loopback address
    refresh_s = 5                      # the page reloads itself every N s (0: never; 0..3600)
    max_peers = 64                     # peers drawn on the map at most (1..1024)
    [[network]]                        # more networks on the bundle's overlay (issue 17)
    bundle = "other.bundle.toml"       # same overlay CA and node key as `bundle`
    tap = "ipop1"                      # this network's TAP: distinct from tap.name
    [[service]]                        # any number up to MAX_SERVICES: published at our vIP
    name = "http"                      # a service name (RFC 6335), answered as _http._tcp
    port = 8000                        # 1..65535
    proto = "tcp"                      # tcp | udp
    txt = ["path=/"]                   # KEY=VALUE strings, default none

``[[network]]`` tables make the node a member of more networks than the one ``bundle`` names
(one TAP each, one UDP socket and one overlay node for all): each names a bundle of a network
on the same overlay and that network's TAP; :func:`parse_networks` checks them, the daemon's
composition root checks that the bundles share the overlay and the key (it reads them).

``[[service]]`` tables are checked by :func:`parse_services`, which a router's config
(:mod:`ipop.router.config`) shares with one more key, ``host`` (the LAN host it publishes for).

Loading is separate from validation: :func:`read_config_table` does the I/O and the TOML
syntax, :func:`parse_config` checks a table and builds a :class:`NodeConfig` (no I/O, so tests
and tools can validate a table they built), :func:`load_config` does both. Unknown keys, wrong
types and out-of-range values raise :class:`ConfigError` naming the key (``tap.mtu``,
``dns.upstream[1]``), what is wrong, where, and how to fix it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

from ipop.dht.srv import PROTOS, ServiceValue, validate_service_name
from ipop.errors import ConfigError
from ipop.identity import validate_hostname
from ipop.types import Endpoint

__all__ = [
    "ADDRESSING_MODES",
    "DEFAULT_CONTROL_SOCKET",
    "DEFAULT_LISTEN",
    "DEFAULT_STATE_DIR",
    "DNS_SYSTEMS",
    "LOG_LEVELS",
    "MAX_CONFIG_BYTES",
    "MAX_SERVICES",
    "ControlConfig",
    "DhtConfig",
    "DnsConfig",
    "IdentityConfig",
    "MetricsConfig",
    "NetworkConfig",
    "NodeConfig",
    "ServiceConfig",
    "StunConfig",
    "TapConfig",
    "WebConfig",
    "load_config",
    "parse_config",
    "parse_networks",
    "parse_services",
    "read_config_table",
]

DEFAULT_STATE_DIR: Final = "/var/lib/ipop"
DEFAULT_LISTEN: Final = "0.0.0.0:5800"
DEFAULT_CONTROL_SOCKET: Final = "/run/ipop/ipopd.sock"
DEFAULT_TAP_NAME: Final = "ipop0"
DEFAULT_LEASE_S: Final = 3600
# A lease is renewed well before it runs out; under a minute the renewals alone would keep the
# DHT busy and a short network hiccup would cost the node its address.
MIN_LEASE_S: Final = 60
# Linux IFNAMSIZ is 16 including the terminating NUL.
MAX_IFNAME_LEN: Final = 15
# 576 is the IPv4 minimum datagram every host must accept (RFC 791); 9000 is a jumbo frame.
MIN_MTU: Final = 576
MAX_MTU: Final = 9000
# Per-peer metric series: each peer is a handful of series; past the cap they are counted only.
DEFAULT_METRICS_PEERS: Final = 256
MAX_METRICS_PEERS: Final = 4096
# Peers drawn on the web page's map: past a few dozen the ring's labels overlap.
DEFAULT_WEB_PEERS: Final = 64
MAX_WEB_PEERS: Final = 1024
DEFAULT_WEB_REFRESH_S: Final = 5
MAX_WEB_REFRESH_S: Final = 3600
# A node config is a few hundred bytes; anything this large is the wrong file.
MAX_CONFIG_BYTES: Final = 64_000

LogLevel = Literal["error", "warning", "info", "debug"]
LOG_LEVELS: Final[tuple[str, ...]] = ("error", "warning", "info", "debug")
Addressing = Literal["static", "dhcp"]
ADDRESSING_MODES: Final[tuple[str, ...]] = ("static", "dhcp")
DnsSystem = Literal["auto", "resolved", "off"]
DNS_SYSTEMS: Final[tuple[str, ...]] = ("auto", "resolved", "off")

# Interface names: no '/', ':', whitespace or leading '.', which the kernel or `ip` reject.
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

_TOP_KEYS = ("bundle", "state_dir", "listen", "hostname", "log_level")
_SECTIONS: Final[dict[str, tuple[str, ...]]] = {
    "tap": ("name", "addressing", "mtu"),
    "control": ("socket",),
    "dns": ("enabled", "upstream", "system"),
    "dht": ("lease_s",),
    "stun": ("servers", "serve", "alternate", "alt_port"),
    "identity": ("crl",),
    "metrics": ("listen", "allow_remote", "max_peers"),
    "web": ("listen", "allow_remote", "refresh_s", "max_peers"),
}
_NETWORK_KEYS = ("bundle", "tap")
# Every key a config may hold, dotted; the example file must document each (tested).
ALL_KEYS: Final[tuple[str, ...]] = (
    _TOP_KEYS
    + tuple(f"{section}.{key}" for section, keys in _SECTIONS.items() for key in keys)
    + tuple(f"network.{key}" for key in _NETWORK_KEYS)
)
# [[network]] tables at most: each is a TAP, an address and a DHT lease of its own.
MAX_NETWORKS: Final = 8

_FIX_SEE_EXAMPLE = "see deploy/ipop.example.toml"
# [[service]] tables at most: what one member's quota at the replicas could ever hold is far
# less for a node (ipop.dht.srv.SERVICE_QUOTA), more for a router (one per LAN host).
MAX_SERVICES: Final = 32
_SERVICE_KEYS = ("name", "port", "proto", "txt")


@dataclass(frozen=True, slots=True)
class TapConfig:
    """The virtual interface: its name, how it gets its address, its MTU (0: 1400)."""

    name: str = DEFAULT_TAP_NAME
    addressing: Addressing = "static"
    mtu: int = 0


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """Where the daemon listens for ``ipop`` CLI requests."""

    socket: Path = Path(DEFAULT_CONTROL_SOCKET)


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """The resolver on the tap: ``*.<suffix>`` answered locally, the rest sent upstream.

    ``system``: how the host's resolver learns of it (split DNS, :mod:`ipop.aio.sysdns`):
    "auto" registers the suffix with systemd-resolved where it runs, "resolved" insists on it,
    "off" leaves the host's DNS alone.
    """

    enabled: bool = True
    upstream: tuple[Endpoint, ...] = ()
    system: DnsSystem = "auto"


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """DHT records this node owns: its address lease and its names."""

    lease_s: int = DEFAULT_LEASE_S


@dataclass(frozen=True, slots=True)
class StunConfig:
    """NAT discovery (``ipop netcheck``): STUN servers to ask, and what this node serves.

    ``serve``: answer STUN Binding requests on the overlay port at all (rate-limited, never
    more bytes out than in; :mod:`ipop.nat.stun`). Off by default: an ordinary node has no reason
    to answer strangers; bootstrap nodes, which every netcheck asks, turn it on.
    ``alternate`` (only with ``serve``): "auto" serves CHANGE-REQUEST when the host has a
    second address (a public node with two addresses; the first two found are used), "off"
    never, or the second address itself. The alternate sockets listen on ``alt_port`` (0:
    the listen port + 1).
    """

    servers: tuple[Endpoint, ...] = ()
    serve: bool = False
    alternate: str = "auto"
    alt_port: int = 0


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """Membership beyond the bundle: a revocation list file read at start (None: none)."""

    crl: Path | None = None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus text exposition on ``listen`` (None: off, the default).

    Metrics name every peer, its path and its traffic: the overlay's shape. So ``listen``
    must be a loopback address unless ``allow_remote`` says otherwise.
    """

    listen: Endpoint | None = None
    allow_remote: bool = False
    max_peers: int = DEFAULT_METRICS_PEERS


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The status web page (``/``, ``/map.svg``, ``/status.json``, ``/metrics``) on ``listen``
    (None: off, the default); loopback only unless ``allow_remote``, as for metrics.

    A listener of its own rather than more paths on ``[metrics] listen``: metrics are for a
    scraper (often let through to a monitoring network), the page for a person at this
    machine, and turning one on must not turn on the other.
    """

    listen: Endpoint | None = None
    allow_remote: bool = False
    refresh_s: int = DEFAULT_WEB_REFRESH_S
    max_peers: int = DEFAULT_WEB_PEERS


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A ``[[service]]`` table: ``name``/``proto`` at ``port``, at our own vIP or (a router's)
    at the LAN host ``host``'s address."""

    name: str
    port: int
    proto: str = "tcp"
    txt: tuple[str, ...] = ()
    host: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """A ``[[network]]`` table: one more network of this node, its bundle and its TAP."""

    bundle: Path
    tap_name: str


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A validated node config; every path in it is absolute."""

    bundle: Path
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    listen: Endpoint = field(default_factory=lambda: Endpoint.parse(DEFAULT_LISTEN))
    hostname: str | None = None
    log_level: LogLevel = "warning"
    tap: TapConfig = field(default_factory=TapConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    dht: DhtConfig = field(default_factory=DhtConfig)
    stun: StunConfig = field(default_factory=StunConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    services: tuple[ServiceConfig, ...] = ()
    # More networks than the bundle's (one TAP each), on its overlay.
    networks: tuple[NetworkConfig, ...] = ()

    def effective_hostname(self, bundle_hostname: str | None) -> str | None:
        """The hostname to register: the certificate's (the bundle's), or none.

        A hostname is the certificate's (issue 13): replicas refuse a name record for any
        other, so a different one here could never be registered. It is an error, not a
        warning, so that a node never runs believing it answers to a name it cannot hold.
        """
        if self.hostname is not None and self.hostname != bundle_hostname:
            raise ConfigError(
                "hostname",
                f"{self.hostname!r} differs from the certificate's hostname {bundle_hostname!r}",
                "remove 'hostname' from the config, or get a bundle with it: "
                f"ipop-config node NETWORK NAME --hostname {self.hostname}",
            )
        return bundle_hostname


# --- value checks -----------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return type(value).__name__


def _str(value: object, key: str, fix: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {_type_name(value)}", fix)
    return value


def _int(value: object, key: str, fix: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, f"must be an integer, got {_type_name(value)}", fix)
    return value


def _bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            key, f"must be true or false, got {_type_name(value)}", "write true or false, unquoted"
        )
    return value


def _choice(value: object, key: str, choices: tuple[str, ...]) -> str:
    fix = "use one of " + ", ".join(repr(c) for c in choices)
    text = _str(value, key, fix)
    if text not in choices:
        raise ConfigError(key, f"{text!r} is not allowed", fix)
    return text


def _path(value: object, key: str, base_dir: Path, example: str) -> Path:
    fix = f"give a path, e.g. {example!r}; relative paths are relative to the config file"
    text = _str(value, key, fix)
    if not text or "\x00" in text:
        raise ConfigError(key, "is not a usable path", fix)
    path = Path(text)
    # Relative to the config file, not the cwd: systemd starts ipopd in '/'.
    return path if path.is_absolute() else base_dir / path


def _endpoint(value: object, key: str) -> Endpoint:
    text = _str(value, key, "write it as IPv4:PORT, e.g. '0.0.0.0:5800'")
    return Endpoint.parse(text, key=key)


def _listen(value: object) -> Endpoint:
    ep = _endpoint(value, "listen")
    if ipaddress.IPv4Address(ep.host).is_multicast:
        raise ConfigError(
            "listen", f"{ep.host} is a multicast address", "use 0.0.0.0 or a local IP"
        )
    return ep


def _tap_name(value: object, key: str = "tap.name") -> str:
    fix = f"use 1-{MAX_IFNAME_LEN} letters, digits, '_', '.' or '-', e.g. 'ipop0'"
    name = _str(value, key, fix)
    if not name or len(name) > MAX_IFNAME_LEN or not _IFNAME_RE.match(name):
        raise ConfigError(key, f"{name!r} is not a usable interface name", fix)
    return name


def _mtu(value: object) -> int:
    fix = f"use 0 for automatic or a value from {MIN_MTU} to {MAX_MTU}"
    mtu = _int(value, "tap.mtu", fix)
    if mtu != 0 and not MIN_MTU <= mtu <= MAX_MTU:
        raise ConfigError("tap.mtu", f"{mtu} is out of range", fix)
    return mtu


def _upstream(value: object) -> tuple[Endpoint, ...]:
    fix = "write a list like ['198.51.100.53:53'], or [] for none"
    if not isinstance(value, list):
        raise ConfigError("dns.upstream", f"must be a list, got {_type_name(value)}", fix)
    return tuple(_endpoint(item, f"dns.upstream[{i}]") for i, item in enumerate(value))


def _lease_s(value: object) -> int:
    fix = f"use a number of seconds of at least {MIN_LEASE_S}, e.g. {DEFAULT_LEASE_S}"
    lease = _int(value, "dht.lease_s", fix)
    if lease < MIN_LEASE_S:
        raise ConfigError("dht.lease_s", f"{lease} is too short", fix)
    return lease


def _stun(section: Mapping[str, object]) -> StunConfig:
    fix = "write a list like ['203.0.113.10:3478'], or [] for none"
    servers = section.get("servers", [])
    if not isinstance(servers, list):
        raise ConfigError("stun.servers", f"must be a list, got {_type_name(servers)}", fix)
    alt_fix = "use 'auto', 'off' or this host's second IPv4 address"
    alternate = _str(section.get("alternate", "auto"), "stun.alternate", alt_fix)
    if alternate not in ("auto", "off"):
        try:
            ipaddress.IPv4Address(alternate)
        except ValueError:
            raise ConfigError("stun.alternate", f"{alternate!r} is not allowed", alt_fix) from None
    port_fix = "use 0 (the listen port + 1) or a port from 1 to 65535"
    alt_port = _int(section.get("alt_port", 0), "stun.alt_port", port_fix)
    if not 0 <= alt_port < 65536:
        raise ConfigError("stun.alt_port", f"{alt_port} is out of range", port_fix)
    return StunConfig(
        servers=tuple(_endpoint(item, f"stun.servers[{i}]") for i, item in enumerate(servers)),
        serve=_bool(section.get("serve", False), "stun.serve"),
        alternate=alternate,
        alt_port=alt_port,
    )


def _metrics(section: Mapping[str, object]) -> MetricsConfig:
    allow_remote = _bool(section.get("allow_remote", False), "metrics.allow_remote")
    max_peers = _bounded(section, "metrics.max_peers", DEFAULT_METRICS_PEERS, 1, MAX_METRICS_PEERS)
    listen = _local_listen(section, "metrics", 9580, allow_remote, "metrics show")
    return MetricsConfig(listen=listen, allow_remote=allow_remote, max_peers=max_peers)


def _web(section: Mapping[str, object]) -> WebConfig:
    allow_remote = _bool(section.get("allow_remote", False), "web.allow_remote")
    refresh_s = _bounded(section, "web.refresh_s", DEFAULT_WEB_REFRESH_S, 0, MAX_WEB_REFRESH_S)
    max_peers = _bounded(section, "web.max_peers", DEFAULT_WEB_PEERS, 1, MAX_WEB_PEERS)
    listen = _local_listen(section, "web", 9581, allow_remote, "the page shows")
    return WebConfig(
        listen=listen, allow_remote=allow_remote, refresh_s=refresh_s, max_peers=max_peers
    )


def _bounded(section: Mapping[str, object], key: str, default: int, low: int, high: int) -> int:
    """``section``'s integer at ``key`` (dotted), ``default`` when absent, within [low, high]."""
    fix = f"use a number from {low} to {high}, e.g. {default}"
    value = _int(section.get(key.split(".", 1)[1], default), key, fix)
    if not low <= value <= high:
        raise ConfigError(key, f"{value} is out of range", fix)
    return value


def _local_listen(
    section: Mapping[str, object], name: str, port: int, allow_remote: bool, what: str
) -> Endpoint | None:
    """``[name] listen``: None when absent; a loopback address unless ``allow_remote``."""
    raw = section.get("listen")
    if raw is None:
        return None
    key = f"{name}.listen"
    text = _str(raw, key, f"write it as IPv4:PORT, e.g. '127.0.0.1:{port}'")
    listen = Endpoint.parse(text, key=key)
    if not allow_remote and not ipaddress.IPv4Address(listen.host).is_loopback:
        raise ConfigError(
            key,
            f"{listen.host} is not a loopback address, and {what} every peer, its path "
            "and its traffic",
            f"use '127.0.0.1:{listen.port}', or add allow_remote = true to [{name}] to "
            "serve them on this address",
        )
    return listen


def _section(table: Mapping[str, object], name: str) -> Mapping[str, object]:
    value = table.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(
            name, f"must be a table, got {_type_name(value)}", f"write it as a [{name}] section"
        )
    section = cast(Mapping[str, object], value)
    unknown = sorted(set(section) - set(_SECTIONS[name]))
    if unknown:
        raise ConfigError(
            f"{name}.{unknown[0]}",
            "is not a config key",
            f"remove it or fix its spelling ({_FIX_SEE_EXAMPLE})",
        )
    return section


# --- validation and loading -------------------------------------------------------------------


def parse_config(table: Mapping[str, object], *, base_dir: Path, source: str) -> NodeConfig:
    """Check a parsed TOML table and build a :class:`NodeConfig`; no I/O.

    ``base_dir`` (absolute) is what relative paths are relative to; ``source`` names the file
    in error messages.
    """
    try:
        return _parse(table, base_dir=base_dir)
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.problem} in {source}", exc.fix) from None


def _tables(
    value: object, what: str, limit: int, keys: Collection[str], fix: str
) -> list[tuple[str, dict[str, Any]]]:
    """A config's ``[[what]]`` tables, each with where it is (``what[i]``, for errors);
    ConfigError unless a list of at most ``limit`` tables, each holding only ``keys``."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit:
        raise ConfigError(what, f"must be at most {limit} [[{what}]] tables", fix)
    out: list[tuple[str, dict[str, Any]]] = []
    for i, t in enumerate(value):
        where = f"{what}[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(where, "is not a table", fix)
        unknown = sorted(set(t) - set(keys))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", f"is not a {what} key", fix)
        out.append((where, t))
    return out


def parse_networks(value: object, *, base_dir: Path, tap: str) -> tuple[NetworkConfig, ...]:
    """The ``[[network]]`` tables; ConfigError naming the table, key and fix. ``tap``: the
    first network's TAP name, which no other may take."""
    fix = '[[network]] bundle = "other.bundle.toml", tap = "ipop1" (see ipop.example.toml)'
    out: list[NetworkConfig] = []
    taps = {tap}
    for where, t in _tables(value, "network", MAX_NETWORKS, _NETWORK_KEYS, fix):
        for key in _NETWORK_KEYS:
            if key not in t:
                raise ConfigError(f"{where}.{key}", "is missing", fix)
        name = _tap_name(t["tap"], f"{where}.tap")
        if name in taps:
            raise ConfigError(
                f"{where}.tap",
                f"{name!r} is another network's TAP",
                "give each network a TAP of its own (tap.name is the first network's)",
            )
        taps.add(name)
        out.append(NetworkConfig(_path(t["bundle"], f"{where}.bundle", base_dir, "b.toml"), name))
    return tuple(out)


def parse_services(
    value: object, *, lan_hosts: bool = False, example: str = "ipop.example.toml"
) -> tuple[ServiceConfig, ...]:
    """The ``[[service]]`` tables; ConfigError naming the table, key and fix.

    ``lan_hosts`` (a router's): each table also needs ``host``, a LAN host's DHCP hostname.
    One (name, proto) per config: a member holds one instance of each.
    """
    host_eg = ', host = "printer"' if lan_hosts else ""
    fix = f'[[service]] name = "http", port = 80{host_eg} (see {example})'
    keys = (*_SERVICE_KEYS, "host") if lan_hosts else _SERVICE_KEYS
    out: list[ServiceConfig] = []
    for where, t in _tables(value, "service", MAX_SERVICES, keys, fix):
        name = t.get("name")
        why = validate_service_name(name) if isinstance(name, str) else "missing or not a string"
        if why is not None or not isinstance(name, str):
            raise ConfigError(f"{where}.name", str(why), fix)
        proto = t.get("proto", "tcp")
        if proto not in PROTOS:
            raise ConfigError(f"{where}.proto", f"must be one of {', '.join(PROTOS)}", fix)
        host = t.get("host")
        if lan_hosts:
            try:
                validate_hostname(host if isinstance(host, str) else "")
            except ConfigError:
                raise ConfigError(
                    f"{where}.host", f"must be a LAN host's DHCP hostname, got {host!r}", fix
                ) from None
        port = t.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
            raise ConfigError(f"{where}.port", f"must be an integer 1..65535, got {port!r}", fix)
        txt = t.get("txt", [])
        if not isinstance(txt, list) or not all(isinstance(x, str) for x in txt):
            raise ConfigError(f"{where}.txt", "must be a list of KEY=VALUE strings", fix)
        try:
            ServiceValue(ipaddress.IPv4Address(0), port, tuple(txt)).encode()
        except ValueError as exc:
            raise ConfigError(f"{where}.txt", str(exc), fix) from None
        svc = ServiceConfig(name, port, str(proto), tuple(txt), str(host) if lan_hosts else None)
        if any((s.name, s.proto) == (svc.name, svc.proto) for s in out):
            raise ConfigError(f"{where}.name", f"{name}/{proto} is listed twice", fix)
        out.append(svc)
    return tuple(out)


def _parse(table: Mapping[str, object], *, base_dir: Path) -> NodeConfig:
    unknown = sorted(set(table) - set(_TOP_KEYS) - set(_SECTIONS) - {"service", "network"})
    if unknown:
        raise ConfigError(
            unknown[0],
            "is not a config key",
            f"remove it or fix its spelling ({_FIX_SEE_EXAMPLE})",
        )
    if "bundle" not in table:
        raise ConfigError(
            "bundle",
            "is missing",
            "add bundle = \"node.bundle.toml\" naming the file 'ipop-config node' wrote",
        )
    hostname_raw = table.get("hostname")
    hostname = None
    if hostname_raw is not None:
        hostname = validate_hostname(
            _str(hostname_raw, "hostname", "e.g. 'alice-laptop'"), key="hostname"
        )
    tap = _section(table, "tap")
    control = _section(table, "control")
    dns = _section(table, "dns")
    dht = _section(table, "dht")
    stun = _section(table, "stun")
    ident = _section(table, "identity")
    metrics = _section(table, "metrics")
    web = _section(table, "web")
    crl_raw = ident.get("crl")
    tap_name = _tap_name(tap.get("name", DEFAULT_TAP_NAME))
    return NodeConfig(
        bundle=_path(table["bundle"], "bundle", base_dir, "node.bundle.toml"),
        state_dir=_path(
            table.get("state_dir", DEFAULT_STATE_DIR), "state_dir", base_dir, DEFAULT_STATE_DIR
        ),
        listen=_listen(table.get("listen", DEFAULT_LISTEN)),
        hostname=hostname,
        log_level=cast(
            LogLevel, _choice(table.get("log_level", "warning"), "log_level", LOG_LEVELS)
        ),
        tap=TapConfig(
            name=tap_name,
            addressing=cast(
                Addressing,
                _choice(tap.get("addressing", "static"), "tap.addressing", ADDRESSING_MODES),
            ),
            mtu=_mtu(tap.get("mtu", 0)),
        ),
        control=ControlConfig(
            socket=_path(
                control.get("socket", DEFAULT_CONTROL_SOCKET),
                "control.socket",
                base_dir,
                DEFAULT_CONTROL_SOCKET,
            ),
        ),
        dns=DnsConfig(
            enabled=_bool(dns.get("enabled", True), "dns.enabled"),
            upstream=_upstream(dns.get("upstream", [])),
            system=cast(DnsSystem, _choice(dns.get("system", "auto"), "dns.system", DNS_SYSTEMS)),
        ),
        dht=DhtConfig(lease_s=_lease_s(dht.get("lease_s", DEFAULT_LEASE_S))),
        stun=_stun(stun),
        identity=IdentityConfig(
            crl=None
            if crl_raw is None
            else _path(crl_raw, "identity.crl", base_dir, "/etc/ipop/lab-net.crl.pem")
        ),
        metrics=_metrics(metrics),
        web=_web(web),
        services=parse_services(table.get("service")),
        networks=parse_networks(table.get("network"), base_dir=base_dir, tap=tap_name),
    )


def read_config_table(path: str | Path) -> dict[str, object]:
    """Read a config file and parse its TOML syntax; no checks of the keys."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            source,
            f"cannot be read ({exc.strerror or exc})",
            "check the path given to --config and that you may read it",
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            source, f"is larger than {MAX_CONFIG_BYTES} bytes", "check that this is a node config"
        )
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(source, "is not UTF-8 text", "check that this is a node config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"is not valid TOML ({exc})", "fix the syntax") from None


def load_config(path: str | Path) -> NodeConfig:
    """Read, parse and check ``path``; relative paths inside resolve against its directory."""
    table = read_config_table(path)
    # abspath, not resolve(): paths are relative to where the operator sees the file, even when
    # /etc/ipop/node.toml is a symlink into a config-management checkout.
    base_dir = Path(os.path.abspath(path)).parent
    return parse_config(table, base_dir=base_dir, source=str(path))
