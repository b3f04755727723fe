"""Split DNS: the host's resolver asks this node's gateway for ``*.<suffix>`` names only.

Where systemd-resolved runs, ipopd registers on its TAP link the gateway's address as the
link's DNS server and the network's DNS suffix (plus the subnet's reverse zones) as *routing
domains* (``~ipop``): resolved sends those names, and only those, to us; every other name
stays with the system's resolver. Nothing else on the host is touched. Where resolved does not
run, nothing is registered: the README's "Split DNS" section shows the dnsmasq setup that does
the same by hand.

What others got wrong, and what is done here instead (each a resolvectl verb below):

* resolved gives a link *DefaultRoute* unless told otherwise, so a VPN link that only wanted a
  suffix received every query the host made (netbird #3584, tailscale #20138): ours is set
  ``default-route false`` explicitly, always.
* state left behind after a crash: the daemon reverts the link before registering (a restart
  clears whatever a killed predecessor left), after a registration that failed half-way, and
  at stop. A killed daemon's TAP disappears with its file descriptor, and resolved forgets a
  link that is gone.
* names not under our suffix never reach us, so there is no loop with the host's resolver
  (tailscale #4955): our gateway forwards other names only to ``dns.upstream``, if any.
* LLMNR and mDNS would multicast the host's single-label lookups into the virtual network;
  DNSSEC validation would refuse our answers for a suffix the public root says does not exist:
  both are off on this link only.

Registration goes through ``resolvectl`` (shipped with resolved), run as a subprocess by a
:data:`CommandRunner`; tests pass a fake runner and read the commands. The choice of verbs and
arguments is pure (:func:`register_commands`, :func:`routing_domains`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Final, Protocol

from ipop.errors import ConfigError

__all__ = [
    "RESOLVED_RUNTIME_DIR",
    "CommandRunner",
    "ResolvedLink",
    "SystemDns",
    "SystemDnsError",
    "in_host_netns",
    "register_commands",
    "resolved_running",
    "routing_domains",
    "run_command",
    "system_dns_for",
]

log = logging.getLogger("ipopd")

# resolved's runtime directory: present while it runs (what `resolvectl` itself talks to lives
# under it); the same test other VPN clients use.
RESOLVED_RUNTIME_DIR: Final = "/run/systemd/resolve"
# A /10 has 64 /16 reverse zones; a subnet needing more than this many is not routed in reverse.
MAX_REVERSE_ZONES: Final = 64
# resolvectl answers at once or resolved is wedged: one command may take this long.
COMMAND_TIMEOUT_S: Final = 5.0

# (argv) -> (exit status, stderr text): how a command is run; a fake records them in tests.
CommandRunner = Callable[[Sequence[str]], Awaitable[tuple[int, str]]]


class SystemDnsError(Exception):
    """A registration command failed; the message is one line naming the command and why."""


class SystemDns(Protocol):
    """What the daemon asks of the host's resolver (the daemon owns this contract)."""

    async def register(self, link: str, server: IPv4Address, domains: Sequence[str]) -> None:
        """Send ``domains`` (routing domains, ``~`` prefixed) to ``server`` over ``link``."""
        ...

    async def unregister(self) -> None:
        """Remove whatever :meth:`register` set; nothing if it never did."""
        ...


