"""ipop.router.config: the [router] section on top of a node config; every error names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipop.errors import ConfigError
from ipop.router.config import load_router_config

BASE = 'bundle = "b.toml"\nstate_dir = "state"\n'


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "router.toml"
    p.write_text(text)
    return p


def test_router_section_defaults_and_node_keys(tmp_path: Path) -> None:
    cfg = load_router_config(_write(tmp_path, BASE + '[router]\ninterface = "br0"\n'))
    assert cfg.router.interface == "br0"
    assert cfg.router.dhcp_lease_s == 600 and cfg.router.static_hosts is True
    assert cfg.node.bundle == tmp_path / "b.toml"
    assert cfg.node.state_dir == tmp_path / "state"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("", "router"),
        ("[router]\n", "router.interface"),
        ('[router]\ninterface = "br0"\nbogus = 1\n', "router.bogus"),
        ('[router]\ninterface = "br0"\ndhcp_lease_s = 5\n', "router.dhcp_lease_s"),
        ('[router]\ninterface = "br0"\nmax_hosts = true\n', "router.max_hosts"),
        ('[router]\ninterface = "br0"\nstatic_hosts = "yes"\n', "router.static_hosts"),
        ('[router]\ninterface = "a/b"\n', "router.interface"),
    ],
)
def test_bad_router_section_names_the_key(tmp_path: Path, section: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_router_config(_write(tmp_path, BASE + section))
    assert err.value.key == key


def test_the_example_config_parses() -> None:
    example = Path(__file__).parents[2] / "deploy" / "router.example.toml"
    cfg = load_router_config(example)
    assert cfg.router.interface == "br0"
    assert cfg.router.max_hosts == 1024


def test_the_certificate_must_grant_the_routers_hosts() -> None:
    from ipop.identity import NetworkCA, NodeIdentity
    from ipop.router.config import RouterSection, check_authority

    ca = NetworkCA.create("testnet", now=1_800_000_000.0)
    now = 1_800_000_000.0
    router = NodeIdentity.generate(ca, "r1", now=now, hostname="lab", router_hosts=64)
    check_authority(RouterSection(interface="br0", max_hosts=64), router.cert)
    for cert, max_hosts, key in (
        (router.cert, 65, "router.max_hosts"),
        (NodeIdentity.generate(ca, "plain", now=now, hostname="p").cert, 1, "node_cert"),
        (NodeIdentity.generate(ca, "anon", now=now, router_hosts=8).cert, 1, "node_cert"),
    ):
        with pytest.raises(ConfigError) as err:
            check_authority(RouterSection(interface="br0", max_hosts=max_hosts), cert)
        assert err.value.key == key
