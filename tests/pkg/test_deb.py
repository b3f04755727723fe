"""The Debian package: ``deploy/debian/build.sh`` builds it, ``deploy/debian/trial.sh`` installs,
runs and purges it in a throwaway Debian root (never on this machine's own root filesystem).

The first tests read the built ``.deb``: what it holds and where (the venv in /usr/lib/ipop, the
commands linked into /usr/bin, the units of deploy/ pointed at them, the example configuration
as the one conffile), and that no file names the folder it was staged in. The last one runs the
trial, which debootstraps a minimal bookworm root (about a minute, from the Debian mirror apt
uses here) and checks each step itself (its docstring lists them); the test asserts that every
check passed. ``IPOP_DEB_BASE=DIR`` keeps the debootstrapped root in DIR for later runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.deb, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
DEBIAN = ROOT / "deploy" / "debian"
SCRIPTS = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
APP = "usr/lib/ipop"
TRIAL_CHECKS = (
    "user and group ipop, /etc/ipop root:ipop 0750, node.toml 0640",
    "nothing enabled without a bundle",
    "every shared library of /usr/lib/ipop found",
    "systemd-analyze verify: no warning",
    "the control socket answers",
    "ipop ping boot.ipop: answered over the tunnel",
    "ipopd runs as ipop with CAP_NET_ADMIN + CAP_NET_BIND_SERVICE only",
    "ipopd stopped on SIGTERM, exit 0",
    "dpkg -r: disabled, program gone, /etc/ipop and the user kept",
    "no file, user or group left",
    "with a bundle in place, the first install enables ipopd.service (only)",
)


@dataclass(frozen=True)
class Deb:
    path: Path
    tree: Path  # its files, unpacked
    control: dict[str, str]


def _run(argv: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Deb:
    for tool, package in (("dpkg-deb", "dpkg"), ("/usr/bin/python3.11", "python3.11")):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}: apt-get install {package}")
    out = tmp_path_factory.mktemp("deb")
    p = _run(["bash", str(DEBIAN / "build.sh"), "--out", str(out)], 300, PYTHON=sys.executable)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    (path,) = out.glob("ipop_*.deb")
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-R", str(path), str(tree)], check=True, timeout=60)
    fields = (tree / "DEBIAN" / "control").read_text().split("\n ")[0].splitlines()
    control = dict(line.split(": ", 1) for line in fields if ": " in line)
    return Deb(path, tree, control)


def test_deb_control_names_the_package_and_what_it_needs(deb: Deb) -> None:
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert deb.control["Package"] == "ipop" and deb.control["Architecture"] == arch
    assert deb.control["Version"] == "0.1.0-1"
    depends = {d.strip() for d in deb.control["Depends"].split(",")}
    assert {"python3.11", "libssl3", "passwd"} <= depends, depends
    assert deb.path.name == f"ipop_0.1.0-1_{arch}.deb"


def test_deb_holds_a_venv_on_debians_python_and_links_every_command(deb: Deb) -> None:
    venv = deb.tree / APP
    assert os.readlink(venv / "bin" / "python3.11") == "/usr/bin/python3.11"
    assert "home = /usr/bin" in (venv / "pyvenv.cfg").read_text()
    assert not list(venv.glob("bin/pip*")) and not list(venv.glob("bin/activate*"))
    for script in SCRIPTS:
        assert os.readlink(deb.tree / "usr" / "bin" / script) == f"/{APP}/bin/{script}"
        first = (venv / "bin" / script).read_text().splitlines()[0]
        assert first == f"#!/{APP}/bin/python", (script, first)
    (site,) = venv.glob("lib/python3.11/site-packages")
    assert (site / "ipop" / "router" / "daemon.py").is_file()
    assert not (site / "ipop" / "router").is_symlink()


def test_deb_names_no_staging_folder(deb: Deb) -> None:
    # The venv was made in /tmp/ipop-deb.XXXXXX/pkg: no script, .pyc or record may name it.
    p = _run(["grep", "-rlF", "/tmp/ipop-deb.", str(deb.tree / APP)], 60)
    assert p.returncode == 1, p.stdout[:2000]


def test_deb_units_are_deploys_run_from_usr_bin(deb: Deb) -> None:
    for unit in ("ipopd.service", "ipop-router.service"):
        packaged = (deb.tree / "lib" / "systemd" / "system" / unit).read_text()
        source = (ROOT / "deploy" / unit).read_text()
        header, body = packaged.split("\n", 1)
        assert header.startswith("# Installed by the ipop Debian package")
        assert body == source.replace("/usr/local/", "/usr/"), unit
    ipopd = (deb.tree / "lib" / "systemd" / "system" / "ipopd.service").read_text()
    assert "\nExecStart=/usr/bin/ipopd --config /etc/ipop/node.toml\n" in ipopd


def test_deb_configuration_is_the_example_and_the_polkit_rule(deb: Deb) -> None:
    assert (deb.tree / "DEBIAN" / "conffiles").read_text().split() == ["/etc/ipop/node.toml"]
    node = (deb.tree / "etc" / "ipop" / "node.toml").read_text()
    assert node == (ROOT / "deploy" / "ipop.example.toml").read_text()
    assert '\nbundle = "node.bundle.toml"\n' in node
    rule = deb.tree / "usr" / "share" / "polkit-1" / "rules.d" / "50-ipop-resolved.rules"
    assert rule.read_text() == (ROOT / "deploy" / "50-ipop-resolved.rules").read_text()
    for script in ("postinst", "prerm", "postrm"):
        path = deb.tree / "DEBIAN" / script
        assert path.stat().st_mode & 0o111, script
        assert _run(["sh", "-n", str(path)], 10).returncode == 0, script


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chroot, network namespaces")
@pytest.mark.skipif(
    shutil.which("debootstrap") is None, reason="needs debootstrap: apt-get install debootstrap"
)
def test_deb_installs_runs_ipopd_from_a_bundle_and_purges_cleanly(deb: Deb) -> None:
    argv = ["bash", str(DEBIAN / "trial.sh"), str(deb.path)]
    if base := os.environ.get("IPOP_DEB_BASE"):
        argv += ["--base", base]
    p = _run(argv, 540)
    transcript = p.stdout + p.stderr
    assert p.returncode == 0, transcript[-4000:]
    assert transcript.rstrip().splitlines()[-1].startswith("deb trial: OK"), transcript[-2000:]
    passed = [ln.strip()[4:] for ln in transcript.splitlines() if ln.startswith("   ok: ")]
    for check in TRIAL_CHECKS:
        assert any(ok.startswith(check) for ok in passed), (check, passed)
    # Both purges (after dpkg -r, and after an install that enabled the unit) left nothing.
    assert sum(ok.startswith("no file, user or group left") for ok in passed) == 2, passed
