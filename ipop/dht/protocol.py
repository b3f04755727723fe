"""Kademlia's protocol, rebuilt on our wire format, with retransmission and sender checks.

:class:`IpopKademliaProtocol` subclasses ``kademlia.protocol.KademliaProtocol`` (2.2.3, pinned)
so kademlia's routing table and node lookup (``NodeSpiderCrawl``) run unchanged on top of it,
but it replaces rpcudp's datagram handling, which we cannot use as shipped:

* rpcudp raises out of ``datagram_received`` on garbage and trusts the node id a message
  claims. Here every datagram is parsed strictly (:mod:`ipop.dht.wire`); garbage is dropped
  and counted in ``drops`` by reason; a message whose sender id differs from the overlay
  address the link layer authenticated is dropped as ``sender_mismatch``; a response from
  any node but the one asked is dropped as ``response_wrong_peer``.
* rpcudp waits 5 s for one datagram and then evicts the contact. Here a request is
  retransmitted with the same message id (``attempts`` tries), and the replica replays its
  cached answer to a duplicate, so execution is at-most-once. The time between tries is the
  peer's measured retransmission timeout (:class:`RttEstimator`, RFC 6298's srtt + 4 rttvar
  from first-try answers only, between ``DHT_RPC_MIN_RETRY_S`` and ``retry_s``), so one lost
  datagram or one dead peer costs a few round trips, not 4 x 0.4 s. Only a peer silent for
  all tries is evicted, and for ``DHT_SILENT_PEER_S`` afterwards (or until anything arrives
  from it) gets one try per call: a paused or killed node costs each later lookup one timeout.
  A peer that left even one try unanswered is :meth:`~IpopKademliaProtocol.unresponsive`
  until anything arrives from it (at most ``DHT_SILENT_PEER_S``): reads ask the next-nearest
  node instead of waiting for it (:meth:`ipop.dht.read.QuorumReader.get`).
* stock ``welcome_if_new`` pushes every stored key to each new contact, synchronously, and
  ``rpc_store`` accepts anything. Here a new contact is added to the routing table and handed
  to ``on_new_contact`` (the service offers it the records it is now near, store-on-join),
  and stores go through :class:`~ipop.dht.storage.RecordStorage`'s rules.
* background pings of full buckets (kademlia's ``add_contact`` calls ``ensure_future`` on
  ``call_ping``) run as tasks the service tracks, so ``close()`` leaves nothing behind.

Theory of operation: ``_outstanding`` maps a message id to the peer asked and the future its
caller awaits; an entry lives exactly as long as its ``_call``. ``_answers`` holds encoded
answers for ``DHT_RESPONSE_CACHE_S``, oldest first, so a retransmitted request never executes
twice. After :meth:`shutdown`, every pending call resolves to "no answer" and nothing is sent.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from ipop.dht.record import RECORD_REASONS, Record
from ipop.dht.shim import Address, address_for, node_for
from ipop.dht.storage import RecordStorage
from ipop.dht.wire import (
    MAX_FIND_NODES,
    MSG_ID_BYTES,
    Envelope,
    NodesFound,
    NodesRequested,
    PingAnswered,
    PingRequested,
    RecordFound,
    RecordRequested,
    Request,
    Response,
    StoreAnswered,
    StoreRequested,
    decode_message,
    encode_message,
)
from ipop.errors import RemoteProtocolError
from ipop.idcache import node_id_from_bytes
from ipop.timing import (
    DHT_RESPONSE_CACHE_S,
    DHT_RPC_ATTEMPTS,
    DHT_RPC_MIN_RETRY_S,
    DHT_RPC_RETRY_S,
    DHT_SILENT_PEER_S,
)
from ipop.types import NodeId

log = logging.getLogger(__name__)

# Every reason IpopKademliaProtocol.drops counts under: decode_message's (ipop.dht.wire, and the
# records it carries), then the protocol's own.
DROP_REASONS: Final = frozenset(
    {
        "dht_truncated",
        "dht_bad_type",
        "dht_unknown_method",
        "dht_bad_length",
        "dht_bad_flag",
        "dht_bad_outcome",
        # decode_record's, on top of the checks of RECORD_REASONS
        "record_type",
        "record_truncated",
        "record_version",
        "record_flags",
        "record_key_utf8",
        "record_length",
        *RECORD_REASONS,
        "bad_address",  # the source is not an overlay address
        "sender_mismatch",  # the sender id is not the node the link layer authenticated
        "after_shutdown",  # a datagram after the service stopped
        "unsolicited_response",  # a response to no request of ours
        "response_wrong_peer",  # a response from another node than the one asked
        "response_wrong_method",  # a response of another method than the request's
        "fetch_not_member",  # a record asked for by a node that proved no membership: none
    }
)

# (asker, key, proof) -> may the asker see the record at key? (RecordPolicy.may_read, at the
# service's UNIX time.)
ReadCheck = Callable[[NodeId, str, bytes], bool]

# Bounds the replay cache whatever the request rate (each entry is one encoded answer).
MAX_CACHED_ANSWERS = 4096
# Peers with a round-trip estimate, and peers marked silent, at most (least recent evicted):
# both are keyed by authenticated senders, but a big network has many.
MAX_RTT_PEERS = 1024
MAX_SILENT_PEERS = 1024
# Tries of one find-node request (a lookup's) at most.
LOOKUP_ATTEMPTS = 2

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]

_ANSWER_TYPE: dict[type[Request], type[Response]] = {
    PingRequested: PingAnswered,
    NodesRequested: NodesFound,
    RecordRequested: RecordFound,
    StoreRequested: StoreAnswered,
}


# Kademlia contact objects are never modified once made, so one per overlay node is shared by
# every lookup, answer and routing table (a 1,000-node simulation made 2.3 million of them).
# Cleared when full, like ipop.idcache, so made-up ids cannot grow it without bound.
_KAD_NODES: dict[NodeId, Node] = {}
_KAD_NODES_MAX = 1 << 16


def kad_node(node: NodeId) -> Node:
    """Kademlia's contact object for an overlay node (shared, do not modify)."""
    kn = _KAD_NODES.get(node)
    if kn is None:
        if len(_KAD_NODES) >= _KAD_NODES_MAX:
            _KAD_NODES.clear()
        kn = _KAD_NODES[node] = Node(node.to_bytes(), node.hex(), 0)
    return kn


