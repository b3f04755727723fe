"""The node's config bundle: one small TOML file that makes a machine a member (DESIGN.md §4).

Like the Grid Appliance's 25 KB "virtual floppy", a bundle carries everything a node needs to
join and nothing the network's CA must keep: the CA certificate (never its key), this node's
certificate and private key, the bootstrap endpoints, the virtual subnet and the DNS suffix::

    format = 1
    network = "lab-net"
    subnet = "100.64.0.0/10"
    dns_suffix = "ipop"
    bootstrap = ["203.0.113.10:5800", "198.51.100.7:5800"]
    node_name = "alice"
    hostname = "alice-laptop"          # optional; also fixed inside the certificate
    ca_cert = '''-----BEGIN CERTIFICATE-----…'''
    node_cert = '''-----BEGIN CERTIFICATE-----…'''
    node_key = '''-----BEGIN PRIVATE KEY-----…'''
    crl = '''-----BEGIN X509 CRL-----…'''   # optional: the network's revocation list

A network on a shared overlay (issue 17) adds three keys, a fourth that ``ipop-config`` always
writes there (``records_key``; without it the network's records are stored plain) and an
optional fifth; the node key stays one, so both certificates certify it and the node id is
one::

    overlay = "shared"                          # the overlay's name (its CA's O=)
    overlay_ca_cert = '''-----BEGIN CERTIFICATE-----…'''   # the overlay CA
    overlay_cert = '''-----BEGIN CERTIFICATE-----…'''      # this node's, from the overlay CA
    overlay_crl = '''-----BEGIN X509 CRL-----…'''         # optional: the overlay's CRL
    records_key = "<64 hex digits>"             # the network's records key (a member's)

Links, routing and origin auth then use the overlay credentials
(:meth:`Bundle.overlay_identity`), the network's DHT records the network ones
(:meth:`Bundle.identity`), sealed with ``records_key`` (:mod:`ipop.dht.seal`: strangers on the
overlay store them; ``ipop-config`` derives the key from the network CA's, the same in every
member's bundle, and :meth:`Bundle.identities` puts it on the network identity);
:meth:`Bundle.identities` gives both, the same object for a bundle
without overlay keys, which is exactly today's one-network node (such files are read and
written byte for byte as before). An overlay-only bundle has ``format``, ``overlay``,
``overlay_ca_cert``, ``overlay_cert``, ``node_key``, ``bootstrap``, ``node_name`` and perhaps
``overlay_crl`` only: no network key at all (:meth:`Bundle.identity` and
:meth:`Bundle.membership` raise for it).
Sizes measured with ``ipop-config`` (one bootstrap endpoint, a hostname): 1.6 KB for a
one-network bundle, 2.84 KB with the overlay keys and the records key (3.2 KB with a
one-entry CRL), 1.56 KB overlay-only; MAX_BUNDLE_BYTES (25 KB) stays, with room for hundreds
of bootstrap endpoints.

Parsing is strict: unknown keys, wrong types and anything that does not fit together (the key
does not match the certificate, the certificate is not from the bundled CA, the name differs,
the overlay certificate is not from the overlay CA or certifies another key than node_cert)
raise :class:`ConfigError` naming the key and the fix. A :class:`Bundle` is checked when it is
constructed, so holding one means everything but time is right; :meth:`Bundle.identity` and
:meth:`Bundle.problems` add the validity window at a given ``now``.

The optional ``crl`` is the CA-signed revocation list in force when ``ipop-config`` wrote the
bundle (see :meth:`ipop.identity.CaTrust.apply_crl`); it is verified at construction and
installed in the bundle's trust by :meth:`Bundle.identity`, so a new node refuses revoked
members from its first handshake. Revocations of unexpired certificates only: ~40 bytes each.
On a shared overlay ``crl`` is the network CA's (it refuses DHT records of revoked members)
and ``overlay_crl`` the overlay CA's (it refuses their links), each installed in its trust.

Writing uses a small TOML emitter of our own (the stdlib only reads TOML); it escapes every
string so what :func:`dump_bundle` writes, :func:`parse_bundle` reads back unchanged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ipop.dht.seal import RECORDS_KEY_BYTES
from ipop.errors import ConfigError, LocalProtocolError
from ipop.identity import (
    CaTrust,
    CertificateError,
    CrlError,
    NodeCertificate,
    NodeIdentity,
    pem_damage,
    validate_hostname,
    validate_network,
    validate_node_name,
)
from ipop.types import Endpoint, NodeId

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_DNS_SUFFIX",
    "DEFAULT_SUBNET",
    "MAX_BUNDLE_BYTES",
    "Bundle",
    "Membership",
    "dump_bundle",
    "format_toml",
    "load_bundle",
    "parse_bootstrap",
    "parse_bundle",
    "parse_dns_suffix",
    "parse_subnet",
]

BUNDLE_FORMAT = 1
# The Grid Appliance floppy's budget: a bundle must stay small enough to paste or mail.
MAX_BUNDLE_BYTES = 25_000
DEFAULT_DNS_SUFFIX = "ipop"
DEFAULT_SUBNET = ipaddress.IPv4Network("100.64.0.0/10")
# A /31 or /32 leaves no room for two nodes: a virtual network needs at least a /30.
MAX_PREFIX_LEN = 30

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

TomlScalar = str | int | bool
TomlValue = TomlScalar | Sequence[TomlScalar]


# --- value parsers shared with ipop-config's network.toml -------------------------------------


def parse_subnet(value: object, *, key: str = "subnet") -> ipaddress.IPv4Network:
    """An IPv4 network in CIDR form with host bits clear, at most a /30."""
    fix = "write an IPv4 network in CIDR form, e.g. '100.64.0.0/10'"
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {type(value).__name__}", fix)
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ConfigError(key, f"{value!r} is not an IPv4 network ({exc})", fix) from None
    if "/" not in value:
        raise ConfigError(key, f"{value!r} has no prefix length", fix)
    if net.prefixlen > MAX_PREFIX_LEN:
        raise ConfigError(key, f"{value!r} is too small for a network", "use a /30 or larger")
    return net


def parse_bootstrap(value: object, *, key: str = "bootstrap") -> tuple[Endpoint, ...]:
    """A non-empty list of ``"IPv4:PORT"`` strings."""
    fix = 'write a list like ["203.0.113.10:5800"]'
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of strings, got {type(value).__name__}", fix)
    if not value:
        raise ConfigError(key, "is empty: a node needs somewhere to join", fix)
    out: list[Endpoint] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{key}[{i}]", f"must be a string, got {type(item).__name__}", fix)
        out.append(Endpoint.parse(item, key=f"{key}[{i}]"))
    return tuple(out)


def parse_dns_suffix(value: object, *, key: str = "dns_suffix") -> str:
    """A domain name of lowercase DNS labels, e.g. ``ipop`` or ``vpn.example``."""
    fix = "use dot-separated lowercase labels of letters, digits and inner hyphens, e.g. 'ipop'"
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {type(value).__name__}", fix)
    labels = value.split(".")
    if len(value) > 200 or not all(_LABEL_RE.match(label) for label in labels):
        raise ConfigError(key, f"{value!r} is not a valid DNS suffix", fix)
    return value


# --- a careful TOML writer --------------------------------------------------------------------

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _basic_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_string(s: str) -> str:
    # PEM blocks read best as multi-line literals; TOML literals cannot escape anything, so
    # that form is used only when the text has no quotes trio and no control bytes but \n.
    if (
        "\n" in s
        and "'''" not in s
        and not s.endswith("'")
        and all(ch == "\n" or (0x20 <= ord(ch) != 0x7F) for ch in s)
    ):
        # A newline right after the opening ''' is trimmed by TOML readers.
        return "'''\n" + s + "'''"
    return _basic_string(s)


def _toml_scalar(value: TomlScalar, *, multiline: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value) if multiline else _basic_string(value)
    raise LocalProtocolError(f"cannot write {type(value).__name__} as TOML")


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, str | int | bool):
        return _toml_scalar(value, multiline=True)
    return "[" + ", ".join(_toml_scalar(item, multiline=False) for item in value) + "]"


_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def format_toml(items: Sequence[tuple[str, TomlValue]], *, header: str = "") -> str:
    """A flat TOML document of ``key = value`` lines, with ``header`` as leading comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in items:
        if not _BARE_KEY_RE.match(key):
            raise LocalProtocolError(f"not a bare TOML key: {key!r}")
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


