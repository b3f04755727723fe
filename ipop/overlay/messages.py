"""Overlay wire messages: what travels inside a link's authenticated ``LinkMessage`` payload.

Every overlay message starts with one type byte in 0x01..0x3F (the overlay control range);
other values are refused with ``unknown_type``. Multi-byte integers are big-endian. Node ids
are the 20-byte form of :class:`ipop.types.NodeId`; an endpoint is 4 bytes of IPv4 address and
a 2-byte port (port 0 is refused).

ROUTED (0x01): a message greedily routed over the ring toward ``dst``::

     0        1        2        3        4
    +--------+--------+--------+--------+--------+
    |  0x01  | flags  |  hops  |  ttl   |  kind  |
    +--------+--------+--------+--------+--------+
    |            src NodeId (20 bytes)           |
    |            dst NodeId (20 bytes)           |
    |   via NodeId (20 bytes, only if VIA flag)  |
    | cert length (u16) + src's certificate DER  |  only if CERT flag
    |  nonce (12 bytes)                          |  only if SEALED flag
    |            payload (SEALED: its ciphertext)|
    |  ts (u32, UNIX seconds) | auth             |  the last 68 (or 20) bytes
    +--------------------------------------------+

    flags: 0x01 EXACT        deliver only at dst itself (else: at the node closest to dst)
           0x02 EXCLUDE_SRC  route as if src were not on the ring (JOIN: find *my* neighbours)
           0x04 VIA          first route exactly to ``via``, which clears the flag and goes on
                             (how answers reach a node that is not on the ring yet)
           0x08 CERT         the source's certificate travels with the message
           0x10 MAC          auth is 16 bytes under the source's and dst's pairwise key
                             (EXACT only), not a 64-byte Ed25519 signature: without SEALED a
                             BLAKE2s MAC over the clear payload (the older form, no longer sent)
           0x20 SEALED       (MAC only) the payload field is nonce || AES-256-GCM ciphertext of
                             the payload under the pair's sealing key and auth is the GCM tag;
                             the associated data is :func:`routed_signed_bytes` with an empty
                             payload (EXACT, kind, ts, src, dst). Only dst can open it
           0x40 SIDEWAYS     the message made its one sideways step: a hop to a peer no nearer
                             the target than the sender, taken on that peer's LINK_IDS word
                             (:mod:`ipop.overlay.routing`); from then on every hop must be
                             strictly nearer, so a false word costs one hop, never a loop
    hops:  links crossed before the current one (the originator sends 0)
    ttl:   the message crosses at most ``ttl`` links (1..255)
    kind:  0x01..0x7F upper layers (DHT 1, IP 2, ping 3); 0x80..0xFF overlay control below
    auth:  the source's Ed25519 signature, or its MAC for dst, over :func:`routed_signed_bytes`
           (EXACT, kind, ts, src, dst, payload), or the seal's tag over the same: what a
           forwarder may not change. hops, ttl, via, EXCLUDE_SRC and SIDEWAYS are routing
           state that forwarders rewrite or that only steers the route; a forwarder can drop
           or misroute a message anyway, so signing them would buy nothing
           (:mod:`ipop.overlay.origin` verifies, seals and opens, and says when the
           certificate is attached). SEALED
           itself is not in the associated data: the seal's key is not the MAC's, so flipping
           the flag only makes the message fail to check. Refused as ``bad_flags``: MAC
           without EXACT, SEALED without MAC; a SEALED payload shorter than its nonce is
           ``truncated``.

RELAY_FORWARD (0x02), sent to the relay ``via``; RELAY_DELIVER (0x03), sent by it::

    +--------+------------------------------+---------------------------+
    |  0x02  | target NodeId (20)           | sealed link datagram ...  |
    |  0x03  | origin NodeId (20)           | sealed link datagram ...  |
    +--------+------------------------------+---------------------------+

RELAY_REFUSED (0x07), sent by a relay that holds no direct link to ``target`` back to the
origin of a RELAY_FORWARD (so the origin drops its dead relayed link at once)::

    +--------+------------------------------+
    |  0x07  | target NodeId (20)           |
    +--------+------------------------------+

RELAY_CHANNEL (0x0C): asking a relay for a channel to ``target`` and its answer
(:mod:`ipop.overlay.channels`; the channel then carries the link's DATA outside the link to
the relay, :mod:`ipop.wire.header`)::

    +--------+--------+------------------------------+----------------+
    |  0x0C  |   op   | target NodeId (20)           | channel (u32)  |
    +--------+--------+------------------------------+----------------+
    op: 0x01 BIND    (origin -> relay; channel 0)
        0x02 BOUND   (relay -> origin; the channel, or 0: none now, keep to RELAY_FORWARD)
        0x03 UNKNOWN (relay -> origin; target all zero: "no such channel here": the relay
                     restarted or forgot it, the origin asks afresh)
    other ops are refused as bad_flags

NEIGHBOURS (0x04): the sender's near neighbours, for ring stabilisation::

    +--------+--------+--------+--------------------------+
    |  0x04  | flags  | count  | count x NodeId (20 each) |
    +--------+--------+--------+--------------------------+
    flags: 0x01 REPLY_WANTED (a node repairing its ring asks for the list back)

CLOSING (0x05): 'I am closing this link' (the link layer has no close message of its own;
without this the peer would route into a dead link until its keepalive timeout)::

    +--------+
    |  0x05  |
    +--------+

DIRECT (0x06): an upper-layer payload for the peer at the other end of this link itself, with
no routing header (the data plane over a shortcut: 2 bytes instead of ROUTED's 45; the source
is the link's authenticated peer, so there is nothing to spoof)::

    +--------+--------+---------------------------+
    |  0x06  |  kind  | payload (rest)            |
    +--------+--------+---------------------------+

ALIVE (0x09): a liveness probe and its answer (:mod:`ipop.overlay.suspect`: a next hop we
keep routing into without hearing back is asked; the answer is no larger than the question)::

    +--------+--------+-------------+
    |  0x09  | flags  | token (u16) |
    +--------+--------+-------------+
    flags: 0x01 REPLY_WANTED (the probe; the answer has no flag set and the probe's token,
    which tells which probe it answers: a round-trip sample)

FAST_PEERS (0x0A): "which of your links are fastest?" and the answer, for proximity neighbour
selection (:mod:`ipop.overlay.proximity`: a node asks its lowest round-trip peers, whose own
fastest links are likely near it too)::

    +--------+--------+--------+--------------------------+
    |  0x0A  | flags  | count  | count x NodeId (20 each) |
    +--------+--------+--------+--------------------------+
    flags: 0x01 REPLY_WANTED (the question, count 0); the answer has no flag set and at most
    MAX_FAST_PEERS ids, fastest first as the sender measured them (no round trips travel: the
    asker measures its own, in its own handshakes, before any id counts for anything)

LINK_IDS (0x0B): "these are the nodes I hold links to", told to a linked peer that we measured
fast (:mod:`ipop.overlay.linkhints`: it may then hand us a message for one of them, or for a key
one of them is near, when that beats the hops its own links offer)::

    +--------+--------+--------+------------------------------------------+
    |  0x0B  | flags  | count  | count x id prefix (u64, the id's top 8)   |
    +--------+--------+--------+------------------------------------------+
    flags: none defined (0; others refused as bad_flags); count <= MAX_LINK_IDS. An id travels
    as its top 64 bits: at 2**64 prefixes two of a node's links share one about never, and a
    prefix that names the wrong node costs what any false claim costs (a detour the routing
    rule bounds). Order is the sender's (ascending as we send them); duplicates are harmless.

CRL (0x08): revocation list gossip between linked peers (:mod:`ipop.revocation`; NodeCore
takes these before the overlay, so :func:`decode_message` does not know the type; use
:func:`decode_crl`)::

    +--------+--------+------------------------+
    |  0x08  |  0x01  | number (u64)           |   OFFER: "the CRL I hold is number N"
    +--------+--------+------------------------+---------------+---------------+------------+
    |  0x08  |  0x02  | number (u64)           | total (u16)   | offset (u16)  | chunk ...  |
    +--------+--------+------------------------+---------------+---------------+------------+
    CHUNK: bytes [offset, offset + len(chunk)) of CRL number N's DER, which is ``total`` bytes
    (1..MAX_CRL_BYTES); chunks are CRL_CHUNK_BYTES long (the last one shorter) and start at
    multiples of it. Number 0 means "no CRL" and is only ever offered.
    +--------+--------+---------------------------+-------------------------------+
    |  0x08  |  0x03  | CA public key (32 bytes)  | an OFFER or a CHUNK, as above |
    +--------+--------+---------------------------+-------------------------------+
    NETWORK: the same gossip for the list of a virtual network's CA, named by its raw Ed25519
    key (a shared overlay carries several networks' lists beside its own; issue 17). The inner
    message is never itself a NETWORK one. A network CHUNK is 34 bytes longer than the
    overlay's: CRL_CHUNK_BYTES leaves room for that under the smallest link payload.

Routed payload kind 0x80 CONNECT_TO_ME (CTM; a JOIN is a CTM with purpose JOIN)::

    +-------------+---------+--------------------+---------+-------------------------+
    | token (u32) | purpose | reply_via NodeId   | n (u8)  | n x endpoint (6 bytes)  |
    +-------------+---------+--------------------+---------+-------------------------+
    purpose: 1 JOIN, 2 NEAR, 3 FAR, 4 SHORTCUT

Routed payload kind 0x81 CTM_REPLY::

    +-------------+---------+-----------------------+---------+--------------------+
    | token (u32) | n (u8)  | n x endpoint (6 each) | m (u8)  | m x NodeId (20)    |
    +-------------+---------+-----------------------+---------+--------------------+
    the m ids are the responder's directly linked peers: the requester's relay candidates

Protocol flow (A joins; B bootstrap; T, U the nodes around A's address)::

    A --link--> B                         leaf link to a bootstrap endpoint
    A --ROUTED(CTM JOIN, dst=A, closest, EXCLUDE_SRC)--> B --> ... --> T
    T --ROUTED(CTM_REPLY, dst=A, EXACT, VIA=B)--> ... --> B --> A
    T: links.connect(A's endpoints)   A: links.connect(T's endpoints)   (simultaneous open)
    A --ROUTED(CTM NEAR, dst=U, EXACT)--> ... --> U, for U in T's list that is near A
    A <-NEIGHBOURS-> near links, every gossip interval and whenever the near set changes
    no direct link within the deadline (NEAR/JOIN only):  A: links.connect(RelayPath(X, T))
    A --RELAY_FORWARD(T, d)--> X --RELAY_DELIVER(A, d)--> T
    X holds no direct link to T:  X --RELAY_REFUSED(T)--> A, which drops its link to T

Parsers are strict on required fields and lax on trailing bytes (DESIGN.md §12.4), except
where the trailing bytes are the payload itself.

Why this module is over 600 lines: it is one concept, every overlay message's byte layout and
its codec, kept in one place next to the byte diagrams above so that a layout change is one
diff to one file that can be checked against its diagram.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ipop.errors import RemoteProtocolError
from ipop.idcache import node_id_from_bytes
from ipop.types import ID_BYTES, Endpoint, NodeId

# Every reason a malformed message raises (RemoteProtocolError.reason); whoever decodes one
# counts it in its drops (tests/unit/test_drop_reasons.py keeps this list whole).
DECODE_REASONS = frozenset(
    {
        "bad_cert_length",
        "bad_endpoint",
        "bad_flags",
        "bad_kind",
        "bad_purpose",
        "bad_ttl",
        "crl_bad_chunk",
        "crl_bad_op",
        "empty",
        "too_many_endpoints",
        "too_many_ids",
        "truncated",
        "unknown_type",
    }
)

# --- type bytes ------------------------------------------------------------------------------
TYPE_ROUTED = 0x01
TYPE_RELAY_FORWARD = 0x02
TYPE_RELAY_DELIVER = 0x03
TYPE_NEIGHBOURS = 0x04
TYPE_CLOSING = 0x05
TYPE_DIRECT = 0x06
TYPE_RELAY_REFUSED = 0x07
TYPE_ALIVE = 0x09
TYPE_FAST_PEERS = 0x0A
TYPE_LINK_IDS = 0x0B
TYPE_RELAY_CHANNEL = 0x0C
CHANNEL_BIND = 0x01
CHANNEL_BOUND = 0x02
CHANNEL_UNKNOWN = 0x03
_CHANNEL = struct.Struct(">I")
# A RELAY_FORWARD's or RELAY_DELIVER's head: the type and the node id; the sealed datagram
# follows (relays and receivers compare heads to take a run of one link's messages at once).
RELAY_HEAD_BYTES = 1 + ID_BYTES

# --- routed header --------------------------------------------------------------------------
FLAG_EXACT = 0x01
FLAG_EXCLUDE_SRC = 0x02
FLAG_VIA = 0x04
# Wire-only, never kept in ``Routed.flags``: encode() sets CERT when ``Routed.cert`` is non-empty
# and MAC when ``Routed.sig`` is a MAC_BYTES MAC.
FLAG_CERT = 0x08
FLAG_MAC = 0x10
# Kept in ``Routed.flags`` (nothing else tells a sealed payload from a clear one).
FLAG_SEALED = 0x20
# Routing state (not signed): the one sideways step was taken (ipop.overlay.routing).
FLAG_SIDEWAYS = 0x40
_KNOWN_FLAGS = FLAG_EXACT | FLAG_EXCLUDE_SRC | FLAG_VIA | FLAG_SEALED | FLAG_SIDEWAYS

# Payload kinds: upper layers register handlers for 0x01..0x7F.
KIND_DHT = 0x01
KIND_IP = 0x02
KIND_PING = 0x03
KIND_BIRTHDAY = 0x04  # port guessing toward symmetric NATs (ipop.nat.portguess), for NodeCore
KIND_PMTU = 0x05  # path MTU probes of a route over the ring (ipop.link.pmtu), handled by NodeCore
# An IP packet of one of the sender's networks, when it is in several (issue 17): the
# network's 4-byte tag (ipop.vnet.networks) before the packet. A node in one network sends
# KIND_IP as ever (and the native fast path knows only that kind).
KIND_IP_NET = 0x06
# The kinds that carry IP: sealed when routed, path MTU wanted.
IP_KINDS = frozenset({KIND_IP, KIND_IP_NET})
UPPER_KIND_MAX = 0x7F
# Overlay control kinds, handled inside the overlay node.
KIND_CTM = 0x80
KIND_CTM_REPLY = 0x81

MAX_TTL = 255
NEIGHBOURS_FLAG_REPLY_WANTED = 0x01
ALIVE_FLAG_REPLY_WANTED = 0x01
FAST_PEERS_FLAG_REPLY_WANTED = 0x01
# Bounds that keep any one message well under a 1,400-byte datagram.
MAX_ENDPOINTS = 8
MAX_NEIGHBOURS = 48
# Ids in a FAST_PEERS answer: what one answer can make us consider (ipop.overlay.proximity).
MAX_FAST_PEERS = 16
# Ids in a LINK_IDS list (a node holds ~40 links at 1,000 nodes): 3 + 64 x 8 = 515 bytes at most.
MAX_LINK_IDS = 64
LINK_ID_PREFIX_BYTES = 8

_ROUTED_FIXED = struct.Struct("!BBBBB")
_ROUTED_SIGNED_HEAD = struct.Struct("!BBI")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_TS = struct.Struct("!I")
SIG_BYTES = 64
MAC_BYTES = 16
# A SEALED payload starts with its AES-GCM nonce (random: see ipop.overlay.origin).
SEAL_NONCE_BYTES = 12
# ts + signature at the end of a signed routed message (a MAC'd one ends in ts + MAC).
ROUTED_TRAILER_BYTES = _TS.size + SIG_BYTES
# A node certificate is ~300-400 bytes DER; anything far larger is not one of ours.
MAX_CERT_BYTES = 1024
ROUTED_SIG_DOMAIN = b"ipop routed v1\x00"
_ENDPOINT = struct.Struct("!4sH")
_CTM_FIXED = struct.Struct("!IB")


class Purpose(enum.IntEnum):
    """Why a CONNECT_TO_ME asks for a link: decides its kind and whether a relay may stand in."""

    JOIN = 1
    NEAR = 2
    FAR = 3
    SHORTCUT = 4


def _need(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise RemoteProtocolError("truncated", f"{what}: need {n} bytes, have {len(data)}")


def _reply_flag(data: bytes, flag: int) -> bool:
    """Byte 1 as a flags byte whose only defined flag is ``flag`` (a reply wanted)."""
    flags = data[1]
    if flags & ~flag:
        raise RemoteProtocolError("bad_flags", f"{flags:#x}")
    return bool(flags & flag)


def _node_id(data: bytes, off: int) -> NodeId:
    return node_id_from_bytes(data[off : off + ID_BYTES])


def _encode_endpoints(endpoints: tuple[Endpoint, ...]) -> bytes:
    if len(endpoints) > MAX_ENDPOINTS:
        raise ValueError(f"at most {MAX_ENDPOINTS} endpoints")
    out = [bytes([len(endpoints)])]
    for ep in endpoints:
        out.append(_ENDPOINT.pack(ipaddress.IPv4Address(ep.host).packed, ep.port))
    return b"".join(out)


def _decode_endpoints(data: bytes, off: int) -> tuple[tuple[Endpoint, ...], int]:
    _need(data, off + 1, "endpoint count")
    n = data[off]
    if n > MAX_ENDPOINTS:
        raise RemoteProtocolError("too_many_endpoints", str(n))
    off += 1
    _need(data, off + n * _ENDPOINT.size, "endpoints")
    eps = []
    for _ in range(n):
        raw, port = _ENDPOINT.unpack_from(data, off)
        off += _ENDPOINT.size
        if port == 0:
            raise RemoteProtocolError("bad_endpoint", "port 0")
        eps.append(Endpoint(str(ipaddress.IPv4Address(raw)), port))
    return tuple(eps), off


def _encode_ids(ids: tuple[NodeId, ...]) -> bytes:
    if len(ids) > MAX_NEIGHBOURS:
        raise ValueError(f"at most {MAX_NEIGHBOURS} node ids")
    return bytes([len(ids)]) + b"".join(i.to_bytes() for i in ids)


def _decode_ids(data: bytes, off: int) -> tuple[tuple[NodeId, ...], int]:
    _need(data, off + 1, "id count")
    n = data[off]
    if n > MAX_NEIGHBOURS:
        raise RemoteProtocolError("too_many_ids", str(n))
    off += 1
    _need(data, off + n * ID_BYTES, "ids")
    ids = tuple(_node_id(data, off + i * ID_BYTES) for i in range(n))
    return ids, off + n * ID_BYTES


# --- link-level overlay messages --------------------------------------------------------------


def routed_signed_bytes(
    flags: int, kind: int, ts: int, src: NodeId, dst: NodeId, payload: bytes
) -> bytes:
    """What the source of a routed message signs (see the ROUTED diagram)."""
    head = _ROUTED_SIGNED_HEAD.pack(flags & FLAG_EXACT, kind, ts)
    return b"".join((ROUTED_SIG_DOMAIN, head, src.to_bytes(), dst.to_bytes(), payload))


@dataclass(frozen=True, slots=True)
class Routed:
    """A routed message (type 0x01); ``via`` is set exactly when the VIA flag is.

    ``ts`` and ``sig`` (a signature, or a MAC_BYTES MAC or seal tag) authenticate it end to
    end (:mod:`ipop.overlay.origin`); with FLAG_SEALED in ``flags``, ``payload`` is the nonce
    and the ciphertext, which only ``dst`` can open. ``cert`` is the source's certificate DER,
    or empty when it does not travel with this message.
    """

    flags: int
    hops: int
    ttl: int
    kind: int
    src: NodeId
    dst: NodeId
    via: NodeId | None
    payload: bytes
    ts: int
    sig: bytes
    cert: bytes = b""

    @property
    def exact(self) -> bool:
        return bool(self.flags & FLAG_EXACT)

    def copy_with(
        self,
        *,
        flags: int | None = None,
        hops: int | None = None,
        payload: bytes | None = None,
        cert: bytes | None = None,
    ) -> Routed:
        """A copy with the fields given changed. The constructor, not dataclasses.replace
        (~1.7x the cost): every forwarded, opened or certificate-less message is one."""
        return Routed(
            self.flags if flags is None else flags,
            self.hops if hops is None else hops,
            self.ttl,
            self.kind,
            self.src,
            self.dst,
            self.via,
            self.payload if payload is None else payload,
            self.ts,
            self.sig,
            self.cert if cert is None else cert,
        )

    def signed_bytes(self) -> bytes:
        return routed_signed_bytes(self.flags, self.kind, self.ts, self.src, self.dst, self.payload)

    def encode(self) -> bytes:
        if self.flags & ~_KNOWN_FLAGS or (self.via is None) == bool(self.flags & FLAG_VIA):
            raise ValueError("flags and via disagree")
        if not 0 <= self.hops <= 255 or not 1 <= self.ttl <= MAX_TTL or not 1 <= self.kind <= 255:
            raise ValueError("hops, ttl or kind out of range")
        if len(self.sig) not in (SIG_BYTES, MAC_BYTES) or not 0 <= self.ts <= 0xFFFFFFFF:
            raise ValueError("sig or ts malformed")
        if len(self.cert) > MAX_CERT_BYTES:
            raise ValueError("certificate too large")
        flags = self.flags | FLAG_CERT if self.cert else self.flags
        if len(self.sig) == MAC_BYTES:
            if not self.flags & FLAG_EXACT:
                raise ValueError("a MAC needs an EXACT destination")
            flags |= FLAG_MAC
        elif self.flags & FLAG_SEALED:
            raise ValueError("a sealed message's auth is its MAC_BYTES tag")
        if self.flags & FLAG_SEALED and len(self.payload) < SEAL_NONCE_BYTES:
            raise ValueError("a sealed payload starts with its nonce")
        parts = [
            _ROUTED_FIXED.pack(TYPE_ROUTED, flags, self.hops, self.ttl, self.kind),
            self.src.to_bytes(),
            self.dst.to_bytes(),
        ]
        if self.via is not None:
            parts.append(self.via.to_bytes())
        if self.cert:
            parts.append(_U16.pack(len(self.cert)))
            parts.append(self.cert)
        parts.append(self.payload)
        parts.append(_TS.pack(self.ts))
        parts.append(self.sig)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Routed:
        _need(data, _ROUTED_FIXED.size, "routed header")
        _t, flags, hops, ttl, kind = _ROUTED_FIXED.unpack_from(data, 0)
        if (
            flags & ~(_KNOWN_FLAGS | FLAG_CERT | FLAG_MAC)
            or flags & (FLAG_MAC | FLAG_EXACT) == FLAG_MAC
            or flags & (FLAG_SEALED | FLAG_MAC) == FLAG_SEALED
        ):
            raise RemoteProtocolError("bad_flags", f"{flags:#x}")
        trailer = _TS.size + (MAC_BYTES if flags & FLAG_MAC else SIG_BYTES)
        _need(data, _ROUTED_FIXED.size + 2 * ID_BYTES + trailer, "routed header")
        if ttl == 0:
            raise RemoteProtocolError("bad_ttl", "ttl 0")
        if kind == 0:
            raise RemoteProtocolError("bad_kind", "kind 0")
        off = _ROUTED_FIXED.size
        src = _node_id(data, off)
        dst = _node_id(data, off + ID_BYTES)
        off += 2 * ID_BYTES
        end = len(data) - trailer
        via = None
        if flags & FLAG_VIA:
            _need(data, off + ID_BYTES + trailer, "via")
            via = _node_id(data, off)
            off += ID_BYTES
        cert = b""
        if flags & FLAG_CERT:
            _need(data, off + _U16.size + trailer, "certificate length")
            (n,) = _U16.unpack_from(data, off)
            off += _U16.size
            if not 0 < n <= MAX_CERT_BYTES:
                raise RemoteProtocolError("bad_cert_length", str(n))
            if off + n > end:
                raise RemoteProtocolError("truncated", "certificate")
            cert = bytes(data[off : off + n])
            off += n
        if flags & FLAG_SEALED and end - off < SEAL_NONCE_BYTES:
            raise RemoteProtocolError("truncated", "sealed payload")
        (ts,) = _TS.unpack_from(data, end)
        sig = bytes(data[end + _TS.size :])
        return cls(
            flags & _KNOWN_FLAGS,
            hops,
            ttl,
            kind,
            src,
            dst,
            via,
            bytes(data[off:end]),
            ts,
            sig,
            cert,
        )


@dataclass(frozen=True, slots=True)
class RelayForward:
    """Type 0x02: 'please pass this sealed datagram to ``target``' (sent to the relay)."""

    target: NodeId
    data: bytes

    def encode(self) -> bytes:
        return bytes([TYPE_RELAY_FORWARD]) + self.target.to_bytes() + self.data

    @classmethod
    def decode(cls, data: bytes) -> RelayForward:
        _need(data, 1 + ID_BYTES + 1, "relay forward")
        return cls(_node_id(data, 1), bytes(data[1 + ID_BYTES :]))


@dataclass(frozen=True, slots=True)
class RelayDeliver:
    """Type 0x03: 'this sealed datagram comes from ``origin``' (sent by the relay)."""

    origin: NodeId
    data: bytes

    def encode(self) -> bytes:
        return bytes([TYPE_RELAY_DELIVER]) + self.origin.to_bytes() + self.data

    @classmethod
    def decode(cls, data: bytes) -> RelayDeliver:
        _need(data, 1 + ID_BYTES + 1, "relay deliver")
        return cls(_node_id(data, 1), bytes(data[1 + ID_BYTES :]))


@dataclass(frozen=True, slots=True)
class Neighbours:
    """Type 0x04: the sender's near neighbours."""

    reply_wanted: bool
    ids: tuple[NodeId, ...]

    def encode(self) -> bytes:
        return _encode_id_list(TYPE_NEIGHBOURS, NEIGHBOURS_FLAG_REPLY_WANTED, self)

    @classmethod
    def decode(cls, data: bytes) -> Neighbours:
        return cls(*_decode_id_list(data, NEIGHBOURS_FLAG_REPLY_WANTED, MAX_NEIGHBOURS))


