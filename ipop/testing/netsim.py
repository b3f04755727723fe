"""An in-process IPv4/UDP network with NAT boxes, for simulations on the virtual-time loop.

This module owns the simulated world: segments (one internet, LANs), hosts with UDP sockets,
NAT boxes between a LAN and the internet, datagram delivery with latency, jitter, loss and MTU,
drop counters, and an optional packet trace. NAT behaviour itself lives in ``nat.py``, the
hosts, sockets, segments and NAT boxes in ``simhosts.py`` (re-exported here), the topology as
data in ``netspec.py``. Nothing here reads the real clock or the global ``random``: time is
``loop.time()`` (virtual on :class:`~ipop.testing.clock.VirtualTimeLoop`, but any asyncio loop
works) and every random draw comes from the one ``random.Random`` given to :class:`Network`,
so a seed fixes a run.

Topology::

    public host 203.0.113.1 ─┐
    public host 203.0.113.2 ─┤ internet (one segment: latency, jitter, loss, mtu)
    NAT "a" 203.0.113.3  ────┤
        └─ LAN 198.18.0.0/24: hosts 198.18.0.2, 198.18.0.3, … (gateway .1 is the NAT)
    NAT "b" 198.51.100.1 ────┘
        └─ LAN 198.18.1.0/24 …

Theory of operation (one datagram):

1. ``SimSocket.sendto`` runs synchronously in the sender. A host on the internet sends straight
   onto the internet segment. A host on a LAN either reaches a host of its own LAN, or hands
   the datagram to its NAT, which translates it *at send time* (the NAT box is modelled as
   sitting at the sender's end of the LAN hop; the LAN latency is added to the internet hop).
2. Each segment crossed may drop the datagram (MTU, then loss) and adds latency + jitter.
3. The hop is queued to where the next decision is made: the receiving host, or the receiving
   NAT's WAN side. There the NAT filters it at arrival time (that is what makes hole punching
   timing-sensitive, as in the lab) and, if admitted, one more queued hop crosses the LAN
   (delivered in the same callback when the LAN latency is 0).
4. At the host, the socket bound to the destination port gets ``on_datagram(data, src)``;
   with no socket the datagram is dropped silently (counted "no_listener"; no ICMP).

Scheduling: hops in flight wait in the network's own heap of plain tuples (due time, send
order), and ONE loop timer is armed for the earliest; when it fires, every hop then due runs
in (time, send order). Why: a 1,000-node run has thousands of datagrams in flight, and one
``call_later`` each made the loop's heap of ``TimerHandle`` (compared in Python) and the
handles themselves the biggest cost of the simulator. Arrival times stay exact.

Batching (``tick_s`` > 0, off by default): every hop's arrival time is also rounded UP to a
multiple of ``tick_s``, so hops of one tick share one wake-up. The price: up to ``tick_s``
more latency per hop, and datagrams of one tick are not reordered by jitter.

Latency: with no map, every internet hop costs the internet segment's latency; with a
:class:`~ipop.testing.latency.LatencyMap` (``Network(latency=...)``) each internet address is
placed on a site of a region as it is handed out, and a hop costs the map's latency between its
two ends (LAN hops keep their segment's). :meth:`Network.path_latency_s` is a direct path's.

Invariants: every datagram sent is counted once in ``stats["sent"]`` and ends exactly once as
``stats["delivered"]`` or ``stats["dropped"]`` (plus its reason) — except those still in flight.
The per-datagram path allocates nothing beyond its queue entry unless tracing is on.

Sizes: ``mtu`` is an IP MTU; a datagram's size is its UDP payload plus 28 bytes of IPv4 and UDP
headers, so a 1,472-byte payload is the largest that crosses a 1,500-byte MTU.

Addresses: the internet uses 203.0.113.0/24 then 198.51.100.0/24 (508 public addresses: every
public host and every NAT box takes one, so put several hosts behind one NAT for bigger
worlds); LANs are /24s carved from 198.18.0.0/15 (512 of them).
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ipop.errors import ConfigError, LocalProtocolError
from ipop.testing.latency import LatencyMap
from ipop.testing.nat import KIND_NONE, NatBehaviour, nat_kind
from ipop.testing.netspec import add_topology
from ipop.testing.simhosts import (
    DEFAULT_MTU,
    UDP_IP_OVERHEAD,
    Host,
    NatBox,
    Segment,
    SimSocket,
    TraceRecord,
)
from ipop.types import Endpoint

__all__ = [
    "DROP_REASONS",
    "UDP_IP_OVERHEAD",
    "Host",
    "NatBox",
    "Network",
    "Segment",
    "SimSocket",
    "TraceRecord",
    "build",
]

# Every reason a datagram can be dropped for; each is also a key of Network.stats.
DROP_REASONS = (
    "loss",  # the segment's loss probability hit
    "mtu",  # larger than a segment's MTU (no fragmentation)
    "no_route",  # no host or NAT holds the destination address
    "no_listener",  # nothing bound to the destination port
    "no_mapping",  # arrived at a NAT port that has no mapping
    "mapping_expired",  # arrived at a NAT port whose mapping timed out
    "nat_filtered",  # the mapping exists but its filtering refuses this source
    "no_hairpin",  # a LAN host sent to its own NAT's public address; hairpinning is off
    "nat_ports_exhausted",  # the NAT has no free external port
    "blocked",  # a scenario's block(): a firewall dropping one host's traffic for a while
)

# What the virtual-time loop allows a timer to run early (VirtualTimeLoop._clock_resolution).
_DUE_SLACK_S = 1e-6
DEFAULT_INTERNET_LATENCY_S = 0.02
DEFAULT_LAN_LATENCY_S = 0.0005

_PUBLIC_NETS = (
    ipaddress.IPv4Network("203.0.113.0/24"),
    ipaddress.IPv4Network("198.51.100.0/24"),
)
_LAN_SPACE = ipaddress.IPv4Network("198.18.0.0/15")


class Network:
    """The simulated world: one internet segment, LANs behind NAT boxes, hosts, counters.

    Only the ``rng`` passed in is ever used for randomness (loss, jitter, ephemeral ports, NAT
    port allocation), so the same seed and the same scenario give the same trace.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        trace: bool = False,
        trace_limit: int = 10_000,
        internet_latency_s: float = DEFAULT_INTERNET_LATENCY_S,
        internet_jitter_s: float = 0.0,
        internet_loss: float = 0.0,
        internet_mtu: int = DEFAULT_MTU,
        tick_s: float = 0.0,
        latency: LatencyMap | None = None,
    ) -> None:
        if tick_s < 0:
            raise ConfigError("netsim.tick_s", f"{tick_s!r} is negative", "use 0 (off) or more")
        self.rng = rng
        self.tick_s = tick_s
        # Where each internet address sits (ipop.testing.latency); None: every internet hop
        # costs the internet segment's latency.
        self.latency = latency
        # Hops in flight: (due, send order, function, args), a heap; one loop timer, armed for
        # the earliest (see "Scheduling").
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self.internet = Segment(
            "internet",
            subnet=None,
            latency_s=internet_latency_s,
            jitter_s=internet_jitter_s,
            loss=internet_loss,
            mtu=internet_mtu,
        )
        self.segments: dict[str, Segment] = {"internet": self.internet}
        self.hosts: dict[str, Host] = {}
        self.nats: dict[str, NatBox] = {}
        self.stats: Counter[str] = Counter()
        self.trace: deque[TraceRecord] | None = deque(maxlen=trace_limit) if trace else None
        # Exceptions raised by on_datagram callbacks (also re-raised to the loop's handler), so
        # a scenario can assert none happened.
        self.callback_errors: list[BaseException] = []
        # Internet address -> public host or NAT box.
        self._public: dict[str, Host | NatBox] = {}
        self._public_pool: Iterator[str] = (str(a) for net in _PUBLIC_NETS for a in net.hosts())
        self._lan_pool: Iterator[ipaddress.IPv4Network] = _LAN_SPACE.subnets(new_prefix=24)
        self._lan_subnets: set[ipaddress.IPv4Network] = set()
        self._t0: float | None = None
        # block(): (host, its source port or None, destination address, until when), few.
        self._blocks: list[tuple[Host, int | None, str, float]] = []

    # --- building the world ------------------------------------------------------------

    def add_public_host(self, name: str, *, address: str | None = None) -> Host:
        """A host directly on the internet (NAT kind "none")."""
        self.check_name(name)
        addr = self._take_public(address, what=f"host {name!r}")
        host = Host(self, name, addr, self.internet, None)
        self._public[addr] = host
        if self.latency is not None:
            self.latency.place(addr)
        self.hosts[name] = host
        return host

    def add_lan(
        self,
        name: str,
        *,
        subnet: str | None = None,
        latency_s: float = DEFAULT_LAN_LATENCY_S,
        jitter_s: float = 0.0,
        loss: float = 0.0,
        mtu: int = DEFAULT_MTU,
    ) -> Segment:
        """A LAN segment (a /24 or smaller from 198.18.0.0/15); give it to :meth:`add_nat`."""
        if name in self.segments:
            raise LocalProtocolError(f"segment {name!r} already exists")
        net = self._take_lan_subnet(subnet)
        seg = Segment(name, subnet=net, latency_s=latency_s, jitter_s=jitter_s, loss=loss, mtu=mtu)
        self.segments[name] = seg
        return seg

    def add_nat(
        self,
        name: str,
        kind: str | NatBehaviour,
        *,
        public_ip: str | None = None,
        lan: Segment | str | None = None,
    ) -> NatBox:
        """A NAT box with a fresh public address; ``lan`` defaults to a new LAN named ``name``."""
        if name in self.nats:
            raise LocalProtocolError(f"NAT {name!r} already exists")
        behaviour = nat_kind(kind) if isinstance(kind, str) else kind
        if lan is None:
            seg = self.add_lan(name)
        elif isinstance(lan, str):
            if lan not in self.segments:
                raise LocalProtocolError(f"no segment {lan!r}; add it with add_lan first")
            seg = self.segments[lan]
        else:
            seg = lan
        if seg is self.internet or seg.subnet is None:
            raise LocalProtocolError("a NAT's inside must be a LAN, not the internet")
        if seg.nat is not None:
            raise LocalProtocolError(f"LAN {seg.name!r} already has NAT {seg.nat.name!r}")
        addr = self._take_public(public_ip, what=f"NAT {name!r}")
        box = NatBox(self, name, addr, seg, behaviour)
        self._public[addr] = box
        if self.latency is not None:
            self.latency.place(addr)
        self.nats[name] = box
        return box

    def add_host(self, name: str, kind: str | NatBehaviour = KIND_NONE) -> Host:
        """A host of NAT kind ``kind``: public for "none", else alone behind its own NAT.

        The NAT is called ``f"{name}-nat"``.
        """
        if kind == KIND_NONE:
            return self.add_public_host(name)
        self.check_name(name)
        return self.add_nat(f"{name}-nat", kind).add_host(name)

    def build(self, topology: Mapping[str, Any]) -> dict[str, Host]:
        """Add a topology given as data (a dict as parsed from TOML); return its hosts by name.

        The schema and its checks: :func:`ipop.testing.netspec.add_topology`.
        """
        return add_topology(self, topology)

    # --- inspection ---------------------------------------------------------------------

    def format_trace(self, last: int = 50) -> str:
        """The last ``last`` trace records and the counters, for a failing test's output."""
        lines = [f"stats: {dict(sorted(self.stats.items()))}"]
        if self.trace is None:
            lines.append("(tracing is off: Network(trace=True) records packets)")
            return "\n".join(lines)
        records = list(self.trace)[-last:] if last > 0 else []
        t0 = self._t0 or 0.0
        skipped = len(self.trace) - len(records)
        if skipped:
            lines.append(f"... {skipped} earlier records")
        for r in records:
            note = f"  {r.note}" if r.note else ""
            lines.append(
                f"+{r.time - t0:12.6f}s {r.event:<9} {r.src!s:>21} -> {r.dst!s:<21} "
                f"{r.size:>5}B{note}"
            )
        return "\n".join(lines)

    def readdress(self, host: Host, address: str | None = None) -> str:
        """Give ``host`` a new address on its own segment (a roam: DHCP handed out another
        lease, the host moved to another access point of one network); return it.

        A public host takes a fresh (or the given) internet address, a LAN host a free (or the
        given) address of its LAN, so its NAT maps it anew. Its sockets stay bound to their
        ports and from now on send from, and receive at, the new address. A hop's target is
        chosen at send time, so datagrams already in flight still reach the host; later ones
        sent to the old address end as "no_route", and NAT mappings of the old LAN address
        deliver nowhere ("no_route"). The host's software learns nothing from this: noticing
        is its own job.
        """
        if self.hosts.get(host.name) is not host:
            raise LocalProtocolError(f"{host!r} is not a host of this network")
        old = host.address
        if host.nat is None:
            new = self._take_public(address, what=f"host {host.name!r}")
            del self._public[old]
            self._public[new] = host
            if self.latency is not None:
                self.latency.move(old, new)  # the same host, where it stood
        else:
            new = self._take_lan_address(host.nat, host.name, address)
            lans = host.segment.hosts
            del lans[old]
            lans[new] = host
        host.address = new
        for sock in host.sockets():
            sock.local = Endpoint(new, sock.local.port)
        return new

    def flush_nat(self, nat: NatBox) -> int:
        """Drop every mapping of ``nat`` (as ``conntrack -F`` on the lab's NAT router does, see
        ``tools/lab/soak.py``); return how many went. Its hosts are not told: each flow gets a
        new external port when its inside host next sends (a kept one with the NAT's
        ``reuse_flushed_ports``), and until then every datagram to an old one is dropped
        ("no_mapping")."""
        if self.nats.get(nat.name) is not nat:
            raise LocalProtocolError(f"{nat!r} is not a NAT of this network")
        return nat.table.flush()

    def block(self, host: Host, dst: str, *, until: float, port: int | None = None) -> None:
        """Drop what ``host`` (from its ``port`` only, if given) sends to the address ``dst``
        until loop time ``until`` ("blocked"), as a firewall rule would: how a scenario
        decides who wins a race on a shared NAT (tests/sim/test_rebind.py, as the lab's
        forced case does with iptables)."""
        self._blocks.append((host, port, dst, until))

    def _blocked(self, sock: SimSocket, dip: str, now: float) -> bool:
        self._blocks = [b for b in self._blocks if b[3] > now]
        return any(
            h is sock.host and (p is None or p == sock.local.port) and d == dip
            for h, p, d, _ in self._blocks
        )

    def host_at(self, address: str) -> Host | None:
        """The host holding ``address`` (public or on any LAN)."""
        target = self._public.get(address)
        if isinstance(target, Host):
            return target
        for box in self.nats.values():
            if address in box.lan.hosts:
                return box.lan.hosts[address]
        return None

    def path_latency_s(self, a: Host, b: Host) -> float:
        """One-way latency of a datagram from ``a`` to ``b`` on their direct path: LANs and the
        internet hop, without jitter or the delivery tick (the denominator of a stretch)."""
        seg = a.segment
        if seg is b.segment and seg.nat is not None:
            return seg.latency_s
        lans = sum(h.segment.latency_s for h in (a, b) if h.nat is not None)
        lat = self.latency
        wan = self.internet.latency_s if lat is None else lat.latency_s(a.public_ip, b.public_ip)
        return lans + wan

    # --- the datagram path (kept lean: it carries every simulated packet) -------------

    def send_datagram(self, sock: SimSocket, data: bytes, dst: tuple[str, int]) -> None:
        """Carry one datagram from ``sock`` (its :meth:`SimSocket.sendto`)."""
        loop = asyncio.get_running_loop()
        self.stats["sent"] += 1
        size = len(data) + UDP_IP_OVERHEAD
        src = sock.local
        dip, dport = dst
        if self._blocks and self._blocked(sock, dip, loop.time()):
            self._drop("blocked", src, dip, dport, size)
            return
        trace = self.trace
        if trace is not None:
            if self._t0 is None:
                self._t0 = loop.time()
            trace.append(TraceRecord(loop.time(), "sent", src, Endpoint(dip, dport), size, ""))
        seg = sock.host.segment
        nat = seg.nat
        if nat is None:
            self._wan_hop(loop, src, dip, dport, data, size, 0.0)
            return
        if size > seg.mtu:
            self._drop("mtu", src, dip, dport, size)
            return
        if seg.loss and self.rng.random() < seg.loss:
            self._drop("loss", src, dip, dport, size)
            return
        delay = seg.latency_s
        if seg.jitter_s:
            delay += self.rng.random() * seg.jitter_s
        local = seg.hosts.get(dip)
        if local is not None:
            self._later(loop, delay, self._deliver, local, dport, data, src)
            return
        now = loop.time()
        table = nat.table
        if trace is not None:
            created = table.stats["mapping_created"]
        m = table.outbound(src.host, src.port, dip, dport, now)
        if isinstance(m, str):
            self._drop(m, src, dip, dport, size)
            return
        ext = m.external
        if trace is not None:
            fresh = table.stats["mapping_created"] != created
            note = f"{nat.name}{' new mapping' if fresh else ''}"
            trace.append(TraceRecord(now, "nat_out", src, ext, size, note))
        if dip == nat.public_ip:
            self._hairpin(loop, nat, ext, dport, data, size, delay)
            return
        self._wan_hop(loop, ext, dip, dport, data, size, delay)

    def _later(
        self, loop: asyncio.AbstractEventLoop, delay: float, fn: Callable[..., None], *args: Any
    ) -> None:
        due = loop.time() + delay
        tick = self.tick_s
        if tick:
            due = -(-due // tick) * tick  # ceil: never earlier than the exact time
        queue = self._queue
        heapq.heappush(queue, (due, self._seq, fn, args))
        self._seq += 1
        armed = self._armed_at
        if armed is None or due < armed:
            if self._timer is not None:
                self._timer.cancel()
            self._armed_at = due
            self._timer = loop.call_at(due, self._run_due)

    def _run_due(self) -> None:
        """Run every hop now due, in (time, send order); then arm for the next one."""
        self._timer = None
        # While the batch runs, what it queues arms nothing (-inf: "armed earlier than
        # anything"); the queue's head is armed once, at the end. Why: arming for the first
        # hop queued here ignored older hops due sooner, which then ran late (a hop queued
        # for 20 ms ahead held back one due in 1 ms until then).
        self._armed_at = -math.inf
        loop = asyncio.get_running_loop()
        # The loop runs a timer up to its clock resolution early; so do we, or a hop whose
        # due time the float clock cannot hit exactly would wait for another wake-up.
        limit = loop.time() + _DUE_SLACK_S
        queue = self._queue
        pop = heapq.heappop
        first: BaseException | None = None
        # A hop run here may schedule more for this same instant (a LAN hop of 0 s is run
        # inline, but a tiny delay can land within the slack): keep going until none is due.
        while queue and queue[0][0] <= limit:
            _, _, fn, args = pop(queue)
            try:
                fn(*args)
            except Exception as exc:  # recorded by _deliver; re-raised once, below
                if first is None:
                    first = exc
        self._armed_at = None
        if queue:
            due = queue[0][0]
            self._armed_at = due
            self._timer = loop.call_at(due, self._run_due)
        if first is not None:
            raise first

    def _hairpin(
        self,
        loop: asyncio.AbstractEventLoop,
        nat: NatBox,
        src: Endpoint,
        dport: int,
        data: bytes,
        size: int,
        delay: float,
    ) -> None:
        if not nat.behaviour.hairpinning:
            self._drop("no_hairpin", src, nat.public_ip, dport, size)
            return
        # RFC 4787 REQ-9: the hairpinned packet comes from the sender's external endpoint, and
        # the NAT filters it like any other inbound packet.
        self._later(loop, delay, self._nat_inbound, nat, dport, data, src)

    def _wan_hop(
        self,
        loop: asyncio.AbstractEventLoop,
        src: Endpoint,
        dip: str,
        dport: int,
        data: bytes,
        size: int,
        delay: float,
    ) -> None:
        inet = self.internet
        if size > inet.mtu:
            self._drop("mtu", src, dip, dport, size)
            return
        if inet.loss and self.rng.random() < inet.loss:
            self._drop("loss", src, dip, dport, size)
            return
        lat = self.latency
        if lat is None:
            delay += inet.latency_s
        if inet.jitter_s:
            delay += self.rng.random() * inet.jitter_s
        target = self._public.get(dip)
        if target is None:
            self._drop("no_route", src, dip, dport, size)
            return
        if lat is not None:
            delay += lat.latency_s(src.host, dip)
        if isinstance(target, Host):
            self._later(loop, delay, self._deliver, target, dport, data, src)
        else:
            self._later(loop, delay, self._nat_inbound, target, dport, data, src)

    def _nat_inbound(self, nat: NatBox, dport: int, data: bytes, src: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        size = len(data) + UDP_IP_OVERHEAD
        m = nat.table.inbound(src.host, src.port, dport, now)
        if isinstance(m, str):
            self._drop(m, src, nat.public_ip, dport, size)
            return
        internal = m.internal
        if self.trace is not None:
            self.trace.append(TraceRecord(now, "nat_in", m.external, internal, size, nat.name))
        lan = nat.lan
        if size > lan.mtu:
            self._drop("mtu", src, internal.host, internal.port, size)
            return
        if lan.loss and self.rng.random() < lan.loss:
            self._drop("loss", src, internal.host, internal.port, size)
            return
        host = lan.hosts.get(internal.host)
        if host is None:  # the mapping's inside address moved away (readdress)
            self._drop("no_route", src, internal.host, internal.port, size)
            return
        delay = lan.latency_s
        if lan.jitter_s:
            delay += self.rng.random() * lan.jitter_s
        if delay > 0:
            self._later(loop, delay, self._deliver, host, internal.port, data, src)
        else:
            self._deliver(host, internal.port, data, src)

    def _deliver(self, host: Host, port: int, data: bytes, src: Endpoint) -> None:
        sock = host.socket_at(port)
        if sock is None:
            self._drop("no_listener", src, host.address, port, len(data) + UDP_IP_OVERHEAD)
            return
        self.stats["delivered"] += 1
        if self.trace is not None:
            now = asyncio.get_running_loop().time()
            size = len(data) + UDP_IP_OVERHEAD
            self.trace.append(TraceRecord(now, "delivered", src, sock.local, size, host.name))
        try:
            sock.on_datagram(data, src)
        except Exception as exc:
            self.callback_errors.append(exc)
            raise

    def _drop(self, reason: str, src: Endpoint, dip: str, dport: int, size: int) -> None:
        stats = self.stats
        stats["dropped"] += 1
        stats[reason] += 1
        if self.trace is not None:
            now = asyncio.get_running_loop().time()
            self.trace.append(TraceRecord(now, "dropped", src, Endpoint(dip, dport), size, reason))

    # --- addresses ----------------------------------------------------------------------

    def check_name(self, name: str) -> None:
        """Raise unless ``name`` is a new host name (the topology loader asks first)."""
        if not name:
            raise LocalProtocolError("host names must not be empty")
        if name in self.hosts:
            raise LocalProtocolError(f"host {name!r} already exists")

    def _take_public(self, address: str | None, *, what: str) -> str:
        if address is None:
            for candidate in self._public_pool:
                if candidate not in self._public:
                    return candidate
            raise LocalProtocolError(
                f"{what}: all 508 simulated internet addresses (203.0.113.0/24, "
                "198.51.100.0/24) are taken; put several hosts behind one NAT"
            )
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            raise LocalProtocolError(f"{what}: {address!r} is not an IPv4 address") from None
        if not any(ip in net and ip not in (net[0], net[-1]) for net in _PUBLIC_NETS):
            raise LocalProtocolError(
                f"{what}: {address} is outside the simulated internet "
                "(203.0.113.1-254, 198.51.100.1-254)"
            )
        if address in self._public:
            raise LocalProtocolError(f"{what}: {address} is already in use")
        return address

    def _take_lan_subnet(self, subnet: str | None) -> ipaddress.IPv4Network:
        if subnet is None:
            for net in self._lan_pool:
                if not any(net.overlaps(used) for used in self._lan_subnets):
                    self._lan_subnets.add(net)
                    return net
            raise LocalProtocolError("all 512 LAN /24s of 198.18.0.0/15 are taken")
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise LocalProtocolError(f"subnet {subnet!r}: {exc}") from None
        if not net.subnet_of(_LAN_SPACE) or net.prefixlen > 29:
            raise LocalProtocolError(
                f"subnet {subnet} must lie in 198.18.0.0/15 and be a /29 or larger"
            )
        if any(net.overlaps(used) for used in self._lan_subnets):
            raise LocalProtocolError(f"subnet {subnet} overlaps a LAN already made")
        self._lan_subnets.add(net)
        return net

    def add_lan_host(self, nat: NatBox, name: str, address: str | None) -> Host:
        """A new host on ``nat``'s LAN (:meth:`NatBox.add_host`)."""
        self.check_name(name)
        address = self._take_lan_address(nat, name, address)
        host = Host(self, name, address, nat.lan, nat)
        nat.lan.hosts[address] = host
        self.hosts[name] = host
        return host

    def _take_lan_address(self, nat: NatBox, name: str, address: str | None) -> str:
        """The next free address of ``nat``'s LAN, or ``address`` checked to be free there."""
        lan = nat.lan
        assert lan.subnet is not None
        if address is None:
            free = lan.next_free_address()
            if free is None:
                raise LocalProtocolError(f"LAN {lan.name!r} ({lan.subnet}) is full")
            return free
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            raise LocalProtocolError(f"host {name!r}: {address!r} is not IPv4") from None
        usable = ip in lan.subnet and ip not in (
            lan.subnet.network_address,
            lan.subnet.broadcast_address,
        )
        if not usable or address == nat.lan_ip:
            raise LocalProtocolError(
                f"host {name!r}: {address} is not a free host address of {lan.subnet} "
                f"(the NAT holds {nat.lan_ip})"
            )
        if address in lan.hosts:
            raise LocalProtocolError(f"host {name!r}: {address} is already in use")
        return address


def build(topology: Mapping[str, Any], *, rng: random.Random, trace: bool = False) -> Network:
    """A new :class:`Network` holding ``topology`` (see :meth:`Network.build`)."""
    network = Network(rng=rng, trace=trace)
    network.build(topology)
    return network
