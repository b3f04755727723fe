"""ipop.overlaymap and ipop.webpage: the SVG of the overlay and the status web page (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from ipop.overlaymap import MAX_LABEL_CHARS, MAX_NODES, PATH_COLOURS, render_map
from ipop.status import PeerStatus, SelfStatus, Status
from ipop.webpage import render_page

SVG = "{http://www.w3.org/2000/svg}"


def _id(n: int) -> str:
    # Spread over the ring so every node has its own place.
    return f"{(n * 0x3333333333333333333333333333333333333333) % (1 << 160):040x}"


def _peer(n: int, path: str = "direct", **kw: object) -> PeerStatus:
    fields: dict[str, object] = {
        "node_id": _id(n),
        "name": f"peer{n}",
        "vip": f"100.64.0.{n}",
        "path": path,
        "endpoint": f"198.51.100.{n}:5800",
        "rtt_ms": 1.25,
        "bytes_in": 100 * n,
        "bytes_out": 2048,
        "kinds": ["near"],
    }
    fields.update(kw)
    return PeerStatus(**fields)  # type: ignore[arg-type]


def _status(peers: list[PeerStatus], me: int = 0, name: str = "alice") -> Status:
    return Status(
        self_=SelfStatus(
            node_id=_id(me),
            node_name=name,
            vip="100.64.0.100",
            names=[f"{name}.ipop"],
            nat=None,
            uptime_s=1.0,
            endpoints=[],
            routable=True,
        ),
        peers=peers,
        drops={},
        counters={},
    )


def _edges(svg: str, path: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter(f"{SVG}g") if f"path-{path}" in g.get("class", "").split()]


def test_each_path_kind_has_its_edge_colour_style_and_hover() -> None:
    st = _status(
        [
            _peer(1, "direct", kinds=["near"]),
            _peer(2, "relayed", kinds=["far"], via=_id(1), endpoint="via 11111111", why="x"),
            _peer(3, "overlay", kinds=[], endpoint=None, rtt_ms=None),
            _peer(4, "direct", kinds=["shortcut"]),
        ]
    )
    svg = render_map([st])
    direct, relayed, overlay = (_edges(svg, k) for k in ("direct", "relayed", "overlay"))
    assert len(direct) == 2 and len(relayed) == 1 and len(overlay) == 1
    for kind, groups in (("direct", direct), ("relayed", relayed), ("overlay", overlay)):
        for g in groups:
            (path,) = g.iter(f"{SVG}path")
            assert path.get("stroke") == PATH_COLOURS[kind]
    # The relayed edge bends toward its relay: the relay's place is the curve's control point.
    (rpath,) = relayed[0].iter(f"{SVG}path")
    control = rpath.get("d", "").split("Q")[1].split(" ")[0]
    root = ET.fromstring(svg)
    places = {
        g.findtext(f"{SVG}text"): f"{c.get('cx')},{c.get('cy')}"
        for g in root.iter(f"{SVG}g")
        if g.get("class", "").startswith("node") and (c := g.find(f"{SVG}circle")) is not None
    }
    assert control == places["peer1"]
    relays = [g for g in root.iter(f"{SVG}g") if "relay" in g.get("class", "").split()]
    assert [g.findtext(f"{SVG}text") for g in relays] == ["peer1"]
    assert "kind-far" in relayed[0].get("class", "")
    assert "kind-routed" in overlay[0].get("class", "")
    # A link the overlay's table holds under no kind is still a link, not a routed path.
    bare = _edges(render_map([_status([_peer(5, "relayed", kinds=[], via=None)])]), "relayed")
    assert "kind-link" in bare[0].get("class", "")
    assert any(g.get("class", "").endswith("kind-shortcut") for g in direct)
    hover = relayed[0].find(f"{SVG}title")
    assert hover is not None and hover.text is not None
    assert "via peer1" in hover.text and "rtt 1.2 ms" in hover.text and "out 2.0 KiB" in hover.text
    overlay_hover = overlay[0].find(f"{SVG}title")
    assert overlay_hover is not None and "rtt -" in (overlay_hover.text or "")
    root = ET.fromstring(svg)
    nodes = [g for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("node")]
    assert len(nodes) == 5 and sum(1 for g in nodes if "self" in g.get("class", "")) == 1


def test_the_picture_is_deterministic_and_peer_order_does_not_matter() -> None:
    peers = [_peer(n, "direct" if n % 2 else "relayed", via=_id(1)) for n in range(1, 9)]
    one = render_map([_status(peers)])
    assert one == render_map([_status(list(reversed(peers)))])


HOSTILE = "\"><script>alert(1)</script><x a='\x01 & ]]> \ud800"


def test_names_from_peers_cannot_inject_markup() -> None:
    st = _status(
        [_peer(1, name=HOSTILE, why=HOSTILE, endpoint=HOSTILE, kinds=[HOSTILE])], name=HOSTILE
    )
    svg = render_map([st])
    root = ET.fromstring(svg)  # well-formed: no raw control characters or surrogates either
    tags = {el.tag for el in root.iter()}
    assert tags <= {
        f"{SVG}{t}" for t in ("svg", "title", "rect", "text", "circle", "g", "path", "line")
    }
    assert "<script" not in svg and "\x01" not in svg
    # The hostile text is there, as text, cut to the label length on the ring.
    labels = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert any(label.startswith('"><script>') and len(label) <= MAX_LABEL_CHARS for label in labels)
    for el in root.iter():
        for name, value in el.attrib.items():
            assert "script" not in value, (el.tag, name)


def test_peers_past_the_cap_are_left_out_and_the_picture_says_so() -> None:
    peers = [_peer(n, kinds=["near"] if n <= 2 else [], bytes_in=n) for n in range(1, 41)]
    svg = render_map([_status(peers)], max_peers=10)
    root = ET.fromstring(svg)
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("edge")]
    assert len(edges) == 10
    notes = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "note"]
    assert any(n.startswith("30 peers not drawn") for n in notes)
    # Near links first, then the busiest.
    hovers = "\n".join(g.findtext(f"{SVG}title") or "" for g in edges)
    assert (
        "peer1:" in hovers and "peer2:" in hovers and "peer40:" in hovers and "peer3:" not in hovers
    )
    with pytest.raises(ValueError, match="max_peers"):
        render_map([_status(peers)], max_peers=0)


def test_a_merged_picture_draws_each_pair_once_with_the_least_direct_path() -> None:
    a = _status([_peer(1, "direct"), _peer(2, "direct")], me=0, name="a")
    b = _status([_peer(0, "relayed", via=_id(2), name="a")], me=1, name="b")
    svg = render_map([a, b])
    assert len(_edges(svg, "relayed")) == 1 and len(_edges(svg, "direct")) == 1
    (rel,) = _edges(svg, "relayed")
    hover = rel.findtext(f"{SVG}title") or ""
    assert "a \u2192 b: direct" in hover and "b \u2192 a: relayed" in hover
    root = ET.fromstring(svg)
    viewers = [g for g in root.iter(f"{SVG}g") if "viewer" in g.get("class", "").split()]
    assert len(viewers) == 2


def test_the_size_is_bounded_however_many_nodes_the_views_name() -> None:
    views = [
        _status([_peer(1000 * v + n, kinds=[]) for n in range(1, 65)], me=1000 * v + 999)
        for v in range(8)
    ]
    svg = render_map(views, max_peers=64)
    root = ET.fromstring(svg)
    nodes = [g for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("node")]
    assert len(nodes) == MAX_NODES
    assert len(svg) < 400 * 1024


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(html)
    return p.tags


def test_the_page_holds_the_map_a_peer_table_and_refreshes_itself() -> None:
    html = render_page(_status([_peer(1), _peer(2, "relayed", why="both symmetric")]), refresh_s=5)
    tags = _tags(html)
    assert ("meta", {"http-equiv": "refresh", "content": "5"}) in tags
    assert sum(1 for t, _ in tags if t == "svg") == 1
    assert sum(1 for t, _ in tags if t == "tr") == 3  # the header and two peers
    assert "both symmetric" in html
    assert not any(
        t == "meta" and a.get("http-equiv") for t, a in _tags(render_page(_status([]), refresh_s=0))
    )


def test_the_page_loads_nothing_and_runs_nothing_even_for_hostile_names() -> None:
    st = _status([_peer(1, name=HOSTILE, why=HOSTILE, endpoint=HOSTILE)], name=HOSTILE)
    html = render_page(st, refresh_s=5)
    tags = _tags(html)
    assert not any(t in ("script", "img", "iframe", "link", "object", "x") for t, _ in tags)
    for _, attrs in tags:
        assert not any(k.startswith("on") for k in attrs)
        assert not any(v and "://" in v and "w3.org/2000/svg" not in v for v in attrs.values())
    assert "&lt;script&gt;" in html and "<script" not in html


def test_labels_of_nodes_close_on_the_ring_are_staggered() -> None:
    base = int(_id(1), 16)
    close = [_peer(1), _peer(2, node_id=f"{base + 1:040x}"), _peer(3, node_id=f"{base + 2:040x}")]
    root = ET.fromstring(render_map([_status(close)]))
    ys = {
        g.findtext(f"{SVG}text"): g.find(f"{SVG}text")
        for g in root.iter(f"{SVG}g")
        if g.get("class", "").startswith("node")
    }
    rows = sorted(
        float(el.get("y", "0")) for name, el in ys.items() if name != "alice" and el is not None
    )
    assert len(rows) == 3 and rows[1] - rows[0] >= 14 and rows[2] - rows[1] >= 14