# --- the bundle -------------------------------------------------------------------------------

_KEYS = (
    "format",
    "overlay",
    "network",
    "subnet",
    "dns_suffix",
    "bootstrap",
    "node_name",
    "hostname",
    "records_key",
    "overlay_ca_cert",
    "overlay_cert",
    "ca_cert",
    "node_cert",
    "node_key",
    "crl",
    "overlay_crl",
)
# Every bundle has these; a member's also the network keys; one on a shared overlay also these.
_BASE_KEYS = ("format", "bootstrap", "node_name", "node_key")
_NETWORK_KEYS = ("network", "subnet", "ca_cert", "node_cert")
_NETWORK_OPTIONAL = ("dns_suffix", "hostname", "records_key", "crl")
_OVERLAY_KEYS = ("overlay", "overlay_ca_cert", "overlay_cert")
_FIX_REMAKE = "make a new bundle with 'ipop-config node NETWORK NAME --force'"
_FIX_REMAKE_OVERLAY = (
    "make a new bundle with 'ipop-config node NETWORK NAME --force' (a member) or "
    "'ipop-config overlay node OVERLAY NAME --force' (an overlay-only node)"
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _certificate(trust: CaTrust, pem: bytes, *, key: str, ca: str, fix: str) -> NodeCertificate:
    """The node certificate ``pem`` (bundle key ``key``) as ``trust`` verifies it, all but time."""
    try:
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, pem_damage(exc, "certificate"), fix) from None
    try:
        return trust.verify_untimed(der)
    except CertificateError as exc:
        raise ConfigError(key, f"not accepted by the bundled {ca} ({exc})", fix) from None


