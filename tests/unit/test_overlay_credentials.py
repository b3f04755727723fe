"""Which CA's revocation list goes where when a member's overlay is not its network (issue 17):
the overlay CA's list decides links (and is gossiped), the network CA's refuses DHT records."""

from __future__ import annotations

import asyncio
import os
import random
import time
from ipaddress import IPv4Network
from pathlib import Path
from types import SimpleNamespace

import pytest

from ipop.aio.control import CommandFailed
from ipop.aio.daemon import Daemon, DaemonSettings, load_crl_file
from ipop.bundle import Bundle
from ipop.core import NodeCore
from ipop.errors import ConfigError
from ipop.identity import CrlError, cert_serial
from ipop.revocation import signed_by
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_bundle, make_identity, make_network
from ipop.types import Endpoint

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


def _shared_bundle(*, overlay_only: bool = False) -> Bundle:
    return make_bundle(
        "lab",
        "alice",
        subnet=IPv4Network("100.64.0.0/16"),
        bootstrap=(Endpoint("127.0.0.1", 9),),
        now=time.time() - 60,
        overlay="shared",
        overlay_only=overlay_only,
    )


class _Side:
    """A local side that is no TAP (the daemon's ``local=`` seam): opens nothing."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.fds = os.pipe()

    async def open(self) -> tuple[int, object, str]:
        side = SimpleNamespace(out_fd=self.fds[1], read_into=lambda buf: 0)
        return self.fds[0], side, "none"

    def feed(self, frame: bytes) -> bool:
        return True

    async def stop(self) -> None:
        pass

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def test_the_daemon_links_with_the_overlay_identity_and_signs_with_the_network_one(
    tmp_path: Path,
) -> None:
    bundle = _shared_bundle()
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    d = Daemon(bundle, settings, local=_Side)  # type: ignore[arg-type]
    assert d.network == "lab" and d.subnet == IPv4Network("100.64.0.0/16")

    async def go() -> None:
        await d._start()
        try:
            assert d.node is not None and d.node.dht is not None
            assert d.node.core.identity.cert.network == "shared"
            assert d.node.core.link._identity is d.node.core.identity
            assert d.node.member.cert.network == "lab"
            assert d.node.dht.identity is d.node.member
            assert d.node.dht.policy.trust is d.node.member.trust
        finally:
            await d._shutdown()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_an_overlay_only_daemon_runs_with_no_network_and_stores_any_networks_records(
    tmp_path: Path,
) -> None:
    """ipopd with an overlay-only bundle: it links with its overlay identity, opens no TAP,
    its DHT stores any network's records (no namespace of its own), its status says what it is,
    and what needs a network is refused with words instead of a crash."""
    bundle = _shared_bundle(overlay_only=True)
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    d = Daemon(bundle, settings)
    assert d.membership is None and d.address is None and d.arp is None
    with pytest.raises(CommandFailed, match="overlay-only node serves no network"):
        _ = d.subnet

    async def go() -> None:
        await d._start()
        try:
            assert d.node is not None and d.node.dht is not None and d.dataplane is not None
            assert d.tap is None and d.dataplane.tap_fd is None and d.services is None
            assert d.node.core.identity.cert.network == "shared"
            assert d.node.dht.policy.trust is None  # every namespace is a stranger's
            st = d.status()
            assert st.self_.overlay_only and st.self_.vip is None
            assert '"overlay_only": true' in st.to_json()
        finally:
            await d._shutdown()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_a_members_status_json_has_no_overlay_only_key(tmp_path: Path) -> None:
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    st = Daemon(_shared_bundle(), settings).status()
    assert not st.self_.overlay_only and "overlay_only" not in st.to_json()
