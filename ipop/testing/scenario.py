"""The overlay scenario: N complete node stacks on the simulated internet, joined and measured.

This module owns ``ipop-sim overlay`` (and the tests and benchmark that run it): it builds N
:class:`ipop.aio.stack.Node` stacks (NodeCore + driver + DHT, exactly what the daemon runs) on
:mod:`ipop.testing.netsim` with a NAT mix, starts them staggered over ``join_spread_s`` of
virtual time, waits for the ring to converge, and measures:

``ring_consistent``
    every live node's near set is exactly its ``near_per_side`` true ring neighbours on each
    side (:func:`ipop.testing.invariants.ring_violations` is empty).
``route_success``
    fraction of ``pairs`` random (src, dst) pairs whose routed overlay ping (KIND_PING sent with
    ``Node.ping(dst, routed=True)``, i.e. routed over the ring even when a direct link exists)
    got its reply within ``ping_timeout_s``, in up to ``route_attempts`` tries (the overlay does
    not retransmit routed datagrams, so with loss a single try measures loss, not routes);
    ``route_first_try`` is the fraction answered on the first try.
``mean_hops`` / ``p99_hops``
    over the successful pings: the number of overlay links the *request* crossed from source to
    destination (``Delivered.hops`` at the destination, echoed back in the reply; a message
    to a directly linked peer counts 1). A relay link counts as one link.
``dht_get_success``
    fraction of ``records`` keys, each put by a random node, that a different random node's
    ``get`` returns with the value put.
``duplicate_ips``
    every node calls :func:`ipop.dht.alloc.allocate_ip` at the same virtual instant in one
    subnet; addresses claimed by more than one node (failed allocations are in
    ``alloc_failed``).
``join_p50_s`` / ``join_p90_s``
    virtual seconds from a node's ``start()`` to its ``routable_at``; nodes never routable
    count as infinitely late (reported as null when beyond the sample).
``churn``
    with ``churn > 0``: after the measurements, kill that fraction of nodes at once (never the
    first bootstrap node), wait up to ``repair_deadline_s`` for the ring to be consistent again,
    then measure again; ``records_lost`` counts records put before the churn that a survivor's
    ``get`` no longer finds.
``stretch_p50`` / ``stretch_p90``, ``route_rtt_p50_ms`` / ``route_rtt_p90_ms``
    with a latency map (``latency_model``, :mod:`ipop.testing.latency`) only: per answered
    pair, the routed ping's round trip (request and reply each routed over the ring) divided
    by twice the one-way latency of the pair's direct underlay path
    (:meth:`ipop.testing.netsim.Network.path_latency_s`: LANs plus the map's internet hop);
    and the round trips themselves. The delivery tick adds up to ``delivery_tick_s`` per hop.
``dht_get_p50_s`` / ``dht_get_p90_s``
    with a latency map only: virtual seconds each ``get`` of ``dht_get_success`` took.
``settle_s``
    with ``settle_s > 0``: the converged overlay runs that long before routes are measured.
``virtual_s`` / ``wall_s``
    virtual and wall seconds (time.perf_counter) of the whole scenario; ``wall_phases_s``
    splits the wall seconds by phase (join, converge, dht_ready, routes, put, get, allocate,
    churn_repair, churn_measure, close), to see where a slow run spends its time.

Reproducible from ``seed``: node keys (hence ring positions), the NAT plan, loss, every
node's rng and the scenario's choices derive from it (run twice, compare: equal but for
``wall_s`` and ``wall_phases_s``).

Hosts: "none" hosts are public, and each NAT kind's hosts share NAT boxes ``hosts_per_nat`` at a
time (the simulated internet has only 508 public addresses). Every node advertises its LAN
endpoint, so hosts behind one box can link over their LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from ipop.aio.stack import Node
from ipop.dht.alloc import AllocationFailed, allocate_ip
from ipop.dht.record import namespace_of, user_key
from ipop.dht.service import DhtConfig
from ipop.errors import ConfigError
from ipop.link.layer import LinkConfig
from ipop.overlay.node import OverlayConfig
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_network, seeded_identity
from ipop.testing.invariants import ring_violations
from ipop.testing.latency import LatencyMap, LatencySpec
from ipop.testing.nat import NAT_KIND_NAMES
from ipop.testing.netsim import Host, NatBox, Network
from ipop.testing.simnode import all_dht_ready
from ipop.types import Endpoint, NodeId, RelayPath

__all__ = ["OverlayScenario", "parse_nat_mix", "run_overlay", "run_overlay_async"]

PORT = 5800
# How often convergence is checked while waiting (virtual seconds): cheap next to the overlay.
POLL_S = 1.0
# Public addresses netsim hands out (198.51.100.0/24 + 203.0.113.0/24, minus network/broadcast).
PUBLIC_ADDRESSES = 508


def parse_nat_mix(text: str) -> dict[str, float]:
    """``"none:0.3,symmetric:0.7"`` -> {"none": 0.3, "symmetric": 0.7}; fractions sum to 1."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        kind, sep, frac = part.partition(":")
        kind = kind.strip()
        if not sep or kind not in NAT_KIND_NAMES:
            raise ConfigError(
                "nat-mix",
                f"bad entry {part!r}",
                "use KIND:FRACTION, KIND one of " + ", ".join(str(k) for k in NAT_KIND_NAMES),
            )
        try:
            value = float(frac)
        except ValueError:
            raise ConfigError("nat-mix", f"{frac!r} is not a number", "use e.g. none:0.3") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError("nat-mix", f"{value} not in [0, 1]", "use fractions")
        mix[kind] = mix.get(kind, 0.0) + value
    total = sum(mix.values())
    if not mix or abs(total - 1.0) > 1e-6:
        raise ConfigError("nat-mix", f"fractions sum to {total:g}", "make them sum to 1")
    return mix


