"""The wheel, built and installed into a fresh venv outside the clone, as a user would.

What it holds: one top-level import name, ``ipop`` (router/, dhcp_dns/ and tools/ go in as
ipop.router, ipop.dhcp_dns and ipop.tools, the import names docs/architecture.toml gives them),
and every module of those folders; installed, every console script of pyproject.toml answers,
``ipop-sim`` and ``ipop-config`` do real work, and (as root) ``ipop-lab bench`` brings up two
``ipopd`` from the installed venv, with no clone on the path.

The tree is copied before the build: setuptools packs whatever an earlier build left in
``build/lib``, and a stale top-level ``tools`` there would pass for one the wheel ships. The
wheel is built and installed with pip as ``tools/run.sh`` installs the dev venv (same build
requirements, same index and cache), so it works wherever CI's install did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CARD = tomllib.loads((ROOT / "docs" / "architecture.toml").read_text())
SCRIPTS = ("ipopd", "ipop", "ipop-config", "ipop-router", "ipop-lab", "ipop-sim")
NOT_COPIED = (
    ".venv",
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "lab-runs",
)
STEP_TIMEOUT_S = 600


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    work: Path  # cwd of every command: neither the clone nor its parent

    def run(self, argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        return subprocess.run(
            argv,
            cwd=self.work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, argv: Sequence[str], timeout: float = 120) -> str:
        p = self.run(argv, timeout)
        assert p.returncode == 0, f"{' '.join(argv)}: rc {p.returncode}\n{p.stderr[-2000:]}"
        return p.stdout


def _step(argv: Sequence[str]) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False)
    assert p.returncode == 0, f"{' '.join(argv)}: rc {p.returncode}\n{p.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    # symlinks=True: the links ipop/router -> ../router are what the build follows.
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*NOT_COPIED))
    _step([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base), str(src)])
    (wheel,) = base.glob("ipop-*.whl")
    venv = base / "venv"
    _step([sys.executable, "-m", "venv", str(venv)])
    _step([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)])
    work = base / "work"
    work.mkdir()
    return Installed(wheel, venv, work)


def _sources() -> dict[str, str]:
    """Each module of the card's folders -> where the wheel must hold it."""
    want = {}
    for folder, name in CARD["packages"].items():
        for file in (ROOT / folder).rglob("*.py"):
            inner = file.relative_to(ROOT / folder)
            if (ROOT / folder / inner.parts[0]).is_symlink() or "__pycache__" in inner.parts:
                continue
            want[file.relative_to(ROOT).as_posix()] = "/".join([*name.split("."), *inner.parts])
    return want


def test_pyproject_names_the_six_commands_and_one_package() -> None:
    assert tuple(PYPROJECT["project"]["scripts"]) == SCRIPTS
    assert all(v.startswith("ipop.") for v in PYPROJECT["project"]["scripts"].values())
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["ipop", "ipop.*"]
    for folder, name in CARD["packages"].items():
        assert name == "ipop" or name == f"ipop.{folder}", (folder, name)
        if folder != name:
            link = ROOT / "ipop" / folder
            assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve(), link


def test_wheel_has_no_top_level_name_but_ipop(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as z:
        names = z.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
        top_level = z.read(f"{info}/top_level.txt").decode().split()
    assert {n.split("/")[0] for n in names} == {"ipop", info}
    assert top_level == ["ipop"]


def test_wheel_holds_every_module_of_the_card(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as z:
        names = set(z.namelist())
    want = _sources()
    assert "ipop/tools/bench/floor_tunnel.py" in want.values()  # a namespace package too
    missing = sorted(f"{src} (as {dst})" for src, dst in want.items() if dst not in names)
    assert not missing, "\n".join(missing)
    extra = sorted(n for n in names if n.endswith(".py") and n not in set(want.values()))
    assert not extra, "\n".join(extra)


@pytest.mark.parametrize("script", SCRIPTS)
def test_installed_command_answers_help(installed: Installed, script: str) -> None:
    out = installed.ok([str(installed.venv / "bin" / script), "--help"])
    assert out.startswith("usage:"), out[:200]


def test_installed_venv_has_no_generic_import_names(installed: Installed) -> None:
    py = str(installed.venv / "bin" / "python")
    for name in ("tools", "router", "dhcp_dns"):
        p = installed.run([py, "-c", f"import {name}"])
        assert p.returncode != 0 and f"No module named '{name}'" in p.stderr, (name, p.stderr)
    code = (
        "import ipop.router.daemon, ipop.dhcp_dns.services, ipop.tools.lab.bench, "
        "ipop.tools.bench.floor_tunnel as m; print(m.__file__)"
    )
    where = Path(installed.ok([py, "-c", code]).strip())
    assert where.is_relative_to(installed.venv), where


def test_installed_sim_and_config_do_real_work(installed: Installed) -> None:
    bin_ = installed.venv / "bin"
    out = installed.ok([str(bin_ / "ipop-sim"), "overlay", "--nodes", "20", "--json"], 300)
    report = json.loads(out)
    assert report["nodes"] == 20 and report["ring_consistent"] is True
    home, bundle = installed.work / "home", installed.work / "a.bundle.toml"
    cfg = [str(bin_ / "ipop-config"), "--home", str(home)]
    installed.ok(
        [*cfg, "init", "pkgnet", "--subnet", "100.64.0.0/10", "--bootstrap", "198.51.100.1:5800"]
    )
    installed.ok([*cfg, "node", "pkgnet", "a", "--hostname", "pa", "--out", str(bundle)])
    text = bundle.read_text()
    assert 'network = "pkgnet"' in text and "BEGIN CERTIFICATE" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds network namespaces")
def test_installed_lab_bench_runs_two_ipopd(installed: Installed) -> None:
    # The bench starts ipop-config and both ipopd with the interpreter it runs on: from this
    # venv, with no clone (and no .venv) anywhere on the path.
    argv = [str(installed.venv / "bin" / "ipop-lab"), "bench", "--systems", "ipop"]
    out = installed.ok([*argv, "--duration", "1", "--pings", "3", "--json"], 180)
    (row,) = json.loads(out)["results"]
    assert row["system"] == "ipop" and "error" not in row, row
    assert row["mbit_s"] > 0 and row["rtt_ms"] > 0
