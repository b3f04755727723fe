"""End-to-end origin authentication of routed overlay messages.

Owns: authenticating the routed messages this node originates, checking the ones it delivers
(or learns a routing hint from), the cache of verified member certificates and pairwise keys
those checks use, and the rule for when a message carries its source's certificate.

Why: a link authenticates only the peer at its other end. A routed message crosses several
links, and before this any forwarder could write any ``src`` into one, so the receiver took a
DHT store, a CONNECT_TO_ME or an IP packet as coming from a node that never sent it (issue 13,
finding 1), and an insider could plant ids it made up in other nodes' routing state (finding 2).

Theory of operation:

- What is authenticated: (EXACT, kind, ts, src, dst, payload)
  (:func:`ipop.overlay.messages.routed_signed_bytes`). Forwarders rewrite hops, ttl and via and
  pass the rest on unchanged; they cannot forge or alter what the receiver acts on.
- Two ways to authenticate it, chosen per message by the source:
  * a **pairwise MAC** (16 bytes, keyed BLAKE2s) when the message is EXACT and we hold the
    destination's certificate. The key comes from static X25519 between the two nodes'
    certified keys: each node's Ed25519 key is mapped to its X25519 form (the scalar of
    RFC 8032's key expansion; the public point through the birational map
    u = (1 + y) / (1 - y), RFC 7748 section 4.1), so no certificate changes. Only the two ends
    can make it; it costs ~1 us a message and one X25519 (~27 us) per pair, once;
  * an **Ed25519 signature** (64 bytes) otherwise: toward "the node closest to" a key, or to a
    node whose certificate we do not hold yet. ~27 us to make, ~85 us to check. Forwarders can
    check a signature too, which is how a reverse-path hint is admitted (see the overlay node).
  Measured with ``ipop-sim overlay`` at 150 nodes: signatures alone took a fifth of the run's
  CPU; with pairwise MACs for the exact traffic they take (see README).
- The receiver needs the source's certificate: it has it when it holds (or held) a link to the
  source, whose handshake verified it, or from an earlier message; otherwise the message brings
  it. A message carries our certificate whenever the whole still fits in one datagram
  (``CERT_BUDGET_BYTES``); only large IP packets routed before a shortcut is up go without, and
  the shortcut's CONNECT_TO_ME, sent before them, carries it.
- A certificate is verified against the network's CA (chain, validity window and, through
  :class:`ipop.identity.CaTrust`, revocation) before it enters the cache, and the cache is
  bounded (least recently used out). The node id must be the hash of the certified key, so no
  certificate can speak for another id, and ids nobody was certified for never verify.
- ``ts`` bounds replays by forwarders to ``timing.ROUTED_MAX_AGE_S`` either side of our clock;
  within it a forwarder may replay what it carried (upper layers are idempotent for it: DHT
  records carry versions, CONNECT_TO_ME tokens are single-use, IP is IP).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ipop import timing
from ipop.identity import CaTrust, CertificateError, NodeCertificate, NodeIdentity
from ipop.overlay.messages import (
    FLAG_EXACT,
    MAC_BYTES,
    MAX_CERT_BYTES,
    SIG_BYTES,
    Routed,
    routed_signed_bytes,
)
from ipop.types import NodeId

__all__ = [
    "CERT_BUDGET_BYTES",
    "DROP_REASONS",
    "ROUTED_OVERHEAD",
    "OriginAuth",
    "x25519_public_from_ed25519",
]

# A routed message carries its source's certificate while the encoded whole stays within this:
# the 1,443 bytes a link datagram holds on a 1,500-byte path, less some slack.
CERT_BUDGET_BYTES: Final = 1400
# Verified certificates (and the pairwise keys derived from them) kept.
CERT_CACHE_SIZE: Final = 4096
_ROUTED_HEAD_BYTES: Final = 45  # type .. kind, src, dst
# The most a routed message we originate (no VIA) adds around its payload: header, ts and a
# signature. A certificate rides along only within CERT_BUDGET_BYTES, so never past this on a
# payload too big for the budget.
ROUTED_OVERHEAD: Final = _ROUTED_HEAD_BYTES + 4 + 64
_PAIR_INFO: Final = b"ipop routed mac v1"

# Every reason this module refuses a routed message for; the overlay counts them in its drops.
DROP_REASONS: Final = frozenset(
    {
        "origin_unknown",  # no certificate for src: none attached, none cached
        "origin_bad_cert",  # the attached certificate does not verify against our CA
        "origin_cert_mismatch",  # the certificate is another node's (its key hashes elsewhere)
        "origin_stale",  # ts outside ROUTED_MAX_AGE_S of our clock
        "origin_bad_sig",  # the signature or MAC does not verify under src's certified key
        "origin_not_ours",  # a MAC for another node: only its destination can check it
        "origin_revoked",  # src's certificate was revoked since we cached it
        "origin_expired",  # src's certificate expired since we cached it
    }
)

_P25519: Final = 2**255 - 19


def x25519_public_from_ed25519(ed_public: bytes) -> bytes:
    """The X25519 form of an Ed25519 public key: u = (1 + y) / (1 - y) mod p (RFC 7748 4.1).

    Raises ValueError for a point whose map is undefined (y = 1, the identity: no certified key).
    """
    if len(ed_public) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    y = int.from_bytes(ed_public, "little") & ((1 << 255) - 1)
    if (1 - y) % _P25519 == 0:
        raise ValueError("the identity point has no X25519 form")
    u = (1 + y) * pow(1 - y, -1, _P25519) % _P25519
    return u.to_bytes(32, "little")


def _x25519_private_from_identity(identity: NodeIdentity) -> X25519PrivateKey:
    """Our X25519 key: the scalar RFC 8032 expands the Ed25519 seed to (X25519 clamps it)."""
    seed = identity.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=MAC_BYTES).digest()


@dataclass(slots=True)
class _Member:
    """A member whose routed messages we check: its certificate, key and pair key."""

    cert: NodeCertificate
    key: Ed25519PublicKey
    pair_key: bytes | None = None  # derived on first use


class OriginAuth:
    """Authenticates our routed messages and checks others' (see the module docstring)."""

    def __init__(
        self,
        identity: NodeIdentity,
        *,
        trust: CaTrust | None = None,
        revoked: Callable[[NodeCertificate], bool] | None = None,
    ) -> None:
        self.local_id = identity.node_id
        self._identity = identity
        self._trust = trust if trust is not None else identity.trust
        self._cert = identity.cert.der
        self._revoked = revoked
        self._x25519 = _x25519_private_from_identity(identity)
        self._members: collections.OrderedDict[NodeId, _Member] = collections.OrderedDict()
        # What the checks cost (for measurements and tests).
        self.stats: collections.Counter[str] = collections.Counter()

    # --- our messages -----------------------------------------------------------------------

    def routed(
        self,
        flags: int,
        ttl: int,
        kind: int,
        dst: NodeId,
        via: NodeId | None,
        payload: bytes,
        *,
        now: float,
        cert_budget: int | None = None,
    ) -> Routed:
        """A new routed message from us, authenticated, with our certificate if the whole
        stays within ``cert_budget`` bytes (default CERT_BUDGET_BYTES; less on a route known
        to carry less, see ipop.core)."""
        ts = int(now)
        signed = routed_signed_bytes(flags, kind, ts, self.local_id, dst, payload)
        member = self._members.get(dst) if flags & FLAG_EXACT else None
        pair_key = None if member is None else self._pair_key(member)
        if pair_key is not None:
            sig = _mac(pair_key, signed)
            self.stats["mac_made"] += 1
        else:
            sig = self._identity.sign(signed)
            self.stats["sig_made"] += 1
        size = _ROUTED_HEAD_BYTES + (20 if via is not None else 0) + len(payload) + 4 + len(sig)
        budget = CERT_BUDGET_BYTES if cert_budget is None else cert_budget
        cert = self._cert if size + 2 + len(self._cert) <= budget else b""
        return Routed(flags, 0, ttl, kind, self.local_id, dst, via, payload, ts, sig, cert)

    # --- others' messages -------------------------------------------------------------------

    def learn(self, cert: NodeCertificate) -> None:
        """A certificate the link layer verified in a handshake: its holder may route to us."""
        member = self._members.get(cert.node_id)
        if member is not None and member.cert.der == cert.der:
            self._members.move_to_end(cert.node_id)
            return
        self._remember(cert)

    def knows(self, node: NodeId) -> bool:
        return node in self._members

    def forget(self, node: NodeId) -> None:
        """Drop ``node``'s certificate (revoked, say): its messages need a fresh one."""
        self._members.pop(node, None)

    def check(self, msg: Routed, *, now: float) -> str | None:
        """None if ``msg`` is authentically from ``msg.src``; else the reason it is not."""
        if abs(msg.ts - now) > timing.ROUTED_MAX_AGE_S:
            return "origin_stale"
        mac = len(msg.sig) == MAC_BYTES
        if mac and msg.dst != self.local_id:
            return "origin_not_ours"
        member = self._members.get(msg.src)
        if msg.cert and (member is None or member.cert.der != msg.cert):
            # A certificate we have not verified yet (or a newer one of a known node).
            if len(msg.cert) > MAX_CERT_BYTES:
                return "origin_bad_cert"
            try:
                cert = self._trust.verify(msg.cert, now=now)
            except CertificateError as exc:
                return "origin_revoked" if exc.reason == "cert_revoked" else "origin_bad_cert"
            if cert.node_id != msg.src:
                return "origin_cert_mismatch"
            member = self._remember(cert)
        if member is None:
            return "origin_unknown"
        if now > member.cert.not_after:
            self._members.pop(msg.src, None)
            return "origin_expired"
        if self._revoked is not None and self._revoked(member.cert):
            self._members.pop(msg.src, None)
            return "origin_revoked"
        if mac:
            self.stats["mac_checked"] += 1
            key = self._pair_key(member)
            if key is None or not hmac.compare_digest(_mac(key, msg.signed_bytes()), msg.sig):
                return "origin_bad_sig"
        else:
            self.stats["sig_checked"] += 1
            if len(msg.sig) != SIG_BYTES:
                return "origin_bad_sig"
            try:
                member.key.verify(msg.sig, msg.signed_bytes())
            except InvalidSignature:
                return "origin_bad_sig"
        self._members.move_to_end(msg.src)
        return None

    def _pair_key(self, member: _Member) -> bytes | None:
        """Our pairwise MAC key with ``member``; None if its key has no usable X25519 form."""
        key = member.pair_key
        if key is None:
            # Static-static X25519 between two certified keys, bound to both ids in a fixed
            # order, so both ends derive the same key and no other pair shares it.
            ids = sorted((self.local_id.to_bytes(), member.cert.node_id.to_bytes()))
            try:
                peer = X25519PublicKey.from_public_bytes(
                    x25519_public_from_ed25519(member.cert.public_key_raw)
                )
                shared = self._x25519.exchange(peer)  # ValueError on a low-order point
            except ValueError:
                return None
            key = HKDF(hashes.SHA256(), 32, salt=None, info=_PAIR_INFO + b"".join(ids)).derive(
                shared
            )
            member.pair_key = key
            self.stats["pair_keys"] += 1
        return key

    def _remember(self, cert: NodeCertificate) -> _Member:
        member = _Member(cert, Ed25519PublicKey.from_public_bytes(cert.public_key_raw))
        self._members[cert.node_id] = member
        self._members.move_to_end(cert.node_id)
        while len(self._members) > CERT_CACHE_SIZE:
            self._members.popitem(last=False)
        return member
