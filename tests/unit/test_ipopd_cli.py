"""ipopd refuses a missing or invalid config or bundle with one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import config_cli, ipopd


def _write_config(path: Path, bundle: str, extra: str = "") -> Path:
    path.write_text(f'bundle = "{bundle}"\nstate_dir = "state"\n{extra}')
    return path


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ipopd: ")
    return lines[0]


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ipopd.main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in _one_line(capsys)


def test_bad_config_key_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_config(tmp_path / "n.toml", "b.toml", "[tap]\nmtu = 12\n")
    assert ipopd.main(["--config", str(cfg)]) == 2
    assert "tap.mtu" in _one_line(capsys)


def test_missing_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_config(tmp_path / "n.toml", "missing.bundle.toml")
    assert ipopd.main(["--config", str(cfg)]) == 2
    assert "missing.bundle.toml" in _one_line(capsys)


def test_invalid_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b.toml").write_text('format = 1\nnetwork = "x"\n')
    cfg = _write_config(tmp_path / "n.toml", "b.toml")
    assert ipopd.main(["--config", str(cfg)]) == 2
    _one_line(capsys)


def test_bundle_of_another_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    assert (
        config_cli.main(
            [
                "--home",
                home,
                "init",
                "net",
                "--subnet",
                "100.64.0.0/10",
                "--bootstrap",
                "203.0.113.10:5800",
            ]
        )
        == 0
    )
    for name in ("a", "b"):
        out = str(tmp_path / f"{name}.toml")
        assert config_cli.main(["--home", home, "node", "net", name, "--out", out]) == 0
    capsys.readouterr()
    a = (tmp_path / "a.toml").read_text()
    b = (tmp_path / "b.toml").read_text()
    key_b = b[b.index("node_key") :]
    (tmp_path / "mixed.toml").write_text(a[: a.index("node_key")] + key_b)
    cfg = _write_config(tmp_path / "n.toml", "mixed.toml")
    assert ipopd.main(["--config", str(cfg)]) == 2
    assert "node_key" in _one_line(capsys)
