"""A node's own identity: :class:`NodeIdentity`, its private key, its certificate and the CA it
trusts (everything it needs to prove itself), generated under a CA or loaded from a bundle.

A member of a network on a shared overlay holds two of them over ONE key (one node id): the
overlay identity (overlay CA, for links and routing) and the network identity (network CA,
for DHT records); :meth:`NodeIdentity.certified_by` makes the second from the first.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ipop.errors import ConfigError, LocalProtocolError
from ipop.identity.ca import NetworkCA
from ipop.identity.cert import CertificateError, NodeCertificate, pem_damage
from ipop.identity.keys import raw_public
from ipop.identity.trust import CaTrust
from ipop.timing import NODE_CERT_DEFAULT_DAYS
from ipop.types import NodeId

__all__ = ["NodeIdentity"]


class NodeIdentity:
    """A node's private key, its certificate and the CA it trusts: everything to prove itself."""

    __slots__ = ("cert", "private_key", "public_key_raw", "records_key", "trust")

    def __init__(self, private_key: Ed25519PrivateKey, cert: NodeCertificate, trust: CaTrust):
        public_key_raw = raw_public(private_key.public_key())
        if public_key_raw != cert.public_key_raw:
            raise LocalProtocolError("private key does not match the certificate")
        if cert.network != trust.network:
            raise LocalProtocolError("certificate belongs to another network than the CA")
        self.private_key = private_key
        self.cert = cert
        self.trust = trust
        self.public_key_raw = public_key_raw
        # The network's records key (its bundle's; ipop.dht.seal): the DHT seals this
        # network's records with it. None: they are stored plain.
        self.records_key: bytes | None = None

    @classmethod
    def generate(
        cls,
        ca: NetworkCA,
        name: str,
        *,
        now: float,
        days: int = NODE_CERT_DEFAULT_DAYS,
        hostname: str | None = None,
        router_hosts: int = 0,
        key: Ed25519PrivateKey | None = None,
    ) -> NodeIdentity:
        """A fresh key signed by ``ca`` (what ``ipop-config node`` and the test factories do);
        ``key``: this existing key instead (a node joining one more network keeps its one key
        and node id, issue 17)."""
        return cls._signed(
            Ed25519PrivateKey.generate() if key is None else key,
            ca,
            name,
            now=now,
            days=days,
            hostname=hostname,
            router_hosts=router_hosts,
        )

    def certified_by(
        self, ca: NetworkCA, name: str, *, now: float, days: int = NODE_CERT_DEFAULT_DAYS
    ) -> NodeIdentity:
        """This node's key with a certificate of another CA: one key, one node id, whatever
        certifies it. What a member's overlay certificate is; it names no hostname and grants
        no router rights (those are the network's, in the network certificate)."""
        return self._signed(
            self.private_key, ca, name, now=now, days=days, hostname=None, router_hosts=0
        )

    @classmethod
    def _signed(
        cls,
        key: Ed25519PrivateKey,
        ca: NetworkCA,
        name: str,
        *,
        now: float,
        days: int,
        hostname: str | None,
        router_hosts: int,
    ) -> NodeIdentity:
        cert = ca.sign_node(
            raw_public(key.public_key()),
            name,
            now=now,
            days=days,
            hostname=hostname,
            router_hosts=router_hosts,
        )
        return cls(key, cert, ca.trust)

    @classmethod
    def from_pem(
        cls,
        key_pem: bytes,
        cert_pem: bytes,
        trust: CaTrust,
        *,
        now: float,
        key_name: str = "node_key",
        cert_name: str = "node_cert",
    ) -> NodeIdentity:
        """Load and check a node's key and certificate; problems raise ConfigError naming keys."""
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                key_name, pem_damage(exc, "private key"), "re-create the bundle"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(key_name, "not an Ed25519 key", "re-create the bundle")
        try:
            der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                cert_name, pem_damage(exc, "certificate"), "re-create the bundle"
            ) from None
        try:
            cert = trust.verify(der, now=now)
        except CertificateError as exc:
            fixes = {
                "cert_expired": "ask for a new bundle: 'ipop-config node NETWORK NAME --force'",
                "cert_not_yet_valid": "check this machine's clock",
            }
            raise ConfigError(
                cert_name,
                f"refused by the bundled CA: {exc}",
                fixes.get(exc.reason, "re-create the bundle with 'ipop-config node'"),
            ) from None
        if raw_public(key.public_key()) != cert.public_key_raw:
            raise ConfigError(
                key_name, "the private key does not match node_cert", "re-create the bundle"
            )
        return cls(key, cert, trust)

    @property
    def node_id(self) -> NodeId:
        return self.cert.node_id

    @property
    def network(self) -> str:
        return self.cert.network

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"NodeIdentity({self.cert.name!r}, {self.node_id!r})"