def _check_crl(trust: CaTrust, pem: bytes | None, *, key: str, ca: str, fix: str) -> None:
    """The bundle's CRL ``key`` (if any) is one ``trust``'s CA signed."""
    if pem is not None:
        try:
            trust.check_crl(pem)
        except CrlError as exc:
            raise ConfigError(key, f"not accepted by the bundled {ca} ({exc})", fix) from None


def _window(
    key: str, who: str, not_before: float, not_after: float, now: float, expired_fix: str
) -> list[tuple[str, str, str]]:
    """The validity-window problem of ``key`` at ``now`` (``who``: the subject, "" for none)."""
    if now > not_after:
        return [(key, f"{who} expired at {_iso(not_after)}".lstrip(), expired_fix)]
    if now < not_before:
        early = f"{who} is valid only from" if who else "valid only from"
        return [(key, f"{early} {_iso(not_before)}", "check this machine's clock")]
    return []


@dataclass(frozen=True, slots=True)
class Membership:
    """The network half of a member's bundle (:meth:`Bundle.membership`), typed for the code
    that serves a network: its name, subnet, CA and this node's certificate in it."""

    network: str
    subnet: ipaddress.IPv4Network
    trust: CaTrust
    node_cert: NodeCertificate


@dataclass(frozen=True, kw_only=True)
class Bundle:
    """A parsed, internally consistent bundle. Construction checks everything but time.

    Three shapes (see the module docstring): a one-network bundle (``network`` and its keys,
    no ``overlay``: the overlay is the network itself), a member on a shared overlay (both),
    and an overlay-only bundle (``overlay`` and its keys, no ``network``). The node key is
    always one: both certificates must certify it.
    """

    bootstrap: tuple[Endpoint, ...]
    node_name: str
    node_key_pem: bytes
    network: str | None = None
    subnet: ipaddress.IPv4Network | None = None
    ca_cert_pem: bytes | None = None
    node_cert_pem: bytes | None = None
    hostname: str | None = None
    dns_suffix: str = DEFAULT_DNS_SUFFIX
    format_version: int = BUNDLE_FORMAT
    crl_pem: bytes | None = None
    overlay: str | None = None
    overlay_ca_cert_pem: bytes | None = None
    overlay_cert_pem: bytes | None = None
    overlay_crl_pem: bytes | None = None
    # The network's records key (ipop.dht.seal): its DHT records are sealed with it.
    records_key: bytes | None = None
    # Derived in __post_init__: the network's CA and certificate (None: overlay-only) and the
    # overlay's (the network's own objects when the bundle names no overlay).
    trust: CaTrust | None = field(init=False, repr=False, compare=False)
    node_cert: NodeCertificate | None = field(init=False, repr=False, compare=False)
    overlay_trust: CaTrust = field(init=False, repr=False, compare=False)
    overlay_cert: NodeCertificate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.format_version != BUNDLE_FORMAT:
            raise ConfigError(
                "format",
                f"version {self.format_version} is not supported (this ipop reads {BUNDLE_FORMAT})",
                "make the bundle with the same ipop version",
            )
        if self.network is None and self.overlay is None:
            raise ConfigError("network", "is missing", _FIX_REMAKE)
        if not self.bootstrap:
            raise ConfigError("bootstrap", "is empty", 'list at least one "IPv4:PORT"')
        validate_node_name(self.node_name, key="node_name")
        trust: CaTrust | None = None
        cert: NodeCertificate | None = None
        if self.network is not None:
            trust, cert = self._check_network()
        else:
            self._check_no_network()
        if self.overlay is not None:
            overlay_trust, overlay_cert = self._check_overlay(trust, cert)
        else:
            for key, value in (
                ("overlay_ca_cert", self.overlay_ca_cert_pem),
                ("overlay_cert", self.overlay_cert_pem),
                ("overlay_crl", self.overlay_crl_pem),
            ):
                if value is not None:
                    raise ConfigError("overlay", "is missing", f"name the overlay {key} is of")
            assert trust is not None and cert is not None  # the network is set (checked above)
            overlay_trust, overlay_cert = trust, cert
        object.__setattr__(self, "trust", trust)
        object.__setattr__(self, "node_cert", cert)
        object.__setattr__(self, "overlay_trust", overlay_trust)
        object.__setattr__(self, "overlay_cert", overlay_cert)

    def _public_key(self, cert_key: str, fix: str) -> bytes:
        """The raw public key of ``node_key``; ``cert_key`` names the certificate it must match."""
        try:
            key = serialization.load_pem_private_key(self.node_key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError("node_key", pem_damage(exc, "private key"), fix) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("node_key", "is not an Ed25519 key", fix)
        return key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def _check_network(self) -> tuple[CaTrust, NodeCertificate]:
        assert self.network is not None
        validate_network(self.network)
        if not isinstance(self.subnet, ipaddress.IPv4Network):
            raise ConfigError("subnet", "is missing", _FIX_REMAKE)
        parse_dns_suffix(self.dns_suffix)
        if self.hostname is not None:
            validate_hostname(self.hostname)
        if self.records_key is not None and len(self.records_key) != RECORDS_KEY_BYTES:
            raise ConfigError(
                "records_key", f"must be {2 * RECORDS_KEY_BYTES} hex digits", _FIX_REMAKE
            )
        if self.ca_cert_pem is None or self.node_cert_pem is None:
            missing = "ca_cert" if self.ca_cert_pem is None else "node_cert"
            raise ConfigError(missing, "is missing", _FIX_REMAKE)
        trust = CaTrust.from_pem(self.ca_cert_pem, key="ca_cert")
        if trust.network != self.network:
            raise ConfigError(
                "network",
                f"{self.network!r} differs from the CA's network {trust.network!r}",
                _FIX_REMAKE,
            )
        cert = _certificate(trust, self.node_cert_pem, key="node_cert", ca="CA", fix=_FIX_REMAKE)
        if cert.name != self.node_name:
            raise ConfigError(
                "node_name",
                f"{self.node_name!r} differs from the certificate's {cert.name!r}",
                _FIX_REMAKE,
            )
        if cert.hostname != self.hostname:
            raise ConfigError(
                "hostname",
                f"{self.hostname!r} differs from the certificate's {cert.hostname!r}",
                _FIX_REMAKE,
            )
        if self._public_key("node_cert", _FIX_REMAKE) != cert.public_key_raw:
            raise ConfigError("node_key", "does not match node_cert", _FIX_REMAKE)
        _check_crl(trust, self.crl_pem, key="crl", ca="CA", fix=_FIX_REMAKE)
        return trust, cert

    def _check_no_network(self) -> None:
        """An overlay-only bundle carries nothing of a network: a stray key is a mistake."""
        for key, value in (
            ("subnet", self.subnet),
            ("ca_cert", self.ca_cert_pem),
            ("node_cert", self.node_cert_pem),
            ("hostname", self.hostname),
            ("crl", self.crl_pem),
            ("records_key", self.records_key),
        ):
            if value is not None:
                raise ConfigError(
                    key,
                    "is a network key, but this overlay-only bundle names no network",
                    "remove it, or make a member's bundle with 'ipop-config node NETWORK NAME'",
                )

    def _check_overlay(
        self, network_trust: CaTrust | None, network_cert: NodeCertificate | None
    ) -> tuple[CaTrust, NodeCertificate]:
        assert self.overlay is not None
        fix = _FIX_REMAKE_OVERLAY
        validate_network(self.overlay, key="overlay")
        if self.overlay_ca_cert_pem is None or self.overlay_cert_pem is None:
            missing = "overlay_ca_cert" if self.overlay_ca_cert_pem is None else "overlay_cert"
            raise ConfigError(missing, "is missing: an overlay needs its CA and certificate", fix)
        trust = CaTrust.from_pem(self.overlay_ca_cert_pem, key="overlay_ca_cert")
        if network_trust is not None and trust.fingerprint == network_trust.fingerprint:
            raise ConfigError(
                "overlay_ca_cert",
                "is the network's own CA (ca_cert)",
                "drop the overlay keys: a bundle without them uses the network as its overlay",
            )
        if trust.network != self.overlay:
            raise ConfigError(
                "overlay",
                f"{self.overlay!r} differs from the overlay CA's name {trust.network!r}",
                fix,
            )
        cert = _certificate(
            trust, self.overlay_cert_pem, key="overlay_cert", ca="overlay CA", fix=fix
        )
        if cert.name != self.node_name:
            raise ConfigError(
                "node_name", f"{self.node_name!r} differs from overlay_cert's {cert.name!r}", fix
            )
        if network_cert is not None:
            if cert.public_key_raw != network_cert.public_key_raw:
                raise ConfigError(
                    "overlay_cert",
                    f"certifies node id {cert.node_id.hex()[:16]}, node_cert node id "
                    f"{network_cert.node_id.hex()[:16]}: both must certify node_key",
                    fix,
                )
        elif self._public_key("overlay_cert", fix) != cert.public_key_raw:
            raise ConfigError("node_key", "does not match overlay_cert", fix)
        _check_crl(trust, self.overlay_crl_pem, key="overlay_crl", ca="overlay CA", fix=fix)
        return trust, cert

    # --- what the rest of the code asks for ---------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        """This node's id: one key, so the same in both certificates."""
        return self.overlay_cert.node_id

    @property
    def is_member(self) -> bool:
        """Whether the bundle makes this node a member of a network (False: overlay-only)."""
        return self.network is not None

    def records_plain(self) -> str | None:
        """Why this member's DHT records would be readable where they are stored, or None: a
        network on a shared overlay without ``records_key`` (a bundle made before records
        keys; its members cannot read sealed records, nor sealing members its plain ones)."""
        if not self.is_member or self.overlay is None or self.records_key is not None:
            return None
        return (
            f"network {self.network!r} is on overlay {self.overlay!r} but its bundle has no "
            "records_key: its DHT records are stored plain where strangers keep them, and "
            "members with the key do not see them; make every member a new bundle with "
            f"'ipop-config node {self.network} {self.node_name} --force'"
        )

    @property
    def overlay_name(self) -> str:
        """The overlay this node links into: ``overlay``, or the network itself."""
        return self.overlay_trust.network

    def membership(self) -> Membership:
        """The network this bundle makes the node a member of; ConfigError if overlay-only."""
        if (
            self.network is None
            or self.subnet is None
            or self.trust is None
            or self.node_cert is None
        ):
            raise ConfigError(
                "network",
                f"is missing: this is an overlay-only bundle of overlay {self.overlay!r}",
                "a member needs a network bundle: 'ipop-config node NETWORK NAME'",
            )
        return Membership(self.network, self.subnet, self.trust, self.node_cert)

    def identities(self, *, now: float) -> tuple[NodeIdentity, NodeIdentity | None]:
        """``(overlay identity, network identity)`` checked at ``now``: the first for links,
        routing and origin auth, the second for the network's DHT records (None: an
        overlay-only bundle). Without overlay keys both are the SAME object, so a one-network
        node behaves exactly as before. The network's ``crl`` is installed in the network
        identity's trust. ConfigError if anything is outside its validity window."""
        problems = self.problems(now=now)
        if problems:
            key, problem, fix = problems[0]
            raise ConfigError(key, problem, fix)
        member: NodeIdentity | None = None
        if self.trust is not None and self.node_cert_pem is not None:
            if self.crl_pem is not None:
                # Checked at construction, so only crl_stale can refuse it: already installed.
                with contextlib.suppress(CrlError):
                    self.trust.apply_crl(self.crl_pem, now=now)
            member = NodeIdentity.from_pem(
                self.node_key_pem,
                self.node_cert_pem,
                self.trust,
                now=now,
                key_name="node_key",
                cert_name="node_cert",
            )
            member.records_key = self.records_key
        if self.overlay is None:
            assert member is not None
            return member, member
        assert self.overlay_cert_pem is not None
        if self.overlay_crl_pem is not None:
            with contextlib.suppress(CrlError):  # as crl above
                self.overlay_trust.apply_crl(self.overlay_crl_pem, now=now)
        overlay = NodeIdentity.from_pem(
            self.node_key_pem,
            self.overlay_cert_pem,
            self.overlay_trust,
            now=now,
            key_name="node_key",
            cert_name="overlay_cert",
        )
        return overlay, member

    def identity(self, *, now: float) -> NodeIdentity:
        """The network identity (network CA + node_cert), checked at ``now``; ConfigError if
        anything expired or if this is an overlay-only bundle (it has none)."""
        self.membership()  # overlay-only: says so
        member = self.identities(now=now)[1]
        assert member is not None
        return member

    def overlay_identity(self, *, now: float) -> NodeIdentity:
        """The overlay identity (overlay CA + overlay_cert, or the network's own without an
        overlay), checked at ``now``; ConfigError if anything expired."""
        return self.identities(now=now)[0]

    def problems(self, *, now: float) -> list[tuple[str, str, str]]:
        """What makes this bundle unusable at ``now``, as (key, problem, fix); empty if valid."""
        out: list[tuple[str, str, str]] = []
        if self.trust is not None and self.node_cert is not None:
            ca_fix = "the network needs a new CA ('ipop-config init') and new bundles"
            out += _window(
                "ca_cert",
                "the network CA",
                self.trust.not_before,
                self.trust.not_after,
                now,
                ca_fix,
            )
            cert = self.node_cert
            out += _window("node_cert", "", cert.not_before, cert.not_after, now, _FIX_REMAKE)
        if self.overlay is not None:
            trust, cert = self.overlay_trust, self.overlay_cert
            ca_fix = "the overlay needs a new CA ('ipop-config overlay init') and new bundles"
            out += _window(
                "overlay_ca_cert", "the overlay CA", trust.not_before, trust.not_after, now, ca_fix
            )
            out += _window(
                "overlay_cert", "", cert.not_before, cert.not_after, now, _FIX_REMAKE_OVERLAY
            )
        return out


def _with_source(exc: ConfigError, source: str) -> ConfigError:
    return ConfigError(exc.key, f"{exc.problem} in {source}", exc.fix)


def _pem_field(table: dict[str, object], key: str) -> bytes:
    value = table[key]
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a PEM string, got {type(value).__name__}", _FIX_REMAKE)
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise ConfigError(key, "PEM text must be ASCII", _FIX_REMAKE) from None


def _hex_field(value: object, key: str) -> bytes:
    fix = f"{_FIX_REMAKE} (the line '{key} = \"<hex digits>\"' is damaged)"
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a hex string, got {type(value).__name__}", fix)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigError(key, "is not hex digits", fix) from None


def _optional_pem(table: dict[str, object], key: str) -> bytes | None:
    return _pem_field(table, key) if key in table else None


def _check_key_set(table: dict[str, object]) -> None:
    """The keys of one of the three shapes are all there, and no key of another shape."""
    has_overlay = "overlay" in table
    is_member = "network" in table or not has_overlay
    required = [*_BASE_KEYS]
    if is_member:
        required += _NETWORK_KEYS
    if has_overlay:
        required += _OVERLAY_KEYS
    for key in _KEYS:  # in file order: the first missing key is the one named
        if key in required and key not in table:
            raise ConfigError(key, "is missing", _FIX_REMAKE if is_member else _FIX_REMAKE_OVERLAY)
    if not is_member:
        for key in (*_NETWORK_KEYS, *_NETWORK_OPTIONAL):
            if key in table:
                raise ConfigError(
                    key,
                    "is a network key, but this overlay-only bundle names no network",
                    "remove it, or make a member's bundle with 'ipop-config node NETWORK NAME'",
                )
    if not has_overlay:
        for key in (*_OVERLAY_KEYS, "overlay_crl"):
            if key in table:
                raise ConfigError(
                    "overlay", f"is missing, but {key} is there", "name the overlay or remove it"
                )


def parse_bundle(text: str, *, source: str) -> Bundle:
    """Parse and check a bundle's TOML text; ``source`` names it in error messages."""
    try:
        size = len(text.encode("utf-8"))
        if size > MAX_BUNDLE_BYTES:
            raise ConfigError(
                source,
                f"is {size} bytes, more than a bundle's {MAX_BUNDLE_BYTES}",
                "check that this is an ipop bundle",
            )
        try:
            table: dict[str, object] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, f"is not valid TOML ({exc})", _FIX_REMAKE) from None
        fmt = table.get("format")
        if fmt is None:
            raise ConfigError("format", "is missing", "add 'format = 1' or re-make the bundle")
        if not isinstance(fmt, int) or isinstance(fmt, bool):
            raise ConfigError("format", f"must be an integer, got {type(fmt).__name__}", "use 1")
        if fmt != BUNDLE_FORMAT:
            raise ConfigError(
                "format",
                f"version {fmt} is not supported (this ipop reads {BUNDLE_FORMAT})",
                "make the bundle with the same ipop version",
            )
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise ConfigError(unknown[0], "is not a bundle key", "remove it or fix its spelling")
        _check_key_set(table)
        for key in ("network", "node_name", "overlay"):
            if key in table and not isinstance(table[key], str):
                raise ConfigError(
                    key, f"must be a string, got {type(table[key]).__name__}", _FIX_REMAKE
                )
        hostname = table.get("hostname")
        if hostname is not None and not isinstance(hostname, str):
            raise ConfigError(
                "hostname", f"must be a string, got {type(hostname).__name__}", _FIX_REMAKE
            )
        network = table.get("network")
        overlay = table.get("overlay")
        records_key = table.get("records_key")
        return Bundle(
            network=None if network is None else str(network),
            subnet=parse_subnet(table["subnet"]) if "subnet" in table else None,
            bootstrap=parse_bootstrap(table["bootstrap"]),
            node_name=str(table["node_name"]),
            ca_cert_pem=_optional_pem(table, "ca_cert"),
            node_cert_pem=_optional_pem(table, "node_cert"),
            node_key_pem=_pem_field(table, "node_key"),
            hostname=hostname,
            dns_suffix=parse_dns_suffix(table.get("dns_suffix", DEFAULT_DNS_SUFFIX)),
            format_version=fmt,
            crl_pem=_optional_pem(table, "crl"),
            overlay=None if overlay is None else str(overlay),
            overlay_ca_cert_pem=_optional_pem(table, "overlay_ca_cert"),
            overlay_cert_pem=_optional_pem(table, "overlay_cert"),
            overlay_crl_pem=_optional_pem(table, "overlay_crl"),
            records_key=None if records_key is None else _hex_field(records_key, "records_key"),
        )
    except ConfigError as exc:
        raise _with_source(exc, source) from None


