"""The lab's by-name reachability measurements: the pair sweep and the cold-start probe.

This module owns what ``ipop-lab soak`` (and the scale lab tests) measure and how: a sweep
runs, in every source namespace at once, a small script that resolves every target's name
with the system resolver (timed) and pings it by name with the system ``ping``; the cold-start
probe pings every daemon by name from the first bootstrap until each answers. Each returns
plain rows; :func:`summarise` and :func:`cold_summary` reduce them to the report's numbers.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from ipop.tools.lab.lab import Host, Lab

__all__ = [
    "COLD_PROBE_S",
    "SWEEP_TIMEOUT_S",
    "cold_probe",
    "cold_summary",
    "percentile",
    "summarise",
    "sweep",
    "target_name",
]

SWEEP_TIMEOUT_S = 90.0
PING_WAIT_S = 1
# Names one source probes at once: with ``workers`` sources that bounds the lookups in flight
# (6 x 4), so the sweep measures the network, not a DNS burst of its own.
SOURCE_CONCURRENCY = 4
# The resolver's own bound on a lookup (glibc reads RES_OPTIONS): two tries of 3 s, not
# glibc's 5 s x 2; no answer by then counts as a failure ("servfail": EAI_AGAIN).
RES_OPTIONS = "timeout:3 attempts:2"

# Run in a source's namespace: argv[1] a JSON list of names, argv[2] ping -W seconds, argv[3]
# names probed at once. For each name: getaddrinfo timed, then, if it resolved, `ping -c 1` by
# name, retried once. Prints [{"to", "ok", "dns_ms", "dns_err", "at"}] as JSON ("at": when
# the first ping left).
SWEEP_PY = r"""
import json, socket, subprocess, sys, threading, time
names, wait = json.loads(sys.argv[1]), sys.argv[2]
gate = threading.Semaphore(int(sys.argv[3]))
out = [None] * len(names)
def one(i, name):
    with gate:
        probe(i, name)
def probe(i, name):
    t0 = time.perf_counter()
    err = None
    try:
        socket.getaddrinfo(name, None, socket.AF_INET)
    except socket.gaierror as e:
        kinds = {socket.EAI_NONAME: "nxdomain", socket.EAI_AGAIN: "servfail"}
        err = kinds.get(e.errno, str(e.errno))
    dns_ms = (time.perf_counter() - t0) * 1000
    ok = False
    at = time.time()
    for _ in range(0 if err else 2):
        r = subprocess.run(["ping", "-n", "-c", "1", "-W", wait, name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            ok = True
            break
    out[i] = {"to": name, "ok": ok, "dns_ms": round(dns_ms, 3), "dns_err": err,
              "at": round(at, 3)}
ts = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(names)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(out))
"""

# Run in the first bootstrap's namespace while the lab cold-starts: argv[1] a JSON list of
# names, argv[2] seconds to keep trying, argv[3] {name: [its daemon's log, offset]}. One
# thread per name resolves it and pings it once (ping -W 1) again and again, 0.2 s after each
# miss, until it answers; prints {name: the wall-clock time of its first answer, or null} as
# JSON. A name's own loop, not rounds over all names: a round waits for its slowest miss (a
# second each), and the first answer would be measured that late. A name whose daemon has a
# log is asked once that log says ``event=ready`` (its name is claimed then, not before):
# asked from the start, the names not claimed yet drew DHT reads of keys nobody held, a fifth
# of the cold start's DHT requests (32 daemons), all at the prober, in the busiest seconds.
# Each failed resolution after ``event=ready`` is counted by its error (EAI_NONAME: NXDOMAIN;
# EAI_AGAIN: SERVFAIL or no answer in time): the issue wants none for a live node.
COLD_PY = r"""
import json, socket, subprocess, sys, threading, time
names, until = json.loads(sys.argv[1]), time.time() + float(sys.argv[2])
logs = json.loads(sys.argv[3])
first = dict.fromkeys(names)
resolved = dict.fromkeys(names)
misses = {}
def ready(name):
    path, offset = logs[name]
    while time.time() < until:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                if b" event=ready " in f.read():
                    return
        except OSError:
            pass
        time.sleep(0.05)
def one(name):
    if name in logs:
        ready(name)
    while time.time() < until:
        try:
            socket.getaddrinfo(name, None, socket.AF_INET)
        except OSError as exc:
            if name in logs:
                kind = {socket.EAI_NONAME: "nxdomain", socket.EAI_AGAIN: "again"}.get(
                    getattr(exc, "errno", None), "other")
                misses.setdefault(name, {}).setdefault(kind, 0)
                misses[name][kind] += 1
            time.sleep(0.2)
            continue
        if resolved[name] is None:
            resolved[name] = time.time()
        r = subprocess.run(["ping", "-n", "-c", "1", "-W", "1", name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            first[name] = time.time()
            return
        time.sleep(0.2)
ts = [threading.Thread(target=one, args=(n,)) for n in names]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"first": first, "resolved": resolved, "misses": misses}))
"""
# The resolver's bound while names are cold: one quick try, the name's loop retries.
COLD_RES_OPTIONS = "timeout:1 attempts:1"
COLD_PROBE_S = 60.0


def target_name(h: Host) -> str:
    # A LAN host's name is under its router's (ipop.dht.policy).
    return f"{h.name}.{h.lan_router}.ipop" if h.lan_router else f"{h.name}.ipop"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


def sweep(
    lab: Lab, sources: list[Host], targets: list[Host], *, workers: int
) -> list[dict[str, Any]]:
    """Every ordered (source, target) pair of distinct hosts: one row each, by name."""

    def run(src: Host) -> list[dict[str, Any]]:
        names = [target_name(t) for t in targets if t.name != src.name]
        if not names:
            return []
        try:
            argv = [
                sys.executable, "-c", SWEEP_PY, json.dumps(names), str(PING_WAIT_S),
                str(SOURCE_CONCURRENCY),
            ]  # fmt: skip
            res = lab.exec(
                src, ["env", f"RES_OPTIONS={RES_OPTIONS}", *argv], timeout=SWEEP_TIMEOUT_S
            )
            rows: list[dict[str, Any]] = json.loads(res.stdout)
        except Exception as exc:  # a source that cannot run counts all its pairs as failed
            rows = [{"to": n, "ok": False, "dns_ms": None, "dns_err": repr(exc)} for n in names]
        return [dict(r, **{"from": src.name}) for r in rows]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [row for rows in pool.map(run, sources) for row in rows]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sum(1 for r in rows if r["ok"])
    dns = [float(r["dns_ms"]) for r in rows if r["dns_ms"] is not None and not r["dns_err"]]
    errors: dict[str, int] = {}
    for r in rows:
        if r["dns_err"]:
            errors[str(r["dns_err"])] = errors.get(str(r["dns_err"]), 0) + 1
    return {
        "pairs": len(rows),
        "pairs_ok": ok,
        "pairs_ok_ratio": round(ok / len(rows), 4) if rows else 1.0,
        "dns_ms": {
            "n": len(dns),
            "p50": percentile(dns, 0.5),
            "p99": percentile(dns, 0.99),
            "max": round(max(dns), 3) if dns else None,
        },
        "dns_errors": errors,
        "failed": [f"{r['from']}->{r['to']}" for r in rows if not r["ok"]][:30],
        # When each failed pair's first ping left (wall clock): to find it in the daemons' logs.
        "failed_at": {f"{r['from']}->{r['to']}": r.get("at") for r in rows if not r["ok"]},
    }


class ColdProbe(NamedTuple):
    """Wall-clock times, by host name, of the prober's first answer for each daemon: its
    name's first resolution and its first ping reply by name (None: not within COLD_PROBE_S)."""

    resolved: dict[str, float | None]
    pingable: dict[str, float | None]
    # By host: its name's failed resolutions after its daemon logged ready, by error.
    misses: dict[str, dict[str, int]]


