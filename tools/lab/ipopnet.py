"""The ipop virtual network running on a lab: one CA, a bundle and a config per host, ipopd.

:class:`IpopNet` owns what ipop puts on a :class:`ipop.tools.lab.lab.Lab`: ``prepare()`` makes the
network CA and every host's bundle with ``ipop-config`` (in-process, the same code as the CLI)
and writes each host's node TOML into the lab's per-host directory; ``start(host)`` runs a real
``ipopd`` in the host's namespace (its PID recorded by the lab, so ``down`` always ends it) and
points the namespace's resolver at the virtual gateway, where ipopd answers DNS for ``*.ipop``;
``wait_ready`` polls the host's control socket until the daemon holds a virtual IP.

Router clusters: a cluster's router host runs ``ipop-router`` (``ipop.tools.routerd``) on the
cluster's LAN bridge instead of ``ipopd``; its plain hosts run only a real DHCP client
(``start_plain``: ``udhcpc`` or ``dhclient``, with :data:`DHCP_SCRIPT` applying the lease with
``ip``), and ``wait_lease`` polls their interface for the leased address.
"""

from __future__ import annotations

import compileall
import contextlib
import io
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import ipop
from ipop.aio.control import ControlClient, ControlError
from ipop.status import Status
from ipop.tools import config_cli
from ipop.tools.lab.lab import CLUSTER_BRIDGE, Host, Lab

__all__ = ["DEFAULT_SUBNET", "DHCP_SCRIPT", "IPOP_PORT", "IpopNet", "NotReady", "compile_bytecode"]

IPOP_PORT = 5800
DEFAULT_SUBNET = IPv4Network("100.64.0.0/10")
POLL_S = 0.05
ROUTER_DHCP_LEASE_S = 120
# Where every daemon serves its metrics when the lab enables them: each host has a namespace,
# and so a loopback, of its own (`ipop-lab exec HOST -- curl -s 127.0.0.1:9580/metrics`).
METRICS_LISTEN = "127.0.0.1:9580"
# And its status page and map (`ipop-lab exec HOST -- curl -s 127.0.0.1:9581/map.svg`).
WEB_LISTEN = "127.0.0.1:9581"
_INET = re.compile(r"inet ([0-9.]+)/")

# Applies a lease from udhcpc ("$1" bound/renew/deconfig, $ip $subnet $mtu) or dhclient
# ($reason, $new_ip_address ...): only the address and the MTU, with iproute2.
DHCP_SCRIPT = r"""#!/bin/sh
if [ -n "$reason" ]; then
  case "$reason" in
    BOUND|RENEW|REBIND|REBOOT)
      ev=bound; ip="$new_ip_address"; subnet="$new_subnet_mask"; mtu="$new_interface_mtu" ;;
    PREINIT) ev=up ;;
    EXPIRE|FAIL|RELEASE|STOP) ev=deconfig ;;
    *) ev=none ;;
  esac
else
  ev="$1"
fi
case "$ev" in
  bound|renew)
    if ! ip -4 -o addr show dev "$interface" | grep -q "inet $ip/"; then
      ip addr flush dev "$interface"
      ip addr add "$ip/$subnet" dev "$interface"
    fi
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    ;;
  up) ip link set dev "$interface" up ;;
  deconfig) ip link set dev "$interface" up; ip addr flush dev "$interface" ;;
esac
exit 0
"""


def compile_bytecode() -> bool:
    """Write the bytecode (``__pycache__``) of every ipop module, as ``pip install`` does.

    Daemons then load it instead of compiling ~130 modules from source at every start: with
    ``PYTHONDONTWRITEBYTECODE`` set (or an editable install never imported before) each daemon
    spent ~0.09 s of CPU on that, a quarter of its start, and 32 daemons starting at once on
    two cores waited for each other's compiles. Only files whose source changed are
    compiled again. False when some file could not be compiled or written (the daemons then
    compile it themselves, as before).
    """
    root = Path(ipop.__file__).parent
    ok = bool(compileall.compile_dir(root, quiet=1))
    # compile_dir skips symlinked folders: router/, dhcp_dns/ and tools/ are linked into ipop/
    # in a source tree (pyproject.toml).
    for link in sorted(d for d in root.iterdir() if d.is_symlink() and d.is_dir()):
        ok = bool(compileall.compile_dir(link, quiet=1)) and ok
    return write_start_tables() and ok


# A fresh interpreter's: ipop.tools.classcache.write_for_daemons says why.
_WRITE_TABLE_PY = (
    "import sys\n"
    "from ipop.tools import classcache\n"
    "sys.exit(0 if classcache.write_for_daemons() else 1)\n"
)


