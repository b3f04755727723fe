"""A map of the simulated internet: regions and sites, and the one-way latency between places.

Without a map every internet hop of :mod:`ipop.testing.netsim` costs one latency, so a
route's cost is its hop count and locality cannot be measured. With one, each internet
address (a public host, or a NAT box and every host behind it) sits at a *site* of a
*region*, and a datagram between two addresses takes::

    access(a) + access(b) + distance(site of a, site of b)

- ``access``: each address's own last mile, drawn from ``access_ms`` (0.5–2.5 ms), so two
  hosts of one site are 1–5 ms apart;
- sites lie on a plane: each region's centre is drawn so that any two centres are
  ``region_ms`` (20–150 ms) apart, and its sites within ``site_radius_ms`` of it (so sites of
  one region are at most twice that apart).

Why a plane: distances on it obey the triangle inequality, as the internet mostly does; an
overlay route can then never beat the direct path (stretch >= 1), and a low stretch is
earned, not found in the map's own short cuts. Jitter and loss stay the segment's
(:class:`ipop.testing.netsim.Network`).

Reproducible: every draw comes from the ``random.Random`` given, in the order addresses are
placed; the network places each address when it hands it out. Addresses are placed on a
uniformly drawn site (regions hold about equal shares).

:func:`parse_latency_model` reads the ``--latency-model`` spelling (``world``, or
``world:regions=6,sites=8``); a bad one is a :class:`ipop.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ipop.errors import ConfigError, LocalProtocolError

__all__ = ["LatencyMap", "LatencySpec", "Place", "parse_latency_model"]

# Region centres drawn before the map gives up (a spec asking for more regions than the
# bounds leave room for).
_MAX_DRAWS = 10_000


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """The shape of the map (defaults: six regions of eight sites)."""

    regions: int = 6
    sites: int = 8  # per region
    access_ms: tuple[float, float] = (0.5, 2.5)
    region_ms: tuple[float, float] = (20.0, 150.0)
    site_radius_ms: float = 5.0

    def __post_init__(self) -> None:
        if self.regions < 1:
            raise ConfigError("latency-model.regions", f"{self.regions} < 1", "use 1 or more")
        if self.sites < 1:
            raise ConfigError("latency-model.sites", f"{self.sites} < 1", "use 1 or more")
        lo, hi = self.access_ms
        if not 0 <= lo <= hi:
            raise ConfigError("latency-model.access_ms", f"{self.access_ms}", "use 0 <= lo <= hi")
        lo, hi = self.region_ms
        if not 0 < lo <= hi:
            raise ConfigError("latency-model.region_ms", f"{self.region_ms}", "use 0 < lo <= hi")
        if self.site_radius_ms < 0:
            raise ConfigError("latency-model.site_radius_ms", "is negative", "use 0 or more")

    def describe(self) -> dict[str, object]:
        """The spec as JSON-ready data (for a scenario's report)."""
        return {
            "regions": self.regions,
            "sites": self.sites,
            "access_ms": list(self.access_ms),
            "region_ms": list(self.region_ms),
            "site_radius_ms": self.site_radius_ms,
        }


def parse_latency_model(text: str) -> LatencySpec:
    """``"world"`` or ``"world:regions=6,sites=8"`` -> :class:`LatencySpec`."""
    name, _, rest = text.partition(":")
    if name.strip() != "world":
        raise ConfigError(
            "latency-model", f"unknown model {name.strip()!r}", "use world[:regions=R,sites=S]"
        )
    values: dict[str, int] = {}
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("regions", "sites"):
            raise ConfigError(
                "latency-model", f"bad entry {part!r}", "use regions=R or sites=S (integers)"
            )
        try:
            values[key] = int(value)
        except ValueError:
            raise ConfigError(
                f"latency-model.{key}", f"{value.strip()!r} is not an integer", "use e.g. 6"
            ) from None
    defaults = LatencySpec()
    return LatencySpec(
        regions=values.get("regions", defaults.regions), sites=values.get("sites", defaults.sites)
    )


@dataclass(frozen=True, slots=True)
class Place:
    """Where one internet address sits: its region, site and last-mile latency (seconds)."""

    region: int
    site: int  # index over all sites, region-major
    access_s: float


class LatencyMap:
    """Sites on a plane and the addresses placed on them; see the module docstring."""

    def __init__(self, spec: LatencySpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        centres = self._centres()
        self._sites: list[tuple[float, float]] = []
        for cx, cy in centres:
            for _ in range(spec.sites):
                # Uniform over the disc of the site radius around the region's centre.
                r = spec.site_radius_ms * math.sqrt(rng.random())
                a = rng.uniform(0.0, 2 * math.pi)
                self._sites.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        self._places: dict[str, Place] = {}

    def _centres(self) -> list[tuple[float, float]]:
        """Region centres, any two ``region_ms`` apart (measured between their nearest sites
        and their farthest ones: the sites' radius is taken off and added on)."""
        spec = self.spec
        lo, hi = spec.region_ms
        lo += 2 * spec.site_radius_ms
        hi -= 2 * spec.site_radius_ms
        if spec.regions > 1 and hi < lo:
            raise ConfigError(
                "latency-model.site_radius_ms", "leaves no room between regions", "make it smaller"
            )
        # A square whose diagonal is ``hi``: no two centres inside it are farther apart.
        side = hi / math.sqrt(2)
        out: list[tuple[float, float]] = []
        for _ in range(_MAX_DRAWS):
            if len(out) == spec.regions:
                return out
            p = (self._rng.uniform(0.0, side), self._rng.uniform(0.0, side))
            if all(math.dist(p, q) >= lo for q in out):
                out.append(p)
        if len(out) == spec.regions:
            return out
        raise ConfigError(
            "latency-model.regions",
            f"{spec.regions} regions do not fit {spec.region_ms[0]:g}-{spec.region_ms[1]:g} ms",
            "use fewer regions",
        )

    def place(self, address: str) -> Place:
        """Put ``address`` on a random site (once; the network calls this when it hands the
        address out)."""
        if address in self._places:
            raise LocalProtocolError(f"{address} is already placed")
        spec = self.spec
        site = self._rng.randrange(len(self._sites))
        access = self._rng.uniform(*spec.access_ms) / 1000.0
        place = Place(site // spec.sites, site, access)
        self._places[address] = place
        return place

    def move(self, old: str, new: str) -> None:
        """``old`` is now called ``new`` (a host took a new address where it stands)."""
        self._places[new] = self._places.pop(old)

    def place_of(self, address: str) -> Place:
        return self._places[address]

    def latency_s(self, a: str, b: str) -> float:
        """One-way latency between two placed addresses, in seconds."""
        pa = self._places[a]
        pb = self._places[b]
        if pa.site == pb.site:
            return pa.access_s + pb.access_s
        core = math.dist(self._sites[pa.site], self._sites[pb.site]) / 1000.0
        return pa.access_s + pb.access_s + core
