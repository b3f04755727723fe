"""Real DHCP and DNS clients against TapServices on a real TAP, inside a network namespace.

A helper process (the script below, run under ``ip netns exec``) opens a TAP in a fresh
namespace and pumps its frames through :class:`ipop.dhcp_dns.services.TapServicesRunner`, as the
daemon will. Then ISC dhclient and busybox udhcpc get an address from it, and dig resolves
address names, a registered hostname and an unknown one through the virtual gateway.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TAPs"),
]

TAP = "ipop0"
VIP = "100.64.1.2"

HELPER = r"""
import asyncio, json, os, signal, sys, time
from ipaddress import IPv4Address, IPv4Network

import pytun

from ipop.dhcp_dns.dhcp import AddressWanted
from ipop.dhcp_dns.services import TapServices, TapServicesRunner
from ipop.vnet.arp import ArpResponder

tap_name, vip = sys.argv[1], IPv4Address(sys.argv[2])
HOSTS = {"alice-laptop": IPv4Address("100.64.1.3")}


async def main() -> None:
    tap = pytun.TunTapDevice(name=tap_name, flags=pytun.IFF_TAP | pytun.IFF_NO_PI)
    tap.up()
    fd = tap.fileno()
    os.set_blocking(fd, False)
    subnet = IPv4Network("100.64.0.0/10")
    # As the daemon does: it answers ARP on its TAP, the services get the other frames.
    arp = ArpResponder(vip, subnet)
    services = TapServices.for_node(subnet, mtu=1400, lease_s=600)
    loop = asyncio.get_running_loop()

    def on_event(ev: object) -> None:
        # The daemon would allocate in the DHT here; the test's node always gets VIP.
        if isinstance(ev, AddressWanted):
            services.dhcp.assign(ev.mac, vip)
            print("ASSIGNED", ev.mac.hex(), flush=True)

    async def lookup(name: str) -> IPv4Address | None:
        await asyncio.sleep(0)
        return HOSTS.get(name)

    runner = TapServicesRunner(
        services, lambda f: os.write(fd, f), lookup, None, on_event=on_event
    )

    def readable() -> None:
        while True:
            try:
                frame = os.read(fd, 65536)
            except BlockingIOError:
                return
            if frame[12:14] == b"\x08\x06":
                reply = arp.reply(frame)
                if reply is not None:
                    os.write(fd, reply)
                continue
            runner.feed(frame, now=time.time())

    loop.add_reader(fd, readable)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("READY", flush=True)
    await stop.wait()
    loop.remove_reader(fd)
    await runner.close()
    tap.close()
    drops = {
        "arp": dict(arp.drops),
        "dhcp": dict(services.dhcp.drops),
        "dns": dict(services.dns.drops),
        "services": dict(services.drops),
    }
    print("DROPS", json.dumps(drops), flush=True)


asyncio.run(main())
"""

UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc script: record the lease and configure the address (nothing else).
echo "$1 ip=$ip subnet=$subnet dns=$dns domain=$domain mtu=$mtu lease=$lease" >> "{out}"
if [ "$1" = bound ] || [ "$1" = renew ]; then
    ip addr replace "$ip/$subnet" dev "$interface"
fi
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
# dhclient-script replacement: record what dhclient got, touch no system state.
echo "$reason ip=$new_ip_address mask=$new_subnet_mask dns=$new_domain_name_servers \
domain=$new_domain_name" >> "{out}"
exit 0
"""


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["timeout", str(int(timeout)), *cmd], capture_output=True, text=True, check=False
    )


