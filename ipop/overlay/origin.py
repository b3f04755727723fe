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
  * **sealed under the pairwise key** when the message is EXACT and we hold the destination's
    certificate. The key comes from static X25519 between the two nodes' certified keys: each
    node's Ed25519 key is mapped to its X25519 form (the scalar of RFC 8032's key expansion;
    the public point through the birational map u = (1 + y) / (1 - y), RFC 7748 section 4.1),
    so no certificate changes. HKDF turns the shared secret into an AES-256-GCM key (info
    ``ipop routed seal v1`` and both ids). The payload is encrypted with a random 96-bit
    nonce, and the header fields above (EXACT, kind, ts, src, dst) are its associated data;
    the wire carries nonce || ciphertext as the payload and the 16-byte tag as the auth
    (the SEALED flag, :mod:`ipop.overlay.messages`). Only the two ends can make or open it:
    forwarders (every node on the ring path, overlay-only nodes among them) carry bytes they
    cannot read (DESIGN.md section 4). Nonces are random, not counters, because the key is
    static: it outlives restarts, and a counter would start again at zero. They come from the
    owner's ``random_bytes`` (the OS's in the daemon, the seeded run's in the simulator);
    2^32 messages per pair keep a collision below 2^-32 (NIST SP 800-38D, 8.3). The X25519
    (~27 us) is once per pair; a seal or an open costs ~4 us of Python at 100 or 1,400 bytes,
    against ~2.5 and ~5 us for the older MAC (``python -m ipop.tools.bench.routed_seal``).
    So every message that gets the pair key is sealed, whatever its kind (IP, DHT replica
    calls, pings, route probes, CONNECT_TO_ME): one rule, at about the MAC's cost;
  * an **Ed25519 signature** (64 bytes) otherwise: toward "the node closest to" a key, or to a
    node whose certificate we do not hold yet. ~27 us to make, ~85 us to check. Forwarders can
    check a signature too, which is how a reverse-path hint is admitted (see the overlay node).
    A signed message travels in the clear, so some kinds (``sealed_kinds``: IP) are refused
    at delivery unless sealed, and NodeCore never routes them without the pairwise key
    (:meth:`OriginAuth.sealable`; :meth:`OriginAuth.learn_der` takes the certificate from the
    DHT record that named the destination, so the first packet can be sealed).
  Earlier nodes authenticated the pairwise case with a 16-byte BLAKE2s MAC over the clear
  payload; that form still checks (kinds outside ``sealed_kinds``) but is no longer made.
  Measured with ``ipop-sim overlay`` at 150 nodes: signatures alone took a fifth of the run's
  CPU; with the pairwise form for the exact traffic they take (see README).
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

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ipop import timing
from ipop.identity import CaTrust, CertificateError, NodeCertificate, NodeIdentity
from ipop.overlay.messages import (
    FLAG_EXACT,
    FLAG_SEALED,
    IP_KINDS,
    MAC_BYTES,
    MAX_CERT_BYTES,
    SEAL_NONCE_BYTES,
    SIG_BYTES,
    Routed,
    routed_signed_bytes,
)
from ipop.types import NodeId

