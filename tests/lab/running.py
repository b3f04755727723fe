"""One way for lab tests to hold a network of running daemons: built, every daemon ready, and
always torn down (namespaces, processes, stale leftovers of this prefix)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tools.lab.ipopnet import IpopNet
from tools.lab.lab import Lab, cleanup_stale, process_prefix
from tools.lab.topology import Topology


@contextlib.contextmanager
def running_net(
    topology: Topology, workdir: Path, *, prefix_tag: str, ready_s: float
) -> Iterator[IpopNet]:
    """Build ``topology``, start a daemon per host and wait until each holds its virtual IP."""
    prefix = process_prefix(prefix_tag)
    lab = Lab(topology, workdir=workdir, prefix=prefix)
    try:
        lab.up()
        ipop = IpopNet(lab)
        ipop.prepare()
        ipop.start_all()
        for h in lab.hosts:
            ipop.wait_ready(h, timeout_s=ready_s)
        yield ipop
    finally:
        lab.down()
        cleanup_stale(prefix)
