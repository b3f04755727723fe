"""Services published through the DHT: their keys, slots and values (pure).

A service instance is one member's claim "``NAME`` over ``PROTO`` answers at ``ADDR:PORT``",
what DNS SRV answers (``_NAME._PROTO.<suffix>``) and ``ipop service list`` print. Several
members may publish the same NAME (a Condor pool has several managers), but a DHT key holds
one owner's record, so a name has :data:`SLOTS` keys, ``<namespace>:svc:<name>.<proto>.<slot>``,
and each instance holds one slot; a reader reads all of them at once.

Which slots a member may hold is fixed by its node id: :func:`allowed_slots` picks
:data:`SLOTS_PER_OWNER` of them from a hash of (owner, name, proto), and replicas refuse any
other (:mod:`ipop.dht.policy`). Without that, one certificate could take every slot of a name
(slots hash to different replicas, so per-replica quotas never see them together) and hide the
real instances; with it, one member fills at most 4 of 16 and honest publishers collide rarely
(two members share all four slots with odds below 1 in 1,800).

Value layout (``encode_value``)::

    addr (4: the instance's IPv4, in the subnet) | port (u16, 1..65535) |
    ntxt (u8) | ntxt x (len u8, 1..MAX_TXT_BYTES | "key=value", printable ASCII)

The address must be one its owner holds (its own vIP, or a LAN host of a router): readers check
the ``ip`` record's owner (:func:`ipop.dht.publish.list_services`), so nobody can point a
service at somebody else's machine.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from ipop.errors import RemoteProtocolError
from ipop.types import NodeId

__all__ = [
    "MAX_TXT",
    "MAX_TXT_BYTES",
    "MIN_VALUE_BYTES",
    "PROTOS",
    "SERVICE_QUOTA",
    "SLOTS",
    "SLOTS_PER_OWNER",
    "ServiceValue",
    "allowed_slots",
    "decode_value",
    "parse_service_key",
    "sealed_slots",
    "service_key",
    "validate_service_name",
]

SLOTS = 16
SLOTS_PER_OWNER = 4
PROTOS = ("tcp", "udp")
# Service records one member may hold at one replica (a router: this plus its LAN hosts).
SERVICE_QUOTA = 8
MAX_TXT = 8
MAX_TXT_BYTES = 63
# RFC 6335 service names: 1-15 letters, digits and inner hyphens, at least one letter.
_NAME_RE = re.compile(r"^(?=.*[a-z])[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?$")
_TXT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}=[\x20-\x7e]*$")
_HEAD = struct.Struct("!4sHB")
# The shortest service value: address, port, no TXT string.
MIN_VALUE_BYTES = _HEAD.size
_SLOT_PERSON = b"ipop-svc-slots"


def validate_service_name(name: str) -> str | None:
    """None if ``name`` is a service name (RFC 6335), else why not (for the user)."""
    if "--" in name or not _NAME_RE.fullmatch(name):
        return (
            f"{name!r} is not a service name: 1-15 lowercase letters, digits and inner "
            "hyphens, at least one letter (e.g. 'http', 'condor')"
        )
    return None


def service_key(namespace: str, name: str, proto: str, slot: int) -> str:
    """``<namespace>:svc:<name>.<proto>.<slot>``: one slot of a service name
    (``namespace``: :func:`ipop.dht.record.namespace_of`)."""
    return f"{namespace}:svc:{name}.{proto}.{slot}"


def parse_service_key(rest: str) -> tuple[str, str, int]:
    """(name, proto, slot) of a key's ``rest`` after ``<namespace>:svc:``; raise otherwise."""
    name, _, tail = rest.partition(".")
    proto, _, slot_s = tail.partition(".")
    if validate_service_name(name) is not None:
        raise RemoteProtocolError("key_bad_service", rest[:32])
    if proto not in PROTOS or not slot_s.isdigit() or str(int(slot_s)) != slot_s:
        raise RemoteProtocolError("key_bad_service", rest[:32])
    slot = int(slot_s)
    if slot >= SLOTS:
        raise RemoteProtocolError("key_bad_service", rest[:32])
    return name, proto, slot


def allowed_slots(owner: NodeId, name: str, proto: str) -> tuple[int, ...]:
    """The :data:`SLOTS_PER_OWNER` slots of ``name``/``proto`` ``owner`` may hold, in the
    order a publisher tries them."""
    return _slots(owner, f"{name}.{proto}")


def sealed_slots(owner: NodeId, service_id: str) -> tuple[int, ...]:
    """:func:`allowed_slots` for a sealed service key (:mod:`ipop.dht.seal`), whose replicas
    see only the blinded ``service_id``: the slots are chosen from what they can check."""
    return _slots(owner, "~" + service_id)


def _slots(owner: NodeId, service: str) -> tuple[int, ...]:
    seed = hashlib.blake2b(
        owner.to_bytes() + service.encode(), digest_size=32, person=_SLOT_PERSON
    ).digest()
    out: list[int] = []
    for b in seed:
        if b % SLOTS not in out:
            out.append(b % SLOTS)
            if len(out) == SLOTS_PER_OWNER:
                return tuple(out)
    # 32 bytes give 4 distinct values of 16 unless astronomically unlucky: fill in order.
    out.extend(s for s in range(SLOTS) if s not in out)
    return tuple(out[:SLOTS_PER_OWNER])


@dataclass(frozen=True, slots=True)
class ServiceValue:
    """Where an instance answers, and its TXT strings (``key=value``)."""

    addr: IPv4Address
    port: int
    txt: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """The record value; ValueError (for the user) on a bad port or TXT string."""
        if not 1 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} is not in 1..65535")
        if len(self.txt) > MAX_TXT:
            raise ValueError(f"at most {MAX_TXT} TXT strings")
        parts = [_HEAD.pack(self.addr.packed, self.port, len(self.txt))]
        for t in self.txt:
            if len(t) > MAX_TXT_BYTES or not _TXT_RE.fullmatch(t):
                raise ValueError(
                    f"TXT {t!r}: write KEY=VALUE, KEY of letters, digits, '_.-', "
                    f"printable ASCII, at most {MAX_TXT_BYTES} bytes"
                )
            parts.append(bytes((len(t),)) + t.encode("ascii"))
        return b"".join(parts)


def decode_value(data: bytes) -> ServiceValue:
    """Strictly parse a service record's value; RemoteProtocolError("value_size") otherwise."""
    if len(data) < _HEAD.size:
        raise RemoteProtocolError("value_size", f"service value {len(data)} bytes")
    raw, port, ntxt = _HEAD.unpack_from(data)
    if port == 0 or ntxt > MAX_TXT:
        raise RemoteProtocolError("value_size", "service port or TXT count")
    pos = _HEAD.size
    txt: list[str] = []
    for _ in range(ntxt):
        if pos >= len(data):
            raise RemoteProtocolError("value_size", "service TXT truncated")
        n = data[pos]
        chunk = data[pos + 1 : pos + 1 + n]
        pos += 1 + n
        try:
            t = chunk.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("value_size", "service TXT not ASCII") from None
        if len(chunk) != n or n > MAX_TXT_BYTES or not _TXT_RE.fullmatch(t):
            raise RemoteProtocolError("value_size", "service TXT malformed")
        txt.append(t)
    if pos != len(data):
        raise RemoteProtocolError("value_size", "service value has trailing bytes")
    return ServiceValue(IPv4Address(raw), port, tuple(txt))
