"""``ipop-lab``'s topology arguments: which one wins, and the sizes subcommands default to."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipop.tools.lab import main as labmain


def test_soak_takes_a_preset_without_a_clash_with_its_default_size() -> None:
    # soak's default of 30 nodes once counted as a second topology beside --preset.
    args = labmain.build_parser().parse_args(["soak", "--preset", "small", "--minutes", "0"])
    assert args.preset == "small" and args.nodes is None
    assert labmain._topology(args).hosts


def test_soak_defaults_to_thirty_generated_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_main_soak(topo: object, plan: object, *, as_json: bool, **kw: object) -> int:
        seen["topo"] = topo
        seen["kw"] = kw
        return 0

    import ipop.tools.lab.soak as soak

    monkeypatch.setattr(soak, "main_soak", fake_main_soak)
    args = labmain.build_parser().parse_args(["soak", "--minutes", "0"])
    assert labmain.cmd_soak(args) == 0
    assert args.nodes == 30
    # Nothing kept unless asked; logs at info.
    assert seen["kw"] == {"workdir": None, "log_level": "info"}


def test_soak_keep_and_log_level_reach_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_main_soak(topo: object, plan: object, *, as_json: bool, **kw: object) -> int:
        seen.update(kw)
        return 0

    import ipop.tools.lab.soak as soak

    monkeypatch.setattr(soak, "main_soak", fake_main_soak)
    argv = ["soak", "--minutes", "0", "--keep", "/tmp/k", "--log-level", "debug"]
    assert labmain.cmd_soak(labmain.build_parser().parse_args(argv)) == 0
    assert seen == {"workdir": Path("/tmp/k"), "log_level": "debug"}
