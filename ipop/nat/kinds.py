"""The one vocabulary of NAT kinds: :class:`NatKind`, used everywhere a kind is named.

Status (``self.nat``), ``ipop netcheck``, the simulator (:mod:`ipop.testing.nat`, the fake link
world), both topology formats (``ipop-sim``'s and ``ipop-lab``'s) and the NAT matrices all speak
it, so a kind read in one place can be compared with a kind from another without translation.

The names are RFC 4787's classic (RFC 3489) kinds, as the lab builds them with netfilter:

- ``none``: no translation; the host is seen at its own address (a public host). Status and
  netcheck called this "open" before; :meth:`NatKind.parse` still reads that spelling.
- ``full-cone``, ``restricted-cone``, ``port-restricted-cone``: endpoint-independent mapping
  with endpoint-independent, address-dependent or address-and-port-dependent filtering.
- ``symmetric``: address(-and-port)-dependent mapping, whatever the filtering.
- ``cone``: endpoint-independent mapping whose filtering nobody measured. Only the daemon's
  guess from peers' echoes of our address says this (filtering needs netcheck's
  CHANGE-REQUEST tests); a lab or simulated host is never built as a bare "cone".

"Not known yet" is no kind: it is ``None`` (``null`` in JSON).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["BUILDABLE_KINDS", "NAT_KINDS", "NatKind"]


class NatKind(StrEnum):
    """A NAT kind; its value is the spelling in JSON, TOML and command lines."""

    NONE = "none"
    CONE = "cone"
    FULL_CONE = "full-cone"
    RESTRICTED_CONE = "restricted-cone"
    PORT_RESTRICTED_CONE = "port-restricted-cone"
    SYMMETRIC = "symmetric"

    @classmethod
    def parse(cls, text: str) -> NatKind:
        """The kind spelled ``text``, old spellings included; ValueError listing the valid ones."""
        kind = _OLD_SPELLINGS.get(text)
        if kind is not None:
            return kind
        try:
            return cls(text)
        except ValueError:
            valid = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown NAT kind {text!r}; valid kinds: {valid}") from None

    @property
    def translated(self) -> bool:
        """Does this kind rewrite our address (is there a NAT at all)?"""
        return self is not NatKind.NONE


# Spellings that earlier releases wrote (status and netcheck JSON): still read, never written.
_OLD_SPELLINGS: Final[dict[str, NatKind]] = {"open": NatKind.NONE}

# Every fully known kind, in the order reports and matrices list them.
NAT_KINDS: Final[tuple[NatKind, ...]] = (
    NatKind.NONE,
    NatKind.FULL_CONE,
    NatKind.RESTRICTED_CONE,
    NatKind.PORT_RESTRICTED_CONE,
    NatKind.SYMMETRIC,
)
# What a lab or simulated NAT box can be built as (``none`` is no box: a public host).
BUILDABLE_KINDS: Final[tuple[NatKind, ...]] = NAT_KINDS[1:]
