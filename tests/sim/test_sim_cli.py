"""ipop-sim's sessions scenario: every NAT kind completes authenticated sessions."""

from __future__ import annotations

import json

import pytest

from tools.sim import main


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
