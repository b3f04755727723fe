"""Services through the DHT with real daemons (root): publish, dig SRV, curl, withdraw, stop.

Node ``a`` runs an unmodified ``python3 -m http.server`` on its vIP and publishes it with
``ipop service publish``; node ``b`` (behind a NAT) finds it with ``dig SRV`` on its gateway
and fetches the page with ``curl`` from the SRV target and port. After ``ipop service
withdraw`` (and, published again, after ``a``'s daemon stops) the SRV answer is gone. The
SRV answer times (cold: the first query after publishing; cached: the next 20) are printed.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from collections.abc import Iterator

import pytest

from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.topology import Topology, topology_from_dict

from .running import running_net, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

GATEWAY = "100.64.0.1"
READY_S = 30.0
PORT = 8123
SRV_NAME = "_http._tcp.ipop"
MARKER = "served-by-an-unmodified-http-server"


def _topology() -> Topology:
    return topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
                {"name": "a", "role": "public", "ip": "203.0.113.11"},
                {"name": "b", "role": "nat", "kind": "port-restricted-cone"},
            ]
        }
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with running_net(
        _topology(), tmp_path_factory.mktemp("svc"), prefix_tag="v", ready_s=READY_S
    ) as ipop:
        yield ipop


def _cli(net: IpopNet, host: str, *args: str) -> tuple[int, str]:
    sock = str(net.files(host).socket)
    res = net.lab.exec(
        host,
        ["env", f"IPOP_SOCKET={sock}", sys.executable, "-m", "ipop.tools.cli", *args],
        timeout=20,
    )
    return res.returncode, res.stdout + res.stderr


def _dig_srv(net: IpopNet, host: str) -> tuple[list[tuple[int, str]], float, str]:
    """(port, target) of each SRV answer, dig's query time in ms, and dig's output."""
    res = net.lab.exec(
        host, ["dig", f"@{GATEWAY}", "SRV", SRV_NAME, "+tries=1", "+time=3"], timeout=10
    )
    out = res.stdout
    answers = [
        (int(m.group(1)), m.group(2))
        for m in re.finditer(r"\bIN\s+SRV\s+\d+\s+\d+\s+(\d+)\s+(\S+)", out)
    ]
    t = re.search(r"Query time: (\d+) msec", out)
    return answers, float(t.group(1)) if t else float("inf"), out


def test_publish_find_by_srv_fetch_withdraw_and_stop(net: IpopNet) -> None:
    lab = net.lab
    vip_a = net.status("a").self_.vip
    assert vip_a is not None
    site = lab.workdir / "site"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_text(MARKER + "\n")
    server = lab.spawn(
        "a",
        [sys.executable, "-m", "http.server", str(PORT), "--bind", vip_a, "--directory", str(site)],
        log_path=lab.workdir / "http-a.log",
    )
    try:
        assert wait_for(
            lambda: (
                lab.exec("a", ["curl", "-sf", f"http://{vip_a}:{PORT}/"], timeout=5).returncode == 0
            ),
            10,
        ), "the HTTP server did not start"
        code, out = _cli(net, "a", "service", "publish", "http", str(PORT), "--txt", "path=/")
        assert code == 0, out
        print(f"\n$ ipop service publish http {PORT} --txt path=/\n{out}")

        # Cold: b's resolver has never seen the name (a miss is cached 1 s, so retry).
        got: list[tuple[list[tuple[int, str]], float, str]] = []
        assert wait_for(lambda: bool(got.append(_dig_srv(net, "b")) or got[-1][0]), 10), got
        answers, cold_ms, dig_out = got[-1]
        assert len(answers) == 1 and answers[0][0] == PORT
        target = answers[0][1]
        assert re.fullmatch(r"C\d{9}\.ipop\.", target), target
        print(f"$ dig @{GATEWAY} SRV {SRV_NAME}\n{dig_out}")
        cached = [_dig_srv(net, "b")[1] for _ in range(20)]
        print(
            f"SRV answer: cold {cold_ms:.0f} ms ({len(got)} queries), cached median "
            f"{statistics.median(cached):.0f} ms, max {max(cached):.0f} ms"
        )
        assert cold_ms <= 1000
        assert max(cached) <= 50

        code, out = _cli(net, "b", "service", "list", "http")
        assert code == 0 and vip_a in out and str(PORT) in out and "path=/" in out, out
        print(f"$ ipop service list http\n{out}")
        code, out = _cli(net, "b", "service", "list", "http", "--json")
        assert code == 0 and f'"port": {PORT}' in out, out

        # curl resolves the SRV target through b's resolv.conf (the gateway).
        res = lab.exec(
            "b", ["curl", "-sS", "-m", "5", f"http://{target.rstrip('.')}:{PORT}/"], timeout=10
        )
        assert res.returncode == 0 and MARKER in res.stdout, res.stdout + res.stderr

        # Withdrawn: gone from b's answers once its cached copy (5 s) ends.
        t0 = time.monotonic()
        code, out = _cli(net, "a", "service", "withdraw", "http")
        assert code == 0, out
        assert wait_for(lambda: not _dig_srv(net, "b")[0], 15), "SRV answer outlived withdraw"
        print(f"withdrawn: SRV answer gone after {time.monotonic() - t0:.1f} s")
        code, out = _cli(net, "b", "service", "list", "http")
        assert code == 1 and "no live instance" in out, out
    finally:
        server.terminate()
        server.wait(timeout=5)

    # Published again, then the daemon stops: it withdraws on the way out.
    code, out = _cli(net, "a", "service", "publish", "http", str(PORT))
    assert code == 0, out
    assert wait_for(lambda: bool(_dig_srv(net, "b")[0]), 15)
    t0 = time.monotonic()
    net.stop("a")
    assert wait_for(lambda: not _dig_srv(net, "b")[0], 15), "SRV answer outlived the daemon"
    print(f"daemon stopped: SRV answer gone after {time.monotonic() - t0:.1f} s")
