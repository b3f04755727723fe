"""Which records a member may own: certificates, key namespaces, hostnames, value sizes, quotas.

Pure: no clock, no I/O (``now`` comes in). Replicas (:class:`ipop.dht.storage.RecordStorage`)
and readers (:meth:`ipop.dht.service.DhtService.get`) both ask :meth:`RecordPolicy.admit`, so a
record the policy refuses is neither stored nor believed, whoever relays it.

Owner: the certificate the record carries (:mod:`ipop.dht.record`) must verify against this
network's CA at ``now`` (``CaTrust.verify``: chain, network, validity, and revocation where
the CA trust enforces it) and carry the record's signing key. A key with no certificate of
this network stores nothing.

Keys: ``<network>:<kind>:<rest>``, the network being this DHT's own. Kinds::

    kind   rest                         value                        who may own it
    ip     a canonical IPv4 address     b"" (the node itself),       any member (quota 1);
           in the subnet (if known)     or a 6-byte MAC (a router's   a router: its own + N
                                        LAN host)                     LAN hosts (N + 1)
    name   <hostname>                   4-byte IPv4 (in the subnet)  the member whose
                                                                     certificate names it
           <host>.<router hostname>     4-byte IPv4 (in the subnet)  that router (quota N + 1)
    user   1..64 printable ASCII        0..255 bytes                 any member (quota 8)
    svc    <name>.<proto>.<slot>        addr, port, TXT strings      any member, in its own
                                        (:mod:`ipop.dht.srv`)        slots (quota 8; a
                                                                     router 8 + N)

(``user``: ``ipop dht put/get``, the operator's own keys; ``ip`` and ``name``: leases and
names, :mod:`ipop.dht.alloc` and :mod:`ipop.dht.names`; ``svc``: ``ipop service publish``,
:mod:`ipop.dht.srv`.) Anything else is refused.

Why LAN host names are ``<host>.<router hostname>``: a member's hostname is one DNS label (no
dot, :func:`ipop.identity.validate_hostname`), a LAN host's name always has one, so no LAN host
name can ever equal a member's, without anybody (``ipop-config``, a replica) having to know
every member's name; and the part after the dot is the router's own certified hostname, so a
router names hosts only under itself (DNS reads them as ``printer.lab.<suffix>``). A prefix
form (``lab-printer``) would collide with a member called ``lab-printer``.

Address names (``C064001002``) are computed, never stored, so they need no record.

Quotas (per owner, per kind, at each replica): see :meth:`RecordPolicy.quota`. They count
every unexpired record of the owner, tombstones included (a tombstone occupies memory too).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network

from ipop.dht.record import Record
from ipop.dht.srv import SERVICE_QUOTA, allowed_slots, decode_value, parse_service_key
from ipop.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from ipop.identity import (
    CERT_REASONS,
    CaTrust,
    CertificateError,
    NodeCertificate,
    validate_hostname,
)

MAC_BYTES = 6
MAX_USER_KEY = 64
# Operator keys per member per replica: plenty for ``ipop dht put``, small for a flooder.
USER_QUOTA = 8


class Kind(enum.Enum):
    IP = "ip"
    NAME = "name"
    USER = "user"
    SVC = "svc"


# Every reason the policy refuses a record for (drop counters); certificate reasons included.
POLICY_REASONS = frozenset(
    {
        "record_cert_key_mismatch",  # the certificate is not the signing key's
        "key_other_network",  # not under this network's prefix
        "key_unknown_kind",
        "key_bad_ip",  # not a canonical IPv4 address
        "key_ip_outside_subnet",
        "key_bad_name",  # not a hostname, nor <host>.<router hostname>
        "key_bad_user",
        "key_bad_service",  # not <name>.<tcp|udp>.<slot> (ipop.dht.srv)
        "service_slot_not_owner",  # a slot the owner's node id does not give it
        "name_not_certified",  # a hostname the owner's certificate does not carry
        "name_not_router",  # a LAN host name from a node that is not that router
        "value_size",  # wrong length for the kind
        "value_outside_subnet",  # a name pointing outside the subnet
        "value_not_router",  # a MAC in an ip record of a node that is not a router
    }
) | frozenset(CERT_REASONS)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A record the policy allows: its owner's verified certificate and the key's kind."""

    cert: NodeCertificate
    kind: Kind


def _refuse(reason: str, detail: str = "") -> RemoteProtocolError:
    if reason not in POLICY_REASONS:
        raise LocalProtocolError(f"unknown DHT policy reason {reason!r}")
    return RemoteProtocolError(reason, detail)


def split_key(key: str, network: str) -> tuple[Kind, str]:
    """(kind, rest) of a key of ``network``; RemoteProtocolError(reason) otherwise."""
    prefix = network + ":"
    if not key.startswith(prefix):
        raise _refuse("key_other_network", key[:64])
    kind_s, sep, rest = key[len(prefix) :].partition(":")
    try:
        kind = Kind(kind_s)
    except ValueError:
        raise _refuse("key_unknown_kind", kind_s[:16]) from None
    if not sep:
        raise _refuse("key_unknown_kind", "no ':' after the kind")
    return kind, rest


