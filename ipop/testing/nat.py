"""NAT behaviours for the simulator (RFC 4787) and the translation table of one NAT box.

This module owns two things: the vocabulary of NAT behaviour (:class:`NatBehaviour`, built from
RFC 4787 parameters, and the registry :data:`NAT_KINDS` of the behaviour of each buildable
:class:`ipop.nat.kinds.NatKind`), and
:class:`NatTable`, the sans-IO mapping/filtering state of one NAT box. ``netsim`` moves
datagrams; this module decides what a NAT does with them.

The named kinds match what the project's lab builds with netfilter (see
``/work/shared/reference/README.md``): hole punching cone×cone, symmetric×full-cone and
symmetric×restricted-cone works; symmetric×port-restricted-cone and symmetric×symmetric fails.

Theory of operation (:class:`NatTable`):

- A *mapping* binds an internal endpoint to an external port on the NAT's public address. Its
  key depends on the mapping behaviour: the internal endpoint alone (endpoint-independent), plus
  the remote address (address-dependent), or plus the remote address and port
  (address-and-port-dependent, "symmetric").
- Each mapping remembers when an outbound packet last used it. Only outbound packets refresh it
  (RFC 4787 REQ-6 "outbound refresh"); after ``mapping_timeout_s`` without one it is expired and
  the next outbound packet creates a fresh mapping (possibly on another port).
- Filtering permissions hang off the mapping: the remote addresses (address-dependent) or remote
  endpoints (address-and-port-dependent) the inside has sent to, each with its own last-outbound
  time and the same timeout. Endpoint-independent filtering needs no permissions.
- Invariants: ``_by_ext`` and ``_by_key`` always hold exactly the same live-or-lazily-expired
  mappings; an external port belongs to at most one mapping (with ``ports_per_flow``: an
  external port and remote endpoint, ``_by_ext`` then keyed by both); time passed in never
  goes backwards for correct results (the simulator's clock guarantees it).
- Expired mappings are removed lazily when touched, plus a sweep whenever the table grows past
  a threshold, so a symmetric NAT talking to many peers does not grow without bound.
- ``ports_per_flow`` (Linux conntrack, which the lab's port-restricted NATs are): every flow
  (inside endpoint, remote endpoint) is its own mapping, and an external port is unique per
  *remote endpoint*, not per NAT. Port preservation keeps the inside port toward a remote
  unless another flow already reaches that very remote from it, so two inside hosts bound to
  one port can both hold it toward different remotes, and one of them gets another port toward
  a remote the other reached first. A STUN server sees a port-restricted cone. Why it matters:
  after a flush, the host that sends first toward a remote takes the shared port toward it
  only (the lab's rebinding race, tests/lab/test_rebind_lab.py).
- :meth:`NatTable.flush` drops every mapping at once (a NAT reboot, ``conntrack -F``): the
  next outbound packet of each flow creates a fresh mapping, on a port none of the flushed
  ones held (as the lab's NATs usually hand out, since the inside hosts race for the
  preserved ports), until the next flush.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ipop.errors import LocalProtocolError
from ipop.nat.kinds import NatKind
from ipop.types import Endpoint

__all__ = [
    "KIND_NONE",
    "NAT_KINDS",
    "NAT_KIND_NAMES",
    "Filtering",
    "Mapping",
    "NatBehaviour",
    "NatMapping",
    "NatTable",
    "PortAllocation",
    "UnknownNatKind",
    "behaviour_from_data",
    "nat_kind",
]


class Mapping(Enum):
    """RFC 4787 §4.1: what makes two outbound flows share one external port."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class Filtering(Enum):
    """RFC 4787 §5: which unsolicited inbound packets a mapping lets through."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class PortAllocation(Enum):
    """How a new external port is picked when the internal port cannot be kept."""

    RANDOM = "random"  # Linux MASQUERADE --random / --random-fully: unpredictable
    SEQUENTIAL = "sequential"  # next free port after the last one: port prediction works


@dataclass(frozen=True, slots=True)
class NatBehaviour:
    """One NAT's behaviour in RFC 4787 terms; :data:`NAT_KINDS` holds the classic ones."""

    mapping: Mapping
    filtering: Filtering
    # Outbound refresh only (RFC 4787 REQ-6); REQ-5 asks for at least 120 s.
    mapping_timeout_s: float = 120.0
    hairpinning: bool = False
    # Keep the internal source port as the external one when it is free (Linux MASQUERADE).
    port_preservation: bool = True
    port_allocation: PortAllocation = PortAllocation.SEQUENTIAL
    # After a flush, may the ports of the flushed mappings be handed out again at once? False:
    # every flow gets a new port (a reboot that draws afresh). True: as the lab's Linux router
    # after ``conntrack -F``, the first inside host to send again keeps its port, which may be
    # the one another host behind this NAT held before.
    reuse_flushed_ports: bool = False
    # One mapping per flow, an external port unique per remote endpoint (Linux conntrack; see
    # the module docstring). Only with address-and-port-dependent filtering: a flow admits
    # its own remote only.
    ports_per_flow: bool = False

    def __post_init__(self) -> None:
        if not self.mapping_timeout_s > 0:
            raise LocalProtocolError(
                f"mapping_timeout_s must be > 0, got {self.mapping_timeout_s!r}"
            )
        if self.ports_per_flow and self.filtering is not Filtering.ADDRESS_AND_PORT_DEPENDENT:
            raise LocalProtocolError(
                "ports_per_flow needs address-and-port-dependent filtering (a flow admits "
                "only its own remote)"
            )

    @property
    def kind(self) -> NatKind:
        """The classic (RFC 3489) name a STUN-style classifier would report for this NAT."""
        if self.mapping is not Mapping.ENDPOINT_INDEPENDENT:
            return NatKind.SYMMETRIC
        return _CONE_BY_FILTERING[self.filtering]


