"""What a node trusts: :class:`CaTrust`, the public half of its network's CA and the revocation
list in force at this node; it checks every certificate a peer presents.

Verification order (each failure is a :class:`CertificateError` whose ``reason`` is a drop
counter name): parses and carries an Ed25519 key (``cert_malformed``), signed by this CA
(``cert_bad_signature``), is a leaf (``cert_not_node``), belongs to this network
(``cert_wrong_network``), carries the node id its key implies (``cert_node_id_mismatch``), and
is not on the CA's revocation list (``cert_revoked``), and finally is valid at ``now``
(``cert_expired`` / ``cert_not_yet_valid``). Everything but revocation and time depends only on
the DER bytes, so successes are cached by DER (every handshake verifies); the revocation and
time checks run on every call, so a cached certificate is refused the moment a CRL revokes it.

A CRL is installed only if the CA signed it and its number is larger than the one held
(:mod:`ipop.identity.crl`).

:class:`CaKeyTrust` is the same check for a stranger that knows a network's CA only by its raw
public key (a DHT namespace names it, :func:`ipop.dht.record.namespace_of`): one shared
implementation (:func:`verify_node_der`) runs every check above except revocation, which a
stranger cannot know (it holds no CRL of that network), and the CA's own validity window,
which it cannot know either (only the node certificate's window bounds it).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from ipop.errors import ConfigError, LocalProtocolError
from ipop.identity.cert import (
    URI_SCHEME,
    CertificateError,
    NodeCertificate,
    pem_damage,
    router_hosts_of,
    serial_of,
)
from ipop.identity.crl import CrlError, VerifiedCrl, verify_crl
from ipop.identity.keys import node_id_for, raw_public
from ipop.identity.names import LABEL_RE, validate_network

__all__ = [
    "KEY_TRUST_CACHE_SIZE",
    "VERIFY_CACHE_SIZE",
    "CaKeyTrust",
    "CaTrust",
    "KeyCrl",
    "verify_node_der",
]

# Verified certificates remembered by DER; one per live peer is plenty, the bound keeps a peer
# that cycles through many valid certificates from growing memory without limit.
VERIFY_CACHE_SIZE = 1024
# A stranger's verifier per foreign network (:class:`CaKeyTrust`) remembers fewer: a replica
# holds a few records per member of each network it serves, and there may be many networks.
KEY_TRUST_CACHE_SIZE = 256


class _DerCache:
    """Verified certificates by DER, at most ``size``, the oldest evicted first (bounded)."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        # DER -> (verified certificate, its serial number): the serial is what a CRL names.
        self._entries: dict[bytes, tuple[NodeCertificate, int]] = {}

    def copy(self) -> _DerCache:
        other = _DerCache(self._size)
        other._entries = dict(self._entries)
        return other

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, der: bytes) -> tuple[NodeCertificate, int] | None:
        return self._entries.get(der)

    def verified(
        self,
        der: bytes | bytearray | memoryview,
        uncached: Callable[[bytes], tuple[NodeCertificate, int]],
    ) -> tuple[NodeCertificate, int]:
        """The cached result for ``der``, else ``uncached(der)`` remembered (errors are not)."""
        if type(der) is not bytes:
            # Parsers hand us memoryviews and bytearrays, which cannot key the cache.
            if not isinstance(der, bytearray | memoryview):
                raise CertificateError("cert_malformed", f"not bytes: {type(der).__name__}")
            der = bytes(der)
        hit = self._entries.get(der)
        if hit is None:
            hit = uncached(der)
            if len(self._entries) >= self._size:
                # Evict the oldest entry (dicts keep insertion order).
                del self._entries[next(iter(self._entries))]
            self._entries[der] = hit
        return hit


def _check_window(cert: NodeCertificate, *, now: float, ca_not_after: float) -> NodeCertificate:
    """``cert`` if valid at ``now``; the CA's own window (if known) bounds every leaf."""
    if now > min(cert.not_after, ca_not_after):
        raise CertificateError("cert_expired", f"{cert.name} expired or its CA did")
    if now < cert.not_before:
        raise CertificateError("cert_not_yet_valid", f"{cert.name} starts later")
    return cert


def _single_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


