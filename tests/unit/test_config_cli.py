"""``ipop-config`` end to end (in-process ``main``) and the bundle file format it writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipop.bundle import (
    MAX_BUNDLE_BYTES,
    Bundle,
    dump_bundle,
    format_toml,
    load_bundle,
    parse_bundle,
)
from ipop.errors import ConfigError
from ipop.identity import CertificateError, CrlError, node_id_for
from ipop.testing.identities import make_identity, make_network
from ipop.tools.config_cli import main

NOW = 1_795_305_600.0  # 2026-11-22
DAY = 86400.0
BOOT = ["--bootstrap", "203.0.113.10:5800", "--bootstrap", "198.51.100.7:5800"]

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def _run(*argv: str, now: float = NOW) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(list(argv), now=now)
        out, err = capsys.readouterr()
        return rc, out, err

    return _run


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory (the cwd) with a home of one network, 'lab-net'."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IPOP_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    assert (
        main(["--home", "home", "init", "lab-net", "--subnet", "100.64.0.0/10", *BOOT], now=NOW)
        == 0
    )
    return tmp_path


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with a hash of its content: 'nothing written' means equal."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --- happy path ---------------------------------------------------------------------------------


def test_init_node_show(ws: Path, run: Run) -> None:
    net = ws / "home" / "lab-net"
    assert {p.name for p in net.iterdir()} == {"ca.key", "ca.crt", "network.toml"}
    assert _mode(net / "ca.key") == 0o600
    settings_file = tomllib.loads((net / "network.toml").read_text())
    assert settings_file["bootstrap"] == ["203.0.113.10:5800", "198.51.100.7:5800"]
    assert settings_file["dns_suffix"] == "ipop"

    rc, out, err = run("--home", "home", "node", "lab-net", "alice", "--hostname", "alice-laptop")
    assert (rc, err) == (0, "")
    path = ws / "alice.bundle.toml"
    assert path.is_file()
    assert _mode(path) == 0o600
    size = path.stat().st_size
    assert size <= 25_000
    text = path.read_text()
    assert (net / "ca.key").read_text() not in text  # the CA key never leaves home
    assert "alice.bundle.toml" in out
    assert f"size {size} bytes" in out

    bundle = load_bundle(path)
    assert bundle.node_name == "alice"
    assert bundle.hostname == "alice-laptop"
    assert f"node id {bundle.node_id.hex()}" in out
    ident = bundle.identity(now=NOW)
    assert ident.node_id == node_id_for(ident.public_key_raw)

    rc, out, err = run("show", str(path), "--json")
    assert (rc, err) == (0, "")
    info = json.loads(out)
    assert info["valid"] is True
    assert info["problems"] == []
    assert info["network"] == "lab-net"
    assert info["subnet"] == "100.64.0.0/10"
    assert info["bootstrap"] == ["203.0.113.10:5800", "198.51.100.7:5800"]
    assert info["dns_suffix"] == "ipop"
    assert info["node_name"] == "alice"
    assert info["hostname"] == "alice-laptop"
    assert info["node_id"] == bundle.node_id.hex()
    assert info["size_bytes"] == size
    assert info["cert_not_after"] == "2027-11-22T00:00:00Z"
    assert info["ca_not_after"].startswith("2036-")

    rc, out, err = run("show", str(path))
    assert (rc, err) == (0, "")
    assert "lab-net" in out
    assert bundle.node_id.hex() in out


def test_home_from_environment_and_after_subcommand(
    ws: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPOP_CONFIG_HOME", str(ws / "home"))
    assert run("node", "lab-net", "bob", "--out", "b1.toml")[0] == 0
    monkeypatch.delenv("IPOP_CONFIG_HOME")
    assert run("node", "lab-net", "bob", "--home", "home", "--out", "b2.toml", "--force")[0] == 0
    # Without either, the default home (~/.config/ipop) has no such network.
    rc, _, err = run("node", "lab-net", "bob", "--out", "b3.toml")
    assert rc == 2
    assert "unknown network" in err
    assert load_bundle(ws / "b1.toml").node_id != load_bundle(ws / "b2.toml").node_id


def test_force_overwrites(ws: Path, run: Run) -> None:
    assert run("--home", "home", "node", "lab-net", "bob")[0] == 0
    first = (ws / "bob.bundle.toml").read_bytes()
    assert run("--home", "home", "node", "lab-net", "bob", "--force")[0] == 0
    second = (ws / "bob.bundle.toml").read_bytes()
    assert first != second
    assert _mode(ws / "bob.bundle.toml") == 0o600
    assert [p.name for p in ws.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_bundle_mode_ignores_umask(ws: Path, run: Run) -> None:
    old = os.umask(0)
    try:
        assert run("--home", "home", "node", "lab-net", "carol")[0] == 0
    finally:
        os.umask(old)
    assert _mode(ws / "carol.bundle.toml") == 0o600


def test_many_bootstrap_endpoints_still_fit(tmp_path: Path, run: Run) -> None:
    boots = [a for i in range(1, 60) for a in ("--bootstrap", f"203.0.113.{i}:{5800 + i}")]
    home = str(tmp_path / "h")
    assert run("--home", home, "init", "big", "--subnet", "100.64.0.0/10", *boots)[0] == 0
    out = str(tmp_path / "n.toml")
    assert run("--home", home, "node", "big", "n", "--hostname", "h" * 63, "--out", out)[0] == 0
    assert Path(out).stat().st_size <= MAX_BUNDLE_BYTES


# --- bad input: one line, exit 2, nothing written -----------------------------------------------

SUBNET = ["--subnet", "100.64.0.0/10"]
BAD_INPUTS: list[tuple[str, list[str]]] = [
    ("existing network", ["init", "lab-net", *SUBNET, *BOOT]),
    ("subnet prefix", ["init", "n2", "--subnet", "100.64.0.0/33", *BOOT]),
    ("subnet host bits", ["init", "n2", "--subnet", "100.64.0.1/10", *BOOT]),
    ("subnet no prefix", ["init", "n2", "--subnet", "100.64.0.0", *BOOT]),
    ("subnet word", ["init", "n2", "--subnet", "bogus", *BOOT]),
    ("subnet v6", ["init", "n2", "--subnet", "fd00::/64", *BOOT]),
    ("endpoint no port", ["init", "n2", *SUBNET, "--bootstrap", "203.0.113.1"]),
    ("endpoint name", ["init", "n2", *SUBNET, "--bootstrap", "seed.example:5800"]),
    ("endpoint port 0", ["init", "n2", *SUBNET, "--bootstrap", "203.0.113.1:0"]),
    ("network chars", ["init", "Bad_Net", *SUBNET, *BOOT]),
    ("network slash", ["init", "../up", *SUBNET, *BOOT]),
    ("dns suffix", ["init", "n2", *SUBNET, *BOOT, "--dns-suffix", "Not Valid"]),
    ("ca days", ["init", "n2", *SUBNET, *BOOT, "--days", "0"]),
    ("missing bootstrap", ["init", "n2", *SUBNET]),
    ("unknown command", ["frobnicate"]),
    ("unknown network", ["node", "nosuch", "alice"]),
    ("bad network name", ["node", "Lab", "alice"]),
    ("name chars", ["node", "lab-net", "../evil"]),
    ("name space", ["node", "lab-net", "a b"]),
    ("hostname upper", ["node", "lab-net", "alice", "--hostname", "Alice"]),
    ("hostname dot", ["node", "lab-net", "alice", "--hostname", "a.b"]),
    ("hostname address", ["node", "lab-net", "alice", "--hostname", "c064001002"]),
    ("node days", ["node", "lab-net", "alice", "--days", "-3"]),
    ("days not int", ["node", "lab-net", "alice", "--days", "many"]),
    ("existing target", ["node", "lab-net", "exists"]),
    ("out dir missing", ["node", "lab-net", "alice", "--out", "nodir/alice.toml"]),
    ("out is dir", ["node", "lab-net", "alice", "--out", "home"]),
    ("show missing", ["show", "nosuch.toml"]),
    ("show garbage", ["show", "exists.bundle.toml"]),
]


@pytest.mark.parametrize(("case", "argv"), BAD_INPUTS, ids=[c for c, _ in BAD_INPUTS])
def test_bad_input(ws: Path, run: Run, case: str, argv: list[str]) -> None:
    (ws / "exists.bundle.toml").write_text("this is = not [ toml\n")
    before = snapshot(ws)
    rc, out, err = run("--home", "home", *argv)
    assert rc == 2, (case, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ipop-config: ")
    assert lines[0].endswith(")"), "every message ends with its fix in parentheses"
    assert snapshot(ws) == before


def test_bad_input_creates_no_home(tmp_path: Path, run: Run) -> None:
    home = tmp_path / "fresh"
    rc, _, _ = run("--home", str(home), "init", "n", "--subnet", "nope", *BOOT)
    assert rc == 2
    assert not home.exists()


def test_expired_ca_refuses_new_nodes(tmp_path: Path, run: Run) -> None:
    home = str(tmp_path / "h")
    old = NOW - 30 * DAY
    assert run("--home", home, "init", "old", *SUBNET, *BOOT, "--days", "10", now=old)[0] == 0
    before = snapshot(tmp_path)
    rc, _, err = run("--home", home, "node", "old", "n", "--out", str(tmp_path / "n.toml"))
    assert rc == 2
    assert "expired" in err
    assert len(err.splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_broken_home_reports_one_line(ws: Path, run: Run) -> None:
    (ws / "home" / "lab-net" / "ca.key").write_text("not a key")
    rc, _, err = run("--home", "home", "node", "lab-net", "x")
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "ca.key" in err
    assert not (ws / "x.bundle.toml").exists()


def test_help_exits_zero(run: Run) -> None:
    rc, out, _ = run("--help")
    assert rc == 0
    assert "init" in out


# --- show: validity over time -------------------------------------------------------------------


def test_show_reports_expired_node_cert(ws: Path, run: Run) -> None:
    assert run("--home", "home", "node", "lab-net", "brief", "--days", "1")[0] == 0
    rc, out, _ = run("show", "brief.bundle.toml", "--json", now=NOW + 2 * DAY)
    assert rc == 1
    info = json.loads(out)
    assert info["valid"] is False
    assert any(p.startswith("node_cert: expired") for p in info["problems"])
    rc, out, _ = run("show", "brief.bundle.toml", now=NOW + 2 * DAY)
    assert rc == 1
    assert "problem" in out


def test_show_reports_expired_ca(tmp_path: Path, run: Run) -> None:
    home = str(tmp_path / "h")
    out_file = str(tmp_path / "n.toml")
    assert run("--home", home, "init", "short", *SUBNET, *BOOT, "--days", "3")[0] == 0
    assert run("--home", home, "node", "short", "n", "--out", out_file)[0] == 0
    rc, out, _ = run("show", out_file, "--json", now=NOW + 4 * DAY)
    assert rc == 1
    problems = json.loads(out)["problems"]
    assert any(p.startswith("ca_cert: the network CA expired") for p in problems)
    # The node certificate was cut to the CA's lifetime, so it has expired too.
    assert any(p.startswith("node_cert: expired") for p in problems)


def test_show_not_yet_valid(ws: Path, run: Run) -> None:
    assert run("--home", "home", "node", "lab-net", "early")[0] == 0
    rc, out, _ = run("show", "early.bundle.toml", "--json", now=NOW - 2 * DAY)
    assert rc == 1
    assert any("valid only from" in p for p in json.loads(out)["problems"])


# --- the bundle file itself ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_text() -> str:
    import ipaddress

    from ipop.types import Endpoint

    ca = make_network("lab-net", now=NOW)
    ident = make_identity(ca, "alice", now=NOW, hostname="alice-laptop")
    bundle = Bundle(
        network="lab-net",
        subnet=ipaddress.IPv4Network("100.64.0.0/10"),
        bootstrap=(Endpoint("203.0.113.10", 5800),),
        node_name="alice",
        ca_cert_pem=ca.cert_pem(),
        node_cert_pem=ident.cert.pem(),
        node_key_pem=ident.private_key_pem(),
        hostname="alice-laptop",
    )
    return dump_bundle(bundle)


def _edited(text: str, **changes: object) -> str:
    table: dict[str, object] = dict(tomllib.loads(text))
    for key, value in changes.items():
        if value is None:
            del table[key]
        else:
            table[key] = value
    return format_toml(list(table.items()))  # type: ignore[arg-type]


def test_bundle_round_trip(good_text: str) -> None:
    b = parse_bundle(good_text, source="t")
    assert dump_bundle(b) == good_text
    assert parse_bundle(dump_bundle(b), source="t") == b
    assert b.identity(now=NOW).cert.name == "alice"


def test_bundle_defaults_dns_suffix_and_hostname_optional(good_text: str) -> None:
    other = make_network("lab-net", now=NOW)
    plain = make_identity(other, "plain", now=NOW)
    text = _edited(
        good_text,
        dns_suffix=None,
        hostname=None,
        node_name="plain",
        ca_cert=other.cert_pem().decode(),
        node_cert=plain.cert.pem().decode(),
        node_key=plain.private_key_pem().decode(),
    )
    b = parse_bundle(text, source="t")
    assert b.dns_suffix == "ipop"
    assert b.hostname is None


def _other_pems() -> dict[str, str]:
    other_ca = make_network("lab-net", now=NOW)
    stranger = make_identity(other_ca, "alice", now=NOW, hostname="alice-laptop")
    return {
        "cert": stranger.cert.pem().decode(),
        "key": stranger.private_key_pem().decode(),
        "ca": other_ca.cert_pem().decode(),
    }


_OTHER = _other_pems()

BUNDLE_ERRORS: list[tuple[str, dict[str, object], str]] = [
    ("missing network", {"network": None}, "network"),
    ("missing node_key", {"node_key": None}, "node_key"),
    ("missing format", {"format": None}, "format"),
    ("future format", {"format": 2}, "format"),
    ("format type", {"format": "1"}, "format"),
    ("network type", {"network": 5}, "network"),
    ("network differs", {"network": "other-net"}, "network"),
    ("subnet type", {"subnet": 10}, "subnet"),
    ("subnet malformed", {"subnet": "100.64.0.0/99"}, "subnet"),
    ("bootstrap type", {"bootstrap": "203.0.113.1:5800"}, "bootstrap"),
    ("bootstrap empty", {"bootstrap": []}, "bootstrap"),
    ("endpoint malformed", {"bootstrap": ["203.0.113.1:5800", "nope"]}, "bootstrap[1]"),
    ("endpoint type", {"bootstrap": [5800]}, "bootstrap[0]"),
    ("dns suffix", {"dns_suffix": "A..b"}, "dns_suffix"),
    ("hostname differs", {"hostname": "bob"}, "hostname"),
    ("hostname invalid", {"hostname": "Bob"}, "hostname"),
    ("name differs", {"node_name": "bob"}, "node_name"),
    ("unknown key", {"bootstrapp": ["203.0.113.1:5800"]}, "bootstrapp"),
    (
        "ca pem",
        {"ca_cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        "ca_cert",
    ),
    ("cert pem", {"node_cert": "garbage"}, "node_cert"),
    ("key pem", {"node_key": "garbage"}, "node_key"),
    ("key type", {"node_key": 7}, "node_key"),
    ("key not matching cert", {"node_key": _OTHER["key"]}, "node_key"),
    (
        "cert from another CA",
        {"node_cert": _OTHER["cert"], "node_key": _OTHER["key"]},
        "node_cert",
    ),
    ("ca swapped", {"ca_cert": _OTHER["ca"]}, "node_cert"),
]


@pytest.mark.parametrize(
    ("case", "changes", "key"), BUNDLE_ERRORS, ids=[c for c, _, _ in BUNDLE_ERRORS]
)
def test_bundle_errors_name_the_key(
    good_text: str, case: str, changes: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bundle(_edited(good_text, **changes), source="alice.bundle.toml")
    assert info.value.key == key, (case, str(info.value))
    assert info.value.fix, "every bundle error says how to fix it"
    assert "alice.bundle.toml" in str(info.value)


def test_bundle_not_toml_and_oversize() -> None:
    with pytest.raises(ConfigError) as info:
        parse_bundle("x = [", source="f")
    assert info.value.key == "f"
    with pytest.raises(ConfigError) as info:
        parse_bundle("# " + "x" * MAX_BUNDLE_BYTES, source="f")
    assert "bytes" in info.value.problem


def test_load_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_bundle(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError):
        load_bundle(tmp_path / "bin.toml")
    (tmp_path / "big.toml").write_bytes(b"#" * (MAX_BUNDLE_BYTES + 1))
    with pytest.raises(ConfigError):
        load_bundle(tmp_path / "big.toml")


def test_bundle_identity_refuses_expired(good_text: str) -> None:
    b = parse_bundle(good_text, source="t")
    with pytest.raises(ConfigError) as info:
        b.identity(now=NOW + 400 * DAY)
    assert info.value.key == "node_cert"
    assert b.problems(now=NOW) == []


# --- the TOML writer ------------------------------------------------------------------------------


@given(st.text(), st.lists(st.text(), max_size=4), st.integers(-(2**63), 2**63 - 1))
@settings(max_examples=300, deadline=None)
def test_toml_writer_round_trips_any_string(s: str, items: list[str], n: int) -> None:
    text = format_toml([("s", s), ("l", items), ("n", n), ("b", True)], header="a\nb")
    assert tomllib.loads(text) == {"s": s, "l": items, "n": n, "b": True}


@pytest.mark.parametrize(
    "s",
    ["'''", "a'''b", "ends with quote'", "x\n'", "tab\there\n", "cr\r\nlf\n", '"""\n', "\\\n"],
)
def test_toml_writer_tricky_multiline(s: str) -> None:
    assert tomllib.loads(format_toml([("k", s)]))["k"] == s


