"""The lane's routes: which peers the native thread may send to and deliver from, kept true
by Python.

The lane (:mod:`ipop.link.lane`) acts only where a route says; this module decides the routes
and nothing else. A peer is routed when the data plane itself would seal its frames and
deliver its packets on the same keys and path: the packet filter names it as the owner (live,
not this node: :meth:`ipop.vnet.filter.PacketFilter.owner_until`) of vIPs the data plane
sealed frames to (``wanted``; at most :data:`ipop.link.lane.VIPS_MAX` per peer), and the core
lends its current keys on the main socket's direct path with a probed path MTU
(:meth:`ipop.core.NodeCore.lane_keys`). A route carries what the lane checks per packet: the
peer's vIPs (destinations out, sources in), the largest frame that fits the path, the keys'
rekey threshold and message limit, and an expiry (the owner answers' or the keys' rekey time,
whichever is first).

:meth:`LaneRoutes.sync` runs after every batch the data plane handles and every
:data:`ipop.timing.LANE_SYNC_S` (the lane's traffic alone wakes no Python): it counts what the
lane did as the link's own (:meth:`ipop.core.NodeCore.lane_did`), re-derives every route
(O(routes), a few dict reads each), changes or removes those whose answer changed, and routes
the peers of the vIPs sealed for since the last sync. Between a change in Python (a rekey, a
path change, a revocation) and the next sync, the lane may go on with the previous route for
the rest of that batch: as the data plane itself may with a batch it read before the change.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ipop.core import NodeCore
from ipop.link.keys import Keypair
from ipop.link.lane import FRAME_MAX, VIPS_MAX, Counts, Lane
from ipop.link.peer import Peer
from ipop.types import NodeId
from ipop.vnet.filter import PacketFilter

__all__ = ["LaneRoutes"]


class _Route(tuple[NodeId, Keypair[Peer], str, int, int, int, float, tuple[int, ...], int]):
    """(owner, keys, host, port, max_frame, counter_limit, expires on the data plane's clock,
    vips, recv_limit): one route, compared whole (keys by identity) to see what changed."""


class LaneRoutes:
    """The routes of one lane (see the module docstring)."""

    def __init__(
        self,
        lane: Lane,
        core: NodeCore,
        packet_filter: PacketFilter,
        *,
        growth: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``growth``: how much larger than the frame read its DATA datagram is (the path
        MTU limits datagrams; a route limits frames)."""
        self.lane = lane
        self._core = core
        self._filter = packet_filter
        self._growth = growth
        self._monotonic = monotonic
        # By the owner's id (its int): the route the lane holds.
        self.routes: dict[int, _Route | None] = {}
        # vIPs (4 bytes) the data plane sealed frames to since the last sync: candidates.
        self.wanted: set[bytes] = set()
        # Each routed owner's vIPs (4 bytes), as wanted.
        self._vips: dict[int, set[bytes]] = {}

    def set_local(self, accepted: set[bytes], eth: bytes) -> None:
        """This node's addresses and the header the data plane writes packets behind (the
        data plane calls it when either changes)."""
        self.lane.set_local(
            tuple(sorted(int.from_bytes(v, "big") for v in accepted))[:VIPS_MAX], eth
        )

    def sync(self, now: float) -> None:
        """Count what the lane did, then bring every route up to date (``now``: the data
        plane's clock)."""
        skew = now - self._monotonic()  # the lane's times are monotonic
        routes = self.routes
        if routes:
            owners = {r[1].local_index: r[0] for r in routes.values() if r is not None}
            for counts in self.lane.harvest():
                owner = owners.get(counts[0])
                if owner is not None:
                    self._count(owner, counts, skew)
        if self.wanted:
            for dip in self.wanted:
                got = self._filter.owner_until(dip, now)
                if got is not None:
                    vips = self._vips.setdefault(got[0].value, set())
                    if len(vips) < VIPS_MAX:
                        vips.add(dip)
                        routes.setdefault(got[0].value, None)  # routed below
            self.wanted.clear()
        for key, route in list(routes.items()):
            want = self._want(key, now)
            if want is None and route is None:  # a candidate that cannot be routed (yet)
                self._forget(key)
            elif want != route:
                self._set(key, route, want, skew)

    def clear(self, now: float) -> None:
        """Unroute everything (the lane stops), counting what it did."""
        skew = now - self._monotonic()
        for key, route in list(self.routes.items()):
            if route is not None:
                self._set(key, route, None, skew)

    def _want(self, key: int, now: float) -> _Route | None:
        owner = None
        until = float("inf")
        vips = []
        for dip in self._vips.get(key, ()):
            got = self._filter.owner_until(dip, now)
            if got is not None and got[0].value == key:
                owner, until = got[0], min(until, got[1])
                vips.append(int.from_bytes(dip, "big"))
        if owner is None:
            return None
        keys = self._core.lane_keys(owner)
        if keys is None:
            return None
        kp, ep, limit, recv_limit = keys
        if kp.send_counter >= kp.rekey_counter_at or now >= kp.rekey_at:
            return None  # the data plane seals, and starts the rekey
        max_frame = min(limit - self._growth, FRAME_MAX)
        expires = min(until, kp.rekey_at)
        return _Route(
            (owner, kp, ep.host, ep.port, max_frame, kp.rekey_counter_at, expires,
             tuple(sorted(vips)), recv_limit)
        )  # fmt: skip

    def _set(self, key: int, old: _Route | None, new: _Route | None, skew: float) -> None:
        """Make ``key``'s route ``new`` (None: none); what the lane did with keys it no longer
        holds is counted first."""
        if old is not None and (new is None or new[1] is not old[1]):
            self._unroute(old, skew)
            old = None
        if new is None:
            self._forget(key)
            return
        _, kp, host, port, max_frame, counter_limit, expires, vips, recv_limit = new
        try:
            ok = self.lane.route(
                kp.local_index, vips, kp.send_batch, kp.remote_index, host, port, max_frame,
                counter_limit, expires - skew, kp.recv_batch, kp.replay, recv_limit,
            )  # fmt: skip
        except (ValueError, TypeError):  # not an IPv4 address, a path MTU below a frame...
            ok = False
        if ok:
            self.routes[key] = new
            return
        if old is not None:
            self._unroute(old, skew)
        self._forget(key)

    def _forget(self, key: int) -> None:
        del self.routes[key]
        self._vips.pop(key, None)

    def _unroute(self, route: _Route, skew: float) -> None:
        counts = self.lane.unroute(route[1].local_index)
        if counts is not None:
            self._count(route[0], counts, skew)

    def _count(self, owner: NodeId, c: Counts, skew: float) -> None:
        if c[1] or c[5]:
            self._core.lane_did(
                owner,
                (c[1], c[2], c[3] + skew, c[4] + skew),
                (c[5], c[6], c[7] + skew, c[8] + skew),
            )


