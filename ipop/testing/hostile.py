"""Hostile members for attack tests: a modified build of a node that holds one valid certificate.

:class:`Eclipser` is the insider of issue 13, finding 2. It makes up ids right next to a DHT
key, plants them in honest nodes' routing state with routed messages whose ``src`` it forges,
and answers every DHT request that reaches it for those ids with a record of its own, so that a
reader who believed the made-up ids would find the attacker's record on a majority of "replicas".
It sends only through links it really holds (its own certificate gets it on the ring) and never
touches another host's sockets: everything an insider's modified ``ipopd`` could do.
"""

from __future__ import annotations

import dataclasses
import os

from ipop.aio.stack import Node
from ipop.dht.record import Record, StoreOutcome
from ipop.dht.wire import (
    MSG_ID_BYTES,
    NodesFound,
    NodesRequested,
    PingAnswered,
    PingRequested,
    RecordFound,
    RecordRequested,
    StoreAnswered,
    StoreRequested,
    decode_message,
    encode_message,
)
from ipop.errors import RemoteProtocolError
from ipop.overlay.messages import FLAG_EXACT, KIND_DHT, Routed
from ipop.types import RING, NodeId

__all__ = ["Eclipser", "forge_routed", "send_routed_raw"]


class Eclipser:
    """An insider trying to become the replica set of ``key_id`` (see the module docstring)."""

    def __init__(self, node: Node, key_id: bytes, record: Record, *, count: int = 8) -> None:
        self.node = node
        self.record = record
        key = int.from_bytes(key_id, "big")
        # The ids nearest the key on the ring: every lookup for it converges on them.
        self.fake_ids = [NodeId((key + d) % RING) for d in range(1, count + 1)]
        self._fakes = frozenset(self.fake_ids)
        self.answered = 0
        overlay = node.core.overlay
        honest = overlay._message_handlers[Routed]

        def intercept(msg: object, peer: NodeId, now: float) -> None:
            assert isinstance(msg, Routed)
            if msg.dst in self._fakes and msg.kind == KIND_DHT:
                self._answer(msg, now)
                return
            honest(msg, peer, now)

        overlay._message_handlers[Routed] = intercept

    def plant(self, targets: list[NodeId]) -> int:
        """Send every target a DHT ping from every made-up id; returns messages sent."""
        sent = 0
        for target in targets:
            for fake in self.fake_ids:
                env = encode_message(os.urandom(MSG_ID_BYTES), fake, PingRequested())
                sent += forge_routed(self.node, fake, target, KIND_DHT, env)
        return sent

    def _answer(self, msg: Routed, now: float) -> None:
        try:
            env = decode_message(msg.payload)
        except RemoteProtocolError:
            return
        req = env.message
        if isinstance(req, PingRequested):
            answer: object = PingAnswered()
        elif isinstance(req, NodesRequested):
            answer = NodesFound(tuple(self.fake_ids))
        elif isinstance(req, RecordRequested):
            answer = RecordFound(self.record)
        elif isinstance(req, StoreRequested):
            answer = StoreAnswered(StoreOutcome.STORED, None)
        else:
            return
        self.answered += 1
        data = encode_message(env.msg_id, msg.dst, answer)  # type: ignore[arg-type]
        forge_routed(self.node, msg.dst, msg.src, KIND_DHT, data)


def send_routed_raw(node: Node, dst: NodeId, msg: Routed) -> int:
    """Hand an encoded routed message to our linked peer nearest ``dst`` (``dst`` if linked)."""
    core = node.core
    now = node.clock()
    peers = core.overlay.connected_peers()
    if not peers:
        return 0
    hop = dst if dst in peers else min(peers, key=lambda p: abs(p.value - dst.value))
    core.link.send(hop, msg.encode(), now=now)
    core.flush(now=now)
    if node.driver is not None:
        node.driver.pump()
    return 1


def forge_routed(node: Node, src: NodeId, dst: NodeId, kind: int, payload: bytes) -> int:
    """A routed message in ``src``'s name (authenticated by us, not by ``src``), sent on."""
    own = node.core.overlay.origin.routed(
        FLAG_EXACT, 64, kind, dst, None, payload, now=node.clock()
    )
    # hops=1: the first hop checks src only on a message its sender originated.
    return send_routed_raw(node, dst, dataclasses.replace(own, src=src, hops=1, cert=b""))
