"""DHCP for the virtual network: a sans-IO server (RFC 2131/2132) and its lease bindings.

The server hands out addresses it does not choose: the daemon allocates each one in the DHT
(create-if-absent with a lease) and binds it here with :meth:`DhcpServer.assign`. A client
whose MAC has no address yet gets no answer; the server emits :class:`AddressWanted` once
(again after ``want_retry_s`` if still unassigned) and answers the client's next
retransmission once the daemon has assigned an address. DHCP clients retransmit DISCOVER
every few seconds (RFC 2131 §4.1: 4 s, 8 s, ...), so the DHT round trip costs at most one
retransmission.

The same server serves one TAP (one client: the kernel of this node) or, in router mode, a
LAN of plain machines (one address per MAC). Bindings are keyed by ``chaddr``.

Message exchange (RFC 2131 §3.1, §4.3)::

    client                                   server
    DISCOVER (broadcast) ------------------>  unknown MAC: AddressWanted, silence
    DISCOVER (retransmit) ----------------->  OFFER  yiaddr = assigned address
    REQUEST  server-id = us, ip = offered ->  ACK (or NAK if the address is not the bound one)
    REQUEST  (INIT-REBOOT: requested ip) -->  ACK / NAK; silence for an unknown MAC (§4.3.2)
    REQUEST  (RENEW/REBIND: ciaddr) ------->  ACK unicast to ciaddr / NAK
    RELEASE, DECLINE ---------------------->  AddressReleased / AddressDeclined, no reply
    INFORM   (ciaddr) --------------------->  ACK without lease, unicast to ciaddr

Replies are addressed per RFC 2131 §4.1: to the relay (giaddr) if any; NAKs broadcast; to
ciaddr if set; broadcast if the client set the BROADCAST flag; else unicast to yiaddr at the
client's hardware address (the client cannot answer ARP yet, so no ARP is involved: we write
the frame ourselves).

Its messages are :mod:`ipop.dhcp_dns.dhcpwire` (re-exported here); garbage is dropped and
counted in ``drops``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import ClassVar, Final

from ipop.dhcp_dns.dhcpwire import (
    BOOTREPLY,
    BOOTREQUEST,
    CLIENT_PORT,
    SERVER_PORT,
    ZERO_IP,
    DhcpMessage,
    MessageType,
    Opt,
    encode_dhcp,
    parse_dhcp,
)
from ipop.errors import LocalProtocolError
from ipop.vnet.arp import VIRTUAL_MAC
from ipop.vnet.packet import (
    BROADCAST_MAC,
    PacketError,
    build_udp_frame,
    parse_mac,
    parse_udp_frame,
)

__all__ = [
    "BOOTREPLY",
    "BOOTREQUEST",
    "CLIENT_PORT",
    "DROP_REASONS",
    "PACKET_REASONS",
    "SERVER_PORT",
    "AddressDeclined",
    "AddressReleased",
    "AddressWanted",
    "DhcpEvent",
    "DhcpMessage",
    "DhcpServer",
    "LeaseGranted",
    "MessageType",
    "Opt",
    "encode_dhcp",
    "parse_dhcp",
]


# The reasons of ipop.vnet.packet's PacketError (parse_udp_frame and the parsers under it),
# which the gateway's services count for frames that are not well-formed IPv4/UDP. Here, not
# there, for now: ipop/vnet/ was being cut on another branch when the lists were written.
PACKET_REASONS: Final = frozenset(
    {
        "eth_short",
        "eth_not_ipv4",
        "ipv4_short",
        "ipv4_bad_version",
        "ipv4_bad_ihl",
        "ipv4_bad_length",
        "ipv4_bad_checksum",
        "ipv4_not_udp",
        "ipv4_fragment",
        "udp_short",
        "udp_bad_length",
        "udp_bad_checksum",
    }
)

# Every reason DhcpServer.drops counts under: the frame's (PACKET_REASONS), parse_dhcp's and
# handle_frame's PacketError reasons, then the server's own refusals.
DROP_REASONS: Final = frozenset(
    {
        *PACKET_REASONS,
        # parse_dhcp, handle_frame
        "dhcp_short",
        "dhcp_bad_magic",
        "dhcp_bad_op",
        "dhcp_bad_hw",
        "dhcp_bad_option",
        "dhcp_no_end",
        "dhcp_wrong_port",
        # the server
        "dhcp_not_request",  # a BOOTREPLY sent to the server port
        "dhcp_bad_mac",  # chaddr is not a unicast MAC
        "dhcp_no_type",  # no message type option
        "dhcp_bad_type",  # a message type a server never receives
        "dhcp_awaiting_address",  # the node has no address of its own yet
        "dhcp_too_many_pending",  # max_pending clients waiting for an allocation
        "dhcp_other_server",  # a REQUEST that picked another server's offer
        "dhcp_request_no_address",  # a REQUEST naming no address we can give
        "dhcp_decline_unknown",  # a DECLINE of an address we did not lease to it
        "dhcp_release_unknown",  # a RELEASE of an address we did not lease to it
        "dhcp_inform_bad_ciaddr",  # an INFORM from an address not its own
    }
)
# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddressWanted:
    """A client with no address asked for one: allocate it (DHT) and call ``assign``."""

    mac: bytes
    hostname: str | None


@dataclass(frozen=True, slots=True)
class LeaseGranted:
    """We ACKed ``ip`` to ``mac`` until ``expires`` (UNIX time)."""

    mac: bytes
    ip: IPv4Address
    hostname: str | None
    expires: float


@dataclass(frozen=True, slots=True)
class AddressReleased:
    """The client gave its address back (DHCPRELEASE); the binding is kept until unassigned."""

    mac: bytes
    ip: IPv4Address


@dataclass(frozen=True, slots=True)
class AddressDeclined:
    """The client found ``ip`` in use (DHCPDECLINE); the binding is removed."""

    mac: bytes
    ip: IPv4Address


DhcpEvent = AddressWanted | LeaseGranted | AddressReleased | AddressDeclined


_Handler = Callable[["DhcpServer", DhcpMessage, bytes, float], list[bytes]]


# --- server ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Binding:
    """A client's address binding: the IP, its lease, its hostname and its end."""

    ip: IPv4Address
    lease_s: int
    hostname: str | None = None
    expires: float | None = None


