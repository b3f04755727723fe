"""``ipop-lab demo``: the README's main job, end to end on real namespaces and NATs.

Builds the lab (default topology: a public bootstrap node, a second public node, hosts behind
port-restricted-cone, restricted-cone and symmetric NATs, or a TOML topology), starts a real
``ipopd`` on every host, waits until each holds a virtual IP, then pings every ordered pair
by ``HOSTNAME.ipop`` with the system ``ping`` (names answered by each host's own ipopd) and
reports the path the pair's traffic took (``direct``, ``relayed`` or ``overlay``) from the
sender's ``ipop status``.

The demo always includes two router clusters (``topology.with_router_clusters`` adds them when
the topology has none: r1 behind a port-restricted cone, r2 behind a symmetric NAT), so plain
hosts of each cluster ping the other cluster's by name. A router host runs ``ipop-router``
instead of ``ipopd``; its plain hosts run only ``udhcpc`` or ``dhclient``; they are listed
under ``lan_hosts`` (with the seconds each took to get its lease, ``lease_after_s``) and take
part in the pings as sources and targets. Routers themselves are not pinged (they hold no
address of their own on a LAN).

Before the pairs, the demo shows *the shortcut moment* (the seeds' demo): a node behind a
port-restricted cone pings the symmetric-NAT node by name for the first time, 50 ms apart, while
its ``ipop status`` is polled; the first replies come over the relay, then port guessing
(``ipop.nat.portguess``) opens a direct path and the RTT drops. The table shows each reply with the
path it took and the seconds until the path was direct (JSON: ``shortcut``).

After the pairs, the demo shows *the Grid Appliance moment* (issue 17): a node (the one behind
the symmetric NAT) runs an unmodified ``python3 -m http.server`` on its vIP, published through
a ``[[service]]`` table in its ``ipopd`` config; a plain LAN host behind a router finds it with
``dig SRV _http._tcp.ipop`` through its router's DNS and fetches the page with ``curl`` from the
SRV answer's target and port (JSON: ``service``). The demo succeeds only if the page arrives.

Everything is torn down at the end, also on failure or Ctrl-C; the HTTP server is stopped by
its PID as soon as its phase ends.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ipop.tools.lab.ipopnet import IpopNet, NotReady
from ipop.tools.lab.lab import Host, Lab
from ipop.tools.lab.natmatrix import watch_pings
from ipop.tools.lab.topology import Topology, with_router_clusters

__all__ = ["run_demo"]

READY_TIMEOUT_S = 30.0
LEASE_TIMEOUT_S = 10.0
PING_ATTEMPTS = 3
# 4 s of pings: the target for first packet -> direct is 3 s at most, and a shorter train
# could not show a shortcut that forms after 2 s (one clean-clone run saw none in 2 s).
SHORTCUT_PINGS = 80
SHORTCUT_INTERVAL_S = 0.05
_RTT = re.compile(r"time=([0-9.]+) ms")
# The Grid Appliance moment: the service a node publishes from its config, and its page.
SERVICE_NAME = "http"
SERVICE_PORT = 8000
SERVICE_SRV = f"_{SERVICE_NAME}._tcp.ipop"
SERVICE_WAIT_S = 10.0
_SRV = re.compile(r"\bIN\s+SRV\s+(\d+\s+\d+\s+(\d+)\s+(\S+))")
_QUERY_MS = re.compile(r"Query time: (\d+) msec")


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
    topology = with_router_clusters(topology)
    result: dict[str, Any] = {
        "ok": False,
        "nodes": [],
        "lan_hosts": [],
        "pings": [],
        "join_s": [],
    }
    try:
        with Lab(topology, workdir=workdir) as lab:
            _progress(f"lab {lab.prefix}: building {len(lab.hosts)} hosts", quiet=quiet)
            lab.up()
            net = IpopNet(lab)
            net.prepare()
            publisher = _service_publisher(lab)
            if publisher is not None:
                with net.files(publisher).config.open("a") as f:
                    f.write(
                        f'[[service]]\nname = "{SERVICE_NAME}"\nport = {SERVICE_PORT}\n'
                        'txt = ["path=/"]\n'
                    )
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
            for ph in lab.plain_hosts:
                net.start_plain(ph)
            took = {}
            for ph in lab.plain_hosts:
                addr, took[ph.name] = net.wait_lease(ph, timeout_s=LEASE_TIMEOUT_S)
                _progress(f"  {ph.name:<6} leased in {took[ph.name]:5.2f} s  {addr}", quiet=quiet)
            result["lan_hosts"] = _lan_hosts(net, took)
            for row in result["lan_hosts"]:
                ids[row["host"]] = ids[row["router"]]
            pair = _shortcut_pair(lab)
            if pair is not None:
                src, dst = pair
                _progress(f"the shortcut moment: {src.name} pings {dst.name}.ipop", quiet=quiet)
                watched = watch_pings(
                    net,
                    src.name,
                    f"{dst.name}.ipop",
                    str(ids[dst.name]),
                    count=SHORTCUT_PINGS,
                    interval_s=SHORTCUT_INTERVAL_S,
                )
                result["shortcut"] = {
                    "from": src.name,
                    "to": dst.name,
                    "from_nat": src.nat_kind or "none",
                    "to_nat": dst.nat_kind or "none",
                    **watched,
                }
            endpoints = [h for h in lab.hosts if not lab.is_router(h)] + lab.plain_hosts
            _progress("pinging every ordered pair by name", quiet=quiet)
            for src in endpoints:
                for dst in endpoints:
                    if src is dst:
                        continue
                    # A LAN host's name is under its router's (ipop.dht.policy).
                    under = f".{dst.lan_router}" if dst.lan_router else ""
                    target = f"{dst.name}{under}.ipop"
                    ok, rtt = ping_by_name(net, src.name, target)
                    path = None
                    # A plain host has no status of its own: its traffic is its router's.
                    sender = src.lan_router or src.name
                    if sender == dst.lan_router:
                        path = "lan"  # LAN-to-LAN: never leaves the bridge
                    for peer in net.status(sender).peers:
                        if peer.node_id == ids[dst.name]:
                            path = peer.path
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
            if publisher is not None and lab.plain_hosts:
                fetcher = lab.plain_hosts[0]
                _progress(
                    f"the Grid Appliance moment: {fetcher.name} finds {publisher.name}'s "
                    f"web server by SRV",
                    quiet=quiet,
                )
                result["service"] = service_moment(net, publisher, fetcher)
            pings_ok = all(p["ok"] for p in result["pings"]) and bool(result["pings"])
            service_ok = result.get("service", {}).get("fetched", False) or publisher is None
            result["ok"] = pings_ok and service_ok
    except NotReady as exc:
        result["error"] = str(exc)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return result


def _service_publisher(lab: Lab) -> Host | None:
    """The node that serves the Grid Appliance moment: behind the symmetric NAT if one is
    (the hardest to reach), else any ipopd host that is not a bootstrap."""
    nodes = [h for h in lab.hosts if not lab.is_router(h) and not h.is_bootstrap]
    sym = [h for h in nodes if h.nat_kind == "symmetric"]
    return sym[0] if sym else (nodes[0] if nodes else None)


def service_moment(net: IpopNet, publisher: Host, fetcher: Host) -> dict[str, Any]:
    """``publisher`` serves a page with an unmodified ``python3 -m http.server`` on its vIP
    (its ``[[service]]`` table published it at start); ``fetcher``, a plain LAN host, finds it
    by SRV through its router's DNS and fetches it with ``curl``. The server is stopped (by
    its PID) before this returns."""
    lab = net.lab
    vip = net.status(publisher).self_.vip
    out: dict[str, Any] = {
        "name": SERVICE_SRV,
        "publisher": publisher.name,
        "publisher_nat": publisher.nat_kind or "none",
        "from": fetcher.name,
        "via": fetcher.lan_router,
        "published_by": "[[service]] in ipopd's config",
        "server": f"python3 -m http.server {SERVICE_PORT} --bind {vip}",
        "dns": str(net.gateway),  # the router's DNS, what the host's DHCP lease named
        "srv": None,
        "srv_ms": None,
        "srv_queries": 0,
        "fetched": False,
    }
    if vip is None:
        out["error"] = f"{publisher.name} holds no address"
        return out
    site = lab.workdir / "demo-site"
    site.mkdir(exist_ok=True)
    page = f"hello from {publisher.name} ({vip}), an unmodified python3 -m http.server"
    (site / "index.html").write_text(page + "\n")
    argv = [sys.executable, "-m", "http.server", str(SERVICE_PORT), "--bind", str(vip)]
    proc = lab.spawn(
        publisher, [*argv, "--directory", str(site)], log_path=lab.workdir / "demo-http.log"
    )
    t0 = time.monotonic()
    try:
        _service_lookup_and_fetch(net, publisher, fetcher, IPv4Address(vip), page, out)
    finally:
        lab.stop_pid(proc.pid)
        out["server_stopped"] = proc.poll() is not None
    out["phase_s"] = round(time.monotonic() - t0, 3)  # server start to server stopped
    return out


def _service_lookup_and_fetch(
    net: IpopNet, publisher: Host, fetcher: Host, vip: IPv4Address, page: str, out: dict[str, Any]
) -> None:
    lab = net.lab
    deadline = time.monotonic() + SERVICE_WAIT_S
    local = f"http://{vip}:{SERVICE_PORT}/"
    while lab.exec(publisher, ["curl", "-sf", "-m", "1", local], timeout=5).returncode != 0:
        if time.monotonic() > deadline:
            out["error"] = f"the HTTP server on {publisher.name} did not start"
            return
        time.sleep(0.05)
    dig = ["dig", f"@{net.gateway}", "SRV", SERVICE_SRV, "+noall", "+answer", "+additional"]
    dig += ["+stats"]
    dig += ["+tries=1", "+time=2"]
    t0 = time.monotonic()
    answer = None
    while answer is None:
        res = lab.exec(fetcher, dig, timeout=10)
        out["srv_queries"] += 1
        answer = _SRV.search(res.stdout)
        if answer is None and time.monotonic() > deadline:
            out["error"] = f"no SRV answer for {SERVICE_SRV} on {fetcher.name}: {res.stdout}"
            return
        if answer is None:
            time.sleep(0.1)  # a miss is cached for a second: ask again after a moment
    ms = _QUERY_MS.search(res.stdout)
    out["srv"] = answer.group(1)
    out["srv_ms"] = float(ms.group(1)) if ms else None
    out["srv_wall_s"] = round(time.monotonic() - t0, 3)
    out["dig"] = [line for line in res.stdout.splitlines() if re.search(r"\sIN\s", line)]
    port, target = int(answer.group(2)), answer.group(3).rstrip(".")
    out["url"] = url = f"http://{target}:{port}/"
    t0 = time.monotonic()
    res = lab.exec(fetcher, ["curl", "-sS", "-m", "5", url], timeout=10)
    out["fetch_ms"] = round((time.monotonic() - t0) * 1000, 1)
    out["page"] = res.stdout.strip() or res.stderr.strip()
    out["fetched"] = res.returncode == 0 and res.stdout.strip() == page


def _shortcut_pair(lab: Lab) -> tuple[Host, Host] | None:
    """The pair whose first contact shows the shortcut moment: a host behind a NAT that keeps
    ports toward one behind a symmetric NAT (plain punching fails there, guessing does not);
    else any two NATed ipopd hosts."""
    nodes = [h for h in lab.hosts if not lab.is_router(h) and h.nat_kind is not None]
    sym = [h for h in nodes if h.nat_kind == "symmetric"]
    other = [h for h in nodes if h.nat_kind != "symmetric"]
    if sym and other:
        prc = [h for h in other if h.nat_kind == "port-restricted-cone"]
        return (prc or other)[0], sym[0]
    return (nodes[0], nodes[1]) if len(nodes) >= 2 else None


def _lan_hosts(net: IpopNet, took: dict[str, float]) -> list[dict[str, Any]]:
    """Every plain host as its router's ``ipop status`` lists it (polled until all are named)."""
    lab = net.lab
    deadline = time.monotonic() + LEASE_TIMEOUT_S
    rows: list[dict[str, Any]] = []
    while True:
        rows = []
        for p in lab.plain_hosts:
            assert p.lan_router is not None
            addr = net.plain_address(p)
            for h in net.status(p.lan_router).lan_hosts:
                if addr is not None and h.vip == str(addr):
                    rows.append(
                        {
                            "host": p.name,
                            "router": p.lan_router,
                            "mac": h.mac,
                            "vip": h.vip,
                            "names": h.names,
                            "lease_s": h.lease_s,
                            "lease_after_s": round(took.get(p.name, 0.0), 3),
                        }
                    )
        named = all(f"{r['host']}.{r['router']}.ipop" in r["names"] for r in rows)
        if (len(rows) == len(lab.plain_hosts) and named) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'host':<8} {'nat':<22} {'vip':<16} names"]
    for n in result["nodes"]:
        lines.append(f"{n['host']:<8} {n['nat']:<22} {n['vip'] or '-':<16} {' '.join(n['names'])}")
    if result.get("lan_hosts"):
        lines.append("")
        lines.append(f"{'lan host':<8} {'router':<8} {'mac':<18} {'vip':<16} {'lease':>6}  names")
        for h in result["lan_hosts"]:
            lease = f"{h['lease_s']:.0f}" if h["lease_s"] is not None else "-"
            lines.append(
                f"{h['host']:<8} {h['router']:<8} {h['mac']:<18} {h['vip']:<16} {lease:>6}  "
                f"{' '.join(h['names'])}  (leased after {h['lease_after_s']:.2f} s)"
            )
    if result.get("shortcut"):
        lines.append("")
        lines.extend(_format_shortcut(result["shortcut"]))
    lines.append("")
    lines.append(f"{'from':<8} {'to':<8} {'name':<14} {'ok':<4} {'rtt ms':>8}  path")
    for p in result["pings"]:
        rtt = f"{p['rtt_ms']:.3f}" if p["rtt_ms"] is not None else "-"
        ok = "yes" if p["ok"] else "NO"
        lines.append(
            f"{p['from']:<8} {p['to']:<8} {p['target']:<14} {ok:<4} {rtt:>8}  {p['path'] or '-'}"
        )
    if result.get("service"):
        lines.append("")
        lines.extend(_format_service(result["service"]))
    joins = result["join_s"]
    if joins:
        lines.append("")
        lines.append(f"ready after start: max {max(joins):.2f} s, each {joins}")
    if "error" in result:
        lines.append(f"error: {result['error']}")
    lines.append(f"ok={result['ok']}")
    return "\n".join(lines)


