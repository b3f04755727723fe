"""Signed, versioned DHT records: encoding, signature, key ids and the replacement rule.

This module is pure (no I/O, no clock, no randomness): time comes in as ``now``.

Byte layout of an encoded record (all integers big-endian)::

     0        1        2        3
    +--------+--------+--------+---------------------------+
    | ver=2  | flags  | keylen | key (UTF-8, 1..255 bytes)  |
    +--------+--------+--------+---------------------------+
    | vallen (u16)    | value (0..MAX_VALUE_BYTES)         |
    +-----------------+------------------------------------+
    | seq (u64)                                            |
    | expires_at_ms (u64, milliseconds, UNIX epoch scale)  |
    | owner (20 bytes: NodeId)                             |
    | owner_pub (32 bytes: Ed25519 raw public key)         |
    | certlen (u16)   | cert (owner's X.509 DER, 1..768)   |
    | sig (64 bytes: Ed25519 over SIG_DOMAIN + all above)  |
    +------------------------------------------------------+
    flags: bit 0 = tombstone (the owner released the key; value must be empty).
    Other flag bits must be zero. Trailing bytes are refused: a record is exact.
    The whole record is at most MAX_RECORD_BYTES (1023): a record always fits one overlay
    datagram. Measured (tests/unit/test_dht_policy.py): a name record of node "node1" with
    hostname "alice" in network "testnet" is 597 bytes (its certificate 383, its key 71 of
    which the namespace is 60), an ip record 596; a router's 32 bytes more (its certificate
    carries the router extension). The namespace (:func:`namespace_of`) made every key 53
    bytes longer (544/543/576 before). Keys: the longest legal one, a LAN host name of two
    63-byte labels in a 56-byte network, is 242 bytes (namespace 109 + ":name:" + 127), under
    MAX_KEY_BYTES (255). Whole records: names at the limits of every length rule (56-byte
    network, 63-byte node name, two 63-byte labels, a router) would make a 1,118-byte name
    record (1,065 before namespaces); signing refuses it rather than sending what replicas
    would refuse. Such a worst-case router fits while the network name is at most 37 bytes
    (each network byte is in the key once and in the certificate four times); a plain node's
    name record at every limit is 1,023 bytes, just in. User and service records with large
    values at long names did not fit before either: signing refuses them.

Why the owner's certificate travels with every record: replicas and readers must know the
owner is a certified member of this network (:mod:`ipop.dht.policy`), and copies reach them from
non-owners (replication, read repair), so the proof has to travel with the bytes. Replicas
verify it through the network's ``CaTrust``, which caches verified DER, so a certificate seen
once costs a dict lookup afterwards.

Protocol flow (who writes what)::

    owner:   Record.sign(identity, key, value, seq, expires_at)  --STORE-->  replicas
    replica: check_record() (signature, owner == node_id_for(owner_pub), key id),
             RecordPolicy.admit() (certificate, namespace, hostname, value size),
             then decide_store(current, offered, now) -> StoreOutcome, then quotas
    reader:  fetch from the R nearest, check_record() each, choose_best(), repair the rest

Replacement rule (``decide_store``), the heart of IP/name ownership (DESIGN.md §4):
  * a missing or expired record may be replaced by anyone's valid, live record;
  * a live tombstone counts as released: anyone may replace it;
  * otherwise only the same owner may replace it, and only with a strictly higher seq;
  * an offer identical to what is held is UNCHANGED (an idempotent success);
  * an offer that is itself expired, or whose lease reaches beyond ``now + max_ttl``, is refused.
Because ``expires_at`` is signed by the owner, nobody but the owner can extend a lease:
replication and read repair copy bytes, they never re-sign.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.identity import CaTrust, NodeIdentity, node_id_for, verify_signature
from ipop.identity.names import LABEL_RE
from ipop.types import ID_BYTES, NodeId

VERSION = 2
FLAG_TOMBSTONE = 0x01
MAX_KEY_BYTES = 255
MAX_VALUE_BYTES = 255
MAX_CERT_BYTES = 768
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SIG_DOMAIN = b"ipop-dht-record-v1\x00"
KEY_ID_PERSON = b"ipop-dht-key"
_TAIL = struct.Struct(">QQ")
# Reasons check_record (and the encoder it runs) can refuse an already-parsed record for.
RECORD_REASONS = frozenset(
    {
        "record_key_length",
        "record_value_length",
        "record_tombstone_value",
        "record_seq_range",
        "record_expiry_range",
        "record_pub_length",
        "record_cert_length",
        "record_too_long",
        "record_owner_mismatch",
        "record_key_mismatch",
        "record_bad_signature",
    }
)
# Largest accepted encoding: under 1 KB so a record always fits one overlay datagram. The
# fields' own bounds add up to more; the total is checked on its own (see the layout).
MAX_RECORD_BYTES = 1023
_FIXED_BYTES = 3 + 2 + _TAIL.size + ID_BYTES + PUBLIC_KEY_BYTES + 2 + SIGNATURE_BYTES


# DHT namespaces (:func:`namespace_of`): "<network>~<52 base32 characters of the CA key>".
NAMESPACE_SEP = "~"
_B32_CHARS = 52  # ceil(32 * 8 / 5)
_B32_RE = re.compile(r"[a-z2-7]+")
# A network's CA certificate has CN "ipop CA <network>", at most 64 characters (X.509 upper
# bound): so a network name is at most 56 bytes, a namespace at most 109.
MAX_NETWORK_BYTES = 56
MAX_NAMESPACE_BYTES = MAX_NETWORK_BYTES + len(NAMESPACE_SEP) + _B32_CHARS


def key_id(key: str) -> bytes:
    """The 20-byte DHT id of a namespaced key (blake2b, personalised so it is ours alone)."""
    return hashlib.blake2b(key.encode(), digest_size=ID_BYTES, person=KEY_ID_PERSON).digest()


def namespace_of(trust: CaTrust) -> str:
    """The DHT namespace of ``trust``'s network: ``<network>~<b32 of the CA's public key>``.

    The key part is lowercase RFC 4648 base32, unpadded (52 characters), of the CA's raw
    Ed25519 public key: any replica can verify a record of the namespace with no
    configuration (:class:`ipop.identity.CaKeyTrust`), and two networks of one name never share
    keys. Every key of the network starts with it (:func:`ip_key`, :func:`name_key`,
    :func:`user_key`, :func:`ipop.dht.srv.service_key`).
    """
    return _namespace(trust.network, trust.public_key_raw)


def _namespace(network: str, ca_public_raw: bytes) -> str:
    b32 = base64.b32encode(ca_public_raw).decode("ascii").rstrip("=").lower()
    return f"{network}{NAMESPACE_SEP}{b32}"


def parse_namespace(namespace: str) -> tuple[str, bytes]:
    """(network, CA raw public key) of a namespace :func:`namespace_of` could have made.

    Strict: a valid network name, ``~``, exactly 52 lowercase base32 characters that encode
    32 bytes canonically (the unused low bits zero), so one CA key has one namespace.
    ValueError otherwise, saying why (a replica counts it as ``key_bad_namespace``,
    :mod:`ipop.dht.policy`).
    """
    network, sep, b32 = namespace.partition(NAMESPACE_SEP)
    if not sep or len(b32) != _B32_CHARS or not _B32_RE.fullmatch(b32):
        raise ValueError(f"not <network>~<52 base32 characters>: {namespace[:128]!r}")
    if not LABEL_RE.fullmatch(network) or len(network) > MAX_NETWORK_BYTES:
        raise ValueError(f"not a network name: {network[:64]!r}")
    raw = base64.b32decode(b32.upper() + "=" * (-_B32_CHARS % 8))
    if _namespace(network, raw) != namespace:
        raise ValueError(f"non-canonical base32: {b32!r}")
    return network, raw


def ip_key(namespace: str, addr: object) -> str:
    """``<namespace>:ip:<addr>``: who holds a virtual IP in the network of ``namespace``."""
    return f"{namespace}:ip:{addr}"


def name_key(namespace: str, hostname: str) -> str:
    """``<namespace>:name:<hostname>``: which IP a hostname points to there."""
    return f"{namespace}:name:{hostname}"


def user_key(namespace: str, key: str) -> str:
    """``<namespace>:user:<key>``: an operator's own key (``ipop dht put/get``)."""
    return f"{namespace}:user:{key}"


