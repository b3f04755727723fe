"""Which records an owner may hold: certificates, key namespaces, hostnames, value sizes, quotas.

Pure: no clock, no I/O (``now`` comes in). Replicas (:class:`ipop.dht.storage.RecordStorage`)
and readers (:meth:`ipop.dht.service.DhtService.get`) both ask :meth:`RecordPolicy.admit`, so a
record the policy refuses is neither stored nor believed, whoever relays it.

Keys: ``<namespace>:<kind>:<rest>``. The namespace, ``<network>~<b32 of the CA's public key>``
(:func:`ipop.dht.record.namespace_of`), names the network's CA key, so a replica that is no
member of that network (an overlay-only node, a member of another network on the same overlay)
can still check every record of it with no configuration. A key whose namespace is not of that
syntax stores nothing (``key_bad_namespace``).

Owner: the certificate the record carries (:mod:`ipop.dht.record`) must verify under the
namespace's CA at ``now`` and carry the record's signing key; one that the namespace's key did
not sign is refused as ``key_wrong_ca`` (another network's member, or a forgery, squatting the
key). Which checks apply depends on whose namespace it is:

  * this node's own network (:attr:`RecordPolicy.namespace`): everything, through the member's
    ``CaTrust`` (chain, network, validity of the certificate and of the CA, revocation), and
    the subnet rules below (``key_ip_outside_subnet``, ``value_outside_subnet``);
  * any other namespace: :class:`ipop.identity.CaKeyTrust` (signature under the namespace's
    key, a leaf, O= and the SAN naming the namespace's network, node id = hash of its key, the
    certificate's validity window), and every rule below that needs no configuration. That
    network's subnet is unknown here: an ip key must be a canonical IPv4 address and a name
    value 4 bytes, of any address; the CA's lifetime is unknowable too, and its revocations
    are known only once its CRL has reached this node (:class:`ipop.revocation.NetworkCrls`
    carries every network's list over the overlay's links). Members of that network check
    all of it when they read (their own namespace), so a stranger replica can at worst keep
    a record readers then disbelieve; it can never let a non-member create or squat a key,
    which is what matters for create-if-absent.

Verifiers of other namespaces are made on demand and kept in a bounded LRU
(:data:`FOREIGN_NAMESPACES`, each caching :data:`FOREIGN_CERT_CACHE` certificates). Records
naming made-up namespaces can churn it; that costs a verification per record (about 170 us
of CPU uncached, 5 us cached), never memory beyond the bound.

Readers (issue 17, item 3: a member of one network cannot resolve or enumerate another's
names): a replica shows a record only to a member of its namespace's network
(:meth:`RecordPolicy.may_read`): the asker's certificate in that namespace (a FETCH's proof;
a STORE's offered record carries its own) must verify as an owner's does and be the asking
node's own (its node id, which the overlay authenticated). A namespace whose CA is the
overlay's (``readable``: a network that is its own overlay) needs no proof: every node that
can ask holds that CA's certificate. Without this, any node could ask for ``ip:<addr>`` over
a whole range, or for guessed names, and read another network's holders and addresses. The
records a node itself stores as a replica are in its memory: a network on a shared overlay
seals them (:mod:`ipop.dht.seal`: keys blinded, values encrypted under the network's records
key), and a sealed record gets the checks its stored form allows (:meth:`RecordPolicy.admit`,
``_check_sealed``: the writer's certificate and key, a hostname's owner, a LAN host's router,
a service slot's owner, the value's length); its readers apply the rest to the opened view.

Known limit: anyone can make a CA, so a namespace proves only that one key vouched for the
record, not that the network is anyone's. Per-owner quotas (per namespace) cannot limit an
overlay member that mints namespaces and keys; the store's shares by overlay identity do
(:mod:`ipop.dht.storage`: a quarter of a replica per identity that stores there itself, three
quarters for all owners that never did). Who may send STOREs at all is the overlay's
credential (issue 17), not this module's.

Kinds::

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

Quotas (per owner, namespace and kind, at each replica): see :meth:`RecordPolicy.quota`. They
count every unexpired record of the owner, tombstones included (a tombstone occupies memory
too). The quota in a namespace follows the owner's certificate of that namespace's network: one
node key in two networks holds each network's quota in that network's namespace, never the sum
of both in one.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network
from typing import Protocol

from ipop.dht.record import Record, namespace_of, parse_namespace
from ipop.dht.seal import SEAL_OVERHEAD, SEALED, is_tag
from ipop.dht.srv import (
    MIN_VALUE_BYTES,
    SERVICE_QUOTA,
    allowed_slots,
    decode_value,
    parse_service_key,
    sealed_slots,
)
from ipop.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from ipop.identity import (
    CERT_REASONS,
    CaKeyTrust,
    CaTrust,
    CertificateError,
    NodeCertificate,
    cert_serial,
    validate_hostname,
)
from ipop.types import NodeId

MAC_BYTES = 6
MAX_USER_KEY = 64
# Operator keys per member per replica: plenty for ``ipop dht put``, small for a flooder.
USER_QUOTA = 8
# Other networks' CA verifiers one node keeps (LRU), and certificates each caches: a replica
# serves every network of its overlay; the bounds cap memory near 8,192 certificates (~8 MB)
# whatever namespaces records name. A verifier evicted costs one Ed25519 check per record.
FOREIGN_NAMESPACES = 64
FOREIGN_CERT_CACHE = 128


class Kind(enum.Enum):
    IP = "ip"
    NAME = "name"
    USER = "user"
    SVC = "svc"


# Every reason the policy refuses a record for (drop counters); certificate reasons included.
POLICY_REASONS = frozenset(
    {
        "record_cert_key_mismatch",  # the certificate is not the signing key's
        "key_bad_namespace",  # no <network>~<52 base32 chars of a CA key> before the kind
        "key_wrong_ca",  # the certificate was not signed by the CA key the namespace names
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


class CertVerifier(Protocol):
    """What checks an owner's certificate: a member's :class:`CaTrust` or a
    :class:`CaKeyTrust` made from a namespace."""

    @property
    def network(self) -> str: ...

    def verify(self, der: bytes | bytearray | memoryview, *, now: float) -> NodeCertificate: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A record the policy allows: its owner's verified certificate, the key's kind and
    namespace (quotas count per owner, namespace and kind)."""

    cert: NodeCertificate
    kind: Kind
    namespace: str


