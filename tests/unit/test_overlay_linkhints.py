"""Link hints (ipop.overlay.linkhints, the LINK_IDS message 0x0B, the hinted hop of
ipop.overlay.routing): the codec, the hint table's bounds, whom we tell and when, the hop
choice, and that a peer lying about its links costs a message one sideways step, never a loop."""

from __future__ import annotations

import collections
import itertools
import random

import pytest

from ipop.errors import RemoteProtocolError
from ipop.link.events import LinkMessage, LinkUp
from ipop.overlay import routing
from ipop.overlay.linkhints import LinkHints, LinkIdsTeller
from ipop.overlay.messages import (
    DECODE_REASONS,
    FLAG_EXACT,
    FLAG_SIDEWAYS,
    MAX_LINK_IDS,
    LinkIds,
    Routed,
    decode_message,
    id_prefix,
)
from ipop.overlay.near import SeenIds
from ipop.overlay.ring import route_key
from ipop.overlay.routing import Deliver, Drop, Forward, Router
from ipop.overlay.suspect import SilentHops
from ipop.overlay.table import ConnectionTable
from ipop.testing.fake_origin import FakeKeyring
from ipop.testing.recording_links import fake_certificate, node_by_hand, timed_link_up
from ipop.types import RING, Endpoint, NodeId, RelayPath

SIG = bytes(64)
FAST, SLOW = 0.004, 0.080  # round trips under and over OVERLAY_LINK_HINT_RTT_S (30 ms)


