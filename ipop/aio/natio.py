"""The I/O of NAT discovery and traversal: the sockets besides the overlay socket, and netcheck.

:class:`NatSockets` owns the sockets a node opens for NAT traversal next to its overlay
socket: the two STUN alternates a STUN-serving node with a second address binds to answer
CHANGE-REQUEST (:mod:`ipop.nat.stun`; what the agent answers from them leaves through
:meth:`NatSockets.send`, which the core calls as ``stun_alt_send``), and the punch sockets of
port guessing (:mod:`ipop.nat.portguess`, opened by :meth:`NatSockets.open_punch`). Their
errors are counted in the daemon's ``stats`` under the names they always had.

:func:`stun_transact` runs one Binding transaction of the core's STUN agent from the overlay
socket and :func:`netcheck` runs :func:`ipop.nat.netcheck.run_netcheck` over it (pystun3's
second opinion alongside, in threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence

from ipop.aio.sockets import LoopUdpSocket
from ipop.aio.stack import Node
from ipop.nat.netcheck import (
    PYSTUN3_TRAPS,
    NetcheckResult,
    SecondOpinion,
    pystun3_kind,
    run_netcheck,
)
from ipop.nat.stun import SOURCE_ALT_BOTH, SOURCE_ALT_PORT, StunAnswer
from ipop.types import Endpoint

__all__ = ["MAX_NETCHECK_PEERS", "NatSockets", "netcheck", "stun_transact"]

log = logging.getLogger("ipopd")

# A STUN transaction ends in the core (ipop.timing.STUN_TIMEOUT_S); this only bounds the wait.
STUN_DEADLINE_S = 5.0
STUN_POLL_S = 0.005
MAX_NETCHECK_PEERS = 8


class NatSockets:
    """The STUN alternates and punch sockets of one node; see the module docstring.

    ``listen_host``: the overlay socket's address (punch sockets bind to it); ``stats``: the
    daemon's counter their errors go to.
    """

    def __init__(self, listen_host: str, stats: Counter[str]) -> None:
        self.listen_host = listen_host
        self.stats = stats
        self._node: Node | None = None
        self._stun_socks: dict[int, socket.socket] = {}

    @property
    def alternates(self) -> dict[int, tuple[str, int]]:
        """The open STUN alternates: source (``SOURCE_ALT_*``) -> bound address."""
        return {source: sock.getsockname() for source, sock in self._stun_socks.items()}

    def open_alternates(
        self, node: Node, port: int, local: list[Endpoint], *, alternate: str, alt_port: int
    ) -> bool:
        """A STUN-serving node with a second address serves CHANGE-REQUEST: two more sockets,
        (first address, alt port) and (second address, alt port), read here; what the agent
        answers from them leaves through :meth:`send`. ``port``: the overlay socket's;
        ``alternate``: "auto" (the second of ``local``), "off", or the second address. False
        if none were opened (nothing to serve from, or a bind failed: logged)."""
        if alternate == "off" or not local:
            return False
        primary = Endpoint(local[0].host, port)
        if alternate == "auto":
            others = [ep.host for ep in local[1:] if ep.host != primary.host]
            if not others:
                return False
            alt_host = others[0]
        else:
            alt_host = alternate
        alt_port = alt_port or port + 1
        self._node = node
        loop = asyncio.get_running_loop()
        try:
            for source, host in ((SOURCE_ALT_PORT, primary.host), (SOURCE_ALT_BOTH, alt_host)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._stun_socks[source] = sock
                sock.bind((host, alt_port))
                sock.setblocking(False)
                loop.add_reader(sock.fileno(), self._readable, source, sock)
        except OSError as exc:
            log.warning("event=stun_alternate_failed error=%s", exc)
            self.close()
            return False
        node.core.stun.set_sources(primary, alt_port=alt_port, alt_host=alt_host)
        node.core.stun_alt_send = self.send
        log.info("event=stun_server primary=%s alternate=%s:%d", primary, alt_host, alt_port)
        return True

    def open_punch(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> LoopUdpSocket:
        """One more socket for port guessing (ipop.nat.portguess), on the overlay socket's
        address."""
        _raise_fd_limit()
        return LoopUdpSocket(self.listen_host, on_datagram, self.stats)

    def close(self) -> None:
        """Close the STUN alternates (punch sockets belong to port guessing, which closes
        them)."""
        socks, self._stun_socks = self._stun_socks, {}
        for sock in socks.values():
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _readable(self, source: int, sock: socket.socket) -> None:
        node = self._node
        if node is None:
            return
        now = time.time()
        for _ in range(64):  # bounded: the overlay socket must not starve
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.stats["stun_recv_error"] += 1
                break
            if data and data[0] < 4:
                node.core.stun.receive(data, Endpoint(addr[0], addr[1]), now=now, via=source)
            else:
                self.stats["stun_alt_not_stun"] += 1
        node.core.stun_flush()
        if node.driver is not None:
            node.driver.pump()

    def send(self, source: int, data: bytes, dst: Endpoint) -> None:
        """Send ``data`` to ``dst`` from the alternate ``source`` (counted if there is none)."""
        sock = self._stun_socks.get(source)
        if sock is None:
            self.stats["stun_no_socket"] += 1
            return
        try:
            sock.sendto(data, (dst.host, dst.port))
        except OSError:
            self.stats["stun_send_error"] += 1


async def stun_transact(
    node: Node, server: Endpoint, change_ip: bool, change_port: bool, *, pad: bool = True
) -> StunAnswer | None:
    """One Binding transaction from the overlay socket (retransmitted by the core).

    ``pad``: PADDING up to what an ipop server needs to answer (ipop.nat.stun); off for servers
    we did not write (an RFC 3489 server such as stund drops what it does not know)."""
    if node.driver is None:
        return None
    core = node.core
    key = core.stun.request(
        server, now=time.time(), change_ip=change_ip, change_port=change_port, pad=pad
    )
    core.stun_flush()
    node.driver.pump()
    deadline = time.monotonic() + STUN_DEADLINE_S
    while time.monotonic() < deadline:
        outcome = core.stun.take_result(key)
        if outcome is not None:
            return outcome.answer
        await asyncio.sleep(STUN_POLL_S)
    return None


async def netcheck(
    node: Node,
    *,
    local: Sequence[Endpoint],
    bootstrap: Sequence[Endpoint],
    servers: Sequence[Endpoint],
    second_opinion: bool,
) -> NetcheckResult:
    """Run :func:`ipop.nat.netcheck.run_netcheck` on ``node``'s socket: against the bootstrap
    nodes (but ourselves, ``local``) and ``servers`` (configured and asked for; not ipop, so
    unpadded), with up to :data:`MAX_NETCHECK_PEERS` linked peers; pystun3 alongside."""
    local = [Endpoint(ep.host, ep.port) for ep in local]
    extra = list(dict.fromkeys(servers))
    stun_servers = [ep for ep in bootstrap if ep not in local] + extra
    peers = [
        info.path
        for info in node.core.link.peers()
        if isinstance(info.path, Endpoint) and info.path not in stun_servers
    ]
    echoed = [ep for ep in node.core.overlay.endpoints() if ep not in local]
    opinions: list[asyncio.Future[SecondOpinion]] = []
    if second_opinion:
        source_ip = local[0].host if local else "0.0.0.0"
        opinions = [
            asyncio.ensure_future(asyncio.to_thread(_pystun3, ep, source_ip)) for ep in extra
        ]
    external = set(extra)

    async def transact(server: Endpoint, change_ip: bool, change_port: bool) -> StunAnswer | None:
        pad = server not in external
        return await stun_transact(node, server, change_ip, change_port, pad=pad)

    result = await run_netcheck(
        transact,
        servers=stun_servers,
        peers=peers[:MAX_NETCHECK_PEERS],
        local=local,
        echoed=echoed,
        gather=asyncio.gather,
    )
    if opinions:
        got = await asyncio.gather(*opinions)
        notes = result.notes
        if any(o.kind != result.nat for o in got):
            notes += ("pystun3 disagrees; its known traps: " + "; ".join(PYSTUN3_TRAPS),)
        result = dataclasses.replace(result, second_opinion=tuple(got), notes=notes)
    return result


def _pystun3(server: Endpoint, source_ip: str) -> SecondOpinion:
    """pystun3's verdict (blocking: run in a thread), bound to our own address, not 0.0.0.0:
    bound to the wildcard it cannot tell an open host from a full cone."""
    import stun  # pystun3; imported here because only netcheck needs it

    try:
        verdict, ext_ip, ext_port = stun.get_ip_info(
            source_ip=source_ip, source_port=0, stun_host=server.host, stun_port=server.port
        )
    except (OSError, ValueError, KeyError) as exc:
        return SecondOpinion(server=server, verdict=None, kind=None, error=str(exc))
    external = Endpoint(ext_ip, ext_port) if ext_ip and ext_port else None
    return SecondOpinion(
        server=server,
        verdict=str(verdict),
        kind=pystun3_kind(str(verdict)),
        external=external,
    )


@functools.cache
def _raise_fd_limit() -> None:
    """Port guessing holds BIRTHDAY_SOCKETS sockets: lift a low soft limit (systemd's 1024)
    toward the hard one, once per process; failing that, the sockets past the limit are
    counted."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