@dataclass(frozen=True, slots=True)
class Record:
    """One owner-signed value. Build with :meth:`sign`; parse with :func:`decode_record`."""

    key: str
    value: bytes
    seq: int
    owner: NodeId
    owner_pub: bytes
    expires_at: float
    sig: bytes
    tombstone: bool = False
    # The owner's certificate (DER): what makes the owner a member (ipop.dht.policy).
    cert: bytes = b""

    @classmethod
    def sign(
        cls,
        identity: NodeIdentity,
        key: str,
        value: bytes,
        *,
        seq: int,
        expires_at: float,
        tombstone: bool = False,
    ) -> Record:
        """A record signed by ``identity``; misuse (sizes, tombstone with value) raises."""
        expires_ms = round(expires_at * 1000)
        unsigned = cls(
            key=key,
            value=value,
            seq=seq,
            owner=identity.node_id,
            owner_pub=identity.public_key_raw,
            expires_at=expires_ms / 1000,
            sig=b"",
            tombstone=tombstone,
            cert=identity.cert.der,
        )
        try:
            body = _encode_body(unsigned)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"cannot sign record: {exc}") from None
        return cls(
            key=key,
            value=value,
            seq=seq,
            owner=identity.node_id,
            owner_pub=identity.public_key_raw,
            expires_at=expires_ms / 1000,
            sig=identity.sign(SIG_DOMAIN + body),
            tombstone=tombstone,
            cert=identity.cert.der,
        )

    @property
    def key_id(self) -> bytes:
        return key_id(self.key)

    def live(self, *, now: float) -> bool:
        """Holds the key: not expired and not a tombstone."""
        return not self.tombstone and self.expires_at > now

    def encode(self) -> bytes:
        if len(self.sig) != SIGNATURE_BYTES:
            raise LocalProtocolError("record is not signed")
        try:
            return _encode_body(self) + self.sig
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"cannot encode record: {exc}") from None

    def __repr__(self) -> str:
        kind = "tombstone" if self.tombstone else f"{len(self.value)}B"
        return f"Record({self.key!r}, {kind}, seq={self.seq}, owner={self.owner.short()})"


