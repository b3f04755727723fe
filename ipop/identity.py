"""Node identities, network CAs and node certificates (DESIGN.md §4).

This module owns who a node is and who belongs to a network:

- a node's identity is an Ed25519 key; its overlay address is ``node_id_for(public key)``
  (SHA-256 of the raw 32-byte key, first 20 bytes), so nobody picks their ring position;
- a network has a CA (:class:`NetworkCA`, an Ed25519 key and a self-signed X.509 certificate);
  only ``ipop-config`` holds it. Nodes hold the public part, :class:`CaTrust`, and use it to
  check every certificate a peer presents (:meth:`CaTrust.verify`);
- a node certificate is ordinary X.509 so ``openssl x509 -text -noout`` reads it::

      subject      CN=<node name>, O=<network>
      issuer       CN=ipop CA <network>, O=<network>
      SAN          URI:ipop://<network>/<node id hex>   [, DNS:<fixed hostname>]
      extensions   basicConstraints CA:FALSE, keyUsage digitalSignature (both critical)
                   [ROUTER_HOSTS_OID: DER INTEGER max LAN hosts (non-critical), routers only]

  The router extension grants a router the right to hold DHT records for that many plain LAN
  hosts (their ``ip:`` records and ``<host>.<router hostname>`` names, :mod:`ipop.dht.policy`).
  Its OID lives under ``2.25`` (an OID made of a UUID, ITU-T X.667: unique without
  registration); it is non-critical because it only grants: a verifier that ignores it treats
  the router as a plain node, which is the safe reading. ``openssl x509 -text`` shows it as an
  unknown extension with the hex of the INTEGER.

Verification order (each failure is a :class:`CertificateError` whose ``reason`` is a drop
counter name): parses and carries an Ed25519 key (``cert_malformed``), signed by this CA
(``cert_bad_signature``), is a leaf (``cert_not_node``), belongs to this network
(``cert_wrong_network``), carries the node id its key implies (``cert_node_id_mismatch``), and
is not on the CA's revocation list (``cert_revoked``), and finally is valid at ``now``
(``cert_expired`` / ``cert_not_yet_valid``). Everything but revocation and time depends only on
the DER bytes, so successes are cached by DER (every handshake verifies); the revocation and
time checks run on every call, so a cached certificate is refused the moment a CRL revokes it.

Revocation: the CA signs an ordinary X.509 CRL (``openssl crl -text`` reads it) listing revoked
serial numbers, with a CRL number that only grows (:meth:`NetworkCA.make_crl`, used by
``ipop-config revoke``). :meth:`CaTrust.apply_crl` installs one only if the CA signed it and its
number is larger than the one held; each CRL lists every revocation still in force, so the
newest replaces the older ones and nothing merges. Time does not order CRLs (a node with a wrong
clock must still learn revocations): the number does, and ``nextUpdate`` is informative only.

Pure: no clock, no I/O. Time comes in as ``now`` (UNIX seconds). Key generation and certificate
serial numbers use the cryptography library's own randomness, which the project rules allow.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from ipop.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from ipop.timing import CA_DEFAULT_DAYS, CERT_BACKDATE_S, NODE_CERT_DEFAULT_DAYS
from ipop.types import ID_BYTES, NodeId

__all__ = [
    "MAX_ROUTER_HOSTS",
    "ROUTER_HOSTS_OID",
    "CaTrust",
    "CertificateError",
    "CrlError",
    "NetworkCA",
    "NodeCertificate",
    "NodeIdentity",
    "VerifiedCrl",
    "cert_serial",
    "node_id_for",
    "pem_damage",
    "validate_hostname",
    "validate_network",
    "validate_node_name",
    "verify_signature",
]

PUBLIC_KEY_BYTES = 32
# A CRL's nextUpdate, days ahead: X.509 requires one; ipop nodes never expire a CRL.
CRL_DEFAULT_DAYS = 365
SIGNATURE_BYTES = 64
URI_SCHEME = "ipop"
# "ipop router max-hosts" (2.25 + a random UUID: see the module docstring).
ROUTER_HOSTS_OID = x509.ObjectIdentifier("2.25.210263593634220378237597126249926011785")
# The largest LAN a router certificate may vouch for (router.max_hosts' own upper bound).
MAX_ROUTER_HOSTS = 65536
# Verified certificates remembered by DER; one per live peer is plenty, the bound keeps a peer
# that cycles through many valid certificates from growing memory without limit.
VERIFY_CACHE_SIZE = 1024
_DAY_S = 86400.0

# A DNS label: what a hostname must be to become <hostname>.<dns suffix>.
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# "c064001002" is the always-resolvable name of 100.64.1.2 (DNS is case-insensitive), so a
# fixed hostname of that shape would shadow or be shadowed by an address name.
_ADDRESS_NAME_RE = re.compile(r"^c[0-9]{9}$")
# Node names become certificate CNs and file names (NAME.bundle.toml): no slashes, no spaces.
_NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

CERT_REASONS = (
    "cert_malformed",
    "cert_bad_signature",
    "cert_expired",
    "cert_not_yet_valid",
    "cert_wrong_network",
    "cert_node_id_mismatch",
    "cert_not_node",
    "cert_revoked",
)
# Why a CRL (from a bundle, a file, an operator or a peer) is refused; drop counter names.
CRL_REASONS = (
    "crl_malformed",
    "crl_too_large",
    "crl_bad_signature",
    "crl_stale",
)
# A CRL entry is ~40 bytes of DER: 16 KiB holds ~380 revocations still in force (expired
# certificates leave the list), travels in 16 link messages and keeps a bundle well inside
# its 25 KB budget. Anything larger is refused before parsing.
MAX_CRL_BYTES = 16_384
# CRL numbers travel as u64 (ipop.overlay.messages, TYPE_CRL); the CA counts up from 1.
MAX_CRL_NUMBER = (1 << 63) - 1


class CertificateError(RemoteProtocolError):
    """A certificate a peer presented (or a bundle holds) is refused; ``reason`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in CERT_REASONS:
            raise LocalProtocolError(f"unknown certificate error reason {reason!r}")
        super().__init__(reason, detail)


class CrlError(RemoteProtocolError):
    """A revocation list is refused (not ours, forged, older than the one held); see reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in CRL_REASONS:
            raise LocalProtocolError(f"unknown CRL error reason {reason!r}")
        super().__init__(reason, detail)


def node_id_for(public_key_raw: bytes) -> NodeId:
    """The overlay address of the node whose raw Ed25519 public key is ``public_key_raw``."""
    if len(public_key_raw) != PUBLIC_KEY_BYTES:
        raise LocalProtocolError(f"Ed25519 public key must be 32 bytes, got {len(public_key_raw)}")
    return NodeId.from_bytes(hashlib.sha256(public_key_raw).digest()[:ID_BYTES])


def verify_signature(public_key_raw: bytes, signature: bytes, data: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``data`` by that key. Never raises.

    Keys must come from a verified certificate: like every RFC 8032 verifier, this accepts
    forgeries under small-order keys (all zeros, say), which only a CA could hand out.
    """
    if (
        not isinstance(public_key_raw, bytes | bytearray | memoryview)
        or not isinstance(signature, bytes | bytearray | memoryview)
        or not isinstance(data, bytes | bytearray | memoryview)
        or len(public_key_raw) != PUBLIC_KEY_BYTES
        or len(signature) != SIGNATURE_BYTES
    ):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key_raw)).verify(
            bytes(signature), bytes(data)
        )
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# --- name validation (shared with bundle.py and ipop-config) ---------------------------------


def validate_network(network: str, *, key: str = "network") -> str:
    """A network name: one DNS-label-like token (it appears in URIs and DHT keys)."""
    if not isinstance(network, str) or not _LABEL_RE.match(network):
        raise ConfigError(
            key,
            f"{network!r} is not a valid network name",
            "use 1-63 lowercase letters, digits and inner hyphens, e.g. 'lab-net'",
        )
    return network


def validate_hostname(hostname: str, *, key: str = "hostname") -> str:
    """A fixed hostname: one DNS label that is not shaped like an address name (c064001002)."""
    fix = "use 1-63 lowercase letters, digits and inner hyphens, e.g. 'alice-laptop'"
    if not isinstance(hostname, str) or not _LABEL_RE.match(hostname):
        raise ConfigError(key, f"{hostname!r} is not a valid hostname label", fix)
    if _ADDRESS_NAME_RE.match(hostname):
        raise ConfigError(
            key, f"{hostname!r} would collide with the address names C<9 digits>", fix
        )
    return hostname


def validate_node_name(name: str, *, key: str = "name") -> str:
    """A node name: the certificate CN and the bundle's file name."""
    if not isinstance(name, str) or not _NODE_NAME_RE.match(name):
        raise ConfigError(
            key,
            f"{name!r} is not a valid node name",
            "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCertificate:
    """A node certificate that parsed and verified against a CA (or that a CA just signed)."""

    der: bytes = field(repr=False)
    node_id: NodeId
    network: str
    name: str
    hostname: str | None
    public_key_raw: bytes = field(repr=False)
    not_before: float
    not_after: float
    # 0: a plain node. N > 0: a router allowed to hold records for N plain LAN hosts.
    router_hosts: int = 0

    @property
    def is_router(self) -> bool:
        return self.router_hosts > 0

    def pem(self) -> bytes:
        return x509.load_der_x509_certificate(self.der).public_bytes(serialization.Encoding.PEM)

    def valid_at(self, now: float) -> bool:
        return self.not_before <= now <= self.not_after


def pem_damage(exc: Exception, what: str) -> str:
    """A sentence for a PEM ``what`` ("certificate", "private key") that did not parse.

    The parser's own text (an ASN.1 dump such as ``ParseError { kind: ShortData ... }``) tells
    a user nothing; what they need is which way the text is broken.
    """
    text = str(exc)
    low = text.lower()
    if "password" in low or ("encrypted" in low and "may be encrypted" not in low):
        return f"is an encrypted {what}: ipop needs it without a passphrase"
    if "invaliddata" in low or "base64" in low:
        return "is damaged: its PEM text has characters that are not base64 (edited by hand?)"
    if "unable to load pem" in low or "framing" in low:
        return f"is not a PEM {what}: the '-----BEGIN' / '-----END' lines are missing or changed"
    if "short" in low or "asn.1" in low or "asn1" in low or "parse" in low:
        return (
            f"is damaged: the {what} inside its PEM text is cut short or changed "
            "(lines edited, removed or wrapped differently?)"
        )
    return (
        f"is not a usable PEM {what} ({text.splitlines()[0][:80] if text else type(exc).__name__})"
    )


def _dt(ts: float) -> datetime:
    # X.509 times have whole seconds; truncate here so what we sign is what we read back.
    return datetime.fromtimestamp(int(ts), tz=UTC)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _node_uri(network: str, node_id: NodeId) -> str:
    return f"{URI_SCHEME}://{network}/{node_id.hex()}"


def _serial_of(der: bytes) -> int:
    return int(x509.load_der_x509_certificate(der).serial_number)


def cert_serial(cert: NodeCertificate) -> int:
    """The X.509 serial number of ``cert``: what a CRL names (ipop-config's register keeps it)."""
    return _serial_of(cert.der)


def _single_attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attrs = name.get_attributes_for_oid(oid)
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


def _der_uint(n: int) -> bytes:
    """DER INTEGER of a non-negative ``n`` (what the router extension holds)."""
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")  # +1: a leading 0 keeps the sign bit 0
    return bytes((0x02, len(body))) + body


def _router_hosts(extensions: x509.Extensions) -> int:
    """The router extension's host count, 0 if absent; CertificateError if malformed."""
    try:
        ext = extensions.get_extension_for_oid(ROUTER_HOSTS_OID).value
    except x509.ExtensionNotFound:
        return 0
    raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
    # Strict DER: tag 2, short length, minimal big-endian body, positive, within the bound.
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2 or raw[1] > 4:
        raise CertificateError("cert_malformed", "bad router extension")
    n = int.from_bytes(raw[2:], "big")
    if raw[2] & 0x80 or _der_uint(n) != raw or not 1 <= n <= MAX_ROUTER_HOSTS:
        raise CertificateError("cert_malformed", "bad router host count")
    return n


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    """A revocation list that parsed and verified against a CA (not yet installed)."""

    der: bytes = field(repr=False)
    number: int
    serials: frozenset[int] = field(repr=False)
    last_update: float


def _load_crl_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The DER of a CRL given as DER or PEM; CrlError if it is neither or too large."""
    raw = bytes(data)
    if len(raw) > 2 * MAX_CRL_BYTES:  # PEM is ~4/3 of DER plus armour
        raise CrlError("crl_too_large", f"{len(raw)} bytes")
    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            raw = x509.load_pem_x509_crl(raw).public_bytes(serialization.Encoding.DER)
        except Exception as exc:
            raise CrlError("crl_malformed", f"PEM: {type(exc).__name__}: {exc}") from None
    if len(raw) > MAX_CRL_BYTES:
        raise CrlError("crl_too_large", f"{len(raw)} bytes of DER, at most {MAX_CRL_BYTES}")
    return raw


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
        # DER -> (verified certificate, its serial number): the serial is what a CRL names.
        self._cache: dict[bytes, tuple[NodeCertificate, int]] = {}
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
        other._cache = dict(self._cache)
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
    def public_key_raw(self) -> bytes:
        return _raw_public(self._public_key)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate's DER, hex: tells two networks of one name apart."""
        der = self._cert.public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()

    def verify(self, der: bytes | bytearray | memoryview, *, now: float) -> NodeCertificate:
        """Check a node certificate (DER) against this CA at ``now``; raise CertificateError."""
        cert = self.verify_untimed(der)
        # The CA's own window bounds every certificate it signed.
        if now > min(cert.not_after, self.not_after):
            raise CertificateError("cert_expired", f"{cert.name} expired or its CA did")
        if now < cert.not_before:
            raise CertificateError("cert_not_yet_valid", f"{cert.name} starts later")
        return cert

    def verify_untimed(self, der: bytes | bytearray | memoryview) -> NodeCertificate:
        """Every check of :meth:`verify` except the validity window (bundles check it later)."""
        if type(der) is not bytes:
            # Parsers hand us memoryviews and bytearrays, which cannot key the cache.
            if not isinstance(der, bytearray | memoryview):
                raise CertificateError("cert_malformed", f"not bytes: {type(der).__name__}")
            der = bytes(der)
        hit = self._cache.get(der)
        if hit is None:
            hit = self._verify_uncached(der)
            if len(self._cache) >= VERIFY_CACHE_SIZE:
                # Evict the oldest entry (dicts keep insertion order).
                del self._cache[next(iter(self._cache))]
            self._cache[der] = hit
        cert, serial = hit
        # After the cache on purpose: a CRL that arrives later must refuse cached certificates.
        if serial in self._revoked:
            raise CertificateError("cert_revoked", f"{cert.name} (serial {serial:x}) is revoked")
        return cert

    def is_revoked(self, cert: NodeCertificate) -> bool:
        """Whether the CRL in force lists ``cert`` (a certificate this CA verified)."""
        if not self._revoked:
            return False
        hit = self._cache.get(cert.der)
        serial = hit[1] if hit is not None else _serial_of(cert.der)
        return serial in self._revoked

    # --- revocation ------------------------------------------------------------------------

    def check_crl(self, data: bytes | bytearray | memoryview) -> VerifiedCrl:
        """Parse and verify a CRL (DER or PEM) against this CA; CrlError if refused.

        Changes nothing: :meth:`apply_crl` installs. Costs one parse and one Ed25519 check.
        """
        der = _load_crl_bytes(data)
        try:
            crl = x509.load_der_x509_crl(der)
            sig_oid = crl.signature_algorithm_oid
            issuer = crl.issuer
            last_update = crl.last_update_utc.timestamp()
            number_ext = crl.extensions.get_extension_for_class(x509.CRLNumber).value
            serials = frozenset(entry.serial_number for entry in crl)
        except x509.ExtensionNotFound:
            raise CrlError("crl_malformed", "no CRL number") from None
        except Exception as exc:
            # Foreign parser fed peer bytes (see _verify_uncached): any failure is garbage.
            raise CrlError("crl_malformed", f"{type(exc).__name__}: {exc}") from None
        if sig_oid != SignatureAlgorithmOID.ED25519 or issuer != self._cert.subject:
            raise CrlError("crl_bad_signature", "not signed by this network's CA")
        if not crl.is_signature_valid(self._public_key):
            raise CrlError("crl_bad_signature", "signature does not verify")
        number = number_ext.crl_number
        if not 1 <= number <= MAX_CRL_NUMBER:
            raise CrlError("crl_malformed", f"CRL number {number} out of range")
        return VerifiedCrl(der=der, number=number, serials=serials, last_update=last_update)

    def apply_crl(self, data: bytes | bytearray | memoryview, *, now: float) -> VerifiedCrl:
        """Install a CRL (DER or PEM) if the CA signed it and it is newer than the one held.

        Raises CrlError (``crl_stale`` for a number not above :attr:`crl_number`) and then
        changes nothing. Returns the installed list; callers then end sessions of certificates
        it revokes (:meth:`ipop.link.layer.LinkLayer.close_revoked`).
        """
        crl = self.check_crl(data)
        if crl.number <= self.crl_number:
            raise CrlError("crl_stale", f"number {crl.number}, holding {self.crl_number}")
        self._revoked = crl.serials
        self.crl_number = crl.number
        self.crl_der = crl.der
        self.crl_applied_at = now
        return crl

    def _verify_uncached(self, der: bytes) -> tuple[NodeCertificate, int]:
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
            issuer = cert.issuer
            serial = cert.serial_number
        except Exception as exc:
            # The X.509 parser is foreign code fed peer bytes: besides ValueError it was seen
            # raising KeyError on a mutated name-attribute tag. Any failure there is garbage.
            raise CertificateError("cert_malformed", f"{type(exc).__name__}: {exc}") from None
        if not isinstance(public_key, Ed25519PublicKey):
            raise CertificateError("cert_malformed", "node key is not Ed25519")
        if sig_oid != SignatureAlgorithmOID.ED25519:
            raise CertificateError("cert_bad_signature", "not an Ed25519 signature")
        if issuer != self._cert.subject:
            raise CertificateError("cert_bad_signature", "issued by another CA")
        try:
            self._public_key.verify(signature, tbs)
        except InvalidSignature:
            raise CertificateError("cert_bad_signature", "signature does not verify") from None
        # From here on the CA vouched for every byte, so oddities are our CA's, not forgery.
        try:
            bc = extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise CertificateError("cert_not_node", "no basicConstraints") from None
        if bc.ca:
            raise CertificateError("cert_not_node", "a CA certificate, not a node's")
        network = _single_attr(subject, NameOID.ORGANIZATION_NAME)
        if network != self.network:
            raise CertificateError("cert_wrong_network", f"O={network!r}, want {self.network!r}")
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
        public_key_raw = _raw_public(public_key)
        node_id = node_id_for(public_key_raw)
        prefix = f"{URI_SCHEME}://"
        uri = uris[0]
        if not uri.startswith(prefix) or uri.count("/") != 3:
            raise CertificateError("cert_malformed", f"bad node URI {uri!r}")
        uri_network, _, uri_id = uri[len(prefix) :].partition("/")
        if uri_network != self.network:
            raise CertificateError("cert_wrong_network", f"URI network {uri_network!r}")
        if uri_id != node_id.hex():
            raise CertificateError("cert_node_id_mismatch", f"URI says {uri_id[:8]!r}")
        hostname = dns_names[0] if dns_names else None
        if hostname is not None and not _LABEL_RE.match(hostname):
            raise CertificateError("cert_malformed", f"bad hostname {hostname!r}")
        router_hosts = _router_hosts(extensions)
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


class NetworkCA:
    """A network's certificate authority: the Ed25519 key that admits nodes. Never in bundles."""

    __slots__ = ("_cert", "_key", "_trust")

    def __init__(self, key: Ed25519PrivateKey, cert: x509.Certificate) -> None:
        """Use :meth:`create` or :meth:`load`."""
        self._key = key
        self._cert = cert
        self._trust = CaTrust(cert)

    @classmethod
    def create(cls, network: str, *, now: float, days: int = CA_DEFAULT_DAYS) -> NetworkCA:
        validate_network(network)
        if days < 1:
            raise ConfigError("days", f"{days} is not a positive number of days", "use >= 1")
        key = Ed25519PrivateKey.generate()
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
        if _raw_public(key.public_key()) != trust.public_key_raw:
            raise ConfigError("ca.key", "does not match ca.crt", "restore the matching pair")
        return cls(key, trust._cert)

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
    ) -> NodeCertificate:
        """Admit the node with this key; its certificate never outlives the CA.

        ``router_hosts`` > 0 makes it a router certificate for that many LAN hosts.
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
            .serial_number(x509.random_serial_number())
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
                x509.UnrecognizedExtension(ROUTER_HOSTS_OID, _der_uint(router_hosts)),
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


class NodeIdentity:
    """A node's private key, its certificate and the CA it trusts: everything to prove itself."""

    __slots__ = ("cert", "private_key", "public_key_raw", "trust")

    def __init__(self, private_key: Ed25519PrivateKey, cert: NodeCertificate, trust: CaTrust):
        public_key_raw = _raw_public(private_key.public_key())
        if public_key_raw != cert.public_key_raw:
            raise LocalProtocolError("private key does not match the certificate")
        if cert.network != trust.network:
            raise LocalProtocolError("certificate belongs to another network than the CA")
        self.private_key = private_key
        self.cert = cert
        self.trust = trust
        self.public_key_raw = public_key_raw

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
    ) -> NodeIdentity:
        """A fresh key signed by ``ca`` (what ``ipop-config node`` and the test factories do)."""
        key = Ed25519PrivateKey.generate()
        cert = ca.sign_node(
            _raw_public(key.public_key()),
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
        if _raw_public(key.public_key()) != cert.public_key_raw:
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
