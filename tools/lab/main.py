"""ipop-lab: the command line of the namespace lab: up, status, map, exec, logs, down.

This module owns argument parsing and what each subcommand prints; the lab itself lives in
:mod:`ipop.tools.lab.lab`. A lab brought ``up`` stays up after the command returns; its state is in
``--workdir`` (default /run/ipop-lab/current) so later commands find it. SIGINT and SIGTERM
while a lab is being built tear it down before exiting.

``demo`` and ``bench`` are registered by other modules through :func:`register_extra_commands`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from ipop.aio.control import ControlError
from ipop.errors import ConfigError, IpopError
from ipop.overlaymap import DEFAULT_MAX_PEERS, render_map
from ipop.status import Status
from ipop.tools.lab import netns
from ipop.tools.lab.generated import DEFAULT_MIX, PRESETS, preset_topology, scaled_topology
from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.lab import STATE_FILE, Lab, cleanup_stale
from ipop.tools.lab.topology import Topology, default_topology, load_topology

DEFAULT_WORKDIR = Path("/run/ipop-lab/current")

NAT_MATRIX_KINDS = ("none", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric")

# A subcommand registrar adds one subparser and sets ``func`` (args -> exit code) on it.
CommandRegistrar = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", argparse.ArgumentParser], None
]
EXTRA_COMMANDS: list[CommandRegistrar] = []


def register_extra_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Hook for subcommands defined elsewhere (``demo``, ``bench``): each registrar gets the
    subparsers and the common parent parser (``--workdir``) and sets ``func`` on its parser."""
    # >>> extra subcommands (demo, bench) are registered here; not implemented in this module.
    for registrar in EXTRA_COMMANDS:
        registrar(sub, common)
    # <<< end of extra subcommands


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C so Lab.up()/__exit__ tear down.
    raise KeyboardInterrupt(f"signal {signum}")


def _load(workdir: Path) -> Lab | None:
    if not (workdir / STATE_FILE).exists():
        print(
            f"ipop-lab: no lab in {workdir} (start one with 'ipop-lab up', or pass the "
            "--workdir it was started with)",
            file=sys.stderr,
        )
        return None
    return Lab.load(workdir)


# ---------------------------------------------------------------- subcommands