class DhcpServer:
    """A sans-IO DHCP server for one segment; replies are Ethernet frames, ready to write.

    ``server_ip`` is the server identifier and the replies' source (the virtual gateway);
    ``router`` is sent as option 3 only when given (a node's TAP needs no default route).
    """

    def __init__(
        self,
        server_ip: IPv4Address,
        subnet: IPv4Network,
        *,
        dns_ip: IPv4Address | None = None,
        domain: str | None = None,
        mtu: int | None = None,
        lease_s: int = 3600,
        router: IPv4Address | None = None,
        server_mac: bytes | str = VIRTUAL_MAC,
        want_retry_s: float = 10.0,
        max_pending: int = 1024,
    ) -> None:
        if server_ip not in subnet:
            raise LocalProtocolError(f"server_ip {server_ip} is not in {subnet}")
        if not 60 <= lease_s < 2**32 - 1:
            raise LocalProtocolError(f"lease_s {lease_s} out of range")
        if mtu is not None and not 68 <= mtu <= 0xFFFF:
            raise LocalProtocolError(f"mtu {mtu} out of range (RFC 2132 §5.1: at least 68)")
        self.server_ip = server_ip
        self.subnet = subnet
        self.dns_ip = dns_ip
        self.domain = domain
        self.mtu = mtu
        self.lease_s = lease_s
        self.router = router
        self.server_mac = parse_mac(server_mac)
        self.want_retry_s = want_retry_s
        self.max_pending = max_pending
        self.drops: collections.Counter[str] = collections.Counter()
        self._bindings: dict[bytes, _Binding] = {}
        self._by_ip: dict[IPv4Address, bytes] = {}
        self._wanted: dict[bytes, float] = {}
        self._events: collections.deque[DhcpEvent] = collections.deque()

    # -- commands ------------------------------------------------------------------------------

    def assign(self, mac: bytes | str, ip: IPv4Address, *, lease_s: int | None = None) -> None:
        """Bind ``ip`` to ``mac`` (the daemon holds ``ip`` in the DHT); rebinding moves it."""
        m = parse_mac(mac)
        if ip not in self.subnet or ip in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
            self.server_ip,
        ):
            raise LocalProtocolError(f"{ip} is not an assignable host address of {self.subnet}")
        holder = self._by_ip.get(ip)
        if holder is not None and holder != m:
            raise LocalProtocolError(f"{ip} is already bound to another MAC")
        old = self._bindings.get(m)
        if old is not None:
            self._by_ip.pop(old.ip, None)
        self._bindings[m] = _Binding(ip, self.lease_s if lease_s is None else lease_s)
        self._by_ip[ip] = m
        self._wanted.pop(m, None)

    def unassign(self, mac: bytes | str) -> None:
        """Forget ``mac``'s binding (its DHT lease is gone); its next request asks again."""
        b = self._bindings.pop(parse_mac(mac), None)
        if b is not None:
            self._by_ip.pop(b.ip, None)

    def binding(self, mac: bytes | str) -> IPv4Address | None:
        b = self._bindings.get(parse_mac(mac))
        return None if b is None else b.ip

    def next_event(self) -> DhcpEvent | None:
        return self._events.popleft() if self._events else None

    # -- input ---------------------------------------------------------------------------------

    def handle_frame(self, frame: bytes | bytearray | memoryview, *, now: float) -> list[bytes]:
        """Replies to one client frame (Ethernet/IPv4/UDP to port 67); garbage is counted."""
        try:
            uf = parse_udp_frame(frame)
            if uf.udp.dst_port != SERVER_PORT:
                raise PacketError("dhcp_wrong_port", str(uf.udp.dst_port))
            msg = parse_dhcp(uf.payload)
        except PacketError as exc:
            self.drops[exc.reason] += 1
            return []
        return self.handle_message(msg, src_mac=uf.eth.src, now=now)

    def handle_message(self, msg: DhcpMessage, *, src_mac: bytes, now: float) -> list[bytes]:
        """Replies to one parsed message; ``src_mac`` is the Ethernet source (a relay's)."""
        if msg.op != BOOTREQUEST:
            self.drops["dhcp_not_request"] += 1
            return []
        if msg.htype != 1 or msg.hlen != 6:
            self.drops["dhcp_bad_hw"] += 1
            return []
        if msg.mac[0] & 1 or msg.mac == bytes(6):
            self.drops["dhcp_bad_mac"] += 1
            return []
        mtype = msg.message_type
        handler = self._HANDLERS.get(mtype) if mtype is not None else None
        if handler is None:
            self.drops["dhcp_bad_type" if mtype is not None else "dhcp_no_type"] += 1
            return []
        return handler(self, msg, src_mac, now)

    # -- handlers ------------------------------------------------------------------------------

    def _want(self, msg: DhcpMessage, now: float) -> list[bytes]:
        """No address for this MAC yet: ask the daemon (rate-limited), stay silent."""
        self.drops["dhcp_awaiting_address"] += 1
        last = self._wanted.get(msg.mac)
        if last is not None and now - last < self.want_retry_s:
            return []
        # A stamp older than want_retry_s holds nothing back: forget it, so that MACs whose
        # address never came (a DISCOVER flood's) do not fill the table for good. The dict
        # is in stamp order (a renewed stamp is re-inserted), so the stale ones lead.
        self._wanted.pop(msg.mac, None)
        while self._wanted:
            oldest = next(iter(self._wanted))
            if now - self._wanted[oldest] < self.want_retry_s:
                break
            del self._wanted[oldest]
        if len(self._wanted) >= self.max_pending:
            self.drops["dhcp_too_many_pending"] += 1
            return []
        self._wanted[msg.mac] = now
        self._events.append(AddressWanted(msg.mac, msg.hostname))
        return []

    def _on_discover(self, msg: DhcpMessage, src_mac: bytes, now: float) -> list[bytes]:
        b = self._bindings.get(msg.mac)
        if b is None:
            return self._want(msg, now)
        return [self._reply(msg, src_mac, MessageType.OFFER, b)]

    def _on_request(self, msg: DhcpMessage, src_mac: bytes, now: float) -> list[bytes]:
        sid, requested, ciaddr = msg.server_id, msg.requested_ip, msg.ciaddr
        if sid is not None and sid != self.server_ip:
            # SELECTING another server's offer: ours is implicitly declined (RFC 2131 §4.3.2).
            self.drops["dhcp_other_server"] += 1
            return []
        if sid is None and requested is None and ciaddr == ZERO_IP:
            self.drops["dhcp_request_no_address"] += 1
            return []
        b = self._bindings.get(msg.mac)
        if b is None:
            # INIT-REBOOT / RENEW from a client we have no record of: stay silent (§4.3.2).
            return self._want(msg, now)
        wanted_ip = requested if requested is not None else ciaddr
        if wanted_ip != b.ip:
            return [self._reply(msg, src_mac, MessageType.NAK, None)]
        b.hostname = msg.hostname or b.hostname
        b.expires = now + b.lease_s
        self._events.append(LeaseGranted(msg.mac, b.ip, b.hostname, b.expires))
        return [self._reply(msg, src_mac, MessageType.ACK, b)]

    def _on_decline(self, msg: DhcpMessage, src_mac: bytes, now: float) -> list[bytes]:
        b = self._bindings.get(msg.mac)
        if msg.server_id != self.server_ip or b is None or msg.requested_ip != b.ip:
            self.drops["dhcp_decline_unknown"] += 1
            return []
        self.unassign(msg.mac)
        self._events.append(AddressDeclined(msg.mac, b.ip))
        return []

    def _on_release(self, msg: DhcpMessage, src_mac: bytes, now: float) -> list[bytes]:
        b = self._bindings.get(msg.mac)
        if b is None or msg.ciaddr != b.ip:
            self.drops["dhcp_release_unknown"] += 1
            return []
        b.expires = None
        self._events.append(AddressReleased(msg.mac, b.ip))
        return []

    def _on_inform(self, msg: DhcpMessage, src_mac: bytes, now: float) -> list[bytes]:
        if msg.ciaddr == ZERO_IP or msg.ciaddr not in self.subnet:
            self.drops["dhcp_inform_bad_ciaddr"] += 1
            return []
        return [self._reply(msg, src_mac, MessageType.ACK, None)]

    _HANDLERS: ClassVar[dict[int, _Handler]] = {
        MessageType.DISCOVER: _on_discover,
        MessageType.REQUEST: _on_request,
        MessageType.DECLINE: _on_decline,
        MessageType.RELEASE: _on_release,
        MessageType.INFORM: _on_inform,
    }

    # -- output --------------------------------------------------------------------------------

    def _options(self, mtype: MessageType, b: _Binding | None) -> list[tuple[int, bytes]]:
        opts: list[tuple[int, bytes]] = [
            (Opt.MESSAGE_TYPE, bytes((mtype,))),
            (Opt.SERVER_ID, self.server_ip.packed),
        ]
        if mtype == MessageType.NAK:
            return opts
        if b is not None:
            opts += [
                (Opt.LEASE_TIME, b.lease_s.to_bytes(4, "big")),
                (Opt.RENEWAL_TIME, (b.lease_s // 2).to_bytes(4, "big")),
                (Opt.REBINDING_TIME, (b.lease_s * 7 // 8).to_bytes(4, "big")),
            ]
        opts.append((Opt.SUBNET_MASK, self.subnet.netmask.packed))
        if self.router is not None:
            opts.append((Opt.ROUTER, self.router.packed))
        if self.dns_ip is not None:
            opts.append((Opt.DNS_SERVERS, self.dns_ip.packed))
        if self.domain:
            opts.append((Opt.DOMAIN_NAME, self.domain.encode("ascii")))
        if self.mtu is not None:
            opts.append((Opt.INTERFACE_MTU, self.mtu.to_bytes(2, "big")))
        return opts

    def _reply(
        self, req: DhcpMessage, src_mac: bytes, mtype: MessageType, b: _Binding | None
    ) -> bytes:
        opts = self._options(mtype, b)
        if req.client_id is not None:
            opts.append((Opt.CLIENT_ID, req.client_id))  # RFC 6842: echo it
        yiaddr = b.ip if b is not None and mtype != MessageType.NAK else ZERO_IP
        ciaddr = req.ciaddr if mtype == MessageType.ACK else ZERO_IP
        msg = DhcpMessage(
            op=BOOTREPLY,
            xid=req.xid,
            chaddr=req.chaddr,
            options=tuple(opts),
            flags=req.flags,
            ciaddr=ciaddr,
            yiaddr=yiaddr,
            giaddr=req.giaddr,
        )
        dst_mac, dst_ip, dst_port = self._destination(req, src_mac, mtype, yiaddr)
        return build_udp_frame(
            dst_mac=dst_mac,
            src_mac=self.server_mac,
            src_ip=self.server_ip,
            dst_ip=dst_ip,
            src_port=SERVER_PORT,
            dst_port=dst_port,
            payload=encode_dhcp(msg),
        )

    @staticmethod
    def _destination(
        req: DhcpMessage, src_mac: bytes, mtype: MessageType, yiaddr: IPv4Address
    ) -> tuple[bytes, IPv4Address, int]:
        """Where a reply goes, RFC 2131 §4.1 (and §4.3.2 for NAKs)."""
        if req.giaddr != ZERO_IP:
            return src_mac, req.giaddr, SERVER_PORT
        if mtype == MessageType.NAK:
            return BROADCAST_MAC, IPv4Address(0xFFFFFFFF), CLIENT_PORT
        if req.ciaddr != ZERO_IP:
            return req.mac, req.ciaddr, CLIENT_PORT
        if req.broadcast or yiaddr == ZERO_IP:
            return BROADCAST_MAC, IPv4Address(0xFFFFFFFF), CLIENT_PORT
        return req.mac, yiaddr, CLIENT_PORT