def _format_shortcut(sc: dict[str, Any]) -> list[str]:
    """The replies around the moment the path turned direct (all of them if it never did)."""
    lines = [
        f"the shortcut moment: {sc['from']} ({sc['from_nat']}) pings {sc['to']}.ipop "
        f"({sc['to_nat']}) for the first time, every {SHORTCUT_INTERVAL_S * 1000:.0f} ms",
        f"  {'reply':>5} {'at s':>6} {'rtt ms':>8}  path",
    ]
    replies = sc.get("replies", [])
    turn = next((i for i, r in enumerate(replies) if r[2] == "direct"), None)
    show = (
        range(len(replies))
        if turn is None
        else range(max(0, turn - 4), min(len(replies), turn + 4))
    )
    for i in show:
        at, rtt, path = replies[i]
        mark = "   <- direct from here" if i == turn else ""
        lines.append(f"  {i + 1:>5} {at:>6.2f} {rtt:>8.3f}  {path or '-'}{mark}")
    if sc.get("direct"):

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        lines.append(
            f"  direct after {sc['time_to_direct_s']:.2f} s: median RTT "
            f"{ms(sc['rtt_overlay_ms'])} ms before, {ms(sc['rtt_direct_ms'])} ms after; "
            f"{sc['lost']} lost"
        )
    else:
        lines.append(f"  stayed {sc.get('path')}: {sc.get('why') or '-'}")
    return lines


