"""Sealed records: a network's DHT keys blinded and values encrypted under its records key.

On a shared overlay a network's records sit on replicas that are no members of it
(overlay-only nodes, other networks' members; issue 17). Their namespace and owner
certificates let those replicas check who may write what (:mod:`ipop.dht.policy`), but a
record's key and value are the network's own business: who holds which address, a LAN host's
name, a service's name, port and TXT strings, an operator's keys. Members of a network on a
shared overlay therefore hold a 32-byte **records key** (``records_key`` in their bundle,
derived from the network CA's private key for :data:`RECORDS_KEY_PURPOSE`, so ``ipop-config``
keeps no new secret), and seal every record of their network with it (:class:`RecordSeal`):

    plain key                          stored key                         stored value
    <ns>:ip:<addr>                     <ns>:ip:~<tag>                     sealed MAC or b""
    <ns>:name:<hostname>               <ns>:name:~<hostname>              sealed 4-byte IPv4
    <ns>:name:<host>.<router>          <ns>:name:~<tag>.<router>          sealed 4-byte IPv4
    <ns>:user:<key>                    <ns>:user:~<tag>                   sealed bytes
    <ns>:svc:<name>.<proto>.<slot>     <ns>:svc:~<tag>.<slot>             sealed service value

``tag``: 26 base32 characters (128 bits) of a keyed BLAKE2b of the plain ``<kind>:<rest>``;
only members can compute it, so a replica cannot tell which address, LAN host, service or
operator key a record is about, nor test guesses. What stays readable is what replicas need to
check a record and what its owner's certificate shows anyway: the namespace, the kind, the
owner (node id and certificate: its node name and hostname), a hostname's own name record
being that hostname's, the router a LAN host name is under, a service slot's number, and the
value's length (an ip record's says whether it carries a router's MAC). The owner's
certificate must travel in the clear: without it a stranger replica could not refuse a
non-member's write, which create-if-absent (address allocation) depends on.

Value sealing: ChaCha20-Poly1305 under a key derived from the records key; the nonce is 12
bytes of a keyed BLAKE2b of (stored key, owner, plaintext), so sealing is deterministic (the
simulator's runs repeat, no randomness is needed) and a nonce repeats only with its plaintext
(which then repeats its ciphertext: equality is all it shows). The stored key and the owner
are the associated data: a sealed value means nothing under another key or owner. Layout:
``nonce (12) | ciphertext | tag (16)`` (:data:`SEAL_OVERHEAD` bytes more than the plaintext).

Sizes: 28 bytes more value and a blinded key (an ip key 12 bytes longer, a LAN host's or a
service's key no longer than its longest plain one): a name record of node "node1" with
hostname "alice" in network "testnet" is 626 bytes sealed (597 plain). At every length limit
at once (63-byte node name and hostname) a plain node's sealed name record fits while the
network name is at most 50 bytes (56 plain); signing refuses a longer one, as for plain
records (:mod:`ipop.dht.record`).

Members read through :meth:`ipop.dht.service.DhtService.get`, which opens what it read and
checks the plain view with every rule of the policy (:meth:`RecordPolicy.admit
<ipop.dht.policy.RecordPolicy.admit>` with ``opened=True``): the rules a replica cannot apply
to a sealed record (an address in the subnet, in canonical form; a name's value in the subnet;
a LAN host name's label) are applied by every reader. A member can still write a record
readers then disbelieve (a blinded key it made up), within its quota, as before.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ipop.dht.record import MAX_VALUE_BYTES, Record
from ipop.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "RECORDS_KEY_BYTES",
    "RECORDS_KEY_PURPOSE",
    "SEALED",
    "SEAL_OVERHEAD",
    "TAG_CHARS",
    "RecordSeal",
    "is_tag",
]

RECORDS_KEY_BYTES = 32
# What a network's records key is derived for from its CA's key (NetworkCA.derived_secret).
RECORDS_KEY_PURPOSE = b"ipop records key"
# A stored key's rest starts with it when the record is sealed: no plain rest can (addresses,
# hostnames and service names never do; plain user keys that would are refused).
SEALED = "~"
_NONCE_BYTES = 12
SEAL_OVERHEAD = _NONCE_BYTES + 16
_TAG_BYTES = 16
TAG_CHARS = 26  # ceil(16 * 8 / 5)
_TAG_RE = re.compile(r"[a-z2-7]{26}")


def is_tag(text: str) -> bool:
    """Whether ``text`` is a blinded name's syntax (what replicas can check of it)."""
    return _TAG_RE.fullmatch(text) is not None


