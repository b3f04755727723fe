"""ipop-lab bench end to end (root): a short run, with 1 % underlay loss each way, moves data
over two real ipopd, over two relayed through a third, over a port-guessed path between a
symmetric NAT and a port-restricted cone, and over the Python floor tunnel (the yardstick row),
and prices each in CPU seconds per GB."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ipop.tools.lab.main import main


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds network namespaces")
def test_bench_moves_data_over_ipop_relayed_guessed_and_the_floor_tunnel(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Through the command line, so every flag the bench reads is one the parser defines.
    systems = "ipop,ipop-relayed,ipop-guessed,python-floor-epoll"
    argv = ["bench", "--systems", systems, "--duration", "2", "--pings", "5", "--loss", "1"]
    main([*argv, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["loss_pct"] == 1.0
    assert [r["system"] for r in report["results"]] == systems.split(",")
    for row in report["results"]:
        assert "error" not in row, row.get("error")
        assert row["mbit_s"] > 0
        assert row["rtt_ms"] > 0
        assert row["cpu_s_per_gb"] > 0  # the tunnel's own processes were found and read
    # (ipop-relayed and ipop-guessed raise, and become error rows, unless the pair reported a
    # relayed, or a port-guessed, path before and after its measurement.)
    # Torn down: no namespace of this process's bench prefix is left.
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"ib{os.getpid() % 10000:04d}" not in left