def _refuse(reason: str, detail: str = "") -> RemoteProtocolError:
    if reason not in POLICY_REASONS:
        raise LocalProtocolError(f"unknown DHT policy reason {reason!r}")
    return RemoteProtocolError(reason, detail)


def split_key(key: str) -> tuple[str, Kind, str]:
    """(namespace, kind, rest) of a key; RemoteProtocolError(reason) otherwise.

    The namespace's own syntax is :func:`ipop.dht.record.parse_namespace`'s to check.
    """
    namespace, sep, tail = key.partition(":")
    if not sep:
        raise _refuse("key_bad_namespace", key[:64])
    kind_s, sep, rest = tail.partition(":")
    try:
        kind = Kind(kind_s)
    except ValueError:
        raise _refuse("key_unknown_kind", kind_s[:16]) from None
    if not sep:
        raise _refuse("key_unknown_kind", "no ':' after the kind")
    return namespace, kind, rest


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
    """The rules for records of every namespace (module docstring); one per DHT node.

    ``trust``: this node's own network (its namespace gets every check, revocation
    included); None: a node of no network (overlay-only), to which every namespace is foreign.
    A node in several networks adds the others with :meth:`add_network`: theirs get every
    check too.
    """

    __slots__ = (
        "_foreign",
        "_own",
        "_revoked",
        "namespace",
        "network",
        "readable",
        "subnet",
        "trust",
    )

    def __init__(
        self,
        trust: CaTrust | None,
        *,
        subnet: IPv4Network | None = None,
        revoked: Callable[[bytes], frozenset[int]] | None = None,
        readable: str | None = None,
    ) -> None:
        """``revoked``: the serials another network's CA (by raw key) has revoked, as far as
        this node knows (:meth:`ipop.revocation.NetworkCrls.revoked`); None: unknown.
        ``readable``: the namespace any node of the overlay may read (its CA is the
        overlay's); None: every namespace needs a member's proof."""
        self.trust = trust
        self._revoked = revoked
        self.readable = readable
        self.network = trust.network if trust is not None else None
        self.namespace = namespace_of(trust) if trust is not None else None
        self.subnet = subnet
        self._foreign: OrderedDict[str, CaKeyTrust] = OrderedDict()
        # Our other networks (a daemon in several): namespace -> (their trust, their subnet).
        self._own: dict[str, tuple[CaTrust, IPv4Network | None]] = {}

    def add_network(self, trust: CaTrust, *, subnet: IPv4Network | None) -> None:
        """One more network of ours: its namespace is checked as our own is."""
        self._own[namespace_of(trust)] = (trust, subnet)

    def verifier(self, namespace: str) -> tuple[CertVerifier, IPv4Network | None]:
        """Who checks certificates of ``namespace``, and its subnet (None: unknown here)."""
        if namespace == self.namespace and self.trust is not None:
            return self.trust, self.subnet
        own = self._own.get(namespace)
        if own is not None:
            return own
        held = self._foreign.get(namespace)
        if held is not None:
            self._foreign.move_to_end(namespace)
            return held, None
        try:
            network, ca_public_raw = parse_namespace(namespace)
        except ValueError as exc:
            raise _refuse("key_bad_namespace", str(exc)) from None
        try:
            held = CaKeyTrust(network, ca_public_raw, cache_size=FOREIGN_CERT_CACHE)
        except LocalProtocolError:
            raise _refuse("key_bad_namespace", "not an Ed25519 key") from None
        if len(self._foreign) >= FOREIGN_NAMESPACES:
            self._foreign.popitem(last=False)
        self._foreign[namespace] = held
        return held, None

    def admit(self, record: Record, *, now: float, opened: bool = False) -> Admitted:
        """Raise RemoteProtocolError (reason in :data:`POLICY_REASONS`) unless allowed.

        The signature is :func:`ipop.dht.record.check_record`'s business; call both. A sealed
        record (:mod:`ipop.dht.seal`) gets the checks its stored form allows; ``opened``: the
        plain view of one (:meth:`ipop.dht.seal.RecordSeal.open`), whose stored form passed
        them: every other rule, but its service slot was chosen from the blinded name.
        """
        namespace, kind, rest = split_key(record.key)
        cert, subnet = self._certified(namespace, record.cert, now)
        if cert.public_key_raw != bytes(record.owner_pub):
            raise _refuse("record_cert_key_mismatch")
        if rest.startswith(SEALED) and not opened:
            self._check_sealed(record, kind, rest[len(SEALED) :], cert)
        elif kind is Kind.IP:
            self._check_ip(record, rest, cert, subnet)
        elif kind is Kind.NAME:
            self._check_name(record, rest, cert, subnet)
        elif kind is Kind.SVC:
            self._check_service(record, rest, subnet, slots=not opened)
        elif not 1 <= len(rest) <= MAX_USER_KEY or not rest.isascii() or not rest.isprintable():
            raise _refuse("key_bad_user", rest[:16])
        return Admitted(cert, kind, namespace)

    def may_read(self, asker: NodeId, key: str, proof: bytes, *, now: float) -> bool:
        """May node ``asker`` see the record at ``key``? Yes for the ``readable`` namespace;
        else only if ``proof`` is ``asker``'s own certificate in the key's namespace, valid
        and not revoked, as an owner's would have to be (module docstring, "Readers")."""
        try:
            namespace = split_key(key)[0]
        except RemoteProtocolError:
            return False
        if namespace == self.readable:
            return True
        if not proof:
            return False
        try:
            cert, _ = self._certified(namespace, proof, now)
        except RemoteProtocolError:
            return False
        return cert.node_id == asker

    def _certified(
        self, namespace: str, der: bytes, now: float
    ) -> tuple[NodeCertificate, IPv4Network | None]:
        """The certificate ``der`` as ``namespace``'s CA vouches for it, and the namespace's
        subnet; RemoteProtocolError (reason in :data:`POLICY_REASONS`) if it does not."""
        verifier, subnet = self.verifier(namespace)
        try:
            cert = verifier.verify(der, now=now)
        except CertificateError as exc:
            # Not signed by the key the namespace names: whoever signed it, not this network.
            reason = "key_wrong_ca" if exc.reason == "cert_bad_signature" else exc.reason
            raise _refuse(reason, exc.detail) from None
        if self._revoked is not None and type(verifier) is CaKeyTrust:
            serials = self._revoked(verifier.public_key_raw)
            if serials and cert_serial(cert) in serials:
                raise _refuse("cert_revoked", f"{cert.name}: on its network's CRL")
        return cert, subnet

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

    def _check_ip(
        self, record: Record, rest: str, cert: NodeCertificate, subnet: IPv4Network | None
    ) -> None:
        try:
            addr = IPv4Address(rest)
        except (AddressValueError, ValueError):
            raise _refuse("key_bad_ip", rest[:32]) from None
        if str(addr) != rest:
            # One address, one key: "100.064.0.1" must not be a second key for 100.64.0.1.
            raise _refuse("key_bad_ip", rest[:32])
        if subnet is not None and addr not in subnet:
            raise _refuse("key_ip_outside_subnet", rest)
        if not record.tombstone:
            _check_ip_value(len(record.value), cert)

    def _check_name(
        self, record: Record, rest: str, cert: NodeCertificate, subnet: IPv4Network | None
    ) -> None:
        if not is_name(rest):
            raise _refuse("key_bad_name", rest[:64])
        _check_name_owner(rest, cert)
        if record.tombstone:
            return
        if len(record.value) != 4:
            raise _refuse("value_size", f"name value {len(record.value)} bytes")
        if subnet is not None and IPv4Address(record.value) not in subnet:
            raise _refuse("value_outside_subnet")

    def _check_service(
        self, record: Record, rest: str, subnet: IPv4Network | None, *, slots: bool = True
    ) -> None:
        name, proto, slot = parse_service_key(rest)
        if slots and slot not in allowed_slots(record.owner, name, proto):
            raise _refuse("service_slot_not_owner", rest[:32])
        if record.tombstone:
            return
        value = decode_value(record.value)
        if subnet is not None and value.addr not in subnet:
            raise _refuse("value_outside_subnet")

    def _check_sealed(self, record: Record, kind: Kind, body: str, cert: NodeCertificate) -> None:
        """What a replica can check of a sealed record (:mod:`ipop.dht.seal`): the blinded
        key's syntax, whose name a hostname is, which router a LAN host is under, whose
        slot a service's is, and the value's length."""
        size = len(record.value) - SEAL_OVERHEAD
        if kind is Kind.IP:
            if not is_tag(body):
                raise _refuse("key_bad_ip", body[:32])
            if not record.tombstone:
                _check_ip_value(size, cert)
        elif kind is Kind.NAME:
            # A hostname as its certificate shows it, or <tag>.<router hostname>.
            host, dot, under = body.partition(".")
            if not (is_tag(host) and is_name(f"x.{under}") if dot else is_name(host)):
                raise _refuse("key_bad_name", body[:64])
            _check_name_owner(body, cert)
            if not record.tombstone and size != 4:
                raise _refuse("value_size", f"sealed name value {len(record.value)} bytes")
        elif kind is Kind.SVC:
            tag, _, slot_s = body.rpartition(".")
            if not is_tag(tag) or not slot_s.isdigit() or str(int(slot_s)) != slot_s:
                raise _refuse("key_bad_service", body[:32])
            if int(slot_s) not in sealed_slots(record.owner, tag):
                raise _refuse("service_slot_not_owner", body[:32])
            if not record.tombstone and size < MIN_VALUE_BYTES:
                raise _refuse("value_size", f"sealed service value {len(record.value)} bytes")
        else:
            if not is_tag(body):
                raise _refuse("key_bad_user", body[:16])
            if not record.tombstone and size < 0:
                raise _refuse("value_size", f"sealed user value {len(record.value)} bytes")


def _check_ip_value(size: int, cert: NodeCertificate) -> None:
    """An ip record's value of ``size`` bytes (opened, for a sealed one): empty (the node
    itself) or a LAN host's MAC, which only a router may claim."""
    if size == MAC_BYTES:
        if not cert.is_router:
            raise _refuse("value_not_router")
    elif size:
        raise _refuse("value_size", f"ip value {size} bytes")


def _check_name_owner(name: str, cert: NodeCertificate) -> None:
    """Whose ``name`` is: a hostname, the member's whose certificate carries it; a LAN host
    name ``<host>.<router hostname>`` (its host label plain or blinded), only that router's."""
    _, dot, under = name.partition(".")
    if dot:
        if not cert.is_router or cert.hostname != under:
            raise _refuse("name_not_router", name)
    elif cert.hostname != name:
        raise _refuse("name_not_certified", name)


__all__ = [
    "FOREIGN_CERT_CACHE",
    "FOREIGN_NAMESPACES",
    "POLICY_REASONS",
    "USER_QUOTA",
    "Admitted",
    "CertVerifier",
    "Kind",
    "RecordPolicy",
    "is_name",
    "lan_host_name",
    "split_key",
]
