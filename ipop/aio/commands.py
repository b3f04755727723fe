"""The control socket's commands carried out on a running :class:`ipop.aio.daemon.Daemon`.

:mod:`ipop.aio.control` owns the socket, its line protocol, the validation of each request and
the :class:`ipop.aio.control.ControlHandler` contract; this module owns what each command does
to the daemon: status, ping (resolve, owner lookup, overlay ping, its round trip remembered for
status), the user namespace of the DHT, name resolution, services (publish, list, withdraw:
:mod:`ipop.dht.publish`), CRL pushes and netcheck. A refusal is a
:class:`ipop.aio.control.CommandFailed` whose message the client prints as is.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ipop.aio.control import CommandFailed
from ipop.aio.daemon import Daemon
from ipop.dht.policy import MAX_USER_KEY
from ipop.dht.publish import PublishFailed, ServicePublisher, check_name, list_services
from ipop.dht.read import NoQuorum
from ipop.dht.record import user_key
from ipop.dht.seal import SEALED
from ipop.dht.srv import PROTOS, ServiceValue
from ipop.identity import CrlError
from ipop.nat.netcheck import NetcheckResult
from ipop.status import PingReply, Status
from ipop.types import Endpoint

__all__ = ["DaemonControl"]

log = logging.getLogger("ipopd")


class DaemonControl:
    """The control socket's handler (ipop.aio.control.ControlHandler) for a :class:`Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    async def status(self) -> Status:
        return self.d.status()

    async def ping(self, target: str, seq: int, timeout_s: float) -> PingReply:
        d = self.d
        try:
            vip = await d.resolve(target)
            if vip is None:
                raise CommandFailed(f"cannot resolve {target!r}")
            owner = await d.lookup_owner(vip)
        except NoQuorum as exc:
            raise CommandFailed(f"cannot tell who holds {target!r} now: {exc}") from None
        if owner is None:
            raise CommandFailed(f"no node holds {vip}")
        assert d.node is not None
        if owner == d.node.node_id:
            return PingReply(seq=seq, ok=True, rtt_ms=0.0, path="direct", hops=0)
        try:
            answer = await d.node.ping(owner, timeout_s=timeout_s)
        except TimeoutError:
            return PingReply(seq=seq, ok=False)
        d.rtts[owner] = (answer.rtt_s, time.time())
        path = d.path_to(owner) if answer.hops == 0 else "overlay"
        return PingReply(
            seq=seq,
            ok=True,
            rtt_ms=round(answer.rtt_s * 1000, 3),
            path=path,
            hops=answer.hops + 1,
        )

    async def dht_get(self, key: str) -> str | None:
        node = self.d.node
        if node is None or node.dht is None or not node.dht_ready.is_set():
            raise CommandFailed("the DHT has not joined yet")
        record = await node.dht.get(self._key(key))
        if record is None or record.tombstone:
            return None
        return record.value.decode("utf-8", "replace")

    async def dht_put(self, key: str, value: str, ttl_s: int) -> bool:
        node = self.d.node
        if node is None or node.dht is None or not node.dht_ready.is_set():
            raise CommandFailed("the DHT has not joined yet")
        data = value.encode()
        limit = node.dht.max_value_bytes(self.d.namespace)
        if len(data) > limit:
            raise CommandFailed(f"the value is {len(data)} bytes; the DHT holds {limit}")
        if not 1 <= len(key) <= MAX_USER_KEY or not key.isascii() or not key.isprintable():
            raise CommandFailed(f"a key is 1-{MAX_USER_KEY} printable ASCII characters")
        if key.startswith(SEALED):
            raise CommandFailed(f"a key must not start with {SEALED!r} (sealed records' mark)")
        return await node.dht.put(self._key(key), data, float(ttl_s))

    async def resolve(self, name: str) -> str | None:
        try:
            vip = await self.d.resolve(name)
        except NoQuorum as exc:
            raise CommandFailed(f"cannot resolve {name!r} now: {exc}") from None
        return str(vip) if vip is not None else None

    async def service_publish(
        self, name: str, port: int, proto: str, txt: list[str]
    ) -> dict[str, Any]:
        publisher = self._publisher()
        vip = self.d.vip
        assert vip is not None  # the publisher is made once the address is ours
        value = ServiceValue(vip, port, tuple(txt))
        try:
            slot = await publisher.publish(name, proto, value)
        except PublishFailed as exc:
            raise CommandFailed(str(exc)) from None
        return {**_value_dict(name, proto, value), "slot": slot}

    async def service_list(self, name: str, proto: str) -> list[dict[str, Any]]:
        """Every live instance of ``name`` (``proto`` "": both); ``name`` "": ours."""
        protos = PROTOS if proto == "" else (proto,)
        if name == "":
            return [
                _value_dict(n, p, v) for n, p, v in self._publisher().published() if p in protos
            ]
        node = self.d.node
        if node is None or node.dht is None or not node.dht_ready.is_set():
            raise CommandFailed("the DHT has not joined yet")
        out: list[dict[str, Any]] = []
        for p in protos:
            try:
                check_name(name, p)
            except PublishFailed as exc:
                raise CommandFailed(str(exc)) from None
            found = await list_services(node.dht, self.d.namespace, name, p, subnet=self.d.subnet)
            out.extend(i.to_dict() for i in found)
        return out

    async def service_withdraw(self, name: str, proto: str) -> bool:
        try:
            check_name(name, proto)
        except PublishFailed as exc:
            raise CommandFailed(str(exc)) from None
        return await self._publisher().withdraw(name, proto)

    def _publisher(self) -> ServicePublisher:
        if self.d.publisher is None:
            raise CommandFailed("the node has no address yet: try again once it is ready")
        return self.d.publisher

    async def crl_push(self, crl: str) -> int:
        d = self.d
        if d.node is None:
            raise CommandFailed("the node is not running yet")
        try:
            installed = d.node.apply_crl(crl.encode("ascii", "replace"))
        except CrlError as exc:
            raise CommandFailed(f"CRL refused: {exc.reason} ({exc})") from None
        log.info("event=crl_pushed number=%d", installed.number)
        return installed.number

    async def netcheck(self, servers: list[str], second_opinion: bool) -> NetcheckResult:
        eps = [Endpoint.parse(s, key="servers") for s in servers]
        return await self.d.netcheck(eps, second_opinion=second_opinion)

    def _key(self, key: str) -> str:
        # User keys are a kind of their own in this network's namespace: they cannot touch
        # ip/name records.
        return user_key(self.d.namespace, key)


def _value_dict(name: str, proto: str, value: ServiceValue) -> dict[str, Any]:
    return {
        "name": name,
        "proto": proto,
        "addr": str(value.addr),
        "port": value.port,
        "txt": list(value.txt),
    }
