"""A routed message carries its source's certificate only to a destination that may lack it,
and only while the hop's probed path can take the whole: a DHT record (with its owner's
certificate inside) plus ours once went over a 1,124-byte path's size and vanished (DF), so no
node behind it could claim an address."""

from __future__ import annotations

import dataclasses
import random

import pytest

from ipop.link.events import LinkUp
from ipop.overlay.messages import KIND_DHT, Routed, decode_message
from ipop.overlay.node import OverlayConfig, OverlayNode
from ipop.testing.fake_links import RecordingLinks, fake_certificate
from ipop.testing.fake_origin import FakeKeyring, FakeOrigin
from ipop.types import Endpoint, NodeId

ME = NodeId(1 << 150)
HOP = NodeId(3 << 150)
TARGET = NodeId(5 << 150)


class _CertOrigin(FakeOrigin):
    """FakeOrigin's messages with a certificate-sized blob attached, as OriginAuth's are."""

    def routed(self, *args: object, **kw: object) -> Routed:
        msg = super().routed(*args, **kw)  # type: ignore[arg-type]
        return dataclasses.replace(msg, cert=b"C" * 400)


def _sent(links: RecordingLinks) -> tuple[bytes, Routed]:
    ((peer, data),) = links.sent
    links.sent.clear()
    msg = decode_message(data)
    assert peer == HOP and isinstance(msg, Routed)
    return data, msg


def _node() -> tuple[OverlayNode, RecordingLinks]:
    """Us, linked to HOP, our routed messages carrying a certificate."""
    links = RecordingLinks(ME)
    cfg = OverlayConfig(local_endpoints=(Endpoint("198.18.0.2", 5800),), far_links=False)
    origin = _CertOrigin(ME, FakeKeyring())
    node = OverlayNode(ME, links, rng=random.Random(1), config=cfg, bootstrap=[], origin=origin)
    up = LinkUp(HOP, fake_certificate(HOP), Endpoint("203.0.113.9", 5800), None)
    node.on_link_event(up, now=1.0)
    links.sent.clear()
    return node, links


def test_a_routed_message_too_big_for_the_hops_path_leaves_its_certificate_behind() -> None:
    node, links = _node()
    payload = bytes(600)
    # No size probed yet: as before, with the certificate.
    assert node.send_routed(TARGET, KIND_DHT, payload, exact=True, now=2.0)
    data, msg = _sent(links)
    assert msg.cert and msg.payload == payload
    # A path that takes the whole: still with it.
    links.limits[HOP] = len(data)
    assert node.send_routed(TARGET, KIND_DHT, payload, exact=True, now=2.0)
    assert _sent(links)[1].cert
    assert "cert_left_for_mtu" not in node.stats
    # One byte less: the same message without it, within the path's size.
    links.limits[HOP] = len(data) - 1
    assert node.send_routed(TARGET, KIND_DHT, payload, exact=True, now=2.0)
    small, msg = _sent(links)
    assert not msg.cert and msg.payload == payload and len(small) <= len(data) - 1
    assert node.stats["cert_left_for_mtu"] == 1


def test_our_message_to_the_linked_destination_itself_goes_without_our_certificate() -> None:
    """The hop is the destination and linked: its handshake verified our certificate."""
    node, links = _node()
    assert node.send_routed(HOP, KIND_DHT, bytes(600), exact=True, now=2.0)
    _, msg = _sent(links)
    assert not msg.cert and node.stats["cert_left_known"] == 1


def test_our_message_to_the_linked_destination_is_encoded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether the certificate stays behind is known before encoding: the message is encoded
    once, without it (most of our own messages at a cold start go to a linked peer)."""
    node, links = _node()
    encoded: list[bool] = []
    real = Routed.encode

    def counting(self: Routed) -> bytes:
        encoded.append(bool(self.cert))
        return real(self)

    monkeypatch.setattr(Routed, "encode", counting)
    assert node.send_routed(HOP, KIND_DHT, bytes(600), exact=True, now=2.0)
    assert not _sent(links)[1].cert
    assert encoded == [False]
    # Toward another destination through HOP it rides along, still encoded once.
    encoded.clear()
    assert node.send_routed(TARGET, KIND_DHT, bytes(600), exact=True, now=2.0)
    assert _sent(links)[1].cert
    assert encoded == [True]
