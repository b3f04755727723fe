"""Operators hand CRLs to nodes: `[identity] crl` at start and `ipop crl push` at run time."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipop.aio.control import CommandFailed, ControlServer
from ipop.aio.daemon import load_crl_file
from ipop.config import parse_config
from ipop.errors import ConfigError
from ipop.identity import CaTrust, CrlError, cert_serial
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.tools.cli import main

NOW = SIM_EPOCH


class TrustHandler:
    """The daemon's crl_push, over one CaTrust (the real one goes through Node.apply_crl)."""

    def __init__(self, trust: CaTrust) -> None:
        self.trust = trust

    async def crl_push(self, crl: str) -> int:
        try:
            return self.trust.apply_crl(crl.encode(), now=NOW).number
        except CrlError as exc:
            raise CommandFailed(f"CRL refused: {exc.reason}") from None


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="crl", dir="/tmp"))
    try:
        yield d / "ipopd.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _cli(sock: Path, handler: TrustHandler, *argv: str) -> int:
    async def go() -> int:
        server = ControlServer(sock, handler)  # type: ignore[arg-type]
        await server.start()
        try:
            return await asyncio.to_thread(main, ["--socket", str(sock), *argv])
        finally:
            await server.close()

    return asyncio.run(asyncio.wait_for(go(), 30))


def test_ipop_crl_push_installs_newer_and_refuses_forged(
    sock: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = make_network("lab-net", now=NOW - 60)
    mallory = make_identity(ca, "mallory", now=NOW - 60)
    handler = TrustHandler(ca.trust.fork())
    der = ca.make_crl([(cert_serial(mallory.cert), NOW)], number=2, now=NOW)
    (tmp_path / "net.crl.der").write_bytes(der)  # DER works too: the CLI sends PEM
    assert _cli(sock, handler, "crl", "push", str(tmp_path / "net.crl.der")) == 0
    assert "CRL number 2 in force" in capsys.readouterr().out
    assert handler.trust.is_revoked(mallory.cert)
    forged = make_network("lab-net", now=NOW - 60).make_crl([], number=9, now=NOW)
    (tmp_path / "forged.der").write_bytes(forged)
    assert _cli(sock, handler, "crl", "push", str(tmp_path / "forged.der")) == 1
    assert "crl_bad_signature" in capsys.readouterr().err
    assert handler.trust.crl_number == 2


def test_config_crl_file_is_loaded_at_start_and_a_bad_one_stops_it(tmp_path: Path) -> None:
    cfg = parse_config(
        {"bundle": "b.toml", "identity": {"crl": "net.crl.pem"}}, base_dir=tmp_path, source="t"
    )
    assert cfg.identity.crl == tmp_path / "net.crl.pem"
    with pytest.raises(ConfigError) as info:
        parse_config({"bundle": "b.toml", "identity": {"nope": 1}}, base_dir=tmp_path, source="t")
    assert info.value.key == "identity.nope"

    ca = make_network("lab-net", now=NOW - 60)
    mallory = make_identity(ca, "mallory", now=NOW - 60)
    trust = ca.trust.fork()
    path = tmp_path / "net.crl.pem"
    path.write_bytes(ca.make_crl([(cert_serial(mallory.cert), NOW)], number=4, now=NOW))
    load_crl_file(trust, path, now=NOW)
    assert trust.crl_number == 4 and trust.is_revoked(mallory.cert)
    load_crl_file(trust, path, now=NOW)  # the same again (or older): kept, no error
    path.write_bytes(b"not a crl")
    with pytest.raises(ConfigError) as info:
        load_crl_file(trust, path, now=NOW)
    assert info.value.key == "identity.crl"
    with pytest.raises(ConfigError):
        load_crl_file(trust, tmp_path / "missing.pem", now=NOW)
    assert trust.crl_number == 4
