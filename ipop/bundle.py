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

Parsing is strict: unknown keys, wrong types and anything that does not fit together (the key
does not match the certificate, the certificate is not from the bundled CA, the name differs)
raise :class:`ConfigError` naming the key and the fix. A :class:`Bundle` is checked when it is
constructed, so holding one means everything but time is right; :meth:`Bundle.identity` and
:meth:`Bundle.problems` add the validity window at a given ``now``.

The optional ``crl`` is the CA-signed revocation list in force when ``ipop-config`` wrote the
bundle (see :meth:`ipop.identity.CaTrust.apply_crl`); it is verified at construction and
installed in the bundle's trust by :meth:`Bundle.identity`, so a new node refuses revoked
members from its first handshake. Revocations of unexpired certificates only: ~40 bytes each.

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
    "network",
    "subnet",
    "dns_suffix",
    "bootstrap",
    "node_name",
    "hostname",
    "ca_cert",
    "node_cert",
    "node_key",
    "crl",
)
_FIX_REMAKE = "make a new bundle with 'ipop-config node NETWORK NAME --force'"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Bundle:
    """A parsed, internally consistent bundle. Construction checks everything but time."""

    network: str
    subnet: ipaddress.IPv4Network
    bootstrap: tuple[Endpoint, ...]
    node_name: str
    ca_cert_pem: bytes
    node_cert_pem: bytes
    node_key_pem: bytes
    hostname: str | None = None
    dns_suffix: str = DEFAULT_DNS_SUFFIX
    format_version: int = BUNDLE_FORMAT
    crl_pem: bytes | None = None
    # Derived in __post_init__: the parsed CA and node certificate.
    trust: CaTrust = field(init=False, repr=False, compare=False)
    node_cert: NodeCertificate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.format_version != BUNDLE_FORMAT:
            raise ConfigError(
                "format",
                f"version {self.format_version} is not supported (this ipop reads {BUNDLE_FORMAT})",
                "make the bundle with the same ipop version",
            )
        validate_network(self.network)
        if not isinstance(self.subnet, ipaddress.IPv4Network):
            raise LocalProtocolError("subnet must be an IPv4Network")
        if not self.bootstrap:
            raise ConfigError("bootstrap", "is empty", 'list at least one "IPv4:PORT"')
        parse_dns_suffix(self.dns_suffix)
        validate_node_name(self.node_name, key="node_name")
        if self.hostname is not None:
            validate_hostname(self.hostname)
        trust = CaTrust.from_pem(self.ca_cert_pem, key="ca_cert")
        if trust.network != self.network:
            raise ConfigError(
                "network",
                f"{self.network!r} differs from the CA's network {trust.network!r}",
                _FIX_REMAKE,
            )
        try:
            der = x509.load_pem_x509_certificate(self.node_cert_pem).public_bytes(
                serialization.Encoding.DER
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError("node_cert", pem_damage(exc, "certificate"), _FIX_REMAKE) from None
        try:
            cert = trust.verify_untimed(der)
        except CertificateError as exc:
            raise ConfigError(
                "node_cert", f"not accepted by the bundled CA ({exc})", _FIX_REMAKE
            ) from None
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
        try:
            key = serialization.load_pem_private_key(self.node_key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError("node_key", pem_damage(exc, "private key"), _FIX_REMAKE) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("node_key", "is not an Ed25519 key", _FIX_REMAKE)
        public_raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        if public_raw != cert.public_key_raw:
            raise ConfigError("node_key", "does not match node_cert", _FIX_REMAKE)
        if self.crl_pem is not None:
            try:
                trust.check_crl(self.crl_pem)
            except CrlError as exc:
                raise ConfigError(
                    "crl", f"not accepted by the bundled CA ({exc})", _FIX_REMAKE
                ) from None
        object.__setattr__(self, "trust", trust)
        object.__setattr__(self, "node_cert", cert)

    @property
    def node_id(self) -> NodeId:
        return self.node_cert.node_id

    def identity(self, *, now: float) -> NodeIdentity:
        """The node's identity, checked at ``now``; ConfigError if anything expired."""
        problems = self.problems(now=now)
        if problems:
            key, problem, fix = problems[0]
            raise ConfigError(key, problem, fix)
        if self.crl_pem is not None:
            # Checked at construction, so only crl_stale can refuse it: already installed.
            with contextlib.suppress(CrlError):
                self.trust.apply_crl(self.crl_pem, now=now)
        return NodeIdentity.from_pem(
            self.node_key_pem,
            self.node_cert_pem,
            self.trust,
            now=now,
            key_name="node_key",
            cert_name="node_cert",
        )

    def problems(self, *, now: float) -> list[tuple[str, str, str]]:
        """What makes this bundle unusable at ``now``, as (key, problem, fix); empty if valid."""
        out: list[tuple[str, str, str]] = []
        if now > self.trust.not_after:
            out.append(
                (
                    "ca_cert",
                    f"the network CA expired at {_iso(self.trust.not_after)}",
                    "the network needs a new CA ('ipop-config init') and new bundles",
                )
            )
        if now < self.trust.not_before:
            out.append(
                (
                    "ca_cert",
                    f"the network CA is valid only from {_iso(self.trust.not_before)}",
                    "check this machine's clock",
                )
            )
        if now > self.node_cert.not_after:
            out.append(("node_cert", f"expired at {_iso(self.node_cert.not_after)}", _FIX_REMAKE))
        if now < self.node_cert.not_before:
            out.append(
                (
                    "node_cert",
                    f"valid only from {_iso(self.node_cert.not_before)}",
                    "check this machine's clock",
                )
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
        for key in _KEYS:
            if key not in table and key not in ("hostname", "dns_suffix", "crl"):
                raise ConfigError(key, "is missing", _FIX_REMAKE)
        for key in ("network", "node_name"):
            if not isinstance(table[key], str):
                raise ConfigError(
                    key, f"must be a string, got {type(table[key]).__name__}", _FIX_REMAKE
                )
        hostname = table.get("hostname")
        if hostname is not None and not isinstance(hostname, str):
            raise ConfigError(
                "hostname", f"must be a string, got {type(hostname).__name__}", _FIX_REMAKE
            )
        return Bundle(
            network=str(table["network"]),
            subnet=parse_subnet(table["subnet"]),
            bootstrap=parse_bootstrap(table["bootstrap"]),
            node_name=str(table["node_name"]),
            ca_cert_pem=_pem_field(table, "ca_cert"),
            node_cert_pem=_pem_field(table, "node_cert"),
            node_key_pem=_pem_field(table, "node_key"),
            hostname=hostname,
            dns_suffix=parse_dns_suffix(table.get("dns_suffix", DEFAULT_DNS_SUFFIX)),
            format_version=fmt,
            crl_pem=_pem_field(table, "crl") if "crl" in table else None,
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
    """The bundle as TOML text that :func:`parse_bundle` reads back to an equal Bundle."""
    items: list[tuple[str, TomlValue]] = [
        ("format", b.format_version),
        ("network", b.network),
        ("subnet", str(b.subnet)),
        ("dns_suffix", b.dns_suffix),
        ("bootstrap", [str(ep) for ep in b.bootstrap]),
        ("node_name", b.node_name),
    ]
    if b.hostname is not None:
        items.append(("hostname", b.hostname))
    items += [
        ("ca_cert", b.ca_cert_pem.decode("ascii")),
        ("node_cert", b.node_cert_pem.decode("ascii")),
        ("node_key", b.node_key_pem.decode("ascii")),
    ]
    if b.crl_pem is not None:
        items.append(("crl", b.crl_pem.decode("ascii")))
    header = (
        f"ipop node bundle for {b.node_name!r} in network {b.network!r}\n"
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
