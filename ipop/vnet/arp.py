"""ARP on the TAP: every address of the virtual subnet but our own lives behind one virtual MAC.

The kernel sees the virtual subnet (e.g. 100.64.0.0/10) as one Ethernet segment. Every other
node, and the virtual gateway (the subnet's first host address), is "reached" at the same
locally administered MAC :data:`VIRTUAL_MAC`; the daemon takes the IP packet out of the frame
and routes it over the overlay. So :class:`ArpResponder` answers every who-has for a subnet
address except:

* addresses that are local (our own vIP; in router mode every LAN host's address): their
  owner answers, and answering too would hijack them;
* ARP probes (sender 0.0.0.0, RFC 5227): a DHCP client checking that its offered address is
  free must hear nothing, or it declines the lease;
* gratuitous ARP (sender == target): an announcement, not a question;
* the subnet's network and broadcast addresses, which no host holds.

Packet layout (RFC 826, Ethernet/IPv4 only; 28 bytes after the Ethernet header)::

    htype(2)=1 ptype(2)=0x0800 hlen=6 plen=4 oper(2) sha(6) spa(4) tha(6) tpa(4)

Built with :mod:`struct` in place: ARP runs on the packet path, never through scapy.
"""

from __future__ import annotations

import collections
import struct
from ipaddress import IPv4Address, IPv4Network

from ipop.errors import LocalProtocolError
from ipop.vnet.packet import ETH_HLEN, ETH_P_ARP, ETH_P_IP, parse_mac

__all__ = [
    "ARP_REPLY",
    "ARP_REQUEST",
    "DROP_REASONS",
    "VIRTUAL_MAC",
    "ArpResponder",
    "arp_target",
]

# Every frame the responder does not answer, by why (its ``drops``).
DROP_REASONS = frozenset(
    {
        "arp_short",
        "not_arp",
        "arp_bad_format",
        "arp_not_request",
        "arp_outside_subnet",
        "arp_probe",
        "arp_gratuitous",
        "arp_not_host",
        "arp_local",
        "arp_bad_sender",
    }
)

# Locally administered (bit 1 of the first octet), unicast: never collides with a vendor MAC.
VIRTUAL_MAC = bytes.fromhex("021b0a000001")

ARP_REQUEST = 1
ARP_REPLY = 2
_ARP_LEN = 28
_ETH_ARP = struct.Struct("!6s6sHHHBBH6sI6sI")
_TPA = struct.Struct("!I")


def arp_target(frame: bytes | bytearray | memoryview) -> int | None:
    """The target protocol address of an Ethernet/IPv4 ARP frame as an int, else None."""
    if len(frame) < ETH_HLEN + _ARP_LEN or frame[12:14] != b"\x08\x06":
        return None
    return int(_TPA.unpack_from(frame, ETH_HLEN + 24)[0])


class ArpResponder:
    """Answers who-has for the virtual subnet from the virtual MAC; pure, no I/O.

    ``reply(frame)`` returns the reply frame, or None; the reason for every None is counted
    in ``drops``. ``own_ip`` may be None until the node has its address.
    """

    def __init__(
        self, own_ip: IPv4Address | None, subnet: IPv4Network, mac: bytes | str = VIRTUAL_MAC
    ) -> None:
        if subnet.num_addresses < 4:
            raise LocalProtocolError(f"subnet {subnet} has no room for hosts and a gateway")
        self.subnet = subnet
        self.mac = parse_mac(mac)
        self.drops: collections.Counter[str] = collections.Counter()
        self._net = int(subnet.network_address)
        self._mask = int(subnet.netmask)
        self._bcast = int(subnet.broadcast_address)
        self._local: set[int] = set()
        if own_ip is not None:
            self.add_local(own_ip)

    def add_local(self, ip: IPv4Address) -> None:
        """Never answer for ``ip``: its holder is on this segment (our vIP, a LAN host)."""
        if ip not in self.subnet:
            raise LocalProtocolError(f"{ip} is not in {self.subnet}")
        self._local.add(int(ip))

    def remove_local(self, ip: IPv4Address) -> None:
        self._local.discard(int(ip))

    def set_own_ip(self, ip: IPv4Address, *, previous: IPv4Address | None = None) -> None:
        """The node's vIP changed (or became known)."""
        if previous is not None:
            self.remove_local(previous)
        self.add_local(ip)

    def reply(self, frame: bytes | bytearray | memoryview) -> bytes | None:
        """The ARP reply for a who-has ``frame`` we answer, or None (counted in ``drops``)."""
        if len(frame) < ETH_HLEN + _ARP_LEN:
            self.drops["arp_short"] += 1
            return None
        (_dst, _src, ethertype, htype, ptype, hlen, plen, oper, sha, spa, _tha, tpa) = (
            _ETH_ARP.unpack_from(frame, 0)
        )
        if ethertype != ETH_P_ARP:
            self.drops["not_arp"] += 1
            return None
        if htype != 1 or ptype != ETH_P_IP or hlen != 6 or plen != 4:
            self.drops["arp_bad_format"] += 1
            return None
        if oper != ARP_REQUEST:
            self.drops["arp_not_request"] += 1
            return None
        if tpa & self._mask != self._net:
            self.drops["arp_outside_subnet"] += 1
            return None
        if spa == 0:
            self.drops["arp_probe"] += 1
            return None
        if spa == tpa:
            self.drops["arp_gratuitous"] += 1
            return None
        if tpa == self._net or tpa == self._bcast:
            self.drops["arp_not_host"] += 1
            return None
        if tpa in self._local:
            self.drops["arp_local"] += 1
            return None
        if sha[0] & 1:
            # A multicast sender hardware address is forged: replying would flood the segment.
            self.drops["arp_bad_sender"] += 1
            return None
        return _ETH_ARP.pack(
            sha, self.mac, ETH_P_ARP, 1, ETH_P_IP, 6, 4, ARP_REPLY, self.mac, tpa, sha, spa
        )