def load_bundle(path: str | Path) -> Bundle:
    """Read and parse a bundle file; unreadable or oversized files raise ConfigError."""
    source = str(path)
    fix = "check the path and that you may read it"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(source, f"cannot be read ({exc.strerror or exc})", fix) from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise ConfigError(
            source,
            f"is larger than a bundle's {MAX_BUNDLE_BYTES} bytes",
            "check that this is an ipop bundle",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            source, "is not UTF-8 text", "check that this is an ipop bundle"
        ) from None
    return parse_bundle(text, source=source)


def dump_bundle(b: Bundle) -> str:
    """The bundle as TOML text that :func:`parse_bundle` reads back to an equal Bundle.

    A bundle without overlay keys is written exactly as before they existed."""
    items: list[tuple[str, TomlValue]] = [("format", b.format_version)]
    if b.overlay is not None:
        items.append(("overlay", b.overlay))
    if b.network is not None:
        assert b.subnet is not None
        items += [
            ("network", b.network),
            ("subnet", str(b.subnet)),
            ("dns_suffix", b.dns_suffix),
        ]
    items += [
        ("bootstrap", [str(ep) for ep in b.bootstrap]),
        ("node_name", b.node_name),
    ]
    if b.hostname is not None:
        items.append(("hostname", b.hostname))
    if b.records_key is not None:
        items.append(("records_key", b.records_key.hex()))
    for key, pem in (
        ("overlay_ca_cert", b.overlay_ca_cert_pem),
        ("overlay_cert", b.overlay_cert_pem),
        ("ca_cert", b.ca_cert_pem),
        ("node_cert", b.node_cert_pem),
        ("node_key", b.node_key_pem),
        ("crl", b.crl_pem),
        ("overlay_crl", b.overlay_crl_pem),
    ):
        if pem is not None:
            items.append((key, pem.decode("ascii")))
    if b.network is None:
        what = f"overlay-only bundle for {b.node_name!r} in overlay {b.overlay!r}"
    elif b.overlay is None:
        what = f"node bundle for {b.node_name!r} in network {b.network!r}"
    else:
        what = f"node bundle for {b.node_name!r} in network {b.network!r} on overlay {b.overlay!r}"
    header = (
        f"ipop {what}\n"
        f"node id {b.node_id.hex()}\n"
        "SECRET: holds this node's private key. Keep it mode 0600; give it to one machine only."
    )
    text = format_toml(items, header=header)
    if len(text.encode("utf-8")) > MAX_BUNDLE_BYTES:
        raise ConfigError(
            "bootstrap",
            f"the bundle would exceed {MAX_BUNDLE_BYTES} bytes",
            "list fewer bootstrap endpoints",
        )
    return text
