"""ICMP echo replies the node writes itself, for its own vIP where no stack answers (sans-IO).

In router mode the node's own vIP has no interface behind it: the router serves its LAN
hosts' addresses, and its own namespace is not on the virtual network. Its name
(``r1.ipop``) still resolves to that vIP, and ``ping r1.ipop`` is the first thing a user
tries, so the data plane answers echo requests to it (:func:`echo_reply`) and nothing else;
every other packet to that address is dropped and counted as before.

One reply per request, as large as the request, toward the authenticated member that sent
it: nothing to amplify. No reply for a fragment, an options-bearing header (left to a real
stack), or anything shorter than an echo request.
"""

from __future__ import annotations

from ipop.vnet.packet import build_ipv4, internet_checksum

__all__ = ["echo_reply"]

_ICMP = 1
_ECHO_REQUEST = 8
_ECHO_REPLY = 0


def echo_reply(packet: bytes | bytearray | memoryview) -> bytes | None:
    """The ICMP echo reply to IPv4 echo request ``packet`` (same id, sequence and data), or
    None if ``packet`` is not one we answer (see the module docstring)."""
    if len(packet) < 28 or packet[0] != 0x45 or packet[9] != _ICMP:
        return None
    if (packet[6] & 0x3F) or packet[7]:  # MF set or an offset: a fragment
        return None
    total = int.from_bytes(packet[2:4], "big")
    if total < 28 or total > len(packet) or packet[20] != _ECHO_REQUEST or packet[21] != 0:
        return None
    body = bytearray(packet[20:total])
    body[0] = _ECHO_REPLY
    body[2] = body[3] = 0
    csum = internet_checksum(body)
    body[2], body[3] = csum >> 8, csum & 0xFF
    return build_ipv4(bytes(packet[16:20]), bytes(packet[12:16]), _ICMP, bytes(body))
