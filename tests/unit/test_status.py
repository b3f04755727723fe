"""The ``ipop status --json`` contract: exact round trips, strict reading."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipop.nat.kinds import NatKind
from ipop.status import (
    PATH_KINDS,
    DnsLatency,
    DnsStatus,
    LanHostStatus,
    PeerStatus,
    PingReply,
    SelfStatus,
    Status,
)
from ipop.testing.snapshots import A_ID
from ipop.testing.snapshots import sample_status as sample


def test_round_trip_json_and_dict() -> None:
    s = sample()
    assert Status.from_json(s.to_json()) == s
    assert Status.from_dict(s.to_dict()) == s
    assert Status.from_json(s.to_json(indent=2)) == s


def test_self_is_spelled_self_in_json() -> None:
    doc = json.loads(sample().to_json())
    assert list(doc) == ["self", "peers", "drops", "counters"]
    assert doc["self"]["node_name"] == "alice"
    assert doc["peers"][1]["rtt_ms"] is None


def test_integer_json_numbers_read_as_floats() -> None:
    doc = sample().to_dict()
    doc["self"]["uptime_s"] = 12
    doc["peers"][0]["rtt_ms"] = 3
    s = Status.from_dict(doc)
    assert s.self_.uptime_s == 12.0 and isinstance(s.self_.uptime_s, float)
    assert s.peers[0].rtt_ms == 3.0 and isinstance(s.peers[0].rtt_ms, float)


def test_nat_reads_the_old_spelling_open_as_none() -> None:
    # Before ipop.nat.kinds the status and netcheck said "open" for no translation.
    doc = sample().to_dict()
    doc["self"]["nat"] = "open"
    assert Status.from_dict(doc).self_.nat is NatKind.NONE
    doc["self"]["nat"] = None
    assert Status.from_dict(doc).self_.nat is None
    assert json.loads(sample().to_json())["self"]["nat"] == "cone"


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("self", _DELETE, "status.self: is missing"),
        ("extra", 1, "status.extra: is not a known field"),
        ("self.node_id", "abc", "self.node_id"),
        ("self.node_id", A_ID.upper(), "self.node_id"),
        ("self.node_name", None, "self.node_name: must be a string"),
        ("self.vip", 5, "self.vip: must be a string or null"),
        ("self.nat", 5, "self.nat: must be a string or null"),
        ("self.nat", "endpoint-independent", "self.nat: unknown NAT kind"),
        ("self.names", "alice", "self.names: must be a list"),
        ("self.names.0", 1, "self.names[0]: must be a string"),
        ("self.uptime_s", "1", "self.uptime_s: must be a number"),
        ("self.uptime_s", -1.0, "self.uptime_s: must be a finite number >= 0"),
        ("self.uptime_s", True, "self.uptime_s: must be a number"),
        ("self.routable", 1, "self.routable: must be true or false"),
        ("self.surprise", 1, "self.surprise: is not a known field"),
        ("peers", {}, "peers: must be a list"),
        ("peers.0", [], "peers[0]: must be an object"),
        ("peers.0.path", "teleport", "peers[0].path: must be one of direct, relayed, overlay"),
        ("peers.0.rtt_ms", "fast", "peers[0].rtt_ms: must be a number or null"),
        ("peers.1.bytes_in", -5, "peers[1].bytes_in: must not be negative"),
        ("peers.1.bytes_out", 1.5, "peers[1].bytes_out: must be an integer"),
        ("peers.1.bytes_out", False, "peers[1].bytes_out: must be an integer"),
        ("peers.0.kinds", None, "peers[0].kinds: must be a list"),
        ("peers.0.name", _DELETE, "peers[0].name: is missing"),
        ("drops.bad_mac", "2", "drops.bad_mac: must be an integer"),
        ("counters", [], "counters: must be an object"),
    ],
)
def test_from_dict_rejects_wrong_fields(path: str, value: Any, message: str) -> None:
    doc = copy.deepcopy(sample().to_dict())
    _set(doc, path, value)
    with pytest.raises(ValueError) as info:
        Status.from_dict(doc)
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["", "[]", "null", "{", '{"self": NaN}', "42"])
def test_from_json_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        Status.from_json(text)


def test_nan_is_not_written() -> None:
    doc = sample().to_json().replace('"rtt_ms": 1.5', '"rtt_ms": NaN')
    with pytest.raises(ValueError):
        Status.from_json(doc)
    bad = PingReply(seq=1, ok=True, rtt_ms=float("nan"), path="direct", hops=1)
    with pytest.raises(ValueError):
        bad.to_json()


def test_ping_reply_round_trip_and_strictness() -> None:
    ok = PingReply(seq=3, ok=True, rtt_ms=1.5, path="relayed", hops=2)
    lost = PingReply(seq=4, ok=False)
    for r in (ok, lost):
        assert PingReply.from_json(r.to_json()) == r
    assert json.loads(lost.to_json()) == {
        "seq": 4,
        "ok": False,
        "rtt_ms": None,
        "path": None,
        "hops": None,
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"seq": -1}, "ping.seq: must not be negative"),
        ({"ok": "yes"}, "ping.ok: must be true or false"),
        ({"path": "carrier-pigeon"}, "ping.path: must be one of"),
        ({"hops": 1.0}, "ping.hops: must be an integer"),
        ({"extra": 0}, "ping.extra: is not a known field"),
    ]
    for patch, message in cases:
        doc = {**ok.to_dict(), **patch}
        with pytest.raises(ValueError) as info:
            PingReply.from_dict(doc)
        assert message in str(info.value)
    with pytest.raises(ValueError, match=r"ping\.hops: is missing"):
        PingReply.from_dict({"seq": 1, "ok": True, "rtt_ms": 1.0, "path": "direct"})


_text = st.text(max_size=20)
_count = st.integers(min_value=0, max_value=2**63)
_num = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
_hex_id = st.binary(min_size=20, max_size=20).map(bytes.hex)

_self = st.builds(
    SelfStatus,
    node_id=_hex_id,
    node_name=_text,
    vip=st.none() | _text,
    names=st.lists(_text, max_size=3),
    nat=st.none() | st.sampled_from(NatKind),
    uptime_s=_num,
    endpoints=st.lists(_text, max_size=3),
    routable=st.booleans(),
)
_peer = st.builds(
    PeerStatus,
    node_id=_hex_id,
    name=st.none() | _text,
    vip=st.none() | _text,
    path=st.sampled_from(PATH_KINDS),
    endpoint=st.none() | _text,
    rtt_ms=st.none() | _num,
    bytes_in=_count,
    bytes_out=_count,
    kinds=st.lists(_text, max_size=3),
)
_status = st.builds(
    Status,
    self_=_self,
    peers=st.lists(_peer, max_size=4),
    drops=st.dictionaries(_text, _count, max_size=3),
    counters=st.dictionaries(_text, _count, max_size=3),
)


@given(_status)
def test_any_status_round_trips(s: Status) -> None:
    assert Status.from_json(s.to_json()) == s


# --- lan_hosts (router mode): optional, strict when present ------------------------------------


def _with_hosts() -> Status:
    base = sample()
    hosts = [
        LanHostStatus(
            "0a:00:00:00:00:01", "100.64.5.1", ["C064005001.ipop", "p1.ipop"], "dhcp", 59.5
        ),
        LanHostStatus("0a:00:00:00:00:02", "100.64.5.2", ["C064005002.ipop"], "static", None),
    ]
    return Status(base.self_, base.peers, base.drops, base.counters, lan_hosts=hosts)


def test_lan_hosts_round_trip_and_are_absent_when_empty() -> None:
    s = _with_hosts()
    assert Status.from_json(s.to_json()) == s
    assert "lan_hosts" in s.to_dict()
    plain = sample()
    assert "lan_hosts" not in plain.to_dict()
    assert Status.from_dict(plain.to_dict()).lan_hosts == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["lan_hosts"][0].pop("vip"), "lan_hosts[0].vip: is missing"),
        (lambda d: d["lan_hosts"][1].update(extra=1), "lan_hosts[1].extra: is not a known field"),
        (lambda d: d["lan_hosts"][0].update(mac="0A:00"), "lan_hosts[0].mac"),
        (lambda d: d["lan_hosts"][0].update(kind="magic"), "lan_hosts[0].kind"),
        (lambda d: d["lan_hosts"][0].update(lease_s="1"), "lan_hosts[0].lease_s"),
        (lambda d: d.update(lan_hosts={}), "lan_hosts: must be a list"),
    ],
)
def test_lan_hosts_are_read_strictly(mutate: Any, message: str) -> None:
    doc = _with_hosts().to_dict()
    mutate(doc)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Status.from_dict(doc)


# --- dns (the gateway's resolver): optional, strict when present --------------------------------


def _with_dns() -> Status:
    base = sample()
    dns = DnsStatus(
        counters={"queries": 1000, "lookups": 5, "merged": 995},
        answers={"noerror": 990, "servfail": 10},
        drops={"dns_too_many_waiters": 10},
        latency_ms=DnsLatency(p50=3.5, p99=40.0, buckets={"le_1": 2, "over_5000": 0}),
    )
    return Status(base.self_, base.peers, base.drops, base.counters, dns=dns)


def test_dns_round_trips_and_is_absent_when_off() -> None:
    s = _with_dns()
    assert Status.from_json(s.to_json()) == s
    assert s.to_dict()["dns"]["latency_ms"]["p99"] == 40.0
    assert "dns" not in sample().to_dict() and Status.from_dict(sample().to_dict()).dns is None
    idle = DnsStatus({}, {}, {}, DnsLatency(None, None, {}))
    assert DnsStatus.from_dict(idle.to_dict()) == idle


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["dns"].pop("answers"), "dns.answers: is missing"),
        (lambda d: d["dns"]["drops"].update(x=-1), "dns.drops.x: must not be negative"),
        (lambda d: d["dns"]["latency_ms"].update(p99="1"), "dns.latency_ms.p99"),
        (lambda d: d["dns"]["latency_ms"].update(extra=1), "dns.latency_ms.extra"),
    ],
)
def test_dns_is_read_strictly(mutate: Any, message: str) -> None:
    doc = _with_dns().to_dict()
    mutate(doc)
    with pytest.raises(ValueError, match=message):
        Status.from_dict(doc)
