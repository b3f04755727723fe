"""ipop-lab's namespace and NAT machinery: reachability, NAT mapping and filtering behaviour
per kind, process and namespace cleanup, and topology validation."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ipop.errors import ConfigError
from ipop.tools.lab import netns
from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.lab import Lab, cleanup_stale, process_prefix
from ipop.tools.lab.main import main
from ipop.tools.lab.topology import Topology, default_topology, load_topology, topology_from_dict

from .conftest import ALT_PORT, ECHO_PORT, ECHO_PY, PROBE_PY, wait_for_file_text

MakeLab = Callable[[Topology, str], Lab]


def probe(
    lab: Lab, host: str, lport: int, reqs: list[tuple[str, int]], wait_s: float
) -> list[dict[str, str] | None]:
    """Send from ``host``:``lport`` to each (dest, reply-via-socket) and return what came back."""
    budget = len(reqs) * wait_s + 5.0
    res = lab.exec(
        host,
        [sys.executable, "-c", PROBE_PY, str(lport), json.dumps(reqs), str(wait_s)],
        timeout=budget,
        check=True,
    )
    out: list[dict[str, str] | None] = json.loads(res.stdout)
    return out


def test_every_nat_host_reaches_the_bootstrap(lab: Lab) -> None:
    boot = lab.bootstrap
    assert boot.name == "pub1" and boot.ip.exploded == "203.0.113.10"
    nat_hosts = [h for h in lab.hosts if h.nat_kind is not None]
    assert {h.nat_kind for h in nat_hosts} == {
        "port-restricted-cone",
        "restricted-cone",
        "symmetric",
    }
    for h in nat_hosts:
        r = lab.exec(h, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", str(boot.ip)], timeout=10)
        assert r.returncode == 0, f"{h.name}: {r.stdout}{r.stderr}"


def test_public_host_cannot_reach_a_lan_address(lab: Lab) -> None:
    for h in lab.hosts:
        if h.nat_kind is None:
            continue
        assert h.lan is not None and h.ip in h.lan
        r = lab.exec("pub1", ["ping", "-n", "-c", "1", "-W", "1", str(h.ip)], timeout=10)
        assert r.returncode != 0, f"pub1 reached {h.name}'s LAN address {h.ip}"


def test_mapping_is_endpoint_independent_for_cones_and_not_for_symmetric(lab: Lab) -> None:
    pub1, pub2 = lab.host("pub1"), lab.host("pub2")
    dests = [(f"{pub1.ip}:{ECHO_PORT}", 0), (f"{pub2.ip}:{ECHO_PORT}", 0)]
    for name, lport in (("a", 41000), ("b", 41001), ("c", 41002)):
        host = lab.host(name)
        got = probe(lab, name, lport, dests, wait_s=3.0)
        assert all(g is not None for g in got), f"{name}: no answer: {got}"
        seen = [g["seen"] for g in got if g is not None]
        assert all(s.split(":")[0] == str(host.public_ip) for s in seen), (name, seen)
        if host.nat_kind == "symmetric":
            assert seen[0] != seen[1], f"symmetric NAT kept one mapping: {seen}"
        else:
            # Cone NATs as built here keep the port, so every destination sees the same one.
            assert seen == [f"{host.public_ip}:{lport}"] * 2, (name, host.nat_kind, seen)


def test_filtering_follows_the_nat_kind(lab: Lab) -> None:
    pub1 = lab.host("pub1").ip
    # First request opens the mapping (answered from the port contacted); the second asks the
    # reflector to answer from its other port: only a restricted cone lets that through.
    reqs = [(f"{pub1}:{ECHO_PORT}", 0), (f"{pub1}:{ECHO_PORT}", 1)]
    expect_other_port = {"a": False, "b": True, "c": False}
    for (name, passes), lport in zip(expect_other_port.items(), (42000, 42001, 42002), strict=True):
        opened, other = probe(lab, name, lport, reqs, wait_s=1.2)
        assert opened is not None and opened["from"] == f"{pub1}:{ECHO_PORT}", (name, opened)
        if passes:
            assert other is not None and other["from"] == f"{pub1}:{ALT_PORT}", (name, other)
        else:
            assert other is None, f"{name} ({lab.host(name).nat_kind}) let in {other}"


def _full_cone_topology() -> Topology:
    return topology_from_dict(
        {
            "nat_backend": "nft",
            "internet": {"subnet": "203.0.113.0/24", "subnet2": "198.51.100.0/24"},
            "hosts": [
                {
                    "name": "pub1",
                    "role": "public",
                    "ip": "203.0.113.10",
                    "extra_ips": ["203.0.113.20"],
                },
                {"name": "far", "role": "public", "ip": "198.51.100.10"},
                {
                    "name": "x",
                    "role": "nat",
                    "kind": "full-cone",
                    "wan_ip": "198.51.100.101",
                    "udp_timeout_s": 20,
                },
            ],
        }
    )


def test_nft_full_cone_across_two_segments_then_down_leaves_nothing(make_lab: MakeLab) -> None:
    lab = make_lab(_full_cone_topology(), "f")
    pub1 = lab.host("pub1")
    log = lab.host_dir(pub1) / "echo.log"
    echo = lab.spawn(
        pub1,
        [
            sys.executable,
            "-c",
            ECHO_PY,
            f"{pub1.ip}:{ECHO_PORT}",
            f"{pub1.extra_ips[0]}:{ECHO_PORT}",
        ],
        log_path=log,
    )
    wait_for_file_text(log, "ready", 5.0)
    sleeper = lab.spawn("far", ["sleep", "300"], log_path=lab.host_dir("far") / "sleep.log")
    # x sits on the second segment: its traffic crosses the inet namespace's routing.
    opened, other_ip = probe(
        lab, "x", 43000, [(f"{pub1.ip}:{ECHO_PORT}", 0), (f"{pub1.ip}:{ECHO_PORT}", 1)], wait_s=2.0
    )
    assert opened is not None and opened["seen"] == "198.51.100.101:43000"
    # A full cone lets in an address the host never sent to.
    assert other_ip is not None and other_ip["from"] == f"{pub1.extra_ips[0]}:{ECHO_PORT}"
    timeout = lab.exec(
        "x",
        ["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"],
        timeout=5,
        router=True,
        check=True,
    )
    assert timeout.stdout.strip() == "20"

    lab.stop("far", grace_s=2.0)
    assert sleeper.poll() is not None and echo.poll() is None
    pids = [p.pid for p in lab.processes]
    assert pids == [echo.pid]
    lab.down()
    assert netns.list_ns(lab.prefix) == []
    assert echo.poll() is not None and not netns.pid_alive(echo.pid)
    assert not lab.state_path.exists()
    lab.down()  # idempotent
    assert netns.list_ns(lab.prefix) == []


def test_cli_status_and_down_tear_down_a_lab_left_up(
    make_lab: MakeLab, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = make_lab(default_topology(), "c")
    proc = lab.spawn("a", ["sleep", "300"], log_path=lab.host_dir("a") / "sleep.log")
    resolv = lab.write_resolv_conf("a", "100.64.0.53")
    seen = lab.exec("a", ["cat", "/etc/resolv.conf"], timeout=5, check=True).stdout
    assert seen == "nameserver 100.64.0.53\n"

    # What a later process sees: only the state file.
    later = Lab.load(lab.workdir)
    assert later.prefix == lab.prefix and [h.ns for h in later.hosts] == [h.ns for h in lab.hosts]
    assert main(["status", "--json", "--workdir", str(lab.workdir)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert all(st["namespaces"].values()) and len(st["namespaces"]) == 9
    assert [(p["pid"], p["alive"]) for p in st["processes"]] == [(proc.pid, True)]

    assert main(["down", "--workdir", str(lab.workdir)]) == 0
    assert netns.list_ns(lab.prefix) == []
    assert not netns.pid_alive(proc.pid)
    assert not resolv.parent.exists()
    assert main(["down", "--workdir", str(lab.workdir)]) == 0  # nothing left: still fine
    proc.wait(timeout=5)


TWO_PUBLIC = """hosts = [
  { name = "pub1", role = "public", ip = "203.0.113.10" },
  { name = "pub2", role = "public", ip = "203.0.113.11" },
]
"""


def _two_public_up(tmp_path: Path, tag: str) -> tuple[list[str], Path, str]:
    """``ipop-lab up`` of the two-public-host topology: (argv, workdir, namespace prefix)."""
    topo = tmp_path / "two.toml"
    topo.write_text(TWO_PUBLIC)
    work = tmp_path / "w"
    prefix = process_prefix(tag)
    return ["up", str(topo), "--workdir", str(work), "--prefix", prefix], work, prefix


def test_up_down_up_in_one_workdir_starts_a_fresh_network(tmp_path: Path) -> None:
    """The second ``up`` must not trip over the first lab's CA, bundles or daemon state."""
    argv, work, prefix = _two_public_up(tmp_path, "u")
    try:
        for _ in range(2):
            assert main(argv) == 0
            assert netns.list_ns(prefix) != []
            assert main(["down", "--workdir", str(work)]) == 0
            assert netns.list_ns(prefix) == []
    finally:
        cleanup_stale(prefix)


