"""One virtual network a daemon serves: :class:`MemberSide` (issue 17, item 2).

Owns, for one network of a daemon that is a member of several: its network certificate's
identity, its TAP (its own name), its address claim (:class:`ipop.aio.address.AddressKeeper`,
with a state file of its own), its hostname, ARP on its TAP, DNS and DHCP on its gateway for
its suffix (the composition root's :class:`ipop.aio.local.LocalServices`, built for the side as
for a daemon: it reads ``gateway``, ``subnet``, ``suffix``, ``tap``, ``write_frame`` and
``dns_lookup``), and its data plane (:class:`ipop.aio.dataplane.DataPlane` with that network's
tag, fed by the daemon's primary plane). Lookups go to the one DHT under the network's
namespace; its records are signed with its certificate (:meth:`ipop.aio.stack.Node.add_network`).

The daemon's first network (its ``bundle``) is served by the daemon itself as ever, through
the same functions below (:func:`owner_of`, :func:`resolve_in`, :func:`dns_answer`,
:func:`local_frame`, :func:`take_address`); a daemon of one network has no MemberSide.
The networks' ranges may overlap, and the host routes by destination: a MemberSide whose
range overlaps an earlier network's puts its TAP routes in a table of its own
(``route_table``, :func:`route_tables`), which rules send its replies (from its address) and
what is sent out of its TAP to (:meth:`ipop.aio.tap.Tap.set_address`); the first network
keeps the main table, and so does a network whose range overlaps none before it (then a plain
``ping`` to one of its addresses finds its TAP, as a user of two networks expects). Left for
a later slice: the other networks' split DNS with the host's resolver (their names are asked
of their gateway from their address, or out of their TAP). The daemon's addresses in its
networks are kept apart (each claim avoids the ones before it): with one address in two
networks, its "from" rule would take both's replies.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Final, Protocol

from ipop.aio.address import AddressKeeper
from ipop.aio.dataplane import DataPlane
from ipop.aio.local import LocalServices
from ipop.aio.settings import DaemonSettings
from ipop.aio.stack import Node
from ipop.aio.tap import DEFAULT_TAP_MTU, Tap
from ipop.bundle import Bundle, Membership
from ipop.dht.names import lookup_name
from ipop.dht.publish import list_services
from ipop.dht.record import Record, ip_key, namespace_of
from ipop.dht.srv import PROTOS, ServiceValue
from ipop.errors import ConfigError
from ipop.identity import NodeIdentity
from ipop.status import NetworkStatus
from ipop.types import NodeId
from ipop.vnet.arp import VIRTUAL_MAC, ArpResponder
from ipop.vnet.networks import network_tag
from ipop.vnet.packet import ETH_P_ARP

__all__ = [
    "Addressed",
    "MemberSide",
    "Naming",
    "Served",
    "check_same_overlay",
    "dns_answer",
    "local_frame",
    "owner_of",
    "resolve_in",
    "take_address",
]

log = logging.getLogger("ipopd")

_ARP_TYPE = ETH_P_ARP.to_bytes(2, "big")


# The first routing table (and rule priority) a further network's TAP routes may go to
# (route_tables): below the kernel's main-table rule (32766), above its local one (0);
# seldom used by others.
FIRST_SIDE_TABLE: Final = 201


@dataclass(frozen=True, slots=True)
class Served:
    """A network a member daemon serves, as its network parts read it."""

    network: str
    namespace: str
    subnet: IPv4Network
    gateway: IPv4Address
    suffix: str
    # Its tag on tagged IP (ipop.vnet.networks): taken from members in several networks.
    tag: bytes

    @classmethod
    def of(cls, membership: Membership | None, suffix: str) -> Served | None:
        if membership is None:
            return None
        subnet = membership.subnet
        return cls(
            membership.network,
            namespace_of(membership.trust),
            subnet,
            IPv4Address(int(subnet.network_address) + 1),
            suffix,
            network_tag(membership.trust.public_key_raw),
        )


def route_tables(first: IPv4Network, others: Sequence[IPv4Network]) -> list[int | None]:
    """Where each further network's TAP routes go: the main table (None) when its range
    overlaps neither the first network's nor an earlier one's, else table ``FIRST_SIDE_TABLE
    + i`` (reached by its rules only: a destination in two ranges can mean either)."""
    tables: list[int | None] = []
    seen = [first]
    for i, subnet in enumerate(others):
        overlaps = any(subnet.overlaps(s) for s in seen)
        tables.append(FIRST_SIDE_TABLE + i if overlaps else None)
        seen.append(subnet)
    return tables


def check_same_overlay(first: Bundle, others: Sequence[tuple[str, Bundle]]) -> None:
    """ConfigError unless every bundle of ``others`` (config key, bundle) is a member bundle
    on ``first``'s overlay, with its node key, of a network of its own."""
    seen = {first.network: "bundle"}
    for key, bundle in others:
        if not bundle.is_member:
            raise ConfigError(
                key, "is an overlay-only bundle", "name a member bundle of a network here"
            )
        if bundle.overlay_trust.public_key_raw != first.overlay_trust.public_key_raw:
            raise ConfigError(
                key,
                f"is on overlay {bundle.overlay_name!r} of another CA than the first bundle's "
                f"overlay {first.overlay_name!r}",
                "one daemon serves networks of ONE overlay: make the network with "
                "'ipop-config init NET --overlay OVERLAY' on the first bundle's overlay",
            )
        if bundle.node_id != first.node_id:
            raise ConfigError(
                key,
                "certifies another node key than the first bundle",
                "make the bundle for this node's key: 'ipop-config node NET NAME --key BUNDLE'",
            )
        if bundle.network in seen:
            raise ConfigError(
                key, f"is network {bundle.network!r} again (as {seen[bundle.network]})", "drop it"
            )
        seen[bundle.network] = key


