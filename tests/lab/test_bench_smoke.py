"""ipop-lab bench end to end (root): a short run moves data over two real ipopd and over the
Python floor tunnel (the yardstick row)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ipop.tools.lab.main import main


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds network namespaces")
def test_bench_moves_data_over_ipop_and_the_floor_tunnel(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Through the command line, so every flag the bench reads is one the parser defines.
    systems = "ipop,python-floor-epoll"
    argv = ["bench", "--systems", systems, "--duration", "2", "--pings", "5", "--json"]
    main(argv)
    report = json.loads(capsys.readouterr().out)
    assert [r["system"] for r in report["results"]] == systems.split(",")
    for row in report["results"]:
        assert "error" not in row, row.get("error")
        assert row["mbit_s"] > 0
        assert row["rtt_ms"] > 0
    # Torn down: no namespace of this process's bench prefix is left.
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"ib{os.getpid() % 10000:04d}" not in left