BAD_KIND = """
[[hosts]]
name = "pub1"
role = "public"

[[hosts]]
name = "a"
role = "nat"
nat = "cone-ish"
"""


def test_bad_nat_kind_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_KIND)
    with pytest.raises(ConfigError) as err:
        load_topology(path)
    assert err.value.key == "hosts[1].nat"
    assert "cone-ish" in str(err.value)
    # The CLI reports it without building anything.
    assert main(["up", str(path), "--workdir", str(tmp_path / "w")]) == 2
    assert not (tmp_path / "w" / "lab.json").exists()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"hosts": [{"name": "a", "role": "nat", "kind": "symmetric"}]}, "hosts"),
        ({"hosts": [{"name": "Pub", "role": "public"}]}, "hosts[0].name"),
        (
            {"hosts": [{"name": "p", "role": "public"}, {"name": "p", "role": "public"}]},
            "hosts[1].name",
        ),
        ({"hosts": [{"name": "p", "role": "router"}]}, "hosts[0].role"),
        ({"hosts": [{"name": "p", "role": "public", "ip": "192.0.2.1"}]}, "hosts[0].ip"),
        ({"hosts": [{"name": "p", "role": "public", "ip": "203.0.113.1"}]}, "hosts[0].ip"),
        (
            {
                "hosts": [
                    {"name": "p", "role": "public"},
                    {"name": "a", "role": "nat", "kind": "full-cone", "lan": "10.0.0.0/24"},
                ]
            },
            "hosts[1].lan",
        ),
        ({"hosts": [{"name": "p", "role": "public", "colour": "red"}]}, "hosts[0].colour"),
        ({"internet": {"subnet": "10.0.0.0/24"}, "hosts": []}, "internet.subnet"),
        ({"nat_backend": "pf", "hosts": []}, "nat_backend"),
        (
            {
                "hosts": [
                    {"name": "p", "role": "public"},
                    {"name": "a", "role": "nat", "kind": "symmetric", "udp_timeout_s": 0},
                ]
            },
            "hosts[1].udp_timeout_s",
        ),
    ],
)
def test_topology_validation_names_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        topology_from_dict(data)
    assert err.value.key == key


