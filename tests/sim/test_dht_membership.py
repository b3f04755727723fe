"""DHT records bound to membership (issue 13, finding 3), over the fake overlay on virtual time.

Mallory is a member (one valid certificate, hostname "mallory") running a modified build: she
signs records with keys the CA never certified, under other networks' keys, for hostnames not
hers, and claims several addresses. None of it may stick.
"""

from __future__ import annotations

import asyncio
import random
from ipaddress import IPv4Address, IPv4Network

import pytest

from ipop.dht.names import lan_host_name, lookup_name, register_name
from ipop.dht.policy import Kind
from ipop.dht.record import (
    Record,
    StoreOutcome,
    ip_key,
    key_id,
    name_key,
    namespace_of,
    user_key,
)
from ipop.dht.service import DhtConfig, DhtService
from ipop.errors import LocalProtocolError
from ipop.testing.fake_overlay import (
    TESTNET_NS,
    DhtCluster,
    live_owners,
    offer_everywhere,
    run_cluster,
)
from ipop.testing.identities import make_network, seeded_identity

SUBNET = IPv4Network("100.64.5.0/24")
ALICE, MALLORY, ROUTER = 1, 3, 5
NAMES = {ALICE: "alice-laptop", MALLORY: "mallory", ROUTER: "lab"}
CONFIG = DhtConfig(subnet=SUBNET)


def honest(c: DhtCluster, mallory: DhtService) -> list[DhtService]:
    return [svc for svc in c.nodes if svc is not mallory]


def test_records_of_uncertified_keys_store_nothing() -> None:
    """A member relays records owned by 20 keys it made itself: no replica keeps one."""

    async def body(c: DhtCluster) -> None:
        mallory = c.nodes[MALLORY]
        rogue_ca = make_network("testnet", now=asyncio.get_running_loop().time())
        now = asyncio.get_running_loop().time()
        keys = random.Random(6)  # ring positions from a seed: reproducible runs
        sybils = [seeded_identity(rogue_ca, f"sybil{i}", keys, now=now) for i in range(20)]
        for i, sybil in enumerate(sybils):
            for key, value in (
                (ip_key(TESTNET_NS, IPv4Address("100.64.5.0") + 10 + i), b""),
                (f"{TESTNET_NS}:user:s{i}", b"x" * 200),
            ):
                record = Record.sign(sybil, key, value, seq=1, expires_at=now + 600)
                assert set(await offer_everywhere(mallory, record)) == {StoreOutcome.INVALID}
        sybil_ids = {s.node_id for s in sybils}
        held = {
            r.owner
            for svc in c.nodes
            for kid, _ in svc.storage
            if (r := svc.storage.lookup(kid)) is not None
        }
        assert not held & sybil_ids
        assert not any(
            svc.storage.lookup(key_id(f"{TESTNET_NS}:user:s{i}"))
            for svc in c.nodes
            for i in range(20)
        )
        assert sum(svc.drops["store_key_wrong_ca"] for svc in c.nodes) >= 20 * 2 * 5

    run_cluster(body, n=16, hostnames=NAMES, config=CONFIG)


def test_readers_disbelieve_uncertified_records_a_replica_returns() -> None:
    """Replicas that lie (serve a record they should have refused) do not fool a reader."""

    async def body(c: DhtCluster) -> None:
        now = asyncio.get_running_loop().time()
        rogue_ca = make_network("testnet", now=now)
        sybil = seeded_identity(rogue_ca, "sybil", random.Random(7), now=now, hostname="bob")
        key = name_key(TESTNET_NS, "bob")
        forged = Record.sign(sybil, key, bytes((100, 64, 5, 66)), seq=1, expires_at=now + 600)
        reader = c.nodes[0]
        for peer in await reader.replica_set(forged.key_id):
            svc = next(s for s in c.nodes if s.node_id == peer)
            if svc is not reader:
                # Bypasses offer(): what a replica running a modified build would serve.
                svc.storage._put(forged.key_id, forged, (forged.owner, TESTNET_NS, Kind.NAME))
        assert await reader.get(key) is None
        assert reader.drops["fetched_key_wrong_ca"] >= 5

    run_cluster(body, n=12, hostnames=NAMES, config=CONFIG)