@dataclass(frozen=True, slots=True)
class Closing:
    """Type 0x05: the sender is closing the link (it no longer has a reason to keep it)."""

    def encode(self) -> bytes:
        return bytes([TYPE_CLOSING])

    @classmethod
    def decode(cls, data: bytes) -> Closing:
        return cls()


@dataclass(frozen=True, slots=True)
class RelayRefused:
    """Type 0x07: the relay cannot pass datagrams to ``target`` (it holds no direct link to it).

    Why: without it the origin's relayed link to ``target`` would swallow everything sent over
    it until the link layer noticed the silence (``link_timeout_s``); with it the origin drops
    the link at once and links again (directly, or through another relay).
    """

    target: NodeId

    def encode(self) -> bytes:
        return bytes([TYPE_RELAY_REFUSED]) + self.target.to_bytes()

    @classmethod
    def decode(cls, data: bytes) -> RelayRefused:
        _need(data, 1 + ID_BYTES, "relay refused")
        return cls(_node_id(data, 1))


@dataclass(frozen=True, slots=True)
class RelayChannel:
    """Type 0x0C: BIND asks the relay for a channel to ``target``; BOUND answers with its
    number (0: none, the origin keeps to RELAY_FORWARD); UNKNOWN tells the origin the relay
    holds no channel ``channel`` (``target`` unused). See :mod:`ipop.overlay.channels`."""

    op: int
    target: NodeId
    channel: int = 0

    def encode(self) -> bytes:
        return (
            bytes((TYPE_RELAY_CHANNEL, self.op))
            + self.target.to_bytes()
            + _CHANNEL.pack(self.channel)
        )

    @classmethod
    def decode(cls, data: bytes) -> RelayChannel:
        _need(data, 2 + ID_BYTES + _CHANNEL.size, "relay channel")
        op = data[1]
        if op not in (CHANNEL_BIND, CHANNEL_BOUND, CHANNEL_UNKNOWN):
            raise RemoteProtocolError("bad_flags", f"relay channel op {op:#x}")
        return cls(op, _node_id(data, 2), _CHANNEL.unpack_from(data, 2 + ID_BYTES)[0])


