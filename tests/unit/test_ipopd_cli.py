"""ipopd refuses a missing or invalid config or bundle with one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipop.tools import config_cli, ipopd


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


def _lines_after(text: str, key: str) -> tuple[list[str], int]:
    lines = text.split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key} = "))
    return lines, start + 2  # the first base64 line after '-----BEGIN ...'


def _hand_edit(text: str, key: str, how: str) -> str:
    lines, i = _lines_after(text, key)
    if how == "line_removed":
        del lines[i + 1]
    elif how == "length_changed":
        lines[i] = lines[i][:5] + ("z" if lines[i][5] != "z" else "y") + lines[i][6:]
    elif how == "tag_changed":
        lines[i] = lines[i][:10] + "xx" + lines[i][12:]
    elif how == "begin_removed":
        del lines[i - 1]
    else:  # not base64
        lines[i] = lines[i][:20] + "!!" + lines[i][22:]
    return "\n".join(lines)


@pytest.mark.parametrize("key", ["node_cert", "ca_cert", "node_key"])
@pytest.mark.parametrize(
    "how", ["line_removed", "length_changed", "tag_changed", "begin_removed", "not_base64"]
)
def test_hand_edited_pem_reads_as_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, how: str
) -> None:
    home = str(tmp_path / "home")
    init = ["init", "net", "--subnet", "100.64.0.0/10", "--bootstrap", "203.0.113.10:5800"]
    assert config_cli.main(["--home", home, *init]) == 0
    good = tmp_path / "a.toml"
    assert config_cli.main(["--home", home, "node", "net", "a", "--out", str(good)]) == 0
    capsys.readouterr()
    bad = tmp_path / "edited.toml"
    bad.write_text(_hand_edit(good.read_text(), key, how))
    cfg = _write_config(tmp_path / "n.toml", "edited.toml")
    assert ipopd.main(["--config", str(cfg)]) == 2
    line = _one_line(capsys)
    assert "edited.toml" in line  # the file
    assert line.startswith(f"ipopd: {key}:")  # the key
    assert "ipop-config" in line  # the fix
    dumps = (
        "ParseError",
        "asn1",
        "ASN.1",
        "kind:",
        "deserialize",
        "cryptography.io",
        "InvalidData",
    )
    for dump in dumps:
        assert dump not in line, line
    framing = how == "begin_removed" or (how == "line_removed" and key == "node_key")  # 1 line
    expect = "-----END" if framing else "not base64" if how == "not_base64" else "is damaged"
    assert expect in line, line
