"""Node certificates as verified: :class:`NodeCertificate`, why one is refused
(:data:`CERT_REASONS`, :class:`CertificateError`), the router extension and serial numbers.

A node certificate is ordinary X.509 so ``openssl x509 -text -noout`` reads it::

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

Checking one against a CA is :meth:`ipop.identity.trust.CaTrust.verify`; signing one is
:meth:`ipop.identity.ca.NetworkCA.sign_node`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.types import NodeId

__all__ = [
    "CERT_REASONS",
    "MAX_ROUTER_HOSTS",
    "ROUTER_HOSTS_OID",
    "URI_SCHEME",
    "CertificateError",
    "NodeCertificate",
    "cert_serial",
    "der_uint",
    "pem_damage",
    "router_hosts_of",
    "serial_of",
]

URI_SCHEME = "ipop"
# "ipop router max-hosts" (2.25 + a random UUID: see the module docstring).
ROUTER_HOSTS_OID = x509.ObjectIdentifier("2.25.210263593634220378237597126249926011785")
# The largest LAN a router certificate may vouch for (router.max_hosts' own upper bound).
MAX_ROUTER_HOSTS = 65536


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


class CertificateError(RemoteProtocolError):
    """A certificate a peer presented (or a bundle holds) is refused; ``reason`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in CERT_REASONS:
            raise LocalProtocolError(f"unknown certificate error reason {reason!r}")
        super().__init__(reason, detail)


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


def serial_of(der: bytes) -> int:
    """The X.509 serial number of a certificate's DER."""
    return int(x509.load_der_x509_certificate(der).serial_number)


def cert_serial(cert: NodeCertificate) -> int:
    """The X.509 serial number of ``cert``: what a CRL names (ipop-config's register keeps it)."""
    return serial_of(cert.der)


def der_uint(n: int) -> bytes:
    """DER INTEGER of a non-negative ``n`` (what the router extension holds)."""
    body = n.to_bytes(n.bit_length() // 8 + 1, "big")  # +1: a leading 0 keeps the sign bit 0
    return bytes((0x02, len(body))) + body


def router_hosts_of(extensions: x509.Extensions) -> int:
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
    if raw[2] & 0x80 or der_uint(n) != raw or not 1 <= n <= MAX_ROUTER_HOSTS:
        raise CertificateError("cert_malformed", "bad router host count")
    return n
