"""``ipopd --config``: typed loading, defaults, relative paths, and errors that name the key."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from ipop.config import (
    ALL_KEYS,
    MAX_CONFIG_BYTES,
    ControlConfig,
    DhtConfig,
    DnsConfig,
    NetworkConfig,
    NodeConfig,
    TapConfig,
    load_config,
    parse_config,
)
from ipop.errors import ConfigError
from ipop.types import Endpoint

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "ipop.example.toml"

FULL = """
bundle = "/etc/ipop/alice.bundle.toml"
state_dir = "/srv/ipop"
listen = "198.51.100.20:5901"
hostname = "alice-laptop"
log_level = "debug"
[tap]
name = "vpn-1"
addressing = "dhcp"
mtu = 1380
[control]
socket = "/run/ipop-test/ctl.sock"
[dns]
enabled = false
upstream = ["198.51.100.53:53", "203.0.113.53:5353"]
[dht]
lease_s = 600
"""


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_full_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg == NodeConfig(
        bundle=Path("/etc/ipop/alice.bundle.toml"),
        state_dir=Path("/srv/ipop"),
        listen=Endpoint("198.51.100.20", 5901),
        hostname="alice-laptop",
        log_level="debug",
        tap=TapConfig(name="vpn-1", addressing="dhcp", mtu=1380),
        control=ControlConfig(socket=Path("/run/ipop-test/ctl.sock")),
        dns=DnsConfig(
            enabled=False,
            upstream=(Endpoint("198.51.100.53", 53), Endpoint("203.0.113.53", 5353)),
        ),
        dht=DhtConfig(lease_s=600),
    )


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'bundle = "/etc/ipop/b.toml"\n'))
    assert cfg.state_dir == Path("/var/lib/ipop")
    assert cfg.listen == Endpoint("0.0.0.0", 5800)
    assert cfg.hostname is None
    assert cfg.log_level == "warning"
    assert cfg.tap == TapConfig("ipop0", "static", 0)
    assert cfg.control.socket == Path("/run/ipop/ipopd.sock")
    assert cfg.dns == DnsConfig(enabled=True, upstream=())
    assert cfg.dht.lease_s == 3600


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    write(
        conf_dir,
        'bundle = "alice.bundle.toml"\nstate_dir = "state"\n[control]\nsocket = "run/ctl.sock"\n',
    )
    monkeypatch.chdir(elsewhere)
    # A relative --config path is relative to the cwd; paths inside it to the file's folder.
    cfg = load_config(os.path.join("..", "etc", "node.toml"))
    assert cfg.bundle == conf_dir / "alice.bundle.toml"
    assert cfg.state_dir == conf_dir / "state"
    assert cfg.control.socket == conf_dir / "run" / "ctl.sock"
    assert all(p.is_absolute() for p in (cfg.bundle, cfg.state_dir, cfg.control.socket))


def test_effective_hostname() -> None:
    assert NodeConfig(bundle=Path("/b")).effective_hostname("from-bundle") == "from-bundle"
    assert NodeConfig(bundle=Path("/b")).effective_hostname(None) is None
    same = NodeConfig(bundle=Path("/b"), hostname="from-bundle")
    assert same.effective_hostname("from-bundle") == "from-bundle"


@pytest.mark.parametrize("bundle_hostname", ["from-bundle", None])
def test_config_cannot_override_the_certificates_hostname(bundle_hostname: str | None) -> None:
    """Issue 13: the hostname is the certificate's; a config naming another one is refused."""
    cfg = NodeConfig(bundle=Path("/b"), hostname="mine")
    with pytest.raises(ConfigError) as err:
        cfg.effective_hostname(bundle_hostname)
    assert err.value.key == "hostname"


def test_example_documents_every_key_with_its_default() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg == NodeConfig(bundle=EXAMPLE.parent / "node.bundle.toml")
    text = EXAMPLE.read_text()
    table = tomllib.loads(text)
    for dotted in ALL_KEYS:
        section, _, key = dotted.rpartition(".")
        # Either set, or shown commented out (keys without a default, or example values).
        present = key in (table.get(section, {}) if section else table)
        assert present or f"# {key} = " in text, f"{dotted} is not documented in {EXAMPLE}"


def test_parse_config_needs_no_file() -> None:
    cfg = parse_config({"bundle": "b.toml"}, base_dir=Path("/etc/ipop"), source="test")
    assert cfg.bundle == Path("/etc/ipop/b.toml")


