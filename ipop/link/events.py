"""The link layer's events and status snapshot (what :class:`ipop.link.layer.LinkLayer`
reports, as frozen facts).

Owns: the events :meth:`ipop.link.layer.LinkLayer.next_event` yields (:data:`LinkEvent`),
the :class:`LinkInfo` snapshot of one up session, and :func:`link_message`, the cheap way the
receive hot path builds a :class:`LinkMessage`. The overlay, the node core, the simulator and
the fakes of :mod:`ipop.testing` import them from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ipop.identity import NodeCertificate
from ipop.types import Endpoint, NodeId, Path

__all__ = [
    "HandshakeFailed",
    "LinkDown",
    "LinkEvent",
    "LinkInfo",
    "LinkMessage",
    "LinkPathChanged",
    "LinkPathDisplaced",
    "LinkPathSilent",
    "LinkUp",
    "ObservedEndpoint",
    "link_message",
]


@dataclass(frozen=True, slots=True)
class LinkUp:
    """A session with ``peer`` (whose certificate is ``cert``) is established over ``path``.

    ``observed`` is the endpoint the peer saw our handshake come from (initiator side of a
    direct path only; None otherwise). ``rtt_s``: the handshake's round trip (None: unknown),
    the overlay's first estimate of the link's (``ipop.overlay.suspect``).
    """

    peer: NodeId
    cert: NodeCertificate
    path: Path
    observed: Endpoint | None
    rtt_s: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The session with ``peer`` is gone ("timeout", "expired", "closed", "revoked", "stale":
    see :meth:`ipop.link.layer.LinkLayer.peer_unlinked`)."""

    peer: NodeId
    reason: str


@dataclass(frozen=True, slots=True)
class LinkMessage:
    """An authenticated, decrypted, non-empty payload from ``peer``, received over ``path``."""

    peer: NodeId
    payload: bytes
    path: Path


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """Our handshake toward ``path`` got no acceptable answer; ``reason`` is the last refusal."""

    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class ObservedEndpoint:
    """Peer ``by`` saw our datagrams come from ``endpoint`` (changed since LinkUp said, or
    first heard from it through an echo: see :mod:`ipop.link.echo`).

    ``rebound``: we had no earlier word from ``by``, but one of our busy links has just gone
    silent and ``endpoint`` is where no other peer sees us: our NAT has most likely rebound.
    """

    endpoint: Endpoint
    by: NodeId
    rebound: bool = False


@dataclass(frozen=True, slots=True)
class LinkPathChanged:
    """The up session with ``peer`` now runs over ``path`` ("roamed" or "handshake")."""

    peer: NodeId
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class LinkPathDisplaced:
    """Another peer's authenticated traffic now comes from ``path``, the direct path our up
    session with ``peer`` seals to: a NAT in front of both (two hosts behind one NAT, each on
    the same port) gave that mapping toward us to the other one, so what we send ``peer``
    there reaches the wrong host. The session's hold on the path is dropped
    (:func:`ipop.link.paths.displaced`); the overlay keys ``peer`` through a relay meanwhile."""

    peer: NodeId
    path: Endpoint


@dataclass(frozen=True, slots=True)
class LinkPathSilent:
    """Two echoes in a row over the up session with ``peer`` on the direct ``path`` went
    unanswered while nothing else came back: the path delivers nothing now (a NAT or a
    firewall on the way lost or dropped the flow). Whether our own NAT rebound is the
    witnesses' to say (ObservedEndpoint); if not, the node keys ``peer`` through a relay
    (:class:`ipop.fallback.SilentPaths`)."""

    peer: NodeId
    path: Path


# A frozen slots dataclass's __init__ sets each field through object.__setattr__: 1.8 µs for
# LinkMessage here, more than the AEAD itself. The receive hot path fills the slots through
# their member descriptors instead (0.7 µs); the result is an ordinary, equal, frozen instance.
_new = object.__new__


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    setter: Callable[[object, object], None] = cls.__dict__[name].__set__
    return setter


_set_msg_peer = _slot_setter(LinkMessage, "peer")
_set_msg_payload = _slot_setter(LinkMessage, "payload")
_set_msg_path = _slot_setter(LinkMessage, "path")


def link_message(peer: NodeId, payload: bytes, path: Path) -> LinkMessage:
    """``LinkMessage(peer, payload, path)`` without the frozen ``__init__`` (the receive path's
    way: see above)."""
    msg: LinkMessage = _new(LinkMessage)
    _set_msg_peer(msg, peer)
    _set_msg_payload(msg, payload)
    _set_msg_path(msg, path)
    return msg


LinkEvent = (
    LinkUp
    | LinkDown
    | LinkMessage
    | HandshakeFailed
    | ObservedEndpoint
    | LinkPathChanged
    | LinkPathDisplaced
    | LinkPathSilent
)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """A snapshot of one up session (``ipop status`` material)."""

    peer: NodeId
    name: str
    hostname: str | None
    path: Path
    established_at: float
    last_rx: float
    last_tx: float
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    cipher: str
    observed: Endpoint | None
    keys_established_at: float
    rekeys: int
    rtt_s: float | None = None  # the last handshake's round trip (either side); None: none yet
