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

Which CA (issue 17, shared overlays): :class:`CrlGossip` carries the OVERLAY CA's list, the
one that decides who may link; a one-network node's overlay CA is its network CA, so nothing
changes there. On a shared overlay each virtual network's CA has a list of its own, and
members of one network are seldom linked to each other (overlay-only nodes sit between them),
so :class:`NetworkCrls` runs the same epidemic once per network list, in TYPE_CRL NETWORK
messages that name the list by its CA's raw public key, over every link, strangers included:
an overlay-only node carries every network's list on, which it can verify (the CA key signs
it) but not forge, and refuses the revoked members' records it stores
(:mod:`ipop.dht.policy`). A member's own network list is pinned: installed in its network
trust (it refuses the revoked members' DHT records, whoever serves them), never evicted.
Whoever holds a list offers it on link up, so a network's revocation reaches every node of the
overlay, and so every member, within a few link hops of the member an operator pushed it to
(``ipop crl push``, or a bundle's ``crl``).

Bounds (an insider can send any TYPE_CRL it likes): per peer one assembly of at most
MAX_CRL_BYTES, discarded after CRL_ASSEMBLY_TIMEOUT_S; one CRL pushed per peer per
CRL_PUSH_INTERVAL_S; a peer whose CRL failed verification is ignored for CRL_VERIFY_BACKOFF_S
(so it costs at most one signature check per that period); per-peer state for at most MAX_PEERS
peers, the oldest evicted. Nothing is installed before the CA's signature verified and the
number grew; a refused CRL changes nothing. Drop reasons come from :data:`DROP_REASONS`.
Network lists: at most MAX_NETWORK_LISTS besides the pinned ones, the least recently heard of
evicted first. Anyone can make a CA, so a member that mints networks can churn that table;
then a stranger may drop an honest network's list before passing it on, but members pin their
own, so the list still spreads wherever its network's members link (the known limit of
namespaces anyone can mint, :mod:`ipop.dht.policy`).
"""

from __future__ import annotations

import collections
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, Protocol

from ipop import timing
from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.identity import CRL_REASONS, CaTrust, CrlError, KeyCrl, VerifiedCrl
from ipop.overlay.messages import (
    CRL_CHUNK_BYTES,
    CRL_OP_NETWORK,
    CrlChunk,
    CrlOffer,
    NetworkCrl,
    decode_crl,
    decode_network_crl,
)
from ipop.types import NodeId

__all__ = [
    "DROP_REASONS",
    "MAX_NETWORK_LISTS",
    "MAX_PEERS",
    "CrlGossip",
    "NetworkCrls",
    "signed_by",
]

MAX_PEERS: Final = 1024
_NETWORK_OP = bytes([CRL_OP_NETWORK])
# Network lists a node carries besides its pinned ones (see Bounds): at most 16 KiB each.
MAX_NETWORK_LISTS: Final = 32

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
        # NetworkCrls: a NETWORK message on the overlay's gossip (or the reverse), a key that
        # is no Ed25519 key, a chunk of a list nobody offered us
        "crl_wrong_list",
        "crl_bad_key",
        "crl_unknown_list",
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


def signed_by(trust: _ListHolder, data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is a CRL that ``trust``'s CA signed (of two trusts, which one it is
    for). One parse and one signature check; changes nothing."""
    try:
        trust.check_crl(data)
    except CrlError:
        return False
    return True


class _ListHolder(Protocol):
    """The revocation half of a trust: :class:`CaTrust` (ours) or :class:`KeyCrl` (a
    stranger's copy of another network's list)."""

    @property
    def crl_number(self) -> int: ...

    @property
    def crl_der(self) -> bytes | None: ...

    def check_crl(self, data: bytes | bytearray | memoryview) -> VerifiedCrl: ...

    def apply_crl(self, data: bytes | bytearray | memoryview, *, now: float) -> VerifiedCrl: ...


class _Outbox:
    """What both epidemics share: drops counted under listed reasons only, and the link
    payloads waiting to be sent."""

    drops: collections.Counter[str]
    _out: list[tuple[NodeId, bytes]]

    def outgoing(self) -> list[tuple[NodeId, bytes]]:
        """Link payloads to send, each to its peer (over the link, never routed)."""
        out, self._out = self._out, []
        return out

    def _drop(self, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise LocalProtocolError(f"unlisted drop reason {reason!r}")
        self.drops[reason] += 1


class CrlGossip(_Outbox):
    """One node's CRL epidemic for one list; see the module docstring. ``drops``/``stats``:
    counters to count into (NetworkCrls shares one pair over all its lists)."""

    def __init__(
        self,
        trust: _ListHolder,
        *,
        drops: collections.Counter[str] | None = None,
        stats: collections.Counter[str] | None = None,
    ) -> None:
        self.trust = trust
        self.drops: collections.Counter[str] = collections.Counter() if drops is None else drops
        self.stats: collections.Counter[str] = collections.Counter() if stats is None else stats
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
        if isinstance(msg, NetworkCrl):  # a network's list: NodeCore hands those to NetworkCrls
            self._drop("crl_wrong_list")
            return None
        return self.take(peer, msg, now=now)

    def take(self, peer: NodeId, msg: CrlOffer | CrlChunk, *, now: float) -> VerifiedCrl | None:
        """:meth:`receive` for a message parsed already (NetworkCrls parses its inner one)."""
        if type(msg) is CrlOffer:
            self._on_offer(peer, msg.number, now)
            return None
        assert type(msg) is CrlChunk
        return self._on_chunk(peer, msg, now)

    # --- internals ----------------------------------------------------------------------------

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


class NetworkCrls(_Outbox):
    """The virtual networks' revocation lists this node carries on a shared overlay, one
    :class:`CrlGossip` each, by CA key; see the module docstring. NodeCore feeds it link ups
    and downs and TYPE_CRL NETWORK payloads, and sends :meth:`outgoing` over the links."""

    def __init__(self) -> None:
        self.drops: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self._pinned: dict[bytes, CrlGossip] = {}
        # Strangers' copies, least recently heard of first (evicted first).
        self._carried: OrderedDict[bytes, CrlGossip] = OrderedDict()
        self._out: list[tuple[NodeId, bytes]] = []

    def pin(self, trust: CaTrust) -> None:
        """A network we are a member of: its list is installed in ``trust``, never evicted."""
        key = trust.public_key_raw
        self._carried.pop(key, None)
        self._pinned[key] = CrlGossip(trust, drops=self.drops, stats=self.stats)

    def holds(self, ca_key: bytes) -> int:
        """The number of the list of ``ca_key`` we hold (0: none)."""
        gossip = self._pinned.get(ca_key) or self._carried.get(ca_key)
        return gossip.trust.crl_number if gossip is not None else 0

    def revoked(self, ca_key: bytes) -> frozenset[int]:
        """Serial numbers the list of the CA of ``ca_key`` revokes, as far as we know (for a
        replica's check of a record of a network it is no member of)."""
        gossip = self._carried.get(ca_key)
        if gossip is None or not isinstance(gossip.trust, KeyCrl):
            return frozenset()
        return gossip.trust.revoked

    def link_up(self, peer: NodeId, *, now: float) -> None:
        for key, gossip in self._lists():
            gossip.link_up(peer, now=now)
            self._collect(key, gossip)

    def link_down(self, peer: NodeId) -> None:
        for _key, gossip in self._lists():
            gossip.link_down(peer)

    def announce(self, ca_key: bytes, peers: Iterable[NodeId], *, source: NodeId | None) -> None:
        """We installed a newer list of ``ca_key`` (from ``source``, None: locally)."""
        gossip = self._pinned.get(ca_key) or self._carried.get(ca_key)
        if gossip is not None:
            gossip.announce(peers, source=source)
            self._collect(ca_key, gossip)

    def receive(self, peer: NodeId, data: bytes, *, now: float) -> tuple[bytes, VerifiedCrl] | None:
        """One TYPE_CRL NETWORK payload from linked ``peer``; (CA key, list) when it completed
        a newer list of that CA and we installed it."""
        if data[1:2] != _NETWORK_OP:
            self._drop("crl_wrong_list")
            return None
        try:
            key, inner = decode_network_crl(data)
        except RemoteProtocolError as exc:
            self._drop(exc.reason)
            return None
        gossip = self._gossip_for(key, inner)
        if gossip is None:
            return None
        crl = gossip.take(peer, inner, now=now)
        self._collect(key, gossip)
        if crl is None:
            return None
        self.stats["network_crl_installed"] += 1
        return key, crl

    def install_local(
        self, data: bytes | bytearray | memoryview, *, now: float, peers: Iterable[NodeId]
    ) -> VerifiedCrl | None:
        """A CRL handed over locally (bundle, file, operator): installed in the pinned trust
        whose CA signed it and offered to ``peers``; None when no network of ours signed it.
        Raises :class:`ipop.identity.CrlError` as that trust's ``apply_crl`` does."""
        for key, gossip in self._pinned.items():
            if signed_by(gossip.trust, data):
                crl = gossip.trust.apply_crl(data, now=now)
                gossip.announce(peers, source=None)
                self._collect(key, gossip)
                return crl
        return None

    def _gossip_for(self, key: bytes, inner: CrlOffer | CrlChunk) -> CrlGossip | None:
        """The list of ``key`` that ``inner`` is about: ours, one we carry, or a new one to
        carry when ``inner`` offers one (chunks come only after we asked, with our OFFER
        back, and an offer of nothing needs no list: neither makes one)."""
        gossip = self._pinned.get(key)
        if gossip is not None:
            return gossip
        gossip = self._carried.get(key)
        if gossip is not None:
            self._carried.move_to_end(key)
            return gossip
        if type(inner) is not CrlOffer or not inner.number:
            self._drop("crl_unknown_list")
            return None
        return self._carry(key)

    def _lists(self) -> list[tuple[bytes, CrlGossip]]:
        return [*self._pinned.items(), *self._carried.items()]

    def _carry(self, key: bytes) -> CrlGossip | None:
        try:
            holder = KeyCrl(key)
        except LocalProtocolError:
            self._drop("crl_bad_key")
            return None
        if len(self._carried) >= MAX_NETWORK_LISTS:
            self._carried.popitem(last=False)
            self.stats["network_list_evicted"] += 1
        gossip = self._carried[key] = CrlGossip(holder, drops=self.drops, stats=self.stats)
        self.stats["network_list_new"] += 1
        return gossip

    def _collect(self, key: bytes, gossip: CrlGossip) -> None:
        for peer, payload in gossip.outgoing():
            self._out.append((peer, NetworkCrl(key, payload).encode()))
