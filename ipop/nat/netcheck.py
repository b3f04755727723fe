"""``ipop netcheck``: what the network does to this node's overlay socket, and how we found out.

Owns the netcheck procedure and its result document (:class:`NetcheckResult`, JSON round trip
through :meth:`NetcheckResult.to_dict` / :meth:`NetcheckResult.from_dict`; the contract of
``ipop netcheck --json``). The procedure is written against one awaitable,
``transact(server, change_ip, change_port) -> StunAnswer | None``, so that it runs on the
daemon's own socket (through :class:`ipop.nat.stun.StunAgent`) and in tests on a fake; it reads no
clock and opens no socket.

Procedure, per STUN server (bootstrap nodes first, then configured servers):

1. Binding request → our mapped address and the server's OTHER-ADDRESS.
2. If it has an OTHER-ADDRESS: CHANGE-REQUEST(ip+port) then CHANGE-REQUEST(port), both sent
   to the address already contacted, **before** anything is sent to the alternate address:
   a restricted NAT remembers what we contacted, and once we talked to the alternate address
   its answers would pass and the NAT would look like a full cone. An answer counts only if it
   came from an address other than the one asked (a server that ignores the flags proves
   nothing).

Mapping behaviour compares the mapped addresses every destination reported: the servers and
every directly linked peer that serves STUN (``[stun] serve``: bootstrap and public reference
nodes; the others stay silent and count for nothing), plus what peers echoed in the overlay.
Only with fewer than two destinations does it send a Binding request to a server's
OTHER-ADDRESS (last, so it cannot spoil the filtering tests of this run; a rerun
within the NAT's memory may then read a restricted NAT as full cone, noted in ``notes``).

``second_opinion`` holds what pystun3 said against each configured server (run by the caller
in a thread); it is reported with its known traps, never used for ``nat``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ipop.errors import ConfigError
from ipop.nat.kinds import NAT_KINDS, NatKind
from ipop.nat.stun import (
    FILTERINGS,
    MAPPINGS,
    Filtering,
    StunAnswer,
    classify,
    direct_expected,
    filtering_behaviour,
    mapping_behaviour,
)
from ipop.nat.stun import (
    Mapping as MappingKind,
)
from ipop.types import Endpoint

__all__ = [
    "PYSTUN3_KINDS",
    "PYSTUN3_TRAPS",
    "NetcheckResult",
    "SecondOpinion",
    "ServerProbe",
    "Transact",
    "pystun3_kind",
    "run_netcheck",
]

Transact = Callable[[Endpoint, bool, bool], Awaitable[StunAnswer | None]]

# pystun3's verdict strings → our kinds ("Restric" is its spelling).
PYSTUN3_KINDS: Mapping[str, NatKind] = {
    "Open Internet": NatKind.NONE,
    "Full Cone": NatKind.FULL_CONE,
    "Restric NAT": NatKind.RESTRICTED_CONE,
    "Restric Port NAT": NatKind.PORT_RESTRICTED_CONE,
    "Symmetric NAT": NatKind.SYMMETRIC,
}
PYSTUN3_TRAPS = (
    "bound to 0.0.0.0 it calls an open host 'Full Cone' (we bind it to our own address)",
    "behind bare MASQUERADE its change-address test collides in conntrack: 'Symmetric NAT'",
    "its Test III asks the changed address, already contacted: a port-restricted NAT may "
    "read as 'Restric NAT'",
    "each unanswered test costs 8 s",
)


def pystun3_kind(verdict: str | None) -> NatKind | None:
    return PYSTUN3_KINDS.get(verdict) if verdict is not None else None


def _ep(text: object, key: str) -> Endpoint | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{key}: not a string")
    try:
        return Endpoint.parse(text, key=key)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _opt_str(value: object, key: str, allowed: Sequence[str] | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or (allowed is not None and value not in allowed):
        raise ValueError(f"{key}: unexpected value {value!r}")
    return value


def _opt_kind(value: object, key: str) -> NatKind | None:
    return None if value is None else _kind(value, key)


def _kind(value: object, key: str) -> NatKind:
    """A measured kind (old spellings read too); ValueError naming ``key`` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"{key}: unexpected value {value!r}")
    try:
        kind = NatKind.parse(value)
    except ValueError:
        kind = None
    if kind is None or kind not in NAT_KINDS:
        raise ValueError(f"{key}: unexpected value {value!r}")
    return kind


