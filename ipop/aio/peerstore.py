"""Remembered peers: endpoints of peers this node linked to directly, kept across restarts.

A node that joined once can rejoin through any of them when every bootstrap of its bundle is
gone, and a node restarted after a crash (kill -9: no goodbye) re-keys its sessions with them at
once, so they stop sending into the session that died with the old process. The store owns the
bounded list (newest first, at most :data:`MAX_REMEMBERED`) and its file in the state
directory::

    {"network": "<name>", "peers": ["198.51.100.7:5800", ...]}

The file is written atomically (a temporary file renamed over it) and rarely: only when the
set of endpoints changed and no sooner than ``min_write_s`` after the previous write. A file
that is missing, unreadable, for another network or malformed counts as empty: remembered peers
are a hint, and a handshake authenticates whoever answers at an endpoint.

Sans-IO apart from the file: the caller passes ``now`` and the link snapshot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

from ipop.types import Endpoint
from ipop.types import Path as LinkPath

__all__ = ["MAX_REMEMBERED", "REMEMBER_WRITE_S", "PeerStore"]

# Every peer a node holds a direct session with, as far as the bound allows: a restart keys
# each of them afresh at once, and a peer replaces its dead session with ours the moment that
# handshake completes. A peer left out keeps sending into the dead session until its
# silent-peer timer (20-35 s; the 30-node soak linked every node to all 29 others, and 16 were
# remembered). The bound: a node's direct links are its ring links plus at most SHORTCUT_MAX
# shortcuts; 128 Inits at start (most answered within one round trip) are still next to nothing.
MAX_REMEMBERED = 128
# At most one write a minute: links come and go far more often than that.
REMEMBER_WRITE_S = 60.0
FILE_NAME = "peers.json"


class PeerStore:
    """The remembered endpoints of one node, backed by ``<state_dir>/peers.json``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        network: str,
        limit: int = MAX_REMEMBERED,
        min_write_s: float = REMEMBER_WRITE_S,
    ) -> None:
        self.path = state_dir / FILE_NAME
        self.network = network
        self.limit = limit
        self.min_write_s = min_write_s
        self._endpoints: list[Endpoint] = []
        self._saved: list[Endpoint] = []
        self._last_write = float("-inf")

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    def load(self) -> list[Endpoint]:
        """Read the file; what it holds becomes the store's list (empty if unusable)."""
        try:
            data = json.loads(self.path.read_text())
            if data.get("network") != self.network:
                return []
            eps = [_parse(s) for s in data["peers"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []
        unique = list(dict.fromkeys(ep for ep in eps if ep is not None))[: self.limit]
        self._endpoints = list(unique)
        self._saved = list(unique)
        return unique

    def note(self, paths: Iterable[LinkPath], *, own: Iterable[Endpoint] = ()) -> bool:
        """Put the direct ``paths`` of current links first; True if the set changed.

        Relayed paths are skipped (the relay may be gone next time), and so are our own
        endpoints (a node linked to itself through a hairpinning NAT).
        """
        mine = set(own)
        fresh = [p for p in paths if isinstance(p, Endpoint) and p not in mine]
        merged = list(dict.fromkeys([*fresh, *self._endpoints]))[: self.limit]
        changed = set(merged) != set(self._endpoints)  # a new order alone is not worth a write
        self._endpoints = merged
        return changed

    @property
    def dirty(self) -> bool:
        """The list differs from what the file holds."""
        return set(self._endpoints) != set(self._saved)

    @property
    def written(self) -> bool:
        """This store has written its file at least once."""
        return self._last_write > float("-inf")

    def save_due(self, *, now: float) -> bool:
        return self.dirty and now - self._last_write >= self.min_write_s

    def save(self, *, now: float) -> None:
        """Write the list atomically (OSError: the caller logs it; the list stays in memory)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        body = {
            "network": self.network,
            "peers": [f"{ep.host}:{ep.port}" for ep in self._endpoints],
        }
        tmp.write_text(json.dumps(body) + "\n")
        os.replace(tmp, self.path)
        self._saved = list(self._endpoints)
        self._last_write = now


def _parse(text: object) -> Endpoint | None:
    if not isinstance(text, str):
        return None
    host, sep, port = text.rpartition(":")
    if not sep:
        return None
    try:
        IPv4Address(host)
        number = int(port)
    except ValueError:
        return None
    return Endpoint(host, number) if 0 < number < 65536 else None
