"""kill -9 and an immediate restart of a real daemon (root): it keeps its virtual IP, and a
peer behind a port-restricted NAT pings it by name again within 5 s of the restart.

The daemon, behind a symmetric NAT, dies without a goodbye: its DHT records stay live and the
peer keeps its session, which ran through a relay or to one of the daemon's punching sockets,
neither of which a restart can key again from its remembered peers. Restarted with the same
state directory, it claims its address again; the peer must give up the dead session as soon
as the restarted daemon shows it holds none (the soak saw new addresses and 15-38 s outages).

Only the lab's own namespaces and the processes it spawned are touched.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.topology import topology_from_dict

from .running import running_net

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

READY_S = 30.0
RESTART_AFTER_S = 2.0  # the soak's pause between the kill and the restart (a fault, not a wait)
# What ipopd takes to start (a Python process, its TAP, the DHT join) is part of the 5 s.
RECOVER_S = 5.0


# The victim r behind a symmetric NAT, its peer b behind a port-restricted one, a relay.
HOSTS = [
    {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
    {"name": "r", "role": "nat", "kind": "symmetric"},
    {"name": "b", "role": "nat", "kind": "port-restricted-cone"},
]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    work = tmp_path_factory.mktemp("restart")
    topo = topology_from_dict({"hosts": HOSTS})
    with running_net(topo, work, prefix_tag="rst", ready_s=READY_S) as ipop:
        yield ipop


def _wait(cond: Callable[[], bool], deadline_s: float, every_s: float = 0.2) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every_s)
    return False


def _ping(net: IpopNet, src: str, name: str) -> bool:
    res = net.lab.exec(src, ["ping", "-n", "-c", "1", "-W", "1", name], timeout=5)
    return res.returncode == 0


def test_restarted_daemon_keeps_its_vip_and_answers_by_name_within_5_s(net: IpopNet) -> None:
    r_vip = net.status("r").self_.vip
    b_vip = net.status("b").self_.vip
    assert r_vip is not None and b_vip is not None

    def linked() -> bool:
        """r and b hold a link (direct through port guessing, or relayed), both sides."""
        r_side = any(
            p.vip == b_vip and p.path in ("direct", "relayed") for p in net.status("r").peers
        )
        b_side = any(
            p.vip == r_vip and p.path in ("direct", "relayed") for p in net.status("b").peers
        )
        return r_side and b_side

    assert _wait(lambda: _ping(net, "b", "r.ipop") and linked(), 30, 0.0)
    print("b's path to r:", [(p.path, p.endpoint) for p in net.status("b").peers if p.vip == r_vip])

    assert net.lab.signal("r", signal.SIGKILL), "no ipopd to kill on r"
    time.sleep(RESTART_AFTER_S)
    net.start("r")
    t0 = time.monotonic()
    assert _wait(lambda: _ping(net, "b", "r.ipop"), 20, 0.0), "b never reached r again"
    recovered_s = time.monotonic() - t0
    print(f"b pings r.ipop again {recovered_s:.2f} s after r's restart")
    assert net.wait_ready("r", timeout_s=READY_S).self_.vip == r_vip
    assert recovered_s <= RECOVER_S, f"{recovered_s:.1f} s"
    assert _ping(net, "r", "b.ipop")
