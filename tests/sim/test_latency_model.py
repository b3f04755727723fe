"""The simulated internet's map of regions and sites (ipop.testing.latency) and its use."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Callable

import pytest

from ipop.errors import ConfigError
from ipop.testing.clock import run_virtual
from ipop.testing.latency import LatencyMap, LatencySpec, parse_latency_model
from ipop.testing.netsim import Network
from ipop.tools.sim import main
from ipop.types import Endpoint


def _placed(seed: int, count: int = 200) -> LatencyMap:
    m = LatencyMap(LatencySpec(), random.Random(seed))
    for i in range(count):
        m.place(f"203.0.113.{i}")
    return m


def test_sites_regions_and_the_triangle_inequality() -> None:
    m = _placed(1)
    addrs = [f"203.0.113.{i}" for i in range(200)]
    same_site = same_region = other = 0
    for a, b in itertools.combinations(addrs, 2):
        pa, pb, ms = m.place_of(a), m.place_of(b), m.latency_s(a, b) * 1000
        assert ms == pytest.approx(m.latency_s(b, a) * 1000)
        if pa.site == pb.site:
            same_site += 1
            assert 1.0 <= ms <= 5.0
        elif pa.region == pb.region:
            same_region += 1
            assert 1.0 <= ms <= 15.0  # two site radii of 5 ms, plus the last miles
        else:
            other += 1
            assert 20.0 <= ms <= 155.0
    assert same_site and same_region and other
    for a, b, c in itertools.islice(itertools.permutations(addrs[:30], 3), 5000):
        assert m.latency_s(a, c) <= m.latency_s(a, b) + m.latency_s(b, c) + 1e-12


def test_the_map_is_a_function_of_its_seed() -> None:
    a, b, c = _placed(5), _placed(5), _placed(6)
    pairs = [("203.0.113.1", "203.0.113.2"), ("203.0.113.3", "203.0.113.150")]
    assert [a.latency_s(*p) for p in pairs] == [b.latency_s(*p) for p in pairs]
    assert [a.latency_s(*p) for p in pairs] != [c.latency_s(*p) for p in pairs]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("globe", "latency-model"),
        ("world:regions", "latency-model"),
        ("world:regions=x", "latency-model.regions"),
        ("world:sites=0", "latency-model.sites"),
        ("world:regions=40", "latency-model.regions"),
    ],
)
def test_bad_specs_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        LatencyMap(parse_latency_model(text), random.Random(1))
    assert err.value.key == key


def test_spec_spelling() -> None:
    assert parse_latency_model("world") == LatencySpec()
    assert parse_latency_model("world:regions=3, sites=2") == LatencySpec(regions=3, sites=2)


def test_datagrams_take_the_maps_latency_and_path_latency_agrees() -> None:
    async def main() -> tuple[dict[str, float], dict[str, float]]:
        loop = asyncio.get_running_loop()
        lat = LatencyMap(LatencySpec(), random.Random(3))
        n = Network(rng=random.Random(4), latency=lat)
        p, q = n.add_public_host("p"), n.add_public_host("q")
        nat = n.add_nat("n", "full-cone")
        h = nat.add_host("h")
        got: dict[str, float] = {}

        def inbox(name: str) -> Callable[[bytes, Endpoint], None]:
            def arrived(data: bytes, src: Endpoint) -> None:
                got.setdefault(name, loop.time())

            return arrived

        socks = {
            name: host.bind(4000, inbox(name)) for name, host in (("p", p), ("q", q), ("h", h))
        }
        t0 = loop.time()
        socks["p"].sendto(b"x", Endpoint(q.address, 4000))
        socks["h"].sendto(b"x", Endpoint(p.address, 4000))
        await asyncio.sleep(1.0)
        arrived = {k: v - t0 for k, v in got.items()}
        model = {"q": n.path_latency_s(p, q), "p": n.path_latency_s(h, p)}
        return arrived, model

    arrived, model = run_virtual(main())
    assert arrived["q"] == pytest.approx(model["q"], abs=1e-6)
    assert arrived["p"] == pytest.approx(model["p"], abs=1e-6)
    assert arrived["q"] != pytest.approx(0.02)  # not the flat default


def test_cli_reports_stretch_only_with_a_map(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["overlay", "--json", "--nodes", "12", "--pairs", "20", "--records", "5"]
    main([*argv, "--no-allocate", "--latency-model", "world:regions=3,sites=2"])
    out = json.loads(capsys.readouterr().out)
    assert out["latency_model"]["regions"] == 3
    assert out["stretch_p50"] >= 1.0 and out["stretch_p90"] >= out["stretch_p50"]
    assert out["dht_get_p50_s"] > 0
    assert out["targets"]["stretch_p50"]["target"] == "<= 2"
    main([*argv, "--no-allocate"])
    plain = json.loads(capsys.readouterr().out)
    assert not {k for k in plain if k.startswith(("stretch", "dht_get_p", "latency"))}


def test_a_bad_map_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["overlay", "--nodes", "4", "--latency-model", "world:regions=x"]) == 2
    err = capsys.readouterr().err
    assert "latency-model.regions" in err and "integer" in err
