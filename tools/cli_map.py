"""``ipop map [-o FILE] [--max-peers N]``: an SVG of the overlay as this node sees it.

Asks the daemon for its status and draws it (:func:`ipop.overlaymap.render_map`): the ring by
overlay id, near/far links, shortcuts and relays, paths coloured direct/relayed/overlay, RTT
and bytes in each edge's hover. Without ``-o`` the SVG goes to stdout; with it, one line says
what was written. The same picture is ``/map.svg`` on ``ipopd``'s ``[web] listen``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ipop.aio.control import ControlClient
from ipop.overlaymap import DEFAULT_MAX_PEERS, render_map


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of peers, 1 or more")
    return value


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("map", help="an SVG picture of the overlay as this node sees it")
    p.add_argument("-o", "--output", metavar="FILE", default=None, help="write here, not stdout")
    p.add_argument(
        "--max-peers",
        type=_positive,
        default=DEFAULT_MAX_PEERS,
        help=f"peers drawn at most, near links first (default {DEFAULT_MAX_PEERS})",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: ControlClient) -> int:
    status = client.status()
    svg = render_map([status], max_peers=args.max_peers)
    if args.output is None:
        sys.stdout.write(svg)
        return 0
    try:
        Path(args.output).write_text(svg, encoding="utf-8")
    except OSError as exc:
        print(
            f"ipop: cannot write {args.output} ({exc.strerror or exc}; pick another -o)",
            file=sys.stderr,
        )
        return 2
    drawn = min(len(status.peers), args.max_peers)
    print(f"wrote {args.output}: {drawn} of {len(status.peers)} peers, {len(svg)} bytes")
    return 0
