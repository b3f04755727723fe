"""Interned :class:`~ipop.types.NodeId` values decoded from wire bytes.

Every routed message, neighbour list and DHT answer carries the ids of the same few hundred
peers, and building a NodeId (a validated frozen dataclass) costs far more than a dict lookup;
the decoders here hand out one shared object per id instead. The cache is cleared when full, so
ids a peer makes up cannot grow it without bound.
"""

from __future__ import annotations

from ipop.types import ID_BYTES, NodeId

__all__ = ["node_id_from_bytes", "node_id_from_hex"]

_MAX = 1 << 16
_BY_BYTES: dict[bytes, NodeId] = {}
_BY_HEX: dict[str, NodeId] = {}


def node_id_from_bytes(raw: bytes) -> NodeId:
    """``NodeId.from_bytes(raw)``, shared; raises ValueError like it on a bad length."""
    node = _BY_BYTES.get(raw)
    if node is None:
        if len(raw) != ID_BYTES:
            raise ValueError(f"NodeId needs {ID_BYTES} bytes, got {len(raw)}")
        node = NodeId.from_bytes(bytes(raw))
        if len(_BY_BYTES) >= _MAX:
            _BY_BYTES.clear()
        _BY_BYTES[bytes(raw)] = node
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