def routing_domains(suffix: str, subnet: IPv4Network) -> tuple[str, ...]:
    """``~suffix`` and the reverse zones covering ``subnet`` (none if more than
    :data:`MAX_REVERSE_ZONES`); never ``~.``, which would route every name to us."""
    out = [f"~{suffix.strip('.')}"]
    # Reverse zones sit on octet boundaries: widen the prefix to the next multiple of 8.
    prefix = min(24, -(-subnet.prefixlen // 8) * 8)
    if prefix == 0 or 2 ** (prefix - subnet.prefixlen) > MAX_REVERSE_ZONES:
        return tuple(out)
    for net in subnet.subnets(new_prefix=prefix) if prefix > subnet.prefixlen else [subnet]:
        octets = str(net.network_address).split(".")[: prefix // 8]
        out.append("~" + ".".join(reversed(octets)) + ".in-addr.arpa")
    return tuple(out)


def register_commands(link: str, server: IPv4Address, domains: Sequence[str]) -> list[list[str]]:
    """The resolvectl commands that make ``link`` answer ``domains`` only, from ``server``."""
    if any(d.strip("~.") == "" for d in domains):
        raise ValueError("the root domain would route every name to this link")
    return [
        ["resolvectl", "revert", link],
        ["resolvectl", "dns", link, str(server)],
        ["resolvectl", "domain", link, *domains],
        ["resolvectl", "default-route", link, "false"],
        ["resolvectl", "llmnr", link, "no"],
        ["resolvectl", "mdns", link, "no"],
        ["resolvectl", "dnssec", link, "no"],
    ]


async def run_command(argv: Sequence[str]) -> tuple[int, str]:
    """Run ``argv`` without a shell; (exit status, stderr). 127 if it cannot be started."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        return 127, str(exc.strerror or exc)
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, f"no answer in {COMMAND_TIMEOUT_S:g} s"
    except asyncio.CancelledError:
        # Stopping mid-registration: end the command, so that the revert that follows cannot
        # be overtaken by it.
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, err.decode(errors="replace").strip()


class ResolvedLink:
    """Split DNS through systemd-resolved (``resolvectl``) on one link; see the module doc."""

    def __init__(self, runner: CommandRunner = run_command) -> None:
        self._run = runner
        self.link: str | None = None  # the link we may have touched (revert it at stop)

    async def _check(self, argv: Sequence[str]) -> None:
        rc, err = await self._run(argv)
        if rc != 0:
            why = err.splitlines()[-1] if err else f"exit status {rc}"
            raise SystemDnsError(f"'{' '.join(argv)}' failed: {why}")

    async def register(self, link: str, server: IPv4Address, domains: Sequence[str]) -> None:
        self.link = link
        try:
            for argv in register_commands(link, server, domains):
                await self._check(argv)
        except SystemDnsError:
            # Half a registration is worse than none (a DNS server with no domain limits).
            await self.unregister()
            raise
        log.info(
            "event=dns_registered via=resolved link=%s server=%s domains=%s",
            link,
            server,
            ",".join(domains),
        )

    async def unregister(self) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        rc, err = await self._run(["resolvectl", "revert", link])
        if rc != 0:
            log.warning("event=dns_revert_failed link=%s error=%r", link, err)
        else:
            log.info("event=dns_unregistered via=resolved link=%s", link)


def in_host_netns() -> bool:
    """False when this process is in another network namespace than PID 1 (the host's).

    resolved serves the host's namespace only, and resolvectl names a link by its index in
    *our* namespace: from a lab namespace it would configure whichever host link has that
    index. Unknown (no permission to look): assumed to be the host's, the usual case.
    """
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return True


def resolved_running() -> bool:
    """True where systemd-resolved runs for this network namespace and ``resolvectl`` is
    installed."""
    # shutil (with bz2 and lzma, ~4 ms of import CPU) only where resolved runs: most starts
    # never get here (dns.system = "off", or no resolved).
    import shutil

    return (
        os.path.isdir(RESOLVED_RUNTIME_DIR)
        and shutil.which("resolvectl") is not None
        and in_host_netns()
    )


def system_dns_for(
    mode: str,
    *,
    dns_enabled: bool,
    probe: Callable[[], bool] = resolved_running,
    runner: CommandRunner = run_command,
) -> SystemDns | None:
    """The split-DNS integration ``dns.system = mode`` asks for, or None (off).

    "auto": resolved where it runs, else nothing (a log line says where the manual setup is);
    "resolved": resolved, or a ConfigError if it does not run; "off": nothing.
    """
    if mode == "off":
        return None
    if not dns_enabled:
        if mode == "resolved":
            raise ConfigError(
                "dns.system",
                "is 'resolved' but dns.enabled is false, so there is no resolver to register",
                "set dns.enabled = true, or dns.system = 'off'",
            )
        return None
    if probe():
        return ResolvedLink(runner)
    if mode == "resolved":
        raise ConfigError(
            "dns.system",
            f"is 'resolved' but systemd-resolved is not running here (no {RESOLVED_RUNTIME_DIR},"
            " no resolvectl, or ipopd runs in another network namespace than the host's)",
            "start systemd-resolved, or set dns.system = 'auto' and use the README's "
            "dnsmasq setup (Split DNS)",
        )
    log.info("event=dns_system_manual why=no_systemd_resolved see=README#split-dns")
    return None
