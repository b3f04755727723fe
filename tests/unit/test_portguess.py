"""Port guessing toward a symmetric NAT (ipop.nat.portguess), driven by hand with explicit
``now``."""

from __future__ import annotations

import math
import random

from ipop import timing
from ipop.nat.portguess import (
    FLAG_ANSWER,
    FLAG_HIDDEN,
    FLAG_SYMMETRIC,
    FLAG_TRANSLATED,
    OP_GO,
    PortGuessing,
    is_knock,
    why_relayed,
)
from ipop.types import Endpoint, NodeId, SocketPath

S_ID = NodeId(1 << 100)
C_ID = NodeId(2 << 100)
S_PUBLIC = "203.0.113.30"
C_PUBLIC = Endpoint("203.0.113.40", 5800)
C_LAN = Endpoint("198.18.4.2", 5800)
T0 = 1_800_000_000.0
# Where each side saw the other (its CTM endpoints; see OverlayNode.peer_hosts).
C_SEEN = frozenset({C_PUBLIC.host})
S_SEEN = frozenset({S_PUBLIC})


def _pair(sockets: int = 8, knocks: int = 16) -> tuple[PortGuessing, PortGuessing]:
    s = PortGuessing(rng=random.Random(1), sockets=sockets, knocks=knocks)
    c = PortGuessing(rng=random.Random(2), sockets=sockets, knocks=knocks)
    return s, c


def _go_from_s(s: PortGuessing, c: PortGuessing) -> bytes:
    """C says HELLO (port kept); S (port translated) answers with openers and a GO."""
    hello = c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
    assert hello is not None
    go = s.receive(
        C_ID, hello, symmetric=False, translated=True, public_host=S_PUBLIC, endpoints=(), now=T0,
        seen_hosts=C_SEEN,
    )  # fmt: skip
    assert go is not None and go[0] == OP_GO
    return go


def test_the_translated_side_opens_its_sockets_toward_the_peer_then_says_go() -> None:
    s, c = _pair()
    _go_from_s(s, c)
    out = s.datagrams_to_send()
    assert [p for _, p in out] == [SocketPath(i, C_PUBLIC) for i in range(1, 9)]
    assert all(is_knock(d) for d, _ in out)
    assert s.datagrams_to_send() == []  # taken once


def test_a_symmetric_sender_gets_a_hello_back_and_then_opens() -> None:
    s, c = _pair()
    hello = s.hello(C_ID, symmetric=True, translated=True, endpoints=(), now=T0)
    assert hello is not None and hello[1] & FLAG_ANSWER and hello[1] & FLAG_SYMMETRIC
    back = c.receive(
        S_ID, hello, symmetric=False, translated=False, public_host=None, endpoints=(C_PUBLIC,),
        now=T0,
    )  # fmt: skip
    assert back is not None and not back[1] & FLAG_ANSWER  # no ping-pong
    go = s.receive(
        C_ID, back, symmetric=True, translated=True, public_host=S_PUBLIC, endpoints=(), now=T0,
        seen_hosts=C_SEEN,
    )  # fmt: skip
    assert go is not None and go[0] == OP_GO
    assert len(s.datagrams_to_send()) == 8


def test_knocks_go_to_random_ports_of_the_address_in_rounds_until_linked() -> None:
    s, c = _pair()
    go = _go_from_s(s, c)
    assert c.receive(
        S_ID, go, symmetric=False, translated=False, public_host=None, endpoints=(), now=T0,
        seen_hosts=S_SEEN,
    ) is None  # fmt: skip
    assert c.get_timer() == T0
    c.handle_timer(now=T0)
    first = c.datagrams_to_send()
    assert len(first) == 16 and {p.host for _, p in first} == {S_PUBLIC}  # type: ignore[union-attr]
    assert all(1024 <= p.port <= 65535 for _, p in first)  # type: ignore[union-attr]
    assert c.get_timer() == T0 + timing.BIRTHDAY_ROUND_S
    c.handle_timer(now=T0 + timing.BIRTHDAY_ROUND_S)
    assert len(c.datagrams_to_send()) == 16
    assert c.linked(S_ID, now=T0 + timing.BIRTHDAY_ROUND_S)  # the hit's handshake came back
    assert c.get_timer() is None
    assert c.joined(S_ID)


