"""Micro benchmark of end-to-end routed-message authentication (ipop.overlay.origin): the
older pairwise MAC over a clear payload against the seal (AES-256-GCM) that replaced it.

Run: ``.venv/bin/python -m ipop.tools.bench.routed_seal [--count 20000]``. Prints µs of process
CPU per message to make and to check (MAC) or open (seal), at 100 and 1,400 bytes of payload.
Not a test: numbers depend on the machine and its load (other processes share the 2 cores),
hence the best of five runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from collections.abc import Callable

from ipop.identity import NetworkCA, NodeIdentity
from ipop.overlay.messages import FLAG_EXACT, KIND_DHT, Routed, routed_signed_bytes
from ipop.overlay.origin import OriginAuth, pairwise_mac


def cpu_us(fn: Callable[[], object], count: int) -> float:
    """Best of five: µs of process CPU per call of ``fn``."""
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(count):
            fn()
        best = min(best, (time.process_time() - start) / count * 1e6)
    return best


def bench(count: int) -> dict[int, dict[str, float]]:
    now = time.time()
    ca = NetworkCA.create("benchnet", now=now - 60)
    a = NodeIdentity.generate(ca, "a", now=now - 60)
    b = NodeIdentity.generate(ca, "b", now=now - 60)
    oa = OriginAuth(a, random_bytes=random.Random(1).randbytes)
    ob = OriginAuth(b, random_bytes=random.Random(2).randbytes)
    oa.learn(b.cert)
    ob.learn(a.cert)
    key = oa.mac_key(b.node_id)
    assert key is not None
    ts = int(now)
    out: dict[int, dict[str, float]] = {}
    for size in (100, 1400):
        payload = bytes(size)

        def mac_make(p: bytes = payload) -> Routed:
            signed = routed_signed_bytes(FLAG_EXACT, KIND_DHT, ts, a.node_id, b.node_id, p)
            sig = pairwise_mac(key, signed)
            return Routed(FLAG_EXACT, 0, 64, KIND_DHT, a.node_id, b.node_id, None, p, ts, sig)

        def seal_make(p: bytes = payload) -> Routed:
            return oa.routed(FLAG_EXACT, 64, KIND_DHT, b.node_id, None, p, now=now)

        maced = dataclasses.replace(mac_make(), cert=b"")
        sealed = dataclasses.replace(seal_make(), cert=b"")

        def mac_check(m: Routed = maced) -> object:
            return ob.open(m, now=now)

        def seal_open(m: Routed = sealed) -> object:
            return ob.open(m, now=now)

        assert isinstance(mac_check(), Routed) and isinstance(seal_open(), Routed)
        out[size] = {
            "mac_make": cpu_us(mac_make, count),
            "mac_check": cpu_us(mac_check, count),
            "seal_make": cpu_us(seal_make, count),
            "seal_open": cpu_us(seal_open, count),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args(argv)
    for size, row in bench(args.count).items():
        print(f"{size:5d} B  " + "  ".join(f"{k} {v:5.2f} us" for k, v in row.items()))


if __name__ == "__main__":
    main()
