"""``ipop-config``: make network CAs and per-node bundles, and inspect bundles (DESIGN.md §4, §10).

A network home directory (``--home``, default ``$IPOP_CONFIG_HOME`` or ``~/.config/ipop``) holds
one folder per network::

    <home>/<network>/ca.key        the CA's private key (0600; never leaves this folder)
    <home>/<network>/ca.crt        the CA certificate (goes into every bundle)
    <home>/<network>/network.toml  subnet, bootstrap endpoints, DNS suffix
    <home>/<network>/issued.json   the register: every certificate signed (serial, node id,
                                   name, hostname, expiry, revocation) and the last CRL number
    <home>/<network>/<network>.crl.pem  the CA-signed revocation list in force (after a revoke)

An overlay shared by several networks (issue 17) has a home of its own beside them::

    <home>/<overlay>.overlay/ca.key, ca.crt, issued.json, <overlay>.crl.pem

Commands::

    ipop-config init NETWORK --subnet 100.64.0.0/10 --bootstrap IP:PORT [...] [--dns-suffix S]
                [--overlay OVERLAY]
    ipop-config node NETWORK NAME [--hostname H] [--router --max-hosts N] [--days N]
                [--out FILE] [--force]
    ipop-config revoke NETWORK NAME|NODE_ID [--out FILE]
    ipop-config overlay init OVERLAY [--days N]
    ipop-config overlay node OVERLAY NAME --bootstrap IP:PORT [...] [--days N] [--out FILE]
                [--force]
    ipop-config overlay revoke OVERLAY NAME|NETWORK/NAME|NODE_ID [--out FILE]
    ipop-config show BUNDLE [--json]

Overlays: ``overlay init`` makes an overlay CA (an ordinary ipop CA whose O= is the overlay's
name). ``init NETWORK --overlay OVERLAY`` puts a network on it: ``network.toml`` records the
overlay's name and CA fingerprint, and the network's bootstrap list serves both. ``node`` then
issues two certificates for the node's one key, the network's (DHT records, names) and the
overlay's (links, routing; in the overlay's register as ``NETWORK/NAME``); the overlay's home
is local to this tool, where in a real split the overlay's operator signs the second.
``overlay node`` makes an overlay-only bundle (no network keys). ``revoke`` revokes network
certificates only (DHT records); ``overlay revoke`` revokes overlay certificates (links), a
member's as ``NETWORK/NAME``; ``node --force`` revokes a member's earlier ones of both. Bundles
carry each CA's list in force: ``crl`` and ``overlay_crl``.

Names are bound to certificates: ``node`` refuses a node name or hostname that a live
(unexpired, unrevoked) certificate of the register already carries. ``--force`` re-issues a node
(same NAME): its previous certificates are revoked in the same step. ``revoke`` revokes every
live certificate of a node (by name or node id, or an unambiguous id prefix of 8+ hex digits)
and writes a new CRL with the next CRL number; hand it to running nodes with ``ipop crl push``
(they spread it) and it rides in every bundle made afterwards.

Every problem with the input is reported as exactly one line on stderr,
``ipop-config: <what is wrong> (<fix>)``, with exit code 2, and nothing is written: files are
written to a temporary name and moved into place only after every check passed. ``show``
exits 0 when the bundle is usable now and 1 when it is not (expired, not yet valid).

The folder's files (settings, register, CRL, all-or-nothing writes) are
:mod:`ipop.tools.config_home`; this module owns the commands and their arguments.

This is a composition root: it alone reads the real clock (``time.time()``); ``main`` takes a
``now`` override so tests can stand at any moment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ipop.bundle import (
    DEFAULT_DNS_SUFFIX,
    Bundle,
    dump_bundle,
    load_bundle,
    parse_dns_suffix,
    parse_subnet,
)
from ipop.dht.seal import RECORDS_KEY_PURPOSE
from ipop.errors import ConfigError
from ipop.identity import (
    MAX_ROUTER_HOSTS,
    NetworkCA,
    NodeCertificate,
    NodeIdentity,
    cert_serial,
    validate_hostname,
    validate_network,
    validate_node_name,
)
from ipop.timing import CA_DEFAULT_DAYS, NODE_CERT_DEFAULT_DAYS
from ipop.tools.config_home import (
    Issued,
    NetworkSettings,
    Register,
    UsageError,
    current_crl,
    overlay_folder,
    read_file,
    tmp_name,
    write_file,
)
from ipop.types import Endpoint

PROG = "ipop-config"
# Ten years of days is the longest any certificate we sign may run; past that, rotate.
MAX_DAYS = 36500


class _Parser(argparse.ArgumentParser):
    # argparse prints usage plus an error over several lines; we promise exactly one.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see '{PROG} --help'")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _default_home() -> Path:
    env = os.environ.get("IPOP_CONFIG_HOME")
    if env:
        return Path(env)
    return Path.home() / ".config" / "ipop"


def _days(value: int, flag: str = "--days") -> int:
    if not 1 <= value <= MAX_DAYS:
        raise UsageError(f"{flag} {value} is out of range", f"use 1 to {MAX_DAYS} days")
    return value


# --- commands ---------------------------------------------------------------------------------


def _make_home(target: Path, home: Path, ca: NetworkCA, files: dict[str, bytes]) -> None:
    """Write a CA's new home folder ``target`` (ca.key, ca.crt, ``files``) all or nothing."""
    if home.exists() and not home.is_dir():
        raise UsageError(f"--home {home} is not a directory", "choose a directory")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = tmp_name(target)
    staging.mkdir(mode=0o700)
    try:
        write_file(staging / "ca.key", ca.key_pem(), 0o600, overwrite=False)
        write_file(staging / "ca.crt", ca.cert_pem(), 0o644, overwrite=False)
        for name, data in files.items():
            write_file(staging / name, data, 0o644, overwrite=False)
        if target.exists():  # appeared while we worked: do not replace it
            raise UsageError(f"{target} already exists", "choose another name")
        staging.rename(target)
    except BaseException:
        for child in staging.glob("*"):
            child.unlink(missing_ok=True)
        staging.rmdir()
        raise


