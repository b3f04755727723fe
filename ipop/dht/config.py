"""The DHT service's tunables: :class:`DhtConfig` (replica count, quorum, lookup widths, RPC
timeouts, republish and refresh periods, lease ceiling, create rounds, store bound).

Pure data with its checks and the two numbers derived from it (a contact lookup's width, the
acknowledgements a write needs); :mod:`ipop.dht.service` and its parts read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

from ipop.dht.storage import DEFAULT_MAX_RECORDS
from ipop.dht.wire import MAX_FIND_NODES
from ipop.errors import ConfigError
from ipop.timing import (
    DHT_CREATE_BACKOFF_S,
    DHT_CREATE_ROUNDS,
    DHT_MAX_TTL_S,
    DHT_REFRESH_INTERVAL_S,
    DHT_REPUBLISH_INTERVAL_S,
    DHT_RESPONSE_CACHE_S,
    DHT_RPC_ATTEMPTS,
    DHT_RPC_MIN_RETRY_S,
    DHT_RPC_RETRY_S,
)

__all__ = ["DhtConfig"]


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """Tunables of one DHT node; defaults from :mod:`ipop.timing` and Brunet (R=8, 5 of 8)."""

    replicas: int = 8
    quorum: int | None = None  # None: a majority of ``replicas``
    ksize: int = 20
    # How many nearest nodes the lookups that only gather contacts (the join's, the refresh)
    # converge on (None: ``replicas`` + 2). Why not ``ksize``: a lookup asks until its k
    # nearest have all answered, so its cost grows with k; at 1,000 nodes the joins' k=20
    # lookups were a fifth of all overlay traffic. Lookups for a replica set keep ``ksize``:
    # with k=10 two creators racing in a fresh 50-node network saw different replica sets and
    # both won (tests/sim/test_dht_alloc.py), and at 1,000 nodes one put in 100 landed on 8
    # nodes none of which was among the key's 8 nearest. One exception: a create's first
    # lookup, which only picks whom to offer the claim to first; the claim is judged on a
    # ksize-wide lookup that finds nobody it was not offered to (ipop.dht.write, _converge).
    lookup_k: int | None = None
    alpha: int = 3
    rpc_retry_s: float = DHT_RPC_RETRY_S  # the ceiling of the adaptive timeout
    rpc_min_retry_s: float = DHT_RPC_MIN_RETRY_S
    rpc_attempts: int = DHT_RPC_ATTEMPTS
    answer_cache_s: float = DHT_RESPONSE_CACHE_S
    republish_interval_s: float = DHT_REPUBLISH_INTERVAL_S
    refresh_interval_s: float = DHT_REFRESH_INTERVAL_S
    max_ttl_s: float = DHT_MAX_TTL_S
    create_rounds: int = DHT_CREATE_ROUNDS
    create_backoff_s: float = DHT_CREATE_BACKOFF_S
    # The network's virtual subnet: ip keys and name values outside it are refused (None: the
    # DHT does not know it, e.g. a bare test cluster, and addresses are not range-checked).
    subnet: IPv4Network | None = None
    # Records one replica holds at most (ipop.dht.storage).
    max_records: int = DEFAULT_MAX_RECORDS

    def __post_init__(self) -> None:
        if self.replicas < 3:
            raise ConfigError("dht.replicas", f"{self.replicas} < 3", "use 3 or more (8 default)")
        if self.quorum is not None and not self.replicas // 2 < self.quorum <= self.replicas:
            raise ConfigError(
                "dht.quorum",
                f"{self.quorum} is not a majority of {self.replicas} replicas",
                f"use {self.replicas // 2 + 1}..{self.replicas}, or leave it unset",
            )
        if self.ksize < self.replicas:
            raise ConfigError("dht.ksize", "smaller than dht.replicas", "make ksize >= replicas")
        if self.lookup_k is not None and not self.replicas <= self.lookup_k <= MAX_FIND_NODES:
            raise ConfigError(
                "dht.lookup_k",
                f"{self.lookup_k} not in [{self.replicas}, {MAX_FIND_NODES}]",
                "leave it unset (replicas + 2) or use a value in that range",
            )
        if self.rpc_attempts < 1 or self.rpc_retry_s <= 0 or self.create_rounds < 1:
            raise ConfigError("dht.rpc", "attempts, retry and rounds must be positive")
        if self.max_records < 1:
            raise ConfigError("dht.max_records", f"{self.max_records} < 1", "use 1 or more")

    @property
    def width(self) -> int:
        """The contact lookups' width actually used (see ``lookup_k``)."""
        if self.lookup_k is not None:
            return self.lookup_k
        return min(self.replicas + 2, MAX_FIND_NODES)

    def needed(self, replica_count: int) -> int:
        """Acknowledgements a write needs from a replica set of ``replica_count`` nodes.

        A set of one is this node alone: it knows no other node (not joined, or cut off), and
        agreeing with itself proves nothing, so no write can succeed (more than 1 is needed).
        """
        if replica_count <= 1:
            return 2
        if replica_count >= self.replicas:
            return self.quorum if self.quorum is not None else self.replicas // 2 + 1
        return replica_count // 2 + 1