class CaTrust:
    """The public half of a network CA, and the revocation list in force at this node.

    Each node owns one (see :meth:`fork`): a CRL applied here changes what this node accepts
    and nobody else's, which is what lets the simulator show a CRL spreading.
    """

    __slots__ = (
        "_cache",
        "_cert",
        "_public_key",
        "_revoked",
        "cert_pem",
        "crl_applied_at",
        "crl_der",
        "crl_number",
        "network",
        "not_after",
        "not_before",
    )

    def __init__(self, cert: x509.Certificate) -> None:
        """Use :meth:`from_pem`; this trusts that ``cert`` was already checked."""
        public_key = cert.public_key()
        if not isinstance(public_key, Ed25519PublicKey):
            raise LocalProtocolError("CA certificate must carry an Ed25519 key")
        network = _single_attr(cert.subject, NameOID.ORGANIZATION_NAME)
        if network is None:
            raise LocalProtocolError("CA certificate has no single O=<network>")
        self._cert = cert
        self._public_key = public_key
        self.network: str = network
        self.cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
        self.not_before: float = cert.not_valid_before_utc.timestamp()
        self.not_after: float = cert.not_valid_after_utc.timestamp()
        self._cache = _DerCache(VERIFY_CACHE_SIZE)
        self._revoked: frozenset[int] = frozenset()
        # The CRL in force (0 / None: none yet) and when it was applied (status, tests).
        self.crl_number: int = 0
        self.crl_der: bytes | None = None
        self.crl_applied_at: float | None = None

    def fork(self) -> CaTrust:
        """Another holder of this CA with the same revocation state, changed independently.

        Why: one object per node. The simulator builds many nodes from one CA; sharing one
        CaTrust would make a CRL applied at one node instantly true at all of them.
        """
        other = CaTrust(self._cert)
        other._cache = self._cache.copy()
        other._revoked = self._revoked
        other.crl_number = self.crl_number
        other.crl_der = self.crl_der
        other.crl_applied_at = self.crl_applied_at
        return other

    @classmethod
    def from_pem(cls, pem: bytes, *, key: str = "ca_cert") -> CaTrust:
        """Load a CA certificate; anything that is not an ipop CA raises ConfigError(key)."""
        fix = "use the ca.crt that 'ipop-config init' wrote for this network"
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except (ValueError, TypeError) as exc:
            raise ConfigError(key, pem_damage(exc, "certificate"), fix) from None
        public_key = cert.public_key()
        if not isinstance(public_key, Ed25519PublicKey):
            raise ConfigError(key, "the CA key is not Ed25519", fix)
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (x509.ExtensionNotFound, ValueError):
            raise ConfigError(key, "the certificate has no basicConstraints", fix) from None
        if not bc.ca:
            raise ConfigError(key, "the certificate is not a CA (basicConstraints CA:FALSE)", fix)
        if cert.issuer != cert.subject:
            raise ConfigError(key, "the CA certificate is not self-signed", fix)
        try:
            public_key.verify(cert.signature, cert.tbs_certificate_bytes)
        except InvalidSignature:
            raise ConfigError(key, "the CA certificate's self-signature is invalid", fix) from None
        network = _single_attr(cert.subject, NameOID.ORGANIZATION_NAME)
        if network is None:
            raise ConfigError(key, "the CA certificate has no single O=<network>", fix)
        validate_network(network, key=key)
        return cls(cert)

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate this trust was built from (already checked)."""
        return self._cert

    @property
    def public_key_raw(self) -> bytes:
        return raw_public(self._public_key)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate's DER, hex: tells two networks of one name apart."""
        der = self._cert.public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()

    def verify(self, der: bytes | bytearray | memoryview, *, now: float) -> NodeCertificate:
        """Check a node certificate (DER) against this CA at ``now``; raise CertificateError."""
        return _check_window(self.verify_untimed(der), now=now, ca_not_after=self.not_after)

    def verify_untimed(self, der: bytes | bytearray | memoryview) -> NodeCertificate:
        """Every check of :meth:`verify` except the validity window (bundles check it later)."""
        cert, serial = self._cache.verified(der, self._verify_uncached)
        # After the cache on purpose: a CRL that arrives later must refuse cached certificates.
        if serial in self._revoked:
            raise CertificateError("cert_revoked", f"{cert.name} (serial {serial:x}) is revoked")
        return cert

    def is_revoked(self, cert: NodeCertificate) -> bool:
        """Whether the CRL in force lists ``cert`` (a certificate this CA verified)."""
        if not self._revoked:
            return False
        hit = self._cache.get(cert.der)
        serial = hit[1] if hit is not None else serial_of(cert.der)
        return serial in self._revoked

    # --- revocation ------------------------------------------------------------------------

    def check_crl(self, data: bytes | bytearray | memoryview) -> VerifiedCrl:
        """Parse and verify a CRL (DER or PEM) against this CA; CrlError if refused.

        Changes nothing: :meth:`apply_crl` installs. Costs one parse and one Ed25519 check.
        """
        return verify_crl(data, ca_key=self._public_key, issuer=self._cert.subject)

    def apply_crl(self, data: bytes | bytearray | memoryview, *, now: float) -> VerifiedCrl:
        """Install a CRL (DER or PEM) if the CA signed it and it is newer than the one held.

        Raises CrlError (``crl_stale`` for a number not above :attr:`crl_number`) and then
        changes nothing. Returns the installed list; callers then end sessions of certificates
        it revokes (:meth:`ipop.link.layer.LinkLayer.close_revoked`).
        """
        crl = _newer(self.check_crl(data), self.crl_number)
        self._revoked = crl.serials
        self.crl_number = crl.number
        self.crl_der = crl.der
        self.crl_applied_at = now
        return crl

    def _verify_uncached(self, der: bytes) -> tuple[NodeCertificate, int]:
        return verify_node_der(
            der, ca_key=self._public_key, issuer=self._cert.subject, network=self.network
        )


