"""Identities, network CAs and node certificates: round trips and every refusal reason."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from ipop.identity import (
    KEY_TRUST_CACHE_SIZE,
    MAX_ROUTER_HOSTS,
    ROUTER_HOSTS_OID,
    VERIFY_CACHE_SIZE,
    CaKeyTrust,
    CaTrust,
    CertificateError,
    NetworkCA,
    NodeIdentity,
    cert_serial,
    node_id_for,
    validate_hostname,
    validate_network,
    verify_signature,
)
from ipop.testing.identities import make_identity, make_network
from ipop.timing import CERT_BACKDATE_S
from ipop.types import NodeId

NOW = 1_795_305_600.0  # 2026-11-22, the simulator's epoch
DAY = 86400.0


@pytest.fixture(scope="module")
def ca() -> NetworkCA:
    return make_network("testnet", now=NOW)


@pytest.fixture(scope="module")
def alice(ca: NetworkCA) -> NodeIdentity:
    return make_identity(ca, "alice", now=NOW, hostname="alice-laptop")


def _reason(trust: CaTrust | CaKeyTrust, der: bytes, *, now: float = NOW) -> str:
    with pytest.raises(CertificateError) as info:
        trust.verify(der, now=now)
    assert isinstance(info.value, RemoteProtocolError)
    return info.value.reason


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _forge(
    ca: NetworkCA,
    *,
    org: str = "testnet",
    uri_network: str = "testnet",
    node_id: NodeId | None = None,
    node_key: object = None,
    router_ext: bytes | None = None,
) -> bytes:
    """A certificate signed by ``ca``'s real key but with contents sign_node would never write."""
    ca_key = serialization.load_pem_private_key(ca.key_pem(), password=None)
    assert isinstance(ca_key, Ed25519PrivateKey)
    key = node_key if node_key is not None else Ed25519PrivateKey.generate()
    public = key.public_key()  # type: ignore[attr-defined]
    if node_id is None:
        node_id = node_id_for(_raw(key)) if isinstance(key, Ed25519PrivateKey) else NodeId(1)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "mallory"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.fromtimestamp(NOW - DAY, tz=UTC))
        .not_valid_after(datetime.fromtimestamp(NOW + DAY, tz=UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"ipop://{uri_network}/{node_id.hex()}")]
            ),
            critical=False,
        )
    )
    if router_ext is not None:
        ext = x509.UnrecognizedExtension(ROUTER_HOSTS_OID, router_ext)
        cert = cert.add_extension(ext, critical=False)
    return cert.sign(ca_key, None).public_bytes(serialization.Encoding.DER)


# --- node ids and signatures ------------------------------------------------------------------


def test_node_id_derivation_is_stable() -> None:
    # SHA-256(00 01 .. 1f)[:20]; a change here moves every node on the ring.
    assert node_id_for(bytes(range(32))).hex() == "630dcd2966c4336691125448bbb25b4ff412a49c"
    assert node_id_for(bytes(32)) == node_id_for(bytes(32))
    assert node_id_for(bytes(32)) != node_id_for(bytes(31) + b"\x01")


def test_node_id_for_rejects_wrong_length() -> None:
    with pytest.raises(LocalProtocolError):
        node_id_for(bytes(31))


def test_identity_node_id_matches_key(alice: NodeIdentity) -> None:
    assert alice.node_id == node_id_for(alice.public_key_raw)
    assert alice.cert.node_id == alice.node_id


def test_sign_and_verify_signature(alice: NodeIdentity) -> None:
    sig = alice.sign(b"transcript")
    assert len(sig) == 64
    assert verify_signature(alice.public_key_raw, sig, b"transcript")
    assert not verify_signature(alice.public_key_raw, sig, b"transcripT")
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    assert not verify_signature(alice.public_key_raw, bad, b"transcript")


_REAL_KEY = _raw(Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    ("key", "sig", "data"),
    [
        (bytes(31), bytes(64), b""),
        (bytes(32), bytes(63), b""),
        (_REAL_KEY, bytes(64), b"x"),
        ("not bytes", bytes(64), b""),
        (bytes(32), None, b""),
        (bytes(32), bytes(64), 7),
    ],
)
def test_verify_signature_never_raises(key: object, sig: object, data: object) -> None:
    assert verify_signature(key, sig, data) is False  # type: ignore[arg-type]


