"""``ipop-lab soak``: a large lab churned for M minutes, every live pair swept by name.

This module owns the soak's fault schedule, its rounds and its report; the sweeps and the
cold-start probe it measures with are :mod:`ipop.tools.lab.sweep`. Theory of operation:

- Build the lab (``--nodes 30`` by default: a generated topology with several hosts per NAT,
  two bootstraps and two router clusters), start every daemon and DHCP client, wait for all.
- Sweep at t = 0, then every ``sweep_every_s``. Before each later sweep one *churn round*:
  ``kill -9`` of ``kills`` random daemons, restarted ``RESTART_AFTER_S`` later (their vIP
  before and after is recorded: ``vips_kept``); one host re-addressed on its own interface
  (a public host to a new underlay address, a host behind a NAT to a new LAN address: the
  NAT then maps it anew); one NAT router's conntrack table flushed (every mapping rebinds:
  a netlink flush, no ``conntrack`` binary needed); on the first round one daemon is stopped
  (SIGSTOP) and continued ``pause_s`` later; on the first round past half time the bootstraps
  stop for good. After the round, each faulted host probes a few peers (and they it) every
  ``PROBE_GAP_S`` until all answer: ``recover_s`` per fault.
- A sweep runs, in every live source namespace at once (``workers`` at a time, each bounded
  by ``SWEEP_TIMEOUT_S``), a small script that resolves every other live node's name (the
  routers' own names too: they answer pings, though they are no source) with
  the system resolver (timed: the DNS answer latencies) and pings it once by name with the
  system ``ping`` (a second try after a miss: the first packet may wait for a lookup). A sweep
  starting within ``recovery_s`` of the last fault is marked ``recovering``.
- RSS and CPU of each daemon come from ``/proc/<pid>`` of the PIDs the lab spawned, sampled
  at every sweep; ``rss_growth`` is the largest relative growth of a daemon that ran through
  two or more sweeps without a restart (first sample after the t = 0 sweep).

Only our PIDs are ever signalled (``Lab.signal``), every wait has a deadline, and the lab is
torn down in ``finally`` (a stopped daemon is continued first so it can exit). Progress goes to
stderr; the report (text or ``--json``) to stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ipop.aio.control import ControlError
from ipop.tools.lab.ipopnet import IpopNet, NotReady
from ipop.tools.lab.lab import HOST_IF, Host, Lab
from ipop.tools.lab.sweep import (
    cold_probe,
    cold_summary,
    summarise,
    sweep,
    target_name,
)
from ipop.tools.lab.topology import SHAREABLE_NATS, Topology

__all__ = ["SoakPlan", "main_soak", "run_soak", "sweep", "target_name"]

RESTART_AFTER_S = 2.0
READY_TIMEOUT_S = 40.0
LEASE_TIMEOUT_S = 20.0
PROBE_GAP_S = 0.5
PROBE_PEERS = 3
RECOVER_TIMEOUT_S = 60.0
# Re-addressed public hosts move to .230 and up of their segment (generated labs use .9-.100
# for public hosts and .101 and up for NAT routers).
READDRESS_FIRST = 230
READDRESS_LAN_FIRST = 100
FAULT_KINDS = frozenset(
    {"kill9", "restart", "readdress", "nat_flush", "pause", "continue", "bootstraps_stopped"}
)

# Run in a NAT router's namespace: flush its IPv4 conntrack table over netlink (the message
# `conntrack -F` sends: IPCTNL_MSG_CT_DELETE without attributes), exit 0 on the kernel's ack.
FLUSH_CONNTRACK_PY = r"""
import socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
body = struct.pack("BBH", socket.AF_INET, 0, 0)
s.send(struct.pack("=IHHII", 16 + len(body), (1 << 8) | 2, 1 | 4, 1, 0) + body)
sys.exit(0 if struct.unpack_from("=i", s.recv(4096), 16)[0] == 0 else 1)
"""


@dataclass(frozen=True, slots=True)
class SoakPlan:
    minutes: float = 10.0
    seed: int = 1
    sweep_every_s: float = 60.0
    pause_s: float = 120.0
    kills: int = 2
    recovery_s: float = 5.0
    workers: int = 6
    bootstraps_stop_at: float = 0.5  # fraction of the run: the first round from then on
    # Seconds between daemon starts at cold start. With 0 all start at once, and on a 2-core
    # machine the daemons' own start-up CPU (imports, keys: ~0.8 CPU s each) then dominates
    # how soon each is reachable; a gap measures the protocol's cold start instead.
    start_gap_s: float = 0.0


def _say(msg: str) -> None:
    print(f"soak: {msg}", file=sys.stderr, flush=True)


def _proc_sample(pid: int) -> tuple[int, float] | None:
    """(RSS in kB, CPU seconds used) of ``pid`` from /proc; None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rss = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


