"""Mistakes a user can make at the command line end in one line naming the fix, not a
traceback: a port already taken, a control socket where none can be made, a lab state file
that is not one, no lab, a topology file missing or broken; and ``ipop netcheck`` says what
it waits for."""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from ipaddress import IPv4Network
from pathlib import Path
from types import SimpleNamespace

import pytest

from ipop.aio.control import ControlServer
from ipop.aio.sysdns import resolved_running
from ipop.bundle import dump_bundle
from ipop.errors import ConfigError
from ipop.testing.identities import make_bundle
from ipop.tools import cli_netcheck, ipopd, sim
from ipop.tools.lab import main as lab_main
from ipop.types import Endpoint

SUBNET = IPv4Network("100.64.0.0/10")
BOOT = (Endpoint("203.0.113.10", 5800),)


def _one_line(capsys: pytest.CaptureFixture[str], prog: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: ") and "Traceback" not in err
    return lines[0]


def _node_config(tmp_path: Path, listen: str) -> Path:
    bundle = make_bundle("net", "a", subnet=SUBNET, bootstrap=BOOT, now=time.time())
    (tmp_path / "a.toml").write_text(dump_bundle(bundle))
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        f'bundle = "a.toml"\nstate_dir = "state"\nlisten = "{listen}"\n'
        f'[control]\nsocket = "{tmp_path / "ctl.sock"}"\n'
    )
    return cfg


def test_ipopd_on_a_port_in_use_names_listen_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its log handler would hold this test's captured stderr after the test (closed by then).
    monkeypatch.setattr(ipopd, "setup_logging", lambda level: None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = _node_config(tmp_path, f"127.0.0.1:{port}")
        assert ipopd.main(["--config", str(cfg)]) == 2
    line = _one_line(capsys, "ipopd")
    assert line.startswith("ipopd: listen: cannot listen on 127.0.0.1:") and "in use" in line
    assert "free port" in line


@pytest.mark.skipif(resolved_running(), reason="systemd-resolved runs here")
def test_ipopd_refuses_dns_system_resolved_where_resolved_does_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _node_config(tmp_path, "127.0.0.1:5879")  # never bound: refused before
    cfg.write_text(cfg.read_text().replace("[control]", '[dns]\nsystem = "resolved"\n[control]'))
    assert ipopd.main(["--config", str(cfg)]) == 2
    line = _one_line(capsys, "ipopd")
    assert line.startswith("ipopd: dns.system: ") and "dnsmasq" in line


def test_a_control_socket_that_cannot_be_made_names_the_key_and_the_fix(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("")
    for path in (tmp_path / "file" / "sub" / "ctl.sock", tmp_path / "file" / "ctl.sock"):
        server = ControlServer(path, SimpleNamespace())  # type: ignore[arg-type]
        with pytest.raises(ConfigError) as err:
            asyncio.run(server.start())
        assert err.value.key == "control.socket" and "[control] socket" in err.value.fix
        assert "\n" not in str(err.value)


def test_ipop_lab_without_a_lab_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab_main.main(["status", "--workdir", str(tmp_path)]) == 1
    assert "'ipop-lab up'" in _one_line(capsys, "ipop-lab")


@pytest.mark.parametrize("text", ["{broken", "[]", '{"version": 999}', "{}"])
def test_ipop_lab_with_a_damaged_state_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    (tmp_path / "lab.json").write_text(text)
    for cmd in ("status", "down"):
        assert lab_main.main([cmd, "--workdir", str(tmp_path)]) == 2
        line = _one_line(capsys, "ipop-lab")
        assert "lab.json" in line and "ipop-lab down --prefix" in line


def test_ipop_sim_topology_missing_or_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.toml")
    assert sim.main(["--topology", missing]) == 2
    assert "--topology" in _one_line(capsys, "ipop-sim")
    broken = tmp_path / "broken.toml"
    broken.write_text("hosts = \n")
    assert sim.main(["--topology", str(broken)]) == 2
    assert "is not valid TOML" in _one_line(capsys, "ipop-sim")
    assert sim.main(["overlay", "--nat-mix", "cone:1"]) == 2
    line = _one_line(capsys, "ipop-sim")
    assert "none, full-cone" in line and "NatKind" not in line


def test_ipop_netcheck_says_what_it_waits_for_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Client:
        def netcheck(self, servers: list[str], *, second_opinion: bool) -> object:
            raise SystemExit(0)  # what it printed before asking is what is checked

    args = argparse.Namespace(server=["203.0.113.9:3478"], second_opinion=True, json=False)
    with pytest.raises(SystemExit):
        cli_netcheck.run(args, Client())  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert out == "" and "asking the bootstrap nodes and 1 more server" in err
    assert "30 s" in err
