"""The link layer's configuration (:class:`LinkConfig`) and the reasons its ``drops`` may
count (:data:`LINK_DROP_REASONS`), shared by :class:`ipop.link.layer.LinkLayer` and the
sub-machines it owns (:mod:`ipop.link.handshakes`, :mod:`ipop.link.rebind`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from ipop import timing
from ipop.errors import ConfigError
from ipop.identity import CERT_REASONS
from ipop.link.cookie import GUARD_DROP_REASONS
from ipop.link.crypto import CIPHER_IDS, DEFAULT_CIPHERS

__all__ = ["LINK_DROP_REASONS", "LinkConfig"]

# Every reason ``LinkLayer.drops`` may count (tests check that nothing else is counted).
LINK_DROP_REASONS: Final = frozenset(
    {
        "empty",
        "unknown_type",
        "malformed",
        "unknown_index",
        "expired_key",
        "replay",
        "too_old",
        "auth_failed",
        "bad_signature",
        "stale_handshake",
        "own_identity",
        "not_for_us",
        "handshake_collision",
        "no_common_cipher",
        "bad_cipher",
        "bad_key",
        "unexpected_peer",
        "bad_cookie_reply",
        "bad_probe",
    }
    | frozenset(CERT_REASONS)
    | GUARD_DROP_REASONS
)


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Every threshold of the session layer; defaults from :mod:`ipop.timing`."""

    ciphers: tuple[str, ...] = DEFAULT_CIPHERS
    rekey_after_s: float = timing.REKEY_AFTER_S
    reject_after_s: float = timing.REJECT_AFTER_S
    rekey_after_messages: int = timing.REKEY_AFTER_MESSAGES
    reject_after_messages: int = timing.REJECT_AFTER_MESSAGES
    handshake_retry_s: float = timing.HANDSHAKE_RETRY_S
    handshake_retry_max_s: float = timing.HANDSHAKE_RETRY_MAX_S
    handshake_timeout_s: float = timing.HANDSHAKE_TIMEOUT_S
    handshake_clock_skew_s: float = timing.HANDSHAKE_CLOCK_SKEW_S
    previous_key_grace_s: float = timing.PREVIOUS_KEY_GRACE_S
    keepalive_interval_s: float = timing.KEEPALIVE_INTERVAL_S
    link_timeout_s: float = timing.LINK_TIMEOUT_S
    silent_peer_s: float = timing.SILENT_PEER_S
    replay_window: int = timing.REPLAY_WINDOW
    # Init retransmissions each leave one unconfirmed responder key set; a few cover a lossy
    # or slow path without letting one peer pin much memory.
    max_pending_responses: int = 4
    # Probe each path's MTU (ipop.link.pmtu). Probes are DATA like keepalives, so tests
    # that count a link's datagrams or messages exactly turn them off.
    path_mtu_probes: bool = True
    # Echo busy direct links that fall silent, to notice our NAT rebinding (ipop.link.echo).
    # Echoes are DATA too: tests that count a link's datagrams exactly turn them off.
    rebind_echoes: bool = True

    def __post_init__(self) -> None:
        if not self.ciphers or any(c not in CIPHER_IDS for c in self.ciphers):
            raise ConfigError(
                "link.ciphers", f"{self.ciphers!r}", f"choose from {', '.join(CIPHER_IDS)}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("ciphers", "path_mtu_probes", "rebind_echoes") and not value > 0:
                raise ConfigError(f"link.{f.name}", f"{value!r} must be positive")
        if self.rekey_after_s >= self.reject_after_s:
            raise ConfigError("link.rekey_after_s", "must be below reject_after_s")
        if self.rekey_after_messages >= self.reject_after_messages:
            raise ConfigError("link.rekey_after_messages", "must be below reject_after_messages")
