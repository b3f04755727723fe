"""What a daemon's imports cost in CPU: the bulk of its work from spawn to its first virtual IP.

Run: ``.venv/bin/python -m ipop.tools.bench.start_cost [--runs 7] [--json]``. For ipopd and
ipop-router, each run is a clean interpreter that imports the daemon's module (as ``python -m``
does before ``main``) and reports its own CPU seconds (user + system) and those spent creating
dataclasses; the median of the runs is printed, with the heaviest top-level packages by
``-X importtime`` self time. ipop's bytecode is compiled first, as the lab does. Not a test:
numbers depend on the machine and its load; the tests that keep the known savings are in
tests/unit/test_start_cost.py.

In a 4-host lab one ipopd had spent 0.36 CPU s when it logged ``event=ready``, 0.34 of them
before ``event=started`` (bytecode compiled at every start, pyroute2); then 0.16-0.18, of which
the imports were ~0.14; with the regular expressions' code kept (ipop.tools.recache) and no
argparse for ``--config FILE``, ~0.14 at ``event=started`` (imports ~0.12).

For counts that do not depend on the machine's load, run a daemon under callgrind, e.g.
``valgrind --tool=callgrind python -c "import ipop.tools.ipopd"`` (total Ir).

``--lab N`` (root) measures whole starts instead: a generated lab of N ipopd hosts (no router
clusters), every daemon started at once as in issue 14's cold start, and for each the CPU
seconds it had spent at the events it logs (``cpu_s=``): ``started`` (imports, config,
bundle and certificate, sockets, TAP), ``dht_joined`` and ``ready`` (its vIP and names
claimed), medians printed with the phases between them. The lab's imports probe above splits
``started`` into imports and the rest. N daemons on this machine's cores wait on each other,
so the later phases grow with N (they serve each other's joins).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from ipop.tools.lab.ipopnet import compile_bytecode

DAEMONS = {"ipopd": "ipop.tools.ipopd", "ipop-router": "ipop.tools.routerd"}

# Imports ``module`` and prints {"cpu_s", "dataclass_s", "re_s"}: the process's CPU so far and
# the parts of it spent in dataclasses' class processing and in compiling regular expressions
# (parse and code generation: what re does for a pattern ipop.tools.recache did not find).
_PROBE = """
import json, resource, time, dataclasses
from re import _compiler, _parser
_spent = {{"dataclass_s": 0.0, "re_s": 0.0}}
def _timed(orig, what):
    def timed(*args, **kwargs):
        t = time.process_time()
        try:
            return orig(*args, **kwargs)
        finally:
            _spent[what] += time.process_time() - t
    return timed
dataclasses._process_class = _timed(dataclasses._process_class, "dataclass_s")
_parser.parse = _timed(_parser.parse, "re_s")
_compiler._code = _timed(_compiler._code, "re_s")
import {module}
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"cpu_s": r.ru_utime + r.ru_stime, **_spent}}))
"""

_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")


def _probe(name: str, module: str) -> dict[str, float]:
    """One clean interpreter's numbers, run as a script called ``name`` (the daemon's console
    script's name): ipop.tools starts a daemon's imports as the daemon's own (the collector
    off), as it would not for ``python -c``."""
    with tempfile.TemporaryDirectory(prefix="ipop-startcost-") as tmp:
        script = Path(tmp) / name
        script.write_text(_PROBE.format(module=module))
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, check=True
        )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _heaviest(module: str, top: int) -> list[tuple[str, float]]:
    """Top-level packages by the self time -X importtime gives them (ms, one run)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    per: Counter[str] = Counter()
    for m in _IMPORTTIME.finditer(out.stderr):
        name = m.group(2)
        parts = name.split(".")
        per[".".join(parts[:2]) if parts[0] == "ipop" else parts[0]] += int(m.group(1))
    return [(name, us / 1000) for name, us in per.most_common(top)]