@dataclass(frozen=True, slots=True)
class Alive:
    """Type 0x09: "are you there?" (``reply_wanted``) or the answer: a probe of a next hop that
    fell silent while we route into it (see :mod:`ipop.overlay.suspect`)."""

    reply_wanted: bool
    token: int

    def encode(self) -> bytes:
        flags = ALIVE_FLAG_REPLY_WANTED if self.reply_wanted else 0
        return bytes([TYPE_ALIVE, flags]) + _U16.pack(self.token)

    @classmethod
    def decode(cls, data: bytes) -> Alive:
        _need(data, 4, "alive")
        return cls(_reply_flag(data, ALIVE_FLAG_REPLY_WANTED), _U16.unpack_from(data, 2)[0])


@dataclass(frozen=True, slots=True)
class FastPeers:
    """Type 0x0A: a question (``reply_wanted``, no ids) or its answer: the sender's fastest
    links, fastest first (at most :data:`MAX_FAST_PEERS`; see the diagram above)."""

    reply_wanted: bool
    ids: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        if len(self.ids) > MAX_FAST_PEERS:
            raise ValueError(f"at most {MAX_FAST_PEERS} fast peers")

    def encode(self) -> bytes:
        return _encode_id_list(TYPE_FAST_PEERS, FAST_PEERS_FLAG_REPLY_WANTED, self)

    @classmethod
    def decode(cls, data: bytes) -> FastPeers:
        return cls(*_decode_id_list(data, FAST_PEERS_FLAG_REPLY_WANTED, MAX_FAST_PEERS))