def _whole_run(s: PortGuessing, c: PortGuessing) -> tuple[float, int]:
    """S says GO and C knocks every round: when the last round went, and the knocks sent."""
    go = _go_from_s(s, c)
    c.receive(
        S_ID, go, symmetric=False, translated=False, public_host=None, endpoints=(), now=T0,
        seen_hosts=S_SEEN,
    )  # fmt: skip
    now = T0
    sent = 0
    while (t := c.get_timer()) is not None:
        now = t
        c.handle_timer(now=now)
        sent += len(c.datagrams_to_send())
    return now, sent


def test_a_path_counts_as_knocked_if_it_comes_up_soon_after_a_run_even_its_last_round() -> None:
    s, c = _pair()
    now, _ = _whole_run(s, c)
    assert not c.linked(S_ID, now=now + 1.0)  # no run was going any more...
    assert c.joined(S_ID)  # ...but the last round's hit found the path
    c.roamed()
    assert c.joined(S_ID)  # a roam keeps it: it describes the session, not our address
    c.unlinked(S_ID)
    assert not c.joined(S_ID)
    # A direct path long after any run (e.g. a punch-back) was not found by knocking.
    assert not c.linked(S_ID, now=now + 60.0)
    assert not c.joined(S_ID)
    # The opening side's path is a SocketPath; it knocked at nobody.
    assert not s.linked(C_ID, now=T0 + 1.0)
    assert not s.joined(C_ID)


def test_a_run_ends_after_its_rounds() -> None:
    _, sent = _whole_run(*_pair())
    assert sent == timing.BIRTHDAY_ROUNDS * 16


def test_a_knock_with_our_token_on_a_punching_socket_names_the_peer_once() -> None:
    s, c = _pair()
    go = _go_from_s(s, c)
    s.datagrams_to_send()
    c.receive(
        S_ID, go, symmetric=False, translated=False, public_host=None, endpoints=(), now=T0,
        seen_hosts=S_SEEN,
    )  # fmt: skip
    c.handle_timer(now=T0)
    knock, _ = c.datagrams_to_send()[0]
    assert s.on_knock(knock, C_PUBLIC, now=T0) is None  # the main socket: not a guess
    path = SocketPath(3, C_PUBLIC)
    assert s.on_knock(knock, path, now=T0 + 0.1) == C_ID
    assert s.on_knock(knock, SocketPath(5, C_PUBLIC), now=T0 + 0.1) is None  # token spent


def test_a_late_knock_starts_nothing() -> None:
    s, c = _pair()
    go = _go_from_s(s, c)
    c.receive(
        S_ID, go, symmetric=False, translated=False, public_host=None, endpoints=(), now=T0,
        seen_hosts=S_SEEN,
    )  # fmt: skip
    c.handle_timer(now=T0)
    knock, _ = c.datagrams_to_send()[0]
    late = T0 + timing.BIRTHDAY_WINDOW_S + 1
    assert s.on_knock(knock, SocketPath(1, C_PUBLIC), now=late) is None
    assert s.stats["knock_late"] == 1


def test_two_symmetric_sides_do_nothing_and_say_why() -> None:
    s, c = _pair()
    hello = s.hello(C_ID, symmetric=True, translated=True, endpoints=(), now=T0)
    assert hello is not None
    assert c.receive(
        S_ID, hello, symmetric=True, translated=True, public_host="203.0.113.41",
        endpoints=(C_PUBLIC,), now=T0,
    ) is None  # fmt: skip
    assert c.datagrams_to_send() == []
    assert c.stats["both_symmetric"] == 1
    assert "both sides symmetric" in c.why_relayed(S_ID, symmetric=True, translated=True)
    # and a symmetric node does not say HELLO again to a peer known symmetric
    assert c.hello(S_ID, symmetric=True, translated=True, endpoints=(), now=T0 + 100) is None


def test_why_relayed_names_each_case() -> None:
    assert "both sides symmetric" in why_relayed(FLAG_TRANSLATED, FLAG_TRANSLATED)
    assert "guessing" in why_relayed(FLAG_SYMMETRIC, 0)
    assert "guessing" in why_relayed(FLAG_TRANSLATED, FLAG_SYMMETRIC | FLAG_TRANSLATED)
    assert "starts when traffic flows" in why_relayed(0, None)
    assert "filters too strictly" in why_relayed(0, 0)


def test_neither_side_hard_means_nothing_to_guess() -> None:
    s, c = _pair()
    hello = c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
    assert hello is not None
    assert s.receive(
        C_ID, hello, symmetric=False, translated=False, public_host=S_PUBLIC, endpoints=(),
        now=T0,
    ) is None  # fmt: skip
    assert s.datagrams_to_send() == []


