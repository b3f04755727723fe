"""The outer layout of every ipop datagram on the node's single UDP socket.

This module owns the first byte (the message type, used to demultiplex) and the DATA header.
Handshake bodies live in :mod:`ipop.wire.handshake`.

Demultiplexing (RFC 7983 §7, updated by RFC 9443): on a shared socket the first byte tells
protocols apart. STUN uses 0..3 (its first two bits are 00), DTLS 20..63, TURN channels
64..79, QUIC 64..127 and RTP/RTCP 128..191; 192..255 is assigned to nobody, so every ipop
type byte lies in 0xC0..0xFF and a STUN binding can share the overlay socket::

    first byte   0x00-0x03  STUN (RFC 5389)        -> ipop.wire.stun, answered by ipop.nat.stun
                 0xC0-0xFF  ipop                   -> MessageType below
                 anything else                     -> dropped ("unknown_type")

Types in use; 0xC7..0xFF are free (overlay messages travel inside DATA, not as types here)::

    0xC1  HANDSHAKE_INIT   initiator -> responder   (ipop.wire.handshake.HandshakeInit)
    0xC2  HANDSHAKE_RESP   responder -> initiator   (ipop.wire.handshake.HandshakeResp)
    0xC3  DATA             either direction, sealed with the session keys
    0xC4  COOKIE_REPLY     responder under load -> initiator (ipop.wire.handshake.CookieReply)
    0xC5  CHANNEL_TO_RELAY    a relayed link's DATA, origin -> relay   (relay channels, below)
    0xC6  CHANNEL_FROM_RELAY  the same DATA, relay -> target

DATA (13-byte header, all integers big-endian)::

     0        1                    5                                13
    +--------+--------------------+--------------------------------+------------------------+
    | 0xC3   | receiver_index (4) | counter (8)                    | AEAD ciphertext + tag  |
    +--------+--------------------+--------------------------------+------------------------+
                                                                     len(payload) + 16

- ``receiver_index`` is the index the *receiver* chose during the handshake (WireGuard style):
  the receiver finds the session keys with one dict lookup, without trusting any address.
- ``counter`` is the sender's per-key message counter, never reused with one key. The AEAD
  nonce is 4 zero bytes followed by the counter (96 bits), and the whole 13-byte header is the
  associated data, so type, index and counter are all authenticated.
- An empty payload (a 29-byte datagram) is a keepalive.

Relay channels (5-byte header, then one whole DATA datagram of a relayed link's session)::

     0        1                    5
    +--------+--------------------+-------------------------------------------+
    | 0xC5/6 | channel (4)        | DATA datagram sealed end to end (0xC3 ...) |
    +--------+--------------------+-------------------------------------------+

The channel is a number the relay chose when the origin asked for one over their link
(:mod:`ipop.overlay.channels`). The relay forwards a 0xC5 datagram that arrives from the
address its link with the channel's origin runs on, byte for byte but the type (0xC6), to the
address of its link with the channel's target; the target opens the DATA inside with the
session its receiver index names, as relayed through the node it holds a direct link with at
the source address (none there: dropped). Neither header is authenticated (a relay's
RELAY_FORWARD was): what they steer is checked against state set up over authenticated links,
and the DATA inside is authenticated end to end, so a forged or replayed one costs a lookup
and a failed open.

Protocol flow (one session; see :mod:`ipop.link.layer` for the state machine)::

    initiator                                   responder
      HANDSHAKE_INIT  ------------------------>   verify cert + signature + freshness
                      <------------------------   HANDSHAKE_RESP (keys derived, unconfirmed)
      verify, derive keys, LinkUp
      DATA (empty keepalive) ----------------->   first authenticated DATA: LinkUp
      DATA <---------------------------------->   DATA
"""

from __future__ import annotations

import struct
from enum import IntEnum

__all__ = [
    "AEAD_TAG_BYTES",
    "CHANNEL_HEADER",
    "CHANNEL_HEADER_BYTES",
    "DATA_HEADER",
    "DATA_HEADER_BYTES",
    "DATA_MIN_BYTES",
    "IPOP_TYPE_MIN",
    "MAX_COUNTER",
    "TYPE_CHANNEL_FROM_RELAY",
    "TYPE_CHANNEL_TO_RELAY",
    "TYPE_COOKIE_REPLY",
    "TYPE_DATA",
    "TYPE_HANDSHAKE_INIT",
    "TYPE_HANDSHAKE_RESP",
    "MessageType",
    "is_ipop",
    "is_stun",
]


class MessageType(IntEnum):
    """First byte of an ipop datagram."""

    HANDSHAKE_INIT = 0xC1
    HANDSHAKE_RESP = 0xC2
    DATA = 0xC3
    COOKIE_REPLY = 0xC4
    CHANNEL_TO_RELAY = 0xC5
    CHANNEL_FROM_RELAY = 0xC6


# Plain ints for the hot path: comparing an int with an IntEnum member costs a method call.
TYPE_HANDSHAKE_INIT = int(MessageType.HANDSHAKE_INIT)
TYPE_HANDSHAKE_RESP = int(MessageType.HANDSHAKE_RESP)
TYPE_DATA = int(MessageType.DATA)
TYPE_COOKIE_REPLY = int(MessageType.COOKIE_REPLY)
TYPE_CHANNEL_TO_RELAY = int(MessageType.CHANNEL_TO_RELAY)
TYPE_CHANNEL_FROM_RELAY = int(MessageType.CHANNEL_FROM_RELAY)
# A relay channel's header: the type and the relay's channel number (big-endian).
CHANNEL_HEADER = struct.Struct(">BI")
CHANNEL_HEADER_BYTES = CHANNEL_HEADER.size
IPOP_TYPE_MIN = 0xC0

# type (B) | receiver_index (I) | counter (Q): precompiled once, used with pack_into/unpack_from.
DATA_HEADER = struct.Struct(">BIQ")
DATA_HEADER_BYTES = DATA_HEADER.size
AEAD_TAG_BYTES = 16
# The smallest valid DATA datagram: a keepalive (header + tag of an empty payload).
DATA_MIN_BYTES = DATA_HEADER_BYTES + AEAD_TAG_BYTES
MAX_COUNTER = (1 << 64) - 1

assert DATA_HEADER_BYTES == 13


def is_ipop(data: bytes) -> bool:
    """True if ``data`` starts with a byte in ipop's range (0xC0..0xFF)."""
    return len(data) > 0 and data[0] >= IPOP_TYPE_MIN


def is_stun(data: bytes) -> bool:
    """True if ``data`` could be STUN: first two bits 00 (RFC 7983 §7: first byte 0..3)."""
    return len(data) >= 20 and data[0] < 4