def cmd_init(args: argparse.Namespace, *, now: float) -> int:
    home: Path = args.home
    network = validate_network(args.network, key="NETWORK")
    overlay: NetworkCA | None = None
    if args.overlay is not None:
        overlay = _load_overlay(home, validate_network(args.overlay, key="--overlay"))
    settings = NetworkSettings(
        network=network,
        subnet=parse_subnet(args.subnet, key="--subnet"),
        bootstrap=tuple(Endpoint.parse(b, key="--bootstrap") for b in args.bootstrap),
        dns_suffix=parse_dns_suffix(args.dns_suffix, key="--dns-suffix"),
        overlay=None if overlay is None else overlay.network,
        overlay_ca=None if overlay is None else overlay.trust.fingerprint,
    )
    days = _days(args.days)
    target = home / network
    if target.exists() or target.is_symlink():
        raise UsageError(
            f"network {network!r} already exists in {target}",
            "choose another name, or delete that folder if you mean to start over",
        )
    ca = NetworkCA.create(network, now=now, days=days)
    _make_home(target, home, ca, {"network.toml": settings.to_toml().encode()})
    print(f"created network {network!r} in {target}")
    if overlay is not None:
        print(f"on overlay {overlay.network!r} (its CA signs each node's second certificate)")
    print(f"subnet {settings.subnet}, dns suffix {settings.dns_suffix!r}")
    print(f"bootstrap {', '.join(str(ep) for ep in settings.bootstrap)}")
    print(f"CA valid until {_iso(ca.not_after)}, fingerprint {ca.trust.fingerprint[:16]}")
    print(f"keep {target / 'ca.key'} secret; it never goes into a bundle")
    return 0


