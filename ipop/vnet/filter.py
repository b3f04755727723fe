"""The data plane's packet checks, inbound (overlay → TAP) and outbound (TAP → overlay); sans-IO.

Owns the verdict on every IPv4 packet that crosses between the overlay and the local side, and
the set of destinations this node accepts. It reads the vIP → owner answers of
:class:`ipop.vnet.owners.OwnerTable`; it never starts a lookup itself (a ``LOOKUP`` verdict
tells the adapter to hold the packet there).

Inbound, a packet ``src`` (an authenticated member: a link peer, or the verified origin of a
routed message) hands us is delivered only if, in this order:

1. it is IPv4 (``inner_not_ipv4``);
2. its destination is an address this node accepts (``inner_dst_not_ours``): its own vIP
   and, in router mode, the vIPs of its LAN hosts (:meth:`PacketFilter.accept`). Nothing
   else: not the host's other addresses, not its LAN where forwarding is on, not the subnet's
   broadcast address (no multicast or broadcast is carried today: outbound they are local
   services' or dropped);
3. its source is held by ``src`` per the DHT (anti-spoofing): held by another node
   (``spoofed_inner_src``, this node's own addresses included), known absent
   (``unknown_inner_src``), outside the subnet (``inner_src_outside_subnet``: never looked up);
   not known yet: ``LOOKUP``.

Outbound, a frame read from the TAP (Ethernet + IPv4) goes to the owner of its destination:
not IPv4 (``tap_not_ipv4``) or not for a node of the subnet (``tap_outside_subnet``: outside
it, or the gateway's address) are first offered to the local services by the adapter, and
counted only if they decline; a destination nobody holds (``no_such_vip``) or this node's own
(``to_self``) goes nowhere. The source is not checked here: a TAP's kernel sends from the vIP
it was given, a router's LAN has its own source check, and every receiver checks it anyway.

Hot path: both checks run per packet on the ``bytes``/``bytearray`` as it is (4-byte slices
for one set and one dict lookup) and return a member of :class:`Verdict` or :class:`Drop`, or
the owner's :class:`NodeId` (an object the table already holds). The data plane inlines
:meth:`PacketFilter.check_in`'s DELIVER case (the method call would cost as much as the check)
reading :attr:`PacketFilter.accepted` and ``OwnerTable.entries``; a test holds the two equal.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from ipaddress import IPv4Network

from ipop.types import NodeId
from ipop.vnet.owners import OwnerTable

__all__ = ["Drop", "PacketFilter", "Verdict"]

_ETH_HLEN = 14
# Smallest frame with a whole IPv4 header (Ethernet 14 + IPv4 20).
_FRAME_MIN = 34


class Verdict(Enum):
    """A packet that is not dropped: DELIVER (inbound, to the local side) or LOOKUP (its
    owner is not known yet: hold it in the :class:`OwnerTable`)."""

    DELIVER = "deliver"
    LOOKUP = "lookup"


class Drop(StrEnum):
    """Why the filter refused a packet (the counter names; see the module docstring)."""

    INNER_NOT_IPV4 = "inner_not_ipv4"
    INNER_DST_NOT_OURS = "inner_dst_not_ours"
    INNER_SRC_OUTSIDE_SUBNET = "inner_src_outside_subnet"
    SPOOFED_INNER_SRC = "spoofed_inner_src"
    UNKNOWN_INNER_SRC = "unknown_inner_src"
    TAP_NOT_IPV4 = "tap_not_ipv4"
    TAP_OUTSIDE_SUBNET = "tap_outside_subnet"
    NO_SUCH_VIP = "no_such_vip"
    TO_SELF = "to_self"


_DELIVER = Verdict.DELIVER
_LOOKUP = Verdict.LOOKUP


class PacketFilter:
    """Verdicts on packets for one node; see the module docstring."""

    def __init__(self, self_id: NodeId, subnet: IPv4Network, owners: OwnerTable) -> None:
        self.self_id = self_id
        self.owners = owners
        self._net = int(subnet.network_address)
        self._mask = int(subnet.netmask)
        self._gateway = self._net + 1
        self.own_ip: bytes | None = None
        # Accepted destinations besides own_ip (router mode: the LAN hosts' vIPs).
        self._local: set[bytes] = set()
        # own_ip and _local together: the one set the hot path looks in (the data plane
        # reads it, and owners.entries, directly for its inlined DELIVER case).
        self.accepted: set[bytes] = set()
        self._entries = owners.entries

    # --- accepted destinations ----------------------------------------------------------------

    def set_own_ip(self, vip: bytes) -> None:
        old = self.own_ip
        if old is not None and old not in self._local:
            self.owners.unpin(old)
            self.accepted.discard(old)
        self.own_ip = vip
        self.accepted.add(vip)
        self.owners.pin(vip, self.self_id)

    def accept(self, vip: bytes) -> None:
        """Deliver packets for ``vip`` too (a host on this node's local side, router mode);
        it is this node's address, so nobody else may send from it."""
        self._local.add(vip)
        self.accepted.add(vip)
        self.owners.pin(vip, self.self_id)

    def unaccept(self, vip: bytes) -> None:
        self._local.discard(vip)
        if vip != self.own_ip:
            self.accepted.discard(vip)
            self.owners.unpin(vip)

    def accepts(self, vip: bytes) -> bool:
        return vip in self.accepted

    def owner_until(self, dip: bytes, now: float) -> tuple[NodeId, float] | None:
        """The owner :meth:`check_out` sends a frame to ``dip`` to, and until when that
        holds (the answer's expiry), or None when it would not (a lookup, a drop, ours):
        what the lane may be routed (:mod:`ipop.aio.lane`)."""
        dst = int.from_bytes(dip, "big")
        if len(dip) != 4 or dst & self._mask != self._net or dst == self._gateway:
            return None
        entry = self._entries.get(dip)
        if entry is None or entry[1] <= now or entry[0] is None:
            return None
        owner = entry[0]
        return None if owner.value == self.self_id.value else (owner, entry[1])

    # --- verdicts -----------------------------------------------------------------------------

    def check_in(self, src: NodeId, packet: bytes, off: int, now: float) -> Verdict | Drop:
        """The verdict on an IP packet from member ``src``; it starts at ``packet[off]``."""
        # Per packet: every attribute and global read here is measurable (tools/bench).
        if len(packet) < off + 20 or packet[off] >> 4 != 4:
            return Drop.INNER_NOT_IPV4
        if packet[off + 16 : off + 20] not in self.accepted:
            return Drop.INNER_DST_NOT_OURS
        sip = packet[off + 12 : off + 16]
        entry = self._entries.get(sip)
        if entry is not None and entry[1] > now:
            holder = entry[0]
            # NodeId's dataclass __eq__ is a Python call; its int compares natively.
            if holder is not None and holder.value == src.value:
                return _DELIVER
            return Drop.UNKNOWN_INNER_SRC if holder is None else Drop.SPOOFED_INNER_SRC
        if int.from_bytes(sip, "big") & self._mask != self._net:
            return Drop.INNER_SRC_OUTSIDE_SUBNET
        return Verdict.LOOKUP

    def check_out(self, frame: bytearray, size: int, now: float) -> NodeId | Verdict | Drop:
        """The verdict on the first ``size`` bytes of ``frame``, read from the local side:
        the owner to send it to, LOOKUP, or why not."""
        if size < _FRAME_MIN or frame[12] != 8 or frame[13] != 0:
            return Drop.TAP_NOT_IPV4
        dip = bytes(frame[30:34])
        dst = int.from_bytes(dip, "big")
        if dst & self._mask != self._net or dst == self._gateway:
            return Drop.TAP_OUTSIDE_SUBNET
        entry = self._entries.get(dip)
        if entry is None or entry[1] <= now:
            return _LOOKUP
        owner = entry[0]
        if owner is None:
            return Drop.NO_SUCH_VIP
        if owner.value == self.self_id.value:
            return Drop.TO_SELF
        return owner