def _encode_body(r: Record) -> bytes:
    key_b = r.key.encode()
    if not 1 <= len(key_b) <= MAX_KEY_BYTES:
        raise RemoteProtocolError("record_key_length", str(len(key_b)))
    if len(r.value) > MAX_VALUE_BYTES:
        raise RemoteProtocolError("record_value_length", str(len(r.value)))
    if r.tombstone and r.value:
        raise RemoteProtocolError("record_tombstone_value")
    if not 0 <= r.seq < 1 << 64:
        raise RemoteProtocolError("record_seq_range")
    expires_ms = round(r.expires_at * 1000)
    if not 0 <= expires_ms < 1 << 64:
        raise RemoteProtocolError("record_expiry_range")
    if len(r.owner_pub) != PUBLIC_KEY_BYTES:
        raise RemoteProtocolError("record_pub_length")
    if not 1 <= len(r.cert) <= MAX_CERT_BYTES:
        raise RemoteProtocolError("record_cert_length", str(len(r.cert)))
    total = _FIXED_BYTES + len(key_b) + len(r.value) + len(r.cert)
    if total > MAX_RECORD_BYTES:
        raise RemoteProtocolError("record_too_long", str(total))
    flags = FLAG_TOMBSTONE if r.tombstone else 0
    return b"".join(
        (
            bytes((VERSION, flags, len(key_b))),
            key_b,
            len(r.value).to_bytes(2, "big"),
            bytes(r.value),
            _TAIL.pack(r.seq, expires_ms),
            r.owner.to_bytes(),
            bytes(r.owner_pub),
            len(r.cert).to_bytes(2, "big"),
            bytes(r.cert),
        )
    )