# --- names bound to certificates, and revocation ------------------------------------------------


def _register(ws: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((ws / "home" / "lab-net" / "issued.json").read_text())
    return doc


def test_a_name_or_hostname_already_issued_is_refused(ws: Path, run: Run) -> None:
    assert run("--home", "home", "node", "lab-net", "alice", "--hostname", "web")[0] == 0
    rc, out, err = run(
        "--home", "home", "node", "lab-net", "bob", "--hostname", "web", "--out", "b.toml"
    )
    assert (rc, out) == (2, "")
    assert "hostname 'web' belongs to node 'alice'" in err
    assert "ipop-config revoke lab-net alice" in err
    before = (ws / "home" / "lab-net" / "issued.json").read_bytes()
    # --force re-issues bob; it does not take alice's hostname.
    rc, _, err = run(
        "--home",
        "home",
        "node",
        "lab-net",
        "bob",
        "--hostname",
        "web",
        "--out",
        "b.toml",
        "--force",
    )
    assert rc == 2 and "belongs to node 'alice'" in err
    rc, _, err = run("--home", "home", "node", "lab-net", "alice", "--out", "a2.toml")
    assert rc == 2 and "already has a live certificate" in err and "--force" in err
    assert not (ws / "b.toml").exists() and not (ws / "a2.toml").exists()
    assert (ws / "home" / "lab-net" / "issued.json").read_bytes() == before
    # Once alice is revoked, the hostname is free again.
    assert run("--home", "home", "revoke", "lab-net", "alice")[0] == 0
    assert run("--home", "home", "node", "lab-net", "bob", "--hostname", "web")[0] == 0


def test_force_reissue_revokes_the_previous_certificate(ws: Path, run: Run) -> None:
    assert run("--home", "home", "node", "lab-net", "bob", "--out", "old.toml")[0] == 0
    old = load_bundle(ws / "old.toml")
    rc, out, _ = run("--home", "home", "node", "lab-net", "bob", "--force")
    assert rc == 0 and "revoked 1 earlier certificate" in out
    new = load_bundle(ws / "bob.bundle.toml")
    assert new.crl_pem is not None  # the new bundle carries the CRL in force
    rc, out, _ = run("show", "bob.bundle.toml", "--json")
    assert rc == 0 and json.loads(out)["crl_number"] == 1
    identity = new.identity(now=NOW)
    assert identity.trust.crl_number == 1
    assert identity.trust.is_revoked(old.node_cert)
    with pytest.raises(CertificateError) as info:
        identity.trust.verify(old.node_cert.der, now=NOW)
    assert info.value.reason == "cert_revoked"
    assert identity.trust.verify(new.node_cert.der, now=NOW) == new.node_cert
    certs = _register(ws)["certs"]
    assert isinstance(certs, list)
    assert [(c["node_id"], c["revoked_at"] is not None) for c in certs] == [
        (old.node_id.hex(), True),
        (new.node_id.hex(), False),
    ]


def test_revoke_writes_a_crl_that_openssl_and_catrust_read(ws: Path, run: Run) -> None:
    for name in ("alice", "bob", "carol"):
        assert run("--home", "home", "node", "lab-net", name)[0] == 0
    alice = load_bundle(ws / "alice.bundle.toml")
    bob = load_bundle(ws / "bob.bundle.toml")
    carol = load_bundle(ws / "carol.bundle.toml")
    rc, out, _ = run("--home", "home", "revoke", "lab-net", "alice", "--out", "first.crl.pem")
    assert rc == 0 and "CRL number 1" in out
    # By node id prefix this time; the network's CRL file always holds the newest.
    rc, out, _ = run("--home", "home", "revoke", "lab-net", bob.node_id.hex()[:10], now=NOW + 5)
    assert rc == 0 and "CRL number 2" in out
    crl_file = ws / "home" / "lab-net" / "lab-net.crl.pem"
    trust = carol.trust.fork()
    trust.apply_crl((ws / "first.crl.pem").read_bytes(), now=NOW)
    assert trust.is_revoked(alice.node_cert) and not trust.is_revoked(bob.node_cert)
    trust.apply_crl(crl_file.read_bytes(), now=NOW + 5)
    assert trust.crl_number == 2
    assert trust.is_revoked(alice.node_cert) and trust.is_revoked(bob.node_cert)
    assert not trust.is_revoked(carol.node_cert)
    with pytest.raises(CrlError):  # the first one is older now
        trust.apply_crl((ws / "first.crl.pem").read_bytes(), now=NOW + 6)
    # Revoking what is already revoked, or someone never issued, is an error.
    assert run("--home", "home", "revoke", "lab-net", "alice")[0] == 2
    assert run("--home", "home", "revoke", "lab-net", "nobody")[0] == 2
    if shutil.which("openssl"):
        text = subprocess.run(
            ["openssl", "crl", "-in", str(crl_file), "-text", "-noout"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert "CRL Number" in text and "ipop CA lab-net" in text
        assert text.count("Serial Number:") == 2


def test_revoked_certificates_leave_the_crl_when_they_expire(ws: Path, run: Run) -> None:
    assert run("--home", "home", "node", "lab-net", "brief", "--days", "1")[0] == 0
    assert run("--home", "home", "node", "lab-net", "long")[0] == 0
    assert run("--home", "home", "revoke", "lab-net", "brief")[0] == 0
    crl_file = ws / "home" / "lab-net" / "lab-net.crl.pem"
    one = len(crl_file.read_bytes())
    assert run("--home", "home", "revoke", "lab-net", "long", now=NOW + 2 * DAY)[0] == 0
    two = crl_file.read_bytes()
    # brief's certificate expired: the list names only long's.
    assert len(two) <= one + 8
    bundle = load_bundle(ws / "long.bundle.toml")
    trust = bundle.trust.fork()
    trust.apply_crl(two, now=NOW)
    assert trust.is_revoked(bundle.node_cert) and trust.crl_number == 2


# --- router certificates (issue 13: a router's LAN hosts are issued under its authority) --------


def test_router_node_carries_its_host_quota(ws: Path, run: Run) -> None:
    rc, out, err = run(
        "--home", "home", "node", "lab-net", "r1", "--hostname", "lab", "--router",
        "--max-hosts", "40",
    )  # fmt: skip
    assert (rc, err) == (0, "")
    assert "router for up to 40 LAN hosts" in out
    bundle = load_bundle(ws / "r1.bundle.toml")
    assert bundle.node_cert.router_hosts == 40 and bundle.node_cert.is_router
    rc, out, err = run("show", str(ws / "r1.bundle.toml"), "--json")
    assert json.loads(out)["router_hosts"] == 40
    # The default quota is router.max_hosts' default; a plain node has none.
    assert run("--home", "home", "node", "lab-net", "r2", "--hostname", "r2", "--router")[0] == 0
    assert load_bundle(ws / "r2.bundle.toml").node_cert.router_hosts == 1024
    assert run("--home", "home", "node", "lab-net", "plain")[0] == 0
    assert load_bundle(ws / "plain.bundle.toml").node_cert.router_hosts == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-hosts", "4"], "--max-hosts is only for routers"),
        (["--router"], "a router needs --hostname"),
        (["--router", "--hostname", "lab", "--max-hosts", "0"], "--max-hosts 0 is out of range"),
        (["--router", "--hostname", "lab", "--max-hosts", "65537"], "out of range"),
    ],
)
def test_router_flags_are_checked(ws: Path, run: Run, args: list[str], needle: str) -> None:
    before = snapshot(ws)
    rc, _, err = run("--home", "home", "node", "lab-net", "r1", *args)
    assert rc == 2 and needle in err
    assert snapshot(ws) == before
