"""Overlay credentials apart from network credentials (issue 17): ``ipop-config overlay``, a
network on an overlay, and the bundle's overlay keys, checked strictly."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ipop.bundle import (
    MAX_BUNDLE_BYTES,
    Bundle,
    dump_bundle,
    format_toml,
    load_bundle,
    parse_bundle,
)
from ipop.dht.seal import RECORDS_KEY_PURPOSE
from ipop.errors import ConfigError
from ipop.identity import CaTrust, NetworkCA, NodeIdentity
from ipop.testing.identities import make_identity, make_network
from ipop.tools.config_cli import main
from ipop.tools.config_home import crl_pem
from ipop.types import Endpoint

NOW = 1_795_305_600.0  # 2026-11-22
DAY = 86400.0
BOOT = ["--bootstrap", "203.0.113.10:5800"]
SUBNET = ["--subnet", "100.64.0.0/10"]

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def _run(*argv: str, now: float = NOW) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(["--home", "home", *argv], now=now)
        out, err = capsys.readouterr()
        return rc, out, err

    return _run


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run) -> Path:
    """A cwd whose home holds overlay 'shared' and network 'lab' on it."""
    monkeypatch.chdir(tmp_path)
    assert run("overlay", "init", "shared")[0] == 0
    assert run("init", "lab", "--overlay", "shared", *SUBNET, *BOOT)[0] == 0
    return tmp_path


def _trust(folder: Path) -> CaTrust:
    return CaTrust.from_pem((folder / "ca.crt").read_bytes())


# --- ipop-config ------------------------------------------------------------------------------


def test_a_node_of_a_network_on_an_overlay_gets_both_certificates(ws: Path, run: Run) -> None:
    rc, out, err = run("node", "lab", "alice", "--hostname", "alice-pc")
    assert rc == 0, err
    assert "overlay 'shared' certificate until" in out
    settings = tomllib.loads((ws / "home/lab/network.toml").read_text())
    overlay_trust = _trust(ws / "home/shared.overlay")
    assert settings["overlay"] == "shared"
    assert settings["overlay_ca"] == overlay_trust.fingerprint

    b = load_bundle(ws / "alice.bundle.toml")
    assert (b.network, b.overlay, b.overlay_name, b.is_member) == ("lab", "shared", "shared", True)
    assert b.node_cert is not None and b.trust is not None
    assert b.overlay_cert.node_id == b.node_cert.node_id == b.node_id  # one key, one node id
    assert b.overlay_cert.network == "shared" and b.node_cert.network == "lab"
    # The hostname is the network's business: only the network certificate names it.
    assert b.node_cert.hostname == "alice-pc" and b.overlay_cert.hostname is None
    # Signed by the CAs in the homes: each verifies its own certificate and not the other's.
    assert overlay_trust.verify(b.overlay_cert.der, now=NOW).name == "alice"
    assert _trust(ws / "home/lab").verify(b.node_cert.der, now=NOW).name == "alice"
    overlay, member = b.identities(now=NOW)
    assert member is not None and overlay is not member
    assert overlay.trust.network == "shared" and member.trust.network == "lab"
    assert overlay.node_id == member.node_id
    # Strangers store the network's records: the bundle holds the key members seal them with,
    # derived from the network CA's key (every member's bundle the same, no new file).
    home = ws / "home/lab"
    ca = NetworkCA.load((home / "ca.key").read_bytes(), (home / "ca.crt").read_bytes())
    assert b.records_key == ca.derived_secret(RECORDS_KEY_PURPOSE) == member.records_key
    assert overlay.records_key is None
    assert len(b.records_key) == 32 and b.records_key != ca.derived_secret(b"other")
    register = json.loads((ws / "home/shared.overlay/issued.json").read_text())
    assert [c["name"] for c in register["certs"]] == ["lab/alice"]
    info = json.loads(run("show", "alice.bundle.toml", "--json")[1])
    assert info["overlay"] == "shared" and info["network"] == "lab" and info["valid"]
    assert info["overlay_ca_fingerprint"] == overlay_trust.fingerprint
    assert info["records_sealed"] is True


def test_overlay_node_writes_an_overlay_only_bundle(ws: Path, run: Run) -> None:
    rc, _, err = run("overlay", "node", "shared", "relay1", *BOOT, "--out", "r.toml")
    assert rc == 0, err
    assert set(tomllib.loads((ws / "r.toml").read_text())) == {
        "format",
        "overlay",
        "overlay_ca_cert",
        "overlay_cert",
        "node_key",
        "bootstrap",
        "node_name",
    }
    b = load_bundle(ws / "r.toml")
    assert not b.is_member and b.trust is None and b.node_cert is None
    assert b.overlay_identity(now=NOW).cert.network == "shared"
    assert b.identities(now=NOW)[1] is None
    with pytest.raises(ConfigError) as exc:
        b.identity(now=NOW)
    assert exc.value.key == "network" and "overlay-only" in exc.value.problem
    with pytest.raises(ConfigError):
        b.membership()
    info = json.loads(run("show", "r.toml", "--json")[1])
    assert info["network"] is None and info["overlay"] == "shared" and info["valid"]
    # Names are per register: the overlay's own nodes are refused twice, like a network's.
    rc, _, err = run("overlay", "node", "shared", "relay1", *BOOT, "--out", "r2.toml")
    assert rc == 2 and "already has a live certificate" in err and "--force" in err


def test_reissue_revokes_the_old_overlay_certificate(ws: Path, run: Run) -> None:
    assert run("node", "lab", "alice")[0] == 0
    old = load_bundle(ws / "alice.bundle.toml")
    rc, out, err = run("node", "lab", "alice", "--force")
    assert rc == 0, err
    assert "earlier overlay certificate(s) of 'alice'" in out
    crl = (ws / "home/shared.overlay/shared.crl.pem").read_bytes()
    trust = _trust(ws / "home/shared.overlay")
    trust.apply_crl(crl, now=NOW)
    assert trust.is_revoked(old.overlay_cert)
    new = load_bundle(ws / "alice.bundle.toml")
    assert not trust.is_revoked(new.overlay_cert)


def test_overlay_revoke_cuts_a_member_and_new_bundles_carry_the_list(ws: Path, run: Run) -> None:
    assert run("node", "lab", "alice")[0] == 0
    alice = load_bundle(ws / "alice.bundle.toml")
    rc, out, err = run("overlay", "revoke", "shared", "lab/alice", "--out", "shared.crl.pem")
    assert rc == 0, err
    assert f"revoked lab/alice node id {alice.node_id.hex()}" in out
    rc, _, err = run("overlay", "revoke", "shared", "lab/alice")
    assert rc == 2 and "no live certificate" in err
    # The network register is the network's: alice's network certificate still stands.
    assert 'revoked_at": null' in (ws / "home/lab/issued.json").read_text()
    assert run("node", "lab", "bob")[0] == 0
    bob = load_bundle(ws / "bob.bundle.toml")
    assert bob.overlay_crl_pem == (ws / "shared.crl.pem").read_bytes()
    assert bob.crl_pem is None  # the network revoked nothing
    overlay, member = bob.identities(now=NOW)
    assert overlay.trust.is_revoked(alice.overlay_cert) and overlay.trust.crl_number == 1
    assert member is not None and member.trust.crl_number == 0
    assert json.loads(run("show", "bob.bundle.toml", "--json")[1])["overlay_crl_number"] == 1
    assert run("overlay", "node", "shared", "relay1", *BOOT)[0] == 0
    assert load_bundle(ws / "relay1.bundle.toml").overlay_crl_pem is not None


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (
            ["init", "net2", "--overlay", "nope", *SUBNET, *BOOT],
            ["unknown overlay 'nope'", "nope.overlay", "ipop-config overlay init nope"],
        ),
        (["overlay", "init", "shared"], ["overlay 'shared' already exists", "choose another"]),
        (["overlay", "node", "nope", "x", *BOOT], ["unknown overlay 'nope'", "overlay init"]),
        (["overlay", "node", "shared", "x"], ["--bootstrap", "--help"]),
        (["overlay", "init", "Bad_Name"], ["OVERLAY", "not a valid network name"]),
        (["overlay", "init", "o2", "--days", "0"], ["--days 0 is out of range"]),
    ],
)
def test_bad_overlay_input_is_one_line_with_a_fix(
    ws: Path, run: Run, argv: list[str], needles: list[str]
) -> None:
    rc, out, err = run(*argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.rstrip().endswith(")")
    for needle in needles:
        assert needle in err, err


def test_a_remade_overlay_ca_is_noticed_before_signing(ws: Path, run: Run) -> None:
    folder = ws / "home/shared.overlay"
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    assert run("overlay", "init", "shared")[0] == 0
    rc, _, err = run("node", "lab", "alice")
    assert rc == 2
    assert "is not the one network 'lab' was made on" in err and "restore" in err
    assert not (ws / "alice.bundle.toml").exists()


def test_help_of_node_says_who_signs_the_overlay_certificate(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["node", "--help"]) == 0
    assert "that operator signs the second" in " ".join(capsys.readouterr().out.split())


# --- the bundle's overlay keys ----------------------------------------------------------------


@dataclasses.dataclass
class Creds:
    network: NetworkCA
    overlay: NetworkCA
    member: NodeIdentity  # the network certificate
    ovl: NodeIdentity  # the overlay certificate, same key


@pytest.fixture(scope="module")
def creds() -> Creds:
    network = make_network("lab", now=NOW)
    overlay = make_network("shared", now=NOW)
    member = make_identity(network, "alice", now=NOW)
    return Creds(network, overlay, member, member.certified_by(overlay, "alice", now=NOW))


def _bundle(c: Creds, **changes: object) -> Bundle:
    fields: dict[str, object] = {
        "network": "lab",
        "subnet": ipaddress.IPv4Network("100.64.0.0/10"),
        "bootstrap": (Endpoint("203.0.113.10", 5800),),
        "node_name": "alice",
        "ca_cert_pem": c.network.cert_pem(),
        "node_cert_pem": c.member.cert.pem(),
        "node_key_pem": c.member.private_key_pem(),
        "overlay": "shared",
        "overlay_ca_cert_pem": c.overlay.cert_pem(),
        "overlay_cert_pem": c.ovl.cert.pem(),
        "records_key": bytes(range(32)),
    }
    fields.update(changes)
    return Bundle(**fields)  # type: ignore[arg-type]


def _text(c: Creds, **changes: object) -> str:
    table = dict(tomllib.loads(dump_bundle(_bundle(c))))
    for key, value in changes.items():
        if value is None:
            del table[key]
        else:
            table[key] = value
    return format_toml(list(table.items()))  # type: ignore[arg-type]


def test_two_certificate_bundle_round_trips_and_stays_small(creds: Creds) -> None:
    b = _bundle(creds)
    text = dump_bundle(b)
    assert parse_bundle(text, source="b") == b
    # Measured: 2.75 KB with one bootstrap endpoint (3.1 KB with a CRL): far below the 25 KB.
    assert len(text.encode()) < MAX_BUNDLE_BYTES // 5


def test_a_member_bundle_on_a_shared_overlay_without_a_records_key_says_so(
    creds: Creds,
) -> None:
    assert _bundle(creds).records_plain() is None
    why = _bundle(creds, records_key=None).records_plain()
    assert why is not None and "records_key" in why and "ipop-config node lab alice" in why
    # A network that is its own overlay: only its members store its records.
    alone = _bundle(
        creds, overlay=None, overlay_ca_cert_pem=None, overlay_cert_pem=None, records_key=None
    )
    assert alone.records_plain() is None


def test_a_one_network_bundle_has_one_identity_object(creds: Creds) -> None:
    b = _bundle(creds, overlay=None, overlay_ca_cert_pem=None, overlay_cert_pem=None)
    assert "overlay" not in dump_bundle(b)
    overlay, member = b.identities(now=NOW)
    assert overlay is member  # behaviour unchanged: links and records use one identity
    assert b.overlay_trust is b.trust and b.overlay_cert is b.node_cert


def _other_key_cert(c: Creds) -> bytes:
    return make_identity(c.overlay, "alice", now=NOW).cert.pem()


@pytest.mark.parametrize(
    ("changes", "key", "needle"),
    [
        ({"overlay_cert": "OTHER_OVERLAY"}, "overlay_cert", "not accepted by the bundled overlay"),
        ({"overlay_cert": "OTHER_KEY"}, "overlay_cert", "both must certify node_key"),
        ({"overlay_cert": "NETWORK_CERT"}, "overlay_cert", "not accepted by the bundled overlay"),
        ({"overlay": "elsewhere"}, "overlay", "differs from the overlay CA's name 'shared'"),
        ({"overlay_ca_cert": "NETWORK_CA"}, "overlay_ca_cert", "the network's own CA"),
        ({"overlay_cert": None}, "overlay_cert", "is missing"),
        ({"overlay": None}, "overlay", "is missing, but overlay_ca_cert is there"),
        ({"network": None}, "subnet", "overlay-only bundle names no network"),
        ({"overlay_ca_cert": "garbage"}, "overlay_ca_cert", ""),
        ({"overlay_crl": "NETWORK_CRL"}, "overlay_crl", "not accepted by the bundled overlay CA"),
        ({"records_key": "zz" * 32}, "records_key", "not hex digits"),
        ({"records_key": "ab" * 31}, "records_key", "64 hex digits"),
        ({"records_key": 7}, "records_key", "must be a hex string"),
    ],
)
def test_overlay_keys_that_do_not_fit_name_the_key(
    creds: Creds, changes: dict[str, object], key: str, needle: str
) -> None:
    values = {
        "OTHER_OVERLAY": make_identity(make_network("shared", now=NOW), "alice", now=NOW)
        .cert.pem()
        .decode(),
        "OTHER_KEY": _other_key_cert(creds).decode(),
        "NETWORK_CERT": creds.member.cert.pem().decode(),
        "NETWORK_CA": creds.network.cert_pem().decode(),
        "NETWORK_CRL": crl_pem(creds.network.make_crl([], number=1, now=NOW)).decode(),
    }
    resolved = {k: values.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(ConfigError) as exc:
        parse_bundle(_text(creds, **resolved), source="b.toml")
    assert exc.value.key == key and needle in exc.value.problem, str(exc.value)
    assert "b.toml" in exc.value.problem and exc.value.fix


def test_an_overlay_only_bundle_whose_key_is_another_is_refused(creds: Creds) -> None:
    other = make_identity(creds.overlay, "alice", now=NOW)
    with pytest.raises(ConfigError) as exc:
        Bundle(
            overlay="shared",
            overlay_ca_cert_pem=creds.overlay.cert_pem(),
            overlay_cert_pem=other.cert.pem(),
            node_key_pem=creds.member.private_key_pem(),
            bootstrap=(Endpoint("203.0.113.10", 5800),),
            node_name="alice",
        )
    assert exc.value.key == "node_key" and "overlay_cert" in exc.value.problem


def test_an_expired_overlay_certificate_is_a_problem_of_its_key(creds: Creds) -> None:
    short = creds.member.certified_by(creds.overlay, "alice", now=NOW, days=1)
    b = _bundle(creds, overlay_cert_pem=short.cert.pem())
    later = NOW + 3 * DAY
    assert [p[0] for p in b.problems(now=later)] == ["overlay_cert"]
    with pytest.raises(ConfigError) as exc:
        b.identities(now=later)
    assert exc.value.key == "overlay_cert" and "expired" in exc.value.problem


def test_certified_by_keeps_the_key(creds: Creds) -> None:
    assert creds.ovl.private_key is creds.member.private_key
    raw = x509.load_der_x509_certificate(creds.ovl.cert.der).public_key()
    assert (
        raw.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        == creds.member.public_key_raw
    )


def test_node_key_makes_one_more_networks_bundle_for_the_same_node(ws: Path, run: Run) -> None:
    """Issue 17, item 2: a node in two networks of one overlay holds one key; ``node --key``
    certifies it in the second network, and a bundle of another overlay is refused."""
    assert run("init", "other", "--overlay", "shared", *SUBNET, *BOOT)[0] == 0
    assert run("node", "lab", "ab", "--hostname", "ab", "--out", "ab-lab.toml")[0] == 0
    rc, _, err = run(
        "node", "other", "ab", "--hostname", "ab", "--key", "ab-lab.toml", "--out", "ab-o.toml"
    )
    assert rc == 0, err
    lab, other = load_bundle(Path("ab-lab.toml")), load_bundle(Path("ab-o.toml"))
    assert lab.node_id == other.node_id and lab.network != other.network
    assert lab.overlay_trust.public_key_raw == other.overlay_trust.public_key_raw
    assert other.hostname == "ab"
    # Without --key: another key, another node.
    assert run("node", "other", "cd", "--out", "cd.toml")[0] == 0
    assert load_bundle(Path("cd.toml")).node_id != lab.node_id
    # A bundle of another overlay's network: refused, saying which overlay.
    assert run("overlay", "init", "elsewhere")[0] == 0
    assert run("init", "far", "--overlay", "elsewhere", *SUBNET, *BOOT)[0] == 0
    rc, _, err = run("node", "far", "ab", "--key", "ab-lab.toml", "--out", "ab-far.toml")
    assert rc == 2 and "not on this network's overlay" in err and "--overlay shared" in err
    assert not Path("ab-far.toml").exists()