@dataclass
class _Soak:
    lab: Lab
    net: IpopNet
    plan: SoakPlan
    rng: random.Random
    t0: float = 0.0
    down: set[str] = field(default_factory=set)  # not live: killed, paused, stopped for good
    paused: str | None = None
    paused_at: float = 0.0
    bootstraps_stopped: bool = False
    last_fault: float = float("-inf")
    addr: dict[str, IPv4Address] = field(default_factory=dict)  # hosts re-addressed
    faults: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[tuple[str, int], list[tuple[float, int, float]]] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --- who is live -------------------------------------------------------------------------

    def daemons(self) -> list[Host]:
        """ipopd hosts (not routers) that are live."""
        return [h for h in self.lab.hosts if not self.lab.is_router(h) and h.name not in self.down]

    def endpoints(self) -> list[Host]:
        """Everything that answers a ping by name: live ipopd hosts and the plain hosts of live
        routers."""
        plain = [p for p in self.lab.plain_hosts if p.lan_router not in self.down]
        return [*self.daemons(), *plain]

    def _fault(self, kind: str, host: str, **extra: Any) -> dict[str, Any]:
        assert kind in FAULT_KINDS, kind
        self.last_fault = time.monotonic()
        row = {"t_s": round(self.now(), 2), "kind": kind, "host": host, **extra}
        self.faults.append(row)
        _say(f"t={row['t_s']:7.1f}s {kind:<18} {host}")
        return row

    def _victims(self, n: int) -> list[Host]:
        pool = [h for h in self.daemons() if not h.is_bootstrap]
        return self.rng.sample(pool, min(n, len(pool)))

    # --- churn -------------------------------------------------------------------------------

    def churn(self, round_no: int, deadline: float) -> list[tuple[dict[str, Any], Host]]:
        """One round of faults; returns (fault row, host) pairs to watch recover."""
        watch: list[tuple[dict[str, Any], Host]] = []
        if self.paused is not None and (
            time.monotonic() - self.paused_at >= self.plan.pause_s
            or time.monotonic() + self.plan.sweep_every_s > deadline
        ):
            watch.append(self.resume())
        if round_no == 1 and self.paused is None:
            self._pause()
        killed: list[tuple[Host, str | None]] = []
        for h in self._victims(self.plan.kills):
            vip = self._vip(h)
            if self.lab.signal(h, signal.SIGKILL):
                self.down.add(h.name)
                self._fault("kill9", h.name)
                killed.append((h, vip))
        if killed:
            time.sleep(RESTART_AFTER_S)
        for h, vip in killed:
            self.net.start(h)
            started = time.monotonic()
            try:
                wait = min(READY_TIMEOUT_S, self.plan.sweep_every_s / 2)
                st = self.net.wait_ready(h, timeout_s=wait)
                after: str | None = st.self_.vip
            except NotReady:
                after = None
            self.down.discard(h.name)
            self.restarts.append(
                {
                    "host": h.name,
                    "vip_before": vip,
                    "vip_after": after,
                    "ready_s": round(time.monotonic() - started, 2),
                }
            )
            watch.append((self._fault("restart", h.name), h))
        movable = [h for h in self._victims(len(self.lab.hosts)) if _movable(h)]
        for h in movable[:1]:
            row = self._readdress(h)
            if row is not None:
                watch.append((row, h))
        if (
            not self.bootstraps_stopped
            and self.now() >= (deadline - self.t0) * self.plan.bootstraps_stop_at
        ):
            # After this round's restarts: from the next round on, restarts rejoin without them.
            for b in self.lab.bootstraps:
                self.lab.stop(b)
                self.down.add(b.name)
            self.bootstraps_stopped = True
            self._fault("bootstraps_stopped", ",".join(b.name for b in self.lab.bootstraps))
        routed = [h for h in self.daemons() if h.router_ns is not None and h.nat_owner is None]
        for h in self.rng.sample(routed, min(1, len(routed))):
            res = self.lab.exec(
                h, [sys.executable, "-c", FLUSH_CONNTRACK_PY], timeout=10, router=True
            )
            sharing = [o for o in self.daemons() if o.router_ns == h.router_ns]
            row = self._fault("nat_flush", h.name, ok=res.returncode == 0)
            watch.extend((row, o) for o in sharing)
        return watch

    def _vip(self, h: Host) -> str | None:
        try:
            return self.net.status(h).self_.vip
        except ControlError:
            return None

    def _pause(self) -> None:
        victims = self._victims(1)
        if victims and self.lab.signal(victims[0], signal.SIGSTOP):
            self.paused, self.paused_at = victims[0].name, time.monotonic()
            self.down.add(victims[0].name)
            self._fault("pause", victims[0].name, for_s=self.plan.pause_s)

    def resume(self) -> tuple[dict[str, Any], Host]:
        """Let the paused daemon run again (SIGCONT) and record the fault's end."""
        assert self.paused is not None
        h = self.lab.host(self.paused)
        self.lab.signal(h, signal.SIGCONT)
        self.down.discard(h.name)
        self.paused = None
        return self._fault("continue", h.name), h

    def _readdress(self, h: Host) -> dict[str, Any] | None:
        """A new address on the host's own interface (old one removed, default route back)."""
        old = self.addr.get(h.name, h.ip)
        if h.lan is not None:
            net, gw, first = h.lan, h.lan.network_address + 1, READDRESS_LAN_FIRST
        else:
            net = self.lab.topology.segment_of(h.ip)
            gw, first = net.network_address + 1, READDRESS_FIRST
        taken = {*(x.ip for x in self.lab.hosts), *self.addr.values()}
        free = [
            a
            for a in (net.network_address + i for i in range(first, net.num_addresses - 1))
            if a not in taken
        ]
        if not free:
            return None
        new = free[0]
        script = (
            f"ip addr del {old}/{net.prefixlen} dev {HOST_IF} && "
            f"ip addr add {new}/{net.prefixlen} dev {HOST_IF} && "
            f"ip route replace default via {gw}"
        )
        res = self.lab.exec(h, ["sh", "-c", script], timeout=10)
        self.addr[h.name] = new
        return self._fault("readdress", h.name, old=str(old), new=str(new), ok=res.returncode == 0)

    # --- recovery and resources --------------------------------------------------------------

    def recover(self, watch: list[tuple[dict[str, Any], Host]], *, limit_s: float) -> None:
        """Probe each watched host against a few live peers (both ways) until all answer, all
        hosts at once, for at most ``limit_s``: ``recover_s`` on each fault row (None: not
        within the limit)."""
        live = self.endpoints()
        probes = {
            id(row): (
                row,
                h,
                self.rng.sample(
                    [p for p in live if p.name != h.name], max(0, min(PROBE_PEERS, len(live) - 1))
                ),
            )
            for row, h in watch
        }
        deadline = time.monotonic() + limit_s
        while probes and time.monotonic() < deadline:
            with ThreadPoolExecutor(max_workers=max(1, self.plan.workers)) as pool:
                done = list(
                    pool.map(lambda p: (p, self._probe_ok(p[1], p[2])), list(probes.values()))
                )
            for (row, _h, _peers), ok in done:
                if ok:
                    row["recover_s"] = round(time.monotonic() - self.t0 - row["t_s"], 2)
                    probes.pop(id(row), None)
            if probes:
                time.sleep(PROBE_GAP_S)
        for row, _h, _peers in probes.values():
            row["recover_s"] = None

    def _probe_ok(self, h: Host, peers: list[Host]) -> bool:
        rows = sweep(self.lab, [h], peers, workers=1) + sweep(self.lab, peers[:1], [h], workers=1)
        return all(r["ok"] for r in rows)

    def sample(self) -> None:
        for p in self.lab.processes:
            h = self.lab.host(p.host)
            if h in self.lab.plain_hosts or not p.alive():
                continue
            got = _proc_sample(p.pid)
            if got is not None:
                self.samples.setdefault((p.host, p.pid), []).append((self.now(), *got))

    def resources(self) -> tuple[list[dict[str, Any]], float | None]:
        rows: list[dict[str, Any]] = []
        growth: list[float] = []
        for (host, pid), s in sorted(self.samples.items()):
            (t_a, rss_a, cpu_a), (t_b, rss_b, cpu_b) = s[0], s[-1]
            span = t_b - t_a
            rows.append(
                {
                    "host": host,
                    "pid": pid,
                    "samples": len(s),
                    "rss_kb_first": rss_a,
                    "rss_kb_last": rss_b,
                    "cpu_s": round(cpu_b, 2),
                    "cpu_pct": round(100 * (cpu_b - cpu_a) / span, 1) if span > 0 else None,
                }
            )
            if len(s) >= 3 and rss_a > 0:
                # s[0] is taken at the t = 0 sweep, still warming up: measure from s[1].
                growth.append(s[-1][1] / s[1][1] - 1)
        return rows, (round(max(growth), 4) if growth else None)


