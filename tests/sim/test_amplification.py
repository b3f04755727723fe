"""What one insider's message makes a node send, with the real cores (tools/bench/amplification).

Findings 4 and 5 of issue 13: a CONNECT_TO_ME naming third parties made a node send each of
them six 482-byte Inits (x19.5 per address, x157 in all); a GO made it send 3,072 knocks to any
address (x1,280). Each test runs the attacker's message and the same scenario without it.
"""

from __future__ import annotations

from ipop.tools.bench.amplification import ROWS, Row, measure

# A handshake Init with its certificate, its responder binding and cookie MAC (what a
# connect-back sends).
INIT_BYTES = 519


def _row(prefix: str) -> Row:
    return next(r for r in ROWS if r.name.startswith(prefix))


def test_a_ctm_naming_eight_third_parties_reaches_three_of_them_once() -> None:
    r = measure(_row("ROUTED CTM"))
    assert r.message_bytes > 0
    assert 0 < r.third_party_max_per_address <= INIT_BYTES  # one Init per address at most
    assert r.third_party_bytes <= 3 * INIT_BYTES


def test_a_go_nobody_asked_for_sends_nothing_anywhere() -> None:
    r = measure(_row("BIRTHDAY GO"))
    assert r.message_bytes > 0
    assert r.third_party_bytes == 0
    assert r.caused_bytes <= r.message_bytes


def test_a_hello_naming_third_parties_opens_nothing_toward_them() -> None:
    r = measure(_row("BIRTHDAY HELLO"))
    assert r.message_bytes > 0
    assert r.third_party_bytes == 0
    assert r.caused_bytes <= 3 * r.message_bytes


def test_a_neighbours_pull_costs_about_what_it_carries() -> None:
    r = measure(_row("NEIGHBOURS"))
    assert r.third_party_bytes == 0
    assert r.caused_bytes <= 3 * r.message_bytes


def test_an_alive_probe_is_answered_by_no_more_than_itself() -> None:
    r = measure(_row("ALIVE"))
    assert r.third_party_bytes == 0
    assert r.caused_bytes <= r.message_bytes


def test_a_link_ids_list_is_answered_by_nothing() -> None:
    r = measure(_row("LINK_IDS"))
    assert r.message_bytes > 8 * 64
    assert r.third_party_bytes == 0
    assert r.caused_bytes == 0
