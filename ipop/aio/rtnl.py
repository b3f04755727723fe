"""The daemon's rtnetlink requests on a stdlib socket: list IPv4 addresses, configure its TAP.

:class:`Rtnl` owns one ``NETLINK_ROUTE`` socket and the six requests the daemon makes: dump
the IPv4 addresses (its local endpoints), set a link's MTU, queue length and up flag, add and
delete an address, replace a route, replace a neighbour entry. Requests are built and replies
parsed by the pure functions below (:func:`request`, :func:`parse`); the class only sends and
receives them on the event loop.

Why not pyroute2, which did this before: importing it cost ~0.07 s of CPU, a quarter of what a
daemon spends from its start to its first virtual IP (``pyroute2/__init__`` imports every
netlink family it knows: IPDB, NDB, conntrack, ethtool, nl80211 ...), for these six
messages. 32 daemons starting at once on two cores queued behind those imports. The requests
are the ones pyroute2 sent: the kernel state they leave (``ip -d addr/route/neigh/link``) is
the same, route protocol ``static`` included.

Message layout (``<linux/netlink.h>``, ``<linux/rtnetlink.h>``), host byte order::

    nlmsghdr  u32 len | u16 type | u16 flags | u32 seq | u32 pid
    then the type's fixed header (ifinfomsg 16 B, ifaddrmsg 8 B, rtmsg 12 B, ndmsg 12 B)
    then attributes, each  u16 len | u16 type | value, padded to 4 bytes
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from types import TracebackType

__all__ = [
    "RT_SCOPE_LINK",
    "RT_SCOPE_UNIVERSE",
    "IfAddr",
    "Rtnl",
    "parse",
    "request",
]

# <linux/netlink.h>
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# <linux/rtnetlink.h>: message types
RTM_NEWLINK = 16
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
RTM_NEWRULE = 32
RTM_DELRULE = 33
# attribute types
IFLA_MTU = 4
IFLA_TXQLEN = 13
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PREFSRC = 7
NDA_DST = 1
NDA_LLADDR = 2
# <linux/fib_rules.h>: a rule's selectors and action ("lookup TABLE")
FRA_SRC = 2
FRA_PRIORITY = 6
FRA_TABLE = 15
FRA_OIFNAME = 17
FR_ACT_TO_TBL = 1
# rtmsg fields: the main table, a route set by an admin tool (what ``ip -d route`` shows as
# "proto static"), a plain unicast route; scopes as in <linux/rtnetlink.h>.
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")
# A dump's datagrams are at most 32 KiB (the kernel's largest netlink dump skb).
_RECV_BYTES = 65536


@dataclass(frozen=True, slots=True)
class IfAddr:
    """One IPv4 address of an interface, as an RTM_NEWADDR of a dump reports it."""

    index: int
    prefixlen: int
    address: str | None  # IFA_ADDRESS (the local address, or the peer's on point-to-point)


def _attr(kind: int, value: bytes) -> bytes:
    head = _RTATTR.pack(_RTATTR.size + len(value), kind)
    return head + value + b"\0" * (-len(value) % 4)


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, off)
        if length < _RTATTR.size or off + length > len(data):
            return  # a truncated attribute: the rest cannot be read
        yield kind, data[off + _RTATTR.size : off + length]
        off += (length + 3) & ~3


def request(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One netlink request: the header (pid 0: the kernel fills it in) and ``body``."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def parse(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """The messages of one datagram: (type, flags, seq, payload after the header)."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            return
        yield kind, flags, seq, data[off + _NLMSGHDR.size : off + length]
        off += (length + 3) & ~3


def link_set_body(index: int, *, mtu: int, txqlen: int, up: bool) -> bytes:
    """RTM_NEWLINK on an existing link: MTU, transmit queue length, the up flag."""
    head = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP)
    return head + _attr(IFLA_MTU, _U32.pack(mtu)) + _attr(IFLA_TXQLEN, _U32.pack(txqlen))


def addr_body(index: int, address: IPv4Address, prefixlen: int, flags: int = 0) -> bytes:
    """RTM_NEWADDR/RTM_DELADDR: ``address``/``prefixlen`` on ``index``; ``flags`` (IFA_F_*)
    also as IFA_FLAGS, the only place flags above 0xff fit."""
    head = _IFADDRMSG.pack(socket.AF_INET, prefixlen, flags & 0xFF, 0, index)
    body = head + _attr(IFA_LOCAL, address.packed) + _attr(IFA_ADDRESS, address.packed)
    return body + (_attr(IFA_FLAGS, _U32.pack(flags)) if flags else b"")


def route_body(
    dst: IPv4Network,
    *,
    oif: int,
    prefsrc: IPv4Address,
    gateway: IPv4Address | None = None,
    scope: int = RT_SCOPE_UNIVERSE,
    table: int = RT_TABLE_MAIN,
) -> bytes:
    """RTM_NEWROUTE in ``table`` (default the main one; 1..255), protocol static, unicast."""
    head = _RTMSG.pack(
        socket.AF_INET, dst.prefixlen, 0, 0, table, RTPROT_STATIC, scope, RTN_UNICAST, 0
    )
    body = head + _attr(RTA_DST, dst.network_address.packed) + _attr(RTA_OIF, _U32.pack(oif))
    body += _attr(RTA_PREFSRC, prefsrc.packed)
    return body + (_attr(RTA_GATEWAY, gateway.packed) if gateway is not None else b"")