@dataclass(frozen=True, slots=True)
class OverlayScenario:
    """Parameters of one overlay run (defaults: the issue's 1,000-node target mix)."""

    nodes: int = 50
    nat_mix: Mapping[str, float] = field(
        default_factory=lambda: {"none": 0.3, "port-restricted-cone": 0.5, "symmetric": 0.2}
    )
    loss: float = 0.0
    churn: float = 0.0
    seed: int = 1
    hosts_per_nat: int = 4
    bootstraps: int = 3
    join_spread_s: float = 20.0
    converge_deadline_s: float = 120.0
    repair_deadline_s: float = 60.0
    pairs: int = 200
    ping_timeout_s: float = 5.0
    # A routed datagram is not retransmitted by the overlay: on a lossy internet one ping can
    # be lost although the route exists, so a pair counts as routed when any of these tries is
    # answered (``route_first_try`` reports single-shot delivery).
    route_attempts: int = 3
    records: int = 100
    # Brunet used 8: with R=3, 30% churn kills all replicas of 0.3**3 = 2.7% of records.
    replicas: int = 8
    # Claim an address per node at once and count duplicates (off: skip that phase, which
    # takes most of a 1,000-node run's wall time when a latency map slows the DHT).
    allocate: bool = True
    subnet: str = "100.64.0.0/16"
    near_per_side: int = 3
    # Direct attempts between NATs that cannot meet (port-restricted cone vs symmetric) fail by
    # handshake timeout, and only then does the overlay try a relay: the default 20 s would
    # make every such near pair wait 20 s. Five handshake tries (0, 0.5, 1.5, 3.5, 7.5 s) fit
    # in 8 s.
    handshake_timeout_s: float = 8.0
    # A crashed peer is noticed only by silence; the default 50 s (three keepalives + slack)
    # leaves 10 s of the 60 s repair budget. Two keepalive intervals are enough on 1% loss.
    link_timeout_s: float = 32.0
    # netsim delivery batching (Network tick_s): every hop's arrival is rounded up to a
    # multiple of this, so the hops of one millisecond share one wake-up of the loop (0: exact
    # times, one wake-up per distinct arrival time). Why 1 ms: at 1,000 nodes exact times
    # cost ~400,000 wake-ups and the run took 20 % longer (122 s against 97, seed 1, same
    # machine); a hop gains 0.5 ms on average against 20 ms of internet latency. (The route
    # failure a 1 ms tick once exposed at 60 nodes, seed 2, was two relayed handshakes crossing
    # through different relays: fixed by OverlayConfig.relay_yield_s.)
    delivery_tick_s: float = 0.001
    # The simulated internet's map (ipop.testing.latency): None, every internet hop costs
    # the same 20 ms; with one, routing stretch and DHT get latency are reported too.
    latency_model: LatencySpec | None = None
    # Virtual seconds the converged overlay runs on before routes are measured (0: at once):
    # time for far links chosen by latency to settle.
    settle_s: float = 0.0
    # Far links chosen by measured round trips (OverlayConfig.proximity; off: Symphony's
    # random draws alone, for comparison).
    proximity: bool = True
    # With proximity: fast peers swap the ids they link to and routing uses them
    # (OverlayConfig.link_hints; off, for comparison).
    link_hints: bool = True

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ConfigError("nodes", f"{self.nodes} < 2", "use at least 2 nodes")
        if not 0.0 <= self.loss < 1.0:
            raise ConfigError("loss", f"{self.loss} not in [0, 1)", "use e.g. 0.01")
        if not 0.0 <= self.churn < 1.0:
            raise ConfigError("churn", f"{self.churn} not in [0, 1)", "use e.g. 0.3")
        if self.hosts_per_nat < 1:
            raise ConfigError("hosts_per_nat", "must be >= 1")
        if self.settle_s < 0:
            raise ConfigError("settle", f"{self.settle_s} < 0", "use 0 or more virtual seconds")

    def plan(self) -> list[str]:
        """NAT kind of each node, node 0 (the first bootstrap) public; deterministic."""
        counts = {k: int(self.nodes * f) for k, f in self.nat_mix.items()}
        # Rounding leftovers go to the largest fractions, so counts sum to ``nodes``.
        for k in sorted(self.nat_mix, key=lambda k: -self.nat_mix[k]):
            if sum(counts.values()) >= self.nodes:
                break
            counts[k] += 1
        counts["none"] = counts.get("none", 0)
        if counts["none"] < 1:
            # Somebody must be reachable to bootstrap from.
            biggest = max(counts, key=lambda k: counts[k])
            counts[biggest] -= 1
            counts["none"] = 1
        kinds: list[str] = [k for k in NAT_KIND_NAMES for _ in range(counts.get(k, 0))]
        random.Random(self.seed).shuffle(kinds)
        kinds.remove("none")
        return ["none", *kinds]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None when the sample is empty or the rank is infinite."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    v = ordered[rank]
    return None if math.isinf(v) else round(v, 3)


