"""``ipop netcheck`` against the lab's real NATs (root): it must name every host's true kind.

One module-scoped lab: the bootstrap ``pub1`` has a second address (it serves STUN
CHANGE-REQUEST on its overlay socket's port + 1), ``pub2`` is a second public node, and one
host sits behind each lab NAT kind. Two more public hosts with two addresses each run real STUN
servers we did not write: ``coturn`` (``turnserver``, RFC 5780) and ``stund`` (RFC 3489). Each
daemon's netcheck, asked against the bootstrap and against both servers, must classify its
host as the lab built it; pystun3's second opinion is recorded (and printed) but not trusted.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ipop.tools.lab.ipopnet import IPOP_PORT, IpopNet
from ipop.tools.lab.lab import Lab, cleanup_stale, process_prefix
from ipop.tools.lab.topology import Topology, default_topology, topology_from_dict

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

READY_S = 40.0
SERVER_READY_S = 10.0
NETCHECK_TIMEOUT_S = 120.0
COTURN = ("203.0.113.30", "203.0.113.31")
STUND = ("203.0.113.40", "203.0.113.41")
STUN_PORT = 3478
TRUTH = {
    "pub1": "none",
    "pub2": "none",
    "fc": "full-cone",
    "rc": "restricted-cone",
    "prc": "port-restricted-cone",
    "sym": "symmetric",
}
SERVERS = {"coturn": COTURN, "stund": STUND}


def _topology() -> Topology:
    """The default topology's public hosts (pub1, the bootstrap, with the second address its
    CHANGE-REQUEST answers need; pub2), one host behind each NAT kind, the two STUN servers."""
    base = default_topology().to_dict()
    public = [h for h in base["hosts"] if h["role"] == "public"]
    return topology_from_dict(
        {
            **base,
            "hosts": [
                *public,
                {"name": "fc", "role": "nat", "kind": "full-cone"},
                {"name": "rc", "role": "nat", "kind": "restricted-cone"},
                {"name": "prc", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "sym", "role": "nat", "kind": "symmetric"},
                {"name": "coturn", "role": "public", "ip": COTURN[0], "extra_ips": [COTURN[1]]},
                {"name": "stund", "role": "public", "ip": STUND[0], "extra_ips": [STUND[1]]},
            ],
        }
    )


def _stun_answers(
    lab: Lab, host: str, server: str, port: int = STUN_PORT, *, padded: bool = False
) -> bool:
    """One RFC 5389 Binding request from ``host`` to ``server``:``port`` gets an answer.

    ``padded``: with an 80-byte PADDING attribute (RFC 5780), as ipop's own client sends, so
    that an ipop node (which never answers with more bytes than it got) can answer."""
    length, padding = (84, "bytes.fromhex('00260050')+bytes(80)") if padded else (0, "b''")
    probe = (
        "import socket,os,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
        "s.settimeout(0.3);"
        f"r=bytes.fromhex('0001{length:04x}2112a442')+os.urandom(12)+{padding};"
        f"s.sendto(r,({server!r},{port}));"
        "sys.exit(0 if s.recvfrom(2048)[0][8:20]==r[8:20] else 1)"
    )
    try:
        return lab.exec(host, [sys.executable, "-c", probe], timeout=5).returncode == 0
    except Exception:
        return False


def _wait_server(lab: Lab, name: str, log: Any) -> None:
    deadline = time.monotonic() + SERVER_READY_S
    while time.monotonic() < deadline:
        if _stun_answers(lab, "pub2", SERVERS[name][0]):
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
    raise AssertionError(f"{name} does not answer STUN within {SERVER_READY_S} s: {tail}")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    for tool in ("turnserver", "stund"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (apt-get install -y coturn stun-server)")
    prefix = process_prefix("n")
    lab = Lab(_topology(), workdir=tmp_path_factory.mktemp("netcheck"), prefix=prefix)
    try:
        lab.up()
        ipop = IpopNet(lab)
        ipop.prepare()
        d = lab.host_dir("coturn")
        coturn_log = d / "coturn.log"
        lab.spawn(
            "coturn",
            [
                "turnserver",
                "-n",
                "--stun-only",
                "--listening-ip",
                COTURN[0],
                "--listening-ip",
                COTURN[1],
                "--listening-port",
                str(STUN_PORT),
                "--alt-listening-port",
                str(STUN_PORT + 1),
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-auth-pings",
                "--log-file",
                "stdout",
                "--simple-log",
                "--pidfile",
                str(d / "coturn.pid"),
                "--userdb",
                str(d / "turndb"),
            ],
            log_path=coturn_log,
        )
        stund_log = lab.host_dir("stund") / "stund.log"
        lab.spawn(
            "stund",
            ["stund", "-h", STUND[0], "-a", STUND[1], "-p", str(STUN_PORT)],
            log_path=stund_log,
        )
        hosts = [h for h in lab.hosts if h.name in TRUTH]
        order = sorted(hosts, key=lambda h: not h.is_bootstrap)
        for h in order:
            ipop.start(h)
        ipop.wait_all_ready(hosts, timeout_s=READY_S)
        _wait_server(lab, "coturn", coturn_log)
        _wait_server(lab, "stund", stund_log)
        yield ipop
    finally:
        lab.down()
        cleanup_stale(prefix)


def _netcheck(net: IpopNet, host: str, *args: str) -> dict[str, Any]:
    sock = net.files(host).socket
    res = net.lab.exec(
        host,
        ["env", f"IPOP_SOCKET={sock}", sys.executable, "-m", "ipop.tools.cli", "netcheck", *args],
        timeout=NETCHECK_TIMEOUT_S,
    )
    assert res.stdout.strip(), f"{host}: netcheck printed nothing; stderr {res.stderr!r}"
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


@pytest.fixture(scope="module")
def results(net: IpopNet) -> dict[str, dict[str, Any]]:
    """Every host's netcheck (ours, coturn, stund, pystun3 vs both), run once per host."""
    servers = [f"{COTURN[0]}:{STUN_PORT}", f"{STUND[0]}:{STUN_PORT}"]
    args = ["--json"] + [a for s in servers for a in ("--server", s)]
    out = {h: _netcheck(net, h, *args) for h in TRUTH}
    table = ["host        truth                 ours(boot)            coturn      stund   pystun3"]
    for h, doc in out.items():
        by = {s["server"].split(":")[0]: s for s in doc["servers"]}
        boot = next(
            (s["kind"] for s in doc["servers"] if s["server"].startswith("203.0.113.10")), "-"
        )
        op = {o["server"].split(":")[0]: o["verdict"] for o in doc["second_opinion"]}
        table.append(
            f"{h:<11} {TRUTH[h]:<21} {doc['nat']!s:<10}({boot!s:<10}) "
            f"{by.get(COTURN[0], {}).get('kind')!s:<11} {by.get(STUND[0], {}).get('kind')!s:<11} "
            f"coturn={op.get(COTURN[0])!s} stund={op.get(STUND[0])!s}"
        )
    print("\n" + "\n".join(table))
    return out


