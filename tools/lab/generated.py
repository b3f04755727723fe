"""Generated lab topologies: a number of nodes split over a NAT mix, and named presets.

This module owns sizing a lab without writing a file (``ipop-lab up --nodes N --nat-mix ...``
or ``--preset NAME``): the mix's syntax, the split of nodes over NAT kinds, the host names by
kind and which hosts share a NAT router. What it produces is an ordinary
:class:`~ipop.tools.lab.topology.Topology`, validated like a file.
"""

from __future__ import annotations

from typing import Any

from ipop.errors import ConfigError
from ipop.nat.kinds import NatKind
from ipop.tools.lab.topology import (
    MIX_KINDS,
    SHAREABLE_NATS,
    Topology,
    topology_from_dict,
    with_router_clusters,
)

__all__ = [
    "DEFAULT_MIX",
    "MAX_NODES",
    "PRESETS",
    "parse_nat_mix",
    "preset_topology",
    "scaled_topology",
]

_SHORT = {
    "none": "pub",
    "full-cone": "fc",
    "restricted-cone": "rc",
    "port-restricted-cone": "prc",
    "symmetric": "sym",
}
DEFAULT_MIX = "none:0.2,full-cone:0.1,restricted-cone:0.1,port-restricted-cone:0.4,symmetric:0.2"
# name -> (nodes, mix, clusters): `ipop-lab up --preset NAME`.
PRESETS: dict[str, tuple[int, str, int]] = {
    "small": (6, DEFAULT_MIX, 1),
    "ci": (14, DEFAULT_MIX, 2),
    "30": (30, DEFAULT_MIX, 2),
    "50": (50, DEFAULT_MIX, 2),
}
MAX_NODES = 120


def parse_nat_mix(text: str) -> dict[NatKind, float]:
    """``none:0.2,port-restricted-cone:0.4,...`` -> kind -> weight (weights need not sum to 1)."""
    mix: dict[NatKind, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, sep, weight = part.partition(":")
        if kind not in MIX_KINDS:
            raise ConfigError(
                "--nat-mix", f"unknown NAT kind {kind!r}", f"use {', '.join(MIX_KINDS)}"
            )
        try:
            w = float(weight) if sep else 1.0
        except ValueError as e:
            raise ConfigError("--nat-mix", f"bad weight {weight!r} for {kind}") from e
        if w < 0:
            raise ConfigError("--nat-mix", f"negative weight for {kind}")
        mix[NatKind(kind)] = mix.get(NatKind(kind), 0.0) + w
    if sum(mix.values()) <= 0:
        raise ConfigError("--nat-mix", "no positive weight", "e.g. none:0.2,symmetric:0.8")
    return mix


def _split(nodes: int, mix: dict[NatKind, float]) -> dict[NatKind, int]:
    """Largest-remainder split of ``nodes`` over the mix; at least 2 public hosts (bootstraps
    and STUN references) when there are 4 nodes or more, else 1."""
    total = sum(mix.values())
    exact = {k: nodes * w / total for k, w in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True):
        if sum(counts.values()) >= nodes:
            break
        counts[k] += 1
    want_pub = min(2 if nodes >= 4 else 1, nodes)
    while counts.get(NatKind.NONE, 0) < want_pub:
        biggest = max((k for k in counts if k != NatKind.NONE), key=lambda k: counts[k])
        counts[biggest] -= 1
        counts[NatKind.NONE] = counts.get(NatKind.NONE, 0) + 1
    return counts


def scaled_topology(
    nodes: int, mix: str = DEFAULT_MIX, *, clusters: int = 2, per_nat: int = 3
) -> Topology:
    """``nodes`` ipopd hosts (routers of clusters not counted) split over ``mix``.

    Public hosts are pub1, pub2, ... (pub1 with a second address for netcheck; pub1 and pub2
    are the bootstraps); NAT hosts are named by kind (fc1, rc1, prc1, sym1, ...). Hosts behind
    port-restricted-cone and symmetric NATs share a router ``per_nat`` at a time; the cone
    kinds get one host each. Deterministic: the same arguments give the same topology.
    """
    if not 1 <= nodes <= MAX_NODES:
        raise ConfigError("--nodes", f"{nodes} out of range", f"1..{MAX_NODES}")
    if per_nat < 1:
        raise ConfigError("--per-nat", "must be at least 1")
    counts = _split(nodes, parse_nat_mix(mix))
    hosts: list[dict[str, Any]] = []
    for kind in MIX_KINDS:
        n = counts.get(kind, 0)
        owner = ""
        for i in range(1, n + 1):
            name = f"{_SHORT[kind]}{i}"
            if kind == NatKind.NONE:
                h: dict[str, Any] = {"name": name, "role": "public"}
                if i == 1:
                    h["extra_ips"] = ["203.0.113.9"]
            elif kind in SHAREABLE_NATS and (i - 1) % per_nat:
                h = {"name": name, "role": "nat", "behind": owner}
            else:
                owner = name
                h = {"name": name, "role": "nat", "kind": kind}
            hosts.append(h)
    topo = topology_from_dict({"hosts": hosts, "bootstraps": 2})
    return with_router_clusters(topo, clusters)


def preset_topology(name: str) -> Topology:
    if name not in PRESETS:
        raise ConfigError("--preset", f"unknown preset {name!r}", f"use {', '.join(PRESETS)}")
    nodes, mix, clusters = PRESETS[name]
    return scaled_topology(nodes, mix, clusters=clusters)