@dataclass(frozen=True, slots=True)
class LinkIds:
    """Type 0x0B: the top 64 bits of each id the sender holds a link to (at most
    :data:`MAX_LINK_IDS`; see the diagram above and :mod:`ipop.overlay.linkhints`)."""

    prefixes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.prefixes) > MAX_LINK_IDS:
            raise ValueError(f"at most {MAX_LINK_IDS} link ids")
        if any(not 0 <= p < 1 << 64 for p in self.prefixes):
            raise ValueError("a prefix is a u64")

    @classmethod
    def of(cls, ids: Iterable[NodeId]) -> LinkIds:
        """The list for ``ids`` (at most MAX_LINK_IDS of them), ascending."""
        return cls(tuple(sorted({id_prefix(i) for i in ids})))

    def encode(self) -> bytes:
        return bytes([TYPE_LINK_IDS, 0, len(self.prefixes)]) + b"".join(
            _U64.pack(p) for p in self.prefixes
        )

    @classmethod
    def decode(cls, data: bytes) -> LinkIds:
        _need(data, 3, "link ids")
        _reply_flag(data, 0)  # no flag defined: any set is refused
        n = data[2]
        if n > MAX_LINK_IDS:
            raise RemoteProtocolError("too_many_ids", str(n))
        _need(data, 3 + n * LINK_ID_PREFIX_BYTES, "link ids")
        return cls(tuple(_U64.unpack_from(data, 3 + k * LINK_ID_PREFIX_BYTES)[0] for k in range(n)))


