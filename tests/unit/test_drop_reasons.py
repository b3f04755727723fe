"""Every drop reason a module counts is in that module's one checked list.

A static scan (ast) of each counting module's source finds its counting sites: ``X.drops[r] +=
n`` (and the other drop counters in :data:`COUNTERS`) and calls of the counting helpers in
:data:`HELPERS`. Every reason written there as a literal (a string, either branch of ``a if c
else b``, or an enum member) must be in the list the table below names, and so must every
literal reason the parsers it counts for raise (``raises``). A reason built at the counting
site (an f-string) must belong to a bounded family the module declares (``families``: the
prefix; its list holds every member). Reasons that arrive in a variable are the business of
the helper that counts them (several check their list at run time).

A module that counts drops and is in neither :data:`MODULES` nor :data:`PENDING` fails
:func:`test_every_counting_module_is_listed`, so a new module cannot count unchecked reasons.
"""

from __future__ import annotations

import ast
import enum
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The folders scanned, and the import name each is installed under (docs/architecture.toml).
PACKAGES = {"ipop": "ipop", "router": "ipop.router", "dhcp_dns": "ipop.dhcp_dns"}
# Counters of drops (a Counter keyed by reason) and the helpers that count one.
COUNTERS = frozenset({"drops", "_drops", "rdrops", "errors", "_errors"})
HELPERS = frozenset({"_drop", "count_drop"})


@dataclass(frozen=True)
class Counting:
    """One module that counts drops: where its list lives and what else it must hold."""

    path: str  # the source scanned, relative to the repository root
    owner: str = ""  # the module holding the list (default: the scanned module itself)
    name: str = "DROP_REASONS"  # the list's name in ``owner``
    families: tuple[str, ...] = ()  # prefixes of f-string reasons (bounded families)
    raises: tuple[tuple[str, str], ...] = ()  # (source, exception): its literal reasons too

    @property
    def module(self) -> str:
        return _module_name(self.path)

    def reasons(self) -> frozenset[str]:
        found = getattr(importlib.import_module(self.owner or self.module), self.name)
        if isinstance(found, type) and issubclass(found, enum.Enum):
            return frozenset(str(m.value) for m in found)
        return frozenset(found)


PACKET = ("ipop/vnet/packet.py", "PacketError")  # counted where frames are parsed
# To add a module: one line here (and a DROP_REASONS frozenset or enum in the module).
MODULES = (
    Counting(
        "dhcp_dns/dhcp.py",
        raises=(
            ("dhcp_dns/dhcp.py", "PacketError"),
            ("dhcp_dns/dhcpwire.py", "PacketError"),
            PACKET,
        ),
    ),
    Counting("dhcp_dns/dns.py"),
    Counting("dhcp_dns/services.py", raises=(PACKET,)),
    Counting("dhcp_dns/tcp.py"),
    Counting("ipop/aio/control.py", raises=(("ipop/aio/controlproto.py", "BadRequest"),)),
    Counting("ipop/aio/dataplane.py"),
    Counting("ipop/aio/localhttp.py"),
    Counting("ipop/aio/udp.py", owner="ipop.aio.dataplane"),  # counts IoDrop, in DROP_REASONS
    Counting("ipop/aio/sockets.py"),
    Counting(
        "ipop/dht/protocol.py",
        raises=(
            ("ipop/dht/wire.py", "RemoteProtocolError"),
            ("ipop/dht/record.py", "RemoteProtocolError"),
        ),
    ),
    Counting("ipop/dht/replicas.py"),
    Counting("ipop/dht/shim.py"),
    Counting("ipop/link/handshakes.py", owner="ipop.link.config", name="LINK_DROP_REASONS"),
    Counting("ipop/link/layer.py", owner="ipop.link.config", name="LINK_DROP_REASONS"),
    Counting("ipop/link/probing.py", owner="ipop.link.config", name="LINK_DROP_REASONS"),
    Counting("ipop/link/rebind.py", owner="ipop.link.config", name="LINK_DROP_REASONS"),
    Counting("ipop/nat/portguess.py"),
    Counting(
        "ipop/nat/stun.py",
        name="STUN_DROP_REASONS",
        raises=(("ipop/wire/stun.py", "StunDecodeError"),),
    ),
    Counting("ipop/core.py", owner="ipop.nat.stun", name="STUN_DROP_REASONS"),  # stun.drops
    Counting("ipop/overlay/ctm.py", name="CTM_DROPS"),  # a malformed CTM: the node counts it
    Counting("ipop/overlay/relay.py", name="RELAY_DROPS"),
    Counting("ipop/overlay/channels.py", name="CHANNEL_DROPS"),
    Counting(
        "ipop/overlay/node.py",
        name="OVERLAY_DROPS",
        raises=(("ipop/overlay/messages.py", "RemoteProtocolError"),),
    ),
    Counting("ipop/overlay/upkeep.py", name="NEAR_DROPS"),
    Counting("ipop/revocation.py"),
    Counting("ipop/testing/fake_links.py"),
    Counting("ipop/testing/netsim.py"),
    Counting("router/claims.py", owner="ipop.router.daemon"),  # counts through RouterLan.count_drop
    Counting("ipop/vnet/arp.py"),
    Counting("router/daemon.py", families=("host_failed_",)),
    Counting("router/hosts.py"),
    Counting("router/lan.py", name="CSUM_REASONS"),
)
# Modules that count drops but are not checked yet, each with the reason why.
PENDING: dict[str, str] = {}  # none left


