"""Spreading the network's revocation list to every node, over links (sans-IO).

:class:`CrlGossip` owns one node's part of the epidemic: the node's :class:`CaTrust` holds the
CRL in force (:meth:`ipop.identity.CaTrust.apply_crl`), and this object moves CRLs between
linked peers in TYPE_CRL messages (layout in :mod:`ipop.overlay.messages`). NodeCore feeds it
link ups and downs and every TYPE_CRL link payload, sends what :meth:`CrlGossip.outgoing`
returns over the links, and, whenever a newer CRL got installed, ends the revoked peers'
sessions (:meth:`ipop.link.layer.LinkLayer.close_revoked`) and calls
:meth:`CrlGossip.announce`.

Protocol (numbers are CRL numbers; 0 is "none")::

    link up, we hold n > 0      -> OFFER(n) to the new peer
    we install n (any source)   -> OFFER(n) to every linked peer (but the one it came from)
    OFFER(m) with m < ours      -> our CRL as CHUNKs to that peer   (once per CRL_PUSH_INTERVAL_S)
    OFFER(m) with m > ours      -> OFFER(ours) back, asking for it  (once per CRL_PULL_WAIT_S)
    CHUNKs complete a CRL       -> verify, install if newer, then as above

A node without a CRL never speaks first, so networks that revoke nothing exchange nothing.
Every offer of a newer number is answered (per peer, rate-limited), not just the first: a
member that offers a huge number and never delivers must not keep us from asking the others.
Chunks of a list no newer than ours are honest duplicates (several peers answered our asks):
counted in ``stats["chunk_duplicate"]`` and dropped before any work.

The intervals are in :mod:`ipop.timing`.

Which CA (issue 17, shared overlays): the gossip runs over links, so it carries the OVERLAY
CA's list, the one that decides who may link; a one-network node's overlay CA is its network
CA, so nothing changes there. A member on a shared overlay installs its network CA's list
(bundle ``crl``, ``[identity] crl``, ``ipop crl push``) in its network trust only, picked by
:func:`signed_by`: it refuses the revoked members' DHT records; it is not gossiped (peers on
the overlay need not be members, and one number per link cannot name two lists).

Bounds (an insider can send any TYPE_CRL it likes): per peer one assembly of at most
MAX_CRL_BYTES, discarded after CRL_ASSEMBLY_TIMEOUT_S; one CRL pushed per peer per
CRL_PUSH_INTERVAL_S; a peer whose CRL failed verification is ignored for CRL_VERIFY_BACKOFF_S
(so it costs at most one signature check per that period); per-peer state for at most MAX_PEERS
peers, the oldest evicted. Nothing is installed before the CA's signature verified and the
number grew; a refused CRL changes nothing. Drop reasons come from :data:`DROP_REASONS`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Final

from ipop import timing
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.identity import CRL_REASONS, CaTrust, CrlError, VerifiedCrl
from ipop.overlay.messages import CRL_CHUNK_BYTES, CrlChunk, CrlOffer, decode_crl
from ipop.types import NodeId

__all__ = [
    "DROP_REASONS",
    "MAX_PEERS",
    "CrlGossip",
    "signed_by",
]

MAX_PEERS: Final = 1024

DROP_REASONS: Final = frozenset(
    {
        # from decode_crl
        "truncated",
        "unknown_type",
        "crl_bad_op",
        "crl_bad_chunk",
        # from CaTrust.apply_crl
        *CRL_REASONS,
        # ours
        "crl_peer_backoff",
    }
)


class _Assembly:
    __slots__ = ("chunks", "number", "started", "total")

    def __init__(self, number: int, total: int, now: float) -> None:
        self.number = number
        self.total = total
        self.started = now
        self.chunks: dict[int, bytes] = {}

    def complete(self) -> bool:
        return len(self.chunks) * CRL_CHUNK_BYTES >= self.total


class _PeerState:
    __slots__ = ("asked_at", "assembly", "backoff_until", "pushed")

    def __init__(self) -> None:
        # (number, when) of the last CRL we pushed to this peer; when we last asked it for one.
        self.pushed: tuple[int, float] = (0, -1e18)
        self.asked_at = -1e18
        self.backoff_until = -1e18
        self.assembly: _Assembly | None = None


def signed_by(trust: CaTrust, data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is a CRL that ``trust``'s CA signed (of two trusts, which one it is
    for). One parse and one signature check; changes nothing."""
    try:
        trust.check_crl(data)
    except CrlError:
        return False
    return True