__all__ = [
    "CERT_BUDGET_BYTES",
    "DROP_REASONS",
    "ROUTED_OVERHEAD",
    "ROUTED_SEALED_OVERHEAD",
    "SEALED_KINDS",
    "OriginAuth",
    "pairwise_mac",
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
ROUTED_OVERHEAD: Final = _ROUTED_HEAD_BYTES + 4 + SIG_BYTES
# What a sealed one adds (header, nonce, ts, tag): the least any routed message of ours adds.
ROUTED_SEALED_OVERHEAD: Final = _ROUTED_HEAD_BYTES + SEAL_NONCE_BYTES + 4 + MAC_BYTES
_PAIR_INFO: Final = b"ipop routed mac v1"
# A separate key from the same X25519 secret: the MAC key never doubles as a cipher key.
_SEAL_INFO: Final = b"ipop routed seal v1"
# Kinds delivered only sealed: a signed (clear) one could have been read, or written, on the way.
# Both IP kinds, the tagged one of a node in several networks (KIND_IP_NET) as plain KIND_IP.
SEALED_KINDS: Final = IP_KINDS

# Every reason this module refuses a routed message for; the overlay counts them in its drops.
DROP_REASONS: Final = frozenset(
    {
        "origin_unknown",  # no certificate for src: none attached, none cached
        "origin_bad_cert",  # the attached certificate does not verify against our CA
        "origin_cert_mismatch",  # the certificate is another node's (its key hashes elsewhere)
        "origin_stale",  # ts outside ROUTED_MAX_AGE_S of our clock
        "origin_bad_sig",  # the signature or MAC does not verify under src's certified key
        "origin_not_ours",  # a MAC or seal for another node: only its destination checks it
        "origin_revoked",  # src's certificate was revoked since we cached it
        "origin_expired",  # src's certificate expired since we cached it
        "origin_unsealed",  # a kind that must arrive sealed (IP) came signed or MAC'd in clear
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


def pairwise_mac(key: bytes, data: bytes) -> bytes:
    """The older pairwise form's MAC of ``data`` (checked, no longer made; see the module
    docstring)."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_BYTES).digest()


@dataclass(slots=True)
class _Member:
    """A member whose routed messages we check: its certificate, key and pair keys."""

    cert: NodeCertificate
    key: Ed25519PublicKey
    pair_key: bytes | None = None  # the (older) MAC key, derived on first use
    seal: AESGCM | None = None  # the sealing key, derived on first use


class OriginAuth:
    """Authenticates our routed messages and checks others' (see the module docstring)."""

    def __init__(
        self,
        identity: NodeIdentity,
        *,
        trust: CaTrust | None = None,
        revoked: Callable[[NodeCertificate], bool] | None = None,
        # Where seal nonces come from: the OS's in the daemon, the run's rng in a simulation.
        random_bytes: Callable[[int], bytes],
        sealed_kinds: frozenset[int] = SEALED_KINDS,
    ) -> None:
        self.local_id = identity.node_id
        self._identity = identity
        self._trust = trust if trust is not None else identity.trust
        self._cert = identity.cert.der
        self._revoked = revoked
        # Never the same nonce twice under one pair key (see the module docstring).
        self._random_bytes = random_bytes
        self._sealed_kinds = sealed_kinds
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
        """A new routed message from us, sealed or signed (module docstring), with our
        certificate if the whole stays within ``cert_budget`` bytes (default CERT_BUDGET_BYTES;
        less on a route known to carry less, see ipop.core)."""
        ts = int(now)
        seal = self._sealer(dst) if flags & FLAG_EXACT else None
        if seal is not None:
            flags |= FLAG_SEALED
            nonce = self._random_bytes(SEAL_NONCE_BYTES)
            aad = routed_signed_bytes(flags, kind, ts, self.local_id, dst, b"")
            sealed = seal.encrypt(nonce, payload, aad)
            payload, sig = nonce + sealed[:-MAC_BYTES], sealed[-MAC_BYTES:]
            self.stats["sealed_made"] += 1
        else:
            sig = self._identity.sign(
                routed_signed_bytes(flags, kind, ts, self.local_id, dst, payload)
            )
            self.stats["sig_made"] += 1
        size = _ROUTED_HEAD_BYTES + (20 if via is not None else 0) + len(payload) + 4 + len(sig)
        budget = CERT_BUDGET_BYTES if cert_budget is None else cert_budget
        cert = self._cert if size + 2 + len(self._cert) <= budget else b""
        return Routed(flags, 0, ttl, kind, self.local_id, dst, via, payload, ts, sig, cert)

    def sealable(self, dst: NodeId) -> bool:
        """Would an EXACT message to ``dst`` be sealed now (we hold its certificate)?"""
        return self._sealer(dst) is not None

    def _sealer(self, dst: NodeId) -> AESGCM | None:
        """Our sealing key with ``dst``; None without its certificate (or to ourselves: our
        own messages are delivered here unopened)."""
        member = self._members.get(dst)
        if member is None or dst == self.local_id:
            return None
        seal = member.seal
        if seal is None:
            key = self._derive(member, _SEAL_INFO)
            if key is None:
                return None
            seal = member.seal = AESGCM(key)
        return seal

    # --- others' messages -------------------------------------------------------------------

    def learn(self, cert: NodeCertificate) -> None:
        """A certificate the link layer verified in a handshake: its holder may route to us."""
        member = self._members.get(cert.node_id)
        if member is not None and member.cert.der == cert.der:
            self._members.move_to_end(cert.node_id)
            return
        self._remember(cert)

    def learn_der(self, node: NodeId, der: bytes, *, now: float) -> str | None:
        """A certificate someone handed us as ``node``'s (the owner's in a DHT record): kept
        if it verifies against our trust and is ``node``'s; else the reason it is not (the
        origin_* reasons of :meth:`check`). So our first message to ``node`` can be sealed."""
        member = self._members.get(node)
        if member is not None and member.cert.der == der:
            self._members.move_to_end(node)
            return None
        reason = self._verified(node, der, now)
        return reason if isinstance(reason, str) else None

    def knows(self, node: NodeId) -> bool:
        return node in self._members

    def forget(self, node: NodeId) -> None:
        """Drop ``node``'s certificate (revoked, say): its messages need a fresh one."""
        self._members.pop(node, None)

    def check(self, msg: Routed, *, now: float) -> str | None:
        """None if ``msg`` is authentically from ``msg.src``; else the reason it is not."""
        got = self._authenticate(msg, now)
        return got if isinstance(got, str) else None

    def open(self, msg: Routed, *, now: float) -> Routed | str:
        """``msg`` as its source wrote it (a sealed one opened: the plaintext payload, no
        SEALED flag) if it is authentically from ``msg.src`` and of a kind that may arrive in
        the form it came in; else the reason it is not. The receiver's call (overlay delivery)."""
        got = self._authenticate(msg, now)
        if isinstance(got, str):
            return got
        if not msg.flags & FLAG_SEALED:
            if msg.kind in self._sealed_kinds:
                return "origin_unsealed"
            return msg
        return msg.copy_with(flags=msg.flags & ~FLAG_SEALED, payload=got)

    def _authenticate(self, msg: Routed, now: float) -> str | bytes:
        """The reason ``msg`` is not authentically from ``msg.src``, or its payload (opened,
        if it was sealed)."""
        if abs(msg.ts - now) > timing.ROUTED_MAX_AGE_S:
            return "origin_stale"
        pairwise = len(msg.sig) == MAC_BYTES
        if pairwise and msg.dst != self.local_id:
            return "origin_not_ours"
        member = self._members.get(msg.src)
        if msg.cert and (member is None or member.cert.der != msg.cert):
            # A certificate we have not verified yet (or a newer one of a known node).
            got = self._verified(msg.src, msg.cert, now)
            if isinstance(got, str):
                return got
            member = got
        if member is None:
            return "origin_unknown"
        if now > member.cert.not_after:
            self._members.pop(msg.src, None)
            return "origin_expired"
        if self._revoked is not None and self._revoked(member.cert):
            self._members.pop(msg.src, None)
            return "origin_revoked"
        payload = msg.payload
        if msg.flags & FLAG_SEALED:
            self.stats["sealed_opened"] += 1
            seal = self._sealer(msg.src)
            if seal is None or not pairwise or len(payload) < SEAL_NONCE_BYTES:
                return "origin_bad_sig"
            aad = routed_signed_bytes(msg.flags, msg.kind, msg.ts, msg.src, msg.dst, b"")
            try:
                payload = seal.decrypt(
                    payload[:SEAL_NONCE_BYTES], payload[SEAL_NONCE_BYTES:] + msg.sig, aad
                )
            except InvalidTag:
                return "origin_bad_sig"
        elif pairwise:
            self.stats["mac_checked"] += 1
            key = self._pair_key(member)
            if key is None or not hmac.compare_digest(
                pairwise_mac(key, msg.signed_bytes()), msg.sig
            ):
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
        return payload

    def _verified(self, node: NodeId, der: bytes, now: float) -> _Member | str:
        """``der`` verified as ``node``'s certificate and cached, or the reason it is not."""
        if len(der) > MAX_CERT_BYTES:
            return "origin_bad_cert"
        try:
            cert = self._trust.verify(der, now=now)
        except CertificateError as exc:
            return "origin_revoked" if exc.reason == "cert_revoked" else "origin_bad_cert"
        if cert.node_id != node:
            return "origin_cert_mismatch"
        return self._remember(cert)

    def mac_key(self, node: NodeId) -> bytes | None:
        """Our key of the older MAC form with ``node`` (None: no certificate of it), for tests
        and benchmarks of that form."""
        member = self._members.get(node)
        return None if member is None else self._pair_key(member)

    def _pair_key(self, member: _Member) -> bytes | None:
        """Our pairwise MAC key with ``member`` (the older form, still checked)."""
        key = member.pair_key
        if key is None:
            key = member.pair_key = self._derive(member, _PAIR_INFO)
        return key

    def _derive(self, member: _Member, info: bytes) -> bytes | None:
        """A 32-byte key for us and ``member`` under ``info``; None if its key has no usable
        X25519 form."""
        # Static-static X25519 between two certified keys, bound to both ids in a fixed order,
        # so both ends derive the same key and no other pair shares it.
        ids = sorted((self.local_id.to_bytes(), member.cert.node_id.to_bytes()))
        try:
            peer = X25519PublicKey.from_public_bytes(
                x25519_public_from_ed25519(member.cert.public_key_raw)
            )
            shared = self._x25519.exchange(peer)  # ValueError on a low-order point
        except ValueError:
            return None
        self.stats["pair_keys"] += 1
        return HKDF(hashes.SHA256(), 32, salt=None, info=info + b"".join(ids)).derive(shared)

    def _remember(self, cert: NodeCertificate) -> _Member:
        member = _Member(cert, Ed25519PublicKey.from_public_bytes(cert.public_key_raw))
        self._members[cert.node_id] = member
        self._members.move_to_end(cert.node_id)
        while len(self._members) > CERT_CACHE_SIZE:
            self._members.popitem(last=False)
        return member
