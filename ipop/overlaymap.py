"""The overlay as a picture: ``ipop status`` documents in, SVG text out (pure, no I/O, no clock).

:func:`render_map` draws what one node sees (``ipop map``, ``ipopd``'s web page) or what
every node of a lab sees, merged into one picture (``ipop-lab map``):

* the ring: each node sits on a circle at the angle of its 160-bit overlay id (0 at the top,
  clockwise), so ring neighbours are neighbours on the page;
* one edge per pair of nodes with a link or traffic between them, coloured by the path it
  takes (:data:`PATH_COLOURS`: direct green, relayed orange, overlay blue) and styled by the
  overlay's connection kinds (near links thick, far links thinner, shortcut-only dashed; a
  peer reached over the ring with no link is dotted). A relayed edge bends through its relay
  when the relay is drawn;
* hovers (SVG ``<title>``): per node its id, vIP and names; per edge its path, kinds, RTT,
  bytes each way, the relay and why it is not direct, as each end reported it.

Merging views (:func:`render_map` with several documents): a pair's edge takes the least
direct path either end reports (a path is direct only when both ends use it), the union of
the kinds, and both ends' numbers in its hover.

Everything a peer told us is a claim (names and hostnames come from other members), so every
string is escaped for XML text and attributes, characters XML cannot carry are replaced, and
long strings are cut (:data:`MAX_LABEL_CHARS`, :data:`MAX_HOVER_CHARS`). The picture is
bounded: at most ``max_peers`` peers per view and :data:`MAX_NODES` nodes in all are drawn
(near links first, then most bytes, ties by node id), and the picture says how many were left
out. The output depends only on the input: same documents, same bytes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ipop.human import human_bytes
from ipop.status import PATH_KINDS, PeerStatus, Status

__all__ = [
    "DEFAULT_MAX_PEERS",
    "MAX_HOVER_CHARS",
    "MAX_LABEL_CHARS",
    "MAX_NODES",
    "PATH_COLOURS",
    "render_map",
    "xml_escape",
]

# Peers drawn per view by default: a ring of 64 labels is still readable on a screen.
DEFAULT_MAX_PEERS: Final = 64
# Nodes drawn in all (a merged lab picture): past this, labels overlap and the SVG grows.
MAX_NODES: Final = 256
MAX_LABEL_CHARS: Final = 24
MAX_HOVER_CHARS: Final = 300

# Pure, saturated colours: a screenshot's pixels can be counted per path kind.
PATH_COLOURS: Final[dict[str, str]] = {
    "direct": "#00a000",
    "relayed": "#ff8000",
    "overlay": "#0060ff",
}
_RANK: Final = {"direct": 0, "relayed": 1, "overlay": 2}  # a merged edge takes the highest

WIDTH: Final = 960
HEIGHT: Final = 760
_CX, _CY, _R = 370.0, 390.0, 290.0
_LEGEND_X: Final = 740
_TWO_160: Final = float(1 << 160)
# Nodes closer than this on the ring (1/60 of it, 6 degrees) have their labels staggered.
_CLOSE: Final = (1 << 160) // 60

# XML 1.0 cannot carry these at all (not even as character references).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_escape(text: str, limit: int = MAX_HOVER_CHARS) -> str:
    """``text`` safe inside XML/HTML text and quoted attributes, cut to ``limit`` characters."""
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    text = _NOT_XML.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


@dataclass(slots=True)
class _Node:
    node_id: str
    label: str
    vip: str | None = None
    viewer: bool = False  # one of the views is this node's own
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _End:
    """One end's report of an edge: ``src`` saw ``peer`` like this."""

    src: str
    peer: PeerStatus


@dataclass(slots=True)
class _Edge:
    a: str
    b: str
    path: str
    kinds: set[str] = field(default_factory=set)
    via: str | None = None
    ends: list[_End] = field(default_factory=list)


def _label(node_id: str, name: str | None) -> str:
    return name if name else node_id[:8]


def _priority(p: PeerStatus) -> tuple[int, int, str]:
    """Which peers a capped view keeps: near links (the ring itself), then the busiest."""
    return (0 if "near" in p.kinds else 1, -(p.bytes_in + p.bytes_out), p.node_id)


