"""ipop.link.rebind.Rebinding and ipop.link.probing.PathProbing through their public
interfaces, without a LinkLayer around them: peers are bare records, sealing is faked (the
payload is kept in the clear, so each test reads what would have been sent)."""

from __future__ import annotations

import collections
from typing import cast

import pytest

from ipop import timing
from ipop.link import echo
from ipop.link.config import LINK_DROP_REASONS
from ipop.link.events import LinkPathSilent, ObservedEndpoint
from ipop.link.keys import Keypair
from ipop.link.peer import Peer
from ipop.link.pmtu import PROBE_TAG, ack_payload, probe_payload
from ipop.link.probing import PathProbing
from ipop.link.rebind import Rebinding
from ipop.testing.clock import SIM_EPOCH
from ipop.testing.identities import make_identity, make_network
from ipop.testing.link_parts import SharedRecorder
from ipop.types import Endpoint, NodeId, Path, RelayPath, SocketPath

NOW = SIM_EPOCH
QUIET = timing.REBIND_QUIET_S
WAIT = timing.REBIND_ECHO_WAIT_S
ME_SEEN = Endpoint("198.51.100.1", 5800)
_INF = float("inf")
_KEYS = cast(Keypair[Peer], object())  # sealing is faked: any keys will do


class Fixture(SharedRecorder):
    def __init__(self, *, enabled: bool = True, probes: bool = True) -> None:
        super().__init__()
        ca = make_network(now=NOW - 60)
        self.ids = [make_identity(ca, f"n{i}", now=NOW - 60) for i in range(4)]
        self.watched: list[NodeId] = []
        self.echoes: list[bytes] = []
        self.rb = Rebinding(self.shared, enabled=enabled)
        self.pp = PathProbing(
            self.shared,
            enabled=probes,
            watch=self.watched.append,
            on_echo=lambda st, payload, path, now: self.echoes.append(payload),
        )

    def peer(self, i: int, path: Path) -> Peer:
        ident = self.ids[i]
        st = self.peers[ident.node_id] = Peer(ident.node_id, ident.cert, path)
        st.up = True
        st.current = _KEYS
        st.last_rx = NOW
        return st


def busy(f: Fixture, st: Peer, start: float) -> float:
    """``REBIND_BUSY_PACKETS`` packets in a row from ``st``, each within the quiet gap."""
    t = start
    for _ in range(timing.REBIND_BUSY_PACKETS):
        t += QUIET / 4
        f.rb.heard(st, t)
    return t


def test_watch_marks_the_peer_only_when_echoes_are_on() -> None:
    on, off = Fixture(), Fixture(enabled=False)
    a = on.peer(0, Endpoint("203.0.113.2", 5800))
    b = off.peer(0, Endpoint("203.0.113.2", 5800))
    on.rb.watch(a)
    off.rb.watch(b)
    assert a.watched and not b.watched


def test_heard_counts_a_streak_and_a_quiet_gap_ends_it() -> None:
    f = Fixture()
    st = f.peer(0, Endpoint("203.0.113.2", 5800))
    f.rb.watch(st)
    t = busy(f, st, NOW)
    assert st.rx_streak == timing.REBIND_BUSY_PACKETS and st.last_rx == t
    assert f.touched == [st]  # it just got busy: its deadline moved earlier
    f.rb.heard(st, t + QUIET + 0.1)
    assert st.rx_streak == 0 and st.rx_gap == pytest.approx(QUIET + 0.1)


def test_deadline_only_for_watched_direct_links() -> None:
    f = Fixture()
    relayed = f.peer(0, RelayPath(f.ids[1].node_id, f.ids[2].node_id))
    direct = f.peer(3, Endpoint("203.0.113.2", 5800))
    for st in (relayed, direct):
        busy(f, st, NOW)
    assert f.rb.deadline(direct) == _INF  # not watched
    f.rb.watch(relayed)
    f.rb.watch(direct)
    assert f.rb.deadline(relayed) == _INF
    # A busy peer that never told us where it sees us: at once; afterwards, after the quiet.
    assert f.rb.deadline(direct) == direct.last_rx
    direct.observed = ME_SEEN
    assert f.rb.deadline(direct) == direct.last_rx + QUIET


def silent_and_witness(f: Fixture) -> tuple[Peer, Peer, float]:
    """A watched busy peer that fell silent (its echo due at the time returned; sent), and
    another direct peer to witness."""
    silent = f.peer(0, Endpoint("203.0.113.2", 5800))
    witness = f.peer(1, Endpoint("203.0.113.3", 5800))
    f.rb.watch(silent)
    silent.observed = ME_SEEN
    t = busy(f, silent, NOW) + QUIET
    f.rb.due(silent, t)
    return silent, witness, t


