"""Link echoes: the messages a node uses to notice that its NAT rebound (sans-IO codec).

A NAT that drops its mappings (a reboot, a conntrack flush, a mapping timed out under a quiet
link) gives every flow behind it a new external port at its next outbound packet. Peers keep
sending to the old one, which leads nowhere; a peer behind a filtering NAT also drops
whatever comes from the new one. The node behind the NAT hears nothing of it, so it asks: an
echo is an authenticated DATA payload its peer answers with where it saw the echo come from.
:class:`ipop.link.rebind.Rebinding` decides when to send them (a link that fell silent,
witnesses when one stays silent) and turns a changed answer into an ``ObservedEndpoint``;
this module only owns the bytes.

Messages (the payload of an authenticated DATA datagram; they share ``PROBE_TAG`` with the
path MTU probes of :mod:`ipop.link.pmtu`, kinds 0 and 1 being theirs)::

    echo: | 0x7E | 0x02 | id (u32 BE) | zero padding (6) |          12 bytes
    ack:  | 0x7E | 0x03 | id (u32 BE) | IPv4 (4) | port (u16 BE) |  12 bytes: the echo's source
    seen: | 0x7E | 0x04 | 0 (u32)     | IPv4 (4) | port (u16 BE) |  12 bytes, unasked: your
                                                                    datagrams now come from here

The echo is padded to the size of its ack, so an answer is never larger than what asked for
it (and only a peer holding the session keys can ask at all). A *seen* is sent by a peer whose
session with us just followed our datagrams to a new port of the same address (our NAT gave
us a new mapping): one per such move, the same news a handshake's Resp carries. Observed
endpoints are IPv4, as in the handshake's Resp (:mod:`ipop.wire.handshake`).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from ipop.link.pmtu import PROBE_TAG
from ipop.types import Endpoint

__all__ = ["ECHO", "ECHO_ACK", "ECHO_BYTES", "SEEN", "ack_payload", "echo_payload", "parse"]

ECHO: Final = 0x02
ECHO_ACK: Final = 0x03
SEEN: Final = 0x04
_ACK = struct.Struct("!BBI4sH")
_HEAD = struct.Struct("!BBI")
ECHO_BYTES: Final = _ACK.size


def echo_payload(echo_id: int) -> bytes:
    return _HEAD.pack(PROBE_TAG, ECHO, echo_id) + bytes(ECHO_BYTES - _HEAD.size)


def ack_payload(echo_id: int, seen_from: Endpoint, *, kind: int = ECHO_ACK) -> bytes | None:
    """The answer to echo ``echo_id`` that came from ``seen_from`` (or, ``kind=SEEN`` with id
    0, the unasked news); None if that is no IPv4 endpoint (nothing to report)."""
    try:
        ip = ipaddress.IPv4Address(seen_from.host).packed
    except ValueError:
        return None
    return _ACK.pack(PROBE_TAG, kind, echo_id, ip, seen_from.port)


def parse(payload: bytes) -> tuple[int, int, Endpoint | None] | None:
    """``(kind, id, observed)`` of an echo (observed None), ack or seen; None if malformed."""
    if len(payload) != ECHO_BYTES:
        return None
    _, kind, echo_id, ip, port = _ACK.unpack(payload)
    if kind == ECHO:
        return kind, echo_id, None
    if kind not in (ECHO_ACK, SEEN) or port == 0 or ip == bytes(4):
        return None
    return kind, echo_id, Endpoint(str(ipaddress.IPv4Address(ip)), port)