BASE = 'bundle = "b.toml"\n'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", "bundle"),
        ("bundle = 3\n", "bundle"),
        ('bundle = ""\n', "bundle"),
        (BASE + "colour = 'blue'\n", "colour"),
        (BASE + "state_dir = []\n", "state_dir"),
        (BASE + 'listen = "0.0.0.0"\n', "listen"),
        (BASE + 'listen = "localhost:5800"\n', "listen"),
        (BASE + 'listen = "0.0.0.0:70000"\n', "listen"),
        (BASE + 'listen = "224.0.0.1:5800"\n', "listen"),
        (BASE + 'hostname = "Alice Laptop"\n', "hostname"),
        (BASE + 'hostname = "c064001002"\n', "hostname"),
        (BASE + "hostname = 7\n", "hostname"),
        (BASE + 'log_level = "verbose"\n', "log_level"),
        (BASE + "tap = 1\n", "tap"),
        (BASE + '[tap]\nname = "a-very-long-tap-name"\n', "tap.name"),
        (BASE + '[tap]\nname = "ip/op"\n', "tap.name"),
        (BASE + '[tap]\nname = ""\n', "tap.name"),
        (BASE + '[tap]\naddressing = "auto"\n', "tap.addressing"),
        (BASE + "[tap]\nmtu = 100\n", "tap.mtu"),
        (BASE + "[tap]\nmtu = 9001\n", "tap.mtu"),
        (BASE + "[tap]\nmtu = 1400.0\n", "tap.mtu"),
        (BASE + "[tap]\nmtu = true\n", "tap.mtu"),
        (BASE + "[tap]\nmtus = 1400\n", "tap.mtus"),
        (BASE + "[control]\nsocket = 5\n", "control.socket"),
        (BASE + '[dns]\nenabled = "yes"\n', "dns.enabled"),
        (BASE + '[dns]\nupstream = "198.51.100.53:53"\n', "dns.upstream"),
        (BASE + '[dns]\nupstream = ["198.51.100.53:53", "nope"]\n', "dns.upstream[1]"),
        (BASE + "[dns]\nupstream = [53]\n", "dns.upstream[0]"),
        (BASE + '[dns]\nsystem = "systemd"\n', "dns.system"),
        (BASE + "[dns]\nsystem = true\n", "dns.system"),
        (BASE + "[dht]\nlease_s = 59\n", "dht.lease_s"),
        (BASE + '[dht]\nlease_s = "1h"\n', "dht.lease_s"),
        (BASE + "[dht]\nttl = 60\n", "dht.ttl"),
        (BASE + "[extra]\nx = 1\n", "extra"),
    ],
)
def test_bad_field_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    exc = info.value
    assert exc.key == key
    assert str(exc).startswith(f"{key}: ")
    assert str(path) in str(exc)  # where
    assert exc.fix  # and how to mend it


