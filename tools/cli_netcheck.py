"""``ipop netcheck [--json] [--server HOST:PORT ...] [--no-second-opinion]``: the NAT in front
of this node, measured from the daemon's own overlay socket (:mod:`ipop.nat.netcheck`).

Prints the NAT kind, the mapping and filtering behaviours, our public endpoint(s), which peer
kinds a direct path is expected with, what every STUN server said, and pystun3's second
opinion (with its known traps when it disagrees). ``--json`` prints the
:class:`ipop.nat.netcheck.NetcheckResult` document. Exit 1 when the kind could not be decided.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ipop.aio.control import ControlClient
from ipop.errors import ConfigError
from ipop.nat.netcheck import NetcheckResult
from ipop.types import Endpoint


def _server(text: str) -> str:
    try:
        return str(Endpoint.parse(text, key="--server"))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("netcheck", help="classify the NAT in front of this node")
    p.add_argument("--json", action="store_true", help="the netcheck document as JSON")
    p.add_argument(
        "--server",
        action="append",
        default=[],
        type=_server,
        metavar="HOST:PORT",
        help="a STUN server to ask besides the bootstrap nodes and [stun] servers (repeatable)",
    )
    p.add_argument(
        "--no-second-opinion",
        dest="second_opinion",
        action="store_false",
        help="skip pystun3 (it spends 8 s on every unanswered test)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: ControlClient) -> int:
    # One request and one answer, seconds apart: say what is going on meanwhile (stderr, so
    # that stdout stays the result).
    extra = f" and {len(args.server)} more server(s)" if args.server else ""
    wait = "; pystun3's second opinion can take 30 s more" if args.second_opinion else ""
    print(f"ipop: netcheck: asking the bootstrap nodes{extra}{wait}", file=sys.stderr, flush=True)
    result = client.netcheck(args.server, second_opinion=args.second_opinion)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print("\n".join(format_netcheck(result)))
    return 0 if result.nat is not None else 1


def _yn(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _mapping(r: NetcheckResult) -> str:
    if r.mapping is not None:
        return r.mapping
    heard = {s.server for s in r.servers if s.mapped is not None} | {p for p, _ in r.peers_seen}
    return "unknown (one peer)" if len(heard) == 1 else "unknown"


def format_netcheck(r: NetcheckResult) -> list[str]:
    lines = [
        f"nat:        {r.nat or 'unknown'}",
        f"mapping:    {_mapping(r)}",
        f"filtering:  {r.filtering or 'unknown'}",
        f"public:     {', '.join(map(str, r.public_endpoints)) or '-'}",
        f"local:      {', '.join(map(str, r.local_endpoints)) or '-'}",
        "direct to:  " + ", ".join(f"{k} {_yn(v)}" for k, v in r.direct_expected.items()),
    ]
    for s in r.servers:
        if not s.answered:
            lines.append(f"server {s.server}: no answer")
            continue
        lines.append(
            f"server {s.server}: mapped {s.mapped or '-'}, other {s.other or '-'}, "
            f"change ip+port {_yn(s.change_both)}, change port {_yn(s.change_port)}, "
            f"kind {s.kind or 'unknown'}"
        )
    for peer, mapped in r.peers_seen:
        lines.append(f"peer {peer} sees us as {mapped}")
    for o in r.second_opinion:
        said = o.error or f"{o.verdict} (= {o.kind or 'no kind'}), external {o.external or '-'}"
        lines.append(f"pystun3 vs {o.server}: {said}")
    lines += [f"note: {n}" for n in r.notes]
    return lines