def _movable(h: Host) -> bool:
    """Whether re-addressing ``h`` keeps the lab's own rules true: the cone NATs DNAT to the
    host's first address, and a second address is netcheck's."""
    return not h.extra_ips and h.nat_kind in (None, *SHAREABLE_NATS)


def run_soak(
    topology: Topology,
    plan: SoakPlan,
    *,
    workdir: Path | None = None,
    prefix: str | None = None,
    log_level: str = "info",
) -> dict[str, Any]:
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ipop-soak-")
        workdir = Path(tmp.name)
    result: dict[str, Any] = {"ok": False, "plan": _plan_dict(plan)}
    result.update(sweeps=[], faults=[], restarts=[], vips_kept=None, rss_growth=None, daemons=[])
    soak: _Soak | None = None
    try:
        with Lab(topology, workdir=workdir, prefix=prefix) as lab:
            _say(f"lab {lab.prefix}: {len(lab.hosts)} daemons, {len(lab.plain_hosts)} LAN hosts")
            lab.up()
            net = IpopNet(lab, log_level=log_level)
            net.prepare()
            started = time.monotonic()
            # Before the probe's first exec, in this thread (see cold_probe).
            lab.write_resolv_conf(lab.bootstraps[0], net.gateway)
            with ThreadPoolExecutor(max_workers=1) as cold:
                logs = {h.name: at for h in lab.hosts if (at := net.ready_log(h)) is not None}
                probed = cold.submit(cold_probe, lab, logs)
                started_at = _start_all(net, plan.start_gap_s)
                net.wait_all_ready(
                    lab.hosts, timeout_s=READY_TIMEOUT_S + len(lab.hosts) * (1 + plan.start_gap_s)
                )
                result["cold_start"] = cold_summary(probed.result(), started_at)
            for p in lab.plain_hosts:
                net.start_plain(p)
            for p in lab.plain_hosts:
                net.wait_lease(p, timeout_s=LEASE_TIMEOUT_S)
            result["ready_s"] = round(time.monotonic() - started, 2)
            _say(f"all ready after {result['ready_s']} s")
            soak = _Soak(lab, net, plan, random.Random(plan.seed), t0=time.monotonic())
            deadline = soak.t0 + plan.minutes * 60
            next_sweep = soak.t0
            round_no = 0
            try:
                while True:
                    if round_no > 0:
                        watch = soak.churn(round_no, deadline)
                        limit = min(RECOVER_TIMEOUT_S, max(0.0, next_sweep - time.monotonic()))
                        soak.recover(watch, limit_s=max(limit, plan.recovery_s))
                        wait_until = max(soak.last_fault + plan.recovery_s, next_sweep)
                        time.sleep(max(0.0, wait_until - time.monotonic()))
                    result["sweeps"].append(_one_sweep(soak))
                    soak.sample()
                    round_no += 1
                    next_sweep = max(next_sweep + plan.sweep_every_s, time.monotonic())
                    if next_sweep > deadline:
                        break
            finally:
                if soak.paused is not None:
                    soak.resume()  # a stopped daemon cannot act on SIGTERM at teardown
                if tmp is None:
                    _keep_statuses(net)
    except NotReady as exc:
        result["error"] = str(exc)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if soak is not None:
        result["faults"], result["restarts"] = soak.faults, soak.restarts
        result["vips_kept"] = all(r["vip_before"] == r["vip_after"] for r in soak.restarts)
        result["daemons"], result["rss_growth"] = soak.resources()
    steady = [s for s in result["sweeps"] if not s["recovering"]]
    result["min_ok_ratio_after_recovery"] = min((s["pairs_ok_ratio"] for s in steady), default=None)
    result["ok"] = "error" not in result and bool(result["sweeps"])
    return result


