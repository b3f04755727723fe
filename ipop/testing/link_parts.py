"""A :class:`ipop.link.peer.Shared` for unit tests of the link layer's sub-machines
(:mod:`ipop.link.handshakes`, :mod:`ipop.link.rebind`, :mod:`ipop.link.probing`) without a
LinkLayer around them: fresh tables, and services that only record what they were asked.
Sealing keeps the payload in the clear, so a test reads what would have been sent."""

from __future__ import annotations

import collections
import random

from ipop.link.config import LinkConfig
from ipop.link.events import LinkEvent
from ipop.link.keys import IndexTable, Keypair
from ipop.link.peer import Peer, Shared
from ipop.types import NodeId, Path

__all__ = ["SharedRecorder"]


class SharedRecorder:
    """The tables a LinkLayer would share, and a record of the services used."""

    def __init__(self, config: LinkConfig | None = None, *, seed: int = 1) -> None:
        self.config = config if config is not None else LinkConfig()
        self.peers: dict[NodeId, Peer] = {}
        self.keys: IndexTable[Peer] = IndexTable(random.Random(seed))
        self.outbox: list[tuple[bytes, Path]] = []
        self.events: collections.deque[LinkEvent] = collections.deque()
        self.drops: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self.sealed: list[tuple[Peer, Keypair[Peer], bytes]] = []
        self.touched: list[Peer] = []
        self.wakes = 0
        self.claimed: list[tuple[Peer, Path]] = []
        self.shared = Shared(
            config=self.config,
            peers=self.peers,
            keys=self.keys,
            outbox=self.outbox,
            events=self.events,
            drops=self.drops,
            stats=self.stats,
            seal=self._seal,
            touch=self.touched.append,
            wake=self._wake,
            claim=lambda st, path: self.claimed.append((st, path)),
        )

    def _seal(self, st: Peer, kp: Keypair[Peer], payload: bytes, now: float) -> bytes:
        self.sealed.append((st, kp, bytes(payload)))
        return bytes(payload)

    def _wake(self) -> None:
        self.wakes += 1

    def take(self) -> list[tuple[bytes, Path]]:
        """The datagrams queued so far (the outbox is emptied, as datagrams_to_send does)."""
        out = list(self.outbox)
        self.outbox.clear()
        return out