def test_hello_and_go_are_rate_limited_per_peer() -> None:
    s, c = _pair()
    _go_from_s(s, c)
    assert c.hello(S_ID, symmetric=False, translated=False, endpoints=(), now=T0 + 1) is None
    again = c.hello(
        S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,),
        now=T0 + timing.BIRTHDAY_RETRY_S,
    )  # fmt: skip
    assert again is not None
    # S opened toward C at T0: a second HELLO inside the retry interval opens nothing
    assert s.receive(
        C_ID, again, symmetric=False, translated=True, public_host=S_PUBLIC, endpoints=(),
        now=T0 + 5, seen_hosts=C_SEEN,
    ) is None  # fmt: skip


def test_knock_runs_are_bounded_and_a_symmetric_node_never_knocks() -> None:
    c = PortGuessing(rng=random.Random(3), sockets=4, knocks=4)
    kw = {"translated": False, "public_host": None, "endpoints": (), "now": T0}
    for i in range(timing.BIRTHDAY_MAX_RUNS + 2):
        peer = NodeId((i + 1) << 90)
        c.hello(peer, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
        go = bytes([OP_GO]) + bytes([203, 0, 113, 50 + i]) + bytes(12)
        seen = frozenset({f"203.0.113.{50 + i}"})
        c.receive(peer, go, symmetric=False, seen_hosts=seen, **kw)  # type: ignore[arg-type]
    assert c.stats["runs_started"] == timing.BIRTHDAY_MAX_RUNS
    assert c.drops["birthday_busy"] == 2
    sym = PortGuessing(rng=random.Random(4))
    go = bytes([OP_GO, 203, 0, 113, 60]) + bytes(12)
    sym.receive(S_ID, go, symmetric=True, **kw)  # type: ignore[arg-type]
    assert sym.get_timer() is None and sym.stats["go_ignored_symmetric"] == 1


def test_garbage_is_counted_and_changes_nothing() -> None:
    c = PortGuessing(rng=random.Random(5))
    kw = {"symmetric": True, "translated": True, "public_host": S_PUBLIC, "endpoints": ()}
    for junk in (
        b"",
        b"\x09",
        b"\x01\x00",
        b"\x01\x00\x05",  # five endpoints announced, none there
        b"\x01\x00\x01" + bytes(6),  # 0.0.0.0:0
        b"\x02" + bytes(16),  # GO to 0.0.0.0
        b"\x02\x01",
    ):
        assert c.receive(C_ID, junk, now=T0, **kw) is None  # type: ignore[arg-type]
    assert c.datagrams_to_send() == [] and c.get_timer() is None
    assert sum(c.drops.values()) == 7


def test_hello_carries_at_most_four_ipv4_endpoints() -> None:
    c = PortGuessing(rng=random.Random(6))
    eps = tuple(Endpoint(f"203.0.113.{i}", 5800) for i in range(1, 8))
    hello = c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_LAN, *eps), now=T0)
    assert hello is not None and hello[2] == 4 and len(hello) == 3 + 4 * 6


def test_the_default_sizes_find_a_port_almost_always() -> None:
    # The birthday bound the constants rest on, checked by drawing: 256 random NAT ports and
    # 1,024 random guesses over MASQUERADE's 64,512 ports meet in about 98 % of rounds.
    rng = random.Random(7)
    ports = range(1024, 65536)
    trials = 300
    hits = 0
    for _ in range(trials):
        open_ports = set(rng.sample(ports, timing.BIRTHDAY_SOCKETS))
        hits += any(p in open_ports for p in rng.sample(ports, timing.BIRTHDAY_KNOCKS))
    expected = 1 - math.exp(-timing.BIRTHDAY_SOCKETS * timing.BIRTHDAY_KNOCKS / len(ports))
    assert hits / trials > 0.95 and expected > 0.97


# --- a GO or a HELLO makes us send to an address: only when asked, only where the peer is ---

_GO_TO_S = bytes([OP_GO, 203, 0, 113, 30]) + bytes(12)  # S_PUBLIC
_GO_ELSEWHERE = bytes([OP_GO, 198, 51, 100, 7]) + bytes(12)


