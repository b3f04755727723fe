"""``ipop-lab demo``: the README's main job, end to end on real namespaces and NATs.

Builds the lab (default topology: a public bootstrap node, a second public node, hosts behind
port-restricted-cone, restricted-cone and symmetric NATs, or a TOML topology), starts a real
``ipopd`` on every host, waits until each holds a virtual IP, then pings every ordered pair
by ``HOSTNAME.ipop`` with the system ``ping`` (names answered by each host's own ipopd) and
reports the path the pair's traffic took (``direct``, ``relayed`` or ``overlay``) from the
sender's ``ipop status``. Everything is torn down at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.lab.ipopnet import IpopNet, NotReady
from tools.lab.lab import Lab
from tools.lab.topology import Topology

__all__ = ["run_demo"]

READY_TIMEOUT_S = 30.0
PING_ATTEMPTS = 3
_RTT = re.compile(r"time=([0-9.]+) ms")


def _progress(msg: str, *, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def ping_by_name(net: IpopNet, src: str, target: str) -> tuple[bool, float | None]:
    """One system ping (a few tries: the first packet may wait for a DHT lookup)."""
    for _ in range(PING_ATTEMPTS):
        res = net.lab.exec(src, ["ping", "-c", "1", "-W", "2", target], timeout=10)
        m = _RTT.search(res.stdout)
        if res.returncode == 0 and m:
            return True, float(m.group(1))
    return False, None


def run_demo(
    topology: Topology, *, workdir: Path | None = None, quiet: bool = False
) -> dict[str, Any]:
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ipop-lab-")
        workdir = Path(tmp.name)
    result: dict[str, Any] = {"ok": False, "nodes": [], "pings": [], "join_s": []}
    try:
        with Lab(topology, workdir=workdir) as lab:
            _progress(f"lab {lab.prefix}: building {len(lab.hosts)} hosts", quiet=quiet)
            lab.up()
            net = IpopNet(lab)
            net.prepare()
            t0 = {}
            for h in sorted(lab.hosts, key=lambda h: not h.is_bootstrap):
                t0[h.name] = time.monotonic()
                net.start(h)
            ready = net.wait_all_ready(lab.hosts, timeout_s=READY_TIMEOUT_S)
            nodes = []
            for h in lab.hosts:
                st, at = ready[h.name]
                join = at - t0[h.name]
                result["join_s"].append(round(join, 3))
                nodes.append(
                    {
                        "host": h.name,
                        "vip": st.self_.vip,
                        "names": st.self_.names,
                        "nat": h.nat_kind or "none",
                        "node_id": st.self_.node_id,
                    }
                )
                _progress(f"  {h.name:<6} ready in {join:5.2f} s  {st.self_.vip}", quiet=quiet)
            result["nodes"] = [{k: v for k, v in n.items() if k != "node_id"} for n in nodes]
            ids = {n["host"]: n["node_id"] for n in nodes}
            _progress("pinging every ordered pair by name", quiet=quiet)
            for src in lab.hosts:
                for dst in lab.hosts:
                    if src is dst:
                        continue
                    target = f"{dst.name}.ipop"
                    ok, rtt = ping_by_name(net, src.name, target)
                    path = None
                    for p in net.status(src).peers:
                        if p.node_id == ids[dst.name]:
                            path = p.path
                    result["pings"].append(
                        {
                            "from": src.name,
                            "to": dst.name,
                            "target": target,
                            "ok": ok,
                            "rtt_ms": rtt,
                            "path": path if ok else None,
                        }
                    )
            result["ok"] = all(p["ok"] for p in result["pings"]) and bool(result["pings"])
    except NotReady as exc:
        result["error"] = str(exc)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'host':<8} {'nat':<22} {'vip':<16} names"]
    for n in result["nodes"]:
        lines.append(f"{n['host']:<8} {n['nat']:<22} {n['vip'] or '-':<16} {' '.join(n['names'])}")
    lines.append("")
    lines.append(f"{'from':<8} {'to':<8} {'name':<14} {'ok':<4} {'rtt ms':>8}  path")
    for p in result["pings"]:
        rtt = f"{p['rtt_ms']:.3f}" if p["rtt_ms"] is not None else "-"
        ok = "yes" if p["ok"] else "NO"
        lines.append(
            f"{p['from']:<8} {p['to']:<8} {p['target']:<14} {ok:<4} {rtt:>8}  {p['path'] or '-'}"
        )
    joins = result["join_s"]
    if joins:
        lines.append("")
        lines.append(f"ready after start: max {max(joins):.2f} s, each {joins}")
    if "error" in result:
        lines.append(f"error: {result['error']}")
    lines.append(f"ok={result['ok']}")
    return "\n".join(lines)


def main_demo(topology: Topology, *, as_json: bool) -> int:
    result = run_demo(topology, quiet=as_json)
    print(json.dumps(result, indent=2) if as_json else format_table(result))
    return 0 if result["ok"] else 1