class ExactRoutingTable(RoutingTable):  # type: ignore[misc]  # kademlia is untyped
    """Kademlia's routing table whose ``find_neighbors`` returns the k nearest contacts.

    Why: stock ``find_neighbors`` walks buckets outward from the target's with
    ``TableTraverser``, which stops after one bucket to the left once no bucket remains to the
    right. With the target in the last bucket and that bucket and its left neighbour empty
    (contacts evicted after timeouts, fresh splits), it returned nothing although the node held
    37 contacts: the lookup had nobody to ask, the replica set was the reader alone, and a
    1,000-node simulation's get missed a record whose replicas were all alive. Scanning every
    contact (tens to a few hundred) costs about what the walk did and is exact.
    """

    def find_neighbors(self, node: Node, k: int | None = None, exclude: Node | None = None) -> Any:
        k = k or self.ksize
        target = node.long_id
        skip = node.id
        # A contact's "home" (ip, port) is (its id in hex, 0) here (kad_node), so comparing
        # ids is what same_home_as compares, without a method call per contact.
        other = None if exclude is None else exclude.id
        found = [
            n
            for bucket in self.buckets
            for n in bucket.nodes.values()
            if n.id != skip and n.id != other
        ]
        return heapq.nsmallest(k, found, key=lambda n: n.long_id ^ target)


class RttEstimator:
    """Per-peer retransmission timeouts from measured round trips (RFC 6298), sans-IO.

    A peer without samples gets the estimate of all peers (the first samples of a fresh node
    come from its bootstrap's neighbours, a few hops like everyone else), and before any
    sample ``ceiling``. An answer after retransmissions is sampled as the time since the first
    try (it cannot be matched to its try, Karn): an overestimate, so a timeout that was too
    short grows back.
    """

    def __init__(self, floor: float, ceiling: float, max_peers: int = MAX_RTT_PEERS) -> None:
        self.floor = min(floor, ceiling)
        self.ceiling = ceiling
        self._max_peers = max_peers
        self._peers: OrderedDict[NodeId, tuple[float, float]] = OrderedDict()
        self._all: tuple[float, float] | None = None

    @staticmethod
    def _update(est: tuple[float, float] | None, sample: float) -> tuple[float, float]:
        if est is None:
            return sample, sample / 2
        srtt, rttvar = est
        rttvar = 0.75 * rttvar + 0.25 * abs(srtt - sample)
        return 0.875 * srtt + 0.125 * sample, rttvar

    def sample(self, peer: NodeId, rtt: float) -> None:
        self._all = self._update(self._all, rtt)
        self._peers[peer] = self._update(self._peers.pop(peer, None), rtt)
        while len(self._peers) > self._max_peers:
            self._peers.popitem(last=False)

    def sampled(self, peer: NodeId) -> bool:
        """Whether ``peer``'s timeout comes from its own round trips (not all peers')."""
        return peer in self._peers

    def timeout(self, peer: NodeId) -> float:
        est = self._peers.get(peer) or self._all
        if est is None:
            return self.ceiling
        srtt, rttvar = est
        return min(self.ceiling, max(self.floor, srtt + 4 * rttvar))