def _knocks_after(c: PortGuessing, payload: bytes, *, now: float, seen: frozenset[str]) -> int:
    c.receive(
        S_ID, payload, symmetric=False, translated=False, public_host=None, endpoints=(),
        now=now, seen_hosts=seen,
    )  # fmt: skip
    sent = 0
    while (t := c.get_timer()) is not None:
        c.handle_timer(now=max(t, now))
        sent += len(c.datagrams_to_send())
    return sent


def test_a_go_without_our_hello_starts_nothing() -> None:
    c = PortGuessing(rng=random.Random(8), sockets=8, knocks=16)
    assert _knocks_after(c, _GO_TO_S, now=T0, seen=S_SEEN) == 0
    assert c.drops["birthday_go_unasked"] == 1
    # our HELLO makes one GO welcome, for a while only
    c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
    late = T0 + timing.BIRTHDAY_GO_WAIT_S + 1
    assert _knocks_after(c, _GO_TO_S, now=late, seen=S_SEEN) == 0
    assert c.drops["birthday_go_unasked"] == 2


def test_a_go_naming_an_address_the_peer_was_not_seen_at_starts_nothing() -> None:
    c = PortGuessing(rng=random.Random(9), sockets=8, knocks=16)
    c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
    assert _knocks_after(c, _GO_ELSEWHERE, now=T0, seen=S_SEEN) == 0
    assert c.drops["birthday_go_unseen_address"] == 1


def test_a_second_go_within_the_retry_interval_starts_nothing() -> None:
    c = PortGuessing(rng=random.Random(10), sockets=8, knocks=16)
    c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
    assert _knocks_after(c, _GO_TO_S, now=T0, seen=S_SEEN) == timing.BIRTHDAY_ROUNDS * 16
    # S asks again at once (symmetric, answer wanted): C answers once, which welcomes a GO...
    s = PortGuessing(rng=random.Random(11))
    ask = s.hello(C_ID, symmetric=True, translated=True, endpoints=(), now=T0 + 2)
    assert ask is not None
    kw = {"symmetric": False, "translated": False, "public_host": None, "endpoints": (C_PUBLIC,)}
    assert c.receive(S_ID, ask, now=T0 + 2, **kw) is not None  # type: ignore[arg-type]
    # ...but the knock run it would start is the second inside BIRTHDAY_RETRY_S
    assert _knocks_after(c, _GO_TO_S, now=T0 + 3, seen=S_SEEN) == 0
    assert c.drops["birthday_go_too_soon"] == 1
    # and the HELLO is not answered twice in the interval either
    assert c.receive(S_ID, ask, now=T0 + 4, **kw) is None  # type: ignore[arg-type]
    assert c.drops["birthday_hello_too_soon"] == 1
    later = T0 + timing.BIRTHDAY_RETRY_S + 1
    c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=later)
    assert _knocks_after(c, _GO_TO_S, now=later, seen=S_SEEN) == timing.BIRTHDAY_ROUNDS * 16


def test_a_go_from_the_side_that_should_knock_starts_nothing() -> None:
    c = PortGuessing(rng=random.Random(12), sockets=8, knocks=16)
    plain = PortGuessing(rng=random.Random(13))
    hello = plain.hello(C_ID, symmetric=False, translated=False, endpoints=(), now=T0)
    assert hello is not None
    # We are translated, it said it is neither: we are the side that opens, not it.
    c.receive(
        S_ID, hello, symmetric=False, translated=True, public_host="203.0.113.41",
        endpoints=(C_PUBLIC,), now=T0, seen_hosts=S_SEEN,
    )  # fmt: skip
    c.datagrams_to_send()
    c.hello(S_ID, symmetric=False, translated=True, endpoints=(C_PUBLIC,), now=T0)
    assert _knocks_after(c, _GO_TO_S, now=T0, seen=S_SEEN) == 0
    assert c.drops["birthday_go_wrong_role"] == 1


def test_openers_go_only_where_the_peer_was_seen() -> None:
    s = PortGuessing(rng=random.Random(14), sockets=8, knocks=16)
    elsewhere = tuple(Endpoint(f"198.51.100.{i}", 7000) for i in range(1, 4))
    c = PortGuessing(rng=random.Random(15))
    hello = c.hello(
        S_ID, symmetric=False, translated=False, endpoints=(*elsewhere, C_PUBLIC), now=T0
    )
    assert hello is not None
    kw = {"symmetric": False, "translated": True, "public_host": S_PUBLIC, "endpoints": ()}
    go = s.receive(C_ID, hello, now=T0, seen_hosts=C_SEEN, **kw)  # type: ignore[arg-type]
    assert go is not None
    assert {p.remote for _, p in s.datagrams_to_send()} == {C_PUBLIC}  # type: ignore[union-attr]
    # a peer seen nowhere it names gets no openers (and no GO)
    other = PortGuessing(rng=random.Random(16), sockets=8, knocks=16)
    assert other.receive(C_ID, hello, now=T0, seen_hosts=frozenset(), **kw) is None  # type: ignore[arg-type]
    assert other.datagrams_to_send() == [] and other.drops["birthday_no_endpoints"] == 1