def test_an_unanswered_echo_asks_witnesses_and_their_answer_is_news() -> None:
    f = Fixture()
    silent, witness, t = silent_and_witness(f)
    ((payload, to),) = f.take()
    assert to == silent.path and f.stats["echo_sent"] == 1
    parsed = echo.parse(payload)
    assert parsed is not None and parsed[0] == echo.ECHO and silent.echo_id == parsed[1]
    assert f.rb.deadline(silent) == t + WAIT
    f.rb.due(silent, t + WAIT)
    assert f.stats["echo_unanswered"] == 1 and f.stats["rebind_suspected"] == 1
    (asked, to), (_, again) = f.take()  # the witness asked, the silent peer echoed once more
    assert to == witness.path and f.stats["echo_witness_sent"] == 1
    assert again == silent.path and f.stats["echo_retried"] == 1
    parsed = echo.parse(asked)
    assert parsed is not None and witness.echo_id == parsed[1]
    # The witness sees us at a new port: our NAT rebound.
    moved = Endpoint("198.51.100.1", 61000)
    ack = echo.ack_payload(parsed[1], moved)
    assert ack is not None
    f.rb.on_echo(witness, ack, witness.path, t + WAIT + 0.1)
    (ev,) = f.events
    assert ev == ObservedEndpoint(moved, witness.node_id, True)
    assert witness.echo_id is None and witness.observed == moved


def test_two_unanswered_echoes_in_a_row_say_the_path_is_silent() -> None:
    """The second echo unanswered, nothing heard since: LinkPathSilent (the node keys the
    peer through a relay). Anything heard in between starts the count again: one lost echo
    on a live path is no silence. A witness's unanswered echo says nothing of its path."""
    f = Fixture()
    silent, witness, t = silent_and_witness(f)
    f.rb.due(silent, t + WAIT)  # the first echo unanswered: a witness asked, one more echo
    assert silent.echo_misses == 1 and silent.echo_id is not None and not f.events
    f.rb.due(witness, t + 2 * WAIT)  # the witness does not answer either
    f.rb.due(silent, t + 2 * WAIT)
    assert list(f.events) == [LinkPathSilent(silent.node_id, silent.path)]
    assert f.stats["path_silent"] == 1
    f.rb.due(silent, t + 3 * WAIT)  # no third echo, no second event for this silence
    assert list(f.events) == [LinkPathSilent(silent.node_id, silent.path)]
    assert silent.echo_id is None
    # Heard again: a later silence starts its count afresh.
    f.events.clear()
    f.take()
    f.rb.heard(silent, t + 4 * WAIT)
    assert silent.echo_misses == 0
    t2 = busy(f, silent, t + 4 * WAIT) + QUIET
    f.rb.due(silent, t2)
    f.rb.due(silent, t2 + WAIT)
    f.rb.heard(silent, t2 + WAIT + 0.1)  # the retry's answer (any DATA) came
    assert silent.echo_misses == 0 and not f.events


def test_an_echo_answered_over_a_punching_socket_is_answered_but_no_news() -> None:
    """A port-guessed session runs over one of our punching sockets: its echo's answer says
    where that socket's mapping is seen, not our main socket's, so it is no ObservedEndpoint;
    but the echo was answered. Before, it stayed outstanding and timed out as unanswered,
    asking witnesses every time (and now it would have echoed again, then called the path
    silent)."""
    f = Fixture()
    guessed = f.peer(0, SocketPath(3, Endpoint("203.0.113.2", 40123)))
    witness = f.peer(1, Endpoint("203.0.113.3", 5800))
    f.rb.watch(guessed)
    guessed.observed = ME_SEEN
    t = busy(f, guessed, NOW) + QUIET
    f.rb.due(guessed, t)
    ((payload, to),) = f.take()
    parsed = echo.parse(payload)
    assert to == guessed.path and parsed is not None and guessed.echo_id == parsed[1]
    ack = echo.ack_payload(parsed[1], Endpoint("198.51.100.1", 61000))
    assert ack is not None
    f.rb.on_echo(guessed, ack, guessed.path, t + 0.01)
    assert guessed.echo_id is None and guessed.observed == ME_SEEN and not f.events
    f.rb.due(guessed, t + WAIT)
    assert f.stats["echo_unanswered"] == 0 and f.stats["rebind_suspected"] == 0
    assert not f.take() and witness.echo_id is None


def test_a_busy_port_guessed_session_is_echoed_after_its_quiet_not_at_once() -> None:
    """Over a punching socket no answer tells us where we are seen (``observed`` stays
    None), so the "at once" echo of a busy peer never told us would follow every answer:
    each answer, heard within the quiet gap, kept the peer busy (400 echoes a second from
    a symmetric-NAT host in a soak). Its echo waits for the quiet, as any told peer's."""
    f = Fixture()
    guessed = f.peer(0, SocketPath(3, Endpoint("203.0.113.2", 40123)))
    f.rb.watch(guessed)
    last = busy(f, guessed, NOW)
    assert guessed.observed is None
    assert f.rb.deadline(guessed) == last + QUIET


