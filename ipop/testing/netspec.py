"""A simulated network's topology given as data: the TOML/dict schema and its checks.

This module owns turning ``{"segments": ..., "nats": ..., "hosts": ...}`` (as parsed from a
TOML file, ``ipop-sim --topology``) into calls on a :class:`~ipop.testing.netsim.Network`, and
every :class:`~ipop.errors.ConfigError` that names the bad key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ipop.errors import ConfigError, LocalProtocolError
from ipop.testing.nat import (
    KIND_NONE,
    NAT_KIND_NAMES,
    NatBehaviour,
    behaviour_from_data,
    nat_kind,
)
from ipop.testing.simhosts import UDP_IP_OVERHEAD, Host

if TYPE_CHECKING:
    from ipop.testing.netsim import Network

__all__ = ["add_topology"]


def add_topology(network: Network, topology: Mapping[str, Any]) -> dict[str, Host]:
    """Add a topology given as data (a dict as parsed from TOML); return its hosts by name.

    ::

        [segments.internet]          # optional: the internet's link parameters
        latency_s = 0.03             # also jitter_s, loss, mtu
        [segments.office]            # a LAN (optional; a NAT's LAN is made if not named)
        latency_s = 0.001            # also subnet = "198.18.7.0/24", jitter_s, loss, mtu

        [nats.office-nat]
        kind = "port-restricted-cone"   # or a table: { base = "symmetric", hairpinning = true }
        lan = "office"                  # optional; public_ip = "..." optional

        [hosts.alice]
        nat = "office-nat"           # behind that NAT ...
        [hosts.bob]
        kind = "symmetric"           # ... or alone behind a NAT of its own ("none": public)
        [hosts.carol]                # neither: on the internet; address = "..." optional

    Problems raise :class:`ConfigError` naming the key.
    """
    _only(topology, ("segments", "nats", "hosts"), "topology")
    segments = _table(topology, "segments", "topology")
    nats = _table(topology, "nats", "topology")
    hosts = _table(topology, "hosts", "topology")
    seg_keys = ("latency_s", "jitter_s", "loss", "mtu")
    for seg_name, raw in segments.items():
        key = f"segments.{seg_name}"
        spec = _table({seg_name: raw}, seg_name, "segments")
        if seg_name == "internet":
            _only(spec, seg_keys, key)
            for k in seg_keys:
                if k in spec:
                    setattr(network.internet, k, _number(spec, k, key))
            continue
        _only(spec, (*seg_keys, "subnet"), key)
        kwargs: dict[str, Any] = {k: _number(spec, k, key) for k in seg_keys if k in spec}
        if "subnet" in spec:
            kwargs["subnet"] = spec["subnet"]
        with _as_config_error(key):
            network.add_lan(seg_name, **kwargs)
    for nat_name, raw in nats.items():
        key = f"nats.{nat_name}"
        spec = _table({nat_name: raw}, nat_name, "nats")
        _only(spec, ("kind", "lan", "public_ip"), key)
        behaviour = _behaviour(spec.get("kind"), f"{key}.kind")
        if behaviour is None:
            raise ConfigError(
                f"{key}.kind", "'none' is not a NAT", "put such hosts under [hosts] alone"
            )
        with _as_config_error(key):
            network.add_nat(
                nat_name, behaviour, public_ip=spec.get("public_ip"), lan=spec.get("lan")
            )
    made: dict[str, Host] = {}
    for host_name, raw in hosts.items():
        key = f"hosts.{host_name}"
        spec = _table({host_name: raw}, host_name, "hosts")
        _only(spec, ("nat", "kind", "address"), key)
        if "nat" in spec and "kind" in spec:
            raise ConfigError(key, "has both nat and kind", "give one of them")
        address = spec.get("address")
        with _as_config_error(key):
            if "nat" in spec:
                box = network.nats.get(spec["nat"])
                if box is None:
                    raise ConfigError(
                        f"{key}.nat",
                        f"no NAT {spec['nat']!r}",
                        f"define [nats.{spec['nat']}] or use one of: "
                        f"{', '.join(network.nats) or '(none defined)'}",
                    )
                made[host_name] = box.add_host(host_name, address=address)
                continue
            behaviour = _behaviour(spec.get("kind", KIND_NONE), f"{key}.kind")
            if behaviour is None:
                made[host_name] = network.add_public_host(host_name, address=address)
            else:
                network.check_name(host_name)
                box = network.add_nat(f"{host_name}-nat", behaviour)
                made[host_name] = box.add_host(host_name, address=address)
    return made


# --- helpers ----------------------------------------------------------------------------------


class _as_config_error:
    """Turn API misuse found while building from data into a ConfigError naming the key."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, LocalProtocolError):
            raise ConfigError(self.key, str(exc), "fix the topology data") from exc


def _only(spec: Mapping[str, Any], allowed: tuple[str, ...], key: str) -> None:
    extra = sorted(set(spec) - set(allowed))
    if extra:
        raise ConfigError(
            f"{key}.{extra[0]}", "unknown key", f"valid keys here: {', '.join(allowed)}"
        )


def _table(spec: Mapping[str, Any], name: str, key: str) -> dict[str, Any]:
    value = spec.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}.{name}", f"must be a table, got {value!r}", "write a table")
    return dict(value)


def _number(spec: Mapping[str, Any], k: str, key: str) -> Any:
    value = spec[k]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}.{k}", f"must be a number, got {value!r}", "write a number")
    if k == "mtu":
        if not isinstance(value, int) or value < UDP_IP_OVERHEAD:
            raise ConfigError(f"{key}.mtu", f"{value!r} is not a valid MTU", "e.g. mtu = 1500")
        return value
    if value < 0 or (k == "loss" and value > 1):
        raise ConfigError(
            f"{key}.{k}", f"{value!r} is out of range", "latency >= 0, 0 <= loss <= 1"
        )
    return float(value)


def _behaviour(raw: Any, key: str) -> NatBehaviour | None:
    """``None`` for kind "none"."""
    if raw is None:
        raise ConfigError(key, "missing", f"give one of: {', '.join(NAT_KIND_NAMES)}")
    if isinstance(raw, str):
        if raw == KIND_NONE:
            return None
        try:
            return nat_kind(raw)
        except LocalProtocolError as exc:
            raise ConfigError(key, str(exc)) from None
    if isinstance(raw, Mapping):
        try:
            return behaviour_from_data(dict(raw))
        except LocalProtocolError as exc:
            raise ConfigError(key, str(exc)) from None
    raise ConfigError(key, f"{raw!r} is neither a kind name nor a table", "e.g. kind = 'symmetric'")