def _keep_statuses(net: IpopNet) -> None:
    """Each live daemon's last status (counters and drops too) beside its log, for a soak
    whose lab is kept (--keep): a failed pair's two ends can be compared after teardown."""
    for h in net.lab.hosts:
        with contextlib.suppress(ControlError, OSError):
            (net.lab.host_dir(h) / "status.json").write_text(net.status(h).to_json(indent=1))


def _start_all(net: IpopNet, gap_s: float) -> dict[str, float]:
    """Start every daemon, the bootstraps first (as IpopNet.start_all), ``gap_s`` apart;
    host -> wall-clock time its daemon was started."""
    at: dict[str, float] = {}
    for i, h in enumerate(sorted(net.lab.hosts, key=lambda h: not h.is_bootstrap)):
        if i and gap_s > 0:
            time.sleep(gap_s)  # pacing the starts, not waiting for anything
        at[h.name] = time.time()
        net.start(h)
    return at


def _plan_dict(plan: SoakPlan) -> dict[str, Any]:
    return {k: getattr(plan, k) for k in SoakPlan.__slots__}


def _one_sweep(soak: _Soak) -> dict[str, Any]:
    started = time.monotonic()
    live = soak.endpoints()
    # Routers answer pings to their own names, but their namespace has no interface on the
    # virtual network (they serve their LANs): targets, not sources.
    routers = [h for h in soak.lab.hosts if soak.lab.is_router(h) and h.name not in soak.down]
    rows = sweep(soak.lab, live, [*live, *routers], workers=soak.plan.workers)
    row = {
        "t_s": round(started - soak.t0, 2),
        "live": len(live),
        **summarise(rows),
        "recovering": started - soak.last_fault < soak.plan.recovery_s,
        "took_s": round(time.monotonic() - started, 2),
    }
    _say(
        f"t={row['t_s']:7.1f}s sweep: {row['pairs_ok']}/{row['pairs']} pairs ok "
        f"({row['pairs_ok_ratio']:.1%}) in {row['took_s']} s, dns p99 {row['dns_ms']['p99']} ms"
    )
    return row