def test_an_echo_is_answered_with_where_it_came_from_and_a_late_ack_is_counted() -> None:
    f = Fixture()
    st = f.peer(0, Endpoint("203.0.113.2", 5800))
    came_from = Endpoint("203.0.113.2", 40000)
    f.rb.on_echo(st, echo.echo_payload(7), came_from, NOW)
    ((ack, to),) = f.take()
    assert to == came_from and echo.parse(ack) == (echo.ECHO_ACK, 7, came_from)
    assert f.stats["echo_answered"] == 1
    late = echo.ack_payload(99, ME_SEEN)
    assert late is not None
    f.rb.on_echo(st, late, st.path, NOW)
    assert f.stats["echo_late"] == 1 and not f.events
    f.rb.on_echo(st, b"\x7e\x02garbage", st.path, NOW)
    assert f.drops == collections.Counter({"bad_probe": 1})


def test_probing_restart_want_and_send_due() -> None:
    f = Fixture()
    path = Endpoint("203.0.113.2", 5800)
    st = f.peer(0, path)
    f.pp.restart(st, NOW)
    assert f.wakes == 1 and f.pp.pmtu.next_time() is None  # nothing wanted yet
    f.pp.want(st.node_id, NOW)
    assert f.watched == [st.node_id] and f.wakes == 2
    sent = f.take()
    assert sent and all(to == path and p[0] == PROBE_TAG and p[1] == 0 for p, to in sent)
    f.pp.want(st.node_id, NOW)  # already wanted: nothing again
    assert f.take() == [] and f.watched == [st.node_id]
    f.pp.want(f.ids[3].node_id, NOW)  # no session: nothing
    assert f.watched == [st.node_id]


def test_probing_turned_off_forgets_the_search() -> None:
    f = Fixture(probes=False)
    st = f.peer(0, Endpoint("203.0.113.2", 5800))
    f.pp.restart(st, NOW)
    f.pp.want(st.node_id, NOW)
    assert f.take() == [] and f.pp.pmtu.next_time() is None


def test_on_probe_answers_probes_forwards_echoes_and_drops_the_rest() -> None:
    f = Fixture()
    st = f.peer(0, Endpoint("203.0.113.2", 5800))
    other = Endpoint("203.0.113.2", 40000)
    f.pp.on_probe(st, probe_payload(5, 600), other, NOW)
    assert f.take() == [(ack_payload(5), st.path)]  # on the path we send on
    f.pp.on_probe(st, echo.echo_payload(1), other, NOW)
    assert f.echoes == [echo.echo_payload(1)]
    wakes = f.wakes
    f.pp.on_probe(st, ack_payload(12345), st.path, NOW)  # late: only counted
    assert f.pp.pmtu.stats["late_acks"] == 1 and f.wakes == wakes + 1 and not f.drops
    f.pp.on_probe(st, bytes([PROBE_TAG]), st.path, NOW)
    f.pp.on_probe(st, ack_payload(1) + b"x", st.path, NOW)
    assert f.drops == collections.Counter({"bad_probe": 2})
    assert set(f.drops) <= LINK_DROP_REASONS


def test_ask_echoes_an_idle_main_socket_session_once_at_a_time() -> None:
    f, off = Fixture(), Fixture(enabled=False)
    idle = f.peer(0, Endpoint("203.0.113.2", 5800))  # never watched, never busy
    assert f.rb.ask(idle, NOW)
    sent = f.take()
    assert len(sent) == 1 and echo.parse(sent[0][0]) == (echo.ECHO, idle.echo_id, None)
    assert not f.rb.ask(idle, NOW + 0.1)  # one out already
    f.rb.due(idle, NOW + WAIT)  # unanswered: witnesses asked, and one more echo
    assert idle.echo_id is not None and f.stats["echo_retried"] == 1
    f.rb.due(idle, NOW + 2 * WAIT)  # that one too: the path is silent; it may be asked again
    assert idle.echo_id is None and list(f.events) == [LinkPathSilent(idle.node_id, idle.path)]
    assert f.rb.ask(idle, NOW + 2 * WAIT)
    relayed = f.peer(1, RelayPath(f.ids[2].node_id, f.ids[1].node_id))
    assert not f.rb.ask(relayed, NOW)  # no mapping of ours to check on a relayed path
    assert not off.rb.ask(off.peer(0, Endpoint("203.0.113.2", 5800)), NOW)
