"""The boundary between the DHT and the overlay: kademlia speaks through our overlay links.

The DHT owns this interface (DESIGN.md §12.8): :class:`OverlayPort` is everything it needs
from the overlay, and :class:`OverlayShim` is the asyncio ``DatagramTransport``-shaped object
handed to kademlia's protocol. Kademlia thinks in ``(ip, port)`` addresses; here an address is
``(node_id_hex, 0)``, so every DHT message rides the overlay's authenticated, NAT-traversing
links and kademlia's "address" of a contact *is* its overlay address.

Protocol flow::

    DhtService ── protocol.transport.sendto(data, (hex, 0)) ──► OverlayShim.sendto
        ──► OverlayPort.send_dht(NodeId(hex), data)        (routed by the overlay, may be lost)
    overlay receives a DHT payload over an authenticated link from ``src``
        ──► OverlayShim.deliver(src, payload) ──► protocol.datagram_received(payload, (hex, 0))

``src`` is the overlay address authenticated by the link layer; the protocol drops (and
counts) any message whose kademlia sender id differs from it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Final, Protocol, runtime_checkable

from ipop.idcache import node_id_from_hex
from ipop.types import ID_BYTES, NodeId

# Kademlia's contact address for an overlay node: (40 hex digits, port 0).
Address = tuple[str, int]

# Every reason OverlayShim.drops counts under.
DROP_REASONS: Final = frozenset(
    {
        "send_after_close",  # kademlia sent after the transport closed
        "send_bad_address",  # to an address that is not an overlay node's
        "deliver_while_closed",  # a datagram arrived after close
    }
)


class OverlayPort(Protocol):
    """What the DHT needs from the overlay."""

    @property
    def local_id(self) -> NodeId: ...

    def send_dht(self, dst: NodeId, payload: bytes) -> None:
        """Route ``payload`` to node ``dst`` exactly; it may be lost (the DHT retransmits)."""
        ...


@runtime_checkable
class LinkedPeers(Protocol):
    """Optional part of an :class:`OverlayPort`: the peers the overlay holds links to."""

    def linked_peers(self) -> list[NodeId]: ...


def address_for(node: NodeId) -> Address:
    return (node.hex(), 0)


def node_for(address: Address) -> NodeId | None:
    """The NodeId behind a kademlia address, or None if it is not one of ours."""
    host, port = address
    if port != 0 or not isinstance(host, str) or len(host) != 2 * ID_BYTES:
        return None
    try:
        return node_id_from_hex(host)
    except ValueError:
        return None


class OverlayShim(asyncio.DatagramTransport):
    """A datagram transport whose peers are overlay nodes instead of UDP endpoints."""

    def __init__(self, port: OverlayPort) -> None:
        super().__init__()
        self._port = port
        self._protocol: asyncio.DatagramProtocol | None = None
        self._closing = False
        self.drops: Counter[str] = Counter()
        self.sent = 0
        self.received = 0

    def connect(self, protocol: asyncio.DatagramProtocol) -> None:
        """Attach kademlia's protocol (what ``create_datagram_endpoint`` would do)."""
        self._protocol = protocol
        protocol.connection_made(self)

    # --- outbound (kademlia → overlay) ----------------------------------------------------

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            self.drops["send_after_close"] += 1
            return
        dst = node_for(addr) if isinstance(addr, tuple) and len(addr) == 2 else None
        if dst is None:
            self.drops["send_bad_address"] += 1
            return
        self.sent += 1
        self._port.send_dht(dst, bytes(data))

    # --- inbound (overlay → kademlia) -----------------------------------------------------

    def deliver(self, src: NodeId, payload: bytes) -> None:
        """Called by the overlay for each DHT payload that arrived from authenticated ``src``."""
        if self._closing or self._protocol is None:
            self.drops["deliver_while_closed"] += 1
            return
        self.received += 1
        self._protocol.datagram_received(payload, address_for(src))

    # --- transport housekeeping -------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return address_for(self._port.local_id)
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()