def test_file_level_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot be read") as info:
        load_config(missing)
    assert info.value.key == str(missing)

    broken = write(tmp_path, "bundle = \n", "broken.toml")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(broken)
    assert info.value.key == str(broken)

    huge = write(tmp_path, BASE + "#" * MAX_CONFIG_BYTES, "huge.toml")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(huge)

    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"bundle = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_stun_section() -> None:
    from ipop.config import StunConfig

    cfg = parse_config(
        {
            "bundle": "b.toml",
            "stun": {
                "servers": ["203.0.113.30:3478"],
                "serve": True,
                "alternate": "203.0.113.20",
                "alt_port": 0,
            },
        },
        base_dir=Path("/etc/ipop"),
        source="test",
    )
    assert cfg.stun == StunConfig(
        servers=(Endpoint("203.0.113.30", 3478),), serve=True, alternate="203.0.113.20"
    )
    default = parse_config({"bundle": "b"}, base_dir=Path("/"), source="t").stun
    assert default == StunConfig() and not default.serve  # ordinary nodes answer no STUN
    for bad, key in (
        ({"servers": "203.0.113.30:3478"}, "stun.servers"),
        ({"servers": ["stun.example:3478"]}, "stun.servers[0]"),
        ({"alternate": "sometimes"}, "stun.alternate"),
        ({"alt_port": 70000}, "stun.alt_port"),
        ({"serve": "yes"}, "stun.serve"),
        ({"colour": 1}, "stun.colour"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({"bundle": "b", "stun": bad}, base_dir=Path("/"), source="t")
        assert info.value.key == key


def test_web_section_is_off_by_default_and_loopback_only_unless_allowed() -> None:
    from ipop.config import WebConfig

    def parse(section: dict[str, object]) -> WebConfig:
        return parse_config({"bundle": "b", "web": section}, base_dir=Path("/"), source="t").web

    assert parse({}) == WebConfig() and WebConfig().listen is None  # opt-in
    on = parse({"listen": "127.0.0.1:9581", "refresh_s": 0, "max_peers": 8})
    assert on.listen == Endpoint("127.0.0.1", 9581) and on.refresh_s == 0 and on.max_peers == 8
    remote = parse({"listen": "198.51.100.20:9581", "allow_remote": True})
    assert remote.listen == Endpoint("198.51.100.20", 9581)
    with pytest.raises(ConfigError) as info:
        parse({"listen": "0.0.0.0:9581"})
    assert info.value.key == "web.listen"
    assert "loopback" in info.value.problem and "allow_remote = true to [web]" in info.value.fix
    for bad, key in (
        ({"listen": "localhost:9581"}, "web.listen"),
        ({"refresh_s": -1}, "web.refresh_s"),
        ({"refresh_s": 3601}, "web.refresh_s"),
        ({"max_peers": 0}, "web.max_peers"),
        ({"allow_remote": 1}, "web.allow_remote"),
        ({"path": "/"}, "web.path"),
    ):
        with pytest.raises(ConfigError) as info:
            parse(bad)
        assert info.value.key == key, bad


def test_metrics_section_is_off_by_default_and_loopback_only_unless_allowed() -> None:
    from ipop.config import MetricsConfig

    def parse(section: dict[str, object]) -> MetricsConfig:
        return parse_config(
            {"bundle": "b", "metrics": section}, base_dir=Path("/"), source="t"
        ).metrics

    assert parse({}) == MetricsConfig() and MetricsConfig().listen is None  # opt-in
    on = parse({"listen": "127.0.0.1:9580"})
    assert on.listen == Endpoint("127.0.0.1", 9580) and on.max_peers == 256
    assert parse({"listen": "127.0.0.2:9580", "max_peers": 4}).max_peers == 4
    remote = parse({"listen": "198.51.100.20:9580", "allow_remote": True})
    assert remote.listen == Endpoint("198.51.100.20", 9580)
    with pytest.raises(ConfigError) as info:
        parse({"listen": "0.0.0.0:9580"})
    assert info.value.key == "metrics.listen"
    assert "loopback" in info.value.problem and "allow_remote = true" in info.value.fix
    for bad, key in (
        ({"listen": "198.51.100.20:9580"}, "metrics.listen"),
        ({"listen": "localhost:9580"}, "metrics.listen"),
        ({"listen": "127.0.0.1:0"}, "metrics.listen"),
        ({"listen": 9580}, "metrics.listen"),
        ({"allow_remote": "yes"}, "metrics.allow_remote"),
        ({"max_peers": 0}, "metrics.max_peers"),
        ({"max_peers": 100_000}, "metrics.max_peers"),
        ({"port": 9580}, "metrics.port"),
    ):
        with pytest.raises(ConfigError) as info:
            parse(bad)
        assert info.value.key == key, bad


def test_network_tables_name_each_networks_bundle_and_tap() -> None:
    table = {
        "bundle": "lab.toml",
        "tap": {"name": "ipop-lab"},
        "network": [{"bundle": "other.toml", "tap": "ipop-other"}],
    }
    cfg = parse_config(table, base_dir=Path("/etc/ipop"), source="t")
    assert cfg.networks == (NetworkConfig(Path("/etc/ipop/other.toml"), "ipop-other"),)
    assert parse_config({"bundle": "b"}, base_dir=Path("/"), source="t").networks == ()


@pytest.mark.parametrize(
    ("network", "key", "words"),
    [
        ([{"bundle": "o.toml"}], "network[0].tap", "is missing"),
        ([{"tap": "ipop1"}], "network[0].bundle", "is missing"),
        ([{"bundle": "o.toml", "tap": "ipop0"}], "network[0].tap", "another network's TAP"),
        ([{"bundle": "o.toml", "tap": "x/y"}], "network[0].tap", "not a usable"),
        ([{"bundle": "o.toml", "tap": "a", "mtu": 1}], "network[0].mtu", "not a network key"),
        (
            [{"bundle": "o.toml", "tap": "a"}, {"bundle": "p.toml", "tap": "a"}],
            "network[1].tap",
            "another network's TAP",
        ),
        ({"bundle": "o.toml"}, "network", "[[network]] tables"),
    ],
)
def test_bad_network_tables_name_the_key_and_the_fix(network: object, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"bundle": "b", "network": network}, base_dir=Path("/"), source="t")
    assert err.value.key == key and words in err.value.problem
    assert err.value.fix