# --- what the daemon's first network and every MemberSide do alike ----------------------------


async def owner_of(node: Node | None, namespace: str, vip: IPv4Address) -> NodeId | None:
    """The holder of ``vip`` in the network of ``namespace``; its certificate is kept by the
    core, so our first IP packet routed to it is sealed end to end."""
    if node is None or node.dht is None:
        return None
    record = await node.dht.get(ip_key(namespace, vip), strict=True)
    if record is None or record.tombstone:
        return None
    node.core.learn_certificate(record.owner, record.cert, now=time.time())
    return record.owner


class Naming(Protocol):
    """What resolves names in one network: the daemon (its first network) or a side."""

    @property
    def node(self) -> Node | None: ...
    @property
    def namespace(self) -> str: ...
    @property
    def subnet(self) -> IPv4Network: ...
    @property
    def suffix(self) -> str: ...
    @property
    def dataplane(self) -> DataPlane | None: ...


def _owner_learner(node: Node, plane: DataPlane | None) -> Callable[[IPv4Address, Record], None]:
    """What a name lookup learns of its address's holder, kept as :func:`owner_of` keeps it:
    the certificate by the core, the owner by the data plane, whose first packet to the
    address then reads the DHT no more (one quorum read fewer before a ``ping NAME``: ~0.1 s
    on a quiet network, seconds in a 32-daemon cold start)."""

    def learned(addr: IPv4Address, holder: Record) -> None:
        node.core.learn_certificate(holder.owner, holder.cert, now=time.time())
        if plane is not None:
            plane.learn_owner(addr, holder.owner)

    return learned


async def resolve_in(side: Naming, name: str) -> IPv4Address | None:
    """A name (with or without the DNS suffix) or a dotted address → vIP, in ``side``'s
    network; what it learns of the address's holder goes to ``side``'s data plane too."""
    name = name.strip().rstrip(".").lower()
    try:
        addr = IPv4Address(name)
    except ValueError:
        pass
    else:
        return addr if addr in side.subnet else None
    dotted = "." + side.suffix
    if name.endswith(dotted):
        name = name[: -len(dotted)]
    node = side.node
    if node is None or node.dht is None:
        return None
    learned = _owner_learner(node, side.dataplane)
    return await lookup_name(node.dht, side.namespace, name, side.subnet, learned=learned)


