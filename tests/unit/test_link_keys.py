"""ipop.link.keys: a Keypair's limits, and the IndexTable's allocation, lookup and retirement."""

from __future__ import annotations

import random

import pytest

from ipop.identity import NodeCertificate
from ipop.link.crypto import AES_256_GCM, InvalidTag, nonce_for
from ipop.link.handshake import SessionKeys
from ipop.link.keys import RETIRED_MAX, IndexTable, Keypair
from ipop.link.layer import LinkConfig
from ipop.testing.identities import make_identity, make_network
from ipop.types import NodeId

NOW = 1_000.0
OWNER = NodeId(1)
OTHER = NodeId(2)


class _Scripted(random.Random):
    """Hands out the given 32-bit draws in order."""

    def __init__(self, draws: list[int]) -> None:
        super().__init__(0)
        self._draws = iter(draws)

    def getrandbits(self, k: int, /) -> int:
        return next(self._draws)


@pytest.fixture(scope="module")
def cert() -> NodeCertificate:
    return make_identity(make_network(now=NOW), "alice", now=NOW).cert


def _keypair(index: int, cert: NodeCertificate, *, peer: str = "peer") -> Keypair[str]:
    keys = SessionKeys(
        send_key=bytes(32),
        recv_key=bytes(range(32)),
        cipher=AES_256_GCM,
        local_index=index,
        remote_index=index + 1,
        is_initiator=True,
    )
    return Keypair(keys, peer, cert, NOW, LinkConfig())


def test_keypair_limits_from_config(cert: NodeCertificate) -> None:
    cfg = LinkConfig()
    kp = _keypair(7, cert)
    assert (kp.local_index, kp.remote_index, kp.peer) == (7, 8, "peer")
    assert kp.rekey_at == NOW + cfg.rekey_after_s
    assert kp.reject_at == NOW + cfg.reject_after_s
    assert kp.rekey_counter_at == cfg.rekey_after_messages
    assert kp.send_counter == 0
    # Send and receive keys differ: what one seals, only the other side's recv opens.
    sealed = kp.send_aead.encrypt(nonce_for(0), b"x", b"")
    assert kp.send.primitive is kp.send_aead
    with pytest.raises(InvalidTag):
        kp.recv_aead.decrypt(nonce_for(0), sealed, b"")


def test_allocate_skips_zero_registered_and_busy(cert: NodeCertificate) -> None:
    table: IndexTable[str] = IndexTable(_Scripted([5, 0, 5, 9, 11]))
    assert table.allocate() == 5
    table.add(_keypair(5, cert))
    # 0 is never an index, 5 is registered, 9 is a handshake of ours under way.
    assert table.allocate(busy={9}) == 11


def test_allocate_is_random_and_distinct() -> None:
    table: IndexTable[str] = IndexTable(random.Random(1))
    indices = {table.allocate() for _ in range(100)}
    assert len(indices) == 100
    assert all(0 < i < 2**32 for i in indices)


def test_lookup_add_discard(cert: NodeCertificate) -> None:
    table: IndexTable[str] = IndexTable(random.Random(1))
    kp = _keypair(42, cert)
    assert table.lookup(42) is None
    table.add(kp)
    assert table.lookup(42) is kp
    assert 42 in table and len(table) == 1
    table.discard(42)
    table.discard(42)  # twice: nothing to forget
    assert table.lookup(42) is None and len(table) == 0
    # Discarded with its session, not retired: nobody's index any more.
    assert table.retired_owner(42) is None


def test_retire_remembers_whose_index(cert: NodeCertificate) -> None:
    table: IndexTable[str] = IndexTable(random.Random(1))
    table.add(_keypair(42, cert))
    table.add(_keypair(43, cert))
    table.retire(42, OWNER)
    assert table.lookup(42) is None
    assert table.retired_owner(42) == OWNER
    # The other keys of the peer still open (e.g. the current ones after a rekey retired
    # the previous).
    assert table.lookup(43) is not None
    assert table.retired_owner(43) is None
    # Retiring an index never registered (pending keys already dropped) still remembers it.
    table.retire(44, OTHER)
    assert table.retired_owner(44) == OTHER


def test_retired_indices_are_bounded_oldest_first() -> None:
    table: IndexTable[str] = IndexTable(random.Random(1))
    for index in range(1, RETIRED_MAX + 1):
        table.retire(index, OWNER)
    assert table.retired_owner(1) == OWNER  # at the bound: all kept
    table.retire(RETIRED_MAX + 1, OTHER)
    assert table.retired_owner(1) is None  # the oldest went first
    assert table.retired_owner(2) == OWNER
    assert table.retired_owner(RETIRED_MAX + 1) == OTHER
