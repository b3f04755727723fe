"""Why a node has no links, in one sentence a user can act on (sans-IO).

A daemon whose every handshake is refused or unanswered used to log only ``started``: the
reasons sat in counters nobody reads on a first run. :class:`NoLinkWatch` reads the link
layer's counters (``drops`` by reason, ``stats["handshake_failed"]``) each time the daemon
asks, and once the node has been without a link for ``grace_s`` and at least
``min_failures`` handshakes were refused (or one gave up unanswered) in that stretch, returns
one sentence naming the cause and the fix. It says it once per stretch without links: a link
coming up re-arms it.

Causes, most specific first:

* our side refused peers' handshakes because of their certificates (the reasons of
  :data:`ipop.identity.CERT_REASONS`; "from another CA" is ``cert_bad_signature``);
* our handshakes went unanswered. Peers drop a handshake whose certificate they refuse
  without a word (an answer would be an oracle for strangers), so from this side "another
  CA" looks like "bootstrap down"; the sentence names both and where to look.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ipop.identity import CERT_REASONS

__all__ = ["CERT_WORDS", "NoLinkWatch"]

# What each certificate refusal means, and what to do about it.
CERT_WORDS: Final[dict[str, str]] = {
    "cert_bad_signature": (
        "their certificates are from another CA than this node's bundle: give every node "
        "a bundle made from the same network home ('ipop-config node NETWORK NAME')"
    ),
    "cert_wrong_network": (
        "their certificates are for another network: check the bundle's 'network' and "
        "bootstrap list"
    ),
    "cert_expired": (
        "their certificates have expired (or this host's clock is far ahead): renew them "
        "with 'ipop-config node NETWORK NAME --force', or fix the clock"
    ),
    "cert_not_yet_valid": (
        "their certificates are not valid yet (this host's clock is behind): fix the clock"
    ),
    "cert_revoked": "their certificates are revoked by this node's revocation list",
    "cert_malformed": "their certificates do not parse: they are not ipop nodes of this version",
    "cert_node_id_mismatch": "their certificates do not match their keys",
    "cert_not_node": "they present CA or router certificates where a node's is expected",
}

# Defaults: a fresh start links within a second or two; ten seconds without a link after
# three failed handshakes is no longer a slow start.
NO_LINK_GRACE_S = 10.0
NO_LINK_MIN_FAILURES = 3


class NoLinkWatch:
    """Tell, once per stretch without links, why the node has none."""

    def __init__(
        self,
        *,
        now: float,
        grace_s: float = NO_LINK_GRACE_S,
        min_failures: int = NO_LINK_MIN_FAILURES,
    ) -> None:
        self.grace_s = grace_s
        self.min_failures = min_failures
        self._since = now  # start of the current stretch without links
        self._base: dict[str, int] = {}  # counters when the stretch began
        self._told = False
        self._linked = False

    def check(
        self,
        *,
        now: float,
        links: int,
        drops: Mapping[str, int],
        handshake_failed: int,
        tried: int,
    ) -> str | None:
        """A sentence to log at warning level, or None. ``tried``: endpoints we dial."""
        counts = {r: drops.get(r, 0) for r in CERT_REASONS}
        counts["handshake_failed"] = handshake_failed
        if links:
            self._linked = True
            self._told = False
            self._base = counts
            return None
        if self._linked:  # the last link just went: a new stretch begins
            self._linked = False
            self._since = now
            self._base = counts
        if self._told or now - self._since < self.grace_s:
            return None
        new = {k: v - self._base.get(k, 0) for k, v in counts.items()}
        refused = {r: new[r] for r in CERT_REASONS if new[r] > 0}
        failures = sum(refused.values()) + new["handshake_failed"]
        if tried == 0 and failures == 0:
            self._told = True
            return (
                "no links and nobody to link to: the bundle's bootstrap list names only this "
                "node and no peers are remembered; add a reachable member to 'bootstrap'"
            )
        # Refusals come by the dozen; a handshake gives up only after ~30 s of retries, so one
        # that did is enough.
        if sum(refused.values()) < self.min_failures and new["handshake_failed"] < 1:
            return None
        self._told = True
        waited = round(now - self._since)
        if sum(refused.values()) >= self.min_failures:
            reason = max(refused, key=lambda r: refused[r])
            return (
                f"no links after {waited} s: this node refused {sum(refused.values())} "
                f"handshakes from peers ({reason}): {CERT_WORDS[reason]}"
            )
        return (
            f"no links after {waited} s: handshakes to {tried} endpoints got no answer "
            f"({new['handshake_failed']} gave up). Either the bootstraps are down or "
            "unreachable from here (check the addresses and firewalls in the bundle's bootstrap "
            "list), or they refuse this node's certificate without a word (issued by another "
            "CA, expired or revoked: their 'ipop status' counts link.cert_* drops); make the "
            "bundle from the network's own home with 'ipop-config node NETWORK NAME'"
        )
