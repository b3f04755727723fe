"""Which of a node's virtual networks an IP packet from the overlay belongs to; sans-IO.

Owns the network tag and the verdict "which network's local side, if any, may see this
packet" on a node that is a member of several networks on one overlay (issue 17, item 2).

Why: the networks of one daemon may use the same addresses (ranges of different networks may
overlap), so an IP packet does not say by itself which network it is in, and a member of
network A must never get a packet onto B's local side.

Wire (:mod:`ipop.overlay.messages`):

- a node in one network sends ``KIND_IP`` (the packet) as ever, so one-network nodes keep
  their wire and the native fast path, which knows only that kind;
- a node in several sends ``KIND_IP_NET``: a :data:`TAG_BYTES` tag, then the packet. The tag
  is :func:`network_tag` of the network's CA key: any node derives it from what it holds (no
  registry, nothing to configure); it only *names* the network, it proves nothing.

Verdict (:meth:`NetworkDemux.check_in`):

- tagged: the side whose tag it is, else ``ip_wrong_network`` (counted, dropped: the sender
  took us for a member of a network we are not in, or made the tag up);
- untagged: the sender is in one network; the sides whose addresses include the destination
  are the candidates (a daemon holds different addresses in its networks, so there is one);
  should several be, the first one whose owner table already says the sender holds the source
  wins, else the first candidate looks it up. None: ``ip_wrong_network``.

Then the chosen side's own :class:`ipop.vnet.filter.PacketFilter` decides, as on a node in
one network: the destination is ours *in that network*, and the source is held by the sender
*in that network* (per that network's DHT namespace, whose records only that network's CA
can certify). So a forged tag buys nothing: a member of A holds no address in B, and its
packet tagged for B fails B's source check (``unknown_inner_src``/``spoofed_inner_src``).
The tag is a convenience for speed and for overlapping ranges, never the security boundary.

The tag is 4 bytes: two networks of one daemon with the same tag (2^-32 per pair) are refused
when the daemon is configured (:func:`check_distinct`), and a collision with a network we are
not in is harmless (the side's own checks above).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum

from ipop.types import NodeId
from ipop.vnet.filter import Drop, PacketFilter, Verdict

__all__ = ["TAG_BYTES", "NetDrop", "NetworkDemux", "check_distinct", "network_tag"]

# The tag's size (KIND_IP_NET's in ipop.overlay.messages: the tag, then the packet).
TAG_BYTES = 4
# Domain separation: the tag is no other hash of the CA key anyone computes (BLAKE2s person).
_PERSON = b"ipopnet1"


def network_tag(ca_key: bytes) -> bytes:
    """The tag of the network whose CA's raw Ed25519 public key is ``ca_key``."""
    return hashlib.blake2s(ca_key, digest_size=TAG_BYTES, person=_PERSON).digest()


def check_distinct(tags: Sequence[bytes]) -> None:
    """Raise ValueError if two of a daemon's networks have one tag (see the module docstring)."""
    if len(set(tags)) != len(tags):
        raise ValueError("two networks share a network tag (their CA keys hash alike)")


class NetDrop(StrEnum):
    """Why no side of ours may see a packet (the counter's name)."""

    IP_WRONG_NETWORK = "ip_wrong_network"


class NetworkDemux:
    """The sides (one per network) of one node, in order, each with its tag and its filter;
    see the module docstring. A node in one network has one side."""

    def __init__(self, sides: Sequence[tuple[bytes, PacketFilter]]) -> None:
        check_distinct([tag for tag, _ in sides])
        self.tags = [tag for tag, _ in sides]
        self.filters = [f for _, f in sides]
        self._by_tag = {tag: i for i, tag in enumerate(self.tags)}

    def check_in(
        self, src: NodeId, tagged: bool, payload: bytes, now: float
    ) -> tuple[int, int, Verdict | Drop] | NetDrop:
        """The side an IP message from member ``src`` goes to (``tagged``: KIND_IP_NET, the
        tag then the packet; else KIND_IP, the packet), where its packet starts in
        ``payload``, and that side's verdict on it; or why no side may see it."""
        if tagged:
            side = self._by_tag.get(payload[:TAG_BYTES])
            if side is None:
                return NetDrop.IP_WRONG_NETWORK
            return side, TAG_BYTES, self.filters[side].check_in(src, payload, TAG_BYTES, now)
        filters = self.filters
        if len(filters) == 1:
            return 0, 0, filters[0].check_in(src, payload, 0, now)
        dst = payload[16:20]
        first: tuple[int, int, Verdict | Drop] | None = None
        for side, filt in enumerate(filters):
            if not filt.accepts(dst):
                continue
            verdict = filt.check_in(src, payload, 0, now)
            if verdict is Verdict.DELIVER:
                return side, 0, verdict
            if first is None:
                first = (side, 0, verdict)
        return NetDrop.IP_WRONG_NETWORK if first is None else first
