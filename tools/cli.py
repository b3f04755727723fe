"""``ipop``: talk to the local ``ipopd`` through its control socket (DESIGN.md §1, §12.10).

Commands::

    ipop [--socket PATH] status [--json]
    ipop [--socket PATH] map [-o FILE] [--max-peers N]
    ipop [--socket PATH] ping NAME|IP [-c N] [-i INTERVAL] [-W TIMEOUT] [--json]
    ipop [--socket PATH] dht get KEY
    ipop [--socket PATH] dht put KEY VALUE [--ttl S]
    ipop [--socket PATH] resolve NAME
    ipop [--socket PATH] netcheck [--json] [--server HOST:PORT ...] [--no-second-opinion]
    ipop [--socket PATH] crl push FILE
    ipop [--socket PATH] service publish NAME PORT [--proto tcp|udp] [--txt K=V ...]
    ipop [--socket PATH] service list [NAME] [--proto tcp|udp] [--json]
    ipop [--socket PATH] service withdraw NAME [--proto tcp|udp]

The socket is ``--socket``, else ``$IPOP_SOCKET``, else ``/run/ipop/ipopd.sock``.

This module is thin on purpose: it parses arguments and maps failures to exit codes; each
subcommand lives in its own module (``ipop.tools.cli_status`` …), which calls the daemon through
:class:`ipop.aio.control.ControlClient` and only formats :mod:`ipop.status` objects.

Exit codes: 0 success; 1 the daemon answered "no" (ping unanswered, name or key not found, a
command the daemon refused); 2 bad usage, or no daemon to talk to. Every failure is exactly one
line on stderr, ``ipop: <what is wrong> (<fix>)``, e.g.
``ipop: no daemon at /run/ipop/ipopd.sock (is ipopd running?)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ipop.aio.control import (
    CommandFailed,
    ControlClient,
    ControlReplyError,
    ControlUnavailable,
)
from ipop.config import DEFAULT_CONTROL_SOCKET
from ipop.tools import (
    cli_crl,
    cli_dht,
    cli_map,
    cli_netcheck,
    cli_ping,
    cli_resolve,
    cli_service,
    cli_status,
)

PROG = "ipop"
SOCKET_ENV = "IPOP_SOCKET"
EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints usage plus an error over several lines; we promise exactly one.
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{PROG} --help')")


def default_socket() -> str:
    """``$IPOP_SOCKET`` if set and not empty, else the daemon's default path."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_CONTROL_SOCKET


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Talk to the local ipop daemon.")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=None,
        help=f"control socket (default ${SOCKET_ENV} or {DEFAULT_CONTROL_SOCKET})",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        cli_status,
        cli_map,
        cli_ping,
        cli_dht,
        cli_resolve,
        cli_netcheck,
        cli_crl,
        cli_service,
    ):
        module.add_parser(sub)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ipop``; returns the exit code."""
    try:
        args = build_parser().parse_args(list(argv) if argv is not None else None)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    client = ControlClient(args.socket or default_socket())
    run: Callable[[argparse.Namespace, ControlClient], int] = args.run
    try:
        return run(args, client)
    except (ControlUnavailable, ControlReplyError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except CommandFailed as exc:
        return _fail(str(exc), EXIT_NO)


if __name__ == "__main__":
    sys.exit(main())
