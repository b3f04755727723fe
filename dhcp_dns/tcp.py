"""DNS over TCP to the virtual gateway: a minimal TCP responder inside the TAP's packet path.

Why here and not a kernel socket: the gateway address (``100.64.0.1``) is not an address of
the host. DNS over UDP is answered from the frames the kernel writes into the TAP
(:mod:`ipop.dhcp_dns.services`), and a router answers its LAN the same way from a packet socket.
A kernel listener would need the host (or the router) to hold the gateway address, and then
the kernel, not the TAP, would get every packet to it, UDP included: ARP, DHCP and DNS would
all have to move, and a router's LAN hosts would see its real stack. Answering TC=1 does not
help either: a client told to retry over TCP would hang on the same missing listener. So the
gateway speaks just enough TCP for DNS (RFC 7766) on the path the UDP queries already take.

What it speaks, per connection keyed by (client IP, client port):

* SYN → SYN-ACK (our MSS 1200; the client's MSS bounds our segments); a repeated SYN gets the
  same SYN-ACK again; a SYN past ``max_conns`` live connections gets RST at once, counted.
* data in order → ACK, and every complete 2-byte-length-prefixed message is handed out as a
  query with its :class:`TcpClient`; data out of order → a duplicate ACK (the client resends).
* :meth:`DnsTcp.answer` sends a reply as PSH/ACK segments; queries may be pipelined.
* the client's FIN → ACK, and our FIN once every query of the connection is answered; the
  connection is forgotten when both FINs are acknowledged, on RST, or after ``idle_s``.
* anything for an unknown connection (no SYN seen) → RST, as a closed port would.

It never retransmits: the TAP is a local link (the kernel's writes into it are not lost), and a
client that misses a segment times out and retries, as dig does. A query longer than
``max_message`` bytes resets the connection. Every drop is counted by a reason of
:data:`DROP_REASONS`. Time (``now``) comes from the caller; there is no I/O here.
"""

from __future__ import annotations

import collections
import secrets
import struct
from dataclasses import dataclass, field
from typing import Final

from ipop.vnet.packet import (
    ETH_P_IP,
    Ipv4Header,
    build_ethernet,
    build_ipv4,
    internet_checksum,
)

__all__ = ["DROP_REASONS", "IPPROTO_TCP", "DnsTcp", "TcpClient"]

IPPROTO_TCP: Final = 6
DROP_REASONS: Final = frozenset(
    {
        "dns_tcp_short",  # shorter than a TCP header, or a bad data offset
        "dns_tcp_bad_checksum",
        "dns_tcp_no_connection",  # a segment for no connection we know: RST
        "dns_tcp_too_many_conns",  # a SYN past max_conns: RST
        "dns_tcp_too_long",  # a query longer than max_message: RST
        "dns_tcp_out_of_order",  # not the next byte we expect: duplicate ACK
        "dns_tcp_reply_after_close",  # the lookup ended after the connection did
    }
)

_TCP = struct.Struct("!HHIIBBHHH")
_PSEUDO = struct.Struct("!IIBBH")
_FIN, _SYN, _RST, _PSH, _ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_MSS_OPTION = struct.Struct("!BBH")
_OUR_MSS: Final = 1200
_DEFAULT_MSS: Final = 536  # RFC 9293: what a peer that sent no MSS option accepts
_WINDOW: Final = 65535
_U32: Final = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class TcpClient:
    """Where a reply over TCP goes: the connection's client side and our initial sequence."""

    mac: bytes
    ip: int
    port: int
    iss: int


@dataclass(slots=True)
class _Conn:
    """One DNS-over-TCP connection: its sequence numbers, MSS, and the bytes received."""

    client: TcpClient
    irs: int  # the client's initial sequence number
    rcv_nxt: int
    snd_nxt: int
    mss: int
    last: float
    buf: bytearray = field(default_factory=bytearray)
    waiting: int = 0  # queries handed out and not answered yet
    fin_received: bool = False
    fin_sent: bool = False


