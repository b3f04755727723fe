"""The data plane's UDP socket on 127.0.0.1: GSO batches arrive as the datagrams sent, in order;
every datagram carries DF; a refused GSO send limits only its destination's path."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.aio.sockets import LoopUdpSocket
from ipop.aio.udp import (
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    GSO_RETRY_S,
    IoDrop,
    UdpSocket,
    gso_end,
)
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


# --- DF on every datagram; a refused GSO send concerns one destination ------------------------

_IP_MTU_DISCOVER = 10  # linux/in.h
_IP_PMTUDISC_PROBE = 3


def test_every_datagram_of_the_overlay_socket_carries_df() -> None:
    """Linux's default sets DF only on datagrams that fit a known path MTU, which left GSO
    segments without it (fragmented on a smaller link); PROBE sets it on every datagram (and
    leaves path sizes to probing, not to ICMP)."""
    tx = UdpSocket(Endpoint("127.0.0.1", 0))
    try:
        got = tx.sock.getsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER)
        assert got == _IP_PMTUDISC_PROBE
    finally:
        tx.close()


def test_punching_sockets_carry_df_too() -> None:
    async def main() -> int:
        s = LoopUdpSocket("127.0.0.1", lambda _d, _a: None, Counter())
        try:
            return int(s._sock.getsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER))
        finally:
            s.close()

    assert asyncio.run(main()) == _IP_PMTUDISC_PROBE


def test_a_punching_socket_sends_runs_with_gso_and_reads_them_back_split() -> None:
    """Port-guessed paths take the main socket's offloads too: a run leaves in few sendmsg
    calls, and a GRO-coalesced run arrives as the datagrams sent, in order."""

    async def main() -> tuple[list[bytes], list[bytes], Counter[str], int]:
        got: list[bytes] = []
        arrived = asyncio.Event()
        errors: Counter[str] = Counter()
        sizes = [1400] * 40 + [600] + [1400] * 30 + [200, 200, 1] + [900] * 29
        sent = [os.urandom(n) for n in sizes]

        def on_datagram(data: bytes, _addr: tuple[str, int]) -> None:
            got.append(data)
            if len(got) == len(sent):
                arrived.set()

        rx = LoopUdpSocket("127.0.0.1", on_datagram, errors)
        tx = LoopUdpSocket("127.0.0.1", lambda _d, _a: None, errors)
        calls = 0
        real = tx._sock

        class Counting:
            def sendmsg(self, *args: object) -> int:
                nonlocal calls
                calls += 1
                return real.sendmsg(*args)  # type: ignore[arg-type]

            def __getattr__(self, name: str) -> object:
                return getattr(real, name)

        tx._sock = Counting()  # type: ignore[assignment]
        try:
            tx.send_batch(sent, ("127.0.0.1", rx.port))
            await asyncio.wait_for(arrived.wait(), 5.0)
        finally:
            tx._sock = real
            rx.close()
            tx.close()
        return got, sent, errors, calls

    got, sent, errors, calls = asyncio.run(main())
    assert got == sent
    assert not errors
    assert 0 < calls < 10  # 103 datagrams in a handful of GSO sends, not one call each


def test_a_punching_socket_whose_gso_send_is_refused_sends_singly_from_then_on() -> None:
    async def main() -> tuple[int, Counter[str]]:
        got: list[bytes] = []
        arrived = asyncio.Event()
        errors: Counter[str] = Counter()

        def on_datagram(data: bytes, _addr: tuple[str, int]) -> None:
            got.append(data)
            if len(got) == 16:
                arrived.set()

        rx = LoopUdpSocket("127.0.0.1", on_datagram, errors)
        tx = LoopUdpSocket("127.0.0.1", lambda _d, _a: None, errors)
        real = tx._sock
        tx._sock = _RefusingSocket(real, {("127.0.0.1", rx.port)})  # type: ignore[assignment]
        try:
            batch = [bytes([i]) * 500 for i in range(8)]
            tx.send_batch(batch, Endpoint("127.0.0.1", rx.port))
            tx.send_batch(batch, Endpoint("127.0.0.1", rx.port))
            await asyncio.wait_for(arrived.wait(), 5.0)
        finally:
            tx._sock = real
            rx.close()
            tx.close()
        return len(got), errors

    n, errors = asyncio.run(main())
    assert n == 16  # nothing lost: the refused run went one datagram per call
    assert errors == Counter({"punch_gso_refused": 1})  # GSO tried once, then off


class _RefusingSocket:
    """A UDP socket whose GSO sends to some destinations fail as a small-MTU route's do
    (``EINVAL`` under DF); it records every ``sendmsg`` destination."""

    def __init__(self, sock: socket.socket, refuse: set[tuple[str, int]]) -> None:
        self._sock = sock
        self.refuse = refuse
        self.calls: list[tuple[str, int]] = []

    def sendmsg(self, buffers: list[bytes], anc: object, flags: int, addr: Endpoint) -> int:
        dest = (addr.host, addr.port)
        self.calls.append(dest)
        if dest in self.refuse:
            raise OSError(errno.EINVAL, "Invalid argument")
        return self._sock.sendmsg(buffers, anc, flags, addr)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def test_a_refused_gso_send_limits_only_that_destinations_path() -> None:
    """One failed batched send to a small-MTU peer turned batching off for the whole daemon
    (throughput to an unrelated peer fell 20-35 %): now only that destination sends singly."""
    now = [1000.0]
    small, big = UdpSocket(Endpoint("127.0.0.1", 0)), UdpSocket(Endpoint("127.0.0.1", 0))
    tx = UdpSocket(Endpoint("127.0.0.1", 0), clock=lambda: now[0])
    to_small, to_big = Endpoint("127.0.0.1", small.port), Endpoint("127.0.0.1", big.port)
    fake = _RefusingSocket(tx.sock, {("127.0.0.1", small.port)})
    tx.sock = fake  # type: ignore[assignment]
    try:
        first = [os.urandom(1400) for _ in range(8)]
        tx.send_batch(first, to_small)  # refused once: this run goes singly
        assert _drain(small, 8) == first
        assert fake.calls == [("127.0.0.1", small.port)]
        assert tx.errors[IoDrop.GSO_REFUSED] == 1

        fake.calls.clear()
        again = [os.urandom(1400) for _ in range(8)]
        other = [os.urandom(1400) for _ in range(8)]
        tx.send_batch(again, to_small)  # no GSO try to the refusing path for a while
        tx.send_batch(other, to_big)  # the unrelated peer still gets one GSO send
        assert fake.calls == [("127.0.0.1", big.port)]
        assert _drain(small, 8) == again
        assert _drain(big, 8) == other
        # Smaller segments to the refusing path may still be batched.
        fake.calls.clear()
        tx.send_batch([b"s" * 600] * 4, to_small)
        assert fake.calls == [("127.0.0.1", small.port)]
        assert _drain(small, 4) == [b"s" * 600] * 4
        assert tx.gso_limit(to_small) == 600
        assert tx.gso_limit(to_big) is None

        now[0] += GSO_RETRY_S  # the path may have grown back: GSO is tried again
        assert tx.gso_limit(to_small) is None
        fake.refuse.clear()
        fake.calls.clear()
        tx.send_batch([b"b" * 1400] * 4, to_small)
        assert fake.calls == [("127.0.0.1", small.port)]
        assert _drain(small, 4) == [b"b" * 1400] * 4
    finally:
        for s in (small, big):
            s.close()
        fake._sock.close()


def test_a_datagram_larger_than_its_path_is_counted_as_too_big() -> None:
    tx = UdpSocket(Endpoint("127.0.0.1", 0))
    try:
        tx.sendto(b"x" * 70000, Endpoint("127.0.0.1", 9))  # EMSGSIZE: larger than any path
        assert tx.errors == {IoDrop.SEND_TOO_BIG: 1}
    finally:
        tx.close()


_ZEROS = bytes(65000)


def _gso_end_by_definition(sizes: list[int], i: int) -> int:
    """The greedy loop gso_end ran over the datagrams (before the compared-in-C run)."""
    size, total, j = sizes[i], sizes[i], i + 1
    while j < len(sizes) and j - i < GSO_MAX_SEGMENTS:
        length = sizes[j]
        if length > size or total + length > GSO_MAX_BYTES:
            break
        total += length
        j += 1
        if length < size:
            break
    return j


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([1, 600, 1000, 1354, 1355, 1400, 1401, 65000, 0]),
            st.integers(0, 9000),
        ),
        max_size=150,
    ).flatmap(lambda xs: st.tuples(st.just(xs), st.integers(0, max(0, len(xs) - 1))))
)
def test_gso_runs_end_where_the_greedy_loop_ends_them(case: tuple[list[int], int]) -> None:
    sizes, i = case
    # Long runs of one size (each GRO'd train of a TCP stream), with a shorter one after.
    runs = ([1354] * 70, [1400] * 46 + [600], [1354] * 48 + [8], [1354] * 48 + [600], [9] * 64)
    for s in (sizes, *(run + sizes for run in runs)):
        for at in {0, min(i, len(s) - 1)} if s else set():
            datagrams = [_ZEROS[:n] for n in s]
            assert gso_end(datagrams, at) == _gso_end_by_definition(s, at), (s, at)