def id_prefix(node: NodeId) -> int:
    """The top 64 bits of ``node``'s id: how LINK_IDS names it."""
    return node.value >> (8 * (ID_BYTES - LINK_ID_PREFIX_BYTES))


def _encode_id_list(type_byte: int, flag: int, msg: Neighbours | FastPeers) -> bytes:
    """NEIGHBOURS and FAST_PEERS: type, flags (``flag`` when a reply is wanted), the ids."""
    return bytes([type_byte, flag if msg.reply_wanted else 0]) + _encode_ids(msg.ids)


def _decode_id_list(data: bytes, flag: int, limit: int) -> tuple[bool, tuple[NodeId, ...]]:
    """(reply wanted, ids) of a NEIGHBOURS or FAST_PEERS message of at most ``limit`` ids."""
    _need(data, 3, "id list")
    reply_wanted = _reply_flag(data, flag)
    if data[2] > limit:
        raise RemoteProtocolError("too_many_ids", str(data[2]))
    ids, _ = _decode_ids(data, 2)
    return reply_wanted, ids


OverlayMessage = (
    Routed
    | RelayForward
    | RelayDeliver
    | Neighbours
    | Closing
    | RelayRefused
    | RelayChannel
    | Alive
    | FastPeers
    | LinkIds
)

