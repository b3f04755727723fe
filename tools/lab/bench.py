"""ipop-lab bench: ipop's data plane next to the underlay, tinc, wireguard-go and nebula.

Also ``python-floor`` (and ``python-floor-epoll``): :mod:`ipop.tools.bench.floor_tunnel`, the
least a Python tunnel can do per packet, so that what Python itself costs shows in the same table.

This module owns one benchmark run: two network namespaces joined by a veth (underlay
198.51.100.1/24 and .2), and for each system in turn: bring it up between the two, 20 pings
(``--pings``) at 0.05 s, one iperf3 TCP stream for ``duration_s`` seconds (first second
omitted), tear it down. The method is the one of /work/shared/reference/bench_peers.sh, so
the numbers compare with DESIGN.md §8.

Besides throughput and RTT, each row has the CPU seconds the tunnel's own processes used per
GB that iperf3 moved (user + system time of the daemons, read from /proc around the iperf3
run, over every byte of it, the omitted second included; the kernel's share of the underlay
and the TAP is not in it, for any system). ``ipop-relayed`` runs three ipopd: a third
namespace joined to each end by a veth of its own, the ends' direct UDP dropped, so the pair
keys its link through the third; ``ipop-guessed`` runs its pair behind real lab NATs (a
symmetric one and a port-restricted cone, :class:`ipop.tools.lab.lab.Lab`, beside this run's
namespaces), so that their path is a port-guessed one; ``ipop-python`` forces the pure-Python
twin of the native data path (IPOP_FASTPATH=python). ``--loss P`` drops a random P % of every
datagram each end receives on the underlay (iptables ``statistic``: this kernel has no netem),
for every system.
The match sees packets after the receiver's GRO, so a datagram train the kernel coalesced
(TCP on the underlay row; UDP where a tunnel asks for GRO, as ipop does) is lost whole.

Ground rules: every namespace name starts with a prefix unique to this process; every file
lives in one temporary directory; only the processes started here are signalled (each in its
own session, so its group is ours); the namespaces are deleted in ``finally`` whatever
happened. A system that does not come up gives an error row, never an exception.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipop.aio.control import ControlClient
from ipop.status import PeerStatus, Status
from ipop.tools.lab.ipopnet import IpopNet, NotReady
from ipop.tools.lab.lab import Lab
from ipop.tools.lab.topology import topology_from_dict

__all__ = ["SYSTEMS", "add_bench_args", "main_bench", "register", "run_bench"]

SYSTEMS = (
    *("underlay", "python-floor", "ipop", "ipop-python", "ipop-relayed", "ipop-guessed"),
    *("tinc", "wireguard-go", "nebula"),
)
A_UL = "198.51.100.1"
B_UL = "198.51.100.2"
# ipop-relayed's third namespace: one veth to each end, a /30 of the lab's other underlay range.
RELAY_A, A_RL = "203.0.113.1", "203.0.113.2"
RELAY_B, B_RL = "203.0.113.5", "203.0.113.6"
PINGS = 20
IPERF_PORT = 5201
UP_TIMEOUT_S = 30.0


class BenchError(Exception):
    """A system could not be brought up or measured (becomes an error row)."""


@dataclass(frozen=True)
class Measured:
    """One system's numbers in one run."""

    mbit_s: float
    rtt_ms: float
    # CPU seconds of the tunnel's processes per GB moved; None without a tunnel (underlay).
    cpu_s_per_gb: float | None
    # Each tunnel process's CPU seconds during the iperf3 run, by PID.
    cpu_s_by_pid: dict[int, float] = field(default_factory=dict)