def _wait_line(proc: subprocess.Popen[str], prefix: str, deadline_s: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith(prefix):
                    return line.strip()
    finally:
        sel.close()
    raise AssertionError(f"helper never printed {prefix!r} (exit code {proc.poll()})")


def _poll_file(path: Path, needle: str, deadline_s: float) -> str:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if needle in text:
                return text
        time.sleep(0.1)  # polling a condition with a deadline, not synchronising by sleep
    raise AssertionError(f"{needle!r} never appeared in {path}")


def _stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ipt{os.getpid() % 10000:04d}dhcpx"  # no "-": outside the lab prefixes
    res = _run("ip", "netns", "add", name)
    assert res.returncode == 0, res.stderr
    try:
        yield name
    finally:
        _run("ip", "netns", "del", name)


@pytest.fixture
def helper(netns: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "tap_helper.py"
    script.write_text(HELPER)
    proc = subprocess.Popen(
        ["timeout", "240", "ip", "netns", "exec", netns, sys.executable, str(script), TAP, VIP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        _wait_line(proc, "READY", 30)
        yield proc
    finally:
        _stop(proc)


def test_dhcp_and_dns_through_tap(
    netns: str, helper: subprocess.Popen[str], tmp_path: Path
) -> None:
    for tool in ("dig", "udhcpc", "dhclient"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} is not installed (apt-get install dnsutils udhcpc isc-dhcp-client)"
            )
    ns = ("ip", "netns", "exec", netns)

    # ISC dhclient: the first DISCOVER is unanswered (AddressWanted), its retransmission
    # gets the offer. -d keeps it in the foreground so we can stop it ourselves.
    dh_out = tmp_path / "dhclient.out"
    dh_script = tmp_path / "dhclient-script"
    dh_script.write_text(DHCLIENT_SCRIPT.format(out=dh_out))
    dh_script.chmod(0o755)
    dhclient = subprocess.Popen(
        [
            "timeout", "90", *ns, "dhclient", "-d", "-1", "-v",
            "-sf", str(dh_script),
            "-lf", str(tmp_path / "dhclient.leases"),
            "-pf", str(tmp_path / "dhclient.pid"),
            TAP,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        text = _poll_file(dh_out, "BOUND", 60)
    finally:
        _stop(dhclient)
    bound = next(line for line in text.splitlines() if line.startswith("BOUND"))
    assert f"ip={VIP}" in bound and "mask=255.192.0.0" in bound
    assert "dns=100.64.0.1" in bound and "domain=ipop" in bound
    _wait_line(helper, "ASSIGNED", 5)

    # busybox udhcpc: same MAC, so the binding exists and the first DISCOVER is answered.
    u_out = tmp_path / "udhcpc.out"
    u_script = tmp_path / "udhcpc-script"
    u_script.write_text(UDHCPC_SCRIPT.format(out=u_out))
    u_script.chmod(0o755)
    res = _run(
        *ns, "udhcpc", "-i", TAP, "-n", "-q", "-f", "-t", "5", "-s", str(u_script), timeout=60
    )
    assert res.returncode == 0, res.stderr
    bound = next(line for line in u_out.read_text().splitlines() if line.startswith("bound"))
    assert f"ip={VIP} " in bound and "subnet=255.192.0.0" in bound
    assert "dns=100.64.0.1" in bound and "domain=ipop" in bound
    assert "mtu=1400" in bound and "lease=600" in bound
    addr = _run(*ns, "ip", "-o", "-4", "addr", "show", "dev", TAP)
    assert f"inet {VIP}/10" in addr.stdout, addr.stdout

    # DNS through the gateway: ARP for 100.64.0.1 is answered from the virtual MAC first.
    dig = (*ns, "dig", "@100.64.0.1", "+time=2", "+tries=2")
    res = _run(*dig, "C064001002.ipop", "+short")
    assert res.stdout.strip() == VIP, res.stdout + res.stderr
    res = _run(*dig, "alice-laptop.ipop", "+short")
    assert res.stdout.strip() == "100.64.1.3", res.stdout + res.stderr
    res = _run(*dig, "someone.ipop")
    assert "status: NXDOMAIN" in res.stdout, res.stdout
    res = _run(*dig, "-x", VIP, "+short")
    assert res.stdout.strip() == "C064001002.ipop.", res.stdout
    res = _run(*dig, "example.com")
    assert "status: REFUSED" in res.stdout, res.stdout
    neigh = _run(*ns, "ip", "neigh", "show", "100.64.0.1", "dev", TAP)
    assert "02:1b:0a:00:00:01" in neigh.stdout, neigh.stdout

    # The helper shuts down cleanly and nothing it saw was garbage.
    helper.terminate()
    drops = _wait_line(helper, "DROPS", 15)
    assert '"services": {}' in drops and '"dns": {}' in drops, drops