class RecordSeal:
    """One network's records key at work: stored keys for plain ones, sealing and opening."""

    __slots__ = ("_aead", "_blind", "_nonce")

    def __init__(self, records_key: bytes) -> None:
        if len(records_key) != RECORDS_KEY_BYTES:
            raise LocalProtocolError(f"a records key is {RECORDS_KEY_BYTES} bytes")
        self._blind = _derive(records_key, b"blind")
        self._nonce = _derive(records_key, b"nonce")
        self._aead = ChaCha20Poly1305(_derive(records_key, b"aead"))

    def _tag(self, plain: str) -> str:
        digest = hashlib.blake2b(plain.encode(), key=self._blind, digest_size=_TAG_BYTES).digest()
        return base64.b32encode(digest).decode("ascii").rstrip("=").lower()

    def stored_key(self, key: str) -> str:
        """The key a plain ``<namespace>:<kind>:<rest>`` is stored under (module table).
        LocalProtocolError for a key of no kind this module knows."""
        namespace, _, tail = key.partition(":")
        kind, _, rest = tail.partition(":")
        if kind == "name":
            host, dot, router = rest.partition(".")
            body = f"{self._tag(f'name:{rest}')}.{router}" if dot else host
        elif kind == "svc":
            service, _, slot = rest.rpartition(".")
            body = f"{self._tag(f'svc:{service}')}.{slot}"
        elif kind in ("ip", "user"):
            body = self._tag(f"{kind}:{rest}")
        else:
            raise LocalProtocolError(f"no sealed form for a key of kind {kind!r}")
        return f"{namespace}:{kind}:{SEALED}{body}"

    def service_id(self, name: str, proto: str) -> str:
        """What a sealed service key's slots are chosen from (:func:`ipop.dht.srv.sealed_slots`)."""
        return self._tag(f"svc:{name}.{proto}")

    def seal(self, stored_key: str, owner: bytes, value: bytes) -> bytes:
        """``value`` sealed for ``stored_key`` and ``owner`` (a node id's 20 bytes)."""
        if len(value) + SEAL_OVERHEAD > MAX_VALUE_BYTES:
            raise LocalProtocolError(
                f"a sealed value holds at most {MAX_VALUE_BYTES - SEAL_OVERHEAD} bytes"
            )
        aad = _aad(stored_key, owner)
        nonce = hashlib.blake2b(aad + value, key=self._nonce, digest_size=_NONCE_BYTES).digest()
        return nonce + self._aead.encrypt(nonce, value, aad)

    def open(self, record: Record, plain_key: str) -> Record:
        """The plain view of a sealed ``record`` read for ``plain_key``: its key and opened
        value (a view: its signature is the stored record's, over the stored bytes).
        RemoteProtocolError("sealed_value") if the value does not open."""
        if record.tombstone:
            return dataclasses.replace(record, key=plain_key)
        sealed = record.value
        if len(sealed) < SEAL_OVERHEAD:
            raise RemoteProtocolError("sealed_value", f"{len(sealed)} bytes")
        try:
            aad = _aad(record.key, record.owner.to_bytes())
            value = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise RemoteProtocolError("sealed_value", "not under this records key") from None
        return dataclasses.replace(record, key=plain_key, value=value)


def _derive(records_key: bytes, purpose: bytes) -> bytes:
    return hashlib.blake2b(purpose, key=records_key, digest_size=32, person=b"ipop-seal").digest()


def _aad(stored_key: str, owner: bytes) -> bytes:
    encoded = stored_key.encode()
    return len(encoded).to_bytes(2, "big") + encoded + owner