def test_every_drop_reason_counted_is_a_known_one() -> None:
    c = PortGuessing(rng=random.Random(17))
    try:
        c._drop("not_a_reason")
    except AssertionError:
        pass
    else:
        raise AssertionError("an unknown drop reason was counted")


def test_a_roam_forgets_verdicts_and_lets_a_hello_go_again() -> None:
    """After our address changed, the old verdict ("a NAT filters too strictly") described the
    old address and a HELLO must not wait BIRTHDAY_RETRY_S: both are forgotten."""
    s, c = _pair()
    hello = c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
    assert hello is not None
    s.receive(
        C_ID, hello, symmetric=False, translated=False, public_host=S_PUBLIC, endpoints=(),
        now=T0,
    )  # fmt: skip
    assert "filters too strictly" in s.why_relayed(C_ID, symmetric=False, translated=False)
    assert c.hello(S_ID, symmetric=False, translated=False, endpoints=(), now=T0 + 1) is None
    s.roamed()
    c.roamed()
    assert "filters too strictly" not in s.why_relayed(C_ID, symmetric=False, translated=False)
    assert c.hello(S_ID, symmetric=False, translated=False, endpoints=(), now=T0 + 1) is not None


def test_a_symmetric_node_opens_toward_a_few_peers_at_a_time() -> None:
    """HELLOs from a whole network at once (a lab's first sweep pinged each symmetric node
    from ~13 peers within seconds) open the punching sockets toward BIRTHDAY_MAX_OPENS peers
    per BIRTHDAY_WINDOW_S; the others are refused until a later HELLO, and in the meantime
    their traffic keeps its path. Before, each HELLO sent 256 openers per endpoint at once."""
    s = PortGuessing(rng=random.Random(6), sockets=8, knocks=8)
    peers = [NodeId((i + 1) << 95) for i in range(timing.BIRTHDAY_MAX_OPENS + 2)]

    def hello_from(peer: NodeId, now: float) -> bytes | None:
        c = PortGuessing(rng=random.Random(int(now)), sockets=8, knocks=8)
        hello = c.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=now)
        assert hello is not None
        return s.receive(
            peer, hello, symmetric=False, translated=True, public_host=S_PUBLIC, endpoints=(),
            now=now, seen_hosts=C_SEEN,
        )  # fmt: skip

    gos = [hello_from(p, T0 + i * 0.1) for i, p in enumerate(peers)]
    assert sum(g is not None for g in gos) == timing.BIRTHDAY_MAX_OPENS
    assert s.drops["birthday_open_busy"] == 2
    assert s.stats["openers_sent"] == timing.BIRTHDAY_MAX_OPENS * 8
    # Once the window has passed, a refused peer's next HELLO opens.
    assert hello_from(peers[-1], T0 + timing.BIRTHDAY_WINDOW_S + 0.5) is not None


def _hidden_pair() -> tuple[PortGuessing, PortGuessing, bytes]:
    """K (a cone, the knocker) learned that peer H's advertised port is another host's
    (PortGuessing.hidden); both sides are plain cones. K's HELLO and H's answer."""
    k, h = _pair()
    h_hello = h.hello(C_ID, symmetric=False, translated=False, endpoints=(), now=T0)
    assert h_hello is not None
    # H's HELLO came first: K remembers H as "neither", which hidden() must forget.
    assert k.receive(
        S_ID, h_hello, symmetric=False, translated=False, public_host=C_PUBLIC.host,
        endpoints=(C_PUBLIC,), now=T0, seen_hosts=S_SEEN,
    ) is None  # fmt: skip
    k.hidden(S_ID, now=T0)
    hello = k.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
    assert hello is not None and hello[1] & FLAG_HIDDEN
    return k, h, hello


