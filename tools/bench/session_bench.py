"""Micro benchmark of the session hot path: LinkLayer.seal and the DATA receive branch.

Run: ``.venv/bin/python -m ipop.tools.bench.session_bench [--size 1400] [--count 200000]``. Prints
packets/s and µs per packet for each cipher, for seal and open
(receive_datagram of a DATA, including the LinkMessage event). Not a test: numbers depend on
the machine and its load (other processes share the 2 cores), hence the best of N.
"""

from __future__ import annotations

import argparse
import random
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ipop.identity import NetworkCA, NodeIdentity
from ipop.link.crypto import AES_256_GCM, CHACHA20_POLY1305, nonce_for
from ipop.link.layer import LinkConfig, LinkLayer
from ipop.types import Endpoint

A_EP = Endpoint("198.51.100.1", 5800)
B_EP = Endpoint("203.0.113.2", 5800)


def _pair(cipher: str, now: float) -> tuple[LinkLayer, LinkLayer]:
    ca = NetworkCA.create("benchnet", now=now - 60)
    cfg = LinkConfig(ciphers=(cipher,))
    a = LinkLayer(NodeIdentity.generate(ca, "a", now=now - 60), rng=random.Random(1), config=cfg)
    b = LinkLayer(NodeIdentity.generate(ca, "b", now=now - 60), rng=random.Random(2), config=cfg)
    a.connect(B_EP, now=now)
    for _ in range(3):
        for data, _path in a.datagrams_to_send(now=now):
            b.receive_datagram(data, A_EP, now=now)
        for data, _path in b.datagrams_to_send(now=now):
            a.receive_datagram(data, B_EP, now=now)
    while a.next_event() or b.next_event():
        pass
    return a, b


def _report(what: str, count: int, seconds: float) -> None:
    print(
        f"  {what:<10} {count / seconds:>12,.0f} packets/s  {seconds / count * 1e6:6.2f} µs/packet"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1400, help="payload bytes")
    parser.add_argument("--count", type=int, default=200_000, help="packets per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="report the best of N runs")
    args = parser.parse_args()
    now = 1_795_305_600.0
    payload = bytes(random.Random(0).getrandbits(8) for _ in range(args.size))
    for cipher in (AES_256_GCM, CHACHA20_POLY1305):
        a, b = _pair(cipher, now)
        peer_b, peer_a = b.local_id, a.local_id
        print(f"{cipher}, {args.size}-byte payload, best of {args.repeat} x {args.count} packets")
        seal = a.seal
        receive, next_event = b.receive_datagram, b.next_event
        best_seal = best_open = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for _ in range(args.count):
                seal(peer_b, payload, now=now)
            best_seal = min(best_seal, time.perf_counter() - t0)
            packets = [seal(peer_b, payload, now=now)[0] for _ in range(args.count)]
            t0 = time.perf_counter()
            for data in packets:
                receive(data, A_EP, now=now)
                next_event()
            best_open = min(best_open, time.perf_counter() - t0)
        _report("seal", args.count, best_seal)
        _report("open", args.count, best_open)
        # The library alone on the same packets: what the session layer adds is the rest.
        aead = (AESGCM if cipher == AES_256_GCM else ChaCha20Poly1305)(bytes(32))
        raw = [aead.encrypt(nonce_for(i), payload, b"h" * 13) for i in range(args.count)]
        best_raw_seal = best_raw_open = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for i in range(args.count):
                aead.encrypt(nonce_for(i), payload, b"h" * 13)
            best_raw_seal = min(best_raw_seal, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i, ct in enumerate(raw):
                aead.decrypt(nonce_for(i), ct, b"h" * 13)
            best_raw_open = min(best_raw_open, time.perf_counter() - t0)
        _report("raw enc", args.count, best_raw_seal)
        _report("raw dec", args.count, best_raw_open)
        assert not b.drops, b.drops
        assert peer_a in {i.peer for i in b.peers()}


if __name__ == "__main__":
    main()