class _World:
    def __init__(self, sc: OverlayScenario) -> None:
        self.sc = sc
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(sc.seed)
        self._key_rng = random.Random(sc.seed * 104729 + 17)
        spec = sc.latency_model
        # The map draws from its own rng: without one, the run is what it was.
        latency = None if spec is None else LatencyMap(spec, random.Random(sc.seed * 7907 + 29))
        self.net = Network(
            rng=random.Random(sc.seed + 1),
            internet_loss=sc.loss,
            tick_s=sc.delivery_tick_s,
            latency=latency,
        )
        # Seeded: the CA key names the DHT namespace, so it places every key on the ring.
        self.ca = make_network("simnet", now=self.loop.time(), seed=f"simnet-{sc.seed}")
        self.nodes: list[Node] = []
        self.kinds: list[str] = []
        self.started: list[float] = []
        self.alive: list[bool] = []
        self._boxes: dict[str, tuple[NatBox, int]] = {}
        self._nat_seq = 0

    def host(self, i: int, kind: str) -> Host:
        name = f"h{i}"
        if kind == "none":
            return self.net.add_public_host(name)
        box_count = self._boxes.get(kind)
        if box_count is None or box_count[1] >= self.sc.hosts_per_nat:
            self._nat_seq += 1
            box = self.net.add_nat(f"nat{self._nat_seq}", kind)
            box_count = (box, 0)
        box, count = box_count
        self._boxes[kind] = (box, count + 1)
        return box.add_host(name)

    def build(self) -> None:
        kinds = self.sc.plan()
        public = kinds.count("none")
        boxes = sum(
            math.ceil(kinds.count(k) / self.sc.hosts_per_nat) for k in set(kinds) if k != "none"
        )
        if public + boxes > PUBLIC_ADDRESSES:
            raise ConfigError(
                "nodes",
                f"{public} public hosts + {boxes} NAT boxes > {PUBLIC_ADDRESSES} addresses",
                "raise hosts_per_nat or lower the 'none' share",
            )
        self.kinds = kinds
        self.hosts = [self.host(i, k) for i, k in enumerate(kinds)]
        self.host_of: dict[NodeId, Host] = {}
        pubs = [i for i, k in enumerate(kinds) if k == "none"][: self.sc.bootstraps]
        self.boot = [Endpoint(self.hosts[i].address, PORT) for i in pubs]

    def make_node(self, i: int) -> Node:
        host = self.hosts[i]
        now = self.loop.time()
        node = Node(
            seeded_identity(self.ca, host.name, self._key_rng, now=now),
            # A bootstrap node does not bootstrap from itself.
            bootstrap=[e for e in self.boot if e.host != host.address],
            clock=self.loop.time,
            rng=random.Random(self.rng.random()),
            overlay_config=OverlayConfig(
                near_per_side=self.sc.near_per_side,
                local_endpoints=(Endpoint(host.address, PORT),),
                connect_timeout_s=self.sc.handshake_timeout_s + 2.0,
                proximity=self.sc.proximity,
                link_hints=self.sc.link_hints,
            ),
            link_config=LinkConfig(
                handshake_timeout_s=self.sc.handshake_timeout_s,
                link_timeout_s=self.sc.link_timeout_s,
            ),
            dht_config=DhtConfig(replicas=self.sc.replicas, ksize=max(20, self.sc.replicas)),
        )
        node.attach(
            host.bind(PORT, node.datagram_received),
            open_socket=functools.partial(host.bind, 0),
        )
        return node

    async def start_all(self) -> None:
        n = self.sc.nodes
        spread = self.sc.join_spread_s
        t0 = self.loop.time()
        for i in range(n):
            due = t0 + spread * i / n
            if due > self.loop.time():
                await asyncio.sleep(due - self.loop.time())
            node = self.make_node(i)
            self.host_of[node.node_id] = self.hosts[i]
            self.nodes.append(node)
            self.alive.append(True)
            self.started.append(self.loop.time())
            node.start()

    def live(self) -> list[Node]:
        return [nd for nd, ok in zip(self.nodes, self.alive, strict=True) if ok]

    def violations(self) -> list[str]:
        near = {nd.node_id: nd.core.overlay.near_peers() for nd in self.live()}
        return ring_violations(near, per_side=self.sc.near_per_side)

    async def wait_ring(self, deadline_s: float) -> tuple[bool, float]:
        """Poll until the ring is consistent and every live node routable; (ok, seconds)."""
        t0 = self.loop.time()
        end = t0 + deadline_s
        while True:
            if all(nd.routable.is_set() for nd in self.live()) and not self.violations():
                return True, self.loop.time() - t0
            if self.loop.time() >= end:
                return False, self.loop.time() - t0
            await asyncio.sleep(POLL_S)

    async def wait_dht(self, deadline_s: float) -> int:
        live = self.live()
        with contextlib.suppress(TimeoutError):
            await all_dht_ready(live, deadline_s)
        return sum(1 for nd in live if nd.dht_ready.is_set())

    async def routes(self) -> dict[str, Any]:
        live = self.live()
        pairs = []
        for _ in range(self.sc.pairs):
            a, b = self.rng.sample(live, 2)
            pairs.append((a, b))

        first_try = 0
        # Round trip over the overlay / round trip on the direct underlay path, per pair
        # answered (with a latency map only).
        stretches: list[float] = []
        rtts: list[float] = []

        async def one(a: Node, b: Node) -> int | None:
            nonlocal first_try
            for attempt in range(self.sc.route_attempts):
                try:
                    ping = await a.ping(b.node_id, timeout_s=self.sc.ping_timeout_s, routed=True)
                except TimeoutError:
                    continue
                first_try += attempt == 0
                if self.net.latency is not None:
                    direct = self.net.path_latency_s(
                        self.host_of[a.node_id], self.host_of[b.node_id]
                    )
                    stretches.append(ping.rtt_s / (2 * direct))
                    rtts.append(ping.rtt_s)
                return ping.hops
            return None

        # Spread the pings over a second so they do not all queue in one instant.
        async def staggered(k: int, a: Node, b: Node) -> int | None:
            await asyncio.sleep(k / max(1, len(pairs)))
            return await one(a, b)

        got = await asyncio.gather(*(staggered(k, a, b) for k, (a, b) in enumerate(pairs)))
        hops = [h for h in got if h is not None]
        extra: dict[str, Any] = {}
        if self.net.latency is not None:
            extra = {
                "stretch_p50": _percentile(stretches, 0.5),
                "stretch_p90": _percentile(stretches, 0.9),
                "route_rtt_p50_ms": _ms(_percentile(rtts, 0.5)),
                "route_rtt_p90_ms": _ms(_percentile(rtts, 0.9)),
            }
        return extra | {
            "route_success": round(len(hops) / len(pairs), 4) if pairs else None,
            "mean_hops": round(sum(hops) / len(hops), 3) if hops else None,
            "p99_hops": _percentile([float(h) for h in hops], 0.99),
            "route_first_try": round(first_try / len(pairs), 4) if pairs else None,
            "log2_n": round(math.log2(len(live)), 3),
        }

    async def put_records(self) -> dict[str, bytes]:
        live = [nd for nd in self.live() if nd.dht is not None]
        records: dict[str, bytes] = {}

        async def put(k: int) -> None:
            nd = self.rng.choice(live)
            key, value = user_key(namespace_of(self.ca.trust), f"{k}"), f"value-{k}".encode()
            assert nd.dht is not None
            if await nd.dht.put(key, value, 3600.0):
                records[key] = value

        await asyncio.gather(*(put(k) for k in range(self.sc.records)))
        return records

    async def get_records(self, records: Mapping[str, bytes]) -> int:
        """How many of ``records`` a random live node's get returns with the right value
        (each get's virtual duration goes to ``get_times``)."""
        live = [nd for nd in self.live() if nd.dht is not None]
        self.get_times: list[float] = []

        async def get(key: str, value: bytes) -> bool:
            nd = self.rng.choice(live)
            assert nd.dht is not None
            t0 = self.loop.time()
            rec = await nd.dht.get(key)
            self.get_times.append(self.loop.time() - t0)
            return rec is not None and rec.value == value

        got = await asyncio.gather(*(get(k, v) for k, v in records.items()))
        return sum(got)

    async def allocate(self) -> dict[str, Any]:
        live = [nd for nd in self.live() if nd.dht is not None]
        subnet = IPv4Network(self.sc.subnet)

        async def one(i: int, nd: Node) -> IPv4Address | None:
            assert nd.dht is not None
            try:
                return await allocate_ip(
                    nd.dht,
                    subnet,
                    namespace=namespace_of(self.ca.trust),
                    rng=random.Random(self.sc.seed * 7919 + i),
                )
            except AllocationFailed:
                return None

        t0 = self.loop.time()
        addrs = await asyncio.gather(*(one(i, nd) for i, nd in enumerate(live)))
        claimed = [a for a in addrs if a is not None]
        return {
            "duplicate_ips": len(claimed) - len(set(claimed)),
            "alloc_failed": len(addrs) - len(claimed),
            "alloc_s": round(self.loop.time() - t0, 3),
        }

    async def kill(self, fraction: float) -> int:
        idx = [i for i, ok in enumerate(self.alive) if ok and i != 0]
        victims = self.rng.sample(idx, round(fraction * len(self.nodes)))
        for i in victims:
            self.alive[i] = False
        await asyncio.gather(*(self.nodes[i].close() for i in victims))
        return len(victims)

    def relays(self) -> dict[str, int]:
        """Links whose path runs through a relay; and such near links between symmetric hosts."""
        kind = {nd.node_id: k for nd, k in zip(self.nodes, self.kinds, strict=True)}
        links = sym_near = 0
        for nd in self.live():
            near = nd.core.overlay.near_peers()
            for c in nd.core.overlay.snapshot().connections:
                if isinstance(c.path, RelayPath):
                    links += 1
                    both = kind[nd.node_id] == kind.get(c.peer) == "symmetric"
                    sym_near += both and c.peer in near
        return {"relayed_links": links, "relayed_symmetric_near_links": sym_near}

    def join_times(self) -> list[float]:
        out = []
        for nd, t0 in zip(self.nodes, self.started, strict=True):
            out.append(math.inf if nd.routable_at is None else nd.routable_at - t0)
        return out


