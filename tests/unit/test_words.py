"""Words for users: what the daemon logs, and what it keeps quiet."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from ipop.status import PeerStatus, SelfStatus, Status
from ipop.tools import ipopd
from ipop.tools.cli_status import format_status


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    kad = logging.getLogger("kademlia")
    kad_level = kad.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        kad.setLevel(kad_level)


def _kademlia_miss() -> None:
    logging.getLogger("kademlia.protocol").warning(
        "no response from %s, removing from router", "c5a571e06cd6d286:0"
    )


@pytest.mark.usefixtures("restore_logging")
def test_kademlia_misses_are_quiet_unless_debug(capsys: pytest.CaptureFixture[str]) -> None:
    for level in ("info", "warning"):
        ipopd.setup_logging(level)
        _kademlia_miss()
        logging.getLogger("ipopd").warning("event=still_heard")
        err = capsys.readouterr().err
        assert "no response" not in err
        assert "event=still_heard" in err
    ipopd.setup_logging("debug")
    _kademlia_miss()
    err = capsys.readouterr().err
    assert "level=debug logger=kademlia.protocol no response" in err


def _status(*, vip: str | None, routable: bool, peer_vip: str | None) -> Status:
    me = SelfStatus(
        node_id="a1" * 20,
        node_name="alice",
        vip=vip,
        names=[],
        nat=None,
        uptime_s=3.0,
        endpoints=[],
        routable=routable,
    )
    peer = PeerStatus(
        node_id="b2" * 20,
        name="bob",
        vip=peer_vip,
        path="direct",
        endpoint="198.51.100.7:5800",
        rtt_ms=1.5,
        bytes_in=0,
        bytes_out=0,
        kinds=["near"],
    )
    return Status(self_=me, peers=[peer], drops={}, counters={})


def test_status_does_not_say_not_routable_once_the_node_has_its_address() -> None:
    text = "\n".join(format_status(_status(vip="100.64.1.1", routable=False, peer_vip=None)))
    assert "NOT routable" not in text
    assert "joined; links to ring neighbours still forming" in text
    alone = "\n".join(format_status(_status(vip=None, routable=False, peer_vip=None)))
    assert "NOT routable (not joined to the ring yet)" in alone


def test_status_explains_an_empty_vip_column() -> None:
    text = "\n".join(format_status(_status(vip="100.64.1.1", routable=True, peer_vip=None)))
    assert "VIP '-': not known yet" in text
    full = "\n".join(format_status(_status(vip="100.64.1.1", routable=True, peer_vip="100.64.1.2")))
    assert "VIP '-'" not in full
