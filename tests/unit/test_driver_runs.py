"""The driver's pump sends a core's output as the one-datagram-at-a-time loop grouped it:
each GSO send a run of one size to one address (:func:`ipop.aio.driver._run_end`, which
compares the common run in C, against that loop)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.aio.driver import _run_end
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
            assert _run_end(sizes, paths, i) == _by_definition(sizes, paths, i), (cases, i)