def measure(runs: int, top: int) -> dict[str, dict[str, object]]:
    compile_bytecode()  # as the lab does before it starts daemons
    report: dict[str, dict[str, object]] = {}
    for name, module in DAEMONS.items():
        probes = [_probe(name, module) for _ in range(runs)]
        report[name] = {
            "import_cpu_s": round(statistics.median(p["cpu_s"] for p in probes), 3),
            "dataclass_cpu_s": round(statistics.median(p["dataclass_s"] for p in probes), 3),
            "re_compile_cpu_s": round(statistics.median(p["re_s"] for p in probes), 4),
            "heaviest_ms": _heaviest(module, top),
        }
    return report


# The events ipop.aio.daemon logs on the way to ready, with the process's CPU seconds so far.
LAB_EVENTS = ("started", "dht_joined", "ready")
_EVENT_CPU = re.compile(r"event=(started|dht_joined|ready) .*?cpu_s=([0-9.]+)")


def event_cpu(log: str) -> dict[str, float]:
    """event -> the CPU seconds the daemon had spent when it first logged it."""
    out: dict[str, float] = {}
    for m in _EVENT_CPU.finditer(log):
        out.setdefault(m.group(1), float(m.group(2)))
    return out


def lab_phases(per_daemon: list[dict[str, float]]) -> dict[str, float]:
    """Median CPU seconds at each event and spent between them (exec→started,
    started→dht_joined, dht_joined→ready), over the daemons that logged all three."""
    full = [d for d in per_daemon if all(e in d for e in LAB_EVENTS)]
    if not full:
        return {}
    out = {f"at_{e}": round(statistics.median(d[e] for d in full), 3) for e in LAB_EVENTS}
    prev = None
    for e in LAB_EVENTS:
        key = f"to_{e}" if prev is None else f"{prev}_to_{e}"
        out[key] = round(statistics.median(d[e] - (d[prev] if prev else 0.0) for d in full), 3)
        prev = e
    out["daemons"] = len(full)
    return out


def measure_lab(nodes: int, *, ready_s: float = 120.0) -> dict[str, object]:
    """Start ``nodes`` ipopd daemons at once in a lab (root) and read their event CPU."""
    from ipop.tools.lab.generated import scaled_topology
    from ipop.tools.lab.ipopnet import IpopNet
    from ipop.tools.lab.lab import Lab

    topology = scaled_topology(nodes, clusters=0)
    with (
        tempfile.TemporaryDirectory(prefix="ipop-startcost-") as tmp,
        Lab(topology, workdir=Path(tmp)) as lab,
    ):
        lab.up()
        net = IpopNet(lab)
        net.up_all(timeout_s=ready_s)
        logs = {h.name: net.files(h).log.read_text(errors="replace") for h in lab.hosts}
    per = {name: event_cpu(text) for name, text in logs.items()}
    return {"phases": lab_phases(list(per.values())), "per_daemon": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="start_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--top", type=int, default=8, help="packages listed by import self time")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--lab", type=int, metavar="N", help="start N daemons at once in a lab")
    args = ap.parse_args(argv)
    if args.lab:
        lab = measure_lab(args.lab)
        imports = measure(args.runs, 0)["ipopd"]["import_cpu_s"]
        if args.json:
            print(json.dumps({"imports_cpu_s": imports, **lab}, indent=2))
            return 0
        ph = lab["phases"]
        assert isinstance(ph, dict)
        print(
            f"ipopd x{args.lab} at once: median CPU s at started {ph.get('at_started')}, "
            f"dht_joined {ph.get('at_dht_joined')}, ready {ph.get('at_ready')}"
        )
        print(
            f"  imports {imports} (alone, median of {args.runs}); exec→started "
            f"{ph.get('to_started')}, started→dht_joined {ph.get('started_to_dht_joined')}, "
            f"dht_joined→ready {ph.get('dht_joined_to_ready')}"
        )
        return 0
    report = measure(args.runs, args.top)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, r in report.items():
        print(
            f"{name}: import {r['import_cpu_s']} CPU s (median of {args.runs}), "
            f"dataclass creation {r['dataclass_cpu_s']} s, regex compiles {r['re_compile_cpu_s']} s"
        )
        heaviest = r["heaviest_ms"]
        assert isinstance(heaviest, list)
        print("  " + ", ".join(f"{pkg} {ms:.0f} ms" for pkg, ms in heaviest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