def cmd_overlay_init(args: argparse.Namespace, *, now: float) -> int:
    home: Path = args.home
    overlay = validate_network(args.overlay, key="OVERLAY")
    days = _days(args.days)
    target = overlay_folder(home, overlay)
    if target.exists() or target.is_symlink():
        raise UsageError(
            f"overlay {overlay!r} already exists in {target}",
            "choose another name, or delete that folder if you mean to start over",
        )
    # An overlay CA is an ordinary ipop CA whose O= is the overlay's name.
    ca = NetworkCA.create(overlay, now=now, days=days)
    _make_home(target, home, ca, {})
    print(f"created overlay {overlay!r} in {target}")
    print(f"CA valid until {_iso(ca.not_after)}, fingerprint {ca.trust.fingerprint[:16]}")
    print(f"keep {target / 'ca.key'} secret; it never goes into a bundle")
    print(f"networks join it with '{PROG} init NETWORK --overlay {overlay} ...'")
    return 0


def _load_ca(folder: Path, name: str) -> NetworkCA:
    ca = NetworkCA.load(
        read_file(folder / "ca.key", "CA key"), read_file(folder / "ca.crt", "CA certificate")
    )
    if ca.network != name:
        raise UsageError(f"{folder} holds the CA of {ca.network!r}", "restore the right files")
    return ca


def _load_overlay(home: Path, overlay: str) -> NetworkCA:
    folder = overlay_folder(home, overlay)
    if not folder.is_dir():
        raise UsageError(
            f"unknown overlay {overlay!r} in {home} (no {folder})",
            f"create it with '{PROG} overlay init {overlay}' or pass --home",
        )
    return _load_ca(folder, overlay)


def _load_network(home: Path, network: str) -> tuple[NetworkCA, NetworkSettings]:
    folder = home / network
    if not folder.is_dir():
        raise UsageError(
            f"unknown network {network!r} in {home}",
            f"create it with '{PROG} init {network} --subnet ... --bootstrap ...' or pass --home",
        )
    ca = _load_ca(folder, network)
    settings_text = read_file(folder / "network.toml", "network settings")
    try:
        settings = NetworkSettings.from_toml(settings_text.decode("utf-8"), network=network)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{folder / 'network.toml'} is not valid TOML: {exc}", "fix it") from None
    except ConfigError as exc:
        raise UsageError(f"{folder / 'network.toml'}: {exc.key}: {exc.problem}", exc.fix) from None
    return ca, settings


def _network_overlay(home: Path, settings: NetworkSettings) -> NetworkCA | None:
    """The overlay CA a network's network.toml names, checked against its fingerprint."""
    if settings.overlay is None:
        return None
    ca = _load_overlay(home, settings.overlay)
    if ca.trust.fingerprint != settings.overlay_ca:
        raise UsageError(
            f"the CA in {overlay_folder(home, settings.overlay)} is not the one network "
            f"{settings.network!r} was made on (fingerprint {ca.trust.fingerprint[:16]}, "
            f"network.toml overlay_ca {str(settings.overlay_ca)[:16]})",
            "restore that overlay's ca.key and ca.crt; a new overlay needs a new network",
        )
    return ca


def _router_hosts(args: argparse.Namespace) -> int:
    """The router certificate's LAN host quota (0: a plain node); --max-hosts needs --router."""
    if not args.router:
        if args.max_hosts is not None:
            raise UsageError("--max-hosts is only for routers", "add --router or drop it")
        return 0
    if args.hostname is None:
        # LAN hosts are named <host>.<router hostname>: a router without one names nobody.
        raise UsageError("a router needs --hostname", "add --hostname, e.g. --hostname lab")
    n = 1024 if args.max_hosts is None else args.max_hosts
    if not 1 <= n <= MAX_ROUTER_HOSTS:
        raise UsageError(f"--max-hosts {n} is out of range", f"use 1..{MAX_ROUTER_HOSTS}")
    return n


