"""Relay links (Brunet's tunnel edges): choosing a relay, and the relay's forwarding rule.

When two near neighbours cannot link directly (both behind NATs that defeat punching), the
link layer keys a session over ``RelayPath(via=X, peer=T)``: its sealed datagrams travel as
RELAY_FORWARD to X, which passes them on as RELAY_DELIVER to T. X never sees inside them.

Rules, each with its reason:
- X relays only between two peers it holds *direct* links to: a relay over a relayed link
  would let tunnels nest and loop, and would hide a dead hop behind another.
- X refuses to relay back to the origin, and to itself (nonsense a peer can still send).
- The requester prefers relays that the target listed as directly linked (from its
  CTM_REPLY) and that we also hold directly; the node that handed us the answer is a last
  resort because it may not hold a link to the target at all.
- A link already up whose direct path died under a roam of ours (:class:`RelayFallbacks`)
  is keyed afresh through a relay: common neighbours first, then any direct peer nearest the
  target on the ring, one at a time (a refusal moves to the next).
- A relayed link whose relay falls silent (it died without a word) moves to another relay
  the same way (:meth:`RelayRole.wrap`): what we wrap for X counts as traffic routed into X
  for :class:`ipop.overlay.suspect.SilentHops`, which probes X and finds it suspect within a
  few of its round trips. Before, the pair waited for the silent-neighbour timer or the link
  timeout (about 15 s) to close the dead relayed link.

:class:`RelayRole` is the node's part in all of this, on either side of a relayed link; its
drop reasons are :data:`RELAY_DROPS`. A relayed link's data runs skip RELAY_FORWARD once the
relay bound a channel for them: :class:`ipop.overlay.channels.RelayChannels`, which the role
owns and lends its forwarding rule.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection, Sequence
from typing import Final, Protocol

from ipop.errors import LocalProtocolError, RemoteProtocolError
from ipop.overlay.attempts import Action as AttemptAction
from ipop.overlay.attempts import Attempts
from ipop.overlay.channels import RelayChannels
from ipop.overlay.events import RelayDatagram
from ipop.overlay.messages import (
    RELAY_HEAD_BYTES,
    RelayDeliver,
    RelayForward,
    RelayRefused,
)
from ipop.overlay.near import SeenIds
from ipop.overlay.suspect import SilentHops
from ipop.overlay.table import Connection, ConnectionKind, ConnectionTable
from ipop.types import NodeId, Path, RelayPath, ring_distance

# Every reason the relay role drops a datagram or a relay message for (in the node's drops).
RELAY_DROPS: Final = frozenset(
    {
        "relay_loop",
        "relay_origin_not_direct",
        "relay_no_link",
        "relay_target_not_direct",
        "relay_via_down",
        "relay_bad_deliver",
        "relay_refused_stale",
    }
)
# Relays a roam's fallback tries for one link (each refusal costs one round trip).
ROAM_RELAY_TRIES = 4


def relay_candidates(
    local: NodeId,
    target: NodeId,
    local_direct: Collection[NodeId],
    target_neighbours: Sequence[NodeId],
    *,
    fallback: NodeId | None = None,
) -> list[NodeId]:
    """Relays to try in order: common direct neighbours closest to the target first."""
    mine = set(local_direct)
    common = [n for n in dict.fromkeys(target_neighbours) if n in mine and n not in (local, target)]
    common.sort(key=lambda n: (ring_distance(n, target), n))
    usable = fallback is not None and fallback in mine and fallback not in (local, target)
    if usable and fallback not in common:
        assert fallback is not None
        common.append(fallback)
    return common


class SendRun(Protocol):
    """Several messages to one peer, sealed in one run where the link layer can: how many
    went (see :meth:`ipop.overlay.ports.Links.send_run` for ``head`` and ``strip``). With
    ``strip``, 0 means declined and nothing was sent: the caller sends one by one."""

    def __call__(
        self, peer: NodeId, payloads: list[bytes], now: float, head: bytes, strip: bytes
    ) -> int: ...


class TakeDelivered(Protocol):
    """Opens the relayed datagrams from ``payloads[start]`` on that follow ``head`` and
    arrived on ``path`` (the core's, :meth:`RelayRole.on_deliver_payloads`): the index
    after the last one taken."""

    def __call__(self, payloads: list[bytes], start: int, path: RelayPath, head: bytes) -> int: ...


def _one_by_one(send: Callable[[NodeId, bytes, float], bool]) -> SendRun:
    """A :class:`SendRun` without runs: each message on its own (declined with ``strip``)."""

    def send_run(peer: NodeId, payloads: list[bytes], now: float, head: bytes, strip: bytes) -> int:
        if strip:
            return 0
        return sum(send(peer, head + m, now) for m in payloads)

    return send_run


def forward_refusal(
    table: ConnectionTable, local: NodeId, origin: NodeId, target: NodeId
) -> str | None:
    """Why we would not relay ``origin`` → ``target`` (a drop reason), or None to forward."""
    if target in (origin, local):
        return "relay_loop"
    src = table.get(origin)
    dst = table.get(target)
    if src is None or not src.direct:
        return "relay_origin_not_direct"
    if dst is None:
        return "relay_no_link"
    if not dst.direct:
        return "relay_target_not_direct"
    return None


class RelayFallbacks:
    """Linked peers whose direct path died under a roam, being keyed afresh through a relay.

    Holds, per peer, the relays still to try and when its last fallback began. Only peers we
    hold a link to get one, and :meth:`forget` runs when the link goes, so the table is bounded
    by the connection table.
    """

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self._left: dict[NodeId, list[NodeId]] = {}
        self._began: dict[NodeId, float] = {}

    def begin(self, peer: NodeId, candidates: Sequence[NodeId], *, now: float) -> bool:
        """Start a fallback for ``peer`` through ``candidates`` in order; False if one began
        less than ``retry_s`` ago (a restless host roams often; each try costs a handshake)."""
        began = self._began.get(peer)
        if began is not None and now - began < self.retry_s:
            return False
        self._began[peer] = now
        self._left[peer] = list(dict.fromkeys(c for c in candidates if c != peer))
        return True

    def trying(self, peer: NodeId) -> bool:
        return peer in self._left

    def next_via(self, peer: NodeId) -> NodeId | None:
        """The next relay to try for ``peer`` (None: none left, and the fallback is over)."""
        left = self._left.get(peer)
        if not left:
            self._left.pop(peer, None)
            return None
        return left.pop(0)

    def done(self, peer: NodeId) -> None:
        """``peer``'s session moved off its dead path: nothing more to try."""
        self._left.pop(peer, None)

    def forget(self, peer: NodeId) -> None:
        self._left.pop(peer, None)
        self._began.pop(peer, None)


class RelayLinks(Protocol):
    """What the relay role needs of the link layer (:class:`ipop.overlay.node.Links` has it)."""

    def connect(self, path: Path, *, now: float, expected: NodeId | None = None) -> None: ...

    def close(self, peer: NodeId, *, now: float) -> None: ...


class RelayRole:
    """Our part in relayed links, on both sides of one (see the module docstring).

    As the relay X: RELAY_FORWARD from one direct peer goes on as RELAY_DELIVER to another,
    or is refused (RELAY_REFUSED tells the origin when the target is out of reach). As an end:
    our link layer's datagrams for a relayed link go to X wrapped (:meth:`wrap`), what X
    delivers comes out as :class:`RelayDatagram`, our link to X is held while traffic runs
    through it, and a refusal moves a pending attempt or a roam's fallback on, or drops the
    relayed link it killed. The node owns it; the callables are the node's own ways to send,
    mark kinds, emit events, carry out attempts' actions and forget a peer.
    """

    def __init__(
        self,
        local_id: NodeId,
        *,
        table: ConnectionTable,
        links: RelayLinks,
        attempts: Attempts,
        seen: SeenIds,
        drops: collections.Counter[str],
        stats: collections.Counter[str],
        send: Callable[[NodeId, bytes, float], bool],
        send_run: SendRun | None = None,
        add_kind: Callable[[NodeId, ConnectionKind, float], None],
        emit: Callable[[RelayDatagram], None],
        connect: Callable[[Sequence[AttemptAction], float], None],
        forget: Callable[[NodeId, float], bool],
        fallback_retry_s: float,
        silent: SilentHops,
        channel_first: int = 1,
        use_channels: bool = True,
    ) -> None:
        self.local_id = local_id
        self._table = table
        self._links = links
        self._attempts = attempts
        self._seen = seen
        self._drops = drops
        self._stats = stats
        self._send = send
        # Several messages to one peer at once (sealed in one run): how many went.
        self._send_run: SendRun = send_run or _one_by_one(send)
        self._add_kind = add_kind
        self._emit = emit
        self._connect = connect
        self._forget = forget
        # Links keyed afresh through a relay after a roam left their direct path dead, or
        # through another relay after theirs fell silent.
        self._fallbacks = RelayFallbacks(fallback_retry_s)
        self._silent = silent
        # Relay channels, as the relay, an origin and a target (ipop.overlay.channels).
        self.channels = RelayChannels(
            table=table,
            drops=drops,
            stats=stats,
            send=send,
            may_forward=lambda peer, target, now: self._may_forward(peer, target, {}, now),
            wrapped=self._wrapped,
            forwarded=self._forwarded,
            hold=self._hold,
            first=channel_first,
            use=use_channels,
        )
        # Bumped whenever a row's last_relay moves (it is not part of the row's rev): the
        # node's policy-view cache keys on it.
        self.stamp = 0

    def forget(self, peer: NodeId) -> None:
        """``peer``'s link is gone: no fallback for it any more."""
        self._fallbacks.forget(peer)
        self.channels.forget(peer)

    def path_changed(self, peer: NodeId, path: Path) -> None:
        """Our link to ``peer`` now runs over ``path``: a relayed one ends its fallback; our
        channels to it or through it are asked for afresh (the relay checks addresses)."""
        if isinstance(path, RelayPath):
            self._fallbacks.done(peer)
        self.channels.path_changed(peer)

    def wrap(self, datagram: bytes, path: RelayPath, *, now: float) -> None:
        """Carry one of our link layer's datagrams for a relayed link to its relay node."""
        self.wrap_run([datagram], path, now=now)

    def wrap_run(self, datagrams: list[bytes], path: RelayPath, *, now: float) -> None:
        """:meth:`wrap` for several datagrams of one relayed link, sent to the relay in one
        run (the data plane's sender: :meth:`ipop.core.NodeCore.send_relayed_run`)."""
        if not isinstance(path, RelayPath):
            raise LocalProtocolError("wrap_relay() needs a RelayPath")
        row = self._table.get(path.via)
        if row is None or not row.direct:
            self._drops["relay_via_down"] += len(datagrams)
            return
        via = path.via
        # Each datagram sealed behind the head as it is (no copy per datagram).
        head = RelayForward(path.peer, b"").encode()
        if self._send_run(via, datagrams, now, head, b""):
            self._wrapped(row, path, now)

    def _wrapped(self, row: Connection, path: RelayPath, now: float) -> None:
        """Datagrams of ``path``'s link left for its relay (``row``): hold the relay's link,
        and count them as traffic into it for the silent-hop check."""
        self._hold(row, now)
        silent = self._silent
        silent.sent(path.via, now)
        if silent.suspect(path.via, now):
            self._failover(path.peer, path.via, now)

    def _failover(self, peer: NodeId, dead: NodeId, now: float) -> None:
        """``peer``'s relayed link runs through ``dead``, which answers nothing any more: key
        it through another relay (as :meth:`fallback` picks them, none that is suspect too),
        at most once per retry interval. Both ends may move at once, each through a relay of
        its own choice: each end's own handshake moves the path it sends on (the link layer
        moves a relayed session to the relay whose handshake completed last,
        :func:`ipop.link.paths.better_path`)."""
        if peer not in self._table or self._fallbacks.trying(peer):
            return
        silent = self._silent
        if self._begin(peer, lambda p: p != dead and not silent.suspect(p, now), now):
            self._stats["relay_failovers"] += 1
            self._fallback_next(peer, now)

    def fallback(
        self, peer: NodeId, *, now: float, relays: Collection[NodeId] | None = None
    ) -> bool:
        """Key our link to ``peer`` afresh through a relay: its direct path died under a roam
        of ours (NodeCore asks when the session heard nothing since, ROAM_RELAY_AFTER_S on).

        Why: a pair that port guessing joined (a symmetric NAT facing a filtering one) cannot
        follow a roam directly. The new mapping toward the peer is one nobody knows, so our
        re-key never gets in, and without this the link stayed dead until the silent-neighbour
        timer closed it (about 15 s). The link layer lets the relayed session take over a
        direct path that carried nothing since we roamed; traffic then asks for a direct
        shortcut anew. Relays: the node that told us of ``peer`` (it holds a link to it), then
        our direct peers nearest ``peer`` on the ring, one at a time; only those in ``relays``
        if given (the caller knows which ones still hear us). False if none is tried.
        """
        row = self._table.get(peer)
        if row is None or not row.direct:
            return False
        if not self._begin(peer, lambda p: relays is None or p in relays, now):
            return False
        self._stats["relay_fallbacks"] += 1
        return self._fallback_next(peer, now)

    def _begin(self, peer: NodeId, usable: Callable[[NodeId], bool], now: float) -> bool:
        """Start keying ``peer`` through relays: the node that told us of it (it holds a link
        to it), then our usable direct peers nearest it on the ring. False if none is usable
        (no retry_s wait for a later call) or one began within retry_s."""
        mine = [p for p in self._table.direct_peers() if p != peer and usable(p)]
        if not mine:
            return False
        mine.sort(key=lambda p: (ring_distance(p, peer), p))
        news = self._seen.get(peer)
        told = [news[0]] if news is not None and news[0] in mine else []
        return self._fallbacks.begin(peer, [*told, *mine[:ROAM_RELAY_TRIES]], now=now)

    def _fallback_next(self, peer: NodeId, now: float) -> bool:
        while (via := self._fallbacks.next_via(peer)) is not None:
            row = self._table.get(via)
            if row is None or not row.direct:
                continue
            self._stats["relay_fallback_attempts"] += 1
            self._links.connect(RelayPath(via=via, peer=peer), now=now, expected=peer)
            return True
        return False

    def _hold(self, row: Connection, now: float) -> None:
        """Keep our link to a relay node while a relayed link of ours runs through it.

        Why: the relay holds both its links as RELAY, but without this our end of it has no
        reason of its own (the relay is rarely our near or far peer), so the trim policy would
        close it after the grace period and take the relayed link (often a near one) with it.
        The relayed link's own keepalives keep ``last_relay`` fresh.
        """
        self._relayed_now(row, now)
        if ConnectionKind.RELAY not in row.kinds:
            self._add_kind(row.peer, ConnectionKind.RELAY, now)

    def _relayed_now(self, row: Connection, now: float) -> None:
        # last_relay is not part of the row's rev: the stamp tells the views cache it moved.
        row.last_relay = now
        self.stamp += 1

    def on_refused(self, msg: RelayRefused, peer: NodeId, now: float) -> None:
        path = RelayPath(via=peer, peer=msg.target)
        actions = self._attempts.relay_refused(path, now)
        if actions is not None:
            self._connect(actions, now)
            return
        row = self._table.get(msg.target)
        if row is not None and row.direct and self._fallbacks.trying(msg.target):
            # A fallback's relay cannot reach the peer: the next one now.
            self._stats["relay_fallback_refused"] += 1
            self._fallback_next(msg.target, now)
            return
        if row is None or row.path != path:
            self._drops["relay_refused_stale"] += 1
            return
        # Our link to ``target`` runs through ``peer``, which can no longer reach it: the link
        # is dead. Drop it now; the tick repairs (a near peer is asked for again).
        self._stats["relay_refused"] += 1
        self._forget(msg.target, now)
        self._links.close(msg.target, now=now)

    def on_forward(self, msg: RelayForward, peer: NodeId, now: float) -> None:
        self.on_forward_run([msg], peer, now)

    def on_forward_run(self, msgs: list[RelayForward], peer: NodeId, now: float) -> None:
        """RELAY_FORWARD messages from ``peer``, in order: each checked on its own
        (:func:`forward_refusal`), those that pass delivered to their target, each target's
        in one run. One message is the per-packet path (:meth:`on_forward`)."""
        head = RelayDeliver(peer, b"").encode()
        # Each target's deliveries, keyed by the id's int (NodeId's __hash__ is a Python call).
        out: dict[int, tuple[NodeId, list[bytes]]] = {}
        verdicts: dict[int, str | None] = {}
        for msg in msgs:
            target = msg.target
            if not self._may_forward(peer, target, verdicts, now):
                continue
            got = out.get(target.value)
            if got is None:
                out[target.value] = (target, [head + msg.data])
            else:
                got[1].append(head + msg.data)
        for target, batch in out.values():
            sent = self._send_run(target, batch, now, b"", b"")
            self._forwarded(peer, target, batch[:sent], now)

    def on_forward_payloads(self, payloads: list[bytes], peer: NodeId, now: float) -> None:
        """:meth:`on_forward_run` for the RELAY_FORWARD payloads of a run as they came (the
        data plane's relay: :meth:`ipop.core.NodeCore.receive_direct_run`), in order.

        Each message is decoded and checked as there, except the ones right after a message
        that passed whose first :data:`RELAY_HEAD_BYTES` equal its own (the same type and
        target, so ``RelayForward.decode`` would give the same target) with data after them:
        the link layer re-seals those for the target in the same run, the RELAY_DELIVER head
        in place of theirs (``strip``/``head`` of :meth:`ipop.link.fastpath.BatchAead.seal`),
        without a decode, a check or a copy per message in Python. Why: decoding each message
        into a RelayForward and building each RELAY_DELIVER cost the relay more than both of
        its AEAD passes (relay_bench's profile). The same verdicts, counters and datagrams as
        one by one (``tests/unit/test_relay_runs_diff.py``); a run the link layer declines (a
        rekey due) goes one message at a time."""
        head = RelayDeliver(peer, b"").encode()
        verdicts: dict[int, str | None] = {}
        i, n = 0, len(payloads)
        while i < n:
            data = payloads[i]
            try:
                msg = RelayForward.decode(data)
            except RemoteProtocolError as exc:
                self._drops[exc.reason] += 1
                i += 1
                continue
            target = msg.target
            if not self._may_forward(peer, target, verdicts, now):
                i += 1
                continue
            rest = payloads[i:] if i else payloads
            taken = sent = self._send_run(target, rest, now, head, data[:RELAY_HEAD_BYTES])
            if not sent:  # declined: this one on its own (the per-packet path)
                taken, sent = 1, int(self._send(target, head + msg.data, now))
            self._forwarded(peer, target, rest[:sent], now)
            i += taken

    def _may_forward(
        self, peer: NodeId, target: NodeId, verdicts: dict[int, str | None], now: float
    ) -> bool:
        """:func:`forward_refusal` for ``peer`` -> ``target``, a refusal counted (and told)."""
        # Each target's verdict, taken once per run (``verdicts``, by the id's int: NodeId's
        # __hash__ is a Python call): forward_refusal reads only the table, which forwarding
        # does not change, and it cost the relay more than its crypto (relay_bench's
        # profile). Every message still gets the verdict and its counter.
        if (key := target.value) in verdicts:
            refusal = verdicts[key]
        else:
            refusal = verdicts[key] = forward_refusal(self._table, self.local_id, peer, target)
        if refusal is None:
            return True
        self._drops[refusal] += 1
        if refusal in ("relay_no_link", "relay_target_not_direct"):
            # Tell the origin, or its relayed link to ``target`` stays up (keyed, silent)
            # and swallows its traffic until the link layer times it out.
            self._send(peer, RelayRefused(target).encode(), now)
        return False

    def _forwarded(self, peer: NodeId, target: NodeId, sent: list[bytes], now: float) -> None:
        """The bookkeeping of ``sent``, messages from ``peer`` passed on to ``target``."""
        if not sent:
            return
        self._stats["relayed"] += len(sent)
        # Per run, not per packet: sum(map(len)) runs in C (the metrics' relayed bytes; a
        # forward and its delivery have heads of one length).
        self._stats["relayed_bytes"] += sum(map(len, sent))
        table = self._table
        for p in (peer, target):
            row = table.get(p)
            if row is not None:
                self._relayed_now(row, now)
                self._add_kind(p, ConnectionKind.RELAY, now)

    def on_deliver(self, msg: RelayDeliver, peer: NodeId, now: float) -> None:
        for got in self.on_deliver_run([msg], peer, now):
            self._emit(got)

    def on_deliver_run(
        self, msgs: list[RelayDeliver], peer: NodeId, now: float
    ) -> list[RelayDatagram]:
        """RELAY_DELIVER messages from ``peer``, in order: the datagrams of relayed links
        that pass the checks (:meth:`on_deliver` emits them; the data plane's receiver opens
        them in runs, :meth:`ipop.core.NodeCore.receive_direct_run`)."""
        row = self._table.get(peer)
        local = self.local_id
        out = []
        # One RelayPath per origin in a run: the core groups the run's datagrams by path.
        paths: dict[int, RelayPath] = {}
        for msg in msgs:
            origin = msg.origin
            path = paths.get(origin.value)
            if path is None:
                # Checked once per origin and run: an origin with a path passed already.
                if origin in (local, peer) or row is None or not row.direct:
                    self._drops["relay_bad_deliver"] += 1
                    continue
                path = paths[origin.value] = RelayPath(via=peer, peer=origin)
            out.append(RelayDatagram(msg.data, path))
        if out and row is not None:
            self._hold(row, now)
        return out

    def on_deliver_payloads(
        self,
        payloads: list[bytes],
        peer: NodeId,
        now: float,
        take: TakeDelivered,
        heard: Callable[[NodeId, float], None],
    ) -> None:
        """:meth:`on_deliver_run` for the RELAY_DELIVER payloads of a run as they came (the
        data plane's receiver: :meth:`ipop.core.NodeCore.receive_direct_run`), in order.

        Each message is decoded and its origin checked as there; from one that passes,
        ``take(payloads, i, path, head)`` opens the datagrams inside it and the messages right
        after it with the same first :data:`RELAY_HEAD_BYTES` (``head``: the same type and
        origin, so the same path) and returns the index after the last one it took (the link
        layer's run: :meth:`ipop.link.layer.LinkLayer.open_run` with ``head``). Why: as for
        :meth:`on_forward_payloads`, a RelayDeliver and a RelayDatagram per message cost the
        receiver more than its AEAD passes.

        ``heard(peer, now)`` (the node's silent-hop bookkeeping) is called before each
        message, or each run ``take`` opens, as one by one: there the relay is heard before
        the datagrams it delivered are opened (they are events, taken after the message). Why
        it matters: a datagram delivered here may make us answer through ``peer`` (a
        handshake's response); hearing ``peer`` only after the run, that answer found it still
        suspect from before and failed the link over to another relay, and an episode the
        answer began was ended at once."""
        row = self._table.get(peer)
        local = self.local_id
        held = False
        # One RelayPath per origin in a run: the link layer compares paths by identity first.
        paths: dict[int, RelayPath] = {}
        i, n = 0, len(payloads)
        while i < n:
            heard(peer, now)
            data = payloads[i]
            try:
                origin = RelayDeliver.decode(data).origin
            except RemoteProtocolError as exc:
                self._drops[exc.reason] += 1
                i += 1
                continue
            path = paths.get(origin.value)
            if path is None:
                # Checked once per origin and run: an origin with a path passed already.
                if origin in (local, peer) or row is None or not row.direct:
                    self._drops["relay_bad_deliver"] += 1
                    i += 1
                    continue
                path = paths[origin.value] = RelayPath(via=peer, peer=origin)
            if not held and row is not None:  # before the first datagram is opened
                held = True
                self._hold(row, now)
            i = max(i + 1, take(payloads, i, path, data[:RELAY_HEAD_BYTES]))
