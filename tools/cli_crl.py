"""``ipop crl push FILE``: hand the local daemon a revocation list; it spreads it to all nodes.

FILE is what ``ipop-config revoke`` wrote (``<network>.crl.pem``; DER is converted). The daemon
installs it only if the network's CA signed it and it is newer than the list it holds, ends
the sessions of revoked peers, and offers it to every linked peer (:mod:`ipop.revocation`).
Exit 1 if the daemon refused it (forged, older, not a CRL).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ipop.aio.control import CommandFailed, ControlClient
from ipop.identity import MAX_CRL_BYTES


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("crl", help="revocation lists")
    crl_sub = p.add_subparsers(dest="crl_command", required=True, metavar="ACTION")
    push = crl_sub.add_parser("push", help="give the daemon a newer revocation list")
    push.add_argument("file", metavar="FILE")
    push.set_defaults(run=run_push)


def _pem(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(2 * MAX_CRL_BYTES + 1)
    except OSError as exc:
        raise CommandFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        return data.decode("ascii", "replace")
    try:
        crl = x509.load_der_x509_crl(data)
    except ValueError:
        raise CommandFailed(f"{path} is not a CRL (PEM or DER)") from None
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def run_push(args: argparse.Namespace, client: ControlClient) -> int:
    number = client.crl_push(_pem(Path(args.file)))
    print(f"CRL number {number} in force; the daemon passes it to its peers")
    return 0