def _out_path(args: argparse.Namespace, name: str) -> Path:
    """Where the bundle goes (--out, default ./NAME.bundle.toml), checked before any signing."""
    out = Path(args.out) if args.out else Path(f"{name}.bundle.toml")
    if out.is_dir():
        raise UsageError(f"{out} is a directory", "give --out a file name")
    if not out.parent.is_dir():
        raise UsageError(f"directory {out.parent} does not exist", "create it or change --out")
    if (out.exists() or out.is_symlink()) and not args.force:
        raise UsageError(f"{out} already exists", "pass --force to overwrite it")
    return out


def _check_ca_alive(ca: NetworkCA, what: str, fix: str, now: float) -> None:
    if now > ca.not_after:
        raise UsageError(f"the CA of {what} expired at {_iso(ca.not_after)}", fix)


def _live_named(register: Register, name: str, *, now: float, force: bool) -> list[Issued]:
    """The live certificates of ``name`` (re-issued with --force, refused without)."""
    same_name = [c for c in register.certs if c.live(now) and c.name == name]
    if same_name and not force:
        raise UsageError(
            f"node {name!r} already has a live certificate (node id {same_name[0].node_id[:16]},"
            f" until {_iso(same_name[0].not_after)})",
            "pass --force to re-issue it, which revokes the old one, or choose another name",
        )
    return same_name


def _register_issue(
    register: Register, identity: NodeIdentity, name: str, hostname: str | None, now: float
) -> None:
    register.certs.append(
        Issued(
            serial=cert_serial(identity.cert),
            node_id=identity.node_id.hex(),
            name=name,
            hostname=hostname,
            not_after=identity.cert.not_after,
            issued_at=now,
        )
    )


def _reissue(
    register: Register, ca: NetworkCA, folder: Path, old: list[Issued], now: float
) -> Path | None:
    """Revoke ``old`` (what a re-issue replaces) and save the register, the CRL first if any.
    The register is written before the bundle: a certificate nobody received is harmless, one
    handed out but not registered could never be refused or revoked."""
    register.revoke(old, now=now)
    crl_written = register.write_crl(ca, folder, now=now) if old else None
    register.save(folder)
    return crl_written


def _overlay_cert(
    home: Path,
    overlay_ca: NetworkCA,
    identity: NodeIdentity,
    network: str,
    name: str,
    *,
    days: int,
    now: float,
) -> tuple[NodeIdentity, Path | None]:
    """A network member's overlay certificate for the same key, in the overlay's register as
    ``NETWORK/NAME`` (node names have no '/': members of two networks never meet there); the
    member's earlier live overlay certificates are revoked in the overlay's CRL."""
    overlay = identity.certified_by(overlay_ca, name, now=now, days=days)
    folder = overlay_folder(home, overlay_ca.network)
    register = Register.load(folder)
    entry = f"{network}/{name}"
    old = [c for c in register.certs if c.live(now) and c.name == entry]
    _register_issue(register, overlay, entry, None, now)
    return overlay, _reissue(register, overlay_ca, folder, old, now)


def _report_bundle(out: Path, data: bytes, cert: NodeCertificate, *, days: int, now: float) -> None:
    print(f"wrote {out}")
    print(f"node id {cert.node_id.hex()}")
    print(f"size {len(data)} bytes")
    print(f"valid until {_iso(cert.not_after)}")
    if cert.not_after < now + days * 86400 - 1:
        print("note: the certificate ends with its CA, sooner than --days asked")


def _report_crl(path: Path | None, count: int, name: str) -> None:
    if path is not None:
        print(f"revoked {count} earlier certificate(s) of {name!r}: {path}")
        print("hand it to running nodes: 'ipop crl push FILE' on any one of them")


