"""Fixtures for the namespace lab tests (root only): labs with a unique prefix per run, always
torn down, and the small UDP programs the NAT checks run inside the namespaces."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from ipop.tools.lab.lab import Lab, cleanup_stale, process_prefix
from ipop.tools.lab.topology import Topology, default_topology

ECHO_PORT = 3478
ALT_PORT = 3479
READY_TIMEOUT_S = 5.0

# Reflector: answers {"id", "via"} with the source address it saw, from socket number "via".
ECHO_PY = r"""
import json, select, socket, sys
socks = []
for a in sys.argv[1:]:
    h, p = a.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((h, int(p)))
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data, addr = s.recvfrom(2048)
        try:
            m = json.loads(data)
            out = socks[int(m.get("via", socks.index(s)))]
        except (ValueError, IndexError, TypeError):
            continue
        out.sendto(json.dumps({"id": m.get("id"), "seen": "%s:%d" % addr}).encode(), addr)
"""

# Prober: one socket on a fixed local port; for each [dest, via] resends every 0.2 s until the
# answer or the per-request deadline; prints [{"seen", "from"} | null, ...] as JSON.
PROBE_PY = r"""
import json, socket, sys, time
lport, reqs, wait = int(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", lport))
s.settimeout(0.2)
out = []
for i, (dst, via) in enumerate(reqs):
    h, p = dst.rsplit(":", 1)
    got, end = None, time.monotonic() + wait
    while got is None and time.monotonic() < end:
        s.sendto(json.dumps({"id": i, "via": via}).encode(), (h, int(p)))
        try:
            while got is None:
                data, addr = s.recvfrom(2048)
                m = json.loads(data)
                if m.get("id") == i:
                    got = {"seen": m["seen"], "from": "%s:%d" % addr}
        except socket.timeout:
            pass
    out.append(got)
print(json.dumps(out))
"""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped by SIGTERM (``timeout``, a CI job cancelled) unwinds like Ctrl-C, so every
    # lab fixture's teardown still runs: Python's default for SIGTERM is to die on the spot,
    # which left namespaces and daemons behind.
    signal.signal(signal.SIGTERM, _interrupt)


def _skip_unless_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: builds network namespaces")
    for tool in ("ip", "iptables", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


def wait_for_file_text(path: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not in {path} within {timeout_s} s")


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[[Topology, str], Lab]]:
    """Builds labs (topology, one-letter tag) that are torn down when the test ends."""
    _skip_unless_root()
    made: list[Lab] = []

    def make(topology: Topology, tag: str) -> Lab:
        lab = Lab(topology, workdir=tmp_path / tag, prefix=process_prefix(tag))
        made.append(lab)
        lab.up()
        return lab

    try:
        yield make
    finally:
        for lab in made:
            lab.down()
            cleanup_stale(lab.prefix)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The default topology with UDP reflectors on pub1 (two ports) and pub2."""
    _skip_unless_root()
    prefix = process_prefix("m")
    the_lab = Lab(default_topology(), workdir=tmp_path_factory.mktemp("lab"), prefix=prefix)
    try:
        the_lab.up()
        for name, ports in (("pub1", (ECHO_PORT, ALT_PORT)), ("pub2", (ECHO_PORT,))):
            host = the_lab.host(name)
            log = the_lab.host_dir(host) / "echo.log"
            binds = [f"{host.ip}:{p}" for p in ports]
            the_lab.spawn(host, [sys.executable, "-c", ECHO_PY, *binds], log_path=log)
            wait_for_file_text(log, "ready", READY_TIMEOUT_S)
        yield the_lab
    finally:
        the_lab.down()
        cleanup_stale(prefix)
