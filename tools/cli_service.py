"""``ipop service publish|list|withdraw``: services found through the DHT.

``publish NAME PORT [--proto tcp|udp] [--txt K=V ...]`` announces that this node's vIP
answers NAME on PORT (DNS: ``_NAME._PROTO.<suffix>`` SRV and TXT); ``list [NAME]`` prints
every live instance of NAME in the network, or, without NAME, what this node publishes;
``withdraw NAME`` takes ours away at once. Exit 1 if the daemon refuses, or ``list NAME``
finds nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from ipaddress import IPv4Address
from typing import Any

from ipop.aio.control import ControlClient
from ipop.dht.names import c_name
from ipop.tools.cli_args import int_in

_port = int_in(1, 0xFFFF, "port")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("service", help="publish, list or withdraw services (DNS SRV)")
    ssub = p.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    pub = ssub.add_parser("publish", help="announce a service this node runs")
    pub.add_argument("name", metavar="NAME")
    pub.add_argument("port", metavar="PORT", type=_port)
    pub.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    pub.add_argument(
        "--txt", action="append", default=[], metavar="K=V", help="a TXT string (repeatable)"
    )
    pub.set_defaults(run=run_publish)
    ls = ssub.add_parser("list", help="instances of NAME in the network (no NAME: ours)")
    ls.add_argument("name", metavar="NAME", nargs="?", default="")
    ls.add_argument("--proto", choices=("tcp", "udp"), default="")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(run=run_list)
    wd = ssub.add_parser("withdraw", help="stop announcing a service")
    wd.add_argument("name", metavar="NAME")
    wd.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    wd.set_defaults(run=run_withdraw)


def run_publish(args: argparse.Namespace, client: ControlClient) -> int:
    r = client.service_publish(args.name, args.port, args.proto, list(args.txt))
    print(f"published {r.get('name')}/{r.get('proto')} at {r.get('addr')}:{r.get('port')}")
    return 0


def run_list(args: argparse.Namespace, client: ControlClient) -> int:
    found = client.service_list(args.name, args.proto)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        rows = [("NAME", "PROTO", "TARGET", "ADDRESS", "PORT", "TXT")]
        for r in found:
            addr = str(r.get("addr"))
            try:
                target = c_name(IPv4Address(addr))
            except ValueError:
                target = "?"
            txt = " ".join(str(t) for t in r.get("txt") or [])
            rows.append(
                (str(r.get("name")), str(r.get("proto")), target, addr, str(r.get("port")), txt)
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    if args.name and not found:
        print(f"ipop: no live instance of {args.name!r}", file=sys.stderr)
        return 1
    return 0


def run_withdraw(args: argparse.Namespace, client: ControlClient) -> int:
    if not client.service_withdraw(args.name, args.proto):
        print(f"ipop: this node does not publish {args.name}/{args.proto}", file=sys.stderr)
        return 1
    print(f"withdrew {args.name}/{args.proto}")
    return 0