async def run_overlay_async(
    sc: OverlayScenario, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run ``sc`` on the running (virtual-time) loop; see the module docstring for the keys."""
    wall = time.perf_counter()
    w = _World(sc)
    w.build()
    t0 = w.loop.time()
    out: dict[str, Any] = {
        "scenario": "overlay",
        "nodes": sc.nodes,
        "seed": sc.seed,
        "loss": sc.loss,
        "nat_mix": dict(sc.nat_mix),
        "hosts_per_nat": sc.hosts_per_nat,
    }
    if sc.latency_model is not None:
        out["latency_model"] = sc.latency_model.describe()
        out["proximity"] = sc.proximity
        out["link_hints"] = sc.link_hints
        out["settle_s"] = sc.settle_s
    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 1)
        mark = now
        if progress is not None:
            virtual = w.loop.time() - t0
            progress(f"{name} done: {phases[name]} s wall, {virtual:.1f} s virtual so far")

    try:
        await w.start_all()
        phase("join")
        ok, took = await w.wait_ring(sc.converge_deadline_s)
        phase("converge")
        joins = w.join_times()
        out["join_p50_s"] = _percentile(joins, 0.5)
        out["join_p90_s"] = _percentile(joins, 0.9)
        out["joined_in_10s"] = round(sum(1 for j in joins if j <= 10.0) / len(joins), 4)
        out["ring_consistent"] = ok
        out["ring_violations"] = len(w.violations())
        out["converged_after_last_start_s"] = round(took, 3)
        out.update(w.relays())
        out["dht_ready"] = await w.wait_dht(60.0)
        phase("dht_ready")
        if sc.settle_s > 0:
            await asyncio.sleep(sc.settle_s)
            phase("settle")
        out.update(await w.routes())
        phase("routes")
        records = await w.put_records()
        out["records_put"] = len(records)
        phase("put")
        found = await w.get_records(records)
        out["dht_get_success"] = round(found / len(records), 4) if records else None
        if sc.latency_model is not None:
            out["dht_get_p50_s"] = _percentile(w.get_times, 0.5)
            out["dht_get_p90_s"] = _percentile(w.get_times, 0.9)
        phase("get")
        if sc.allocate:
            out.update(await w.allocate())
            phase("allocate")
        if sc.churn > 0:
            killed = await w.kill(sc.churn)
            t_kill = w.loop.time()
            ok2, took2 = await w.wait_ring(sc.repair_deadline_s)
            phase("churn_repair")
            after: dict[str, Any] = {
                "killed": killed,
                "nodes": len(w.live()),
                "ring_consistent": ok2,
                "ring_violations": len(w.violations()),
                "repair_s": round(took2, 3),
            }
            found2 = await w.get_records(records)
            after["records_lost"] = len(records) - found2
            after["dht_get_success"] = round(found2 / len(records), 4) if records else None
            after["records_checked_at_s"] = round(w.loop.time() - t_kill, 3)
            if sc.latency_model is not None:
                after["dht_get_p50_s"] = _percentile(w.get_times, 0.5)
                after["dht_get_p90_s"] = _percentile(w.get_times, 0.9)
            after.update(await w.routes())
            phase("churn_measure")
            out["churn"] = after
            out["records_lost"] = after["records_lost"]
        out["callback_errors"] = len(w.net.callback_errors)
        out["net_drops"] = {k: v for k, v in sorted(w.net.stats.items()) if "drop" in k}
    finally:
        await asyncio.gather(*(nd.close() for nd in w.live()))
    phase("close")
    out["virtual_s"] = round(w.loop.time() - t0, 3)
    out["wall_s"] = round(time.perf_counter() - wall, 3)
    out["wall_phases_s"] = phases
    return out


# Collector thresholds while a scenario runs. Why: a simulation holds hundreds of thousands of
# long-lived objects (every node's state), and with the defaults (700, 10, 10) the collector
# rescanned them all 14 times in a 1,000-node run: 8 s of its 95 (measured). Cycles are still
# collected, only in fewer and larger batches (1.8 s).
SIM_GC_THRESHOLDS = (20_000, 50, 50)


def run_overlay(
    sc: OverlayScenario, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run ``sc`` on a fresh virtual-time loop (blocking); the result is JSON-ready.

    ``progress`` is told when each phase ends (a line of text), for a long run's user.
    """
    saved = gc.get_threshold()
    gc.set_threshold(*SIM_GC_THRESHOLDS)
    try:
        return run_virtual(run_overlay_async(sc, progress=progress), start=SIM_EPOCH)
    finally:
        gc.set_threshold(*saved)
