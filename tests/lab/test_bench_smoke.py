"""ipop-lab bench end to end (root): a short ipop-only run moves data over two real ipopd."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tools.lab.main import main


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds network namespaces")
def test_bench_ipop_only_moves_data(capsys: pytest.CaptureFixture[str]) -> None:
    # Through the command line, so every flag the bench reads is one the parser defines.
    argv = ["bench", "--systems", "ipop", "--duration", "2", "--pings", "5", "--json"]
    main(argv)
    report = json.loads(capsys.readouterr().out)
    (row,) = report["results"]
    assert row["system"] == "ipop"
    assert "error" not in row, row.get("error")
    assert row["mbit_s"] > 0
    assert row["rtt_ms"] > 0
    # Torn down: no namespace of this process's bench prefix is left.
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"ib{os.getpid() % 10000:04d}" not in left