class DnsTcp:
    """TCP port 53 of the gateway ``gateway_ip`` (frames from ``mac``); see the docstring."""

    def __init__(
        self,
        gateway_ip: int,
        mac: bytes,
        *,
        port: int = 53,
        max_conns: int = 64,
        idle_s: float = 10.0,
        max_message: int = 4096,
    ) -> None:
        self.gateway_ip = gateway_ip
        self.mac = mac
        self.port = port
        self.max_conns = max_conns
        self.idle_s = idle_s
        self.max_message = max_message
        self.drops: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self._conns: collections.OrderedDict[tuple[int, int], _Conn] = collections.OrderedDict()

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _drop(self, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise AssertionError(f"DNS/TCP drop reason {reason!r} not in DROP_REASONS")
        self.drops[reason] += 1

    # -- input ---------------------------------------------------------------------------------

    def segment(
        self, mac: bytes, ip: Ipv4Header, seg: bytes | memoryview, *, now: float
    ) -> tuple[list[bytes], list[tuple[TcpClient, bytes]]]:
        """One segment to our port: the frames to send back, and the complete queries."""
        seg = bytes(seg)
        if len(seg) < _TCP.size:
            self._drop("dns_tcp_short")
            return [], []
        sport, _, seq, ack, off, flags, _, _, _ = _TCP.unpack_from(seg, 0)
        hlen = (off >> 4) * 4
        if hlen < _TCP.size or hlen > len(seg):
            self._drop("dns_tcp_short")
            return [], []
        if internet_checksum(_PSEUDO.pack(ip.src, ip.dst, 0, IPPROTO_TCP, len(seg)) + seg):
            self._drop("dns_tcp_bad_checksum")
            return [], []
        payload = seg[hlen:]
        self._expire(now)
        key = (ip.src, sport)
        conn = self._conns.get(key)
        if flags & _RST:
            self._conns.pop(key, None)
            return [], []
        if flags & _SYN and not flags & _ACK:
            return self._syn(mac, key, seq, _peer_mss(seg[_TCP.size : hlen]), now), []
        if conn is None:
            self._drop("dns_tcp_no_connection")
            return self._rst_for(mac, ip.src, sport, seq, ack, flags, len(payload)), []
        conn.last = now
        self._conns.move_to_end(key)
        out: list[bytes] = []
        queries: list[tuple[TcpClient, bytes]] = []
        if flags & _ACK and conn.fin_sent and conn.fin_received and ack == conn.snd_nxt:
            del self._conns[key]  # both FINs acknowledged: done
            return [], []
        fin = bool(flags & _FIN)
        if payload or fin:
            if seq != conn.rcv_nxt:
                self._drop("dns_tcp_out_of_order")
                return [self._send(conn, _ACK)], []
            conn.buf += payload
            conn.rcv_nxt = (conn.rcv_nxt + len(payload) + int(fin)) & _U32
            conn.fin_received |= fin
            while len(conn.buf) >= 2:
                n = int.from_bytes(conn.buf[:2], "big")
                if n > self.max_message:
                    self._drop("dns_tcp_too_long")
                    del self._conns[key]
                    return [self._send(conn, _RST | _ACK)], []
                if len(conn.buf) < 2 + n:
                    break
                queries.append((conn.client, bytes(conn.buf[2 : 2 + n])))
                del conn.buf[: 2 + n]
                conn.waiting += 1
                self.stats["queries"] += 1
            if len(conn.buf) > self.max_message + 2:
                self._drop("dns_tcp_too_long")
                del self._conns[key]
                return [self._send(conn, _RST | _ACK)], []
            out.append(self._send(conn, _ACK))
            out.extend(self._maybe_fin(conn))
        return out, queries

    def answer(self, client: TcpClient, data: bytes, *, now: float) -> list[bytes]:
        """Frames carrying ``data`` (one DNS message) back to ``client``; none if it is gone."""
        conn = self._conns.get((client.ip, client.port))
        if conn is None or conn.client != client:
            self._drop("dns_tcp_reply_after_close")
            return []
        conn.last = now
        conn.waiting -= 1
        stream = len(data).to_bytes(2, "big") + data
        out = []
        for i in range(0, len(stream), conn.mss):
            out.append(self._send(conn, _PSH | _ACK, stream[i : i + conn.mss]))
        out.extend(self._maybe_fin(conn))
        return out

    def answered_nothing(self, client: TcpClient) -> list[bytes]:
        """A query of ``client`` gets no reply (garbage, an upstream that stayed silent)."""
        conn = self._conns.get((client.ip, client.port))
        if conn is None or conn.client != client:
            return []
        conn.waiting -= 1
        return self._maybe_fin(conn)

    # -- internals -----------------------------------------------------------------------------

    def _syn(self, mac: bytes, key: tuple[int, int], seq: int, mss: int, now: float) -> list[bytes]:
        conn = self._conns.get(key)
        if conn is not None and conn.irs == seq:  # the client resent its SYN
            return [self._frame(conn.client, conn.client.iss, conn.rcv_nxt, _SYN | _ACK, mss=1)]
        if conn is None and len(self._conns) >= self.max_conns:
            self._drop("dns_tcp_too_many_conns")
            return [self._rst(mac, key, 0, (seq + 1) & _U32)]
        iss = secrets.randbits(32)
        client = TcpClient(mac, key[0], key[1], iss)
        conn = _Conn(client, seq, (seq + 1) & _U32, (iss + 1) & _U32, min(mss, _OUR_MSS), now)
        self._conns[key] = conn
        self._conns.move_to_end(key)
        self.stats["connections"] += 1
        return [self._frame(client, iss, conn.rcv_nxt, _SYN | _ACK, mss=1)]

    def _maybe_fin(self, conn: _Conn) -> list[bytes]:
        if conn.fin_received and not conn.fin_sent and conn.waiting == 0:
            conn.fin_sent = True
            frame = self._send(conn, _FIN | _ACK)
            conn.snd_nxt = (conn.snd_nxt + 1) & _U32
            return [frame]
        return []

    def _send(self, conn: _Conn, flags: int, payload: bytes = b"") -> bytes:
        frame = self._frame(conn.client, conn.snd_nxt, conn.rcv_nxt, flags, payload=payload)
        conn.snd_nxt = (conn.snd_nxt + len(payload)) & _U32
        return frame

    def _rst_for(
        self, mac: bytes, ip: int, port: int, seq: int, ack: int, flags: int, n: int
    ) -> list[bytes]:
        # RFC 9293 §3.10.7.1: answer an ACK with seq=its ack; anything else with ACK of it.
        if flags & _ACK:
            return [self._rst(mac, (ip, port), ack, None)]
        end = seq + n + int(bool(flags & _SYN)) + int(bool(flags & _FIN))
        return [self._rst(mac, (ip, port), 0, end & _U32)]

    def _rst(self, mac: bytes, key: tuple[int, int], seq: int, ack: int | None) -> bytes:
        client = TcpClient(mac, key[0], key[1], 0)
        flags = _RST | (_ACK if ack is not None else 0)
        return self._frame(client, seq, ack or 0, flags)

    def _frame(
        self,
        client: TcpClient,
        seq: int,
        ack: int,
        flags: int,
        *,
        payload: bytes = b"",
        mss: int = 0,
    ) -> bytes:
        options = _MSS_OPTION.pack(2, 4, _OUR_MSS) if mss else b""
        hlen = _TCP.size + len(options)
        header = bytearray(
            _TCP.pack(self.port, client.port, seq, ack, (hlen // 4) << 4, flags, _WINDOW, 0, 0)
        )
        segment = bytes(header) + options + payload
        pseudo = _PSEUDO.pack(self.gateway_ip, client.ip, 0, IPPROTO_TCP, len(segment))
        csum = internet_checksum(pseudo + segment)
        segment = segment[:16] + csum.to_bytes(2, "big") + segment[18:]
        packet = build_ipv4(self.gateway_ip, client.ip, IPPROTO_TCP, segment)
        return build_ethernet(client.mac, self.mac, ETH_P_IP, packet)

    def _expire(self, now: float) -> None:
        # Oldest activity first (move_to_end on every segment): stop at the first live one.
        while self._conns:
            key, conn = next(iter(self._conns.items()))
            if now - conn.last < self.idle_s:
                break
            del self._conns[key]
            self.stats["expired"] += 1


def _peer_mss(options: bytes) -> int:
    """The MSS option of a SYN (RFC 9293 §3.7.1), else the default of 536."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        length = options[i + 1]
        if kind == 2 and length == 4 and i + 4 <= len(options):
            return max(64, int.from_bytes(options[i + 2 : i + 4], "big"))
        i += length
    return _DEFAULT_MSS
