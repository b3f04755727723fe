"""Words for users: what the daemon logs, and what it keeps quiet."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tools import ipopd


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