async def dns_answer(side: Naming, name: str) -> IPv4Address | tuple[ServiceValue, ...] | None:
    """What DNS asks the DHT: a service ``_<name>._<proto>`` (its verified instances) or a
    hostname (its vIP)."""
    service, dot, proto = name.partition(".")
    if dot and service.startswith("_") and proto[1:] in PROTOS:
        node = side.node
        if node is None or node.dht is None:
            return None
        found = await list_services(
            node.dht, side.namespace, service[1:], proto[1:], subnet=side.subnet
        )
        return tuple(ServiceValue(i.addr, i.port, i.txt) for i in found)
    return await resolve_in(side, name)


def local_frame(
    frame: bytes,
    arp: ArpResponder | None,
    services: LocalServices | None,
    write: Callable[[bytes], None],
) -> bool:
    """A frame from a TAP that is not for the overlay: ARP is ours to answer (every ARP frame
    is consumed), DHCP and DNS the services'."""
    if frame[12:14] == _ARP_TYPE:
        assert arp is not None  # the TAP's local frames come here only without a side
        reply = arp.reply(frame)
        if reply is not None:
            write(reply)
        return True
    if services is None:
        return False
    return services.feed(frame, now=time.time())


class Addressed(Protocol):
    """What :func:`take_address` configures: the daemon (its first network) or a side."""

    settings: DaemonSettings
    dataplane: DataPlane | None
    arp: ArpResponder | None
    tap: Tap | None
    services: LocalServices | None
    # The routing table of its TAP's routes (None: the main one; see Tap.set_address).
    route_table: int | None


async def take_address(vip: IPv4Address, served: Served, side: Addressed) -> None:
    """``vip`` is ours in ``served``'s network: ``side``'s data plane delivers it, its ARP
    knows it, its TAP has it (static addressing) or its DHCP hands it out."""
    assert side.dataplane is not None  # made at start, before any claim
    side.dataplane.set_own_ip(vip)
    # ARP for our own vIP: the TAP's kernel answers it; a plugged-in side answers it itself.
    if side.arp is not None:
        side.arp.set_own_ip(vip)
    if side.settings.addressing == "static" and side.tap is not None:
        await side.tap.set_address(vip, served.subnet, served.gateway, table=side.route_table)
    if side.services is not None:
        side.services.address_assigned(vip)


async def open_tap(
    name: str, settings: DaemonSettings, opener: Callable[[str, int], Tap] | None
) -> Tap:
    """The TAP ``name`` at the configured MTU, configured (``opener``: a test's stand-in)."""
    mtu = settings.tap_mtu or DEFAULT_TAP_MTU
    # Offloads asked: the local TCP stream read in 64 kB batches (ipop.aio.dataplane cuts them).
    tap = (
        opener(name, mtu) if opener is not None else Tap(name, mtu=mtu, vnet_hdr=True, offload=True)
    )
    await tap.configure()
    return tap


def network_row(
    served: Served, vip: IPv4Address | None, names: Sequence[str], tap: str
) -> NetworkStatus:
    """One network's row of ``ipop status`` (a daemon in several)."""
    return NetworkStatus(
        network=served.network,
        vip=str(vip) if vip is not None else None,
        names=list(names),
        suffix=served.suffix,
        tap=tap,
    )


# --- the other networks ----------------------------------------------------------------------


