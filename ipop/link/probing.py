"""Path MTU probing over sessions (sans-IO): when a search starts, sealing the probes that are
due, answering a peer's probe and taking its ack. The search itself and the message bytes are
:mod:`ipop.link.pmtu`'s (:class:`ipop.link.pmtu.PathMtuProber`); this module wires it to the
sessions of :class:`ipop.link.layer.LinkLayer`.

:class:`PathProbing` owns the prober (the layer's ``pmtu`` is the same object: the data plane
reads its limits for every packet it seals). A search starts when a session comes up or moves
(:meth:`PathProbing.restart`, on the path it moved to; a relayed path is probed end to end,
through the relay) and once data flows to the peer (:meth:`PathProbing.want`). Probes, acks,
echoes and *seen*s share one payload tag (:data:`ipop.link.pmtu.PROBE_TAG`):
:meth:`PathProbing.on_probe` takes the first two and hands the others to
:class:`ipop.link.rebind.Rebinding`. A probe is answered with an ack smaller than any probe, on
the path we send on (invariant 1 of :mod:`ipop.link.layer`); anything else of the kind is a
``bad_probe`` drop.
"""

from __future__ import annotations

from collections.abc import Callable

from ipop.link import echo
from ipop.link.peer import LinkPart, Peer, Shared
from ipop.link.pmtu import PathMtuProber, ack_payload
from ipop.types import NodeId, Path

__all__ = ["PathProbing"]


class PathProbing(LinkPart):
    """The path MTU searches of one node's sessions (see the module docstring)."""

    def __init__(
        self,
        shared: Shared,
        *,
        enabled: bool,
        watch: Callable[[NodeId], None],
        on_echo: Callable[[Peer, bytes, Path, float], None],
    ) -> None:
        super().__init__(shared)
        # Probe each path's MTU (LinkConfig.path_mtu_probes).
        self._enabled = enabled
        # Watch the session of a peer data flows to (LinkLayer.watch); echoes and their acks
        # share the probes' payload tag and go to Rebinding.on_echo.
        self._watch = watch
        self._on_echo = on_echo
        # Path MTU per peer, probed over the session (ipop.link.pmtu).
        self.pmtu = PathMtuProber()

    def restart(self, st: Peer, now: float) -> None:
        """Search the MTU of ``st``'s path anew (it came up or moved); a relayed path is
        probed end to end, through the relay (see :mod:`ipop.link.pmtu`)."""
        if self._enabled:
            self.pmtu.start(st.node_id, st.path, now=now)
        else:
            self.pmtu.forget(st.node_id)
        self._wake()

    def want(self, peer: NodeId, now: float) -> None:
        """Data flows to ``peer``: probe its path's MTU, and watch its session
        (:meth:`ipop.link.layer.LinkLayer.want_path_mtu`)."""
        if peer in self.pmtu.wanted or peer not in self._peers:
            return
        self._watch(peer)
        if self.pmtu.want(peer, now=now):
            self.send_due(now)
            self._wake()

    def send_due(self, now: float) -> None:
        """Seal the probes of the rounds that are due (the timer fired, or a search began)."""
        for peer, path, payload in self.pmtu.due(now):
            st = self._peers.get(peer)
            if st is None or not st.up or st.current is None or st.path != path:
                continue  # the path moved: restart() began the search anew
            self._outbox.append((self._seal(st, st.current, payload, now), path))

    def on_probe(self, st: Peer, payload: bytes, path: Path, now: float) -> None:
        """An authenticated probe (answered with an ack, smaller than any probe, on the path
        we send on) or ack, or an echo or its ack (:mod:`ipop.link.echo`, which came over
        ``path``); anything else of the kind is malformed."""
        kind = payload[1] if len(payload) > 1 else -1
        if kind in (echo.ECHO, echo.ECHO_ACK, echo.SEEN):
            self._on_echo(st, payload, path, now)
        elif kind == 0 and len(payload) >= 6 and st.up and st.current is not None:
            ack = ack_payload(int.from_bytes(payload[2:6], "big"))
            self._outbox.append((self._seal(st, st.current, ack, now), st.path))
        elif kind != 1 or not self.pmtu.on_ack(st.node_id, payload, now=now):
            self.drops["bad_probe"] += 1
        else:
            self._wake()  # the first ack brings the round's end closer
