"""One way for lab tests to hold a network of running daemons: built, every daemon ready, and
always torn down (namespaces, processes, stale leftovers of this prefix) (:func:`running_net`,
:func:`start_daemons` for a test that owns its lab); and what the tests
that time an outage with ``ping`` share (:func:`peer_path`, :func:`wait_for`,
:func:`make_direct`, :func:`outage_around`); and the attack tests' :data:`LISTENER`."""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv4Network
from pathlib import Path

from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.lab import Lab, cleanup_stale, process_prefix
from ipop.tools.lab.topology import Topology, topology_from_dict

# Counts datagrams carrying the marker on the victim's vIP, port 9, for a bounded time.
LISTENER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9))
s.settimeout(0.2)
n, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data = s.recv(2048)
    except socket.timeout:
        continue
    n += sys.argv[3].encode() in data
open(sys.argv[4], "w").write(str(n))
"""


def start_daemons(
    lab: Lab,
    *,
    ready_s: float,
    addressing: dict[str, str] | None = None,
    hosts: Iterable[str] | None = None,
    metrics: bool = False,
    web: bool = False,
    overlay: str | None = None,
    overlay_only: Iterable[str] = (),
    networks: dict[str, str] | None = None,
    also: dict[str, tuple[str, ...]] | None = None,
    subnets: dict[str, IPv4Network] | None = None,
    suffixes: dict[str, str] | None = None,
) -> IpopNet:
    """Configure every host of ``lab`` (``addressing``: host -> "dhcp"; ``metrics``: each
    daemon serves them on ipopnet.METRICS_LISTEN; ``web``: its status page on
    ipopnet.WEB_LISTEN), start the daemons of ``hosts`` in that order (default: all, the
    bootstrap first) and wait until each holds its virtual IP (``overlay_only`` hosts: until
    each has joined the ring)."""
    ipop = IpopNet(
        lab,
        metrics=metrics,
        web=web,
        overlay=overlay,
        overlay_only=tuple(overlay_only),
        networks=networks,
        also=also,
        subnets=subnets,
        suffixes=suffixes,
    )
    ipop.prepare(addressing=addressing)
    if hosts is None:
        ipop.start_all()
        names = [h.name for h in lab.hosts]
    else:
        names = list(hosts)
        for name in names:
            ipop.start(name)
    for name in names:
        ipop.wait_ready(name, timeout_s=ready_s)
    return ipop


@contextlib.contextmanager
def running_net(
    topology: Topology,
    workdir: Path,
    *,
    prefix_tag: str,
    ready_s: float,
    addressing: dict[str, str] | None = None,
    hosts: Iterable[str] | None = None,
    metrics: bool = False,
    web: bool = False,
    overlay: str | None = None,
    overlay_only: Iterable[str] = (),
    networks: dict[str, str] | None = None,
    also: dict[str, tuple[str, ...]] | None = None,
    subnets: dict[str, IPv4Network] | None = None,
    suffixes: dict[str, str] | None = None,
) -> Iterator[IpopNet]:
    """Build ``topology`` and :func:`start_daemons` on it; tear all of it down afterwards."""
    prefix = process_prefix(prefix_tag)
    lab = Lab(topology, workdir=workdir, prefix=prefix)
    try:
        lab.up()
        yield start_daemons(
            lab,
            ready_s=ready_s,
            addressing=addressing,
            hosts=hosts,
            metrics=metrics,
            web=web,
            overlay=overlay,
            overlay_only=overlay_only,
            networks=networks,
            also=also,
            subnets=subnets,
            suffixes=suffixes,
        )
    finally:
        lab.down()
        cleanup_stale(prefix)


def ping_ok(
    net: IpopNet,
    src: str,
    target: str,
    tries: int = 3,
    *,
    timeout_s: float = 10.0,
    interface: str | None = None,
) -> str:
    """``ping -c 1`` from ``src`` to ``target`` until one answers (its output), at most
    ``tries`` times (each within ``timeout_s``); AssertionError with the last output otherwise.
    ``interface``: out of that one (``ping -I``)."""
    out = ""
    via = ["-I", interface] if interface is not None else []
    for _ in range(tries):
        res = net.lab.exec(src, ["ping", "-c", "1", "-W", "2", *via, target], timeout=timeout_s)
        out = res.stdout + res.stderr
        if res.returncode == 0:
            return out
    raise AssertionError(f"{src} -> {target} failed: {out}")


def peer_path(net: IpopNet, host: str, vip: str) -> tuple[str, str | None]:
    """How ``host`` reaches the peer holding ``vip``: (path kind, endpoint), ("none", None)."""
    for p in net.status(host).peers:
        if p.vip == vip:
            return p.path, p.endpoint
    return "none", None


def wait_for(cond: Callable[[], bool], deadline_s: float) -> bool:
    """True as soon as ``cond()`` holds (polled every 0.2 s), False after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return False


