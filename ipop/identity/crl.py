"""Revocation lists as data: why one is refused (:data:`CRL_REASONS`, :class:`CrlError`), their
bounds, and :class:`VerifiedCrl`, one that parsed and verified (not yet installed).

Revocation: the CA signs an ordinary X.509 CRL (``openssl crl -text`` reads it) listing revoked
serial numbers, with a CRL number that only grows (:meth:`NetworkCA.make_crl`, used by
``ipop-config revoke``). :meth:`CaTrust.apply_crl` installs one only if the CA signed it and its
number is larger than the one held; each CRL lists every revocation still in force, so the
newest replaces the older ones and nothing merges. Time does not order CRLs (a node with a wrong
clock must still learn revocations): the number does, and ``nextUpdate`` is informative only.

Signing is :meth:`ipop.identity.ca.NetworkCA.make_crl`; checking and installing,
:meth:`ipop.identity.trust.CaTrust.check_crl` and :meth:`~ipop.identity.trust.CaTrust.apply_crl`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import SignatureAlgorithmOID

from ipop.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CRL_DEFAULT_DAYS",
    "CRL_REASONS",
    "MAX_CRL_BYTES",
    "MAX_CRL_NUMBER",
    "CrlError",
    "VerifiedCrl",
    "load_crl_bytes",
    "verify_crl",
]

# A CRL's nextUpdate, days ahead: X.509 requires one; ipop nodes never expire a CRL.
CRL_DEFAULT_DAYS = 365


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


class CrlError(RemoteProtocolError):
    """A revocation list is refused (not ours, forged, older than the one held); see reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in CRL_REASONS:
            raise LocalProtocolError(f"unknown CRL error reason {reason!r}")
        super().__init__(reason, detail)


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    """A revocation list that parsed and verified against a CA (not yet installed)."""

    der: bytes = field(repr=False)
    number: int
    serials: frozenset[int] = field(repr=False)
    last_update: float


def load_crl_bytes(data: bytes | bytearray | memoryview) -> bytes:
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


def verify_crl(
    data: bytes | bytearray | memoryview, *, ca_key: Ed25519PublicKey, issuer: x509.Name | None
) -> VerifiedCrl:
    """Parse and verify a CRL (DER or PEM): ``ca_key`` signed it and, unless ``issuer`` is None
    (a stranger that knows the CA only by its key), its issuer is that name. CrlError if not.
    One parse and one Ed25519 check; changes nothing."""
    der = load_crl_bytes(data)
    try:
        crl = x509.load_der_x509_crl(der)
        sig_oid = crl.signature_algorithm_oid
        crl_issuer = crl.issuer
        last_update = crl.last_update_utc.timestamp()
        number_ext = crl.extensions.get_extension_for_class(x509.CRLNumber).value
        serials = frozenset(entry.serial_number for entry in crl)
    except x509.ExtensionNotFound:
        raise CrlError("crl_malformed", "no CRL number") from None
    except Exception as exc:
        # A foreign parser fed peer bytes (see ipop.identity.trust): any failure is garbage.
        raise CrlError("crl_malformed", f"{type(exc).__name__}: {exc}") from None
    if sig_oid != SignatureAlgorithmOID.ED25519 or (issuer is not None and crl_issuer != issuer):
        raise CrlError("crl_bad_signature", "not signed by this network's CA")
    if not crl.is_signature_valid(ca_key):
        raise CrlError("crl_bad_signature", "signature does not verify")
    number = number_ext.crl_number
    if not 1 <= number <= MAX_CRL_NUMBER:
        raise CrlError("crl_malformed", f"CRL number {number} out of range")
    return VerifiedCrl(der=der, number=number, serials=serials, last_update=last_update)