def cmd_up(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir
    if (workdir / STATE_FILE).exists():
        old = Lab.load(workdir)
        print(
            f"ipop-lab: a lab (prefix {old.prefix}) is already recorded in {workdir}; "
            "run `ipop-lab down` first",
            file=sys.stderr,
        )
        return 1
    topo = _topology(args)
    shared = _shared_overlay(args, {h.name for h in topo.hosts})
    lab = Lab(topo, workdir=workdir, prefix=args.prefix)
    lab.up()  # tears down by itself on failure or interrupt
    print(f"lab {lab.prefix} up ({len(lab.namespaces)} namespaces), state in {lab.state_path}")
    _print_hosts(lab)
    if args.no_daemons:
        return 0
    net = IpopNet(lab, metrics=args.metrics, web=args.web, **shared)
    try:
        ready = net.up_all(timeout_s=30.0 + len(lab.hosts))
        for h in lab.hosts:
            st = ready[h.name][0]
            vip = st.self_.vip or "overlay-only"
            print(f"  ipopd on {h.name:<10} {vip:<16} {' '.join(st.self_.names)}")
        for p in lab.plain_hosts:
            net.start_plain(p)
        for p in lab.plain_hosts:
            addr, _ = net.wait_lease(p, timeout_s=15.0)
            print(f"  dhcp on  {p.name:<10} {addr!s:<16} {p.name}.{p.lan_router}.ipop")
    except BaseException:
        lab.down()
        raise
    print("try: ipop-lab exec HOST -- ping NAME.ipop   |   ipop-lab exec HOST -- ipop status")
    return 0


def _shared_overlay(args: argparse.Namespace, hosts: set[str]) -> dict[str, Any]:
    """IpopNet's shared-overlay arguments from ``--overlay``, ``--overlay-only`` and
    ``--member-of`` (ConfigError naming the option for a host the topology lacks)."""
    only = [h for h in args.overlay_only.split(",") if h]
    member_of: dict[str, str] = {}
    for item in (x for x in args.member_of.split(",") if x):
        host, sep, network = item.partition("=")
        if not sep or not network:
            raise ConfigError("--member-of", f"{item!r} is not HOST=NETWORK", "e.g. a2=othernet")
        member_of[host] = network
    if (only or member_of) and args.overlay is None:
        raise ConfigError(
            "--overlay", "is missing", "name the overlay these hosts share, e.g. --overlay shared"
        )
    for option, named in (("--overlay-only", only), ("--member-of", list(member_of))):
        unknown = sorted(set(named) - hosts)
        if unknown:
            raise ConfigError(
                option,
                f"no host {', '.join(unknown)} in the topology",
                "name hosts of the topology (ipop-lab up --no-daemons lists them)",
            )
    if args.overlay is None:
        return {}
    return {"overlay": args.overlay, "overlay_only": only, "networks": member_of}


def _topology(args: argparse.Namespace) -> Topology:
    """A TOML file, a preset, ``--nodes N --nat-mix ...``, or the built-in topology."""
    given = [x for x in (args.topology, args.preset, args.nodes) if x is not None]
    if len(given) > 1:
        raise ConfigError("topology", "give one of TOPOLOGY, --preset, --nodes")
    if args.topology:
        return load_topology(Path(args.topology))
    if args.preset:
        return preset_topology(args.preset)
    if args.nodes is not None:
        return scaled_topology(
            args.nodes, args.nat_mix, clusters=args.clusters, per_nat=args.per_nat
        )
    return default_topology()


def add_topology_args(p: argparse.ArgumentParser, *, file: bool = True) -> None:
    """TOPOLOGY / --preset / --nodes N --nat-mix ... --clusters K --per-nat P."""
    if file:
        p.add_argument("topology", nargs="?", help="topology TOML (default: built-in topology)")
    else:
        p.set_defaults(topology=None)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a generated topology by name")
    p.add_argument("--nodes", type=int, help="generate N ipopd hosts (routers not counted)")
    p.add_argument("--nat-mix", default=DEFAULT_MIX, help=f"kind:weight,... ({DEFAULT_MIX})")
    p.add_argument("--clusters", type=int, default=2, help="router clusters with --nodes")
    p.add_argument("--per-nat", type=int, default=3, help="hosts per shareable NAT")


def _status(lab: Lab) -> dict[str, Any]:
    present = set(netns.list_ns(lab.prefix))
    return {
        "prefix": lab.prefix,
        "state": lab.state,
        "workdir": str(lab.workdir),
        "namespaces": {ns: ns in present for ns in lab.namespaces},
        "hosts": [h.to_dict() for h in lab.hosts],
        "processes": [dict(p.to_dict(), alive=p.alive()) for p in lab.processes],
    }


def _print_hosts(lab: Lab) -> None:
    print(f"{'host':<12} {'ip':<15} {'public ip':<15} {'nat':<22} namespace")
    for h in lab.hosts:
        nat = h.nat_kind or ("public, bootstrap" if h.is_bootstrap else "public")
        print(f"{h.name:<12} {h.ip!s:<15} {h.public_ip!s:<15} {nat:<22} {h.ns}")


def cmd_status(args: argparse.Namespace) -> int:
    lab = _load(args.workdir)
    if lab is None:
        return 1
    st = _status(lab)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    missing = [ns for ns, ok in st["namespaces"].items() if not ok]
    print(
        f"lab {lab.prefix} {lab.state}, workdir {lab.workdir}"
        + (f"; MISSING namespaces: {' '.join(missing)}" if missing else "")
    )
    _print_hosts(lab)
    for p in st["processes"]:
        print(
            f"  pid {p['pid']:<7} {'alive' if p['alive'] else 'dead ':<5} on {p['host']:<12} "
            f"{' '.join(p['argv'])}  (log {p['log']})"
        )
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    """One merged SVG of the overlay, from every daemon's own view (ipop.overlaymap)."""
    lab = _load(args.workdir)
    if lab is None:
        return 1
    net = IpopNet(lab)
    views: list[Status] = []
    for h in lab.hosts:
        try:
            st = net.status(h)
        except ControlError as exc:
            print(f"  {h.name:<10} no status ({exc}); left out", file=sys.stderr)
            continue
        kinds = {
            k: sum(1 for p in st.peers if p.path == k) for k in ("direct", "relayed", "overlay")
        }
        print(
            f"  {h.name:<10} {len(st.peers)} peers: "
            + ", ".join(f"{n} {k}" for k, n in kinds.items()),
            file=sys.stderr,
        )
        views.append(st)
        if args.each is not None:
            args.each.mkdir(parents=True, exist_ok=True)
            (args.each / f"{h.name}.svg").write_text(render_map([st], max_peers=args.max_peers))
    if not views:
        print("ipop-lab map: no daemon answered (is the lab up with daemons?)", file=sys.stderr)
        return 1
    svg = render_map(views, max_peers=args.max_peers, title=f"lab {lab.prefix}: {len(views)} views")
    args.output.write_text(svg)
    print(f"wrote {args.output}: {len(views)} nodes' views merged, {len(svg)} bytes")
    if args.each is not None:
        print(f"wrote one picture per node in {args.each}/")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    lab = _load(args.workdir)
    if lab is None:
        return 1
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("ipop-lab exec: no command given (ipop-lab exec HOST -- CMD...)", file=sys.stderr)
        return 2
    ns = lab.host(args.host).ns
    # The host's daemon socket for `ipop`, and our venv's commands on PATH.
    env = dict(os.environ)
    env["IPOP_SOCKET"] = str(IpopNet(lab).files(args.host).socket)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    # Interactive: inherit our stdio; bounded only if the user asks for --timeout.
    try:
        return subprocess.run(
            netns.in_ns(ns, cmd), timeout=args.timeout, check=False, env=env
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"ipop-lab exec: timed out after {args.timeout} s", file=sys.stderr)
        return 124


def cmd_logs(args: argparse.Namespace) -> int:
    lab = _load(args.workdir)
    if lab is None:
        return 1
    name = lab.host(args.host).name
    logs = {Path(p.log) for p in lab.processes if p.host == name}
    hdir = lab.workdir / "hosts" / name
    if hdir.is_dir():
        logs |= set(hdir.glob("*.log"))
    if not logs:
        print(f"ipop-lab: no logs for {name}", file=sys.stderr)
        return 1
    for path in sorted(logs):
        print(f"==> {path} <==")
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            print("(missing)")
            continue
        for line in lines[-args.tail :] if args.tail else lines:
            print(line)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if (args.workdir / STATE_FILE).exists():
        lab = Lab.load(args.workdir)
        lab.down()
        print(f"lab {lab.prefix} down")
    elif args.prefix is None:
        print(f"ipop-lab: no lab recorded in {args.workdir}; nothing to do")
    if args.prefix is not None:
        gone = cleanup_stale(args.prefix)
        print(f"removed {len(gone)} namespaces with prefix {args.prefix}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"lab state and logs (default {DEFAULT_WORKDIR})",
    )
    parser = argparse.ArgumentParser(
        prog="ipop-lab", description="An emulated internet with NATs in network namespaces."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", parents=[common], help="build a topology and leave it up")
    add_topology_args(p)
    p.add_argument("--prefix", help="namespace prefix (default: ipl + 5 random hex digits + -)")
    p.add_argument("--no-daemons", action="store_true", help="build the network only")
    p.add_argument(
        "--metrics",
        action="store_true",
        help="every daemon serves Prometheus metrics on 127.0.0.1:9580 in its namespace",
    )
    p.add_argument(
        "--web",
        action="store_true",
        help="every daemon serves its status page and map on 127.0.0.1:9581 in its namespace",
    )
    p.add_argument(
        "--overlay",
        metavar="NAME",
        help="put the network on a shared overlay of this name, with a CA of its own",
    )
    p.add_argument(
        "--overlay-only",
        default="",
        metavar="HOSTS",
        help="HOST,... that run overlay-only nodes (route, relay, store; no address)",
    )
    p.add_argument(
        "--member-of",
        default="",
        metavar="HOST=NET,...",
        help="HOST=NETWORK,... members of other networks on the overlay (same subnet)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "map", parents=[common], help="an SVG of the lab's overlay, every view merged"
    )
    p.add_argument("-o", "--output", type=Path, default=Path("lab-map.svg"), help="(lab-map.svg)")
    p.add_argument(
        "--each", type=Path, default=None, metavar="DIR", help="also DIR/HOST.svg per node"
    )
    p.add_argument(
        "--max-peers", type=int, default=DEFAULT_MAX_PEERS, help="peers drawn per node at most"
    )
    p.set_defaults(func=cmd_map)

    p = sub.add_parser("status", parents=[common], help="show the lab that is up")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("exec", parents=[common], help="run a command in a host's namespace")
    p.add_argument("host")
    p.add_argument("--timeout", type=float, default=None, help="seconds (default: none)")
    # main() splits at "--" by hand so CMD may carry options of its own.
    p.add_argument("cmd", nargs="*", help="-- CMD [ARGS...]")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("logs", parents=[common], help="print the logs of a host's processes")
    p.add_argument("host")
    p.add_argument("--tail", type=int, default=0, help="last N lines of each log (0: all)")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("down", parents=[common], help="tear the lab down (idempotent)")
    p.add_argument("--prefix", help="also delete every namespace with this prefix")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("demo", help="the whole demo: build, join, ping every pair by name")
    p.add_argument("topology", nargs="?", help="topology TOML (default: built-in topology)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "bench",
        help="throughput, RTT and CPU per GB: underlay, python floor, ipop (native, pure "
        "Python, relayed), tinc, wg-go, nebula",
    )
    from ipop.tools.lab.bench import add_bench_args

    add_bench_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("natmatrix", help="every pair of NAT kinds: reachable, direct, timing")
    p.add_argument("--json", action="store_true")
    p.add_argument("--kinds", default=",".join(NAT_MATRIX_KINDS), help="comma-separated kinds")
    p.set_defaults(func=cmd_natmatrix)

    p = sub.add_parser("soak", help="churn a large network for M minutes, sweeping every pair")
    add_topology_args(p, file=False)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sweep-every", type=float, default=60.0, help="seconds between sweeps")
    p.add_argument("--pause-s", type=float, default=120.0, help="how long one daemon is stopped")
    p.add_argument("--kills", type=int, default=2, help="daemons killed (-9) per churn round")
    p.add_argument("--recovery-s", type=float, default=5.0, help="recovery window after faults")
    p.add_argument("--workers", type=int, default=6, help="sources swept at once")
    p.add_argument(
        "--bootstraps-stop-at", type=float, default=0.5, help="fraction of the run (0..1)"
    )
    p.add_argument(
        "--start-gap",
        type=float,
        default=0.0,
        help="seconds between daemon starts at cold start (0: all at once)",
    )
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="run the lab in DIR and leave its configs and logs there (DIR/hosts/HOST/)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning"),
        help="the daemons' log level (debug: links, paths and punching too)",
    )
    p.set_defaults(func=cmd_soak)

    register_extra_commands(sub, common)
    return parser