_CONE_BY_FILTERING = {
    Filtering.ENDPOINT_INDEPENDENT: NatKind.FULL_CONE,
    Filtering.ADDRESS_DEPENDENT: NatKind.RESTRICTED_CONE,
    Filtering.ADDRESS_AND_PORT_DEPENDENT: NatKind.PORT_RESTRICTED_CONE,
}

# "none" is not a NAT: a host of kind "none" sits directly on the internet.
KIND_NONE = NatKind.NONE

NAT_KINDS: dict[NatKind, NatBehaviour] = {
    NatKind.FULL_CONE: NatBehaviour(Mapping.ENDPOINT_INDEPENDENT, Filtering.ENDPOINT_INDEPENDENT),
    NatKind.RESTRICTED_CONE: NatBehaviour(
        Mapping.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT
    ),
    NatKind.PORT_RESTRICTED_CONE: NatBehaviour(
        Mapping.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT
    ),
    # As the lab's MASQUERADE --random-fully: a fresh random port for every destination.
    NatKind.SYMMETRIC: NatBehaviour(
        Mapping.ADDRESS_AND_PORT_DEPENDENT,
        Filtering.ADDRESS_AND_PORT_DEPENDENT,
        port_preservation=False,
        port_allocation=PortAllocation.RANDOM,
    ),
}

NAT_KIND_NAMES: tuple[NatKind, ...] = (KIND_NONE, *NAT_KINDS)


class UnknownNatKind(LocalProtocolError, ValueError):
    """A NAT kind name that is not in the registry; the message lists the valid ones."""


def nat_kind(name: str) -> NatBehaviour:
    """The registered behaviour called ``name``; ``"none"`` and unknown names raise."""
    try:
        return NAT_KINDS[NatKind(name)]
    except (KeyError, ValueError):
        pass
    if name == KIND_NONE:
        raise UnknownNatKind(
            "NAT kind 'none' means no NAT at all: put the host on the internet "
            "(Network.add_public_host, or Network.add_host(name, 'none'))"
        )
    raise UnknownNatKind(f"unknown NAT kind {name!r}; valid kinds: {', '.join(NAT_KIND_NAMES)}")


_ENUM_FIELDS: dict[str, type[Enum]] = {
    "mapping": Mapping,
    "filtering": Filtering,
    "port_allocation": PortAllocation,
}
_BEHAVIOUR_FIELDS = (
    "mapping_timeout_s",
    "hairpinning",
    "port_preservation",
    "reuse_flushed_ports",
    "ports_per_flow",
    *_ENUM_FIELDS,
)