@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=20))
@settings(max_examples=200, deadline=None)
def test_verify_signature_random_bytes(key: bytes, sig: bytes, data: bytes) -> None:
    assert verify_signature(key, sig, data) in (True, False)


# --- round trips ------------------------------------------------------------------------------


def test_issue_and_verify_round_trip(ca: NetworkCA, alice: NodeIdentity) -> None:
    got = ca.trust.verify(alice.cert.der, now=NOW)
    assert got == alice.cert
    assert got.name == "alice"
    assert got.network == "testnet"
    assert got.hostname == "alice-laptop"
    assert got.public_key_raw == alice.public_key_raw
    assert got.not_before == NOW - CERT_BACKDATE_S
    assert got.not_after == NOW + 365 * DAY


def test_verify_accepts_any_bytes_like(ca: NetworkCA, alice: NodeIdentity) -> None:
    assert ca.trust.verify(memoryview(alice.cert.der), now=NOW) == alice.cert
    assert ca.trust.verify(bytearray(alice.cert.der), now=NOW) == alice.cert
    assert _reason(ca.trust, "text") == "cert_malformed"  # type: ignore[arg-type]


def test_cert_without_hostname(ca: NetworkCA) -> None:
    bob = make_identity(ca, "bob", now=NOW)
    assert ca.trust.verify(bob.cert.der, now=NOW).hostname is None


def test_ca_pem_round_trip(ca: NetworkCA, alice: NodeIdentity) -> None:
    again = NetworkCA.load(ca.key_pem(), ca.cert_pem())
    assert again.network == "testnet"
    assert again.cert_pem() == ca.cert_pem()
    # The loaded CA signs certificates the original's trust accepts.
    carol = NodeIdentity.generate(again, "carol", now=NOW)
    assert ca.trust.verify(carol.cert.der, now=NOW).name == "carol"
    trust = CaTrust.from_pem(ca.cert_pem())
    assert trust.network == "testnet"
    assert trust.not_after == ca.not_after
    assert trust.verify(alice.cert.der, now=NOW) == alice.cert


def test_node_identity_pem_round_trip(ca: NetworkCA, alice: NodeIdentity) -> None:
    again = NodeIdentity.from_pem(alice.private_key_pem(), alice.cert.pem(), ca.trust, now=NOW)
    assert again.node_id == alice.node_id
    assert verify_signature(alice.public_key_raw, again.sign(b"m"), b"m")


def test_node_identity_from_pem_rejects_other_key(ca: NetworkCA, alice: NodeIdentity) -> None:
    other = make_identity(ca, "other", now=NOW)
    with pytest.raises(ConfigError) as info:
        NodeIdentity.from_pem(other.private_key_pem(), alice.cert.pem(), ca.trust, now=NOW)
    assert info.value.key == "node_key"


def test_node_identity_from_pem_rejects_expired(ca: NetworkCA, alice: NodeIdentity) -> None:
    with pytest.raises(ConfigError) as info:
        NodeIdentity.from_pem(
            alice.private_key_pem(), alice.cert.pem(), ca.trust, now=NOW + 400 * DAY
        )
    assert info.value.key == "node_cert"
    assert "cert_expired" in info.value.problem


def test_ca_load_rejects_mismatched_key(ca: NetworkCA) -> None:
    other = make_network("testnet", now=NOW)
    with pytest.raises(ConfigError) as info:
        NetworkCA.load(other.key_pem(), ca.cert_pem())
    assert info.value.key == "ca.key"


