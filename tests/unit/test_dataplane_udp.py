"""The data plane's UDP socket on 127.0.0.1: GSO batches arrive as the datagrams sent, in order."""

from __future__ import annotations

import os
import select
import socket

import pytest

from ipop.aio.dataplane import UdpSocket
from ipop.types import Endpoint


def _drain(sock: UdpSocket, want: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < want:
        ready, _, _ = select.select([sock.sock], [], [], 2.0)
        assert ready, f"only {len(got)} of {want} datagrams arrived"
        while True:
            try:
                datagrams, _addr = sock.recv_batch()
            except BlockingIOError:
                break
            got.extend(datagrams)
    return got


@pytest.mark.parametrize("offload", [True, False])
def test_batches_of_mixed_sizes_arrive_whole_and_in_order(offload: bool) -> None:
    rx = UdpSocket(Endpoint("127.0.0.1", 0), offload=offload)
    tx = UdpSocket(Endpoint("127.0.0.1", 0), offload=offload)
    try:
        dst = Endpoint("127.0.0.1", rx.port)
        sizes = [1400] * 40 + [600] + [1400] * 30 + [200, 200, 1] + [900] * 29
        sent = [os.urandom(n) for n in sizes]
        tx.send_batch(sent, dst)
        got = _drain(rx, len(sent))
        assert got == sent
        assert not tx.errors
    finally:
        rx.close()
        tx.close()


def test_sendto_counts_errors_instead_of_raising() -> None:
    tx = UdpSocket(Endpoint("127.0.0.1", 0))
    try:
        tx.sendto(b"x" * 70000, Endpoint("127.0.0.1", 9))  # larger than any UDP datagram
        assert sum(tx.errors.values()) == 1
    finally:
        tx.close()


def test_plain_datagrams_from_a_foreign_socket_are_received() -> None:
    rx = UdpSocket(Endpoint("127.0.0.1", 0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(5):
            s.sendto(bytes([i]) * (10 + i), ("127.0.0.1", rx.port))
        assert _drain(rx, 5) == [bytes([i]) * (10 + i) for i in range(5)]
    finally:
        s.close()
        rx.close()