def cmd_natmatrix(args: argparse.Namespace) -> int:
    from ipop.tools.lab.natmatrix import main_natmatrix

    kinds = tuple(k for k in str(args.kinds).split(",") if k)
    bad = [k for k in kinds if k not in NAT_MATRIX_KINDS]
    if bad:
        raise ConfigError("--kinds", f"unknown kind {bad[0]!r}", ", ".join(NAT_MATRIX_KINDS))
    return main_natmatrix(as_json=args.json, kinds=kinds)


def cmd_soak(args: argparse.Namespace) -> int:
    from ipop.tools.lab.soak import SoakPlan, main_soak

    if args.preset is None and args.nodes is None:
        args.nodes = 30  # the size; --preset picks another
    plan = SoakPlan(
        minutes=args.minutes,
        seed=args.seed,
        sweep_every_s=args.sweep_every,
        pause_s=args.pause_s,
        kills=args.kills,
        recovery_s=args.recovery_s,
        workers=args.workers,
        bootstraps_stop_at=args.bootstraps_stop_at,
        start_gap_s=args.start_gap,
    )
    return main_soak(
        _topology(args), plan, as_json=args.json, workdir=args.keep, log_level=args.log_level
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from ipop.tools.lab.demo import main_demo

    topo = load_topology(Path(args.topology)) if args.topology else default_topology()
    return main_demo(topo, as_json=args.json)


def cmd_bench(args: argparse.Namespace) -> int:
    from ipop.tools.lab.bench import main_bench

    return main_bench(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tail: list[str] | None = None
    if "--" in argv and "exec" in argv[: argv.index("--")]:
        # Split by hand: argparse would read the command's options (ping -c) as ours.
        i = argv.index("--")
        argv, tail = argv[:i], argv[i + 1 :]
    args = build_parser().parse_args(argv)
    if tail is not None:
        args.cmd = [*args.cmd, *tail]
    old = signal.signal(signal.SIGTERM, _on_signal)
    try:
        rc: int = args.func(args)
        return rc
    except ConfigError as e:
        print(f"ipop-lab: config error: {e}", file=sys.stderr)
        return 2
    except (IpopError, OSError) as e:
        print(f"ipop-lab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ipop-lab: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
