"""One handshake's keys (:class:`Keypair`) and the table of the indices we gave out
(:class:`IndexTable`): wireguard-go's keypair.go and indextable.go (sans-IO).

Every set of keys is registered under the index *we* chose (``receiver_index`` of the DATA
header), so a received DATA finds its keys with one dict lookup, before any crypto
(:attr:`IndexTable.lookup`). Keys dropped before they expired on their own (answered but never
confirmed, replaced by a rekey, past their grace period) are *retired*: the table remembers
whose index it was, so DATA that still arrives under it tells the link layer that the two
ends hold different keys (see :meth:`ipop.link.handshakes.Handshakes.unknown_index`). The
retired indices are bounded (:data:`RETIRED_MAX`, oldest forgotten first): a forgotten one
only turns that hint into a plain ``unknown_index`` drop.

Which keys are current, previous, pending or spare is the session's business
(:mod:`ipop.link.handshakes`); this module only owns the keys and the index space.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container
from typing import Final, Generic, Protocol, TypeVar

from ipop.identity import NodeCertificate
from ipop.link.crypto import Aead
from ipop.link.fastpath import batch_aead, replay_window
from ipop.link.handshake import SessionKeys
from ipop.types import NodeId

__all__ = ["RETIRED_MAX", "IndexTable", "KeyLimits", "Keypair"]

# Retired key indices remembered (see IndexTable.retire): a few per peer and rekey.
RETIRED_MAX: Final = 4096

PeerT = TypeVar("PeerT")


class KeyLimits(Protocol):
    """The thresholds a new :class:`Keypair` takes (:class:`ipop.link.layer.LinkConfig`)."""

    @property
    def replay_window(self) -> int: ...
    @property
    def rekey_after_s(self) -> float: ...
    @property
    def rekey_after_messages(self) -> int: ...
    @property
    def reject_after_s(self) -> float: ...


class Keypair(Generic[PeerT]):
    """One handshake's keys and counters; lives in an :class:`IndexTable` by local index.

    ``peer`` is the session state the keys belong to (the link layer's per-peer record)."""

    __slots__ = (
        "cert",
        "cipher",
        "created_at",
        "is_initiator",
        "local_index",
        "peer",
        "recv",
        "recv_aead",
        "recv_batch",
        "reject_at",
        "rekey_at",
        "rekey_counter_at",
        "remote_index",
        "replay",
        "send",
        "send_aead",
        "send_batch",
    )

    def __init__(
        self, keys: SessionKeys, peer: PeerT, cert: NodeCertificate, now: float, cfg: KeyLimits
    ) -> None:
        self.local_index = keys.local_index
        self.remote_index = keys.remote_index
        self.send = Aead(keys.cipher, keys.send_key)
        self.recv = Aead(keys.cipher, keys.recv_key)
        self.send_aead = self.send.primitive
        self.recv_aead = self.recv.primitive
        # The same keys for runs of datagrams (ipop.link.fastpath): they go with this object.
        self.send_batch = batch_aead(keys.cipher, keys.send_key)
        self.recv_batch = batch_aead(keys.cipher, keys.recv_key)
        self.cipher = keys.cipher
        self.is_initiator = keys.is_initiator
        self.peer = peer
        self.cert = cert
        self.created_at = now
        self.replay = replay_window(cfg.replay_window)
        self.rekey_at = now + cfg.rekey_after_s
        self.rekey_counter_at = cfg.rekey_after_messages
        self.reject_at = now + cfg.reject_after_s

    @property
    def send_counter(self) -> int:
        """The next send counter: ``send_batch``'s own (one owner, whichever sealer takes
        counters: this layer, or the lane's thread, :mod:`ipop.link.lane`)."""
        return self.send_batch.counter


class IndexTable(Generic[PeerT]):
    """Local index -> :class:`Keypair`, plus the indices we retired -> whose they were."""

    __slots__ = ("_keypairs", "_retired", "_rng", "lookup")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._keypairs: dict[int, Keypair[PeerT]] = {}
        # Indices we gave out and dropped -> whose they were (insertion order: oldest first).
        self._retired: dict[int, NodeId] = {}
        # The keys registered under an index, None: none (the receive path's one dict lookup,
        # bound here so that it costs no more than the dict's own get).
        self.lookup: Callable[[int], Keypair[PeerT] | None] = self._keypairs.get

    def __len__(self) -> int:
        return len(self._keypairs)

    def __contains__(self, index: object) -> bool:
        return index in self._keypairs

    def allocate(self, busy: Container[int] = ()) -> int:
        """A fresh random non-zero index, neither registered nor in ``busy`` (the indices of
        handshakes we started, which are registered only once they complete)."""
        while True:
            index = self._rng.getrandbits(32)
            if index and index not in self._keypairs and index not in busy:
                return index

    def add(self, kp: Keypair[PeerT]) -> None:
        """Register ``kp`` under its local index."""
        self._keypairs[kp.local_index] = kp

    def discard(self, index: int) -> None:
        """Forget the keys under ``index`` without retiring it (the whole session went)."""
        self._keypairs.pop(index, None)

    def retire(self, index: int, owner: NodeId) -> None:
        """Forget the keys under ``index``, remembering that it was ``owner``'s."""
        self._keypairs.pop(index, None)
        retired = self._retired
        retired[index] = owner
        if len(retired) > RETIRED_MAX:
            del retired[next(iter(retired))]

    def retired_owner(self, index: int) -> NodeId | None:
        """Whose keys ``index`` named, if we retired it (and still remember it)."""
        return self._retired.get(index)