def _module_name(path: str) -> str:
    top, _, rest = path.removesuffix(".py").partition("/")
    name = f"{PACKAGES[top]}.{rest.replace('/', '.')}"
    return name.removesuffix(".__init__")


def _tail(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _reason_exprs(tree: ast.AST) -> Iterator[tuple[int, ast.expr]]:
    """The reason expression of every counting site in ``tree``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.AugAssign)
            and isinstance(node.target, ast.Subscript)
            and _tail(node.target.value) in COUNTERS
        ):
            yield node.lineno, node.target.slice
        elif isinstance(node, ast.Call) and _tail(node.func) in HELPERS and node.args:
            yield node.lineno, node.args[0]


@dataclass(frozen=True)
class Site:
    line: int
    kind: str  # "literal", "built" (an f-string) or "variable"
    text: str  # the reason, the f-string's constant prefix, or the expression


def _sites(expr: ast.expr, line: int, module: object) -> Iterator[Site]:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        yield Site(line, "literal", expr.value)
    elif isinstance(expr, ast.IfExp):
        yield from _sites(expr.body, line, module)
        yield from _sites(expr.orelse, line, module)
    elif isinstance(expr, ast.JoinedStr):
        first = expr.values[0] if expr.values else None
        prefix = first.value if isinstance(first, ast.Constant) else ""
        yield Site(line, "built", str(prefix))
    elif isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        owner = getattr(module, expr.value.id, None)
        if isinstance(owner, type) and issubclass(owner, enum.Enum):
            yield Site(line, "literal", str(owner[expr.attr].value))
        else:
            yield Site(line, "variable", ast.unparse(expr))
    else:
        yield Site(line, "variable", ast.unparse(expr))


def counted(spec: Counting) -> list[Site]:
    """Every counting site of ``spec``'s source, each reason expression classified."""
    tree = ast.parse((ROOT / spec.path).read_text(), spec.path)
    module = importlib.import_module(spec.module)
    return [s for line, e in _reason_exprs(tree) for s in _sites(e, line, module)]


def raised(path: str, exception: str) -> list[Site]:
    """The literal reasons ``exception(reason, ...)`` is raised with in ``path``."""
    tree = ast.parse((ROOT / path).read_text(), path)
    return [
        Site(node.lineno, "literal", node.args[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and _tail(node.func) == exception
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ]


@pytest.mark.parametrize("spec", MODULES, ids=lambda s: s.path)
def test_every_counted_reason_is_listed(spec: Counting) -> None:
    listed = spec.reasons()
    assert listed, f"{spec.owner or spec.module}.{spec.name} is empty"
    assert all(isinstance(r, str) and r for r in listed)
    sites = counted(spec)
    assert sites, f"{spec.path}: no counting site found (is the scan still right?)"
    for s in sites:
        where = f"{spec.path}:{s.line}"
        if s.kind == "literal":
            assert s.text in listed, f"{where}: {s.text!r} is counted but not in {spec.name}"
        elif s.kind == "built":
            assert s.text in spec.families, f"{where}: a reason built as f'{s.text}...'"
            assert any(r.startswith(s.text) for r in listed), f"{where}: family {s.text!r}"
    for path, exception in spec.raises:
        found = raised(path, exception)
        assert found, f"{path}: {exception} is never raised with a literal reason"
        missing = sorted({s.text for s in found} - listed)
        assert not missing, f"{path}: {exception} reasons {missing} are not in {spec.name}"


def _sources() -> Iterator[str]:
    for top in PACKAGES:
        # os.walk does not follow ipop/router -> ../router and the like: each file once.
        for folder, _, files in os.walk(ROOT / top):
            for f in files:
                if f.endswith(".py"):
                    yield (Path(folder) / f).relative_to(ROOT).as_posix()


def test_every_counting_module_is_listed() -> None:
    checked = {spec.path for spec in MODULES}
    assert not checked & set(PENDING)
    unchecked = []
    for path in sorted(_sources()):
        if path in checked or path in PENDING:
            continue
        tree = ast.parse((ROOT / path).read_text(), path)
        if next(_reason_exprs(tree), None) is not None:
            unchecked.append(path)
    assert not unchecked, f"these count drops without a checked list: {unchecked}"


def test_the_scan_sees_what_it_must() -> None:
    # The scanner itself: each kind of site, as written in the modules above.
    src = (
        "self.drops['a'] += 1\n"
        "self.lan.count_drop('b' if x else 'c')\n"
        "self.drops[f'fam_{s}'] += 1\n"
        "self.drops[exc.reason] += 1\n"
        "self.errors[E.X] += 1\n"
        "other['z'] += 1\n"
    )

    class E(enum.StrEnum):
        X = "ex"

    module = type("M", (), {"E": E})
    sites = [s for line, e in _reason_exprs(ast.parse(src)) for s in _sites(e, line, module)]
    assert sorted((s.kind, s.text) for s in sites) == [
        ("built", "fam_"),
        ("literal", "a"),
        ("literal", "b"),
        ("literal", "c"),
        ("literal", "ex"),
        ("variable", "exc.reason"),
    ]
