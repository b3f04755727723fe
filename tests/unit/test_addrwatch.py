"""The address watcher: a changed set of local endpoints reaches the callback once, unchanged
ones never; netlink messages about IPv4 addresses wake it (checked for real in a network
namespace of our own, where we may change addresses)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap

import pytest

from ipop.aio.addrwatch import AddressWatcher
from ipop.testing.waiting import until
from ipop.types import Endpoint

A = Endpoint("198.51.100.7", 5800)
B = Endpoint("198.51.100.8", 5800)


def test_polling_reports_each_change_once() -> None:
    async def body() -> None:
        now: list[Endpoint] = [A]
        reads = 0
        seen: list[list[Endpoint]] = []

        async def read() -> list[Endpoint]:
            nonlocal reads
            reads += 1
            return list(now)

        w = AddressWatcher(read, seen.append, netlink=False, poll_s=0.01)
        w.start([A])
        assert w.mode == "poll"
        try:
            assert await until(lambda: reads >= 5, 5)
            assert seen == []  # the start list is the baseline: nothing to report
            now[:] = [B]
            assert await until(lambda: seen == [[B]], 5)
            r = reads
            assert await until(lambda: reads >= r + 5, 5)
            assert seen == [[B]] and w.changes == 1
            now[:] = []
            assert await until(lambda: seen == [[B], []], 5)
        finally:
            await w.close()
        assert w.mode == "stopped"

    asyncio.run(body())


def test_a_failed_read_is_skipped_and_a_wake_up_rereads() -> None:
    async def body() -> None:
        results: list[object] = [OSError("busy"), [B]]
        seen: list[list[Endpoint]] = []

        async def read() -> list[Endpoint]:
            r = results.pop(0) if len(results) > 1 else results[0]
            if isinstance(r, OSError):
                raise r
            assert isinstance(r, list)
            return r

        # A long poll interval: only changed() can make it re-read within the deadline.
        w = AddressWatcher(read, seen.append, netlink=False, poll_s=3600)
        w.start([A])
        try:
            w.changed()
            assert await until(lambda: len(results) == 1, 5)
            assert seen == []
            w.changed()
            assert await until(lambda: seen == [[B]], 5)
        finally:
            await w.close()

    asyncio.run(body())


_IN_NAMESPACE = textwrap.dedent(
    """
    import asyncio, subprocess
    from ipop.aio.addrwatch import AddressWatcher
    from ipop.types import Endpoint

    async def read():
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"],
                             capture_output=True, text=True, check=True).stdout
        return [Endpoint(f.split()[3].split("/")[0], 5800) for f in out.splitlines()
                if "127." not in f.split()[3]]

    async def main():
        seen = []
        # An hour between polls: only a netlink message can wake it in time.
        w = AddressWatcher(read, seen.append, poll_s=3600, settle_s=0.05)
        w.start(await read())
        print("mode", w.mode, flush=True)
        subprocess.run(["ip", "addr", "add", "198.51.100.7/32", "dev", "lo"], check=True)
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        print("seen", seen, flush=True)
        await w.close()

    asyncio.run(main())
    """
)


def test_netlink_wakes_the_watcher_in_our_own_namespace() -> None:
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here")
    out = subprocess.run(
        [unshare, "-rn", sys.executable, "-c", _IN_NAMESPACE],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "mode netlink" in out.stdout
    assert "seen [[Endpoint(host='198.51.100.7', port=5800)]]" in out.stdout, out.stdout
