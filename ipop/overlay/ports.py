"""What the overlay node needs from beside it (the consumer owns the interfaces): the link
layer (:class:`Links`) and end-to-end origin authentication of routed messages
(:class:`Origins`)."""

from __future__ import annotations

from typing import Protocol

from ipop.identity import NodeCertificate
from ipop.overlay.messages import Routed
from ipop.types import NodeId, Path

__all__ = ["Links", "Origins"]


class Links(Protocol):
    """What the overlay needs from the link layer (the consumer owns the interface)."""

    local_id: NodeId

    def connect(
        self,
        path: Path,
        *,
        now: float,
        expected: NodeId | None = None,
        retransmit: bool = True,
        timeout_s: float | None = None,
    ) -> None: ...

    def send(self, peer: NodeId, payload: bytes, *, now: float) -> None: ...

    def send_run(
        self,
        peer: NodeId,
        payloads: list[bytes],
        *,
        now: float,
        head: bytes = b"",
        strip: bytes = b"",
    ) -> int:
        """:meth:`send` for ``head`` + each of ``payloads`` in one go: how many were sent, 0
        (nothing sent) when the caller must send them one by one (a link layer without runs
        always says 0). With ``strip``, the run takes payloads while they start with it and
        have more after it, and sends ``head`` + what follows it."""
        ...

    def close(self, peer: NodeId, *, now: float) -> None: ...

    def is_up(self, peer: NodeId) -> bool: ...

    def payload_limit(self, peer: NodeId) -> int | None:
        """The largest payload one datagram to ``peer`` carries on its probed path (None:
        not probed yet)."""
        ...

    def peer_moved(self, peer: NodeId, *, now: float) -> None: ...


class Origins(Protocol):
    """End-to-end origin authentication of routed messages.

    :class:`ipop.overlay.origin.OriginAuth`; in worlds of made-up ids,
    :class:`ipop.testing.fake_origin.FakeOrigin`.
    """

    local_id: NodeId

    def routed(
        self,
        flags: int,
        ttl: int,
        kind: int,
        dst: NodeId,
        via: NodeId | None,
        payload: bytes,
        *,
        now: float,
        cert_budget: int | None = None,
    ) -> Routed: ...

    def learn(self, cert: NodeCertificate) -> None: ...

    def check(self, msg: Routed, *, now: float) -> str | None: ...

    def open(self, msg: Routed, *, now: float) -> Routed | str:
        """``msg`` as its source wrote it (opened if sealed) if it checks and may be
        delivered in the form it came in; else the reason it may not."""
        ...
