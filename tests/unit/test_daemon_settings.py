"""ipop.aio.settings.DaemonSettings: the daemon's settings flattened from a node config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipop.aio.settings import DaemonSettings
from ipop.config import DhtConfig, IdentityConfig, NodeConfig, StunConfig, TapConfig
from ipop.errors import ConfigError
from ipop.types import Endpoint


def _config(**kw: object) -> NodeConfig:
    return NodeConfig(
        bundle=Path("/etc/ipop/alice.bundle.toml"),
        state_dir=Path("/srv/ipop"),
        listen=Endpoint("198.51.100.20", 5901),
        tap=TapConfig(name="vpn-1", addressing="dhcp", mtu=1380),
        dht=DhtConfig(lease_s=600),
        stun=StunConfig(
            servers=(Endpoint("203.0.113.30", 3478),), serve=True, alternate="off", alt_port=3479
        ),
        identity=IdentityConfig(crl=Path("/etc/ipop/net.crl.pem")),
        **kw,  # type: ignore[arg-type]
    )


def test_every_setting_comes_from_its_config_key() -> None:
    s = DaemonSettings.from_config(_config(), bundle_hostname="alice")
    assert s == DaemonSettings(
        listen=Endpoint("198.51.100.20", 5901),
        state_dir=Path("/srv/ipop"),
        tap_name="vpn-1",
        tap_mtu=1380,
        addressing="dhcp",
        hostname="alice",  # the certificate's
        lease_s=600.0,
        stun_servers=(Endpoint("203.0.113.30", 3478),),
        stun_serve=True,
        stun_alternate="off",
        stun_alt_port=3479,
        crl_file=Path("/etc/ipop/net.crl.pem"),
    )


def test_a_hostname_other_than_the_certificates_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="differs from the certificate"):
        DaemonSettings.from_config(_config(hostname="mallory"), bundle_hostname="alice")
