"""Watching our own underlay addresses: the daemon's way to notice that it roamed.

:class:`AddressWatcher` owns one question, "did this host's set of local endpoints change?",
and answers it with a callback. It is a thin adapter: what counts as a local endpoint is the
caller's ``read`` coroutine (the daemon lists the host's IPv4 addresses outside the virtual
subnet, with the overlay socket's port), and what a change means is the core's business
(:meth:`ipop.core.NodeCore.local_endpoints_changed`).

How it notices: a netlink socket subscribed to RTMGRP_IPV4_IFADDR (new and deleted IPv4
addresses; no privileges needed) is read with ``loop.add_reader``. The messages themselves are
not parsed, only drained: any of them schedules one re-read ``ADDRWATCH_SETTLE_S`` later (a
DHCP renewal or an ``ip addr`` change sends several at once), and the callback runs only if
the re-read set differs from the last one. Where netlink cannot be opened (not Linux, a
sandbox), it polls ``read`` every ``ADDRWATCH_POLL_S`` instead. Why not pyroute2's event API:
the stdlib socket is all that is needed to learn *that* something changed, and the reading
is done by the same code that listed the addresses at start.

NAT rebinding (our public mapping changing while our own addresses stay) is invisible here:
peers report it (see :meth:`ipop.overlay.node.OverlayNode._on_observed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

from ipop import timing
from ipop.types import Endpoint

__all__ = ["AddressWatcher"]

log = logging.getLogger(__name__)

# <linux/rtnetlink.h>: the multicast group of IPv4 address changes (RTMGRP_IPV4_IFADDR).
RTMGRP_IPV4_IFADDR = 0x10
_NETLINK_ROUTE = 0  # NETLINK_ROUTE
_RECV_BYTES = 65536

ReadEndpoints = Callable[[], Awaitable[Sequence[Endpoint]]]
OnChange = Callable[[list[Endpoint]], None]


class AddressWatcher:
    """Calls ``on_change(endpoints)`` whenever ``read()`` gives a different list than before.

    :meth:`start` takes the list the caller already acted on as the baseline; :meth:`close`
    stops everything (idempotent). ``netlink=False`` forces polling (tests, odd platforms).
    """

    def __init__(
        self,
        read: ReadEndpoints,
        on_change: OnChange,
        *,
        netlink: bool = True,
        settle_s: float = timing.ADDRWATCH_SETTLE_S,
        poll_s: float = timing.ADDRWATCH_POLL_S,
    ) -> None:
        self._read = read
        self._on_change = on_change
        self._want_netlink = netlink
        self._settle_s = settle_s
        self._poll_s = poll_s
        self._current: list[Endpoint] = []
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.mode = "stopped"
        self.changes = 0

    def start(self, current: Sequence[Endpoint]) -> None:
        """Begin watching; ``current`` is what the node was told at start."""
        if self._task is not None:
            raise RuntimeError("AddressWatcher.start() called twice")
        self._current = list(current)
        loop = asyncio.get_running_loop()
        if self._want_netlink:
            self._sock = _open_netlink()
        if self._sock is not None:
            loop.add_reader(self._sock.fileno(), self._readable)
            self.mode = "netlink"
        else:
            self.mode = "poll"
        self._task = loop.create_task(self._run())

    def changed(self) -> None:
        """Something may have changed: re-read soon (what a netlink message triggers)."""
        self._wake.set()

    async def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.mode = "stopped"

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        # Drain: only the fact matters, not which address came or went.
        while True:
            try:
                if not sock.recv(_RECV_BYTES):
                    break
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ENOBUFS: messages lost; a re-read covers them
                log.debug("event=addrwatch_overrun error=%r", exc)
                break
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if self.mode == "netlink":
                await self._wake.wait()
                await asyncio.sleep(self._settle_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
            self._wake.clear()
            await self._check()

    async def _check(self) -> None:
        try:
            now = list(await self._read())
        except OSError as exc:  # the interface list is briefly unreadable: next time
            log.warning("event=addrwatch_read_failed error=%r", exc)
            return
        if now == self._current:
            return
        log.info(
            "event=local_endpoints_changed old=%s new=%s",
            ",".join(map(str, self._current)) or "-",
            ",".join(map(str, now)) or "-",
        )
        self._current = now
        self.changes += 1
        self._on_change(now)


def _open_netlink() -> socket.socket | None:
    """A non-blocking NETLINK_ROUTE socket in the IPv4 address group, or None (then: poll)."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        return None
    try:
        sock = socket.socket(family, socket.SOCK_RAW, _NETLINK_ROUTE)
    except OSError as exc:
        log.info("event=addrwatch_polling reason=%r", exc)
        return None
    try:
        sock.bind((0, RTMGRP_IPV4_IFADDR))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        log.info("event=addrwatch_polling reason=%r", exc)
        return None
    return sock