def decode_record(data: bytes) -> Record:
    """Strictly parse an encoded record (no signature check: see :func:`check_record`).

    Any malformed input raises :class:`RemoteProtocolError` and nothing else.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError("record_type", type(data).__name__)
    data = bytes(data)
    if len(data) > MAX_RECORD_BYTES:
        raise RemoteProtocolError("record_too_long", str(len(data)))
    if len(data) < 3:
        raise RemoteProtocolError("record_truncated")
    version, flags, keylen = data[0], data[1], data[2]
    if version != VERSION:
        raise RemoteProtocolError("record_version", str(version))
    if flags & ~FLAG_TOMBSTONE:
        raise RemoteProtocolError("record_flags", hex(flags))
    pos = 3
    key_b = data[pos : pos + keylen]
    pos += keylen
    if keylen == 0 or len(key_b) != keylen:
        raise RemoteProtocolError("record_truncated", "key")
    try:
        key = key_b.decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError("record_key_utf8") from None
    if len(data) < pos + 2:
        raise RemoteProtocolError("record_truncated", "value length")
    vallen = int.from_bytes(data[pos : pos + 2], "big")
    pos += 2
    if vallen > MAX_VALUE_BYTES:
        raise RemoteProtocolError("record_value_length", str(vallen))
    fixed = _TAIL.size + ID_BYTES + PUBLIC_KEY_BYTES + 2
    if len(data) < pos + vallen + fixed + SIGNATURE_BYTES:
        raise RemoteProtocolError("record_truncated", "tail")
    certlen = int.from_bytes(data[pos + vallen + fixed - 2 : pos + vallen + fixed], "big")
    if not 1 <= certlen <= MAX_CERT_BYTES:
        raise RemoteProtocolError("record_cert_length", str(certlen))
    want = pos + vallen + fixed + certlen + SIGNATURE_BYTES
    if len(data) != want:
        raise RemoteProtocolError("record_length", f"{len(data)} != {want}")
    value = data[pos : pos + vallen]
    pos += vallen
    seq, expires_ms = _TAIL.unpack_from(data, pos)
    pos += _TAIL.size
    owner = NodeId.from_bytes(data[pos : pos + ID_BYTES])
    pos += ID_BYTES
    owner_pub = data[pos : pos + PUBLIC_KEY_BYTES]
    pos += PUBLIC_KEY_BYTES + 2
    cert = data[pos : pos + certlen]
    sig = data[pos + certlen :]
    tombstone = bool(flags & FLAG_TOMBSTONE)
    if tombstone and value:
        raise RemoteProtocolError("record_tombstone_value")
    return Record(key, value, seq, owner, owner_pub, expires_ms / 1000, sig, tombstone, cert)


def check_record(record: Record, *, expected_key_id: bytes | None = None) -> None:
    """Raise :class:`RemoteProtocolError` unless ``record`` is authentic.

    Authentic means: the public key hashes to the claimed owner, the signature verifies over
    the canonical encoding, and (if given) the key hashes to ``expected_key_id``. Whether the
    owner may hold this key at all is :meth:`ipop.dht.policy.RecordPolicy.admit`'s question.
    """
    body = _check_unsigned(record, expected_key_id)
    if not verify_signature(bytes(record.owner_pub), bytes(record.sig), SIG_DOMAIN + body):
        raise RemoteProtocolError("record_bad_signature")


def _check_unsigned(record: Record, expected_key_id: bytes | None) -> bytes:
    """:func:`check_record` up to the signature, in its order; the body the signature covers."""
    try:
        owner = node_id_for(bytes(record.owner_pub))
    except LocalProtocolError:
        raise RemoteProtocolError("record_pub_length") from None
    if owner != record.owner:
        raise RemoteProtocolError("record_owner_mismatch")
    if expected_key_id is not None and record.key_id != expected_key_id:
        raise RemoteProtocolError("record_key_mismatch")
    return _encode_body(record)


# Records a RecordChecker remembers as authentic (a few KB each at most: ~1 MB bounded).
CHECKED_RECORDS_MAX = 256


class RecordChecker:
    """:func:`check_record` that verifies one exact record's signature once.

    Why: a reader fetches a key from its R replicas and checks every copy (a replica could
    lie), and the copies are almost always the same bytes: in a simulated 32-node network
    with 100 records, 464 of 564 copies readers checked were repeats, each an Ed25519 verify.
    Remembered are the encodings (body and signature, every field of the record) that passed;
    the checks before the signature (owner binding, key id) run every time, in
    :func:`check_record`'s order and with its reasons. A verdict depends on those bytes alone,
    so a hit is the verdict a fresh check gives. Bounded: the oldest is forgotten first.
    """

    __slots__ = ("_passed", "_size", "hits")

    def __init__(self, size: int = CHECKED_RECORDS_MAX) -> None:
        self._size = size
        self._passed: dict[bytes, None] = {}
        self.hits = 0

    def __len__(self) -> int:
        return len(self._passed)

    def check(self, record: Record, *, expected_key_id: bytes | None = None) -> None:
        """Raise :class:`RemoteProtocolError` unless ``record`` is authentic (as
        :func:`check_record`)."""
        body = _check_unsigned(record, expected_key_id)
        sig = bytes(record.sig)
        signed = body + sig
        if signed in self._passed:
            self.hits += 1
            return
        if not verify_signature(bytes(record.owner_pub), sig, SIG_DOMAIN + body):
            raise RemoteProtocolError("record_bad_signature")
        if len(self._passed) >= self._size:
            # Dicts keep insertion order: the first entry is the oldest.
            del self._passed[next(iter(self._passed))]
        self._passed[signed] = None


class StoreOutcome(enum.IntEnum):
    """What a replica did with an offered record (sent back on the wire as the int)."""

    STORED = 0  # accepted: it now holds the offer
    UNCHANGED = 1  # it already held exactly this record (idempotent success)
    STALE = 2  # same owner, but the offer's seq is not higher than what it holds
    CONFLICT = 3  # a live record of another owner holds the key
    INVALID = 4  # signature, owner binding, key id, membership or the key's rules wrong
    EXPIRED = 5  # the offer's lease is over already, or reaches past the allowed maximum
    REFUSED = 6  # the owner's quota for this kind of key, or the replica, is full

    @property
    def accepted(self) -> bool:
        return self in (StoreOutcome.STORED, StoreOutcome.UNCHANGED)


def decide_store(
    current: Record | None, offered: Record, *, now: float, max_ttl: float
) -> StoreOutcome:
    """The replacement rule (module docstring) for an already-authenticated ``offered``."""
    if offered.expires_at <= now or offered.expires_at > now + max_ttl:
        return StoreOutcome.EXPIRED
    if current is None or current.expires_at <= now:
        return StoreOutcome.STORED
    if current == offered:
        return StoreOutcome.UNCHANGED
    if current.owner == offered.owner:
        return StoreOutcome.STORED if offered.seq > current.seq else StoreOutcome.STALE
    if current.tombstone:
        return StoreOutcome.STORED
    return StoreOutcome.CONFLICT


def choose_best(records: Iterable[Record], *, now: float) -> Record | None:
    """The record a reader believes among the (authenticated) copies the replicas returned.

    Per owner only the highest seq counts (older copies are stale). Among owners whose newest
    copy is live, the one backed by the most replicas wins; ties go to the lowest owner id so
    every reader picks the same one. A winning tombstone, or no live record, reads as None.
    """
    newest: dict[NodeId, Record] = {}
    votes: dict[NodeId, int] = {}
    for r in records:
        if r.expires_at <= now:
            continue
        votes[r.owner] = votes.get(r.owner, 0) + 1
        held = newest.get(r.owner)
        if held is None or r.seq > held.seq:
            newest[r.owner] = r
    live = [r for r in newest.values() if not r.tombstone]
    if not live:
        return None
    return min(live, key=lambda r: (-votes[r.owner], r.owner.value))


def newest_by_owner(records: Iterable[Record], *, now: float) -> dict[NodeId, Record]:
    """Highest-seq unexpired copy per owner (tombstones included): what read repair spreads."""
    newest: dict[NodeId, Record] = {}
    for r in records:
        if r.expires_at <= now:
            continue
        held = newest.get(r.owner)
        if held is None or r.seq > held.seq:
            newest[r.owner] = r
    return newest