@pytest.mark.parametrize("pem", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_ca_trust_from_pem_rejects_garbage(pem: bytes) -> None:
    with pytest.raises(ConfigError):
        CaTrust.from_pem(pem)


def test_ca_trust_from_pem_rejects_node_cert(alice: NodeIdentity) -> None:
    with pytest.raises(ConfigError) as info:
        CaTrust.from_pem(alice.cert.pem())
    assert "not a CA" in info.value.problem


def test_cert_is_small_even_with_long_names(ca: NetworkCA) -> None:
    ident = make_identity(ca, "n" * 63, now=NOW, hostname="h" * 63)
    assert len(ident.cert.der) < 600


def test_make_identity_is_fast_enough_for_a_thousand_nodes(ca: NetworkCA) -> None:
    ids = [make_identity(ca, f"n{i}", now=NOW) for i in range(200)]
    assert len({i.node_id for i in ids}) == 200


# --- refusals ---------------------------------------------------------------------------------


def test_wrong_ca_is_bad_signature(alice: NodeIdentity) -> None:
    same_name = make_network("testnet", now=NOW)
    assert _reason(same_name.trust, alice.cert.der) == "cert_bad_signature"


def test_expired(ca: NetworkCA) -> None:
    short = make_identity(ca, "short", now=NOW, days=1)
    assert ca.trust.verify(short.cert.der, now=NOW + DAY - 1).name == "short"
    assert _reason(ca.trust, short.cert.der, now=NOW + DAY + 1) == "cert_expired"


def test_not_yet_valid(ca: NetworkCA) -> None:
    later = make_identity(ca, "later", now=NOW + 10 * DAY)
    assert _reason(ca.trust, later.cert.der, now=NOW) == "cert_not_yet_valid"


def test_validity_is_checked_on_cache_hits(ca: NetworkCA, alice: NodeIdentity) -> None:
    ca.trust.verify(alice.cert.der, now=NOW)
    assert _reason(ca.trust, alice.cert.der, now=NOW + 366 * DAY) == "cert_expired"
    assert _reason(ca.trust, alice.cert.der, now=NOW - DAY) == "cert_not_yet_valid"
    assert ca.trust.verify(alice.cert.der, now=NOW).name == "alice"


def test_cache_is_bounded() -> None:
    ca = make_network("cachenet", now=NOW)
    for i in range(VERIFY_CACHE_SIZE + 20):
        ca.trust.verify(make_identity(ca, f"n{i}", now=NOW).cert.der, now=NOW)
    assert len(ca.trust._cache) == VERIFY_CACHE_SIZE


def test_wrong_network(ca: NetworkCA) -> None:
    other = make_network("othernet", now=NOW)
    stranger = make_identity(other, "stranger", now=NOW)
    # Another network's CA: not our signature at all.
    assert _reason(ca.trust, stranger.cert.der) == "cert_bad_signature"
    # Our CA's signature, but another network in O or in the URI.
    assert _reason(ca.trust, _forge(ca, org="othernet")) == "cert_wrong_network"
    assert _reason(ca.trust, _forge(ca, uri_network="othernet")) == "cert_wrong_network"


# --- a CA known by its public key alone (a DHT namespace's, for strangers) --------------------


def _key_trust(ca: NetworkCA, network: str = "testnet") -> CaKeyTrust:
    return CaKeyTrust(network, ca.trust.public_key_raw)


def test_key_trust_accepts_what_the_ca_signed(ca: NetworkCA, alice: NodeIdentity) -> None:
    got = _key_trust(ca).verify(alice.cert.der, now=NOW)
    assert got == ca.trust.verify(alice.cert.der, now=NOW)
    assert got.hostname == "alice-laptop" and got.node_id == alice.node_id


def test_key_trust_refuses_like_ca_trust(ca: NetworkCA, alice: NodeIdentity) -> None:
    """One implementation: every refusal the key alone can decide is CaTrust's, reason for
    reason."""
    other = make_network("testnet", now=NOW)  # same name, another key
    cases = {
        make_identity(other, "x", now=NOW).cert.der: "cert_bad_signature",
        _forge(ca, org="othernet"): "cert_wrong_network",
        _forge(ca, uri_network="othernet"): "cert_wrong_network",
        _forge(ca, node_id=NodeId(12345)): "cert_node_id_mismatch",
        b"garbage": "cert_malformed",
    }
    for der, reason in cases.items():
        assert _reason(ca.trust, der) == reason
        assert _reason(_key_trust(ca), der) == reason
    # Alice is a member of "testnet", not of a network of the same key named otherwise.
    assert _reason(_key_trust(ca, "othernet"), alice.cert.der) == "cert_wrong_network"
    # The CA's own certificate verifies under its key (self-signed) but is no node's.
    ca_der = ca.trust.certificate.public_bytes(serialization.Encoding.DER)
    assert _reason(_key_trust(ca), ca_der) == "cert_not_node"


def test_key_trust_checks_the_window_but_cannot_know_revocation(ca: NetworkCA) -> None:
    short = make_identity(ca, "short", now=NOW, days=1)
    trust = _key_trust(ca)
    assert trust.verify(short.cert.der, now=NOW).name == "short"
    assert _reason(trust, short.cert.der, now=NOW + DAY + 1) == "cert_expired"
    assert _reason(trust, short.cert.der, now=NOW - DAY) == "cert_not_yet_valid"
    member = ca.trust.fork()
    member.apply_crl(ca.make_crl([(cert_serial(short.cert), NOW)], number=1, now=NOW), now=NOW)
    assert _reason(member, short.cert.der) == "cert_revoked"
    assert trust.verify(short.cert.der, now=NOW).name == "short"  # a stranger holds no CRL


def test_key_trust_cache_is_bounded_and_key_checked(ca: NetworkCA) -> None:
    trust = _key_trust(ca)
    for i in range(KEY_TRUST_CACHE_SIZE + 5):
        trust.verify(make_identity(ca, f"k{i}", now=NOW).cert.der, now=NOW)
    assert len(trust._cache) == KEY_TRUST_CACHE_SIZE
    with pytest.raises(LocalProtocolError):
        CaKeyTrust("testnet", b"short")


def test_node_id_mismatch(ca: NetworkCA) -> None:
    assert _reason(ca.trust, _forge(ca, node_id=NodeId(12345))) == "cert_node_id_mismatch"
    # The forger's helper itself produces acceptable certificates when told the truth.
    assert ca.trust.verify(_forge(ca), now=NOW).name == "mallory"


def test_non_ed25519_node_key_is_malformed(ca: NetworkCA) -> None:
    der = _forge(ca, node_key=ec.generate_private_key(ec.SECP256R1()))
    assert _reason(ca.trust, der) == "cert_malformed"


def test_ca_cert_as_node_cert(ca: NetworkCA) -> None:
    der = x509.load_pem_x509_certificate(ca.cert_pem()).public_bytes(serialization.Encoding.DER)
    assert _reason(ca.trust, der) == "cert_not_node"


def test_tampered_der(ca: NetworkCA, alice: NodeIdentity) -> None:
    der = alice.cert.der
    # The CN "alice" sits inside the signed part: change one letter of it.
    i = der.index(b"alice")
    tampered = der[:i] + b"b" + der[i + 1 :]
    assert _reason(ca.trust, tampered) == "cert_bad_signature"
    sig_flipped = der[:-1] + bytes([der[-1] ^ 1])
    assert _reason(ca.trust, sig_flipped) == "cert_bad_signature"
    assert _reason(ca.trust, der[:-10]) == "cert_malformed"
    assert _reason(ca.trust, b"") == "cert_malformed"
    assert _reason(ca.trust, b"\x30\x03\x02\x01\x01") == "cert_malformed"


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_mutated_der_only_ever_raises_certificate_error(data: st.DataObject) -> None:
    trust = _MUTATION_CA.trust
    der = bytearray(_MUTATION_CERT)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(der) - 1))
        der[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(der)))
    try:
        cert = trust.verify(bytes(der[:cut]) if cut < len(der) else bytes(der), now=NOW)
    except CertificateError as exc:
        assert exc.reason.startswith("cert_")
    else:
        # Only mutations the signature does not cover (or no-op ones) may pass.
        assert cert.node_id == node_id_for(cert.public_key_raw)


