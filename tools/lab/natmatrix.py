"""``ipop-lab natmatrix``: every pair of NAT kinds, on real NATs, with real daemons and ``ping``.

For each unordered pair of kinds (none, full-cone, restricted-cone, port-restricted-cone,
symmetric) a fresh lab holds a public bootstrap node and two hosts ``x`` and ``y`` behind NATs
of those kinds (or public, for "none"). Once both daemons hold an address, ``x`` pings
``y.ipop`` every 50 ms while ``x``'s ``ipop status`` is polled for the path it holds to ``y``;
the row reports whether ``y`` was reachable, whether the path became direct (and whether the
measured punching results say it should), the seconds from the first ping until the path was
direct, the RTT of the replies before and after that moment, and the pings lost. ``path`` is the
link ``x`` settled on: where the train ended with no link yet (routed over the ring while the
relay forms, ``OVERLAY_RELAY_AFTER_S`` after the attempts began, later on a loaded machine),
status is polled until a link is up or SETTLE_S has passed.

With three nodes, ``x`` and ``y`` are ring neighbours: they try to link while joining, before the
first ping, so ``time_to_direct_s`` is usually 0 here; a pair that cannot punch stays relayed
through the bootstrap node.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from ipop.nat.kinds import NAT_KINDS, NatKind
from ipop.nat.stun import direct_expected
from ipop.tools.lab import netns
from ipop.tools.lab.ipopnet import IpopNet, NotReady
from ipop.tools.lab.lab import Lab
from ipop.tools.lab.topology import topology_from_dict

__all__ = ["KINDS", "measure_pair", "run_matrix"]

KINDS = NAT_KINDS
PINGS = 60
INTERVAL_S = 0.05
READY_S = 30.0
# How long after the ping train a pair with no link yet may take to settle on one: the relay
# starts 2 s after the direct attempts (5 s for the end that yields) and needs a few round
# trips through the bootstrap; a loaded machine adds its scheduling delays.
SETTLE_S = 15.0
_REPLY = re.compile(r"^\[([0-9.]+)\].*icmp_seq=(\d+).*time=([0-9.]+) ms")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


def _host(name: str, kind: str, ip: str) -> dict[str, str]:
    if kind == "none":
        return {"name": name, "role": "public", "ip": ip}
    return {"name": name, "role": "nat", "kind": kind}


def measure_pair(a: str, b: str, *, workdir: Path) -> dict[str, Any]:
    topo = topology_from_dict(
        {
            "hosts": [
                {"name": "boot", "role": "public", "ip": "203.0.113.10"},
                _host("x", a, "203.0.113.21"),
                _host("y", b, "203.0.113.22"),
            ]
        }
    )
    row: dict[str, Any] = {
        "a": a,
        "b": b,
        "reachable": False,
        "direct": False,
        "expected_direct": direct_expected(NatKind(a), NatKind(b)),
        "time_to_direct_s": None,
        "rtt_overlay_ms": None,
        "rtt_direct_ms": None,
        "lost": None,
    }
    with Lab(topo, workdir=workdir) as lab:
        lab.up()
        net = IpopNet(lab, log_level="warning")
        try:
            ready = net.up_all(timeout_s=READY_S)
        except NotReady as exc:
            row["error"] = str(exc)
            return row
        y_id = ready["y"][0].self_.node_id
        watched = watch_pings(net, "x", "y.ipop", y_id, count=PINGS, interval_s=INTERVAL_S)
        del watched["replies"]  # the matrix keeps the summary; the demo shows the replies
        row.update(watched)
        if row["path"] not in ("direct", "relayed"):
            row["path"], row["why"] = settled_path(net, "x", y_id, timeout_s=SETTLE_S)
    return row


def settled_path(
    net: IpopNet, src: str, peer_id: str, *, timeout_s: float
) -> tuple[str | None, str | None]:
    """The path ``src`` holds to ``peer_id`` once it has a link (direct or relayed), or what it
    holds at the deadline; with status's reason when not direct."""
    deadline = time.monotonic() + timeout_s
    path: str | None = None
    why: str | None = None
    while True:
        path, why = None, None
        for p in net.status(src).peers:
            if p.node_id == peer_id:
                path, why = p.path, p.why
        if path in ("direct", "relayed") or time.monotonic() >= deadline:
            return path, (why if path != "direct" else None)
        time.sleep(0.1)


