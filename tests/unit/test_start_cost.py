"""What a daemon's start costs in CPU: what it imports and what it compiles.

Each check runs a clean interpreter (a subprocess), so modules this test process already
imported cannot hide an import. 32 daemons starting at once on two cores waited on exactly
these costs (issue 14's cold start).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ipop.tools import starting_daemon
from ipop.tools.bench import start_cost
from ipop.tools.ipopd import config_arg
from ipop.tools.lab.ipopnet import compile_bytecode

DAEMONS = ("ipop.tools.ipopd", "ipop.tools.routerd")

# Prints the source files the import had to compile (no usable bytecode) as a JSON list.
_COMPILED = """
import importlib.machinery, json, sys
compiled = []
_orig = importlib.machinery.SourceFileLoader.source_to_code
def _count(self, data, path, *args, **kwargs):
    compiled.append(str(path))
    return _orig(self, data, path, *args, **kwargs)
importlib.machinery.SourceFileLoader.source_to_code = _count
import {module}
print(json.dumps([p for p in compiled if "/ipop/" in p or "/router/" in p or "/tools/" in p
                  or "/dhcp_dns/" in p]))
"""


def _run(code: str) -> str:
    # As in the lab's environment: no bytecode written by the import itself.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("module", DAEMONS)
def test_after_compile_bytecode_a_daemon_compiles_nothing_at_start(module: str) -> None:
    """The lab compiles once (IpopNet.prepare); no daemon compiles an ipop module itself,
    the modules of the folders linked into ipop/ (router, dhcp_dns, tools) included."""
    assert compile_bytecode()
    compiled = json.loads(_run(_COMPILED.format(module=module)))
    assert compiled == []


# Prints how many dataclass methods the import compiled and found in ipop.tools.classcache.
_CLASSES = """
import json, {module}
from ipop.tools import classcache
print(json.dumps(classcache.stats()))
"""


@pytest.mark.parametrize("module", DAEMONS)
def test_after_compile_bytecode_a_daemon_compiles_no_dataclass_method(module: str) -> None:
    """compile_bytecode also writes the dataclass methods' code: a daemon finds every one of
    them (~0.07 CPU s of compiles saved at each start), whichever daemon the lab starts."""
    assert compile_bytecode()
    stats = json.loads(_run(_CLASSES.format(module=module)))
    assert stats["misses"] == 0 and stats["hits"] > 500


# Prints how many regular expressions the import compiled and found in ipop.tools.recache.
_PATTERNS = """
import json, {module}
from ipop.tools import recache
print(json.dumps(recache.stats()))
"""


@pytest.mark.parametrize("module", DAEMONS)
def test_after_compile_bytecode_a_daemon_compiles_no_regular_expression(module: str) -> None:
    """compile_bytecode also writes the code of the daemons' regular expressions: a daemon
    finds every one (~0.015 CPU s saved at each start, most of it cryptography.x509's)."""
    assert compile_bytecode()
    stats = json.loads(_run(_PATTERNS.format(module=module)))
    assert stats["misses"] == 0 and stats["hits"] > 30


# Prints the ipop dataclasses the import created without a docstring of their own.
_UNDOCUMENTED = """
import dataclasses, json
_orig = dataclasses._process_class
found = []
def _check(cls, *args, **kwargs):
    if cls.__doc__ is None and cls.__module__.startswith("ipop."):
        found.append(f"{{cls.__module__}}.{{cls.__qualname__}}")
    return _orig(cls, *args, **kwargs)
dataclasses._process_class = _check
import {module}
print(json.dumps(found))
"""


@pytest.mark.parametrize("module", DAEMONS)
def test_every_dataclass_a_daemon_creates_has_a_docstring(module: str) -> None:
    """Without one, ``dataclasses`` writes one from ``inspect.signature`` of the class: 30
    classes cost ~6.9 M instructions (~1%) of each start."""
    assert json.loads(_run(_UNDOCUMENTED.format(module=module))) == []


# Libraries a daemon must not import at start, with why.
NOT_AT_START = {
    # ~0.07 s of CPU to import (its __init__ loads every netlink family); the daemon's few
    # netlink requests are ipop.aio.rtnl.
    "pyroute2": "ipop.aio.rtnl makes the daemon's netlink requests",
    # Tests and lab tools build packets with it; the data plane parses bytes itself.
    "scapy": "packets are built and parsed by ipop.vnet",
}


# Modules a daemon imports only when its config asks for what they do, with why.
ONLY_WHEN_ASKED = {
    "ipop.aio.localhttp": "[metrics] or [web] listeners only",
    "ipop.webpage": "the [web] page only",
    "ipop.overlaymap": "the [web] page's map only",
    # With bz2 and lzma, ~4 ms: ipop.aio.sysdns needs shutil.which only where resolved runs.
    "shutil": "dns.system registration only",
}


@pytest.mark.parametrize("module", DAEMONS)
def test_a_daemon_does_not_import_heavy_libraries(module: str) -> None:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    modules = set(json.loads(_run(code)))
    loaded = {name.split(".")[0] for name in modules}
    assert {name: NOT_AT_START[name] for name in NOT_AT_START.keys() & loaded} == {}
    assert {name: ONLY_WHEN_ASKED[name] for name in ONLY_WHEN_ASKED.keys() & modules} == {}


# Runs a daemon's main() as its service manager would (its config missing: exit 2 right after
# the command line) and prints [exit code, the modules above that it imported].
_MAIN = """
import json, sys
import {module} as daemon
code = daemon.main({argv!r})
print(json.dumps([code, sorted({{"argparse", "shutil", "gettext"}} & set(sys.modules))]))
"""


@pytest.mark.parametrize("module", DAEMONS)
def test_a_daemon_reads_its_config_argument_without_argparse(module: str, tmp_path: Path) -> None:
    """``--config FILE`` needs no argparse: it and the shutil, bz2 and lzma its help formatter
    imports were ~22 M instructions of each daemon's start (issue 14's cold start)."""
    argv = ["--config", str(tmp_path / "missing.toml")]
    assert json.loads(_run(_MAIN.format(module=module, argv=argv))) == [2, []]


@pytest.mark.parametrize(
    ("argv", "config"),
    [
        (["--config", "a.toml"], "a.toml"),
        (["--config=a.toml"], "a.toml"),
        (["--config", ""], ""),
        (["--conf", "a.toml"], "a.toml"),  # argparse's abbreviation, kept
        (["--config=-a.toml"], "-a.toml"),
    ],
)
def test_config_arg_takes_what_argparse_takes(argv: list[str], config: str) -> None:
    assert config_arg("ipopd", "d", "h", argv) == config


@pytest.mark.parametrize(
    "argv", [[], ["--config"], ["--config", "-a.toml"], ["--config", "a", "b"], ["--help"]]
)
def test_config_arg_leaves_the_rest_to_argparse(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        config_arg("ipopd", "the ipop node daemon", "node TOML", argv)
    out = capsys.readouterr()
    assert "usage: ipopd [-h] --config CONFIG" in out.out + out.err


def test_a_daemon_with_web_and_metrics_gets_its_pages() -> None:
    """The lazily imported listeners still come up when configured."""
    code = (
        "import json, sys\n"
        "from ipop.config import MetricsConfig, WebConfig\n"
        "from ipop.tools.ipopd import http_servers\n"
        "from ipop.types import Endpoint\n"
        "servers = http_servers(None, MetricsConfig(listen=Endpoint('127.0.0.1', 9)),\n"
        "                       WebConfig(listen=Endpoint('127.0.0.1', 10)))\n"
        "print(json.dumps([[str(s.listen) for s in servers], 'ipop.webpage' in sys.modules]))\n"
    )
    assert json.loads(_run(code)) == [["127.0.0.1:9", "127.0.0.1:10"], True]


def test_start_cost_bench_reports_both_daemons() -> None:
    report = start_cost.measure(runs=1, top=3)
    assert set(report) == {"ipopd", "ipop-router"}
    for r in report.values():
        assert isinstance(r["import_cpu_s"], float) and r["import_cpu_s"] > 0
        assert isinstance(r["dataclass_cpu_s"], float) and 0 < r["dataclass_cpu_s"] < 10
        # compile_bytecode wrote the regex table: next to nothing is compiled.
        assert isinstance(r["re_compile_cpu_s"], float) and 0 <= r["re_compile_cpu_s"] < 0.005
        assert isinstance(r["heaviest_ms"], list) and len(r["heaviest_ms"]) == 3


# Prints whether the collector is on once ipop.tools is imported, then after imports_done and
# how many objects that froze.
_GC = """
import gc, json, sys
import ipop.tools
during = gc.isenabled()
ipop.tools.imports_done()
print(json.dumps([during, gc.isenabled(), gc.get_freeze_count() > 1000]))
"""


@pytest.mark.parametrize("name", ["ipopd", "ipop-router"])
def test_a_daemon_imports_without_the_collector_then_freezes_them(
    name: str, tmp_path: Path
) -> None:
    """Run as the daemon's console script is: the collector is off during the imports and
    on after imports_done, with what they made frozen (~80 collections fewer at start)."""
    script = tmp_path / name
    script.write_text(_GC)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [False, True, True]


def test_other_programs_keep_the_collector_on(tmp_path: Path) -> None:
    script = tmp_path / "ipop-config"
    script.write_text(_GC)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [True, True, False]


@pytest.mark.parametrize(
    ("orig_argv", "argv0", "daemon"),
    [
        (["python", "-m", "ipop.tools.ipopd", "--config", "a"], "-m", True),
        (["python", "-X", "importtime", "-m", "ipop.tools.routerd"], "-m", True),
        (["python", "-m", "ipop.tools.cli", "status"], "-m", False),
        (["python", "-m"], "-m", False),
        (["/usr/local/bin/ipopd", "--config", "a"], "/usr/local/bin/ipopd", True),
        (["/usr/bin/python3", "/usr/local/bin/ipop-router"], "/usr/local/bin/ipop-router", True),
        (["pytest", "-q"], "pytest", False),
    ],
)
def test_starting_daemon_knows_the_daemons_command_lines(
    orig_argv: list[str], argv0: str, daemon: bool
) -> None:
    assert starting_daemon(orig_argv, argv0) is daemon


def test_start_cost_lab_reads_each_event_cpu_and_the_phases_between() -> None:
    log = (
        "ts=a level=info logger=ipopd event=started node=1 cpu_s=0.150\n"
        "ts=b level=info logger=ipopd event=dht_joined after_s=0.5 cpu_s=0.190\n"
        "ts=c level=info logger=ipopd event=ready vip=100.64.0.2 after_s=2.1 cpu_s=0.300\n"
        "ts=d level=info logger=ipopd event=ready vip=100.64.0.2 after_s=9.0 cpu_s=0.900\n"
    )
    first = start_cost.event_cpu(log)
    assert first == {"started": 0.15, "dht_joined": 0.19, "ready": 0.3}
    other = {"started": 0.17, "dht_joined": 0.2, "ready": 0.4}
    phases = start_cost.lab_phases([first, other, {"started": 0.1}])  # the last never ready
    assert phases == {
        "at_started": 0.16,
        "at_dht_joined": 0.195,
        "at_ready": 0.35,
        "to_started": 0.16,
        "started_to_dht_joined": 0.035,
        "dht_joined_to_ready": 0.155,
        "daemons": 2,
    }
    assert start_cost.lab_phases([{"started": 0.1}]) == {}
