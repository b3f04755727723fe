"""Every timing constant of ipop, unit in the name, with one line of why (DESIGN.md §12.7).

Cores read these as defaults; tests shrink them through the cores' config objects, never by
patching this module.
"""

from __future__ import annotations

# --- sessions (link/session.py) -------------------------------------------------------------
# Start a new handshake this long after a session was keyed: short enough that one key never
# protects much traffic, long enough that handshakes stay a rounding error (WireGuard: 120 s).
REKEY_AFTER_S = 120.0
# A session older than this refuses to send or receive: the hard cap behind REKEY_AFTER_S.
REJECT_AFTER_S = 180.0
# Rekey after this many packets sent with one key; far below the 2**64 nonce space and the
# AES-GCM guidance of 2**32 messages per key.
REKEY_AFTER_MESSAGES = 1 << 30
REJECT_AFTER_MESSAGES = (1 << 31) - 1
# Retransmit an unanswered handshake initiation after this long (doubling, with a cap).
HANDSHAKE_RETRY_S = 1.0
HANDSHAKE_RETRY_MAX_S = 8.0
# Give up on a handshake that got no answer for this long.
HANDSHAKE_TIMEOUT_S = 20.0
# Handshake timestamps may differ from our clock by this much (clock skew between hosts).
HANDSHAKE_CLOCK_SKEW_S = 120.0
# After a rekey, the previous keys still open packets for this long (packets in flight).
PREVIOUS_KEY_GRACE_S = 10.0
# Replay window width in packets: reordering deeper than this is dropped (RFC 6479 uses 2048).
REPLAY_WINDOW = 2048

# --- links and overlay (later issues) -----------------------------------------------------
# Keepalive interval: under the ~30 s UDP mapping timeout of common NATs (RFC 4787 REQ-5
# asks for >= 2 min, many do less), with slack for one lost keepalive.
KEEPALIVE_INTERVAL_S = 15.0

# --- identity and certificates (identity.py, tools/config_cli.py) ---------------------------
# Certificates start this long before the moment they are signed, so a node whose clock runs
# a little behind the machine that ran ipop-config can use a freshly made bundle at once.
CERT_BACKDATE_S = 3600.0
# Default lifetimes of a network CA and of a node certificate.
CA_DEFAULT_DAYS = 3650
NODE_CERT_DEFAULT_DAYS = 365