def test_keys_of_other_networks_and_unknown_kinds_are_refused() -> None:
    async def body(c: DhtCluster) -> None:
        mallory = c.nodes[MALLORY]
        now = asyncio.get_running_loop().time()
        # Her own build would not send these; a modified one does.
        # Another network's namespace (a CA that never certified her), keys of no namespace.
        other = namespace_of(make_network("othernet", now=now).trust)
        keys = (ip_key(other, "100.64.5.7"), "othernet:name:mallory", f"{TESTNET_NS}:rec:1")
        for key in keys:
            record = Record.sign(mallory.identity, key, b"", seq=1, expires_at=now + 600)
            assert set(await offer_everywhere(mallory, record)) == {StoreOutcome.INVALID}
            assert live_owners(c, key) <= {mallory.node_id}  # at most her own replica
        assert not await mallory.put(user_key(other, "k"), b"v", 600)
        assert not await mallory.put("othernet:user:k", b"v", 600)
        drops = sum((svc.drops for svc in honest(c, mallory)), start=type(mallory.drops)())
        assert drops["store_key_wrong_ca"] >= 5
        assert drops["store_key_bad_namespace"] >= 5
        assert drops["store_key_unknown_kind"] >= 5
        with pytest.raises(LocalProtocolError):  # counting a reason not in the list is a bug
            mallory.replica_calls.drop("fetched", "made_up")

    run_cluster(body, n=12, hostnames=NAMES, config=CONFIG)


def test_a_member_cannot_squat_another_members_hostname() -> None:
    async def body(c: DhtCluster) -> None:
        alice, mallory, bob = c.nodes[ALICE], c.nodes[MALLORY], c.nodes[0]
        m_ip = IPv4Address("100.64.5.20")
        assert await mallory.create(ip_key(TESTNET_NS, m_ip), b"", 600)
        # Mallory gets there first (before, the first claim won the name) ...
        assert not await register_name(mallory, TESTNET_NS, "alice-laptop", m_ip)
        now = asyncio.get_running_loop().time()
        key = name_key(TESTNET_NS, "alice-laptop")
        forged = Record.sign(mallory.identity, key, m_ip.packed, seq=1, expires_at=now + 600)
        assert set(await offer_everywhere(mallory, forged)) == {StoreOutcome.INVALID}
        # ... and Alice still gets her name.
        a_ip = IPv4Address("100.64.5.30")
        assert await alice.create(ip_key(TESTNET_NS, a_ip), b"", 600)
        assert await register_name(alice, TESTNET_NS, "alice-laptop", a_ip)
        assert await lookup_name(bob, TESTNET_NS, "alice-laptop", SUBNET) == a_ip
        # Her own name works as before.
        assert await register_name(mallory, TESTNET_NS, "mallory", m_ip)
        assert await lookup_name(bob, TESTNET_NS, "mallory", SUBNET) == m_ip

    run_cluster(body, n=12, hostnames=NAMES, config=CONFIG)


def test_a_member_holds_one_address() -> None:
    """In a network of R nodes every node is a replica of every key: one address per member."""

    async def body(c: DhtCluster) -> None:
        mallory, reader = c.nodes[MALLORY], c.nodes[0]
        addrs = [IPv4Address("100.64.5.0") + 10 + i for i in range(5)]
        for addr in addrs:
            await mallory.create(ip_key(TESTNET_NS, addr), b"", 600)
        held = [a for a in addrs if mallory.node_id in live_owners(c, ip_key(TESTNET_NS, a))]
        assert held == [addrs[-1]]  # the latest claim; the others are gone everywhere
        for addr in addrs[:-1]:
            assert await reader.get(ip_key(TESTNET_NS, addr)) is None
        assert all(svc.storage.held_by(mallory.node_id) <= 1 for svc in c.nodes)
        # The freed addresses are anyone's.
        assert await reader.create(ip_key(TESTNET_NS, addrs[0]), b"", 600)
        # Outside the subnet nothing is held at all.
        assert not await mallory.create(ip_key(TESTNET_NS, IPv4Address("100.64.6.1")), b"", 600)

    run_cluster(body, n=8, hostnames=NAMES, config=CONFIG)


