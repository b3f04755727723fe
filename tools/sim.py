"""ipop-sim: scenarios run in virtual time over the simulated internet (ipop.testing).

``sessions`` (also ``demo``): a public node plus nodes behind every NAT kind each open an
authenticated session to the public node, through the real LinkLayer and the real asyncio
driver, on the virtual-time loop. Reports per NAT kind, virtual and wall time.

``natmatrix``: every pair of NAT kinds, as ``ipop-lab natmatrix`` measures on real NATs, with
the same row keys (``ipop.testing.natmatrix``).

``overlay``: N complete node stacks (overlay, DHT) behind a NAT mix join, then the ring, routing,
DHT, IP allocation and join times are measured; ``--churn F`` kills a fraction F at once and
measures again after repair (``ipop.testing.scenario`` documents every reported key).
``--latency-model world`` places the hosts on a map of regions and sites
(``ipop.testing.latency``) and adds routing stretch and DHT get latency to the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
import tomllib
from typing import Any

from ipop.aio.driver import Driver
from ipop.errors import ConfigError
from ipop.link.events import HandshakeFailed, LinkUp
from ipop.link.layer import LinkLayer
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.identities import make_identity, make_network
from ipop.testing.latency import parse_latency_model
from ipop.testing.nat import NAT_KIND_NAMES
from ipop.testing.natmatrix import run_matrix
from ipop.testing.netsim import Network
from ipop.testing.scenario import OverlayScenario, parse_nat_mix, run_overlay
from ipop.types import Endpoint

PORT = 5800


async def _sessions(
    seed: int,
    per_kind: int,
    loss: float,
    deadline_s: float,
    topology: dict[str, Any] | None = None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    net = Network(rng=random.Random(seed + 1), internet_loss=loss)
    ca = make_network("simnet", now=loop.time())
    drivers: list[Driver] = []
    up: dict[str, float] = {}
    failed: dict[str, str] = {}

    built = net.build(topology) if topology is not None else {}
    servers = [h for h in built.values() if h.nat_kind == "none"]
    if topology is not None and not servers:
        raise ConfigError("hosts", "no public host to connect to", "add a host with no nat")
    # Everyone connects to the first public host of the topology (or to "public", made below).
    server = servers[0].name if servers else "public"

    def node(name: str, kind: str) -> tuple[LinkLayer, Driver]:
        host = built[name] if name in built else net.add_host(name, kind)
        ep = LinkLayer(make_identity(ca, name, now=loop.time()), rng=random.Random(rng.random()))

        def on_event(ev: object) -> None:
            if isinstance(ev, LinkUp) and name != server:
                up.setdefault(name, loop.time())
            elif isinstance(ev, HandshakeFailed) and name != server:
                failed[name] = ev.reason

        holder: list[Driver] = []
        sock = host.bind(PORT, lambda d, a: holder[0].datagram_received(d, a))
        drv = Driver(ep, sock, clock=loop.time, on_event=on_event)
        holder.append(drv)
        drivers.append(drv)
        return ep, drv

    pub_ep, _ = node(server, "none")
    public = Endpoint(net.hosts[server].address, PORT)
    start = loop.time()
    clients: dict[str, str] = {}
    plan: list[tuple[str, str]]
    if topology is not None:
        plan = [(h.name, h.nat_kind) for h in built.values() if h.name != server]
    else:
        plan = [(f"{k}-{i}", k) for k in NAT_KIND_NAMES for i in range(per_kind)]
    for name, kind in plan:
        ep, drv = node(name, kind)
        clients[name] = kind
        ep.connect(public, now=loop.time(), expected=pub_ep.local_id)
        drv.pump()
    end = start + deadline_s
    while loop.time() < end and len(up) + len(failed) < len(clients):
        await asyncio.sleep(0.05)
    for drv in drivers:
        drv.close()
    kinds = []
    for kind in sorted(set(clients.values()), key=NAT_KIND_NAMES.index):
        names = [n for n, k in clients.items() if k == kind]
        times = [up[n] - start for n in names if n in up]
        kinds.append(
            {
                "nat": kind,
                "nodes": len(names),
                "sessions": len(times),
                "max_setup_s": round(max(times), 4) if times else None,
            }
        )
    return {
        "scenario": "sessions",
        "seed": seed,
        "loss": loss,
        "ok": len(up) == len(clients),
        "kinds": kinds,
        "virtual_s": round(loop.time() - start, 3),
        "public_drops": dict(pub_ep.drops),
    }


def _say(line: str) -> None:
    print(f"ipop-sim: {line}", file=sys.stderr, flush=True)


def _overlay(args: argparse.Namespace) -> int:
    # kademlia logs every unanswered RPC at WARNING; churn makes thousands of them.
    logging.getLogger("kademlia").setLevel(logging.ERROR)
    try:
        latency = None if args.latency_model is None else parse_latency_model(args.latency_model)
        sc = OverlayScenario(
            nodes=args.nodes,
            nat_mix=parse_nat_mix(args.nat_mix),
            loss=args.loss,
            churn=args.churn,
            seed=args.seed,
            hosts_per_nat=args.hosts_per_nat,
            join_spread_s=args.join_spread,
            pairs=args.pairs,
            records=args.records,
            replicas=args.replicas,
            delivery_tick_s=args.tick_ms / 1000.0,
            latency_model=latency,
            settle_s=args.settle,
            allocate=not args.no_allocate,
            proximity=not args.no_proximity,
            link_hints=not args.no_link_hints,
        )
        # Phases of a big run take minutes: say when each ends (stderr: stdout is the result).
        _say(f"{sc.nodes} nodes, seed {sc.seed}: joining over {sc.join_spread_s:g} s virtual")
        result = run_overlay(sc, progress=_say)
    except ConfigError as exc:
        print(f"ipop-sim: {exc}", file=sys.stderr)
        return 2
    targets = overlay_targets(result)
    ok = all(met for _, _, met in targets.values())
    result["targets"] = {
        name: {"measured": measured, "target": target, "met": met}
        for name, (measured, target, met) in targets.items()
    }
    result["ok"] = ok
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key in (
            "nodes",
            "ring_consistent",
            "route_success",
            "mean_hops",
            "p99_hops",
            "log2_n",
            "dht_get_success",
            "stretch_p50",
            "stretch_p90",
            "route_rtt_p50_ms",
            "dht_get_p50_s",
            "dht_get_p90_s",
            "duplicate_ips",
            "alloc_failed",
            "join_p50_s",
            "join_p90_s",
            "records_lost",
            "virtual_s",
            "wall_s",
        ):
            if key in result:
                print(f"{key:<18} {result[key]}")
        if "churn" in result:
            print(f"after churn        {json.dumps(result['churn'])}")
        print("targets (issues 3 and 17):")
        for name, (measured, target, met) in targets.items():
            print(f"  {'met ' if met else 'MISS'} {name:<24} {measured!s:<10} target {target}")
        wall_note = "target <= 120 s for 1,000 nodes on a 2-core machine; not judged here"
        print(f"       {'wall_s':<24} {result['wall_s']!s:<10} {wall_note}")
        print(f"ok={ok}")
    return 0 if ok else 1


def overlay_targets(result: dict[str, Any]) -> dict[str, tuple[object, str, bool]]:
    """The issue's targets for an overlay run: name -> (measured, target, met).

    Wall time is not among them: it depends on the machine (see the text output).
    """
    out: dict[str, tuple[object, str, bool]] = {
        "ring_consistent": (result["ring_consistent"], "true", result["ring_consistent"] is True),
        "route_success": (result["route_success"], "1.0", result["route_success"] == 1.0),
        "mean_hops": (
            result["mean_hops"],
            f"<= log2 N = {result['log2_n']}",
            result["mean_hops"] is not None and result["mean_hops"] <= result["log2_n"],
        ),
        "dht_get_success": (result["dht_get_success"], "1.0", result["dht_get_success"] == 1.0),
        "join_p90_s": (
            result["join_p90_s"],
            "<= 10",
            result["join_p90_s"] is not None and result["join_p90_s"] <= 10.0,
        ),
    }
    if "duplicate_ips" in result:
        out["duplicate_ips"] = (result["duplicate_ips"], "0", result["duplicate_ips"] == 0)
    if "stretch_p50" in result:
        for key, bound in (("stretch_p50", 2.0), ("stretch_p90", 3.0)):
            v = result[key]
            out[key] = (v, f"<= {bound:g}", v is not None and v <= bound)
    if "churn" in result:
        after = result["churn"]
        repaired = after["ring_consistent"] is True
        out["churn_ring_consistent"] = (repaired, "true within 60 s", repaired)
        out["churn_records_lost"] = (after["records_lost"], "0", after["records_lost"] == 0)
    return out


def _natmatrix(args: argparse.Namespace) -> int:
    """The lab's ``natmatrix`` on the simulator's NAT models, with the same row keys."""
    from ipop.tools.lab.natmatrix import format_table

    wall = time.perf_counter()
    result = run_matrix(seed=args.seed)
    result["wall_s"] = round(time.perf_counter() - wall, 3)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    ok = all(
        p["reachable"] and (p["direct"] or p["expected_direct"] is False) for p in result["pairs"]
    )
    return 0 if ok else 1


def _read_topology(path: str) -> dict[str, object]:
    """The TOML topology at ``path``; ConfigError naming it and the fix."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(
            path,
            f"cannot be read ({exc.strerror or exc})",
            "check the path given to --topology",
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            path, f"is not valid TOML ({exc})", "fix the syntax (see ipop.testing.netsim)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ipop-sim", description=__doc__)
    ap.add_argument(
        "scenario",
        nargs="?",
        choices=["sessions", "demo", "overlay", "natmatrix"],
        help="default: overlay if an overlay option (--nodes ...) is given, else sessions",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-kind", type=int, default=3)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--topology", help="TOML topology (ipop.testing.netsim.Network.build)")
    overlay = ap.add_argument_group("overlay scenario")
    overlay.add_argument("--nodes", type=int, default=50)
    overlay.add_argument(
        "--nat-mix",
        default="none:0.3,port-restricted-cone:0.5,symmetric:0.2",
        help="KIND:FRACTION,... summing to 1 (KIND as in ipop.testing.nat)",
    )
    overlay.add_argument("--churn", type=float, default=0.0, help="fraction killed at once")
    overlay.add_argument("--hosts-per-nat", type=int, default=4)
    overlay.add_argument("--join-spread", type=float, default=20.0, help="virtual s of starts")
    overlay.add_argument("--pairs", type=int, default=200, help="random pairs routed")
    overlay.add_argument("--records", type=int, default=100, help="DHT records put")
    overlay.add_argument("--replicas", type=int, default=8, help="DHT replicas R")
    overlay.add_argument(
        "--latency-model",
        metavar="SPEC",
        help="place hosts on a map: world[:regions=R,sites=S] (ipop.testing.latency); "
        "adds stretch_p50/p90 and DHT get latency",
    )
    overlay.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="virtual s the converged overlay runs before routes are measured",
    )
    overlay.add_argument(
        "--no-allocate", action="store_true", help="skip the concurrent IP allocation phase"
    )
    overlay.add_argument(
        "--no-proximity",
        action="store_true",
        help="far links by Symphony's random draws alone, not by measured round trips",
    )
    overlay.add_argument(
        "--no-link-hints",
        action="store_true",
        help="routing weighs our own links only, not the ids fast peers say they link to",
    )
    overlay.add_argument(
        "--tick-ms",
        type=float,
        default=1.0,
        help="round each hop's arrival up to a multiple of this (0: exact times)",
    )
    # Which overlay options were given: their defaults are filled in after parsing, so that
    # `ipop-sim --nodes 300` runs the overlay (it silently ran sessions, ignoring --nodes).
    defaults = {a.dest: a.default for a in overlay._group_actions}
    for action in overlay._group_actions:
        action.default = None
    args = ap.parse_args(argv)
    given = [d for d in defaults if getattr(args, d) is not None]
    for dest, default in defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    if args.scenario is None:
        args.scenario = "overlay" if given else "sessions"
    elif given and args.scenario != "overlay":
        flag = "--" + given[0].replace("_", "-")
        print(
            f"ipop-sim: {flag} is an option of the overlay scenario, not {args.scenario}; "
            f"run 'ipop-sim overlay {flag} ...' or drop it",
            file=sys.stderr,
        )
        return 2
    if not 0.0 <= args.loss < 1.0 or args.per_kind < 1:
        print("ipop-sim: --loss must be in [0, 1) and --per-kind >= 1", file=sys.stderr)
        return 2
    if args.scenario == "overlay":
        return _overlay(args)
    if args.scenario == "natmatrix":
        return _natmatrix(args)
    topology = None
    try:
        if args.topology:
            topology = _read_topology(args.topology)
        wall = time.perf_counter()
        result = run_virtual(
            _sessions(args.seed, args.per_kind, args.loss, 60.0, topology), start=SIM_EPOCH
        )
    except ConfigError as exc:
        print(f"ipop-sim: {exc}", file=sys.stderr)
        return 2
    result["wall_s"] = round(time.perf_counter() - wall, 3)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'NAT kind':<22} {'nodes':>5} {'sessions':>8} {'max setup (virtual s)':>22}")
        for k in result["kinds"]:
            setup = "-" if k["max_setup_s"] is None else f"{k['max_setup_s']:.3f}"
            print(f"{k['nat']:<22} {k['nodes']:>5} {k['sessions']:>8} {setup:>22}")
        print(f"ok={result['ok']} virtual={result['virtual_s']}s wall={result['wall_s']}s")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