def test_a_peer_told_its_port_is_hidden_opens_though_it_is_a_cone() -> None:
    k, h, hello = _hidden_pair()
    go = h.receive(
        C_ID, hello, symmetric=False, translated=False, public_host=S_PUBLIC, endpoints=(),
        now=T0, seen_hosts=C_SEEN,
    )  # fmt: skip
    assert go is not None and go[0] == OP_GO
    assert [p for _, p in h.datagrams_to_send()] == [SocketPath(i, C_PUBLIC) for i in range(1, 9)]
    assert h.stats["hello_hidden_open"] == 1
    # Its GO starts our knocking although both said they are cones.
    assert _knocks_after(k, go, now=T0, seen=S_SEEN) > 0
    assert k.drops["birthday_go_wrong_role"] == 0


def test_without_the_hidden_mark_two_cones_still_do_nothing() -> None:
    k, h = _pair()
    hello = k.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
    assert hello is not None and not hello[1] & FLAG_HIDDEN
    assert h.receive(
        C_ID, hello, symmetric=False, translated=False, public_host=S_PUBLIC, endpoints=(),
        now=T0, seen_hosts=C_SEEN,
    ) is None  # fmt: skip
    assert h.datagrams_to_send() == []


def test_a_hidden_peers_plain_hello_is_answered_with_the_mark() -> None:
    k, h = _pair()
    k.hidden(S_ID, now=T0)
    h_hello = h.hello(C_ID, symmetric=False, translated=False, endpoints=(), now=T0)
    assert h_hello is not None
    back = k.receive(
        S_ID, h_hello, symmetric=False, translated=False, public_host=C_PUBLIC.host,
        endpoints=(C_PUBLIC,), now=T0, seen_hosts=S_SEEN,
    )  # fmt: skip
    assert back is not None and back[1] & FLAG_HIDDEN and not back[1] & FLAG_ANSWER


def test_the_hidden_mark_ends_with_a_direct_path_a_roam_or_its_time() -> None:
    for end in ("linked", "roamed", "expired"):
        k, _ = _pair()
        k.hidden(S_ID, now=T0)
        now = T0
        if end == "linked":
            k.linked(S_ID, now=T0)
        elif end == "roamed":
            k.roamed()
        else:
            now = T0 + timing.BIRTHDAY_RETRY_S + 1
        hello = k.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=now)
        assert hello is not None and not hello[1] & FLAG_HIDDEN, end


def test_the_hidden_mark_does_not_lift_the_openers_bounds() -> None:
    """A member that marks us hidden again and again gets one open per retry interval."""
    _, h = _pair()
    opened = 0
    for i in range(5):
        k = PortGuessing(rng=random.Random(20 + i), sockets=8, knocks=16)
        k.hidden(S_ID, now=T0)
        hello = k.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=T0)
        assert hello is not None
        if h.receive(
            C_ID, hello, symmetric=False, translated=False, public_host=S_PUBLIC, endpoints=(),
            now=T0 + i, seen_hosts=C_SEEN,
        ) is not None:  # fmt: skip
            opened += 1
    assert opened == 1
    assert len(h.datagrams_to_send()) == 8


def test_a_peer_marked_hidden_soon_after_a_guess_is_guessed_again_once() -> None:
    """Guessing joined the pair 10 s ago; then the peer's NAT lost its table and a neighbour
    took its port: the new guess is not held back by the old run, but a second mark within
    the retry interval lifts nothing."""
    k, h = _pair()
    go = _go_from_s(h, k)  # k knocks at h (the first join)
    assert _knocks_after(k, go, now=T0, seen=S_SEEN) > 0
    t = T0 + 10
    k.hidden(S_ID, now=t)
    hello = k.hello(S_ID, symmetric=False, translated=False, endpoints=(C_PUBLIC,), now=t)
    assert hello is not None and hello[1] & FLAG_HIDDEN
    h2 = PortGuessing(rng=random.Random(7), sockets=8, knocks=16)
    go2 = h2.receive(
        C_ID, hello, symmetric=False, translated=False, public_host=S_PUBLIC, endpoints=(),
        now=t, seen_hosts=C_SEEN,
    )  # fmt: skip
    assert go2 is not None
    assert _knocks_after(k, go2, now=t, seen=S_SEEN) > 0
    assert k.drops["birthday_go_too_soon"] == 0
    k.hidden(S_ID, now=t + 1)  # already marked: lifts nothing
    assert k.hello(S_ID, symmetric=False, translated=False, endpoints=(), now=t + 1) is None
