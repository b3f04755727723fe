"""AEAD wrapper and the key schedule."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ipop.errors import LocalProtocolError
from ipop.link.crypto import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    CIPHER_IDS,
    CIPHER_NAMES,
    Aead,
    InvalidTag,
    derive_session_keys,
    nonce_for,
)

KEY = bytes(range(32))
AAD = bytes.fromhex("c3000000010000000000000005")


@pytest.mark.parametrize("cipher", [AES_256_GCM, CHACHA20_POLY1305])
def test_seal_into_and_open_round_trip(cipher: str) -> None:
    a = Aead(cipher, KEY)
    out = bytearray(100 + 16)
    assert a.seal_into(5, b"x" * 100, AAD, out) == 116
    assert a.open(5, bytes(out), AAD) == b"x" * 100
    plain = bytearray(100)
    assert a.open_into(5, memoryview(out), AAD, plain) == 100 and plain == b"x" * 100


@pytest.mark.parametrize("cipher", [AES_256_GCM, CHACHA20_POLY1305])
def test_wrong_counter_aad_or_bit_flip_fails(cipher: str) -> None:
    a = Aead(cipher, KEY)
    out = bytearray(20 + 16)
    a.seal_into(5, b"y" * 20, AAD, out)
    with pytest.raises(InvalidTag):
        a.open(6, bytes(out), AAD)
    with pytest.raises(InvalidTag):
        a.open(5, bytes(out), AAD[:-1] + b"\x06")
    out[3] ^= 1
    with pytest.raises(InvalidTag):
        a.open(5, bytes(out), AAD)


def test_nonce_is_four_zero_bytes_then_big_endian_counter() -> None:
    assert nonce_for(0x0102030405060708) == bytes(4) + bytes(range(1, 9))
    # Interoperates with the plain library given the documented nonce.
    a = Aead(AES_256_GCM, KEY)
    out = bytearray(3 + 16)
    a.seal_into(0x0102030405060708, b"abc", AAD, out)
    assert AESGCM(KEY).decrypt(bytes(4) + bytes(range(1, 9)), bytes(out), AAD) == b"abc"


def test_misuse_raises() -> None:
    with pytest.raises(LocalProtocolError):
        Aead(AES_256_GCM, b"short")
    with pytest.raises(LocalProtocolError):
        Aead("rot13", KEY)


def test_cipher_ids_are_stable() -> None:
    assert CIPHER_IDS == {AES_256_GCM: 1, CHACHA20_POLY1305: 2}
    assert CIPHER_NAMES[1] == AES_256_GCM


def test_key_schedule_is_deterministic_directional_and_transcript_bound() -> None:
    i2r, r2i = derive_session_keys(b"s" * 32, b"t" * 32)
    assert len(i2r) == len(r2i) == 32 and i2r != r2i
    assert derive_session_keys(b"s" * 32, b"t" * 32) == (i2r, r2i)
    assert derive_session_keys(b"s" * 32, b"u" * 32)[0] != i2r
    assert derive_session_keys(b"S" * 32, b"t" * 32)[0] != i2r