def _mark(peers: OrderedDict[NodeId, float], peer: NodeId, until: float) -> None:
    """Note ``peer`` until ``until`` in a bounded table (least recently marked evicted)."""
    peers.pop(peer, None)
    peers[peer] = until
    while len(peers) > MAX_SILENT_PEERS:
        peers.popitem(last=False)


@dataclass(slots=True)
class _Pending:
    """A request in flight: the peer asked, the answer type expected, its future."""

    peer: NodeId
    answer_type: type[Response]
    future: asyncio.Future[Response | None]


class IpopKademliaProtocol(KademliaProtocol):  # type: ignore[misc]  # kademlia is untyped
    """Kademlia RPCs over :class:`~ipop.dht.shim.OverlayShim`, one instance per node."""

    def __init__(
        self,
        local_id: NodeId,
        storage: RecordStorage,
        ksize: int,
        *,
        rng: random.Random,
        clock: Callable[[], float],
        spawn: Spawn,
        retry_s: float = DHT_RPC_RETRY_S,
        min_retry_s: float = DHT_RPC_MIN_RETRY_S,
        attempts: int = DHT_RPC_ATTEMPTS,
        answer_cache_s: float = DHT_RESPONSE_CACHE_S,
        silent_s: float = DHT_SILENT_PEER_S,
        may_read: ReadCheck | None = None,
    ) -> None:
        """``may_read``: who sees a record it asks for, or a refused store's current one
        (None: anyone; :meth:`ipop.dht.policy.RecordPolicy.may_read`)."""
        super().__init__(kad_node(local_id), storage, ksize)
        self._may_read = may_read
        self.router = ExactRoutingTable(self, ksize, self.source_node)
        self.local_id = local_id
        self.record_storage = storage
        self._rng = rng
        self._clock = clock
        self._spawn = spawn
        self.rtt = RttEstimator(min_retry_s, retry_s)
        self._attempts = attempts
        self._silent_s = silent_s
        # Peer -> until when it gets one try per call (it left a whole call unanswered).
        self._silent: OrderedDict[NodeId, float] = OrderedDict()
        # Peer -> until when it counts as unresponsive (it left a try unanswered, and nothing
        # arrived from it since): reads do not wait for it.
        self._missed: OrderedDict[NodeId, float] = OrderedDict()
        self._answer_cache_s = answer_cache_s
        self._outstanding: dict[bytes, _Pending] = {}
        self._answers: OrderedDict[tuple[NodeId, bytes], tuple[float, bytes]] = OrderedDict()
        self._shut = False
        # Called with each contact that entered the routing table (not one parked in a full
        # bucket's replacement list): the service's store-on-join handoff.
        self.on_new_contact: Callable[[NodeId], None] | None = None
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self._handlers: dict[type[Request | Response], Callable[[NodeId, Any], Response]] = {
            PingRequested: self._on_ping,
            NodesRequested: self._on_find_node,
            RecordRequested: self._on_fetch,
            StoreRequested: self._on_store,
        }

    # --- inbound ------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        src = node_for(addr)
        if src is None:
            self.drops["bad_address"] += 1
            return
        try:
            env = decode_message(data)
        except RemoteProtocolError as exc:
            self.drops[exc.reason] += 1
            return
        if env.sender != src:
            # The kademlia id must be the overlay address the link layer authenticated.
            self.drops["sender_mismatch"] += 1
            return
        if self._shut:
            self.drops["after_shutdown"] += 1
            return
        # Anything from a peer marked silent (it resumed, or restarted): full tries again.
        self._silent.pop(src, None)
        self._missed.pop(src, None)
        if env.is_request:
            self._on_request(src, env)
        else:
            self._on_response(src, env)

    def _on_request(self, src: NodeId, env: Envelope) -> None:
        now = self._clock()
        self._expire_answers(now)
        cache_key = (src, env.msg_id)
        cached = self._answers.get(cache_key)
        if cached is not None:
            self.counters["duplicate_requests"] += 1
            self.transport.sendto(cached[1], address_for(src))
            return
        answer = self._handlers[type(env.message)](src, env.message)
        data = encode_message(env.msg_id, self.local_id, answer)
        self._answers[cache_key] = (now + self._answer_cache_s, data)
        while len(self._answers) > MAX_CACHED_ANSWERS:
            self._answers.popitem(last=False)
        self.counters["requests_served"] += 1
        self.transport.sendto(data, address_for(src))
        if src != self.local_id:
            self.welcome_if_new(kad_node(src))

    def _expire_answers(self, now: float) -> None:
        while self._answers:
            key, (deadline, _) = next(iter(self._answers.items()))
            if deadline > now:
                break
            del self._answers[key]

    def _on_response(self, src: NodeId, env: Envelope) -> None:
        pending = self._outstanding.get(env.msg_id)
        if pending is None:
            # Late answers to a retransmitted request land here too: harmless, but counted.
            self.drops["unsolicited_response"] += 1
            return
        if pending.peer != src:
            self.drops["response_wrong_peer"] += 1
            return
        if not isinstance(env.message, pending.answer_type):
            self.drops["response_wrong_method"] += 1
            return
        if not pending.future.done():
            pending.future.set_result(env.message)

    # --- request handlers (the replica side) ---------------------------------------------------

    def _on_ping(self, src: NodeId, msg: PingRequested) -> Response:
        return PingAnswered()

    def _on_find_node(self, src: NodeId, msg: NodesRequested) -> Response:
        k = min(self.router.ksize, MAX_FIND_NODES)
        found = self.router.find_neighbors(Node(msg.target), k, exclude=kad_node(src))
        return NodesFound(tuple(node_id_from_bytes(n.id) for n in found))

    def _on_fetch(self, src: NodeId, msg: RecordRequested) -> Response:
        record = self.record_storage.lookup(msg.key_id)
        if record is not None and not self._readable(src, record.key, msg.proof):
            self.drops["fetch_not_member"] += 1
            record = None  # as if we held none: a stranger learns nothing, not even that
        return RecordFound(record)

    def _on_store(self, src: NodeId, msg: StoreRequested) -> Response:
        offered = msg.record
        outcome = self.record_storage.offer(offered, sender=src)
        current = None
        # The current record tells a creator who holds the key; only a member may see it (the
        # offer's certificate is its proof: a forged offer must not read the key for free).
        if not outcome.accepted and self._readable(src, offered.key, offered.cert):
            current = self.record_storage.lookup(offered.key_id)
        return StoreAnswered(outcome, current)

    def _readable(self, src: NodeId, key: str, proof: bytes) -> bool:
        return src == self.local_id or self._may_read is None or self._may_read(src, key, proof)

    # --- outbound ------------------------------------------------------------------------------

    async def call(
        self, peer: NodeId, request: Request, *, attempts: int | None = None
    ) -> Response | None:
        """Ask ``peer``; retransmit until answered or ``attempts`` tries (default: the
        protocol's) went unanswered."""
        if self._shut or self.transport is None:
            return None
        msg_id = self._rng.getrandbits(8 * MSG_ID_BYTES).to_bytes(MSG_ID_BYTES, "big")
        while msg_id in self._outstanding:
            msg_id = self._rng.getrandbits(8 * MSG_ID_BYTES).to_bytes(MSG_ID_BYTES, "big")
        data = encode_message(msg_id, self.local_id, request)
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        self._outstanding[msg_id] = _Pending(peer, _ANSWER_TYPE[type(request)], future)
        now = self._clock()
        attempts = min(attempts or self._attempts, self._attempts)
        silent_until = self._silent.get(peer)
        if silent_until is not None:
            if silent_until > now:
                attempts = 1
                self.counters["rpc_silent_peer"] += 1
            else:
                del self._silent[peer]
        try:
            for attempt in range(attempts):
                if self._shut:
                    return None
                if attempt:
                    self.counters["retransmissions"] += 1
                self.transport.sendto(data, address_for(peer))
                done, _ = await asyncio.wait({future}, timeout=self.rtt.timeout(peer))
                if done:
                    if future.result() is not None:
                        # After retransmissions, the time since the first try: an upper
                        # bound (the answer may be to any try), so a timeout set too short
                        # grows back instead of retransmitting forever (Karn's concern).
                        self.rtt.sample(peer, self._clock() - now)
                    return future.result()
                self.missed(peer)
            self.counters["rpc_timeouts"] += 1
            if not self._shut:
                _mark(self._silent, peer, self._clock() + self._silent_s)
            return None
        finally:
            del self._outstanding[msg_id]

    def missed(self, peer: NodeId) -> None:
        """``peer`` left a try unanswered for its retransmission timeout (a caller that
        stopped waiting for its answer says so too)."""
        if not self._shut:
            _mark(self._missed, peer, self._clock() + self._silent_s)

    def unresponsive(self, peer: NodeId) -> bool:
        """Did ``peer`` leave a try unanswered, with nothing from it since (a dead or paused
        node, or one lost datagram)? A read that needs an answer soon asks another node."""
        until = self._missed.get(peer)
        return until is not None and until > self._clock()

    def shutdown(self) -> None:
        """Stop sending; every pending call returns "no answer" at once."""
        self._shut = True
        for pending in self._outstanding.values():
            if not pending.future.done():
                pending.future.set_result(None)
        self._answers.clear()

    # --- kademlia's call_* API, used by its NodeSpiderCrawl and RoutingTable ----------------

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        # Fewer tries than a store or fetch: a lookup round waits for its slowest peer, and
        # the nodes a silent one would have named are named by the others it asks as well.
        answer = await self.call(
            node_id_from_bytes(node_to_ask.id),
            NodesRequested(node_to_find.id),
            attempts=LOOKUP_ATTEMPTS,
        )
        result: tuple[bool, Any] = (False, None)
        if isinstance(answer, NodesFound):
            # Contact objects, not kademlia's (id, ip, port) tuples: our crawl
            # (ipop.dht.lookup.LiveNodeCrawl) takes them as they are.
            found = [kad_node(n) for n in answer.nodes if n != self.local_id]
            result = (True, found)
        return self._handle_result(result, node_to_ask)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        # Our reads fetch from every replica (DhtService.get); a value crawl is never used.
        return await self.call_find_node(node_to_ask, node_to_find)

    def call_ping(self, node_to_ask: Node) -> asyncio.Task[tuple[bool, Any]]:
        # Kademlia's RoutingTable passes this straight to asyncio.ensure_future, which returns
        # a task unchanged: returning a task the service tracks keeps close() leak-free.
        return self._spawn(self.ping_node(node_to_ask))

    async def ping_node(self, node_to_ask: Node) -> tuple[bool, Any]:
        answer = await self.call(node_id_from_bytes(node_to_ask.id), PingRequested())
        result = (True, node_to_ask.id) if isinstance(answer, PingAnswered) else (False, None)
        return self._handle_result(result, node_to_ask)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> tuple[bool, Any]:
        raise NotImplementedError("use store_record: stock stores bypass the record rules")

    async def fetch_record(
        self, peer: NodeId, kid: bytes, proof: bytes = b""
    ) -> RecordFound | None:
        """``proof``: our certificate in the key's namespace, if that needs one (wire)."""
        answer = await self.call(peer, RecordRequested(kid, proof))
        self._handle_result((isinstance(answer, RecordFound), None), kad_node(peer))
        return answer if isinstance(answer, RecordFound) else None

    async def store_record(self, peer: NodeId, record: Record) -> StoreAnswered | None:
        answer = await self.call(peer, StoreRequested(record))
        self._handle_result((isinstance(answer, StoreAnswered), None), kad_node(peer))
        return answer if isinstance(answer, StoreAnswered) else None

    def _handle_result(self, result: tuple[bool, Any], node: Node) -> tuple[bool, Any]:
        if self._shut:
            return (False, None)
        if node.id == self.local_id.to_bytes():
            return result
        return self.handle_call_response(result, node)  # type: ignore[no-any-return]

    def welcome_if_new(self, node: Node) -> None:
        # Stock kademlia also pushes every stored key to the newcomer here, synchronously and
        # unchecked: here the service decides what to hand over (``on_new_contact``), in a
        # task of its own, and the newcomer's storage checks each record like any offer.
        if node.id != self.local_id.to_bytes() and self.router.is_new_node(node):
            self.router.add_contact(node)
            if self.on_new_contact is not None and not self.router.is_new_node(node):
                self.on_new_contact(node_id_from_bytes(node.id))

    # Kademlia's stock RPC entry points must never run: they bypass our checks.
    def rpc_store(self, *args: Any) -> None:
        raise NotImplementedError

    def rpc_find_value(self, *args: Any) -> None:
        raise NotImplementedError
