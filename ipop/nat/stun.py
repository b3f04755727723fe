"""NAT discovery on the overlay socket: a sans-IO STUN agent and the NAT classification.

:class:`StunAgent` is both sides of STUN for one node (DESIGN.md §7):

- **server**, only on a node configured to serve (``[stun] serve = true``: bootstrap nodes and
  public nodes meant as netcheck references; ``serve`` False, the default, drops every
  request as ``stun_not_serving``): a Binding request is answered with the source address
  it came from (XOR-MAPPED-ADDRESS; RFC 3489 requests, e.g. from pystun3, get MAPPED-ADDRESS).
  Anybody can send a request from a forged address, so the answer is bounded: per source
  address and globally by token buckets (:data:`ipop.timing.STUN_SOURCE_RATE_PER_S`,
  :data:`ipop.timing.STUN_GLOBAL_RATE_PER_S`; ``stun_rate_limited``), and never larger than
  the request (``stun_unpadded``: a bare 20-byte request would get up to 76 bytes back, so
  our clients pad their requests with PADDING, RFC 5780 §7.6, to
  :data:`PADDED_REQUEST_BYTES`). A reflector that answers at most what it got, and only so
  often, is of no use to a flooder.
  A node given alternate sources (:meth:`StunAgent.set_sources`: a public node with a second
  address binds two more UDP sockets, ``(primary address, port+1)`` and ``(second address,
  port+1)``) also advertises OTHER-ADDRESS and answers CHANGE-REQUEST from the socket the
  flags name (RFC 3489 §9.2, RFC 5780 §6.1). Sources are numbered: 0 the overlay socket,
  :data:`SOURCE_ALT_PORT`, :data:`SOURCE_ALT_BOTH`. A request whose change flags name a
  socket we do not have is dropped (``change_unsupported``): answering it from the wrong
  place would make the client believe its NAT lets everything in.
- **client**: :meth:`StunAgent.request` starts a transaction (retransmitted with a doubling
  RTO until its deadline, RFC 5389 §7.2.1); responses are matched by transaction ID only, and
  where the answer came *from* is recorded (a change request answered from the address it was
  sent to proves nothing). :meth:`StunAgent.take_result` hands back the outcome.

Output: :meth:`StunAgent.datagrams_to_send` yields ``(source, datagram, destination)``; the
I/O layer sends each from the socket numbered ``source``.

:func:`classify` turns a mapping behaviour and a filtering behaviour (RFC 4787 §4.1, §5) into
the lab's NAT kinds, and :func:`direct_expected` says whether two kinds can punch a direct
path (the measured table in shared/reference/README.md: only symmetric against symmetric or
port-restricted cone fails). :func:`mapping_behaviour` compares mappings seen from different
destinations. Drops (peer garbage) are counted in :attr:`StunAgent.drops`, never raised,
under the reasons of :data:`STUN_DROP_REASONS`.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from dataclasses import dataclass
from typing import Final, Literal

from ipop import timing
from ipop.errors import LocalProtocolError
from ipop.nat.kinds import NAT_KINDS, NatKind
from ipop.ratelimit import KeyedBuckets, TokenBucket
from ipop.types import Endpoint
from ipop.wire.stun import (
    BINDING_ERROR,
    BINDING_REQUEST,
    BINDING_RESPONSE,
    MAGIC_COOKIE,
    StunDecodeError,
    StunMessage,
    decode,
    encode,
)

__all__ = [
    "FILTERINGS",
    "MAPPINGS",
    "NAT_KINDS",
    "PADDED_REQUEST_BYTES",
    "SOFTWARE",
    "SOURCE_ALT_BOTH",
    "SOURCE_ALT_PORT",
    "SOURCE_PRIMARY",
    "STUN_DROP_REASONS",
    "Filtering",
    "Mapping",
    "NatKind",
    "StunAgent",
    "StunAnswer",
    "StunOutcome",
    "classify",
    "direct_expected",
    "filtering_behaviour",
    "mapping_behaviour",
]

# RFC 4787 mapping: "none" = no translation (we are seen at our own address).
Mapping = Literal["none", "endpoint-independent", "dependent"]
MAPPINGS: Final[tuple[Mapping, ...]] = ("none", "endpoint-independent", "dependent")
Filtering = Literal["endpoint-independent", "address-dependent", "address-and-port-dependent"]
FILTERINGS: Final[tuple[Filtering, ...]] = (
    "endpoint-independent",
    "address-dependent",
    "address-and-port-dependent",
)

SOURCE_PRIMARY: Final = 0
SOURCE_ALT_PORT: Final = 1  # (primary address, alternate port)
SOURCE_ALT_BOTH: Final = 2  # (alternate address, alternate port)
# source -> (address changed?, port changed?) relative to the primary socket
_SOURCE_FLAGS: Final = {SOURCE_PRIMARY: (False, False), SOURCE_ALT_PORT: (False, True)}
_SOURCE_FLAGS[SOURCE_ALT_BOTH] = (True, True)
SOFTWARE: Final = "ipop"

MAX_PENDING: Final = 64
MAX_RESULTS: Final = 256
# Our requests are padded to this size: the largest answer an ipop server gives is 76 bytes
# (XOR-MAPPED, MAPPED, RESPONSE-ORIGIN, OTHER-ADDRESS and a 4-byte SOFTWARE), and the rest
# leaves room for a longer SOFTWARE name.
PADDED_REQUEST_BYTES: Final = 100
_ATTR_HEADER_BYTES: Final = 4

# Every reason StunAgent.drops may count: the codec's, the server's and the client's, and the
# two NodeCore counts for it (``stun_relayed``, ``no_alt_socket``).
STUN_DROP_REASONS: Final = frozenset(
    {
        "stun_short",
        "stun_not_stun",
        "stun_unknown_method",
        "stun_bad_length",
        "stun_bad_attr",
        "stun_unknown_attr",
        "stun_not_serving",
        "stun_rate_limited",
        "stun_unpadded",
        "stun_bad_source",
        "change_unsupported",
        "stun_unmatched",
        "stun_relayed",
        "no_alt_socket",
    }
)


@dataclass(frozen=True, slots=True)
class StunAnswer:
    """A Binding success response to one of our requests."""

    server: Endpoint  # where the request went
    source: Endpoint  # where the response came from
    mapped: Endpoint | None  # our address as the server saw it
    origin: Endpoint | None  # RESPONSE-ORIGIN / SOURCE-ADDRESS, as the server says
    other: Endpoint | None  # OTHER-ADDRESS / CHANGED-ADDRESS: the server's alternate
    rtt_s: float


@dataclass(frozen=True, slots=True)
class StunOutcome:
    """How a transaction ended: ``answer`` None means no response before the deadline (or an
    error response, whose code is in ``error_code``)."""

    transaction: bytes
    answer: StunAnswer | None
    error_code: int | None = None


@dataclass(slots=True)
class _Txn:
    """One STUN binding request in flight: where to, its bytes, and its retransmission timer."""

    server: Endpoint
    datagram: bytes
    started: float
    next_send: float
    rto: float
    deadline: float


class StunAgent:
    """See the module docstring."""

    def __init__(
        self, *, rng: random.Random, software: str = SOFTWARE, serve: bool = False
    ) -> None:
        self._rng = rng
        self.software = software
        # Answer Binding requests at all (see the module docstring); settable by the driver.
        self.serve = serve
        self._per_source: KeyedBuckets[str] = KeyedBuckets(
            timing.STUN_SOURCE_RATE_PER_S, timing.STUN_SOURCE_BURST, timing.STUN_SOURCE_TABLE_MAX
        )
        self._global = TokenBucket(timing.STUN_GLOBAL_RATE_PER_S, timing.STUN_GLOBAL_BURST, 0.0)
        self.drops: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self._sources: dict[int, Endpoint] = {}
        self._out: list[tuple[int, bytes, Endpoint]] = []
        self._pending: dict[bytes, _Txn] = {}
        self._results: dict[bytes, StunOutcome] = {}

    # --- configuration ----------------------------------------------------------------------

    def set_sources(self, primary: Endpoint, *, alt_port: int, alt_host: str | None) -> None:
        """Serve change requests: the overlay socket is ``primary``; alternates are
        ``(primary.host, alt_port)`` and, with ``alt_host``, ``(alt_host, alt_port)``."""
        if alt_port == primary.port or not 0 < alt_port < 65536:
            raise LocalProtocolError(f"alternate port {alt_port} must differ from the primary")
        if alt_host is not None and alt_host == primary.host:
            raise LocalProtocolError("the alternate address must differ from the primary")
        self._sources = {
            SOURCE_PRIMARY: primary,
            SOURCE_ALT_PORT: Endpoint(primary.host, alt_port),
        }
        if alt_host is not None:
            self._sources[SOURCE_ALT_BOTH] = Endpoint(alt_host, alt_port)

    @property
    def sources(self) -> dict[int, Endpoint]:
        return dict(self._sources)

    # --- input ------------------------------------------------------------------------------

    def receive(self, data: bytes, src: Endpoint, *, now: float, via: int = SOURCE_PRIMARY) -> None:
        """One STUN datagram from ``src`` that arrived on the socket numbered ``via``."""
        self.stats["received"] += 1
        try:
            msg = decode(data)
        except StunDecodeError as exc:
            self.drops[exc.reason] += 1
            return
        if msg.msg_type == BINDING_REQUEST:
            self._answer(msg, src, via, len(data), now)
        else:
            self._on_response(msg, src, now)

    def _answer(self, req: StunMessage, src: Endpoint, via: int, size: int, now: float) -> None:
        if not self.serve:
            self.drops["stun_not_serving"] += 1
            return
        if req.unknown_required:
            self.drops["stun_unknown_attr"] += 1
            return
        # Per source first, so one source spending its own bucket leaves the global one alone.
        if not self._per_source.take(src.host, now) or not self._global.take(now):
            self.drops["stun_rate_limited"] += 1
            return
        if via not in _SOURCE_FLAGS or (via != SOURCE_PRIMARY and via not in self._sources):
            self.drops["stun_bad_source"] += 1
            return
        ip_changed, port_changed = _SOURCE_FLAGS[via]
        target_flags = (ip_changed ^ req.change_ip, port_changed ^ req.change_port)
        source = next((s for s, f in _SOURCE_FLAGS.items() if f == target_flags), None)
        if source is None or (source != SOURCE_PRIMARY and source not in self._sources):
            self.drops["change_unsupported"] += 1
            return
        other = self._sources.get(SOURCE_ALT_BOTH)
        if other is not None and via == SOURCE_ALT_BOTH:
            other = self._sources[SOURCE_PRIMARY]
        classic = req.classic
        reply = StunMessage(
            msg_type=BINDING_RESPONSE,
            transaction=req.transaction,
            mapped=src,
            xor_mapped=None if classic else src,
            origin=self._sources.get(source),
            other=other,
            software=self.software,
        )
        data = encode(reply)
        if len(data) > size:
            self.drops["stun_unpadded"] += 1
            return
        self._out.append((source, data, src))
        self.stats["answered_change" if source != via else "answered"] += 1

    def _on_response(self, msg: StunMessage, src: Endpoint, now: float) -> None:
        txn = self._pending.pop(msg.transaction, None)
        if txn is None:
            self.drops["stun_unmatched"] += 1
            return
        if msg.msg_type == BINDING_ERROR:
            self._finish(StunOutcome(msg.transaction, None, msg.error_code))
            return
        answer = StunAnswer(
            server=txn.server,
            source=src,
            mapped=msg.address,
            origin=msg.origin,
            other=msg.other,
            rtt_s=max(0.0, now - txn.started),
        )
        self._finish(StunOutcome(msg.transaction, answer))

    def _finish(self, outcome: StunOutcome) -> None:
        if len(self._results) >= MAX_RESULTS:  # nobody collected the oldest ones
            self._results.pop(next(iter(self._results)))
        self._results[outcome.transaction] = outcome

    # --- client commands --------------------------------------------------------------------

    def request(
        self,
        server: Endpoint,
        *,
        now: float,
        change_ip: bool = False,
        change_port: bool = False,
        classic: bool = False,
        pad: bool = True,
        rto_s: float = timing.STUN_RTO_S,
        timeout_s: float = timing.STUN_TIMEOUT_S,
    ) -> bytes:
        """Start a Binding transaction to ``server`` from the overlay socket; returns its
        transaction key for :meth:`take_result`. ``classic``: the RFC 3489 form. ``pad``: add
        PADDING up to :data:`PADDED_REQUEST_BYTES`, so that a server answering no more bytes
        than it got (an ipop node) can answer (a server that does not know PADDING would
        answer 420)."""
        if not (rto_s > 0 and timeout_s > 0):
            raise LocalProtocolError("rto_s and timeout_s must be positive")
        if len(self._pending) >= MAX_PENDING:
            raise LocalProtocolError(f"more than {MAX_PENDING} STUN transactions at once")
        if classic:
            transaction = self._rng.getrandbits(128).to_bytes(16, "big")
            if transaction[:4] == MAGIC_COOKIE.to_bytes(4, "big"):  # 1 in 2**32: not classic
                transaction = b"\x00" + transaction[1:]
        else:
            transaction = MAGIC_COOKIE.to_bytes(4, "big") + self._rng.getrandbits(96).to_bytes(
                12, "big"
            )
        request = StunMessage(
            BINDING_REQUEST, transaction, change_ip=change_ip, change_port=change_port
        )
        datagram = encode(request)
        room = PADDED_REQUEST_BYTES - len(datagram) - _ATTR_HEADER_BYTES
        if pad and room > 0:
            datagram = encode(dataclasses.replace(request, padding=room - room % 4))
        self._pending[transaction] = _Txn(
            server, datagram, now, now + rto_s, rto_s, now + timeout_s
        )
        self._out.append((SOURCE_PRIMARY, datagram, server))
        self.stats["requests"] += 1
        return transaction

    def take_result(self, transaction: bytes) -> StunOutcome | None:
        """The outcome of a finished transaction (once), or None while it is pending."""
        return self._results.pop(transaction, None)

    def pending(self, transaction: bytes) -> bool:
        return transaction in self._pending

    # --- sans-IO plumbing -------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if not self._pending:
            return None
        return min(min(t.next_send, t.deadline) for t in self._pending.values())

    def handle_timer(self, *, now: float) -> None:
        for transaction, txn in list(self._pending.items()):
            if now >= txn.deadline:
                del self._pending[transaction]
                self.stats["timeouts"] += 1
                self._finish(StunOutcome(transaction, None))
            elif now >= txn.next_send:
                txn.rto *= 2
                txn.next_send = now + txn.rto
                self._out.append((SOURCE_PRIMARY, txn.datagram, txn.server))
                self.stats["retransmits"] += 1

    def datagrams_to_send(self) -> list[tuple[int, bytes, Endpoint]]:
        out, self._out = self._out, []
        return out


# --- classification ---------------------------------------------------------------------------


def mapping_behaviour(
    mapped: list[tuple[Endpoint | None, Endpoint]], local: list[Endpoint]
) -> Mapping | None:
    """Mapping behaviour from ``(destination, mapped address)`` observations of one socket.

    "none" when every destination sees one of our own ``local`` endpoints; "dependent" when
    two observations differ; "endpoint-independent" when at least two different destinations
    saw the same mapping; None when there is not enough to tell.
    """
    if not mapped:
        return None
    seen = {m for _, m in mapped}
    if all(m in local for m in seen):
        return "none"
    if len(seen) > 1:
        return "dependent"
    if len({d for d, _ in mapped}) >= 2:
        return "endpoint-independent"
    return None


def classify(mapping: Mapping | None, filtering: Filtering | None) -> NatKind | None:
    """The NAT kind of a mapping and a filtering behaviour; None if they do not decide it.

    A dependent mapping is "symmetric" whatever the filtering. No translation is "none" unless
    a filtering test showed a stateful firewall, which then behaves as the cone with the same
    filtering (it keeps the port, like the lab's cone NATs).
    """
    if mapping == "dependent":
        return NatKind.SYMMETRIC
    if mapping is None:
        return None
    if mapping == "none" and filtering in (None, "endpoint-independent"):
        return NatKind.NONE
    if filtering is None:
        return None
    return _CONE_OF[filtering]


_CONE_OF: Final[dict[Filtering, NatKind]] = {
    "endpoint-independent": NatKind.FULL_CONE,
    "address-dependent": NatKind.RESTRICTED_CONE,
    "address-and-port-dependent": NatKind.PORT_RESTRICTED_CONE,
}


def filtering_behaviour(change_both: bool | None, change_port: bool | None) -> Filtering | None:
    """RFC 5780 §4.4 from the two change-request tests (True = answered from the address the
    flags asked for, False = no answer, None = not tested)."""
    if change_both:
        return "endpoint-independent"
    if change_both is None or change_port is None:
        return None
    return "address-dependent" if change_port else "address-and-port-dependent"


def direct_expected(a: NatKind | None, b: NatKind | None) -> bool | None:
    """Can hosts of kinds ``a`` and ``b`` reach a direct path? None if a kind is unknown.

    Measured (shared/reference/README.md): plain punching fails for symmetric against symmetric
    and against a port-restricted cone (the cone only lets in the port it sent to, which the
    symmetric side does not keep); every other pair punched 3 of 3. Port guessing
    (:mod:`ipop.nat.portguess`) gets symmetric x port-restricted through; two symmetric NATs would
    need both random ports guessed at once, so that pair stays relayed.
    """
    if a is None or b is None:
        return None
    return not (a == NatKind.SYMMETRIC and b == NatKind.SYMMETRIC)
