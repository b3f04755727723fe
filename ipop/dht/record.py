"""Signed, versioned DHT records: encoding, signature, key ids and the replacement rule.

This module is pure (no I/O, no clock, no randomness): time comes in as ``now``.

Byte layout of an encoded record (all integers big-endian)::

     0        1        2        3
    +--------+--------+--------+---------------------------+
    | ver=1  | flags  | keylen | key (UTF-8, 1..255 bytes)  |
    +--------+--------+--------+---------------------------+
    | vallen (u16)    | value (0..MAX_VALUE_BYTES)         |
    +-----------------+------------------------------------+
    | seq (u64)                                            |
    | expires_at_ms (u64, milliseconds, UNIX epoch scale)  |
    | owner (20 bytes: NodeId)                             |
    | owner_pub (32 bytes: Ed25519 raw public key)         |
    | sig (64 bytes: Ed25519 over SIG_DOMAIN + all above)  |
    +------------------------------------------------------+
    flags: bit 0 = tombstone (the owner released the key; value must be empty).
    Other flag bits must be zero. Trailing bytes are refused: a record is exact.

Protocol flow (who writes what)::

    owner:   Record.sign(identity, key, value, seq, expires_at)  --STORE-->  replicas
    replica: check_record() (signature, owner == node_id_for(owner_pub), key id)
             then decide_store(current, offered, now) -> StoreOutcome
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

import enum
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.identity import NodeIdentity, node_id_for, verify_signature
from ipop.types import ID_BYTES, NodeId

VERSION = 1
FLAG_TOMBSTONE = 0x01
MAX_KEY_BYTES = 255
MAX_VALUE_BYTES = 600
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SIG_DOMAIN = b"ipop-dht-record-v1\x00"
KEY_ID_PERSON = b"ipop-dht-key"
_TAIL = struct.Struct(">QQ")
# Largest possible encoding: stays under 1 KB so a record always fits one overlay datagram.
MAX_RECORD_BYTES = (
    3 + MAX_KEY_BYTES + 2 + MAX_VALUE_BYTES + _TAIL.size + ID_BYTES + PUBLIC_KEY_BYTES
) + SIGNATURE_BYTES
assert MAX_RECORD_BYTES < 1024


def key_id(key: str) -> bytes:
    """The 20-byte DHT id of a namespaced key (blake2b, personalised so it is ours alone)."""
    return hashlib.blake2b(key.encode(), digest_size=ID_BYTES, person=KEY_ID_PERSON).digest()


def ip_key(network: str, addr: object) -> str:
    """``<network>:ip:<addr>``: who holds a virtual IP in ``network``."""
    return f"{network}:ip:{addr}"


def name_key(network: str, hostname: str) -> str:
    """``<network>:name:<hostname>``: which IP a hostname points to in ``network``."""
    return f"{network}:name:{hostname}"


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
    fixed = _TAIL.size + ID_BYTES + PUBLIC_KEY_BYTES + SIGNATURE_BYTES
    if len(data) != pos + vallen + fixed:
        raise RemoteProtocolError("record_length", f"{len(data)} != {pos + vallen + fixed}")
    value = data[pos : pos + vallen]
    pos += vallen
    seq, expires_ms = _TAIL.unpack_from(data, pos)
    pos += _TAIL.size
    owner = NodeId.from_bytes(data[pos : pos + ID_BYTES])
    pos += ID_BYTES
    owner_pub = data[pos : pos + PUBLIC_KEY_BYTES]
    pos += PUBLIC_KEY_BYTES
    sig = data[pos:]
    tombstone = bool(flags & FLAG_TOMBSTONE)
    if tombstone and value:
        raise RemoteProtocolError("record_tombstone_value")
    return Record(key, value, seq, owner, owner_pub, expires_ms / 1000, sig, tombstone)


def check_record(record: Record, *, expected_key_id: bytes | None = None) -> None:
    """Raise :class:`RemoteProtocolError` unless ``record`` is authentic.

    Authentic means: the public key hashes to the claimed owner, the signature verifies over
    the canonical encoding, and (if given) the key hashes to ``expected_key_id``.
    """
    try:
        owner = node_id_for(bytes(record.owner_pub))
    except LocalProtocolError:
        raise RemoteProtocolError("record_pub_length") from None
    if owner != record.owner:
        raise RemoteProtocolError("record_owner_mismatch")
    if expected_key_id is not None and record.key_id != expected_key_id:
        raise RemoteProtocolError("record_key_mismatch")
    body = _encode_body(record)
    if not verify_signature(bytes(record.owner_pub), bytes(record.sig), SIG_DOMAIN + body):
        raise RemoteProtocolError("record_bad_signature")


class StoreOutcome(enum.IntEnum):
    """What a replica did with an offered record (sent back on the wire as the int)."""

    STORED = 0  # accepted: it now holds the offer
    UNCHANGED = 1  # it already held exactly this record (idempotent success)
    STALE = 2  # same owner, but the offer's seq is not higher than what it holds
    CONFLICT = 3  # a live record of another owner holds the key
    INVALID = 4  # signature, owner binding or key id wrong
    EXPIRED = 5  # the offer's lease is over already, or reaches past the allowed maximum

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
