"""The authenticated key exchange of a link, as pure functions (no state beyond arguments).

This module owns building and verifying HANDSHAKE_INIT and HANDSHAKE_RESP (layout in
:mod:`ipop.wire.handshake`) and turning a verified exchange into session keys.
:mod:`ipop.link.layer` owns everything stateful: indices, retransmission, freshness per
node, which keys are current.

Security properties, and where each comes from:
- Mutual authentication: each side's certificate is checked against the network CA at ``now``
  and each side signs, with the key the certificate names, a transcript that contains its
  own ephemeral key (the responder's also covers the hash of the whole Init, so the Resp is
  bound to that Init and to the initiator's certificate).
- Forward secrecy: the session keys come from X25519 between two fresh ephemeral keys only.
- Key confirmation: a replayed (old, genuine) Init makes the responder derive keys nobody
  else holds; the responder therefore treats its keys as unconfirmed until the first DATA
  sealed with them arrives (WireGuard's rule), and the endpoint rejects Init timestamps that
  are stale or not newer than the last one it accepted from that node.
- An Init names its responder (its node id, or the endpoint it was sent to) inside what it
  signs, so it cannot be replayed to another node as if meant for it.
- A verified Init costs us one signature check and one certificate check before any state or
  reply exists; nothing unauthenticated is ever answered but with a cookie reply, and
  :mod:`ipop.link.cookie` bounds how many Inits get that far.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ipop.errors import RemoteProtocolError
from ipop.identity import CaTrust, NodeCertificate, NodeIdentity, verify_signature
from ipop.link.crypto import CIPHER_IDS, CIPHER_NAMES, derive_session_keys
from ipop.types import Endpoint, NodeId, Path
from ipop.wire.handshake import (
    HandshakeInit,
    HandshakeResp,
    init_core,
    init_signing_input,
    resp_signing_input,
    transcript_hash,
)

__all__ = [
    "Initiation",
    "SessionKeys",
    "VerifiedInit",
    "check_init_cert",
    "check_init_signature",
    "check_init_time",
    "choose_cipher",
    "make_init",
    "make_resp",
    "public_bytes",
    "verify_init",
    "verify_resp",
]


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte X25519 public key of ``key``."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The outcome of one handshake from one side's point of view."""

    send_key: bytes
    recv_key: bytes
    cipher: str
    local_index: int
    remote_index: int
    is_initiator: bool


@dataclass(slots=True)
class Initiation:
    """Our outstanding handshake toward ``path`` (mutable: retransmissions add to ``sent``).

    One ephemeral key and one index serve every retransmission; the endpoint resends the same
    signed Init core (``sent`` holds them; the mac2 is added per copy from ``cookie``, which a
    responder under load gave us), and a Resp to any core in ``sent`` completes it.
    """

    index: int
    path: Path
    expected: NodeId | None
    ephemeral: X25519PrivateKey
    started_at: float
    deadline: float
    next_retry_at: float
    interval: float
    sent: list[bytes] = field(default_factory=list)
    last_reason: str = "timeout"
    cookie: bytes | None = None
    cookie_resent_at: float = -float("inf")


def make_init(
    identity: NodeIdentity,
    *,
    index: int,
    ephemeral: X25519PrivateKey,
    timestamp_ms: int,
    ciphers: tuple[str, ...],
    responder: NodeId | Endpoint,
) -> bytes:
    """A signed HANDSHAKE_INIT's core (everything but the mac2 the sender adds per copy)."""
    unsigned = HandshakeInit(
        sender_index=index,
        ephemeral=public_bytes(ephemeral),
        timestamp_ms=timestamp_ms,
        ciphers=tuple(CIPHER_IDS[c] for c in ciphers),
        responder=responder,
        cert_der=identity.cert.der,
    )
    body = unsigned.signed_part()
    return body + identity.sign(init_signing_input(body))


@dataclass(frozen=True, slots=True)
class VerifiedInit:
    """An Init whose certificate and signature checked out (freshness is the caller's job).

    ``raw`` is the Init's core (without mac2): what the Resp signs and the transcript hashes.
    """

    init: HandshakeInit
    cert: NodeCertificate
    raw: bytes


def verify_init(trust: CaTrust, data: bytes, *, now: float, skew_s: float) -> VerifiedInit:
    """Parse and authenticate an Init; raise :class:`RemoteProtocolError` with the drop reason."""
    init = HandshakeInit.parse(data)
    check_init_time(init, now=now, skew_s=skew_s)
    return check_init_signature(init, check_init_cert(trust, init, now=now), data)


