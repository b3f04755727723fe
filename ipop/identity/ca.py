"""A network's certificate authority: :class:`NetworkCA`, the Ed25519 key and self-signed X.509
certificate that admit nodes (:meth:`~NetworkCA.sign_node`) and revoke them
(:meth:`~NetworkCA.make_crl`). Only ``ipop-config`` holds it; nodes hold its public part,
:class:`~ipop.identity.trust.CaTrust`.

Key generation and certificate serial numbers use the cryptography library's own randomness,
which the project rules allow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from ipop.errors import ConfigError, LocalProtocolError
from ipop.identity.cert import (
    MAX_ROUTER_HOSTS,
    ROUTER_HOSTS_OID,
    URI_SCHEME,
    NodeCertificate,
    der_uint,
    pem_damage,
)
from ipop.identity.crl import CRL_DEFAULT_DAYS, MAX_CRL_BYTES, MAX_CRL_NUMBER
from ipop.identity.keys import node_id_for, raw_public
from ipop.identity.names import validate_hostname, validate_network, validate_node_name
from ipop.identity.trust import CaTrust
from ipop.timing import CA_DEFAULT_DAYS, CERT_BACKDATE_S, NODE_CERT_DEFAULT_DAYS
from ipop.types import NodeId

__all__ = ["NetworkCA"]

_DAY_S = 86400.0


def _dt(ts: float) -> datetime:
    # X.509 times have whole seconds; truncate here so what we sign is what we read back.
    return datetime.fromtimestamp(int(ts), tz=UTC)


def _node_uri(network: str, node_id: NodeId) -> str:
    return f"{URI_SCHEME}://{network}/{node_id.hex()}"


class NetworkCA:
    """A network's certificate authority: the Ed25519 key that admits nodes. Never in bundles."""

    __slots__ = ("_cert", "_key", "_trust")

    def __init__(self, key: Ed25519PrivateKey, cert: x509.Certificate) -> None:
        """Use :meth:`create` or :meth:`load`."""
        self._key = key
        self._cert = cert
        self._trust = CaTrust(cert)

    @classmethod
    def create(
        cls,
        network: str,
        *,
        now: float,
        days: int = CA_DEFAULT_DAYS,
        key: Ed25519PrivateKey | None = None,
    ) -> NetworkCA:
        """A new CA for ``network``; its key fresh from the OS unless given (the simulator
        gives one from a seed: the CA key names the network's DHT namespace, so it decides
        where every key lives on the ring, and a seeded run must place them alike)."""
        validate_network(network)
        if days < 1:
            raise ConfigError("days", f"{days} is not a positive number of days", "use >= 1")
        key = key or Ed25519PrivateKey.generate()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"ipop CA {network}"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, network),
            ]
        )
        public_key = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_dt(now - CERT_BACKDATE_S))
            .not_valid_after(_dt(now + days * _DAY_S))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(key, None)
        )
        return cls(key, cert)

    @classmethod
    def load(cls, key_pem: bytes, cert_pem: bytes) -> NetworkCA:
        """Load a CA from its two files; ConfigError if they are bad or do not belong together."""
        trust = CaTrust.from_pem(cert_pem, key="ca.crt")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError("ca.key", pem_damage(exc, "private key"), "restore ca.key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("ca.key", "not an Ed25519 key", "restore ca.key")
        if raw_public(key.public_key()) != trust.public_key_raw:
            raise ConfigError("ca.key", "does not match ca.crt", "restore the matching pair")
        return cls(key, trust.certificate)

    @property
    def network(self) -> str:
        return self._trust.network

    @property
    def trust(self) -> CaTrust:
        return self._trust

    @property
    def not_after(self) -> float:
        return self._trust.not_after

    def key_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def derived_secret(self, purpose: bytes) -> bytes:
        """32 bytes for ``purpose`` that only whoever holds this CA's private key can make:
        a secret the CA hands its members (e.g. the records key, :mod:`ipop.dht.seal`)
        without keeping another file."""
        raw = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return hashlib.blake2b(purpose, key=raw, digest_size=32, person=b"ipop-ca-secret").digest()

    def cert_pem(self) -> bytes:
        return self._trust.cert_pem

    def make_crl(
        self,
        revoked: Iterable[tuple[int, float]],
        *,
        number: int,
        now: float,
        days: int = CRL_DEFAULT_DAYS,
    ) -> bytes:
        """A signed X.509 CRL (DER) listing ``revoked`` as (serial, revoked at) pairs.

        ``number`` must exceed every number this CA signed before: nodes keep the largest.
        ``nextUpdate`` is ``days`` ahead (X.509 wants one; nodes do not expire CRLs).
        """
        if not 1 <= number <= MAX_CRL_NUMBER:
            raise LocalProtocolError(f"CRL number {number} out of range")
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(_dt(now))
            .next_update(_dt(now + days * _DAY_S))
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for serial, at in sorted(revoked):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(_dt(at))
                .build()
            )
        der = builder.sign(self._key, None).public_bytes(serialization.Encoding.DER)
        if len(der) > MAX_CRL_BYTES:
            raise ConfigError(
                "crl",
                f"{len(der)} bytes of revocations exceed {MAX_CRL_BYTES}",
                "shorten node certificate lifetimes (--days) so revocations expire sooner",
            )
        return der

    def sign_node(
        self,
        public_key_raw: bytes,
        name: str,
        *,
        now: float,
        days: int = NODE_CERT_DEFAULT_DAYS,
        hostname: str | None = None,
        router_hosts: int = 0,
        serial: int | None = None,
    ) -> NodeCertificate:
        """Admit the node with this key; its certificate never outlives the CA.

        ``router_hosts`` > 0 makes it a router certificate for that many LAN hosts.
        ``serial``: the X.509 serial number, random (the library's) when None; simulations
        pass one from their seed, since a random serial's DER length varies and with it the
        size of every datagram carrying the certificate.
        Raises ConfigError for a bad name, hostname, days or host count, or if the CA has
        expired at ``now``.
        """
        validate_node_name(name)
        if hostname is not None:
            validate_hostname(hostname)
        if not 0 <= router_hosts <= MAX_ROUTER_HOSTS:
            raise ConfigError(
                "max_hosts", f"{router_hosts} is out of range", f"use 1..{MAX_ROUTER_HOSTS}"
            )
        if days < 1:
            raise ConfigError("days", f"{days} is not a positive number of days", "use >= 1")
        if now > self.not_after:
            raise ConfigError(
                "ca.crt", "the network CA has expired", "create a new network with init"
            )
        try:
            node_public = Ed25519PublicKey.from_public_bytes(public_key_raw)
        except ValueError as exc:
            raise LocalProtocolError(f"not an Ed25519 public key: {exc}") from None
        node_id = node_id_for(public_key_raw)
        general_names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(_node_uri(self.network, node_id))
        ]
        if hostname is not None:
            general_names.append(x509.DNSName(hostname))
        not_before = max(now - CERT_BACKDATE_S, self._trust.not_before)
        not_after = min(now + days * _DAY_S, self.not_after)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.network),
                    ]
                )
            )
            .issuer_name(self._cert.subject)
            .public_key(node_public)
            .serial_number(x509.random_serial_number() if serial is None else serial)
            .not_valid_before(_dt(not_before))
            .not_valid_after(_dt(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
        )
        if router_hosts:
            cert = cert.add_extension(
                x509.UnrecognizedExtension(ROUTER_HOSTS_OID, der_uint(router_hosts)),
                critical=False,
            )
        signed = cert.sign(self._key, None)
        return NodeCertificate(
            der=signed.public_bytes(serialization.Encoding.DER),
            node_id=node_id,
            network=self.network,
            name=name,
            hostname=hostname,
            public_key_raw=bytes(public_key_raw),
            not_before=float(int(not_before)),
            not_after=float(int(not_after)),
            router_hosts=router_hosts,
        )
