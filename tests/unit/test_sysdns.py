"""Split DNS with systemd-resolved (ipop.aio.sysdns): the resolvectl commands issued on start,
on stop and on a failed start, with a recording fake resolvectl; and the daemon's use of it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace

import pytest

from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.aio.sysdns import (
    ResolvedLink,
    SystemDnsError,
    register_commands,
    routing_domains,
    run_command,
    system_dns_for,
)
from ipop.errors import ConfigError
from ipop.testing.fake_resolvectl import RecordingRunner
from ipop.testing.identities import make_bundle, member_bundles
from ipop.types import Endpoint

GW = IPv4Address("100.64.0.1")
SUBNET = IPv4Network("100.64.0.0/10")
DOMAINS = ("~ipop", "~64.100.in-addr.arpa")


def test_routing_domains_are_the_suffix_and_the_subnets_reverse_zones_never_the_root() -> None:
    assert routing_domains("ipop", IPv4Network("100.64.0.0/16")) == DOMAINS
    assert routing_domains("lab.ipop.", IPv4Network("100.64.1.0/24")) == (
        "~lab.ipop",
        "~1.64.100.in-addr.arpa",
    )
    ten = routing_domains("ipop", SUBNET)
    assert len(ten) == 1 + 64 and ten[1] == "~64.100.in-addr.arpa"
    assert ten[-1] == "~127.100.in-addr.arpa"
    # A /20 is routed as its 16 /24 zones, not as the /16 around it (other people's space).
    twenty = routing_domains("ipop", IPv4Network("100.64.16.0/20"))
    assert twenty[1:] == tuple(f"~{i}.64.100.in-addr.arpa" for i in range(16, 32))
    # Too many zones: only the suffix.
    assert routing_domains("ipop", IPv4Network("100.0.0.0/9")) == ("~ipop",)
    assert all(d not in ("~", "~.") for d in ten)


def test_register_commands_never_make_the_link_a_default_route() -> None:
    cmds = register_commands("ipop0", GW, DOMAINS)
    assert cmds[0] == ["resolvectl", "revert", "ipop0"]  # a killed predecessor's state first
    assert ["resolvectl", "dns", "ipop0", "100.64.0.1"] in cmds
    assert ["resolvectl", "domain", "ipop0", *DOMAINS] in cmds
    assert ["resolvectl", "default-route", "ipop0", "false"] in cmds
    with pytest.raises(ValueError, match="root domain"):
        register_commands("ipop0", GW, ["~ipop", "~."])


def test_start_issues_revert_then_the_settings_and_stop_reverts() -> None:
    fake = RecordingRunner()
    link = ResolvedLink(fake)
    asyncio.run(link.register("ipop0", GW, DOMAINS))
    assert fake.verbs() == ["revert", "dns", "domain", "default-route", "llmnr", "mdns", "dnssec"]
    assert fake.commands == register_commands("ipop0", GW, DOMAINS)
    asyncio.run(link.unregister())
    assert fake.commands[-1] == ["resolvectl", "revert", "ipop0"]
    # Stopping twice (or without a start) issues nothing more.
    n = len(fake.commands)
    asyncio.run(link.unregister())
    asyncio.run(ResolvedLink(fake).unregister())
    assert len(fake.commands) == n


def test_a_failed_start_reverts_what_it_set_and_says_which_command_and_why() -> None:
    fake = RecordingRunner(fail=["domain"])
    link = ResolvedLink(fake)
    with pytest.raises(SystemDnsError) as err:
        asyncio.run(link.register("ipop0", GW, DOMAINS))
    msg = str(err.value)
    assert "\n" not in msg and "'resolvectl domain ipop0 ~ipop" in msg and "not known" in msg
    # No DNS server left on the link without its domain limits: reverted, and nothing after.
    assert fake.verbs() == ["revert", "dns", "domain", "revert"]
    asyncio.run(link.unregister())
    assert fake.verbs()[-1] == "revert" and len(fake.commands) == 4


def test_system_dns_for_each_mode() -> None:
    fake = RecordingRunner()
    assert system_dns_for("off", dns_enabled=True, probe=lambda: True) is None
    assert system_dns_for("auto", dns_enabled=True, probe=lambda: False) is None
    assert system_dns_for("auto", dns_enabled=False, probe=lambda: True) is None
    made = system_dns_for("auto", dns_enabled=True, probe=lambda: True, runner=fake)
    assert isinstance(made, ResolvedLink)
    assert isinstance(
        system_dns_for("resolved", dns_enabled=True, probe=lambda: True), ResolvedLink
    )
    with pytest.raises(ConfigError) as err:
        system_dns_for("resolved", dns_enabled=True, probe=lambda: False)
    assert err.value.key == "dns.system" and "systemd-resolved is not running" in str(err.value)
    assert "dnsmasq" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"dns\.enabled = true"):
        system_dns_for("resolved", dns_enabled=False, probe=lambda: True)


def test_run_command_reports_a_missing_program_and_a_failure() -> None:
    rc, err = asyncio.run(run_command(["/nonexistent/resolvectl", "revert", "x"]))
    assert rc == 127 and err
    rc, err = asyncio.run(run_command(["sh", "-c", "echo nope >&2; exit 3"]))
    assert (rc, err) == (3, "nope")


def _daemon(tmp_path: Path, fake: RecordingRunner) -> Daemon:
    bundle = make_bundle(
        "lab-net",
        "n1",
        subnet=IPv4Network("100.64.0.0/16"),
        bootstrap=(Endpoint("203.0.113.10", 5800),),
        now=time.time(),
    )
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    d = Daemon(bundle, settings, system_dns=ResolvedLink(fake))
    d.tap = SimpleNamespace(name="ipop7", close=lambda: None)  # type: ignore[assignment]
    return d


def test_the_daemon_registers_its_tap_gateway_and_suffix_and_reverts_first_at_stop(
    tmp_path: Path,
) -> None:
    fake = RecordingRunner()
    d = _daemon(tmp_path, fake)

    async def run() -> None:
        await d._register_dns()
        assert fake.commands[1:3] == [
            ["resolvectl", "dns", "ipop7", "100.64.0.1"],
            ["resolvectl", "domain", "ipop7", "~ipop", "~64.100.in-addr.arpa"],
        ]
        await d._shutdown()

    asyncio.run(run())
    assert fake.commands[-1] == ["resolvectl", "revert", "ipop7"]
    assert {"dns.system_registered": 1} in d.local_view(now=time.time()).counters


def test_a_daemon_in_two_networks_routes_both_suffixes_to_its_first_gateway(
    tmp_path: Path,
) -> None:
    """Its first gateway answers the second network's names too (tools/ipopd.py gives it the
    zone), so resolved must send them there: before, only ``~ipop`` was routed and
    ``b1.other`` went to the host's usual resolver, which knows nothing of it."""
    now = time.time()
    boot = (Endpoint("203.0.113.10", 5800),)
    nets = [("labnet", IPv4Network("100.64.0.0/16")), ("othernet", IPv4Network("100.65.0.0/16"))]
    first, second = member_bundles(nets, "ab", overlay="shared", bootstrap=boot, now=now)
    fake = RecordingRunner()
    settings = DaemonSettings(listen=Endpoint("127.0.0.1", 0), state_dir=tmp_path)
    d = Daemon(
        first,
        settings,
        system_dns=ResolvedLink(fake),
        networks=[(dataclasses.replace(second, dns_suffix="other"), "ipop8")],
    )
    d.tap = SimpleNamespace(name="ipop7", close=lambda: None)  # type: ignore[assignment]
    asyncio.run(d._register_dns())
    assert ["resolvectl", "dns", "ipop7", "100.64.0.1"] in fake.commands
    domains = ["~ipop", "~64.100.in-addr.arpa", "~other", "~65.100.in-addr.arpa"]
    assert ["resolvectl", "domain", "ipop7", *domains] in fake.commands


