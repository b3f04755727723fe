"""Test factories for networks and node identities (never imported at run time).

Ed25519 key generation and signing cost ~0.1 ms, so a thousand-node simulation builds its
identities in well under a second.
"""

from __future__ import annotations

from ipop.identity import NetworkCA, NodeIdentity


def make_network(network: str = "testnet", *, now: float) -> NetworkCA:
    """A fresh network CA valid from ``now`` for the default lifetime."""
    return NetworkCA.create(network, now=now)


def make_identity(
    ca: NetworkCA,
    name: str,
    *,
    now: float,
    days: int = 365,
    hostname: str | None = None,
) -> NodeIdentity:
    """A fresh node key with a certificate from ``ca``."""
    return NodeIdentity.generate(ca, name, now=now, days=days, hostname=hostname)