def _id(k: int) -> NodeId:
    """Ids spread over the ring (each with its own 64-bit prefix)."""
    return NodeId((k * (RING // 64) + 12345) % RING)


# --- the message ------------------------------------------------------------------------------


def test_the_message_round_trips_and_names_an_id_by_its_top_64_bits() -> None:
    ids = [_id(k) for k in range(MAX_LINK_IDS)]
    msg = LinkIds.of(reversed(ids))
    assert msg.prefixes == tuple(sorted(id_prefix(i) for i in ids))
    assert decode_message(msg.encode()) == msg
    assert len(msg.encode()) == 3 + 8 * MAX_LINK_IDS
    assert decode_message(LinkIds(()).encode()) == LinkIds(())
    assert id_prefix(NodeId(RING - 1)) == (1 << 64) - 1
    with pytest.raises(ValueError):
        LinkIds(tuple(range(MAX_LINK_IDS + 1)))
    with pytest.raises(ValueError):
        LinkIds((1 << 64,))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0b", "truncated"),
        (b"\x0b\x00", "truncated"),
        (b"\x0b\x00\x02" + bytes(15), "truncated"),  # two ids announced, 15 bytes given
        (b"\x0b\x01\x00", "bad_flags"),  # no flag is defined
        (b"\x0b\x00" + bytes([MAX_LINK_IDS + 1]) + bytes(8 * (MAX_LINK_IDS + 1)), "too_many_ids"),
    ],
)
def test_a_malformed_list_is_refused_with_a_counted_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        decode_message(data)
    assert exc.value.reason == reason and reason in DECODE_REASONS


def test_random_bytes_after_the_type_decode_or_are_refused_never_raise_otherwise() -> None:
    rng = random.Random(17)
    decoded = 0
    for _ in range(3000):
        data = bytes([0x0B]) + rng.randbytes(rng.randrange(0, 40))
        if rng.random() < 0.5 and len(data) > 2:  # plausible heads reach the id loop
            data = data[:1] + b"\x00" + bytes([rng.randrange(0, 5)]) + data[3:]
        try:
            msg = decode_message(data)
        except RemoteProtocolError as exc:
            assert exc.reason in DECODE_REASONS
            continue
        assert isinstance(msg, LinkIds) and len(msg.prefixes) <= MAX_LINK_IDS
        decoded += 1
    assert decoded > 100  # the fuzz reached the decoder's accepting path too


def test_a_sideways_routed_message_keeps_its_flag_on_the_wire() -> None:
    msg = Routed(FLAG_EXACT | FLAG_SIDEWAYS, 2, 64, 3, _id(1), _id(2), None, b"p", 0, SIG)
    assert decode_message(msg.encode()) == msg


# --- the hint table ---------------------------------------------------------------------------


def _table(rtts: dict[NodeId, float | None]) -> ConnectionTable:
    table = ConnectionTable()
    for i, (p, rtt) in enumerate(rtts.items()):
        table.add(p, Endpoint("198.51.100.1", 4000 + i), now=0.0, rtt_s=rtt)
    return table


def _hints(table: ConnectionTable, *, max_peers: int = 8) -> LinkHints:
    return LinkHints(table, rtt_max_s=0.030, hint_s=100.0, max_peers=max_peers)


def test_the_fastest_fast_peer_that_lists_a_target_holds_it() -> None:
    a, b, slow, target = _id(1), _id(2), _id(3), _id(40)
    table = _table({a: 0.020, b: 0.005, slow: SLOW})
    hints = _hints(table)
    assert hints.holder(target, 1.0) is None
    assert hints.put(a, [id_prefix(target)], 1.0)
    assert hints.holder(target, 1.0) == (0.020, a)
    assert hints.put(b, [id_prefix(target), id_prefix(_id(41))], 1.0)
    assert hints.holder(target, 1.0) == (0.005, b)
    # A peer we measured slow, or one we hold no link to, is not kept: it steers nothing.
    assert not hints.put(slow, [id_prefix(_id(42))], 1.0)
    assert not hints.put(_id(9), [id_prefix(_id(42))], 1.0)
    assert hints.holder(_id(42), 1.0) is None and len(hints) == 2
    # A new list replaces the old one whole; a forgotten peer's list goes.
    hints.put(b, [id_prefix(_id(41))], 2.0)
    assert hints.holder(target, 2.0) == (0.020, a)
    hints.forget(a)
    assert hints.holder(target, 2.0) is None


def test_lists_age_out_and_the_table_is_bounded_oldest_out() -> None:
    peers = [_id(k) for k in range(1, 6)]
    table = _table(dict.fromkeys(peers, FAST))
    hints = _hints(table, max_peers=3)
    for k, p in enumerate(peers):
        hints.put(p, [id_prefix(_id(40 + k))], float(k))
    assert len(hints) == 3
    assert hints.holder(_id(40), 5.0) is None  # the two oldest lists made room
    assert hints.holder(_id(44), 5.0) == (FAST, peers[4])
    # hint_s (100 s) after it was said, a list is no longer believed.
    assert hints.holder(_id(42), 101.9) == (FAST, peers[2])  # said at 2.0
    assert hints.holder(_id(42), 102.0) is None
    assert hints.holder(_id(44), 103.9) == (FAST, peers[4])
    assert hints.holder(_id(44), 104.0) is None and len(hints) == 0


def test_a_list_counts_only_while_its_peer_is_timed_fast() -> None:
    a, target = _id(1), _id(40)
    table = _table({a: FAST})
    hints = _hints(table)
    hints.put(a, [id_prefix(target)], 1.0)
    assert hints.holder(target, 1.0) == (FAST, a)
    # The link moved to a path we have not timed: its list steers nothing meanwhile.
    table.add(a, Endpoint("198.51.100.2", 4000), now=2.0)
    assert hints.holder(target, 2.0) is None
    table.add(a, Endpoint("198.51.100.2", 4000), now=3.0, rtt_s=FAST)
    assert hints.holder(target, 3.0) == (FAST, a)


def test_a_list_is_capped_at_max_link_ids() -> None:
    a = _id(1)
    hints = _hints(_table({a: FAST}))
    hints.put(a, range(1000), 1.0)
    assert hints.holder(NodeId(63 << 96), 1.0) == (FAST, a)
    assert hints.holder(NodeId(64 << 96), 1.0) is None


# --- whom we tell, and when -------------------------------------------------------------------


def test_fast_peers_are_told_at_once_on_a_change_at_most_every_min_s_and_each_refresh() -> None:
    teller = LinkIdsTeller(rtt_max_s=0.030, min_s=10.0, refresh_s=60.0)
    a, b, slow, untimed = _id(1), _id(2), _id(3), _id(4)
    peers = [(a, FAST), (slow, SLOW), (untimed, None)]
    assert teller.due(peers, 1, 0.0) == [a]  # only a peer we timed fast
    assert teller.due(peers, 1, 5.0) == []
    assert teller.due(peers, 2, 5.0) == []  # changed, but within min_s
    assert teller.due(peers, 2, 10.0) == [a]
    assert teller.due([*peers, (b, FAST)], 2, 11.0) == [b]  # a new link: at once
    assert teller.due(peers, 2, 69.0) == []
    assert teller.due(peers, 2, 70.0) == [a]  # the refresh, unchanged
    teller.forget(a)
    assert teller.due(peers, 2, 71.0) == [a]


# --- the hop --------------------------------------------------------------------------------

US = _id(20)
TARGET = _id(40)
GREEDY = _id(38)  # our link nearest the target
BEHIND = _id(10)  # a peer farther from the target than we are
AHEAD = _id(30)  # a peer nearer the target than we are


def _router_at(
    me: NodeId, table: ConnectionTable, stats: collections.Counter[str], hints: LinkHints | None
) -> Router:
    """A proximity router at ``me`` over ``table`` (with ``hints``, if any); no silent hop."""
    silent = SilentHops(rto_min_s=0.05, rto_max_s=1.0, rto_initial_s=0.3)
    kw = {"seen": SeenIds(), "check": lambda msg, now: None, "pull_min_s": 1.0}
    return Router(me, table=table, silent=silent, stats=stats, proximity=True, hints=hints, **kw)


def _router(rtts: dict[NodeId, float | None]) -> tuple[Router, LinkHints, collections.Counter[str]]:
    table = _table(rtts)
    hints = _hints(table)
    stats: collections.Counter[str] = collections.Counter()
    return _router_at(US, table, stats, hints), hints, stats


def _msg(flags: int = 0, hops: int = 0, src: NodeId = US) -> Routed:
    return Routed(FLAG_EXACT | flags, hops, 64, 3, src, TARGET, None, b"p", 0, SIG)


def test_a_fast_peer_holding_the_target_takes_the_message_even_sideways_once() -> None:
    r, hints, stats = _router({GREEDY: 0.150, BEHIND: FAST, AHEAD: 0.150})
    assert r.decide(_msg(), None, 1.0) == Forward(GREEDY, _msg())
    hints.put(BEHIND, [id_prefix(TARGET)], 1.0)
    assert r.decide(_msg(), None, 1.0) == Forward(BEHIND, _msg(FLAG_SIDEWAYS))
    assert stats["routed_hinted_sideways"] == 1
    # A message that made its sideways step already goes on by our own links.
    src = _id(5)
    got = r.decide(_msg(FLAG_SIDEWAYS, hops=2, src=src), AHEAD, 1.0)
    assert got == Forward(GREEDY, _msg(FLAG_SIDEWAYS, hops=3, src=src))
    assert stats["routed_sideways_spent"] == 1


def test_a_hinted_peer_nearer_the_target_is_no_sideways_step() -> None:
    # AHEAD is fast, but not enough to win over GREEDY by round trips alone.
    r, hints, stats = _router({GREEDY: 0.020, AHEAD: 0.025})
    assert r.decide(_msg(), None, 1.0) == Forward(GREEDY, _msg())
    hints.put(AHEAD, [id_prefix(TARGET)], 1.0)
    assert route_key(AHEAD, TARGET) < route_key(US, TARGET)
    src = _id(5)
    assert r.decide(_msg(FLAG_SIDEWAYS, 1, src), BEHIND, 1.0) == Forward(
        AHEAD, _msg(FLAG_SIDEWAYS, 2, src)
    )
    assert r.decide(_msg(), None, 1.0) == Forward(AHEAD, _msg())  # no flag set
    assert stats["routed_hinted"] == 2


def test_no_hint_back_to_the_peer_that_handed_us_the_message() -> None:
    r, hints, _ = _router({GREEDY: 0.150, BEHIND: FAST})
    hints.put(BEHIND, [id_prefix(TARGET)], 1.0)
    src = _id(5)
    assert r.decide(_msg(0, 1, src), BEHIND, 1.0) == Forward(GREEDY, _msg(0, 2, src))


def test_our_own_message_back_after_its_sideways_step_goes_on_once_flagged() -> None:
    r, _, stats = _router({GREEDY: 0.150, BEHIND: FAST})
    assert r.decide(_msg(0, 2), BEHIND, 1.0) == Drop("own_src_returned")
    assert r.decide(_msg(FLAG_SIDEWAYS, 2), BEHIND, 1.0) == Forward(GREEDY, _msg(FLAG_SIDEWAYS, 3))
    assert stats["routed_sideways_returned"] == 1


def test_without_hints_the_router_is_the_proximity_router() -> None:
    r, hints, _ = _router({GREEDY: 0.150, BEHIND: FAST})
    hints.put(BEHIND, [id_prefix(TARGET)], 1.0)
    plain = _router_at(US, r._table, collections.Counter(), None)
    assert plain.decide(_msg(), None, 1.0) == Forward(GREEDY, _msg())


def test_a_relayed_link_to_the_target_yields_to_a_faster_fast_peer_that_holds_it() -> None:
    """A route's last hop over a relayed link crosses the relay, often in another region:
    a third of the stretch tail of a 300-node run (seed 2). A fast peer that lists the
    target (lists name direct links only) takes it when we timed it faster than the relayed
    path; a direct link to the target is never handed away, nor a faster relayed one."""
    table = _table({BEHIND: FAST, AHEAD: 0.150})
    table.add(TARGET, RelayPath(AHEAD, TARGET), now=0.0, rtt_s=0.300)
    hints = _hints(table)
    stats: collections.Counter[str] = collections.Counter()
    r = _router_at(US, table, stats, hints)
    assert r.decide(_msg(), None, 1.0) == Forward(TARGET, _msg())
    hints.put(BEHIND, [id_prefix(TARGET)], 1.0)
    assert r.decide(_msg(), None, 1.0) == Forward(BEHIND, _msg(FLAG_SIDEWAYS))
    assert stats["routed_hinted_past_relay"] == 1
    # The sideways step spent already: the relayed link it is.
    src = _id(5)
    got = r.decide(_msg(FLAG_SIDEWAYS, 1, src), AHEAD, 1.0)
    assert got == Forward(TARGET, _msg(FLAG_SIDEWAYS, 2, src))
    # A relayed path faster than the peer: kept.
    table.add(TARGET, RelayPath(AHEAD, TARGET), now=2.0, rtt_s=0.003)
    assert r.decide(_msg(), None, 2.0) == Forward(TARGET, _msg())
    # A direct link to the target: kept, however slow.
    table.add(TARGET, Endpoint("198.51.100.7", 4000), now=3.0, rtt_s=0.300)
    assert r.decide(_msg(), None, 3.0) == Forward(TARGET, _msg())
    assert stats["routed_hinted_past_relay"] == 1


# --- a liar in a network of routers ------------------------------------------------------------


class _Net:
    """Routers over hand-made links: two regions, each node linked to its two ring neighbours
    on each side and four random others; every node told the true lists of its fast peers.
    ``liar`` (if any) also links to every node of its region, the fastest peer of each (1 ms),
    and says it holds a link to every node; it routes by its real links alone (hints taken
    from others would hand each message to a true holder at once, hiding the lie)."""

    def __init__(self, seed: int, liar: int | None) -> None:
        rng = random.Random(seed)
        n = 40
        self.ids = sorted((NodeId(rng.randrange(RING)) for _ in range(n)), key=lambda i: i.value)
        region = [rng.randrange(2) for _ in range(n)]
        links: dict[int, set[int]] = {i: set() for i in range(n)}
        for i in range(n):
            for j in (i - 2, i - 1, i + 1, i + 2, *rng.sample(range(n), 4)):
                if j % n != i:
                    links[i].add(j % n)
                    links[j % n].add(i)
        if liar is not None:
            for j in range(n):
                if j != liar and region[j] == region[liar]:
                    links[liar].add(j)
                    links[j].add(liar)
        self.routers: dict[NodeId, Router] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        tables = {}
        for i in range(n):
            rtts = {
                self.ids[j]: 0.001
                if liar in (i, j)
                else (0.004 if region[i] == region[j] else 0.120) + 0.001 * ((i + j) % 5)
                for j in sorted(links[i])
            }
            tables[i] = _table(rtts)
        for i, me in enumerate(self.ids):
            hints = _hints(tables[i], max_peers=64)
            for j in links[i]:
                said = self.ids if j == liar else [self.ids[k] for k in links[j]]
                hints.put(self.ids[j], [id_prefix(x) for x in said], 0.0)
            mine = None if i == liar else hints
            self.routers[me] = _router_at(me, tables[i], self.stats, mine)

    def route(self, src: NodeId, dst: NodeId) -> tuple[str, list[NodeId]]:
        """Route one exact message; (how it ended, the nodes it visited)."""
        msg = Routed(FLAG_EXACT, 0, 64, 3, src, dst, None, b"p", 0, SIG)
        at, frm, path = src, None, [src]
        while True:
            verdict = self.routers[at].decide(msg, frm, 1.0)
            if type(verdict) is Deliver:
                return ("delivered" if at == dst else "elsewhere"), path
            if type(verdict) is Drop:
                return verdict.reason, path
            assert type(verdict) is Forward
            msg, frm, at = verdict.msg, at, verdict.hop
            path.append(at)


def _route_all(net: _Net) -> tuple[collections.Counter[str], int]:
    """Every ordered pair routed: how they ended, and the most hops that got no nearer."""
    ends: collections.Counter[str] = collections.Counter()
    worst = 0
    for s in net.ids:
        for d in net.ids:
            if s == d:
                continue
            end, path = net.route(s, d)
            ends[end] += 1
            keys = [route_key(p, d) for p in path]
            worst = max(worst, sum(1 for a, b in itertools.pairwise(keys) if b >= a))
    return ends, worst


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_liar_claiming_every_link_costs_each_message_one_step_never_a_loop(seed: int) -> None:
    honest_ends, honest_worst = _route_all(_Net(seed, None))
    assert honest_ends == {"delivered": 40 * 39}
    net = _Net(seed, liar=7)
    ends, worst = _route_all(net)
    assert ends == {"delivered": 40 * 39}  # no TTL runs out, nothing ends anywhere else
    assert net.stats["routed_hinted_sideways"] > 0  # the lie was believed, and steered
    assert worst <= 1 and honest_worst <= 1  # at most one hop that got no nearer


def test_without_the_one_sideways_step_bound_the_same_lie_loops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the bound prevents: with FLAG_SIDEWAYS read as never set (and so never set), a
    message the liar drew sideways goes round to a node it visited before: back at its
    source, which drops it (own_src_returned), or round again until its TTL runs out."""
    monkeypatch.setattr(routing, "FLAG_SIDEWAYS", 0)
    ends: collections.Counter[str] = collections.Counter()
    for seed in (1, 2, 3):
        ends += _route_all(_Net(seed, liar=7))[0]
    assert ends["delivered"] < 3 * 40 * 39
    assert set(ends) <= {"delivered", "own_src_returned", "ttl_expired"}


# --- on a node driven by hand ----------------------------------------------------------------

ME = _id(20)
KEYRING = FakeKeyring()


def test_once_joined_a_node_tells_its_fast_peers_its_links_and_hears_theirs() -> None:
    node, links = node_by_hand(ME, KEYRING)
    fast, slow = _id(21), _id(50)
    timed_link_up(node, fast, 0, FAST)
    timed_link_up(node, slow, 1, SLOW)
    node.handle_timer(now=2.0)
    assert not links.sent_of(LinkIds)  # not joined yet
    node.near_upkeep.on_joined()
    node.handle_timer(now=4.0)  # the tick is jittered: one second +-10 %
    assert not links.sent_of(LinkIds)  # the links came up at 1.0: not settled yet
    node.handle_timer(now=6.5)
    assert links.sent_of(LinkIds) == [(fast, LinkIds.of([fast, slow]))]
    ep = Endpoint("203.0.113.9", 5800)
    said = LinkIds.of([_id(60)]).encode()
    node.on_link_event(LinkMessage(fast, said, ep), now=6.6)
    node.on_link_event(LinkMessage(slow, said, ep), now=6.6)
    assert node.stats["link_ids_heard"] == 1 and node.stats["link_ids_ignored"] == 1
    node.on_link_event(LinkMessage(fast, b"\x0b\x00\x05" + bytes(8), ep), now=6.7)
    assert node.drops["truncated"] == 1
    node.handle_timer(now=8.0)
    assert len(links.sent_of(LinkIds)) == 1  # nothing changed: the next list is the refresh


def test_a_node_lists_its_direct_links_only() -> None:
    """A peer that takes a message on our list hands it to the target at once: over a relayed
    link of ours that hop would cross the relay as well."""
    node, links = node_by_hand(ME, KEYRING)
    fast, relayed = _id(21), _id(22)
    timed_link_up(node, fast, 0, FAST)
    node.on_link_event(
        LinkUp(relayed, fake_certificate(relayed), RelayPath(fast, relayed), None, rtt_s=SLOW),
        now=1.0,
    )
    node.near_upkeep.on_joined()
    node.handle_timer(now=6.5)
    assert relayed in node.connected_peers()
    assert links.sent_of(LinkIds) == [(fast, LinkIds.of([fast]))]