def write_start_tables() -> bool:
    """Write the compiled code of the daemons' dataclass methods (:mod:`ipop.tools.classcache`)
    and regular expressions (:mod:`ipop.tools.recache`) where the daemons load it, as the
    bytecode above: ~0.08 and ~0.015 CPU s less for each at start. False when it could not be
    written (the daemons then compile those, as before)."""
    res = subprocess.run(
        [sys.executable, "-c", _WRITE_TABLE_PY],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return res.returncode == 0


class NotReady(RuntimeError):
    """A daemon did not get its virtual IP in time (the message names the host and its log)."""


@dataclass(frozen=True, slots=True)
class HostFiles:
    config: Path
    bundle: Path
    socket: Path
    log: Path
    state_dir: Path


def tap_name(index: int) -> str:
    """A lab daemon's TAP for its ``index``-th network (0: its first; ``also``'s after)."""
    return f"ipop{index}"


class IpopNet:
    def __init__(
        self,
        lab: Lab,
        *,
        network: str = "labnet",
        subnet: IPv4Network = DEFAULT_SUBNET,
        log_level: str = "info",
        metrics: bool = False,
        web: bool = False,
        overlay: str | None = None,
        overlay_only: Collection[str] = (),
        networks: Mapping[str, str] | None = None,
        also: Mapping[str, Sequence[str]] | None = None,
        subnets: Mapping[str, IPv4Network] | None = None,
        suffixes: Mapping[str, str] | None = None,
    ) -> None:
        """``overlay``: put the network on an overlay of that name with a CA of its own
        (``ipop-config overlay init``), so every bundle holds two certificates;
        ``overlay_only``: these hosts get overlay-only bundles (``ipop-config overlay node``):
        they route, relay and store records, and hold no address; ``networks``: host -> the
        network it is a member of, for hosts not in ``network`` (each such network is made on
        the overlay with the same subnet: ranges of different networks may overlap); ``also``:
        host -> more networks it is a member of at once (its one key certified in each with
        ``ipop-config node --key``; a ``[[network]]`` table and a TAP ``ipop1``, ``ipop2``...
        each); ``subnets``: network -> its range where it is not ``subnet`` (ranges apart);
        ``suffixes``: network -> its DNS suffix where it is not ``ipop``."""
        if (overlay_only or networks or also) and overlay is None:
            raise ValueError("overlay-only hosts and other networks need an overlay")
        self.lab = lab
        self.overlay = overlay
        self.overlay_only = frozenset(overlay_only)
        self.networks = dict(networks or {})
        self.also = {host: tuple(nets) for host, nets in (also or {}).items()}
        self.subnets = dict(subnets or {})
        self.suffixes = dict(suffixes or {})
        self.metrics = metrics
        self.web = web
        self.network = network
        self.subnet = subnet
        self.gateway = IPv4Address(int(subnet.network_address) + 1)
        self.log_level = log_level
        self.started_at: dict[str, float] = {}
        # host -> its log's size when start() ran the daemon: where its lines begin.
        self._log_from: dict[str, int] = {}
        self._home = lab.workdir / "ca"

    def files(self, host: Host | str) -> HostFiles:
        d = self.lab.host_dir(host)
        return HostFiles(
            config=d / "node.toml",
            bundle=d / "bundle.toml",
            socket=d / "ipopd.sock",
            log=d / "ipopd.log",
            state_dir=d / "state",
        )

    def _config_cli(self, argv: list[str]) -> None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = config_cli.main(["--home", str(self._home), *argv])
        if code != 0:
            raise RuntimeError(f"ipop-config {' '.join(argv)} failed: {err.getvalue().strip()}")

    def revoke(self, network: str, name: str) -> str:
        """Revoke host ``name``'s certificate of ``network`` (``ipop-config revoke``); the
        network's new CRL, PEM, for ``ipop crl push``."""
        out = self._home / f"{network}-crl.pem"
        self._config_cli(["revoke", network, name, "--out", str(out)])
        return out.read_text()

    def prepare(self, *, addressing: dict[str, str] | None = None) -> None:
        """CA, bundles and node configs for every host (``addressing``: host → "dhcp"), and
        the ipop bytecode the daemons load (:func:`compile_bytecode`).

        A new lab in a workdir an earlier lab used (``ipop-lab up``, ``down``, ``up``) starts
        from nothing: the earlier lab's CA, daemon state and logs are removed first.
        """
        shutil.rmtree(self._home, ignore_errors=True)
        compile_bytecode()
        for h in self.lab.hosts:
            f = self.files(h)
            shutil.rmtree(f.state_dir, ignore_errors=True)
            for stale in (f.config, f.bundle, f.log, f.socket):
                stale.unlink(missing_ok=True)
        boots = [a for b in self.lab.bootstraps for a in ("--bootstrap", f"{b.ip}:{IPOP_PORT}")]
        on: list[str] = []
        if self.overlay is not None:
            self._config_cli(["overlay", "init", self.overlay])
            on = ["--overlay", self.overlay]
        more = {n for nets in self.also.values() for n in nets}
        for net in sorted({self.network, *self.networks.values(), *more}):
            subnet = self.subnets.get(net, self.subnet)
            named = ["--dns-suffix", self.suffixes[net]] if net in self.suffixes else []
            self._config_cli(["init", net, "--subnet", str(subnet), *named, *boots, *on])
        for h in self.lab.hosts:
            f = self.files(h)
            # A router's certificate grants its LAN hosts' records (router.max_hosts' default).
            role = ["--router", "--max-hosts", "1024"] if self.lab.is_router(h) else []
            if h.name in self.overlay_only:
                assert self.overlay is not None
                self._config_cli(
                    ["overlay", "node", self.overlay, h.name, "--out", str(f.bundle), *boots]
                )
            else:
                net = self.networks.get(h.name, self.network)
                named = ["--hostname", h.name, "--out", str(f.bundle), *role]
                self._config_cli(["node", net, h.name, *named])
            mode = (addressing or {}).get(h.name, "static")
            lines = [
                f'bundle = "{f.bundle}"',
                f'state_dir = "{f.state_dir}"',
                f'listen = "0.0.0.0:{IPOP_PORT}"',
                f'log_level = "{self.log_level}"',
                "[tap]",
                'name = "ipop0"',
                f'addressing = "{mode}"',
                "[control]",
                f'socket = "{f.socket}"',
                # Never the machine's resolver: a lab daemon's split DNS is a test's to set up
                # in its own namespace (tests/lab/test_splitdns_lab.py).
                "[dns]",
                'system = "off"',
            ]
            if h.nat_kind is None and h.lan_router is None:
                # Public hosts (the bootstrap first) are the lab's STUN references: netcheck
                # asks the bootstrap and its linked peers; nodes behind NATs answer nothing.
                lines += ["[stun]", "serve = true"]
                if h.extra_ips:
                    # A second address serves STUN CHANGE-REQUEST (netcheck's filtering tests).
                    lines += [f'alternate = "{h.extra_ips[0]}"']
            if self.metrics:
                lines += ["[metrics]", f'listen = "{METRICS_LISTEN}"']
            if self.web:
                lines += ["[web]", f'listen = "{WEB_LISTEN}"']
            if self.lab.is_router(h):
                lines += [
                    "[router]",
                    f'interface = "{CLUSTER_BRIDGE}"',
                    f"dhcp_lease_s = {ROUTER_DHCP_LEASE_S}",
                ]
            for i, other in enumerate(self.also.get(h.name, ()), start=1):
                path = f.bundle.with_name(f"bundle-{other}.toml")
                named = ["--hostname", h.name, "--key", str(f.bundle), "--out", str(path)]
                self._config_cli(["node", other, h.name, *named])
                lines += ["[[network]]", f'bundle = "{path}"', f'tap = "{tap_name(i)}"']
            f.config.write_text("\n".join([*lines, ""]))
        script = self.lab.workdir / "dhcp-script.sh"
        script.write_text(DHCP_SCRIPT)
        script.chmod(0o755)

    def start(self, host: Host | str) -> None:
        h = self.lab.host(host)
        f = self.files(h)
        # Its first network's gateway: ranges of other networks may lie apart.
        subnet = self.subnets.get(self.networks.get(h.name, self.network), self.subnet)
        self.lab.write_resolv_conf(h, IPv4Address(int(subnet.network_address) + 1))
        self.started_at[h.name] = time.monotonic()
        self._log_from[h.name] = f.log.stat().st_size if f.log.exists() else 0
        module = "ipop.tools.routerd" if self.lab.is_router(h) else "ipop.tools.ipopd"
        self.lab.spawn(h, [sys.executable, "-m", module, "--config", str(f.config)], log_path=f.log)

    # --- plain hosts of router clusters -------------------------------------------------------

    def start_plain(self, host: Host | str) -> None:
        """Run the plain host's real DHCP client (foreground, renewing) in its namespace."""
        h = self.lab.host(host)
        d = self.lab.host_dir(h)
        script = str(self.lab.workdir / "dhcp-script.sh")
        self.lab.write_resolv_conf(h, self.gateway)
        if h.dhcp_client == "dhclient":
            conf = d / "dhclient.conf"
            conf.write_text(f'send host-name "{h.name}";\ninitial-interval 1;\n')
            argv = [
                "dhclient", "-d", "-4", "-sf", script, "-cf", str(conf),
                "-lf", str(d / "dhclient.leases"), "-pf", str(d / "dhclient.pid"), "eth0",
            ]  # fmt: skip
        else:
            argv = [
                "udhcpc", "-f", "-i", "eth0", "-s", script, "-T", "1", "-t", "30", "-A", "1",
                "-x", f"hostname:{h.name}",
            ]  # fmt: skip
        self.started_at[h.name] = time.monotonic()
        self.lab.spawn(h, argv, log_path=d / "dhcp.log")

    def plain_address(self, host: Host | str) -> IPv4Address | None:
        res = self.lab.exec(host, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"], timeout=5)
        m = _INET.search(res.stdout)
        return IPv4Address(m.group(1)) if m else None

    def wait_lease(self, host: Host | str, *, timeout_s: float) -> tuple[IPv4Address, float]:
        """Poll until the plain host's eth0 has its leased address: (address, seconds taken)."""
        h = self.lab.host(host)
        deadline = time.monotonic() + timeout_s
        while True:
            addr = self.plain_address(h)
            if addr is not None and addr in self.subnet:
                return addr, time.monotonic() - self.started_at.get(h.name, time.monotonic())
            if time.monotonic() >= deadline:
                log = self.lab.host_dir(h) / "dhcp.log"
                tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
                raise NotReady(
                    f"{h.name}: no DHCP lease after {timeout_s:.0f} s: " + " | ".join(tail)
                )
            time.sleep(POLL_S)

    def start_all(self) -> None:
        # The bootstrap node first: the others' first handshake then finds it listening.
        order = sorted(self.lab.hosts, key=lambda h: not h.is_bootstrap)
        for h in order:
            self.start(h)

    def stop(self, host: Host | str) -> None:
        self.lab.stop(host)

    def client(self, host: Host | str) -> ControlClient:
        return ControlClient(self.files(host).socket)

    def status(self, host: Host | str) -> Status:
        return self.client(host).status()

    def up_all(self, *, timeout_s: float) -> dict[str, tuple[Status, float]]:
        """Configure and start every daemon of the lab, then :meth:`wait_all_ready` for all."""
        self.prepare()
        self.start_all()
        return self.wait_all_ready(self.lab.hosts, timeout_s=timeout_s)

    def wait_all_ready(
        self, hosts: list[Host], *, timeout_s: float
    ) -> dict[str, tuple[Status, float]]:
        """Poll every host at once; host → (status, monotonic time it was first seen ready).

        A daemon is asked for its status only once its log says ``event=ready``
        (:meth:`logged_ready`): each status request costs it CPU (~4 % of its start in a
        32-daemon cold start, polled every round), and so does each request's decoding here,
        on the cores the starting daemons share (issue 14)."""
        deadline = time.monotonic() + timeout_s
        done: dict[str, tuple[Status, float]] = {}
        while len(done) < len(hosts) and time.monotonic() < deadline:
            for h in hosts:
                if h.name in done or not self.logged_ready(h):
                    continue
                try:
                    st = self.status(h)
                except ControlError:
                    continue
                if self._ready(st):
                    done[h.name] = (st, time.monotonic())
            time.sleep(POLL_S / 2)
        for h in hosts:
            if h.name not in done:
                self.wait_ready(h, timeout_s=0.0)  # raises NotReady with the log tail
        return done

    def ready_log(self, host: Host | str) -> tuple[str, int] | None:
        """Where the next start of ``host``'s daemon will log ``event=ready``: its log and the
        offset its lines will begin at (None: the log level hides that event)."""
        if self.log_level not in ("info", "debug"):
            return None
        log = self.files(host).log
        return str(log), log.stat().st_size if log.exists() else 0

    def logged_ready(self, host: Host | str) -> bool:
        """Has the daemon :meth:`start` ran last logged ``event=ready``? True when that cannot
        tell (a daemon started elsewhere, or logging at warning): then its status decides."""
        h = self.lab.host(host)
        start = self._log_from.get(h.name)
        if start is None or self.log_level not in ("info", "debug"):
            return True
        try:
            with self.files(h).log.open("rb") as f:
                f.seek(start)
                return b" event=ready " in f.read()
        except OSError:
            return False

    @staticmethod
    def _ready(st: Status) -> bool:
        """A member holds its vIP; an overlay-only node has joined the ring."""
        return st.self_.vip is not None or (st.self_.overlay_only and st.self_.routable)

    def wait_ready(self, host: Host | str, *, timeout_s: float) -> Status:
        """Poll until ``host``'s daemon holds a virtual IP; :class:`NotReady` after the deadline."""
        h = self.lab.host(host)
        deadline = time.monotonic() + timeout_s
        last = "no answer on the control socket"
        while True:
            try:
                st = self.status(h)
                if self._ready(st):
                    return st
                last = "joined, no virtual IP yet" if st.self_.routable else "not routable yet"
            except ControlError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        log = self.files(h).log
        tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
        raise NotReady(f"{h.name}: {last} after {timeout_s:.0f} s; log {log}: " + " | ".join(tail))
