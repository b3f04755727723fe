"""DHT RPC messages as they travel inside overlay DHT payloads (pure codec).

Byte layout of every message::

     0        1                 9        10                        30
    +--------+-----------------+--------+-------------------------+---------------+
    | kind   | msg id (8)      | method | sender NodeId (20)      | body ...      |
    +--------+-----------------+--------+-------------------------+---------------+
    kind:   0x00 request, 0x01 response
    method: 0x01 PING, 0x02 FIND_NODE, 0x03 FETCH, 0x04 STORE

    bodies                request                     response
    PING                  (empty)                     (empty)
    FIND_NODE             target id (20)              count (u8) + count x NodeId (20)
    FETCH                 key id (20) + proof (rest)  has (u8: 0/1) + record (rest, if has)
    STORE                 record (rest)               outcome (u8) + has (u8) + record (rest)

Records are encoded by :mod:`ipop.dht.record`. A STORE response carries the replica's current
record when it refused the offer, so a creator learns who holds the key. A FETCH's proof is the
asker's certificate (DER) in the namespace of the key it asks for, or nothing: on a shared
overlay a replica shows a network's records to its members only (:mod:`ipop.dht.policy`).

Protocol flow::

    client                                  replica
      REQUEST(msg id m) ───────────────────►  handle once, cache the answer under (src, m)
      (no answer after DHT_RPC_RETRY_S)
      REQUEST(msg id m) again ─────────────►  replay the cached answer (at-most-once)
                       ◄───────────────────── RESPONSE(msg id m)
    A response must come from the node the request went to; the sender id in every message must
    equal the overlay address the link layer authenticated, or the message is dropped.

Parsing is strict: every malformed input raises :class:`RemoteProtocolError` (never anything
else), which the receiving protocol counts under its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipop.dht.record import Record, StoreOutcome, decode_record
from ipop.errors import RemoteProtocolError
from ipop.idcache import node_id_from_bytes
from ipop.types import ID_BYTES, NodeId

KIND_REQUEST = 0x00
KIND_RESPONSE = 0x01
MSG_ID_BYTES = 8
HEADER_BYTES = 1 + MSG_ID_BYTES + 1 + ID_BYTES
MAX_FIND_NODES = 40
# A FETCH's proof at most: one certificate (ours are ~0.5 KB; X.509 allows far more, we don't).
MAX_PROOF_BYTES = 2048

M_PING = 0x01
M_FIND_NODE = 0x02
M_FETCH = 0x03
M_STORE = 0x04


@dataclass(frozen=True, slots=True)
class PingRequested:
    """PING: is the node there?"""


@dataclass(frozen=True, slots=True)
class NodesRequested:
    """FIND_NODE: the nodes closest to ``target`` the node knows."""

    target: bytes


@dataclass(frozen=True, slots=True)
class RecordRequested:
    """FETCH: the record the node holds at ``key_id``; ``proof``: the asker's certificate in
    the key's namespace (empty: none, e.g. a key of the overlay's own network)."""

    key_id: bytes
    proof: bytes = b""


@dataclass(frozen=True, slots=True)
class StoreRequested:
    """STORE: keep ``record`` (the node's policy decides)."""

    record: Record


@dataclass(frozen=True, slots=True)
class PingAnswered:
    """PING's answer."""


@dataclass(frozen=True, slots=True)
class NodesFound:
    """FIND_NODE's answer: the closest nodes the node knows."""

    nodes: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class RecordFound:
    """FETCH's answer: the record held, or None."""

    record: Record | None


@dataclass(frozen=True, slots=True)
class StoreAnswered:
    """STORE's answer: what the node did, and the record it holds now."""

    outcome: StoreOutcome
    current: Record | None


Request = PingRequested | NodesRequested | RecordRequested | StoreRequested
Response = PingAnswered | NodesFound | RecordFound | StoreAnswered
Message = Request | Response


@dataclass(frozen=True, slots=True)
class Envelope:
    """A DHT message with its id and its sender (see the module docstring)."""

    msg_id: bytes
    sender: NodeId
    message: Message

    @property
    def is_request(self) -> bool:
        return isinstance(self.message, Request)


def _record_bytes(record: Record | None) -> bytes:
    return b"\x00" if record is None else b"\x01" + record.encode()


def _body(message: Message) -> tuple[int, int, bytes]:
    match message:
        case PingRequested():
            return KIND_REQUEST, M_PING, b""
        case NodesRequested(target):
            return KIND_REQUEST, M_FIND_NODE, target
        case RecordRequested(kid, proof):
            return KIND_REQUEST, M_FETCH, kid + proof
        case StoreRequested(record):
            return KIND_REQUEST, M_STORE, record.encode()
        case PingAnswered():
            return KIND_RESPONSE, M_PING, b""
        case NodesFound(nodes):
            return (
                KIND_RESPONSE,
                M_FIND_NODE,
                bytes((len(nodes),)) + b"".join(n.to_bytes() for n in nodes),
            )
        case RecordFound(record):
            return KIND_RESPONSE, M_FETCH, _record_bytes(record)
        case StoreAnswered(outcome, current):
            return KIND_RESPONSE, M_STORE, bytes((outcome,)) + _record_bytes(current)
    raise AssertionError(message)  # pragma: no cover - the match is exhaustive


def encode_message(msg_id: bytes, sender: NodeId, message: Message) -> bytes:
    kind, method, body = _body(message)
    return bytes((kind,)) + msg_id + bytes((method,)) + sender.to_bytes() + body


def _id20(body: bytes, what: str) -> bytes:
    if len(body) != ID_BYTES:
        raise RemoteProtocolError("dht_bad_length", f"{what}: {len(body)}")
    return body


def _opt_record(body: bytes) -> Record | None:
    if not body:
        raise RemoteProtocolError("dht_bad_length", "missing record flag")
    if body[0] == 0:
        if len(body) != 1:
            raise RemoteProtocolError("dht_bad_length", "bytes after empty record")
        return None
    if body[0] != 1:
        raise RemoteProtocolError("dht_bad_flag", str(body[0]))
    return decode_record(body[1:])


def _nodes(body: bytes) -> NodesFound:
    if not body or body[0] > MAX_FIND_NODES or len(body) != 1 + body[0] * ID_BYTES:
        raise RemoteProtocolError("dht_bad_length", "node list")
    return NodesFound(
        tuple(
            node_id_from_bytes(body[1 + i * ID_BYTES : 1 + (i + 1) * ID_BYTES])
            for i in range(body[0])
        )
    )


def _store_answer(body: bytes) -> StoreAnswered:
    if not body:
        raise RemoteProtocolError("dht_bad_length", "store answer")
    try:
        outcome = StoreOutcome(body[0])
    except ValueError:
        raise RemoteProtocolError("dht_bad_outcome", str(body[0])) from None
    return StoreAnswered(outcome, _opt_record(body[1:]))


def _fetch(body: bytes) -> RecordRequested:
    if len(body) < ID_BYTES or len(body) > ID_BYTES + MAX_PROOF_BYTES:
        raise RemoteProtocolError("dht_bad_length", f"fetch: {len(body)}")
    return RecordRequested(body[:ID_BYTES], body[ID_BYTES:])


def _empty(body: bytes, answer: Message) -> Message:
    if body:
        raise RemoteProtocolError("dht_bad_length", "ping body")
    return answer


_DECODERS = {
    (KIND_REQUEST, M_PING): lambda b: _empty(b, PingRequested()),
    (KIND_REQUEST, M_FIND_NODE): lambda b: NodesRequested(_id20(b, "target")),
    (KIND_REQUEST, M_FETCH): _fetch,
    (KIND_REQUEST, M_STORE): lambda b: StoreRequested(decode_record(b)),
    (KIND_RESPONSE, M_PING): lambda b: _empty(b, PingAnswered()),
    (KIND_RESPONSE, M_FIND_NODE): _nodes,
    (KIND_RESPONSE, M_FETCH): lambda b: RecordFound(_opt_record(b)),
    (KIND_RESPONSE, M_STORE): _store_answer,
}


def decode_message(data: bytes) -> Envelope:
    """Strictly parse one DHT message; garbage raises :class:`RemoteProtocolError` only."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RemoteProtocolError("dht_bad_type", type(data).__name__)
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise RemoteProtocolError("dht_truncated", str(len(data)))
    decoder = _DECODERS.get((data[0], data[1 + MSG_ID_BYTES]))
    if decoder is None:
        raise RemoteProtocolError("dht_unknown_method", data[: 2 + MSG_ID_BYTES].hex())
    msg_id = data[1 : 1 + MSG_ID_BYTES]
    sender = node_id_from_bytes(data[2 + MSG_ID_BYTES : HEADER_BYTES])
    return Envelope(msg_id, sender, decoder(data[HEADER_BYTES:]))
