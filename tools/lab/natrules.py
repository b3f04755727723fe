"""Netfilter rule sets that make a Linux router behave as each RFC 4787 NAT kind.

This module owns the kind → rules mapping and nothing else (pure functions, no I/O). The rule
sets are exactly those measured by ``/work/shared/reference/nat_lab.sh`` on these machines:

=======================  ==========================================  ===========  =============
kind                     rules                                       mapping      filtering
=======================  ==========================================  ===========  =============
port-restricted-cone     MASQUERADE + INPUT drop of NEW from WAN     independent  addr and port
restricted-cone          + remember contacted addresses (120 s),     independent  address
                         DNAT inbound only from those to the host
full-cone                + DNAT everything from WAN to the host      independent  none
symmetric                MASQUERADE --random + INPUT drop            per dest.    addr and port
=======================  ==========================================  ===========  =============

Why the INPUT drop: with bare MASQUERADE a peer's early punch reaches the router before the LAN
host has sent anything; conntrack files it as a flow to the router itself and the host's own
packets then get another source port (punching through two such NATs worked 1 time in 6). The
drop keeps the port. ``full-cone`` and ``restricted-cone`` serve a single LAN host and rely on
MASQUERADE keeping the source port.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from ipop.nat.kinds import BUILDABLE_KINDS

NAT_KINDS = BUILDABLE_KINDS
RECENT_SECONDS = 120
NFT_TABLE = "ipop_lab"


def _check(kind: str) -> None:
    if kind not in NAT_KINDS:
        # Topology validation rejects unknown kinds with a ConfigError first; reaching here is
        # a programming error.
        raise ValueError(f"unknown NAT kind {kind!r}")


def iptables_rules(
    kind: str, *, lan_host: IPv4Address, wan: str = "wan0", lan: str = "lan0"
) -> list[list[str]]:
    """The ``iptables`` argument lists (without the program name) for ``kind``, in order."""
    _check(kind)
    masq = ["-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE"]
    if kind == "symmetric":
        masq.append("--random")
    rules = [masq]
    if kind == "full-cone":
        rules.append(
            [
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                wan,
                "-j",
                "DNAT",
                "--to-destination",
                str(lan_host),
            ]
        )
    elif kind == "restricted-cone":
        rules.append(
            [
                "-A",
                "FORWARD",
                "-i",
                lan,
                "-o",
                wan,
                "-m",
                "recent",
                "--name",
                "seen",
                "--rdest",
                "--set",
            ]
        )
        rules.append(
            [
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                wan,
                "-m",
                "recent",
                "--name",
                "seen",
                "--rsource",
                "--rcheck",
                "--seconds",
                str(RECENT_SECONDS),
                "-j",
                "DNAT",
                "--to-destination",
                str(lan_host),
            ]
        )
    rules.append(["-A", "INPUT", "-i", wan, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"])
    return rules


def nft_ruleset(kind: str, *, lan_host: IPv4Address, wan: str = "wan0", lan: str = "lan0") -> str:
    """The same behaviour as one ``nft -f`` ruleset (table ``ip ipop_lab``)."""
    _check(kind)
    masq = {"symmetric": "masquerade random"}.get(kind, "masquerade")
    lines = [f"table ip {NFT_TABLE} {{"]
    pre = ""
    if kind == "full-cone":
        pre = f'iifname "{wan}" dnat to {lan_host}'
    elif kind == "restricted-cone":
        lines.append(f"  set seen {{ type ipv4_addr; flags timeout; timeout {RECENT_SECONDS}s; }}")
        lines.append(
            "  chain forward { type filter hook forward priority filter; "
            f'iifname "{lan}" oifname "{wan}" update @seen {{ ip daddr }}; }}'
        )
        pre = f'iifname "{wan}" ip saddr @seen dnat to {lan_host}'
    lines.append(
        "  chain postrouting { type nat hook postrouting priority srcnat; "
        f'oifname "{wan}" {masq}; }}'
    )
    if pre:
        lines.append(f"  chain prerouting {{ type nat hook prerouting priority dstnat; {pre}; }}")
    lines.append(
        "  chain input { type filter hook input priority filter; "
        f'iifname "{wan}" ct state new drop; }}'
    )
    lines.append("}")
    return "\n".join(lines) + "\n"
