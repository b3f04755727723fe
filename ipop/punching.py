"""Port guessing wired to the overlay: what our NAT looks like to peers, and the HELLO/GO
exchange (:mod:`ipop.nat.portguess`) carried as KIND_BIRTHDAY messages.

Traffic to a peer over a relayed link or over the ring starts port guessing
(:meth:`Punching.guess`), the only way to a direct path between a symmetric NAT and a
port-restricted one. A HELLO or GO goes direct when a link to the peer is up and routed over
the ring otherwise; one that reaches us (:meth:`Punching.on_birthday`) is answered with the
openers first. Openers and knocks go only to the addresses the overlay knows the peer at
(:meth:`ipop.overlay.node.OverlayNode.peer_hosts`), never to one a birthday message names.

:func:`public_view` is the one reading of what peers' echoes say of our NAT
(:class:`PublicView`), for port guessing and for ``ipop status``.

:class:`ipop.core.NodeCore` owns one :class:`Punching` and the :class:`PortGuessing` machine it
drives (the core's timer, knocks and link events reach that machine directly). Sans-IO:
``now`` comes with every call; openers leave through the ``emit`` the core passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ipop.journal import Journal
from ipop.nat.portguess import PortGuessing
from ipop.overlay.events import Delivered
from ipop.overlay.messages import KIND_BIRTHDAY
from ipop.overlay.node import OverlayNode
from ipop.types import Endpoint, NodeId, Path

__all__ = ["NO_VIEW", "PublicView", "Punching", "public_view"]


@dataclass(frozen=True, slots=True)
class PublicView:
    """What peers' echoes say of our NAT (:meth:`ipop.core.NodeCore.public_view`)."""

    host: str | None  # our public address; None: nobody told us yet
    symmetric: bool  # peers saw different ports: a mapping per destination
    translated: bool  # the port they see differs from our socket's: the NAT translated it


NO_VIEW = PublicView(None, False, False)


def public_view(overlay: OverlayNode) -> PublicView:
    """What peers' echoes say of our NAT (the one reading of them; see PublicView)."""
    seen = overlay.observed_endpoints()
    if not seen:
        return NO_VIEW
    host = seen[0].host
    ports = {e.port for e in seen if e.host == host}
    local = {e.port for e in overlay.local_endpoints}
    return PublicView(host, len(ports) > 1, bool(local) and not ports & local)


class Punching:
    """Port guessing's messages between the overlay and the machine (module docstring)."""

    def __init__(
        self,
        overlay: OverlayNode,
        birthday: PortGuessing,
        journal: Journal,
        emit: Callable[[Iterable[tuple[bytes, Path]]], None],
    ) -> None:
        self._overlay = overlay
        self._birthday = birthday
        self._journal = journal
        self._emit = emit  # underlay datagrams (openers) to the core's output, in order

    def guess(self, peer: NodeId, now: float) -> None:
        """Traffic to ``peer`` is relayed or routed: say HELLO, unless the machine says not."""
        view = public_view(self._overlay)
        if view.host is None:
            return
        hello = self._birthday.hello(
            peer,
            symmetric=view.symmetric,
            translated=view.translated,
            endpoints=self.advertised(),
            now=now,
        )
        if hello is not None:
            self._journal.punch_started(peer, now=now)
            self._send(peer, hello, now)

    def on_birthday(self, ev: Delivered, now: float) -> None:
        """A KIND_BIRTHDAY message reached us: openers out first, then the answer if any."""
        view = public_view(self._overlay)
        answer = self._birthday.receive(
            ev.src,
            ev.payload,
            symmetric=view.symmetric,
            translated=view.translated,
            public_host=view.host,
            endpoints=self.advertised(),
            now=now,
            seen_hosts=self._overlay.peer_hosts(ev.src),
        )
        # Openers first: the GO must not overtake them, or the peer knocks on closed ports.
        self._emit(self._birthday.datagrams_to_send())
        if answer is not None:
            self._send(ev.src, answer, now)

    def advertised(self) -> tuple[Endpoint, ...]:
        """The endpoints a HELLO or GO names for us, public ones first."""
        # Public ones first: a HELLO carries only a few, and openers to a LAN address of a
        # peer behind another NAT go nowhere.
        observed = self._overlay.observed_endpoints()
        return tuple(dict.fromkeys([*observed, *self._overlay.endpoints()]))

    def _send(self, peer: NodeId, payload: bytes, now: float) -> None:
        if not self._overlay.send_direct(peer, KIND_BIRTHDAY, payload, now=now):
            self._overlay.send_routed(peer, KIND_BIRTHDAY, payload, exact=True, now=now)
