"""ipop-lab pmtu: TCP across the VN over an underlay path with a small link in the middle.

Finding 4 of issue 14: on a path whose underlay MTU is 1124, overlay datagrams depended on IP
fragmentation (which many NATs and firewalls drop), and where the path also dropped ICMP
"fragmentation needed" TCP across the VN stalled. This module owns one check run::

    a (198.51.100.1) -- r1 ==== link_mtu ==== r2 -- b (203.0.113.2)

four namespaces (every name starts with a prefix unique to this process), the r1-r2 veth at
``link_mtu`` on both ends, optionally with ICMP "fragmentation needed" dropped as the two
routers send it (iptables in r1 and r2 only: a PMTU black hole). Two ipopd (a the bootstrap,
as ``ipop-lab bench`` runs them), one iperf3 TCP stream a -> b across the VN, and the IPv4
fragmentation counters of every namespace (``Ip: FragCreates``, ``ReasmReqds`` of
/proc/net/snmp) before and after. Everything is torn down in ``finally``.

:func:`run_gso_burst` is the same topology with no daemon: the overlay's UDP socket sends
batches (GSO) of 1400-byte datagrams from a to b, and the counters say whether any of them was
fragmented on the way (before: every one, its segments left without DF).

:func:`run_relayed` is the relayed variant, on a :class:`ipop.tools.lab.lab.Lab`: a public relay
``boot`` and two hosts ``x`` and ``y`` behind symmetric NATs (they cannot punch, so they stay
relayed through ``boot``), the WAN link of ``y``'s NAT router at ``link_mtu`` on both ends.
The internet is a bridge, which drops a frame too big for a port without a word: a PMTU
black hole on the relay's second hop. DF pings and one iperf3 TCP stream x -> y across the
VN, and the same fragment counters in every namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ipop.link.pmtu import RELAY_OVERHEAD
from ipop.status import Status
from ipop.tools.lab import netns
from ipop.tools.lab.bench import A_UL, UP_TIMEOUT_S, BenchError, _ipop, _Run
from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.lab import WAN_IF, Lab
from ipop.tools.lab.topology import topology_from_dict
from ipop.wire.header import DATA_MIN_BYTES

__all__ = ["FRAG_COUNTERS", "main_pmtu", "run_gso_burst", "run_pmtu", "run_relayed"]

R1_A = "198.51.100.254"
R1_R2, R2_R1 = "203.0.113.253", "203.0.113.254"
R2_B, B_UL = "203.0.113.1", "203.0.113.2"
FRAG_COUNTERS = ("FragCreates", "FragOKs", "ReasmReqds")


def _snmp_ip(ns: str) -> dict[str, int]:
    snmp = netns.run(["cat", "/proc/net/snmp"], ns=ns).stdout
    lines = [ln.split() for ln in snmp.splitlines()]
    ip = [ln[1:] for ln in lines if ln and ln[0] == "Ip:"]
    return {k: int(v) for k, v in zip(ip[0], ip[1], strict=True) if k in FRAG_COUNTERS}


def _names(run: _Run) -> list[str]:
    return [run.ns_a, run.prefix + "r1", run.prefix + "r2", run.ns_b]


def _setup(run: _Run, link_mtu: int, block_icmp: bool) -> list[str]:
    every = _names(run)
    a, r1, r2, b = every
    for ns in every:
        run.sh(["ip", "netns", "add", ns])
        run.sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    links = (  # (ns, address/prefix, ns, address/prefix, mtu)
        (a, f"{A_UL}/24", r1, f"{R1_A}/24", 1500),
        (r1, f"{R1_R2}/30", r2, f"{R2_R1}/30", link_mtu),
        (r2, f"{R2_B}/25", b, f"{B_UL}/25", 1500),
    )
    for i, (n1, ip1, n2, ip2, mtu) in enumerate(links):
        v1, v2 = f"{run.prefix}v{i}x", f"{run.prefix}v{i}y"
        run.sh(["ip", "link", "add", v1, "netns", n1, "type", "veth", "peer", v2, "netns", n2])
        for ns, ifc, addr in ((n1, v1, ip1), (n2, v2, ip2)):
            run.sh(["ip", "-n", ns, "link", "set", ifc, "mtu", str(mtu), "up"])
            run.sh(["ip", "-n", ns, "addr", "add", addr, "dev", ifc])
    run.sh(["ip", "-n", a, "route", "add", "default", "via", R1_A])
    run.sh(["ip", "-n", b, "route", "add", "default", "via", R2_B])
    run.sh(["ip", "-n", r1, "route", "add", "203.0.113.0/25", "via", R2_R1])
    run.sh(["ip", "-n", r2, "route", "add", "198.51.100.0/24", "via", R1_R2])
    for ns in (r1, r2):
        run.sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=ns)
        if block_icmp:
            rule = ["-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]
            run.sh(["iptables", "-A", "OUTPUT", *rule], ns=ns)
    return every


# Run in a's namespace by the repository's Python: one UdpSocket, batches toward b's port 9.
_BURST_PY = """
from ipop.aio.dataplane import UdpSocket
from ipop.types import Endpoint
tx = UdpSocket(Endpoint(%r, 0))
for _ in range(%d):
    tx.send_batch([bytes(%d)] * %d, Endpoint(%r, 9))
