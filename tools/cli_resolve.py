"""``ipop resolve NAME``: the virtual IP the daemon's resolver gives for NAME.

The same answer DNS on the tap gives (``C064001002``, ``alice-laptop``, with or without the
suffix); exit 1 if the name is unknown.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ipop.aio.control import ControlClient


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("resolve", help="the virtual IP of a name")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, client: ControlClient) -> int:
    address = client.resolve(args.name)
    if address is None:
        print(f"ipop: {args.name!r}: no such name", file=sys.stderr)
        return 1
    print(address)
    return 0
