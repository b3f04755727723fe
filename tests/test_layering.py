"""Enforces the layering card, docs/architecture.toml (docs/design.md §2).

The card is the one source of truth: which part each module belongs to, the arrows imports may
follow, the edges that must never exist (each with its reason), the sans-IO cores and the
modules they must not import, and the known exceptions. This file only reads it and judges
every import of every module of the card's packages against it, so a failure names the file,
the line, the rule and the rule's reason.

The checker (:func:`check`) works on any tree and any card, so the tests at the end feed it a
small fake tree to show that each rule can fail.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "docs" / "architecture.toml"


@dataclass(frozen=True)
class Part:
    name: str
    level: int
    paths: tuple[str, ...]
    is_: str


@dataclass(frozen=True)
class Never:
    sources: frozenset[str]
    target: str
    why: str


@dataclass(frozen=True)
class Only:
    of: tuple[str, ...]
    by: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Exception_:
    module: str
    imports: str
    why: str


@dataclass(frozen=True)
class Card:
    name: str
    packages: dict[str, str]  # folder -> the import name it is installed under
    shared: str
    parts: dict[str, Part]
    arrows: frozenset[tuple[str, str]]
    never: tuple[Never, ...]
    only: tuple[Only, ...]
    sans_io: tuple[str, ...]
    forbidden: dict[str, str]
    global_random: str
    exceptions: tuple[Exception_, ...]

    def reachable(self, src: str) -> set[str]:
        """Parts `src` may import: along the arrows, transitively."""
        seen: set[str] = set()
        todo = [src]
        while todo:
            here = todo.pop()
            for a, b in self.arrows:
                if a == here and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    def never_reason(self, src: str, dst: str) -> str | None:
        for n in self.never:
            if n.target == dst and ("*" in n.sources or src in n.sources):
                return n.why
        return None


_KEYS = {
    "": {"packages", "shared", "arrows", "parts", "never", "only", "sans_io", "exceptions"},
    "part": {"level", "is", "paths"},
    "never": {"from", "to", "why"},
    "only": {"of", "by", "why"},
    "sans_io": {"paths", "global_random", "forbidden"},
    "exceptions": {"module", "imports", "why"},
}


def _strict(where: str, table: dict[str, Any], kind: str) -> None:
    # A key TOML put in the wrong table (say, `arrows` written after a [parts.X] header) must
    # not be ignored silently: the rule it carries would simply not be checked.
    unknown = set(table) - _KEYS[kind]
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}, expected {sorted(_KEYS[kind])}")


def load_card(path: Path) -> Card:
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    _strict(path.name, raw, "")
    for name, p in raw["parts"].items():
        _strict(f"{path.name} [parts.{name}]", p, "part")
    for kind in ("never", "only", "exceptions"):
        for i, entry in enumerate(raw.get(kind, [])):
            _strict(f"{path.name} [[{kind}]] #{i + 1}", entry, kind)
    _strict(f"{path.name} [sans_io]", raw.get("sans_io", {}), "sans_io")
    parts = {
        name: Part(name, int(p["level"]), tuple(p["paths"]), str(p["is"]))
        for name, p in raw["parts"].items()
    }
    never = tuple(
        Never(
            frozenset([n["from"]] if isinstance(n["from"], str) else n["from"]), n["to"], n["why"]
        )
        for n in raw.get("never", [])
    )
    sans_io = raw.get("sans_io", {})
    return Card(
        name=path.name,
        packages=_packages(raw["packages"]),
        shared=raw.get("shared", ""),
        parts=parts,
        arrows=frozenset((a, b) for a, b in raw.get("arrows", [])),
        never=never,
        only=tuple(Only(tuple(o["of"]), tuple(o["by"]), o["why"]) for o in raw.get("only", [])),
        sans_io=tuple(sans_io.get("paths", [])),
        forbidden=dict(sans_io.get("forbidden", {})),
        global_random=sans_io.get("global_random", ""),
        exceptions=tuple(
            Exception_(e["module"], e["imports"], e["why"]) for e in raw.get("exceptions", [])
        ),
    )


def _packages(raw: list[str] | dict[str, str]) -> dict[str, str]:
    """`packages` is a list of folders imported under their own names, or a table from folder
    to import name (router = "ipop.router": router/daemon.py is the module ipop.router.daemon)."""
    return {f: f for f in raw} if isinstance(raw, list) else dict(raw)


def card_errors(card: Card) -> list[str]:
    """What is wrong with the card itself (names, directions, contradictions)."""
    errors = []
    known = set(card.parts)
    reasons = [n.why for n in card.never] + [o.why for o in card.only]
    reasons += [e.why for e in card.exceptions] + list(card.forbidden.values())
    if not all(r.strip() for r in reasons) or not all(p.is_.strip() for p in card.parts.values()):
        errors.append("every part says what it is and every rule and exception says why")
    for part in card.parts.values():
        errors += [
            f"part {part.name}: path {p!r} must end with '/' (a folder) or '.py' (a module)"
            for p in part.paths
            if not (p.endswith("/") or p.endswith(".py"))
        ]
    if card.shared and card.shared not in known:
        errors.append(f"shared part {card.shared} is not a part")
    for a, b in sorted(card.arrows):
        if a not in known or b not in known:
            errors.append(f"arrow {a} -> {b} names a part the card does not have")
        elif card.parts[b].level >= card.parts[a].level:
            errors.append(
                f"arrow {a} -> {b} does not point down (levels {a}: "
                f"{card.parts[a].level}, {b}: {card.parts[b].level})"
            )
        elif a == card.shared:
            errors.append(f"arrow {a} -> {b}: the shared part imports no other part")
    for n in card.never:
        for src in sorted((known - {n.target}) if "*" in n.sources else n.sources):
            if src not in known or n.target not in known:
                errors.append(f"never {src} -> {n.target} names a part the card does not have")
            elif n.target in card.reachable(src) or n.target == card.shared:
                errors.append(f"never {src} -> {n.target} contradicts the arrows, which allow it")
    return errors


@dataclass(frozen=True)
class Module:
    name: str  # dotted: ipop.link.endpoint
    path: str  # relative to the root, with '/': ipop/link/endpoint.py
    file: Path


@dataclass(frozen=True)
class Problem:
    rule: str  # "part" (a module's part), "import" (an import or call), "stale" (an exception)
    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def modules(root: Path, packages: dict[str, str]) -> dict[str, Module]:
    """Every module under the `packages` folders, by the dotted name it is imported as."""
    found = {}
    for folder, name in packages.items():
        for file in sorted((root / folder).rglob("*.py")):
            rel = file.relative_to(root)
            inner = rel.relative_to(folder).with_suffix("").parts
            # ipop/router is a link to ../router: its modules are found once, under router/.
            if any((root / folder / Path(*inner[:i])).is_symlink() for i in range(len(inner))):
                continue
            names = [*name.split("."), *inner]
            if names[-1] == "__init__":
                names.pop()
            found[".".join(names)] = Module(".".join(names), rel.as_posix(), file)
    return found


def _tree(file: Path) -> ast.Module:
    return _parse(file.read_text(), str(file))


@functools.cache
def _parse(text: str, filename: str) -> ast.Module:
    # Keyed by the text, so a test that rewrites a fake module is not served the old tree.
    return ast.parse(text, filename=filename)


def imports(mod: Module, known: dict[str, Module]) -> list[tuple[str, int]]:
    """Dotted names `mod` imports, with their lines; `from pkg import sub` gives pkg.sub."""
    tree = _tree(mod.file)
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.name.split(".")
                drop = node.level - 1 if mod.file.name == "__init__.py" else node.level
                base = base[: len(base) - drop] if drop else base
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in known]
            out.extend((s, node.lineno) for s in subs)
            if len(subs) < len(node.names):
                out.append((name, node.lineno))
    return out


def global_random_uses(mod: Module) -> list[tuple[str, int]]:
    """Calls on the `random` module's global generator (anything but `random.Random`)."""
    tree = _tree(mod.file)
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "Random"
        ):
            out.append((f"random.{node.attr}", node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module == "random":
            out += [(f"random.{a.name}", node.lineno) for a in node.names if a.name != "Random"]
    return out


def _covers(path: str, prefix: str) -> bool:
    return path.startswith(prefix) if prefix.endswith("/") else path == prefix


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def parts_of(card: Card, path: str) -> list[str]:
    return [p.name for p in card.parts.values() if any(_covers(path, x) for x in p.paths)]


def _target(name: str, known: dict[str, Module]) -> Module | None:
    """The project module an import names (the longest known prefix), or None."""
    while name:
        if name in known:
            return known[name]
        name = name.rpartition(".")[0]
    return None


def _edge(card: Card, src: str, dst: str) -> str | None:
    """Why part `src` may not import part `dst`, or None when it may."""
    why = card.never_reason(src, dst)
    edge = f"{src} -> {dst}"
    if why is not None:
        return f"{edge} is forbidden: {why}"
    low, high = card.parts[src].level, card.parts[dst].level
    if high > low:
        return f"{edge} points up (level {low} to {high}): imports point down only"
    if dst != card.shared and dst not in card.reachable(src):
        return (
            f"{edge} is not an arrow of {card.name}: if the dependency is meant, add the "
            "arrow (pointing down), else import from a part below"
        )
    return None


def check(root: Path, card: Card) -> list[Problem]:
    """Every way the tree under `root` departs from `card`."""
    known = modules(root, card.packages)
    problems: list[Problem] = []
    part: dict[str, str] = {}
    for mod in known.values():
        owners = parts_of(card, mod.path)
        if len(owners) == 1:
            part[mod.path] = owners[0]
        elif not owners:
            hint = "add its path to the part it belongs to (and to [sans_io] if it does no I/O)"
            problems.append(
                Problem("part", mod.path, 0, f"belongs to no part of {card.name}: {hint}")
            )
        else:
            many = ", ".join(owners)
            text = f"belongs to parts {many} of {card.name}: a module has exactly one part"
            problems.append(Problem("part", mod.path, 0, text))
    used: set[Exception_] = set()

    def excused(mod: Module, name: str) -> bool:
        for e in card.exceptions:
            if e.module == mod.path and _under(name, e.imports):
                used.add(e)
                return True
        return False

    def core(path: str) -> bool:
        return any(_covers(path, p) for p in card.sans_io)

    def covered(path: str, prefixes: tuple[str, ...]) -> bool:
        return any(_covers(path, p) for p in prefixes)

    moved = {f: n for f, n in card.packages.items() if f != n}
    for mod in known.values():
        texts: list[tuple[int, str]] = []
        for name, line in imports(mod, known):
            if excused(mod, name):
                continue
            top, _, rest = name.partition(".")
            if top in moved:
                # The folder's own name imports only inside a clone; installed, it is not there.
                new = ".".join(filter(None, [moved[top], rest]))
                texts.append((line, f"imports {name}: {top}/ is installed as {moved[top]}: {new}"))
                continue
            tgt = _target(name, known)
            if core(mod.path):
                if name.split(".")[0] in card.forbidden:
                    texts.append((line, f"imports {name}: {card.forbidden[name.split('.')[0]]}"))
                if tgt is not None and not core(tgt.path):
                    why = f"a sans-IO core imports only sans-IO modules, and {tgt.path} is not one"
                    texts.append((line, f"imports {name}: {why}"))
            if tgt is None:
                continue
            texts += [
                (line, f"imports {name}: {o.why}")
                for o in card.only
                if covered(tgt.path, o.of) and not covered(mod.path, o.by)
            ]
            src, dst = part.get(mod.path), part.get(tgt.path)
            if src is not None and dst is not None and src != dst:
                why_not = _edge(card, src, dst)
                if why_not is not None:
                    texts.append((line, f"imports {name}: {why_not}"))
        if core(mod.path) and card.global_random:
            texts += [
                (line, f"uses {name}: {card.global_random}")
                for name, line in global_random_uses(mod)
                if not excused(mod, name)
            ]
        problems += [Problem("import", mod.path, line, text) for line, text in texts]
    stale = "is no longer needed: remove it from"
    problems += [
        Problem(
            "stale",
            e.module,
            0,
            f"the known exception for importing {e.imports} {stale} {card.name}",
        )
        for e in card.exceptions
        if e not in used
    ]
    return problems


# --- the project's own tree against its card ------------------------------------------------

THE_CARD = load_card(CARD)
MODULES = modules(ROOT, THE_CARD.packages)
PROBLEMS = check(ROOT, THE_CARD)


def test_modules_found() -> None:
    assert "ipop.types" in MODULES and "ipop.testing.clock" in MODULES
    assert "ipop.tools.lab.main" in MODULES and "ipop.router.daemon" in MODULES


def test_card_is_consistent() -> None:
    errors = card_errors(THE_CARD)
    assert not errors, "\n".join(errors)


def test_every_module_has_exactly_one_part() -> None:
    bad = [str(p) for p in PROBLEMS if p.rule == "part"]
    assert not bad, "\n".join(bad)


def test_every_part_holds_a_module() -> None:
    empty = [
        p.name
        for p in THE_CARD.parts.values()
        if not any(parts_of(THE_CARD, m.path) == [p.name] for m in MODULES.values())
    ]
    assert not empty, f"parts with no module (stale card?): {empty}"


@pytest.mark.parametrize("path", sorted(m.path for m in MODULES.values()))
def test_imports_follow_the_card(path: str) -> None:
    bad = [str(p) for p in PROBLEMS if p.path == path and p.rule == "import"]
    assert not bad, "\n".join(bad)


def test_design_doc_draws_every_part() -> None:
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## 2. Layers", 1)[1].split("\n## 3.", 1)[0]
    assert CARD.name in section, "design.md §2 must point to the card"
    missing = [p for p in THE_CARD.parts if not re.search(rf"\b{p}\b", section)]
    assert not missing, f"design.md §2 does not draw the parts {missing} of {CARD.name}"


def test_known_exceptions_are_still_needed() -> None:
    bad = [str(p) for p in PROBLEMS if p.rule == "stale"]
    assert not bad, "\n".join(bad)


# --- the checker can fail --------------------------------------------------------------------

FAKE_CARD = """
packages = ["pkg"]
shared = "Base"
arrows = [["High", "Low"], ["Top", "High"], ["Top", "Side"]]
[parts]
Base = { level = 0, is = "shared", paths = ["pkg/__init__.py", "pkg/base.py"] }
Low = { level = 1, is = "a core", paths = ["pkg/low/"] }
High = { level = 2, is = "above Low", paths = ["pkg/high/"] }
Side = { level = 2, is = "beside High", paths = ["pkg/side/"] }
Top = { level = 3, is = "uses all", paths = ["pkg/top/", "pkg/sim/"] }
[[never]]
from = ["Side"]
to = "Low"
why = "SIDE-NEVER-LOW"
[[only]]
of = ["pkg/sim/"]
by = ["pkg/top/"]
why = "ONLY-TOP-USES-SIM"
[sans_io]
paths = ["pkg/low/", "pkg/base.py"]
global_random = "INJECT-RNG"
[sans_io.forbidden]
time = "TAKE-NOW"
"""

FAKE_TREE = {
    "pkg/__init__.py": "",
    "pkg/base.py": "X = 1\n",
    "pkg/low/__init__.py": "",
    "pkg/low/a.py": "from pkg import base\n",
    "pkg/high/__init__.py": "",
    "pkg/high/b.py": "from pkg.low import a\nfrom pkg import base\n",
    "pkg/side/__init__.py": "",
    "pkg/side/c.py": "from ..base import X\n",
    "pkg/top/__init__.py": "",
    "pkg/top/d.py": "from pkg.high import b\nfrom pkg.low import a\nfrom pkg.sim import s\n",
    "pkg/sim/__init__.py": "",
    "pkg/sim/s.py": "",
}


def _write(root: Path, tree: dict[str, str]) -> None:
    for rel, text in tree.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _fake(tmp_path: Path, card: str = FAKE_CARD, **changes: str) -> list[str]:
    """The fake tree with `changes` (pkg__low__a="..." writes pkg/low/a.py), judged by `card`."""
    _write(tmp_path, FAKE_TREE | {k.replace("__", "/") + ".py": v for k, v in changes.items()})
    (tmp_path / "card.toml").write_text(card)
    return [str(p) for p in check(tmp_path, load_card(tmp_path / "card.toml"))]


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    assert _fake(tmp_path) == []
    assert card_errors(load_card(tmp_path / "card.toml")) == []


def test_checker_reports_a_forbidden_edge(tmp_path: Path) -> None:
    got = _fake(tmp_path, pkg__side__c="import pkg.low.a\n")
    assert got == ["pkg/side/c.py:1: imports pkg.low.a: Side -> Low is forbidden: SIDE-NEVER-LOW"]


def test_checker_reports_an_upward_edge(tmp_path: Path) -> None:
    got = _fake(tmp_path, pkg__low__a="from pkg.high.b import thing\n")
    assert got == [
        "pkg/low/a.py:1: imports pkg.high.b: a sans-IO core imports only sans-IO modules, and "
        "pkg/high/b.py is not one",
        "pkg/low/a.py:1: imports pkg.high.b: Low -> High points up (level 1 to 2): imports "
        "point down only",
    ]


def test_checker_reports_an_edge_off_the_card(tmp_path: Path) -> None:
    got = _fake(tmp_path, pkg__high__e="from pkg.side import c\n")
    assert got == [
        "pkg/high/e.py:1: imports pkg.side.c: High -> Side is not an arrow of "
        "card.toml: if the dependency is meant, add the arrow (pointing down), else "
        "import from a part below"
    ]


def test_checker_reports_an_orphan_module(tmp_path: Path) -> None:
    got = _fake(tmp_path, pkg__stray="")
    assert got == [
        "pkg/stray.py:0: belongs to no part of card.toml: add its path to the part "
        "it belongs to (and to [sans_io] if it does no I/O)"
    ]


def test_checker_reports_a_core_doing_io(tmp_path: Path) -> None:
    got = _fake(tmp_path, pkg__low__a="import time\nimport random\nx = random.random()\n")
    assert got == [
        "pkg/low/a.py:1: imports time: TAKE-NOW",
        "pkg/low/a.py:3: uses random.random: INJECT-RNG",
    ]
    # random.Random (an injected generator's type) is fine; so is time outside the cores.
    ok = "import random\nR = random.Random\n"
    assert _fake(tmp_path, pkg__low__a=ok, pkg__high__b="import time\n") == []


def test_checker_reports_an_import_of_a_guarded_part(tmp_path: Path) -> None:
    got = _fake(tmp_path, pkg__high__b="from pkg.sim import s\n")
    assert any(g == "pkg/high/b.py:1: imports pkg.sim.s: ONLY-TOP-USES-SIM" for g in got)


def test_checker_reports_a_stale_exception(tmp_path: Path) -> None:
    card = FAKE_CARD + '[[exceptions]]\nmodule = "pkg/low/a.py"\nimports = "time"\nwhy = "W"\n'
    assert _fake(tmp_path, card) == [
        "pkg/low/a.py:0: the known exception for importing time is no longer needed: remove "
        "it from card.toml"
    ]
    assert _fake(tmp_path, card, pkg__low__a="import time\n") == []


def test_card_errors_catch_a_bad_card(tmp_path: Path) -> None:
    bad = FAKE_CARD.replace('["High", "Low"]', '["Low", "High"], ["Side", "Low"]')
    assert bad != FAKE_CARD
    (tmp_path / "card.toml").write_text(bad)
    errors = card_errors(load_card(tmp_path / "card.toml"))
    assert "arrow Low -> High does not point down (levels Low: 1, High: 2)" in errors
    assert "never Side -> Low contradicts the arrows, which allow it" in errors
    (tmp_path / "card.toml").write_text(FAKE_CARD.replace('time = "TAKE-NOW"', 'time = ""'))
    assert card_errors(load_card(tmp_path / "card.toml")) == [
        "every part says what it is and every rule and exception says why"
    ]


def test_the_real_card_catches_what_issue_15_names(tmp_path: Path) -> None:
    # The project's own card on a small tree laid out like the project's.
    tree = {
        "ipop/link/x.py": "from ipop.overlay import node\n",
        "ipop/overlay/node.py": "from ipop.core import NodeCore\n",
        "ipop/identity/x.py": "from ipop.aio import daemon\n",
        "ipop/core.py": "import time\n",
        "ipop/vnet/x.py": "from ipop.dht import record\n",
        "ipop/dht/record.py": "from ipop.testing.netsim import Net\n",
        "ipop/aio/daemon.py": "",
        "ipop/testing/netsim.py": "",
        "ipop/shiny.py": "",
    }
    _write(tmp_path, tree)
    got = [str(p) for p in check(tmp_path, dataclasses.replace(THE_CARD, exceptions=()))]

    def said(start: str) -> bool:
        return any(g.startswith(start) for g in got)

    ring = THE_CARD.never_reason("Link", "Overlay")
    assert ring and said(
        f"ipop/link/x.py:1: imports ipop.overlay.node: Link -> Overlay is forbidden: {ring}"
    )
    assert said("ipop/overlay/node.py:1: imports ipop.core: Overlay -> Stack is forbidden")
    assert said("ipop/identity/x.py:1: imports ipop.aio.daemon: Identity -> Aio is forbidden")
    assert said(f"ipop/core.py:1: imports time: {THE_CARD.forbidden['time']}")
    assert said("ipop/vnet/x.py:1: imports ipop.dht.record: VNet -> DHT is not an arrow")
    assert said("ipop/dht/record.py:1: imports ipop.testing.netsim: DHT -> Testing is forbidden")
    assert said("ipop/shiny.py:0: belongs to no part")


def test_card_keys_in_the_wrong_table_are_refused(tmp_path: Path) -> None:
    misplaced = FAKE_CARD.replace('"uses all",', '"uses all", never = [],')
    (tmp_path / "card.toml").write_text(misplaced)
    with pytest.raises(ValueError, match=r"\[parts.Top\]: unknown keys \['never'\]"):
        load_card(tmp_path / "card.toml")


def test_relative_and_from_imports_resolve(tmp_path: Path) -> None:
    _fake(tmp_path)
    known = modules(tmp_path, {"pkg": "pkg"})
    assert imports(known["pkg.side.c"], known) == [("pkg.base", 1)]
    assert imports(known["pkg.low.a"], known) == [("pkg.base", 1)]


def test_checker_reads_folders_installed_under_another_name(tmp_path: Path) -> None:
    card = FAKE_CARD.replace('packages = ["pkg"]', 'packages = { pkg = "pkg", ext = "pkg.ext" }')
    card = card.replace(
        'paths = ["pkg/top/", "pkg/sim/"]', 'paths = ["pkg/top/", "pkg/sim/", "ext/"]'
    )
    tree = {"ext/__init__.py": "", "ext/e.py": "from pkg.high import b\nfrom . import f\n"}
    _write(tmp_path, tree | {"ext/f.py": "", "pkg/high/g.py": "from pkg.ext import e\n"})
    (tmp_path / "pkg" / "ext").symlink_to("../ext")
    got = _fake(tmp_path, card, pkg__low__h="import ext.f\n")
    known = modules(tmp_path, {"pkg": "pkg", "ext": "pkg.ext"})
    assert "pkg.ext.e" in known and "ext.e" not in known and "pkg.ext.ext.e" not in known
    assert imports(known["pkg.ext.e"], known) == [("pkg.high.b", 1), ("pkg.ext.f", 2)]
    assert got == [
        "pkg/high/g.py:1: imports pkg.ext.e: High -> Top points up (level 2 to 3): imports "
        "point down only",
        "pkg/low/h.py:1: imports ext.f: ext/ is installed as pkg.ext: pkg.ext.f",
    ]
