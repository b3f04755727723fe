"""What every unit test gets: the data path's implementation back at its default afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ipop.link import fastpath


@pytest.fixture(autouse=True)
def _fastpath_auto() -> Iterator[None]:
    """A test that picks an implementation (``fastpath.use``, the differential tests) leaves
    the default behind: keys made in later tests would otherwise take its pick."""
    yield
    fastpath.use("auto")
