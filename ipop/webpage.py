"""The status web page ``ipopd`` serves on ``[web] listen``: one pure function, no I/O.

:func:`render_page` makes a self-contained HTML page from the status document: the overlay
map (:mod:`ipop.overlaymap`, inline so its hovers work), a table of the peers like
``ipop status``'s, the drops, and links to ``/map.svg``, ``/status.json`` and ``/metrics``.
It loads nothing from anywhere (no scripts, no fonts, no images from elsewhere: the server
also sends a Content-Security-Policy that forbids them) and refreshes itself with a
``<meta http-equiv="refresh">``, so it needs no JavaScript. Every string that came from a peer
is escaped (:func:`ipop.overlaymap.xml_escape`).
"""

from __future__ import annotations

from typing import Final

from ipop.human import human_bytes, human_duration
from ipop.overlaymap import DEFAULT_MAX_PEERS, PATH_COLOURS, render_map, xml_escape
from ipop.status import PeerStatus, Status

__all__ = ["render_page"]

# Rows in the peer table: the map is capped the same way, and so is the page's size.
MAX_ROWS: Final = 256

_STYLE: Final = """
body { font-family: sans-serif; margin: 1em 2em; color: #202020; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 2px 10px; text-align: left; border-bottom: 1px solid #e0e0e0; }
td.num { text-align: right; white-space: nowrap; }
.facts { color: #505050; }
""".strip()


def _cell(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{xml_escape(text)}</td>"


def _row(p: PeerStatus) -> str:
    colour = PATH_COLOURS[p.path]
    return (
        "<tr>"
        + _cell(p.node_id[:8])
        + _cell(p.vip or "-")
        + _cell(p.name or "-")
        + f'<td style="color:{colour}">{xml_escape(p.path)}</td>'
        + _cell(p.endpoint or "-")
        + _cell("-" if p.rtt_ms is None else f"{p.rtt_ms:.1f} ms", "num")
        + _cell(human_bytes(p.bytes_in), "num")
        + _cell(human_bytes(p.bytes_out), "num")
        + _cell(" ".join(p.kinds))
        + _cell(p.why or "")
        + "</tr>"
    )


def render_page(status: Status, *, refresh_s: int, max_peers: int = DEFAULT_MAX_PEERS) -> str:
    """The HTML page for ``status``; ``refresh_s`` 0: no automatic refresh."""
    me = status.self_
    name = xml_escape(me.node_name)
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s > 0 else ""
    peers = sorted(status.peers, key=lambda p: (p.vip or "~", p.node_id))
    facts = [
        f"vip {me.vip or 'none yet'}",
        f"up {human_duration(me.uptime_s)}",
        f"nat {me.nat or 'unknown'}",
        "routable" if me.routable else "not routable yet",
        f"{len(peers)} peers",
    ]
    head = ("NODE", "VIP", "NAME", "PATH", "ENDPOINT", "RTT", "IN", "OUT", "KINDS", "WHY")
    rows = [_row(p) for p in peers[:MAX_ROWS]]
    more = len(peers) - len(rows)
    drops = sorted(status.drops.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        refresh,
        f"<title>ipop: {name}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{name}</h1>",
        f'<p class="facts">{xml_escape("; ".join(facts))}</p>',
        render_map([status], max_peers=max_peers),
        '<table class="peers"><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr>",
        *rows,
        "</table>",
    ]
    if more:
        out.append(f"<p>{more} more peers not listed (see /status.json)</p>")
    if drops:
        listed = ", ".join(f"{k} {v}" for k, v in drops)
        out.append(f"<p>drops: {xml_escape(listed)}</p>")
    out.append(
        '<p><a href="/map.svg">map.svg</a> · <a href="/status.json">status.json</a> · '
        '<a href="/metrics">metrics</a></p>'
    )
    out.append("</body></html>")
    return "\n".join(line for line in out if line) + "\n"