@given(st.binary(max_size=700))
@settings(max_examples=300, deadline=None)
def test_random_bytes_are_malformed(der: bytes) -> None:
    with pytest.raises(CertificateError):
        _MUTATION_CA.trust.verify(der, now=NOW)


_MUTATION_CA = make_network("mutnet", now=NOW)
_MUTATION_CERT = make_identity(_MUTATION_CA, "m", now=NOW, hostname="m").cert.der


# --- signing rules ----------------------------------------------------------------------------


def test_node_cert_never_outlives_ca() -> None:
    ca = NetworkCA.create("shortnet", now=NOW, days=10)
    node = make_identity(ca, "n", now=NOW, days=365)
    assert node.cert.not_after == ca.not_after
    assert _reason(ca.trust, node.cert.der, now=ca.not_after + 1) == "cert_expired"


def test_expired_ca_signs_nothing() -> None:
    ca = NetworkCA.create("oldnet", now=NOW - 20 * DAY, days=10)
    with pytest.raises(ConfigError):
        make_identity(ca, "n", now=NOW)


@pytest.mark.parametrize(
    "hostname",
    ["Alice", "-a", "a-", "a.b", "", "a" * 64, "c064001002", "a_b", "ä"],
)
def test_bad_hostnames_rejected(ca: NetworkCA, hostname: str) -> None:
    with pytest.raises(ConfigError):
        validate_hostname(hostname)
    with pytest.raises(ConfigError):
        make_identity(ca, "n", now=NOW, hostname=hostname)