def _collect(
    views: Sequence[Status], max_peers: int
) -> tuple[dict[str, _Node], dict[tuple[str, str], _Edge], int]:
    """Nodes and edges of every view, capped; the number of peers (per view) left out."""
    nodes: dict[str, _Node] = {}
    edges: dict[tuple[str, str], _Edge] = {}
    omitted = 0
    ordered = sorted(views, key=lambda s: s.self_.node_id)
    # The viewers first: each has its place even when their peers fill the picture.
    for st in ordered[:MAX_NODES]:
        me = st.self_
        nodes[me.node_id] = _Node(
            me.node_id, _label(me.node_id, me.node_name), me.vip, True, list(me.names)
        )
    omitted += max(0, len(ordered) - MAX_NODES)
    for st in ordered[:MAX_NODES]:
        me = st.self_
        peers = sorted((p for p in st.peers if p.node_id != me.node_id), key=_priority)
        omitted += max(0, len(peers) - max_peers)
        for p in peers[:max_peers]:
            if p.node_id not in nodes:
                if len(nodes) >= MAX_NODES:
                    omitted += 1
                    continue
                nodes[p.node_id] = _Node(p.node_id, _label(p.node_id, p.name), p.vip)
            other = nodes[p.node_id]
            if not other.viewer:
                other.vip = other.vip or p.vip
                if p.name and other.label == p.node_id[:8]:
                    other.label = p.name
            a, b = sorted((me.node_id, p.node_id))
            edge = edges.setdefault((a, b), _Edge(a, b, p.path))
            if _RANK[p.path] > _RANK[edge.path]:
                edge.path = p.path
            edge.kinds.update(p.kinds)
            edge.via = edge.via or p.via
            edge.ends.append(_End(me.node_id, p))
    return nodes, edges, omitted


def _point(node_id: str, radius: float = _R) -> tuple[float, float]:
    angle = 2 * math.pi * (int(node_id, 16) / _TWO_160) - math.pi / 2
    return _CX + radius * math.cos(angle), _CY + radius * math.sin(angle)


def _f(x: float) -> str:
    return f"{x:.1f}"


def _style(edge: _Edge) -> tuple[str, float, str | None]:
    """(class of the kind, stroke width, dash pattern) from the overlay's kinds."""
    if edge.path == "overlay":
        return "routed", 3.5, "3 5"  # no link: packets go over the ring
    if "near" in edge.kinds:
        return "near", 5.0, None
    if "far" in edge.kinds:
        return "far", 3.5, None
    if "shortcut" in edge.kinds:
        return "shortcut", 3.5, "12 6"
    return "link", 3.5, None  # a link outside the table's kinds (leaf, relay-only, forming)


def _hover_end(end: _End, nodes: dict[str, _Node]) -> str:
    p = end.peer
    src = nodes[end.src].label if end.src in nodes else end.src[:8]
    dst = nodes[p.node_id].label if p.node_id in nodes else p.node_id[:8]
    parts = [f"{src} \u2192 {dst}: {p.path}"]
    if p.via:
        relay = nodes[p.via].label if p.via in nodes else p.via[:8]
        parts.append(f"via {relay}")
    elif p.endpoint:
        parts.append(p.endpoint)
    if p.kinds:
        parts.append("kinds " + ",".join(p.kinds))
    parts.append("rtt " + ("-" if p.rtt_ms is None else f"{p.rtt_ms:.1f} ms"))
    parts.append(f"in {human_bytes(p.bytes_in)}, out {human_bytes(p.bytes_out)}")
    line = "; ".join(parts)
    return line + (f" ({p.why})" if p.why else "")


def _edge_svg(edge: _Edge, nodes: dict[str, _Node]) -> str:
    kind, width, dash = _style(edge)
    (x1, y1), (x2, y2) = _point(edge.a), _point(edge.b)
    if edge.path == "relayed" and edge.via in nodes and edge.via not in (edge.a, edge.b):
        # Bent toward its relay: the relay's own place is the curve's control point, so the
        # curve leans its way without running over the direct edges that meet there.
        rx, ry = _point(edge.via)
        d = f"M{_f(x1)},{_f(y1)} Q{_f(rx)},{_f(ry)} {_f(x2)},{_f(y2)}"
    else:
        d = f"M{_f(x1)},{_f(y1)} {_curve(x1, y1, x2, y2)}"
    hover = "\n".join(_hover_end(e, nodes) for e in edge.ends)
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    title = xml_escape(hover, 2 * MAX_HOVER_CHARS)
    return (
        f'<g class="edge path-{edge.path} kind-{kind}"><title>{title}</title>'
        f'<path d="{d}" fill="none" stroke="{PATH_COLOURS[edge.path]}" '
        f'stroke-width="{_f(width)}" stroke-linecap="round"{dash_attr}/></g>'
    )


def _curve(x1: float, y1: float, x2: float, y2: float) -> str:
    """A quadratic curve to (x2, y2), its control point pulled halfway to the ring's centre."""
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    cx, cy = mx + (_CX - mx) * 0.5, my + (_CY - my) * 0.5
    return f"Q{_f(cx)},{_f(cy)} {_f(x2)},{_f(y2)}"


def _label_levels(nodes: Iterable[_Node]) -> dict[str, int]:
    """How far each label moves off its place so that nodes close on the ring do not print
    their labels over each other: 0, or one line more than its neighbour's (at most 3)."""
    levels: dict[str, int] = {}
    prev: int | None = None
    level = 0
    for n in sorted(nodes, key=lambda n: n.node_id):
        here = int(n.node_id, 16)
        level = min(level + 1, 3) if prev is not None and here - prev < _CLOSE else 0
        levels[n.node_id] = level
        prev = here
    return levels