def _key_of(path: str, overlay_ca: NetworkCA | None) -> Ed25519PrivateKey:
    """The node key of the bundle at ``path`` (``node --key``: one more network for a node
    that is a member already, on the same overlay; issue 17)."""
    fix = "name a bundle of this node that 'ipop-config node' wrote for a network on this overlay"
    try:
        bundle = load_bundle(Path(path))
    except ConfigError as exc:
        raise UsageError(f"--key {path}: {exc}", fix) from None
    if overlay_ca is None or bundle.overlay_trust.public_key_raw != overlay_ca.trust.public_key_raw:
        raise UsageError(
            f"--key {path}: that bundle is not on this network's overlay",
            "a daemon serves networks of one overlay: make this network with "
            f"'{PROG} init NETWORK --overlay {bundle.overlay_name}'",
        )
    key = serialization.load_pem_private_key(bundle.node_key_pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)  # the bundle checked its key at load
    return key


def cmd_node(args: argparse.Namespace, *, now: float) -> int:
    network = validate_network(args.network, key="NETWORK")
    name = validate_node_name(args.name, key="NAME")
    hostname = validate_hostname(args.hostname, key="--hostname") if args.hostname else None
    days = _days(args.days)
    router_hosts = _router_hosts(args)
    ca, settings = _load_network(args.home, network)
    overlay_ca = _network_overlay(args.home, settings)
    fix = f"create a new network with '{PROG} init' and hand out new bundles"
    _check_ca_alive(ca, f"network {network!r}", fix, now)
    if overlay_ca is not None:
        fix = f"the overlay needs a new CA ('{PROG} overlay init') and its networks new bundles"
        _check_ca_alive(overlay_ca, f"overlay {overlay_ca.network!r}", fix, now)
    out = _out_path(args, name)

    folder = args.home / network
    register = Register.load(folder)
    same_name = _live_named(register, name, now=now, force=args.force)
    if hostname is not None:
        taken = [
            c for c in register.certs if c.live(now) and c.hostname == hostname and c.name != name
        ]
        if taken:
            raise UsageError(
                f"hostname {hostname!r} belongs to node {taken[0].name!r}'s live certificate",
                f"choose another hostname, or first '{PROG} revoke {network} {taken[0].name}'",
            )

    key = _key_of(args.key, overlay_ca) if args.key else None
    identity = NodeIdentity.generate(
        ca, name, now=now, days=days, hostname=hostname, router_hosts=router_hosts, key=key
    )
    _register_issue(register, identity, name, hostname, now)
    crl_written = _reissue(register, ca, folder, same_name, now)
    overlay: NodeIdentity | None = None
    overlay_crl: Path | None = None
    if overlay_ca is not None:
        overlay, overlay_crl = _overlay_cert(
            args.home, overlay_ca, identity, network, name, days=days, now=now
        )
    bundle = Bundle(
        network=network,
        subnet=settings.subnet,
        bootstrap=settings.bootstrap,
        node_name=name,
        ca_cert_pem=ca.cert_pem(),
        node_cert_pem=identity.cert.pem(),
        node_key_pem=identity.private_key_pem(),
        hostname=hostname,
        dns_suffix=settings.dns_suffix,
        crl_pem=current_crl(folder, network),
        overlay_crl_pem=None
        if overlay_ca is None
        else current_crl(overlay_folder(args.home, overlay_ca.network), overlay_ca.network),
        overlay=None if overlay_ca is None else overlay_ca.network,
        overlay_ca_cert_pem=None if overlay_ca is None else overlay_ca.cert_pem(),
        overlay_cert_pem=None if overlay is None else overlay.cert.pem(),
        # On a shared overlay strangers store the network's records: members seal them.
        records_key=None if overlay_ca is None else ca.derived_secret(RECORDS_KEY_PURPOSE),
    )
    data = dump_bundle(bundle).encode("utf-8")
    write_file(out, data, 0o600, overwrite=args.force)
    _report_bundle(out, data, identity.cert, days=days, now=now)
    if router_hosts:
        print(f"router for up to {router_hosts} LAN hosts")
    if overlay is not None:
        print(f"overlay {overlay.network!r} certificate until {_iso(overlay.cert.not_after)}")
    _report_crl(crl_written, len(same_name), name)
    if overlay_crl is not None:
        print(f"revoked the earlier overlay certificate(s) of {name!r}: {overlay_crl}")
    return 0