def test_default_topology_round_trips_through_its_dict() -> None:
    topo = default_topology()
    assert topology_from_dict(topo.to_dict()) == topo
    assert [h.name for h in topo.hosts] == ["pub1", "pub2", "a", "b", "c"]
    assert topo.bootstrap.name == "pub1"
    assert len({h.public_ip for h in topo.hosts}) == 5


def test_up_puts_the_network_on_a_shared_overlay_with_an_overlay_only_node(
    tmp_path: Path,
) -> None:
    """``ipop-lab up --overlay shared --overlay-only pub1``: pub1 runs an overlay-only node
    (the bootstrap: it routes and stores, holds no address), pub2 a member that claims one."""
    argv, work, prefix = _two_public_up(tmp_path, "so")
    try:
        assert main([*argv, "--overlay", "shared", "--overlay-only", "pub1"]) == 0
        net = IpopNet(Lab.load(work))
        ov, member = net.status("pub1").self_, net.status("pub2").self_
        assert ov.overlay_only and ov.vip is None
        assert not member.overlay_only and member.vip is not None
        assert main(["down", "--workdir", str(work)]) == 0
    finally:
        cleanup_stale(prefix)


def test_up_refuses_overlay_hosts_without_an_overlay_or_a_topology_host(tmp_path: Path) -> None:
    base, work, _ = _two_public_up(tmp_path, "sx")
    assert main([*base, "--overlay-only", "pub1"]) == 2
    assert main([*base, "--overlay", "shared", "--member-of", "nohost=othernet"]) == 2
    assert main([*base, "--overlay", "shared", "--member-of", "pub2"]) == 2
    assert not (work / "lab.json").exists()