class CaKeyTrust:
    """A network's CA known only by its raw Ed25519 public key: what a stranger can check.

    For a replica that holds another network's DHT records (an overlay-only node, a member of
    another network): it verifies a node certificate's signature under the key, that it is a
    leaf, that O= and the SAN name ``network``, that its node id is its key's hash, and its
    validity window, through the same :func:`verify_node_der` as :class:`CaTrust`. Revocation
    is unknowable here (the network's CRL is not ours to hold) and so is the CA certificate's
    own lifetime: only members, whose :class:`CaTrust` has both, check those.
    """

    __slots__ = ("_cache", "_public_key", "network", "public_key_raw")

    def __init__(
        self, network: str, public_key_raw: bytes, *, cache_size: int = KEY_TRUST_CACHE_SIZE
    ) -> None:
        """LocalProtocolError unless ``public_key_raw`` is 32 bytes of an Ed25519 key."""
        try:
            self._public_key = Ed25519PublicKey.from_public_bytes(public_key_raw)
        except ValueError as exc:
            raise LocalProtocolError(f"not an Ed25519 public key: {exc}") from None
        self.network = network
        self.public_key_raw = bytes(public_key_raw)
        self._cache = _DerCache(cache_size)

    def verify(self, der: bytes | bytearray | memoryview, *, now: float) -> NodeCertificate:
        """Check a node certificate (DER) at ``now``; raise CertificateError (no revocation)."""
        cert, _ = self._cache.verified(der, self._verify_uncached)
        return _check_window(cert, now=now, ca_not_after=math.inf)

    def _verify_uncached(self, der: bytes) -> tuple[NodeCertificate, int]:
        # The issuer's name is not known (only the key): the signature alone decides.
        return verify_node_der(der, ca_key=self._public_key, issuer=None, network=self.network)


class KeyCrl:
    """The newest revocation list that a CA known only by its raw public key signed, as this
    node holds it: what a stranger (an overlay-only node, another network's member) keeps of
    a network's CRL so that it can carry the list on (:class:`ipop.revocation.NetworkCrls`)
    and refuse the revoked members' records (:mod:`ipop.dht.policy`). The same interface as
    :class:`CaTrust`'s revocation half; the issuer's name is unknown, the key's signature
    alone decides."""

    __slots__ = (
        "_public_key",
        "crl_applied_at",
        "crl_der",
        "crl_number",
        "public_key_raw",
        "revoked",
    )

    def __init__(self, public_key_raw: bytes) -> None:
        """LocalProtocolError unless ``public_key_raw`` is 32 bytes of an Ed25519 key."""
        try:
            self._public_key = Ed25519PublicKey.from_public_bytes(public_key_raw)
        except ValueError as exc:
            raise LocalProtocolError(f"not an Ed25519 public key: {exc}") from None
        self.public_key_raw = bytes(public_key_raw)
        self.revoked: frozenset[int] = frozenset()
        self.crl_number: int = 0
        self.crl_der: bytes | None = None
        self.crl_applied_at: float | None = None

    def check_crl(self, data: bytes | bytearray | memoryview) -> VerifiedCrl:
        """Parse and verify a CRL against the key; CrlError if refused. Changes nothing."""
        return verify_crl(data, ca_key=self._public_key, issuer=None)

    def apply_crl(self, data: bytes | bytearray | memoryview, *, now: float) -> VerifiedCrl:
        """Install a CRL the key signed if it is newer than the one held (as CaTrust does)."""
        crl = _newer(self.check_crl(data), self.crl_number)
        self.revoked = crl.serials
        self.crl_number = crl.number
        self.crl_der = crl.der
        self.crl_applied_at = now
        return crl


