"""A network's home folder on its own: settings, the register and the all-or-nothing writes."""

from __future__ import annotations

import stat
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from ipop.tools.config_home import (
    REGISTER_FILE,
    Issued,
    NetworkSettings,
    Register,
    UsageError,
    read_file,
    write_file,
)
from ipop.types import Endpoint


def test_network_settings_survive_their_toml() -> None:
    settings = NetworkSettings(
        network="lab",
        subnet=IPv4Network("100.64.0.0/10"),
        bootstrap=(Endpoint("203.0.113.1", 4500),),
        dns_suffix="ipop",
    )
    assert NetworkSettings.from_toml(settings.to_toml(), network="lab") == settings


def test_the_register_survives_save_and_load(tmp_path: Path) -> None:
    register = Register([Issued(0xABC, "ab" * 20, "alice", None, 2_000.0, 1_000.0)], crl_number=4)
    register.revoke(register.certs, now=1_500.0)
    register.save(tmp_path)
    assert stat.S_IMODE((tmp_path / REGISTER_FILE).stat().st_mode) == 0o600
    loaded = Register.load(tmp_path)
    assert loaded == register
    assert not loaded.certs[0].live(1_600.0)


def test_a_damaged_register_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / REGISTER_FILE).write_text('{"certs": [{}]}')
    with pytest.raises(UsageError, match="damaged"):
        Register.load(tmp_path)
    assert Register.load(tmp_path / "none").certs == []


def test_write_file_never_clobbers_unless_told(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_file(path, b"one", 0o644, overwrite=False)
    with pytest.raises(FileExistsError):
        write_file(path, b"two", 0o644, overwrite=False)
    assert read_file(path, "file") == b"one"
    write_file(path, b"three", 0o600, overwrite=True)
    assert read_file(path, "file") == b"three"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    with pytest.raises(UsageError, match="cannot read file"):
        read_file(tmp_path / "missing", "file")
