"""A stand-in for :class:`ipop.overlay.origin.OriginAuth` in worlds of made-up node ids.

The fake-links world (:mod:`ipop.testing.fake_links`) names nodes by small integers that no
key hashes to, so real signatures cannot be had there. A :class:`FakeKeyring` gives each node a
secret; a message's "signature" is a keyed BLAKE2b of the same signed bytes. A node that does not
hold ``src``'s secret cannot make one, so origin forgery is still refused in that world, with
the same drop reasons as the real module.
"""

from __future__ import annotations

import hashlib
import hmac

from ipop import timing
from ipop.identity import NodeCertificate
from ipop.overlay.messages import SIG_BYTES, Routed, routed_signed_bytes
from ipop.types import NodeId

__all__ = ["FakeKeyring", "FakeOrigin"]


class FakeKeyring:
    """One secret per node id: the world's "certificates" (derived from a seed: runs replay)."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed.to_bytes(8, "big", signed=True)
        self._secrets: dict[NodeId, bytes] = {}

    def secret(self, node: NodeId) -> bytes:
        s = self._secrets.get(node)
        if s is None:
            s = hashlib.blake2b(node.to_bytes(), key=self._seed, digest_size=32).digest()
            self._secrets[node] = s
        return s

    def known(self, node: NodeId) -> bytes | None:
        return self._secrets.get(node)


def _mac(secret: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, key=secret, digest_size=SIG_BYTES).digest()


class FakeOrigin:
    """Signs with ``node``'s keyring secret; checks against the sender's."""

    def __init__(self, node: NodeId, keyring: FakeKeyring) -> None:
        self.local_id = node
        self._keyring = keyring
        self._secret = keyring.secret(node)

    def routed(
        self,
        flags: int,
        ttl: int,
        kind: int,
        dst: NodeId,
        via: NodeId | None,
        payload: bytes,
        *,
        now: float,
        cert_budget: int | None = None,
    ) -> Routed:
        ts = int(now)
        sig = _mac(self._secret, routed_signed_bytes(flags, kind, ts, self.local_id, dst, payload))
        return Routed(flags, 0, ttl, kind, self.local_id, dst, via, payload, ts, sig)

    def learn(self, cert: NodeCertificate) -> None:
        pass

    def check(self, msg: Routed, *, now: float) -> str | None:
        if abs(msg.ts - now) > timing.ROUTED_MAX_AGE_S:
            return "origin_stale"
        secret = self._keyring.known(msg.src)
        if secret is None:
            return "origin_unknown"
        if not hmac.compare_digest(_mac(secret, msg.signed_bytes()), msg.sig):
            return "origin_bad_sig"
        return None

    def open(self, msg: Routed, *, now: float) -> Routed | str:
        reason = self.check(msg, now=now)
        return msg if reason is None else reason
