"""Micro benchmark of the network tag (issue 17, item 2; :mod:`ipop.vnet.networks`): what an IP
packet of a daemon in several networks costs more than one of a daemon in one.

Run: ``.venv/bin/python -m ipop.tools.bench.net_tag [--count 20000] [--size 1400]``. Prints µs
of process CPU per packet, best of five:

- ``filter_us``: the inbound check of a one-network node (PacketFilter.check_in);
- ``demux_tagged_us`` / ``demux_untagged_us``: the same check through the demux of a node in
  two networks, for tagged IP and for a one-network sender's untagged IP;
- ``slow_untagged_us`` / ``slow_tagged_us``: one packet over an in-memory link through the
  core's event path (send_ip, seal, open, Delivered), untagged and tagged: the path routed and
  relayed IP takes (the tag's own cost is their difference);
- ``fast_us`` / ``fast_tagged_us``: seal and open of a packet on the fast path
  (seal_ip/receive_direct), untagged and tagged: direct links take it for both (tagged IP took
  the event path before; ``python -m ipop.tools.bench.dataplane_bench`` has the whole plane).
Not a test: the numbers depend on the machine and its load (2 shared cores).
"""

from __future__ import annotations

import argparse
import time
from ipaddress import IPv4Address

from ipop.overlay.events import Delivered
from ipop.overlay.messages import KIND_IP, KIND_IP_NET, TYPE_DIRECT
from ipop.tools.bench.dataplane_bench import A_EP, A_VIP, B_VIP, SUBNET, linked_pair
from ipop.tools.bench.routed_seal import cpu_us
from ipop.vnet.filter import PacketFilter, Verdict
from ipop.vnet.networks import NetworkDemux, network_tag
from ipop.vnet.owners import OwnerTable
from ipop.vnet.packet import IPPROTO_UDP, build_ipv4


def bench(count: int, size: int) -> dict[str, float]:
    now = time.time()
    a, b = linked_pair(now)
    packet = build_ipv4(A_VIP, B_VIP, IPPROTO_UDP, bytes(size - 28))
    tag1, tag2 = network_tag(b"1" * 32), network_tag(b"2" * 32)

    def side(own: IPv4Address) -> PacketFilter:
        f = PacketFilter(b.local_id, SUBNET, OwnerTable())
        f.set_own_ip(own.packed)
        f.owners.answer(A_VIP.packed, a.local_id, now=now)
        return f

    one = side(B_VIP)
    demux = NetworkDemux([(tag2, side(IPv4Address("100.64.0.99"))), (tag1, side(B_VIP))])
    tagged = tag1 + packet
    src = a.local_id
    assert one.check_in(src, packet, 0, now) is Verdict.DELIVER
    assert demux.check_in(src, True, tagged, now) == (1, 4, Verdict.DELIVER)
    assert demux.check_in(src, False, packet, now) == (1, 0, Verdict.DELIVER)
    out = {
        "filter_us": cpu_us(lambda: one.check_in(src, packet, 0, now), count),
        "demux_tagged_us": cpu_us(lambda: demux.check_in(src, True, tagged, now), count),
        "demux_untagged_us": cpu_us(lambda: demux.check_in(src, False, packet, now), count),
    }

    def slow(tag: bytes) -> None:
        a.send_ip(b.local_id, packet, now=now, tag=tag)
        for data, _path in a.datagrams_to_send(now=now):
            b.receive_datagram(data, A_EP, now=now)
        got = b.next_event()
        assert type(got) is Delivered
        while b.next_event() is not None:
            pass

    slow_count = max(1, count // 10)
    out["slow_untagged_us"] = cpu_us(lambda: slow(b""), slow_count)
    out["slow_tagged_us"] = cpu_us(lambda: slow(tag1), slow_count)

    def fast(message: bytes) -> None:
        sealed = a.seal_ip(b.local_id, memoryview(message), now=now)
        assert sealed is not None
        got = b.receive_direct(sealed[0], A_EP, now=now, kind=KIND_IP, also=KIND_IP_NET)
        assert got is not None

    untagged = bytes((TYPE_DIRECT, KIND_IP)) + packet
    out["fast_us"] = cpu_us(lambda: fast(untagged), slow_count)
    out["fast_tagged_us"] = cpu_us(
        lambda: fast(bytes((TYPE_DIRECT, KIND_IP_NET)) + tagged), slow_count
    )
    a.flush(now=now)
    b.flush(now=now)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--size", type=int, default=1400, help="IP packet bytes")
    args = parser.parse_args(argv)
    for name, us in bench(args.count, args.size).items():
        print(f"{name:20} {us:8.2f} µs/packet")


if __name__ == "__main__":
    main()
