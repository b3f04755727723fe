"""A network's home folder on the CA's machine: its settings, its register, its CRL file.

An overlay CA (issue 17: several networks on one overlay) has a home of the same make in
:func:`overlay_folder`: its CA, its register and its CRL; a network on it names it in
``network.toml`` (``overlay``, ``overlay_ca``).

This module owns what ``ipop-config`` keeps in ``<home>/<network>/`` besides the CA's key and
certificate: ``network.toml`` (:class:`NetworkSettings`), the register of issued certificates
``issued.json`` (:class:`Register` of :class:`Issued`), the revocation list in force, and the
all-or-nothing file writes every command uses. Problems are :class:`UsageError`: one line
for the user, exit code 2 (:mod:`ipop.tools.config_cli`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ipop.bundle import (
    DEFAULT_DNS_SUFFIX,
    TomlValue,
    format_toml,
    parse_bootstrap,
    parse_dns_suffix,
    parse_subnet,
)
from ipop.errors import ConfigError
from ipop.identity import NetworkCA, validate_network
from ipop.types import Endpoint

__all__ = [
    "NETWORK_FILE_FORMAT",
    "REGISTER_FILE",
    "REGISTER_FILE_FORMAT",
    "Issued",
    "NetworkSettings",
    "Register",
    "UsageError",
    "crl_path",
    "crl_pem",
    "current_crl",
    "overlay_folder",
    "read_file",
    "tmp_name",
    "write_file",
]

NETWORK_FILE_FORMAT = 1
REGISTER_FILE_FORMAT = 1
REGISTER_FILE = "issued.json"


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem} ({fix})")


# --- files ------------------------------------------------------------------------------------


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def write_file(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with ``mode`` via a temporary file; never a partial file."""
    tmp = tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed or (0600 files) must not widen
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the target appeared meanwhile: no silent clobbering.
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"cannot read {what} {path}: {exc.strerror or exc}",
            "check the path and permissions",
        ) from None


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """What ``network.toml`` holds: what every bundle of the network shares besides the CA."""

    network: str
    subnet: IPv4Network
    bootstrap: tuple[Endpoint, ...]
    dns_suffix: str
    # A network on a shared overlay: the overlay's name and its CA's fingerprint (so a
    # re-made overlay home is noticed, not silently signed into bundles). None: its own.
    overlay: str | None = None
    overlay_ca: str | None = None

    def to_toml(self) -> str:
        items: list[tuple[str, TomlValue]] = [
            ("format", NETWORK_FILE_FORMAT),
            ("network", self.network),
            ("subnet", str(self.subnet)),
            ("bootstrap", [str(ep) for ep in self.bootstrap]),
            ("dns_suffix", self.dns_suffix),
        ]
        if self.overlay is not None and self.overlay_ca is not None:
            items += [("overlay", self.overlay), ("overlay_ca", self.overlay_ca)]
        return format_toml(
            items, header=f"ipop network {self.network!r}: settings copied into every node bundle"
        )

    @classmethod
    def from_toml(cls, text: str, *, network: str) -> NetworkSettings:
        table = tomllib.loads(text)
        if table.get("network") != network:
            raise ConfigError("network", f"network.toml is not for {network!r}", "restore it")
        overlay, overlay_ca = table.get("overlay"), table.get("overlay_ca")
        if (overlay is None) != (overlay_ca is None):
            raise ConfigError(
                "overlay" if overlay is None else "overlay_ca",
                "is missing (network.toml names an overlay by both its name and CA fingerprint)",
                "restore network.toml",
            )
        if overlay is not None:
            validate_network(overlay, key="overlay")
        if overlay_ca is not None and not (
            isinstance(overlay_ca, str) and re.fullmatch(r"[0-9a-f]{64}", overlay_ca)
        ):
            raise ConfigError("overlay_ca", "is not a SHA-256 fingerprint", "restore network.toml")
        return cls(
            network=network,
            subnet=parse_subnet(table.get("subnet")),
            bootstrap=parse_bootstrap(table.get("bootstrap")),
            dns_suffix=parse_dns_suffix(table.get("dns_suffix", DEFAULT_DNS_SUFFIX)),
            overlay=overlay,
            overlay_ca=overlay_ca,
        )


def overlay_folder(home: Path, overlay: str) -> Path:
    """An overlay CA's home: ``<home>/<overlay>.overlay/`` (network names have no dot, so it
    never meets a network's folder). Same files as a network's but ``network.toml``."""
    return home / f"{overlay}.overlay"


# --- the register of issued certificates -----------------------------------------------------


@dataclass(slots=True)
class Issued:
    """One certificate the CA signed, as the register remembers it."""

    serial: int
    node_id: str
    name: str
    hostname: str | None
    not_after: float
    issued_at: float
    revoked_at: float | None = None

    def live(self, now: float) -> bool:
        return self.revoked_at is None and now <= self.not_after

    def to_json(self) -> dict[str, object]:
        return {
            "serial": f"{self.serial:x}",
            "node_id": self.node_id,
            "name": self.name,
            "hostname": self.hostname,
            "not_after": int(self.not_after),
            "issued_at": int(self.issued_at),
            "revoked_at": None if self.revoked_at is None else int(self.revoked_at),
        }


@dataclass(slots=True)
class Register:
    """``issued.json``: what the CA signed and revoked, and the last CRL number it used."""

    certs: list[Issued]
    crl_number: int = 0

    @classmethod
    def load(cls, folder: Path) -> Register:
        path = folder / REGISTER_FILE
        if not path.exists():
            # Networks made before the register: nothing known, nothing to refuse.
            return cls([])
        try:
            table = json.loads(read_file(path, "register"))
            certs = [
                Issued(
                    serial=int(c["serial"], 16),
                    node_id=str(c["node_id"]),
                    name=str(c["name"]),
                    hostname=c["hostname"],
                    not_after=float(c["not_after"]),
                    issued_at=float(c["issued_at"]),
                    revoked_at=None if c["revoked_at"] is None else float(c["revoked_at"]),
                )
                for c in table["certs"]
            ]
            return cls(certs, int(table["crl_number"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"{path} is damaged ({type(exc).__name__}: {exc})", "restore it from a backup"
            ) from None

    def save(self, folder: Path) -> None:
        doc = {
            "format": REGISTER_FILE_FORMAT,
            "crl_number": self.crl_number,
            "certs": [c.to_json() for c in self.certs],
        }
        data = (json.dumps(doc, indent=1) + "\n").encode()
        write_file(folder / REGISTER_FILE, data, 0o600, overwrite=True)

    def revoke(self, victims: Sequence[Issued], *, now: float) -> None:
        for c in victims:
            c.revoked_at = now

    def write_crl(self, ca: NetworkCA, folder: Path, *, now: float) -> Path:
        """Sign the next CRL (revoked certificates not yet expired) and write it as PEM."""
        self.crl_number += 1
        revoked = [
            (c.serial, c.revoked_at)
            for c in self.certs
            if c.revoked_at is not None and now <= c.not_after
        ]
        der = ca.make_crl(revoked, number=self.crl_number, now=now)
        path = crl_path(folder, ca.network)
        write_file(path, crl_pem(der), 0o644, overwrite=True)
        return path


def crl_path(folder: Path, network: str) -> Path:
    return folder / f"{network}.crl.pem"


def crl_pem(der: bytes) -> bytes:
    return x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)


def current_crl(folder: Path, network: str) -> bytes | None:
    path = crl_path(folder, network)
    return read_file(path, "revocation list") if path.exists() else None