"""


def _deltas(
    prefix: str, namespaces: list[str], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    after = {ns: _snmp_ip(ns) for ns in namespaces}
    return {
        ns.removeprefix(prefix): {k: after[ns][k] - before[ns][k] for k in FRAG_COUNTERS}
        for ns in namespaces
    }


def _teardown(run: _Run) -> None:
    run.stop(list(run.procs))
    for ns in _names(run):  # all of them: a failed setup may have made some
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
    shutil.rmtree(run.work, ignore_errors=True)


def run_gso_burst(
    *, link_mtu: int, batches: int = 10, per_batch: int = 16, size: int = 1400
) -> dict[str, dict[str, int]]:
    """The fragment counters of every namespace after GSO bursts from a to b (see above)."""
    if os.geteuid() != 0:
        raise BenchError("needs root: builds network namespaces")
    run = _Run(prefix=f"ig{os.getpid() % 10000:04d}", work=Path(tempfile.mkdtemp()))
    try:
        namespaces = _setup(run, link_mtu, False)
        before = {ns: _snmp_ip(ns) for ns in namespaces}
        code = _BURST_PY % (A_UL, batches, size, per_batch, B_UL)
        run.sh([sys.executable, "-c", code], ns=run.ns_a)
        return _deltas(run.prefix, namespaces, before)
    finally:
        _teardown(run)


def run_pmtu(*, link_mtu: int, block_icmp: bool, duration_s: int) -> dict[str, Any]:
    """One run: ``{"link_mtu", "block_icmp", "mbit_s", "cpu_ms_per_gbit", "cpu_s", "rtt_ms",
    "fragments": {ns: {...}}, "coalesced", "tap_write_errors"}``, the fragment counters as
    differences over the run (the daemons' life included), ``cpu_s`` each daemon's CPU
    seconds during the measurement, the last two b's (the receiver's) TAP counters."""
    if os.geteuid() != 0:
        raise BenchError("needs root: builds network namespaces")
    work = Path(tempfile.mkdtemp(prefix="ipop-pmtu-"))
    run = _Run(prefix=f"im{os.getpid() % 10000:04d}", work=work, pings=5)
    try:
        namespaces = _setup(run, link_mtu, block_icmp)
        before = {ns: _snmp_ip(ns) for ns in namespaces}
        status: dict[str, Status] = {}
        cpu: dict[str, float] = {}
        measured = _ipop(run, duration_s, status=status, cpu=cpu)
        mbit_s, rtt_ms = measured.mbit_s, measured.rtt_ms
        fragments = _deltas(run.prefix, namespaces, before)
    finally:
        _teardown(run)
    b = status["b"]
    return {
        # b's TAP writes: segments merged into others (ipop.vnet.gro), and refused writes.
        "coalesced": b.counters.get("vnet.tap_coalesced", 0),
        "tap_write_errors": b.drops.get("vnet.tap_write_error", 0),
        "link_mtu": link_mtu,
        "block_icmp": block_icmp,
        "mbit_s": round(mbit_s, 1),
        # Both daemons' CPU per Gbit carried (iperf3's omitted first second counted as
        # carried at the same rate): steadier than throughput on a shared machine.
        "cpu_ms_per_gbit": round(1e6 * (cpu["a"] + cpu["b"]) / (mbit_s * (duration_s + 1)))
        if mbit_s > 0
        else None,
        "cpu_s": {n: round(v, 2) for n, v in cpu.items()},
        "rtt_ms": rtt_ms,
        "fragments": fragments,
        "fragments_total": sum(sum(v.values()) for v in fragments.values()),
    }


# How long the relayed path may take to be probed once data flows (a round or two).
PROBED_S = 10.0
_MTU_SAID = re.compile(r"mtu ?= ?(\d+)")
_RECEIVED = re.compile(r"(\d+) received")


def _ping_df(lab: Lab, dst: str, size: int) -> tuple[int, int | None]:
    """Three DF pings of ``size`` payload bytes from x: (replies, the MTU an ICMP 3/4 said)."""
    argv = ["ping", "-n", "-M", "do", "-s", str(size), "-c", "3", "-i", "0.3", "-W", "2", dst]
    out = lab.exec("x", argv, timeout=30).stdout
    got, said = _RECEIVED.search(out), _MTU_SAID.search(out)
    return (int(got.group(1)) if got else 0), (int(said.group(1)) if said else None)


def run_relayed(*, link_mtu: int, duration_s: int) -> dict[str, Any]:
    """One run of the relayed variant (see the module docstring): ``{"link_mtu", "path",
    "big_replies", "big_mtu_said", "said_after_s", "small_replies", "mbit_s", "fragments",
    "fragments_total"}``; the DF pings carry 1400 and 900 inner bytes, and the big ones are
    repeated (for up to :data:`PROBED_S`) until the MTU they are told is what fits the small
    hop."""
    if os.geteuid() != 0:
        raise BenchError("needs root: builds network namespaces")
    topo = topology_from_dict(
        {
            "hosts": [
                {"name": "boot", "role": "public", "ip": "203.0.113.10"},
                {"name": "x", "role": "nat", "kind": "symmetric"},
                {"name": "y", "role": "nat", "kind": "symmetric"},
            ]
        }
    )
    work = Path(tempfile.mkdtemp(prefix="ipop-rpmtu-"))
    try:
        with Lab(topo, workdir=work) as lab:
            lab.up()
            router = lab.host("y").router_ns
            assert router is not None
            netns.ip(router, "link", "set", WAN_IF, "mtu", str(link_mtu))
            netns.ip(lab.inet_ns, "link", "set", "i-y", "mtu", str(link_mtu))
            namespaces = lab.namespaces
            before = {ns: _snmp_ip(ns) for ns in namespaces}
            net = IpopNet(lab, log_level="info")
            ready = net.up_all(timeout_s=UP_TIMEOUT_S)
            y_id, y_vip = ready["y"][0].self_.node_id, str(ready["y"][0].self_.vip)

            def path() -> str | None:
                return next((p.path for p in net.status("x").peers if p.node_id == y_id), None)

            deadline = time.monotonic() + UP_TIMEOUT_S
            while _ping_df(lab, y_vip, 64)[0] == 0 or path() != "relayed":
                if time.monotonic() > deadline:
                    raise BenchError(f"x never reached y over a relay (path {path()})")
            # Until the relayed path's first probe round answers, x holds it to what its
            # first hop carries (1391 inner bytes): wait for the probed size, flushing the
            # size x's kernel learned from the earlier answer each time.
            fits = link_mtu - 28 - RELAY_OVERHEAD - DATA_MIN_BYTES - 2
            t0 = time.monotonic()
            while True:
                lab.exec("x", ["ip", "route", "flush", "cache"], timeout=10)
                big, said = _ping_df(lab, y_vip, 1400 - 28)
                if (said is not None and said <= fits) or time.monotonic() > t0 + PROBED_S:
                    break
            said_after_s = time.monotonic() - t0
            small, _ = _ping_df(lab, y_vip, 900 - 28)
            server = lab.spawn("y", ["iperf3", "-s", "-1"], log_path=work / "iperf3-s.log")
            try:
                while ":5201 " not in lab.exec("y", ["ss", "-Hltn"], timeout=10).stdout:
                    if server.poll() is not None or time.monotonic() > deadline + 10:
                        raise BenchError("iperf3 server did not start")
                    time.sleep(0.1)
                argv = ["iperf3", "-c", y_vip, "-t", str(duration_s), "-J", "-O1"]
                p = lab.exec("x", argv, timeout=duration_s + 30)
            finally:
                if server.poll() is None:  # -1: it ends after one client, unless none came
                    server.kill()
                server.wait(timeout=10)
            try:
                mbit_s = float(json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e6
            except (ValueError, KeyError, TypeError):
                mbit_s = 0.0  # a stalled stream ends with an error, not a rate
            held = path()
            fragments = _deltas(lab.prefix, namespaces, before)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "link_mtu": link_mtu,
        "path": held,
        "big_replies": big,
        "big_mtu_said": said,
        "said_after_s": round(said_after_s, 1),
        "small_replies": small,
        "mbit_s": round(mbit_s, 1),
        "fragments": fragments,
        "fragments_total": sum(sum(v.values()) for v in fragments.values()),
    }


def main_pmtu(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ipop.tools.lab.pmtu", description=__doc__)
    p.add_argument("--mtu", type=int, default=1124, help="the small link's MTU")
    p.add_argument("--duration", type=int, default=5, help="iperf3 seconds (after 1 s omitted)")
    args = p.parse_args(argv)
    try:
        for mtu, block in ((1500, False), (args.mtu, False), (args.mtu, True)):
            row = run_pmtu(link_mtu=mtu, block_icmp=block, duration_s=args.duration)
            print(json.dumps(row), flush=True)
    except BenchError as exc:
        print(f"pmtu: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main_pmtu())