def behaviour_from_data(data: dict[str, Any]) -> NatBehaviour:
    """A behaviour from plain data (a TOML table): ``base`` names a kind, other keys override.

    Without ``base``, ``mapping`` and ``filtering`` are required. Raises
    :class:`LocalProtocolError` (the topology loader turns it into a ConfigError with the key).
    """
    fields: dict[str, Any] = {}
    base = data.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise LocalProtocolError(f"base must be a NAT kind name, got {base!r}")
        b = nat_kind(base)
        fields = {f: getattr(b, f) for f in _BEHAVIOUR_FIELDS}
    for key, value in data.items():
        if key == "base":
            continue
        if key not in _BEHAVIOUR_FIELDS:
            raise LocalProtocolError(
                f"unknown NAT behaviour field {key!r}; valid: base, {', '.join(_BEHAVIOUR_FIELDS)}"
            )
        enum = _ENUM_FIELDS.get(key)
        if enum is not None:
            try:
                value = enum(value)
            except ValueError:
                valid = ", ".join(str(m.value) for m in enum)
                raise LocalProtocolError(f"{key} = {value!r} is not one of: {valid}") from None
        elif key == "mapping_timeout_s":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LocalProtocolError(f"mapping_timeout_s must be a number, got {value!r}")
            value = float(value)
        elif not isinstance(value, bool):
            raise LocalProtocolError(f"{key} must be true or false, got {value!r}")
        fields[key] = value
    missing = [f for f in ("mapping", "filtering") if f not in fields]
    if missing:
        raise LocalProtocolError(
            f"NAT behaviour needs {' and '.join(missing)} (or base = one of {', '.join(NAT_KINDS)})"
        )
    return NatBehaviour(**fields)


class NatMapping:
    """One live binding internal endpoint → external port, with its filtering permissions."""

    __slots__ = ("external", "internal", "key", "last_out", "perms")

    def __init__(
        self, key: tuple[Any, ...], internal: Endpoint, external: Endpoint, now: float
    ) -> None:
        self.key = key
        self.internal = internal
        self.external = external
        self.last_out = now
        # remote address, or (address, port), -> time of the last outbound packet to it
        self.perms: dict[Any, float] = {}

    def __repr__(self) -> str:
        return f"NatMapping({self.internal} -> {self.external}, perms={len(self.perms)})"


_PORT_MIN = 1024
_PORT_MAX = 65535
# Sweep expired mappings when the table reaches this size (and at each doubling beyond it).
_SWEEP_AT = 4096


