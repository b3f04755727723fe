"""``ipop ping NAME|IP``: ping a peer over the overlay and show which path answered.

One line per probe (path, overlay hops, RTT), then a summary; exit 1 if nothing answered.
``--json`` prints one document at the end instead::

    {"target": "bob", "sent": 3, "answered": 2, "replies": [<PingReply>, ...]}

The daemon owns the probing and the name lookup; this module only paces the requests
(``-i``) and counts. Ctrl-C stops early and still prints the summary.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ipop.aio.control import MAX_PING_TIMEOUT_S, ControlClient
from ipop.status import PingReply

DEFAULT_COUNT = 4
DEFAULT_INTERVAL_S = 1.0
DEFAULT_TIMEOUT_S = 2.0
# Bounds the run: a typo in -c must not start a probe that runs for days.
MAX_COUNT = 100_000


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"count must be 1-{MAX_COUNT}")
    return n


def _seconds(upper: float | None, *, allow_zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        low_ok = value >= 0 if allow_zero else value > 0
        if not low_ok or value != value or (upper is not None and value > upper):
            bound = f" up to {upper:g}" if upper is not None else ""
            lower = "0 or more" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{text!r} must be {lower}{bound}")
        return value

    return parse


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("ping", help="ping a peer over the overlay")
    p.add_argument("target", metavar="NAME|IP")
    p.add_argument(
        "-c",
        dest="count",
        type=_count,
        default=DEFAULT_COUNT,
        help=f"number of probes (default {DEFAULT_COUNT})",
    )
    p.add_argument(
        "-i",
        dest="interval",
        type=_seconds(3600.0, allow_zero=True),
        default=DEFAULT_INTERVAL_S,
        metavar="INTERVAL",
        help=f"seconds between probes (default {DEFAULT_INTERVAL_S:g})",
    )
    p.add_argument(
        "-W",
        dest="timeout",
        type=_seconds(MAX_PING_TIMEOUT_S, allow_zero=False),
        default=DEFAULT_TIMEOUT_S,
        metavar="TIMEOUT",
        help=f"seconds to wait for each reply (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument("--json", action="store_true", help="one JSON document at the end")
    p.set_defaults(run=run)


def reply_line(target: str, reply: PingReply, timeout_s: float) -> str:
    if not reply.ok:
        return f"{target}: seq={reply.seq} no reply within {timeout_s:g} s"
    parts = [f"{target}: seq={reply.seq}", f"path={reply.path or '?'}"]
    if reply.hops is not None:
        parts.append(f"hops={reply.hops}")
    parts.append("rtt=?" if reply.rtt_ms is None else f"rtt={reply.rtt_ms:.2f} ms")
    return " ".join(parts)


def summary_lines(target: str, replies: list[PingReply]) -> list[str]:
    sent = len(replies)
    answered = [r for r in replies if r.ok]
    lost = 100 * (sent - len(answered)) // sent if sent else 0
    lines = [f"--- {target}: {sent} sent, {len(answered)} answered, {lost}% lost"]
    rtts = [r.rtt_ms for r in answered if r.rtt_ms is not None]
    if rtts:
        avg = sum(rtts) / len(rtts)
        lines.append(f"rtt min/avg/max = {min(rtts):.2f}/{avg:.2f}/{max(rtts):.2f} ms")
    paths = Counter(r.path or "?" for r in answered)
    if paths:
        lines.append("paths: " + ", ".join(f"{p} {n}" for p, n in sorted(paths.items())))
    return lines


def run(args: argparse.Namespace, client: ControlClient) -> int:
    replies: list[PingReply] = []
    try:
        for i in range(args.count):
            if i and args.interval:
                time.sleep(args.interval)  # pacing, as ping(8) does; not synchronisation
            reply = client.ping(args.target, seq=i + 1, timeout_s=args.timeout)
            replies.append(reply)
            if not args.json:
                print(reply_line(args.target, reply, args.timeout), flush=True)
    except KeyboardInterrupt:
        pass  # stop early, still summarise
    answered = sum(1 for r in replies if r.ok)
    if args.json:
        doc = {
            "target": args.target,
            "sent": len(replies),
            "answered": answered,
            "replies": [r.to_dict() for r in replies],
        }
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(summary_lines(args.target, replies)))
    return 0 if answered else 1
