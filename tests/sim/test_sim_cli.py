"""ipop-sim from the command line: sessions behind every NAT kind, the NAT matrix, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipop.tools.sim import main


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_sessions_complete_behind_every_nat_kind(
    loss: float, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sessions", "--json", "--loss", str(loss), "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    assert {k["nat"] for k in out["kinds"]} >= {"none", "symmetric", "port-restricted-cone"}
    assert all(k["sessions"] == k["nodes"] == 3 for k in out["kinds"])


def test_bad_flag_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--loss", "1.5"]) == 2
    assert "--loss" in capsys.readouterr().err


def test_topology_from_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topo = tmp_path / "topo.toml"
    topo.write_text(
        '[nats.office]\nkind = "port-restricted-cone"\n[hosts.seed]\n'
        '[hosts.alice]\nnat = "office"\n[hosts.bob]\nnat = "office"\n'
        '[hosts.carol]\nkind = "symmetric"\n'
    )
    assert main(["--json", "--topology", str(topo)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k["nat"]: k["sessions"] for k in out["kinds"]} == {
        "port-restricted-cone": 2,
        "symmetric": 1,
    }


def test_topology_without_public_host_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = tmp_path / "topo.toml"
    topo.write_text('[hosts.alice]\nkind = "symmetric"\n')
    assert main(["--topology", str(topo)]) == 2
    assert "public host" in capsys.readouterr().err


def test_natmatrix_prints_the_lab_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["natmatrix", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    keys = {"a", "b", "reachable", "direct", "expected_direct", "time_to_direct_s"}
    keys |= {"rtt_overlay_ms", "rtt_direct_ms", "lost"}
    assert len(out["pairs"]) == 15 and all(keys <= set(p) for p in out["pairs"])
    relayed = {(p["a"], p["b"]) for p in out["pairs"] if not p["direct"]}
    assert relayed == {("symmetric", "symmetric")}


def test_nodes_without_a_scenario_runs_the_overlay(capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--pairs", "5", "--records", "5", "--join-spread", "2"]
    main(["--nodes", "6", *small, "--json"])
    out, err = capsys.readouterr()
    assert json.loads(out)["scenario"] == "overlay" and json.loads(out)["nodes"] == 6
    assert "6 nodes" in err and "join done" in err  # its phases, as they end


def test_an_overlay_option_with_another_scenario_is_one_line_naming_the_fix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sessions", "--nodes", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--nodes" in err and "ipop-sim overlay --nodes" in err