@dataclass
class _Run:
    """One benchmark topology: namespaces, temp dir and the processes started in them."""

    prefix: str
    work: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    iperf_port: int = IPERF_PORT
    pings: int = PINGS
    loss_pct: float = 0.0

    @property
    def ns_a(self) -> str:
        return self.prefix + "a"

    @property
    def ns_b(self) -> str:
        return self.prefix + "b"

    @property
    def ns_relay(self) -> str:
        return self.prefix + "r"

    def sh(self, argv: Sequence[str], *, ns: str | None = None, timeout: float = 30.0) -> str:
        full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
        p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(argv[:3])}: {(p.stderr or p.stdout).strip()[:200]}")
        return p.stdout

    def spawn(
        self, ns: str, argv: Sequence[str], log_name: str, *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``ns`` (``env`` added to ours), its output in ``log_name``."""
        with open(self.work / log_name, "wb") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.work,
                env={**os.environ, **env} if env else None,
            )
        self.procs.append(proc)
        return proc

    def stop(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        """Stop processes we started: SIGTERM to their own group, SIGKILL after 3 s."""
        for proc in procs:
            if proc.poll() is None:
                _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for proc in procs:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            if proc in self.procs:
                self.procs.remove(proc)

    def log(self, name: str) -> str:
        path = self.work / name
        return path.read_text(errors="replace") if path.exists() else ""


def _killpg(pid: int, sig: signal.Signals) -> None:
    # The group id is the pid: start_new_session made each process lead its own group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _wait(cond: Callable[[], bool], timeout_s: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise BenchError(f"{what} not within {timeout_s:.0f} s")


def _pings_ok(run: _Run, dst: str) -> bool:
    return _pings_ok_in(run.ns_a, dst)


def _pings_ok_in(ns: str, dst: str) -> bool:
    p = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c1", "-W1", dst],
        capture_output=True,
        timeout=5,
        check=False,
    )
    return p.returncode == 0


# ---------------------------------------------------------------- topology


def _setup(run: _Run) -> None:
    a, b = run.ns_a, run.ns_b
    for ns in (a, b):
        run.sh(["ip", "netns", "add", ns])
        run.sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    va, vb = run.prefix + "va", run.prefix + "vb"
    run.sh(["ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b])
    for ns, ifc, addr in ((a, va, A_UL), (b, vb, B_UL)):
        run.sh(["ip", "-n", ns, "link", "set", ifc, "name", "ul0"])
        run.sh(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "ul0"])
        run.sh(["ip", "-n", ns, "link", "set", "ul0", "up"])
        if run.loss_pct > 0:
            run.sh(_loss_rule("-A", run.loss_pct), ns=ns)


def _loss_rule(op: str, pct: float, *, ifc: str = "ul0") -> list[str]:
    """iptables: drop ``pct`` % of what arrives on the underlay, at random (both ends have
    it, so each direction loses ``pct`` %)."""
    return [
        *("iptables", op, "INPUT", "-i", ifc, "-m", "statistic"),
        *("--mode", "random", "--probability", f"{pct / 100:.4f}", "-j", "DROP"),
    ]


def _teardown(run: _Run) -> None:
    run.stop(list(run.procs))
    for ns in (run.ns_a, run.ns_b, run.ns_relay):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


# ---------------------------------------------------------------- measurement


def _measure(
    run: _Run,
    dst: str,
    duration_s: int,
    *,
    ends: tuple[str, str] | None = None,
    tunnel: list[int] | None = None,
) -> Measured:
    """One iperf3 TCP stream's Mbit/s, the average ping RTT in ms from A to ``dst``, and the
    CPU per GB of the processes running when it starts (the system's own). ``ends``: the
    client's and the server's namespaces when not A and B; ``tunnel``: the tunnel's PIDs when
    they are not ``run``'s processes."""
    client_ns, server_ns = ends or (run.ns_a, run.ns_b)
    if tunnel is None:
        tunnel = [p.pid for p in run.procs if p.poll() is None]
    ping = ["ping", "-c", str(run.pings), "-i", "0.05", "-W", "1", "-q", dst]
    out = subprocess.run(
        ["ip", "netns", "exec", client_ns, *ping],
        capture_output=True,
        text=True,
        timeout=30 + run.pings * 0.1,
        check=False,
    ).stdout
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    rtt = float(m.group(1)) if m else float("nan")
    # A fresh one-off server per measurement: a server whose last client vanished with its
    # tunnel stays "busy running a test" for minutes.
    run.iperf_port += 1
    port = str(run.iperf_port)
    server = run.spawn(server_ns, ["iperf3", "-s", "-1", "-p", port], f"iperf3-s-{port}.log")
    try:
        _wait(lambda: f":{port} " in run.sh(["ss", "-Hltn"], ns=server_ns), 10, "iperf3 server")
        before = {pid: _cpu_s(pid) for pid in tunnel}
        bps, moved = _iperf(client_ns, dst, port, duration_s)
        used = {pid: _cpu_s(pid) - t0 for pid, t0 in before.items()}
    finally:
        run.stop([server])
    cpu = sum(used.values())
    per_gb = round(cpu / (moved / 1e9), 3) if tunnel and moved > 0 else None
    return Measured(bps / 1e6, rtt, per_gb, used)


def _iperf(client_ns: str, dst: str, port: str, duration_s: int) -> tuple[float, float]:
    """(bits per second received after the omitted second, bytes sent in all)."""
    p = subprocess.run(
        [
            *("ip", "netns", "exec", client_ns),
            "iperf3",
            "-c",
            dst,
            "-p",
            port,
            "-t",
            str(duration_s),
            "-J",
            "-O1",
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 30,
        check=False,
    )
    try:
        doc = json.loads(p.stdout)
        bps = float(doc["end"]["sum_received"]["bits_per_second"])
        moved = float(sum(i["sum"]["bytes"] for i in doc["intervals"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"iperf3 failed: {(p.stdout + p.stderr).strip()[-200:]}") from exc
    return bps, moved


# ---------------------------------------------------------------- systems


def _underlay(run: _Run, duration_s: int) -> Measured:
    return _measure(run, B_UL, duration_s)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ipop(
    run: _Run,
    duration_s: int,
    *,
    relayed: bool = False,
    fastpath: str = "auto",
    status: dict[str, Status] | None = None,
    cpu: dict[str, float] | None = None,
) -> Measured:
    """ipopd on both ends (and, ``relayed``, on a third namespace that has to carry their
    link: see the module docstring); the relayed pair must report a relayed path.
    ``fastpath``: IPOP_FASTPATH for the daemons (``python`` forces the pure-Python twin of
    the native data path). ``status``, if given, gets each end's status after the
    measurement (keys ``a``, ``b``), ``cpu`` the CPU seconds each end used during the iperf3 run."""
    d = Path(tempfile.mkdtemp(prefix="ipop-", dir=run.work))
    home = d / "home"

    def cfg(*args: str) -> None:
        p = subprocess.run(
            [sys.executable, "-m", "ipop.tools.config_cli", "--home", str(home), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if p.returncode != 0:
            raise BenchError(f"config_cli {args[0]}: {p.stderr.strip()[-200:]}")

    nodes = [("a", run.ns_a), ("b", run.ns_b)]
    if relayed:
        _relay_topology(run)
        nodes.insert(0, ("r", run.ns_relay))
        boot = ["--bootstrap", f"{RELAY_A}:5800", "--bootstrap", f"{RELAY_B}:5800"]
    else:
        boot = ["--bootstrap", f"{A_UL}:5800"]
    cfg("init", "benchnet", "--subnet", "100.64.0.0/10", *boot)
    procs = []
    for n, ns in nodes:
        cfg("node", "benchnet", n, "--hostname", f"bench{n}", "--out", str(d / f"{n}.bundle.toml"))
        (d / f"{n}.toml").write_text(
            f'bundle = "{n}.bundle.toml"\nstate_dir = "state{n}"\nlisten = "0.0.0.0:5800"\n'
            f'log_level = "info"\n[control]\nsocket = "{d / n}.sock"\n'
        )
        argv = [sys.executable, "-m", "ipop.tools.ipopd"]
        conf = ["--config", str(d / f"{n}.toml")]
        env = {"IPOP_FASTPATH": fastpath}
        procs.append(run.spawn(ns, [*argv, *conf], f"ipop-{n}.log", env=env))
    try:
        vips: dict[str, str] = {}

        def ready() -> bool:
            for (n, _), proc in zip(nodes, procs, strict=True):
                if proc.poll() is not None:
                    raise BenchError(f"ipopd {n} exited: {run.log(f'ipop-{n}.log')[-300:]}")
                m = re.search(r"event=ready vip=([\d.]+)", run.log(f"ipop-{n}.log"))
                if m:
                    vips[n] = m.group(1)
            return len(vips) == len(nodes)

        _wait(ready, UP_TIMEOUT_S, "ipopd ready")
        _wait(lambda: _pings_ok(run, vips["b"]), UP_TIMEOUT_S, "ping over ipop", 0.3)
        # The first packets go over the ring while the shortcut comes up: warm up first.
        _pings_ok(run, vips["b"])
        if relayed:
            # Only a relayed link counts: a pair routed over the overlay would be measured
            # through the same third node, on another code path.
            _wait(lambda: _path(d / "a.sock", vips["b"]) == "relayed", 10, "relayed link")
        measured = _measure(run, vips["b"], duration_s)
        if relayed and _path(d / "a.sock", vips["b"]) != "relayed":
            raise BenchError("the pair did not stay relayed during the measurement")
        if cpu is not None:
            ends = zip(nodes, procs, strict=True)
            cpu.update({n: measured.cpu_s_by_pid[p.pid] for (n, _), p in ends if n in "ab"})
        if status is not None:
            status.update({n: ControlClient(d / f"{n}.sock").status() for n in "ab"})
        return measured
    finally:
        run.stop(procs)


def _path(sock: Path, vip: str) -> str | None:
    """The path kind ``ipop status`` on ``sock`` reports for the peer holding ``vip``."""
    peer = _peer(ControlClient(sock).status().peers, vip)
    return None if peer is None else peer.path


def _relay_topology(run: _Run) -> None:
    """A third namespace with a veth to each end (its own /30 on each); the ends' UDP to
    each other's underlay address is dropped, and neither routes to the other's /30: only the
    third node reaches both."""
    r = run.ns_relay
    run.sh(["ip", "netns", "add", r])
    run.sh(["ip", "-n", r, "link", "set", "lo", "up"])
    ends = ((run.ns_a, A_RL, RELAY_A, B_UL, "ra"), (run.ns_b, B_RL, RELAY_B, A_UL, "rb"))
    for ns, end_ip, relay_ip, other_ul, tag in ends:
        ve, vr = run.prefix + tag + "e", run.prefix + tag + "r"
        run.sh(
            ["ip", "link", "add", ve, "netns", ns, "type", "veth", "peer", "name", vr, "netns", r]
        )
        for where, ifc, addr in ((ns, ve, end_ip), (r, vr, relay_ip)):
            run.sh(["ip", "-n", where, "addr", "add", f"{addr}/30", "dev", ifc])
            run.sh(["ip", "-n", where, "link", "set", ifc, "up"])
        run.sh(["iptables", "-A", "OUTPUT", "-p", "udp", "-d", other_ul, "-j", "DROP"], ns=ns)
        if run.loss_pct > 0:
            run.sh(_loss_rule("-A", run.loss_pct, ifc=ve), ns=ns)


def _ipop_python(run: _Run, duration_s: int) -> Measured:
    return _ipop(run, duration_s, fastpath="python")


def _ipop_relayed(run: _Run, duration_s: int) -> Measured:
    try:
        return _ipop(run, duration_s, relayed=True)
    finally:
        for ns, other in ((run.ns_a, B_UL), (run.ns_b, A_UL)):
            drop = ["iptables", "-D", "OUTPUT", "-p", "udp", "-d", other, "-j", "DROP"]
            subprocess.run(["ip", "netns", "exec", ns, *drop], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", run.ns_relay], capture_output=True, check=False)


def _ipop_guessed(run: _Run, duration_s: int) -> Measured:
    """ipopd on ``x`` behind a symmetric NAT and ``y`` behind a port-restricted cone, with a
    public bootstrap: plain punching cannot link them, port guessing can (ipop.nat.portguess).
    Built by ipop-lab (:class:`Lab`, real NAT rules) beside this run's own namespaces; the pair
    must hold a port-guessed path (a punching socket's, ``endpoint`` ``addr:port#socket``) before
    and after the measurement."""
    topo = topology_from_dict(
        {
            "hosts": [
                {"name": "boot", "role": "public", "ip": "203.0.113.10"},
                {"name": "x", "role": "nat", "kind": "symmetric"},
                {"name": "y", "role": "nat", "kind": "port-restricted-cone"},
            ]
        }
    )
    with Lab(topo, workdir=run.work / "guessed") as lab:
        lab.up()
        x, y = lab.host("x"), lab.host("y")
        if run.loss_pct > 0:
            for h in (x, y):
                run.sh(_loss_rule("-A", run.loss_pct, ifc="eth0"), ns=h.ns)
        net = IpopNet(lab, log_level="warning")
        try:
            ready = net.up_all(timeout_s=UP_TIMEOUT_S)
        except NotReady as exc:
            raise BenchError(f"ipopd not ready: {exc}") from exc
        y_vip = str(ready["y"][0].self_.vip)

        def guessed() -> bool:
            # Traffic over the relay or the ring is what starts port guessing.
            _pings_ok_in(x.ns, y_vip)
            return _guessed(net.status("x").peers, y_vip)

        _wait(guessed, UP_TIMEOUT_S, "a port-guessed path", 0.3)
        pids = [p.pid for p in lab.processes if p.host in ("x", "y") and p.alive()]
        measured = _measure(run, y_vip, duration_s, ends=(x.ns, y.ns), tunnel=pids)
        if not _guessed(net.status("x").peers, y_vip):
            raise BenchError("the pair did not keep its port-guessed path during the measurement")
        return measured


def _peer(peers: Sequence[PeerStatus], vip: str) -> PeerStatus | None:
    return next((p for p in peers if p.vip == vip), None)


def _guessed(peers: Sequence[PeerStatus], vip: str) -> bool:
    """Whether the peer holding ``vip`` is on a punching socket's path (``addr:port#i``)."""
    peer = _peer(peers, vip)
    return peer is not None and "#" in (peer.endpoint or "")


def _python_floor(run: _Run, duration_s: int, *, loop: str = "asyncio") -> Measured:
    """ipop.tools.bench.floor_tunnel on both ends: what Python itself costs per packet."""
    procs = []
    tun = run.prefix + "fl"
    ends = (("a", run.ns_a, "100.64.2.1", B_UL), ("b", run.ns_b, "100.64.2.2", A_UL))
    for n, ns, vpn, peer in ends:
        argv = [
            sys.executable, "-m", "ipop.tools.bench.floor_tunnel", "--tun", tun,
            "--addr", f"{vpn}/24", "--peer", f"{peer}:7000", "--loop", loop,
            "--max-seconds", str(duration_s + 120),
        ]  # fmt: skip
        procs.append(run.spawn(ns, argv, f"floor-{loop}-{n}.log"))
    try:
        _wait(lambda: _pings_ok(run, "100.64.2.2"), UP_TIMEOUT_S, "ping over the floor tunnel", 0.3)
        return _measure(run, "100.64.2.2", duration_s)
    finally:
        run.stop(procs)


def _python_floor_epoll(run: _Run, duration_s: int) -> Measured:
    return _python_floor(run, duration_s, loop="epoll")


def _tinc(run: _Run, duration_s: int) -> Measured:
    if shutil.which("tincd") is None:
        raise BenchError("tincd not installed")
    procs = []
    top = Path(tempfile.mkdtemp(prefix="tinc-", dir=run.work))
    for n, ul, vpn, peer in (("a", A_UL, "100.64.1.1", "b"), ("b", B_UL, "100.64.1.2", "")):
        d = top / n
        (d / "hosts").mkdir(parents=True)
        conf = f"Name = {n}\nMode = router\nInterface = {run.prefix}tc\nAddressFamily = ipv4\n"
        conf += "Port = 655\n" + (f"ConnectTo = {peer}\n" if peer else "")
        (d / "tinc.conf").write_text(conf)
        (d / "hosts" / n).write_text(f"Address = {ul}\nPort = 655\nSubnet = {vpn}/32\n")
        up = d / "tinc-up"
        up.write_text(
            f'#!/bin/sh\nip addr add {vpn}/24 dev "$INTERFACE"\nip link set "$INTERFACE" up\n'
        )
        up.chmod(0o755)
        run.sh(["tincd", "-c", str(d), "-K", "2048"], timeout=60)
    ta, tb = top / "a", top / "b"
    shutil.copy(ta / "hosts" / "a", tb / "hosts" / "a")
    shutil.copy(tb / "hosts" / "b", ta / "hosts" / "b")
    for n, ns, d in (("a", run.ns_a, ta), ("b", run.ns_b, tb)):
        argv = ["tincd", "-c", str(d), "-D", "-d1", f"--pidfile={d}/pid", f"--logfile={d}/log"]
        procs.append(run.spawn(ns, argv, f"tinc-{n}.log"))
    try:
        _wait(lambda: _pings_ok(run, "100.64.1.2"), UP_TIMEOUT_S, "ping over tinc", 0.3)
        time.sleep(1.0)  # not synchronisation: lets tinc switch from TCP to UDP (as the ref)
        return _measure(run, "100.64.1.2", duration_s)
    finally:
        run.stop(procs)


def _wireguard_go(run: _Run, duration_s: int) -> Measured:
    if shutil.which("wireguard-go") is None or shutil.which("wg") is None:
        raise BenchError("wireguard-go or wg not installed")
    d = Path(tempfile.mkdtemp(prefix="wg-", dir=run.work))
    keys = {}
    for n in "ab":
        priv = run.sh(["wg", "genkey"]).strip()
        (d / f"{n}.key").write_text(priv + "\n")
        p = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True)
        keys[n] = p.stdout.strip()
    # Two daemons share /var/run/wireguard/: interface names must differ (and be ours).
    names = {"a": run.prefix + "wa", "b": run.prefix + "wb"}
    socks = [Path(f"/var/run/wireguard/{names[n]}.sock") for n in "ab"]
    procs = [
        run.spawn(run.ns_a, ["wireguard-go", "-f", names["a"]], "wg-a.log"),
        run.spawn(run.ns_b, ["wireguard-go", "-f", names["b"]], "wg-b.log"),
    ]
    try:
        _wait(lambda: all(s.exists() for s in socks), 10, "wireguard-go sockets")
        for n, ns, other, peer_ul, vpn, peer_vpn in (
            ("a", run.ns_a, "b", B_UL, "100.64.0.1", "100.64.0.2"),
            ("b", run.ns_b, "a", A_UL, "100.64.0.2", "100.64.0.1"),
        ):
            ifc = names[n]
            run.sh(
                [
                    *("wg", "set", ifc, "listen-port", "51820"),
                    *("private-key", str(d / f"{n}.key"), "peer", keys[other]),
                    *("allowed-ips", f"{peer_vpn}/32", "endpoint", f"{peer_ul}:51820"),
                ],
                ns=ns,
            )
            run.sh(["ip", "addr", "add", f"{vpn}/24", "dev", ifc], ns=ns)
            run.sh(["ip", "link", "set", ifc, "mtu", "1420", "up"], ns=ns)
        _wait(lambda: _pings_ok(run, "100.64.0.2"), UP_TIMEOUT_S, "ping over wireguard-go", 0.3)
        return _measure(run, "100.64.0.2", duration_s)
    finally:
        run.stop(procs)
        for s in socks:
            s.unlink(missing_ok=True)


def _nebula(run: _Run, duration_s: int) -> Measured:
    if shutil.which("nebula") is None or shutil.which("nebula-cert") is None:
        raise BenchError("nebula or nebula-cert not installed")
    d = Path(tempfile.mkdtemp(prefix="nebula-", dir=run.work))
    run.sh(
        [
            *("nebula-cert", "ca", "-name", "benchnet"),
            *("-out-crt", f"{d}/ca.crt", "-out-key", f"{d}/ca.key"),
        ]
    )
    for n, ip in (("a", "100.64.2.1/24"), ("b", "100.64.2.2/24")):
        run.sh(
            [
                *("nebula-cert", "sign", "-ca-crt", f"{d}/ca.crt", "-ca-key", f"{d}/ca.key"),
                *("-name", n, "-ip", ip, "-out-crt", f"{d}/{n}.crt", "-out-key", f"{d}/{n}.key"),
            ]
        )
        lh = "true" if n == "a" else "false"
        hosts = "[]" if n == "a" else '["100.64.2.1"]'
        (d / f"{n}.yml").write_text(
            f"pki: {{ca: {d}/ca.crt, cert: {d}/{n}.crt, key: {d}/{n}.key}}\n"
            f'static_host_map:\n  "100.64.2.1": ["{A_UL}:4242"]\n  "100.64.2.2": ["{B_UL}:4242"]\n'
            f"lighthouse:\n  am_lighthouse: {lh}\n  interval: 60\n  hosts: {hosts}\n"
            "listen: {host: 0.0.0.0, port: 4242}\npunchy: {punch: true}\n"
            f"tun: {{disabled: false, dev: {run.prefix}nb, drop_local_broadcast: false, "
            "drop_multicast: false, tx_queue: 500, mtu: 1300}\n"
            "logging: {level: info, format: text}\n"
            "firewall:\n  conntrack: {tcp_timeout: 12m, udp_timeout: 3m, default_timeout: 10m}\n"
            "  outbound: [{port: any, proto: any, host: any}]\n"
            "  inbound: [{port: any, proto: any, host: any}]\n"
        )
    procs = [
        run.spawn(run.ns_a, ["nebula", "-config", f"{d}/a.yml"], "nebula-a.log"),
        run.spawn(run.ns_b, ["nebula", "-config", f"{d}/b.yml"], "nebula-b.log"),
    ]
    try:
        _wait(lambda: _pings_ok(run, "100.64.2.2"), UP_TIMEOUT_S, "ping over nebula", 0.3)
        return _measure(run, "100.64.2.2", duration_s)
    finally:
        run.stop(procs)


_RUNNERS: dict[str, Callable[[_Run, int], Measured]] = {
    "underlay": _underlay,
    "python-floor": _python_floor,
    "python-floor-epoll": _python_floor_epoll,
    "ipop": _ipop,
    "ipop-python": _ipop_python,
    "ipop-relayed": _ipop_relayed,
    "ipop-guessed": _ipop_guessed,
    "tinc": _tinc,
    "wireguard-go": _wireguard_go,
    "nebula": _nebula,
}


# ---------------------------------------------------------------- API


def run_bench(
    *,
    systems: list[str],
    duration_s: int,
    runs: int,
    json_out: bool,
    pings: int = PINGS,
    loss_pct: float = 0.0,
) -> dict[str, Any]:
    """Measure ``systems`` ``runs`` times each on one fresh topology per run.

    Returns ``{"loss_pct": P, "results": [{"system", "mbit_s", "rtt_ms", "cpu_s_per_gb"} |
    {..., "error"}]}`` with the median over runs (and every run's values under ``"runs"``);
    prints the table unless ``json_out``.
    """
    if os.geteuid() != 0:
        raise BenchError("needs root: builds network namespaces")
    unknown = [s for s in systems if s not in _RUNNERS]
    if unknown:
        raise BenchError(f"unknown systems {unknown}; choose from {', '.join(_RUNNERS)}")
    if not 0.0 <= loss_pct < 100.0:
        raise BenchError(f"--loss {loss_pct}: give a percentage from 0 to below 100, e.g. 1")
    per: dict[str, list[Measured]] = {s: [] for s in systems}
    errors: dict[str, str] = {}
    for i in range(runs):
        work = Path(tempfile.mkdtemp(prefix="ipop-bench-"))
        run = _Run(
            prefix=f"ib{os.getpid() % 10000:04d}{i % 10}", work=work, pings=pings, loss_pct=loss_pct
        )
        try:
            _setup(run)
            for s in systems:
                try:
                    result = _RUNNERS[s](run, duration_s)
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    got = errors[s] = f"run {i + 1}: {exc}"
                else:
                    per[s].append(result)
                    got = f"{result.mbit_s:.1f} Mbit/s, rtt {result.rtt_ms:.3f} ms"
                    if result.cpu_s_per_gb is not None:
                        got += f", {result.cpu_s_per_gb:.2f} CPU s/GB"
                if not json_out:
                    print(f"run {i + 1}/{runs} {s}: {got}", file=sys.stderr)
        finally:
            _teardown(run)
            shutil.rmtree(work, ignore_errors=True)
    results: list[dict[str, Any]] = []
    for s in systems:
        vals = per[s]
        if not vals:
            row: dict[str, Any] = {"system": s, "mbit_s": None, "rtt_ms": None}
            results.append({**row, "cpu_s_per_gb": None, "error": errors[s]})
            continue
        cpu = [v.cpu_s_per_gb for v in vals if v.cpu_s_per_gb is not None]
        row = {
            "system": s,
            "mbit_s": round(statistics.median(v.mbit_s for v in vals), 1),
            "rtt_ms": round(statistics.median(v.rtt_ms for v in vals), 3),
            "cpu_s_per_gb": round(statistics.median(cpu), 3) if cpu else None,
            "runs": [
                {"mbit_s": round(v.mbit_s, 1), "rtt_ms": v.rtt_ms, "cpu_s_per_gb": v.cpu_s_per_gb}
                for v in vals
            ],
        }
        if s in errors:
            row["error"] = errors[s]
        results.append(row)
    report = {"loss_pct": loss_pct, "results": results}
    if not json_out:
        print(format_table(report, duration_s=duration_s, runs=runs, pings=pings))
    return report


def format_table(report: dict[str, Any], *, duration_s: int, runs: int, pings: int = PINGS) -> str:
    loss = report.get("loss_pct") or 0.0
    lines = [
        f"iperf3 TCP 1 stream {duration_s} s (+1 s omitted), {pings} pings @ 50 ms; "
        f"median of {runs} run(s)" + (f"; {loss:g} % underlay loss each way" if loss else ""),
        f"{'system':<18} {'Mbit/s':>9} {'rtt ms':>8} {'CPU s/GB':>9}  per run",
    ]
    for r in report["results"]:
        if r["mbit_s"] is None:
            lines.append(f"{r['system']:<18} {'error':>9} {'':>8} {'':>9}  {r['error']}")
            continue
        each = " / ".join(f"{x['mbit_s']:.0f}" for x in r["runs"])
        cpu = "-" if r["cpu_s_per_gb"] is None else f"{r['cpu_s_per_gb']:.2f}"
        lines.append(f"{r['system']:<18} {r['mbit_s']:>9.1f} {r['rtt_ms']:>8.3f} {cpu:>9}  {each}")
    return "\n".join(lines)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main_bench(args: argparse.Namespace) -> int:
    systems = [s for s in str(args.systems).replace(",", " ").split() if s]
    # SIGTERM unwinds like Ctrl-C, so run_bench's finally still tears the namespaces down.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = run_bench(
            systems=systems,
            duration_s=int(args.duration),
            runs=int(args.runs),
            json_out=args.json,
            pings=int(args.pings),
            loss_pct=float(args.loss),
        )
    except BenchError as exc:
        print(f"ipop-lab bench: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Registrar for :data:`ipop.tools.lab.main.EXTRA_COMMANDS` (adds ``bench``)."""
    p = sub.add_parser("bench", parents=[common], help="throughput/RTT vs tinc, wg-go, nebula")
    add_bench_args(p)
    p.set_defaults(func=main_bench)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """The bench's options, on ``ipop-lab bench``'s parser or this module's own."""
    p.add_argument("--systems", default=" ".join(SYSTEMS), help="space/comma separated")
    p.add_argument("--duration", type=int, default=5, help="iperf3 seconds (after 1 s omitted)")
    p.add_argument("--runs", type=int, default=1)
    # The average of 20 pings swings with one scheduling hiccup on a shared machine.
    p.add_argument("--pings", type=int, default=PINGS, help="pings per system and run, @ 50 ms")
    p.add_argument(
        "--loss", type=float, default=0.0, help="random underlay loss in %% each way (e.g. 1)"
    )
    p.add_argument("--json", action="store_true", help='print {"results": [...]}')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="ipop-lab bench")
    add_bench_args(parser)
    sys.exit(main_bench(parser.parse_args()))