def check_init_time(init: HandshakeInit, *, now: float, skew_s: float) -> None:
    """Refuse an Init whose timestamp is outside the clock-skew window (free: no crypto)."""
    if abs(init.timestamp_ms / 1000.0 - now) > skew_s:
        raise RemoteProtocolError("stale_handshake", "timestamp outside the clock-skew window")


def check_init_cert(trust: CaTrust, init: HandshakeInit, *, now: float) -> NodeCertificate:
    """The certificate an Init presents, checked against the CA at ``now`` (cached).

    Nothing is authenticated yet: the sender may only be claiming that certificate. Use the
    result to refuse an Init early (refusing changes nothing); act on it only after
    :func:`check_init_signature`.
    """
    return trust.verify(init.cert_der, now=now)


def check_init_signature(init: HandshakeInit, cert: NodeCertificate, data: bytes) -> VerifiedInit:
    """The second half of :func:`verify_init`: the signature by the certificate's key."""
    core = init_core(data)
    body = core[: len(core) - len(init.signature)]
    if not verify_signature(cert.public_key_raw, init.signature, init_signing_input(body)):
        raise RemoteProtocolError("bad_signature", "init signature")
    return VerifiedInit(init, cert, bytes(core))


def choose_cipher(offered: tuple[int, ...], ours: tuple[str, ...]) -> str | None:
    """The initiator's most preferred cipher that we also speak, or None."""
    for cid in offered:
        name = CIPHER_NAMES.get(cid)
        if name is not None and name in ours:
            return name
    return None


def _exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        # cryptography refuses low-order points (an all-zero shared secret).
        raise RemoteProtocolError("bad_key", "unusable X25519 public key") from None


def make_resp(
    identity: NodeIdentity,
    verified: VerifiedInit,
    *,
    index: int,
    cipher: str,
    observed: Endpoint | None,
) -> tuple[bytes, SessionKeys]:
    """Answer a verified Init: the encoded HANDSHAKE_RESP and our (unconfirmed) keys."""
    ephemeral = X25519PrivateKey.generate()
    shared = _exchange(ephemeral, verified.init.ephemeral)
    unsigned = HandshakeResp(
        sender_index=index,
        receiver_index=verified.init.sender_index,
        ephemeral=public_bytes(ephemeral),
        cipher=CIPHER_IDS[cipher],
        observed=observed,
        cert_der=identity.cert.der,
    )
    body = unsigned.signed_part()
    resp = body + identity.sign(resp_signing_input(verified.raw, body))
    i2r, r2i = derive_session_keys(shared, transcript_hash(verified.raw, resp))
    keys = SessionKeys(
        send_key=r2i,
        recv_key=i2r,
        cipher=cipher,
        local_index=index,
        remote_index=verified.init.sender_index,
        is_initiator=False,
    )
    return resp, keys


def verify_resp(
    trust: CaTrust,
    initiation: Initiation,
    resp: HandshakeResp,
    data: bytes,
    *,
    now: float,
    offered: tuple[str, ...],
) -> tuple[NodeCertificate, SessionKeys]:
    """Authenticate a Resp to ``initiation`` and derive keys; raise with the drop reason."""
    cert = trust.verify(resp.cert_der, now=now)
    if initiation.expected is not None and cert.node_id != initiation.expected:
        raise RemoteProtocolError("unexpected_peer", f"{cert.node_id.short()} answered")
    cipher = CIPHER_NAMES.get(resp.cipher)
    if cipher is None or cipher not in offered:
        raise RemoteProtocolError("bad_cipher", f"cipher id {resp.cipher} was not offered")
    body = data[: len(data) - len(resp.signature)]
    # Newest first: the Resp almost always answers the copy we sent last.
    for init_raw in reversed(initiation.sent):
        signed = resp_signing_input(init_raw, body)
        if verify_signature(cert.public_key_raw, resp.signature, signed):
            break
    else:
        raise RemoteProtocolError("bad_signature", "resp signature")
    shared = _exchange(initiation.ephemeral, resp.ephemeral)
    i2r, r2i = derive_session_keys(shared, transcript_hash(init_raw, bytes(data)))
    keys = SessionKeys(
        send_key=i2r,
        recv_key=r2i,
        cipher=cipher,
        local_index=initiation.index,
        remote_index=resp.sender_index,
        is_initiator=True,
    )
    return cert, keys
