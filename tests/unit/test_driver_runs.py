"""The driver's pump sends a core's output as the one-datagram-at-a-time loop grouped it:
each GSO send a run of one size to one address (:func:`ipop.aio.driver._run_end`, which
compares the common run in C, against that loop)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.aio.driver import Driver, _run_end
from ipop.types import Endpoint, Path

EPS: list[Path] = [Endpoint("198.51.100.1", 5800), Endpoint("198.51.100.2", 5800)]


def _by_definition(sizes: list[int], paths: list[Path], i: int) -> int:
    size, path, j = sizes[i], paths[i], i + 1
    while j < len(sizes) and sizes[j] == size and ((p := paths[j]) is path or p == path):
        j += 1
    return j


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([100, 1354, 1400]), st.integers(0, 2)), max_size=40),
    st.integers(0, 50),
)
def test_a_pumps_runs_are_the_loops_runs(picks: list[tuple[int, int]], tail: int) -> None:
    # Equal but distinct Endpoints (index 2: a copy of the first) count as one address.
    copies = [*EPS, Endpoint("198.51.100.1", 5800)]
    for prefix in ([], [(1354, 0)] * tail, [(1354, 0)] * tail + [(100, 2)]):
        cases = prefix + picks
        sizes = [s for s, _ in cases]
        paths = [copies[p] for _, p in cases]
        for i in range(len(cases)):
            want = _by_definition(sizes, paths, i)
            for whole in (True, False):
                assert _run_end(sizes, paths, i, whole) == want, (cases, i, whole)


class _CountedEndpoint(Endpoint):
    """An Endpoint whose comparisons are counted (the driver's work per datagram)."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _CountedEndpoint.compared += 1
        return tuple.__eq__(self, other)  # type: ignore[operator]

    __hash__ = Endpoint.__hash__


def test_a_pump_of_many_short_runs_costs_each_datagram_once() -> None:
    """A batch of one size to two addresses in turn (a fan-out: runs of one): the driver
    compares each datagram's path a bounded number of times. Before, every run tried the
    whole rest in C first, so the batch cost its square (1,200 datagrams: 1,438,800
    comparisons), and a 30-node lab cold start's daemons lagged (echoes answered late)."""
    n = 1200
    out: list[tuple[bytes, Any]] = [
        (bytes(100), _CountedEndpoint("198.51.100.1" if k % 2 else "198.51.100.2", 5800))
        for k in range(n)
    ]
    sent: list[tuple[bytes, Any]] = []
    batches: list[list[bytes]] = []
    fake = SimpleNamespace(
        _send_batch=lambda data, path: batches.append(data),
        sock=SimpleNamespace(sendto=lambda data, path: sent.append((data, path))),
        on_other_path=None,
    )
    _CountedEndpoint.compared = 0
    Driver._send(fake, out)  # type: ignore[arg-type]
    assert len(sent) == n and not batches
    assert [p for _, p in sent] == [p for _, p in out]
    assert _CountedEndpoint.compared <= 2 * n


def test_a_pump_still_sends_a_whole_batch_as_one_run() -> None:
    """The common batch (a relay's run to one address, a shorter last one to another): one
    GSO send for the run, the last one on its own."""
    eps = [Endpoint("198.51.100.1", 5800), Endpoint("198.51.100.2", 5800)]
    out: list[tuple[bytes, Any]] = [(bytes(1354), eps[0])] * 64 + [(bytes(100), eps[1])]
    sent: list[tuple[bytes, Any]] = []
    batches: list[tuple[list[bytes], Any]] = []
    fake = SimpleNamespace(
        _send_batch=lambda data, path: batches.append((data, path)),
        sock=SimpleNamespace(sendto=lambda data, path: sent.append((data, path))),
        on_other_path=None,
    )
    Driver._send(fake, out)  # type: ignore[arg-type]
    assert batches == [([bytes(1354)] * 64, eps[0])] and sent == [(bytes(100), eps[1])]
