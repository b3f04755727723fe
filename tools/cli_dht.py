"""``ipop dht get KEY`` and ``ipop dht put KEY VALUE [--ttl S]``: the DHT, by hand.

``get`` prints the value (exit 1 if there is none); ``put`` stores it for ``--ttl`` seconds
(exit 1 if the DHT did not take it). For debugging and scripts; the daemon signs and owns
what it stores.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ipop.aio.control import ControlClient
from ipop.tools.cli_args import int_in

DEFAULT_TTL_S = 3600


_ttl = int_in(1, None, "TTL in seconds")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("dht", help="read or write a DHT key")
    dsub = p.add_subparsers(dest="dht_command", required=True, metavar="ACTION")
    g = dsub.add_parser("get", help="print the value stored under KEY")
    g.add_argument("key", metavar="KEY")
    g.set_defaults(run=run_get)
    s = dsub.add_parser("put", help="store VALUE under KEY")
    s.add_argument("key", metavar="KEY")
    s.add_argument("value", metavar="VALUE")
    s.add_argument(
        "--ttl",
        type=_ttl,
        default=DEFAULT_TTL_S,
        metavar="S",
        help=f"seconds the value lives (default {DEFAULT_TTL_S})",
    )
    s.set_defaults(run=run_put)


def run_get(args: argparse.Namespace, client: ControlClient) -> int:
    value = client.dht_get(args.key)
    if value is None:
        print(f"ipop: {args.key!r}: not found in the DHT", file=sys.stderr)
        return 1
    print(value)
    return 0


def run_put(args: argparse.Namespace, client: ControlClient) -> int:
    if not client.dht_put(args.key, args.value, args.ttl):
        print(f"ipop: {args.key!r}: the DHT did not store it (see ipopd's log)", file=sys.stderr)
        return 1
    print(f"stored {args.key!r} for {args.ttl} s")
    return 0
