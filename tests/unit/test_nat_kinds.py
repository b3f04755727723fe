"""ipop.nat.kinds: one NatKind vocabulary, read by every place that names a NAT kind."""

from __future__ import annotations

import json
import random

import pytest

from ipop.errors import ConfigError, LocalProtocolError
from ipop.nat.kinds import BUILDABLE_KINDS, NAT_KINDS, NatKind
from ipop.testing.fake_links import MODELLED_KINDS, FakeLinkWorld
from ipop.testing.nat import NAT_KIND_NAMES
from ipop.testing.nat import NAT_KINDS as SIM_BEHAVIOURS
from ipop.tools.lab.natrules import NAT_KINDS as LAB_RULE_KINDS
from ipop.tools.lab.topology import topology_from_dict
from ipop.types import NodeId


def test_values_are_the_spellings_and_serialise_as_plain_strings() -> None:
    assert [k.value for k in NAT_KINDS] == [
        "none",
        "full-cone",
        "restricted-cone",
        "port-restricted-cone",
        "symmetric",
    ]
    assert json.dumps({NatKind.SYMMETRIC: NatKind.CONE}) == '{"symmetric": "cone"}'
    assert f"{NatKind.PORT_RESTRICTED_CONE}" == "port-restricted-cone"
    assert NatKind.CONE not in NAT_KINDS  # a partial measurement, never built
    assert NAT_KINDS[1:] == BUILDABLE_KINDS


def test_parse_reads_old_spellings_and_lists_the_valid_ones() -> None:
    assert NatKind.parse("open") is NatKind.NONE
    assert NatKind.parse("symmetric") is NatKind.SYMMETRIC
    with pytest.raises(ValueError, match="valid kinds: none, cone, full-cone"):
        NatKind.parse("hard")


def test_only_none_is_untranslated() -> None:
    assert [k for k in NatKind if not k.translated] == [NatKind.NONE]


def test_simulator_and_lab_build_the_same_kinds() -> None:
    assert tuple(SIM_BEHAVIOURS) == BUILDABLE_KINDS
    assert NAT_KIND_NAMES == NAT_KINDS
    assert LAB_RULE_KINDS == BUILDABLE_KINDS
    for kind, behaviour in SIM_BEHAVIOURS.items():
        assert behaviour.kind is kind


def test_fake_link_world_refuses_kinds_it_does_not_model() -> None:
    world = FakeLinkWorld(rng=random.Random(1))
    for i, kind in enumerate(MODELLED_KINDS):
        world.add_host(NodeId(i + 1), nat=kind)
    with pytest.raises(LocalProtocolError, match="models NAT kinds"):
        world.add_host(NodeId(9), nat=NatKind.FULL_CONE)


def _lab(host: dict[str, str]) -> dict[str, object]:
    return {"hosts": [{"name": "pub1", "role": "public"}, {"name": "a", "role": "nat", **host}]}


def test_lab_topology_reads_kind_and_the_old_nat_key() -> None:
    new = topology_from_dict(_lab({"kind": "symmetric"}))
    old = topology_from_dict(_lab({"nat": "symmetric"}))
    assert new == old
    nat = new.host("a").nat
    assert nat is not None and nat.kind is NatKind.SYMMETRIC
    assert new.to_dict()["hosts"][1]["kind"] == "symmetric"
    assert topology_from_dict(new.to_dict()) == new


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ({"kind": "symmetric", "nat": "symmetric"}, "hosts[1].nat"),
        ({}, "hosts[1].kind"),
        ({"kind": "none"}, "hosts[1].kind"),
        ({"kind": "cone"}, "hosts[1].kind"),
        ({"nat": "open"}, "hosts[1].nat"),
    ],
)
def test_lab_topology_errors_name_the_key(host: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        topology_from_dict(_lab(host))
    assert err.value.key == key