@pytest.mark.parametrize("host", list(TRUTH))
def test_netcheck_names_the_true_nat_kind(results: dict[str, dict[str, Any]], host: str) -> None:
    doc = results[host]
    assert doc["nat"] == TRUTH[host], json.dumps(doc, indent=1)
    assert doc["public_endpoints"], doc


@pytest.mark.parametrize("host", [h for h in TRUTH if h != "pub1"])
def test_bootstrap_stun_classifies_like_truth(
    results: dict[str, dict[str, Any]], host: str
) -> None:
    probes = [s for s in results[host]["servers"] if s["server"] == f"203.0.113.10:{IPOP_PORT}"]
    assert len(probes) == 1 and probes[0]["answered"], results[host]
    assert probes[0]["other"] == f"203.0.113.20:{IPOP_PORT + 1}"
    assert probes[0]["kind"] == TRUTH[host], probes[0]


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("host", list(TRUTH))
def test_real_stun_servers_agree(
    results: dict[str, dict[str, Any]], host: str, server: str
) -> None:
    addr = f"{SERVERS[server][0]}:{STUN_PORT}"
    probes = [s for s in results[host]["servers"] if s["server"] == addr]
    assert len(probes) == 1 and probes[0]["answered"], results[host]
    assert probes[0]["other"] is not None, f"{server} advertised no alternate address"
    assert probes[0]["kind"] == TRUTH[host], probes[0]


def test_second_opinion_is_reported(results: dict[str, dict[str, Any]]) -> None:
    for host, doc in results.items():
        assert {o["server"] for o in doc["second_opinion"]} == {
            f"{COTURN[0]}:{STUN_PORT}",
            f"{STUND[0]}:{STUN_PORT}",
        }, host
        for o in doc["second_opinion"]:
            assert o["verdict"] or o["error"], (host, o)


def test_status_nat_uses_netcheck(net: IpopNet, results: dict[str, dict[str, Any]]) -> None:
    for host in TRUTH:
        assert net.status(host).self_.nat == TRUTH[host], host


def test_stun_garbage_is_counted_not_fatal(
    net: IpopNet, results: dict[str, dict[str, Any]]
) -> None:
    """Malformed STUN at the bootstrap's overlay and alternate ports: counted, still served."""
    before = net.status("pub1").drops
    code = (
        "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
        f"[s.sendto(b, ('203.0.113.10', p)) for p in ({IPOP_PORT}, {IPOP_PORT + 1}) for b in "
        "(b'\\x00\\x01\\x00\\x04' + bytes(16), b'\\x01' * 40,"
        " b'\\x00\\x01\\x00\\x00' + bytes(16))]"
    )
    net.lab.exec("pub2", [sys.executable, "-c", code], timeout=5, check=True)
    deadline = time.monotonic() + 5
    after = before
    while time.monotonic() < deadline:
        after = net.status("pub1").drops
        if (
            sum(v for k, v in after.items() if k.startswith("stun."))
            >= sum(v for k, v in before.items() if k.startswith("stun.")) + 4
        ):
            break
        time.sleep(0.05)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("stun.")}
    assert sum(grew.values()) >= 4, grew
    assert _stun_answers(net.lab, "pub2", "203.0.113.10", IPOP_PORT, padded=True)
    assert _stun_answers(net.lab, "pub2", "203.0.113.20", IPOP_PORT + 1, padded=True)
    # A bare 20-byte request would get a larger answer: the bootstrap does not reflect it.
    assert not _stun_answers(net.lab, "pub2", "203.0.113.10", IPOP_PORT)
