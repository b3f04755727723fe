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
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from collections import Counter

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


def _probe(module: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
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
        probes = [_probe(module) for _ in range(runs)]
        report[name] = {
            "import_cpu_s": round(statistics.median(p["cpu_s"] for p in probes), 3),
            "dataclass_cpu_s": round(statistics.median(p["dataclass_s"] for p in probes), 3),
            "re_compile_cpu_s": round(statistics.median(p["re_s"] for p in probes), 4),
            "heaviest_ms": _heaviest(module, top),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="start_cost", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--top", type=int, default=8, help="packages listed by import self time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
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