_DECODERS: dict[int, Callable[[bytes], OverlayMessage]] = {
    TYPE_ROUTED: Routed.decode,
    TYPE_RELAY_FORWARD: RelayForward.decode,
    TYPE_RELAY_DELIVER: RelayDeliver.decode,
    TYPE_NEIGHBOURS: Neighbours.decode,
    TYPE_CLOSING: Closing.decode,
    TYPE_RELAY_REFUSED: RelayRefused.decode,
    TYPE_RELAY_CHANNEL: RelayChannel.decode,
    TYPE_ALIVE: Alive.decode,
    TYPE_FAST_PEERS: FastPeers.decode,
    TYPE_LINK_IDS: LinkIds.decode,
}


def decode_message(data: bytes) -> OverlayMessage:
    """Parse one link payload; anything malformed raises :class:`RemoteProtocolError`."""
    if not data:
        raise RemoteProtocolError("empty", "")
    decoder = _DECODERS.get(data[0])
    if decoder is None:
        raise RemoteProtocolError("unknown_type", f"{data[0]:#x}")
    return decoder(data)


# --- routed payloads of the overlay's own kinds --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectToMe:
    """Kind 0x80: 'link to me at these endpoints'; answered by :class:`ConnectToMeReply`."""

    token: int
    purpose: Purpose
    reply_via: NodeId
    endpoints: tuple[Endpoint, ...]

    def encode(self) -> bytes:
        head = _CTM_FIXED.pack(self.token, int(self.purpose))
        return head + self.reply_via.to_bytes() + _encode_endpoints(self.endpoints)

    @classmethod
    def decode(cls, data: bytes) -> ConnectToMe:
        _need(data, _CTM_FIXED.size + ID_BYTES, "ctm")
        token, purpose_b = _CTM_FIXED.unpack_from(data, 0)
        try:
            purpose = Purpose(purpose_b)
        except ValueError:
            raise RemoteProtocolError("bad_purpose", str(purpose_b)) from None
        reply_via = _node_id(data, _CTM_FIXED.size)
        eps, _ = _decode_endpoints(data, _CTM_FIXED.size + ID_BYTES)
        return cls(token, purpose, reply_via, eps)


