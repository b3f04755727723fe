"""The identity package's parts through their public interfaces (ipop.identity.{keys,names,
cert,crl}), and ``ipop.identity`` re-exporting every name its users import."""

from __future__ import annotations

import importlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ipop.identity
from ipop.identity.ca import NetworkCA
from ipop.identity.cert import (
    MAX_ROUTER_HOSTS,
    cert_serial,
    der_uint,
    router_hosts_of,
    serial_of,
)
from ipop.identity.credentials import NodeIdentity
from ipop.identity.crl import MAX_CRL_BYTES, CrlError, load_crl_bytes
from ipop.identity.keys import PUBLIC_KEY_BYTES, node_id_for, raw_public
from ipop.identity.names import LABEL_RE

NOW = 1_750_000_000.0


@pytest.fixture(scope="module")
def ca() -> NetworkCA:
    return NetworkCA.create("lab-net", now=NOW)


def test_every_public_name_is_reexported_from_its_part() -> None:
    parts = ["keys", "names", "cert", "crl", "trust", "ca", "credentials"]
    homes = {n: importlib.import_module(f"ipop.identity.{n}") for n in parts}
    for name in ipop.identity.__all__:
        obj = getattr(ipop.identity, name)
        owners = [p for p, mod in homes.items() if getattr(mod, name, None) is obj]
        assert owners, f"{name} is defined in no part"


def test_raw_public_is_the_key_node_ids_come_from() -> None:
    key = Ed25519PrivateKey.generate()
    raw = raw_public(key.public_key())
    assert len(raw) == PUBLIC_KEY_BYTES
    assert raw == key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert node_id_for(raw) == node_id_for(bytes(raw))


def test_label_rule() -> None:
    for good in ("a", "lab-net", "x" * 63, "c0"):
        assert LABEL_RE.match(good)
    for bad in ("", "-a", "a-", "A", "a_b", "x" * 64, "a.b"):
        assert not LABEL_RE.match(bad)


def test_der_uint_is_minimal_and_keeps_the_sign_bit_clear() -> None:
    assert der_uint(0) == b"\x02\x01\x00"
    assert der_uint(127) == b"\x02\x01\x7f"
    assert der_uint(128) == b"\x02\x02\x00\x80"
    assert der_uint(MAX_ROUTER_HOSTS) == b"\x02\x03\x01\x00\x00"


def test_router_hosts_and_serial_read_back_what_the_ca_signed(ca: NetworkCA) -> None:
    router = NodeIdentity.generate(ca, "gw", now=NOW, router_hosts=300)
    plain = NodeIdentity.generate(ca, "pc", now=NOW)
    for ident, hosts in ((router, 300), (plain, 0)):
        parsed = x509.load_der_x509_certificate(ident.cert.der)
        assert router_hosts_of(parsed.extensions) == hosts
        assert serial_of(ident.cert.der) == cert_serial(ident.cert) == parsed.serial_number
    assert cert_serial(router.cert) != cert_serial(plain.cert)


def test_load_crl_bytes_takes_der_or_pem_and_refuses_the_rest(ca: NetworkCA) -> None:
    der = ca.make_crl([(5, NOW)], number=1, now=NOW)
    pem = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM)
    assert load_crl_bytes(der) == der
    assert load_crl_bytes(pem) == der
    assert load_crl_bytes(memoryview(der)) == der
    with pytest.raises(CrlError) as err:
        load_crl_bytes(b"\x30" * (MAX_CRL_BYTES + 1))
    assert err.value.reason == "crl_too_large"
    with pytest.raises(CrlError) as err:
        load_crl_bytes(b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    assert err.value.reason == "crl_malformed"
