"""Micro benchmark of TCP receive coalescing (:mod:`ipop.vnet.gro`): what merging a batch's
segments for the TAP costs per segment, in the pure-Python definition and in its native twin
(``ipop.link._fastpath.coalesce``, picked by the data plane with the native backend).

Run: ``.venv/bin/python -m ipop.tools.bench.gro_bench [--batch 64] [--size 1400]``. Prints µs
of process CPU per segment, best of five, for a batch of one flow's back-to-back segments
(the bulk case: one merged packet per 64 kB) and for a batch of two flows interleaved
segment by segment (nothing merges: every packet is looked at and handed back). Not a test:
the numbers depend on the machine and its load (2 shared cores).
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from typing import Any

from ipop.link import fastpath
from ipop.testing.tcp import ACK, PSH, TIMESTAMPS, tcp_segment
from ipop.tools.bench.routed_seal import cpu_us
from ipop.vnet.gro import coalesce

SRC, DST, OTHER = IPv4Address("100.64.0.1"), IPv4Address("100.64.0.2"), IPv4Address("100.64.0.3")


def one_flow(batch: int, size: int, src: IPv4Address = SRC, seq: int = 1000) -> list[bytes]:
    """``batch`` back-to-back segments of ``size`` payload bytes, PSH on the last."""
    out = []
    for i in range(batch):
        flags = ACK | (PSH if i == batch - 1 else 0)
        out.append(tcp_segment(seq, bytes(size), src=src, dst=DST, flags=flags, options=TIMESTAMPS))
        seq += size
    return out


def bench(batch: int, size: int) -> dict[str, Any]:
    bulk = one_flow(batch, size)
    mixed = [p for pair in zip(bulk, one_flow(batch, size, OTHER), strict=True) for p in pair]
    native = fastpath.native_coalesce()
    impls: dict[str, Callable[[Sequence[bytes]], object]] = {"python": coalesce}
    if native is not None:
        impls["native"] = native
    out: dict[str, Any] = {"batch": batch, "size": size}
    for name, fn in impls.items():
        for case, packets in (("bulk", bulk), ("mixed", mixed)):
            us = cpu_us(functools.partial(fn, packets), 200) / len(packets)
            out[f"{name}_{case}_us"] = round(us, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="gro_bench", description=__doc__)
    ap.add_argument("--batch", type=int, default=64, help="segments per flow and batch")
    ap.add_argument("--size", type=int, default=1400, help="payload bytes per segment")
    args = ap.parse_args()
    fastpath.use("auto")
    print(json.dumps(bench(args.batch, args.size)))


if __name__ == "__main__":
    main()