def cmd_overlay_node(args: argparse.Namespace, *, now: float) -> int:
    overlay = validate_network(args.overlay, key="OVERLAY")
    name = validate_node_name(args.name, key="NAME")
    bootstrap = tuple(Endpoint.parse(b, key="--bootstrap") for b in args.bootstrap)
    days = _days(args.days)
    ca = _load_overlay(args.home, overlay)
    fix = f"the overlay needs a new CA ('{PROG} overlay init') and new bundles"
    _check_ca_alive(ca, f"overlay {overlay!r}", fix, now)
    out = _out_path(args, name)
    folder = overlay_folder(args.home, overlay)
    register = Register.load(folder)
    same_name = _live_named(register, name, now=now, force=args.force)
    identity = NodeIdentity.generate(ca, name, now=now, days=days)
    _register_issue(register, identity, name, None, now)
    crl_written = _reissue(register, ca, folder, same_name, now)
    bundle = Bundle(
        overlay=overlay,
        overlay_ca_cert_pem=ca.cert_pem(),
        overlay_cert_pem=identity.cert.pem(),
        node_key_pem=identity.private_key_pem(),
        bootstrap=bootstrap,
        node_name=name,
        overlay_crl_pem=current_crl(folder, overlay),
    )
    data = dump_bundle(bundle).encode("utf-8")
    write_file(out, data, 0o600, overwrite=args.force)
    _report_bundle(out, data, identity.cert, days=days, now=now)
    print("overlay-only: it links, routes and stores records, but is a member of no network")
    _report_crl(crl_written, len(same_name), name)
    return 0


def _victims(register: Register, target: str, now: float) -> list[Issued]:
    """The live certificates ``target`` (a node name, a node id or an id prefix) names."""
    by_name = [c for c in register.certs if c.name == target]
    if by_name:
        return [c for c in by_name if c.live(now)]
    t = target.lower()
    if len(t) >= 8 and all(ch in "0123456789abcdef" for ch in t):
        by_id = [c for c in register.certs if c.node_id.startswith(t)]
        if len({c.node_id for c in by_id}) > 1:
            raise UsageError(
                f"node id prefix {target!r} matches several nodes", "give more hex digits"
            )
        if by_id:
            return [c for c in by_id if c.live(now)]
    raise UsageError(
        f"no certificate of the register is for {target!r}",
        "give a node name or node id that 'ipop-config node' issued",
    )


def cmd_revoke(args: argparse.Namespace, *, now: float) -> int:
    network = validate_network(args.network, key="NETWORK")
    ca, _settings = _load_network(args.home, network)
    return _revoke(args, ca, args.home / network, now=now)


def cmd_overlay_revoke(args: argparse.Namespace, *, now: float) -> int:
    overlay = validate_network(args.overlay, key="OVERLAY")
    ca = _load_overlay(args.home, overlay)
    return _revoke(args, ca, overlay_folder(args.home, overlay), now=now)


def _revoke(args: argparse.Namespace, ca: NetworkCA, folder: Path, *, now: float) -> int:
    """Revoke what ``args.target`` names in ``folder``'s register and write the next CRL."""
    register = Register.load(folder)
    victims = _victims(register, args.target, now)
    if not victims:
        raise UsageError(
            f"{args.target!r} has no live certificate (all revoked or expired)",
            "nothing to do; the current CRL already covers it",
        )
    register.revoke(victims, now=now)
    path = register.write_crl(ca, folder, now=now)
    register.save(folder)
    pem = path.read_bytes()
    if args.out:
        write_file(Path(args.out), pem, 0o644, overwrite=True)
    for c in victims:
        print(f"revoked {c.name} node id {c.node_id} serial {c.serial:x}")
    print(f"wrote CRL number {register.crl_number} to {args.out or path} ({len(pem)} bytes)")
    print("hand it to running nodes: 'ipop crl push FILE' on any one of them; new bundles carry it")
    return 0


