"""ipop-lab bench end to end (root): a short ipop-only run moves data over two real ipopd."""

from __future__ import annotations

import os
import subprocess

import pytest

from tools.lab.bench import run_bench


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds network namespaces")
def test_bench_ipop_only_moves_data() -> None:
    report = run_bench(systems=["ipop"], duration_s=2, runs=1, json_out=True)
    (row,) = report["results"]
    assert row["system"] == "ipop"
    assert "error" not in row, row.get("error")
    assert row["mbit_s"] > 0
    assert row["rtt_ms"] > 0
    # Torn down: no namespace of this process's bench prefix is left.
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"ib{os.getpid() % 10000:04d}" not in left