def cold_probe(lab: Lab, logs: dict[str, tuple[str, int]] | None = None) -> ColdProbe:
    """From the first bootstrap, every other daemon by name (a router's too) until each
    answers a ping. The prober itself is not measured: it is what the others are reached from.
    ``logs`` (host -> its daemon's log and where this start's lines begin): a name is asked
    once its daemon logged ``event=ready`` (COLD_PY says why).

    The caller writes the prober's resolv.conf first (:meth:`Lab.write_resolv_conf`, before
    starting the daemons): ``ip netns exec`` binds it over /etc/resolv.conf only if it exists
    then, and without it the probe asks the host's own resolver for 60 s."""
    prober = lab.bootstraps[0]
    hosts = [h for h in lab.hosts if h.name != prober.name]
    names = [target_name(h) for h in hosts]
    at = {target_name(h): logs[h.name] for h in hosts if logs and h.name in logs}
    argv = [sys.executable, "-c", COLD_PY, json.dumps(names), str(COLD_PROBE_S), json.dumps(at)]
    none = dict.fromkeys(names)
    try:
        res = lab.exec(
            prober,
            ["env", f"RES_OPTIONS={COLD_RES_OPTIONS}", *argv],
            timeout=COLD_PROBE_S + 30,
        )
        got: dict[str, Any] = json.loads(res.stdout)
    except Exception:  # a probe that cannot run measures nothing: every name unanswered
        got = {"first": none, "resolved": none, "misses": {}}

    def by_host(times: dict[str, float | None]) -> dict[str, float | None]:
        return {n.split(".")[0]: times.get(n) for n in names}

    misses = {n.split(".")[0]: kinds for n, kinds in got.get("misses", {}).items()}
    return ColdProbe(
        resolved=by_host(got["resolved"]), pingable=by_host(got["first"]), misses=misses
    )


def cold_summary(probe: ColdProbe, started_at: dict[str, float]) -> dict[str, Any]:
    """Seconds from each daemon's own start to its first answer by name from the prober (and,
    apart, to its name's first resolution there: what is left is the ping's path); and the
    failed resolutions of names whose daemons were ready (by host and error; none wanted)."""

    def after(times: dict[str, float | None]) -> dict[str, float | None]:
        return {
            h: (round(t - started_at[h], 2) if t is not None else None) for h, t in times.items()
        }

    pingable, resolved = after(probe.pingable), after(probe.resolved)
    got = [v for v in pingable.values() if v is not None]
    return {
        "pingable_s": pingable,
        "resolved_s": resolved,
        "resolved_p50": percentile([v for v in resolved.values() if v is not None], 0.5),
        "p50": percentile(got, 0.5),
        "max": max(got) if got else None,
        "within_5s": sum(1 for v in got if v <= 5.0),
        "daemons": len(pingable),
        "misses_after_ready": probe.misses,
    }
