"""The status page and the overlay map of real daemons (root): ``[web] listen`` on every node,
fetched with real ``curl`` inside a node's namespace, rendered by real headless Chromium run in
that namespace (its screenshot's pixels counted per path colour), ``ipop map`` against a real
daemon and ``ipop-lab map`` over the whole lab.

A public bootstrap, a public node, a node behind a port-restricted cone NAT and two behind
symmetric NATs, whose link stays relayed: c1's picture holds direct and relayed paths.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipop.overlaymap import PATH_COLOURS
from ipop.status import Status
from ipop.tools.lab import main as lab_main
from ipop.tools.lab.ipopnet import WEB_LISTEN, IpopNet
from ipop.tools.lab.topology import Topology, topology_from_dict

from .running import running_net, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and TAPs")

BASE = f"http://{WEB_LISTEN}"
SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _topology() -> Topology:
    return topology_from_dict(
        {
            "hosts": [
                {"name": "pub1", "role": "public", "ip": "203.0.113.10"},
                {"name": "pub2", "role": "public", "ip": "203.0.113.11"},
                {"name": "a", "role": "nat", "kind": "port-restricted-cone"},
                {"name": "c1", "role": "nat", "kind": "symmetric"},
                {"name": "c2", "role": "nat", "kind": "symmetric"},
            ]
        }
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpopNet]:
    with running_net(
        _topology(), tmp_path_factory.mktemp("web"), prefix_tag="w", ready_s=30.0, web=True
    ) as ipop:
        # c1 talks to c2 (relayed: both symmetric) and to pub2 (direct).
        def both() -> bool:
            for dst in ("c2", "pub2"):
                ipop.lab.exec(
                    "c1", ["ping", "-c", "2", "-i", "0.2", "-W", "1", f"{dst}.ipop"], timeout=10
                )
            paths = {p.name: p.path for p in ipop.status("c1").peers}
            return paths.get("c2") == "relayed" and paths.get("pub2") == "direct"

        assert wait_for(both, 40), ipop.status("c1").to_json(indent=2)
        yield ipop


def _curl(net: IpopNet, host: str, path: str, *extra: str) -> tuple[dict[str, str], str]:
    """(headers, body) of GET ``path`` from ``host``'s own web page, in its namespace."""
    res = net.lab.exec(
        host, ["curl", "-sS", "-i", "--max-time", "5", *extra, BASE + path], timeout=10
    )
    assert res.returncode == 0, res.stderr
    head, _, body = res.stdout.replace("\r\n", "\n").partition("\n\n")
    status, *lines = head.split("\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    headers[":status"] = status.split(" ")[1]
    return headers, body


def _edge_paths(svg: str) -> Counter[str]:
    root = ET.fromstring(svg)
    out: Counter[str] = Counter()
    for g in root.iter(f"{SVG}g"):
        classes = g.get("class", "").split()
        if "edge" in classes:
            out.update(c.removeprefix("path-") for c in classes if c.startswith("path-"))
    return out


def test_the_page_map_and_status_are_served_in_the_namespace(net: IpopNet) -> None:
    headers, page = _curl(net, "c1", "/")
    assert headers[":status"] == "200" and headers["content-type"].startswith("text/html")
    assert "script-src" not in headers["content-security-policy"]  # no script allowed at all
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert headers["x-content-type-options"] == "nosniff"
    assert "<svg" in page and "<script" not in page and 'http-equiv="refresh"' in page
    headers, svg = _curl(net, "c1", "/map.svg")
    assert headers["content-type"].startswith("image/svg+xml")
    paths = _edge_paths(svg)
    assert paths["direct"] >= 1 and paths["relayed"] >= 1, paths
    headers, doc = _curl(net, "c1", "/status.json")
    st = Status.from_json(doc)
    assert st.self_.node_name == "c1"
    (c2,) = [p for p in st.peers if p.name == "c2"]
    assert c2.path == "relayed" and c2.via is not None
    headers, metrics = _curl(net, "c1", "/metrics")
    assert headers[":status"] == "200" and "ipop_node_info" in metrics


def test_the_page_is_local_only_and_refuses_a_host_named_by_name(net: IpopNet) -> None:
    pub1 = net.lab.host("pub1")
    port = WEB_LISTEN.rsplit(":", 1)[1]
    res = net.lab.exec(
        "pub2", ["curl", "-sS", "--max-time", "3", f"http://{pub1.ip}:{port}/"], timeout=10
    )
    assert res.returncode != 0  # nothing listens on the underlay address
    headers, _ = _curl(net, "pub1", "/", "-H", "Host: rebound.example:9581")
    assert headers[":status"] == "421"
    _, metrics = _curl(net, "pub1", "/metrics")
    assert 'ipop_drops_total{layer="web",reason="bad_host"} 1' in metrics


def test_ipop_map_writes_the_svg_from_a_real_daemon(net: IpopNet, tmp_path: Path) -> None:
    out = tmp_path / "c1.svg"
    socket = str(net.files("c1").socket)
    res = net.lab.exec(
        "c1",
        [sys.executable, "-m", "ipop.tools.cli", "--socket", socket, "map", "-o", str(out)],
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"wrote {out}: ")
    paths = _edge_paths(out.read_text())
    assert paths["direct"] >= 1 and paths["relayed"] >= 1, paths


def test_ipop_lab_map_merges_every_node_view(net: IpopNet, tmp_path: Path) -> None:
    out = tmp_path / "lab.svg"
    code = lab_main.main(
        ["map", "--workdir", str(net.lab.workdir), "-o", str(out), "--each", str(tmp_path / "each")]
    )
    assert code == 0
    root = ET.fromstring(out.read_text())
    viewers = [g for g in root.iter(f"{SVG}g") if "viewer" in g.get("class", "").split()]
    assert len(viewers) == len(net.lab.hosts)
    assert _edge_paths(out.read_text())["relayed"] >= 1
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == sorted(
        f"{h.name}.svg" for h in net.lab.hosts
    )


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows) of an 8-bit non-interlaced RGB/RGBA PNG (what
    Chromium writes): the chunks, zlib, and the five scanline filters of PNG §9."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        f, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def _colours(png: bytes) -> Counter[str]:
    _, _, bpp, rows = decode_png(png)
    return Counter(row[i : i + 3].hex() for row in rows for i in range(0, len(row), bpp))


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (Debian package 'chromium')")
def test_chromium_in_the_namespace_renders_the_page_with_each_path_colour(
    net: IpopNet, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    shot = tmp_path / "page.png"
    env = ["env", f"HOME={tmp_path}"]
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    res = net.lab.exec(
        "c1",
        [*env, *common, f"--screenshot={shot}", "--window-size=1000,820", BASE + "/"],
        timeout=90,
    )
    assert shot.exists(), res.stderr[-2000:]
    counts = _colours(shot.read_bytes())
    total = sum(counts.values())
    assert counts["ffffff"] < total * 0.99  # not blank
    direct, relayed = PATH_COLOURS["direct"][1:], PATH_COLOURS["relayed"][1:]
    # A 5-pixel stroke across a few hundred pixels of chord: hundreds of pixels of each.
    assert counts[direct] > 200 and counts[relayed] > 200, (counts[direct], counts[relayed])
    dom = net.lab.exec("c1", [*env, *common, "--dump-dom", BASE + "/"], timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'class="edge path-direct' in dom.stdout and 'class="edge path-relayed' in dom.stdout
    assert dom.stdout.count('class="node self"') == 1
