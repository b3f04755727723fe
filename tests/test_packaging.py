"""The sdist and the wheel ``python -m build`` makes, and the wheel installed into a fresh venv
outside the clone, as a user would.

What they hold: one top-level import name, ``ipop`` (router/, dhcp_dns/ and tools/ go in as
ipop.router, ipop.dhcp_dns and ipop.tools, the import names docs/architecture.toml gives them),
and every module of those folders, as real files in both (the clone reaches them through
symbolic links); the licence as an SPDX expression with its file; the native module's source in
the sdist, its build in the wheel, and a wheel without it (the pure path) from the same sdist
when no compiler works. Installed, every console script of pyproject.toml answers,
``ipop-sim`` and ``ipop-config`` do real work, and (as root) ``ipop-lab bench`` brings up two
``ipopd`` from the installed venv, with no clone on the path.

The tree is copied before the build: setuptools writes its egg-info next to the sources, and
packs whatever an earlier build left in ``build/lib``. ``python -m build`` builds the sdist,
then the wheel from the unpacked sdist, so the wheel holds only what the sdist carried. Its
isolated build environment and the venv come from pip's configured index, as ``tools/run.sh``
installs the dev venv, so this works wherever CI's install did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
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
class Built:
    sdist: Path
    wheel: Path
    log: str  # what python -m build printed


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    work: Path  # cwd of every command: neither the clone nor its parent

    def run(
        self, argv: Sequence[str], timeout: float = 120, **env_extra: str
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        env.update(env_extra)
        return subprocess.run(
            argv,
            cwd=self.work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, argv: Sequence[str], timeout: float = 120, **env_extra: str) -> str:
        p = self.run(argv, timeout, **env_extra)
        assert p.returncode == 0, f"{' '.join(argv)}: rc {p.returncode}\n{p.stderr[-2000:]}"
        return p.stdout


def _step(argv: Sequence[str], **env_extra: str) -> str:
    env = {**os.environ, **env_extra}
    p = subprocess.run(
        argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False, env=env
    )
    assert p.returncode == 0, f"{' '.join(argv)}: rc {p.returncode}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("build")
    src = base / "src"
    # symlinks=True: the links ipop/router -> ../router are what the build follows.
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(*NOT_COPIED))
    log = _step([sys.executable, "-m", "build", "--outdir", str(base / "dist"), str(src)])
    (sdist,) = (base / "dist").glob("ipop-*.tar.gz")
    (wheel,) = (base / "dist").glob("ipop-*.whl")
    return Built(sdist, wheel, log)


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("venv")
    venv = base / "venv"
    _step([sys.executable, "-m", "venv", str(venv)])
    _step([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(built.wheel)])
    work = base / "work"
    work.mkdir()
    return Installed(built.wheel, venv, work)


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


def test_wheel_has_no_top_level_name_but_ipop(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as z:
        names = z.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
        top_level = z.read(f"{info}/top_level.txt").decode().split()
    assert {n.split("/")[0] for n in names} == {"ipop", info}
    assert top_level == ["ipop"]


def test_wheel_holds_every_module_of_the_card(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as z:
        names = set(z.namelist())
    want = _sources()
    assert "ipop/tools/bench/floor_tunnel.py" in want.values()  # a namespace package too
    missing = sorted(f"{src} (as {dst})" for src, dst in want.items() if dst not in names)
    assert not missing, "\n".join(missing)
    extra = sorted(n for n in names if n.endswith(".py") and n not in set(want.values()))
    assert not extra, "\n".join(extra)


def test_sdist_holds_real_files_of_every_module(built: Built) -> None:
    with tarfile.open(built.sdist) as t:
        members = {m.name.split("/", 1)[1]: m for m in t.getmembers() if "/" in m.name}
    links = sorted(n for n, m in members.items() if m.issym() or m.islnk())
    assert not links, links
    files = {n for n, m in members.items() if m.isfile()}
    missing = sorted(f"{src} (as {dst})" for src, dst in _sources().items() if dst not in files)
    assert not missing, "\n".join(missing)
    for need in ("setup.py", "pyproject.toml", "LICENSE", "ipop/link/_fastpath.c"):
        assert need in files, need
    assert "deploy/ipopd.service" in files and "deploy/debian/postinst" in files
    top = {n.split("/")[0] for n in members}
    assert not top & {"router", "dhcp_dns", "tools", "tests"}, sorted(top)


def test_licence_is_an_spdx_expression_with_its_file(built: Built) -> None:
    # setuptools >= 77 reads the SPDX form; the table form it warns about is gone.
    assert "deprecated" not in built.log, [ln for ln in built.log.splitlines() if "deprecat" in ln]
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]
    with zipfile.ZipFile(built.wheel) as z:
        info = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = z.read(f"{info}/METADATA").decode()
        licence = z.read(f"{info}/licenses/LICENSE").decode()
    assert "License-Expression: MIT" in meta.splitlines()
    assert licence == (ROOT / "LICENSE").read_text() and licence.startswith("MIT License")


def test_wheel_carries_the_native_module_built_from_the_sdist(built: Built) -> None:
    from ipop.link import fastpath

    with zipfile.ZipFile(built.wheel) as z:
        names = z.namelist()
    native = [n for n in names if n.startswith("ipop/link/_fastpath") and n.endswith(".so")]
    assert not [n for n in names if n.endswith(".c")]  # the source stays in the sdist
    if fastpath.BACKEND != "native":
        pytest.skip("this machine does not build the native module (gcc, python3-dev, libssl-dev)")
    assert len(native) == 1, names
    assert "-cp311-" in built.wheel.name and "linux" in built.wheel.name  # platform-specific


def test_sdist_without_a_compiler_builds_the_pure_path(
    built: Built, installed: Installed, tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    log = _step(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(built.sdist)],
        CC="/bin/false",
    )
    assert 'building extension "ipop.link._fastpath" failed' in log
    (wheel,) = out.glob("ipop-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert not [n for n in z.namelist() if n.endswith(".so")]
    # Unpacked over the installed venv's dependencies: the pure path, and ipopd answers.
    target = tmp_path / "pure"
    installed.ok(
        ["python", "-m", "pip", "install", "-q", "--no-deps", "-t", str(target), str(wheel)]
    )
    code = (
        "from ipop.link import fastpath as f; import ipop.tools.ipopd; print(f.BACKEND, f.__file__)"
    )
    backend, where = installed.ok(["python", "-c", code], PYTHONPATH=str(target)).split()
    assert backend == "python" and Path(where).is_relative_to(target), (backend, where)


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