def test_a_routers_lan_hosts_are_named_under_it_and_never_take_a_members_name() -> None:
    async def body(c: DhtCluster) -> None:
        router, alice, reader = c.nodes[ROUTER], c.nodes[ALICE], c.nodes[0]
        mac = bytes.fromhex("020000000001")
        printer_ip = IPv4Address("100.64.5.40")
        assert await router.create(ip_key(TESTNET_NS, printer_ip), mac, 600)
        # A DHCP client calling itself "alice-laptop" cannot take Alice's name ...
        assert not await register_name(router, TESTNET_NS, "alice-laptop", printer_ip)
        # ... nor anything but <host>.<router hostname>.
        assert not await register_name(router, TESTNET_NS, "printer.alice-laptop", printer_ip)
        printer = lan_host_name("printer", "lab")
        assert await register_name(router, TESTNET_NS, printer, printer_ip)
        assert await lookup_name(reader, TESTNET_NS, "printer.lab", SUBNET) == printer_ip
        a_ip = IPv4Address("100.64.5.30")
        assert await alice.create(ip_key(TESTNET_NS, a_ip), b"", 600)
        assert await register_name(alice, TESTNET_NS, "alice-laptop", a_ip)
        assert await lookup_name(reader, TESTNET_NS, "alice-laptop", SUBNET) == a_ip
        # A router holds at most its certificate's number of LAN hosts (2 here) + itself.
        rng = random.Random(5)
        for i in range(6):
            addr = IPv4Address("100.64.5.100") + i
            await router.create(ip_key(TESTNET_NS, addr), rng.randbytes(6), 600)
        assert all(svc.storage.held_by(router.node_id, Kind.IP) <= 1 + 2 for svc in c.nodes)
        assert max(svc.storage.held_by(router.node_id, Kind.IP) for svc in c.nodes) == 3

    run_cluster(body, n=8, hostnames=NAMES, routers={ROUTER: 2}, config=CONFIG)


def test_record_time_is_the_unix_clock_not_the_loops() -> None:
    """A daemon's loop time is the host's monotonic clock (its uptime, different on every
    host); leases and certificates must use UNIX time or nothing verifies."""
    uptime = 1000.0  # what time.monotonic() reads on a host up for 17 minutes

    async def body(c: DhtCluster) -> None:
        loop = asyncio.get_running_loop()
        alice, reader = c.nodes[ALICE], c.nodes[0]
        addr = IPv4Address("100.64.5.9")
        assert await alice.create(ip_key(TESTNET_NS, addr), b"", 600)
        record = alice.owned()[ip_key(TESTNET_NS, addr)]
        assert abs(record.expires_at - (loop.time() + 600)) < 5  # UNIX time, not uptime + 600
        got = await reader.get(ip_key(TESTNET_NS, addr))
        assert got is not None and got.owner == alice.node_id

    def unix_now() -> float:
        return asyncio.get_running_loop().time()

    # The cluster's loop runs at the simulator's epoch (UNIX-like): services handed a clock
    # that reads uptime instead must refuse everything, as a daemon on its loop's time did.
    run_cluster(body, n=10, hostnames=NAMES, config=CONFIG, clock=unix_now)

    async def on_uptime(c: DhtCluster) -> None:
        alice = c.nodes[ALICE]
        assert not await alice.create(ip_key(TESTNET_NS, IPv4Address("100.64.5.9")), b"", 600)
        assert alice.drops["own_cert_not_yet_valid"] == 1

    run_cluster(on_uptime, n=10, hostnames=NAMES, config=CONFIG, clock=lambda: uptime)
