"""Codecs of the two handshake messages and the transcript each signature covers.

The handshake is a signed ephemeral Diffie-Hellman (SIGMA/TLS 1.3 CertificateVerify shape):
each side sends an X25519 ephemeral key and its node certificate and signs the transcript so
far with its Ed25519 node key. All integers are big-endian.

HANDSHAKE_INIT (initiator -> responder)::

     0      1              5                  37              45      46
    +------+--------------+------------------+---------------+-------+----------------+
    | 0xC1 | sender_index | ephemeral X25519 | timestamp_ms  | n     | ciphers (n)    |
    |      | (4)          | public key (32)  | (8, UNIX ms)  | (1)   | (1 byte each)  |
    +------+--------------+------------------+---------------+-------+----------------+
    | responder kind (1) | responder (20) | cert_len (2) | certificate DER (cert_len) |
    +--------------------+----------------+--------------+----------------------------+
    | signature (64) | mac2 (16) |
    +----------------+-----------+

    signature = Ed25519(node key, INIT_LABEL || every byte before the signature)
    mac2      = HMAC-SHA256(cookie, every byte before mac2)[:16], or 16 zero bytes

- ``responder`` names whom the Init is for, so that it cannot be replayed to anybody else
  (signed, so nobody can re-address it): kind 1, the responder's node id (20 bytes), whenever
  the initiator knows it (every connect but a bootstrap's); kind 2, the IPv4 endpoint the
  Init was sent to (address 4, port 2, then 14 zero bytes), for a bootstrap whose id we do
  not know yet.
- ``mac2`` is WireGuard's cookie MAC: all zeros unless a responder under load gave us a
  cookie (COOKIE_REPLY below); it is outside the signature, so a retransmission adds it to
  the same signed bytes. The *core* of an Init is everything but mac2: both signatures, the
  transcript and the responder's cache of answered Inits use the core, so an Init with and
  without a cookie is one handshake.

COOKIE_REPLY (responder under load -> initiator; 37 bytes, always fewer than the Init's)::

     0      1                5                  21
    +------+----------------+------------------+--------------+
    | 0xC4 | receiver_index | init_digest (16) | cookie (16)  |
    +------+----------------+------------------+--------------+

    init_digest = SHA-256(Init core)[:16]   (an off-path forger cannot match it)
    cookie      = HMAC-SHA256(responder's rotating secret, the Init's source path)[:16]

HANDSHAKE_RESP (responder -> initiator)::

     0      1              5                9                  41       42
    +------+--------------+----------------+------------------+--------+
    | 0xC2 | sender_index | receiver_index | ephemeral X25519 | cipher |
    |      | (4)          | (4)            | public key (32)  | (1)    |
    +------+--------------+----------------+------------------+--------+
    | observed IPv4 (4) | observed port (2) | cert_len (2) | certificate DER | signature (64) |
    +-------------------+-------------------+--------------+-----------------+----------------+

    signature = Ed25519(node key, RESP_LABEL || SHA-256(Init core) || every byte before it)

- ``sender_index`` is the index the sender wants to be addressed by in DATA headers;
  ``receiver_index`` in the Resp echoes the Init's ``sender_index``.
- ``ciphers`` are offered in preference order (:data:`ipop.link.crypto.CIPHER_IDS`); unknown
  ids are carried, not refused, so a newer node can offer more. The Resp names one of them.
- ``observed``: the source endpoint the responder saw the Init come from, so the initiator
  learns its public mapping (DESIGN.md §7); all zeros when the path is a relay, which has no
  underlay address to report.
- Parsing is strict: every length must match exactly and there are NO trailing bytes, because
  bytes after the signature would not be authenticated.

Keys: ``HKDF-SHA256(ikm = X25519(e_i, e_r), salt = SHA-256(Init core || Resp), info = KEY_INFO)``
yields 64 bytes: initiator->responder key, then responder->initiator key
(:func:`ipop.link.crypto.derive_session_keys`).

Protocol flow::

    initiator                                        responder
    Init(sender_index=i, e_i, ts, ciphers, responder, cert_I, sig_I, mac2)  ---->
        responder must name us; under load mac2 must carry our cookie for the source
        (else: COOKIE_REPLY, nothing else); then verify cert_I against the CA at now, sig_I,
        |ts - now| <= skew, ts newer than the last Init accepted from this node for this
        responder; anything wrong: drop, no reply
                   <---- [COOKIE_REPLY(receiver_index=i, H(Init core), cookie): the
                          initiator resends the same Init core with mac2 at once]
                   <---- Resp(sender_index=r, receiver_index=i, e_r, cipher, observed,
                              cert_R, sig_R)
    verify cert_R, sig_R (over H(Init)), the expected node id; derive keys
    DATA(receiver_index=r, counter=0, empty)  ---->  key confirmation: responder's LinkUp
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass

from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.types import ID_BYTES, Endpoint, NodeId
from ipop.wire.header import TYPE_COOKIE_REPLY, TYPE_HANDSHAKE_INIT, TYPE_HANDSHAKE_RESP

__all__ = [
    "COOKIE_BYTES",
    "COOKIE_REPLY_BYTES",
    "INIT_LABEL",
    "KEY_INFO",
    "MAC2_BYTES",
    "MAX_CERT_BYTES",
    "MAX_CIPHERS",
    "RESP_LABEL",
    "CookieReply",
    "HandshakeInit",
    "HandshakeResp",
    "init_core",
    "init_digest",
    "init_signing_input",
    "resp_signing_input",
    "transcript_hash",
]

# Domain separation: a signature made for one message can never be replayed as the other, nor
# as anything else a node key signs (DHT records).
INIT_LABEL = b"ipop handshake init v1\x00"
RESP_LABEL = b"ipop handshake resp v1\x00"
KEY_INFO = b"ipop link keys v1"

EPHEMERAL_BYTES = 32
SIGNATURE_BYTES = 64
# Ed25519 node certificates are ~400 bytes; this cap keeps an Init far below 1,200 bytes (the
# smallest path MTU we plan for) and bounds what a stranger can make us parse.
MAX_CERT_BYTES = 900
MAX_CIPHERS = 8
MAC2_BYTES = 16
COOKIE_BYTES = 16
_DIGEST_BYTES = 16
RESPONDER_NODE = 1
RESPONDER_ENDPOINT = 2
_RESPONDER = struct.Struct(f">B{ID_BYTES}s")
_ENDPOINT = struct.Struct(">4sH")
_COOKIE_REPLY = struct.Struct(f">BI{_DIGEST_BYTES}s{COOKIE_BYTES}s")
COOKIE_REPLY_BYTES = _COOKIE_REPLY.size

_INIT_FIXED = struct.Struct(">BI32sQB")  # type, sender_index, ephemeral, timestamp_ms, n
_RESP_FIXED = struct.Struct(">BII32sB4sH")  # type, sender, receiver, ephemeral, cipher, ip, port
_U16 = struct.Struct(">H")
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1


def _check_index(value: int, what: str) -> None:
    if not 0 <= value <= _U32_MAX:
        raise LocalProtocolError(f"{what} {value} is not a 32-bit index")


def _check_cert(cert_der: bytes) -> None:
    if not 0 < len(cert_der) <= MAX_CERT_BYTES:
        raise LocalProtocolError(f"certificate of {len(cert_der)} bytes (1..{MAX_CERT_BYTES})")


def _encode_responder(responder: NodeId | Endpoint) -> bytes:
    if isinstance(responder, NodeId):
        return _RESPONDER.pack(RESPONDER_NODE, responder.value.to_bytes(ID_BYTES, "big"))
    ip = ipaddress.IPv4Address(responder.host).packed
    return _RESPONDER.pack(RESPONDER_ENDPOINT, _ENDPOINT.pack(ip, responder.port))


def _decode_responder(data: bytes, offset: int) -> NodeId | Endpoint:
    if len(data) < offset + _RESPONDER.size:
        raise RemoteProtocolError("malformed", "truncated responder")
    kind, value = _RESPONDER.unpack_from(data, offset)
    if kind == RESPONDER_NODE:
        return NodeId.from_bytes(value)
    if kind == RESPONDER_ENDPOINT:
        ip, port = _ENDPOINT.unpack_from(value)
        if any(value[_ENDPOINT.size :]) or int.from_bytes(ip, "big") == 0 or port == 0:
            raise RemoteProtocolError("malformed", "responder endpoint")
        return Endpoint(str(ipaddress.IPv4Address(ip)), port)
    raise RemoteProtocolError("malformed", f"responder kind {kind}")


def _check_responder(responder: NodeId | Endpoint) -> None:
    if isinstance(responder, NodeId):
        return
    try:
        ip = ipaddress.IPv4Address(responder.host)
    except ValueError:
        raise LocalProtocolError(f"responder {responder} is not IPv4") from None
    if int(ip) == 0 or not 0 < responder.port < 65536:
        raise LocalProtocolError(f"responder {responder} is not a usable endpoint")


def _read_cert_and_signature(data: bytes, offset: int) -> tuple[bytes, bytes]:
    """The length-prefixed certificate at ``offset`` and the signature that must end ``data``."""
    if len(data) < offset + 2:
        raise RemoteProtocolError("malformed", "truncated before certificate length")
    (cert_len,) = _U16.unpack_from(data, offset)
    if not 0 < cert_len <= MAX_CERT_BYTES:
        raise RemoteProtocolError("malformed", f"certificate length {cert_len}")
    cert_start = offset + 2
    sig_start = cert_start + cert_len
    if len(data) != sig_start + SIGNATURE_BYTES:
        raise RemoteProtocolError("malformed", f"length {len(data)} != {sig_start + 64}")
    return bytes(data[cert_start:sig_start]), bytes(data[sig_start:])


@dataclass(frozen=True, slots=True)
class HandshakeInit:
    """First handshake message: who I am, whom it is for, my ephemeral key, when, and what I
    can speak (plus the cookie MAC a responder under load asks for)."""

    sender_index: int
    ephemeral: bytes
    timestamp_ms: int
    ciphers: tuple[int, ...]
    responder: NodeId | Endpoint
    cert_der: bytes
    signature: bytes = bytes(SIGNATURE_BYTES)
    mac2: bytes = bytes(MAC2_BYTES)

    def __post_init__(self) -> None:
        _check_index(self.sender_index, "sender_index")
        if len(self.ephemeral) != EPHEMERAL_BYTES:
            raise LocalProtocolError("ephemeral key must be 32 bytes")
        if not 0 <= self.timestamp_ms <= _U64_MAX:
            raise LocalProtocolError("timestamp_ms out of range")
        if not 0 < len(self.ciphers) <= MAX_CIPHERS or not all(0 <= c <= 255 for c in self.ciphers):
            raise LocalProtocolError(f"1..{MAX_CIPHERS} cipher ids of one byte each")
        _check_responder(self.responder)
        _check_cert(self.cert_der)
        if len(self.signature) != SIGNATURE_BYTES:
            raise LocalProtocolError("signature must be 64 bytes")
        if len(self.mac2) != MAC2_BYTES:
            raise LocalProtocolError("mac2 must be 16 bytes")

    def signed_part(self) -> bytes:
        """The encoding up to (not including) the signature."""
        return (
            _INIT_FIXED.pack(
                TYPE_HANDSHAKE_INIT,
                self.sender_index,
                self.ephemeral,
                self.timestamp_ms,
                len(self.ciphers),
            )
            + bytes(self.ciphers)
            + _encode_responder(self.responder)
            + _U16.pack(len(self.cert_der))
            + self.cert_der
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature + self.mac2

    @classmethod
    def parse(cls, data: bytes) -> HandshakeInit:
        """Strictly decode an Init; raise :class:`RemoteProtocolError` ("malformed")."""
        if len(data) < _INIT_FIXED.size + MAC2_BYTES:
            raise RemoteProtocolError("malformed", "init shorter than its fixed part")
        kind, sender, ephemeral, ts, n = _INIT_FIXED.unpack_from(data)
        if kind != TYPE_HANDSHAKE_INIT:
            raise RemoteProtocolError("malformed", f"type {kind:#x} is not an init")
        if not 0 < n <= MAX_CIPHERS:
            raise RemoteProtocolError("malformed", f"{n} ciphers offered")
        off = _INIT_FIXED.size
        if len(data) < off + n:
            raise RemoteProtocolError("malformed", "truncated cipher list")
        ciphers = tuple(data[off : off + n])
        responder = _decode_responder(data, off + n)
        core = data[:-MAC2_BYTES]
        cert, sig = _read_cert_and_signature(core, off + n + _RESPONDER.size)
        return cls(sender, ephemeral, ts, ciphers, responder, cert, sig, bytes(data[-MAC2_BYTES:]))


def init_core(data: bytes) -> bytes:
    """The Init ``data`` without its mac2 (what signatures and the transcript cover)."""
    return data[:-MAC2_BYTES]


def init_digest(core: bytes) -> bytes:
    """The 16 bytes of SHA-256 over an Init core that a COOKIE_REPLY echoes."""
    return hashlib.sha256(core).digest()[:_DIGEST_BYTES]


@dataclass(frozen=True, slots=True)
class CookieReply:
    """A responder under load: "prove you can receive at your address; here is a cookie"."""

    receiver_index: int
    init_digest: bytes
    cookie: bytes

    def __post_init__(self) -> None:
        _check_index(self.receiver_index, "receiver_index")
        if len(self.init_digest) != _DIGEST_BYTES or len(self.cookie) != COOKIE_BYTES:
            raise LocalProtocolError("init_digest and cookie are 16 bytes each")

    def encode(self) -> bytes:
        return _COOKIE_REPLY.pack(
            TYPE_COOKIE_REPLY, self.receiver_index, self.init_digest, self.cookie
        )

    @classmethod
    def parse(cls, data: bytes) -> CookieReply:
        """Strictly decode a COOKIE_REPLY; raise :class:`RemoteProtocolError` ("malformed")."""
        if len(data) != _COOKIE_REPLY.size:
            raise RemoteProtocolError("malformed", f"cookie reply of {len(data)} bytes")
        kind, receiver, digest, cookie = _COOKIE_REPLY.unpack(data)
        if kind != TYPE_COOKIE_REPLY:
            raise RemoteProtocolError("malformed", f"type {kind:#x} is not a cookie reply")
        return cls(receiver, digest, cookie)


@dataclass(frozen=True, slots=True)
class HandshakeResp:
    """Second handshake message: my ephemeral key, the cipher, and where I saw you."""

    sender_index: int
    receiver_index: int
    ephemeral: bytes
    cipher: int
    observed: Endpoint | None
    cert_der: bytes
    signature: bytes = bytes(SIGNATURE_BYTES)

    def __post_init__(self) -> None:
        _check_index(self.sender_index, "sender_index")
        _check_index(self.receiver_index, "receiver_index")
        if len(self.ephemeral) != EPHEMERAL_BYTES:
            raise LocalProtocolError("ephemeral key must be 32 bytes")
        if not 0 <= self.cipher <= 255:
            raise LocalProtocolError("cipher id must fit one byte")
        if self.observed is not None:
            try:
                ip = ipaddress.IPv4Address(self.observed.host)
            except ValueError:
                raise LocalProtocolError(f"observed {self.observed} is not IPv4") from None
            if int(ip) == 0 or not 0 < self.observed.port < 65536:
                raise LocalProtocolError(f"observed {self.observed} is not a usable endpoint")
        _check_cert(self.cert_der)
        if len(self.signature) != SIGNATURE_BYTES:
            raise LocalProtocolError("signature must be 64 bytes")

    def signed_part(self) -> bytes:
        if self.observed is None:
            ip, port = bytes(4), 0
        else:
            ip, port = ipaddress.IPv4Address(self.observed.host).packed, self.observed.port
        return (
            _RESP_FIXED.pack(
                TYPE_HANDSHAKE_RESP,
                self.sender_index,
                self.receiver_index,
                self.ephemeral,
                self.cipher,
                ip,
                port,
            )
            + _U16.pack(len(self.cert_der))
            + self.cert_der
        )

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def parse(cls, data: bytes) -> HandshakeResp:
        """Strictly decode a Resp; raise :class:`RemoteProtocolError` ("malformed")."""
        if len(data) < _RESP_FIXED.size:
            raise RemoteProtocolError("malformed", "resp shorter than its fixed part")
        kind, sender, receiver, ephemeral, cipher, ip, port = _RESP_FIXED.unpack_from(data)
        if kind != TYPE_HANDSHAKE_RESP:
            raise RemoteProtocolError("malformed", f"type {kind:#x} is not a resp")
        ip_int = int.from_bytes(ip, "big")
        observed: Endpoint | None
        if ip_int == 0 and port == 0:
            observed = None
        elif ip_int == 0 or port == 0:
            raise RemoteProtocolError("malformed", "half-empty observed endpoint")
        else:
            observed = Endpoint(str(ipaddress.IPv4Address(ip_int)), port)
        cert, sig = _read_cert_and_signature(data, _RESP_FIXED.size)
        return cls(sender, receiver, ephemeral, cipher, observed, cert, sig)


def init_signing_input(init_signed_part: bytes) -> bytes:
    """What the initiator signs: its own Init up to the signature, domain-separated."""
    return INIT_LABEL + init_signed_part


def resp_signing_input(init_bytes: bytes, resp_signed_part: bytes) -> bytes:
    """What the responder signs: the hash of the Init core it answers, then its own Resp."""
    return RESP_LABEL + hashlib.sha256(init_bytes).digest() + resp_signed_part


def transcript_hash(init_bytes: bytes, resp_bytes: bytes) -> bytes:
    """SHA-256 over both complete messages: the HKDF salt binding keys to this handshake."""
    h = hashlib.sha256(init_bytes)
    h.update(resp_bytes)
    return h.digest()
