"""Enforces DESIGN.md §2: imports point down only, and protocol cores do no I/O.

Each forbidden edge carries the reason it is forbidden, so a failure explains itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ipop", "router", "dhcp_dns", "tools")

# (importer prefix, imported prefix, reason). Prefixes match whole dotted components.
FORBIDDEN: list[tuple[str, str, str]] = [
    ("ipop", "router", "the core must not know about router mode; router builds on the core"),
    ("ipop", "dhcp_dns", "the core must not know its DHCP/DNS consumers; they build on it"),
    ("ipop", "tools", "tools are composition roots: nothing imports them"),
    ("router", "tools", "tools are composition roots: nothing imports them"),
    ("dhcp_dns", "tools", "tools are composition roots: nothing imports them"),
    ("dhcp_dns", "router", "router mode reuses DHCP/DNS, not the other way round"),
]
# Run-time code never depends on the simulator; only tests, the ipop-sim tool, benchmarks and
# the lab's hostile build (an attacker for attack tests, never a daemon anyone deploys) may.
TESTING_ALLOWED = ("ipop.testing", "tools.sim", "tools.bench", "tools.lab.hostile")

# Protocol cores are sans-IO: time, randomness sources and I/O come in from the driver.
CORES = ("ipop.wire", "ipop.link", "ipop.overlay", "ipop.vnet")
CORE_FORBIDDEN_MODULES = {
    "asyncio": "cores are driven by ipop.aio; an event loop inside them cannot be simulated",
    "socket": "only ipop.aio touches sockets",
    "time": "cores take `now` as an argument so the simulator can drive them",
    "threading": "cores are single-threaded state machines",
    "select": "only ipop.aio waits on file descriptors",
    "selectors": "only ipop.aio waits on file descriptors",
    "subprocess": "cores never run programs",
    "secrets": "randomness is injected so simulations are reproducible",
    "scapy": "scapy costs 160-650 us per packet; never on a core path (DESIGN.md §8)",
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join(parts), path))
    return found


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                drop = node.level - 1 if is_pkg else node.level
                base = base[: len(base) - drop] if drop else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
    return out


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


MODULES = _modules()


def test_modules_found() -> None:
    names = {m for m, _ in MODULES}
    assert "ipop.types" in names and "ipop.testing.clock" in names


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down(name: str, path: Path) -> None:
    problems = []
    for mod, line in _imports(name, path):
        for src, dst, why in FORBIDDEN:
            if _under(name, src) and _under(mod, dst):
                problems.append(f"{path.name}:{line} imports {mod}: {why}")
        if _under(mod, "ipop.testing") and not any(_under(name, a) for a in TESTING_ALLOWED):
            problems.append(
                f"{path.name}:{line} imports {mod}: the simulator and fakes are for tests only"
            )
        if any(_under(name, c) for c in CORES):
            top = mod.split(".")[0]
            if top in CORE_FORBIDDEN_MODULES:
                problems.append(f"{path.name}:{line} imports {mod}: {CORE_FORBIDDEN_MODULES[top]}")
            if _under(mod, "ipop.aio"):
                problems.append(f"{path.name}:{line} imports {mod}: cores sit below the driver")
    assert not problems, "\n".join(problems)


def test_checker_catches_a_bad_edge(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import time\nfrom ipop.aio import driver\n")
    mods = [m for m, _ in _imports("ipop.link.x", bad)]
    assert mods == ["time", "ipop.aio"]
