"""ipop.aio.address.AddressKeeper over a FakeDht in virtual time: the saved address first, a
retried claim, the state file, the lease, the names."""

from __future__ import annotations

import asyncio
import json
import random
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ipop.aio.address import AddressKeeper
from ipop.dht.names import c_name
from ipop.dht.record import ip_key, name_key, namespace_of
from ipop.testing.clock import SIM_EPOCH, run_virtual
from ipop.testing.fake_dht import FakeDht
from ipop.testing.identities import make_network
from ipop.timing import VIP_ALLOC_RETRY_S
from ipop.types import NodeId

SUBNET = IPv4Network("100.64.0.0/10")
SAVED = IPv4Address("100.64.3.7")
ME, OTHER = NodeId(1), NodeId(2)
# A namespace of some CA: the keeper only prefixes keys with it.
NS = namespace_of(make_network("lab-net", now=SIM_EPOCH).trust)


def _keeper(tmp_path: Path) -> AddressKeeper:
    return AddressKeeper(
        state_dir=tmp_path,
        network="lab-net",
        namespace=NS,
        subnet=SUBNET,
        suffix="ipop",
        lease_s=60.0,
        rng=random.Random(4),
    )


class _Converging(FakeDht):
    """Refuses every operation until ``ready_at`` (a DHT that has not converged yet)."""

    def __init__(self, node_id: NodeId, ready_at: float) -> None:
        super().__init__(node_id)
        self.ready_at = ready_at

    async def create(self, key: str, value: bytes, ttl: float) -> bool:
        if asyncio.get_running_loop().time() < self.ready_at:
            raise TimeoutError("no quorum yet")
        return await super().create(key, value, ttl)


def test_the_saved_address_is_claimed_saved_renewed_and_named(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"vip": str(SAVED), "network": "lab-net"}))
    keeper, dht = _keeper(tmp_path), FakeDht(ME)

    async def body() -> tuple[IPv4Address, list[str], int, int]:
        vip = await keeper.claim(dht)
        names = await keeper.name(dht, vip, "alice")
        await asyncio.sleep(100)  # past the renewal point of a 60 s lease
        renewed = dht.calls["renew"]
        await keeper.stop()
        await asyncio.sleep(100)
        return vip, names, renewed, dht.calls["renew"] - renewed

    vip, names, renewed, after_stop = run_virtual(body(), start=SIM_EPOCH)
    assert vip == SAVED == keeper.saved()
    assert dht.records[ip_key(NS, SAVED)][0] == ME
    assert names == [f"{c_name(SAVED)}.ipop", "alice.ipop"] == keeper.names
    assert dht.records[name_key(NS, "alice")] == (ME, SAVED.packed)
    assert renewed >= 2 and after_stop == 0  # both leases renewed, then left to lapse
    assert json.loads((tmp_path / "state.json").read_text()) == {
        "vip": str(SAVED),
        "network": "lab-net",
    }


def test_a_taken_name_is_left_out_and_a_claim_is_retried_until_the_dht_answers(
    tmp_path: Path,
) -> None:
    keeper, dht = _keeper(tmp_path), _Converging(ME, ready_at=SIM_EPOCH + 5)
    dht.hold(name_key(NS, "alice"), OTHER, b"\x64\x40\x00\x09")

    async def body() -> tuple[IPv4Address, list[str], float]:
        loop = asyncio.get_running_loop()
        vip = await keeper.claim(dht)
        took = loop.time() - SIM_EPOCH
        names = await keeper.name(dht, vip, "alice")
        await keeper.stop()
        return vip, names, took

    assert keeper.saved() is None  # no state file yet
    vip, names, took = run_virtual(body(), start=SIM_EPOCH)
    assert 5 <= took <= 5 + VIP_ALLOC_RETRY_S
    assert vip in SUBNET and keeper.saved() == vip
    assert names == [f"{c_name(vip)}.ipop"] and keeper.name_lease is None


def test_a_saved_address_outside_the_subnet_or_garbage_is_not_offered(tmp_path: Path) -> None:
    keeper = _keeper(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"vip": "198.51.100.1"}))
    assert keeper.saved() is None
    (tmp_path / "state.json").write_text("{not json")
    assert keeper.saved() is None


def test_a_fresh_nodes_name_is_claimed_while_its_address_is(tmp_path: Path) -> None:
    """Both creates are in flight at once (they took a cold start's 1-3 s one after the
    other), the name pointing at the address tried first; no third create when it is granted."""
    keeper, dht = _keeper(tmp_path), FakeDht(ME)

    async def body() -> tuple[IPv4Address, list[str], int]:
        dht.gate.clear()
        claim = asyncio.ensure_future(keeper.claim(dht, hostname="alice"))
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight = dht.calls["create"]
        dht.gate.set()
        vip = await claim
        names = await keeper.name(dht, vip, "alice")
        await keeper.stop()
        return vip, names, in_flight

    vip, names, in_flight = run_virtual(body(), start=SIM_EPOCH)
    assert in_flight == 2 and dht.calls["create"] == 2
    assert names == [f"{c_name(vip)}.ipop", "alice.ipop"]
    assert dht.records[name_key(NS, "alice")] == (ME, vip.packed)


def _claim_named(keeper: AddressKeeper, dht: FakeDht) -> tuple[IPv4Address, list[str]]:
    """Claim an address with the hostname "alice", then the names; stop."""

    async def body() -> tuple[IPv4Address, list[str]]:
        vip = await keeper.claim(dht, hostname="alice")
        names = await keeper.name(dht, vip, "alice")
        await keeper.stop()
        return vip, names

    return run_virtual(body(), start=SIM_EPOCH)


class _FirstAddressTaken(FakeDht):
    """The first address asked for is another node's by the time our create arrives."""

    async def create(self, key: str, value: bytes, ttl: float) -> bool:
        if ":ip:" in key and self.calls["create_ip"] == 0:
            self.calls["create_ip"] += 1
            self.hold(key, OTHER)
        return await super().create(key, value, ttl)


def test_a_name_claimed_for_an_address_we_did_not_get_is_moved_to_ours(tmp_path: Path) -> None:
    keeper, dht = _keeper(tmp_path), _FirstAddressTaken(ME)

    vip, names = _claim_named(keeper, dht)
    assert [k for k, (owner, _) in dht.records.items() if owner == OTHER and ":ip:" in k]
    assert names == [f"{c_name(vip)}.ipop", "alice.ipop"]
    assert dht.records[name_key(NS, "alice")] == (ME, vip.packed)  # not the one we lost


def test_an_early_name_claim_the_forming_dht_refused_is_made_again(tmp_path: Path) -> None:
    keeper, dht = _keeper(tmp_path), _Converging(ME, ready_at=SIM_EPOCH + 5)

    vip, names = _claim_named(keeper, dht)
    assert names == [f"{c_name(vip)}.ipop", "alice.ipop"]
    assert dht.records[name_key(NS, "alice")] == (ME, vip.packed)