def rule_body(
    *, table: int, priority: int, src: IPv4Address | None = None, oifname: str | None = None
) -> bytes:
    """A routing rule (RTM_NEWRULE/RTM_DELRULE): packets from ``src``, or sent on interface
    ``oifname``, look up ``table``; at ``priority``. Its header is an rtmsg's layout
    (fib_rule_hdr: family, dst_len, src_len, tos, table, two reserved, action; flags)."""
    src_len = 32 if src is not None else 0
    head = _RTMSG.pack(socket.AF_INET, 0, src_len, 0, table, 0, 0, FR_ACT_TO_TBL, 0)
    body = head + _attr(FRA_PRIORITY, _U32.pack(priority)) + _attr(FRA_TABLE, _U32.pack(table))
    if src is not None:
        body += _attr(FRA_SRC, src.packed)
    if oifname is not None:
        body += _attr(FRA_OIFNAME, oifname.encode() + b"\0")
    return body


def neigh_body(index: int, dst: IPv4Address, lladdr: bytes, state: int) -> bytes:
    """RTM_NEWNEIGH: ``dst`` is at ``lladdr`` on ``index``, in NUD ``state``."""
    head = _NDMSG.pack(socket.AF_INET, index, state, 0, 0)
    return head + _attr(NDA_DST, dst.packed) + _attr(NDA_LLADDR, lladdr)


def parse_addr(payload: bytes) -> IfAddr | None:
    """An RTM_NEWADDR payload of the IPv4 family as an :class:`IfAddr` (None: other family)."""
    if len(payload) < _IFADDRMSG.size:
        return None
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
    if family != socket.AF_INET:
        return None
    address = None
    for kind, value in _attrs(payload[_IFADDRMSG.size :]):
        if kind == IFA_ADDRESS and len(value) == 4:
            address = str(IPv4Address(value))
    return IfAddr(index, prefixlen, address)


def check_ack(payload: bytes) -> None:
    """An NLMSG_ERROR payload: nothing when it acknowledges, OSError with its errno otherwise."""
    (err,) = _ERRNO.unpack_from(payload)
    if err:
        raise OSError(-err, os.strerror(-err))


class Rtnl:
    """One NETLINK_ROUTE socket for a few requests (``async with Rtnl() as nl: ...``).

    Each request waits for the kernel's answer before the next is sent, so replies need no
    matching beyond their sequence number; a refused request raises OSError with the kernel's
    errno.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.setblocking(False)
        self._sock.bind((0, 0))
        self._seq = 0

    async def __aenter__(self) -> Rtnl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sock.close()

    async def _exchange(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; its reply messages (type, payload) up to the ack or NLMSG_DONE."""
        self._seq += 1
        seq = self._seq
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self._sock, request(kind, flags, seq, body))
        out: list[tuple[int, bytes]] = []
        while True:
            data = await loop.sock_recv(self._sock, _RECV_BYTES)
            for rkind, _rflags, rseq, payload in parse(data):
                if rseq != seq:
                    continue  # a late answer to an earlier request: not ours
                if rkind == NLMSG_ERROR:
                    check_ack(payload)
                    return out
                if rkind == NLMSG_DONE:
                    return out
                out.append((rkind, payload))

    async def ipv4_addresses(self, index: int | None = None) -> list[IfAddr]:
        """Every IPv4 address of the namespace, or of interface ``index``."""
        body = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
        replies = await self._exchange(RTM_GETADDR, NLM_F_DUMP, body)
        addrs = [parse_addr(p) for kind, p in replies if kind == RTM_NEWADDR]
        return [a for a in addrs if a is not None and (index is None or a.index == index)]

    async def set_link(self, index: int, *, mtu: int, txqlen: int, up: bool) -> None:
        await self._exchange(
            RTM_NEWLINK, NLM_F_ACK, link_set_body(index, mtu=mtu, txqlen=txqlen, up=up)
        )

    async def add_address(
        self, index: int, address: IPv4Address, prefixlen: int, *, flags: int = 0
    ) -> None:
        body = addr_body(index, address, prefixlen, flags)
        await self._exchange(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    async def del_address(self, index: int, address: IPv4Address, prefixlen: int) -> None:
        await self._exchange(RTM_DELADDR, NLM_F_ACK, addr_body(index, address, prefixlen))

    async def replace_route(
        self,
        dst: IPv4Network,
        *,
        oif: int,
        prefsrc: IPv4Address,
        gateway: IPv4Address | None = None,
        scope: int = RT_SCOPE_UNIVERSE,
        table: int = RT_TABLE_MAIN,
    ) -> None:
        body = route_body(dst, oif=oif, prefsrc=prefsrc, gateway=gateway, scope=scope, table=table)
        await self._exchange(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)

    async def set_rules(self, *, table: int, priority: int, src: IPv4Address, oifname: str) -> None:
        """Exactly two rules at ``priority``: from ``src``, and out of ``oifname``, look up
        ``table`` (the ones an earlier run left there, with its address, go first)."""
        gone = rule_body(table=table, priority=priority)
        with contextlib.suppress(FileNotFoundError):
            for _ in range(16):  # each call deletes one rule of that priority
                await self._exchange(RTM_DELRULE, NLM_F_ACK, gone)
        for body in (
            rule_body(table=table, priority=priority, src=src),
            rule_body(table=table, priority=priority, oifname=oifname),
        ):
            await self._exchange(RTM_NEWRULE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    async def replace_neigh(self, index: int, dst: IPv4Address, lladdr: bytes, state: int) -> None:
        body = neigh_body(index, dst, lladdr, state)
        await self._exchange(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)