def describe(bundle: Bundle, *, path: str, size: int, now: float) -> dict[str, object]:
    """The JSON document ``show --json`` prints (a contract for scripts). The network keys are
    null for an overlay-only bundle; the ``overlay*`` keys appear only when the bundle names
    an overlay, so a one-network bundle's document is what it always was."""
    problems = bundle.problems(now=now)
    cert, trust = bundle.node_cert, bundle.trust
    info: dict[str, object] = {
        "path": path,
        "valid": not problems,
        "problems": [f"{key}: {problem} ({fix})" for key, problem, fix in problems],
        "network": bundle.network,
        "subnet": None if bundle.subnet is None else str(bundle.subnet),
        "bootstrap": [str(ep) for ep in bundle.bootstrap],
        "dns_suffix": bundle.dns_suffix if bundle.is_member else None,
        "node_name": bundle.node_name,
        "hostname": bundle.hostname,
        "router_hosts": None if cert is None else cert.router_hosts,
        "node_id": bundle.node_id.hex(),
        "cert_not_before": None if cert is None else _iso(cert.not_before),
        "cert_not_after": None if cert is None else _iso(cert.not_after),
        "ca_not_before": None if trust is None else _iso(trust.not_before),
        "ca_not_after": None if trust is None else _iso(trust.not_after),
        "ca_fingerprint": None if trust is None else trust.fingerprint,
        "crl_number": trust.check_crl(bundle.crl_pem).number
        if trust is not None and bundle.crl_pem
        else 0,
        "size_bytes": size,
        "format": bundle.format_version,
    }
    if bundle.overlay is not None:
        ocert, otrust = bundle.overlay_cert, bundle.overlay_trust
        info |= {
            "overlay": bundle.overlay,
            "overlay_cert_not_before": _iso(ocert.not_before),
            "overlay_cert_not_after": _iso(ocert.not_after),
            "overlay_ca_not_after": _iso(otrust.not_after),
            "overlay_ca_fingerprint": otrust.fingerprint,
            # Its replicas are strangers too: are this network's records sealed (ipop.dht.seal)?
            "records_sealed": None if not bundle.is_member else bundle.records_key is not None,
            "overlay_crl_number": otrust.check_crl(bundle.overlay_crl_pem).number
            if bundle.overlay_crl_pem
            else 0,
        }
    return info


def cmd_show(args: argparse.Namespace, *, now: float) -> int:
    path = Path(args.bundle)
    bundle = load_bundle(path)
    size = path.stat().st_size
    info = describe(bundle, path=str(path), size=size, now=now)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if key == "problems":
                continue
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value) or "-"
            print(f"{key:16} {value if value is not None else '-'}")
        problems = info["problems"]
        assert isinstance(problems, list)
        for problem in problems:
            print(f"problem          {problem}")
    return 0 if info["valid"] else 1


# --- entry point ------------------------------------------------------------------------------


def _add_home(p: argparse.ArgumentParser) -> None:
    # Subcommands accept --home too; SUPPRESS keeps an earlier top-level --home from being reset.
    p.add_argument("--home", type=Path, default=argparse.SUPPRESS, help="as above")