def _newer(crl: VerifiedCrl, held: int) -> VerifiedCrl:
    """``crl`` if its number is above ``held`` (numbers order CRLs, not time); else crl_stale."""
    if crl.number <= held:
        raise CrlError("crl_stale", f"number {crl.number}, holding {held}")
    return crl


def verify_node_der(
    der: bytes, *, ca_key: Ed25519PublicKey, issuer: x509.Name | None, network: str
) -> tuple[NodeCertificate, int]:
    """Every time- and revocation-free check of a node certificate, and its serial number.

    ``ca_key`` must have signed it; ``issuer`` (None: unknown) must be its issuer's name; it is
    a leaf of ``network``, and its SAN names the node id its key hashes to. Raises
    CertificateError in the order of the module docstring. Shared by :class:`CaTrust` and
    :class:`CaKeyTrust`: one implementation of what a node certificate is.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        public_key = cert.public_key()
        sig_oid = cert.signature_algorithm_oid
        not_before = cert.not_valid_before_utc.timestamp()
        not_after = cert.not_valid_after_utc.timestamp()
        extensions = cert.extensions
        tbs = cert.tbs_certificate_bytes
        signature = cert.signature
        subject = cert.subject
        cert_issuer = cert.issuer
        serial = cert.serial_number
    except Exception as exc:
        # The X.509 parser is foreign code fed peer bytes: besides ValueError it was seen
        # raising KeyError on a mutated name-attribute tag. Any failure there is garbage.
        raise CertificateError("cert_malformed", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(public_key, Ed25519PublicKey):
        raise CertificateError("cert_malformed", "node key is not Ed25519")
    if sig_oid != SignatureAlgorithmOID.ED25519:
        raise CertificateError("cert_bad_signature", "not an Ed25519 signature")
    if issuer is not None and cert_issuer != issuer:
        raise CertificateError("cert_bad_signature", "issued by another CA")
    try:
        ca_key.verify(signature, tbs)
    except InvalidSignature:
        raise CertificateError("cert_bad_signature", "signature does not verify") from None
    # From here on the CA vouched for every byte, so oddities are our CA's, not forgery.
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateError("cert_not_node", "no basicConstraints") from None
    if bc.ca:
        raise CertificateError("cert_not_node", "a CA certificate, not a node's")
    cert_network = _single_attr(subject, NameOID.ORGANIZATION_NAME)
    if cert_network != network:
        raise CertificateError("cert_wrong_network", f"O={cert_network!r}, want {network!r}")
    name = _single_attr(subject, NameOID.COMMON_NAME)
    if name is None:
        raise CertificateError("cert_malformed", "no single CN")
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("cert_malformed", "no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    dns_names = san.get_values_for_type(x509.DNSName)
    if len(uris) != 1 or len(dns_names) > 1:
        raise CertificateError("cert_malformed", "want one ipop URI and at most one DNS name")
    public_key_raw = raw_public(public_key)
    node_id = node_id_for(public_key_raw)
    prefix = f"{URI_SCHEME}://"
    uri = uris[0]
    if not uri.startswith(prefix) or uri.count("/") != 3:
        raise CertificateError("cert_malformed", f"bad node URI {uri!r}")
    uri_network, _, uri_id = uri[len(prefix) :].partition("/")
    if uri_network != network:
        raise CertificateError("cert_wrong_network", f"URI network {uri_network!r}")
    if uri_id != node_id.hex():
        raise CertificateError("cert_node_id_mismatch", f"URI says {uri_id[:8]!r}")
    hostname = dns_names[0] if dns_names else None
    if hostname is not None and not LABEL_RE.match(hostname):
        raise CertificateError("cert_malformed", f"bad hostname {hostname!r}")
    router_hosts = router_hosts_of(extensions)
    verified = NodeCertificate(
        der=der,
        node_id=node_id,
        network=network,
        name=name,
        hostname=hostname,
        public_key_raw=public_key_raw,
        not_before=not_before,
        not_after=not_after,
        router_hosts=router_hosts,
    )
    return verified, serial
