"""Test factories for networks and node identities (never imported at run time).

Ed25519 key generation and signing cost ~0.1 ms, so a thousand-node simulation builds its
identities in well under a second.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from ipaddress import IPv4Network
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ipop.bundle import Bundle
from ipop.dht.seal import RECORDS_KEY_PURPOSE
from ipop.errors import LocalProtocolError
from ipop.identity import NetworkCA, NodeIdentity
from ipop.types import Endpoint


def make_network(network: str = "testnet", *, now: float, seed: str | None = None) -> NetworkCA:
    """A fresh network CA valid from ``now`` for the default lifetime.

    ``seed``: its key comes from the seed, so its DHT namespace (and every key id of the
    network, :func:`ipop.dht.record.namespace_of`) is the same every run; None: a random key.
    """
    key = None
    if seed is not None:
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())
    return NetworkCA.create(network, now=now, key=key)


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


def seeded_identity(
    ca: NetworkCA,
    name: str,
    rng: random.Random,
    *,
    now: float,
    hostname: str | None = None,
) -> NodeIdentity:
    """A node identity whose key (hence overlay address) comes from ``rng``, its certificate
    serial from the key: the same ``rng`` state gives the same node id and certificate size.

    Why: ``NodeIdentity.generate`` draws a fresh key from the OS, so every run would put the
    nodes at other ring positions and no run could be reproduced from its seed (simulator
    tests that drew fresh keys failed now and then, each time in another arrangement). The
    serial too: a random one is a byte shorter in DER one time in 256, and so is every
    handshake carrying the certificate, so about one 24-node run in 11 sent other sizes
    than another run of the same seed. The serial is the key's hash with bit 158 set (20 DER
    bytes, as nearly all random ones are); taking it from ``rng`` would move every later
    node of every seeded simulation.
    """
    key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    serial = (1 << 158) | (int.from_bytes(hashlib.sha256(raw).digest()[:20], "big") >> 2)
    cert = ca.sign_node(raw, name, now=now, hostname=hostname, serial=serial)
    return NodeIdentity(key, cert, ca.trust)


def make_bundle(
    network: str,
    node_name: str,
    *,
    subnet: IPv4Network,
    bootstrap: tuple[Endpoint, ...],
    now: float,
    hostname: str | None = None,
    router_hosts: int = 0,
    overlay: str | None = None,
    overlay_only: bool = False,
) -> Bundle:
    """A node bundle of a fresh network CA: what 'ipop-config node' writes, in memory.

    ``overlay``: the network sits on a shared overlay of that name with a fresh CA of its own
    (the bundle holds both certificates, 'ipop-config init --overlay'); ``overlay_only``: the
    bundle of an overlay-only node ('ipop-config overlay node'), without the network's keys.
    """
    ca = make_network(network, now=now)
    ident = NodeIdentity.generate(
        ca, node_name, now=now, hostname=hostname, router_hosts=router_hosts
    )
    network_keys: dict[str, Any] = {
        "network": network,
        "subnet": subnet,
        "ca_cert_pem": ca.cert_pem(),
        "node_cert_pem": ident.cert.pem(),
        "hostname": hostname,
    }
    overlay_keys: dict[str, Any] = {}
    if overlay is not None:
        overlay_ca = make_network(overlay, now=now)
        overlay_keys = {
            "overlay": overlay,
            "overlay_ca_cert_pem": overlay_ca.cert_pem(),
            "overlay_cert_pem": ident.certified_by(overlay_ca, node_name, now=now).cert.pem(),
        }
        if not overlay_only:
            overlay_keys["records_key"] = ca.derived_secret(RECORDS_KEY_PURPOSE)
    elif overlay_only:
        raise LocalProtocolError("an overlay-only bundle needs its overlay")
    return Bundle(
        bootstrap=bootstrap,
        node_name=node_name,
        node_key_pem=ident.private_key_pem(),
        **({} if overlay_only else network_keys),
        **overlay_keys,
    )


def member_bundles(
    networks: Sequence[tuple[str, IPv4Network]],
    node_name: str,
    *,
    overlay: str,
    bootstrap: tuple[Endpoint, ...],
    now: float,
    hostname: str | None = None,
    overlay_ca: NetworkCA | None = None,
) -> list[Bundle]:
    """One node's bundles for several networks on one shared overlay (issue 17): one key,
    one overlay CA (``overlay_ca``, else a fresh one; the same overlay certificate in each),
    a fresh CA per network."""
    overlay_ca = make_network(overlay, now=now) if overlay_ca is None else overlay_ca
    first: NodeIdentity | None = None
    out = []
    for network, subnet in networks:
        ca = make_network(network, now=now)
        if first is None:
            ident = first = NodeIdentity.generate(ca, node_name, now=now, hostname=hostname)
            overlay_cert = first.certified_by(overlay_ca, node_name, now=now).cert.pem()
        else:
            ident = first.certified_by(ca, node_name, now=now)
        out.append(
            Bundle(
                bootstrap=bootstrap,
                node_name=node_name,
                node_key_pem=first.private_key_pem(),
                network=network,
                subnet=subnet,
                ca_cert_pem=ca.cert_pem(),
                node_cert_pem=ident.cert.pem(),
                hostname=hostname if ident is first else None,
                overlay=overlay,
                overlay_ca_cert_pem=overlay_ca.cert_pem(),
                overlay_cert_pem=overlay_cert,
                records_key=ca.derived_secret(RECORDS_KEY_PURPOSE),
            )
        )
    return out


def overlay_only_bundle(
    overlay_ca: NetworkCA, node_name: str, *, bootstrap: tuple[Endpoint, ...], now: float
) -> Bundle:
    """An overlay-only node's bundle of ``overlay_ca`` ('ipop-config overlay node')."""
    ident = NodeIdentity.generate(overlay_ca, node_name, now=now)
    return Bundle(
        bootstrap=bootstrap,
        node_name=node_name,
        node_key_pem=ident.private_key_pem(),
        overlay=overlay_ca.network,
        overlay_ca_cert_pem=overlay_ca.cert_pem(),
        overlay_cert_pem=ident.cert.pem(),
    )


def alice_and_bob(*, now: float) -> tuple[NodeIdentity, NodeIdentity]:
    """Two members of one fresh network, certified a minute before ``now``."""
    ca = make_network(now=now - 60)
    return make_identity(ca, "alice", now=now - 60), make_identity(ca, "bob", now=now - 60)
