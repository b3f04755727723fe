"""Interned :class:`~ipop.types.NodeId` values decoded from wire bytes.

Every routed message, neighbour list and DHT answer carries the ids of the same few hundred
peers, and building a NodeId (a validated frozen dataclass) costs far more than a dict lookup;
the decoders here hand out one shared object per id instead. The cache is cleared when full, so
ids a peer makes up cannot grow it without bound.
"""

from __future__ import annotations

from ipop.types import NodeId

__all__ = ["node_id_from_bytes", "node_id_from_hex"]

_MAX = 1 << 16
_BY_BYTES: dict[bytes, NodeId] = {}
_BY_HEX: dict[str, NodeId] = {}


def node_id_from_bytes(raw: bytes | bytearray | memoryview) -> NodeId:
    """``NodeId.from_bytes(raw)``, shared; raises ValueError like it on a bad length."""
    key = raw if type(raw) is bytes else bytes(raw)
    node = _BY_BYTES.get(key)
    if node is None:
        node = NodeId.from_bytes(key)
        if len(_BY_BYTES) >= _MAX:
            _BY_BYTES.clear()
        _BY_BYTES[key] = node
    return node


def node_id_from_hex(text: str) -> NodeId:
    """``NodeId.from_hex(text)``, shared; raises ValueError like it on bad text."""
    node = _BY_HEX.get(text)
    if node is None:
        node = NodeId.from_hex(text)
        if len(_BY_HEX) >= _MAX:
            _BY_HEX.clear()
        _BY_HEX[text] = node
    return node
