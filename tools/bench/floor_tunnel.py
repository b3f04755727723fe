"""The least a Python tunnel can do per packet: a yardstick for ``ipop-lab bench``, not a VPN.

One TUN device and one UDP socket; every packet read from the TUN is sealed with AES-256-GCM
under a counter nonce and sent to the one peer, every datagram received is opened and written
to the TUN. No handshake (the key is fixed and public), no overlay, no routing, no replay
window, no batching: what is left is the wake-up, the two system calls and the AEAD, in a
loop that touches as little Python as possible. ``ipop-lab bench`` runs it beside ipop, tinc,
wireguard-go and nebula, so that the cost of Python itself shows in the same table as theirs
(``--loop asyncio`` wakes through an asyncio event loop, as ipopd does; ``--loop epoll``
blocks in ``epoll_wait`` directly).

It stops by itself after ``--max-seconds``, and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Fixed and public: this program measures, it does not protect anything.
KEY = bytes(range(32))
TAG = 16
_CTR = struct.Struct(">Q")
_NONCE = struct.Struct(">4xQ")


def _open_tun(name: str, addr: str, mtu: int) -> Any:
    """The TUN device, up and non-blocking (pytun closes its fd when the object goes)."""
    from pytun import IFF_NO_PI, IFF_TUN, TunTapDevice

    ip, _, bits = addr.partition("/")
    tun = TunTapDevice(name=name, flags=IFF_TUN | IFF_NO_PI)
    tun.addr = ip
    mask = (0xFFFFFFFF << (32 - int(bits or 24))) & 0xFFFFFFFF
    tun.netmask = socket.inet_ntoa(mask.to_bytes(4, "big"))
    tun.mtu = mtu
    tun.up()
    os.set_blocking(tun.fileno(), False)
    return tun


def make_handlers(
    tun: int, sock: socket.socket, peer: tuple[str, int]
) -> tuple[Callable[[], None], Callable[[], None], dict[str, int]]:
    """(TUN readable handler, UDP readable handler, counters)."""
    aead = AESGCM(KEY)
    counters = {"sealed": 0, "opened": 0, "bad": 0}
    seal_nonce, open_nonce = bytearray(12), bytearray(12)
    inbuf, outbuf = bytearray(65536), bytearray(65536 + 8 + TAG)
    inview, outview = memoryview(inbuf), memoryview(outbuf)
    readv, write, sendto, recv_into = os.readv, os.write, sock.sendto, sock.recv_into

    def from_tun() -> None:
        while True:
            try:
                n = readv(tun, (inbuf,))
            except BlockingIOError:
                return
            counters["sealed"] += 1
            ctr = counters["sealed"]
            _CTR.pack_into(outbuf, 0, ctr)
            _NONCE.pack_into(seal_nonce, 0, ctr)
            m = aead.encrypt_into(seal_nonce, inview[:n], None, outview[8 : 8 + n + TAG])
            try:
                sendto(outview[: 8 + m], peer)
            except OSError:
                counters["bad"] += 1

    def from_udp() -> None:
        while True:
            try:
                n = recv_into(inbuf)
            except BlockingIOError:
                return
            if n < 8 + TAG:
                counters["bad"] += 1
                continue
            _NONCE.pack_into(open_nonce, 0, _CTR.unpack_from(inbuf)[0])
            try:
                m = aead.decrypt_into(open_nonce, inview[8:n], None, outview[: n - 8 - TAG])
            except InvalidTag:
                counters["bad"] += 1
                continue
            counters["opened"] += 1
            try:
                write(tun, outview[:m])
            except OSError:
                counters["bad"] += 1

    return from_tun, from_udp, counters


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tun", required=True, help="TUN device name to create")
    p.add_argument("--addr", required=True, help="its address, e.g. 100.64.2.1/24")
    p.add_argument("--listen", type=int, default=7000, help="UDP port")
    p.add_argument("--peer", required=True, help="HOST:PORT of the other end")
    p.add_argument("--mtu", type=int, default=1400)
    p.add_argument("--loop", choices=("asyncio", "epoll"), default="asyncio")
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = p.parse_args(argv)
    host, _, port = args.peer.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.listen))
    sock.setblocking(False)
    device = _open_tun(args.tun, args.addr, args.mtu)
    tun: int = device.fileno()
    from_tun, from_udp, counters = make_handlers(tun, sock, (host, int(port)))
    deadline = time.monotonic() + args.max_seconds
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    if args.loop == "epoll":
        signal.signal(signal.SIGTERM, on_term)
        ep = select.epoll()
        ep.register(tun, select.EPOLLIN)
        ep.register(sock.fileno(), select.EPOLLIN)
        while not stop and time.monotonic() < deadline:
            try:
                events = ep.poll(1.0)
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == tun:
                    from_tun()
                else:
                    from_udp()
    else:

        async def run() -> None:
            loop = asyncio.get_running_loop()
            done = asyncio.Event()
            loop.add_signal_handler(signal.SIGTERM, done.set)
            loop.add_reader(tun, from_tun)
            loop.add_reader(sock.fileno(), from_udp)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), args.max_seconds)

        asyncio.run(run())
    print(" ".join(f"{k}={v}" for k, v in counters.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