class NatTable:
    """Mapping and filtering state of one NAT box; sans-IO, time passed in as ``now``.

    :meth:`outbound` and :meth:`inbound` return the :class:`NatMapping` that applies, or a drop
    reason string (a counter name) when the NAT refuses the packet.
    """

    def __init__(self, public_ip: str, behaviour: NatBehaviour, rng: random.Random) -> None:
        self.public_ip = public_ip
        self.behaviour = behaviour
        self.rng = rng
        self.stats: Counter[str] = Counter()
        self._by_key: dict[tuple[Any, ...], NatMapping] = {}
        # External port -> its mapping; with ports_per_flow (port, remote ip, remote port).
        self._by_ext: dict[Any, NatMapping] = {}
        self._per_flow = behaviour.ports_per_flow
        # With ports_per_flow: how many flows hold each external port (a port no flow holds
        # is what a clash falls back to, as conntrack's search for a free tuple finds).
        self._port_flows: Counter[int] = Counter()
        self._timeout = behaviour.mapping_timeout_s
        self._mapping = behaviour.mapping
        self._filtering = behaviour.filtering
        self._next_port = _PORT_MIN
        self._sweep_at = _SWEEP_AT
        # External ports of the last flush's mappings: never handed out again before the next
        # flush (bounded by the table's size at that flush).
        self._flushed: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self._by_ext)

    def mappings(self) -> list[NatMapping]:
        """Every mapping held, including ones expired but not yet swept (for tests and tools)."""
        return list(self._by_ext.values())

    def outbound(
        self, int_ip: str, int_port: int, rip: str, rport: int, now: float
    ) -> NatMapping | str:
        """An inside endpoint sends to ``rip:rport``: the mapping it leaves through."""
        mapping = self._mapping
        if self._per_flow:
            key: tuple[Any, ...] = (int_ip, int_port, rip, rport)
        elif mapping is Mapping.ENDPOINT_INDEPENDENT:
            key = (int_ip, int_port)
        elif mapping is Mapping.ADDRESS_DEPENDENT:
            key = (int_ip, int_port, rip)
        else:
            key = (int_ip, int_port, rip, rport)
        m = self._by_key.get(key)
        if m is not None and now - m.last_out > self._timeout:
            self._remove(m)
            self.stats["mapping_expired"] += 1
            m = None
        if m is None:
            port = self._allocate(int_port, (rip, rport), now)
            if port is None:
                self.stats["nat_ports_exhausted"] += 1
                return "nat_ports_exhausted"
            m = NatMapping(key, Endpoint(int_ip, int_port), Endpoint(self.public_ip, port), now)
            self._by_key[key] = m
            if self._per_flow:
                self._by_ext[(port, rip, rport)] = m
                self._port_flows[port] += 1
            else:
                self._by_ext[port] = m
            self.stats["mapping_created"] += 1
        m.last_out = now
        filtering = self._filtering
        if filtering is Filtering.ADDRESS_AND_PORT_DEPENDENT:
            m.perms[(rip, rport)] = now
        elif filtering is Filtering.ADDRESS_DEPENDENT:
            m.perms[rip] = now
        return m

    def inbound(self, rip: str, rport: int, ext_port: int, now: float) -> NatMapping | str:
        """``rip:rport`` sends to the public address at ``ext_port``: the mapping that admits it."""
        if self._per_flow:
            m = self._by_ext.get((ext_port, rip, rport))
            if m is None:
                return "nat_filtered" if self._port_flows[ext_port] else "no_mapping"
        else:
            m = self._by_ext.get(ext_port)
        if m is None:
            return "no_mapping"
        if now - m.last_out > self._timeout:
            self._remove(m)
            self.stats["mapping_expired"] += 1
            return "mapping_expired"
        filtering = self._filtering
        if filtering is Filtering.ENDPOINT_INDEPENDENT:
            return m
        t = m.perms.get((rip, rport) if filtering is Filtering.ADDRESS_AND_PORT_DEPENDENT else rip)
        if t is None or now - t > self._timeout:
            return "nat_filtered"
        return m

    def flush(self) -> int:
        """Forget every mapping and its permissions (a NAT reboot, a conntrack flush); return
        how many went. Inbound packets to their ports are dropped ("no_mapping") until the
        inside sends again, from a new external port (``reuse_flushed_ports``: from the first
        free one as for any new mapping, which may be a port another host held before)."""
        gone = len(self._by_ext)
        if not self.behaviour.reuse_flushed_ports:
            self._flushed = frozenset(m.external.port for m in self._by_ext.values())
        self._by_ext.clear()
        self._by_key.clear()
        self._port_flows.clear()
        self.stats["mapping_flushed"] += gone
        return gone

    def lookup(self, ext_port: int, remote: Endpoint | None = None) -> NatMapping | None:
        """The mapping on ``ext_port``, expired or not (inspection only; changes nothing).

        With ``ports_per_flow`` the one toward ``remote`` (None: the oldest flow on the port).
        """
        if not self._per_flow:
            return self._by_ext.get(ext_port)
        if remote is not None:
            return self._by_ext.get((ext_port, remote.host, remote.port))
        return next((m for m in self._by_ext.values() if m.external.port == ext_port), None)

    def _remove(self, m: NatMapping) -> None:
        del self._by_key[m.key]
        port = m.external.port
        if self._per_flow:
            _, _, rip, rport = m.key
            del self._by_ext[(port, rip, rport)]
            self._port_flows[port] -= 1
            if not self._port_flows[port]:
                del self._port_flows[port]
        else:
            del self._by_ext[port]

    def _allocate(self, int_port: int, remote: tuple[str, int], now: float) -> int | None:
        if len(self._by_ext) >= self._sweep_at:
            self.sweep(now=now)
        # The ports no new mapping may take: every held one, or with ports_per_flow, the ones
        # held toward ``remote`` for the inside port's own (any held one for a fallback).
        by_ext: Container[int] = self._port_flows if self._per_flow else self._by_ext
        kept = (int_port, *remote) if self._per_flow else int_port
        flushed = self._flushed
        if (
            self.behaviour.port_preservation
            and int_port >= _PORT_MIN
            and kept not in self._by_ext
            and int_port not in flushed
        ):
            return int_port
        span = _PORT_MAX - _PORT_MIN + 1
        held = len(self._port_flows) if self._per_flow else len(self._by_ext)
        if held + len(flushed) >= span:
            return None
        if self.behaviour.port_allocation is PortAllocation.RANDOM:
            # The table is far from full in any sane scenario, so a few draws suffice.
            while True:
                port = self.rng.randint(_PORT_MIN, _PORT_MAX)
                if port not in by_ext and port not in flushed:
                    return port
        port = self._next_port
        while port in by_ext or port in flushed:
            port = _PORT_MIN if port == _PORT_MAX else port + 1
        self._next_port = _PORT_MIN if port == _PORT_MAX else port + 1
        return port

    def sweep(self, *, now: float) -> int:
        """Remove the mappings expired at ``now``; return how many."""
        dead = [m for m in self._by_ext.values() if now - m.last_out > self._timeout]
        for m in dead:
            self._remove(m)
        self.stats["mapping_expired"] += len(dead)
        # Grow the threshold so a table full of live mappings is not swept on every packet.
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._by_ext))
        return len(dead)