def _node_svg(node: _Node, *, single: bool, level: int, relays: int) -> str:
    x, y = _point(node.node_id)
    lx, ly = _point(node.node_id, _R + 16)
    anchor = "start" if lx >= _CX + 1 else ("end" if lx <= _CX - 1 else "middle")
    ly += (-1 if ly < _CY else 1) * 15 * level  # away from the centre, a line per level
    hover = [f"{node.label} {node.node_id}"]
    if node.vip:
        hover.append(f"vip {node.vip}")
    hover.extend(node.names)
    cls = "node self" if node.viewer and single else ("node viewer" if node.viewer else "node")
    radius, fill = (9.0, "#202020") if node.viewer else (7.0, "#ffffff")
    stroke = "#202020"
    if relays:
        cls += " relay"  # a ring in the relayed colour: paths drawn here go through it
        stroke = PATH_COLOURS["relayed"]
        hover.append(f"relays {relays} drawn path{'s' if relays > 1 else ''}")
    label = xml_escape(node.label, MAX_LABEL_CHARS)
    return (
        f'<g class="{cls}"><title>{xml_escape(chr(10).join(hover))}</title>'
        f'<circle cx="{_f(x)}" cy="{_f(y)}" r="{_f(radius)}" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{3 if relays else 2}"/>'
        f'<text x="{_f(lx)}" y="{_f(ly + 4)}" text-anchor="{anchor}">{label}</text></g>'
    )


def _legend(counts: dict[str, int], note: Iterable[str]) -> list[str]:
    out = [f'<g class="legend" transform="translate({_LEGEND_X},90)">']
    y = 0
    for kind in PATH_KINDS:
        dash = {"direct": "", "relayed": "", "overlay": ' stroke-dasharray="3 5"'}[kind]
        out.append(
            f'<line x1="0" y1="{y}" x2="36" y2="{y}" stroke="{PATH_COLOURS[kind]}" '
            f'stroke-width="5" stroke-linecap="round"{dash}/>'
            f'<text x="46" y="{y + 5}">{kind} ({counts.get(kind, 0)})</text>'
        )
        y += 26
    y += 10
    for name, width, dash in (
        ("near link", 5, ""),
        ("far or other link", 3.5, ""),
        ("shortcut", 3.5, ' stroke-dasharray="12 6"'),
        ("no link (ring)", 3.5, ' stroke-dasharray="3 5"'),
    ):
        out.append(
            f'<line x1="0" y1="{y}" x2="36" y2="{y}" stroke="#606060" '
            f'stroke-width="{width}"{dash}/><text x="46" y="{y + 5}">{name}</text>'
        )
        y += 24
    out.append(
        f'<circle cx="18" cy="{y}" r="7" fill="#ffffff" stroke="{PATH_COLOURS["relayed"]}" '
        f'stroke-width="3"/><text x="46" y="{y + 5}">relay</text>'
    )
    y += 34
    for line in note:
        out.append(f'<text class="note" x="0" y="{y}">{xml_escape(line)}</text>')
        y += 20
    out.append("</g>")
    return out


def render_map(
    views: Sequence[Status], *, max_peers: int = DEFAULT_MAX_PEERS, title: str | None = None
) -> str:
    """An SVG document of the overlay as ``views`` (one or more nodes' status) see it."""
    if max_peers < 1:
        raise ValueError(f"max_peers must be at least 1, got {max_peers}")
    nodes, edges, omitted = _collect(views, max_peers)
    single = len(views) == 1
    if title is None:
        if single:
            me = views[0].self_
            title = f"{me.node_name} ({me.vip or 'no vIP yet'}): the overlay as it sees it"
        else:
            title = f"the overlay as {len(views)} nodes see it"
    counts = {k: sum(1 for e in edges.values() if e.path == k) for k in PATH_KINDS}
    note = [f"{len(nodes)} nodes, {len(edges)} edges"]
    if omitted:
        note.append(f"{omitted} peers not drawn (cap {max_peers} per node, {MAX_NODES} nodes)")
    note.append("hover an edge for RTT and bytes")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ipop-map" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" '
        'font-size="13">',
        f"<title>{xml_escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text class="heading" x="20" y="32" font-size="18">{xml_escape(title)}</text>',
        f'<circle class="ring" cx="{_f(_CX)}" cy="{_f(_CY)}" r="{_f(_R)}" fill="none" '
        'stroke="#c8c8c8" stroke-width="2"/>',
    ]
    # Overlay edges under relayed under direct, so the direct paths stay visible.
    for edge in sorted(edges.values(), key=lambda e: (-_RANK[e.path], e.a, e.b)):
        out.append(_edge_svg(edge, nodes))
    levels = _label_levels(nodes.values())
    relays = Counter(e.via for e in edges.values() if e.path == "relayed" and e.via in nodes)
    out.extend(
        _node_svg(n, single=single, level=levels[n.node_id], relays=relays[n.node_id])
        for n in sorted(nodes.values(), key=lambda n: n.node_id)
    )
    out.extend(_legend(counts, note))
    out.append("</svg>")
    return "\n".join(out) + "\n"
