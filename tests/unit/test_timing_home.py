"""Protocol timings live in ipop.timing: a new module-level ``*_S`` / ``*_RATIO`` number elsewhere
in ipop/ fails here until it moves there or is listed below with the reason it stays."""

from __future__ import annotations

import ast
from pathlib import Path

from ipop import timing

ROOT = Path(__file__).resolve().parents[2]

# (module path, name) -> why it stays next to its code.
STAYS: dict[tuple[str, str], str] = {
    ("ipop/aio/controlclient.py", "DEFAULT_REPLY_TIMEOUT_S"): "control socket reply wait (CLI)",
    ("ipop/aio/controlclient.py", "PING_REPLY_MARGIN_S"): "control socket reply wait (CLI)",
    ("ipop/aio/controlclient.py", "NETCHECK_REPLY_TIMEOUT_S"): "control socket reply wait (CLI)",
    ("ipop/aio/controlproto.py", "MAX_PING_TIMEOUT_S"): "bound on a CLI argument",
    ("ipop/aio/natio.py", "STUN_DEADLINE_S"): "adapter's wait on a core transaction",
    ("ipop/aio/sysdns.py", "COMMAND_TIMEOUT_S"): "wait on a local command (resolvectl)",
    ("ipop/aio/natio.py", "STUN_POLL_S"): "adapter polling",
    ("ipop/aio/daemon.py", "JOURNAL_DRAIN_S"): "log housekeeping",
    ("ipop/aio/daemon.py", "LINK_WATCH_S"): "diagnostics housekeeping",
    ("ipop/aio/daemon.py", "REMEMBER_CHECK_S"): "peer store housekeeping",
    ("ipop/aio/daemon.py", "REMEMBER_FIRST_S"): "peer store housekeeping",
    ("ipop/aio/peerstore.py", "REMEMBER_WRITE_S"): "file writes",
    ("ipop/aio/udp.py", "GSO_RETRY_S"): "kernel offload workaround, not protocol",
    ("ipop/aio/localhttp.py", "REQUEST_TIMEOUT_S"): "HTTP server bound (metrics, web page)",
    ("ipop/aio/localhttp.py", "WRITE_TIMEOUT_S"): "HTTP server bound (metrics, web page)",
    ("ipop/aio/localhttp.py", "MIN_RENDER_INTERVAL_S"): "page cache, not protocol",
    ("ipop/config.py", "DEFAULT_LEASE_S"): "configuration default (router DHCP)",
    ("ipop/config.py", "MIN_LEASE_S"): "configuration bound (router DHCP)",
    ("ipop/config.py", "DEFAULT_WEB_REFRESH_S"): "configuration default (a page's reload)",
    ("ipop/config.py", "MAX_WEB_REFRESH_S"): "configuration bound (a page's reload)",
    ("ipop/identity/ca.py", "_DAY_S"): "a unit, not a timing",
    ("ipop/nolinks.py", "NO_LINK_GRACE_S"): "diagnostic heuristic, a NoLinkWatch default",
    ("ipop/vnet/owners.py", "LOOKUP_RATE_PER_S"): "a rate kept with its burst and table bounds",
    ("ipop/link/handshakes.py", "RELAY_REKEY_PER_S"): "a rate kept with its burst and table bound",
    ("ipop/dht/alloc.py", "PREFERRED_RETRY_S"): "tests shrink it on the module: move with them",
    ("ipop/link/pmtu.py", "ROUND_WAIT_S"): "path MTU probing: to move with its rework",
    ("ipop/link/pmtu.py", "MIN_SPREAD_S"): "path MTU probing: to move with its rework",
    ("ipop/link/pmtu.py", "ROUND_INTERVAL_S"): "path MTU probing: to move with its rework",
}


def _timing_names_outside() -> set[tuple[str, str]]:
    found = set()
    for path in sorted((ROOT / "ipop").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "ipop/timing.py" or rel.startswith("ipop/testing/"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if (
                isinstance(target, ast.Name)
                and target.id.endswith(("_S", "_RATIO"))
                and isinstance(value, ast.Constant)
                and isinstance(value.value, int | float)
            ):
                found.add((rel, target.id))
    return found


def test_protocol_timings_live_in_ipop_timing() -> None:
    found = _timing_names_outside()
    assert found - STAYS.keys() == set(), "move these to ipop/timing.py (or list them in STAYS)"
    assert STAYS.keys() - found == set(), "gone or moved: drop them from STAYS"


def test_moved_timings_keep_their_values() -> None:
    # The values as they were in their old modules (issue 15: behaviour stays the same).
    assert (timing.SHORTCUT_RETRY_S, timing.ROUTE_PROBE_IDLE_S) == (10.0, 120.0)
    assert (timing.OWNER_TTL_S, timing.OWNER_NEGATIVE_TTL_S) == (120.0, 3.0)
    assert (timing.OWNER_LOOKUP_TIMEOUT_S, timing.DATAPLANE_SPARSE_S) == (30.0, 1e-3)
    assert (timing.DHT_JOIN_RETRY_S, timing.DHT_JOIN_WAIT_S) == (2.0, 1.0)
    assert (timing.DHT_LINK_ABSORB_S, timing.DHT_WITHDRAW_AGAIN_S) == (5.0, 2.0)
    assert (timing.VIP_ALLOC_RETRY_S, timing.PEER_VIP_SWEEP_S) == (2.0, 30.0)
    assert (timing.PEER_VIP_TTL_S, timing.PUNCH_SOCKET_IDLE_S) == (300.0, 30.0)
    assert (timing.OVERLAY_REVERSE_HINT_S, timing.UNLINKED_CHECK_S) == (10.0, 3.0)
    assert (timing.SPARE_KEYS_S, timing.PATH_SWITCH_RATIO) == (3.0, 0.7)
    assert timing.RELAY_TAKEOVER_SILENT_S == 2.0
    assert (timing.STUN_RTO_S, timing.STUN_TIMEOUT_S) == (0.2, 1.5)
    assert (timing.CRL_PUSH_INTERVAL_S, timing.CRL_ASSEMBLY_TIMEOUT_S) == (10.0, 30.0)
    assert (timing.CRL_VERIFY_BACKOFF_S, timing.CRL_PULL_WAIT_S) == (30.0, 10.0)