def make_direct(net: IpopNet, a: str, b: str, deadline_s: float = 20.0) -> tuple[str, str]:
    """Ping ``b`` from ``a`` until both hold a direct path to the other (the pings make the
    shortcut); return their virtual IPs."""
    a_vip, b_vip = net.status(a).self_.vip, net.status(b).self_.vip
    assert a_vip is not None and b_vip is not None
    # A deadline, not a count: answered pings return at once, and a shortcut that waits out a
    # punch or a relay's hand-over takes seconds, not twenty round trips.
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        net.lab.exec(a, ["ping", "-c", "1", "-W", "1", b_vip], timeout=5)
        if peer_path(net, a, b_vip)[0] == "direct" and peer_path(net, b, a_vip)[0] == "direct":
            break
        time.sleep(0.2)  # paces the pings; the loop's exit is the condition above
    assert peer_path(net, b, a_vip)[0] == "direct", net.status(b).peers
    assert peer_path(net, a, b_vip)[0] == "direct", net.status(a).peers
    return a_vip, b_vip


def outage_around(
    net: IpopNet,
    src: str,
    vip: str,
    fault: Callable[[], None],
    *,
    every_s: float,
    pings: int,
    answered_first: int = 5,
) -> tuple[float, list[int], str]:
    """Ping ``vip`` from ``src`` (``ping -n -O``, ``pings`` of them ``every_s`` apart); once
    ``answered_first`` are answered, run ``fault``. Returns the longest run of unanswered
    pings after the first answer, in seconds (the outage), the answered sequence numbers,
    and the log."""
    lab = net.lab
    log = lab.workdir / f"ping-{src}-{vip}.log"
    argv = ["ping", "-n", "-O", "-i", str(every_s), "-W", "1", "-c", str(pings), vip]
    ping = lab.spawn(src, argv, log_path=log)
    try:
        flowing = wait_for(
            lambda: log.exists() and log.read_text().count("bytes from") >= answered_first,
            15 + answered_first * every_s,
        )
        assert flowing, log.read_text() if log.exists() else "no ping log"
        fault()
        ping.wait(timeout=pings * every_s + 15)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    text = log.read_text()
    answered = sorted({int(m) for m in re.findall(r"bytes from .*icmp_seq=(\d+)", text)})
    gaps = [b - a - 1 for a, b in itertools.pairwise(answered)]
    return max(gaps, default=0) * every_s, answered, text


def shared_overlay_topology(overlay_only: Iterable[str], nat_hosts: dict[str, str]) -> Topology:
    """Public overlay-only bootstraps (203.0.113.10, .11, ...) and hosts behind NATs of the
    given kinds (host -> kind): the shared-overlay labs' topology."""
    public = [
        {"name": name, "role": "public", "ip": f"203.0.113.{10 + i}"}
        for i, name in enumerate(overlay_only)
    ]
    nat = [{"name": name, "role": "nat", "kind": kind} for name, kind in nat_hosts.items()]
    return topology_from_dict({"bootstraps": len(public), "hosts": [*public, *nat]})
