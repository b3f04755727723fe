"""The lab: builds a topology in network namespaces, runs processes in it, tears it all down.

This module owns the lifecycle of one lab and its state file. Theory of operation:

- Every namespace is named ``<prefix>inet``, ``<prefix>h-<host>`` or ``<prefix>r-<host>`` (the
  NAT router of ``<host>``). The prefix is unique per lab (``ipl`` + 5 random hex digits + ``-``
  by default), so teardown finds everything by prefix even after a crash, and two labs (or a lab
  and a test run) never meet.
- ``up()`` only builds the network: namespaces, the internet bridge(s), veths, addresses,
  routes, forwarding in router namespaces only, NAT rules. Starting daemons is a separate step
  done by the caller with :meth:`Lab.spawn` (the hook demo/bench/integration tests build on).
- ``workdir/lab.json`` records the prefix, namespaces, hosts and every spawned PID with its
  kernel start time, rewritten atomically on each change, so ``ipop-lab down`` in a later
  process tears down a lab left up, and never signals a recycled PID.
- ``down()`` is idempotent: it stops our PIDs (SIGTERM, then SIGKILL after a deadline), kills
  whatever still runs inside our namespaces, deletes every namespace with the prefix and the
  ``/etc/netns/<ns>/`` directories made for them, and removes the state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import TracebackType
from typing import Any

from ipop.errors import ConfigError, LocalProtocolError
from ipop.tools.lab import netns
from ipop.tools.lab.natrules import iptables_rules, nft_ruleset
from ipop.tools.lab.topology import HostSpec, Topology, topology_from_dict

STATE_FILE = "lab.json"
STATE_VERSION = 1
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{3,11}-?")
STOP_GRACE_S = 5.0
# Interface names: fixed inside host and router namespaces; "i-<host>" (≤ 14) in inet.
HOST_IF = "eth0"
WAN_IF = "wan0"
LAN_IF = "lan0"
# A router cluster's LAN bridge, in the router host's namespace (plain hosts' ports: p-<name>).
CLUSTER_BRIDGE = "clan0"


def new_prefix() -> str:
    return "ipl" + secrets.token_hex(3)[:5] + "-"


def process_prefix(tag: str) -> str:
    """A prefix unique to this process and ``tag`` (tests: one lab per tag, findable after a
    crash by the PID in its name)."""
    return f"ipt{os.getpid() % 10000:04d}{tag}-"


def _check_prefix(prefix: str) -> str:
    # A short or empty prefix could match namespaces that are not ours.
    if not PREFIX_RE.fullmatch(prefix):
        raise LocalProtocolError(f"bad lab prefix {prefix!r}: want [a-z][a-z0-9]{{3,11}}-?")
    return prefix


@dataclass(frozen=True, slots=True)
class Host:
    """One end host of a built lab (public, or the LAN host behind a NAT router)."""

    name: str
    ns: str
    ip: IPv4Address  # the host's own interface address (on its LAN when behind a NAT)
    public_ip: IPv4Address  # what the internet sees: ip, or the NAT router's WAN address
    nat_kind: str | None
    lan: IPv4Network | None
    is_bootstrap: bool
    router_ns: str | None = None
    extra_ips: tuple[IPv4Address, ...] = ()
    lan_router: str | None = None  # a plain host: the cluster router whose LAN it is on
    dhcp_client: str | None = None  # a plain host: "udhcpc" or "dhclient"
    nat_owner: str | None = None  # shares this host's NAT router (router_ns is the owner's)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ns": self.ns,
            "ip": str(self.ip),
            "public_ip": str(self.public_ip),
            "nat_kind": self.nat_kind,
            "lan": str(self.lan) if self.lan is not None else None,
            "is_bootstrap": self.is_bootstrap,
            "router_ns": self.router_ns,
            "extra_ips": [str(a) for a in self.extra_ips],
            "lan_router": self.lan_router,
            "dhcp_client": self.dhcp_client,
            "nat_owner": self.nat_owner,
        }


@dataclass(frozen=True, slots=True)
class SpawnedProcess:
    """A process the lab started: identified by PID and kernel start time together."""

    host: str
    pid: int
    start_time: int
    argv: tuple[str, ...]
    log: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "start_time": self.start_time,
            "argv": list(self.argv),
            "log": self.log,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> SpawnedProcess:
        return SpawnedProcess(
            str(d["host"]),
            int(d["pid"]),
            int(d["start_time"]),
            tuple(str(a) for a in d["argv"]),
            str(d["log"]),
        )

    def alive(self) -> bool:
        return netns.pid_alive(self.pid, self.start_time)


def _make_host(prefix: str, spec: HostSpec, bootstraps: tuple[str, ...]) -> Host:
    nat = spec.nat
    router_owner = spec.nat_owner or spec.name
    return Host(
        name=spec.name,
        ns=f"{prefix}h-{spec.name}",
        ip=spec.ip,
        public_ip=spec.public_ip,
        nat_kind=nat.kind if nat is not None else None,
        lan=nat.lan if nat is not None else None,
        is_bootstrap=spec.name in bootstraps,
        router_ns=f"{prefix}r-{router_owner}" if nat is not None else None,
        extra_ips=spec.extra_ips,
        nat_owner=spec.nat_owner,
    )


def cleanup_stale(prefix: str) -> list[str]:
    """Delete every namespace named ``prefix*`` (killing what runs inside) and its /etc/netns
    directory. Returns the namespaces deleted. Safe to call when nothing is left."""
    _check_prefix(prefix)
    gone: list[str] = []
    for ns in netns.list_ns(prefix):
        netns.kill_ns_processes(ns)
        netns.del_ns(ns)
        gone.append(ns)
    if netns.ETC_NETNS_DIR.is_dir():
        for d in netns.ETC_NETNS_DIR.iterdir():
            if d.name.startswith(prefix) and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
    return gone


class Lab:
    """A topology built in namespaces. Use as a context manager; ``__exit__`` calls ``down``."""

    def __init__(self, topology: Topology, *, workdir: Path, prefix: str | None = None) -> None:
        self.topology = topology
        self.workdir = Path(workdir)
        self.prefix = _check_prefix(prefix) if prefix is not None else new_prefix()
        boots = topology.bootstrap_names
        self.hosts: list[Host] = [_make_host(self.prefix, h, boots) for h in topology.hosts]
        # Plain hosts of router clusters: namespaces with only a DHCP client (no ipop).
        self.plain_hosts: list[Host] = [
            Host(
                name=p.name,
                ns=f"{self.prefix}p-{p.name}",
                ip=IPv4Address(0),
                public_ip=IPv4Address(0),
                nat_kind=None,
                lan=None,
                is_bootstrap=False,
                lan_router=c.router,
                dhcp_client=p.client,
            )
            for c in topology.clusters
            for p in c.hosts
        ]
        self.inet_ns = f"{self.prefix}inet"
        self.state = "new"  # new -> building -> up -> down
        self._procs: list[SpawnedProcess] = []
        self._popen: dict[int, subprocess.Popen[bytes]] = {}
        self._etc_dirs: list[str] = []
        self._made_etc_netns = False

    # ------------------------------------------------------------ lookup

    @property
    def bootstrap(self) -> Host:
        return next(h for h in self.hosts if h.is_bootstrap)

    @property
    def bootstraps(self) -> list[Host]:
        return [h for h in self.hosts if h.is_bootstrap]

    def host(self, host: Host | str) -> Host:
        name = host.name if isinstance(host, Host) else host
        for h in (*self.hosts, *self.plain_hosts):
            if h.name == name:
                return h
        raise LocalProtocolError(f"no host {name!r} in this lab")

    def is_router(self, host: Host | str) -> bool:
        """Whether ``host`` runs ipop-router for a cluster (not ipopd)."""
        return self.topology.cluster_of_router(self.host(host).name) is not None

    def plain_hosts_of(self, router: Host | str) -> list[Host]:
        name = self.host(router).name
        return [p for p in self.plain_hosts if p.lan_router == name]

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this lab's topology consists of."""
        out = [self.inet_ns]
        for h in self.hosts:
            if h.router_ns is not None and h.nat_owner is None:
                out.append(h.router_ns)
            out.append(h.ns)
        out.extend(p.ns for p in self.plain_hosts)
        return out

    @property
    def processes(self) -> list[SpawnedProcess]:
        return list(self._procs)

    def host_dir(self, host: Host | str) -> Path:
        """A per-host directory in the workdir, for configs and logs of what runs there."""
        d = self.workdir / "hosts" / self.host(host).name
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ------------------------------------------------------------ state file

    @property
    def state_path(self) -> Path:
        return self.workdir / STATE_FILE

    def _save(self) -> None:
        data = {
            "version": STATE_VERSION,
            "state": self.state,
            "prefix": self.prefix,
            "topology": self.topology.to_dict(),
            "namespaces": self.namespaces,
            "hosts": [h.to_dict() for h in (*self.hosts, *self.plain_hosts)],
            "processes": [p.to_dict() for p in self._procs],
            "etc_netns": self._etc_dirs,
            "made_etc_netns": self._made_etc_netns,
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    @classmethod
    def load(cls, workdir: Path) -> Lab:
        """The lab recorded in ``workdir/lab.json`` (left up by an earlier process)."""
        path = Path(workdir) / STATE_FILE
        fix = (
            "remove it, and its namespaces with 'ipop-lab down --prefix PREFIX' "
            "(PREFIX: the start of their names in 'ip netns list')"
        )
        try:
            data = json.loads(path.read_text())
            if data.get("version") != STATE_VERSION:
                raise ConfigError(
                    str(path), f"has unknown state version {data.get('version')!r}", fix
                )
            lab = cls(
                topology_from_dict(data["topology"]), workdir=Path(workdir), prefix=data["prefix"]
            )
            lab.state = str(data["state"])
            lab._procs = [SpawnedProcess.from_dict(p) for p in data["processes"]]
            lab._etc_dirs = [str(d) for d in data["etc_netns"]]
            lab._made_etc_netns = bool(data.get("made_etc_netns", False))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                str(path), f"is not a lab state file ({type(exc).__name__}: {exc})", fix
            ) from None
        return lab

    # ------------------------------------------------------------ build

    def up(self) -> None:
        """Build the network (no daemons). On any failure or interrupt, tear down and re-raise."""
        if self.state != "new":
            raise LocalProtocolError(f"up() on a lab in state {self.state!r}")
        if netns.list_ns(self.prefix):
            raise LocalProtocolError(f"namespaces with prefix {self.prefix!r} already exist")
        self.state = "building"
        self._save()  # before the first namespace, so a crash mid-build can be torn down
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self.state = "up"
        self._save()

    def _build(self) -> None:
        topo = self.topology
        inet = self.inet_ns
        segments = [topo.subnet] if topo.subnet2 is None else [topo.subnet, topo.subnet2]
        bridges = {seg: f"br{i}" for i, seg in enumerate(segments)}
        netns.add_ns(inet)
        for seg, br in bridges.items():
            netns.add_bridge(inet, br)
            netns.add_addr(inet, br, f"{seg.network_address + 1}/{seg.prefixlen}")
        # inet routes between segments; nothing else forwards but the NAT routers.
        netns.sysctl(inet, "net.ipv4.ip_forward", 1)
        # ... and within one: hosts send their segment's traffic through it (see attach), and
        # a redirect would teach them the shortcut back.
        for key in ("all", *bridges.values()):
            netns.sysctl(inet, f"net.ipv4.conf.{key}.send_redirects", 0)

        def attach(ns: str, ifname: str, host: str, ip: IPv4Address) -> IPv4Network:
            """Connect ``ns``'s ``ifname`` to the bridge of ``ip``'s segment, as ``ip``."""
            seg = topo.segment_of(ip)
            netns.add_veth(ns, ifname, inet, f"i-{host}")
            netns.set_master(inet, f"i-{host}", bridges[seg])
            netns.link_up(inet, f"i-{host}")
            netns.link_up(ns, ifname)
            netns.add_addr(ns, ifname, f"{ip}/{seg.prefixlen}")
            gw = str(seg.network_address + 1)
            netns.add_route(ns, "default", gw)
            # The segment's two halves through its router too, more specific than the on-link
            # prefix route (which a soak re-addressing puts back). The kernel's neighbour
            # table is one for the whole machine (1,024 entries by default), and a flat
            # segment costs an entry per host pair that talks: 32 hosts on one segment,
            # sweeping every pair, overflowed it. The internet has routers between hosts, too.
            for half in seg.subnets(prefixlen_diff=1):
                netns.add_route(ns, str(half), gw)
            return seg

        for spec, host in zip(topo.hosts, self.hosts, strict=True):
            netns.add_ns(host.ns)
            # New namespaces inherit IPv4 settings from the root one, which may forward.
            netns.sysctl(host.ns, "net.ipv4.ip_forward", 0)
            if spec.nat is None:
                seg = attach(host.ns, HOST_IF, host.name, spec.ip)
                for extra in spec.extra_ips:
                    netns.add_addr(host.ns, HOST_IF, f"{extra}/{seg.prefixlen}")
                continue
            nat = spec.nat
            router = host.router_ns
            assert router is not None
            if spec.nat_owner is not None:
                # Another port of the owner's LAN bridge (built with the owner, listed first).
                self._lan_port(router, host, spec.ip, nat.lan)
                continue
            netns.add_ns(router)
            attach(router, WAN_IF, host.name, nat.wan_ip)
            if topo.sharing(spec.name):
                # Several hosts behind this NAT: its LAN is a bridge, one port per host.
                netns.add_bridge(router, LAN_IF)
                netns.link_up(router, LAN_IF)
                self._lan_port(router, host, nat.host_ip, nat.lan)
            else:
                netns.add_veth(router, LAN_IF, host.ns, HOST_IF)
                netns.link_up(router, LAN_IF)
                netns.link_up(host.ns, HOST_IF)
                netns.add_addr(host.ns, HOST_IF, f"{nat.host_ip}/{nat.lan.prefixlen}")
                netns.add_route(host.ns, "default", str(nat.router_ip))
            netns.add_addr(router, LAN_IF, f"{nat.router_ip}/{nat.lan.prefixlen}")
            netns.sysctl(router, "net.ipv4.ip_forward", 1)
            if topo.nat_backend == "nft":
                netns.nft_apply(
                    router, nft_ruleset(nat.kind, lan_host=nat.host_ip, wan=WAN_IF, lan=LAN_IF)
                )
            else:
                for rule in iptables_rules(nat.kind, lan_host=nat.host_ip, wan=WAN_IF, lan=LAN_IF):
                    netns.iptables(router, rule)
            if nat.udp_timeout_s is not None:
                # Exists once conntrack is active in the namespace, i.e. after the NAT rules.
                netns.sysctl(router, "net.netfilter.nf_conntrack_udp_timeout", nat.udp_timeout_s)
        for cluster in topo.clusters:
            rns = self.host(cluster.router).ns
            netns.add_bridge(rns, CLUSTER_BRIDGE)
            netns.sysctl(rns, f"net.ipv6.conf.{CLUSTER_BRIDGE}.disable_ipv6", 1)
            netns.link_up(rns, CLUSTER_BRIDGE)
            for p in self.plain_hosts_of(cluster.router):
                netns.add_ns(p.ns)
                netns.sysctl(p.ns, "net.ipv4.ip_forward", 0)
                netns.sysctl(p.ns, "net.ipv6.conf.all.disable_ipv6", 1)
                port = f"p-{p.name}"
                netns.add_veth(rns, port, p.ns, HOST_IF)
                netns.set_master(rns, port, CLUSTER_BRIDGE)
                netns.link_up(rns, port)
                # Offload stays as the kernel sets it (on, for a veth): the host leaves its
                # TCP/UDP checksums to a NIC, as VMs and containers do (ipop.router.lan).
                netns.link_up(p.ns, HOST_IF)

    @staticmethod
    def _lan_port(router: str, host: Host, ip: IPv4Address, lan: IPv4Network) -> None:
        """``host``'s eth0 on the shared LAN bridge of NAT router namespace ``router``."""
        port = f"l-{host.name}"
        netns.add_veth(router, port, host.ns, HOST_IF)
        netns.set_master(router, port, LAN_IF)
        netns.link_up(router, port)
        netns.link_up(host.ns, HOST_IF)
        netns.add_addr(host.ns, HOST_IF, f"{ip}/{lan.prefixlen}")
        netns.add_route(host.ns, "default", str(lan.network_address + 1))

    # ------------------------------------------------------------ processes

    def _require_up(self) -> None:
        if self.state != "up":
            raise LocalProtocolError(f"lab is {self.state!r}, not up")

    def exec(
        self,
        host: Host | str,
        argv: Sequence[str],
        *,
        timeout: float,
        check: bool = False,
        input: str | None = None,
        router: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion inside the host's namespace (its NAT router's if
        ``router``); raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        self._require_up()
        h = self.host(host)
        ns = h.router_ns if router else h.ns
        if ns is None:
            raise LocalProtocolError(f"host {h.name!r} has no NAT router")
        return netns.run(argv, ns=ns, timeout=timeout, check=check, input=input)

    def spawn(
        self,
        host: Host | str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the host's namespace, stdout and stderr appended to ``log_path``.

        ``env`` adds to (not replaces) this process's environment. The process gets its own
        session, so stopping it also stops its children. Its PID is recorded in the state file.
        """
        self._require_up()
        h = self.host(host)
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **env} if env is not None else None
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                netns.in_ns(h.ns, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )
        start = netns.pid_start_time(proc.pid)
        self._popen[proc.pid] = proc
        if start is not None:  # None: it already exited (and is reaped by nobody yet: fine)
            self._procs.append(SpawnedProcess(h.name, proc.pid, start, tuple(argv), str(log_path)))
            self._save()
        return proc

    def stop(self, host: Host | str, *, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every process spawned on ``host``: SIGTERM, then SIGKILL after ``grace_s``."""
        name = self.host(host).name
        self._terminate([p for p in self._procs if p.host == name], grace_s)

    def stop_pid(self, pid: int, *, grace_s: float = STOP_GRACE_S) -> bool:
        """Stop the one process we spawned with ``pid`` (and its group) as :meth:`stop` does;
        False if it is not one of ours."""
        procs = [p for p in self._procs if p.pid == pid]
        self._terminate(procs, grace_s)
        return bool(procs)

    def signal(self, host: Host | str, sig: signal.Signals) -> list[int]:
        """Send ``sig`` to every live process spawned on ``host`` (only our recorded PIDs, each
        checked against its start time); the PIDs signalled. A process that dies of it (SIGKILL)
        is reaped and forgotten, so a restart records a fresh one."""
        name = self.host(host).name
        hit: list[int] = []
        for p in [p for p in self._procs if p.host == name]:
            if not p.alive():
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
                hit.append(p.pid)
        if sig == signal.SIGKILL:
            for pid in hit:
                popen = self._popen.pop(pid, None)
                if popen is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        popen.wait(timeout=STOP_GRACE_S)
            self._procs = [p for p in self._procs if p.pid not in hit]
            self._save()
        return hit

    def _terminate(self, procs: list[SpawnedProcess], grace_s: float) -> None:
        def signal_group(p: SpawnedProcess, sig: signal.Signals) -> None:
            if not p.alive():
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                # Spawned with a new session, so its group is its own PID: ours to signal.
                if os.getpgid(p.pid) == p.pid:
                    os.killpg(p.pid, sig)
                else:
                    os.kill(p.pid, sig)

        for p in procs:
            signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self._reap()
            if not any(p.alive() for p in procs):
                break
            time.sleep(0.02)
        for p in procs:
            signal_group(p, signal.SIGKILL)
        for p in procs:
            popen = self._popen.pop(p.pid, None)
            if popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=grace_s)
        gone = {p.pid for p in procs}
        self._procs = [p for p in self._procs if p.pid not in gone]
        if self.state_path.exists():
            self._save()

    def _reap(self) -> None:
        for popen in self._popen.values():
            popen.poll()

    # ------------------------------------------------------------ DNS

    def write_resolv_conf(self, host: Host | str, nameserver_ip: IPv4Address | str) -> Path:
        """Write /etc/netns/<ns>/resolv.conf: programs run with ``ip netns exec`` in the
        host's namespace (all of ``exec``/``spawn``) see it as /etc/resolv.conf."""
        h = self.host(host)
        if not netns.ETC_NETNS_DIR.exists():
            netns.ETC_NETNS_DIR.mkdir(parents=True)
            self._made_etc_netns = True
        d = netns.ETC_NETNS_DIR / h.ns
        if not d.exists():
            d.mkdir()
            self._etc_dirs.append(str(d))
        path = d / "resolv.conf"
        path.write_text(f"nameserver {IPv4Address(str(nameserver_ip))}\n")
        self._save()
        return path

    # ------------------------------------------------------------ teardown

    def down(self) -> None:
        """Kill every spawned PID, delete every namespace with the prefix and the /etc/netns
        directories made for them, remove the state file. Idempotent."""
        self._terminate(list(self._procs), grace_s=STOP_GRACE_S)
        for popen in list(self._popen.values()):  # spawned but exited before being recorded
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1.0)
        self._popen.clear()
        cleanup_stale(self.prefix)
        for d in self._etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._etc_dirs = []
        if self._made_etc_netns:
            with contextlib.suppress(OSError):
                netns.ETC_NETNS_DIR.rmdir()  # only if empty
            self._made_etc_netns = False
        self.state = "down"
        self.state_path.unlink(missing_ok=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()