class MemberSide:
    """One more network of a daemon (see the module docstring); ``name`` is the network's."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        tap_name: str,
        settings: DaemonSettings,
        rng: random.Random,
        open_tap: Callable[[str, int], Tap] | None = None,
        route_table: int | None = None,
    ) -> None:
        """``route_table``: where its TAP's routes go (the daemon gives each other network
        one of its own: their ranges may overlap the first network's)."""
        self.bundle = bundle
        self.membership = bundle.membership()
        served = Served.of(self.membership, bundle.dns_suffix)
        assert served is not None
        self.served = served
        self.name = served.network
        self.tap_name = tap_name
        self.settings = settings
        # Its own state file: a restart gets each network's address back.
        self.address = AddressKeeper(
            state_dir=settings.state_dir / "networks" / self.name,
            network=self.name,
            namespace=served.namespace,
            subnet=served.subnet,
            suffix=served.suffix,
            lease_s=settings.lease_s,
            rng=rng,
        )
        self.arp: ArpResponder | None = ArpResponder(None, served.subnet)
        self._open_tap = open_tap
        self.route_table = route_table
        self.identity: NodeIdentity | None = None  # ours in this network, from start()
        self.node: Node | None = None
        self.tap: Tap | None = None
        self.dataplane: DataPlane | None = None
        self.services: LocalServices | None = None
        self.vip: IPv4Address | None = None
        self.names: list[str] = []

    # What the local services read of the side they serve, as of a daemon.
    @property
    def network(self) -> str:
        return self.served.network

    @property
    def namespace(self) -> str:
        return self.served.namespace

    @property
    def subnet(self) -> IPv4Network:
        return self.served.subnet

    @property
    def gateway(self) -> IPv4Address:
        return self.served.gateway

    @property
    def suffix(self) -> str:
        return self.served.suffix

    def identify(self, node: Node, *, now: float) -> None:
        """Make this network ours on ``node`` (before it starts): our certificate there signs
        its DHT records and checks its members' (one key: the daemon checked)."""
        _, member = self.bundle.identities(now=now)
        assert member is not None  # a member bundle (check_same_overlay)
        plain = self.bundle.records_plain()
        if plain is not None:
            log.warning("event=records_plain why=%r", plain)
        self.identity = member
        self.node = node
        node.add_network(member, self.subnet)

    async def open(
        self,
        primary: DataPlane,
        services: Callable[[MemberSide], LocalServices] | None,
    ) -> DataPlane:
        """Open the TAP and make this network's data plane, fed by the daemon's ``primary``
        (the caller joins them)."""
        node = self.node
        assert node is not None  # identify() first
        self.tap = await open_tap(self.tap_name, self.settings, self._open_tap)
        plane = DataPlane(
            node,
            primary.udp,
            self.tap.fd,
            subnet=self.subnet,
            lookup_owner=self.lookup_owner,
            local_frame=self.local_frame,
            vnet_hdr=self.tap.vnet_hdr,
            offload=self.tap.offload,
            tag=self.served.tag,
            primary=False,
        )
        plane.set_link_layer(self.tap.mac, VIRTUAL_MAC)
        self.dataplane = plane
        if services is not None:
            self.services = services(self)
        return plane

    async def claim(self, *, avoid: Collection[IPv4Address] = ()) -> None:
        """Claim our address and names in this network (the DHT has joined). ``avoid``: our
        addresses in the daemon's other networks, never this one's too (the host could not
        tell its replies apart: see :meth:`ipop.aio.tap.Tap.set_address`)."""
        node = self.node
        assert node is not None and node.dht is not None and self.dataplane is not None
        vip = await self.address.claim(node.dht, avoid=avoid, hostname=self.bundle.hostname)
        await take_address(vip, self.served, self)
        self.names = await self.address.name(node.dht, vip, self.bundle.hostname)
        self.vip = vip
        log.info(
            "event=ready network=%s tap=%s vip=%s names=%s",
            self.name,
            self.tap_name,
            vip,
            ",".join(self.names),
        )

    async def lookup_owner(self, vip: IPv4Address) -> NodeId | None:
        return await owner_of(self.node, self.namespace, vip)

    async def resolve(self, name: str) -> IPv4Address | None:
        return await resolve_in(self, name)

    async def dns_lookup(self, name: str) -> IPv4Address | tuple[ServiceValue, ...] | None:
        return await dns_answer(self, name)

    def local_frame(self, frame: bytes) -> bool:
        return local_frame(frame, self.arp, self.services, self.write_frame)

    def write_frame(self, frame: bytes) -> None:
        if self.dataplane is not None:
            self.dataplane.write_frame(frame)

    def status(self) -> NetworkStatus:
        """This network's row of ``ipop status``."""
        return network_row(self.served, self.vip, self.names, self.tap_name)

    async def stop(self) -> None:
        """Stop renewing (the records lapse, as the daemon's own) and the services."""
        await self.address.stop()
        if self.services is not None:
            await self.services.close()
        if self.dataplane is not None:
            self.dataplane.close()

    def close(self) -> None:
        if self.tap is not None:
            self.tap.close()