def test_a_failed_registration_is_counted_and_the_daemon_goes_on(tmp_path: Path) -> None:
    fake = RecordingRunner(fail=["dns"])
    d = _daemon(tmp_path, fake)
    asyncio.run(d._register_dns())
    assert {"dns.system_failed": 1} in d.local_view(now=time.time()).counters
    assert fake.verbs() == ["revert", "dns", "revert"]
    asyncio.run(d._shutdown())
    assert fake.verbs() == ["revert", "dns", "revert"]  # nothing left to remove


def test_a_stop_during_registration_still_reverts_the_link() -> None:
    class Stuck(RecordingRunner):
        """resolvectl that never answers 'domain' (resolved wedged)."""

        async def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
            rc = await super().__call__(argv)
            if argv[1] == "domain":
                await asyncio.Event().wait()
            return rc

    fake = Stuck()
    link = ResolvedLink(fake)

    async def run() -> None:
        task = asyncio.create_task(link.register("ipop0", GW, DOMAINS))
        while fake.verbs()[-1:] != ["domain"]:
            await asyncio.sleep(0)
        task.cancel()  # what the daemon's TaskSet does at stop
        with pytest.raises(asyncio.CancelledError):
            await task
        await link.unregister()

    asyncio.run(run())
    assert fake.verbs() == ["revert", "dns", "domain", "revert"]