@dataclass(frozen=True, slots=True)
class ConnectToMeReply:
    """Kind 0x81: the responder's endpoints and its directly linked peers."""

    token: int
    endpoints: tuple[Endpoint, ...]
    neighbours: tuple[NodeId, ...]

    def encode(self) -> bytes:
        return (
            struct.pack("!I", self.token)
            + _encode_endpoints(self.endpoints)
            + _encode_ids(self.neighbours)
        )

    @classmethod
    def decode(cls, data: bytes) -> ConnectToMeReply:
        _need(data, 4, "ctm reply")
        (token,) = struct.unpack_from("!I", data, 0)
        eps, off = _decode_endpoints(data, 4)
        ids, _ = _decode_ids(data, off)
        return cls(token, eps, ids)


# --- revocation list gossip (TYPE_CRL) ---------------------------------------------------------

TYPE_CRL = 0x08
CRL_OP_OFFER = 0x01
CRL_OP_CHUNK = 0x02
CRL_OP_NETWORK = 0x03
# 960 bytes of CRL per message keeps a CHUNK (14 bytes of header, 48 in a NETWORK message)
# under any link MTU: no bigger than the 1,014 bytes an overlay CHUNK had at 1,000.
CRL_CHUNK_BYTES = 960
CRL_KEY_BYTES = 32
# Mirrors ipop.identity.MAX_CRL_BYTES (messages import nothing of identity; a test pins both).
CRL_MAX_TOTAL = 16_384
_CRL_OFFER = struct.Struct("!BBQ")
_CRL_CHUNK = struct.Struct("!BBQHH")
_CRL_NETWORK = struct.Struct("!BB32s")


