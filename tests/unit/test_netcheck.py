"""ipop.nat.netcheck: the procedure against modelled NATs, the JSON document, the control command
and ``ipop netcheck``."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ipop.aio.control import ControlServer, request_sync
from ipop.nat.kinds import NAT_KINDS, NatKind
from ipop.nat.netcheck import (
    NetcheckResult,
    SecondOpinion,
    ServerProbe,
    pystun3_kind,
    run_netcheck,
)
from ipop.nat.stun import StunAnswer
from ipop.tools.cli import main
from ipop.tools.cli_netcheck import format_netcheck
from ipop.types import Endpoint

LOCAL = Endpoint("198.18.1.2", 5800)
WAN = "203.0.113.101"
BOOT = Endpoint("203.0.113.10", 5800)
BOOT_ALT = Endpoint("203.0.113.20", 5801)
PEER = Endpoint("203.0.113.11", 5800)


@dataclass
class ModelNat:
    """A NAT in front of LOCAL, and STUN servers behind it (lab semantics, natrules.py)."""

    kind: str
    servers: dict[Endpoint, Endpoint | None]  # server -> its OTHER-ADDRESS
    contacted: set[Endpoint] = field(default_factory=set)
    ports: dict[Endpoint, int] = field(default_factory=dict)
    log: list[tuple[Endpoint, bool, bool]] = field(default_factory=list)

    def mapped(self, dst: Endpoint) -> Endpoint:
        if self.kind == "none":
            return LOCAL
        if self.kind == "symmetric":
            return Endpoint(WAN, self.ports.setdefault(dst, 40000 + len(self.ports)))
        return Endpoint(WAN, LOCAL.port)

    def lets_in(self, src: Endpoint) -> bool:
        if self.kind in ("none", "full-cone"):
            return True
        if self.kind == "restricted-cone":
            return src.host in {c.host for c in self.contacted}
        return src in self.contacted

    async def transact(
        self, dst: Endpoint, change_ip: bool, change_port: bool
    ) -> StunAnswer | None:
        self.log.append((dst, change_ip, change_port))
        self.contacted.add(dst)
        known = self.servers.get(dst, "absent")
        if known == "absent" and dst not in self.servers.values():
            return None
        other = self.servers.get(dst)
        source = dst
        if change_ip or change_port:
            if other is None:
                return None  # the server cannot: it does not answer (ours drops it)
            source = Endpoint(
                other.host if change_ip else dst.host, other.port if change_port else dst.port
            )
        if not self.lets_in(source):
            return None
        return StunAnswer(dst, source, self.mapped(dst), dst, other, 0.001)


KINDS = list(NAT_KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_bootstrap_and_a_peer_classify_every_kind(kind: str) -> None:
    nat = ModelNat(kind, {BOOT: BOOT_ALT, PEER: None})
    r = asyncio.run(run_netcheck(nat.transact, servers=[BOOT], peers=[PEER], local=[LOCAL]))
    assert r.nat == kind
    assert r.servers[0].kind == kind
    assert r.direct_expected[NatKind.NONE] is True
    # The alternate address is never contacted: it would spoil a rerun's filtering tests.
    assert all(dst != BOOT_ALT for dst, _, _ in nat.log)
    assert NetcheckResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize("kind", KINDS)
def test_a_lone_server_tests_mapping_at_its_alternate_last(kind: str) -> None:
    nat = ModelNat(kind, {BOOT: BOOT_ALT, BOOT_ALT: None})
    r = asyncio.run(run_netcheck(nat.transact, servers=[BOOT], peers=[], local=[LOCAL]))
    assert r.nat == kind
    if kind != "none":
        assert nat.log[-1] == (BOOT_ALT, False, False)
        assert any("rerun" in n for n in r.notes)


def test_gather_runs_servers_side_by_side() -> None:
    nat = ModelNat("port-restricted-cone", {BOOT: BOOT_ALT, PEER: None})
    r = asyncio.run(
        run_netcheck(
            nat.transact, servers=[BOOT], peers=[PEER], local=[LOCAL], gather=asyncio.gather
        )
    )
    assert r.nat == "port-restricted-cone"
    assert r.peers_seen == ((PEER, Endpoint(WAN, 5800)),)
    assert r.direct_expected["symmetric"] is True  # by port guessing (ipop.nat.portguess)


def test_a_symmetric_node_expects_no_direct_path_to_another_symmetric_one() -> None:
    nat = ModelNat("symmetric", {BOOT: BOOT_ALT, PEER: None})
    r = asyncio.run(run_netcheck(nat.transact, servers=[BOOT], peers=[PEER], local=[LOCAL]))
    assert r.nat == "symmetric"
    assert r.direct_expected["symmetric"] is False
    assert r.direct_expected["port-restricted-cone"] is True


def test_nobody_answers() -> None:
    nat = ModelNat("full-cone", {})
    r = asyncio.run(run_netcheck(nat.transact, servers=[BOOT], peers=[PEER], local=[LOCAL]))
    assert r.nat is None and r.servers[0].answered is False
    assert "no STUN server or peer answered" in r.notes
    assert set(r.direct_expected.values()) == {None}


def test_echoes_are_the_last_resort_for_mapping() -> None:
    nat = ModelNat("symmetric", {PEER: None})
    r = asyncio.run(
        run_netcheck(
            nat.transact,
            servers=[],
            peers=[PEER],
            local=[LOCAL],
            echoed=[Endpoint(WAN, 51000)],
        )
    )
    assert r.mapping == "dependent" and r.nat == "symmetric"


def test_server_ignoring_change_flags_proves_nothing() -> None:
    async def liar(dst: Endpoint, ci: bool, cp: bool) -> StunAnswer | None:
        return StunAnswer(dst, dst, Endpoint(WAN, 5800), dst, BOOT_ALT, 0.001)

    r = asyncio.run(run_netcheck(liar, servers=[BOOT], peers=[PEER], local=[LOCAL]))
    assert r.filtering == "address-and-port-dependent"


def _doc() -> dict[str, Any]:
    r = NetcheckResult(
        nat="full-cone",
        mapping="endpoint-independent",
        filtering="endpoint-independent",
        public_endpoints=(Endpoint(WAN, 5800),),
        local_endpoints=(LOCAL,),
        direct_expected={"symmetric": True},
        servers=(ServerProbe(BOOT, True, Endpoint(WAN, 5800), BOOT_ALT, True, None),),
        peers_seen=((PEER, Endpoint(WAN, 5800)),),
        second_opinion=(
            SecondOpinion(BOOT, "Full Cone", pystun3_kind("Full Cone"), Endpoint(WAN, 5800)),
        ),
        notes=("x",),
    )
    assert NetcheckResult.from_dict(r.to_dict()) == r
    return r.to_dict()


@pytest.mark.parametrize(
    "patch",
    [
        {"nat": "cone"},
        {"public_endpoints": ["nowhere"]},
        {"public_endpoints": None},
        {"direct_expected": {"cone": True}},
        {"servers": [{"server": "203.0.113.10:5800"}]},
        {"peers_seen": [["203.0.113.10:5800"]]},
        {"notes": [1]},
        {"second_opinion": [{"verdict": "x"}]},
    ],
)
def test_from_dict_rejects_malformed(patch: dict[str, Any]) -> None:
    doc = _doc() | patch
    with pytest.raises(ValueError):
        NetcheckResult.from_dict(doc)


def test_from_dict_reads_the_old_spelling_open_as_none() -> None:
    # Before ipop.nat.kinds netcheck said "open" for no translation; a newer CLI may still
    # read a document from an older daemon.
    doc = _doc() | {"nat": "open", "direct_expected": {"open": True, "symmetric": None}}
    doc["servers"] = [dict(doc["servers"][0], kind="open")]
    r = NetcheckResult.from_dict(doc)
    assert r.nat is NatKind.NONE and r.servers[0].kind is NatKind.NONE
    assert r.direct_expected == {NatKind.NONE: True, NatKind.SYMMETRIC: None}
    assert r.to_dict()["nat"] == "none"


def test_pystun3_kinds() -> None:
    assert pystun3_kind("Restric Port NAT") == "port-restricted-cone"
    assert pystun3_kind("Symmetric UDP Firewall") is None
    assert pystun3_kind(None) is None


# --- control command and CLI ------------------------------------------------------------------


class Handler:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], bool]] = []

    async def netcheck(self, servers: list[str], second_opinion: bool) -> NetcheckResult:
        self.calls.append((servers, second_opinion))
        return NetcheckResult.from_dict(_doc())


@pytest.fixture
def sock() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="inc", dir="/tmp"))
    try:
        yield d / "ipopd.sock"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _serve(sock: Path, handler: Handler, fn: Any) -> Any:
    async def go() -> Any:
        server = ControlServer(sock, handler)  # type: ignore[arg-type]
        await server.start()
        try:
            return await asyncio.to_thread(fn)
        finally:
            await server.close()

    return asyncio.run(asyncio.wait_for(go(), 60))


def test_cli_netcheck_json_and_table(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = Handler()
    rc = _serve(
        sock,
        h,
        lambda: main(
            ["--socket", str(sock), "netcheck", "--json", "--server", "203.0.113.30:3478"]
        ),
    )
    out = capsys.readouterr().out
    assert rc == 0 and json.loads(out) == _doc()
    assert h.calls == [(["203.0.113.30:3478"], True)]
    rc = _serve(sock, h, lambda: main(["--socket", str(sock), "netcheck", "--no-second-opinion"]))
    out = capsys.readouterr().out
    assert rc == 0 and "nat:        full-cone" in out and "pystun3 vs 203.0.113.10:5800" in out
    assert h.calls[-1] == ([], False)


def test_cli_netcheck_bad_server_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--socket", "/nonexistent", "netcheck", "--server", "stun.example:3478"]) == 2
    assert "ipop:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        {"servers": "203.0.113.30:3478", "second_opinion": True},
        {"servers": ["nowhere"], "second_opinion": True},
        {"servers": [], "second_opinion": "yes"},
        {"servers": []},
    ],
)
def test_control_rejects_bad_netcheck_args(sock: Path, args: dict[str, Any]) -> None:
    from ipop.aio.control import CommandFailed

    h = Handler()

    def call() -> str:
        try:
            request_sync(sock, "netcheck", reply_timeout_s=5, **args)
        except CommandFailed as exc:
            return str(exc)
        return "accepted"

    assert _serve(sock, h, call) != "accepted"
    assert h.calls == []


def test_one_peer_and_its_own_echo_do_not_make_a_symmetric_nat_independent() -> None:
    # Behind a symmetric NAT with one direct peer: that peer's STUN answer and its echo in the
    # overlay show the same address, but from one destination nothing is known.
    nat = ModelNat("symmetric", {PEER: None})
    mapped = Endpoint(WAN, 40000)  # what ModelNat's symmetric NAT maps toward its first peer
    r = asyncio.run(
        run_netcheck(nat.transact, servers=[], peers=[PEER], local=[LOCAL], echoed=[mapped])
    )
    assert r.peers_seen and r.peers_seen[0][1] == mapped
    assert r.mapping is None and r.nat is None
    assert any("mapping unknown (one peer)" in n for n in r.notes)
    assert "mapping:    unknown (one peer)" in format_netcheck(r)
