"""The bench's Python floor tunnel on loopback: a socketpair stands in for each TUN."""

from __future__ import annotations

import select
import socket
import time

from ipop.tools.bench.floor_tunnel import make_handlers


def _end() -> tuple[socket.socket, socket.socket, socket.socket]:
    """(the test's side of the fake TUN, the tunnel's side, the tunnel's UDP socket)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    return ours, theirs, udp


def test_a_packet_crosses_sealed_and_a_forgery_is_counted() -> None:
    a_app, a_tun, a_udp = _end()
    b_app, b_tun, b_udp = _end()
    socks = [a_app, a_tun, a_udp, b_app, b_tun, b_udp]
    try:
        a_from_tun, _, a_count = make_handlers(a_tun.fileno(), a_udp, b_udp.getsockname())
        _, b_from_udp, b_count = make_handlers(b_tun.fileno(), b_udp, a_udp.getsockname())
        packet = bytes(range(256)) * 4
        a_app.send(packet)
        a_from_tun()
        assert a_count["sealed"] == 1
        # What went over UDP is not the plaintext.
        wire, _ = b_udp.recvfrom(65536)
        assert packet not in wire and len(wire) == len(packet) + 8 + 16
        b_udp_peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(b_udp_peer)
        b_udp_peer.sendto(wire, b_udp.getsockname())
        forged = bytearray(wire)
        forged[20] ^= 1
        b_udp_peer.sendto(bytes(forged), b_udp.getsockname())
        b_udp_peer.sendto(b"short", b_udp.getsockname())
        b_app.settimeout(5)
        deadline = time.monotonic() + 5
        while b_count["opened"] + b_count["bad"] < 3 and time.monotonic() < deadline:
            select.select([b_udp], [], [], 0.5)
            b_from_udp()
        assert b_count == {"sealed": 0, "opened": 1, "bad": 2}
        assert b_app.recv(65536) == packet
        b_app.setblocking(False)
        try:
            extra = b_app.recv(65536)
        except BlockingIOError:
            extra = b""
        assert extra == b""
    finally:
        for s in socks:
            s.close()