@dataclass(frozen=True, slots=True)
class CrlOffer:
    """TYPE_CRL OFFER: the sender holds CRL ``number`` (0: none)."""

    number: int

    def encode(self) -> bytes:
        return _CRL_OFFER.pack(TYPE_CRL, CRL_OP_OFFER, self.number)


@dataclass(frozen=True, slots=True)
class CrlChunk:
    """TYPE_CRL CHUNK: one piece of CRL ``number``'s DER encoding."""

    number: int
    total: int
    offset: int
    data: bytes

    def encode(self) -> bytes:
        if not 1 <= self.total <= CRL_MAX_TOTAL or not _chunk_fits(
            self.total, self.offset, len(self.data)
        ):
            raise ValueError("chunk does not fit its CRL")
        return _CRL_CHUNK.pack(TYPE_CRL, CRL_OP_CHUNK, self.number, self.total, self.offset) + (
            self.data
        )


@dataclass(frozen=True, slots=True)
class NetworkCrl:
    """TYPE_CRL NETWORK: an OFFER or CHUNK (``inner``, encoded) of the list of the network CA
    whose raw public key is ``ca_key``."""

    ca_key: bytes
    inner: bytes

    def encode(self) -> bytes:
        if len(self.ca_key) != CRL_KEY_BYTES:
            raise ValueError("a CA key is 32 bytes")
        return _CRL_NETWORK.pack(TYPE_CRL, CRL_OP_NETWORK, self.ca_key) + self.inner


def _chunk_fits(total: int, offset: int, size: int) -> bool:
    return (
        offset % CRL_CHUNK_BYTES == 0
        and offset < total
        and size == min(CRL_CHUNK_BYTES, total - offset)
    )


def decode_network_crl(data: bytes) -> tuple[bytes, CrlOffer | CrlChunk]:
    """A TYPE_CRL NETWORK message's CA key and its inner OFFER or CHUNK, parsed (the inner
    one may not be a NETWORK one); anything malformed raises :class:`RemoteProtocolError`."""
    _need(data, _CRL_NETWORK.size + _CRL_OFFER.size, "crl network")
    if data[0] != TYPE_CRL or data[1] != CRL_OP_NETWORK:
        raise RemoteProtocolError("crl_bad_op", f"{data[1]:#x} is no NETWORK message")
    inner = bytes(data[_CRL_NETWORK.size :])
    if inner[0] != TYPE_CRL:
        raise RemoteProtocolError("unknown_type", f"{inner[0]:#x}")
    return bytes(data[2 : _CRL_NETWORK.size]), _decode_list_message(inner)


def decode_crl(data: bytes) -> CrlOffer | CrlChunk | NetworkCrl:
    """Parse one TYPE_CRL message; anything malformed raises :class:`RemoteProtocolError`.
    A NETWORK message's inner one is checked as well (and may not be a NETWORK one)."""
    _need(data, _CRL_OFFER.size, "crl")
    if data[0] != TYPE_CRL:
        raise RemoteProtocolError("unknown_type", f"{data[0]:#x}")
    if data[1] == CRL_OP_NETWORK:
        ca_key, _inner = decode_network_crl(data)
        return NetworkCrl(ca_key, bytes(data[_CRL_NETWORK.size :]))
    return _decode_list_message(data)


def _decode_list_message(data: bytes) -> CrlOffer | CrlChunk:
    """An OFFER or a CHUNK (its type byte checked by the caller); any other op is refused."""
    op = data[1]
    if op == CRL_OP_OFFER:
        return CrlOffer(_CRL_OFFER.unpack_from(data, 0)[2])
    if op != CRL_OP_CHUNK:
        raise RemoteProtocolError("crl_bad_op", f"{op:#x}")
    _need(data, _CRL_CHUNK.size, "crl chunk")
    _t, _op, number, total, offset = _CRL_CHUNK.unpack_from(data, 0)
    chunk = bytes(data[_CRL_CHUNK.size :])
    if number == 0 or not 1 <= total <= CRL_MAX_TOTAL or not _chunk_fits(total, offset, len(chunk)):
        raise RemoteProtocolError("crl_bad_chunk", f"number {number} {offset}+{len(chunk)}/{total}")
    return CrlChunk(number, total, offset, chunk)
