"""What an Init may cost us before anybody proved anything: the handshake flood guard.

Verifying an Init (certificate chain, Ed25519 signature, then our own X25519 and signature
for the Resp) costs ~0.3 ms; ~5,000 forged Inits a second would take a whole core. The guard,
consulted by :class:`ipop.link.layer.LinkLayer` after the free checks (the Init parses
and names us) and before any public-key operation, bounds that work (WireGuard's cookie
mechanism, in our own layout: :mod:`ipop.wire.handshake`):

- **Load**: Inits reaching the guard are counted per one-second window of ``now``; above
  ``load_per_s`` (this window or the last) the responder is *under load*.
- **Cookies**: under load an Init must carry ``mac2 = MAC(cookie, Init core)`` where
  ``cookie = MAC(secret, the Init's source path)``; one without gets a 37-byte COOKIE_REPLY
  (fewer bytes than any Init) and nothing else. A spoofer never receives the cookie of the
  address it forges, so a spoofed flood costs two HMACs per Init; an honest initiator resends
  its Init with the cookie at once (one round trip more). The secret rotates every
  ``rotate_s`` (the previous one is still accepted), so a cookie is good 1-2 periods. It comes
  from the OS, not the injected RNG: indices drawn from that RNG go on the wire, and the
  secret must not be predictable from them (it changes no behaviour a simulation could see).
- **Per source**: a token bucket per source address (bounded table, :mod:`ipop.ratelimit`)
  caps what one real address can make us verify, cookie or not. Relay paths have no address:
  the overlay neighbour forwarding them is an authenticated member, and the global bound
  below still holds.
- **Global**: at most ``verify_max_per_s`` Inits a second reach verification, whatever the
  cookies (many real addresses holding cookies): the hard bound on handshake CPU.

Verdicts of :meth:`InitGuard.admit`: None (go on and verify), ``"cookie"`` (send
:meth:`InitGuard.cookie_reply`), or a drop reason of :data:`GUARD_DROP_REASONS`.
"""

from __future__ import annotations

import hmac
import os
from typing import Final

from ipop import timing
from ipop.ratelimit import KeyedBuckets, TokenBucket
from ipop.types import Endpoint, Path, SocketPath
from ipop.wire.handshake import COOKIE_BYTES, MAC2_BYTES, CookieReply, init_digest

__all__ = ["GUARD_DROP_REASONS", "InitGuard", "mac2_for"]

# under_load: an Init without a valid cookie while under load (a cookie reply went back);
# init_rate_limited: its source address spent its bucket; init_overloaded: the global bound.
GUARD_DROP_REASONS: Final = frozenset({"under_load", "init_rate_limited", "init_overloaded"})
_COOKIE_LABEL: Final = b"ipop cookie v1\x00"
_SECRET_BYTES: Final = 32


def mac2_for(cookie: bytes, core: bytes) -> bytes:
    """The mac2 an Init core carries under ``cookie`` (the initiator's side)."""
    return hmac.digest(cookie, core, "sha256")[:MAC2_BYTES]


def _path_bytes(path: Path) -> bytes:
    # repr of a NamedTuple / frozen dataclass: deterministic and distinct per kind of path.
    return repr(path).encode()


def _source_of(path: Path) -> str | None:
    if isinstance(path, Endpoint):
        return path.host
    if isinstance(path, SocketPath):
        return path.remote.host
    return None


class InitGuard:
    """See the module docstring. ``now`` is the caller's clock; nothing here reads one."""

    def __init__(
        self,
        *,
        load_per_s: int = timing.INIT_LOAD_PER_S,
        verify_max_per_s: int = timing.INIT_VERIFY_MAX_PER_S,
        source_rate_per_s: float = timing.INIT_SOURCE_RATE_PER_S,
        source_burst: float = timing.INIT_SOURCE_BURST,
        source_table_max: int = timing.INIT_SOURCE_TABLE_MAX,
        rotate_s: float = timing.COOKIE_SECRET_ROTATE_S,
    ) -> None:
        self.load_per_s = load_per_s
        self.rotate_s = rotate_s
        self._sources: KeyedBuckets[str] = KeyedBuckets(
            source_rate_per_s, source_burst, source_table_max
        )
        self._verify = TokenBucket(verify_max_per_s, verify_max_per_s, 0.0)
        self._secret = os.urandom(_SECRET_BYTES)
        self._previous: bytes | None = None
        self._rotate_at: float | None = None
        self._window_start = -float("inf")
        self._window_count = 0
        self._last_window_count = 0

    def under_load(self, now: float) -> bool:
        """Did Inits arrive faster than ``load_per_s`` in this window or the last?"""
        self._roll(now)
        return max(self._window_count, self._last_window_count) > self.load_per_s

    def admit(self, core: bytes, mac2: bytes, path: Path, now: float) -> str | None:
        """One Init (its core and mac2) from ``path``: None to verify it, else the verdict."""
        self._roll(now)
        self._window_count += 1
        loaded = max(self._window_count, self._last_window_count) > self.load_per_s
        if loaded and not self._cookie_ok(core, mac2, path, now):
            return "cookie"
        source = _source_of(path)
        if source is not None and not self._sources.take(source, now):
            return "init_rate_limited"
        if not self._verify.take(now):
            return "init_overloaded"
        return None

    def cookie_reply(self, sender_index: int, core: bytes, path: Path, now: float) -> bytes:
        """The COOKIE_REPLY to an Init (``sender_index``, ``core``) that came from ``path``."""
        cookie = self._cookie(self._current_secret(now), path)
        return CookieReply(sender_index, init_digest(core), cookie).encode()

    def _cookie_ok(self, core: bytes, mac2: bytes, path: Path, now: float) -> bool:
        if not any(mac2):
            return False
        for secret in (self._current_secret(now), self._previous):
            if secret is not None and hmac.compare_digest(
                mac2_for(self._cookie(secret, path), core), mac2
            ):
                return True
        return False

    def _cookie(self, secret: bytes, path: Path) -> bytes:
        return hmac.digest(secret, _COOKIE_LABEL + _path_bytes(path), "sha256")[:COOKIE_BYTES]

    def _current_secret(self, now: float) -> bytes:
        if self._rotate_at is None:
            self._rotate_at = now + self.rotate_s
        elif now >= self._rotate_at:
            # Two periods without use: the previous secret is too old to keep as well.
            stale = now >= self._rotate_at + self.rotate_s
            self._previous = None if stale else self._secret
            self._secret = os.urandom(_SECRET_BYTES)
            self._rotate_at = now + self.rotate_s
        return self._secret

    def _roll(self, now: float) -> None:
        start = self._window_start
        if now - start >= 1.0:
            self._last_window_count = self._window_count if now - start < 2.0 else 0
            self._window_count = 0
            self._window_start = now