class Baton:
    """Who reads one of the lane's fds: its thread, or, from the first frame (datagram) it
    handed up until Python finds the fd empty, Python itself. A burst is then read by Python
    in batches straight from the fd, as without the lane, rather than a record at a time
    through the hand-up socket; an isolated packet stays the thread's."""

    def __init__(
        self,
        lane: Lane,
        which: int,
        fd: int,
        watch: Callable[[int], None],
        unwatch: Callable[[int], object],
    ) -> None:
        """``which``: 0 the TAP, 1 the UDP socket (``fd``); ``watch``/``unwatch``: register
        the data plane's reader of ``fd`` (while Python holds the baton and has not found
        the fd empty), and remove it."""
        self._lane = lane
        self._which = which
        self.fd = fd
        self._watch = watch
        self._unwatch = unwatch
        self._watching = False
        # Records read from the hand-up socket since the baton came to Python: it holds the
        # baton while this is not 0.
        self.records = 0
        # The fd itself was read until empty since the last settle().
        self.dry = False

    def settle(self) -> None:
        """After a drain: the baton back to the lane if the fd was found empty (it polls
        the fd again), else Python keeps reading it when it is readable."""
        if self.records:
            if self.dry:
                self._lane.done(self._which, self.records)
                self.records = 0
                if self._watching:
                    self._unwatch(self.fd)
                    self._watching = False
            elif not self._watching:
                self._watch(self.fd)
                self._watching = True
        self.dry = False

    def close(self) -> None:
        if self._watching:
            self._unwatch(self.fd)
            self._watching = False