def watch_pings(
    net: IpopNet, src: str, target: str, peer_id: str, *, count: int, interval_s: float
) -> dict[str, Any]:
    """``ping -i interval_s target`` from host ``src`` while its ``ipop status`` is polled for
    the path to ``peer_id``: when (if) it turned direct, the RTTs on either side of that
    moment, losses, and every reply with the path it was sent under (``replies``: seconds
    since the first ping, RTT ms, path)."""
    host = net.lab.host(src)
    argv = ["ping", "-D", "-n", "-i", str(interval_s), "-c", str(count), "-W", "1", target]
    # Path samples (monotonic-free: ping -D prints wall-clock stamps, so sample with those).
    samples: list[tuple[float, str | None]] = []
    why: str | None = None
    started = time.time()
    proc = subprocess.Popen(
        netns.in_ns(host.ns, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + count * interval_s + 15
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            path = None
            for p in net.status(src).peers:
                if p.node_id == peer_id:
                    path, why = p.path, p.why
            samples.append((time.time(), path))
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate(timeout=10)
    replies = [
        (float(m.group(1)), float(m.group(3)))
        for line in out.splitlines()
        if (m := _REPLY.match(line))
    ]
    res: dict[str, Any] = {
        "reachable": bool(replies),
        "direct": False,
        "time_to_direct_s": None,
        "rtt_overlay_ms": None,
        "rtt_direct_ms": None,
        "lost": None,
    }
    summary = _SUMMARY.search(out)
    if summary:
        res["lost"] = int(summary.group(1)) - int(summary.group(2))
    direct_at = next((t for t, p in samples if p == "direct"), None)
    res["direct"] = direct_at is not None
    first = min(replies[0][0], started) if replies else started

    def path_at(t: float) -> str:
        # The path held when the request left (a reply is stamped an RTT later); no row for
        # the peer in status means no link: routed over the overlay.
        held = None
        for ts, p in samples:
            if ts > t:
                break
            held = p
        return held or "overlay"

    rows = [(t, rtt, path_at(t - rtt / 1000)) for t, rtt in replies]
    before = [r for _, r, p in rows if p != "direct"]
    after = [r for _, r, p in rows if p == "direct"]
    if direct_at is not None:
        res["time_to_direct_s"] = round(max(0.0, direct_at - first), 3)
    res["rtt_overlay_ms"] = round(median(before), 3) if before else None
    res["rtt_direct_ms"] = round(median(after), 3) if after else None
    res["path"] = samples[-1][1] if samples else None
    res["why"] = why if res["path"] != "direct" else None
    res["replies"] = [[round(t - first, 3), rtt, p] for t, rtt, p in rows]
    return res


def run_matrix(kinds: tuple[str, ...] = KINDS, *, quiet: bool = False) -> dict[str, Any]:
    pairs = []
    with tempfile.TemporaryDirectory(prefix="ipop-natmatrix-") as tmp:
        for i, (a, b) in enumerate(itertools.combinations_with_replacement(kinds, 2)):
            if not quiet:
                print(f"  {a} x {b} ...", file=sys.stderr, flush=True)
            pairs.append(measure_pair(a, b, workdir=Path(tmp) / f"p{i}"))
    return {"pairs": pairs}


def format_table(result: dict[str, Any]) -> str:
    head = (
        f"{'a':<21} {'b':<21} {'reach':<5} {'direct':<6} {'expect':<6} "
        f"{'to direct s':>11} {'rtt ovl ms':>10} {'rtt dir ms':>10} {'lost':>4}"
    )
    lines = [head]

    def f(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    for p in result["pairs"]:
        lines.append(
            f"{p['a']:<21} {p['b']:<21} {f(p['reachable']):<5} {f(p['direct']):<6} "
            f"{f(p['expected_direct']):<6} {f(p['time_to_direct_s']):>11} "
            f"{f(p['rtt_overlay_ms']):>10} {f(p['rtt_direct_ms']):>10} {f(p['lost']):>4}"
        )
    return "\n".join(lines)


def main_natmatrix(*, as_json: bool, kinds: tuple[str, ...] = KINDS) -> int:
    result = run_matrix(kinds, quiet=as_json)
    print(json.dumps(result, indent=2) if as_json else format_table(result))
    ok = all(
        p["reachable"] and (p["direct"] or p["expected_direct"] is False) for p in result["pairs"]
    )
    return 0 if ok else 1