def _format_service(sv: dict[str, Any]) -> list[str]:
    lines = [
        f"the Grid Appliance moment: {sv['publisher']} ({sv['publisher_nat']}) runs "
        f"`{sv['server']}`, published by {sv['published_by']}",
        f"  (on {sv['from']}, a plain host behind {sv['via']}) $ dig @{sv['dns']} SRV {sv['name']}",
    ]
    lines += [f"  {line}" for line in sv.get("dig", [])]
    if sv["srv"] is not None:
        took = "-" if sv["srv_ms"] is None else f"{sv['srv_ms']:.0f}"
        lines.append(
            f"  SRV answer in {took} ms (query {sv['srv_queries']}, {sv['srv_wall_s']:.2f} s)"
        )
        lines.append(f"  (on {sv['from']}) $ curl {sv['url']}")
        lines.append(f"  {sv['page']}")
        lines.append(f"  fetched={sv['fetched']} in {sv['fetch_ms']:.0f} ms")
    if "phase_s" in sv:
        lines.append(f"  phase took {sv['phase_s']:.2f} s (server start to server stopped)")
    if "error" in sv:
        lines.append(f"  error: {sv['error']}")
    return lines


def main_demo(topology: Topology, *, as_json: bool) -> int:
    result = run_demo(topology, quiet=as_json)
    print(json.dumps(result, indent=2) if as_json else format_table(result))
    return 0 if result["ok"] else 1