@pytest.mark.parametrize("hostname", ["a", "alice-laptop", "0", "a" * 63, "c06400100"])
def test_good_hostnames_accepted(hostname: str) -> None:
    assert validate_hostname(hostname) == hostname


@pytest.mark.parametrize("network", ["", "Test", "a/b", "a b", "-x", "x" * 64])
def test_bad_network_names_rejected(network: str) -> None:
    with pytest.raises(ConfigError):
        validate_network(network)
    with pytest.raises(ConfigError):
        NetworkCA.create(network, now=NOW)


@pytest.mark.parametrize("name", ["", "a/b", "a b", ".hidden", "x" * 64, "a\nb"])
def test_bad_node_names_rejected(ca: NetworkCA, name: str) -> None:
    with pytest.raises(ConfigError):
        make_identity(ca, name, now=NOW)


def test_certificate_error_reasons_are_closed() -> None:
    with pytest.raises(LocalProtocolError):
        CertificateError("cert_something_else")


# --- openssl reads what we write --------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_reads_node_cert(tmp_path: Path, alice: NodeIdentity, ca: NetworkCA) -> None:
    path = tmp_path / "alice.crt"
    path.write_bytes(alice.cert.pem())
    out = subprocess.run(
        ["openssl", "x509", "-text", "-noout", "-in", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert f"URI:ipop://testnet/{alice.node_id.hex()}" in out
    assert "DNS:alice-laptop" in out
    assert "CA:FALSE" in out
    assert "Digital Signature" in out
    assert "CN = alice, O = testnet" in out
    assert "ED25519" in out
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(ca.cert_pem())
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_path), str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # openssl checks dates against the real clock; our NOW lies in the future of some hosts.
    if verified.returncode == 0:
        assert "OK" in verified.stdout
    else:
        assert "not yet valid" in verified.stdout + verified.stderr


# --- router certificates ------------------------------------------------------------------------


@pytest.mark.parametrize("hosts", [1, 127, 128, 255, 256, 1024, MAX_ROUTER_HOSTS])
def test_router_host_quota_round_trips(ca: NetworkCA, hosts: int) -> None:
    r = make_identity(ca, "r1", now=NOW, hostname="lab")
    assert r.cert.router_hosts == 0 and not r.cert.is_router
    router = NodeIdentity.generate(ca, "r1", now=NOW, hostname="lab", router_hosts=hosts)
    assert router.cert.router_hosts == hosts and router.cert.is_router
    # Parsed back from the DER (a fresh trust: no cache).
    trust = CaTrust.from_pem(ca.cert_pem())
    assert trust.verify(router.cert.der, now=NOW).router_hosts == hosts


@pytest.mark.parametrize("hosts", [-1, MAX_ROUTER_HOSTS + 1])
def test_router_host_quota_out_of_range(ca: NetworkCA, hosts: int) -> None:
    with pytest.raises(ConfigError):
        NodeIdentity.generate(ca, "r1", now=NOW, hostname="lab", router_hosts=hosts)


@pytest.mark.parametrize(
    "ext",
    [
        b"",
        b"\x02\x01\x00",  # zero hosts
        b"\x02\x01\x80",  # negative
        b"\x02\x02\x00\x05",  # not minimal
        b"\x02\x03\x01\x00\x01",  # above the bound
        b"\x04\x01\x05",  # not an INTEGER
        b"\x02\x02\x05",  # truncated
    ],
)
def test_malformed_router_extension_is_refused(ca: NetworkCA, ext: bytes) -> None:
    assert _reason(ca.trust, _forge(ca, router_ext=ext)) == "cert_malformed"
    assert ca.trust.verify(_forge(ca, router_ext=b"\x02\x01\x05"), now=NOW).router_hosts == 5