def _opt_bool(value: object, key: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{key}: not a boolean")
    return value


@dataclass(frozen=True, slots=True)
class ServerProbe:
    """What one STUN server told us; ``kind`` combines its filtering with the mapping."""

    server: Endpoint
    answered: bool
    mapped: Endpoint | None = None
    other: Endpoint | None = None
    change_both: bool | None = None  # None: not tested (no OTHER-ADDRESS, or no answer)
    change_port: bool | None = None
    filtering: Filtering | None = None
    kind: NatKind | None = None
    rtt_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": str(self.server),
            "answered": self.answered,
            "mapped": str(self.mapped) if self.mapped else None,
            "other": str(self.other) if self.other else None,
            "change_both": self.change_both,
            "change_port": self.change_port,
            "filtering": self.filtering,
            "kind": self.kind,
            "rtt_ms": self.rtt_ms,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> ServerProbe:
        server = _ep(d.get("server"), "server")
        if server is None or not isinstance(d.get("answered"), bool):
            raise ValueError("server probe needs 'server' and 'answered'")
        rtt = d.get("rtt_ms")
        if rtt is not None and (not isinstance(rtt, int | float) or isinstance(rtt, bool)):
            raise ValueError("rtt_ms: not a number")
        return ServerProbe(
            server=server,
            answered=d["answered"],
            mapped=_ep(d.get("mapped"), "mapped"),
            other=_ep(d.get("other"), "other"),
            change_both=_opt_bool(d.get("change_both"), "change_both"),
            change_port=_opt_bool(d.get("change_port"), "change_port"),
            filtering=cast(Filtering | None, _opt_str(d.get("filtering"), "filtering", FILTERINGS)),
            kind=_opt_kind(d.get("kind"), "kind"),
            rtt_ms=float(rtt) if rtt is not None else None,
        )


@dataclass(frozen=True, slots=True)
class SecondOpinion:
    """pystun3's verdict against one server (``verdict`` is its own string)."""

    server: Endpoint
    verdict: str | None
    kind: NatKind | None
    external: Endpoint | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": str(self.server),
            "verdict": self.verdict,
            "kind": self.kind,
            "external": str(self.external) if self.external else None,
            "error": self.error,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> SecondOpinion:
        server = _ep(d.get("server"), "server")
        if server is None:
            raise ValueError("second opinion needs 'server'")
        return SecondOpinion(
            server=server,
            verdict=_opt_str(d.get("verdict"), "verdict"),
            kind=_opt_kind(d.get("kind"), "kind"),
            external=_ep(d.get("external"), "external"),
            error=_opt_str(d.get("error"), "error"),
        )


@dataclass(frozen=True, slots=True)
class NetcheckResult:
    """The ``ipop netcheck --json`` document."""

    nat: NatKind | None
    mapping: MappingKind | None
    filtering: Filtering | None
    public_endpoints: tuple[Endpoint, ...]
    local_endpoints: tuple[Endpoint, ...]
    direct_expected: dict[NatKind, bool | None]  # peer's NAT kind -> can we punch to it?
    servers: tuple[ServerProbe, ...] = ()
    peers_seen: tuple[tuple[Endpoint, Endpoint], ...] = ()  # (peer, our address it saw)
    second_opinion: tuple[SecondOpinion, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "nat": self.nat,
            "mapping": self.mapping,
            "filtering": self.filtering,
            "public_endpoints": [str(e) for e in self.public_endpoints],
            "local_endpoints": [str(e) for e in self.local_endpoints],
            "direct_expected": dict(self.direct_expected),
            "servers": [s.to_dict() for s in self.servers],
            "peers_seen": [[str(p), str(m)] for p, m in self.peers_seen],
            "second_opinion": [s.to_dict() for s in self.second_opinion],
            "notes": list(self.notes),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> NetcheckResult:
        """Inverse of :meth:`to_dict`; ValueError on anything malformed."""
        if not isinstance(d, Mapping):
            raise ValueError("netcheck result must be an object")
        try:
            direct = d["direct_expected"]
            if not isinstance(direct, dict) or any(
                v is not None and not isinstance(v, bool) for v in direct.values()
            ):
                raise ValueError("direct_expected: kind -> true/false/null")
            direct = {_kind(k, "direct_expected"): v for k, v in direct.items()}
            notes = d.get("notes", [])
            if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
                raise ValueError("notes: list of strings")
            peers = d.get("peers_seen", [])
            seen: list[tuple[Endpoint, Endpoint]] = []
            for pair in peers:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError("peers_seen: pairs")
                a, b = _ep(pair[0], "peers_seen"), _ep(pair[1], "peers_seen")
                if a is None or b is None:
                    raise ValueError("peers_seen: pairs of endpoints")
                seen.append((a, b))
            return NetcheckResult(
                nat=_opt_kind(d.get("nat"), "nat"),
                mapping=cast(MappingKind | None, _opt_str(d.get("mapping"), "mapping", MAPPINGS)),
                filtering=cast(
                    Filtering | None, _opt_str(d.get("filtering"), "filtering", FILTERINGS)
                ),
                public_endpoints=tuple(_eps(d.get("public_endpoints"), "public_endpoints")),
                local_endpoints=tuple(_eps(d.get("local_endpoints"), "local_endpoints")),
                direct_expected=dict(direct),
                servers=tuple(ServerProbe.from_dict(s) for s in d.get("servers", [])),
                peers_seen=tuple(seen),
                second_opinion=tuple(
                    SecondOpinion.from_dict(s) for s in d.get("second_opinion", [])
                ),
                notes=tuple(notes),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed netcheck result: {exc}") from None


def _eps(value: object, key: str) -> list[Endpoint]:
    if not isinstance(value, list):
        raise ValueError(f"{key}: not a list")
    out = []
    for v in value:
        ep = _ep(v, key)
        if ep is None:
            raise ValueError(f"{key}: null endpoint")
        out.append(ep)
    return out


async def _probe_filtering(transact: Transact, server: Endpoint, first: StunAnswer) -> ServerProbe:
    """Steps 2 of the module docstring for one server that answered ``first``."""
    both: bool | None = None
    port: bool | None = None
    if first.other is not None:
        got = await transact(server, True, True)
        both = got is not None and got.source != server
        if not both:
            got = await transact(server, False, True)
            port = got is not None and got.source != server
    return ServerProbe(
        server=server,
        answered=True,
        mapped=first.mapped,
        other=first.other,
        change_both=both,
        change_port=port,
        filtering=filtering_behaviour(both, port),
        rtt_ms=round(first.rtt_s * 1000, 3),
    )


async def run_netcheck(
    transact: Transact,
    *,
    servers: Sequence[Endpoint],
    peers: Sequence[Endpoint],
    local: Sequence[Endpoint],
    echoed: Sequence[Endpoint] = (),
    gather: Callable[..., Awaitable[list[Any]]] | None = None,
) -> NetcheckResult:
    """The procedure of the module docstring. ``servers`` are asked for the filtering tests,
    ``peers`` (linked peers' direct endpoints) only for their view of our address; ``echoed``
    are the addresses peers echoed in the overlay. ``gather`` (``asyncio.gather``) runs the
    servers' probes side by side; without it they run one after the other."""
    notes: list[str] = []
    servers = list(dict.fromkeys(servers))
    peers = [p for p in dict.fromkeys(peers) if p not in servers]

    async def probe(server: Endpoint) -> ServerProbe:
        first = await transact(server, False, False)
        if first is None:
            return ServerProbe(server=server, answered=False)
        return await _probe_filtering(transact, server, first)

    async def ask(peer: Endpoint) -> StunAnswer | None:
        return await transact(peer, False, False)

    jobs = [probe(s) for s in servers] + [ask(p) for p in peers]
    results = list(await gather(*jobs)) if gather is not None else [await j for j in jobs]
    probes = cast(list[ServerProbe], results[: len(servers)])
    peer_answers = cast(list[StunAnswer | None], results[len(servers) :])

    observations: list[tuple[Endpoint | None, Endpoint]] = [
        (p.server, p.mapped) for p in probes if p.mapped is not None
    ]
    peers_seen = [(a.server, a.mapped) for a in peer_answers if a is not None and a.mapped]
    observations += peers_seen
    local_list = list(local)
    mapping = mapping_behaviour(observations, local_list)
    if mapping is None and observations:
        # One destination only: the alternate address of a server that has one decides.
        alt = next((p.other for p in probes if p.other is not None), None)
        if alt is not None:
            got = await transact(alt, False, False)
            if got is not None and got.mapped is not None:
                observations.append((alt, got.mapped))
                notes.append(
                    f"mapping tested against {alt}: a rerun within the NAT's memory may read "
                    "a restricted NAT as full cone"
                )
        mapping = mapping_behaviour(observations, local_list)
    if mapping is None:
        # Last resort: addresses peers echoed in the overlay (their destinations unknown).
        extra: list[tuple[Endpoint | None, Endpoint]] = [
            (None, e) for e in echoed if e not in local_list
        ]
        # Echoes can prove a dependent mapping (two addresses differ) but never an independent
        # one: their destinations are unknown, and may all be the one peer already asked.
        if extra and mapping_behaviour(observations + extra, local_list) == "dependent":
            mapping = "dependent"
            notes.append("mapping judged from addresses peers echoed in the overlay")
    if mapping is None and observations:
        notes.append(
            "mapping unknown (one peer): telling an endpoint-independent mapping from a "
            "dependent one takes answers from two destinations"
        )
    if not observations:
        notes.append("no STUN server or peer answered")

    probes = [
        ServerProbe(
            server=p.server,
            answered=p.answered,
            mapped=p.mapped,
            other=p.other,
            change_both=p.change_both,
            change_port=p.change_port,
            filtering=p.filtering,
            kind=classify(mapping, p.filtering) if p.answered else None,
            rtt_ms=p.rtt_ms,
        )
        for p in probes
    ]
    filtering = next((p.filtering for p in probes if p.filtering is not None), None)
    kinds = {p.kind for p in probes if p.filtering is not None}
    if len(kinds) > 1:
        notes.append("servers disagree on filtering: " + ", ".join(sorted(map(str, kinds))))
    nat = classify(mapping, filtering)
    public = tuple(dict.fromkeys(m for _, m in observations))
    return NetcheckResult(
        nat=nat,
        mapping=mapping,
        filtering=filtering,
        public_endpoints=public,
        local_endpoints=tuple(local),
        direct_expected={k: direct_expected(nat, k) for k in NAT_KINDS},
        servers=tuple(probes),
        peers_seen=tuple(peers_seen),
        notes=tuple(notes),
    )