class CrlGossip:
    """One node's CRL epidemic; see the module docstring."""

    def __init__(self, trust: CaTrust) -> None:
        self.trust = trust
        self.drops: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self._peers: dict[NodeId, _PeerState] = {}
        self._out: list[tuple[NodeId, bytes]] = []

    # --- inputs -------------------------------------------------------------------------------

    def link_up(self, peer: NodeId, *, now: float) -> None:
        if self.trust.crl_number:
            self._offer(peer)

    def link_down(self, peer: NodeId) -> None:
        self._peers.pop(peer, None)

    def announce(self, peers: Iterable[NodeId], *, source: NodeId | None = None) -> None:
        """We installed a newer CRL: tell every linked peer (but ``source``, which sent it)."""
        for peer in peers:
            if peer != source:
                self._offer(peer)

    def receive(self, peer: NodeId, data: bytes, *, now: float) -> VerifiedCrl | None:
        """One TYPE_CRL payload from linked ``peer``; the CRL it completed and we installed."""
        try:
            msg = decode_crl(data)
        except RemoteProtocolError as exc:
            self._drop(exc.reason)
            return None
        if type(msg) is CrlOffer:
            self._on_offer(peer, msg.number, now)
            return None
        assert type(msg) is CrlChunk
        return self._on_chunk(peer, msg, now)

    def outgoing(self) -> list[tuple[NodeId, bytes]]:
        """Link payloads to send, each to its peer (over the link, never routed)."""
        out, self._out = self._out, []
        return out

    # --- internals ----------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise LocalProtocolError(f"unlisted drop reason {reason!r}")
        self.drops[reason] += 1

    def _state(self, peer: NodeId) -> _PeerState:
        st = self._peers.get(peer)
        if st is None:
            if len(self._peers) >= MAX_PEERS:
                del self._peers[next(iter(self._peers))]  # oldest first (insertion order)
            st = self._peers[peer] = _PeerState()
        return st

    def _offer(self, peer: NodeId) -> None:
        self.stats["offer_sent"] += 1
        self._out.append((peer, CrlOffer(self.trust.crl_number).encode()))

    def _on_offer(self, peer: NodeId, number: int, now: float) -> None:
        ours = self.trust.crl_number
        if number < ours:
            self._push(peer, now)
        elif number > ours:
            st = self._state(peer)
            if now - st.asked_at < timing.CRL_PULL_WAIT_S:
                self.stats["ask_held"] += 1
                return
            st.asked_at = now
            self._offer(peer)

    def _push(self, peer: NodeId, now: float) -> None:
        der = self.trust.crl_der
        number = self.trust.crl_number
        if der is None:
            return
        st = self._state(peer)
        if st.pushed[0] == number and now - st.pushed[1] < timing.CRL_PUSH_INTERVAL_S:
            self.stats["push_held"] += 1
            return
        st.pushed = (number, now)
        self.stats["crl_pushed"] += 1
        total = len(der)
        for off in range(0, total, CRL_CHUNK_BYTES):
            chunk = CrlChunk(number, total, off, der[off : off + CRL_CHUNK_BYTES])
            self._out.append((peer, chunk.encode()))

    def _on_chunk(self, peer: NodeId, msg: CrlChunk, now: float) -> VerifiedCrl | None:
        if msg.number <= self.trust.crl_number:
            self.stats["chunk_duplicate"] += 1
            return None
        st = self._state(peer)
        if now < st.backoff_until:
            self._drop("crl_peer_backoff")
            return None
        asm = st.assembly
        if (
            asm is None
            or asm.number != msg.number
            or asm.total != msg.total
            or now - asm.started > timing.CRL_ASSEMBLY_TIMEOUT_S
        ):
            asm = st.assembly = _Assembly(msg.number, msg.total, now)
        asm.chunks[msg.offset] = msg.data
        if not asm.complete():
            return None
        st.assembly = None
        der = b"".join(asm.chunks[off] for off in sorted(asm.chunks))
        try:
            crl = self.trust.apply_crl(der, now=now)
        except CrlError as exc:
            # Forged, broken, or an old list framed as new: this peer gets no more signature
            # checks for a while (honest duplicates never get here: see crl_chunk_stale).
            self._drop(exc.reason)
            st.backoff_until = now + timing.CRL_VERIFY_BACKOFF_S
            return None
        if crl.number != msg.number:
            # The chunks said one number, the signed list another: installed (the CA signed
            # it and it is newer), but the peer's framing was wrong.
            self.stats["crl_number_mismatch"] += 1
        self.stats["crl_installed"] += 1
        return crl
