"""IpopNet.wait_all_ready asks a daemon for its status only once its log says it is ready.

Why: in a 32-daemon cold start every status request cost the starting daemons CPU on the two
cores they share (issue 14). These checks run no daemon: ``start`` spawns nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ipop.tools.lab.ipopnet import IpopNet
from ipop.tools.lab.lab import Lab
from ipop.tools.lab.topology import topology_from_dict

READY_LINE = "ts=x level=info logger=ipopd event=ready vip=100.64.0.2 names=a.ipop cpu_s=0.3\n"


def _net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_level: str = "info") -> IpopNet:
    topo = topology_from_dict({"hosts": [{"name": "a", "role": "public", "ip": "203.0.113.10"}]})
    lab = Lab(topo, workdir=tmp_path)

    def spawn(host: str, argv: Sequence[str], **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(lab, "spawn", spawn)
    monkeypatch.setattr(lab, "write_resolv_conf", lambda host, ip: tmp_path / "resolv.conf")
    return IpopNet(lab, log_level=log_level)


def test_only_the_ready_line_of_this_start_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = _net(tmp_path, monkeypatch)
    log = net.files("a").log
    log.write_text("event=started\n" + READY_LINE)  # an earlier run of the daemon
    net.start("a")
    assert not net.logged_ready("a")
    with log.open("a") as f:
        f.write("ts=x level=info logger=ipopd event=dht_joined after_s=0.5 cpu_s=0.2\n")
    assert not net.logged_ready("a")
    with log.open("a") as f:
        f.write(READY_LINE)
    assert net.logged_ready("a")


def test_a_daemon_it_cannot_tell_about_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _net(tmp_path, monkeypatch).logged_ready("a")  # not started by this IpopNet
    quiet = _net(tmp_path / "q", monkeypatch, log_level="warning")
    quiet.start("a")  # logs no info lines: its status decides
    assert quiet.logged_ready("a")
