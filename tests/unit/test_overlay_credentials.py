"""Which CA's revocation list goes where when a member's overlay is not its network (issue 17):
the overlay CA's list decides links (and is gossiped), the network CA's refuses DHT records."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ipop.aio.daemon import load_crl_file
from ipop.core import NodeCore
from ipop.errors import ConfigError
from ipop.identity import CrlError, cert_serial
from ipop.revocation import signed_by
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network

NOW = SIM_EPOCH


def test_a_one_network_core_has_one_identity() -> None:
    ca = make_network("lab", now=NOW - 60)
    ident = make_identity(ca, "alice", now=NOW - 60)
    core = NodeCore(ident, rng=random.Random(1), bootstrap=[])
    assert core.member is core.identity is ident


def test_crls_go_to_the_trust_of_the_ca_that_signed_them(tmp_path: Path) -> None:
    overlay_ca = make_network("shared", now=NOW - 60)
    network_ca = make_network("lab", now=NOW - 60)
    member = make_identity(network_ca, "alice", now=NOW - 60)
    overlay = member.certified_by(overlay_ca, "alice", now=NOW - 60)
    bob = make_identity(network_ca, "bob", now=NOW - 60)
    core = NodeCore(overlay, rng=random.Random(1), bootstrap=[], member=member)

    network_crl = network_ca.make_crl([(cert_serial(bob.cert), NOW - 1)], number=3, now=NOW)
    assert signed_by(member.trust, network_crl) and not signed_by(overlay.trust, network_crl)
    assert core.apply_crl(network_crl, now=NOW).number == 3
    assert member.trust.crl_number == 3 and member.trust.is_revoked(bob.cert)
    assert overlay.trust.crl_number == 0  # the overlay's list (links, gossip) is untouched
    assert core.stats["crl_installed"] == 0  # nothing to gossip, no links to cut

    overlay_crl = overlay_ca.make_crl([], number=5, now=NOW)
    assert core.apply_crl(overlay_crl, now=NOW).number == 5
    assert overlay.trust.crl_number == 5 and member.trust.crl_number == 3
    assert core.stats["crl_installed"] == 1
    assert core.snapshot().crl_number == 5  # status shows the links' list

    stranger = make_network("lab", now=NOW - 60).make_crl([], number=9, now=NOW)
    with pytest.raises(CrlError):
        core.apply_crl(stranger, now=NOW)

    # [identity] crl at start: the same choice.
    path = tmp_path / "lab.crl.pem"
    path.write_bytes(network_ca.make_crl([], number=4, now=NOW))
    load_crl_file(overlay.trust, path, now=NOW, network=member.trust)
    assert member.trust.crl_number == 4 and overlay.trust.crl_number == 5
    path.write_bytes(stranger)
    with pytest.raises(ConfigError) as exc:
        load_crl_file(overlay.trust, path, now=NOW, network=member.trust)
    assert exc.value.key == "identity.crl"