def format_report(result: dict[str, Any]) -> str:
    lines = [f"{'t s':>7} {'live':>4} {'pairs ok':>13} {'ratio':>7} {'dns p50/p99 ms':>16}  note"]
    for s in result["sweeps"]:
        d = s["dns_ms"]
        lines.append(
            f"{s['t_s']:>7.1f} {s['live']:>4} {s['pairs_ok']:>6}/{s['pairs']:<6} "
            f"{s['pairs_ok_ratio']:>7.1%} {d['p50']!s:>7}/{d['p99']!s:<8}  "
            f"{'recovering ' if s['recovering'] else ''}{' '.join(s['failed'][:4])}"
        )
    lines.append("")
    for f in result["faults"]:
        rec = f.get("recover_s", "-")
        lines.append(f"{f['t_s']:>7.1f} {f['kind']:<18} {f['host']:<12} recover_s {rec}")
    lines.append("")
    cold = result.get("cold_start")
    if cold:
        lines.append(
            f"cold start: {cold['within_5s']}/{cold['daemons']} daemons pingable by name within"
            f" 5 s of their own start (p50 {cold['p50']} s, max {cold['max']} s; their names"
            f" first resolved at p50 {cold['resolved_p50']} s)"
        )
        missed = cold.get("misses_after_ready") or {}
        if missed:
            lines.append(
                "names that failed to resolve after their daemon was ready: "
                + ", ".join(f"{h} {kinds}" for h, kinds in sorted(missed.items()))
            )
    lines.append(f"vips_kept={result['vips_kept']} rss_growth={result['rss_growth']}")
    cpu = [d["cpu_pct"] for d in result["daemons"] if d["cpu_pct"] is not None]
    if cpu:
        lines.append(
            f"daemon CPU %: median {statistics.median(cpu):.1f}, max {max(cpu):.1f}, "
            f"sum {sum(cpu):.0f}; RSS kB max {max(d['rss_kb_last'] for d in result['daemons'])}"
        )
    if "error" in result:
        lines.append(f"error: {result['error']}")
    lines.append(f"ok={result['ok']}")
    return "\n".join(lines)


def main_soak(
    topology: Topology,
    plan: SoakPlan,
    *,
    as_json: bool,
    workdir: Path | None = None,
    log_level: str = "info",
) -> int:
    result = run_soak(topology, plan, workdir=workdir, log_level=log_level)
    print(json.dumps(result, indent=2) if as_json else format_report(result))
    return 0 if result["ok"] else 1
