"""Thin wrappers over ``ip``, ``iptables``, ``nft`` and ``sysctl``, each run with a timeout.

This module owns how the lab talks to the kernel: every call is a list of arguments (no
shell), checked, bounded by a timeout, and scoped to a named network namespace. Nothing here
ever touches the machine's own (root) namespace: veth pairs are created directly inside their
namespaces (``ip -n A link add X type veth peer name Y netns B``), so even interface names only
need to be unique per namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ipop.errors import IpopError, LocalProtocolError

NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")
IFNAMSIZ = 15  # the kernel's interface-name limit, without the NUL
CMD_TIMEOUT_S = 15.0


class LabCommandError(IpopError):
    """A command the lab ran failed; carries what was run and what it printed."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} -> exit {returncode}: {stderr.strip()}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed to run inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *argv]


def run(
    argv: Sequence[str],
    *,
    ns: str | None = None,
    timeout: float = CMD_TIMEOUT_S,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    full = in_ns(ns, argv) if ns is not None else list(argv)
    proc = subprocess.run(
        full, capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and proc.returncode != 0:
        raise LabCommandError(full, proc.returncode, proc.stderr)
    return proc


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n NS ARGS``: faster than ``ip netns exec`` (no fork of a shell-like child)."""
    return run(["ip", "-n", ns, *args], check=check)


def _ifname(name: str) -> str:
    if not 0 < len(name) <= IFNAMSIZ:
        raise LocalProtocolError(f"interface name {name!r} longer than {IFNAMSIZ} characters")
    return name


# ---------------------------------------------------------------- namespaces


def add_ns(name: str) -> None:
    run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")


def del_ns(name: str) -> None:
    run(["ip", "netns", "del", name], check=False)


def list_ns(prefix: str) -> list[str]:
    """Names of existing namespaces starting with ``prefix``."""
    if not prefix:
        raise LocalProtocolError("refusing to list namespaces with an empty prefix")
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def ns_pids(name: str) -> list[int]:
    """PIDs of processes whose network namespace is ``name``."""
    proc = run(["ip", "netns", "pids", name], check=False)
    return [int(x) for x in proc.stdout.split() if x.isdigit()]


def kill_ns_processes(name: str, *, grace_s: float = 2.0) -> None:
    """SIGTERM every process inside ``name``, SIGKILL what is left after ``grace_s``.

    Only lab namespaces (unique prefix) are ever passed here, so everything inside was started
    by the lab or through it.
    """
    pids = ns_pids(name)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if pid_alive(p)]
        if pids:
            time.sleep(0.02)
    for pid in ns_pids(name):
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


# ---------------------------------------------------------------- processes


def pid_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it is gone.

    Recorded with every spawned PID so a later ``down`` never signals a recycled PID.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); starttime is field 22.
    return int(fields[19])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` runs (zombies count as dead) and, if given, started at ``start_time``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


# ---------------------------------------------------------------- links and addresses


def add_bridge(ns: str, name: str) -> None:
    ip(ns, "link", "add", _ifname(name), "type", "bridge")
    ip(ns, "link", "set", name, "up")


def add_veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair with one end in each namespace, never visible in the root namespace."""
    ip(
        ns_a,
        "link",
        "add",
        _ifname(name_a),
        "type",
        "veth",
        "peer",
        "name",
        _ifname(name_b),
        "netns",
        ns_b,
    )


def set_master(ns: str, ifname: str, bridge: str) -> None:
    ip(ns, "link", "set", ifname, "master", bridge)


def link_up(ns: str, ifname: str) -> None:
    ip(ns, "link", "set", ifname, "up")


def add_addr(ns: str, ifname: str, cidr: str) -> None:
    ip(ns, "addr", "add", cidr, "dev", ifname)


def add_route(ns: str, dest: str, via: str) -> None:
    ip(ns, "route", "add", dest, "via", via)


def sysctl(ns: str, key: str, value: str | int) -> None:
    """Set a per-namespace sysctl (net.* keys are per network namespace)."""
    run(["sysctl", "-qw", f"{key}={value}"], ns=ns)


def iptables(ns: str, args: Sequence[str]) -> None:
    run(["iptables", "-w", "5", *args], ns=ns)


def nft_apply(ns: str, ruleset: str) -> None:
    run(["nft", "-f", "-"], ns=ns, input=ruleset)
