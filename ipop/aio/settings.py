"""What the daemon is started with: its settings, and the revocation list file it reads first.

:class:`DaemonSettings` is what :class:`ipop.aio.daemon.Daemon` needs of
``ipop.config.NodeConfig``, flattened (built by the composition roots); :func:`load_crl_file`
installs the operator's CRL file (``[identity] crl``) before the node starts, or stops the start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ipop.config import NodeConfig, ServiceConfig
from ipop.errors import ConfigError
from ipop.identity import CaTrust, CrlError
from ipop.revocation import signed_by
from ipop.types import Endpoint

__all__ = ["DaemonSettings", "load_crl_file"]

log = logging.getLogger("ipopd")


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """What the daemon needs from ``ipop.config.NodeConfig``, flattened."""

    listen: Endpoint
    state_dir: Path
    tap_name: str = "ipop0"
    tap_mtu: int = 0
    addressing: str = "static"  # or "dhcp"
    hostname: str | None = None
    lease_s: float = 3600.0
    # NAT discovery (ipop.config.StunConfig): extra servers for netcheck, and change-request
    # service ("auto": on the host's second address, if any; "off"; or that address).
    stun_servers: tuple[Endpoint, ...] = ()
    stun_serve: bool = False
    stun_alternate: str = "auto"
    stun_alt_port: int = 0
    # A revocation list file read at start (ipop.config.IdentityConfig.crl); None: the bundle's.
    crl_file: Path | None = None
    # [[service]] tables: published at our vIP once we hold it, at every start.
    services: tuple[ServiceConfig, ...] = ()

    @classmethod
    def from_config(cls, cfg: NodeConfig, *, bundle_hostname: str | None) -> DaemonSettings:
        return cls(
            listen=cfg.listen,
            state_dir=Path(cfg.state_dir),
            tap_name=cfg.tap.name,
            tap_mtu=cfg.tap.mtu,
            addressing=cfg.tap.addressing,
            hostname=cfg.effective_hostname(bundle_hostname),
            lease_s=float(cfg.dht.lease_s),
            stun_servers=cfg.stun.servers,
            stun_serve=cfg.stun.serve,
            stun_alternate=cfg.stun.alternate,
            stun_alt_port=cfg.stun.alt_port,
            crl_file=cfg.identity.crl,
            services=cfg.services,
        )


def load_crl_file(
    trust: CaTrust, path: Path, *, now: float, network: CaTrust | None = None
) -> None:
    """Install the CRL file ``[identity] crl`` names, unless the bundle's is as new.

    ``trust`` is the overlay's; ``network``, on a shared overlay, the network CA's: a CRL it
    signed goes there (:func:`ipop.revocation.signed_by`). A file that is unreadable, forged
    or not a CRL stops the start (ConfigError): a node that silently ignored its operator's
    revocation list would accept revoked members.
    """
    fix = "use the <network>.crl.pem that 'ipop-config revoke' wrote, or remove identity.crl"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("identity.crl", f"cannot read {path}: {exc.strerror}", fix) from None
    if network is not None and network is not trust and signed_by(network, data):
        trust = network
    try:
        crl = trust.apply_crl(data, now=now)
    except CrlError as exc:
        if exc.reason != "crl_stale":
            raise ConfigError("identity.crl", f"{path} refused: {exc}", fix) from None
        log.info("event=crl_file_older file=%s holding=%d", path, trust.crl_number)
        return
    log.info("event=crl_loaded file=%s number=%d", path, crl.number)