def lan_host_name(host: str, router_hostname: str) -> str:
    """The name a router registers for its LAN host ``host``: ``<host>.<router hostname>``.

    ConfigError if ``host`` is not a valid hostname label (it comes from a DHCP client).
    """
    validate_hostname(host)
    return f"{host}.{router_hostname}"


def is_name(name: str) -> bool:
    """A hostname or a ``<host>.<router hostname>`` LAN host name (never an address name)."""
    labels = name.split(".")
    if not 1 <= len(labels) <= 2:
        return False
    try:
        for label in labels:
            validate_hostname(label)
    except ConfigError:
        return False
    return True


class RecordPolicy:
    """This network's rules for records (module docstring); one per DHT node."""

    __slots__ = ("network", "subnet", "trust")

    def __init__(self, trust: CaTrust, *, subnet: IPv4Network | None = None) -> None:
        self.trust = trust
        self.network = trust.network
        self.subnet = subnet

    def admit(self, record: Record, *, now: float) -> Admitted:
        """Raise RemoteProtocolError (reason in :data:`POLICY_REASONS`) unless allowed.

        The signature is :func:`ipop.dht.record.check_record`'s business; call both.
        """
        kind, rest = split_key(record.key, self.network)
        try:
            cert = self.trust.verify(record.cert, now=now)
        except CertificateError as exc:
            raise _refuse(exc.reason, exc.detail) from None
        if cert.public_key_raw != bytes(record.owner_pub):
            raise _refuse("record_cert_key_mismatch")
        if kind is Kind.IP:
            self._check_ip(record, rest, cert)
        elif kind is Kind.NAME:
            self._check_name(record, rest, cert)
        elif kind is Kind.SVC:
            self._check_service(record, rest)
        elif not 1 <= len(rest) <= MAX_USER_KEY or not rest.isascii() or not rest.isprintable():
            raise _refuse("key_bad_user", rest[:16])
        return Admitted(cert, kind)

    def quota(self, cert: NodeCertificate, kind: Kind) -> int:
        """Records of ``kind`` one owner may have at one replica.

        A plain node: one address and its certificate's hostname. A router: its own and
        ``router_hosts`` LAN hosts' of each. Everyone: :data:`USER_QUOTA` operator keys and
        :data:`~ipop.dht.srv.SERVICE_QUOTA` services (a router: plus one per LAN host).
        """
        if kind is Kind.USER:
            return USER_QUOTA
        if kind is Kind.SVC:
            return SERVICE_QUOTA + cert.router_hosts
        return 1 + cert.router_hosts

    # --- per kind -------------------------------------------------------------------------------

    def _check_ip(self, record: Record, rest: str, cert: NodeCertificate) -> None:
        try:
            addr = IPv4Address(rest)
        except (AddressValueError, ValueError):
            raise _refuse("key_bad_ip", rest[:32]) from None
        if str(addr) != rest:
            # One address, one key: "100.064.0.1" must not be a second key for 100.64.0.1.
            raise _refuse("key_bad_ip", rest[:32])
        if self.subnet is not None and addr not in self.subnet:
            raise _refuse("key_ip_outside_subnet", rest)
        if record.tombstone:
            return
        if len(record.value) == MAC_BYTES:
            if not cert.is_router:
                raise _refuse("value_not_router")
        elif record.value:
            raise _refuse("value_size", f"ip value {len(record.value)} bytes")

    def _check_name(self, record: Record, rest: str, cert: NodeCertificate) -> None:
        if not is_name(rest):
            raise _refuse("key_bad_name", rest[:64])
        host, dot, under = rest.partition(".")
        if dot:
            # A LAN host name: only the router whose certified hostname it is under.
            if not cert.is_router or cert.hostname != under:
                raise _refuse("name_not_router", rest)
        elif cert.hostname != host:
            raise _refuse("name_not_certified", rest)
        if record.tombstone:
            return
        if len(record.value) != 4:
            raise _refuse("value_size", f"name value {len(record.value)} bytes")
        if self.subnet is not None and IPv4Address(record.value) not in self.subnet:
            raise _refuse("value_outside_subnet")

    def _check_service(self, record: Record, rest: str) -> None:
        name, proto, slot = parse_service_key(rest)
        if slot not in allowed_slots(record.owner, name, proto):
            raise _refuse("service_slot_not_owner", rest[:32])
        if record.tombstone:
            return
        value = decode_value(record.value)
        if self.subnet is not None and value.addr not in self.subnet:
            raise _refuse("value_outside_subnet")


__all__ = [
    "POLICY_REASONS",
    "USER_QUOTA",
    "Admitted",
    "Kind",
    "RecordPolicy",
    "is_name",
    "lan_host_name",
    "split_key",
]