def _add_bundle_out(p: argparse.ArgumentParser) -> None:
    """--out, --force and --home of the commands that write a bundle."""
    p.add_argument("--out", help="bundle file (default ./NAME.bundle.toml)")
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing bundle; re-issue NAME, revoking its earlier certificates",
    )
    _add_home(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Make ipop network CAs and node bundles.")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="network home (default $IPOP_CONFIG_HOME or ~/.config/ipop)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a network: CA key, CA certificate, settings")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("--subnet", required=True, help="virtual IPv4 network, e.g. 100.64.0.0/10")
    p.add_argument(
        "--bootstrap", action="append", required=True, metavar="IP:PORT", help="repeatable"
    )
    p.add_argument("--dns-suffix", default=DEFAULT_DNS_SUFFIX)
    p.add_argument("--days", type=int, default=CA_DEFAULT_DAYS, help="CA lifetime")
    p.add_argument(
        "--overlay",
        metavar="OVERLAY",
        help=f"make the network on this existing overlay ('{PROG} overlay init'): each node's "
        "bundle then carries an overlay certificate for links too",
    )
    _add_home(p)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "node",
        help="make one node's bundle",
        description="Make one node's bundle. For a network on an overlay it holds two "
        "certificates for the node's one key: the network's and the overlay's. This tool "
        "signs both because the overlay's home is local here; where the overlay has an "
        "operator of its own, that operator signs the second.",
    )
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--hostname", help="fixed DNS name for this node, e.g. alice-laptop")
    p.add_argument("--days", type=int, default=NODE_CERT_DEFAULT_DAYS, help="cert lifetime")
    p.add_argument(
        "--router", action="store_true", help="a router certificate (names its LAN hosts)"
    )
    p.add_argument(
        "--key",
        metavar="BUNDLE",
        help="certify the node key of this bundle (the same node in one more network on the "
        "same overlay: its ipopd config names both bundles, [[network]])",
    )
    p.add_argument(
        "--max-hosts",
        type=int,
        default=None,
        help="LAN hosts the router may hold records for (default 1024; router.max_hosts <= N)",
    )
    _add_bundle_out(p)
    p.set_defaults(func=cmd_node)

    p = sub.add_parser("revoke", help="revoke a node's certificates; writes the new CRL")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("target", metavar="NAME|NODE_ID")
    p.add_argument("--out", help="also write the CRL (PEM) here")
    _add_home(p)
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("overlay", help="an overlay CA shared by several networks")
    osub = p.add_subparsers(dest="overlay_command", required=True, metavar="OVERLAY_COMMAND")
    p = osub.add_parser("init", help="create an overlay: its CA key and certificate")
    p.add_argument("overlay", metavar="OVERLAY")
    p.add_argument("--days", type=int, default=CA_DEFAULT_DAYS, help="CA lifetime")
    _add_home(p)
    p.set_defaults(func=cmd_overlay_init)
    p = osub.add_parser(
        "node",
        help="make an overlay-only node's bundle (links, routes, stores; in no network)",
    )
    p.add_argument("overlay", metavar="OVERLAY")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--bootstrap", action="append", required=True, metavar="IP:PORT", help="repeatable"
    )
    p.add_argument("--days", type=int, default=NODE_CERT_DEFAULT_DAYS, help="cert lifetime")
    _add_bundle_out(p)
    p.set_defaults(func=cmd_overlay_node)
    p = osub.add_parser("revoke", help="revoke overlay certificates; writes the overlay's CRL")
    p.add_argument("overlay", metavar="OVERLAY")
    p.add_argument(
        "target", metavar="NAME|NETWORK/NAME|NODE_ID", help="a network member is NETWORK/NAME"
    )
    p.add_argument("--out", help="also write the CRL (PEM) here")
    _add_home(p)
    p.set_defaults(func=cmd_overlay_revoke)

    p = sub.add_parser("show", help="what a bundle holds and whether it is valid now")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, *, now: float | None = None) -> int:
    """Run ``ipop-config``; ``now`` overrides the clock (tests)."""
    try:
        args = build_parser().parse_args(list(argv) if argv is not None else None)
    except UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    if args.home is None:
        args.home = _default_home()
    args.home = Path(args.home).expanduser()
    func: Callable[..., int] = args.func
    try:
        return func(args, now=time.time() if now is None else now)
    except UsageError as exc:
        return _fail(str(exc))
    except ConfigError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(
            f"{exc.filename or 'file'}: {exc.strerror or exc} (check the path and permissions)"
        )


if __name__ == "__main__":
    sys.exit(main())
