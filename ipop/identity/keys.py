"""Ed25519 keys and the node ids they imply.

A node's identity is an Ed25519 key; its overlay address is :func:`node_id_for` of the public
key (SHA-256 of the raw 32-byte key, first 20 bytes), so nobody picks their ring position.
:func:`verify_signature` checks a signature by a raw public key and never raises.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ipop.errors import LocalProtocolError
from ipop.types import ID_BYTES, NodeId

__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "node_id_for", "raw_public", "verify_signature"]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def node_id_for(public_key_raw: bytes) -> NodeId:
    """The overlay address of the node whose raw Ed25519 public key is ``public_key_raw``."""
    if len(public_key_raw) != PUBLIC_KEY_BYTES:
        raise LocalProtocolError(f"Ed25519 public key must be 32 bytes, got {len(public_key_raw)}")
    return NodeId.from_bytes(hashlib.sha256(public_key_raw).digest()[:ID_BYTES])


def verify_signature(public_key_raw: bytes, signature: bytes, data: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``data`` by that key. Never raises.

    Keys must come from a verified certificate: like every RFC 8032 verifier, this accepts
    forgeries under small-order keys (all zeros, say), which only a CA could hand out.
    """
    if (
        not isinstance(public_key_raw, bytes | bytearray | memoryview)
        or not isinstance(signature, bytes | bytearray | memoryview)
        or not isinstance(data, bytes | bytearray | memoryview)
        or len(public_key_raw) != PUBLIC_KEY_BYTES
        or len(signature) != SIGNATURE_BYTES
    ):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_key_raw)).verify(
            bytes(signature), bytes(data)
        )
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of an Ed25519 public key (what node ids and certificates hold)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
