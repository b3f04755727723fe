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

from ipop.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CRL_DEFAULT_DAYS",
    "CRL_REASONS",
    "MAX_CRL_BYTES",
    "MAX_CRL_NUMBER",
    "CrlError",
    "VerifiedCrl",
    "load_crl_bytes",
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
